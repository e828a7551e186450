//! A store and its changelog (see [`crate::changelog`]): every write mirrored once applied,
//! the ratchet state in the keyring, and a store rebuilt from what the changelog holds.
//!
//! **Writes while detached.** Once a store has been mirrored, it stays so: a write made while
//! no changelog is attached (an offline `vigil delete` or `vigil resource`, a start before the
//! node has joined its cluster) is kept in the store, under its changelog key, and sent when
//! the changelog is attached again, before the node rebuilds anything from it. Otherwise the
//! rebuild at the next start would bring back, from the changelog, what was deleted offline.
//!
//! **Moving resources.** While a resource's partition moves between nodes
//! ([`GeoStore::watch_moves`]), exactly one node writes it to the changelog: neither the node
//! it is leaving nor the one rebuilding it does. What either writes of it (a deletion on the
//! copy that is leaving, a purge) stays on that node; decisions about it, and deletions on the
//! copy being rebuilt, are refused until the move is over.

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vigil_core::{Case, Day, ResourceId};
use zeroize::Zeroizing;

use super::GeoStore;
use crate::changelog::{
    self, Batch, Change, ChangeSink, ChangelogError, Mirrored, MirroredKey, Moving, MovingCheck,
    RatchetState, Retirement,
};
use crate::crypto::{self, Sealed, KEY_LEN};
use crate::keyring;
use crate::keys::{KekRef, KeyEntry, WrappedKey};
use crate::layout::{self, Owner};
use crate::retention::Cutoffs;
use crate::{Result, StorageError};

/// Where the ratchet state is, in the `data_keys` tree: the ratchet's ID, the state's day,
/// and the keyring slot of the key that seals the state.
const RATCHET_ENTRY: &[u8] = b"\0ratchet";

/// The ratchet state, in the `data_keys` tree, sealed under the key in the entry's slot: a
/// new state gets a new key and the old slot is overwritten, so the old state (which sled
/// may keep in its log for a while) opens nowhere.
const RATCHET_STATE: &[u8] = b"\0ratchet-state";

/// Set in the `data_keys` tree the first time a store is mirrored: writes made with no
/// changelog attached are kept under [`PENDING`] from then on.
pub(super) const MIRRORED: &[u8] = b"\0changelog";

/// Changes kept for the changelog while none is attached, in the `data_keys` tree: `c` and the
/// changelog key for a change (its resource and value), `r`, the day and the resource for a
/// retirement.
pub(super) const PENDING: &[u8] = b"\0pending/";

/// Changes sent to the changelog per call when pending ones are sent.
const PENDING_CHUNK: usize = 1024;

/// Set in the `data_keys` tree when mirroring starts on an empty store: everything the store
/// holds is then in the changelog, so it may let go of a resource the changelog keeps
/// ([`GeoStore::forget_resource`]).
const MIRRORED_FROM_EMPTY: &[u8] = b"\0mirrored";

thread_local! {
    /// Whether this thread's writes are kept out of the changelog (see
    /// [`GeoStore::forget_resource`]).
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread's writes go to the changelog.
fn loud() -> bool {
    !QUIET.with(std::cell::Cell::get)
}

/// Runs `work` with this thread's writes kept out of the changelog.
pub(super) fn quietly<T>(work: impl FnOnce() -> T) -> T {
    let was = QUIET.with(|quiet| quiet.replace(true));
    let done = work();
    QUIET.with(|quiet| quiet.set(was));
    done
}

#[derive(Serialize, Deserialize)]
struct RatchetEntry {
    id: [u8; 16],
    day: u32,
    slot: u32,
}

/// What [`GeoStore::import`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Records the store holds now and did not before.
    pub records: u64,
    /// Other entries written or removed: windows, cases, review state.
    pub entries: u64,
    /// Data keys imported (wrapped again under this node's key-encryption key).
    pub data_keys: u64,
    /// Entries and keys left out because they are past retention (or their day key is
    /// purged).
    pub expired: u64,
    /// Data keys sealed by another ratchet than this node's: their content stays unreadable.
    pub foreign_keys: u64,
}

impl std::ops::AddAssign for Imported {
    fn add_assign(&mut self, other: Self) {
        self.records += other.records;
        self.entries += other.entries;
        self.data_keys += other.data_keys;
        self.expired += other.expired;
        self.foreign_keys += other.foreign_keys;
    }
}

