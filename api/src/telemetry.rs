//! vigil's metrics: the Prometheus recorder every crate's `metrics::counter!`,
//! `gauge!` and `histogram!` calls report to, and the catalog of every series, with its help
//! text and unit, in one place.
//!
//! Conventions (Prometheus'): names start with `vigil_`, counters end in `_total`, durations
//! are histograms in seconds (`_seconds`), sizes in bytes. Labels take only values from
//! bounded sets: a geography from the registry, a reject reason code, a stage, an API
//! operation from the route table, a status code, a verdict route, a table, a topic and
//! partition. Never an ID, a name or content: a series per request or per user would be a
//! leak and an unbounded cost at once.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of every `_seconds` histogram: 100 µs to a minute.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Installs the process's recorder (once; later calls return the same handle) and describes
/// every series.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder was already installed"))?;
    describe();
    start_at_zero();
    // Histogram samples wait in the recorder until upkeep folds them into buckets: without
    // it, a process nobody scrapes would grow without bound.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP);
            upkeep.run_upkeep();
        })?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// How often histogram samples are folded into their buckets.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Series that alerts compare over time exist from the start, at zero: a counter that first
/// appears at 1 shows no `increase()`, so its first event would never alert.
fn start_at_zero() {
    metrics::gauge!("vigil_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::counter!("vigil_audit_failures_total").absolute(0);
    metrics::gauge!("vigil_review_breaker_open").set(0.0);
    for outcome in ["ok", "failed"] {
        metrics::counter!("vigil_purge_runs_total", "outcome" => outcome).absolute(0);
        metrics::counter!("vigil_export_runs_total", "outcome" => outcome).absolute(0);
        metrics::counter!("vigil_kafka_commits_total", "outcome" => outcome).absolute(0);
    }
    metrics::counter!("vigil_records_read_total").absolute(0);
}

/// Help text and unit of every series vigil reports.
fn describe() {
    // Ingest and storage.
    describe_counter!(
        "vigil_records_read_total",
        "Inputs read (non-blank lines or Kafka messages)."
    );
    describe_counter!(
        "vigil_ingest_bytes_total",
        Unit::Bytes,
        "Bytes of input read."
    );
    describe_counter!(
        "vigil_records_stored_total",
        "Records newly stored, by geography."
    );
    describe_counter!(
        "vigil_records_duplicate_total",
        "Records already stored by an earlier delivery, left as they were, by geography."
    );
    describe_counter!(
        "vigil_records_rejected_total",
        "Inputs rejected, by reason code and the home geography of their resource (unknown when it is not in the registry); each has one dead letter."
    );
    describe_histogram!(
        "vigil_stage_duration_seconds",
        Unit::Seconds,
        "Time one batch spent in each pipeline stage (decode, seal, inspect, detect, store, abuse, dead_letter, flush)."
    );
    describe_histogram!(
        "vigil_batch_latency_seconds",
        Unit::Seconds,
        "Time from a batch's first input read to the batch stored."
    );
    describe_gauge!(
        "vigil_store_size_bytes",
        Unit::Bytes,
        "Size on disk of each geography's store."
    );
    // Kafka.
    describe_gauge!(
        "vigil_kafka_consumer_lag",
        "Messages behind the end of each assigned partition, as librdkafka last reported."
    );
    describe_counter!("vigil_kafka_commits_total", "Offset commits, by outcome.");
    describe_counter!(
        "vigil_kafka_rebalances_total",
        "Consumer-group rebalances, by kind (assign, revoke)."
    );
    // Recurring abuse and review.
    describe_counter!(
        "vigil_cases_opened_total",
        "Abuse cases opened, by subject (end_user, resource)."
    );
    describe_counter!("vigil_flags_published_total", "Flag events published.");
    describe_counter!(
        "vigil_policy_reloads_total",
        "Changes to the abuse policy file taken up (ok) or refused (the policy in force stays)."
    );
    describe_gauge!(
        "vigil_review_queue_depth",
        "Review tasks queued for the LLM reviewer, by geography."
    );
    describe_counter!(
        "vigil_review_verdicts_total",
        "LLM reviewer verdicts, by route."
    );
    describe_counter!(
        "vigil_review_backend_errors_total",
        "Failed calls to the LLM reviewer's backend."
    );
    describe_gauge!(
        "vigil_review_breaker_open",
        "1 while the reviewer's circuit breaker is open (calls refused), else 0."
    );
    // Retention and exports.
    describe_counter!("vigil_purge_runs_total", "Retention purges, by outcome.");
    describe_counter!(
        "vigil_purge_records_total",
        "Records deleted by the retention purge, by geography."
    );
    describe_histogram!(
        "vigil_purge_duration_seconds",
        Unit::Seconds,
        "Time one retention purge took."
    );
    describe_gauge!(
        "vigil_purge_last_success_timestamp_seconds",
        Unit::Seconds,
        "When the last retention purge finished without error (Unix time)."
    );
    describe_counter!(
        "vigil_export_runs_total",
        "Analytics export passes, by outcome."
    );
    describe_counter!(
        "vigil_export_rows_total",
        "Rows written to the analytics exports."
    );
    describe_gauge!(
        "vigil_export_last_success_timestamp_seconds",
        Unit::Seconds,
        "When the analytics exports were last brought up to date (Unix time)."
    );
    // The API and its audit log.
    describe_counter!(
        "vigil_api_requests_total",
        "API requests answered, by operation (timed_out: answered 408 before its handler finished) and status code."
    );
    describe_histogram!(
        "vigil_api_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an API request, by operation."
    );
    describe_histogram!(
        "vigil_audit_fsync_duration_seconds",
        Unit::Seconds,
        "Time to write and sync one batch of audit entries."
    );
    describe_counter!(
        "vigil_audit_failures_total",
        "Audit appends that failed (the requests they recorded were refused)."
    );
    // Between the nodes of a cluster.
    describe_counter!(
        "vigil_peer_requests_total",
        "Requests other nodes sent to this node's peer listener, by operation and status code."
    );
    describe_histogram!(
        "vigil_peer_request_duration_seconds",
        Unit::Seconds,
        "Time to answer another node's request, by operation."
    );
    describe_counter!(
        "vigil_peer_failures_total",
        "Requests this node forwarded that a peer did not answer (unreachable) or answered with an unexpected refusal (refused)."
    );
    // The changelog ([cluster]).
    describe_counter!(
        "vigil_changelog_changes_total",
        "Store changes sent to the changelog, by geography and kind (write, tombstone)."
    );
    describe_counter!(
        "vigil_changelog_rebuilt_records_total",
        "Records imported from the changelog when partitions were assigned to this node."
    );
    describe_histogram!(
        "vigil_changelog_rebuild_seconds",
        Unit::Seconds,
        "Time to let go of lost partitions and rebuild gained ones from the changelog."
    );
    describe_gauge!("vigil_build_info", "1, labelled with vigil's version.");
}
