//! Cases: what vigil opens when an end user's or a resource's abuse score crosses its
//! threshold. A case names the subject, the window, the scores and the signals behind them,
//! and a bounded sample of the subject's request IDs offered for review. Like a flag event, it
//! holds identifiers, numbers, closed-set categories and policy family names, never content.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::flag::{
    Category, FlagEvent, FlagOrigin, FlagScores, FlagSubject, FlagWindow, FLAG_SCHEMA_VERSION,
};
use crate::{Geography, RequestId, ResourceId};

/// The behaviour measured over a case's window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CaseSignals {
    /// Records in the window.
    pub records: u32,
    /// Of which harmful (classifier or heuristics).
    pub harmful: u32,
    /// Harmful records in the window before it.
    pub previous_harmful: u32,
    /// Harmful records that nearly repeated an earlier one in the window.
    pub near_duplicates: u32,
    /// Records matching a known jailbreak or prompt-injection pattern family.
    pub template_hits: u32,
    /// Harmful records more severe than every earlier one in the window.
    pub escalations: u32,
    /// The four components of the abuse score, each in [0, 1].
    pub frequency: f32,
    /// Mean severity of the harmful records.
    pub severity: f32,
    /// Intent: near-duplicate retries, templates and escalation.
    pub intent: f32,
    /// Trend against the previous window.
    pub trend: f32,
}

/// One case, opened for review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Unique and stable: the same subject and window always get the same ID.
    pub case_id: String,
    /// When the score crossed the threshold (the time of the record that made it cross).
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// The resource's home geography.
    pub geography: Geography,
    /// The resource.
    pub resource_id: ResourceId,
    /// An end user of it, or the resource as a whole.
    pub subject: FlagSubject,
    /// The window the scores cover.
    pub window: FlagWindow,
    /// The abuse score and per-category severity.
    pub scores: FlagScores,
    /// Categories involved, most severe first.
    pub categories: Vec<Category>,
    /// What the abuse score was computed from.
    pub signals: CaseSignals,
    /// Names of the policy's pattern families that matched in the window.
    pub pattern_families: Vec<String>,
    /// The request IDs sampled for review (bounded; see the policy's `sampling.size`).
    pub sample: Vec<RequestId>,
    /// The policy version that scored it.
    pub policy_version: String,
}

impl Case {
    /// Whether `other` is about the same subject: the same end user of the same resource (or
    /// the same resource as a whole) in the same geography. A case ID is only ever reused by
    /// the same subject's case; storing one over another subject's is refused.
    pub fn same_subject(&self, other: &Case) -> bool {
        self.geography == other.geography
            && self.resource_id == other.resource_id
            && self.subject == other.subject
    }

    /// The flag event announcing this case.
    pub fn flag_event(&self) -> FlagEvent {
        FlagEvent {
            schema_version: FLAG_SCHEMA_VERSION,
            flag_id: format!("flag-{}", self.case_id),
            flagged_at: self.opened_at,
            origin: FlagOrigin::Detector,
            geography: self.geography.clone(),
            resource_id: self.resource_id.clone(),
            subject: self.subject.clone(),
            case_id: Some(self.case_id.clone()),
            request_ids: self.sample.clone(),
            categories: self.categories.clone(),
            scores: self.scores.clone(),
            window: Some(self.window),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case of end user `u-1` of `res-a` in `eu`.
    fn case(case_id: &str) -> Case {
        Case {
            case_id: case_id.into(),
            opened_at: time::macros::datetime!(2026-11-23 10:00 UTC),
            geography: Geography::parse("eu").unwrap(),
            resource_id: ResourceId::parse("res-a").unwrap(),
            subject: FlagSubject::EndUser {
                end_user: "u-1".into(),
            },
            window: FlagWindow {
                start: time::macros::datetime!(2026-11-23 09:00 UTC),
                end: time::macros::datetime!(2026-11-23 10:00 UTC),
            },
            scores: FlagScores {
                abuse: 0.8,
                categories: [(Category::Jailbreak, 0.9)].into(),
            },
            categories: vec![Category::Jailbreak],
            signals: CaseSignals::default(),
            pattern_families: vec!["ignore_instructions".into()],
            sample: vec![RequestId::parse("r-1").unwrap()],
            policy_version: "1".into(),
        }
    }

    #[test]
    fn the_flag_event_carries_the_case_ids_and_scores() {
        let case = case("case-0123456789abcdef");
        let event = case.flag_event();
        assert!(event.validate().is_ok());
        assert_eq!(event.case_id.as_deref(), Some("case-0123456789abcdef"));
        assert_eq!(event.flag_id, "flag-case-0123456789abcdef");
        assert_eq!(event.request_ids, case.sample);
        assert_eq!(event.window, Some(case.window));
    }

    #[test]
    fn the_subject_is_the_geography_resource_and_end_user() {
        let case = case("case-1");
        // Updates of the same subject's case (scores, sample, times) keep the subject.
        let mut updated = case.clone();
        updated.scores.abuse = 0.9;
        updated.sample.push(RequestId::parse("r-2").unwrap());
        updated.opened_at = time::macros::datetime!(2026-11-23 11:00 UTC);
        assert!(case.same_subject(&updated));
        let others = [
            Case {
                subject: FlagSubject::EndUser {
                    end_user: "u-2".into(),
                },
                ..case.clone()
            },
            Case {
                subject: FlagSubject::Resource,
                ..case.clone()
            },
            Case {
                resource_id: ResourceId::parse("res-b").unwrap(),
                ..case.clone()
            },
            Case {
                geography: Geography::parse("us").unwrap(),
                ..case.clone()
            },
        ];
        for other in &others {
            assert!(!case.same_subject(other), "{other:?}");
        }
    }
}
