//! Human review decisions: what a reviewer concluded about one flagged record of a case, or
//! about the case as a whole, after reading it under a grant.
//!
//! A decision holds identifiers, a closed-set outcome and the reviewer's note. The note is
//! free text written by someone who read the content, so it is treated like the LLM's
//! rationale: stored with the case and shown to reviewers and managers, never exported,
//! audited, logged or published.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Geography, RequestId, ResourceId};

/// Longest note a decision may carry, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// What the reviewer concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The content is abuse; the case stands.
    AbuseConfirmed,
    /// The content is not abuse: the detection was wrong.
    FalsePositive,
    /// The reviewer cannot settle it; someone more senior (legal, policy) should.
    NeedsEscalation,
}

impl Outcome {
    /// Every outcome, in the order a form offers them.
    pub const ALL: [Outcome; 3] = [
        Self::AbuseConfirmed,
        Self::FalsePositive,
        Self::NeedsEscalation,
    ];

    /// The outcome's name, as the API, the exports and the audit log write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::AbuseConfirmed => "abuse_confirmed",
            Self::FalsePositive => "false_positive",
            Self::NeedsEscalation => "needs_escalation",
        }
    }

    /// Parses an outcome name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// One human decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `dec-` and 24 hex digits: the decision time in microseconds, then a random part, so
    /// a case's decisions sort by time.
    pub decision_id: String,
    /// The case decided on.
    pub case_id: String,
    /// The record decided on; `None` for a decision about the whole case.
    pub request_id: Option<RequestId>,
    /// The case's resource.
    pub resource_id: ResourceId,
    /// The case's geography.
    pub geography: Geography,
    /// The reviewer's principal name.
    pub reviewer: String,
    /// What they concluded.
    pub outcome: Outcome,
    /// Why, in their words (may be empty).
    pub note: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
    /// The access request whose grant the reviewer read the case under.
    pub access_request: String,
}

impl Decision {
    /// A fresh decision ID for a decision made at `at`.
    pub fn new_id(at: OffsetDateTime) -> String {
        let micros = (at.unix_timestamp_nanos() / 1_000).max(0) as u64;
        format!("dec-{micros:016x}{:08x}", rand::random::<u32>())
    }
}
