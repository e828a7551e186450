//! Calibrates the local reviewer: scores labeled texts, reports the raw score's AUPRC, fits
//! Platt scaling (`p = sigmoid(scale * raw + bias)`) and reports throughput.
//!
//! ```text
//! cargo run --release -p vigil-review --example calibrate -- FILE.jsonl [--limit N] [--seed S]
//!     [--policy policies/abuse.toml] [--threads T] [--max-record-tokens M]
//! ```
//!
//! Each line of FILE is `{"text": ..., "flagged": 0|1, "source": ...}` (for example
//! `var/eval/corpora.jsonl`, written by `scripts/train-classifier.sh`). Each text is reviewed as a
//! prompt-only record with empty signals. With `--limit N`, a seeded sample of N texts,
//! stratified by source and label, is scored instead of the whole file.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context as _};
use vigil_abuse::Policy;
use vigil_core::Content;
use vigil_review::backend::{ReviewRequest, ReviewSignals};
use vigil_review::local::{LocalConfig, LocalModel};

struct Args {
    file: String,
    limit: Option<usize>,
    seed: u64,
    policy: String,
    config: LocalConfig,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        file: String::new(),
        limit: None,
        seed: 20261123,
        policy: "policies/abuse.toml".into(),
        config: LocalConfig::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--limit" => args.limit = Some(value("--limit")?.parse()?),
            "--seed" => args.seed = value("--seed")?.parse()?,
            "--policy" => args.policy = value("--policy")?,
            "--threads" => args.config.threads = value("--threads")?.parse()?,
            "--max-record-tokens" => {
                args.config.max_record_tokens = value("--max-record-tokens")?.parse()?;
            }
            "--model" => args.config.model = Some(value("--model")?.into()),
            flag if flag.starts_with("--") => bail!("unknown option {flag}"),
            file => args.file = file.into(),
        }
    }
    if args.file.is_empty() {
        bail!("usage: calibrate FILE.jsonl [--limit N] [--seed S] [--policy FILE] [--threads T] [--max-record-tokens M] [--model GGUF]");
    }
    Ok(args)
}

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    flagged: u8,
    #[serde(default)]
    source: String,
}

/// SplitMix64: a small seeded generator for the sample.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded sample of `limit` rows, stratified by (source, label): each stratum keeps its
/// share (at least one row), in file order.
fn sample(rows: Vec<Row>, limit: usize, seed: u64) -> Vec<Row> {
    if limit >= rows.len() {
        return rows;
    }
    let total = rows.len();
    let mut strata: BTreeMap<(String, u8), Vec<usize>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        strata
            .entry((row.source.clone(), row.flagged))
            .or_default()
            .push(i);
    }
    let mut state = seed;
    let mut keep = vec![false; total];
    for indices in strata.values_mut() {
        let take = ((indices.len() * limit) as f64 / total as f64)
            .round()
            .max(1.0) as usize;
        // Partial Fisher-Yates shuffle.
        for i in 0..take.min(indices.len()) {
            let j = i + (splitmix(&mut state) % (indices.len() - i) as u64) as usize;
            indices.swap(i, j);
            keep[indices[i]] = true;
        }
    }
    rows.into_iter()
        .zip(keep)
        .filter_map(|(row, keep)| keep.then_some(row))
        .collect()
}

/// Average precision (the area under the precision-recall curve, as scikit-learn computes it).
fn auprc(scores: &[f32], labels: &[u8]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let positives = labels.iter().filter(|&&l| l == 1).count() as f64;
    let (mut tp, mut fp, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // Ties form one threshold.
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] == 1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        let recall = tp / positives;
        ap += (recall - last_recall) * tp / (tp + fp);
        last_recall = recall;
        i = j;
    }
    ap
}

