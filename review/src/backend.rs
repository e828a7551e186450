//! The one trait every reviewer backend implements, and what it is given.

use vigil_abuse::{Policy, ReviewPolicy};
use vigil_core::{Assessment, Case, Category, Content, Detection};

/// The detection signals behind a sampled record, given to the reviewer beside its content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReviewSignals {
    /// The classifier's "any harm" score for the record, when it was scored.
    pub harm: Option<f32>,
    /// The classifier's categories at or above the policy's category threshold, with scores.
    pub categories: Vec<(Category, f32)>,
    /// The case's abuse score.
    pub abuse: f32,
    /// Jailbreak and injection pattern families seen in the case's window.
    pub pattern_families: Vec<String>,
}

impl ReviewSignals {
    /// The signals of a record with `detection` (if the classifier scored it), sampled for
    /// `case`; categories count from `category_at` (the abuse policy's
    /// `signals.category_at`).
    pub fn of(detection: Option<&Detection>, case: &Case, category_at: f32) -> Self {
        Self {
            harm: detection.map(|d| d.scores.any_harm),
            categories: detection.map_or_else(Vec::new, |d| d.scores.categories_over(category_at)),
            abuse: case.scores.abuse,
            pattern_families: case.pattern_families.clone(),
        }
    }
}

/// One item to review: a sampled record's content, its signals and the policy.
#[derive(Debug, Clone, Copy)]
pub struct ReviewRequest<'a> {
    /// The record's prompt and/or completion (already cut to the policy's length).
    pub content: &'a Content,
    /// What the detectors found.
    pub signals: &'a ReviewSignals,
    /// Category definitions and thresholds.
    pub policy: &'a ReviewPolicy,
    /// The policy version, recorded on the verdict.
    pub policy_version: &'a str,
}

impl<'a> ReviewRequest<'a> {
    /// A request to review `content` with `signals` under `policy`'s `[review]` section.
    pub fn new(content: &'a Content, signals: &'a ReviewSignals, policy: &'a Policy) -> Self {
        Self {
            content,
            signals,
            policy: &policy.review,
            policy_version: &policy.version,
        }
    }
}

/// How firmly the backend is told to answer in the verdict format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// The normal review prompt.
    Normal,
    /// After a malformed answer: the format restated, nothing but the JSON object allowed.
    Strict,
}

/// Why a backend produced no assessment.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Worth retrying after a pause: the connection failed or timed out, or the server was
    /// overloaded or failed (HTTP 429 and 5xx).
    #[error("transient backend failure: {0}")]
    Transient(String),
    /// The model answered, but not with a valid verdict. The message describes the problem,
    /// never the answer's text (which may echo content).
    #[error("malformed model output: {0}")]
    Malformed(String),
    /// The backend refused this one item (for example HTTP 400 from a content filter, or 413):
    /// not retried, and no sign that the backend is down.
    #[error("the backend rejected the item: {0}")]
    Rejected(String),
    /// Retrying will not help (for example HTTP 401: a wrong API key; or a broken model).
    #[error("backend failure: {0}")]
    Permanent(String),
}

/// A reviewer backend: a local model or a remote endpoint. Shared across worker threads.
pub trait Backend: Send + Sync {
    /// The backend and model, recorded on every verdict (for example
    /// `openai:gpt-4o-mini` or `local:SmolLM2-135M-Instruct.Q4_1`).
    fn model(&self) -> String;

    /// Assesses one record.
    fn assess(
        &self,
        request: &ReviewRequest<'_>,
        instruction: Instruction,
    ) -> Result<Assessment, BackendError>;
}
