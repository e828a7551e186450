//! What is written beside records in the same atomic batch: abuse-window checkpoints and
//! cases (with their flag events' outbox), review tasks and in-flight verdicts, and how they
//! are read back.
//!
//! A case is stored under its ID alone (`C case`), so an ID held by one subject's case is
//! never given to another's: [`GeoStore::admit_case`] refuses a case whose ID a different
//! subject's case already holds (stored, or earlier in the same batch), and
//! [`GeoStore::write_batch_with`] refuses a batch carrying one, writing nothing. The same
//! subject's case may be stored again (an update).

use std::sync::atomic::Ordering;

use tracing::warn;
use vigil_core::{Case, Day, Geography, ResourceId, Verdict};

use super::{ExportPart, GeoStore, ReviewTask, SealedRecord, WriteOutcome};
use crate::changelog::Batch;
use crate::{layout, Result};

/// One entry written with a batch of records.
#[derive(Debug, Clone)]
pub enum Annex {
    /// The checkpoint of an end user's (or, with `end_user: None`, a resource's) windows.
    Window {
        /// The resource.
        resource_id: ResourceId,
        /// The end user, if the state is one's.
        end_user: Option<String>,
        /// The encoded state.
        state: Vec<u8>,
    },
    /// A case just opened; its flag event goes into the outbox.
    Case(Box<Case>),
    /// A sampled record queued for the LLM reviewer.
    Review(ReviewTask),
    /// A verdict reached in flight (on content that is not stored): stored without its
    /// rationale, since its resource keeps no content.
    Verdict(Box<Verdict>),
}

/// A case refused because a different subject's case holds its ID. Names the case ID and the
/// geography only (no resource or end user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "case {case_id} in geography {geography} was refused: another subject's case holds that ID \
     (the stored case is kept)"
)]
pub struct CaseConflict {
    /// The store's geography.
    pub geography: Geography,
    /// The contested case ID.
    pub case_id: String,
}

impl GeoStore {
    /// Stores a batch like [`GeoStore::write_batch`], and in the same atomic batch what
    /// `annex` makes of the outcomes (it runs while no other batch can be written, so what it
    /// reads from this store stays true until the batch is applied). Window checkpoints and
    /// cases are dated today, by the store's clock: that is the day they expire by.
    ///
    /// A case whose ID a different subject's case holds refuses the whole batch with
    /// [`StorageError::CaseConflict`](crate::StorageError::CaseConflict): nothing is written.
    /// To go on without such a case, ask [`GeoStore::admit_case`] in `annex` first and leave it
    /// (and its review items) out.
    pub fn write_batch_with(
        &self,
        records: &[SealedRecord],
        annex: impl FnOnce(&[WriteOutcome]) -> Result<Vec<Annex>>,
    ) -> Result<Vec<WriteOutcome>> {
        let _writer = self.writer.lock();
        let (mut batch, outcomes) = self.record_batch(records)?;
        let today = self.clock.today();
        let entries = annex(&outcomes)?;
        for (at, entry) in entries.iter().enumerate() {
            if let Annex::Case(case) = entry {
                self.admit_case(case, &entries[..at])?;
            }
        }
        for entry in entries {
            match entry {
                Annex::Window {
                    resource_id,
                    end_user,
                    state,
                } => batch.insert(
                    layout::window_key(resource_id.as_str(), end_user.as_deref()),
                    layout::dated(today, &state),
                ),
                Annex::Case(case) => {
                    let json = serde_json::to_vec(&case).expect("a case serializes");
                    batch.insert(layout::case_key(&case.case_id), layout::dated(today, &json));
                    batch.insert(layout::outbox_key(&case.case_id), []);
                    self.mark_for_export(&mut batch, ExportPart::Cases, today)?;
                }
                Annex::Review(task) => batch.insert(
                    layout::review_key(&task.case_id, task.request_id.as_str()),
                    serde_json::to_vec(&task).expect("a task serializes"),
                ),
                Annex::Verdict(verdict) => batch.insert(
                    layout::verdict_key(&verdict.case_id, verdict.request_id.as_str()),
                    super::review::in_flight_verdict(&verdict),
                ),
            }
        }
        self.apply(batch)?;
        Ok(outcomes)
    }

