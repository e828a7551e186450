//! How records are laid out in a geography's sled tree.
//!
//! One tree holds these kinds of entries, so that a batch of writes to several is atomic:
//! - `S resource \0 day seq` → a segment: records of one resource stored on one UTC day
//!   (`day`: 4 bytes, big-endian, so days sort; `seq`: 8 bytes, big-endian, from sled's ID
//!   generator), packed as described in [`crate::segment`]. Resource IDs never contain NUL,
//!   so a resource's segments are one contiguous range, and so are its segments of one day:
//!   a retention purge walks only the expired ones.
//! - `I request` → a [`Locator`](crate::segment::Locator): the resource that stored the
//!   request ID and where its record is. It makes writes idempotent (one lookup tells a
//!   redelivery from a new record) and lets a point query find a record by request ID alone.
//! - `W resource \0 end-user` → the checkpoint of an end user's abuse windows (an empty end
//!   user: the resource's own), written in the same batch as the records that changed it.
//! - `C case` → a [`Case`](vigil_core::Case) (JSON), and `O case` while its flag event is
//!   not yet published (the outbox).
//! - `Q case \0 request` → a [`ReviewTask`](crate::ReviewTask) (JSON): a sampled record
//!   waiting for the LLM reviewer (the review queue), written with the case.
//! - `V case \0 request` → the reviewer's [`Verdict`](vigil_core::Verdict) (JSON), written
//!   in the same batch that removes the task.
//! - `H case \0 decision` → a human reviewer's [`Decision`](vigil_core::Decision) (JSON),
//!   keyed by its time-ordered ID.
//!
//!   A verdict's rationale and a decision's note are never in that JSON: it holds them empty,
//!   and a `sealed` field holds the text sealed under a data key (its resource, its day's
//!   number, the hex nonce and ciphertext; see `geo/review.rs`). A value without `sealed`
//!   written before this (its text in the clear) still decodes, so no layout version marks
//!   the change.
//!
//! - `X part day` → a token: the export partition of that day (`r`: records and detections,
//!   `c`: cases and verdicts) changed since it was last exported.
//!
//! Layout 3 stored one `R resource \0 request` entry per record, with `B` (bucket) and `D`
//! (detection) entries beside it; [`v3`] names those keys for the migration.
//!
//! Window checkpoints and cases are *dated*: their value starts with the day they were last
//! written, which is what the purge expires them by. Review tasks, verdicts and decisions
//! live and die with their case.
//!
//! The `data_keys` tree maps `resource \0 day` to where the data key of that resource's
//! records stored that day is: its slot in the geography's keyring file and the
//! key-encryption key that wrapped it (destroying the slot crypto-shreds one day; see
//! `crate::keyring`), holds
//! `\0job\0 kind resource` markers while a resource's content is being stripped (`s`) or its
//! data deleted (`d`), `\0rekey\0 resource \0 day` markers naming the new data key of a
//! resource-day whose records are being re-sealed, `\0layout` with the layout version, and
//! `\0idfloor`, where a compacted store's IDs start.
//!
//! Values start with a format byte so later versions can read older records.

use serde::{Deserialize, Serialize};
use vigil_core::{Day, Deployment, Operation};

use vigil_core::Detection;

use crate::crypto::Sealed;

const SEGMENT: u8 = b'S';
const INDEX: u8 = b'I';
const WINDOW: u8 = b'W';
const CASE: u8 = b'C';
const OUTBOX: u8 = b'O';
const REVIEW_QUEUE: u8 = b'Q';
const VERDICT: u8 = b'V';
const DECISION: u8 = b'H';
const EXPORT_BACKLOG: u8 = b'X';

/// The layout version, kept under [`LAYOUT_KEY`] in the `data_keys` tree. Version 1 had one
/// data key per resource; version 2 one per resource and day, wrapped, in the `data_keys`
/// tree; version 3 keeps the wrapped keys in the keyring file (`crate::keyring`) and only
/// their slots in the tree; version 4 packs records into segments. Version-2 and version-3
/// stores are migrated when they are opened.
pub const LAYOUT_VERSION: u8 = 4;

/// Key, in the `data_keys` tree, of the layout version.
pub const LAYOUT_KEY: &[u8] = b"\0layout";

/// The tree holding records, their index, windows, cases and the rest.
pub const RECORDS_TREE: &str = "records";

/// The tree holding where data keys are, job and re-key markers, and the layout version.
pub const DATA_KEYS_TREE: &str = "data_keys";