/// Platt scaling by Newton's method on the mean log-loss of `sigmoid(a * x + b)`.
fn platt(raw: &[f32], labels: &[u8]) -> (f64, f64, f64) {
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let loss = |a: f64, b: f64| {
        raw.iter()
            .zip(labels)
            .map(|(&x, &y)| {
                let p = sigmoid(a * f64::from(x) + b).clamp(1e-12, 1.0 - 1e-12);
                if y == 1 {
                    -p.ln()
                } else {
                    -(1.0 - p).ln()
                }
            })
            .sum::<f64>()
            / raw.len() as f64
    };
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in raw.iter().zip(labels) {
            let x = f64::from(x);
            let p = sigmoid(a * x + b);
            let r = p - f64::from(y);
            let w = (p * (1.0 - p)).max(1e-12);
            ga += r * x;
            gb += r;
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        // Backtracking keeps each step a descent step.
        let before = loss(a, b);
        let mut step = 1.0;
        while step > 1e-6 && loss(a - step * da, b - step * db) > before {
            step /= 2.0;
        }
        a -= step * da;
        b -= step * db;
        if (step * da).abs() < 1e-9 && (step * db).abs() < 1e-9 {
            break;
        }
    }
    (a, b, loss(a, b))
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let text = std::fs::read_to_string(&args.file).with_context(|| args.file.clone())?;
    let rows: Vec<Row> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("each line must be {\"text\", \"flagged\", \"source\"}")?;
    let read = rows.len();
    let rows = match args.limit {
        Some(limit) => sample(rows, limit, args.seed),
        None => rows,
    };
    let policy_path = vigil_detectors::runtime::resolve(args.policy.as_ref());
    let policy = Policy::parse(
        &std::fs::read_to_string(&policy_path)
            .with_context(|| policy_path.display().to_string())?,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))?;
    let model = LocalModel::open(&args.config)?;
    println!(
        "{}: {} texts read, {} scored ({} flagged); model {}, threads {}, max_record_tokens {}",
        args.file,
        read,
        rows.len(),
        rows.iter().filter(|r| r.flagged == 1).count(),
        vigil_review::backend::Backend::model(&model),
        args.config.threads,
        args.config.max_record_tokens
    );

    let signals = ReviewSignals::default();
    let request = |content: &Content| -> f32 {
        let request = ReviewRequest::new(content, &signals, &policy);
        model.raw_score(&request).expect("the local model scores")
    };
    let tokens_of = |content: &Content| {
        let request = ReviewRequest::new(content, &signals, &policy);
        model.prompt_tokens(&request).expect("the prompt tokenizes")
    };
    // The prefix is computed once, outside the timings.
    let warm = Content {
        prompt: Some("warm-up".into()),
        completion: None,
    };
    request(&warm);

    let (mut raw, mut labels, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tokens, mut rest_tokens, mut prefix_tokens) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    for (i, row) in rows.iter().enumerate() {
        let content = Content {
            prompt: Some(row.text.clone()),
            completion: None,
        };
        let t0 = Instant::now();
        raw.push(request(&content));
        latencies.push(t0.elapsed().as_secs_f64());
        labels.push(row.flagged);
        let (prefix, rest) = tokens_of(&content);
        prefix_tokens = prefix;
        tokens += prefix + rest;
        rest_tokens += rest;
        if (i + 1) % 100 == 0 {
            eprintln!("{} / {}", i + 1, rows.len());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize] * 1e3;

    println!("raw AUPRC {:.3}", auprc(&raw, &labels));
    let (scale, bias, loss) = platt(&raw, &labels);
    println!("platt scale {scale:.4} bias {bias:.4} (log-loss {loss:.4})");
    let probabilities: Vec<f32> = raw
        .iter()
        .map(|&x| (1.0 / (1.0 + (-(scale * f64::from(x) + bias)).exp())) as f32)
        .collect();
    let predicted: Vec<bool> = probabilities.iter().map(|&p| p >= 0.5).collect();
    let count = |f: &dyn Fn(bool, u8) -> bool| {
        predicted
            .iter()
            .zip(&labels)
            .filter(|(&p, &l)| f(p, l))
            .count() as f64
    };
    let (tp, fp) = (count(&|p, l| p && l == 1), count(&|p, l| p && l == 0));
    let (pos, neg) = (count(&|_, l| l == 1), count(&|_, l| l == 0));
    println!(
        "at p >= 0.5: precision {:.3}, recall {:.3}, FPR {:.3}",
        tp / (tp + fp).max(1.0),
        tp / pos.max(1.0),
        fp / neg.max(1.0)
    );
    let mut by_source: BTreeMap<&str, (usize, usize, f64)> = BTreeMap::new();
    for (row, &p) in rows.iter().zip(&probabilities) {
        let entry = by_source.entry(row.source.as_str()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(row.flagged);
        entry.2 += f64::from(p);
    }
    for (source, (n, flagged, p)) in by_source {
        println!(
            "  {source:<22} {n:>4} texts, {flagged:>4} flagged, mean p {:.3}",
            p / n as f64
        );
    }
    println!(
        "{} reviews in {elapsed:.1} s: {:.2} reviews/s ({:.0} reviews/min), latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms",
        rows.len(),
        rows.len() as f64 / elapsed,
        rows.len() as f64 / elapsed * 60.0,
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
    println!(
        "tokens: {:.0} prompt tokens/review ({prefix_tokens} cached prefix), {:.0} tokens/s run ({:.0} tokens/s counting the cached prefix)",
        tokens as f64 / rows.len() as f64,
        rest_tokens as f64 / elapsed,
        tokens as f64 / elapsed
    );
    Ok(())
}
