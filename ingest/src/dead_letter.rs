//! Dead letters: one JSON line per rejected input, appended to the configured destination.
//!
//! A dead letter carries the reason (code, field, message), the source position, the IDs when
//! they could be read, and the raw payload so an operator can repair and replay it. The payload
//! is UTF-8 text when it is valid UTF-8 and base64 otherwise, truncated to the size limit for
//! oversized inputs, and withheld entirely for resources whose content logging is off: their
//! content must not be at rest anywhere, dead-letter files included. While any resource logs no
//! content, so is the payload of an input whose resource cannot be told for certain (see
//! [`PayloadPolicy`]).

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
/// read from its top-level `resource_id` with the JSON parser records are decoded with, so
/// escapes in the key or the value read as they would in a record; as a backstop, the bytes are
/// also searched for any such resource's ID as a plain JSON string. The resource is certain
/// only when the input was read as JSON up to its end (or to where it was cut short) and has
/// exactly one top-level `resource_id` with a string value read in full, or is a whole JSON
/// value with none. Otherwise (a syntax error, an undecodable escape, a value cut short, a
/// repeated key, not an object, or cut short with no ID) it may belong to any resource, and
/// while any resource logs no content the payload is withheld.
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
        let quiet = named
            .ids
            .iter()
            .flatten()
            .any(|id| self.not_logged.contains(id))
            || self
                .needles
                .iter()
                .any(|n| memchr::memmem::find(raw, n).is_some());
        if quiet {
            Payload::content_logging_off()
        } else if !named.certain(truncated) {
            Payload::Withheld("resource_not_identified")
        } else {
            Payload::from_bytes(raw)
        }
    }
}

/// The top-level `resource_id`s of an input, read as far as it is JSON.
struct ResourceIds {
    /// One per top-level `resource_id` key, in order; `None` when its value is not a string
    /// that could be read in full.
    ids: Vec<Option<String>>,
    /// How far the input could be read.
    end: End,
}

/// Where reading an input as JSON stopped.
#[derive(Clone, Copy)]
enum End {
    /// At its end: it is one JSON value.
    Whole,
    /// At its end, in the middle of a value: it may have been cut short.
    CutShort,
    /// Before its end, at something that is not JSON, or not a JSON object.
    Broken,
}

impl ResourceIds {
    fn of(raw: &[u8]) -> Self {
        use serde::de::DeserializeSeed;
        let mut ids = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(raw);
        // The error is only classified: its message may quote the input.
        let end = match TopLevelIds(&mut ids)
            .deserialize(&mut de)
            .and_then(|()| de.end())
        {
            Ok(()) => End::Whole,
            Err(e) if e.is_eof() => End::CutShort,
            Err(_) => End::Broken,
        };
        Self { ids, end }
    }

    /// Whether the input certainly belongs to the resource it names, or to none;
    /// `truncated` when it is only the beginning of the input.
    fn certain(&self, truncated: bool) -> bool {
        match (self.ids.as_slice(), self.end) {
            ([Some(_)], End::Whole | End::CutShort) => true,
            ([], End::Whole) => !truncated,
            _ => false,
        }
    }
}

/// Reads a JSON object's `resource_id` values into the vector, even when the object turns out
/// to be broken after them, and skips everything else.
struct TopLevelIds<'a>(&'a mut Vec<Option<String>>);

