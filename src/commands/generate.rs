//! `vigil generate`: deterministic sample traffic and its registry.

use std::fs;
use std::path::Path;

use anyhow::Context;
use vigil_sample::{generate as make, SampleSpec};

use super::output;
use crate::cli::GenerateArgs;
use crate::config::Config;

/// Writes `bytes` to `path`, creating its directory.
fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

pub fn generate(config: &Config, args: &GenerateArgs) -> anyhow::Result<()> {
    let sample = make(SampleSpec {
        records: args.records,
        seed: args.seed,
    });
    let resources = args.resources.as_deref().unwrap_or(&config.resources);
    sample.registry.save(resources)?;
    let key_dir = resources.parent().unwrap_or(Path::new("."));
    for key in &sample.key_files {
        write(
            &key_dir.join(&key.relative_path),
            format!("{}\n", key.hex).as_bytes(),
        )?;
    }
    write(&args.output, &sample.traffic())?;
    output(format_args!(
        "wrote {} lines to {} and {} resources to {}",
        sample.lines.len(),
        args.output.display(),
        sample.registry.len(),
        resources.display()
    ))
}
