//! The end of data's life in a store: the retention purge, customer deletion (one request, or
//! a whole resource), and destruction of a resource's content when its logging is turned off.
//!
//! Each follows the same order: first destroy data keys (one atomic batch, flushed), so the
//! content they sealed is unreadable from that moment, even from old disk blocks
//! (crypto-shredding); then remove what is left in chunks, each chunk one atomic batch taken
//! under the writer lock, so ingest interleaves with it instead of waiting for the whole job.
//! What a chunk removes is gone from the trees at once and from disk after compaction.
//!
//! Every job can be cut short by a crash and finishes on the next run: a purge recomputes what
//! has expired from what is left, and resource jobs leave a marker, set with the key
//! destruction and cleared at the end, that [`crate::Stores::reconcile`] resumes.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use vigil_core::{Day, RequestId, ResourceId};

use super::{ExportPart, GeoStore, Rewrite};
use crate::changelog::Batch;
use crate::keyring;
use crate::keys::KeyEntry;
use crate::layout;
use crate::retention::Cutoffs;
use crate::segment;
use crate::Result;

/// Keys removed (or records stripped) per atomic batch.
pub(super) const CHUNK: usize = 1024;

/// What a purge of one geography removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// The geography.
    pub geography: String,
    /// The day the purge ran as of.
    pub today: String,
    /// Data keys destroyed (one per resource and expired day).
    pub data_keys: usize,
    /// Records removed, with their index entries.
    pub records: usize,
    /// Abuse-window checkpoints removed.
    pub windows: usize,
    /// Cases removed, with their outbox entries.
    pub cases: usize,
    /// Review tasks removed with their cases.
    pub review_tasks: usize,
    /// Verdicts removed with their cases.
    pub verdicts: usize,
    /// Human decisions removed with their cases.
    pub decisions: usize,
    /// Whether it ran to the end (false: stopped by its progress callback).
    pub complete: bool,
}

/// A purge's progress, as reported after each chunk.
pub type PurgeProgress<'a> = &'a mut dyn FnMut(&PurgeReport) -> ControlFlow<()>;

/// What a resource job does after destroying the resource's data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Content logging was turned off: strip the content, keep the metadata.
    StripContent,
    /// The customer deleted the resource's data: remove everything stored for it.
    DeleteData,
    /// This node gave the resource's partition to another node: remove everything stored for
    /// it here, and tell the changelog nothing (see [`GeoStore::forget_resource`]).
    Release,
}

impl JobKind {
    const fn tag(self) -> u8 {
        match self {
            Self::StripContent => b's',
            Self::DeleteData => b'd',
            Self::Release => b'r',
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b's' => Some(Self::StripContent),
            b'd' => Some(Self::DeleteData),
            b'r' => Some(Self::Release),
            _ => None,
        }
    }
}

/// What a resource job did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobReport {
    /// The resource.
    pub resource_id: String,
    /// Data keys destroyed.
    pub data_keys: usize,
    /// Records stripped of content, or removed.
    pub records: usize,
    /// Window checkpoints removed.
    pub windows: usize,
    /// Cases removed (with their review tasks, verdicts and decisions).
    pub cases: usize,
}

/// What [`GeoStore::remove_cases`] removed.
#[derive(Debug, Default)]
struct CasesRemoved {
    cases: usize,
    reviews: usize,
    verdicts: usize,
    decisions: usize,
}

/// What deleting one request removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeletedRequest {
    /// The geography it was stored in.
    pub geography: String,
    /// Its resource.
    pub resource_id: String,
    /// Review tasks, verdicts and decisions about it that were removed.
    pub reviews: usize,
}

