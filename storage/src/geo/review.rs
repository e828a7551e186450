//! The review queue, verdicts and decisions: sampled records waiting for the LLM reviewer
//! (`Q` keys, written with the case that sampled them), what it concluded (`V` keys), and what
//! human reviewers decided (`H` keys). A verdict is written in the same atomic batch that
//! takes its task off the queue, so a crash never loses a task nor reviews one twice into two
//! different stored verdicts.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vigil_core::{Decision, RequestId, ResourceId, Verdict};

use super::{ExportPart, GeoStore};
use crate::{layout, Result};

/// A record waiting for the LLM reviewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewTask {
    /// The case that sampled it.
    pub case_id: String,
    /// The record.
    pub request_id: RequestId,
    /// Its resource.
    pub resource_id: ResourceId,
    /// When the case queued it.
    #[serde(with = "time::serde::rfc3339")]
    pub queued_at: OffsetDateTime,
}

impl GeoStore {
    /// Up to `limit` queued review tasks, oldest case ID first, skipping those `skip` says
    /// are already taken.
    pub fn review_queue(
        &self,
        limit: usize,
        mut skip: impl FnMut(&ReviewTask) -> bool,
    ) -> Result<Vec<ReviewTask>> {
        let mut tasks = Vec::new();
        for entry in self.records().scan_prefix(layout::reviews_prefix(None)) {
            if tasks.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let task: ReviewTask =
                serde_json::from_slice(&value).map_err(|e| Self::corrupt(&key, e))?;
            if !skip(&task) {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }

    /// How many review tasks are queued.
    pub fn review_queue_len(&self) -> usize {
        self.records()
            .scan_prefix(layout::reviews_prefix(None))
            .count()
    }

    /// Stores a verdict and takes its task off the queue, atomically. A verdict whose case
    /// is gone (purged or deleted meanwhile) is dropped.
    pub fn store_verdict(&self, verdict: &Verdict) -> Result<()> {
        let (case, request) = (verdict.case_id.as_str(), verdict.request_id.as_str());
        // Under the writer lock, so a purge or deletion cannot remove the case in between.
        let _writer = self.writer.lock();
        let Some((day, _)) = self.dated_case_by_id(case)? else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        self.mark_for_export(&mut batch, ExportPart::Cases, day)?;
        batch.insert(
            layout::verdict_key(case, request),
            serde_json::to_vec(verdict).expect("a verdict serializes"),
        );
        batch.remove(layout::review_key(case, request));
        self.records()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))
    }

    /// The verdicts on a case's records (on every case's when `case_id` is `None`), in key
    /// order.
    pub fn verdicts(&self, case_id: Option<&str>) -> Result<Vec<Verdict>> {
        self.json_under(layout::verdicts_prefix(case_id))
    }

    /// Stores a human decision on a live case, and marks the case's export partition. Returns
    /// `false`, storing nothing, when the case is gone (purged or deleted meanwhile).
    pub fn store_decision(&self, decision: &Decision) -> Result<bool> {
        let case = decision.case_id.as_str();
        // Under the writer lock, so a purge or deletion cannot remove the case in between.
        let _writer = self.writer.lock();
        let Some((day, _)) = self.dated_case_by_id(case)? else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        self.mark_for_export(&mut batch, ExportPart::Cases, day)?;
        batch.insert(
            layout::decision_key(case, &decision.decision_id),
            serde_json::to_vec(decision).expect("a decision serializes"),
        );
        self.records()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        Ok(true)
    }

    /// The human decisions on a case (on every case when `case_id` is `None`), oldest first.
    pub fn decisions(&self, case_id: Option<&str>) -> Result<Vec<Decision>> {
        self.json_under(layout::decisions_prefix(case_id))
    }

    /// Every JSON value under `prefix`, in key order.
    fn json_under<T: serde::de::DeserializeOwned>(&self, prefix: Vec<u8>) -> Result<Vec<T>> {
        self.records()
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(|e| self.sled_err(e))?;
                serde_json::from_slice(&value).map_err(|e| Self::corrupt(&key, e))
            })
            .collect()
    }
}
