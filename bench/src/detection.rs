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
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;
use vigil_abuse::{CaseIdKey, CompiledPolicy, Observation, RecordSignal, Tracker};
use vigil_core::{Content, Geography, RequestId, ResourceId};
use vigil_detectors::heuristics::Scratch;
use vigil_detectors::{ClassifierConfig, HarmClassifier, ToDetect};

use crate::exchanges::corpus_exchanges;
use crate::{machine, median_line, BenchOptions};

const BATCH: usize = 1024;
const RESOURCES: usize = 8;
/// Distinct exchanges; records reuse them in turn.
const EXCHANGES: usize = 20_000;

/// A batch on its way from the inspecting thread to the tracking one.
struct Inspected {
    began: Instant,
    first: usize,
    inspections: Vec<vigil_detectors::Inspection>,
    detections: Option<Vec<vigil_detectors::Detected>>,
}

struct BenchRecord {
    resource: usize,
    end_user: String,
    request_id: RequestId,
    timestamp: OffsetDateTime,
    content: usize,
}

/// Measures detection under the abuse policy at `policy` (resolved as the pipeline resolves
/// it), with the classifier `detectors` configures if `options.with_classifier`; returns the
/// report.
pub fn bench(
    options: &BenchOptions,
    policy: &Path,
    detectors: &ClassifierConfig,
) -> anyhow::Result<String> {
    let path = vigil_detectors::runtime::resolve(policy);
    let policy = Arc::new(CompiledPolicy::load(&path).context("loading the abuse policy")?);
    let classifier = match options.with_classifier {
        true => Some(HarmClassifier::open(&detectors.without_cache())?),
        false => None,
    };
    let contents: Vec<Content> = corpus_exchanges(EXCHANGES.min(options.records.max(1)))
        .into_iter()
        .map(|(prompt, completion)| Content {
            prompt: Some(prompt),
            completion: Some(completion),
        })
        .collect();
    let records = records(options.records, options.users.max(1), contents.len());
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
        options.users,
        RESOURCES,
        mean_chars,
        BATCH,
        machine()
    );
    let mut rates = Vec::new();
    let mut latencies = Vec::new();
    for run in 1..=options.runs.max(1) {
        let mut tracker = Tracker::new(policy.clone(), CaseIdKey::random());
        let mut track = Duration::ZERO;
        let rss_before = resident_bytes();
        let started = Instant::now();
        // As in the pipeline: the decode thread inspects (and the store thread classifies)
        // while the store thread keeps the windows. Here one thread inspects and classifies,
        // the other tracks; a bounded channel joins them.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Inspected>(4);
        let (inspect, classify) = std::thread::scope(|scope| -> anyhow::Result<_> {
            let producer = scope.spawn(|| -> anyhow::Result<(Duration, Duration)> {
                let mut scratch = Scratch::default();
                let (mut inspect, mut classify) = (Duration::ZERO, Duration::ZERO);
                for (at, batch) in records.chunks(BATCH).enumerate() {
                    let began = Instant::now();
                    let batch_contents: Vec<&Content> =
                        batch.iter().map(|r| &contents[r.content]).collect();
                    let inspections: Vec<vigil_detectors::Inspection> = batch_contents
                        .iter()
                        .map(|c| policy.heuristics.inspect(c, &mut scratch))
                        .collect();
                    let inspected = Instant::now();
                    let to_detect: Vec<ToDetect<'_>> = batch_contents
                        .iter()
                        .zip(&inspections)
                        .map(|(content, inspection)| ToDetect {
                            content,
                            encode_prompt: policy.policy.signals.suspicious(inspection),
                        })
                        .collect();
                    let detections = match &classifier {
                        Some(classifier) => Some(classifier.detect(&to_detect)?),
                        None => None,
                    };
                    inspect += inspected - began;
                    classify += inspected.elapsed();
                    let sent = tx.send(Inspected {
                        began,
                        first: at * BATCH,
                        inspections,
                        detections,
                    });
                    if sent.is_err() {
                        break;
                    }
                }
                drop(tx);
                Ok((inspect, classify))
            });
            for batch in rx {
                let tracking = Instant::now();
                for (i, inspection) in batch.inspections.iter().enumerate() {
                    let record = &records[batch.first + i];
                    let detected = batch.detections.as_ref().map(|d| &d[i]);
                    let observation = Observation {
                        geography: &geography,
                        resource_id: &resources[record.resource],
                        end_user: Some(&record.end_user),
                        request_id: &record.request_id,
                        timestamp: record.timestamp,
                        signal: RecordSignal::of(
                            &policy.policy,
                            detected.map(|d| &d.detection),
                            inspection,
                            detected.and_then(|d| d.meaning),
                        ),
                    };
                    // Nothing to load: no store here. Cases are counted by the tracker.
                    let Ok(_) = tracker.observe(&observation, &mut |_| {
                        Ok::<_, std::convert::Infallible>(None)
                    });
                }
                drop(tracker.take_dirty(&geography));
                tracker.sweep();
                track += tracking.elapsed();
                latencies.push(batch.began.elapsed());
            }
            producer.join().expect("the bench producer panicked")
        })?;
        let elapsed = started.elapsed();
        let rate = records.len() as f64 / elapsed.as_secs_f64();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / records.len() as f64;
        writeln!(
            report,
            "run {run}: {rate:>9.0} records/s · per record: heuristics {:.1} µs, classifier {:.1} µs (one thread), windows {:.1} µs (the other) · {} cases",
            per(inspect),
            per(classify),
            per(track),
            tracker.stats().cases,
        )?;
        if run == 1 {
            let growth = resident_bytes().zip(rss_before).map(|(after, before)| {
                after.saturating_sub(before) as f64 / tracker.len().max(1) as f64
            });
            writeln!(
                report,
                "memory: {} subjects tracked (end users and resources), {:.0} bytes each by the tracker's count, {} by resident-memory growth (first run)",
                tracker.len(),
                tracker.bytes_per_subject(),
                growth.map_or("unknown".into(), |b| format!("{b:.0} bytes each")),
            )?;
        }
        rates.push(rate);
    }
    report.push_str(&median_line(&mut rates, &mut latencies, "records"));
    Ok(report)
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
