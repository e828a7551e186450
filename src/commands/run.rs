//! `vigil run`: the main job.

use std::io::IsTerminal;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use vigil_pipeline::{Input, Pipeline, Progress};
use vigil_storage::Stores;

use super::{load_registry, output};
use crate::cli::{Format, RunArgs};
use crate::config::Config;

/// A progress bar on a terminal, for inputs large enough to wait for.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn advanced(&self, bytes_read: u64) {
        self.0.set_position(bytes_read);
    }
}

const BAR_MIN_BYTES: u64 = 8 << 20;

fn progress_bar(input: &Input) -> Option<Bar> {
    let len = input.len.filter(|l| *l >= BAR_MIN_BYTES)?;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("the template is valid"),
    );
    Some(Bar(bar))
}

pub fn run(config: &Config, args: &RunArgs) -> anyhow::Result<()> {
    let registry = load_registry(config)?;
    let stores = Stores::open(&config.storage, registry.base_dir())?;
    let input = Input::open(&args.input)
        .with_context(|| format!("opening input {}", args.input.display()))?;
    let bar = progress_bar(&input);
    let pipeline = Pipeline::new(&registry, &stores, &config.ingest);
    let summary = pipeline.run(input, bar.as_ref().map_or(&() as &dyn Progress, |b| b))?;
    if let Some(bar) = bar {
        bar.0.finish_and_clear();
    }
    match args.format {
        Format::Text => output(&summary),
        Format::Json => output(serde_json::to_string_pretty(&summary)?),
    }
}
