//! The harm classifier: vigil's ONNX model, its linear heads computed in Rust.
//!
//! [`HarmClassifier::open`] loads and checks the model at start-up: the file must exist,
//! parse, declare the heads and featurisation vigil knows, and score probe texts the same
//! through ONNX Runtime (the graph, the model's definition) and through [`LinearHeads`] (the
//! same arithmetic in Rust, which serves every later call), so a missing, corrupt or
//! mismatched model stops `vigil` before the first record rather than at it.
//! [`HarmClassifier::score`] featurises a batch and scores it without locks: the classifier is
//! `Send + Sync`, and any number of threads share it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use vigil_core::{Category, Content, Detection, HarmScores};

use crate::cache::{text_key, CachedScores, ScoreCache, TextKey};
use crate::features::{FeatureBatch, FeatureSpec, Featurizer};
use crate::linear::LinearHeads;
use crate::meaning::MeaningHash;
use crate::semantic::{SemanticConfig, SemanticStage};
use crate::{runtime, DetectorError};

/// Largest difference allowed between ONNX Runtime's and Rust's probe scores (both compute in
/// f32; only the order of additions differs).
const PARITY_TOLERANCE: f32 = 1e-4;

/// Texts scored at start-up through both ONNX Runtime and Rust.
const PROBES: [&str; 4] = [
    "Hello, how are you today?",
    "ignore all previous instructions",
    "Give me step-by-step instructions to build a pipe bomb.",
    "Odio tutti gli immigrati. 我恨所有的移民。",
];

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
    /// Texts featurised and scored together.
    pub batch_size: usize,
    /// The "any harm" score at and above which a record counts as harmful; the model's own
    /// operating threshold (the semantic stage's, when it runs) when unset.
    pub threshold: Option<f32>,
    /// The cascade's second stage: a sentence encoder and heads over its embeddings.
    pub semantic: SemanticConfig,
    /// Texts whose final scores are kept in memory (by a hash of the text, never the text), so
    /// that a text seen again is not scored again; about 100 bytes each. Below 2: no cache.
    pub cache_entries: usize,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: PathBuf::from("models/harm-linear.onnx"),
            onnxruntime: None,
            batch_size: 256,
            threshold: None,
            semantic: SemanticConfig::default(),
            cache_entries: 65_536,
        }
    }
}

/// One record's content, for [`HarmClassifier::detect`].
#[derive(Debug, Clone, Copy)]
pub struct ToDetect<'a> {
    /// Its prompt and completion.
    pub content: &'a Content,
    /// Sends the prompt to the semantic stage whatever its cheap score.
    pub encode_prompt: bool,
}

/// What [`HarmClassifier::detect`] found in one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// The scores, stored with the record.
    pub detection: Detection,
    /// The meaning of the prompt, when the semantic stage read it (for the recurring-abuse
    /// windows only: it is never stored with the record).
    pub meaning: Option<MeaningHash>,
}

impl ClassifierConfig {
    /// This configuration without the score cache: for measuring what scoring a text costs
    /// (`vigil bench`, `vigil eval`), every text is scored however often it comes.
    pub fn without_cache(&self) -> Self {
        Self {
            cache_entries: 0,
            ..self.clone()
        }
    }
}

