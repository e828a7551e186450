//! `vigil bench --classifier`: texts/s and batch latency of the harm classifier alone (the
//! cascade as configured: normalisation, features and the linear heads for every text, the
//! sentence encoder and semantic heads for those routed to it), on prompts and completions
//! drawn from the embedded sample corpus (about one exchange in twelve abusive, jailbreaks up to
//! thousands of characters long), beside alt-profanity-check on the same texts.
//!
//! Worker threads share one [`HarmClassifier`], as pipeline stages would,
//! and take batches from a common queue. Each run reports texts/s; batch latency percentiles
//! are over all runs' batches.

use std::fmt::Write as _;

use vigil_detectors::{ClassifierConfig, HarmClassifier};

use crate::exchanges::corpus_exchanges;
use crate::peer::{self, PEER};
use crate::{machine, median_line, timed_runs, BenchOptions};

/// Measures the classifier `detectors` configures (its cache off), and the peer beside it
/// unless `options.no_peer`; returns the report.
pub fn bench(options: &BenchOptions, detectors: &ClassifierConfig) -> anyhow::Result<String> {
    let threads = options.threads.max(1);
    let classifier = HarmClassifier::open(&detectors.without_cache())?;
    let texts = corpus_texts(options.records);
    let batch_size = detectors.batch_size.max(1);
    let mean_chars = texts.iter().map(|t| t.chars().count()).sum::<usize>() / texts.len();

    let mut report = format!(
        "harm classifier {} · {} texts of {} characters on average · batches of {} · {} worker thread(s) · {}\n",
        classifier.model(),
        texts.len(),
        mean_chars,
        batch_size,
        threads,
        machine()
    );
    let (mut rates, mut latencies) =
        timed_runs(options.runs, threads, texts.len(), batch_size, |batch| {
            classifier.score(&texts[batch])?;
            Ok(())
        })?;
    for (run, rate) in rates.iter().enumerate() {
        writeln!(report, "run {}: {rate:>9.0} texts/s", run + 1)?;
    }
    report.push_str(&median_line(&mut rates, &mut latencies, "texts"));
    if let Some(encoded) = classifier.semantic_texts() {
        let scored = (texts.len() * rates.len()) as f64;
        write!(
            report,
            "\nsemantic stage: {:.1}% of texts went through the encoder",
            100.0 * encoded as f64 / scored
        )?;
    }
    if !options.no_peer {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        match peer::score(&refs, detectors.onnxruntime.as_deref()) {
            Ok(peer) => {
                let median = rates[rates.len() / 2];
                // With one worker the runs above are already the single-thread figure.
                let single = if threads == 1 {
                    median
                } else {
                    single_thread_rate(&classifier, &texts, batch_size)?
                };
                write!(
                    report,
                    "\n{PEER} on the same texts: {:.0} texts/s (one thread, in Python) · vigil/peer: {:.2}x with one thread ({single:.0} texts/s), {:.2}x with {threads}",
                    peer.texts_per_second(),
                    single / peer.texts_per_second(),
                    median / peer.texts_per_second(),
                )?;
            }
            Err(e) => write!(report, "\n({PEER} not run: {e:#})")?,
        }
    }
    Ok(report)
}

/// Texts/s of one thread scoring every text once, batch by batch: the figure comparable with
/// the single-threaded peer.
fn single_thread_rate(
    classifier: &HarmClassifier,
    texts: &[String],
    batch_size: usize,
) -> anyhow::Result<f64> {
    let started = std::time::Instant::now();
    for batch in texts.chunks(batch_size) {
        classifier.score(batch)?;
    }
    Ok(texts.len() as f64 / started.elapsed().as_secs_f64().max(f64::EPSILON))
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
