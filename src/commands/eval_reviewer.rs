//! `vigil eval --reviewer`: the LLM reviewer's quality on the same labelled file as the
//! classifier's eval, so the two are compared on the same texts: AUPRC of the reviewer's
//! violation probability, precision/recall/F1/FPR of its "violation" answer, its escalation
//! rate (items it would send to humans) and how many harmful texts it would close, per source
//! and overall, and reviews/s. Each text is reviewed as a record's prompt, with no detection
//! signals: the reviewer alone is measured. Texts are never printed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use vigil_abuse::{CompiledPolicy, Policy};
use vigil_bench::reviewer::review_content;
use vigil_bench::timed_runs;
use vigil_core::{Content, Route};
use vigil_detectors::Evaluation;
use vigil_review::{ReviewConfig, Reviewer};

use super::eval::{read, table, Labelled, NO_SOURCE};
use super::output;
use crate::cli::EvalArgs;
use crate::config::Config;

/// How the reviewer routed one source's texts.
#[derive(Debug, Default, Serialize)]
struct Routing {
    texts: usize,
    escalated: usize,
    /// Harmful texts it closed: they would never reach a human.
    harmful_closed: usize,
    /// Texts with no usable answer (backend failure or malformed output), escalated.
    unanswered: usize,
}

impl Routing {
    fn escalation_rate(&self) -> f64 {
        self.escalated as f64 / self.texts.max(1) as f64
    }
}

pub fn eval(config: &Config, args: &EvalArgs) -> anyhow::Result<()> {
    let samples = read(args)?;
    anyhow::ensure!(
        !samples.is_empty(),
        "{}: no texts to evaluate",
        args.input.display()
    );
    let review = &config.review;
    let (policy, reviewer) = standalone_reviewer(config, review)?;

    let started = Instant::now();
    let results = review_all(&reviewer, &policy, &samples, review.workers.max(1))?;
    let elapsed = started.elapsed().as_secs_f64();
    let per_second = samples.len() as f64 / elapsed.max(f64::EPSILON);

    let mut routing: BTreeMap<String, Routing> = BTreeMap::new();
    for (sample, &(_, route, answered)) in samples.iter().zip(&results) {
        let source = sample.source.as_deref().unwrap_or(NO_SOURCE);
        for key in [source, "overall"] {
            let r = routing.entry(key.to_owned()).or_default();
            r.texts += 1;
            r.escalated += usize::from(route == Route::Escalated);
            r.harmful_closed += usize::from(route == Route::Closed && sample.flagged);
            r.unanswered += usize::from(!answered);
        }
    }
    let evaluation = Evaluation::compute(
        samples
            .iter()
            .zip(&results)
            .map(|(s, &(p, _, _))| (s.source.as_deref().unwrap_or(NO_SOURCE), p, s.flagged)),
        0.5,
    );
    let model = reviewer.model();
    if args.json {
        return output(serde_json::to_string_pretty(&json!({
            "model": model,
            "policy_version": policy.version,
            "close_confidence": policy.review.close_confidence,
            "reviews_per_second": per_second,
            "sources": evaluation.sources,
            "overall": evaluation.overall,
            "routing": routing,
        }))?);
    }
    output(table(&evaluation))?;
    output(format_args!(
        "\n{:<28} {:>7} {:>10} {:>14} {:>10}",
        "routing", "texts", "escalated", "harmful closed", "unanswered"
    ))?;
    let overall = routing.remove_entry("overall");
    for (source, r) in routing.iter().chain(overall.as_ref().map(|(s, r)| (s, r))) {
        output(format_args!(
            "{:<28} {:>7} {:>9.1}% {:>14} {:>10}",
            source,
            r.texts,
            100.0 * r.escalation_rate(),
            r.harmful_closed,
            r.unanswered
        ))?;
    }
    output(format_args!(
        "reviewer {model} · policy {} (closes at confidence {:.2}) · violation at p >= 0.5 · {:.2} reviews/s ({} texts in {:.1} s, {} worker(s))",
        policy.version,
        policy.review.close_confidence,
        per_second,
        samples.len(),
        elapsed,
        review.workers.max(1)
    ))
}

/// Reviews every sample on `workers` threads; for each: the violation probability (1 when
/// there was no usable answer: such items escalate), the route, and whether it was answered.
fn review_all(
    reviewer: &Reviewer,
    policy: &Policy,
    samples: &[Labelled],
    workers: usize,
) -> anyhow::Result<Vec<(f32, Route, bool)>> {
    let results = Mutex::new(vec![(0.0, Route::Escalated, false); samples.len()]);
    timed_runs(1, workers, samples.len(), 1, |one| {
        for i in one {
            let content = Content {
                prompt: Some(samples[i].text.clone()),
                completion: None,
            };
            let verdict = review_content(reviewer, policy, &content, "eval", i);
            let p = verdict
                .assessment
                .as_ref()
                .map_or(1.0, |a| a.violation_probability());
            results.lock().expect("lock poisoned")[i] =
                (p, verdict.route, verdict.assessment.is_some());
        }
        Ok(())
    })?;
    Ok(results.into_inner().expect("lock poisoned"))
}

/// The abuse policy in force and a reviewer over `review`'s backend, for commands that review
/// texts outside the pipeline.
pub(super) fn standalone_reviewer(
    config: &Config,
    review: &ReviewConfig,
) -> anyhow::Result<(Policy, Reviewer)> {
    let path = vigil_detectors::runtime::resolve(&config.abuse.policy);
    let policy = CompiledPolicy::load(&path)
        .context("loading the abuse policy")?
        .policy;
    let backend = vigil_review::open_backend(review).context("opening the LLM reviewer")?;
    Ok((policy, Reviewer::new(backend, review.retry, review.breaker)))
}