impl GeoStore {
    /// Removes everything past retention: the data keys of expired days first (their content
    /// is unreadable from then on), then the expired days' segments with their records' index
    /// entries, window checkpoints, cases with their outbox entries, review tasks,
    /// verdicts and decisions, and the notes and rationales (sealed under an expired day's
    /// key) that live cases hold about the expired records. Export partitions of the days it touched are marked for re-export.
    ///
    /// `progress` sees the running totals after each chunk and may stop the purge early
    /// (the next purge finishes the job). Safe to run while records are being written: it
    /// only touches expired days, and takes the writer lock one chunk at a time.
    pub fn purge(&self, cutoffs: &Cutoffs, progress: PurgeProgress<'_>) -> Result<PurgeReport> {
        let mut report = PurgeReport {
            geography: self.geography.to_string(),
            today: cutoffs.today().to_string(),
            ..PurgeReport::default()
        };
        // The day keys first: from here the changelog's copies of expired days' data keys
        // open nowhere.
        self.advance_ratchet(cutoffs.first_kept_by_geography())?;
        report.data_keys =
            self.destroy_data_keys(|resource, day| cutoffs.expired(resource, day), None)?;
        for resource in self.resources_with_records()? {
            let from = layout::segments_prefix(&resource, None);
            let end = layout::segments_prefix(&resource, Some(cutoffs.first_kept(&resource)));
            loop {
                let (segments, records) = self.remove_segments(&from, &end)?;
                if segments == 0 {
                    break;
                }
                report.records += records;
                if progress(&report).is_break() {
                    return Ok(report);
                }
            }
        }
        let expired_window = |key: &[u8], value: &[u8]| {
            let resource = layout::resource_of_key(key);
            let day = layout::undated(value).map(|(day, _)| day);
            matches!((resource, day), (Some(r), Some(d)) if cutoffs.expired(r, d))
        };
        let windows_end = layout::successor(&layout::all_windows_prefix()).expect("W < 255");
        let mut from = layout::all_windows_prefix().to_vec();
        loop {
            let (removed, next) = self.remove_matching(&from, &windows_end, &expired_window)?;
            report.windows += removed;
            match next {
                Some(next) => from = next,
                None => break,
            }
            if progress(&report).is_break() {
                return Ok(report);
            }
        }
        let removed =
            self.remove_cases(|day, case| cutoffs.expired(case.resource_id.as_str(), day))?;
        report.cases = removed.cases;
        report.review_tasks = removed.reviews;
        report.verdicts = removed.verdicts;
        report.decisions = removed.decisions;
        // Notes and rationales of live cases about records of expired days: their key is
        // destroyed, and they go with the content they describe.
        self.strip_texts(|resource, day| day.is_some_and(|d| cutoffs.expired(resource, d)))?;
        self.flush()?;
        report.complete = true;
        let _ = progress(&report);
        Ok(report)
    }

    /// Deletes one record: its entry (content, metadata, detection) and index entry, and the
    /// review tasks, verdicts and decisions about it (with their rationales and notes). The
    /// other records of its resource and day, and the notes and rationales sealed under that
    /// day's key, are re-sealed under a new data key and the old key is destroyed (see
    /// [`super::rekey`]), so that when this returns, no copy of the disk can decrypt it.
    /// `None` when this store holds no record of `resource_id` under that request ID (request
    /// IDs are unique per geography, not across customers: another resource's record with the
    /// same ID is not touched).
    pub fn delete_request(
        &self,
        resource_id: &ResourceId,
        request_id: &RequestId,
    ) -> Result<Option<DeletedRequest>> {
        self.refuse_if_moving(resource_id.as_str(), true)?;
        let _writer = self.writer.lock();
        let _creating = self.key_creation.lock().expect("lock poisoned");
        let request = request_id.as_str();
        let Some(locator) = self.locate(request)? else {
            return Ok(None);
        };
        if locator.resource.as_str() != resource_id.as_str() {
            return Ok(None);
        }
        let resource = locator.resource.as_str();
        let mut batch = Batch::default();
        batch.remove(layout::index_key(request));
        self.mark_for_export(&mut batch, ExportPart::Records, locator.day)?;
        let mut reviews = 0;
        let mut cases = BTreeSet::new();
        for prefix in [layout::reviews_prefix(None), layout::verdicts_prefix(None)] {
            for key in self.records().scan_prefix(prefix).keys() {
                let key = key.map_err(|e| self.sled_err(e))?;
                let rest = &key[1..];
                let Some(sep) = rest.iter().position(|b| *b == 0) else {
                    continue;
                };
                if &rest[sep + 1..] == request.as_bytes() {
                    cases.insert(String::from_utf8_lossy(&rest[..sep]).into_owned());
                    batch.remove(key);
                    reviews += 1;
                }
            }
        }
        // Decisions are keyed by their own ID; the record they are about is in the value.
        for entry in self.records().scan_prefix(layout::decisions_prefix(None)) {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let decision = Self::decision_of(&key, &value)?;
            if decision.request_id.as_ref() == Some(request_id) {
                cases.insert(decision.case_id);
                batch.remove(key);
                reviews += 1;
            }
        }
        for case in cases {
            if let Some((day, _)) = self.dated_case_by_id(&case)? {
                self.mark_for_export(&mut batch, ExportPart::Cases, day)?;
            }
        }
        self.rekey_day(resource, locator.day, Some(request), batch)?;
        self.note_removed(1 + reviews);
        self.flush()?;
        Ok(Some(DeletedRequest {
            geography: self.geography.to_string(),
            resource_id: resource.to_owned(),
            reviews,
        }))
    }

