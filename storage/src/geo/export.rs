//! What the analytics exports read: the export backlog (which days' partitions changed since
//! they were last exported) and the metadata of one day's records and cases. IDs, times,
//! scores and flags only: nothing here decrypts content.

use time::OffsetDateTime;
use vigil_core::{Case, Day, Detection, RecordMeta, RequestId, ResourceId};

use super::GeoStore;
use crate::layout::{self, StoredContent};
use crate::Result;

/// A family of export partitions cut by day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExportPart {
    /// Records and their detections, by the day they were stored.
    Records,
    /// Cases and their verdicts, by the day the case was stored.
    Cases,
}

impl ExportPart {
    const fn tag(self) -> u8 {
        match self {
            Self::Records => b'r',
            Self::Cases => b'c',
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b'r' => Some(Self::Records),
            b'c' => Some(Self::Cases),
            _ => None,
        }
    }
}

/// A partition that changed since it was last exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleExport {
    /// Which partition family.
    pub part: ExportPart,
    /// Which day.
    pub day: Day,
    /// The change it was marked by: [`GeoStore::exported`] clears the mark only if no later
    /// change replaced it.
    token: Vec<u8>,
}

/// One stored record's metadata and scores, as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedRecord {
    /// IDs, placement, time, model.
    pub meta: RecordMeta,
    /// When vigil stored it.
    pub stored_at: OffsetDateTime,
    /// Whether its content is stored (encrypted).
    pub content_stored: bool,
    /// The classifier's scores, if it was scored.
    pub detection: Option<Detection>,
}

impl GeoStore {
    /// Adds to `batch` the mark saying `part` of `day` must be exported again.
    pub(crate) fn mark_for_export(
        &self,
        batch: &mut sled::Batch,
        part: ExportPart,
        day: Day,
    ) -> Result<()> {
        let token = self.db.generate_id().map_err(|e| self.sled_err(e))?;
        batch.insert(
            &layout::export_backlog_key(part.tag(), day),
            &token.to_be_bytes(),
        );
        Ok(())
    }

    /// The partitions that changed since they were last exported.
    pub fn export_backlog(&self) -> Result<Vec<StaleExport>> {
        self.records
            .scan_prefix(layout::export_backlog_prefix())
            .map(|entry| {
                let (key, token) = entry.map_err(|e| self.sled_err(e))?;
                let (part, day) = layout::export_backlog_entry(&key)
                    .and_then(|(tag, day)| Some((ExportPart::from_tag(tag)?, day)))
                    .ok_or_else(|| Self::corrupt(&key, "bad export mark"))?;
                Ok(StaleExport {
                    part,
                    day,
                    token: token.to_vec(),
                })
            })
            .collect()
    }

    /// Clears a partition's mark after it was exported, unless it changed again meanwhile.
    pub fn exported(&self, stale: &StaleExport) -> Result<()> {
        let key = layout::export_backlog_key(stale.part.tag(), stale.day);
        // A failed compare-and-swap means a newer change: the mark stays for the next export.
        let _ = self
            .records
            .compare_and_swap(key, Some(stale.token.as_slice()), None::<&[u8]>)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// The resources with records in this store (by the bucket index), in key order.
    pub(crate) fn bucketed_resources(&self) -> Result<Vec<String>> {
        let mut resources = Vec::new();
        let mut from = layout::all_buckets_prefix().to_vec();
        let end = layout::successor(&layout::all_buckets_prefix()).expect("B has a successor");
        while let Some(entry) = self.records.range(from.as_slice()..end.as_slice()).next() {
            let (key, _) = entry.map_err(|e| self.sled_err(e))?;
            let resource = layout::resource_of_key(&key)
                .ok_or_else(|| Self::corrupt(&key, "bad bucket key"))?
                .to_owned();
            match layout::successor(&layout::bucket_prefix(&resource, None)) {
                Some(next) => from = next,
                None => break,
            }
            resources.push(resource);
        }
        Ok(resources)
    }

    /// Every record stored on `day`, with its detection, resource by resource, handed to
    /// `each` one at a time (a day can hold millions).
    pub fn records_of_day(&self, day: Day, mut each: impl FnMut(ExportedRecord)) -> Result<()> {
        for resource in self.bucketed_resources()? {
            let resource_id =
                ResourceId::parse(&resource).map_err(|e| Self::corrupt(resource.as_bytes(), e))?;
            for key in self
                .records
                .scan_prefix(layout::bucket_prefix(&resource, Some(day)))
                .keys()
            {
                let key = key.map_err(|e| self.sled_err(e))?;
                let (_, _, request) =
                    layout::bucket_entry(&key).ok_or_else(|| Self::corrupt(&key, "bad bucket"))?;
                let request_id = RequestId::parse(request).map_err(|e| Self::corrupt(&key, e))?;
                let Some((record_key, value)) = self.read_value(&resource_id, &request_id)? else {
                    continue;
                };
                let content_stored = matches!(value.content, StoredContent::Sealed(_));
                let (meta, stored_at) =
                    self.meta_of(&record_key, &resource_id, &request_id, value)?;
                each(ExportedRecord {
                    detection: self.detection(&resource_id, &request_id)?,
                    meta,
                    stored_at,
                    content_stored,
                });
            }
        }
        Ok(())
    }

    /// The cases stored on `day`, each with whether its flag event has been published.
    pub fn cases_of_day(&self, day: Day) -> Result<Vec<(Case, bool)>> {
        let mut out = Vec::new();
        for (case_day, case) in self.dated_cases()? {
            if case_day == day {
                let published = !self
                    .records
                    .contains_key(layout::outbox_key(&case.case_id))
                    .map_err(|e| self.sled_err(e))?;
                out.push((case, published));
            }
        }
        Ok(out)
    }
}
