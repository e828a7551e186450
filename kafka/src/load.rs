//! `vigil produce`: a JSON-lines file onto the log topics, for loading data, demos and
//! benchmarks.
//!
//! Each line goes to the log topic of the geography its `geography` field names, keyed by its
//! `resource_id`, byte for byte: the loader does not validate records (the consumer does, and
//! dead-letters what is wrong), so a file with bad lines exercises the whole path. A line whose
//! geography cannot be read goes to the `unrouted` geography's topic when one is given, and is
//! skipped (and counted) otherwise.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Instant;

use rdkafka::producer::BaseRecord;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vigil_core::Geography;
use vigil_ingest::{Line, LineReader};

use crate::producer::{flush, producer, send};
use crate::{KafkaConfig, KafkaError, KnownTopics};

/// What a load sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadSummary {
    /// Messages sent and acknowledged, per topic.
    pub sent: BTreeMap<String, u64>,
    /// Lines skipped because no geography could be read from them.
    pub unrouted: u64,
    /// Lines skipped because they are over the producer's message size limit.
    pub too_large: u64,
    /// Wall-clock time, seconds.
    pub elapsed_secs: f64,
    /// Messages per second.
    pub messages_per_sec: f64,
}

/// The routing fields of a line, read leniently.
#[derive(Deserialize)]
struct Routing<'a> {
    #[serde(borrow)]
    geography: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    resource_id: Option<std::borrow::Cow<'a, str>>,
}

/// How often `load` reports how many messages it has sent.
pub const LOAD_PROGRESS_EVERY: u64 = 1024;

/// Sends every line of `input` (named `name`) to its geography's log topic, calling `sent`
/// with the number of messages sent so far every [`LOAD_PROGRESS_EVERY`] messages.
pub fn load(
    config: &KafkaConfig,
    input: impl BufRead,
    name: &str,
    unrouted: Option<&Geography>,
    sent: &dyn Fn(u64),
) -> Result<LoadSummary, KafkaError> {
    config.validate()?;
    let started = Instant::now();
    let producer = producer(config)?;
    let topics = config.log_topics();
    let mut known = KnownTopics::default();
    let mut summary = LoadSummary::default();
    let mut total: u64 = 0;
    let mut reader = LineReader::new(input, name, config.max_message_bytes as usize);
    let read_failed = |error| KafkaError::Io {
        path: name.to_owned(),
        error,
    };
    while let Some((line, position)) = reader.next_line().map_err(read_failed)? {
        let raw = match line {
            Line::Complete(raw) => raw,
            Line::Oversized { len, .. } => {
                warn!(%position, len, limit = config.max_message_bytes, "Skipping a line over the message size limit.");
                summary.too_large += 1;
                continue;
            }
        };
        let routing = serde_json::from_slice::<Routing<'_>>(&raw).ok();
        let geography = routing
            .as_ref()
            .and_then(|r| r.geography.as_deref())
            .and_then(|g| Geography::parse(g).ok());
        let Some(geography) = geography.as_ref().or(unrouted) else {
            warn!(%position, "Skipping a line whose geography cannot be read.");
            summary.unrouted += 1;
            continue;
        };
        let topic = topics.of(geography);
        known.ensure(config, &topic)?;
        let key = routing.as_ref().and_then(|r| r.resource_id.as_deref());
        let mut record = BaseRecord::to(&topic).payload(raw.as_slice());
        if let Some(key) = key {
            record = record.key(key.as_bytes());
        }
        send(&producer, record).map_err(KafkaError::client("producing"))?;
        *summary.sent.entry(topic).or_default() += 1;
        total += 1;
        if total.is_multiple_of(LOAD_PROGRESS_EVERY) {
            sent(total);
        }
    }
    flush(&producer).map_err(KafkaError::Delivery)?;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    sent(total);
    summary.messages_per_sec = total as f64 / summary.elapsed_secs.max(1e-9);
    info!(messages = total, "Load finished.");
    Ok(summary)
}
