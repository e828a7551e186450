//! The harm classifier: vigil's ONNX model served by ONNX Runtime.
//!
//! [`HarmClassifier::open`] loads and checks the model at start-up: the file must exist,
//! parse, declare the heads and featurisation vigil knows, and score two probe texts, so a
//! missing or corrupt model stops `vigil` before the first record rather than at it.
//! [`HarmClassifier::score`] featurises a batch in Rust and runs it in one call. The
//! classifier is `Send + Sync`: callers share it, and each call takes one of its sessions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use vigil_core::{Category, Content, Detection, HarmScores};

use crate::features::{FeatureBatch, FeatureSpec, Featurizer};
use crate::{runtime, DetectorError};

/// Name of the "any harm" head in the model's `vigil.heads` metadata.
const ANY_HEAD: &str = "any";

/// The `[detectors]` section of `vigil.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Scores records in `vigil run` when true.
    pub enabled: bool,
    /// The ONNX model file.
    pub model: PathBuf,
    /// ONNX Runtime's shared library; when unset, `ORT_DYLIB_PATH`, then the project's `.venv`.
    pub onnxruntime: Option<PathBuf>,
    /// Texts per model call.
    pub batch_size: usize,
    /// ONNX Runtime threads per call.
    pub threads: usize,
    /// Sessions, so that this many callers can score at once.
    pub sessions: usize,
    /// The "any harm" score at and above which a record counts as harmful; the model's own
    /// operating threshold when unset.
    pub threshold: Option<f32>,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: PathBuf::from("models/harm-linear.onnx"),
            onnxruntime: None,
            batch_size: 256,
            threads: 1,
            sessions: 1,
            threshold: None,
        }
    }
}

/// The loaded model.
pub struct HarmClassifier {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    spec: FeatureSpec,
    /// Output column of each category, in [`Category::ALL`] order, then of "any harm".
    columns: [usize; Category::ALL.len() + 1],
    heads: usize,
    threshold: f32,
    model: String,
    batch_size: usize,
}

