//! The log record: one prompt/completion exchange as the model host reports it.
//!
//! Decoding has a fast path and a slow one. The fast path deserialises straight into borrowed
//! fields and validates them. Only when that fails does [`LogRecord::from_json`] parse the
//! input again as a generic JSON value to find out *which* field is wrong and how, so that
//! the error can name it without ever quoting the value (serde's own messages quote values,
//! and a value may be someone's prompt). The JSON Schema in `schema/log-record.schema.json`
//! describes the same rules; a test keeps the two in step.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::ids::{Geography, IdError, RequestId, ResourceId};

/// How a model deployment is placed: processed in its own region, anywhere, or within a data
/// zone. Whatever the deployment, data is stored in the resource's home geography.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deployment {
    /// Processed in the resource's own region.
    Standard,
    /// Processed in any region worldwide.
    Global,
    /// Processed anywhere within the resource's data zone.
    Datazone,
}

/// The kind of model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Chat completions.
    Chat,
    /// Text completions.
    Completion,
    /// Embeddings.
    Embedding,
    /// Image generation.
    Image,
}

impl Deployment {
    const NAMES: &'static str = "standard, global, datazone";

    fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(Self::Standard),
            "global" => Some(Self::Global),
            "datazone" => Some(Self::Datazone),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Global => "global",
            Self::Datazone => "datazone",
        }
    }
}

impl Operation {
    const NAMES: &'static str = "chat, completion, embedding, image";

    fn parse(s: &str) -> Option<Self> {
        match s {
            "chat" => Some(Self::Chat),
            "completion" => Some(Self::Completion),
            "embedding" => Some(Self::Embedding),
            "image" => Some(Self::Image),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completion => "completion",
            Self::Embedding => "embedding",
            Self::Image => "image",
        }
    }
}

/// Everything about an exchange except its text: IDs, placement, time, model.
///
/// Metadata may be kept even for resources whose content logging is off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Unique ID of the exchange.
    pub request_id: RequestId,
    /// The customer resource it belongs to.
    pub resource_id: ResourceId,
    /// The geography where the resource's data must be stored.
    pub geography: Geography,
    /// How the deployment that served it is placed.
    pub deployment: Deployment,
    /// The region that processed it, when reported.
    pub processed_in: Option<String>,
    /// When it happened, in UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The kind of call.
    pub operation: Operation,
    /// The model that served it.
    pub model: String,
    /// The customer's opaque end-user ID, when reported.
    pub end_user: Option<String>,
}

/// The text of an exchange. Its `Debug` output shows only lengths, so it is safe to log a
/// structure that holds it by accident.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The prompt, when present.
    pub prompt: Option<String>,
    /// The completion, when present.
    pub completion: Option<String>,
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Content")
            .field("prompt_len", &self.prompt.as_ref().map(String::len))
            .field("completion_len", &self.completion.as_ref().map(String::len))
            .finish()
    }
}

/// A validated log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// IDs, placement, time and model.
    pub meta: RecordMeta,
    /// Prompt and completion.
    pub content: Content,
}

/// What is wrong with one field. Never carries the field's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// A required field is absent or null.
    #[error("is required")]
    Missing,
    /// The field has the wrong JSON type.
    #[error("must be {expected}")]
    WrongType {
        /// The JSON type it must have.
        expected: &'static str,
    },
    /// An identifier that breaks its grammar.
    #[error("{0}")]
    Identifier(#[from] IdError),
    /// Free text that is empty, too long, or holds control characters.
    #[error("must be 1-{max} characters without control characters")]
    BadText {
        /// The longest allowed.
        max: usize,
    },
    /// Not one of the allowed names.
    #[error("must be one of: {allowed}")]
    NotOneOf {
        /// The allowed names.
        allowed: &'static str,
    },
    /// Not an RFC 3339 date-time.
    #[error("must be an RFC 3339 date-time such as 2026-11-23T10:00:00Z")]
    NotRfc3339,
    /// The field appears twice in the object.
    #[error("appears more than once")]
    Duplicate,
}

