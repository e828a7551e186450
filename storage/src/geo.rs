//! One geography's store: a sled database of encrypted records.
//!
//! Writing is split in two steps so they can run on different threads: [`GeoStore::seal`]
//! encrypts a record under its resource's data key (CPU work, any thread), and
//! [`GeoStore::write_batch`] stores a batch of sealed records atomically, skipping request IDs
//! that are already stored (one writer at a time).
//!
//! Crash safety: a batch is one atomic sled batch, so after a crash each record is either
//! fully stored (its segment entry and index entry) or absent, and a re-run stores exactly the
//! missing ones. A new data key is flushed to disk before any content sealed under it can be
//! written.
//!
//! Data keys are per resource and per UTC day of storage (the store's [`Clock`]), so that
//! destroying one day's key crypto-shreds exactly that day's content ([`lifecycle`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aes_gcm::Aes256Gcm;
use time::OffsetDateTime;
use vigil_core::{
    Clock, Content, Day, Detection, Geography, LogRecord, RecordMeta, RequestId, Resource,
    ResourceId,
};

use crate::changelog::Batch;
use crate::crypto;
use crate::keyring::{self, Keyring};
use crate::keys::{KeyEntry, KeyError, KeySource, WrappedKey};
use crate::layout::{self, StoredContent, StoredValue};
use crate::segment::{self, Locator, SegmentWriter};
use crate::{Result, StorageError};

mod annex;
mod export;
mod lifecycle;
mod migrate;
mod mirror;
mod rekey;
mod review;

pub use annex::{Annex, CaseConflict};
pub use export::{ExportPart, ExportedRecord, StaleExport};
pub use lifecycle::{DeletedRequest, JobKind, JobReport, PurgeProgress, PurgeReport};
pub use mirror::Imported;
pub use review::{ReviewTask, ReviewText};

/// A record encrypted and encoded, ready for [`GeoStore::write_batch`].
#[derive(Debug, Clone)]
pub struct SealedRecord {
    /// Its resource.
    pub resource_id: ResourceId,
    /// Its request ID.
    pub request_id: RequestId,
    /// Whether its content is in `value` (false when content logging is off).
    pub content_logged: bool,
    /// The classifier's scores, stored beside the record (also when its content is not).
    pub detection: Option<Detection>,
    /// The UTC day it was sealed on: its bucket, and the day of the data key that sealed it.
    pub day: Day,
    /// Which generation of that data key sealed it (`None`: no content).
    key_epoch: Option<u64>,
    value: Vec<u8>,
}

impl SealedRecord {
    /// Drops the sealed content, keeping the rest: for a record sealed just before its
    /// resource's content logging was turned off, which must reach disk without it.
    pub fn forget_content(&mut self) {
        if !self.content_logged {
            return;
        }
        let mut value: StoredValue =
            postcard::from_bytes(&self.value).expect("a value this process sealed decodes");
        value.content = StoredContent::NotLogged;
        self.value = postcard::to_stdvec(&value).expect("a stored value always encodes");
        self.content_logged = false;
        self.key_epoch = None;
    }
}

/// What [`GeoStore::write_batch`] did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored now.
    Stored,
    /// Already stored for the same resource (a redelivery); left as it was.
    Duplicate,
    /// The request ID is already stored for another resource; not stored.
    Conflict,
}

/// A record read back from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// IDs, placement, time, model.
    pub meta: RecordMeta,
    /// When vigil stored it.
    pub stored_at: OffsetDateTime,
    /// The decrypted content, or `None` when the resource's content logging was off when it
    /// was stored or has been turned off since (its content was then destroyed).
    pub content: Option<Content>,
}

/// How a store's records are packed (see [`GeoStore::footprint`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Records stored.
    pub records: u64,
    /// Segments holding them.
    pub segments: u64,
    /// Bytes of the segments.
    pub segment_bytes: u64,
    /// Bytes of the records' stored values (metadata, sealed content, detection).
    pub value_bytes: u64,
}

impl std::ops::AddAssign for Footprint {
    fn add_assign(&mut self, other: Self) {
        self.records += other.records;
        self.segments += other.segments;
        self.segment_bytes += other.segment_bytes;
        self.value_bytes += other.value_bytes;
    }
}

/// What [`GeoStore::rewrite_segment`] does with one entry.
pub(crate) enum Rewrite {
    /// Keep it as it is.
    Keep,
    /// Store this value in its place.
    Replace(Vec<u8>),
    /// Leave it out.
    Drop,
}

/// A data key in use: its cipher and its generation. A key destroyed and created again for
/// the same resource and day is a new generation, so a record sealed under the old one is
/// recognised when it is written.
#[derive(Clone)]
struct DataKey {
    cipher: Arc<Aes256Gcm>,
    epoch: u64,
}

/// A geography's sled database and its trees.
pub(crate) struct Trees {
    pub db: sled::Db,
    pub records: sled::Tree,
    /// Which slot of the keyring holds each resource's data key of each day, and under which
    /// key-encryption key (never key material); job markers; the layout version.
    pub data_keys: sled::Tree,
}

impl Trees {
    /// Opens the database at `path` and its trees.
    pub fn open(path: &Path) -> sled::Result<Self> {
        Self::of(open_db(path)?)
    }

    /// The trees of an open database.
    pub fn of(db: sled::Db) -> sled::Result<Self> {
        Ok(Self {
            records: db.open_tree(layout::RECORDS_TREE)?,
            data_keys: db.open_tree(layout::DATA_KEYS_TREE)?,
            db,
        })
    }
}

