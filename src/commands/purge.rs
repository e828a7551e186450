//! `vigil purge`: the retention purge, now, with progress on a terminal, then the exports
//! brought in line and each store compacted (`vigil bench --purge` measures it: see
//! `vigil_bench::purge`).

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use vigil_pipeline::ExportReport;
use vigil_storage::{Compacted, JobReport, PurgeReport, StorageConfig};

use super::{lifecycle, load_registry, open_stores, output};
use crate::cli::{Format, PurgeArgs};
use crate::config::Config;

/// What `vigil purge` did.
#[derive(Debug, Serialize)]
struct PurgeOutcome {
    /// Resource deletions a crash had cut short, finished first.
    deletions_finished: Vec<JobReport>,
    purged: Vec<PurgeReport>,
    exports: ExportReport,
    compacted: Vec<Compacted>,
}

/// Shows a purge's running totals: a spinner on a terminal; otherwise a log line after the
/// first chunk and then every few seconds.
struct PurgeMeter {
    spinner: Option<ProgressBar>,
    last_log: Option<Instant>,
}

impl PurgeMeter {
    const LOG_EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let s = ProgressBar::new_spinner();
            s.set_style(
                ProgressStyle::with_template("{spinner} purging {msg} ({elapsed})")
                    .expect("the template is valid"),
            );
            s.enable_steady_tick(Duration::from_millis(120));
            s
        });
        Self {
            spinner,
            last_log: None,
        }
    }

    fn update(&mut self, r: &PurgeReport) {
        let msg = format!(
            "{}: {} records, {} windows removed",
            r.geography, r.records, r.windows
        );
        match &self.spinner {
            Some(s) => s.set_message(msg),
            None if self.last_log.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) => {
                self.last_log = Some(Instant::now());
                tracing::info!(geography = %r.geography, records = r.records, windows = r.windows, "Purge progress.");
            }
            None => {}
        }
    }

    fn done(self) {
        if let Some(s) = self.spinner {
            s.finish_and_clear();
        }
    }
}

pub fn purge(config: &Config, args: &PurgeArgs) -> anyhow::Result<()> {
    let registry = load_registry(config)?;
    let stores = Arc::new(open_stores(config, &registry)?);
    super::OperatorAudit::open(config, *stores.clock())?.record("data.purge", |e| {
        e.detail = Some(format!("past retention as of {}", stores.clock().today()))
    })?;
    // A resource deletion or content destruction a crash cut short is finished first.
    let reconciled = stores.reconcile(&registry)?;
    let lifecycle = lifecycle(config, &stores, &registry)?;
    let mut meter = PurgeMeter::new();
    let purged = lifecycle.purge(&mut |r| {
        meter.update(r);
        ControlFlow::Continue(())
    })?;
    meter.done();
    let exports = lifecycle.export()?;
    drop(lifecycle);
    let mut compacted = Vec::new();
    if !args.no_compact {
        for geography in stores.geographies_on_disk()? {
            compacted.push(stores.compact(&geography)?);
        }
    }
    let outcome = PurgeOutcome {
        deletions_finished: reconciled.deletions_finished,
        purged,
        exports,
        compacted,
    };
    match args.format {
        Format::Json => output(serde_json::to_string_pretty(&outcome)?),
        Format::Text => output(report(&outcome, &config.storage)?),
    }
}

fn report(o: &PurgeOutcome, storage: &StorageConfig) -> anyhow::Result<String> {
    let mut out = String::new();
    for d in &o.deletions_finished {
        writeln!(
            out,
            "finished an interrupted deletion of {}: {} records",
            d.resource_id, d.records
        )?;
    }
    match o.purged.first() {
        None => writeln!(out, "no stores under {}", storage.data_dir.display())?,
        Some(first) => writeln!(
            out,
            "purged as of {} (days expire at midnight UTC; retention at most {} days)",
            first.today, storage.retention.max_days
        )?,
    }
    if !o.purged.is_empty() {
        writeln!(
            out,
            "  {:<12} {:>9} {:>10} {:>8} {:>6} {:>8} {:>9}",
            "geography", "day keys", "records", "windows", "cases", "reviews", "verdicts"
        )?;
    }
    for p in &o.purged {
        writeln!(
            out,
            "  {:<12} {:>9} {:>10} {:>8} {:>6} {:>8} {:>9}",
            p.geography, p.data_keys, p.records, p.windows, p.cases, p.review_tasks, p.verdicts
        )?;
    }
    writeln!(
        out,
        "exports: {} partitions rewritten ({} rows), {} removed, under {}",
        o.exports.partitions_written, o.exports.rows, o.exports.partitions_removed, o.exports.dir
    )?;
    for c in &o.compacted {
        writeln!(
            out,
            "compacted {}: {:.1} MiB -> {:.1} MiB",
            c.geography,
            mib(c.bytes_before),
            mib(c.bytes_after)
        )?;
    }
    Ok(out.trim_end().to_owned())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}