    /// Deletes everything stored for a resource: its data keys at once (its content is
    /// unreadable from then on), then its records, detections, windows and cases. A crash
    /// midway is finished by the next [`crate::Stores::reconcile`].
    pub fn delete_resource(&self, resource_id: &ResourceId) -> Result<JobReport> {
        self.refuse_if_moving(resource_id.as_str(), true)?;
        let data_keys = self
            .start_job(resource_id, JobKind::DeleteData)?
            .unwrap_or(0);
        let mut report = self.run_job(resource_id, JobKind::DeleteData)?;
        report.data_keys = data_keys;
        Ok(report)
    }

    /// Destroys `resource`'s content, leaving its metadata (content logging was turned off),
    /// and the notes and rationales about it, leaving the verdicts' and decisions' fields.
    /// Returns how many records held content. A resource with neither data keys nor a
    /// pending job has no content to strip, so this costs nothing for resources whose
    /// content logging was always off.
    pub(crate) fn forget_content(&self, resource_id: &ResourceId) -> Result<usize> {
        match self.start_job(resource_id, JobKind::StripContent)? {
            Some(_) => Ok(self.run_job(resource_id, JobKind::StripContent)?.records),
            None => Ok(0),
        }
    }

    /// Resource jobs a crash cut short.
    pub(crate) fn pending_jobs(&self) -> Result<Vec<(ResourceId, JobKind)>> {
        self.data_keys()
            .scan_prefix(layout::job_markers_prefix())
            .keys()
            .map(|k| {
                let k = k.map_err(|e| self.sled_err(e))?;
                let (tag, id) =
                    layout::job_of(&k).ok_or_else(|| Self::corrupt(&k, "bad marker"))?;
                let kind = JobKind::from_tag(tag).ok_or_else(|| Self::corrupt(&k, "bad job"))?;
                let id = ResourceId::parse(id).map_err(|e| Self::corrupt(&k, e))?;
                Ok((id, kind))
            })
            .collect()
    }

    /// Finishes a resource job: strips or removes the resource's records, then clears the
    /// job's marker.
    pub(crate) fn run_job(&self, resource_id: &ResourceId, kind: JobKind) -> Result<JobReport> {
        if kind == JobKind::Release {
            return super::mirror::quietly(|| self.run_job_mirrored(resource_id, kind));
        }
        self.run_job_mirrored(resource_id, kind)
    }

    /// [`GeoStore::run_job`], its writes mirrored unless the caller is quiet.
    fn run_job_mirrored(&self, resource_id: &ResourceId, kind: JobKind) -> Result<JobReport> {
        let resource = resource_id.as_str();
        // Keys a crash left between the marker and their destruction go first.
        self.destroy_data_keys(|r, _| r == resource, None)?;
        let mut report = JobReport {
            resource_id: resource.to_owned(),
            data_keys: 0,
            records: 0,
            windows: 0,
            cases: 0,
        };
        match kind {
            JobKind::StripContent => {
                report.records = self.strip_content(resource)?;
                // Notes and rationales describe the content: they go with it.
                self.strip_texts(|r, _| r == resource)?;
            }
            JobKind::DeleteData | JobKind::Release => {
                let from = layout::segments_prefix(resource, None);
                let end = layout::successor(&from).expect("a prefix ending in NUL has one");
                loop {
                    let (segments, records) = self.remove_segments(&from, &end)?;
                    if segments == 0 {
                        break;
                    }
                    report.records += records;
                }
                let windows = layout::windows_prefix(resource);
                let windows_end = layout::successor(&windows).expect("has one");
                let mut from = windows;
                loop {
                    let (removed, next) =
                        self.remove_matching(&from, &windows_end, &|_: &[u8], _: &[u8]| true)?;
                    report.windows += removed;
                    match next {
                        Some(next) => from = next,
                        None => break,
                    }
                }
                report.cases = self
                    .remove_cases(|_, case| case.resource_id == *resource_id)?
                    .cases;
            }
        }
        self.flush()?;
        self.data_keys()
            .remove(layout::job_marker(kind.tag(), resource))
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        Ok(report)
    }

