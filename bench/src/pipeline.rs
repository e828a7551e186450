//! `vigil bench`: throughput and latency of file → validate → encrypt → store, or, with
//! `--kafka`, of Kafka → validate → encrypt → store.
//!
//! Writes uniform records of the requested size, then runs the real pipeline over them several
//! times, each into a fresh data directory (a store that already holds the records would only
//! measure duplicate detection). Reports records/s, MiB/s, batch latency percentiles, and where
//! the time goes per stage, then the ceiling: the same key and value shapes written straight
//! into sled (`sled_ceiling`), for this layout and the one before segments.
//!
//! With `--kafka`, each run first produces the records onto fresh topics (a backlog), then
//! consumes them with one consumer; records/s counts from the first message to the last
//! stored, leaving out the group join and the idle wait that ends the run. A last phase
//! measures lag under a burst: the consumer is running when all records are produced at once,
//! and the report samples messages produced and stored over time.
//!
//! With `--kafka --nodes N`, each run starts N pipelines at once, each with its
//! own data directory, stores and consumer, all in one fresh consumer group, so the group
//! splits the topics' partitions between them (a group cannot use more nodes than
//! partitions). Once every partition is assigned, the records are produced, and the run is
//! timed from the first record sent until the group has stored them all. The report gives the
//! group's records/s and what each node stored and at what rate. All N nodes run on this
//! machine and share its cores: beside `--nodes 1`, the ratio shows contention on one
//! machine, not scaling across machines. The per-stage busy times, the storage footprint and
//! the burst phase are left out then.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use vigil_core::{Health, ResourceRegistry};
use vigil_ingest::{DeadLetterWriter, IngestConfig};
use vigil_kafka::{KafkaConfig, KafkaSource, SourceOptions};
use vigil_pipeline::{Durability, Input, Pipeline, Progress, Summary};
use vigil_sample::{fixed_size, FixedSizeSpec};
use vigil_storage::{Footprint, StorageConfig, Stores};

use crate::{machine, sled_ceiling, BenchOptions};

/// Measures the pipeline over files, or with `kafka` (the configured Kafka settings, so the
/// configuration tunes the consumer measured, with the brokers given) over Kafka; returns
/// the report.
pub fn bench(args: &BenchOptions, kafka: Option<&KafkaConfig>) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.runs > 0 && args.records > 0,
        "--runs and --records must be positive"
    );
    anyhow::ensure!(
        args.nodes != Some(0),
        "--nodes must be at least 1 (the consumer-group members sharing the records)"
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
    if let (Some(base), Some(nodes)) = (kafka, args.nodes) {
        group_runs(
            base,
            nodes,
            args,
            &sample.registry,
            &input_path,
            &work,
            &mut report,
        )?;
        return Ok(report);
    }
    writeln!(
        report,
        "{:>4} {:>12} {:>8} {:>9} {:>9} {:>9}   busy s: {:>6} {:>6} {:>6}",
        "run", "records/s", "MiB/s", "p50 ms", "p99 ms", "max ms", "decode", "seal", "store"
    )?;
    let mut runs: Vec<Summary> = Vec::new();
    let mut produced_per_sec = Vec::new();
    let mut footprint = Footprint::default();
    for run in 1..=args.runs {
        let dir = work.join(format!("run-{run}"));
        let (storage, ingest) = fresh_run_dir(&dir, args.record_bytes);
        let stores = Stores::open(&storage, &work)?;
        let pipeline = Pipeline::new(&sample.registry, &stores, &ingest);
        let mut dead_letters = DeadLetterWriter::new(&ingest.dead_letters);
        let summary = match kafka {
            None => {
                let mut input = Input::open(&input_path)?;
                pipeline.run(&mut input, &mut dead_letters, &())?
            }
            Some(base) => {
                let kafka = bench_topics(base, run);
                let loaded = produce(&kafka, &input_path, &|_| {})?;
                produced_per_sec.push(loaded);
                let mut source =
                    kafka_source(&kafka, &sample.registry, &ingest, None, Health::new())?;
                pipeline
                    .with_durability(Durability::Every(kafka.commit_interval()))
                    .run(&mut source, &mut dead_letters, &())?
            }
        };
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
            rate(&summary),
            input_mib / active(&summary),
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            s.decode_secs,
            s.seal_secs,
            s.store_secs
        )?;
        if run == 1 {
            for store in stores.on_disk()? {
                footprint += store.footprint()?;
            }
        }
        drop(stores);
        let _ = fs::remove_dir_all(&dir);
        runs.push(summary);
    }
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let median = &runs[runs.len() / 2];
    write!(
        report,
        "median: {:.0} records/s, {:.1} MiB/s",
        rate(median),
        input_mib / active(median)
    )?;
    writeln!(
        report,
        "\nstored as {} segments of {:.1} KiB on average ({:.0} bytes per record's value)",
        footprint.segments,
        footprint.segment_bytes as f64 / footprint.segments.max(1) as f64 / 1024.0,
        footprint.value_bytes as f64 / footprint.records.max(1) as f64
    )?;
    if kafka.is_none() {
        let value_len = (footprint.value_bytes / footprint.records.max(1)) as usize;
        let ceiling = sled_ceiling::ceiling(&work, args.records, value_len, &mut report)?;
        write!(
            report,
            "the pipeline runs at {:.0}% of sled's ceiling for its layout",
            100.0 * rate(median) / ceiling
        )?;
    }
    if let Some(base) = kafka {
        write!(
            report,
            "\nproducing the backlog (vigil produce's path): median {:.0} messages/s",
            crate::measure::median(&mut produced_per_sec)
        )?;
        burst(
            base,
            args,
            &sample.registry,
            &input_path,
            &work,
            &mut report,
        )?;
    }
    Ok(report)
}

