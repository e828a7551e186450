//! `vigil eval`: the harm classifier's quality on a labelled JSON-lines file, per source and
//! overall, and its speed. A stable interface: it is how detection quality is measured from
//! outside. Texts are never printed; a bad line is named by its number and field.

use std::io::BufRead;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use vigil_bench::peer::{self, PEER, PEER_THRESHOLD};
use vigil_detectors::{ClassifierConfig, Evaluation, HarmClassifier, Metrics};

use super::output;
use crate::cli::EvalArgs;
use crate::config::Config;

/// Source name of lines without one.
pub(super) const NO_SOURCE: &str = "-";

/// One labelled text.
#[derive(Default)]
pub(super) struct Labelled {
    pub text: String,
    pub flagged: bool,
    pub source: Option<String>,
}

pub fn eval(config: &Config, args: &EvalArgs) -> anyhow::Result<()> {
    if args.reviewer {
        return super::eval_reviewer::eval(config, args);
    }
    let classifier_config = ClassifierConfig {
        threshold: args.threshold.or(config.detectors.threshold),
        ..config.detectors.without_cache()
    };
    // The input is checked before the model loads: a bad file fails at once.
    let samples = read(args)?;
    anyhow::ensure!(
        !samples.is_empty(),
        "{}: no texts to evaluate",
        args.input.display()
    );
    let classifier = HarmClassifier::open(&classifier_config)?;

    let texts: Vec<&str> = samples.iter().map(|s| s.text.as_str()).collect();
    let started = Instant::now();
    let scores = classifier.score(&texts)?;
    let elapsed = started.elapsed().as_secs_f64();
    let texts_per_second = samples.len() as f64 / elapsed.max(f64::EPSILON);

    let evaluate = |any_harm: &mut dyn Iterator<Item = f32>, threshold: f32| {
        Evaluation::compute(
            samples
                .iter()
                .zip(any_harm)
                .map(|(s, score)| (s.source.as_deref().unwrap_or(NO_SOURCE), score, s.flagged)),
            threshold,
        )
    };
    let evaluation = evaluate(
        &mut scores.iter().map(|s| s.any_harm),
        classifier.threshold(),
    );
    // The peer on the same texts, in the same run: its evaluation and texts/s. Its absence is
    // reported, not fatal.
    let peer = (!args.no_peer).then(|| {
        peer::score(&texts, config.detectors.onnxruntime.as_deref()).map(|peer| {
            (
                evaluate(&mut peer.scores.iter().copied(), PEER_THRESHOLD),
                peer.texts_per_second(),
            )
        })
    });
    if args.json {
        let peer_json = match &peer {
            Some(Ok((evaluation, rate))) => json!({
                "model": PEER,
                "threshold": evaluation.threshold,
                "texts_per_second": rate.round(),
                "sources": evaluation.sources,
                "overall": evaluation.overall,
                "speed_ratio": texts_per_second / rate,
            }),
            Some(Err(e)) => json!({"model": PEER, "error": e.to_string()}),
            None => serde_json::Value::Null,
        };
        output(serde_json::to_string_pretty(&json!({
            "model": classifier.model(),
            "threshold": evaluation.threshold,
            "texts_per_second": texts_per_second.round(),
            "sources": evaluation.sources,
            "overall": evaluation.overall,
            "peer": peer_json,
        }))?)
    } else {
        output(table(&evaluation))?;
        output(format_args!(
            "model {} · threshold {:.4} · {:.0} texts/s ({} texts in {:.2} s, one thread)",
            classifier.model(),
            evaluation.threshold,
            texts_per_second,
            samples.len(),
            elapsed,
        ))?;
        match peer {
            Some(Ok((peer, rate))) => {
                output(format_args!("\nbeside {PEER}, on the same texts:"))?;
                output(table(&peer))?;
                output(format_args!(
                    "{PEER} · threshold {:.2} · {rate:.0} texts/s (one thread, in Python) · vigil/peer: AUPRC {} · speed {:.2}x",
                    peer.threshold,
                    ratio(evaluation.overall.auprc, peer.overall.auprc),
                    texts_per_second / rate,
                ))
            }
            Some(Err(e)) => output(format_args!("({PEER} not run: {e:#})")),
            None => Ok(()),
        }
    }
}

/// `a / b` as text, or "-" when either is missing.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// Reads and checks every line (the first bad one is an error naming its line and field),
/// then keeps `--limit` of them, spread evenly over the file.
pub(super) fn read(args: &EvalArgs) -> anyhow::Result<Vec<Labelled>> {
    let name = args.input.display();
    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.input).with_context(|| format!("opening {name}"))?,
        ))
    };
    let mut samples = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let number = number + 1;
        let sample =
            parse(&line).map_err(|problem| anyhow::anyhow!("{name} line {number}: {problem}"))?;
        samples.push(sample);
    }
    if let Some(limit) = args.limit.filter(|&l| l < samples.len()) {
        // An even spread over the file keeps every source represented.
        let step = samples.len() as f64 / limit as f64;
        samples = (0..limit)
            .map(|i| std::mem::take(&mut samples[(i as f64 * step) as usize]))
            .collect();
    }
    Ok(samples)
}

/// One line, checked field by field. Errors name the field and the problem, never the text.
fn parse(line: &str) -> Result<Labelled, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        format!(
            "not JSON ({:?} error at column {})",
            e.classify(),
            e.column()
        )
    })?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let text = match object.get("text") {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(_) => return Err("field `text` must be a string".into()),
        None => return Err("field `text` is missing".into()),
    };
    let flagged = match object.get("flagged") {
        Some(v) if v.as_u64() == Some(0) || v.as_bool() == Some(false) => false,
        Some(v) if v.as_u64() == Some(1) || v.as_bool() == Some(true) => true,
        Some(_) => return Err("field `flagged` must be 0 or 1".into()),
        None => return Err("field `flagged` is missing".into()),
    };
    let source = match object.get("source") {
        Some(serde_json::Value::String(source)) => Some(source.clone()),
        Some(serde_json::Value::Null) | None => None,
        Some(_) => return Err("field `source` must be a string".into()),
    };
    Ok(Labelled {
        text,
        flagged,
        source,
    })
}

pub(super) fn table(evaluation: &Evaluation) -> String {
    let mut out = format!(
        "{:<28} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7}\n",
        "source", "texts", "harmful", "AUPRC", "precision", "recall", "F1", "FPR"
    );
    let rows = evaluation
        .sources
        .iter()
        .map(|(s, m)| (s.as_str(), m))
        .chain(std::iter::once(("overall", &evaluation.overall)));
    for (source, m) in rows {
        out.push_str(&row(source, m));
    }
    out.pop();
    out
}

fn row(source: &str, m: &Metrics) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    format!(
        "{:<28} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7}\n",
        source,
        m.texts,
        m.positives,
        f(m.auprc),
        f(m.precision),
        f(m.recall),
        f(m.f1),
        f(m.false_positive_rate)
    )
}
