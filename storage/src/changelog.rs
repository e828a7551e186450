//! The changelog: every write to a store, mirrored already sealed to a [`ChangeSink`] (a
//! compacted Kafka topic per geography), from which another node rebuilds the store.
//!
//! What is mirrored, under which changelog key (the first byte tells the kind):
//! - `r` + a records-tree key: every entry the changelog carries ([`layout::owner_of`]):
//!   segments (records exactly as stored: metadata in the clear, content sealed under its data
//!   key), window checkpoints, cases, the outbox, review tasks, verdicts and decisions. The
//!   value is the stored value; a removal is a tombstone (no value), so compaction drops it.
//! - `k` + a data-key ID: a data key, sealed under its resource-day's current generation key
//!   from the geography's [`RatchetState`] (see below), and, for a resource with a customer-managed key, still
//!   wrapped by that key inside. A destroyed key is a tombstone.
//!
//! Not mirrored: the request-ID index (rebuilt from the segments), the export backlog (each
//! node exports what it stores), and the keyring (node-local, wrapped by the node's own master
//! key).
//!
//! **The day-key ratchet** ([`ratchet`]). Kafka keeps a value until compaction removes it, so
//! a data key stored there must stop opening when it is destroyed, even before compaction.
//! Data keys are therefore sealed under keys derived from a [`RatchetState`]: per day, per
//! resource and per *generation*. The purge moves the state past purged days; destroying or
//! replacing a resource-day's data key retires its generation, which punctures the state so
//! that the retired key cannot be derived from it. Each node keeps the state sealed under a
//! key in a keyring slot that is overwritten in place. Every node of a geography holds the
//! same state: the first creates it and the others fetch it from a peer over mutual TLS;
//! retirements (public: IDs and numbers) reach every node through [`ChangeSink::retired`].

use std::fmt;

use serde::{Deserialize, Serialize};
use vigil_core::{Day, Geography};

use crate::crypto::{self, Sealed};
use crate::keys::KekRef;
use crate::layout;

pub mod ratchet;

pub use ratchet::{RatchetError, RatchetState, RatchetWire, Retirement};

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
    /// Tells every node of `geography` that `retirements` happened here, so that each
    /// applies them to its own ratchet state ([`crate::GeoStore::apply_retirements`]).
    fn retired(
        &self,
        geography: &Geography,
        retirements: &[Retirement],
    ) -> Result<(), ChangelogError>;
}

/// Where a resource stands on this node while its partition moves between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moving {
    /// Its partition came to this node, which is rebuilding it from the changelog: not
    /// served, and not written but by the rebuild.
    Arriving,
    /// Its partition went to another node, which is rebuilding it: this node still serves
    /// reads from what it holds, and carries out deletions on its copy, but writes nothing
    /// of it to the changelog and takes no decision about it.
    Leaving,
}

impl fmt::Display for Moving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Moving::Arriving => "arriving (being rebuilt on this node)",
            Moving::Leaving => "leaving (being rebuilt on its new node)",
        })
    }
}

/// Says whether a resource (by ID) is moving (see [`crate::GeoStore::watch_moves`]).
pub type MovingCheck = std::sync::Arc<dyn Fn(&str) -> Option<Moving> + Send + Sync>;

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
    /// The ratchet whose keys sealed it.
    pub ratchet: [u8; 16],
    /// The generation of its resource-day it was sealed under (see [`ratchet`]).
    pub generation: u32,
    /// The key-encryption key inside: for the master key, `sealed` opens to the bare data key
    /// (each node wraps it under its own master key); for a customer key, to the data key
    /// wrapped by that key, as a keyring stores it.
    pub kek: KekRef,
    pub sealed: Sealed,
}

/// The associated data of a data key sealed under a ratchet key: the data key's own, in a
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
