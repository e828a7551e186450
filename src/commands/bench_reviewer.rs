//! `vigil bench --reviewer`: throughput and latency of the LLM reviewer ([review] backend:
//! the local model, or an OpenAI-compatible endpoint with `--endpoint`) on sample exchanges
//! (prompt and completion, about one in twelve abusive), through the same [`Reviewer`] the
//! pipeline uses: `review.workers` threads, retries and breaker included. Reports reviews/s and
//! reviews/min per run, and the latency of single reviews over all runs.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use vigil_abuse::Policy;
use vigil_core::{Content, RequestId};
use vigil_review::{BackendKind, Item, ReviewRequest, ReviewSignals, Reviewer};

use super::bench::{machine, median_line};
use super::bench_classifier::corpus_exchanges;
use super::output;
use crate::cli::BenchArgs;
use crate::config::Config;

pub fn bench(config: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    let mut review = config.review.clone();
    if let Some(url) = &args.endpoint {
        review.backend = BackendKind::Openai;
        review.openai.url.clone_from(url);
    }
    let path = vigil_detectors::runtime::resolve(&config.abuse.policy);
    let policy = Policy::parse(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{}", path.display()))?;
    let backend = vigil_review::open_backend(&review).context("opening the LLM reviewer")?;
    let reviewer = Reviewer::new(backend, review.retry, review.breaker);
    let workers = review.workers.max(1);
    let exchanges = corpus_exchanges(args.records);
    let mut report = format!(
        "reviewer {} · {} reviews of sample exchanges · {} worker(s) · {}\n",
        reviewer.model(),
        exchanges.len(),
        workers,
        machine()
    );
    let signals = ReviewSignals::default();
    let mut rates = Vec::new();
    let latencies = Mutex::new(Vec::new());
    for run in 1..=args.runs {
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let mut mine: Vec<Duration> = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((prompt, completion)) = exchanges.get(i) else {
                            break;
                        };
                        let content = Content {
                            prompt: Some(prompt.clone()),
                            completion: Some(completion.clone()),
                        };
                        let request = ReviewRequest {
                            content: &content,
                            signals: &signals,
                            policy: &policy.review,
                            policy_version: &policy.version,
                        };
                        let request_id =
                            RequestId::parse(&format!("bench-{i}")).expect("a valid ID");
                        let item = Item {
                            case_id: "bench",
                            request_id: &request_id,
                            in_flight: true,
                        };
                        let began = Instant::now();
                        reviewer.review(item, &request);
                        mine.push(began.elapsed());
                    }
                    latencies.lock().expect("lock poisoned").extend(mine);
                });
            }
        });
        let rate = exchanges.len() as f64 / started.elapsed().as_secs_f64();
        writeln!(
            report,
            "run {run}: {rate:>8.2} reviews/s ({:.0} reviews/min)",
            rate * 60.0
        )?;
        rates.push(rate);
    }
    let stats = reviewer.stats();
    writeln!(
        report,
        "verdicts: {} closed, {} escalated ({} without a usable answer)",
        stats.closed, stats.escalated, stats.backend_unavailable
    )?;
    let mut latencies = latencies.into_inner().expect("lock poisoned");
    report.push_str(&median_line(&mut rates, &mut latencies, "reviews"));
    report.push_str(" (a batch is one review)");
    output(report)
}
