//! Dead letters: one JSON line per rejected input, appended to the configured destination.
//!
//! A dead letter carries the reason (code, field, message), the source position, the IDs when
//! they could be read, and the raw payload so an operator can repair and replay it. The payload
//! is UTF-8 text when it is valid UTF-8 and base64 otherwise, truncated to the size limit for
//! oversized inputs, and withheld entirely for resources whose content logging is off: their
//! content must not be at rest anywhere, dead-letter files included.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
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

/// The raw input as kept in a dead letter. Its `Debug` output shows only the size.
#[derive(Clone, Serialize)]
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

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Self::Base64(b) => write!(f, "Base64({} chars)", b.len()),
            Self::Withheld(why) => write!(f, "Withheld({why})"),
        }
    }
}

impl Payload {
    /// Keeps `raw` as text or base64.
    pub fn from_bytes(raw: &[u8]) -> Self {
        match std::str::from_utf8(raw) {
            Ok(s) => Self::Text(s.to_owned()),
            Err(_) => Self::Base64(base64::engine::general_purpose::STANDARD.encode(raw)),
        }
    }

    /// The raw bytes kept, or `None` when the payload was withheld.
    pub fn bytes(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            Self::Text(text) => Some(text.as_bytes().into()),
            Self::Base64(encoded) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .expect("encoded by from_bytes")
                    .into(),
            ),
            Self::Withheld(_) => None,
        }
    }

    /// Why the payload was withheld, if it was.
    pub fn withheld(&self) -> Option<&'static str> {
        match self {
            Self::Withheld(why) => Some(why),
            _ => None,
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
/// rejected input that belongs to one keeps no payload. Which resource an input belongs to is
/// read from its `resource_id`: by decoding it when it is valid JSON, by a tolerant scan for
/// the key when it is not, and, as a backstop, by searching the bytes for any such resource's
/// ID as a JSON string. When the input was cut short (oversized) and names no resource in the
/// part that was kept, the ID may be in the part that was not: the payload is withheld too.
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

    /// The payload to keep for the rejected input `raw`; `truncated` when `raw` is only the
    /// beginning of the input.
    pub fn payload(&self, raw: &[u8], truncated: bool) -> Payload {
        if self.not_logged.is_empty() {
            return Payload::from_bytes(raw);
        }
        let named = ResourceIds::of(raw);
        let quiet = named.ids.iter().any(|id| self.not_logged.contains(id))
            || self
                .needles
                .iter()
                .any(|n| memchr::memmem::find(raw, n).is_some());
        if quiet {
            Payload::content_logging_off()
        } else if truncated && (named.ids.is_empty() || named.cut_off) {
            Payload::Withheld("resource_not_identified")
        } else {
            Payload::from_bytes(raw)
        }
    }
}

/// Every `resource_id` an input names, read even from broken JSON.
struct ResourceIds {
    ids: Vec<String>,
    /// Whether a `resource_id` value runs past the end of the input.
    cut_off: bool,
}

impl ResourceIds {
    fn of(raw: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct ResourceOnly {
            resource_id: Option<String>,
        }
        if let Ok(decoded) = serde_json::from_slice::<ResourceOnly>(raw) {
            return Self {
                ids: decoded.resource_id.into_iter().collect(),
                cut_off: false,
            };
        }
        // Not a valid object with one string `resource_id`: scan for every occurrence of
        // the key (nested, repeated, or in a line cut short) and read each string value.
        const KEY: &[u8] = b"\"resource_id\"";
        let mut found = Self {
            ids: Vec::new(),
            cut_off: false,
        };
        let mut from = 0;
        while let Some(at) = memchr::memmem::find(&raw[from..], KEY) {
            from += at + KEY.len();
            let rest = &raw[from..];
            let skip_ws = |i: usize| {
                i + rest[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count()
            };
            let colon = skip_ws(0);
            if rest.get(colon) != Some(&b':') {
                found.cut_off |= colon >= rest.len();
                continue;
            }
            let start = skip_ws(colon + 1);
            if rest.get(start) != Some(&b'"') {
                found.cut_off |= start >= rest.len();
                continue;
            }
            let mut end = start + 1;
            let closed = loop {
                match rest.get(end) {
                    None => break false,
                    Some(b'\\') => end += 2,
                    Some(b'"') => break true,
                    Some(_) => end += 1,
                }
            };
            if !closed {
                found.cut_off = true;
                break;
            }
            if let Ok(id) = serde_json::from_slice::<String>(&rest[start..=end]) {
                found.ids.push(id);
            }
        }
        found
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
#[error("dead-letter destination {destination}: {error}")]
pub struct DeadLetterError {
    destination: String,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl DeadLetterError {
    /// An error of `destination`.
    pub fn new(
        destination: impl Into<String>,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            destination: destination.into(),
            error: error.into(),
        }
    }
}

/// A dead-letter destination: a file ([`DeadLetterWriter`]) or a topic.
pub trait DeadLetterSink {
    /// Where the dead letters go, for the run summary.
    fn destination(&self) -> String;
    /// Hands dead letters on, in order.
    fn write_all(&mut self, letters: &[DeadLetter]) -> Result<(), DeadLetterError>;
    /// Returns once everything handed on is durable at the destination.
    fn flush(&mut self) -> Result<(), DeadLetterError>;
}

/// Appends dead letters to a JSON-lines file, created (with its directory, mode 0600) on
/// first use.
///
/// Each call appends whole lines with a single write to a file opened for appending, so a
/// crash leaves at most one torn line at the end; opening the file again ends such a line
/// before anything new is appended, so later dead letters stay readable.
pub struct DeadLetterWriter {
    path: PathBuf,
    file: Option<File>,
}

impl DeadLetterWriter {
    /// A writer for `path`; nothing is created until the first dead letter.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            file: None,
        }
    }

    fn err(&self, source: io::Error) -> DeadLetterError {
        DeadLetterError::new(format!("file {}", self.path.display()), source)
    }

    fn open(&self) -> io::Result<File> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        // Dead letters hold raw payloads: readable by vigil's user only.
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(file)
    }
}

