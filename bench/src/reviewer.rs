//! `vigil bench --reviewer`: throughput and latency of the LLM reviewer (`[review]` backend:
//! the local model, or an OpenAI-compatible endpoint with `--endpoint`) on sample exchanges
//! (prompt and completion, about one in twelve abusive), through the same [`Reviewer`] the
//! pipeline uses: `review.workers` threads, retries and breaker included. Reports reviews/s and
//! reviews/min per run, and the latency of single reviews over all runs.
//!
//! [`review_content`], the review of one text with no detection signals, is shared with
//! `vigil eval --reviewer`.

use std::fmt::Write as _;

use vigil_abuse::Policy;
use vigil_core::{Content, RequestId, Verdict};
use vigil_review::{Item, ReviewRequest, ReviewSignals, Reviewer};

use crate::exchanges::corpus_exchanges;
use crate::{machine, median_line, timed_runs, BenchOptions};

/// Measures `reviewer` under `policy` on `workers` threads (the binary opens both from the
/// configuration, as the pipeline does); returns the report.
pub fn bench(
    options: &BenchOptions,
    reviewer: &Reviewer,
    policy: &Policy,
    workers: usize,
) -> anyhow::Result<String> {
    let workers = workers.max(1);
    let exchanges = corpus_exchanges(options.records);
    let mut report = format!(
        "reviewer {} · {} reviews of sample exchanges · {} worker(s) · {}\n",
        reviewer.model(),
        exchanges.len(),
        workers,
        machine()
    );
    let (mut rates, mut latencies) =
        timed_runs(options.runs, workers, exchanges.len(), 1, |one| {
            for i in one {
                let (prompt, completion) = &exchanges[i];
                let content = Content {
                    prompt: Some(prompt.clone()),
                    completion: Some(completion.clone()),
                };
                review_content(reviewer, policy, &content, "bench", i);
            }
            Ok(())
        })?;
    for (run, rate) in rates.iter().enumerate() {
        writeln!(
            report,
            "run {}: {rate:>8.2} reviews/s ({:.0} reviews/min)",
            run + 1,
            rate * 60.0
        )?;
    }
    let stats = reviewer.stats();
    writeln!(
        report,
        "verdicts: {} closed, {} escalated ({} without a usable answer)",
        stats.closed, stats.escalated, stats.backend_unavailable
    )?;
    report.push_str(&median_line(&mut rates, &mut latencies, "reviews"));
    report.push_str(" (a batch is one review)");
    Ok(report)
}

/// Reviews `content` with no detection signals, as item `n` of a run named `run` (which
/// stands in for the case ID).
pub fn review_content(
    reviewer: &Reviewer,
    policy: &Policy,
    content: &Content,
    run: &str,
    n: usize,
) -> Verdict {
    let signals = ReviewSignals::default();
    let request = ReviewRequest::new(content, &signals, policy);
    let request_id = RequestId::parse(format!("{run}-{n}")).expect("a valid ID");
    let item = Item {
        case_id: run,
        request_id: &request_id,
        in_flight: true,
    };
    reviewer.review(item, &request)
}
