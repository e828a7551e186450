//! The peer that `vigil eval` and `vigil bench --classifier` measure vigil's classifier beside:
//! `alt-profanity-check` 1.9.1 (PyPI; TF-IDF and a calibrated linear SVM in scikit-learn), run
//! on the same texts in the same invocation, in the project's virtual environment
//! (`scripts/setup-python.sh --notebooks` installs it).
//!
//! The texts go to a Python child process on its standard input as JSON lines; it times
//! `predict_prob` over all of them on one thread (BLAS pinned, as vigil's ONNX Runtime runs one
//! thread per session) and answers with the scores and the seconds spent scoring. Texts are
//! never written anywhere else, and the child's error output names no text.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Deserialize;
use vigil_detectors::runtime;

/// The peer's name, as reports print it.
pub const PEER: &str = "alt-profanity-check 1.9.1";

/// The peer's own operating threshold.
pub const PEER_THRESHOLD: f32 = 0.5;

const SCRIPT: &str = r#"
import json, sys, time
from profanity_check import predict_prob
texts = [json.loads(line) for line in sys.stdin]
predict_prob(["warm up"])
start = time.perf_counter()
scores = predict_prob(texts) if texts else []
seconds = time.perf_counter() - start
json.dump({"scores": [float(s) for s in scores], "seconds": seconds}, sys.stdout)
"#;

/// The peer's scores of a set of texts, and its speed.
#[derive(Debug, Deserialize)]
pub struct PeerScores {
    /// Probability of profanity per text, in order.
    pub scores: Vec<f32>,
    /// Seconds spent scoring (not starting Python or loading the model).
    pub seconds: f64,
}

impl PeerScores {
    /// Texts scored per second.
    pub fn texts_per_second(&self) -> f64 {
        self.scores.len() as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// The Python of the virtual environment vigil loads ONNX Runtime from (`onnxruntime` is the
/// configured library, if any), else of the project's `.venv`, if there is one.
fn python(onnxruntime: Option<&Path>) -> Option<PathBuf> {
    let from_runtime = runtime::locate(onnxruntime).ok().and_then(|library| {
        library
            .ancestors()
            .find(|dir| dir.join("pyvenv.cfg").is_file())
            .map(|venv| venv.join("bin/python"))
    });
    from_runtime
        .into_iter()
        .chain(
            runtime::project_roots()
                .into_iter()
                .map(|root| root.join(".venv/bin/python")),
        )
        .find(|p| p.is_file())
}

/// Scores `texts` with the peer. An error says why the peer could not run (not installed, or it
/// failed), so callers can report it and go on.
pub fn score(texts: &[&str], onnxruntime: Option<&Path>) -> anyhow::Result<PeerScores> {
    let python = python(onnxruntime).context(
        "no project virtual environment (.venv) found: run scripts/setup-python.sh --notebooks",
    )?;
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let mut input = Vec::new();
    for text in texts {
        serde_json::to_writer(&mut input, text)?;
        input.push(b'\n');
    }
    let mut stdin = child.stdin.take().context("the peer's stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().context("waiting for the peer")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
        .context("sending texts to the peer")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.lines().last().unwrap_or("no message");
        anyhow::bail!(
            "{PEER} failed ({}): {reason}; install it with scripts/setup-python.sh --notebooks",
            output.status
        );
    }
    let scores: PeerScores =
        serde_json::from_slice(&output.stdout).context("reading the peer's answer")?;
    anyhow::ensure!(
        scores.scores.len() == texts.len(),
        "the peer scored {} of {} texts",
        scores.scores.len(),
        texts.len()
    );
    Ok(scores)
}