/// Why bytes are not a valid log record. Never carries content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not JSON.
    #[error("malformed JSON: {problem} at column {column}")]
    MalformedJson {
        /// What the parser saw (syntax error, unexpected end, ...), without input text.
        problem: &'static str,
        /// The 1-based column where it saw it.
        column: usize,
    },
    /// The JSON is not an object.
    #[error("record must be a JSON object")]
    NotAnObject,
    /// One field is missing or invalid.
    #[error("field `{field}` {problem}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
}

impl RecordError {
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    /// A stable code for counting: `malformed_json`, `missing_field` or `invalid_field`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson { .. } | Self::NotAnObject => "malformed_json",
            Self::Field {
                problem: FieldProblem::Missing,
                ..
            } => "missing_field",
            Self::Field { .. } => "invalid_field",
        }
    }
}

fn field(field: &'static str, problem: impl Into<FieldProblem>) -> RecordError {
    RecordError::Field {
        field,
        problem: problem.into(),
    }
}

/// The record's fields as they arrive, borrowed from the input where possible.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    resource_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    geography: Option<Cow<'a, str>>,
    #[serde(borrow)]
    deployment: Option<Cow<'a, str>>,
    #[serde(borrow)]
    processed_in: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    end_user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    prompt: Option<Cow<'a, str>>,
    #[serde(borrow)]
    completion: Option<Cow<'a, str>>,
}

/// The record's field names, in schema order. Every one of them is a string or null.
pub const FIELDS: [&str; 11] = [
    "request_id",
    "resource_id",
    "geography",
    "deployment",
    "processed_in",
    "timestamp",
    "operation",
    "model",
    "end_user",
    "prompt",
    "completion",
];

/// The fields a record must carry.
pub const REQUIRED_FIELDS: [&str; 7] = [
    "request_id",
    "resource_id",
    "geography",
    "deployment",
    "timestamp",
    "operation",
    "model",
];

const MODEL_MAX: usize = 128;
const END_USER_MAX: usize = 256;
const REGION_MAX: usize = 64;

fn required<'a>(name: &'static str, v: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, RecordError> {
    v.ok_or_else(|| field(name, FieldProblem::Missing))
}

/// Whether `end_user` is acceptable as a record's (or a flag's) end-user identifier.
pub(crate) fn is_valid_end_user(end_user: &str) -> bool {
    is_short_text(end_user, END_USER_MAX)
}

fn is_short_text(v: &str, max: usize) -> bool {
    !v.is_empty() && v.chars().count() <= max && !v.chars().any(char::is_control)
}

fn text(name: &'static str, v: Cow<'_, str>, max: usize) -> Result<String, RecordError> {
    if is_short_text(&v, max) {
        Ok(v.into_owned())
    } else {
        Err(field(name, FieldProblem::BadText { max }))
    }
}

fn identifier<T>(
    name: &'static str,
    v: Cow<'_, str>,
    parse: fn(String) -> Result<T, IdError>,
) -> Result<T, RecordError> {
    parse(v.into_owned()).map_err(|e| field(name, e))
}

