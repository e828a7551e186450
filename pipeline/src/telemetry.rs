//! What the pipeline reports to the metrics recorder (`vigil_api::telemetry` describes each
//! series): per batch, inputs and bytes read, records stored and duplicates per geography,
//! rejects per reason, and each stage's time. Labels are geographies, reason codes and stage
//! names only.

use std::time::Duration;

use crate::handoff::Cost;

/// One stored batch: its size, and the time each stage spent on it.
pub(crate) struct BatchReport {
    pub inputs: usize,
    pub bytes: u64,
    pub cost: Cost,
    pub store: Duration,
    pub abuse: Duration,
    pub dead_letter: Duration,
    pub latency: Duration,
}

pub(crate) fn batch(report: &BatchReport) {
    metrics::counter!("vigil_records_read_total").increment(report.inputs as u64);
    metrics::counter!("vigil_ingest_bytes_total").increment(report.bytes);
    let stages = [
        ("decode", report.cost.decode),
        ("seal", report.cost.seal),
        ("inspect", report.cost.inspect),
        ("detect", report.cost.detect),
        ("store", report.store),
        ("abuse", report.abuse),
        ("dead_letter", report.dead_letter),
    ];
    for (stage, time) in stages {
        stage_time(stage, time);
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

/// Dead letters written, one per rejected input.
pub(crate) fn rejected(reasons: impl Iterator<Item = &'static str>) {
    let mut letters = 0;
    for reason in reasons {
        metrics::counter!("vigil_records_rejected_total", "reason" => reason).increment(1);
        letters += 1;
    }
    if letters > 0 {
        metrics::counter!("vigil_dead_letters_total").increment(letters);
    }
}