impl GeoStore {
    /// Mirrors every write from now on to `sink`. The store needs its ratchet state first
    /// ([`GeoStore::install_ratchet`]): data keys go to the changelog sealed under it.
    pub fn mirror_to(&self, sink: Arc<dyn ChangeSink>) -> Result<()> {
        if self.ratchet()?.is_none() {
            return Err(self.changelog_err("the store has no ratchet state to seal data keys"));
        }
        let empty = self.is_empty()
            && self
                .records()
                .scan_prefix(layout::all_cases_prefix())
                .next()
                .is_none();
        if empty {
            self.data_keys()
                .insert(MIRRORED_FROM_EMPTY, &[])
                .map_err(|e| self.sled_err(e))?;
        }
        self.data_keys()
            .insert(MIRRORED, &[])
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        self.keeps_pending
            .store(true, std::sync::atomic::Ordering::Release);
        // What was written while detached goes first; nothing is kept aside from then on.
        let _pending = self.pending.lock().expect("lock poisoned");
        let sent = self.send_pending(sink.as_ref())?;
        if sent > 0 {
            info!(geography = %self.geography, changes = sent, "Sent the changelog what was written while it was not attached.");
        }
        // Set once: a second call keeps the first sink.
        let _ = self.changelog.set(sink);
        Ok(())
    }

    /// Says so when this store holds writes for a changelog that is not attached: they go
    /// to it when it is, and until then every write is kept twice.
    pub(super) fn warn_of_pending_changes(&self) {
        if self.data_keys().scan_prefix(PENDING).next().is_some() {
            warn!(geography = %self.geography, "This store was mirrored to a cluster's changelog and holds writes made without it; they are sent when the node runs in its cluster again (until then every write is kept twice).");
        }
    }

    /// Has `check` say which resources are moving between nodes from now on (set once).
    pub fn watch_moves(&self, check: MovingCheck) {
        let _ = self.moves.set(check);
    }

    /// Whether `resource` is moving between nodes, and which way.
    pub fn moving(&self, resource: &str) -> Option<Moving> {
        self.moves.get().and_then(|check| check(resource))
    }

    /// Refuses a decision or deletion about `resource` while it is moving (`allow_leaving`:
    /// a deletion on the copy that is leaving is carried out, on this node only).
    pub(crate) fn refuse_if_moving(&self, resource: &str, allow_leaving: bool) -> Result<()> {
        match self.moving(resource) {
            None => Ok(()),
            Some(Moving::Leaving) if allow_leaving => Ok(()),
            Some(moving) => Err(StorageError::Moving {
                geography: self.geography.clone(),
                resource_id: resource.to_owned(),
                moving,
            }),
        }
    }

    /// Whether this node retires `resource`'s destroyed keys on every node: not while its
    /// partition is leaving (its new node has the keys, and retires them itself).
    fn retires(&self, resource: &str) -> bool {
        self.mirroring() && self.moving(resource) != Some(Moving::Leaving)
    }

    /// Whether this thread's writes go to the changelog: one is attached, or the store keeps
    /// them for it.
    fn mirroring(&self) -> bool {
        loud()
            && (self.changelog.get().is_some()
                || self
                    .keeps_pending
                    .load(std::sync::atomic::Ordering::Acquire))
    }

    /// Sends the changelog what was kept of partitions that have arrived here (rebuilt)
    /// since: the rebuilder calls it once a rebuild is done.
    pub fn send_arrived(&self) -> Result<usize> {
        let _pending = self.pending.lock().expect("lock poisoned");
        match self.changelog.get() {
            Some(sink) => self.send_pending(sink.as_ref()),
            None => Ok(0),
        }
    }

