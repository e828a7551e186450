//! `vigil bench --purge`: the retention purge of `vigil purge`, measured.
//!
//! Each run stores `--records` records (of about `--record-bytes` bytes, over eight resources
//! of one geography) under a day forty days past, so past any retention. It then deletes one
//! of them, which re-keys its resource-day (every other record of that day is re-sealed), and
//! purges the rest while new records are ingested alongside (none with `--alone`), checking
//! that nothing ingested is lost and nothing expired is left. Last, the store is compacted
//! online. The report gives per run the load time, the purge's records/s and chunk latency,
//! ingest rates alone and alongside, the re-key, and compaction's time, sizes and pause; then
//! the median purge rate.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;
use vigil_analytics::{AnalyticsConfig, Exports};
use vigil_core::{Clock, Geography, LogRecord, Resource, ResourceId, ResourceRegistry};
use vigil_pipeline::{Lifecycle, Percentiles};
use vigil_storage::{StorageConfig, Stores};

use crate::{machine, BenchOptions};

/// Records per write batch in the benchmark (the pipeline's batch size).
const BENCH_BATCH: usize = 1024;
/// Resources the benchmark's records are spread over.
pub(crate) const BENCH_RESOURCES: usize = 8;

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

/// Measures the purge; returns the report.
pub fn bench(options: &BenchOptions) -> anyhow::Result<String> {
    anyhow::ensure!(
        options.runs > 0 && options.records > 0,
        "--runs and --records must be positive"
    );
    let mut runs = Vec::new();
    for run in 0..options.runs {
        let tmp;
        let work = match &options.dir {
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
        runs.push(bench_run(&work, options)?);
    }
    let mut rates: Vec<f64> = runs
        .iter()
        .map(|r| r.purged as f64 / r.purge_secs)
        .collect();
    let median = crate::measure::median(&mut rates);
    let mut out = String::new();
    writeln!(
        out,
        "purge of {} expired records ({} resources, ~{} B each, one expired day), {} run(s), {}",
        options.records,
        BENCH_RESOURCES,
        options.record_bytes,
        options.runs,
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
        if options.alone {
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
    Ok(out)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

pub(crate) fn bench_resources() -> ResourceRegistry {
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
pub(crate) fn load(
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

fn bench_run(work: &std::path::Path, options: &BenchOptions) -> anyhow::Result<PurgeRun> {
    let registry = bench_resources();
    let storage = StorageConfig {
        data_dir: work.join("data"),
        master_key: work.join("keys/master.key"),
        ..StorageConfig::default()
    };
    let now = OffsetDateTime::now_utc();
    let (n, bytes) = (options.records, options.record_bytes);
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
    let stop = AtomicBool::new(options.alone);
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
