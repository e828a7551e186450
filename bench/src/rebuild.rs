//! `vigil bench --kafka ADDR --rebuild`: a store rebuilt from the changelog, measured.
//!
//! Each run stores `--records` records (about `--record-bytes` bytes each, over eight resources
//! of one geography) in a store mirrored to a changelog topic of the run's own on the broker,
//! as a node in a cluster does. A second store (another data directory and master key, the
//! same day-key ratchet, as a peer hands it over) is then rebuilt from every partition of that
//! changelog, as a node that is assigned the partitions does, and must hold every record. The
//! report gives per run the mirrored load rate, and the rebuild's records/s and changelog
//! messages/s; then the median rebuild rate. The runs' topics are left on the broker.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use vigil_core::Geography;
use vigil_kafka::changelog::{ChangelogProducer, PartitionMap, Rebuilder};
use vigil_kafka::KafkaConfig;
use vigil_storage::changelog::RatchetState;
use vigil_storage::{RetentionConfig, StorageConfig, Stores};

use crate::purge::{bench_resources, load, BENCH_RESOURCES};
use crate::{machine, BenchOptions};

/// One run of `vigil bench --rebuild`.
struct RebuildRun {
    load_per_sec: f64,
    messages: u64,
    records: u64,
    secs: f64,
}

/// Measures rebuilding from the changelog on the broker `kafka` names; returns the report.
pub fn bench(options: &BenchOptions, kafka: &KafkaConfig) -> anyhow::Result<String> {
    anyhow::ensure!(
        options.runs > 0 && options.records > 0,
        "--runs and --records must be positive"
    );
    let mut runs = Vec::new();
    for run in 0..options.runs {
        let tmp = tempfile::tempdir()?;
        runs.push(bench_run(tmp.path(), options, kafka, run)?);
    }
    let mut rates: Vec<f64> = runs.iter().map(|r| r.records as f64 / r.secs).collect();
    let median = crate::measure::median(&mut rates);
    let mut out = String::new();
    writeln!(
        out,
        "rebuild of {} records ({} resources, ~{} B each) from the changelog on {}, {} partitions, {} run(s), {}",
        options.records,
        BENCH_RESOURCES,
        options.record_bytes,
        kafka.brokers,
        kafka.partitions,
        options.runs,
        machine()
    )?;
    for (i, r) in runs.iter().enumerate() {
        writeln!(
            out,
            "  run {}: stored and mirrored at {:.0} records/s; rebuilt {} records from {} changelog messages in {:.2}s = {:.0} records/s ({:.0} messages/s)",
            i + 1,
            r.load_per_sec,
            r.records,
            r.messages,
            r.secs,
            r.records as f64 / r.secs,
            r.messages as f64 / r.secs,
        )?;
    }
    write!(out, "median rebuild rate: {median:.0} records/s")?;
    Ok(out)
}

/// A node's stores under `dir`, with a master key of its own.
fn node_stores(dir: &std::path::Path) -> anyhow::Result<Stores> {
    let config = StorageConfig {
        data_dir: dir.join("data"),
        master_key: dir.join("master.key"),
        ..StorageConfig::default()
    };
    Ok(Stores::open(&config, dir)?)
}

fn bench_run(
    dir: &std::path::Path,
    options: &BenchOptions,
    kafka: &KafkaConfig,
    run: usize,
) -> anyhow::Result<RebuildRun> {
    let eu = Geography::parse("eu")?;
    let registry = bench_resources();
    // Topics of this run's own: a rebuild reads its partitions from the beginning.
    let stamp = format!(
        "{}-{}-{run}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let kafka = KafkaConfig {
        log_topics: format!("vigil-bench-{stamp}.logs.{{geography}}"),
        changelog_topics: format!("vigil-bench-{stamp}.changelog.{{geography}}"),
        create_topics: true,
        ..kafka.clone()
    };
    let partitions = Arc::new(PartitionMap::new(&kafka, std::slice::from_ref(&eu))?);
    let producer = Arc::new(ChangelogProducer::new(&kafka, partitions.clone())?);

    let one = node_stores(&dir.join("one"))?;
    let ratchet = RatchetState::create(one.clock().today().minus(29));
    let store = one.geo(&eu)?;
    store.install_ratchet(&ratchet)?;
    store.mirror_to(producer)?;
    // Every write goes to the changelog, and the last flush waits for the broker.
    let load_per_sec = load(
        &one,
        &registry,
        "rebuild",
        options.records,
        options.record_bytes,
        None,
        None,
    )?;
    drop(store);
    drop(one);

    let two = Arc::new(node_stores(&dir.join("two"))?);
    two.geo(&eu)?.install_ratchet(&ratchet)?;
    let rebuilder = Rebuilder::start(
        &kafka,
        two.clone(),
        partitions.clone(),
        RetentionConfig::default(),
        Arc::new(RwLock::new(registry)),
    )?;
    let started = Instant::now();
    let report = rebuilder.rebuild_gained(
        &partitions.all(),
        &std::sync::atomic::AtomicBool::new(false),
    )?;
    let secs = started.elapsed().as_secs_f64();
    let held = two.geo(&eu)?.len();
    anyhow::ensure!(
        held == options.records && report.imported.records == options.records as u64,
        "the rebuilt store holds {held} records, {} imported, of {} stored",
        report.imported.records,
        options.records
    );
    Ok(RebuildRun {
        load_per_sec,
        messages: report.messages,
        records: report.imported.records,
        secs,
    })
}
