//! The review queue, verdicts and decisions: sampled records waiting for the LLM reviewer
//! (`Q` keys, written with the case that sampled them), what it concluded (`V` keys), and what
//! human reviewers decided (`H` keys). A verdict is written in the same atomic batch that
//! takes its task off the queue, so a crash never loses a task nor reviews one twice into two
//! different stored verdicts.
//!
//! **Text about content is sealed like content.** A verdict's rationale and a decision's note
//! are free text written by someone (or something) that read the record, so they are never
//! stored in the clear. Each is sealed under the data key of its case's resource and the day
//! of the record it is about (the day that record was stored; the case's day for a decision
//! about the whole case, or when the record is no longer stored), with associated data of its
//! own ([`crypto::note_aad`], [`crypto::rationale_aad`]). The stored value is the verdict's or
//! decision's JSON with the text emptied and a `sealed` field beside it (resource, day, hex
//! ciphertext); IDs, outcome, route, severity and times stay in the clear for the queue and
//! the exports. So the text dies with the key of the content it describes: a purge of that
//! day, a deletion of that record (its day is re-keyed; the other texts of the day are
//! re-sealed under the new key), content logging turned off, a revoked customer key. Where
//! that content is removed, the text is removed too ([`GeoStore::strip_texts`]).
//!
//! Nothing is sealed for a resource whose content logging is off: its verdicts keep their
//! fields and no rationale (in-flight verdicts never keep one), and its decisions no note.
//!
//! A value stored before texts were sealed (its text in the item, in the clear, no `sealed`
//! field) still decodes; its text is read and removed like a sealed one, and goes with its
//! case.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::warn;
use vigil_core::{Case, Day, Decision, RequestId, Resource, ResourceId, Verdict};

use super::rekey::Transition;
use super::{ExportPart, GeoStore, KeyCheck};
use crate::changelog::Batch;
use crate::{crypto, layout, Result, StorageError};

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

/// A reviewer's note or the LLM reviewer's rationale, as a reader holding its resource finds
/// it. Its `Debug` output never shows the text.
#[derive(Clone, PartialEq, Eq)]
pub enum ReviewText {
    /// None was written, or none was kept (content logging off).
    Empty,
    /// The text.
    Read(String),
    /// Kept, but not readable: its data key was destroyed (purge, deletion, content logging
    /// turned off) or cannot be used now (a revoked customer key), or its resource's content
    /// logging is off.
    Unreadable,
}

impl std::fmt::Debug for ReviewText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::Read(text) => write!(f, "Read({} bytes)", text.len()),
            Self::Unreadable => f.write_str("Unreadable"),
        }
    }
}

/// A text sealed under the data key of `resource_id`'s records of `day`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealedText {
    resource_id: String,
    /// The day's number ([`Day::number`]).
    day: u32,
    /// The nonce and the ciphertext, in hex.
    text: String,
}

impl SealedText {
    fn new(resource: &str, day: Day, sealed: &crypto::Sealed) -> Self {
        Self {
            resource_id: resource.to_owned(),
            day: day.number(),
            text: hex::encode([&sealed.nonce[..], &sealed.ciphertext].concat()),
        }
    }

    fn day(&self) -> Day {
        Day::from_number(self.day)
    }

    fn sealed(&self) -> Option<crypto::Sealed> {
        let bytes = hex::decode(&self.text).ok()?;
        let nonce = bytes.get(..crypto::NONCE_LEN)?.try_into().ok()?;
        Some(crypto::Sealed {
            nonce,
            ciphertext: bytes[crypto::NONCE_LEN..].to_vec(),
        })
    }
}

/// A verdict or decision as stored (see the module docs).
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    #[serde(flatten)]
    item: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<SealedText>,
}

impl<T: Serialize> Stored<T> {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a verdict or decision serializes")
    }
}

