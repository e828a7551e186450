//! The dead-letter topic: each rejected input as one message, its value the raw payload (so
//! it can be repaired and replayed) and its headers the reason and the source position.
//!
//! Headers (all UTF-8 strings): `vigil.reason` (the reason code), `vigil.field` (when the
//! reason concerns one), `vigil.message`, `vigil.rejected_at` (RFC 3339), `vigil.request_id`
//! and `vigil.resource_id` (when they could be read), then either `vigil.source.topic`,
//! `vigil.source.partition` and `vigil.source.offset`, or `vigil.source.file` and
//! `vigil.source.line`. When the payload was withheld (the resource's content logging is off)
//! the value is empty and `vigil.payload_withheld` says why. The key is the resource ID when
//! known.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord};
use time::format_description::well_known::Rfc3339;
use vigil_ingest::{DeadLetter, DeadLetterError, DeadLetterSink, SourcePosition};

use crate::producer::{flush, producer, send, DeliveryContext};
use crate::{KafkaConfig, KafkaError};

/// Prefix of every header vigil writes.
pub const HEADER_PREFIX: &str = "vigil.";

/// Dead letters to a Kafka topic.
pub struct DeadLetterTopic {
    producer: BaseProducer<DeliveryContext>,
    topic: String,
}

impl DeadLetterTopic {
    /// A sink producing to the configured dead-letter topic (created if missing and
    /// configured to).
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        crate::ensure_topics(config, std::slice::from_ref(&config.dead_letter_topic))?;
        Ok(Self {
            producer: producer(config)?,
            topic: config.dead_letter_topic.clone(),
        })
    }

    fn error(&self, message: impl Into<String>) -> DeadLetterError {
        DeadLetterError::new(self.destination(), message.into())
    }
}

/// The headers of one dead letter.
fn headers(letter: &DeadLetter) -> OwnedHeaders {
    let mut pairs: Vec<(&str, String)> = vec![
        ("reason", letter.reason.code.to_owned()),
        ("message", letter.reason.message.clone()),
    ];
    if let Some(field) = letter.reason.field {
        pairs.push(("field", field.to_owned()));
    }
    if let Ok(at) = letter.rejected_at.format(&Rfc3339) {
        pairs.push(("rejected_at", at));
    }
    if let Some(id) = &letter.request_id {
        pairs.push(("request_id", id.clone()));
    }
    if let Some(id) = &letter.resource_id {
        pairs.push(("resource_id", id.clone()));
    }
    match &letter.source {
        SourcePosition::Kafka {
            topic,
            partition,
            offset,
        } => {
            pairs.push(("source.topic", topic.to_string()));
            pairs.push(("source.partition", partition.to_string()));
            pairs.push(("source.offset", offset.to_string()));
        }
        SourcePosition::File { file, line } => {
            pairs.push(("source.file", file.to_string()));
            pairs.push(("source.line", line.to_string()));
        }
    }
    if let Some(why) = letter.payload.withheld() {
        pairs.push(("payload_withheld", why.to_owned()));
    }
    pairs
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key: &format!("{HEADER_PREFIX}{key}"),
                value: Some(value.as_bytes()),
            })
        })
}

impl DeadLetterSink for DeadLetterTopic {
    fn destination(&self) -> String {
        format!("kafka topic {}", self.topic)
    }

    fn write_all(&mut self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        for letter in letters {
            let payload = letter.payload.bytes();
            let mut record = BaseRecord::to(&self.topic).headers(headers(letter));
            if let Some(payload) = payload.as_deref() {
                record = record.payload(payload);
            }
            if let Some(resource) = &letter.resource_id {
                record = record.key(resource.as_bytes());
            }
            send(&self.producer, record).map_err(|e| self.error(e.to_string()))?;
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeadLetterError> {
        flush(&self.producer).map_err(|e| self.error(e))
    }
}
