//! Dead letters: one JSON line per rejected input, appended to the configured destination.
//!
//! A dead letter carries the reason (code, field, message), the source position, the IDs when
//! they could be read, and the raw payload so an operator can repair and replay it. The payload
//! is UTF-8 text when it is valid UTF-8 and base64 otherwise, truncated to the size limit for
//! oversized inputs, and withheld entirely for resources whose content logging is off: their
//! content must not be at rest anywhere, dead-letter files included.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Serialize;
use time::OffsetDateTime;

use crate::reject::RejectReason;
use crate::source::SourcePosition;

/// One rejected input, ready to be written.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Why it was rejected.
    pub reason: ReasonRecord,
    /// Where it came from.
    pub source: SourcePosition,
    /// The request ID, when the record could be decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The resource ID, when the record could be decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// When it was rejected (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub rejected_at: OffsetDateTime,
    /// The raw input.
    #[serde(flatten)]
    pub payload: Payload,
}

/// The reason as written in a dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct ReasonRecord {
    /// Stable code, as counted in the run summary.
    pub code: &'static str,
    /// The field concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// Human-readable explanation.
    pub message: String,
}

/// The raw input as kept in a dead letter.
#[derive(Debug, Clone, Serialize)]
pub enum Payload {
    /// Valid UTF-8 text.
    #[serde(rename = "payload")]
    Text(String),
    /// Bytes that are not UTF-8, base64-encoded.
    #[serde(rename = "payload_base64")]
    Base64(String),
    /// Not kept, and why.
    #[serde(rename = "payload_withheld")]
    Withheld(&'static str),
}

impl Payload {
    /// Keeps `raw` as text or base64.
    pub fn from_bytes(raw: &[u8]) -> Self {
        match std::str::from_utf8(raw) {
            Ok(s) => Self::Text(s.to_owned()),
            Err(_) => Self::Base64(base64::engine::general_purpose::STANDARD.encode(raw)),
        }
    }

    /// The payload of a resource whose content logging is off.
    pub fn content_logging_off() -> Self {
        Self::Withheld("content_logging_off")
    }
}

/// Decides what payload a dead letter may keep.
///
/// A resource whose content logging is off must have no content at rest anywhere, so a
/// rejected input that belongs to one keeps no payload. An input belongs to one when it
/// decodes far enough to name it, or, for inputs too broken to decode, when its bytes contain
/// such a resource's ID as a JSON string at all: erring towards withholding.
pub struct PayloadPolicy {
    not_logged: std::collections::HashSet<String>,
    needles: Vec<Vec<u8>>,
}

impl PayloadPolicy {
    /// The policy for the resources in `registry`.
    pub fn new(registry: &vigil_core::ResourceRegistry) -> Self {
        let not_logged: std::collections::HashSet<String> = registry
            .iter()
            .filter(|r| !r.content_logging)
            .map(|r| r.id.to_string())
            .collect();
        let needles = not_logged
            .iter()
            .map(|id| format!("\"{id}\"").into_bytes())
            .collect();
        Self {
            not_logged,
            needles,
        }
    }

    /// The payload to keep for the rejected input `raw`.
    pub fn payload(&self, raw: &[u8]) -> Payload {
        #[derive(serde::Deserialize)]
        struct ResourceOnly<'a> {
            #[serde(borrow)]
            resource_id: Option<std::borrow::Cow<'a, str>>,
        }
        if self.not_logged.is_empty() {
            return Payload::from_bytes(raw);
        }
        let named = serde_json::from_slice::<ResourceOnly<'_>>(raw)
            .ok()
            .and_then(|r| r.resource_id)
            .is_some_and(|id| self.not_logged.contains(id.as_ref()));
        let mentioned = || {
            self.needles
                .iter()
                .any(|n| memchr::memmem::find(raw, n).is_some())
        };
        if named || mentioned() {
            Payload::content_logging_off()
        } else {
            Payload::from_bytes(raw)
        }
    }
}