impl<'de> serde::de::DeserializeSeed<'de> for TopLevelIds<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevelIds<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key != "resource_id" {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            match map.next_value() {
                Ok(id) => self.0.push(Some(id)),
                Err(e) => {
                    self.0.push(None);
                    return Err(e);
                }
            }
        }
        Ok(())
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
        // Broken JSON with an escaped ID: it is read as far as it is JSON.
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

    /// Marks the content of the test lines; must never be in a withheld dead letter.
    const MARKER: &str = "DL-MARKER-5e0c71";

    /// `quiet` and `team/quiet` log no content, `loud` does.
    fn registry() -> vigil_core::ResourceRegistry {
        let mut reg = vigil_core::ResourceRegistry::default();
        for (id, logging) in [("quiet", false), ("team/quiet", false), ("loud", true)] {
            let mut res = vigil_core::Resource::new(id.parse().unwrap(), "eu".parse().unwrap());
            res.content_logging = logging;
            reg.add(res).unwrap();
        }
        reg
    }

    /// The dead-letter file written for `raw` under the policy of `registry`.
    fn dead_letter_file(
        registry: &vigil_core::ResourceRegistry,
        raw: &[u8],
        truncated: bool,
    ) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let reason = RejectReason::Record(vigil_core::RecordError::MalformedJson {
            problem: "unexpected end of input",
            column: raw.len(),
        });
        let position = SourcePosition::File {
            file: "in.jsonl".into(),
            line: 1,
        };
        let payload = PayloadPolicy::new(registry).payload(raw, truncated);
        let mut writer = DeadLetterWriter::new(&path);
        writer
            .write_all(&[DeadLetter::new(&reason, position, payload)])
            .unwrap();
        fs::read(&path).unwrap()
    }

    /// Asserts that the dead letter of each line (`MARKER` standing for its content) keeps
    /// no content, withheld for `why`.
    fn assert_withheld(lines: &[&str], truncated: bool, why: &str) {
        let registry = registry();
        for line in lines {
            let line = line.replace("MARKER", MARKER);
            let file = dead_letter_file(&registry, line.as_bytes(), truncated);
            assert_eq!(
                memchr::memmem::find(&file, MARKER.as_bytes()),
                None,
                "content kept for {line}"
            );
            let letter: serde_json::Value = serde_json::from_slice(&file).unwrap();
            assert_eq!(letter["payload_withheld"], why, "{line}");
        }
    }

    /// Asserts that the dead letter of each line keeps it whole.
    fn assert_kept(registry: &vigil_core::ResourceRegistry, lines: &[&[u8]]) {
        for line in lines {
            let line = String::from_utf8_lossy(line).replace("MARKER", MARKER);
            let line = line.as_bytes();
            let payload = PayloadPolicy::new(registry).payload(line, false);
            assert_eq!(payload.bytes().as_deref(), Some(line), "{payload:?}");
            let file = dead_letter_file(registry, line, false);
            assert!(memchr::memmem::find(&file, MARKER.as_bytes()).is_some());
        }
    }

    #[test]
    fn an_escaped_resource_id_key_is_read() {
        assert_withheld(
            &[
                r#"{"resource\u005fid":"quiet","prompt":"MARKER"#,
                r#"{"resource\u005Fid" : "quiet", "prompt":"MARKER"} trailing"#,
            ],
            false,
            "content_logging_off",
        );
        // The value cut short: the record may be the quiet resource's.
        assert_withheld(
            &[
                r#"{"prompt":"MARKER","resource\u005fid":"qui"#,
                r#"{"prompt":"MARKER","\u0072esource_id":"quiet"#,
            ],
            false,
            "resource_not_identified",
        );
    }

    #[test]
    fn an_escaped_resource_id_value_is_read() {
        assert_withheld(
            &[
                r#"{"resource_id":"quie\u0074","prompt":"MARKER"#,
                r#"{"resource_id":"\u0071uiet","prompt":"MARKER"}}"#,
            ],
            false,
            "content_logging_off",
        );
        // Cut short inside the value, or inside an escape in it.
        assert_withheld(
            &[
                r#"{"prompt":"MARKER","resource_id":"quie\u0074"#,
                r#"{"prompt":"MARKER","resource_id":"quie\u00"#,
                r#"{"prompt":"MARKER","resource_id":"quie\"#,
            ],
            false,
            "resource_not_identified",
        );
    }

    #[test]
    fn escapes_in_both_key_and_value_are_read() {
        assert_withheld(
            &[
                r#"{"resource\u005fid":"quie\u0074","prompt":"MARKER"#,
                r#"{ "resource\u005fid" : "quie\u0074" , "prompt":"MARKER" "#,
                // Valid JSON naming a logged resource first, the quiet one second.
                r#"{"resource_id":"loud","resource\u005fid":"quie\u0074","prompt":"MARKER"}"#,
            ],
            false,
            "content_logging_off",
        );
    }

    #[test]
    fn a_resource_id_split_across_escapes_is_read() {
        assert_withheld(
            &[
                r#"{"r\u0065source_id":"q\u0075i\u0065t","prompt":"MARKER"#,
                r#"{"\u0072\u0065\u0073\u006f\u0075\u0072\u0063\u0065\u005f\u0069\u0064":"\u0071\u0075\u0069\u0065\u0074","prompt":"MARKER"#,
                r#"{"resource\u005fid":"te\u0061m\/q\u0075iet","prompt":"MARKER"#,
            ],
            false,
            "content_logging_off",
        );
    }

    #[test]
    fn surrogate_and_solidus_escapes_are_read() {
        assert_withheld(
            &[
                r#"{"resource\u005fid":"team\/quiet","prompt":"\ud83d\ude00 MARKER"#,
                r#"{"resource\u005fid":"team\u002Fquiet","prompt":"MARKER"#,
            ],
            false,
            "content_logging_off",
        );
        assert_withheld(
            &[
                // A lone surrogate cannot be decoded.
                r#"{"prompt":"MARKER","resource\u005fid":"\ud800quiet"}"#,
                // Keys that are not `resource_id`, in a line that does not name one.
                r#"{"resource_id\ud83d\ude00":"quie\u0074","prompt":"MARKER"#,
                r#"{"resource\/id":"loud","prompt":"MARKER"#,
            ],
            false,
            "resource_not_identified",
        );
    }

    #[test]
    fn inputs_whose_resource_is_uncertain_keep_no_content() {
        assert_withheld(
            &[
                // Cut short before any resource ID.
                r#"{"prompt":"MARKER"#,
                // Broken before an escaped second key.
                r#"{"resource_id":"loud","prompt":"MARKER" "resource\u005fid":"quie\u0074"}"#,
                // Not an object.
                r#"["r1","quie\u0074","eu","global","eastus","2026-11-20T10:00:00Z","chat","gpt-4o","u","MARKER","MARKER"]"#,
                r#"{"resource_id":7,"prompt":"MARKER"}"#,
            ],
            false,
            "resource_not_identified",
        );
        // Oversized: the ID may be in the part not kept, unless the kept part names one.
        assert_withheld(
            &[
                r#"{"prompt":"MARKER"}"#,
                r#"{"prompt":"MARKER","resource_id":"loud","resource_id":"q"#,
            ],
            true,
            "resource_not_identified",
        );
        assert_withheld(
            &[r#"{"resource\u005fid":"quie\u0074","prompt":"MARKER"#],
            true,
            "content_logging_off",
        );
    }

    #[test]
    fn inputs_whose_resource_is_certain_keep_their_payload() {
        let registry = registry();
        assert_kept(
            &registry,
            &[
                br#"{"resource\u005fid":"lou\u0064","prompt":"MARKER"#,
                br#"{"resource_id":"loud","prompt":"MARKER\"#,
                br#"{"request_id":"r","prompt":"MARKER"}"#,
                b"{\"request_id\":\"r\",\"prompt\":\"MARKER \xff\"}",
            ],
        );
        // With no resource that logs no content, nothing is withheld.
        let mut all_logged = vigil_core::ResourceRegistry::default();
        all_logged
            .add(vigil_core::Resource::new(
                "loud".parse().unwrap(),
                "eu".parse().unwrap(),
            ))
            .unwrap();
        assert_kept(&all_logged, &[br#"{"prompt":"MARKER"#]);
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