/// One member of a consumer group in [`group_runs`]: its own data directory, stores and
/// consumer, what it has stored so far, and its readiness (which says how many partitions it
/// was assigned).
struct Node {
    ingest: IngestConfig,
    stores: Stores,
    stored: Stored,
    health: Arc<Health>,
}

/// Partitions a node's readiness says it was assigned (`joined group G, N partitions
/// assigned`), 0 before it joined.
fn assigned(health: &Health) -> i64 {
    let text = health.readiness().text();
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("ok kafka: joined group ")?;
            let (_, count) = rest.split_once(", ")?;
            count.strip_suffix(" partitions assigned")?.parse().ok()
        })
        .unwrap_or(0)
}

/// `vigil bench --kafka --nodes N`: each run starts `nodes` pipelines,
/// each with its own stores and consumer, in one fresh consumer group on fresh topics, waits
/// until the group has assigned every partition, then produces the records and times from the
/// first one sent until the group has stored them all. The group is settled before any record
/// is sent, so no partition moves while it is consumed (Tansu 0.6 loses the rest of a record
/// batch when a new owner resumes a partition inside one; Apache Kafka does not). Reports the
/// group's records/s, and per node what it stored and its own records/s ([`rate`]); leaves
/// out the per-stage busy times, the storage footprint and the burst phase of the single-node
/// report.
fn group_runs(
    base: &KafkaConfig,
    nodes: usize,
    args: &BenchOptions,
    registry: &ResourceRegistry,
    input: &Path,
    work: &Path,
    report: &mut String,
) -> anyhow::Result<()> {
    let topics = registry
        .iter()
        .map(|r| &r.geography)
        .collect::<BTreeSet<_>>()
        .len();
    let partitions = i64::from(base.partitions) * topics as i64;
    writeln!(
        report,
        "{nodes} nodes in one consumer group, each with its own stores; {} partitions in each \
         of {topics} log topics ({partitions} in all: a group cannot use more nodes than that)",
        base.partitions,
    )?;
    let total = args.records as u64;
    let mut group_rates = Vec::new();
    let mut produced_per_sec = Vec::new();
    for run in 1..=args.runs {
        let dir = work.join(format!("run-{run}"));
        // Once per run: every node joins the same fresh group on the same fresh topics.
        let kafka = bench_topics(base, run);
        let stop = Arc::new(AtomicBool::new(false));
        let (members, sources): (Vec<Node>, Vec<KafkaSource>) = (1..=nodes)
            .map(|n| {
                let node_dir = dir.join(format!("node-{n}"));
                let (storage, ingest) = fresh_run_dir(&node_dir, args.record_bytes);
                let stores = Stores::open(&storage, work)?;
                let health = Health::new();
                let source = kafka_source(
                    &kafka,
                    registry,
                    &ingest,
                    Some(stop.clone()),
                    health.clone(),
                )?;
                let node = Node {
                    ingest,
                    stores,
                    stored: Stored(AtomicU64::new(0)),
                    health,
                };
                Ok((node, source))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let (summaries, secs, produced) = std::thread::scope(|scope| {
            let running: Vec<_> = members
                .iter()
                .map(|node| (&node.stored, &node.health))
                .collect();
            let handles: Vec<_> = members
                .iter()
                .zip(sources)
                .map(|(node, mut source)| {
                    let kafka = &kafka;
                    scope.spawn(move || -> anyhow::Result<Summary> {
                        let mut dead_letters = DeadLetterWriter::new(&node.ingest.dead_letters);
                        Ok(Pipeline::new(registry, &node.stores, &node.ingest)
                            .with_durability(Durability::Every(kafka.commit_interval()))
                            .run(&mut source, &mut dead_letters, &node.stored)?)
                    })
                })
                .collect();
            let settled = Instant::now();
            while running.iter().map(|(_, h)| assigned(h)).sum::<i64>() < partitions
                || running.iter().any(|(_, h)| assigned(h) == 0)
            {
                anyhow::ensure!(
                    settled.elapsed() < Duration::from_secs(120),
                    "the {nodes} nodes did not share the {partitions} partitions within 120 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            let start = Instant::now();
            let producer = scope.spawn(|| produce(&kafka, input, &|_| {}));
            let stored = || {
                running
                    .iter()
                    .map(|(s, _)| s.0.load(Ordering::Acquire))
                    .sum::<u64>()
            };
            while stored() < total
                && !handles.iter().any(|h| h.is_finished())
                && start.elapsed() < Duration::from_secs(600)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let secs = start.elapsed().as_secs_f64();
            stop.store(true, Ordering::Release);
            let produced = producer.join().expect("the producer thread panicked")?;
            let summaries = handles
                .into_iter()
                .map(|h| h.join().expect("a node's thread panicked"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::Ok((summaries, secs, produced))
        })?;
        produced_per_sec.push(produced);
        drop(members);
        let stored: Vec<u64> = summaries.iter().map(Summary::stored_total).collect();
        let sum: u64 = stored.iter().sum();
        // Each record stored exactly once across the group.
        anyhow::ensure!(
            sum == total,
            "run {run}: the {nodes} nodes stored {sum} of {total} records between them (per \
             node: {})",
            join(&summaries, "; ", |s| format!(
                "read {} stored {} duplicates {} rejected {}",
                s.read,
                s.stored_total(),
                s.duplicates,
                s.rejected_total()
            )),
        );
        let group = total as f64 / secs;
        writeln!(
            report,
            "run {run}: {group:.0} records/s for the group of {nodes} nodes ({:.0} records/s per \
             node); node stored: {}",
            group / nodes as f64,
            join(&stored, " ", |n| n.to_string())
        )?;
        writeln!(
            report,
            "       each node's own records/s (first message to last stored): {}",
            join(&summaries, " ", |s| format!("{:.0}", rate(s)))
        )?;
        group_rates.push(group);
        let _ = fs::remove_dir_all(&dir);
    }
    let median = crate::measure::median(&mut group_rates);
    writeln!(
        report,
        "median: {median:.0} records/s for the group of {nodes} nodes, {:.0} per node",
        median / nodes as f64
    )?;
    writeln!(
        report,
        "timed from the first record sent to the last stored, the group settled before (the \
         producer sends several times faster than the group stores)"
    )?;
    writeln!(
        report,
        "all {nodes} nodes ran on this one machine ({}) and share its cores: beside --nodes 1, \
         the ratio shows contention on one machine, not scaling across machines",
        machine()
    )?;
    write!(
        report,
        "producing the records (vigil produce's path): median {:.0} messages/s",
        crate::measure::median(&mut produced_per_sec)
    )?;
    Ok(())
}

/// `items` shown with `show`, separated by `separator`.
fn join<T>(items: &[T], separator: &str, show: impl Fn(&T) -> String) -> String {
    items.iter().map(show).collect::<Vec<_>>().join(separator)
}

/// Settings for one run in `dir`, emptied first: its own data directory, master key and
/// dead-letter file, so no run measures another's duplicates.
fn fresh_run_dir(dir: &Path, record_bytes: usize) -> (StorageConfig, IngestConfig) {
    let _ = fs::remove_dir_all(dir);
    let storage = StorageConfig {
        data_dir: dir.join("data"),
        master_key: dir.join("master.key"),
        ..StorageConfig::default()
    };
    let ingest = IngestConfig {
        dead_letters: dir.join("dead-letters.jsonl"),
        max_record_bytes: record_bytes.max(1024) * 4,
    };
    (storage, ingest)
}

/// The run's busy time: the whole run for files; from first message to last stored for Kafka.
fn active(summary: &Summary) -> f64 {
    summary.active_secs.max(1e-9)
}

fn rate(summary: &Summary) -> f64 {
    summary.read as f64 / active(summary)
}

/// `base` for one benchmark run: fresh topics and group, so runs do not interfere.
fn bench_topics(base: &KafkaConfig, run: usize) -> KafkaConfig {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    KafkaConfig {
        create_topics: true,
        group_id: format!("vigil-bench-{stamp}-{run}"),
        log_topics: format!("vigil-bench-{stamp}-{run}.logs.{{geography}}"),
        dead_letter_topic: format!("vigil-bench-{stamp}-{run}.deadletter"),
        ..base.clone()
    }
}

/// Produces the benchmark input; returns messages/s.
fn produce(kafka: &KafkaConfig, input: &Path, sent: &dyn Fn(u64)) -> anyhow::Result<f64> {
    let file = Input::open(input)?;
    let loaded = vigil_kafka::load(kafka, file.reader, &file.name, None, sent)?;
    Ok(loaded.messages_per_sec)
}

/// How long a benchmark's consumer waits with nothing to consume before it stops (when it
/// has no `stop` flag); the group's time in [`group_runs`] leaves it out.
const IDLE: Duration = Duration::from_secs(2);

fn kafka_source(
    kafka: &KafkaConfig,
    registry: &ResourceRegistry,
    ingest: &IngestConfig,
    stop: Option<Arc<AtomicBool>>,
    health: Arc<Health>,
) -> anyhow::Result<KafkaSource> {
    let idle = stop.is_none().then_some(IDLE);
    Ok(KafkaSource::new(
        kafka,
        SourceOptions {
            geographies: registry
                .iter()
                .map(|r| r.geography.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            stop: stop.unwrap_or_default(),
            stop_when_idle: idle,
            max_record_bytes: ingest.max_record_bytes,
            health,
            addresses: Default::default(),
            rebuilder: None,
        },
    )?)
}

/// Messages stored so far, as the pipeline reports them.
struct Stored(AtomicU64);

impl Progress for Stored {
    fn advanced(&self, consumed: u64) {
        self.0.store(consumed, Ordering::Release);
    }
}

/// Consumer lag under a burst: the consumer is running and idle when every record is produced
/// at once; samples produced and stored counts until the consumer has caught up.
fn burst(
    base: &KafkaConfig,
    args: &BenchOptions,
    registry: &ResourceRegistry,
    input: &Path,
    work: &Path,
    report: &mut String,
) -> anyhow::Result<()> {
    const SAMPLE: Duration = Duration::from_millis(500);
    let dir = work.join("burst");
    let (storage, ingest) = fresh_run_dir(&dir, args.record_bytes);
    let kafka = bench_topics(base, 0);
    let stores = Stores::open(&storage, work)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut source = kafka_source(&kafka, registry, &ingest, Some(stop.clone()), Health::new())?;
    let stored = Stored(AtomicU64::new(0));
    let produced = AtomicU64::new(0);
    let total = args.records as u64;
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let consumer = scope.spawn(|| {
            let mut dead_letters = DeadLetterWriter::new(&ingest.dead_letters);
            Pipeline::new(registry, &stores, &ingest)
                .with_durability(Durability::Every(kafka.commit_interval()))
                .run(&mut source, &mut dead_letters, &stored)
        });
        // Let the consumer join its group before the burst.
        std::thread::sleep(Duration::from_secs(6));
        let start = Instant::now();
        let producer =
            scope.spawn(|| produce(&kafka, input, &|n| produced.store(n, Ordering::Release)));
        loop {
            let done = stored.0.load(Ordering::Acquire);
            samples.push((
                start.elapsed().as_secs_f64(),
                produced.load(Ordering::Acquire),
                done,
            ));
            if done >= total || consumer.is_finished() || start.elapsed() > Duration::from_secs(600)
            {
                break;
            }
            std::thread::sleep(SAMPLE);
        }
        stop.store(true, Ordering::Release);
        producer.join().expect("the producer thread panicked")?;
        consumer.join().expect("the consumer thread panicked")?;
        Ok(())
    })?;
    let peak = samples
        .iter()
        .map(|(_, p, s)| p.saturating_sub(*s))
        .max()
        .unwrap_or(0);
    writeln!(
        report,
        "\nburst of {total} records onto a running consumer (lag = produced - stored):"
    )?;
    writeln!(
        report,
        "{:>8} {:>10} {:>10} {:>10}",
        "t s", "produced", "stored", "lag"
    )?;
    for (t, p, s) in &samples {
        writeln!(
            report,
            "{t:>8.1} {p:>10} {s:>10} {:>10}",
            p.saturating_sub(*s)
        )?;
    }
    let drained = samples.last().map_or(0.0, |(t, _, _)| *t);
    write!(
        report,
        "peak lag {peak} messages; all {total} stored {drained:.1} s after the burst began"
    )?;
    drop(stores);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
