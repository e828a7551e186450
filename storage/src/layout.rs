//! How records are laid out in a geography's sled tree.
//!
//! One tree holds two kinds of entries, so that a batch of writes to both is atomic:
//! - `R resource \0 request` → the stored record. Resource IDs never contain NUL, so each
//!   resource's records form one contiguous range under the prefix `R resource \0`.
//! - `I request` → the resource ID: the request-ID index that makes writes idempotent and
//!   lets a point query find a record by request ID alone.
//! - `D resource \0 request` → the record's [`Detection`](vigil_core::Detection) (scores
//!   only), written with the record when a classifier scored it.
//! - `W resource \0 end-user` → the checkpoint of an end user's abuse windows (an empty end
//!   user: the resource's own), written in the same batch as the records that changed it.
//! - `C case` → a [`Case`](vigil_core::Case) (JSON), and `O case` while its flag event is
//!   not yet published (the outbox).
//! - `Q case \0 request` → a [`ReviewTask`](crate::ReviewTask) (JSON): a sampled record
//!   waiting for the LLM reviewer (the review queue), written with the case.
//! - `V case \0 request` → the reviewer's [`Verdict`](vigil_core::Verdict) (JSON), written
//!   in the same batch that removes the task.
//!
//! The `data_keys` tree maps a resource ID to its wrapped data key, and holds
//! `\0shred\0 resource` markers while a resource's content is being destroyed.
//!
//! Values start with a format byte so later versions can read older records.

use serde::{Deserialize, Serialize};
use vigil_core::{Deployment, Operation};

use crate::crypto::Sealed;

const RECORD: u8 = b'R';
const INDEX: u8 = b'I';
const DETECTION: u8 = b'D';
const WINDOW: u8 = b'W';
const CASE: u8 = b'C';
const OUTBOX: u8 = b'O';
const REVIEW_QUEUE: u8 = b'Q';
const VERDICT: u8 = b'V';

/// The current value format.
pub const FORMAT: u8 = 1;

/// Key of a stored record.
pub fn record_key(resource: &str, request: &str) -> Vec<u8> {
    let mut key = resource_prefix(resource);
    key.extend_from_slice(request.as_bytes());
    key
}

/// Prefix of all of a resource's records.
pub fn resource_prefix(resource: &str) -> Vec<u8> {
    prefixed(RECORD, resource)
}

/// Key of a record's detection.
pub fn detection_key(resource: &str, request: &str) -> Vec<u8> {
    let mut key = prefixed(DETECTION, resource);
    key.extend_from_slice(request.as_bytes());
    key
}

/// Key of an abuse-window checkpoint: an end user's, or the resource's when `end_user` is
/// `None` (end-user IDs are never empty).
pub fn window_key(resource: &str, end_user: Option<&str>) -> Vec<u8> {
    let mut key = prefixed(WINDOW, resource);
    key.extend_from_slice(end_user.unwrap_or("").as_bytes());
    key
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
    let mut key = prefixed(REVIEW_QUEUE, case);
    key.extend_from_slice(request.as_bytes());
    key
}

/// Prefix of the review queue.
pub fn review_queue_prefix() -> [u8; 1] {
    [REVIEW_QUEUE]
}

/// Key of a verdict on a case's record.
pub fn verdict_key(case: &str, request: &str) -> Vec<u8> {
    let mut key = prefixed(VERDICT, case);
    key.extend_from_slice(request.as_bytes());
    key
}

/// Prefix of a case's verdicts (of every verdict when `case` is `None`).
pub fn verdicts_prefix(case: Option<&str>) -> Vec<u8> {
    match case {
        Some(case) => prefixed(VERDICT, case),
        None => vec![VERDICT],
    }
}

fn prefixed(kind: u8, resource: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + resource.len() + 32);
    key.push(kind);
    key.extend_from_slice(resource.as_bytes());
    key.push(0);
    key
}

/// Prefix of every record of every resource.
pub fn all_records_prefix() -> [u8; 1] {
    [RECORD]
}

/// Key of a request-ID index entry.
pub fn index_key(request: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + request.len());
    key.push(INDEX);
    key.extend_from_slice(request.as_bytes());
    key
}

/// Key, in the `data_keys` tree, of the marker saying `resource`'s content is being
/// destroyed. Resource IDs never contain NUL, so it cannot collide with a data key.
pub fn shred_marker(resource: &str) -> Vec<u8> {
    let mut key = b"\0shred\0".to_vec();
    key.extend_from_slice(resource.as_bytes());
    key
}

/// The resource a shredding marker names.
pub fn shredded_resource(marker: &[u8]) -> Option<&str> {
    marker
        .strip_prefix(b"\0shred\0".as_slice())
        .and_then(|id| std::str::from_utf8(id).ok())
}

/// The request ID part of a record key.
pub fn request_of(record_key: &[u8]) -> Option<&str> {
    let sep = record_key.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&record_key[sep + 1..]).ok()
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