/// Key, in the `data_keys` tree, of the ID floor: the first ID a compacted copy may hand out
/// (8 bytes, big-endian), so that IDs keep growing across compactions.
pub const ID_FLOOR_KEY: &[u8] = b"\0idfloor";

/// The current value format.
pub const FORMAT: u8 = 1;

/// Key of a segment.
pub fn segment_key(resource: &str, day: Day, seq: u64) -> Vec<u8> {
    let mut key = segments_prefix(resource, Some(day));
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Prefix of `resource`'s segments of `day` (of every day when `day` is `None`).
pub fn segments_prefix(resource: &str, day: Option<Day>) -> Vec<u8> {
    let mut key = prefixed(SEGMENT, resource);
    if let Some(day) = day {
        key.extend_from_slice(&day.to_be_bytes());
    }
    key
}

/// Prefix of every segment.
pub fn all_segments_prefix() -> [u8; 1] {
    [SEGMENT]
}

/// The resource, day and sequence number of a segment key.
pub fn segment_of(key: &[u8]) -> Option<(&str, Day, u64)> {
    let rest = key.strip_prefix(&[SEGMENT])?;
    let sep = rest.iter().position(|b| *b == 0)?;
    let day = Day::from_be_bytes(rest.get(sep + 1..sep + 5)?)?;
    let seq: [u8; 8] = rest.get(sep + 5..)?.try_into().ok()?;
    Some((
        std::str::from_utf8(&rest[..sep]).ok()?,
        day,
        u64::from_be_bytes(seq),
    ))
}

/// Key of an abuse-window checkpoint: an end user's, or the resource's when `end_user` is
/// `None` (end-user IDs are never empty).
pub fn window_key(resource: &str, end_user: Option<&str>) -> Vec<u8> {
    keyed(WINDOW, resource, end_user.unwrap_or(""))
}

/// Key of a case.
pub fn case_key(case: &str) -> Vec<u8> {
    [&[CASE], case.as_bytes()].concat()
}

/// Prefix of every case.
pub fn all_cases_prefix() -> [u8; 1] {
    [CASE]
}

/// Key of a case's outbox entry (its flag event is not yet published).
pub fn outbox_key(case: &str) -> Vec<u8> {
    [&[OUTBOX], case.as_bytes()].concat()
}

/// Prefix of the outbox.
pub fn outbox_prefix() -> [u8; 1] {
    [OUTBOX]
}

/// Key of a queued review of a case's record.
pub fn review_key(case: &str, request: &str) -> Vec<u8> {
    keyed(REVIEW_QUEUE, case, request)
}

/// Key of a verdict on a case's record.
pub fn verdict_key(case: &str, request: &str) -> Vec<u8> {
    keyed(VERDICT, case, request)
}

/// Prefix of a case's verdicts (of every verdict when `case` is `None`).
pub fn verdicts_prefix(case: Option<&str>) -> Vec<u8> {
    kind_prefix(VERDICT, case)
}

/// Key of a human decision on a case.
pub fn decision_key(case: &str, decision: &str) -> Vec<u8> {
    keyed(DECISION, case, decision)
}

/// Prefix of a case's decisions (of every decision when `case` is `None`).
pub fn decisions_prefix(case: Option<&str>) -> Vec<u8> {
    kind_prefix(DECISION, case)
}

/// `kind owner \0 item`: an entry of `owner` (a resource or a case).
fn keyed(kind: u8, owner: &str, item: &str) -> Vec<u8> {
    let mut key = prefixed(kind, owner);
    key.extend_from_slice(item.as_bytes());
    key
}

/// Prefix of `owner`'s entries of `kind` (of every entry of `kind` when `owner` is `None`).
fn kind_prefix(kind: u8, owner: Option<&str>) -> Vec<u8> {
    match owner {
        Some(owner) => prefixed(kind, owner),
        None => vec![kind],
    }
}

fn prefixed(kind: u8, resource: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + resource.len() + 32);
    key.push(kind);
    key.extend_from_slice(resource.as_bytes());
    key.push(0);
    key
}

/// Key of a request-ID index entry.
pub fn index_key(request: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + request.len());
    key.push(INDEX);
    key.extend_from_slice(request.as_bytes());
    key
}

const JOB_MARKER: &[u8] = b"\0job\0";

/// Key, in the `data_keys` tree, of the marker saying a job on `resource` is under way (its
/// data keys are destroyed; its records are being stripped or deleted). Resource IDs never
/// contain NUL, so it cannot collide with a data key.
pub fn job_marker(kind: u8, resource: &str) -> Vec<u8> {
    let mut key = JOB_MARKER.to_vec();
    key.push(kind);
    key.extend_from_slice(resource.as_bytes());
    key
}

