//! Migrating a store written by an older layout when it is opened (see `crate::layout`).
//!
//! - **2 → 3**: the wrapped data keys move from the `data_keys` tree into the keyring file,
//!   leaving entries that name their slots.
//! - **3 → 4**: each record's own `R` entry, with its `B` (bucket) and `D` (detection)
//!   entries, becomes an entry in a segment of its resource and day, and its index entry
//!   becomes a locator. The sealed content is moved as it is: the same data key opens it.
//!
//! Each step is a series of atomic batches that a crash can cut anywhere: a re-open picks up
//! what is left (keys not yet moved, `R` entries not yet packed), and the layout version
//! changes only when a step has finished.

use std::collections::BTreeMap;

use tracing::{info, warn};
use vigil_core::{Day, Detection};

use super::GeoStore;
use crate::changelog::Batch;
use crate::keyring;
use crate::keys::{KeyEntry, WrappedKey};
use crate::layout::{self, v3};
use crate::{crypto, Result};

/// One resource-day's records to pack: request ID and stored value.
type Packed = Vec<(String, Vec<u8>)>;

/// `R` entries packed per atomic batch.
const CHUNK: usize = 4096;

impl GeoStore {
    /// Brings a store of layout `from` (2 or 3) to the current one.
    pub(super) fn migrate(&self, from: u8) -> Result<()> {
        if from == 2 {
            let moved = self.move_keys_to_keyring()?;
            warn!(geography = %self.geography, data_keys = moved, "Moved this store's data keys into its keyring (layout 2 to 3). Their old copies stay in sled's files until the store is compacted (by the lifecycle in `vigil run`, or `vigil purge`), and in the disk's free blocks after that: a disk image taken before those blocks are reused, with the master key, can unwrap them.");
        }
        let packed = self.pack_records_into_segments()?;
        self.set_layout_version()?;
        info!(geography = %self.geography, records = packed, "Packed this store's records into segments (layout 3 to 4).");
        Ok(())
    }

    /// Moves layout 2's wrapped data keys from the `data_keys` tree into the keyring, leaving
    /// entries that name their slots. Returns how many keys moved.
    fn move_keys_to_keyring(&self) -> Result<usize> {
        let mut moved = 0;
        for entry in self.data_keys().iter() {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            let Some((resource, day)) = layout::data_key_of(&key) else {
                continue;
            };
            // An entry already moved (a crash cut the migration short) names a slot.
            let Ok(wrapped) = postcard::from_bytes::<WrappedKey>(&bytes) else {
                continue;
            };
            let aad = crypto::data_key_aad(self.geography.as_str(), resource, day);
            let slot = self.keyring.put(keyring::owner(&aad), &wrapped.sealed)?;
            let entry = KeyEntry {
                kek: wrapped.kek,
                slot,
            };
            self.data_keys()
                .insert(key, entry.encode())
                .map_err(|e| self.sled_err(e))?;
            self.flush()?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Packs layout 3's per-record entries into segments, a chunk per atomic batch, then
    /// removes bucket and detection entries no record is left for. Returns how many records
    /// it packed.
    fn pack_records_into_segments(&self) -> Result<usize> {
        let _writer = self.writer.lock();
        let mut packed = 0;
        loop {
            let mut batch = Batch::default();
            let mut groups: BTreeMap<(String, Day), Packed> = BTreeMap::new();
            let mut in_chunk = 0;
            for entry in self.records().scan_prefix([v3::RECORDS]).take(CHUNK) {
                let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
                let (resource, request) =
                    v3::record_of(&key).ok_or_else(|| Self::corrupt(&key, "bad record key"))?;
                let value = Self::decode_value(&key, &bytes)?;
                let stored_at = time::OffsetDateTime::from_unix_timestamp(value.stored_at)
                    .map_err(|e| Self::corrupt(&key, e))?;
                let day = Day::of(stored_at);
                let detection_key = v3::detection_key(resource, request);
                let mut bytes = bytes.to_vec();
                if layout::detection_in(&bytes)
                    .map_err(|e| Self::corrupt(&key, e))?
                    .is_none()
                {
                    if let Some(apart) = self
                        .records()
                        .get(&detection_key)
                        .map_err(|e| self.sled_err(e))?
                    {
                        let detection: Detection = postcard::from_bytes(&apart)
                            .map_err(|e| Self::corrupt(&detection_key, e))?;
                        bytes = layout::record_value(&bytes, Some(&detection));
                    }
                }
                batch.remove(detection_key);
                batch.remove(v3::bucket_key(resource, day, request));
                groups
                    .entry((resource.to_owned(), day))
                    .or_default()
                    .push((request.to_owned(), bytes));
                batch.remove(key);
                in_chunk += 1;
            }
            if in_chunk == 0 {
                break;
            }
            for ((resource, day), records) in groups {
                self.put_in_segments(&mut batch, &resource, day, records)?;
            }
            self.apply(batch)?;
            packed += in_chunk;
        }
        // Bucket or detection entries whose record was deleted without them.
        let mut batch = Batch::default();
        for prefix in [v3::BUCKETS, v3::DETECTIONS] {
            for key in self.records().scan_prefix([prefix]).keys() {
                batch.remove(key.map_err(|e| self.sled_err(e))?);
            }
        }
        self.apply(batch)?;
        self.flush()?;
        Ok(packed)
    }
}
