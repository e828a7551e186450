//! What is written beside records in the same atomic batch: abuse-window checkpoints and
//! cases (with their flag events' outbox), review tasks and in-flight verdicts, and how they
//! are read back.

use vigil_core::{Case, Day, ResourceId, Verdict};

use super::{ExportPart, GeoStore, ReviewTask, SealedRecord, WriteOutcome};
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
    /// A verdict reached in flight (on content that is not stored).
    Verdict(Box<Verdict>),
}

impl GeoStore {
    /// Stores a batch like [`GeoStore::write_batch`], and in the same atomic batch what
    /// `annex` makes of the outcomes (it runs while no other batch can be written, so what it
    /// reads from this store stays true until the batch is applied). Window checkpoints and
    /// cases are dated today, by the store's clock: that is the day they expire by.
    pub fn write_batch_with(
        &self,
        records: &[SealedRecord],
        annex: impl FnOnce(&[WriteOutcome]) -> Result<Vec<Annex>>,
    ) -> Result<Vec<WriteOutcome>> {
        let _writer = self.writer.lock();
        let (mut batch, outcomes) = self.record_batch(records)?;
        let today = self.clock.today();
        for entry in annex(&outcomes)? {
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
                    batch.insert(layout::outbox_key(&case.case_id), &[]);
                    self.mark_for_export(&mut batch, ExportPart::Cases, today)?;
                }
                Annex::Review(task) => batch.insert(
                    layout::review_key(&task.case_id, task.request_id.as_str()),
                    serde_json::to_vec(&task).expect("a task serializes"),
                ),
                Annex::Verdict(verdict) => batch.insert(
                    layout::verdict_key(&verdict.case_id, verdict.request_id.as_str()),
                    serde_json::to_vec(&verdict).expect("a verdict serializes"),
                ),
            }
        }
        self.records()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        Ok(outcomes)
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

    fn dated_case(key: &[u8], value: &[u8]) -> Result<(Day, Case)> {
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
        let mut batch = sled::Batch::default();
        for case_id in case_ids {
            batch.remove(layout::outbox_key(case_id));
        }
        self.records()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))
    }
}
