//! Review verdicts: what the LLM reviewer concluded about one sampled record of a case, and
//! where that sent the item (closed, or escalated to the human queue).
//!
//! A verdict holds identifiers, booleans, closed-set categories, numbers and a rationale
//! sentence that the reviewer checked quotes no content. It is stored with the case and never
//! holds prompt or completion text.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::flag::Category;
use crate::RequestId;

/// How severe a violation is, as the reviewer judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// No violation.
    None,
    /// Borderline or mild.
    Low,
    /// Clearly against the policy.
    Medium,
    /// Severe: serious real-world harm.
    High,
}

impl Severity {
    /// Every severity, mildest first.
    pub const ALL: [Severity; 4] = [Self::None, Self::Low, Self::Medium, Self::High];

    /// The name as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    /// The severity named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The model's assessment of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Whether the record violates the policy.
    pub violation: bool,
    /// The policy categories it violates (empty when it violates none).
    pub categories: Vec<Category>,
    /// How severe the violation is.
    pub severity: Severity,
    /// The model's confidence in its `violation` answer, in [0, 1].
    pub confidence: f32,
    /// One sentence explaining the verdict, quoting no content.
    pub rationale: String,
}

impl Assessment {
    /// The probability that the record violates the policy: `confidence` when the answer is
    /// "violation", `1 - confidence` otherwise. This is the score ranked for AUPRC.
    pub fn violation_probability(&self) -> f32 {
        if self.violation {
            self.confidence
        } else {
            1.0 - self.confidence
        }
    }
}

/// Where a reviewed item went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// A confident "no violation": the item is closed.
    Closed,
    /// Sent to the human review queue.
    Escalated,
}

/// Why an item was routed as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The model found no violation with at least the policy's closing confidence.
    ConfidentNoViolation,
    /// The model found a violation.
    Violation,
    /// The model found no violation, but with too little confidence to close the item.
    LowConfidence,
    /// The model's output was malformed twice (once after a stricter instruction).
    MalformedOutput,
    /// The backend failed (errors, timeouts) after its retries, or its circuit breaker was
    /// open: humans review the item instead of it waiting.
    BackendUnavailable,
    /// The record's content was not available to review: its resource does not log
    /// content and it was not reviewed in flight, or it was deleted.
    ContentUnavailable,
}

impl RouteReason {
    /// The reason's name as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConfidentNoViolation => "confident_no_violation",
            Self::Violation => "violation",
            Self::LowConfidence => "low_confidence",
            Self::MalformedOutput => "malformed_output",
            Self::BackendUnavailable => "backend_unavailable",
            Self::ContentUnavailable => "content_unavailable",
        }
    }
}

/// One stored verdict: the reviewer's conclusion about one sampled record of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The case the record was sampled for.
    pub case_id: String,
    /// The record reviewed.
    pub request_id: RequestId,
    /// When the review finished.
    #[serde(with = "time::serde::rfc3339")]
    pub reviewed_at: OffsetDateTime,
    /// Where the item went.
    pub route: Route,
    /// Why.
    pub reason: RouteReason,
    /// The model's assessment; `None` when no usable answer was obtained.
    pub assessment: Option<Assessment>,
    /// The backend and model that reviewed it (for example `local:SmolLM2-135M-Instruct.Q4_1`).
    pub model: String,
    /// The policy version the review ran under.
    pub policy_version: String,
    /// Calls made to the backend for this item (retries included).
    pub attempts: u32,
    /// Whether the content was reviewed in flight (its resource does not log content).
    pub in_flight: bool,
}
