//! The changelog: every write to a store, mirrored already sealed to a [`ChangeSink`] (a
//! compacted Kafka topic per geography), from which another node rebuilds the store.
//!
//! What is mirrored, under which changelog key (the first byte tells the kind):
//! - `r` + a records-tree key: every entry the changelog carries ([`layout::owner_of`]):
//!   segments (records exactly as stored: metadata in the clear, content sealed under its data
//!   key), window checkpoints, cases, the outbox, review tasks, verdicts and decisions. The
//!   value is the stored value; a removal is a tombstone (no value), so compaction drops it.
//! - `k` + a data-key ID: a data key, sealed under its day's key from the geography's
//!   [`RatchetState`] (see below), and, for a resource with a customer-managed key, still
//!   wrapped by that key inside. A destroyed key is a tombstone.
//!
//! Not mirrored: the request-ID index (rebuilt from the segments), the export backlog (each
//! node exports what it stores), and the keyring (node-local, wrapped by the node's own master
//! key).
//!
//! **The day-key ratchet.** Kafka keeps a value until compaction removes it, so a data key
//! stored there must stop opening when the purge destroys it, even before compaction. Data
//! keys are therefore sealed under a *day key*: `K(d + 1) = H(K(d))` is a hash ratchet, and the
//! day key of day `d` is derived from `K(d)`. Each node keeps one state, the oldest retained day
//! `d0` and `K(d0)`, in a keyring slot that is overwritten in place; it derives every later
//! day's key from it and no earlier one. The purge moves the state forward, so a purged day's
//! key exists on no disk any more and its changelog entries cannot be opened. Every node of a
//! geography holds the same state: the first creates it and the others fetch it from a peer
//! over mutual TLS; no copy exists anywhere else.

use std::fmt;

use aes_gcm::Aes256Gcm;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_core::{Day, Geography};
use zeroize::Zeroizing;

use crate::crypto::{self, Sealed, KEY_LEN};
use crate::keys::KekRef;
use crate::layout;

/// Changelog key prefix of a records-tree entry.
pub(crate) const ENTRY: u8 = b'r';
/// Changelog key prefix of a data key.
pub(crate) const DATA_KEY: u8 = b'k';

/// One mirrored write: the changelog key, the value (`None`: removed, a tombstone), and the
/// resource it belongs to, which decides the changelog partition (the log topic's partition
/// of that resource).
#[derive(Clone, PartialEq, Eq)]
pub struct Change {
    /// The resource whose partition carries the change.
    pub resource_id: String,
    /// The changelog key.
    pub key: Vec<u8>,
    /// The changelog value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

impl fmt::Debug for Change {
    // IDs and sizes only: values are sealed, but need not be printed either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("resource_id", &self.resource_id)
            .field("key_len", &self.key.len())
            .field("value_len", &self.value.as_ref().map(Vec::len))
            .finish()
    }
}

/// Where a store's changes go. [`ChangeSink::send`] may buffer; [`ChangeSink::flush`] returns
/// once everything sent is acknowledged, and a store's flush waits for it, so an offset that
/// is committed after a flush is never ahead of the changelog.
pub trait ChangeSink: Send + Sync {
    /// Queues `changes` of `geography`'s store, in order.
    fn send(&self, geography: &Geography, changes: Vec<Change>) -> Result<(), ChangelogError>;
    /// Waits until everything queued is acknowledged.
    fn flush(&self) -> Result<(), ChangelogError>;
}

/// The changelog could not be written, or a change could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("changelog of geography {geography}: {problem}")]
pub struct ChangelogError {
    /// The geography.
    pub geography: String,
    /// What went wrong (IDs only).
    pub problem: String,
}

/// A data key as the changelog carries it.
#[derive(Serialize, Deserialize)]
pub(crate) struct MirroredKey {
    /// The ratchet whose day key sealed it.
    pub ratchet: [u8; 16],
    /// The key-encryption key inside: for the master key, `sealed` opens to the bare data key
    /// (each node wraps it under its own master key); for a customer key, to the data key
    /// wrapped by that key, as a keyring stores it.
    pub kek: KekRef,
    pub sealed: Sealed,
}

/// The associated data of a data key sealed under a day key: the data key's own, in a
/// domain of its own.
pub(crate) fn mirrored_key_aad(geography: &str, resource: &str, day: Day) -> Vec<u8> {
    [
        b"vigil/changelog-key/v1\0".as_slice(),
        &crypto::data_key_aad(geography, resource, day),
    ]
    .concat()
}

/// The changelog key of records-tree entry `key`.
pub(crate) fn entry_key(key: &[u8]) -> Vec<u8> {
    [&[ENTRY], key].concat()
}

/// The changelog key of data key `id`.
pub(crate) fn data_key_key(id: &[u8]) -> Vec<u8> {
    [&[DATA_KEY], id].concat()
}

/// What a changelog key names.
pub(crate) enum Mirrored<'a> {
    /// A records-tree entry, by its key.
    Entry(&'a [u8]),
    /// A data key, by resource and day.
    DataKey(&'a str, Day),
}

/// What changelog key `key` names; `None` for a key this version does not write.
pub(crate) fn mirrored(key: &[u8]) -> Option<Mirrored<'_>> {
    match key.split_first()? {
        (&ENTRY, rest) if layout::owner_of(rest).is_some() => Some(Mirrored::Entry(rest)),
        (&DATA_KEY, rest) => {
            let (resource, day) = layout::data_key_of(rest)?;
            Some(Mirrored::DataKey(resource, day))
        }
        _ => None,
    }
}