/// Prefix of every job marker.
pub fn job_markers_prefix() -> &'static [u8] {
    JOB_MARKER
}

/// The kind and resource a job marker names.
pub fn job_of(marker: &[u8]) -> Option<(u8, &str)> {
    let rest = marker.strip_prefix(JOB_MARKER)?;
    let (kind, id) = rest.split_first()?;
    Some((*kind, std::str::from_utf8(id).ok()?))
}

const REKEY_MARKER: &[u8] = b"\0rekey\0";

/// Key, in the `data_keys` tree, of the marker naming the new data key of `resource`'s
/// records of `day` while they are re-sealed under it (deleting one of them: see
/// `GeoStore::delete_request`).
pub fn rekey_marker(resource: &str, day: Day) -> Vec<u8> {
    [REKEY_MARKER, &data_key_id(resource, day)].concat()
}

/// Prefix of every re-key marker.
pub fn rekey_markers_prefix() -> &'static [u8] {
    REKEY_MARKER
}

/// The resource and day a re-key marker names.
pub fn rekey_of(marker: &[u8]) -> Option<(&str, Day)> {
    data_key_of(marker.strip_prefix(REKEY_MARKER)?)
}

/// Key, in the `data_keys` tree, of `resource`'s data key for records stored on `day`.
pub fn data_key_id(resource: &str, day: Day) -> Vec<u8> {
    let mut key = Vec::with_capacity(resource.len() + 5);
    key.extend_from_slice(resource.as_bytes());
    key.push(0);
    key.extend_from_slice(&day.to_be_bytes());
    key
}

/// Prefix of every data key of `resource`.
pub fn data_keys_prefix(resource: &str) -> Vec<u8> {
    let mut key = resource.as_bytes().to_vec();
    key.push(0);
    key
}

/// The resource and day of a data key's key; `None` for markers and the layout version.
pub fn data_key_of(key: &[u8]) -> Option<(&str, Day)> {
    if key.first() == Some(&0) {
        return None;
    }
    let sep = key.iter().position(|b| *b == 0)?;
    let day = Day::from_be_bytes(&key[sep + 1..]).filter(|_| key.len() == sep + 5)?;
    Some((std::str::from_utf8(&key[..sep]).ok()?, day))
}

/// The first key after every key that starts with `prefix` (`None` when there is none).
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut key = prefix.to_vec();
    while let Some(last) = key.pop() {
        if last < u8::MAX {
            key.push(last + 1);
            return Some(key);
        }
    }
    None
}

/// The owner part of a key made by `prefixed`: the resource of segments and windows, the
/// case of review tasks, verdicts and decisions.
pub fn resource_of_key(key: &[u8]) -> Option<&str> {
    let rest = key.get(1..)?;
    let sep = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&rest[..sep]).ok()
}

/// Whose entry a records-tree key is, for the changelog (see [`crate::changelog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// A resource's: a segment, a window checkpoint.
    Resource(&'a str),
    /// A case's: the case, its outbox entry, review tasks, verdicts and decisions.
    Case(&'a str),
}

/// The owner of a records-tree entry the changelog carries; `None` for the entries each store
/// derives or keeps for itself (the request-ID index, the export backlog).
pub fn owner_of(key: &[u8]) -> Option<Owner<'_>> {
    match *key.first()? {
        SEGMENT | WINDOW => resource_of_key(key).map(Owner::Resource),
        CASE | OUTBOX => std::str::from_utf8(&key[1..]).ok().map(Owner::Case),
        REVIEW_QUEUE | VERDICT | DECISION => resource_of_key(key).map(Owner::Case),
        _ => None,
    }
}

/// Key of the marker saying export partition `part` of `day` changed.
pub fn export_backlog_key(part: u8, day: Day) -> [u8; 6] {
    let d = day.to_be_bytes();
    [EXPORT_BACKLOG, part, d[0], d[1], d[2], d[3]]
}

/// Prefix of the export backlog.
pub fn export_backlog_prefix() -> [u8; 1] {
    [EXPORT_BACKLOG]
}

/// The partition and day of an export backlog key.
pub fn export_backlog_entry(key: &[u8]) -> Option<(u8, Day)> {
    match key {
        [EXPORT_BACKLOG, part, day @ ..] if day.len() == 4 => {
            Some((*part, Day::from_be_bytes(day)?))
        }
        _ => None,
    }
}

/// Prefix of every window checkpoint.
pub fn all_windows_prefix() -> [u8; 1] {
    [WINDOW]
}