/// When a resource's customer key must be found still there before its data key is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyCheck {
    /// Now (a point query: a revoked key answers no query after it is gone).
    Now,
    /// When it was last checked longer ago than `storage.customer_key_check_secs` (sealing).
    Due,
}

/// A customer key as this process last found it.
struct CustomerKeyCheck {
    /// The registry's reference to it.
    reference: String,
    /// What it held when this process first used it.
    fingerprint: crate::keys::KeyFingerprint,
    /// Whether it held that at the last check.
    available: bool,
    checked: std::time::Instant,
}

/// One geography's sled database.
pub struct GeoStore {
    geography: Geography,
    /// The database, behind a gate: every operation reads through it (`read_recursive`, so
    /// nested reads never wait), and online compaction swaps in a compacted copy under its
    /// write lock, when no operation is in flight (see [`crate::compact`]).
    pub(crate) trees: parking_lot::RwLock<Trees>,
    /// One online compaction at a time.
    pub(crate) compaction: Mutex<()>,
    /// Entries removed or rewritten since this store was opened or last compacted: what a
    /// compaction would reclaim (see [`GeoStore::removed_since_compaction`]).
    removed: AtomicU64,
    /// Cases refused because another subject's case holds their ID (see
    /// [`GeoStore::admit_case`]).
    case_conflicts: AtomicU64,
    /// The wrapped data keys themselves, destroyed in place.
    keyring: Keyring,
    keys: Arc<KeySource>,
    clock: Clock,
    ciphers: RwLock<HashMap<(ResourceId, Day), DataKey>>,
    /// The customer keys this process used, by resource: what each held and when it was last
    /// checked (see [`GeoStore::check_customer_key`]).
    customer_keys: Mutex<HashMap<ResourceId, CustomerKeyCheck>>,
    /// Resource-days re-keyed by this process, with both keys (see [`rekey`]).
    transitions: Mutex<HashMap<(ResourceId, Day), rekey::Transition>>,
    epochs: AtomicU64,
    key_creation: Mutex<()>,
    /// Added to sled's ID generator, which a compacted copy restarts from zero (see
    /// [`GeoStore::next_id`]).
    id_floor: AtomicU64,
    /// One writer at a time. Fair: the lifecycle's chunks hand it to a waiting ingest batch
    /// (`unlock_fair`) instead of taking it straight back.
    writer: parking_lot::Mutex<()>,
    /// Where every write is mirrored, once set (see [`mirror`]).
    changelog: std::sync::OnceLock<Arc<dyn crate::changelog::ChangeSink>>,
    /// The day-key ratchet's state, as read from the keyring (see [`crate::changelog`]).
    ratchet: Mutex<Option<Arc<crate::changelog::RatchetState>>>,
    /// Held while the ratchet state is read, changed and written back.
    ratchet_writer: Mutex<()>,
    /// Whether writes made with no changelog attached are kept for it (the store was mirrored
    /// before; see [`mirror`]).
    keeps_pending: std::sync::atomic::AtomicBool,
    /// Held while changes are kept for the changelog, and while they are sent to it.
    pending: Mutex<()>,
    /// Whether retirements are kept until the changelog acknowledges them (see
    /// [`GeoStore::flush_changelog`]); set by publishing one, so flushes need not look.
    retirements_kept: std::sync::atomic::AtomicBool,
    /// Which resources are moving between nodes (set in a cluster; see [`mirror`]).
    moves: std::sync::OnceLock<crate::changelog::MovingCheck>,
}

/// How every geography's sled database is opened (also the compacted copy).
pub(crate) fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(Some(500))
        .segment_size(8 << 20)
}