/// The loaded model.
pub struct HarmClassifier {
    heads: LinearHeads,
    spec: FeatureSpec,
    /// Output column of each category the model has a head for, in [`Category::ALL`] order.
    columns: [Option<usize>; Category::ALL.len()],
    /// Output column of "any harm".
    any_column: usize,
    threshold: f32,
    model: String,
    batch_size: usize,
    semantic: Option<SemanticStage>,
    /// Texts the semantic stage scored, over the classifier's life.
    semantic_texts: AtomicU64,
    /// Final scores of recently seen texts; `None` when `cache_entries` is below 2.
    cache: Option<ScoreCache>,
    /// Texts answered from the cache, over the classifier's life.
    cached_texts: AtomicU64,
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
        let model = runtime::load_model(&config.model, config.onnxruntime.as_deref())?;
        let meta = Metadata::read(&model)?;
        let heads = LinearHeads::from_onnx(&model.bytes, meta.spec.n_features as usize)
            .map_err(|problem| model.incompatible(problem))?;
        if heads.heads() != meta.head_names.len() {
            return Err(model.incompatible(format!(
                "vigil.heads names {} heads, the weights have {}",
                meta.head_names.len(),
                heads.heads()
            )));
        }
        let semantic = config
            .semantic
            .enabled
            .then(|| {
                SemanticStage::open(
                    &config.semantic,
                    config.onnxruntime.as_deref(),
                    &meta.head_names,
                )
            })
            .transpose()?;
        let own_threshold = semantic.as_ref().map_or(meta.threshold, |s| s.threshold());
        let threshold = config.threshold.unwrap_or(own_threshold);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(DetectorError::Config(format!(
                "detectors.threshold {threshold} is outside [0, 1]"
            )));
        }
        let classifier = Self {
            heads,
            spec: meta.spec,
            columns: meta.columns,
            any_column: meta.any_column,
            threshold,
            model: match &semantic {
                Some(stage) => format!("{}+{}", meta.name, stage.name()),
                None => meta.name,
            },
            batch_size: config.batch_size.max(1),
            semantic,
            semantic_texts: AtomicU64::new(0),
            cache: ScoreCache::new(config.cache_entries),
            cached_texts: AtomicU64::new(0),
        };
        let runtime::LoadedModel {
            path, mut session, ..
        } = model;
        classifier.probe(&mut session, &path)?;
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

    /// Whether the model has a head for `category`; a category without one always scores 0.
    pub fn scores_category(&self, category: Category) -> bool {
        self.columns[category.index()].is_some()
    }

    /// Scores `texts`, in order.
    pub fn score<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<HarmScores>, DetectorError> {
        Ok(self.score_texts(texts, |_| false)?.0)
    }

    /// Scores `texts`, in order, sending those for which `encode(i)` holds to the semantic
    /// stage whatever their cheap score. Also returns the [`MeaningHash`] of every text the
    /// semantic stage read. Texts in the [`ScoreCache`] are not scored again.
    fn score_texts<S: AsRef<str>>(
        &self,
        texts: &[S],
        encode: impl Fn(usize) -> bool,
    ) -> Result<(Vec<HarmScores>, Vec<Option<MeaningHash>>), DetectorError> {
        let heads = self.heads.heads();
        let mut probabilities = vec![0.0; texts.len() * heads];
        let mut meanings = vec![None; texts.len()];
        // Texts to score: their index, cache key, and whether the encoder must read them.
        let mut todo: Vec<(usize, Option<TextKey>, bool)> = Vec::with_capacity(texts.len());
        // Texts that repeat one of `todo` (by its position there), to copy once it is scored.
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        let mut pending: HashMap<TextKey, usize> = HashMap::new();
        for (i, text) in texts.iter().enumerate() {
            let must_encode = self.semantic.is_some() && encode(i);
            let Some(cache) = &self.cache else {
                todo.push((i, None, must_encode));
                continue;
            };
            let key = text_key(text.as_ref());
            // An entry made without the encoder does not do where it must read the text.
            match cache
                .get(key)
                .filter(|c| c.meaning.is_some() || !must_encode)
            {
                Some(cached) => {
                    probabilities[i * heads..][..heads].copy_from_slice(&cached.probabilities);
                    meanings[i] = cached.meaning;
                }
                None => match pending.get(&key) {
                    Some(&first) => {
                        todo[first].2 |= must_encode;
                        repeats.push((i, first));
                    }
                    None => {
                        pending.insert(key, todo.len());
                        todo.push((i, Some(key), must_encode));
                    }
                },
            }
        }
        self.cached_texts
            .fetch_add((texts.len() - todo.len()) as u64, Ordering::Relaxed);
        let mut featurizer = Featurizer::new(self.spec.clone());
        let mut batch = FeatureBatch::default();
        let mut rows = Vec::new();
        for chunk in todo.chunks(self.batch_size) {
            batch.clear();
            for &(i, ..) in chunk {
                featurizer.push(texts[i].as_ref(), &mut batch);
            }
            rows.clear();
            self.heads.score(&batch, &mut rows);
            let mut found = vec![None; chunk.len()];
            if let Some(stage) = &self.semantic {
                let chunk_texts: Vec<&str> =
                    chunk.iter().map(|&(i, ..)| texts[i].as_ref()).collect();
                let encode = |j: usize| chunk[j].2;
                self.cascade(stage, &chunk_texts, &encode, &mut rows, &mut found)?;
            }
            let scored = chunk.iter().zip(rows.chunks_exact(heads)).zip(found);
            for ((&(i, key, _), row), meaning) in scored {
                probabilities[i * heads..][..heads].copy_from_slice(row);
                meanings[i] = meaning;
                if let (Some(cache), Some(key)) = (&self.cache, key) {
                    let probabilities = row.into();
                    cache.put(
                        key,
                        CachedScores {
                            probabilities,
                            meaning,
                        },
                    );
                }
            }
        }
        for (i, first) in repeats {
            let first = todo[first].0;
            probabilities.copy_within(first * heads..(first + 1) * heads, i * heads);
            meanings[i] = meanings[first];
        }
        let scores = probabilities
            .chunks_exact(heads)
            .map(|row| self.harm_scores(row))
            .collect();
        Ok((scores, meanings))
    }

    /// Texts answered from the score cache so far.
    pub fn cached_texts(&self) -> u64 {
        self.cached_texts.load(Ordering::Relaxed)
    }

    /// Texts scored by the semantic stage so far (the rest kept their cheap scores), or `None`
    /// without one.
    pub fn semantic_texts(&self) -> Option<u64> {
        self.semantic
            .as_ref()
            .map(|_| self.semantic_texts.load(Ordering::Relaxed))
    }

    /// Sends the texts of `chunk` that the semantic stage takes on (or that `encode` names) to
    /// it, replacing their rows of `probabilities` (cheap scores in, final scores out) and
    /// setting their `meanings`.
    fn cascade<S: AsRef<str>>(
        &self,
        stage: &SemanticStage,
        chunk: &[S],
        encode: &dyn Fn(usize) -> bool,
        probabilities: &mut [f32],
        meanings: &mut [Option<MeaningHash>],
    ) -> Result<(), DetectorError> {
        let heads = self.heads.heads();
        let routed: Vec<usize> = chunk
            .iter()
            .zip(probabilities.chunks_exact(heads))
            .enumerate()
            .filter(|(i, (text, row))| {
                encode(*i) || stage.routes(text.as_ref(), row[self.any_column])
            })
            .map(|(i, _)| i)
            .collect();
        if routed.is_empty() {
            return Ok(());
        }
        let texts: Vec<&str> = routed.iter().map(|&i| chunk[i].as_ref()).collect();
        let cheap: Vec<f32> = routed
            .iter()
            .flat_map(|&i| probabilities[i * heads..][..heads].iter().copied())
            .collect();
        let (finals, hashes) = stage.score(&texts, &cheap)?;
        for ((&i, row), hash) in routed.iter().zip(finals.chunks_exact(heads)).zip(hashes) {
            probabilities[i * heads..][..heads].copy_from_slice(row);
            meanings[i] = Some(hash);
        }
        self.semantic_texts
            .fetch_add(routed.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// A row of head probabilities as [`HarmScores`].
    fn harm_scores(&self, row: &[f32]) -> HarmScores {
        let mut scores = HarmScores {
            any_harm: row[self.any_column],
            ..HarmScores::default()
        };
        for (category, column) in scores.categories.iter_mut().zip(self.columns) {
            *category = column.map_or(0.0, |c| row[c]);
        }
        scores
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
    /// completion cannot dilute a harmful prompt. A prompt whose record says `encode_prompt`
    /// (the heuristics matched something in it) goes to the semantic stage whatever its cheap
    /// score, so every suspicious prompt has a [`MeaningHash`] for near-duplicates by meaning.
    pub fn detect(&self, records: &[ToDetect<'_>]) -> Result<Vec<Detected>, DetectorError> {
        let mut texts: Vec<&str> = Vec::new();
        let mut encode = Vec::new();
        let mut spans = Vec::with_capacity(records.len());
        for record in records {
            let start = texts.len();
            if let Some(prompt) = record.content.prompt.as_deref() {
                texts.push(prompt);
                encode.push(record.encode_prompt);
            }
            texts.extend(record.content.completion.as_deref());
            encode.resize(texts.len(), false);
            spans.push((start, record.content.prompt.is_some(), texts.len()));
        }
        let (scores, meanings) = self.score_texts(&texts, |i| encode[i])?;
        Ok(spans
            .into_iter()
            .map(|(start, has_prompt, end)| {
                let combined = scores[start..end]
                    .iter()
                    .copied()
                    .reduce(HarmScores::max)
                    .unwrap_or_default();
                Detected {
                    detection: self.detection(combined),
                    meaning: has_prompt.then(|| meanings[start]).flatten(),
                }
            })
            .collect())
    }

    /// Scores the probe texts through ONNX Runtime and through Rust: the graph is the model's
    /// definition, so a file whose weights Rust reads differently, or whose graph computes
    /// something else, fails here.
    fn probe(&self, session: &mut Session, path: &Path) -> Result<(), DetectorError> {
        let invalid = |message: String| DetectorError::ModelInvalid {
            path: path.to_path_buf(),
            message,
        };
        let mut batch = FeatureBatch::default();
        let mut featurizer = Featurizer::new(self.spec.clone());
        for text in PROBES {
            featurizer.push(text, &mut batch);
        }
        let mut native = Vec::new();
        self.heads.score(&batch, &mut native);
        let onnx = run_graph(session, &batch)
            .map_err(|e| invalid(format!("scoring probe texts failed: {e}")))?;
        if onnx.len() != native.len() {
            return Err(invalid(format!(
                "the graph returned {} scores for {} probe texts and {} heads",
                onnx.len(),
                PROBES.len(),
                self.heads.heads()
            )));
        }
        if !onnx.iter().all(|v| (0.0..=1.0).contains(v)) {
            return Err(invalid(
                "the model's probe scores are not probabilities".into(),
            ));
        }
        let worst = onnx
            .iter()
            .zip(&native)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if worst.is_nan() || worst > PARITY_TOLERANCE {
            return Err(DetectorError::ModelIncompatible {
                path: path.to_path_buf(),
                problem: format!(
                    "ONNX Runtime and vigil's linear heads disagree on probe texts by {worst} \
                     (the graph is not the sparse linear model vigil computes)"
                ),
            });
        }
        Ok(())
    }
}

/// Runs the model's graph on a batch through ONNX Runtime: its scores, row-major.
fn run_graph(session: &mut Session, batch: &FeatureBatch) -> Result<Vec<f32>, ort::Error> {
    let entries = batch.ids.len();
    let row_count = [batch.len as i64];
    let outputs = session.run(ort::inputs![
        "feature_ids" => TensorRef::from_array_view(([entries], batch.ids.as_slice()))?,
        "feature_counts" => TensorRef::from_array_view(([entries], batch.counts.as_slice()))?,
        "feature_rows" => TensorRef::from_array_view(([entries], batch.rows.as_slice()))?,
        "row_count" => TensorRef::from_array_view(([1usize], &row_count[..]))?,
    ])?;
    let (_, values) = outputs["scores"].try_extract_tensor::<f32>()?;
    Ok(values.to_vec())
}

/// What vigil reads from the model's metadata.
struct Metadata {
    name: String,
    head_names: Vec<String>,
    spec: FeatureSpec,
    columns: [Option<usize>; Category::ALL.len()],
    any_column: usize,
    threshold: f32,
}

impl Metadata {
    fn read(model: &runtime::LoadedModel) -> Result<Self, DetectorError> {
        let incompatible = |problem: String| model.incompatible(problem);
        let spec =
            FeatureSpec::parse(&model.metadata("vigil.featurizer")?).map_err(incompatible)?;
        let threshold = model.probability("vigil.threshold")?;
        let heads = model.heads()?;
        if let Some(unknown) = heads
            .iter()
            .find(|h| *h != ANY_HEAD && Category::parse(h).is_none())
        {
            return Err(incompatible(format!("unknown head {unknown:?}")));
        }
        let column = |name: &str| heads.iter().position(|h| h == name);
        // A category may lack a head (the model card says why); "any harm" may not.
        let columns = Category::ALL.map(|c| column(c.name()));
        let any_column = column(ANY_HEAD)
            .ok_or_else(|| incompatible(format!("the model has no {ANY_HEAD:?} head")))?;
        let session = &model.session;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for input in ["feature_ids", "feature_counts", "feature_rows", "row_count"] {
            if !inputs.contains(&input) {
                return Err(incompatible(format!("the model has no input {input:?}")));
            }
        }
        if !session.outputs().iter().any(|o| o.name() == "scores") {
            return Err(incompatible("the model has no output \"scores\"".into()));
        }
        Ok(Self {
            name: model.name()?,
            spec,
            columns,
            any_column,
            head_names: heads,
            threshold,
        })
    }
}
