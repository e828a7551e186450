//! `vigil purge`: the retention purge, now, with progress on a terminal, then the exports
//! brought in line and each store compacted; and `vigil bench --purge`, which measures it.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use time::OffsetDateTime;
use vigil_analytics::{AnalyticsConfig, Exports};
use vigil_core::{Clock, Geography, LogRecord, Resource, ResourceId, ResourceRegistry};
use vigil_pipeline::{ExportReport, Lifecycle, Percentiles};
use vigil_storage::{Compacted, JobReport, PurgeReport, StorageConfig, Stores};

use super::bench::machine;
use super::{lifecycle, load_registry, open_stores, output};
use crate::cli::{BenchArgs, Format, PurgeArgs};
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

/// Records per write batch in the benchmark (the pipeline's batch size).
const BENCH_BATCH: usize = 1024;
/// Resources the benchmark's records are spread over.
const BENCH_RESOURCES: usize = 8;

/// One run of `vigil bench --purge`.
struct PurgeRun {
    load_secs: f64,
    purge_secs: f64,
    purged: usize,
    data_keys: usize,
    ingested_alongside: u64,
    ingest_alone_per_sec: f64,
    ingest_alongside_per_sec: f64,
    chunk_latency: Percentiles,
    compact_secs: f64,
    bytes_before: u64,
    bytes_after: u64,
    compact_pause_us: u64,
    /// Deleting one request of a resource-day of `delete_day_records` records (a re-key).
    delete_secs: f64,
    delete_day_records: usize,
}

pub fn bench(_config: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.records > 0,
        "--runs and --records must be positive"
    );
    let mut runs = Vec::new();
    for run in 0..args.runs {
        let tmp;
        let work = match &args.dir {
            Some(dir) => {
                let dir = dir.join(format!("purge-run-{run}"));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)?;
                }
                std::fs::create_dir_all(&dir)?;
                dir
            }
            None => {
                tmp = tempfile::tempdir()?;
                tmp.path().to_owned()
            }
        };
        runs.push(bench_run(&work, args)?);
    }
    let mut rates: Vec<f64> = runs
        .iter()
        .map(|r| r.purged as f64 / r.purge_secs)
        .collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let mut out = String::new();
    writeln!(
        out,
        "purge of {} expired records ({} resources, ~{} B each, one expired day), {} run(s), {}",
        args.records,
        BENCH_RESOURCES,
        args.record_bytes,
        args.runs,
        machine()
    )?;
    for (i, r) in runs.iter().enumerate() {
        writeln!(
            out,
            "  run {}: loaded in {:.1}s; purged {} records in {:.2}s = {:.0} records/s ({} day keys destroyed first); chunk latency p50 {:.1} ms, p99 {:.1} ms",
            i + 1,
            r.load_secs,
            r.purged,
            r.purge_secs,
            r.purged as f64 / r.purge_secs,
            r.data_keys,
            r.chunk_latency.p50_ms,
            r.chunk_latency.p99_ms,
        )?;
        if args.alone {
            writeln!(
                out,
                "         nothing ingested alongside (--alone); ingest alone: {:.0} records/s",
                r.ingest_alone_per_sec
            )?;
        } else {
            writeln!(
                out,
                "         ingest alongside: {} new records stored and all read back, {:.0} records/s (alone: {:.0} records/s)",
                r.ingested_alongside, r.ingest_alongside_per_sec, r.ingest_alone_per_sec
            )?;
        }
        writeln!(
            out,
            "         deleting one request first: {:.0} ms, re-sealing the {} other records of its resource-day ({:.0} records/s)",
            r.delete_secs * 1000.0,
            r.delete_day_records,
            r.delete_day_records as f64 / r.delete_secs
        )?;
        writeln!(
            out,
            "         compaction (online): {:.2}s, {:.1} MiB -> {:.1} MiB, reads and writes paused {:.1} ms",
            r.compact_secs,
            mib(r.bytes_before),
            mib(r.bytes_after),
            r.compact_pause_us as f64 / 1000.0
        )?;
    }
    write!(out, "median purge rate: {median:.0} records/s")?;
    output(out)
}

fn bench_resources() -> ResourceRegistry {
    let mut registry = ResourceRegistry::default();
    for i in 0..BENCH_RESOURCES {
        let id = ResourceId::parse(format!("bench-{i}")).expect("a valid ID");
        registry
            .add(Resource::new(id, Geography::parse("eu").expect("valid")))
            .expect("distinct IDs");
    }
    registry
}

/// A record of about `bytes` bytes for resource `i % BENCH_RESOURCES`.
fn bench_record(tag: &str, i: usize, bytes: usize) -> LogRecord {
    let filler: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(bytes.saturating_sub(300) / 2)
        .collect();
    LogRecord::from_json(&format!(
        r#"{{"request_id":"{tag}-{i:09}","resource_id":"bench-{}","geography":"eu","deployment":"standard","timestamp":"2026-01-01T00:00:00Z","operation":"chat","model":"m","end_user":"user-{}","prompt":"{filler}","completion":"{filler}"}}"#,
        i % BENCH_RESOURCES,
        i % 5000
    ))
    .expect("the benchmark's records are valid")
}