/// How long opening a store waits for its file lock: a database this process just closed
/// (or compacted) releases it when sled's flusher thread has finished, a moment later.
pub(crate) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether opening a sled database failed because another process (or a handle this one
/// has not finished closing) holds its file lock.
pub fn is_lock_error(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"))
}

/// Opens a sled database, waiting up to [`LOCK_WAIT`] for its file lock. A store's path is a
/// link to its current generation once it has been compacted (see [`crate::compact`]): the
/// database is opened at the link's target, so that it never follows the link to the next
/// generation once a compaction moves it. A compaction lets go of the generation it retires
/// only after moving the link, so an open that waited for that lock finds the link moved: it
/// lets the retired generation go and opens the new one.
pub fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        let link = std::fs::read_link(path).ok();
        let resolved = std::fs::canonicalize(path);
        let opened = sled_config(resolved.as_deref().unwrap_or(path)).open();
        let waited = started.elapsed() < LOCK_WAIT;
        match opened {
            Err(e) if is_lock_error(&e) && waited => {}
            Ok(db) if std::fs::read_link(path).ok() != link && waited => drop(db),
            result => return result,
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Where the keyring of the store at `path` lives: beside its directory
/// (`<data_dir>/<geography>.keyring`), so that compaction, which replaces the database,
/// never copies it.
pub(crate) fn keyring_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("keyring")
}

impl GeoStore {
    pub(crate) fn open(
        path: &Path,
        geography: Geography,
        keys: Arc<KeySource>,
        clock: Clock,
    ) -> Result<Self> {
        let sled_err = |source| StorageError::Sled {
            geography: geography.clone(),
            source,
        };
        let trees = Trees::open(path).map_err(sled_err)?;
        let data_keys = &trees.data_keys;
        let found = data_keys.get(layout::LAYOUT_KEY).map_err(sled_err)?;
        let found = found.map(|v| v.first().copied().unwrap_or(1));
        // A store whose layout has a keyring (3 on) and that names keys has its keyring: never
        // start an empty one in its place (every key would read as destroyed).
        let keyring_file = keyring_path(path);
        if found.is_some_and(|v| v >= 3) && !keyring_file.exists() {
            for key in data_keys.iter().keys() {
                if layout::data_key_of(&key.map_err(sled_err)?).is_some() {
                    return Err(keyring::KeyringError::Missing { path: keyring_file }.into());
                }
            }
        }
        let keyring = Keyring::open(&keyring_file)?;
        let keeps_pending = data_keys.contains_key(mirror::MIRRORED).map_err(sled_err)?;
        let id_floor =
            match data_keys.get(layout::ID_FLOOR_KEY).map_err(sled_err)? {
                Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                    Self::corrupt(layout::ID_FLOOR_KEY, "the ID floor is not 8 bytes")
                })?),
                None => 0,
            };
        let store = Self {
            geography,
            trees: parking_lot::RwLock::new(trees),
            compaction: Mutex::new(()),
            removed: AtomicU64::new(0),
            case_conflicts: AtomicU64::new(0),
            keyring,
            keys,
            clock,
            ciphers: RwLock::new(HashMap::new()),
            customer_keys: Mutex::new(HashMap::new()),
            transitions: Mutex::new(HashMap::new()),
            epochs: AtomicU64::new(0),
            key_creation: Mutex::new(()),
            id_floor: AtomicU64::new(id_floor),
            writer: parking_lot::Mutex::new(()),
            changelog: std::sync::OnceLock::new(),
            ratchet: Mutex::new(None),
            ratchet_writer: Mutex::new(()),
            keeps_pending: std::sync::atomic::AtomicBool::new(keeps_pending),
            pending: Mutex::new(()),
            retirements_kept: std::sync::atomic::AtomicBool::new(true),
            moves: std::sync::OnceLock::new(),
        };
        match found {
            Some(layout::LAYOUT_VERSION) => {}
            None if store.records().is_empty() && store.data_keys().is_empty() => {
                store.set_layout_version()?;
            }
            Some(version @ (2 | 3)) => store.migrate(version)?,
            found => {
                return Err(StorageError::Layout {
                    path: path.to_owned(),
                    found: found.unwrap_or(1),
                })
            }
        }
        store.destroy_orphan_keys()?;
        store.finish_rekeys()?;
        store.warn_of_pending_changes();
        Ok(store)
    }

    /// Destroys keys written just before a crash that no entry, re-key marker or ratchet entry
    /// names: they sealed nothing. An entry that cannot be read stops the open: its key is never taken for an
    /// orphan.
    fn destroy_orphan_keys(&self) -> Result<()> {
        let mut named = std::collections::HashSet::new();
        for entry in self.data_keys().iter() {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let (resource, day, entry) = if let Some((resource, day)) = layout::data_key_of(&key) {
                let entry = postcard::from_bytes(&value).map_err(|e| Self::corrupt(&key, e))?;
                (resource, day, entry)
            } else if let Some((resource, day)) = layout::rekey_of(&key) {
                let entry = rekey::marker_key(&value).map_err(|e| Self::corrupt(&key, e))?;
                (resource, day, entry)
            } else {
                continue;
            };
            let aad = crypto::data_key_aad(self.geography.as_str(), resource, day);
            named.insert((entry.slot, keyring::owner(&aad)));
        }
        named.extend(self.ratchet_slot()?);
        self.keyring
            .destroy_orphans(|slot, owner| named.contains(&(slot, owner)))?;
        Ok(())
    }

    /// Marks the store as written in this version's layout, flushed.
    fn set_layout_version(&self) -> Result<()> {
        self.data_keys()
            .insert(layout::LAYOUT_KEY, &[layout::LAYOUT_VERSION])
            .map_err(|e| self.sled_err(e))?;
        self.flush()
    }

    /// A new ID, larger than every one this store handed out before, also across compactions:
    /// segment sequence numbers and export tokens. sled's generator starts from zero in a
    /// compacted copy, so the copy records the next ID as its floor.
    pub(crate) fn next_id(&self) -> Result<u64> {
        self.next_id_in(&self.trees.read_recursive().db)
    }

    /// [`GeoStore::next_id`] from `db`, this store's database, for a caller that holds the
    /// trees' lock already.
    pub(crate) fn next_id_in(&self, db: &sled::Db) -> Result<u64> {
        let id = db.generate_id().map_err(|e| self.sled_err(e))?;
        Ok(self.id_floor.load(Ordering::Acquire) + id)
    }

    /// Sets the ID floor, when a compacted copy that starts from it is swapped in (under the
    /// trees' write lock, so no ID is handed out meanwhile).
    pub(crate) fn set_id_floor(&self, floor: u64) {
        self.id_floor.store(floor, Ordering::Release);
    }

    /// Counts entries removed or rewritten, whose old bytes stay in sled's files until a
    /// compaction.
    pub(crate) fn note_removed(&self, entries: usize) {
        self.removed.fetch_add(entries as u64, Ordering::Relaxed);
    }

    /// Entries removed or rewritten since this store was opened or last compacted (purges,
    /// deletions, content strips): whether a compaction has anything to reclaim.
    pub fn removed_since_compaction(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }

    /// Called by a compaction when its copy replaces the store.
    pub(crate) fn compacted(&self) {
        self.removed.store(0, Ordering::Relaxed);
    }

    /// The clock that dates what this store writes.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn sled_err(&self, source: sled::Error) -> StorageError {
        StorageError::Sled {
            geography: self.geography.clone(),
            source,
        }
    }

    fn corrupt(key: &[u8], problem: impl ToString) -> StorageError {
        StorageError::Corrupt {
            key: String::from_utf8_lossy(key).replace('\0', "/"),
            problem: problem.to_string(),
        }
    }

    /// The geography this store serves.
    pub fn geography(&self) -> &Geography {
        &self.geography
    }

    /// `resource`'s data key for `day`; created (and flushed) when `create` is set and the
    /// resource has none for that day yet.
    fn data_key(
        &self,
        resource: &Resource,
        day: Day,
        create: bool,
        check: KeyCheck,
    ) -> Result<Option<DataKey>> {
        self.check_customer_key(resource, check)?;
        let slot = (resource.id.clone(), day);
        let cached = || self.cached_key(&slot);
        if let Some(k) = cached() {
            return Ok(Some(k));
        }
        // One creator at a time, and a second look once in: another thread may have just
        // created or unwrapped this key.
        let _creating = self.key_creation.lock().expect("lock poisoned");
        if let Some(k) = cached() {
            return Ok(Some(k));
        }
        let id = layout::data_key_id(resource.id.as_str(), day);
        let aad = crypto::data_key_aad(self.geography.as_str(), resource.id.as_str(), day);
        let owner = keyring::owner(&aad);
        let stored = self.key_at(&id, owner)?;
        let cipher = match stored {
            Some((entry, sealed)) => {
                let wrapped = WrappedKey {
                    kek: entry.kek,
                    sealed,
                };
                let (cipher, rewrapped) = self.keys.unwrap_data_key(resource, &aad, &wrapped)?;
                if let Some(rewrapped) = rewrapped {
                    // Into a fresh slot, named by the entry, before the old one is destroyed:
                    // a crash in between leaves one orphan, never a key under the wrong name.
                    let slot = self.keyring.put(owner, &rewrapped.sealed)?;
                    self.put_key_entry(&id, slot, rewrapped.kek)?;
                    self.keyring.destroy(&[(entry.slot, owner)])?;
                }
                cipher
            }
            None if create => {
                let (cipher, wrapped) = self.keys.new_data_key(resource, &aad)?;
                let slot = self.keyring.put(owner, &wrapped.sealed)?;
                self.put_key_entry(&id, slot, wrapped.kek)?;
                cipher
            }
            None => return Ok(None),
        };
        let key = DataKey {
            cipher: Arc::new(cipher),
            epoch: self.epochs.fetch_add(1, Ordering::Relaxed),
        };
        self.ciphers
            .write()
            .expect("lock poisoned")
            .insert(slot, key.clone());
        Ok(Some(key))
    }

    /// Makes sure the customer key of `resource` (if it has one) is still there, holding what
    /// it held when this process first used it, when `check` says it is time. A key found gone
    /// or replaced is an error: nothing is sealed or opened with the resource's data keys until
    /// it is back. (They stay cached: records sealed before it went are still written, as the
    /// ciphertext only that key opens.)
    fn check_customer_key(&self, resource: &Resource, check: KeyCheck) -> Result<()> {
        let Some(reference) = &resource.customer_key else {
            return Ok(());
        };
        let reference = reference.as_str();
        let interval = self.keys.check_interval();
        let unavailable = |problem: &str| {
            StorageError::from(KeyError::CustomerKeyUnavailable {
                resource_id: resource.id.to_string(),
                problem: problem.into(),
            })
        };
        let known = {
            let checks = self.customer_keys.lock().expect("lock poisoned");
            match checks
                .get(&resource.id)
                .filter(|c| c.reference == reference)
            {
                Some(c) if check == KeyCheck::Due && c.checked.elapsed() < interval => {
                    return match c.available {
                        true => Ok(()),
                        false => Err(unavailable("it was gone or replaced at the last check")),
                    };
                }
                Some(c) => Some((c.fingerprint, c.available)),
                None => None,
            }
        };
        let kek = KeySource::kek_ref(resource);
        let found = self.keys.customer_fingerprint(resource.id.as_str(), &kek);
        let (fingerprint, result) = match (found, known) {
            (Ok(Some(now)), Some((then, _))) if now != then => (
                then,
                Err(unavailable(
                    "its file holds another key than the one in use",
                )),
            ),
            (Ok(Some(now)), _) => (now, Ok(())),
            (Ok(None), _) => return Ok(()),
            (Err(e), Some((then, _))) => (then, Err(e.into())),
            (Err(e), None) => return Err(e.into()),
        };
        if known.is_some_and(|(_, was)| was) && result.is_err() {
            tracing::warn!(geography = %self.geography, resource_id = %resource.id, "A customer key in use is gone or replaced: the resource's content is neither sealed nor read until it is back.");
        }
        self.customer_keys.lock().expect("lock poisoned").insert(
            resource.id.clone(),
            CustomerKeyCheck {
                reference: reference.to_owned(),
                fingerprint,
                available: result.is_ok(),
                checked: std::time::Instant::now(),
            },
        );
        result
    }

    /// The data key of `slot` in this process's cache.
    fn cached_key(&self, slot: &(ResourceId, Day)) -> Option<DataKey> {
        self.ciphers
            .read()
            .expect("lock poisoned")
            .get(slot)
            .cloned()
    }

    /// The value stored under `key` in the `data_keys` tree (a key entry, a re-key marker).
    fn data_keys_value<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.data_keys().get(key).map_err(|e| self.sled_err(e))? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| Self::corrupt(key, e)),
            None => Ok(None),
        }
    }

    /// The data key `id` names and its wrapped form from the keyring. `None` when there is
    /// none, or its slot was found empty: destroyed by a purge or deletion that a crash cut
    /// short before it removed the entry, so the key is gone.
    fn key_at(
        &self,
        id: &[u8],
        owner: keyring::Owner,
    ) -> Result<Option<(KeyEntry, crypto::Sealed)>> {
        let Some(entry) = self.data_keys_value::<KeyEntry>(id)? else {
            return Ok(None);
        };
        Ok(self
            .keyring
            .get(entry.slot, owner)?
            .map(|sealed| (entry, sealed)))
    }

    /// Loads each of `resource`'s data keys, re-wrapping those wrapped by another
    /// key-encryption key than the registry now names.
    pub(crate) fn check_data_key(&self, resource: &Resource) -> Result<()> {
        for day in self.data_key_days(&resource.id)? {
            self.data_key(resource, day, false, KeyCheck::Now)?;
        }
        Ok(())
    }

    /// The days `resource` has a data key for.
    pub(crate) fn data_key_days(&self, resource: &ResourceId) -> Result<Vec<Day>> {
        self.data_keys()
            .scan_prefix(layout::data_keys_prefix(resource.as_str()))
            .keys()
            .map(|k| {
                let k = k.map_err(|e| self.sled_err(e))?;
                layout::data_key_of(&k)
                    .map(|(_, day)| day)
                    .ok_or_else(|| Self::corrupt(&k, "bad data key name"))
            })
            .collect()
    }

    /// Whether any data key here is wrapped by the master key, and if so whether `master`
    /// opens it (used to vouch for a master key before recording its check value).
    pub(crate) fn master_opens_a_data_key(
        &self,
        opens: impl Fn(&WrappedKey, &[u8]) -> bool,
    ) -> Result<Option<bool>> {
        for key in self.data_keys().iter().keys() {
            let key = key.map_err(|e| self.sled_err(e))?;
            let Some((id, day)) = layout::data_key_of(&key) else {
                continue;
            };
            let aad = crypto::data_key_aad(self.geography.as_str(), id, day);
            match self.key_at(&key, keyring::owner(&aad))? {
                Some((entry, sealed)) if entry.kek == crate::keys::KekRef::Master => {
                    let wrapped = WrappedKey {
                        kek: entry.kek,
                        sealed,
                    };
                    return Ok(Some(opens(&wrapped, &aad)));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Records that `id`'s data key is in keyring slot `slot`, wrapped by `kek`.
    fn put_key_entry(&self, id: &[u8], slot: u32, kek: crate::keys::KekRef) -> Result<()> {
        let entry = KeyEntry { kek, slot };
        self.data_keys()
            .insert(id, entry.encode())
            .map_err(|e| self.sled_err(e))?;
        // Content sealed under this key must never reach disk before the key itself does
        // (the keyring synced its slot already).
        self.db().flush().map_err(|e| self.sled_err(e))?;
        self.mirror_data_key(id, &entry)
    }

    /// Encrypts and encodes `record` for storage. `resource` must be the record's resource.
    /// When its content logging is off, the content is dropped here and never encrypted or
    /// written.
    pub fn seal(&self, record: &LogRecord, resource: &Resource) -> Result<SealedRecord> {
        debug_assert_eq!(record.meta.resource_id, resource.id);
        let meta = &record.meta;
        let stored_at = self.clock.now();
        let day = Day::of(stored_at);
        let mut key_epoch = None;
        let content = if resource.content_logging {
            let key = self
                .data_key(resource, day, true, KeyCheck::Due)?
                .expect("create=true always yields a key");
            key_epoch = Some(key.epoch);
            let encoded = zeroize::Zeroizing::new(
                postcard::to_stdvec(&record.content).expect("content always encodes"),
            );
            // Compressed before it is encrypted: text shrinks by about half, and what sled
            // writes is what limits ingest speed (see `vigil bench`).
            let plaintext = zeroize::Zeroizing::new(lz4_flex::compress_prepend_size(&encoded));
            let aad = crypto::content_aad(
                self.geography.as_str(),
                meta.resource_id.as_str(),
                meta.request_id.as_str(),
            );
            StoredContent::Sealed(crypto::seal(&key.cipher, &aad, &plaintext))
        } else {
            StoredContent::NotLogged
        };
        let value = StoredValue {
            format: layout::FORMAT,
            deployment: meta.deployment,
            processed_in: meta.processed_in.clone(),
            timestamp_ns: meta.timestamp.unix_timestamp_nanos(),
            operation: meta.operation,
            model: meta.model.clone(),
            end_user: meta.end_user.clone(),
            stored_at: stored_at.unix_timestamp(),
            content,
        };
        Ok(SealedRecord {
            resource_id: meta.resource_id.clone(),
            request_id: meta.request_id.clone(),
            content_logged: resource.content_logging,
            detection: None,
            day,
            key_epoch,
            value: postcard::to_stdvec(&value).expect("a stored value always encodes"),
        })
    }

    /// Stores a batch atomically. Request IDs already stored (or earlier in the batch) are
    /// skipped: a [`WriteOutcome::Duplicate`] for the same resource, a
    /// [`WriteOutcome::Conflict`] for another. Returns one outcome per record, in order.
    pub fn write_batch(&self, records: &[SealedRecord]) -> Result<Vec<WriteOutcome>> {
        self.write_batch_with(records, |_| Ok(Vec::new()))
    }

    /// The sled batch storing `records`, and each one's outcome. The caller holds the writer
    /// lock. Each resource's new records of one day go into as few segments as fit (see
    /// [`segment`]), in the order they came; each gets one index entry.
    fn record_batch(&self, records: &[SealedRecord]) -> Result<(Batch, Vec<WriteOutcome>)> {
        let mut batch = Batch::default();
        let mut in_batch: HashMap<&str, &str> = HashMap::with_capacity(records.len());
        let mut outcomes = Vec::with_capacity(records.len());
        // The records to store, by resource and day, in order of first appearance.
        let mut groups: Vec<((&str, Day), Vec<&SealedRecord>)> = Vec::new();
        let mut group_of: HashMap<(&str, Day), usize> = HashMap::new();
        for rec in records {
            let request = rec.request_id.as_str();
            let resource = rec.resource_id.as_str();
            let owner = match in_batch.get(request) {
                Some(owner) => Some((*owner).to_owned()),
                None => self.locate(request)?.map(|l| l.resource),
            };
            let outcome = match owner {
                Some(owner) if owner == resource => WriteOutcome::Duplicate,
                Some(_) => WriteOutcome::Conflict,
                None => {
                    let group = *group_of.entry((resource, rec.day)).or_insert_with(|| {
                        groups.push(((resource, rec.day), Vec::new()));
                        groups.len() - 1
                    });
                    groups[group].1.push(rec);
                    in_batch.insert(request, resource);
                    WriteOutcome::Stored
                }
            };
            outcomes.push(outcome);
        }
        let mut days = BTreeSet::new();
        for ((resource, day), members) in groups {
            let values = members
                .into_iter()
                .map(|rec| Ok((rec.request_id.as_str(), self.value_to_write(rec)?)))
                .collect::<Result<Vec<_>>>()?;
            self.put_in_segments(&mut batch, resource, day, values)?;
            days.insert(day);
        }
        for day in days {
            self.mark_for_export(&mut batch, ExportPart::Records, day)?;
        }
        Ok((batch, outcomes))
    }

    /// The value to store for `rec`: its record and detection, with its content re-sealed if
    /// a re-key replaced its key meanwhile, or dropped if its key was destroyed meanwhile.
    fn value_to_write(&self, rec: &SealedRecord) -> Result<Vec<u8>> {
        let value = layout::record_value(&rec.value, rec.detection.as_ref());
        let corrupt = |problem: String| Self::corrupt(rec.request_id.as_str().as_bytes(), problem);
        match self.sealing_of(rec) {
            rekey::Sealing::Current => Ok(value),
            rekey::Sealing::Replaced(transition) => {
                let aad = crypto::content_aad(
                    self.geography.as_str(),
                    rec.resource_id.as_str(),
                    rec.request_id.as_str(),
                );
                rekey::reseal(&value, &aad, &transition).map_err(|_| {
                    corrupt("content sealed under a replaced key does not open".into())
                })
            }
            rekey::Sealing::Destroyed => Ok(layout::without_content(&value)
                .map_err(|e| corrupt(e.to_string()))?
                .unwrap_or(value)),
        }
    }

    /// Adds to `batch` new segments holding `entries` (request ID, stored value) of
    /// `resource`'s records of `day`, in order, as few as fit, with their index entries.
    pub(crate) fn put_in_segments<S: AsRef<str>>(
        &self,
        batch: &mut Batch,
        resource: &str,
        day: Day,
        entries: impl IntoIterator<Item = (S, Vec<u8>)>,
    ) -> Result<()> {
        let mut writer = SegmentWriter::new();
        for (request, value) in entries {
            writer.push(request.as_ref(), &value);
            if writer.is_full() {
                let full = std::mem::take(&mut writer).finish();
                self.put_segment(batch, resource, day, None, full)?;
            }
        }
        if !writer.is_empty() {
            self.put_segment(batch, resource, day, None, writer.finish())?;
        }
        Ok(())
    }

    /// Adds to `batch` a segment of `resource`'s records of `day` and the index entries that
    /// point into it. `seq` names the segment it replaces (`None`: a new one).
    pub(crate) fn put_segment(
        &self,
        batch: &mut Batch,
        resource: &str,
        day: Day,
        seq: Option<u64>,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let seq = match seq {
            Some(seq) => seq,
            None => self.next_id()?,
        };
        let key = layout::segment_key(resource, day, seq);
        for entry in segment::entries(&bytes).map_err(|e| Self::corrupt(&key, e))? {
            let locator = Locator::of(resource, day, seq, &entry);
            batch.insert(layout::index_key(entry.request), locator.encode());
        }
        batch.insert(key, bytes);
        Ok(())
    }

    /// Adds to `batch` the segment stored under `key` as `rewrite` makes each of its entries
    /// (kept, replaced or dropped), or its removal when no entry is left; nothing when every
    /// entry is kept. Returns how many entries it had.
    pub(crate) fn rewrite_segment(
        &self,
        batch: &mut Batch,
        key: &[u8],
        bytes: &[u8],
        mut rewrite: impl FnMut(&segment::Entry<'_>) -> Result<Rewrite>,
    ) -> Result<usize> {
        let (resource, day, seq) =
            layout::segment_of(key).ok_or_else(|| Self::corrupt(key, "bad segment key"))?;
        let entries = segment::entries(bytes).map_err(|e| Self::corrupt(key, e))?;
        let mut rewritten = SegmentWriter::new();
        let mut changed = false;
        for entry in &entries {
            match rewrite(entry)? {
                Rewrite::Keep => rewritten.push(entry.request, entry.value),
                Rewrite::Replace(value) => {
                    rewritten.push(entry.request, &value);
                    changed = true;
                }
                Rewrite::Drop => changed = true,
            }
        }
        if rewritten.is_empty() {
            batch.remove(key);
        } else if changed {
            self.put_segment(batch, resource, day, Some(seq), rewritten.finish())?;
        }
        Ok(entries.len())
    }

    /// Where `request` is stored, if it is.
    pub(crate) fn locate(&self, request: &str) -> Result<Option<Locator>> {
        let key = layout::index_key(request);
        match self.records().get(&key).map_err(|e| self.sled_err(e))? {
            Some(bytes) => Locator::decode(&bytes)
                .map(Some)
                .map_err(|e| Self::corrupt(&key, e)),
            None => Ok(None),
        }
    }

    /// The segment a locator points into.
    pub(crate) fn segment_at(&self, locator: &Locator) -> Result<(Vec<u8>, sled::IVec)> {
        let key = layout::segment_key(&locator.resource, locator.day, locator.seq);
        match self.records().get(&key).map_err(|e| self.sled_err(e))? {
            Some(segment) => Ok((key, segment)),
            None => Err(Self::corrupt(
                &key,
                "an index entry points at a missing segment",
            )),
        }
    }

    /// `request`'s stored value, if `resource` stored it.
    fn stored_value(&self, resource: &str, request: &str) -> Result<Option<Vec<u8>>> {
        let Some(locator) = self.locate(request)?.filter(|l| l.resource == resource) else {
            return Ok(None);
        };
        let (key, segment) = self.segment_at(&locator)?;
        let entry = segment::entry_at(&segment, locator.offset, locator.len)
            .map_err(|e| Self::corrupt(&key, e))?;
        if entry.request != request {
            return Err(Self::corrupt(
                &key,
                "the index points at another record's entry",
            ));
        }
        Ok(Some(entry.value.to_vec()))
    }

    /// The resource that stored `request_id`, if any.
    pub fn resource_of(&self, request_id: &str) -> Result<Option<ResourceId>> {
        let Some(locator) = self.locate(request_id)? else {
            return Ok(None);
        };
        ResourceId::parse(&locator.resource)
            .map(Some)
            .map_err(|e| Self::corrupt(request_id.as_bytes(), e))
    }

    /// Reads one record of `resource` and decrypts its content (never for a resource whose
    /// content logging is off).
    pub fn get(&self, resource: &Resource, request_id: &RequestId) -> Result<Option<StoredRecord>> {
        let Some((key, value)) = self.read(resource, request_id)? else {
            return Ok(None);
        };
        let decrypt_err = || StorageError::Decrypt {
            resource_id: resource.id.to_string(),
            request_id: request_id.to_string(),
        };
        let content = match &value.content {
            StoredContent::NotLogged => None,
            // Content logging was turned off after this was stored, and the content is not
            // destroyed yet: it is never returned all the same.
            StoredContent::Sealed(_) if !resource.content_logging => None,
            StoredContent::Sealed(sealed) => {
                let day = Day::of(
                    OffsetDateTime::from_unix_timestamp(value.stored_at)
                        .map_err(|e| Self::corrupt(&key, e))?,
                );
                let cipher = self
                    .data_key(resource, day, false, KeyCheck::Now)?
                    .ok_or_else(decrypt_err)?
                    .cipher;
                let aad = crypto::content_aad(
                    self.geography.as_str(),
                    resource.id.as_str(),
                    request_id.as_str(),
                );
                // A re-key of this day may be re-sealing its records right now.
                let plaintext = crypto::open(&cipher, &aad, sealed)
                    .or_else(|e| {
                        let others = self.other_ciphers(&(resource.id.clone(), day));
                        others
                            .iter()
                            .find_map(|c| crypto::open(c, &aad, sealed).ok())
                            .ok_or(e)
                    })
                    .map(zeroize::Zeroizing::new)
                    .map_err(|_| decrypt_err())?;
                let encoded = zeroize::Zeroizing::new(
                    lz4_flex::decompress_size_prepended(&plaintext).map_err(|_| decrypt_err())?,
                );
                Some(postcard::from_bytes(&encoded).map_err(|_| decrypt_err())?)
            }
        };
        let (meta, stored_at) = self.meta_of(&key, &resource.id, request_id, value)?;
        Ok(Some(StoredRecord {
            meta,
            stored_at,
            content,
        }))
    }

    /// Reads one record's metadata, without touching its content or its keys.
    pub fn get_meta(
        &self,
        resource: &Resource,
        request_id: &RequestId,
    ) -> Result<Option<(RecordMeta, OffsetDateTime)>> {
        match self.read(resource, request_id)? {
            Some((key, value)) => Ok(Some(self.meta_of(&key, &resource.id, request_id, value)?)),
            None => Ok(None),
        }
    }

    /// The classifier's detection of one record, if it was scored.
    pub fn detection(
        &self,
        resource: &ResourceId,
        request_id: &RequestId,
    ) -> Result<Option<Detection>> {
        match self.stored_value(resource.as_str(), request_id.as_str())? {
            Some(bytes) => layout::detection_in(&bytes)
                .map_err(|e| Self::corrupt(request_id.as_str().as_bytes(), e)),
            None => Ok(None),
        }
    }

    fn read(
        &self,
        resource: &Resource,
        request_id: &RequestId,
    ) -> Result<Option<(Vec<u8>, StoredValue)>> {
        self.read_value(&resource.id, request_id)
    }

    fn read_value(
        &self,
        resource: &ResourceId,
        request_id: &RequestId,
    ) -> Result<Option<(Vec<u8>, StoredValue)>> {
        let Some(bytes) = self.stored_value(resource.as_str(), request_id.as_str())? else {
            return Ok(None);
        };
        let key = layout::index_key(request_id.as_str());
        Self::decode_value(&key, &bytes).map(|value| Some((key, value)))
    }

    /// A stored record's [`StoredValue`]; `key` names it in errors.
    pub(crate) fn decode_value(key: &[u8], bytes: &[u8]) -> Result<StoredValue> {
        let (value, _) = layout::split_value(bytes).map_err(|e| Self::corrupt(key, e))?;
        if value.format != layout::FORMAT {
            return Err(Self::corrupt(
                key,
                format!("unknown format {}", value.format),
            ));
        }
        Ok(value)
    }

    fn meta_of(
        &self,
        key: &[u8],
        resource: &ResourceId,
        request_id: &RequestId,
        value: StoredValue,
    ) -> Result<(RecordMeta, OffsetDateTime)> {
        let timestamp = OffsetDateTime::from_unix_timestamp_nanos(value.timestamp_ns)
            .map_err(|e| Self::corrupt(key, e))?;
        let stored_at = OffsetDateTime::from_unix_timestamp(value.stored_at)
            .map_err(|e| Self::corrupt(key, e))?;
        let meta = RecordMeta {
            request_id: request_id.clone(),
            resource_id: resource.clone(),
            geography: self.geography.clone(),
            deployment: value.deployment,
            processed_in: value.processed_in,
            timestamp,
            operation: value.operation,
            model: value.model,
            end_user: value.end_user,
        };
        Ok((meta, stored_at))
    }

    /// `resource`'s segments (of `day`, or of every day when `None`), in key order.
    pub(crate) fn segments(
        &self,
        resource: &str,
        day: Option<Day>,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> + '_ {
        self.records()
            .scan_prefix(layout::segments_prefix(resource, day))
            .map(|entry| entry.map_err(|e| self.sled_err(e)))
    }

    /// How many records `resource` has in this store.
    pub fn count(&self, resource: &ResourceId) -> Result<usize> {
        let mut n = 0;
        for segment in self.segments(resource.as_str(), None) {
            let (key, bytes) = segment?;
            n += segment::count(&bytes).map_err(|e| Self::corrupt(&key, e))?;
        }
        Ok(n)
    }

    /// The request IDs stored for `resource`, sorted. For operators and tests; this returns
    /// IDs only, never content.
    pub fn request_ids(&self, resource: &ResourceId) -> Result<Vec<RequestId>> {
        let mut ids = Vec::new();
        for segment in self.segments(resource.as_str(), None) {
            let (key, bytes) = segment?;
            for entry in segment::entries(&bytes).map_err(|e| Self::corrupt(&key, e))? {
                ids.push(RequestId::parse(entry.request).map_err(|e| Self::corrupt(&key, e))?);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// How records are packed in this store: records, segments and the bytes of their stored
    /// values (IDs and sizes only).
    pub fn footprint(&self) -> Result<Footprint> {
        let mut footprint = Footprint::default();
        for segment in self.records().scan_prefix(layout::all_segments_prefix()) {
            let (key, bytes) = segment.map_err(|e| self.sled_err(e))?;
            footprint.segments += 1;
            footprint.segment_bytes += bytes.len() as u64;
            for entry in segment::entries(&bytes).map_err(|e| Self::corrupt(&key, e))? {
                footprint.records += 1;
                footprint.value_bytes += entry.value.len() as u64;
            }
        }
        Ok(footprint)
    }

    /// Bytes the store's database takes on disk, as sled counts them.
    pub fn size_on_disk(&self) -> Result<u64> {
        let trees = self.trees.read_recursive();
        trees.db.size_on_disk().map_err(|e| self.sled_err(e))
    }

    /// How many records this store holds (its index entries).
    pub fn len(&self) -> usize {
        self.records().scan_prefix(layout::index_key("")).count()
    }

    /// Whether this store holds no records.
    pub fn is_empty(&self) -> bool {
        self.records()
            .scan_prefix(layout::index_key(""))
            .next()
            .is_none()
    }

    /// Writes everything buffered to disk.
    pub fn flush(&self) -> Result<()> {
        self.db().flush().map_err(|e| self.sled_err(e))?;
        self.flush_changelog()
    }

    /// The records tree (see [`Trees`]).
    pub(crate) fn records(&self) -> parking_lot::MappedRwLockReadGuard<'_, sled::Tree> {
        parking_lot::RwLockReadGuard::map(self.trees.read_recursive(), |t| &t.records)
    }

    /// The data keys tree (see [`Trees`]).
    pub(crate) fn data_keys(&self) -> parking_lot::MappedRwLockReadGuard<'_, sled::Tree> {
        parking_lot::RwLockReadGuard::map(self.trees.read_recursive(), |t| &t.data_keys)
    }

    /// The database (see [`Trees`]).
    pub(crate) fn db(&self) -> parking_lot::MappedRwLockReadGuard<'_, sled::Db> {
        parking_lot::RwLockReadGuard::map(self.trees.read_recursive(), |t| &t.db)
    }

    #[cfg(test)]
    pub(crate) fn raw(&self) -> parking_lot::MappedRwLockReadGuard<'_, sled::Tree> {
        self.records()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lifecycle;
#[cfg(test)]
mod tests_mirror;
