//! `vigil bench --reviewer`: throughput and latency of the LLM reviewer ([review] backend:
//! the local model, or an OpenAI-compatible endpoint with `--endpoint`) on sample exchanges
//! (prompt and completion, about one in twelve abusive), through the same [`Reviewer`] the
//! pipeline uses: `review.workers` threads, retries and breaker included. Reports reviews/s and
//! reviews/min per run, and the latency of single reviews over all runs.

use std::fmt::Write as _;

use vigil_core::Content;
use vigil_review::BackendKind;

use super::bench::{machine, median_line, timed_runs};
use super::bench_classifier::corpus_exchanges;
use super::eval_reviewer::{review_content, standalone_reviewer};
use super::output;
use crate::cli::BenchArgs;
use crate::config::Config;

pub fn bench(config: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    let mut review = config.review.clone();
    if let Some(url) = &args.endpoint {
        review.backend = BackendKind::Openai;
        review.openai.url.clone_from(url);
    }
    let (policy, reviewer) = standalone_reviewer(config, &review)?;
    let workers = review.workers.max(1);
    let exchanges = corpus_exchanges(args.records);
    let mut report = format!(
        "reviewer {} · {} reviews of sample exchanges · {} worker(s) · {}\n",
        reviewer.model(),
        exchanges.len(),
        workers,
        machine()
    );
    let (mut rates, mut latencies) = timed_runs(args.runs, workers, exchanges.len(), 1, |one| {
        for i in one {
            let (prompt, completion) = &exchanges[i];
            let content = Content {
                prompt: Some(prompt.clone()),
                completion: Some(completion.clone()),
            };
            review_content(&reviewer, &policy, &content, "bench", i);
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
    output(report)
}
