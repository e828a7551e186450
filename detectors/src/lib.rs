//! vigil's per-record detectors: the harm classifier, the heuristics, and the measures of
//! their quality.
//!
//! - [`text`] normalises text and [`features`] turns it into hashed n-gram features, exactly
//!   as the training notebook (`notebooks/train_classifier.ipynb`) did;
//! - [`runtime`] finds and loads ONNX Runtime;
//! - [`onnx_file`] reads the model file's weights, and [`linear`] computes its linear heads in
//!   Rust;
//! - [`classifier`] serves the ONNX model: batched, shared across threads, checked at start-up
//!   (ONNX Runtime and Rust must agree on probe texts), and runs the cascade: [`semantic`]
//!   scores what the cheap stage cannot settle with a multilingual sentence encoder, and
//!   [`cache`] keeps the final scores of texts seen recently;
//! - [`sentencepiece`] tokenises exactly as the encoder's original graph did;
//! - [`encoder`] embeds texts with USE multilingual v3 (512 floats a text) in ONNX Runtime;
//! - [`skeleton`] undoes filter evasions (spacing, leetspeak, homoglyphs, invisible
//!   characters) and [`heuristics`] matches the policy's lexicons and jailbreak patterns
//!   against the result; [`simhash`] fingerprints texts for near-duplicate detection, and
//!   [`meaning`] hashes encoder embeddings for near-duplicates by meaning (paraphrases);
//! - [`metrics`] computes what `vigil eval` prints: AUPRC, precision, recall, F1 and
//!   false-positive rate.
//!
//! Detectors see content in memory only; what leaves them is scores ([`vigil_core::HarmScores`],
//! [`heuristics::Inspection`]). Recurrence over time is the `vigil-abuse` crate's job.

pub mod cache;
pub mod classifier;
pub mod encoder;
pub mod features;
pub mod heuristics;
pub mod linear;
pub mod meaning;
pub mod metrics;
pub mod onnx_file;
pub mod runtime;
pub mod semantic;
pub mod sentencepiece;
pub mod simhash;
pub mod skeleton;
pub mod text;

use std::path::PathBuf;

pub use classifier::{ClassifierConfig, Detected, HarmClassifier, ToDetect};
pub use heuristics::{Heuristics, HeuristicsPolicy, Inspection, PolicyError};
pub use meaning::MeaningHash;
pub use metrics::{Evaluation, Metrics};

/// Why a detector could not start or score.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// A model file could not be read.
    #[error("model {}: {source}", path.display())]
    ModelUnreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// ONNX Runtime could not load or run the model (a corrupt or truncated file).
    #[error("model {} is not a valid ONNX model: {message}", path.display())]
    ModelInvalid {
        /// The file.
        path: PathBuf,
        /// ONNX Runtime's complaint.
        message: String,
    },
    /// The model is valid ONNX but not one vigil can serve.
    #[error("model {} is not one vigil can serve: {problem}", path.display())]
    ModelIncompatible {
        /// The file.
        path: PathBuf,
        /// What is missing or different.
        problem: String,
    },
    /// The encoder's SentencePiece tokenizer file is not one.
    #[error("tokenizer {} is not the encoder's SentencePiece model: {message}", path.display())]
    TokenizerInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// No ONNX Runtime library was found.
    #[error(
        "ONNX Runtime 1.31 not found: set ORT_DYLIB_PATH (or detectors.onnxruntime) to libonnxruntime.so.1.31.1, \
         or install PyPI's onnxruntime==1.31.1 into the project's .venv with scripts/setup-python.sh; looked in: {}",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    OnnxRuntimeMissing {
        /// The places looked in.
        searched: Vec<PathBuf>,
    },
    /// The configured ONNX Runtime path is not a file.
    #[error("{setting} = {}: no such file (it should name libonnxruntime.so.1.31.1)", path.display())]
    OnnxRuntimeNotAFile {
        /// The configured path.
        path: PathBuf,
        /// Which setting named it.
        setting: &'static str,
    },
    /// The ONNX Runtime library failed to load.
    #[error("loading ONNX Runtime from {}: {message}", path.display())]
    OnnxRuntime {
        /// The library.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("{0}")]
    Config(String),
    /// Scoring failed.
    #[error("detector inference failed: {0}")]
    Inference(String),
}