/// Prefix of `resource`'s window checkpoints.
pub fn windows_prefix(resource: &str) -> Vec<u8> {
    prefixed(WINDOW, resource)
}

/// Prefix of a case's review tasks (of every queued task when `case` is `None`).
pub fn reviews_prefix(case: Option<&str>) -> Vec<u8> {
    kind_prefix(REVIEW_QUEUE, case)
}

/// A value that starts with the day it was written on.
pub fn dated(day: Day, value: &[u8]) -> Vec<u8> {
    [&day.to_be_bytes()[..], value].concat()
}

/// The day and the value of a dated value.
pub fn undated(value: &[u8]) -> Option<(Day, &[u8])> {
    Some((Day::from_be_bytes(value)?, value.get(4..)?))
}

/// The content part of a stored record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredContent {
    /// The resource's content logging is off: no content was written.
    NotLogged,
    /// The prompt and completion, sealed under the resource's data key.
    Sealed(Sealed),
}

/// A stored record: metadata in the clear, content sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredValue {
    pub format: u8,
    pub deployment: Deployment,
    pub processed_in: Option<String>,
    /// Event time, Unix nanoseconds.
    pub timestamp_ns: i128,
    pub operation: Operation,
    pub model: String,
    pub end_user: Option<String>,
    /// When vigil stored it, Unix seconds.
    pub stored_at: i64,
    pub content: StoredContent,
}

/// A record's stored value: its [`StoredValue`], followed by its [`Detection`] when the
/// classifier scored it (one sled value per record instead of two).
pub fn record_value(value: &[u8], detection: Option<&Detection>) -> Vec<u8> {
    let mut bytes = value.to_vec();
    if let Some(detection) = detection {
        bytes = postcard::to_extend(detection, bytes).expect("a detection always encodes");
    }
    bytes
}

/// The [`StoredValue`] of a record's stored bytes, and the bytes after it (its detection, if
/// any: see [`detection_in`]).
pub fn split_value(bytes: &[u8]) -> Result<(StoredValue, &[u8]), postcard::Error> {
    postcard::take_from_bytes(bytes)
}

/// The detection stored in a record's value; `None` for a record stored without one (or
/// before detections went into the value).
pub fn detection_in(bytes: &[u8]) -> Result<Option<Detection>, postcard::Error> {
    let (_, rest) = split_value(bytes)?;
    if rest.is_empty() {
        return Ok(None);
    }
    postcard::from_bytes(rest).map(Some)
}

/// A record's stored bytes with its content dropped and everything else (metadata,
/// detection) kept; `None` when it holds no content.
pub fn without_content(bytes: &[u8]) -> Result<Option<Vec<u8>>, postcard::Error> {
    let (mut value, rest) = split_value(bytes)?;
    if matches!(value.content, StoredContent::NotLogged) {
        return Ok(None);
    }
    value.content = StoredContent::NotLogged;
    let mut stripped = postcard::to_stdvec(&value).expect("a stored value always encodes");
    stripped.extend_from_slice(rest);
    Ok(Some(stripped))
}

/// The keys of layout 3, which the migration to segments reads and removes.
pub mod v3 {
    /// Prefix of every record (`R resource \0 request` → the record's value).
    pub const RECORDS: u8 = b'R';
    /// Prefix of every detection stored apart from its record (`D resource \0 request`).
    pub const DETECTIONS: u8 = b'D';
    /// Prefix of the bucket index (`B resource \0 day request` → nothing).
    pub const BUCKETS: u8 = b'B';

    /// Key of a record.
    #[cfg(test)]
    pub fn record_key(resource: &str, request: &str) -> Vec<u8> {
        super::keyed(RECORDS, resource, request)
    }

    /// Key of a record's separate detection.
    pub fn detection_key(resource: &str, request: &str) -> Vec<u8> {
        super::keyed(DETECTIONS, resource, request)
    }

    /// Key of a record's bucket-index entry.
    pub fn bucket_key(resource: &str, day: vigil_core::Day, request: &str) -> Vec<u8> {
        let mut key = super::prefixed(BUCKETS, resource);
        key.extend_from_slice(&day.to_be_bytes());
        key.extend_from_slice(request.as_bytes());
        key
    }

    /// The resource and request ID of a record key.
    pub fn record_of(key: &[u8]) -> Option<(&str, &str)> {
        let rest = key.strip_prefix(&[RECORDS])?;
        let sep = rest.iter().position(|b| *b == 0)?;
        Some((
            std::str::from_utf8(&rest[..sep]).ok()?,
            std::str::from_utf8(&rest[sep + 1..]).ok()?,
        ))
    }
}
