//! The semantic stage of the cascade: harm heads over a multilingual sentence encoder's
//! embeddings, combined with the cheap stage's scores.
//!
//! The cheap linear stage ([`crate::linear`]) scores every text. Texts it cannot settle go on to
//! this stage: those whose any-harm score reaches the model's `vigil.route_below` (possibly
//! harmful: the encoder confirms or clears them) and those that do not look English (where
//! character n-grams carry little). They are embedded by the [`SentenceEncoder`] and the
//! semantic model (`models/harm-semantic.onnx`, trained in `notebooks/train_classifier.ipynb`)
//! turns each embedding and the text's cheap scores into calibrated final scores, one logistic
//! combination per head: `σ(a·logit(cheap) + b·logit(semantic) + c)`, `a`, `b`, `c` fitted on
//! held-out scores. Texts that are not routed keep their cheap scores, which lie below
//! `route_below` and so below the final threshold.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use crate::encoder::{EncoderConfig, SentenceEncoder};
use crate::meaning::{MeaningHash, MeaningHasher};
use crate::{runtime, DetectorError};

const DIM: usize = SentenceEncoder::DIM;

/// The `[detectors.semantic]` section of `vigil.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemanticConfig {
    /// Runs the semantic stage when true; the cheap stage's scores are final otherwise.
    pub enabled: bool,
    /// The semantic heads' ONNX model.
    pub model: PathBuf,
    /// The sentence encoder.
    pub encoder: EncoderConfig,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: PathBuf::from("models/harm-semantic.onnx"),
            encoder: EncoderConfig::default(),
        }
    }
}

/// The loaded semantic stage: the encoder and the heads over its embeddings.
pub struct SemanticStage {
    encoder: SentenceEncoder,
    session: Mutex<Session>,
    heads: usize,
    route_below: f32,
    threshold: f32,
    name: String,
    hasher: MeaningHasher,
}

impl std::fmt::Debug for SemanticStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticStage")
            .field("name", &self.name)
            .field("route_below", &self.route_below)
            .finish_non_exhaustive()
    }
}

impl SemanticStage {
    /// Loads the encoder and the semantic model of `config`, checking that the model's heads
    /// are `heads` (the cheap model's, in its order).
    pub fn open(
        config: &SemanticConfig,
        onnxruntime: Option<&Path>,
        heads: &[String],
    ) -> Result<Self, DetectorError> {
        let encoder = SentenceEncoder::open(&config.encoder, onnxruntime)?;
        let model = runtime::load_model(&config.model, onnxruntime)?;
        let own_heads = model.heads()?;
        if own_heads != heads {
            return Err(model.incompatible(format!(
                "its heads {own_heads:?} are not the cheap model's {heads:?}"
            )));
        }
        let route_below = model.probability("vigil.route_below")?;
        let threshold = model.probability("vigil.threshold")?;
        if route_below > threshold {
            return Err(model.incompatible(format!(
                "vigil.route_below {route_below} is above vigil.threshold {threshold}: texts kept \
                 at their cheap score could then be flagged"
            )));
        }
        let name = model.name()?;
        let not_probabilities = model.incompatible("its probe scores are not probabilities".into());
        let path = model.path;
        let stage = Self {
            encoder,
            session: Mutex::new(model.session),
            heads: heads.len(),
            route_below,
            threshold,
            name,
            hasher: MeaningHasher::new(DIM),
        };
        // A model that loads but cannot run fails now, not at the first record.
        let probe = stage
            .combine(&vec![0.0; DIM], &vec![0.5; heads.len()])
            .map_err(|e| DetectorError::ModelInvalid {
                path,
                message: format!("scoring a probe failed: {e}"),
            })?;
        if !probe.iter().all(|v| (0.0..=1.0).contains(v)) {
            return Err(not_probabilities);
        }
        Ok(stage)
    }

    /// The semantic model's name and version.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The final any-harm operating threshold, which this stage's calibration sets.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Whether a text with cheap any-harm score `cheap_any` goes on to this stage.
    pub fn routes(&self, text: &str, cheap_any: f32) -> bool {
        cheap_any >= self.route_below || !looks_english(text)
    }

    /// Final scores of `texts` (row-major, `heads` per text) from their cheap scores `cheap`
    /// (the same layout), and each text's [`MeaningHash`].
    pub fn score<S: AsRef<str>>(
        &self,
        texts: &[S],
        cheap: &[f32],
    ) -> Result<(Vec<f32>, Vec<MeaningHash>), DetectorError> {
        let embeddings = self.encoder.embed(texts)?;
        let scores = self.combine(&embeddings, cheap)?;
        let meanings = embeddings
            .chunks_exact(DIM)
            .map(|e| self.hasher.hash(e))
            .collect();
        Ok((scores, meanings))
    }