    /// Whether `case` may be stored: refused with [`CaseConflict`] (counted and logged, by
    /// case ID only) when a case of a different subject ([`Case::same_subject`]) holds its ID,
    /// among the cases in `pending` (what is to be written in the same batch, latest last) or
    /// else in the store. Call it inside [`GeoStore::write_batch_with`]'s `annex`, where no
    /// other batch can change what it reads.
    pub fn admit_case(&self, case: &Case, pending: &[Annex]) -> Result<()> {
        let in_batch = pending.iter().rev().find_map(|entry| match entry {
            Annex::Case(held) if held.case_id == case.case_id => Some(held),
            _ => None,
        });
        let conflict = match in_batch {
            Some(held) => !held.same_subject(case),
            None => self
                .case(&case.case_id)?
                .is_some_and(|held| !held.same_subject(case)),
        };
        if !conflict {
            return Ok(());
        }
        self.case_conflicts.fetch_add(1, Ordering::Relaxed);
        warn!(geography = %self.geography, case_id = %case.case_id, "Refused a case: another subject's case holds its ID; the stored case is kept.");
        Err(CaseConflict {
            geography: self.geography.clone(),
            case_id: case.case_id.clone(),
        }
        .into())
    }

    /// Cases refused since this store was opened because another subject's case held their
    /// ID.
    pub fn case_conflicts(&self) -> u64 {
        self.case_conflicts.load(Ordering::Relaxed)
    }

    /// The checkpointed window state of an end user of `resource` (or of the resource itself).
    pub fn window_state(
        &self,
        resource: &ResourceId,
        end_user: Option<&str>,
    ) -> Result<Option<Vec<u8>>> {
        let key = layout::window_key(resource.as_str(), end_user);
        match self.records().get(&key).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(value) => layout::undated(&value)
                .map(|(_, state)| Some(state.to_vec()))
                .ok_or_else(|| Self::corrupt(&key, "undated window checkpoint")),
        }
    }

    /// Every case in this geography, in case-ID order.
    pub fn cases(&self) -> Result<Vec<Case>> {
        Ok(self.dated_cases()?.into_iter().map(|(_, c)| c).collect())
    }

    /// Every case with the day it was stored on, in case-ID order.
    pub fn dated_cases(&self) -> Result<Vec<(Day, Case)>> {
        self.records()
            .scan_prefix(layout::all_cases_prefix())
            .map(|entry| {
                let (key, value) = entry.map_err(|e| self.sled_err(e))?;
                Self::dated_case(&key, &value)
            })
            .collect()
    }

    pub(super) fn dated_case(key: &[u8], value: &[u8]) -> Result<(Day, Case)> {
        let (day, json) =
            layout::undated(value).ok_or_else(|| Self::corrupt(key, "undated case"))?;
        let case = serde_json::from_slice(json).map_err(|e| Self::corrupt(key, e))?;
        Ok((day, case))
    }

    /// One case, with the day it was stored on.
    pub fn dated_case_by_id(&self, case_id: &str) -> Result<Option<(Day, Case)>> {
        let key = layout::case_key(case_id);
        match self.records().get(&key).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(value) => Self::dated_case(&key, &value).map(Some),
        }
    }

    /// One case.
    pub fn case(&self, case_id: &str) -> Result<Option<Case>> {
        Ok(self.dated_case_by_id(case_id)?.map(|(_, c)| c))
    }

    /// Cases whose flag events are not yet published, in case-ID order.
    pub fn unpublished_cases(&self) -> Result<Vec<Case>> {
        let mut cases = Vec::new();
        for entry in self.records().scan_prefix(layout::outbox_prefix()) {
            let (key, _) = entry.map_err(|e| self.sled_err(e))?;
            let case_id = String::from_utf8_lossy(&key[1..]).into_owned();
            if let Some(case) = self.case(&case_id)? {
                cases.push(case);
            }
        }
        Ok(cases)
    }

    /// Takes published cases out of the outbox (durable at the next flush).
    pub fn mark_published<'a>(&self, case_ids: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let mut batch = Batch::default();
        for case_id in case_ids {
            batch.remove(layout::outbox_key(case_id));
        }
        self.apply(batch)
    }
}

#[cfg(test)]
mod tests {
    use vigil_core::{
        CaseSignals, FlagScores, FlagSubject, FlagWindow, LogRecord, RequestId, Resource,
    };

    use super::*;
    use crate::{StorageConfig, StorageError, Stores, WriteOutcome};

    const ID: &str = "case-0123456789abcdef0123456789abcdef";

    fn eu() -> Geography {
        Geography::parse("eu").unwrap()
    }

    fn geo(dir: &std::path::Path) -> std::sync::Arc<GeoStore> {
        let config = StorageConfig {
            data_dir: dir.join("data"),
            master_key: dir.join("keys/master.key"),
            ..StorageConfig::default()
        };
        Stores::open(&config, dir).unwrap().geo(&eu()).unwrap()
    }

    fn case(resource: &str, end_user: Option<&str>, abuse: f32) -> Case {
        let at = time::macros::datetime!(2026-11-23 10:00 UTC);
        Case {
            case_id: ID.into(),
            opened_at: at,
            geography: eu(),
            resource_id: ResourceId::parse(resource).unwrap(),
            subject: match end_user {
                Some(end_user) => FlagSubject::EndUser {
                    end_user: end_user.into(),
                },
                None => FlagSubject::Resource,
            },
            window: FlagWindow { start: at, end: at },
            scores: FlagScores {
                abuse,
                categories: Default::default(),
            },
            categories: vec![],
            signals: CaseSignals::default(),
            pattern_families: vec![],
            sample: vec![RequestId::parse("r-1").unwrap()],
            policy_version: "p".into(),
        }
    }