    /// Destroys all of `resource`'s data keys and sets the job's marker, in one atomic batch,
    /// flushed. Returns the number of keys destroyed, or `None` for a content strip with
    /// nothing to do (no keys, no pending job).
    pub(crate) fn start_job(
        &self,
        resource_id: &ResourceId,
        kind: JobKind,
    ) -> Result<Option<usize>> {
        let marker = layout::job_marker(kind.tag(), resource_id.as_str());
        let pending = self
            .data_keys()
            .contains_key(&marker)
            .map_err(|e| self.sled_err(e))?;
        let has_keys = !self.data_key_days(resource_id)?.is_empty();
        if kind == JobKind::StripContent && !has_keys && !pending {
            return Ok(None);
        }
        let destroyed = self.destroy_data_keys(
            |resource, _| resource == resource_id.as_str(),
            Some(&marker),
        )?;
        Ok(Some(destroyed))
    }

    /// Destroys the data keys `doomed` picks (by resource and day) and sets `marker` if given,
    /// in one atomic batch, flushed before returning. Holds the writer lock, so no batch holding
    /// content sealed under one of these keys is written after this returns (see
    /// `GeoStore::sealed_under_a_destroyed_key`).
    pub(super) fn destroy_data_keys(
        &self,
        doomed: impl Fn(&str, Day) -> bool,
        marker: Option<&[u8]>,
    ) -> Result<usize> {
        let _writer = self.writer.lock();
        let _creating = self.key_creation.lock().expect("lock poisoned");
        let mut batch = sled::Batch::default();
        let mut slots = Vec::new();
        let mut ids = Vec::new();
        let mut ciphers = self.ciphers.write().expect("lock poisoned");
        let mut transitions = self.transitions.lock().expect("lock poisoned");
        for entry in self.data_keys().iter() {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let Some((resource, day)) = layout::data_key_of(&key) else {
                continue;
            };
            if doomed(resource, day) {
                let entry: KeyEntry =
                    postcard::from_bytes(&value).map_err(|e| Self::corrupt(&key, e))?;
                ciphers.retain(|(r, d), _| !(r.as_str() == resource && *d == day));
                transitions.retain(|(r, d), _| !(r.as_str() == resource && *d == day));
                let aad = crate::crypto::data_key_aad(self.geography.as_str(), resource, day);
                slots.push((entry.slot, keyring::owner(&aad)));
                ids.push(key.to_vec());
                batch.remove(key.clone());
            }
        }
        let destroyed = slots.len();
        // The job's marker first, flushed: a crash from here on leaves a job the next start
        // finishes (`run_job` destroys whatever keys the resource still has).
        if let Some(marker) = marker {
            self.data_keys()
                .insert(marker, &[])
                .map_err(|e| self.sled_err(e))?;
            self.flush()?;
        }
        if destroyed == 0 {
            return Ok(0);
        }
        // Then the keys, overwritten in place and synced: from here the content is
        // unreadable from any copy of the disk. A crash before the entries go leaves entries
        // that point at empty slots, which read as no key and are removed next time.
        self.keyring.destroy(&slots)?;
        self.data_keys()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        self.mirror_key_removals(&ids)?;
        self.flush()?;
        Ok(destroyed)
    }

    /// Removes the first segments in `from..end`, up to about a chunk of records, with their
    /// records' index entries, in one atomic batch, and marks their days' export partitions.
    /// Returns how many segments and records it removed (no segments: the range is empty).
    fn remove_segments(&self, from: &[u8], end: &[u8]) -> Result<(usize, usize)> {
        let writer = self.writer.lock();
        let mut batch = Batch::default();
        let (mut segments, mut records) = (0, 0);
        let mut days = BTreeSet::new();
        for entry in self.records().range(from..end) {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            let (_, day, _) =
                layout::segment_of(&key).ok_or_else(|| Self::corrupt(&key, "bad segment key"))?;
            for entry in segment::entries(&bytes).map_err(|e| Self::corrupt(&key, e))? {
                batch.remove(layout::index_key(entry.request));
                records += 1;
            }
            batch.remove(key);
            segments += 1;
            days.insert(day);
            if records >= CHUNK {
                break;
            }
        }
        for day in days {
            self.mark_for_export(&mut batch, ExportPart::Records, day)?;
        }
        self.apply(batch)?;
        self.note_removed(segments + records);
        // A batch of ingest waiting for the lock goes next, not the purge's next chunk.
        parking_lot::MutexGuard::unlock_fair(writer);
        Ok((segments, records))
    }