/// The resource whose partition carries changelog key `key`, when the key names it (records
/// and window checkpoints, data keys); `None` for a case's entries, which name only the case.
pub fn resource_of(key: &[u8]) -> Option<&str> {
    match mirrored(key)? {
        Mirrored::Entry(entry) => match layout::owner_of(entry)? {
            layout::Owner::Resource(resource) => Some(resource),
            layout::Owner::Case(_) => None,
        },
        Mirrored::DataKey(resource, _) => Some(resource),
    }
}

/// Writes to a records tree, as a `sled::Batch` takes them, kept so that the changelog can
/// mirror them once they are applied.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Sets `key` to `value` (an owned value, such as a segment, is taken as it is rather
    /// than copied).
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.writes
            .push((key.as_ref().to_vec(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.writes.push((key.as_ref().to_vec(), None));
    }

    /// The same writes as a sled batch.
    pub fn into_sled(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

/// One state of a geography's day-key ratchet: the oldest day it derives a key for, and that
/// day's chain key. It holds key material: it is shown to no one and travels only between
/// nodes over mutual TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct RatchetState {
    id: [u8; 16],
    day: Day,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for RatchetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RatchetState({}, from {})",
            hex::encode(self.id),
            self.day
        )
    }
}

/// A ratchet state as it travels between nodes (hex).
#[derive(Serialize, Deserialize)]
pub struct RatchetWire {
    /// The ratchet's ID.
    pub id: String,
    /// The oldest day it derives a key for (days since the Unix epoch).
    pub day: u32,
    /// That day's chain key.
    pub key: String,
}

impl fmt::Debug for RatchetWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RatchetWire({}, from day {})", self.id, self.day)
    }
}

impl RatchetState {
    /// A new ratchet, starting at `day`.
    pub fn create(day: Day) -> Self {
        let mut id = [0u8; 16];
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
        Self { id, day, key }
    }

    pub(crate) fn from_parts(id: [u8; 16], day: Day, key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self { id, day, key }
    }

    /// The ratchet's ID (not secret): which ratchet sealed a key.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// The oldest day this state derives a key for.
    pub fn day(&self) -> Day {
        self.day
    }

    pub(crate) fn chain_key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The state moved forward to `day`; `self` when it is there already (a ratchet never
    /// moves back).
    pub fn advanced_to(&self, day: Day) -> Self {
        let mut state = self.clone();
        while state.day < day {
            state.key = step(b"vigil/ratchet/step/v1", &state.key);
            state.day = state.day.next();
        }
        state
    }

    /// The key that seals day `day`'s data keys in the changelog; `None` for a day before
    /// this state (purged: its key is gone).
    pub(crate) fn day_key(&self, day: Day) -> Option<Aes256Gcm> {
        if day < self.day {
            return None;
        }
        let chain = self.advanced_to(day);
        let key = step(b"vigil/ratchet/day-key/v1", &chain.key);
        Some(crypto::cipher(&key))
    }

    /// The state as it travels to another node.
    pub fn to_wire(&self) -> RatchetWire {
        RatchetWire {
            id: hex::encode(self.id),
            day: self.day.number(),
            key: hex::encode(self.key.as_slice()),
        }
    }

    /// A state received from another node.
    pub fn from_wire(wire: &RatchetWire) -> Result<Self, String> {
        let id: [u8; 16] = hex::decode(&wire.id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("id: not 16 bytes of hex")?;
        let key = Zeroizing::new(hex::decode(&wire.key).map_err(|_| "key: not hex")?);
        let key: [u8; KEY_LEN] = key.as_slice().try_into().map_err(|_| "key: not 32 bytes")?;
        Ok(Self {
            id,
            day: Day::from_number(wire.day),
            key: Zeroizing::new(key),
        })
    }
}

/// One step of the ratchet in domain `domain`: SHA-256 over the domain and the key.
fn step(domain: &[u8], key: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut hash = Sha256::new();
    hash.update(domain);
    hash.update(key);
    Zeroizing::new(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratchet_derives_later_days_and_no_earlier_one() {
        let state = RatchetState::create(Day::from_number(100));
        let later = state.advanced_to(Day::from_number(103));
        assert_eq!(later.day(), Day::from_number(103));
        assert!(later.day_key(Day::from_number(102)).is_none());
        // The same key for day 105 from either state.
        let sealed = crypto::seal(
            &state.day_key(Day::from_number(105)).unwrap(),
            b"aad",
            b"data key",
        );
        let opened = crypto::open(
            &later.day_key(Day::from_number(105)).unwrap(),
            b"aad",
            &sealed,
        );
        assert_eq!(opened.unwrap(), b"data key");
        // Another day's key does not open it.
        let other = later.day_key(Day::from_number(104)).unwrap();
        assert!(crypto::open(&other, b"aad", &sealed).is_err());
        // A state never moves back.
        assert_eq!(later.advanced_to(Day::from_number(90)), later);
    }

    #[test]
    fn a_state_travels_and_comes_back_the_same() {
        let state = RatchetState::create(Day::from_number(7));
        let back = RatchetState::from_wire(&state.to_wire()).unwrap();
        assert_eq!(back, state);
        assert!(!format!("{:?}", state.to_wire()).contains(&state.to_wire().key));
        let mut broken = state.to_wire();
        broken.key.pop();
        assert!(RatchetState::from_wire(&broken).is_err());
    }
}
