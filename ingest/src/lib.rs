//! vigil's ingest side: where records come from and what happens to the ones that cannot go on.
//!
//! Input arrives as lines of bytes with a [`SourcePosition`]. Each line is decoded
//! ([`decode`]), validated against the record schema, and routed ([`Router`]) to the home
//! geography of its resource. Anything that fails becomes a [`RejectReason`], and the pipeline
//! writes one [`DeadLetter`] for it.
//!
//! Architecture invariant: a rejected input's raw bytes go only into its dead letter, never
//! into a log line, a metric or an error message; reasons name the field and the problem. And a
//! dead letter for a resource whose content logging is off carries no payload at all, nor does
//! one whose resource cannot be told for certain while any such resource exists.

pub mod dead_letter;
pub mod decode;
pub mod reject;
pub mod route;
pub mod source;

pub use dead_letter::{
    DeadLetter, DeadLetterError, DeadLetterSink, DeadLetterWriter, Payload, PayloadPolicy,
};
pub use decode::decode;
pub use reject::RejectReason;
pub use route::Router;
pub use source::{Line, LineReader, SourcePosition};

/// Settings for ingest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest accepted record, in bytes; a longer line is rejected as oversized.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// The dead-letter destination: a JSON-lines file that rejected inputs are appended to.
    #[serde(default = "default_dead_letters")]
    pub dead_letters: std::path::PathBuf,
}

const fn default_max_record_bytes() -> usize {
    1024 * 1024
}

fn default_dead_letters() -> std::path::PathBuf {
    "var/dead-letters.jsonl".into()
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_record_bytes: default_max_record_bytes(),
            dead_letters: default_dead_letters(),
        }
    }
}