    /// Removes the entries in `from..end` that `doomed` picks by key and value, looking at up
    /// to a chunk of entries: the picks are checked again under the writer lock (a window
    /// checkpoint may have been rewritten meanwhile). Returns how many were removed and where
    /// the next chunk starts (`None`: at the end).
    fn remove_matching(
        &self,
        from: &[u8],
        end: &[u8],
        doomed: &dyn Fn(&[u8], &[u8]) -> bool,
    ) -> Result<(usize, Option<Vec<u8>>)> {
        let mut picked = Vec::new();
        let mut last = None;
        for entry in self.records().range(from..end).take(CHUNK) {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            if doomed(&key, &value) {
                picked.push(key.clone());
            }
            last = Some(key);
        }
        let Some(last) = last else {
            return Ok((0, None));
        };
        let writer = self.writer.lock();
        let mut batch = Batch::default();
        let mut removed = 0;
        for key in picked {
            let current = self.records().get(&key).map_err(|e| self.sled_err(e))?;
            if current.is_some_and(|value| doomed(&key, &value)) {
                batch.remove(key);
                removed += 1;
            }
        }
        self.apply(batch)?;
        self.note_removed(removed);
        parking_lot::MutexGuard::unlock_fair(writer);
        let mut next = last.to_vec();
        next.push(0);
        Ok((removed, Some(next)))
    }

    /// Removes the cases `doomed` picks (by the day they were stored and their content), with
    /// their outbox entries, review tasks, verdicts and decisions, in one atomic batch.
    fn remove_cases(
        &self,
        doomed: impl Fn(Day, &vigil_core::Case) -> bool,
    ) -> Result<CasesRemoved> {
        let _writer = self.writer.lock();
        let mut batch = Batch::default();
        let mut removed = CasesRemoved::default();
        let mut days = BTreeSet::new();
        for (day, case) in self.dated_cases()? {
            if !doomed(day, &case) {
                continue;
            }
            let id = case.case_id.as_str();
            batch.remove(layout::case_key(id));
            batch.remove(layout::outbox_key(id));
            for (prefix, count) in [
                (layout::reviews_prefix(Some(id)), &mut removed.reviews),
                (layout::verdicts_prefix(Some(id)), &mut removed.verdicts),
                (layout::decisions_prefix(Some(id)), &mut removed.decisions),
            ] {
                for key in self.records().scan_prefix(prefix).keys() {
                    batch.remove(key.map_err(|e| self.sled_err(e))?);
                    *count += 1;
                }
            }
            days.insert(day);
            removed.cases += 1;
        }
        for day in days {
            self.mark_for_export(&mut batch, ExportPart::Cases, day)?;
        }
        self.apply(batch)?;
        self.note_removed(removed.cases);
        Ok(removed)
    }

    /// Replaces every sealed content of `resource` with "not logged", about a chunk of
    /// records per atomic batch. Returns how many records held content.
    fn strip_content(&self, resource: &str) -> Result<usize> {
        let end = layout::successor(&layout::segments_prefix(resource, None))
            .expect("a prefix ending in NUL has one");
        let mut cursor = layout::segments_prefix(resource, None);
        let mut stripped = 0;
        loop {
            let writer = self.writer.lock();
            let mut batch = Batch::default();
            let mut seen = 0;
            let mut last = None;
            for entry in self.records().range(cursor.as_slice()..end.as_slice()) {
                let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
                seen += self.rewrite_segment(&mut batch, &key, &bytes, |entry| {
                    let value =
                        layout::without_content(entry.value).map_err(|e| Self::corrupt(&key, e))?;
                    Ok(match value {
                        Some(value) => {
                            stripped += 1;
                            Rewrite::Replace(value)
                        }
                        None => Rewrite::Keep,
                    })
                })?;
                last = Some(key);
                if seen >= CHUNK {
                    break;
                }
            }
            self.apply(batch)?;
            self.note_removed(seen);
            parking_lot::MutexGuard::unlock_fair(writer);
            let Some(last) = last else {
                return Ok(stripped);
            };
            cursor = last.to_vec();
            cursor.push(0);
        }
    }
}
