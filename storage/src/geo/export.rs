//! What the analytics exports read: the export backlog (which days' partitions changed since
//! they were last exported) and the metadata of one day's records and cases. IDs, times,
//! scores and flags only: nothing here decrypts content.

use time::OffsetDateTime;
use vigil_core::{Case, Day, Detection, RecordMeta, RequestId, ResourceId};

use super::GeoStore;
use crate::changelog::Batch;
use crate::layout::{self, StoredContent};
use crate::{segment, Result};

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
        batch: &mut Batch,
        part: ExportPart,
        day: Day,
    ) -> Result<()> {
        let token = self.next_id()?;
        batch.insert(
            layout::export_backlog_key(part.tag(), day),
            token.to_be_bytes(),
        );
        Ok(())
    }

    /// The partitions that changed since they were last exported.
    pub fn export_backlog(&self) -> Result<Vec<StaleExport>> {
        self.records()
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
            .records()
            .compare_and_swap(key, Some(stale.token.as_slice()), None::<&[u8]>)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// The resources with records in this store (those with segments), in key order.
    pub fn resources_with_records(&self) -> Result<Vec<String>> {
        let mut resources = Vec::new();
        let mut from = layout::all_segments_prefix().to_vec();
        let end = layout::successor(&layout::all_segments_prefix()).expect("S has a successor");
        while let Some(entry) = self.records().range(from.as_slice()..end.as_slice()).next() {
            let (key, _) = entry.map_err(|e| self.sled_err(e))?;
            let resource = layout::resource_of_key(&key)
                .ok_or_else(|| Self::corrupt(&key, "bad segment key"))?
                .to_owned();
            match layout::successor(&layout::segments_prefix(&resource, None)) {
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
        for resource in self.resources_with_records()? {
            let resource_id =
                ResourceId::parse(&resource).map_err(|e| Self::corrupt(resource.as_bytes(), e))?;
            for segment in self.segments(&resource, Some(day)) {
                let (key, bytes) = segment?;
                for entry in segment::entries(&bytes).map_err(|e| Self::corrupt(&key, e))? {
                    let request_id =
                        RequestId::parse(entry.request).map_err(|e| Self::corrupt(&key, e))?;
                    let value = Self::decode_value(&key, entry.value)?;
                    let detection =
                        layout::detection_in(entry.value).map_err(|e| Self::corrupt(&key, e))?;
                    let content_stored = matches!(value.content, StoredContent::Sealed(_));
                    let (meta, stored_at) = self.meta_of(&key, &resource_id, &request_id, value)?;
                    each(ExportedRecord {
                        detection,
                        meta,
                        stored_at,
                        content_stored,
                    });
                }
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
                    .records()
                    .contains_key(layout::outbox_key(&case.case_id))
                    .map_err(|e| self.sled_err(e))?;
                out.push((case, published));
            }
        }
        Ok(out)
    }
}