    /// Sends `sink` every change and retirement kept (while detached, or of a partition being
    /// rebuilt here that has arrived since), waits for it, and removes them. Changes of a
    /// partition still arriving stay. The caller holds `pending`.
    fn send_pending(&self, sink: &dyn ChangeSink) -> Result<usize> {
        let mut changes = Vec::new();
        let mut retirements = Vec::new();
        let mut kept = Vec::new();
        let mut sent = 0;
        for entry in self.data_keys().scan_prefix(PENDING) {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            match key.get(PENDING.len()) {
                Some(b'c') => {
                    let (resource_id, value): (String, Option<Vec<u8>>) =
                        postcard::from_bytes(&value).map_err(|e| Self::corrupt(&key, e))?;
                    if self.moving(&resource_id) == Some(Moving::Arriving) {
                        continue;
                    }
                    changes.push(Change {
                        resource_id,
                        key: key[PENDING.len() + 1..].to_vec(),
                        value,
                    });
                }
                Some(b'r') => retirements
                    .push(postcard::from_bytes(&value).map_err(|e| Self::corrupt(&key, e))?),
                _ => {}
            }
            kept.push(key);
            if changes.len() >= PENDING_CHUNK {
                sent += changes.len();
                sink.send(&self.geography, std::mem::take(&mut changes))?;
            }
        }
        sent += changes.len() + retirements.len();
        if !changes.is_empty() {
            sink.send(&self.geography, changes)?;
        }
        if !retirements.is_empty() {
            sink.retired(&self.geography, &retirements)?;
        }
        sink.flush()?;
        let mut batch = sled::Batch::default();
        for key in kept {
            batch.remove(key);
        }
        self.data_keys()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        Ok(sent)
    }

