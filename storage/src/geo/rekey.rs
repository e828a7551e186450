//! Deleting one record so that no copy of the disk can read it: re-keying its resource-day.
//!
//! sled never overwrites in place, so removing a record's entry leaves its ciphertext in the
//! database files until sled happens to rewrite them, and the day's data key (which stays in
//! the keyring for the other records) would still open it. Instead, deleting a record
//! re-seals every other record of its resource and day under a fresh data key and then
//! destroys the old key in the keyring, in place: from then on, no copy of the disk holds a
//! key that opens the deleted record, while the rest of the day reads as before.
//!
//! Order, each step durable before the next:
//! 1. the new key goes into a fresh keyring slot, and a re-key marker in the `data_keys`
//!    tree names it;
//! 2. the day's segments are rewritten, a chunk per atomic batch, with every entry re-sealed
//!    under the new key; the first batch removes the deleted record and its index entry;
//!    then the notes and rationales sealed under the day's key are re-sealed (one batch);
//! 3. one batch makes the new key the day's key and removes the marker;
//! 4. the old key's slot is overwritten and synced.
//!
//! A crash before step 3 leaves the marker, which names the request being deleted: the next
//! open deletes it (if the crash lost the batch that did) and runs the re-key again (entries
//! that already open under the new key are left as they are). A crash after it leaves the old slot
//! named by nothing, which the open destroys as an orphan.
//!
//! While a re-key runs it holds the writer lock, so no batch is written meanwhile; readers
//! meet entries under either key and try both. Records sealed under the old key that are
//! still in flight when it ends are re-sealed as they are written (see
//! [`GeoStore::sealing_of`]). The cost is one decryption and one encryption per record of the
//! resource-day (`vigil bench --purge` measures it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use tracing::{debug, info};
use vigil_core::{Day, ResourceId};

use super::{DataKey, GeoStore, Rewrite};
use crate::changelog::Batch;
use crate::keyring;
use crate::keys::{KeyEntry, WrappedKey};
use crate::layout::{self, StoredContent};
use crate::{crypto, Result, StorageError};

/// How long the old key of a re-keyed day is kept in memory for records sealed under it and
/// still in flight (a few batches, in practice well under a second).
const IN_FLIGHT: Duration = Duration::from_secs(600);

/// A resource-day whose data key was replaced by a re-key in this process.
#[derive(Clone)]
pub(super) struct Transition {
    /// The generation of the old key in this process's cache, if it was cached.
    pub old_epoch: Option<u64>,
    pub old: Arc<Aes256Gcm>,
    pub new: Arc<Aes256Gcm>,
    /// The generation the new key got; the transition applies only while it is current.
    pub new_epoch: u64,
    since: Instant,
}

/// The value of a re-key marker: the new key, and the request whose deletion started the
/// re-key (so that a re-key cut short finishes the deletion too, even when the batch that
/// removed the request was lost with the crash).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RekeyMarker {
    key: KeyEntry,
    deleting: Option<String>,
}

/// The value of a re-key marker naming `key`, started to delete `deleting`.
pub(super) fn marker_value(key: &KeyEntry, deleting: Option<&str>) -> Vec<u8> {
    let marker = RekeyMarker {
        key: key.clone(),
        deleting: deleting.map(str::to_owned),
    };
    postcard::to_stdvec(&marker).expect("a re-key marker encodes")
}

/// The new key a re-key marker's value names.
pub(super) fn marker_key(bytes: &[u8]) -> Result<KeyEntry, postcard::Error> {
    postcard::from_bytes::<RekeyMarker>(bytes).map(|m| m.key)
}

/// How a record's content must be written, given the keys of its resource-day now.
pub(super) enum Sealing {
    /// Sealed under the current key (or not sealed): as it is.
    Current,
    /// Sealed under a key a re-key replaced: re-seal under the new one.
    Replaced(Transition),
    /// Sealed under a key destroyed since: drop the content.
    Destroyed,
}