impl<'a> Wire<'a> {
    fn validate(self) -> Result<LogRecord, RecordError> {
        let request_id = identifier(
            "request_id",
            required("request_id", self.request_id)?,
            RequestId::parse,
        )?;
        let resource_id = identifier(
            "resource_id",
            required("resource_id", self.resource_id)?,
            ResourceId::parse,
        )?;
        let geography = identifier(
            "geography",
            required("geography", self.geography)?,
            Geography::parse,
        )?;
        let deployment =
            Deployment::parse(&required("deployment", self.deployment)?).ok_or(field(
                "deployment",
                FieldProblem::NotOneOf {
                    allowed: Deployment::NAMES,
                },
            ))?;
        let processed_in = self
            .processed_in
            .map(|v| {
                let ok = !v.is_empty()
                    && v.len() <= REGION_MAX
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                if ok {
                    Ok(v.into_owned())
                } else {
                    Err(field(
                        "processed_in",
                        IdError::BadCharacter {
                            allowed: "1-64 characters of A-Z a-z 0-9 . _ -",
                        },
                    ))
                }
            })
            .transpose()?;
        let timestamp = OffsetDateTime::parse(&required("timestamp", self.timestamp)?, &Rfc3339)
            .map_err(|_| field("timestamp", FieldProblem::NotRfc3339))?
            .to_offset(time::UtcOffset::UTC);
        let operation = Operation::parse(&required("operation", self.operation)?).ok_or(field(
            "operation",
            FieldProblem::NotOneOf {
                allowed: Operation::NAMES,
            },
        ))?;
        let model = text("model", required("model", self.model)?, MODEL_MAX)?;
        let end_user = self
            .end_user
            .map(|v| text("end_user", v, END_USER_MAX))
            .transpose()?;
        Ok(LogRecord {
            meta: RecordMeta {
                request_id,
                resource_id,
                geography,
                deployment,
                processed_in,
                timestamp,
                operation,
                model,
                end_user,
            },
            content: Content {
                prompt: self.prompt.map(Cow::into_owned),
                completion: self.completion.map(Cow::into_owned),
            },
        })
    }
}

impl LogRecord {
    /// Decodes and validates one record from JSON text. Unknown fields are ignored; a JSON
    /// `null` counts as absent.
    pub fn from_json(json: &str) -> Result<Self, RecordError> {
        match serde_json::from_str::<Wire<'_>>(json) {
            Ok(wire) => wire.validate(),
            Err(fast_err) => Err(diagnose(json, &fast_err)),
        }
    }

    /// Encodes the record back to its wire JSON (used by the sample generator and tests).
    pub fn to_json(&self) -> String {
        let m = &self.meta;
        let mut obj = serde_json::Map::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                obj.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
            }
        };
        put("request_id", Some(m.request_id.as_str()));
        put("resource_id", Some(m.resource_id.as_str()));
        put("geography", Some(m.geography.as_str()));
        put("deployment", Some(m.deployment.as_str()));
        put("processed_in", m.processed_in.as_deref());
        let ts = m
            .timestamp
            .format(&Rfc3339)
            .expect("a UTC OffsetDateTime always formats as RFC 3339");
        put("timestamp", Some(&ts));
        put("operation", Some(m.operation.as_str()));
        put("model", Some(&m.model));
        put("end_user", m.end_user.as_deref());
        put("prompt", self.content.prompt.as_deref());
        put("completion", self.content.completion.as_deref());
        serde_json::Value::Object(obj).to_string()
    }
}