    /// Forgets what was kept for the changelog of `resource` (its partition went to another
    /// node before it arrived here).
    fn drop_pending_of(&self, resource: &str) -> Result<()> {
        let _pending = self.pending.lock().expect("lock poisoned");
        let mut batch = sled::Batch::default();
        for entry in self.data_keys().scan_prefix([PENDING, b"c"].concat()) {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let (owner, _): (String, Option<Vec<u8>>) =
                postcard::from_bytes(&value).map_err(|e| Self::corrupt(&key, e))?;
            if owner == resource {
                batch.remove(key);
            }
        }
        self.data_keys()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))
    }

    /// Keeps `changes` for the changelog: each under its changelog key, so a later change of
    /// the same key replaces it, as compaction would. The caller holds `pending`.
    fn keep_pending(&self, changes: Vec<Change>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for change in changes {
            let key = [PENDING, b"c", &change.key].concat();
            let value =
                postcard::to_stdvec(&(change.resource_id, change.value)).expect("a change encodes");
            batch.insert(key, value);
        }
        self.data_keys()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))
    }

    /// Publishes `retirements` to the other nodes. They are kept in the store until the
    /// changelog has acknowledged them ([`GeoStore::flush_changelog`]), or sent when one is
    /// attached: a crash in between loses none.
    fn publish_retirements(&self, retirements: &[Retirement]) -> Result<()> {
        let _pending = self.pending.lock().expect("lock poisoned");
        self.retirements_kept
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(sink) = self.changelog.get() {
            sink.retired(&self.geography, retirements)?;
        }
        let mut batch = sled::Batch::default();
        for retirement in retirements {
            let key = [
                PENDING,
                b"r",
                &retirement.day.to_be_bytes(),
                retirement.resource_id.as_bytes(),
            ]
            .concat();
            batch.insert(key, postcard::to_stdvec(retirement).expect("encodes"));
        }
        self.data_keys()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))
    }

    /// Deletes everything stored here for `resource_id` without telling the changelog: this
    /// node gave the resource's partition to another node, which rebuilt it from the
    /// changelog. Keys go first, as for a deletion. `None`, and nothing deleted, when this
    /// store held data before it was mirrored: that data is in no changelog, and stays.
    pub fn forget_resource(&self, resource_id: &ResourceId) -> Result<Option<super::JobReport>> {
        let mirrored_all = self
            .data_keys()
            .contains_key(MIRRORED_FROM_EMPTY)
            .map_err(|e| self.sled_err(e))?;
        if !mirrored_all {
            return Ok(None);
        }
        self.drop_pending_of(resource_id.as_str())?;
        // A job of its own kind: a crash midway leaves a marker that the next start finishes,
        // quietly too.
        quietly(|| {
            let data_keys = self
                .start_job(resource_id, super::JobKind::Release)?
                .unwrap_or(0);
            let mut report = self.run_job(resource_id, super::JobKind::Release)?;
            report.data_keys = data_keys;
            Ok(Some(report))
        })
    }

    fn changelog_err(&self, problem: impl Into<String>) -> StorageError {
        StorageError::Changelog(ChangelogError {
            geography: self.geography.to_string(),
            problem: problem.into(),
        })
    }

    /// Applies `batch` to the records tree, and mirrors what the changelog carries of it.
    pub(crate) fn apply(&self, batch: Batch) -> Result<()> {
        let changes = match self.mirroring() {
            true => self.changes_of(&batch)?,
            false => Vec::new(),
        };
        self.records()
            .apply_batch(batch.into_sled())
            .map_err(|e| self.sled_err(e))?;
        self.send(changes)
    }

    /// Sends `changes` to the changelog, or keeps them until one is attached. Changes of a
    /// resource whose partition is leaving are not sent (its new node writes it); those of
    /// one arriving are kept until it has arrived ([`GeoStore::send_arrived`]).
    fn send(&self, changes: Vec<Change>) -> Result<()> {
        let mut now = Vec::with_capacity(changes.len());
        let mut arriving = Vec::new();
        for change in changes {
            match self.moving(&change.resource_id) {
                None => now.push(change),
                Some(Moving::Arriving) => arriving.push(change),
                Some(Moving::Leaving) => {}
            }
        }
        if !arriving.is_empty() {
            let _pending = self.pending.lock().expect("lock poisoned");
            let arrived = arriving
                .iter()
                .all(|c| self.moving(&c.resource_id) != Some(Moving::Arriving));
            self.keep_pending(arriving)?;
            // Arrived in the meantime, after the rebuilder sent what was kept: send it now.
            if let (true, Some(sink)) = (arrived, self.changelog.get()) {
                self.send_pending(sink.as_ref())?;
            }
        }
        let changes = now;
        if changes.is_empty() {
            return Ok(());
        }
        if let Some(sink) = self.changelog.get() {
            return Ok(sink.send(&self.geography, changes)?);
        }
        let _pending = self.pending.lock().expect("lock poisoned");
        match self.changelog.get() {
            Some(sink) => Ok(sink.send(&self.geography, changes)?),
            None => self.keep_pending(changes),
        }
    }

    /// The changes `batch` makes, each with the resource whose partition carries it (read
    /// before the batch is applied: a removed case still names its resource).
    fn changes_of(&self, batch: &Batch) -> Result<Vec<Change>> {
        let mut cases: HashMap<String, String> = HashMap::new();
        for (key, value) in &batch.writes {
            if let (Some(Owner::Case(case_id)), Some(value)) = (layout::owner_of(key), value) {
                if key.first() == layout::all_cases_prefix().first() {
                    let (_, case) = Self::dated_case(key, value)?;
                    cases.insert(case_id.to_owned(), case.resource_id.to_string());
                }
            }
        }
        let mut changes = Vec::with_capacity(batch.writes.len());
        for (key, value) in &batch.writes {
            let resource_id = match layout::owner_of(key) {
                None => continue,
                Some(Owner::Resource(resource)) => resource.to_owned(),
                Some(Owner::Case(case_id)) => match cases.get(case_id) {
                    Some(resource) => resource.clone(),
                    None => match self.case(case_id)? {
                        Some(case) => {
                            let resource = case.resource_id.to_string();
                            cases.insert(case_id.to_owned(), resource.clone());
                            resource
                        }
                        None => {
                            warn!(geography = %self.geography, %case_id, "An entry of a case this store does not hold is not mirrored to the changelog.");
                            continue;
                        }
                    },
                },
            };
            changes.push(Change {
                resource_id,
                key: changelog::entry_key(key),
                value: value.clone(),
            });
        }
        Ok(changes)
    }

    /// Mirrors data key `id`, which `entry` places in the keyring, sealed under its
    /// resource-day's live generation. A key of a day the ratchet has passed is not mirrored
    /// (it is past retention).
    pub(crate) fn mirror_data_key(&self, id: &[u8], entry: &KeyEntry) -> Result<()> {
        if !self.mirroring() {
            return Ok(());
        }
        let (resource, day) =
            layout::data_key_of(id).ok_or_else(|| Self::corrupt(id, "bad data key name"))?;
        let state = self
            .ratchet()?
            .ok_or_else(|| self.changelog_err("the ratchet state is gone"))?;
        let generation = state.live_generation(day, resource);
        let Some(seal_key) = state.seal_key(day, resource, generation) else {
            return Ok(());
        };
        let aad = crypto::data_key_aad(self.geography.as_str(), resource, day);
        let Some(sealed) = self.keyring.get(entry.slot, keyring::owner(&aad))? else {
            return Ok(());
        };
        let inner = match &entry.kek {
            KekRef::Master => {
                let wrapped = WrappedKey {
                    kek: KekRef::Master,
                    sealed,
                };
                let (_, dek) = self.keys.unwrap_under(resource, &aad, &wrapped)?;
                Zeroizing::new(dek.to_vec())
            }
            KekRef::Customer(_) => {
                Zeroizing::new(postcard::to_stdvec(&sealed).expect("a sealed key encodes"))
            }
        };
        let mirrored = MirroredKey {
            ratchet: state.id(),
            generation,
            kek: entry.kek.clone(),
            sealed: crypto::seal(
                &seal_key,
                &changelog::mirrored_key_aad(self.geography.as_str(), resource, day),
                &inner,
            ),
        };
        self.send(vec![Change {
            resource_id: resource.to_owned(),
            key: changelog::data_key_key(id),
            value: Some(postcard::to_stdvec(&mirrored).expect("a mirrored key encodes")),
        }])
    }

    /// Mirrors the destruction of data keys `ids`: tombstones, and their generations retired
    /// on every node.
    pub(crate) fn mirror_key_removals(&self, ids: &[Vec<u8>]) -> Result<()> {
        if !self.mirroring() {
            return Ok(());
        }
        let changes = ids
            .iter()
            .filter_map(|id| {
                let (resource, _) = layout::data_key_of(id)?;
                Some(Change {
                    resource_id: resource.to_owned(),
                    key: changelog::data_key_key(id),
                    value: None,
                })
            })
            .collect();
        self.send(changes)?;
        self.retire_generations(ids)
    }

    /// Retires the live generation of each of data keys `ids` (destroyed or replaced here),
    /// and tells the other nodes: from then on the changelog's copy of each opens nowhere.
    pub(crate) fn retire_generations(&self, ids: &[Vec<u8>]) -> Result<()> {
        if !self.mirroring() {
            return Ok(());
        }
        let _ratchet = self.ratchet_writer.lock().expect("lock poisoned");
        let Some(mut state) = self.ratchet_state()? else {
            return Ok(());
        };
        let mut retired = Vec::new();
        for id in ids {
            let Some((resource, day)) = layout::data_key_of(id) else {
                continue;
            };
            if !self.retires(resource) {
                continue;
            }
            let retirement = Retirement {
                resource_id: resource.to_owned(),
                day: day.number(),
                below: state.live_generation(day, resource).saturating_add(1),
            };
            if state.retire(&retirement) {
                retired.push(retirement);
            }
        }
        if retired.is_empty() {
            return Ok(());
        }
        self.write_ratchet(&state)?;
        self.publish_retirements(&retired)
    }

    /// Applies retirements another node published to this node's ratchet state. Returns how
    /// many changed it.
    pub fn apply_retirements(&self, retirements: &[Retirement]) -> Result<usize> {
        let _ratchet = self.ratchet_writer.lock().expect("lock poisoned");
        let Some(mut state) = self.ratchet_state()? else {
            return Ok(0);
        };
        let changed = retirements.iter().filter(|r| state.retire(r)).count();
        if changed > 0 {
            self.write_ratchet(&state)?;
        }
        Ok(changed)
    }

    /// Waits until the changelog has acknowledged every change sent, then forgets the
    /// retirements kept until it had.
    pub(crate) fn flush_changelog(&self) -> Result<()> {
        let Some(sink) = self.changelog.get() else {
            return Ok(());
        };
        if !self
            .retirements_kept
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return Ok(sink.flush()?);
        }
        let retirements = [PENDING, b"r"].concat();
        let sent: Vec<sled::IVec> = self
            .data_keys()
            .scan_prefix(&retirements)
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.sled_err(e))?;
        sink.flush()?;
        if sent.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in sent {
            batch.remove(key);
        }
        self.data_keys()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))
    }

    /// The associated data of the ratchet state in the keyring.
    fn ratchet_aad(&self, id: &[u8; 16], day: Day) -> Vec<u8> {
        [
            b"vigil/ratchet/v1\0".as_slice(),
            self.geography.as_str().as_bytes(),
            b"\0",
            id,
            &day.to_be_bytes(),
        ]
        .concat()
    }

    /// The keyring slot holding the ratchet state, and its owner tag, if there is one (the
    /// open's sweep of orphaned slots must leave it).
    pub(super) fn ratchet_slot(&self) -> Result<Option<(u32, keyring::Owner)>> {
        Ok(self
            .ratchet_entry()?
            .map(|(entry, aad)| (entry.slot, keyring::owner(&aad))))
    }

    /// Where the ratchet state is, and the associated data it is sealed with.
    fn ratchet_entry(&self) -> Result<Option<(RatchetEntry, Vec<u8>)>> {
        let Some(entry) = self.data_keys_value::<RatchetEntry>(RATCHET_ENTRY)? else {
            return Ok(None);
        };
        let aad = self.ratchet_aad(&entry.id, Day::from_number(entry.day));
        Ok(Some((entry, aad)))
    }

    /// This store's ratchet state, if it has one.
    pub fn ratchet_state(&self) -> Result<Option<RatchetState>> {
        Ok(self.ratchet()?.map(|state| (*state).clone()))
    }

    /// The oldest day this store's ratchet state derives keys for, if it has one.
    pub fn ratchet_day(&self) -> Result<Option<Day>> {
        Ok(self.ratchet()?.map(|state| state.day()))
    }

    /// The ratchet state as cached (shared, not copied: it grows with retirements).
    fn ratchet(&self) -> Result<Option<Arc<RatchetState>>> {
        let mut cached = self.ratchet.lock().expect("lock poisoned");
        if cached.is_none() {
            *cached = self.load_ratchet()?.map(Arc::new);
        }
        Ok(cached.clone())
    }

    fn load_ratchet(&self) -> Result<Option<RatchetState>> {
        let Some((entry, aad)) = self.ratchet_entry()? else {
            return Ok(None);
        };
        let Some(sealed_key) = self.keyring.get(entry.slot, keyring::owner(&aad))? else {
            return Ok(None);
        };
        let master = self.keys.kek("", &KekRef::Master)?;
        let key = Zeroizing::new(
            crypto::open(&master, &aad, &sealed_key)
                .map_err(|_| Self::corrupt(RATCHET_ENTRY, "the ratchet's key does not open"))?,
        );
        let key: &[u8; KEY_LEN] = key
            .as_slice()
            .try_into()
            .map_err(|_| Self::corrupt(RATCHET_ENTRY, "the ratchet's key is not 32 bytes"))?;
        let sealed: Sealed = self
            .data_keys_value(RATCHET_STATE)?
            .ok_or_else(|| Self::corrupt(RATCHET_STATE, "the ratchet state is missing"))?;
        let bytes = Zeroizing::new(
            crypto::open(&crypto::cipher(key), &aad, &sealed)
                .map_err(|_| Self::corrupt(RATCHET_STATE, "the ratchet state does not open"))?,
        );
        let state = RatchetState::from_bytes(entry.id, &bytes)
            .map_err(|e| Self::corrupt(RATCHET_STATE, e))?;
        Ok(Some(state))
    }

    /// Installs `state` as this store's ratchet state: a new one, or the same ratchet with
    /// what the state offered has purged or retired applied too (nothing this store has
    /// purged or retired comes back). A state of another ratchet than the one installed is
    /// refused.
    pub fn install_ratchet(&self, state: &RatchetState) -> Result<()> {
        let _ratchet = self.ratchet_writer.lock().expect("lock poisoned");
        let merged = match self.ratchet()? {
            None => state.clone(),
            Some(current) => match current.merged(state) {
                Some(merged) if merged == *current => return Ok(()),
                Some(merged) => merged,
                None => {
                    return Err(self.changelog_err(
                        "a state of another ratchet was offered; this store keeps its own",
                    ))
                }
            },
        };
        self.write_ratchet(&merged)
    }

    /// Moves the ratchet state forward to `day` (the purge does, to the oldest day the
    /// geography keeps): from then on no key of an earlier day can be derived here.
    pub fn advance_ratchet(&self, day: Day) -> Result<()> {
        let _ratchet = self.ratchet_writer.lock().expect("lock poisoned");
        match self.ratchet()? {
            Some(state) if state.day() < day => self.write_ratchet(&state.advanced_to(day)),
            _ => Ok(()),
        }
    }

    /// Keeps `state` as this store's ratchet state, sealed under a new key in a new keyring
    /// slot; the previous slot is overwritten in place, so the previous state, which sled may
    /// keep in its log for a while, opens nowhere. The caller holds `ratchet_writer`.
    fn write_ratchet(&self, state: &RatchetState) -> Result<()> {
        let old = self.ratchet_slot()?;
        let aad = self.ratchet_aad(&state.id(), state.day());
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
        let master = self.keys.kek("", &KekRef::Master)?;
        let slot = self.keyring.put(
            keyring::owner(&aad),
            &crypto::seal(&master, &aad, key.as_slice()),
        )?;
        let sealed = crypto::seal(&crypto::cipher(&key), &aad, &state.to_bytes());
        let entry = RatchetEntry {
            id: state.id(),
            day: state.day().number(),
            slot,
        };
        let mut batch = sled::Batch::default();
        batch.insert(
            RATCHET_ENTRY,
            postcard::to_stdvec(&entry).expect("an entry encodes"),
        );
        batch.insert(
            RATCHET_STATE,
            postcard::to_stdvec(&sealed).expect("a sealed state encodes"),
        );
        self.data_keys()
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        if let Some(old) = old {
            self.keyring.destroy(&[old])?;
        }
        *self.ratchet.lock().expect("lock poisoned") = Some(Arc::new(state.clone()));
        Ok(())
    }

    /// Applies changes read back from a changelog, oldest first: records and entries as they
    /// were stored, data keys unsealed with this store's ratchet and wrapped again under this
    /// node's key-encryption key; tombstones remove what they name. Nothing is mirrored back.
    /// Whatever is past retention by `cutoffs` is left out. Applying the same changes twice
    /// leaves the store as applying them once.
    pub fn import(
        &self,
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
        cutoffs: &Cutoffs,
    ) -> Result<Imported> {
        // Quiet: a tombstone's key destruction must not go back to the changelog.
        quietly(|| self.import_quietly(changes, cutoffs))
    }

    fn import_quietly(
        &self,
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
        cutoffs: &Cutoffs,
    ) -> Result<Imported> {
        let mut imported = Imported::default();
        let before = self.len();
        let mut keys = Vec::new();
        {
            let _writer = self.writer.lock();
            let mut batch = Batch::default();
            let mut segments: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
            for (key, value) in changes {
                match changelog::mirrored(key) {
                    Some(Mirrored::Entry(entry)) => {
                        if self.import_entry(&mut batch, &mut segments, entry, value, cutoffs)? {
                            if layout::segment_of(entry).is_none() {
                                imported.entries += 1;
                            }
                        } else {
                            imported.expired += 1;
                        }
                    }
                    Some(Mirrored::DataKey(resource, day)) => {
                        keys.push((resource.to_owned(), day, value))
                    }
                    None => {}
                }
            }
            self.records()
                .apply_batch(batch.into_sled())
                .map_err(|e| self.sled_err(e))?;
        }
        imported.records = self.len().saturating_sub(before) as u64;
        for (resource, day, value) in keys {
            if cutoffs.expired(&resource, day) {
                imported.expired += 1;
                continue;
            }
            match value {
                Some(value) => match self.import_data_key(&resource, day, value)? {
                    KeyImport::Imported => imported.data_keys += 1,
                    KeyImport::Purged => imported.expired += 1,
                    KeyImport::Foreign => imported.foreign_keys += 1,
                },
                None => {
                    self.destroy_data_keys(|r, d| r == resource && d == day, None)?;
                }
            }
        }
        self.flush()?;
        Ok(imported)
    }

    /// Adds one mirrored records-tree entry to `batch`; false when it is past retention.
    /// `segments` holds what earlier changes of this import made of each segment.
    fn import_entry(
        &self,
        batch: &mut Batch,
        segments: &mut HashMap<Vec<u8>, Option<Vec<u8>>>,
        key: &[u8],
        value: &Option<Vec<u8>>,
        cutoffs: &Cutoffs,
    ) -> Result<bool> {
        if let Some((resource, day, seq)) = layout::segment_of(key) {
            if cutoffs.expired(resource, day) {
                return Ok(false);
            }
            // The index entries of the segment's previous version go; the new version's
            // come with it.
            let previous = match segments.get(key) {
                Some(previous) => previous.clone(),
                None => self
                    .records()
                    .get(key)
                    .map_err(|e| self.sled_err(e))?
                    .map(|v| v.to_vec()),
            };
            if let Some(previous) = previous {
                for entry in
                    crate::segment::entries(&previous).map_err(|e| Self::corrupt(key, e))?
                {
                    batch.remove(layout::index_key(entry.request));
                }
            }
            match value {
                Some(bytes) => {
                    self.put_segment(batch, resource, day, Some(seq), bytes.clone())?;
                    self.raise_id_floor(seq)?;
                    self.mark_for_export(batch, super::ExportPart::Records, day)?;
                }
                None => batch.remove(key),
            }
            segments.insert(key.to_vec(), value.clone());
            return Ok(true);
        }
        if let (Some(value), Some(Owner::Resource(resource))) = (value, layout::owner_of(key)) {
            // A window checkpoint, dated.
            if layout::undated(value).is_some_and(|(day, _)| cutoffs.expired(resource, day)) {
                return Ok(false);
            }
        }
        if key.first() == layout::all_cases_prefix().first() {
            if let Some(value) = value {
                let (day, case): (Day, Case) = Self::dated_case(key, value)?;
                if cutoffs.expired(case.resource_id.as_str(), day) {
                    return Ok(false);
                }
                self.mark_for_export(batch, super::ExportPart::Cases, day)?;
            }
        }
        match value {
            Some(value) => batch.insert(key, value.as_slice()),
            None => batch.remove(key),
        }
        Ok(true)
    }

    /// Makes sure IDs handed out from now on are above `seq`, a segment number another node
    /// gave (this store's own segments must never take an imported one's key).
    fn raise_id_floor(&self, seq: u64) -> Result<()> {
        let floor = self.id_floor.load(std::sync::atomic::Ordering::Acquire);
        if floor > seq {
            return Ok(());
        }
        let next = seq + 1;
        self.data_keys()
            .insert(layout::ID_FLOOR_KEY, &next.to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        self.set_id_floor(next);
        Ok(())
    }

    /// Imports one mirrored data key of `resource` and `day`, retiring the generations before
    /// its own.
    fn import_data_key(&self, resource: &str, day: Day, value: &[u8]) -> Result<KeyImport> {
        let id = layout::data_key_id(resource, day);
        let mirrored: MirroredKey =
            postcard::from_bytes(value).map_err(|e| Self::corrupt(&id, e))?;
        let state = self
            .ratchet()?
            .ok_or_else(|| self.changelog_err("no ratchet state to open data keys with"))?;
        if mirrored.ratchet != state.id() {
            warn!(geography = %self.geography, resource_id = resource, %day, "A data key in the changelog is sealed by another ratchet; its content stays unreadable.");
            return Ok(KeyImport::Foreign);
        }
        let Some(seal_key) = state.seal_key(day, resource, mirrored.generation) else {
            return Ok(KeyImport::Purged);
        };
        let inner = Zeroizing::new(
            crypto::open(
                &seal_key,
                &changelog::mirrored_key_aad(self.geography.as_str(), resource, day),
                &mirrored.sealed,
            )
            .map_err(|_| Self::corrupt(&id, "a mirrored data key does not open"))?,
        );
        let aad = crypto::data_key_aad(self.geography.as_str(), resource, day);
        let sealed = match &mirrored.kek {
            KekRef::Master => {
                crypto::seal(&self.keys.kek(resource, &KekRef::Master)?, &aad, &inner)
            }
            KekRef::Customer(_) => {
                postcard::from_bytes(&inner).map_err(|e| Self::corrupt(&id, e))?
            }
        };
        let owner = keyring::owner(&aad);
        let _creating = self.key_creation.lock().expect("lock poisoned");
        let old = self.data_keys_value::<KeyEntry>(&id)?;
        let slot = self.keyring.put(owner, &sealed)?;
        self.data_keys()
            .insert(
                &id,
                KeyEntry {
                    kek: mirrored.kek,
                    slot,
                }
                .encode(),
            )
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        if let Some(old) = old {
            self.keyring.destroy(&[(old.slot, owner)])?;
        }
        self.ciphers
            .write()
            .expect("lock poisoned")
            .retain(|(r, d), _| !(r.as_str() == resource && *d == day));
        if mirrored.generation > state.live_generation(day, resource) {
            // The key replaced older generations, which this node retires too (the node that
            // replaced them published that as well).
            self.apply_retirements(&[Retirement {
                resource_id: resource.to_owned(),
                day: day.number(),
                below: mirrored.generation,
            }])?;
        }
        Ok(KeyImport::Imported)
    }
}

/// What became of one mirrored data key.
enum KeyImport {
    Imported,
    /// Its day is before the ratchet state, or its generation is retired: its key is gone.
    Purged,
    /// Sealed by another ratchet.
    Foreign,
}