/// What verdicts and decisions share here: one free text about content, and what binds it.
trait WithText: Serialize + DeserializeOwned {
    /// The prefix of every stored item of this kind.
    fn all_prefix() -> Vec<u8>;
    /// The free text, if the item has room for one.
    fn text_mut(&mut self) -> Option<&mut String>;
    /// The associated data of its text, sealed under `resource`'s key.
    fn aad(&self, geography: &str, resource: &str) -> Vec<u8>;
    /// The record it is about, if one.
    fn about(&self) -> Option<&RequestId>;
    /// Its case.
    fn case_id(&self) -> &str;
    /// Its resource, if it names it.
    fn resource_id(&self) -> Option<&ResourceId>;

    /// Takes the text out, leaving it empty.
    fn take_text(&mut self) -> String {
        self.text_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl WithText for Verdict {
    fn all_prefix() -> Vec<u8> {
        layout::verdicts_prefix(None)
    }
    fn text_mut(&mut self) -> Option<&mut String> {
        self.assessment.as_mut().map(|a| &mut a.rationale)
    }
    fn aad(&self, geography: &str, resource: &str) -> Vec<u8> {
        crypto::rationale_aad(geography, resource, &self.case_id, self.request_id.as_str())
    }
    fn about(&self) -> Option<&RequestId> {
        Some(&self.request_id)
    }
    fn case_id(&self) -> &str {
        &self.case_id
    }
    fn resource_id(&self) -> Option<&ResourceId> {
        None
    }
}

impl WithText for Decision {
    fn all_prefix() -> Vec<u8> {
        layout::decisions_prefix(None)
    }
    fn text_mut(&mut self) -> Option<&mut String> {
        Some(&mut self.note)
    }
    fn aad(&self, geography: &str, resource: &str) -> Vec<u8> {
        crypto::note_aad(geography, resource, &self.case_id, &self.decision_id)
    }
    fn about(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }
    fn case_id(&self) -> &str {
        &self.case_id
    }
    fn resource_id(&self) -> Option<&ResourceId> {
        Some(&self.resource_id)
    }
}

/// A verdict reached in flight (its resource logs no content), as stored: without rationale.
pub(super) fn in_flight_verdict(verdict: &Verdict) -> Vec<u8> {
    let mut item = verdict.clone();
    item.take_text();
    Stored { item, sealed: None }.encode()
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
    ///
    /// `resource` is the case's resource: its data key seals the rationale (see the module
    /// docs). Without it, or when its content logging is off, or for a verdict reached in
    /// flight, the verdict is stored without its rationale.
    pub fn store_verdict(&self, verdict: &Verdict, resource: Option<&Resource>) -> Result<()> {
        let (case, request) = (verdict.case_id.as_str(), verdict.request_id.as_str());
        // Under the writer lock, so a purge or deletion cannot remove the case (or destroy
        // the key the rationale is sealed under) in between.
        let _writer = self.writer.lock();
        let Some((day, case)) = self.dated_case_by_id(case)? else {
            return Ok(());
        };
        let resource = resource.filter(|_| !verdict.in_flight);
        let value = self.sealed_value(verdict, resource, &case, day)?;
        let mut batch = Batch::default();
        self.mark_for_export(&mut batch, ExportPart::Cases, day)?;
        batch.insert(layout::verdict_key(&case.case_id, request), value);
        batch.remove(layout::review_key(&case.case_id, request));
        self.apply(batch)
    }

    /// The verdicts on a case's records (on every case's when `case_id` is `None`), in key
    /// order, without their rationales (empty): nothing here opens a key. See
    /// [`GeoStore::verdicts_with_rationales`].
    pub fn verdicts(&self, case_id: Option<&str>) -> Result<Vec<Verdict>> {
        self.withheld(layout::verdicts_prefix(case_id))
    }

    /// The verdicts on a case of `resource`, each with its rationale opened (the verdict's
    /// own `rationale` left empty).
    pub fn verdicts_with_rationales(
        &self,
        case_id: &str,
        resource: &Resource,
    ) -> Result<Vec<(Verdict, ReviewText)>> {
        self.opened(layout::verdicts_prefix(Some(case_id)), resource)
    }

    /// Stores a human decision on a live case, and marks the case's export partition. Returns
    /// `false`, storing nothing, when the case is gone (purged or deleted meanwhile).
    ///
    /// `resource` is the case's resource: its data key seals the note (see the module docs).
    /// When its content logging is off (or it is not the case's), no note is kept: the
    /// decision is stored without one.
    pub fn store_decision(&self, decision: &Decision, resource: &Resource) -> Result<bool> {
        let case = decision.case_id.as_str();
        // Under the writer lock, so a purge or deletion cannot remove the case (or destroy
        // the key the note is sealed under) in between.
        let _writer = self.writer.lock();
        let Some((day, case)) = self.dated_case_by_id(case)? else {
            return Ok(false);
        };
        self.refuse_if_moving(case.resource_id.as_str(), false)?;
        let value = self.sealed_value(decision, Some(resource), &case, day)?;
        let mut batch = Batch::default();
        self.mark_for_export(&mut batch, ExportPart::Cases, day)?;
        batch.insert(
            layout::decision_key(&case.case_id, &decision.decision_id),
            value,
        );
        self.apply(batch)?;
        self.flush()?;
        Ok(true)
    }

    /// The human decisions on a case (on every case when `case_id` is `None`), oldest first,
    /// without their notes (empty): nothing here opens a key. See
    /// [`GeoStore::decisions_with_notes`].
    pub fn decisions(&self, case_id: Option<&str>) -> Result<Vec<Decision>> {
        self.withheld(layout::decisions_prefix(case_id))
    }

    /// The human decisions on a case of `resource`, oldest first, each with its note opened
    /// (the decision's own `note` left empty).
    pub fn decisions_with_notes(
        &self,
        case_id: &str,
        resource: &Resource,
    ) -> Result<Vec<(Decision, ReviewText)>> {
        self.opened(layout::decisions_prefix(Some(case_id)), resource)
    }

    /// The decision stored under `key` (`value`), its note left out.
    pub(super) fn decision_of(key: &[u8], value: &[u8]) -> Result<Decision> {
        let mut stored = Self::decode_stored::<Decision>(key, value)?;
        stored.item.take_text();
        Ok(stored.item)
    }

    /// `item` as stored about `case` (stored on `case_day`) of `resource`: its text sealed
    /// under the data key of `resource` and the day of the record it is about, or left out
    /// when there is no resource, its content logging is off, or it is not the case's. The
    /// caller holds the writer lock.
    fn sealed_value<T: WithText + Clone>(
        &self,
        item: &T,
        resource: Option<&Resource>,
        case: &Case,
        case_day: Day,
    ) -> Result<Vec<u8>> {
        let mut item = item.clone();
        let text = zeroize::Zeroizing::new(item.take_text());
        let resource = resource.filter(|r| r.content_logging && r.id == case.resource_id);
        let (Some(resource), false) = (resource, text.is_empty()) else {
            return Ok(Stored { item, sealed: None }.encode());
        };
        let day = match item.about() {
            Some(request) => self
                .locate(request.as_str())?
                .filter(|l| l.resource == resource.id.as_str())
                .map_or(case_day, |l| l.day),
            None => case_day,
        };
        // A text never creates a key: with none for its day (destroyed by a purge or
        // deletion, or turned off with content logging meanwhile), it is not kept.
        let Some(key) = self.data_key(resource, day, false, KeyCheck::Due)? else {
            return Ok(Stored { item, sealed: None }.encode());
        };
        let aad = item.aad(self.geography.as_str(), resource.id.as_str());
        let sealed = crypto::seal(&key.cipher, &aad, text.as_bytes());
        Ok(Stored {
            item,
            sealed: Some(SealedText::new(resource.id.as_str(), day, &sealed)),
        }
        .encode())
    }

    fn decode_stored<T: WithText>(key: &[u8], value: &[u8]) -> Result<Stored<T>> {
        serde_json::from_slice(value).map_err(|e| Self::corrupt(key, e))
    }

    /// Every item under `prefix`, in key order, its text left out.
    fn withheld<T: WithText>(&self, prefix: Vec<u8>) -> Result<Vec<T>> {
        self.records()
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(|e| self.sled_err(e))?;
                let mut stored = Self::decode_stored::<T>(&key, &value)?;
                stored.item.take_text();
                Ok(stored.item)
            })
            .collect()
    }