impl GeoStore {
    /// Re-keys `resource`'s records of `day` (see the module docs), leaving out `without`
    /// and applying `first` with the first chunk. The caller holds the writer and
    /// key-creation locks. Returns how many records were re-sealed.
    pub(super) fn rekey_day(
        &self,
        resource: &str,
        day: Day,
        without: Option<&str>,
        first: Batch,
    ) -> Result<usize> {
        let id = layout::data_key_id(resource, day);
        let marker = layout::rekey_marker(resource, day);
        let aad = crypto::data_key_aad(self.geography.as_str(), resource, day);
        let owner = keyring::owner(&aad);
        let old = self.key_at(&id, owner)?;
        let pending = self.data_keys_value::<RekeyMarker>(&marker)?.map(|m| m.key);
        let Some((old_entry, old_sealed)) = old else {
            // No key (the resource logs no content, or the day's key is destroyed): nothing
            // is sealed, so removing the entry is enough.
            self.rewrite_day(resource, day, without, first, None)?;
            if let Some(pending) = pending {
                self.data_keys()
                    .remove(&marker)
                    .map_err(|e| self.sled_err(e))?;
                self.keyring.destroy(&[(pending.slot, owner)])?;
            }
            return Ok(0);
        };
        let unwrap = |entry: &KeyEntry, sealed: crypto::Sealed| {
            let wrapped = WrappedKey {
                kek: entry.kek.clone(),
                sealed,
            };
            self.keys
                .unwrap_under(resource, &aad, &wrapped)
                .map(|(cipher, _)| Arc::new(cipher))
        };
        let old_cipher = unwrap(&old_entry, old_sealed)?;
        let new_entry = match pending {
            Some(entry) => entry,
            None => {
                let (_, wrapped) =
                    self.keys
                        .new_data_key_under(resource, old_entry.kek.clone(), &aad)?;
                let entry = KeyEntry {
                    kek: wrapped.kek,
                    slot: self.keyring.put(owner, &wrapped.sealed)?,
                };
                self.data_keys()
                    .insert(&marker, marker_value(&entry, without))
                    .map_err(|e| self.sled_err(e))?;
                self.flush()?;
                entry
            }
        };
        let new_sealed = self
            .keyring
            .get(new_entry.slot, owner)?
            .ok_or_else(|| Self::corrupt(&marker, "the new key's keyring slot is empty"))?;
        let new_cipher = unwrap(&new_entry, new_sealed)?;
        let slot = (
            ResourceId::parse(resource).map_err(|e| Self::corrupt(&id, e))?,
            day,
        );
        let transition = Transition {
            old_epoch: self.cached_key(&slot).map(|k| k.epoch),
            old: old_cipher,
            new: new_cipher.clone(),
            new_epoch: self
                .epochs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            since: Instant::now(),
        };
        {
            let mut transitions = self.transitions.lock().expect("lock poisoned");
            transitions.retain(|_, t| t.since.elapsed() < IN_FLIGHT);
            transitions.insert(slot.clone(), transition.clone());
        }
        info!(geography = %self.geography, resource_id = resource, day = %day, "Re-sealing a day's records under a new data key.");
        let resealed = self.rewrite_day(resource, day, without, first, Some(&transition))?;
        // The notes and rationales sealed under the day's key (those about `without` went
        // with the first chunk).
        self.reseal_texts(resource, day, &transition)?;
        let mut swap = sled::Batch::default();
        swap.insert(id.as_slice(), new_entry.encode());
        swap.remove(marker);
        self.data_keys()
            .apply_batch(swap)
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        // The old key's generation is retired on every node, and the new key goes to the
        // changelog under the next one.
        self.retire_generations(std::slice::from_ref(&id))?;
        self.mirror_data_key(&id, &new_entry)?;
        self.ciphers.write().expect("lock poisoned").insert(
            slot,
            DataKey {
                cipher: new_cipher,
                epoch: transition.new_epoch,
            },
        );
        self.keyring.destroy(&[(old_entry.slot, owner)])?;
        info!(geography = %self.geography, resource_id = resource, day = %day, records = resealed, "Re-keyed the day: its old data key is destroyed.");
        Ok(resealed)
    }

    /// Finishes the re-keys a crash cut short (see the module docs), and the deletions that
    /// started them.
    pub(super) fn finish_rekeys(&self) -> Result<()> {
        let mut pending = Vec::new();
        for key in self
            .data_keys()
            .scan_prefix(layout::rekey_markers_prefix())
            .keys()
        {
            let key = key.map_err(|e| self.sled_err(e))?;
            let (resource, day) =
                layout::rekey_of(&key).ok_or_else(|| Self::corrupt(&key, "bad re-key marker"))?;
            let marker: RekeyMarker = self.data_keys_value(&key)?.expect("just listed");
            pending.push((resource.to_owned(), day, marker.deleting));
        }
        for (resource, day, deleting) in pending {
            info!(geography = %self.geography, resource_id = resource, day = %day, "Finishing a re-key that a crash cut short.");
            if let Some(request) = deleting {
                let request = vigil_core::RequestId::parse(&request)
                    .map_err(|e| Self::corrupt(request.as_bytes(), e))?;
                let owner = ResourceId::parse(&resource)
                    .map_err(|e| Self::corrupt(&layout::rekey_marker(&resource, day), e))?;
                if self.delete_request(&owner, &request)?.is_some() {
                    continue;
                }
            }
            let _writer = self.writer.lock();
            let _creating = self.key_creation.lock().expect("lock poisoned");
            self.rekey_day(&resource, day, None, Batch::default())?;
        }
        Ok(())
    }