impl DeadLetterSink for DeadLetterWriter {
    fn destination(&self) -> String {
        self.path.display().to_string()
    }

    /// Appends dead letters, one JSON line each, in one write.
    fn write_all(&mut self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(letters.len() * 256);
        for letter in letters {
            serde_json::to_writer(&mut lines, letter).map_err(|e| self.err(e.into()))?;
            lines.push(b'\n');
        }
        if self.file.is_none() {
            self.file = Some(self.open().map_err(|e| self.err(e))?);
        }
        let file = self.file.as_mut().expect("opened above");
        let written = file.write_all(&lines);
        written.map_err(|e| self.err(e))
    }

    /// Syncs what was written to disk.
    fn flush(&mut self) -> Result<(), DeadLetterError> {
        if let Some(file) = &self.file {
            file.sync_data().map_err(|e| self.err(e))?;
        }
        Ok(())
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
        let withheld = |raw: &[u8]| matches!(policy.payload(raw, false), Payload::Withheld(_));
        assert!(withheld(
            br#"{"resource_id":"quiet","timestamp":"bad","prompt":"p"}"#
        ));
        assert!(withheld(br#"{"resource_id":"quie\u0074","prompt":"p"}"#));
        assert!(withheld(
            br#"{"resource_id":"quiet","prompt":"unterminated"#
        ));
        // Broken JSON with an escaped ID: the tolerant scan still reads it.
        assert!(withheld(
            br#"{"resource_id" : "quie\u0074","prompt":"cut off"#
        ));
        assert!(!withheld(br#"{"resource_id":"loud","prompt":"p"}"#));
        assert!(!withheld(br#"{"resource_id":"quieter","prompt":"p"}"#));
        assert!(!withheld(br#"{"prompt":"no resource at all"}"#));
        // A repeated key (so not decodable) naming a logged resource first.
        assert!(withheld(
            br#"{"resource_id":"loud","prompt":"p","resource_id":"quie\u0074"}"#
        ));
        assert!(withheld(
            br#"{"meta":{"resource_id":"loud"},"resource_id":"quie\u0074","prompt":"p""#
        ));
        assert!(!withheld(br#"{"resource_id":"loud","prompt":"p\"#));
        // Cut short before any resource ID: it may be in the part not kept.
        let cut = |raw: &[u8]| policy.payload(raw, true);
        assert!(matches!(
            cut(br#"{"prompt":"long..."#),
            Payload::Withheld("resource_not_identified")
        ));
        assert!(matches!(
            cut(br#"{"resource_id":"loud","prompt":"long..."#),
            Payload::Text(_)
        ));
        assert!(matches!(
            cut(br#"{"resource_id":"loud","prompt":"long","resource_id":"qu"#),
            Payload::Withheld("resource_not_identified")
        ));
        assert!(matches!(
            cut(br#"{"resource_id":"quiet","prompt":"long..."#),
            Payload::Withheld("content_logging_off")
        ));
        assert!(!format!("{:?}", Payload::from_bytes(b"SECRET")).contains("SECRET"));
    }

    #[test]
    fn writes_one_json_line_per_letter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dl.jsonl");
        // A torn last line from an earlier crash.
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "{\"reason\":{\"co").unwrap();
        let mut w = DeadLetterWriter::new(&path);
        let pos = SourcePosition::File {
            file: "in.jsonl".into(),
            line: 7,
        };
        let reason = RejectReason::UnknownResource;
        w.write_all(&[
            DeadLetter::new(&reason, pos.clone(), Payload::from_bytes(b"{\"a\":1}"))
                .with_ids("r1", "x"),
        ])
        .unwrap();
        w.write_all(&[DeadLetter::new(
            &RejectReason::InvalidUtf8 { valid_up_to: 0 },
            pos,
            Payload::from_bytes(b"\xff"),
        )])
        .unwrap();
        w.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let mut text_lines = text.lines();
        assert_eq!(
            text_lines.next(),
            Some("{\"reason\":{\"co"),
            "the torn line is ended"
        );
        let lines: Vec<serde_json::Value> = text_lines
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