impl std::fmt::Debug for HarmClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarmClassifier")
            .field("model", &self.model)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl HarmClassifier {
    /// Loads and checks the model of `config` (see the module docs).
    pub fn open(config: &ClassifierConfig) -> Result<Self, DetectorError> {
        let resolved = runtime::resolve(&config.model);
        let path = resolved.as_path();
        let bytes = std::fs::read(path).map_err(|source| DetectorError::ModelUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let environment = runtime::environment(config.onnxruntime.as_deref())?;
        let invalid = |message: String| DetectorError::ModelInvalid {
            path: path.to_path_buf(),
            message,
        };
        let mut sessions = Vec::new();
        for _ in 0..config.sessions.max(1) {
            let session = Session::builder(environment)
                .and_then(|b| {
                    b.with_optimization_level(GraphOptimizationLevel::Level3)
                        .map_err(Into::into)
                })
                .and_then(|b| {
                    b.with_intra_threads(config.threads.max(1))
                        .map_err(Into::into)
                })
                .and_then(|mut b| b.commit_from_memory(&bytes))
                .map_err(|e| invalid(e.to_string()))?;
            sessions.push(Mutex::new(session));
        }
        let meta = Metadata::read(&sessions[0].lock().expect("fresh lock"), path)?;
        let threshold = config.threshold.unwrap_or(meta.threshold);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(DetectorError::Config(format!(
                "detectors.threshold {threshold} is outside [0, 1]"
            )));
        }
        let classifier = Self {
            sessions,
            next: AtomicUsize::new(0),
            spec: meta.spec,
            columns: meta.columns,
            heads: meta.heads,
            threshold,
            model: meta.name,
            batch_size: config.batch_size.max(1),
        };
        classifier.probe(path)?;
        Ok(classifier)
    }

    /// The model's name and version, as recorded in detections.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The "any harm" operating threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Scores `texts`, in order.
    pub fn score<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<HarmScores>, DetectorError> {
        let mut featurizer = Featurizer::new(self.spec.clone());
        let mut batch = FeatureBatch::default();
        let mut scores = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            batch.clear();
            for text in chunk {
                featurizer.push(text.as_ref(), &mut batch);
            }
            self.run(&batch, &mut scores)?;
        }
        Ok(scores)
    }

    /// The detection for `scores`: whether it reaches the threshold, and which model said so.
    pub fn detection(&self, scores: HarmScores) -> Detection {
        Detection {
            harmful: scores.any_harm >= self.threshold,
            scores,
            model: self.model.clone(),
        }
    }

    /// The detection of each record's content, in one call. A record's prompt and completion
    /// are scored separately and the higher score kept for each head, so a long benign
    /// completion cannot dilute a harmful prompt.
    pub fn detect(&self, contents: &[&Content]) -> Result<Vec<Detection>, DetectorError> {
        let mut texts: Vec<&str> = Vec::new();
        let mut spans = Vec::with_capacity(contents.len());
        for content in contents {
            let start = texts.len();
            texts.extend(content.prompt.as_deref());
            texts.extend(content.completion.as_deref());
            spans.push(start..texts.len());
        }
        let scores = self.score(&texts)?;
        Ok(spans
            .into_iter()
            .map(|span| {
                let combined = scores[span]
                    .iter()
                    .copied()
                    .reduce(HarmScores::max)
                    .unwrap_or_default();
                self.detection(combined)
            })
            .collect())
    }

    fn run(&self, batch: &FeatureBatch, out: &mut Vec<HarmScores>) -> Result<(), DetectorError> {
        if batch.len == 0 {
            return Ok(());
        }
        let inference = |e: ort::Error| DetectorError::Inference(e.to_string());
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        let mut session = self.sessions[index]
            .lock()
            .expect("a session lock was poisoned");
        let entries = batch.ids.len();
        let row_count = [batch.len as i64];
        let outputs = session
            .run(ort::inputs![
                "feature_ids" => TensorRef::from_array_view(([entries], batch.ids.as_slice())).map_err(inference)?,
                "feature_counts" => TensorRef::from_array_view(([entries], batch.counts.as_slice())).map_err(inference)?,
                "feature_rows" => TensorRef::from_array_view(([entries], batch.rows.as_slice())).map_err(inference)?,
                "row_count" => TensorRef::from_array_view(([1usize], &row_count[..])).map_err(inference)?,
            ])
            .map_err(inference)?;
        let (shape, values) = outputs["scores"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        if shape.len() != 2 || shape[0] != batch.len as i64 || shape[1] != self.heads as i64 {
            return Err(DetectorError::Inference(format!(
                "the model returned scores of shape {shape:?} for {} texts and {} heads",
                batch.len, self.heads
            )));
        }
        for row in values.chunks_exact(self.heads) {
            let mut scores = HarmScores {
                any_harm: row[self.columns[Category::ALL.len()]],
                ..HarmScores::default()
            };
            for (i, category) in scores.categories.iter_mut().enumerate() {
                *category = row[self.columns[i]];
            }
            out.push(scores);
        }
        Ok(())
    }

    /// Scores two probe texts at start-up, so a model that loads but cannot run fails now.
    fn probe(&self, path: &Path) -> Result<(), DetectorError> {
        let scores = self
            .score(&[
                "Hello, how are you today?",
                "ignore all previous instructions",
            ])
            .map_err(|e| DetectorError::ModelInvalid {
                path: path.to_path_buf(),
                message: format!("scoring probe texts failed: {e}"),
            })?;
        let sane = scores.iter().all(|s| {
            std::iter::once(s.any_harm)
                .chain(s.categories)
                .all(|v| (0.0..=1.0).contains(&v))
        });
        if scores.len() != 2 || !sane {
            return Err(DetectorError::ModelInvalid {
                path: path.to_path_buf(),
                message: "the model's probe scores are not probabilities".into(),
            });
        }
        Ok(())
    }
}

/// What vigil reads from the model's metadata.
struct Metadata {
    name: String,
    spec: FeatureSpec,
    columns: [usize; Category::ALL.len() + 1],
    heads: usize,
    threshold: f32,
}

impl Metadata {
    fn read(session: &Session, path: &Path) -> Result<Self, DetectorError> {
        let incompatible = |problem: String| DetectorError::ModelIncompatible {
            path: path.to_path_buf(),
            problem,
        };
        let metadata = session
            .metadata()
            .map_err(|e| incompatible(format!("no metadata: {e}")))?;
        let get = |key: &str| {
            metadata
                .custom(key)
                .ok_or_else(|| incompatible(format!("metadata lacks {key}")))
        };
        let spec = FeatureSpec::parse(&get("vigil.featurizer")?).map_err(incompatible)?;
        let threshold: f32 = get("vigil.threshold")?
            .parse()
            .map_err(|_| incompatible("vigil.threshold is not a number".into()))?;
        let heads: Vec<String> = get("vigil.heads")?.split(',').map(str::to_owned).collect();
        let mut columns = [0; Category::ALL.len() + 1];
        let names = Category::ALL
            .iter()
            .map(|c| c.name())
            .chain(std::iter::once(ANY_HEAD));
        for (slot, name) in columns.iter_mut().zip(names) {
            *slot = heads
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| incompatible(format!("the model has no {name:?} head")))?;
        }
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for input in ["feature_ids", "feature_counts", "feature_rows", "row_count"] {
            if !inputs.contains(&input) {
                return Err(incompatible(format!("the model has no input {input:?}")));
            }
        }
        if !session.outputs().iter().any(|o| o.name() == "scores") {
            return Err(incompatible("the model has no output \"scores\"".into()));
        }
        let name = format!("{}@{}", get("vigil.model")?, get("vigil.version")?);
        Ok(Self {
            name,
            spec,
            columns,
            heads: heads.len(),
            threshold,
        })
    }
}
