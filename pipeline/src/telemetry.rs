//! What the pipeline reports to the metrics recorder (`vigil_api::telemetry` describes each
//! series): per batch, inputs and bytes read, records stored and duplicates per geography,
//! rejects per reason, and each stage's time. Labels are geographies, reason codes and stage
//! names only.

use std::time::Duration;

use vigil_core::Geography;

use crate::handoff::Cost;

/// One stored batch: its size, and the time each stage spent on it.
pub(crate) struct BatchReport {
    pub inputs: usize,
    pub bytes: u64,
    pub cost: Cost,
    /// Whether the harm classifier scored the batch.
    pub detected: bool,
    pub store: Duration,
    /// The abuse stage's time, when the run has one (its heuristics are `cost.inspect`).
    pub abuse: Option<Duration>,
    /// Writing the batch's dead letters, when it had any.
    pub dead_letter: Option<Duration>,
    pub latency: Duration,
}

pub(crate) fn batch(report: &BatchReport) {
    metrics::counter!("vigil_records_read_total").increment(report.inputs as u64);
    metrics::counter!("vigil_ingest_bytes_total").increment(report.bytes);
    // Only the stages that ran: a stage turned off is no sample at 0 s.
    let stages = [
        ("decode", Some(report.cost.decode)),
        ("seal", Some(report.cost.seal)),
        ("inspect", report.abuse.map(|_| report.cost.inspect)),
        ("detect", report.detected.then_some(report.cost.detect)),
        ("store", Some(report.store)),
        ("abuse", report.abuse),
        ("dead_letter", report.dead_letter),
    ];
    for (stage, time) in stages {
        if let Some(time) = time {
            stage_time(stage, time);
        }
    }
    metrics::histogram!("vigil_batch_latency_seconds").record(report.latency.as_secs_f64());
}

pub(crate) fn stage_time(stage: &'static str, time: Duration) {
    metrics::histogram!("vigil_stage_duration_seconds", "stage" => stage)
        .record(time.as_secs_f64());
}

/// One geography's part of a batch written.
pub(crate) fn written(geography: &str, stored: u64, duplicates: u64) {
    let geography = geography.to_owned();
    if stored > 0 {
        metrics::counter!("vigil_records_stored_total", "geography" => geography.clone())
            .increment(stored);
    }
    if duplicates > 0 {
        metrics::counter!("vigil_records_duplicate_total", "geography" => geography)
            .increment(duplicates);
    }
}

/// Rejected inputs, by reason and the home geography of their resource when the registry
/// knows it (`unknown` otherwise: a geography a record claims is input, not a bounded set).
pub(crate) fn rejected<'a>(rejects: impl Iterator<Item = (&'static str, Option<&'a Geography>)>) {
    for (reason, geography) in rejects {
        let geography = geography.map_or("unknown", Geography::as_str).to_owned();
        metrics::counter!("vigil_records_rejected_total", "reason" => reason, "geography" => geography)
            .increment(1);
    }
}
