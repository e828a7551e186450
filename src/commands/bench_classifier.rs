//! `vigil bench --classifier`: texts/s and batch latency of the harm classifier alone
//! (normalisation, features and ONNX inference), on prompts and completions drawn from the
//! embedded sample corpus (about one exchange in twelve abusive, jailbreaks up to thousands of
//! characters long).
//!
//! Worker threads share one [`HarmClassifier`] with a session each, as pipeline stages would,
//! and take batches from a common queue. Each run reports texts/s; batch latency percentiles
//! are over all runs' batches.

use std::fmt::Write as _;

use rand::SeedableRng;
use vigil_detectors::{ClassifierConfig, HarmClassifier};
use vigil_sample::Corpus;

use super::bench::{machine, median_line, timed_runs};
use super::output;
use crate::cli::BenchArgs;
use crate::config::Config;

pub fn bench(config: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    let threads = args.threads.max(1);
    let classifier = HarmClassifier::open(&ClassifierConfig {
        sessions: threads,
        ..config.detectors.clone()
    })?;
    let texts = corpus_texts(args.records);
    let batch_size = config.detectors.batch_size.max(1);
    let mean_chars = texts.iter().map(|t| t.chars().count()).sum::<usize>() / texts.len();

    let mut report = format!(
        "harm classifier {} · {} texts of {} characters on average · batches of {} · {} worker thread(s), {} ONNX Runtime thread(s) each · {}\n",
        classifier.model(),
        texts.len(),
        mean_chars,
        batch_size,
        threads,
        config.detectors.threads.max(1),
        machine()
    );
    let (mut rates, mut latencies) =
        timed_runs(args.runs, threads, texts.len(), batch_size, |batch| {
            classifier.score(&texts[batch])?;
            Ok(())
        })?;
    for (run, rate) in rates.iter().enumerate() {
        writeln!(report, "run {}: {rate:>9.0} texts/s", run + 1)?;
    }
    report.push_str(&median_line(&mut rates, &mut latencies, "texts"));
    output(report)
}

/// `count` texts: the prompts and completions of sample exchanges, in a fixed order.
fn corpus_texts(count: usize) -> Vec<String> {
    let mut texts: Vec<String> = corpus_exchanges(count.div_ceil(2))
        .into_iter()
        .flat_map(|(prompt, completion)| [prompt, completion])
        .collect();
    texts.truncate(count);
    texts
}

/// `count` sample exchanges (prompt, completion), in a fixed order.
pub(super) fn corpus_exchanges(count: usize) -> Vec<(String, String)> {
    let corpus = Corpus::embedded();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261123);
    (0..count).map(|_| corpus.exchange(&mut rng)).collect()
}