    /// Rewrites `resource`'s segments of `day` without `without`, re-sealing every content
    /// under `transition`'s new key when given; `first` is applied with the first chunk, and
    /// `without`'s segment is in it. Returns how many records were re-sealed.
    fn rewrite_day(
        &self,
        resource: &str,
        day: Day,
        without: Option<&str>,
        first: Batch,
        transition: Option<&Transition>,
    ) -> Result<usize> {
        let mut keys: Vec<sled::IVec> = Vec::new();
        for segment in self.segments(resource, Some(day)) {
            keys.push(segment?.0);
        }
        if let Some(doomed) = without.and_then(|r| self.locate(r).transpose()) {
            let doomed = layout::segment_key(resource, day, doomed?.seq);
            if let Some(at) = keys.iter().position(|k| k.as_ref() == doomed.as_slice()) {
                keys[..=at].rotate_right(1);
            }
        }
        let mut batch = first;
        let (mut in_batch, mut resealed) = (0, 0);
        for key in keys {
            let Some(bytes) = self.records().get(&key).map_err(|e| self.sled_err(e))? else {
                continue;
            };
            in_batch += self.rewrite_segment(&mut batch, &key, &bytes, |entry| {
                if Some(entry.request) == without {
                    return Ok(Rewrite::Drop);
                }
                let Some(t) = transition else {
                    return Ok(Rewrite::Keep);
                };
                let aad = crypto::content_aad(self.geography.as_str(), resource, entry.request);
                resealed += 1;
                reseal(entry.value, &aad, t)
                    .map(Rewrite::Replace)
                    .map_err(|e| match e {
                        Reseal::Corrupt(problem) => Self::corrupt(&key, problem),
                        Reseal::Unopened => StorageError::Decrypt {
                            resource_id: resource.to_owned(),
                            request_id: entry.request.to_owned(),
                        },
                    })
            })?;
            if in_batch >= super::lifecycle::CHUNK {
                self.apply(std::mem::take(&mut batch))?;
                in_batch = 0;
                debug!(resealed, "Re-key progress.");
            }
        }
        self.apply(batch)?;
        Ok(resealed)
    }

    /// How `rec`'s content must be written, given its resource-day's keys now. The caller
    /// holds the writer lock, which key destruction and re-keys also take, so the answer
    /// holds until the batch is applied.
    pub(super) fn sealing_of(&self, rec: &super::SealedRecord) -> Sealing {
        let Some(epoch) = rec.key_epoch else {
            return Sealing::Current;
        };
        let slot = (rec.resource_id.clone(), rec.day);
        let current = self.cached_key(&slot).map(|k| k.epoch);
        if current == Some(epoch) {
            return Sealing::Current;
        }
        let transitions = self.transitions.lock().expect("lock poisoned");
        match transitions.get(&slot) {
            Some(t) if t.old_epoch == Some(epoch) && current == Some(t.new_epoch) => {
                Sealing::Replaced(t.clone())
            }
            _ => Sealing::Destroyed,
        }
    }

    /// The other cipher to try on content of `slot` that did not open: a re-key may have
    /// re-sealed it (or not yet) meanwhile.
    pub(super) fn other_ciphers(&self, slot: &(ResourceId, Day)) -> Vec<Arc<Aes256Gcm>> {
        let transitions = self.transitions.lock().expect("lock poisoned");
        transitions
            .get(slot)
            .map(|t| vec![t.new.clone(), t.old.clone()])
            .unwrap_or_default()
    }
}

/// Why a value could not be re-sealed.
pub(super) enum Reseal {
    Corrupt(String),
    Unopened,
}

/// A record's stored value with its content re-sealed under `t`'s new key; content that
/// already opens under the new key (a re-key run again after a crash) is kept as it is.
pub(super) fn reseal(value: &[u8], aad: &[u8], t: &Transition) -> Result<Vec<u8>, Reseal> {
    let (mut stored, rest) =
        layout::split_value(value).map_err(|e| Reseal::Corrupt(e.to_string()))?;
    let StoredContent::Sealed(sealed) = &stored.content else {
        return Ok(value.to_vec());
    };
    if crypto::open(&t.new, aad, sealed).is_ok() {
        return Ok(value.to_vec());
    }
    let plaintext =
        zeroize::Zeroizing::new(crypto::open(&t.old, aad, sealed).map_err(|_| Reseal::Unopened)?);
    stored.content = StoredContent::Sealed(crypto::seal(&t.new, aad, &plaintext));
    let mut bytes = postcard::to_stdvec(&stored).expect("a stored value always encodes");
    bytes.extend_from_slice(rest);
    Ok(bytes)
}