/// Writes `n` records through `stores` in pipeline-sized batches; returns records/s.
fn load(
    stores: &Stores,
    registry: &ResourceRegistry,
    tag: &str,
    n: usize,
    bytes: usize,
    stop: Option<&AtomicBool>,
    count: Option<&AtomicU64>,
) -> anyhow::Result<f64> {
    let geo = stores.geo(&Geography::parse("eu")?)?;
    let started = Instant::now();
    let mut written = 0;
    for chunk_start in (0..n).step_by(BENCH_BATCH) {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let batch = (chunk_start..(chunk_start + BENCH_BATCH).min(n))
            .map(|i| {
                let record = bench_record(tag, i, bytes);
                let resource = registry
                    .get(record.meta.resource_id.as_str())
                    .expect("registered");
                geo.seal(&record, resource)
            })
            .collect::<Result<Vec<_>, _>>()?;
        geo.write_batch(&batch)?;
        written += batch.len();
        if let Some(count) = count {
            count.store(written as u64, Ordering::Relaxed);
        }
    }
    stores.flush()?;
    Ok(written as f64 / started.elapsed().as_secs_f64())
}

fn bench_run(work: &std::path::Path, args: &BenchArgs) -> anyhow::Result<PurgeRun> {
    let registry = bench_resources();
    let storage = StorageConfig {
        data_dir: work.join("data"),
        master_key: work.join("keys/master.key"),
        ..StorageConfig::default()
    };
    let now = OffsetDateTime::now_utc();
    let (n, bytes) = (args.records, args.record_bytes);
    // Stored forty days ago: past any retention.
    let load_started = Instant::now();
    {
        let past = Stores::open_with_clock(
            &storage,
            work,
            Clock::starting_at(now - time::Duration::days(40)),
        )?;
        load(&past, &registry, "old", n, bytes, None, None)?;
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    let stores = Arc::new(Stores::open_with_clock(&storage, work, Clock::system())?);
    // Deleting one request re-keys its resource-day: every other record of it is re-sealed.
    let delete_started = Instant::now();
    let first = registry.get("bench-0").expect("registered");
    let deleted = stores.delete_request(first, &format!("old-{:09}", 0).parse()?)?;
    let delete_secs = delete_started.elapsed().as_secs_f64();
    anyhow::ensure!(deleted.is_some(), "the request to delete was not stored");
    let delete_day_records = n.div_ceil(BENCH_RESOURCES) - 1;
    // Ingest alone, for comparison, then alongside the purge.
    let alone_n = (n / 10).clamp(BENCH_BATCH, 50_000);
    let ingest_alone_per_sec = load(&stores, &registry, "alone", alone_n, bytes, None, None)?;
    let lifecycle = Lifecycle::new(
        stores.clone(),
        Arc::new(std::sync::RwLock::new(registry.clone())),
        storage.retention.clone(),
        Exports::open(&AnalyticsConfig {
            export_dir: work.join("exports"),
        })?,
    );
    // With --alone the ingest thread stops before its first batch.
    let stop = AtomicBool::new(args.alone);
    let ingested = AtomicU64::new(0);
    let mut chunk_times = Vec::new();
    let (purge, alongside) = std::thread::scope(|scope| {
        let ingest = scope.spawn(|| {
            let started = Instant::now();
            load(
                &stores,
                &registry,
                "new",
                usize::MAX / 2,
                bytes,
                Some(&stop),
                Some(&ingested),
            )
            .map(|_| started.elapsed())
        });
        let started = Instant::now();
        let mut last = Instant::now();
        let purged = lifecycle.purge(&mut |_| {
            chunk_times.push(last.elapsed());
            last = Instant::now();
            ControlFlow::Continue(())
        });
        let purge_secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let alongside = ingest.join().expect("the ingest thread does not panic");
        (purged.map(|p| (p, purge_secs)), alongside)
    });
    let (reports, purge_secs) = purge?;
    let alongside = alongside?;
    let ingested_alongside = ingested.load(Ordering::Relaxed);
    // Nothing ingested alongside was lost, and nothing expired is left.
    let geo = stores.geo(&Geography::parse("eu")?)?;
    let expected = alone_n as u64 + ingested_alongside;
    anyhow::ensure!(
        geo.len() as u64 == expected,
        "after the purge the store holds {} records, {expected} expected",
        geo.len()
    );
    drop((geo, lifecycle));
    let compact_started = Instant::now();
    let compacted = stores.compact(&Geography::parse("eu")?)?;
    let purged = reports.iter().map(|r| r.records).sum::<usize>();
    anyhow::ensure!(
        purged == n - 1,
        "purged {purged} of {} expired records",
        n - 1
    );
    Ok(PurgeRun {
        load_secs,
        purge_secs,
        purged,
        data_keys: reports.iter().map(|r| r.data_keys).sum(),
        ingested_alongside,
        ingest_alone_per_sec,
        ingest_alongside_per_sec: ingested_alongside as f64 / alongside.as_secs_f64(),
        chunk_latency: Percentiles::of(&mut chunk_times),
        compact_secs: compact_started.elapsed().as_secs_f64(),
        bytes_before: compacted.bytes_before,
        bytes_after: compacted.bytes_after,
        compact_pause_us: compacted.paused_us,
        delete_secs,
        delete_day_records,
    })
}