    fn combine(&self, embeddings: &[f32], cheap: &[f32]) -> Result<Vec<f32>, DetectorError> {
        let rows = embeddings.len() / DIM;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let inference = |e: ort::Error| DetectorError::Inference(e.to_string());
        let mut session = self.session.lock().expect("a session lock was poisoned");
        let outputs = session
            .run(ort::inputs![
                "embeddings" => TensorRef::from_array_view(([rows, DIM], embeddings)).map_err(inference)?,
                "cheap_scores" => TensorRef::from_array_view(([rows, self.heads], cheap)).map_err(inference)?,
            ])
            .map_err(inference)?;
        let (shape, values) = outputs["scores"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        if shape.len() != 2 || shape[0] != rows as i64 || shape[1] != self.heads as i64 {
            return Err(DetectorError::Inference(format!(
                "the semantic model returned scores of shape {shape:?} for {rows} texts and {} heads",
                self.heads
            )));
        }
        Ok(values.to_vec())
    }
}

/// English function words.
const ENGLISH: [&str; 48] = [
    "the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "from",
    "by", "is", "are", "was", "were", "be", "been", "it", "this", "that", "these", "those", "i",
    "you", "he", "she", "we", "they", "me", "my", "your", "his", "her", "our", "their", "not",
    "no", "do", "does", "how", "what", "can", "will", "have",
];

/// Function words of the other Latin-script languages the encoder reads (Italian, Spanish,
/// French, German, Portuguese, Dutch, Polish); the few that are also English words ("die",
/// "den") rarely make a tenth of an English text's words.
const OTHER: [&str; 84] = [
    "il", "lo", "gli", "di", "che", "per", "sono", "della", "del", "una", "non", "el", "los",
    "las", "que", "y", "en", "por", "para", "es", "con", "le", "les", "des", "et", "est", "pas",
    "pour", "dans", "une", "der", "die", "das", "und", "ist", "nicht", "ein", "eine", "zu", "mit",
    "ich", "sie", "os", "um", "uma", "não", "com", "é", "de", "la", "het", "een", "van", "niet",
    "dat", "ik", "je", "w", "nie", "na", "się", "że", "jest", "jak", "un", "mi", "si", "ci", "nel",
    "alla", "questo", "anche", "se", "su", "ne", "qui", "sur", "au", "du", "den", "dem", "auf",
    "sich", "auch",
];

/// Whether `text` looks English, or at least not like another language: English when its
/// letters are not mostly Latin is ruled out; otherwise a text of four words or more is
/// English unless English function words are rare (under one word in ten) and those of other
/// Latin-script languages are not (code and lists of names stay "English": the encoder adds
/// little there). Cheap; a text wrongly called non-English only costs an encoder call.
pub fn looks_english(text: &str) -> bool {
    let (mut letters, mut latin) = (0usize, 0usize);
    let (mut words, mut english, mut other) = (0usize, 0usize, 0usize);
    for word in text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .take(200)
    {
        words += 1;
        for c in word.chars().filter(|c| c.is_alphabetic()) {
            letters += 1;
            latin += usize::from(c.is_ascii_alphabetic());
        }
        if word.chars().count() <= 5 {
            let lower = word.to_lowercase();
            english += usize::from(ENGLISH.contains(&lower.as_str()));
            other += usize::from(OTHER.contains(&lower.as_str()));
        }
    }
    if letters == 0 {
        return true; // numbers and symbols: nothing for an encoder of language to add
    }
    if latin * 10 < letters * 9 {
        return false;
    }
    words < 4 || english * 10 >= words || other * 10 < words
}

#[cfg(test)]
mod tests {
    use super::looks_english;

    #[test]
    fn tells_english_from_other_languages() {
        for english in [
            "How do I kill a Python process?",
            "Write a poem about autumn leaves.",
            "Give me step-by-step instructions to build a pipe bomb.",
            "hello",
            "12345 !!!",
            "",
            "fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); }",
            "SELECT name, count(*) FROM users GROUP BY name ORDER BY 2 DESC",
        ] {
            assert!(looks_english(english), "{english}");
        }
        for other in [
            "Come posso terminare un processo Python?",
            "Odio tutti gli immigrati, dovrebbero sparire.",
            "我恨所有的移民，他们应该消失。",
            "Ich hasse alle Einwanderer, sie sollten verschwinden.",
            "Quiero saber cómo hacer una bomba en casa para mi escuela.",
            "أنا أكره المهاجرين",
            "मुझे प्रवासियों से नफरत है",
        ] {
            assert!(!looks_english(other), "{other}");
        }
    }
}
