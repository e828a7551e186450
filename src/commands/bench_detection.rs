//! `vigil bench --detection [--with-classifier]`: recurring-abuse detection alone, without
//! storage: the policy's heuristics and fingerprints on each record's content, then windows,
//! scoring and cases for its end user and resource, with window states encoded for the
//! checkpoint after every batch of 1,024 records, as the pipeline does.
//!
//! Records are sample exchanges (about one in twelve abusive) spread over `--users` end users
//! of eight resources and over one day of event time. With `--with-classifier`, each batch is
//! also scored by the harm classifier first. The report gives records/s per run and the
//! median, batch latency, the split between heuristics, classifier and windows, and memory per
//! tracked subject (the tracker's own accounting, and the process's resident-memory growth).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;
use vigil_abuse::{CompiledPolicy, Observation, RecordSignal, Tracker};
use vigil_core::{Content, Geography, RequestId, ResourceId};
use vigil_detectors::heuristics::Scratch;
use vigil_detectors::HarmClassifier;
use vigil_pipeline::Percentiles;

use super::bench::machine;
use super::bench_classifier::corpus_exchanges;
use super::output;
use crate::cli::BenchArgs;
use crate::config::Config;

const BATCH: usize = 1024;
const RESOURCES: usize = 8;
/// Distinct exchanges; records reuse them in turn.
const EXCHANGES: usize = 20_000;

struct BenchRecord {
    resource: usize,
    end_user: String,
    request_id: RequestId,
    timestamp: OffsetDateTime,
    content: usize,
}

pub fn bench(config: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    let path = vigil_detectors::runtime::resolve(&config.abuse.policy);
    let policy = Arc::new(CompiledPolicy::load(&path).context("loading the abuse policy")?);
    let classifier = match args.with_classifier {
        true => Some(HarmClassifier::open(&config.detectors)?),
        false => None,
    };
    let contents: Vec<Content> = corpus_exchanges(EXCHANGES.min(args.records.max(1)))
        .into_iter()
        .map(|(prompt, completion)| Content {
            prompt: Some(prompt),
            completion: Some(completion),
        })
        .collect();
    let records = records(args.records, args.users.max(1), contents.len());
    let geography = Geography::parse("us").expect("valid");
    let resources: Vec<ResourceId> = (0..RESOURCES)
        .map(|i| ResourceId::parse(format!("bench-{i}")).expect("valid"))
        .collect();
    let mean_chars = contents
        .iter()
        .map(|c| c.prompt.as_ref().map_or(0, |p| p.chars().count()))
        .sum::<usize>()
        / contents.len();
    let mut report = format!(
        "recurring-abuse detection ({}) · policy {} · {} records over {} end users of {} resources · prompts of {} characters on average · batches of {} · {}\n",
        match &classifier {
            Some(c) => format!("heuristics, windows and the classifier {}", c.model()),
            None => "heuristics and windows; no classifier".into(),
        },
        policy.policy.version,
        records.len(),
        args.users,
        RESOURCES,
        mean_chars,
        BATCH,
        machine()
    );
    let mut rates = Vec::new();
    let mut latencies = Vec::new();
    for run in 1..=args.runs.max(1) {
        let mut tracker = Tracker::new(policy.clone());
        let mut scratch = Scratch::default();
        let (mut inspect, mut classify, mut track) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut cases = 0;
        let rss_before = resident_bytes();
        let started = Instant::now();
        for batch in records.chunks(BATCH) {
            let began = Instant::now();
            let batch_contents: Vec<&Content> = batch.iter().map(|r| &contents[r.content]).collect();
            let inspections: Vec<_> = batch_contents
                .iter()
                .map(|c| policy.heuristics.inspect(c, &mut scratch))
                .collect();
            let inspected = Instant::now();
            let detections = match &classifier {
                Some(classifier) => Some(classifier.detect(&batch_contents)?),
                None => None,
            };
            let classified = Instant::now();
            for (i, record) in batch.iter().enumerate() {
                let detection = detections.as_ref().map(|d| &d[i]);
                let observation = Observation {
                    geography: &geography,
                    resource_id: &resources[record.resource],
                    end_user: Some(&record.end_user),
                    request_id: &record.request_id,
                    timestamp: record.timestamp,
                    signal: RecordSignal::of(&policy.policy, detection, &inspections[i]),
                };
                let opened = tracker.observe(&observation, &mut |_| {
                    Ok::<_, std::convert::Infallible>(None)
                });
                cases += opened.map_or(0, |c| c.len());
            }
            let checkpoint = tracker.take_dirty(&geography);
            drop(checkpoint);
            tracker.sweep();
            let done = Instant::now();
            inspect += inspected - began;
            classify += classified - inspected;
            track += done - classified;
            latencies.push(done - began);
        }
        let elapsed = started.elapsed();
        let rate = records.len() as f64 / elapsed.as_secs_f64();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / records.len() as f64;
        let rss = resident_bytes().zip(rss_before).map(|(after, before)| after.saturating_sub(before));
        writeln!(
            report,
            "run {run}: {rate:>9.0} records/s · per record: heuristics {:.1} µs, classifier {:.1} µs, windows {:.1} µs · {} subjects tracked, {:.0} bytes each (tracker), {} (resident growth) · {cases} cases",
            per(inspect),
            per(classify),
            per(track),
            tracker.len(),
            tracker.bytes_per_subject(),
            match rss {
                Some(bytes) => format!("{:.0} bytes each", bytes as f64 / tracker.len().max(1) as f64),
                None => "unknown".into(),
            },
        )?;
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let latency = Percentiles::of(&mut latencies);
    write!(
        report,
        "median {:>8.0} records/s · batch latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        rates[rates.len() / 2],
        latency.p50_ms,
        latency.p90_ms,
        latency.p99_ms,
        latency.max_ms
    )?;
    output(report)
}

/// `count` records, round-robin over the exchanges, each from a random end user of a
/// resource, spread evenly over one day.
fn records(count: usize, users: usize, exchanges: usize) -> Vec<BenchRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261123);
    let start = time::macros::datetime!(2026-11-23 00:00 UTC);
    let step = 86_400.0 / count.max(1) as f64;
    (0..count)
        .map(|i| {
            let user = rng.gen_range(0..users);
            BenchRecord {
                resource: user % RESOURCES,
                end_user: format!("user-{user}"),
                request_id: RequestId::parse(format!("bench-{i}")).expect("valid"),
                timestamp: start + time::Duration::seconds_f64(i as f64 * step),
                content: i % exchanges,
            }
        })
        .collect()
}

/// The process's resident memory, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