impl DeadLetter {
    /// A dead letter for `reason` at `source`.
    pub fn new(reason: &RejectReason, source: SourcePosition, payload: Payload) -> Self {
        Self {
            reason: ReasonRecord {
                code: reason.code(),
                field: reason.field(),
                message: reason.to_string(),
            },
            source,
            request_id: None,
            resource_id: None,
            rejected_at: OffsetDateTime::now_utc(),
            payload,
        }
    }

    /// Adds the record's IDs.
    pub fn with_ids(mut self, request_id: &str, resource_id: &str) -> Self {
        self.request_id = Some(request_id.to_owned());
        self.resource_id = Some(resource_id.to_owned());
        self
    }
}

/// Errors writing dead letters.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter file {path}: {source}")]
pub struct DeadLetterError {
    path: PathBuf,
    source: io::Error,
}

/// Appends dead letters to a JSON-lines file, created (with its directory) on first use.
pub struct DeadLetterWriter {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
}

impl DeadLetterWriter {
    /// A writer for `path`; nothing is created until the first dead letter.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            out: None,
            written: 0,
        }
    }

    fn err(&self, source: io::Error) -> DeadLetterError {
        DeadLetterError {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one dead letter.
    pub fn write(&mut self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        if self.out.is_none() {
            let open = || -> io::Result<File> {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir)?;
                }
                // Dead letters hold raw payloads: readable by vigil's user only.
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&self.path)
            };
            let file = open().map_err(|e| self.err(e))?;
            self.out = Some(BufWriter::new(file));
        }
        let out = self.out.as_mut().expect("opened above");
        let result = serde_json::to_writer(&mut *out, letter)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        result.map_err(|e| self.err(e))?;
        self.written += 1;
        Ok(())
    }

    /// Flushes and syncs what was written.
    pub fn flush(&mut self) -> Result<(), DeadLetterError> {
        if let Some(out) = self.out.as_mut() {
            let result = out.flush().and_then(|()| out.get_ref().sync_data());
            result.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// How many dead letters this writer has written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The destination file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withholds_payloads_of_resources_without_content_logging() {
        let mut reg = vigil_core::ResourceRegistry::default();
        let mut quiet = vigil_core::Resource::new("quiet".parse().unwrap(), "eu".parse().unwrap());
        quiet.content_logging = false;
        reg.add(quiet).unwrap();
        reg.add(vigil_core::Resource::new(
            "loud".parse().unwrap(),
            "eu".parse().unwrap(),
        ))
        .unwrap();
        let policy = PayloadPolicy::new(&reg);
        let withheld = |raw: &[u8]| matches!(policy.payload(raw), Payload::Withheld(_));
        assert!(withheld(
            br#"{"resource_id":"quiet","timestamp":"bad","prompt":"p"}"#
        ));
        assert!(withheld(br#"{"resource_id":"quie\u0074","prompt":"p"}"#));
        assert!(withheld(
            br#"{"resource_id":"quiet","prompt":"unterminated"#
        ));
        assert!(!withheld(br#"{"resource_id":"loud","prompt":"p"}"#));
        assert!(!withheld(br#"{"resource_id":"quieter","prompt":"p"}"#));
    }

    #[test]
    fn writes_one_json_line_per_letter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dl.jsonl");
        let mut w = DeadLetterWriter::new(&path);
        let pos = SourcePosition::File {
            file: "in.jsonl".into(),
            line: 7,
        };
        let reason = RejectReason::UnknownResource;
        w.write(
            &DeadLetter::new(&reason, pos.clone(), Payload::from_bytes(b"{\"a\":1}"))
                .with_ids("r1", "x"),
        )
        .unwrap();
        w.write(&DeadLetter::new(
            &RejectReason::InvalidUtf8 { valid_up_to: 0 },
            pos,
            Payload::from_bytes(b"\xff"),
        ))
        .unwrap();
        w.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"]["code"], "unknown_resource");
        assert_eq!(lines[0]["reason"]["field"], "resource_id");
        assert_eq!(lines[0]["source"]["file"], "in.jsonl");
        assert_eq!(lines[0]["source"]["line"], 7);
        assert_eq!(lines[0]["payload"], "{\"a\":1}");
        assert_eq!(lines[0]["request_id"], "r1");
        assert_eq!(lines[1]["payload_base64"], "/w==");
    }
}