/// The slow path: explains why the fast path failed without quoting the input.
fn diagnose(json: &str, fast_err: &serde_json::Error) -> RecordError {
    let value: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            let problem = match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                _ => "syntax error",
            };
            return RecordError::MalformedJson {
                problem,
                column: e.column(),
            };
        }
    };
    let Some(obj) = value.as_object() else {
        return RecordError::NotAnObject;
    };
    for name in FIELDS {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::String(_)) => {}
            Some(_) => {
                return field(
                    name,
                    FieldProblem::WrongType {
                        expected: "a string",
                    },
                )
            }
        }
    }
    // Every field has an acceptable type, yet the typed parse failed: the remaining cause is a
    // repeated key, which a generic JSON value silently collapses. serde names the key in
    // backticks; match it against the known field names rather than echoing the message.
    let msg = fast_err.to_string();
    FIELDS
        .into_iter()
        .find(|name| msg.contains(&format!("duplicate field `{name}`")))
        .map(|name| field(name, FieldProblem::Duplicate))
        .unwrap_or(RecordError::MalformedJson {
            problem: "unexpected structure",
            column: fast_err.column(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"request_id":"r-1","resource_id":"res-a","geography":"eu","deployment":"global","processed_in":"swedencentral","timestamp":"2026-11-20T10:00:00+01:00","operation":"chat","model":"gpt-4o","end_user":"u-9","prompt":"hello","completion":"hi","extra":{"ignored":true}}"#;

    fn with(field_json: &str) -> String {
        // Replace the model field, which is required and last among the metadata.
        GOOD.replace(r#""model":"gpt-4o""#, field_json)
    }

    #[test]
    fn decodes_a_good_record_and_ignores_unknown_fields() {
        let rec = LogRecord::from_json(GOOD).unwrap();
        assert_eq!(rec.meta.request_id.as_str(), "r-1");
        assert_eq!(rec.meta.deployment, Deployment::Global);
        assert_eq!(rec.meta.timestamp.offset(), time::UtcOffset::UTC);
        assert_eq!(rec.meta.timestamp.hour(), 9);
        assert_eq!(rec.content.prompt.as_deref(), Some("hello"));
    }

    #[test]
    fn round_trips_through_json() {
        let rec = LogRecord::from_json(GOOD).unwrap();
        assert_eq!(LogRecord::from_json(&rec.to_json()).unwrap(), rec);
    }

    #[test]
    fn prompt_and_completion_are_optional_and_null_is_absent() {
        let json = GOOD
            .replace(r#""prompt":"hello""#, r#""prompt":null"#)
            .replace(r#","completion":"hi""#, "");
        let rec = LogRecord::from_json(&json).unwrap();
        assert_eq!(rec.content, Content::default());
    }

    #[test]
    fn names_the_missing_field() {
        let err = LogRecord::from_json(&with(r#""x":1"#)).unwrap_err();
        assert_eq!(err, field("model", FieldProblem::Missing));
        assert_eq!(err.code(), "missing_field");
        assert_eq!(err.to_string(), "field `model` is required");
    }

    #[test]
    fn names_the_wrong_type_without_echoing_the_value() {
        let err =
            LogRecord::from_json(&GOOD.replace(r#""prompt":"hello""#, r#""prompt":["SECRET"]"#))
                .unwrap_err();
        assert_eq!(err.to_string(), "field `prompt` must be a string");
        assert!(!format!("{err:?}").contains("SECRET"));
    }

    #[test]
    fn rejects_bad_values_by_field() {
        let cases = [
            (r#""model":"""#, "model"),
            (r#""model":"a\u0007b""#, "model"),
            (r#""model":"m","timestamp":"yesterday""#, "timestamp"),
            (r#""model":"m","operation":"dance""#, "operation"),
            (r#""model":"m","deployment":"local""#, "deployment"),
            (r#""model":"m","request_id":"a b""#, "request_id"),
            (r#""model":"m","geography":"EU""#, "geography"),
            (
                r#""model":"m","processed_in":"west europe""#,
                "processed_in",
            ),
        ];
        for (json, name) in cases {
            // Later keys would be duplicates; build each case from a record without that key.
            let base = if json.contains(',') {
                let key = json.split(',').nth(1).unwrap().split(':').next().unwrap();
                let mut obj: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(GOOD).unwrap();
                obj.remove(key.trim_matches('"'));
                serde_json::Value::Object(obj)
                    .to_string()
                    .replace(r#""model":"gpt-4o""#, json)
            } else {
                with(json)
            };
            let err = LogRecord::from_json(&base).unwrap_err();
            assert_eq!(err.field(), Some(name), "{json}: {err}");
            assert_eq!(err.code(), "invalid_field");
        }
    }

    #[test]
    fn reports_duplicate_keys() {
        let err = LogRecord::from_json(&with(r#""model":"a","model":"b""#)).unwrap_err();
        assert_eq!(err, field("model", FieldProblem::Duplicate));
    }

    #[test]
    fn malformed_json_reports_position_only() {
        let err = LogRecord::from_json(r#"{"prompt": "SECRET"#).unwrap_err();
        assert_eq!(err.code(), "malformed_json");
        assert!(!err.to_string().contains("SECRET"));
        assert_eq!(
            LogRecord::from_json("[1,2]").unwrap_err(),
            RecordError::NotAnObject
        );
    }

    #[test]
    fn content_debug_shows_lengths_only() {
        let c = Content {
            prompt: Some("SECRET".into()),
            completion: None,
        };
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
