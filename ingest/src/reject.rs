//! Why an input was rejected: one reason per dead letter, with a stable code for counting.

use std::fmt;

use vigil_core::{Geography, RecordError};

/// Why an input did not become a stored record. Messages name the field and the problem and
/// never quote input text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The line is not valid UTF-8.
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        valid_up_to: usize,
    },
    /// The line is longer than the configured limit.
    Oversized {
        /// Its length in bytes.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// Malformed JSON, or a missing or invalid field.
    Record(RecordError),
    /// The resource ID is not in the registry.
    UnknownResource,
    /// The record's geography differs from its resource's home geography.
    ResidencyMismatch {
        /// The geography the record claims.
        claimed: Geography,
        /// The resource's home geography.
        home: Geography,
    },
    /// The record arrived on the topic of one geography, but its resource's home is another.
    WrongTopic {
        /// The geography whose topic it arrived on.
        topic: Geography,
        /// The resource's home geography.
        home: Geography,
    },
    /// The resource's customer-managed key cannot be used, so its content cannot be stored.
    KeyUnavailable,
    /// The request ID is already stored for a different resource.
    RequestIdConflict,
}

impl RejectReason {
    /// A stable code for counting and alerting.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::Oversized { .. } => "oversized",
            Self::Record(e) => e.code(),
            Self::UnknownResource => "unknown_resource",
            Self::ResidencyMismatch { .. } => "residency_mismatch",
            Self::WrongTopic { .. } => "wrong_topic",
            Self::KeyUnavailable => "key_unavailable",
            Self::RequestIdConflict => "request_id_conflict",
        }
    }

    /// The field the reason is about, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidUtf8 { .. } | Self::Oversized { .. } | Self::WrongTopic { .. } => None,
            Self::Record(e) => e.field(),
            Self::UnknownResource | Self::KeyUnavailable => Some("resource_id"),
            Self::ResidencyMismatch { .. } => Some("geography"),
            Self::RequestIdConflict => Some("request_id"),
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUtf8 { valid_up_to } => {
                write!(
                    f,
                    "line is not valid UTF-8 (first bad byte at offset {valid_up_to})"
                )
            }
            Self::Oversized { len, limit } => {
                write!(f, "record is {len} bytes, over the {limit}-byte limit")
            }
            Self::Record(e) => e.fmt(f),
            Self::UnknownResource => {
                f.write_str("field `resource_id` names no registered resource")
            }
            Self::ResidencyMismatch { claimed, home } => write!(
                f,
                "field `geography` is `{claimed}` but the resource's home geography is `{home}`; \
                 a record is only stored in its resource's home geography"
            ),
            Self::WrongTopic { topic, home } => write!(
                f,
                "arrived on the topic of geography `{topic}` but field `resource_id` names a \
                 resource whose home geography is `{home}`; a record is only accepted from its \
                 home geography's topic"
            ),
            Self::KeyUnavailable => f.write_str(
                "field `resource_id` names a resource whose customer-managed key is unavailable, \
                 so its content cannot be encrypted",
            ),
            Self::RequestIdConflict => {
                f.write_str("field `request_id` is already stored for a different resource")
            }
        }
    }
}

impl From<RecordError> for RejectReason {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}
