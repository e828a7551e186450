//! Flag events: what vigil tells streaming consumers when it flags abuse.
//!
//! A flag event is versioned JSON carrying identifiers, scores, categories and times. It has no
//! field that could hold prompt or completion text: every string in it is an identifier with
//! its own grammar, a category from a closed set, or a time. Consumers that enforce (block an
//! end user, alert a customer) act on it; to read the flagged records themselves, a human
//! reviewer goes through the just-in-time access path.
//!
//! Compatibility: within one `schema_version`, fields are only ever added, never renamed,
//! removed or changed in meaning, so a consumer should ignore fields it does not know. A
//! change that breaks that rule raises the version.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Geography, RequestId, ResourceId};

/// The version of the flag-event schema this build writes.
pub const FLAG_SCHEMA_VERSION: u32 = 1;

/// Harm categories, shared by the classifiers, the detectors and flag events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Hate speech against protected groups.
    Hate,
    /// Harassment, threats and toxicity against people.
    Harassment,
    /// Sexual content.
    Sexual,
    /// Violence and gore.
    Violence,
    /// Self-harm and suicide.
    SelfHarm,
    /// Requests for illegal or dangerous help (weapons, drugs, malware, fraud).
    Illegal,
    /// Jailbreaks and prompt injection.
    Jailbreak,
}

impl Category {
    /// Every category, in a fixed order.
    pub const ALL: [Category; 7] = [
        Self::Hate,
        Self::Harassment,
        Self::Sexual,
        Self::Violence,
        Self::SelfHarm,
        Self::Illegal,
        Self::Jailbreak,
    ];

    /// The category's name as written in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hate => "hate",
            Self::Harassment => "harassment",
            Self::Sexual => "sexual",
            Self::Violence => "violence",
            Self::SelfHarm => "self_harm",
            Self::Illegal => "illegal",
            Self::Jailbreak => "jailbreak",
        }
    }

    /// The category's position in [`Category::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The category named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whose behaviour a flag is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FlagSubject {
    /// One end user of the resource (the customer's own identifier for them).
    EndUser {
        /// The end user's identifier as the record carried it.
        end_user: String,
    },
    /// The resource as a whole.
    Resource,
}

/// What raised a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagOrigin {
    /// vigil's recurring-abuse detection.
    Detector,
    /// An operator, by hand (`vigil flags raise`).
    Manual,
}

/// Scores behind a flag, each in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagScores {
    /// The combined abuse score.
    pub abuse: f32,
    /// Per-category severity.
    #[serde(default)]
    pub categories: BTreeMap<Category, f32>,
}

/// The time window whose records a flag is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagWindow {
    /// Start (inclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// End (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

/// One flag, as published on the flag topic of its resource's geography.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagEvent {
    /// [`FLAG_SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// Unique ID of this flag.
    pub flag_id: String,
    /// When it was raised.
    #[serde(with = "time::serde::rfc3339")]
    pub flagged_at: OffsetDateTime,
    /// What raised it.
    pub origin: FlagOrigin,
    /// The resource's home geography.
    pub geography: Geography,
    /// The resource.
    pub resource_id: ResourceId,
    /// Whose behaviour it is about.
    pub subject: FlagSubject,
    /// The case opened for it, once case management exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// The records that triggered it (the sample offered for review).
    pub request_ids: Vec<RequestId>,
    /// The harm categories involved.
    pub categories: Vec<Category>,
    /// The scores.
    pub scores: FlagScores,
    /// The window the scores cover, when they cover one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<FlagWindow>,
}

/// A flag event that cannot be published as it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlagError {
    /// A score is outside [0, 1] or not a number.
    #[error("field `scores`: {0} is not a score in [0, 1]")]
    Score(&'static str),
    /// The event names no record.
    #[error("field `request_ids`: a flag names at least one request")]
    NoRequests,
    /// An identifier does not follow its grammar.
    #[error("field `{0}`: not a valid identifier")]
    Identifier(&'static str),
}

impl FlagEvent {
    /// Checks the event before it is published.
    pub fn validate(&self) -> Result<(), FlagError> {
        let valid = |s: f32| (0.0..=1.0).contains(&s);
        if !valid(self.scores.abuse) {
            return Err(FlagError::Score("abuse"));
        }
        if let Some((c, _)) = self.scores.categories.iter().find(|(_, s)| !valid(**s)) {
            return Err(FlagError::Score(c.name()));
        }
        if self.request_ids.is_empty() {
            return Err(FlagError::NoRequests);
        }
        // Flag and case IDs follow the request-ID grammar; the end user, a record's.
        if RequestId::parse(self.flag_id.as_str()).is_err() {
            return Err(FlagError::Identifier("flag_id"));
        }
        if (self.case_id.as_deref()).is_some_and(|c| RequestId::parse(c).is_err()) {
            return Err(FlagError::Identifier("case_id"));
        }
        if let FlagSubject::EndUser { end_user } = &self.subject {
            if !crate::record::is_valid_end_user(end_user) {
                return Err(FlagError::Identifier("subject.end_user"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> FlagEvent {
        FlagEvent {
            schema_version: FLAG_SCHEMA_VERSION,
            flag_id: "flag-1".into(),
            flagged_at: time::macros::datetime!(2026-11-23 10:00 UTC),
            origin: FlagOrigin::Detector,
            geography: Geography::parse("eu").unwrap(),
            resource_id: ResourceId::parse("res-a").unwrap(),
            subject: FlagSubject::EndUser {
                end_user: "u-9".into(),
            },
            case_id: None,
            request_ids: vec![RequestId::parse("r-1").unwrap()],
            categories: vec![Category::Jailbreak],
            scores: FlagScores {
                abuse: 0.9,
                categories: [(Category::Jailbreak, 0.95)].into(),
            },
            window: None,
        }
    }

    #[test]
    fn round_trips_as_documented_json() {
        let e = event();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["subject"]["kind"], "end_user");
        assert_eq!(json["categories"][0], "jailbreak");
        assert_eq!(json["flagged_at"], "2026-11-23T10:00:00Z");
        assert!(json.get("case_id").is_none());
        let back: FlagEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        // Consumers of version 1 ignore fields added later.
        let mut newer = serde_json::to_value(&e).unwrap();
        newer["added_later"] = 1.into();
        assert!(serde_json::from_value::<FlagEvent>(newer).is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        assert!(event().validate().is_ok());
        let mut e = event();
        e.scores.categories.insert(Category::Hate, 1.5);
        assert_eq!(
            e.validate().unwrap_err().to_string(),
            "field `scores`: hate is not a score in [0, 1]"
        );
        let mut e = event();
        e.scores.abuse = f32::NAN;
        assert_eq!(e.validate(), Err(FlagError::Score("abuse")));
        e.scores.abuse = 0.5;
        e.request_ids.clear();
        assert_eq!(e.validate(), Err(FlagError::NoRequests));
        let mut e = event();
        e.flag_id = "has spaces and\nnewlines".into();
        assert_eq!(e.validate(), Err(FlagError::Identifier("flag_id")));
        let mut e = event();
        e.subject = FlagSubject::EndUser {
            end_user: "x".repeat(300),
        };
        assert_eq!(e.validate(), Err(FlagError::Identifier("subject.end_user")));
        assert!(Category::ALL
            .iter()
            .all(|c| Category::parse(c.name()) == Some(*c)));
    }
}