    fn store(geo: &GeoStore, records: &[SealedRecord], cases: Vec<Case>) -> Result<()> {
        geo.write_batch_with(records, |_| {
            Ok(cases
                .into_iter()
                .map(|c| Annex::Case(Box::new(c)))
                .collect())
        })
        .map(drop)
    }

    fn sealed(geo: &GeoStore, request: &str) -> (Resource, SealedRecord) {
        let resource = Resource::new(ResourceId::parse("res-a").unwrap(), eu());
        let record = LogRecord::from_json(&format!(
            r#"{{"request_id":"{request}","resource_id":"res-a","geography":"eu","deployment":"datazone","timestamp":"2026-11-20T10:00:00Z","operation":"chat","model":"m","end_user":"bob","prompt":"p","completion":"c"}}"#
        ))
        .unwrap();
        let sealed = geo.seal(&record, &resource).unwrap();
        (resource, sealed)
    }

    #[test]
    fn a_case_is_never_stored_over_another_subjects_case_under_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let geo = geo(dir.path());
        let original = case("res-a", Some("alice"), 0.7);
        store(&geo, &[], vec![original.clone()]).unwrap();
        geo.mark_published([ID]).unwrap();
        // Colliding subjects: another end user, the resource as a whole, another resource.
        let (resource, record) = sealed(&geo, "r-2");
        for (n, intruder) in [
            case("res-a", Some("mallory"), 0.9),
            case("res-a", None, 0.9),
            case("res-b", Some("alice"), 0.9),
        ]
        .into_iter()
        .enumerate()
        {
            let error =
                store(&geo, std::slice::from_ref(&record), vec![intruder.clone()]).unwrap_err();
            let StorageError::CaseConflict(conflict) = &error else {
                panic!("{error}");
            };
            assert_eq!(conflict.case_id, ID);
            assert_eq!(conflict.geography, eu());
            // The message names the case, not whose it is.
            let message = error.to_string();
            assert!(message.contains(ID), "{message}");
            assert!(!["alice", "mallory", "res-a", "res-b"]
                .iter()
                .any(|s| message.contains(s)));
            // Nothing of the batch was written: the stored case, unpublished, and the record.
            assert_eq!(geo.case(ID).unwrap(), Some(original.clone()));
            assert!(geo.unpublished_cases().unwrap().is_empty());
            assert!(geo.get(&resource, &record.request_id).unwrap().is_none());
            assert_eq!(geo.case_conflicts(), 2 * n as u64 + 1);
            // Asked first, the same answer, and the caller can go on without the case.
            assert!(matches!(
                geo.admit_case(&intruder, &[]),
                Err(StorageError::CaseConflict(_))
            ));
            assert_eq!(geo.case_conflicts(), 2 * n as u64 + 2);
        }
        // The same subject's case may be stored again (an update).
        let updated = case("res-a", Some("alice"), 0.95);
        geo.admit_case(&updated, &[]).unwrap();
        let outcomes = geo
            .write_batch_with(std::slice::from_ref(&record), |_| {
                Ok(vec![Annex::Case(Box::new(updated.clone()))])
            })
            .unwrap();
        assert_eq!(outcomes, [WriteOutcome::Stored]);
        assert_eq!(geo.case(ID).unwrap(), Some(updated));
        assert_eq!(geo.case_conflicts(), 6);
    }

    #[test]
    fn two_subjects_cases_under_one_id_in_one_batch_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let geo = geo(dir.path());
        let (alice, mallory) = (
            case("res-a", Some("alice"), 0.7),
            case("res-a", Some("mallory"), 0.9),
        );
        let error = store(&geo, &[], vec![alice.clone(), mallory.clone()]).unwrap_err();
        assert!(matches!(error, StorageError::CaseConflict(_)), "{error}");
        assert_eq!(geo.case(ID).unwrap(), None);
        assert_eq!(geo.case_conflicts(), 1);
        // What `admit_case` is told is pending counts like what is stored.
        let pending = [Annex::Case(Box::new(alice.clone()))];
        assert!(geo.admit_case(&mallory, &pending).is_err());
        geo.admit_case(&alice, &pending).unwrap();
        // One subject's case twice in a batch is an update within it: the later one is stored.
        let later = case("res-a", Some("alice"), 0.8);
        store(&geo, &[], vec![alice, later.clone()]).unwrap();
        assert_eq!(geo.case(ID).unwrap(), Some(later));
    }
}
