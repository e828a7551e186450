//! `vigil bench`: throughput and latency of file → validate → encrypt → store.
//!
//! Writes uniform records of the requested size to a JSON-lines file, then runs the real
//! pipeline over it several times, each into a fresh data directory (a store that already
//! holds the records would only measure duplicate detection). Reports records/s, MiB/s, batch
//! latency percentiles, and where the time goes per stage.

use std::fmt::Write as _;
use std::fs;

use anyhow::Context;
use vigil_ingest::IngestConfig;
use vigil_pipeline::{Input, Pipeline, Summary};
use vigil_sample::{fixed_size, FixedSizeSpec};
use vigil_storage::{StorageConfig, Stores};

use super::output;
use crate::cli::BenchArgs;

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {cpu}")
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.records > 0,
        "--runs and --records must be positive"
    );
    let tmp;
    let work = match &args.dir {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    let sample = fixed_size(FixedSizeSpec {
        records: args.records,
        record_bytes: args.record_bytes,
        seed: 1,
    });
    let input_path = work.join("input.jsonl");
    let traffic = sample.traffic();
    fs::write(&input_path, &traffic).context("writing the benchmark input")?;
    let input_mib = traffic.len() as f64 / (1024.0 * 1024.0);
    drop(traffic);

    let mut report = String::new();
    writeln!(
        report,
        "vigil bench: {} records of {} bytes ({input_mib:.1} MiB), {} runs, on {}",
        args.records,
        args.record_bytes,
        args.runs,
        machine()
    )?;
    writeln!(
        report,
        "{:>4} {:>12} {:>8} {:>9} {:>9} {:>9}   busy s: {:>6} {:>6} {:>6}",
        "run", "records/s", "MiB/s", "p50 ms", "p99 ms", "max ms", "decode", "seal", "store"
    )?;
    let mut runs: Vec<Summary> = Vec::new();
    for run in 1..=args.runs {
        let dir = work.join(format!("run-{run}"));
        let _ = fs::remove_dir_all(&dir);
        let storage = StorageConfig {
            data_dir: dir.join("data"),
            master_key: dir.join("master.key"),
            ..StorageConfig::default()
        };
        let ingest = IngestConfig {
            dead_letters: dir.join("dead-letters.jsonl"),
            max_record_bytes: args.record_bytes.max(1024) * 4,
        };
        let stores = Stores::open(&storage, &work)?;
        let summary = Pipeline::new(&sample.registry, &stores, &ingest)
            .run(Input::open(&input_path)?, &())?;
        anyhow::ensure!(
            summary.stored_total() == args.records as u64,
            "run {run} stored {} of {} records",
            summary.stored_total(),
            args.records
        );
        let l = summary.batch_latency;
        let s = &summary.stages;
        writeln!(
            report,
            "{run:>4} {:>12.0} {:>8.1} {:>9.2} {:>9.2} {:>9.2}           {:>6.2} {:>6.2} {:>6.2}",
            summary.records_per_sec,
            input_mib / summary.elapsed_secs,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            s.decode_secs,
            s.seal_secs,
            s.store_secs
        )?;
        drop(stores);
        let _ = fs::remove_dir_all(&dir);
        runs.push(summary);
    }
    runs.sort_by(|a, b| a.records_per_sec.total_cmp(&b.records_per_sec));
    let median = &runs[runs.len() / 2];
    write!(
        report,
        "median: {:.0} records/s, {:.1} MiB/s",
        median.records_per_sec,
        input_mib / median.elapsed_secs
    )?;
    output(report)
}