    /// Every item under `prefix` (of a case of `resource`), in key order, with its text
    /// opened.
    fn opened<T: WithText>(
        &self,
        prefix: Vec<u8>,
        resource: &Resource,
    ) -> Result<Vec<(T, ReviewText)>> {
        let stored = self
            .records()
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(|e| self.sled_err(e))?;
                Self::decode_stored::<T>(&key, &value)
            })
            .collect::<Result<Vec<_>>>()?;
        stored
            .into_iter()
            .map(|Stored { mut item, sealed }| {
                let legacy = item.take_text();
                let text = if !resource.content_logging {
                    // Content logging was turned off since: never returned, even before the
                    // strip removes it.
                    match (&sealed, legacy.is_empty()) {
                        (None, true) => ReviewText::Empty,
                        _ => ReviewText::Unreadable,
                    }
                } else if let Some(sealed) = &sealed {
                    self.open_text(&item, sealed, resource)?
                } else if legacy.is_empty() {
                    ReviewText::Empty
                } else {
                    ReviewText::Read(legacy)
                };
                Ok((item, text))
            })
            .collect()
    }

    /// `item`'s text, sealed as `sealed`, opened with `resource`'s data key of its day.
    fn open_text<T: WithText>(
        &self,
        item: &T,
        sealed: &SealedText,
        resource: &Resource,
    ) -> Result<ReviewText> {
        if sealed.resource_id != resource.id.as_str() {
            return Ok(ReviewText::Unreadable);
        }
        let day = sealed.day();
        let key = match self.data_key(resource, day, false, KeyCheck::Now) {
            Ok(Some(key)) => key,
            Ok(None) | Err(StorageError::Key(_)) => return Ok(ReviewText::Unreadable),
            Err(e) => return Err(e),
        };
        let Some(ciphertext) = sealed.sealed() else {
            return Ok(ReviewText::Unreadable);
        };
        let aad = item.aad(self.geography.as_str(), resource.id.as_str());
        // A re-key of this day may be re-sealing its texts right now.
        let opened = crypto::open(&key.cipher, &aad, &ciphertext)
            .ok()
            .or_else(|| {
                self.other_ciphers(&(resource.id.clone(), day))
                    .iter()
                    .find_map(|c| crypto::open(c, &aad, &ciphertext).ok())
            });
        match opened.map(String::from_utf8) {
            Some(Ok(text)) => Ok(ReviewText::Read(text)),
            _ => {
                warn!(geography = %self.geography, case_id = item.case_id(), "A sealed note or rationale did not open under its day's key.");
                Ok(ReviewText::Unreadable)
            }
        }
    }

    /// Removes the texts of verdicts and decisions that `doomed` picks by resource and the
    /// day whose key sealed them (`None`: a text stored in the clear before texts were
    /// sealed), keeping the rest of each. Returns how many were removed.
    pub(super) fn strip_texts(&self, doomed: impl Fn(&str, Option<Day>) -> bool) -> Result<usize> {
        let _writer = self.writer.lock();
        let mut batch = Batch::default();
        let mut removed = self.rewrite_texts::<Verdict>(&mut batch, |s| self.strip(s, &doomed))?;
        removed += self.rewrite_texts::<Decision>(&mut batch, |s| self.strip(s, &doomed))?;
        self.apply(batch)?;
        self.note_removed(removed);
        Ok(removed)
    }

    /// Re-seals under `t`'s new key the texts sealed under the old key of `resource`'s
    /// `day`, in one atomic batch (a re-key: see [`super::rekey`]); texts that open under
    /// the new key already (a re-key run again after a crash) are left as they are. The
    /// caller holds the writer lock. Returns how many were re-sealed.
    pub(super) fn reseal_texts(&self, resource: &str, day: Day, t: &Transition) -> Result<usize> {
        let mut batch = Batch::default();
        let mut resealed =
            self.rewrite_texts::<Verdict>(&mut batch, |s| Ok(self.reseal(s, resource, day, t)))?;
        resealed +=
            self.rewrite_texts::<Decision>(&mut batch, |s| Ok(self.reseal(s, resource, day, t)))?;
        self.apply(batch)?;
        self.note_removed(resealed);
        Ok(resealed)
    }

    /// Adds to `batch` every stored item of kind `T` that `change` changed (it sees each as
    /// stored, a text stored in the clear still in it). Returns how many.
    fn rewrite_texts<T: WithText>(
        &self,
        batch: &mut Batch,
        mut change: impl FnMut(&mut Stored<T>) -> Result<bool>,
    ) -> Result<usize> {
        let mut changed = 0;
        for entry in self.records().scan_prefix(T::all_prefix()) {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let mut stored = Self::decode_stored::<T>(&key, &value)?;
            if change(&mut stored)? {
                batch.insert(key, stored.encode());
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Empties `stored`'s text when `doomed` picks it (see [`GeoStore::strip_texts`]).
    fn strip<T: WithText>(
        &self,
        stored: &mut Stored<T>,
        doomed: &impl Fn(&str, Option<Day>) -> bool,
    ) -> Result<bool> {
        let pick = match &stored.sealed {
            Some(sealed) => doomed(&sealed.resource_id, Some(sealed.day())),
            None if stored.item.text_mut().is_some_and(|t| !t.is_empty()) => {
                let resource = match stored.item.resource_id() {
                    Some(resource) => Some(resource.clone()),
                    None => self.case(stored.item.case_id())?.map(|c| c.resource_id),
                };
                resource.is_some_and(|r| doomed(r.as_str(), None))
            }
            None => false,
        };
        if pick {
            stored.sealed = None;
            stored.item.take_text();
        }
        Ok(pick)
    }

    /// Re-seals `stored`'s text under `t`'s new key if the old key of `resource`'s `day`
    /// sealed it (see [`GeoStore::reseal_texts`]); one that opens under neither is dropped.
    fn reseal<T: WithText>(
        &self,
        stored: &mut Stored<T>,
        resource: &str,
        day: Day,
        t: &Transition,
    ) -> bool {
        let Some(sealed) = &stored.sealed else {
            return false;
        };
        if sealed.resource_id != resource || sealed.day() != day {
            return false;
        }
        let aad = stored.item.aad(self.geography.as_str(), resource);
        let ciphertext = sealed.sealed();
        if let Some(ciphertext) = &ciphertext {
            if crypto::open(&t.new, &aad, ciphertext).is_ok() {
                return false;
            }
        }
        let plaintext = ciphertext.and_then(|c| crypto::open(&t.old, &aad, &c).ok());
        stored.sealed = match plaintext.map(zeroize::Zeroizing::new) {
            Some(plaintext) => {
                let resealed = crypto::seal(&t.new, &aad, &plaintext);
                Some(SealedText::new(resource, day, &resealed))
            }
            None => {
                warn!(geography = %self.geography, case_id = stored.item.case_id(), "A sealed note or rationale did not open under its day's key; it is dropped.");
                None
            }
        };
        true
    }
}
