//! vigil's Kafka edge, on rdkafka with its bundled librdkafka.
//!
//! - [`KafkaSource`]: the consumer-group source of `vigil run --kafka`. One log topic per
//!   geography, keyed by resource; offsets are committed only once the records they cover are
//!   durable in the stores, and in-flight work is drained and committed before a rebalance
//!   moves partitions away.
//! - [`DeadLetterTopic`]: rejected messages, with headers saying why and where they came from.
//! - [`FlagPublisher`] and [`FlagTail`]: flag events on each geography's flag topic.
//! - [`load`]: `vigil produce`, a JSON-lines file onto the log topics.
//! - [`directory`]: which member of the group owns which log partitions now, and where its
//!   API listens (`vigil nodes`).
//!
//! Architecture invariant: no log line, error or header written here contains message
//! payloads; the dead-letter topic's message value is the only place a rejected payload goes,
//! and it is empty when the payload was withheld.

pub mod changelog;
mod config;
mod consumer;
mod dead_letter;
pub mod directory;
mod flags;
mod load;
mod producer;
pub mod retirements;
mod takeover;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, error, info, warn};

pub use config::{KafkaConfig, Topics};
pub use consumer::{KafkaSource, SourceOptions};
pub use dead_letter::DeadLetterTopic;
pub use flags::{FlagPublisher, FlagTail};
pub use load::{load, LoadSummary, LOAD_PROGRESS_EVERY};

/// Errors of vigil's Kafka clients.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// vigil's Kafka settings are inconsistent.
    #[error("invalid Kafka settings: {0}")]
    Config(String),
    /// A client could not be created or an operation failed.
    #[error("Kafka {operation}: {error}")]
    Client {
        /// What vigil was doing.
        operation: &'static str,
        /// librdkafka's error.
        error: RdKafkaError,
    },
    /// The broker did not answer in time.
    #[error("Kafka: {0}")]
    TimedOut(String),
    /// A message was not acknowledged by the broker.
    #[error("Kafka delivery: {0}")]
    Delivery(String),
    /// Reading a file failed.
    #[error("reading {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        error: std::io::Error,
    },
    /// A flag event is invalid.
    #[error(transparent)]
    Flag(#[from] vigil_core::FlagError),
    /// A store failed while the changelog was read into it.
    #[error(transparent)]
    Store(#[from] vigil_storage::StorageError),
}

impl KafkaError {
    fn client(operation: &'static str) -> impl FnOnce(RdKafkaError) -> Self {
        move |error| Self::Client { operation, error }
    }

    fn store(error: vigil_storage::StorageError) -> Self {
        Self::Store(error)
    }
}

/// How long administrative requests may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates those of `topics` that do not exist yet, with the configured partitions.
pub fn ensure_topics(config: &KafkaConfig, topics: &[String]) -> Result<(), KafkaError> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    create_topics(config, &new)
}

/// Creates the topics `new` describes that do not exist yet, when `kafka.create_topics` is set.
pub(crate) fn create_topics(config: &KafkaConfig, new: &[NewTopic<'_>]) -> Result<(), KafkaError> {
    if !config.create_topics || new.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = config
        .client()
        .create()
        .map_err(KafkaError::client("creating an admin client"))?;
    let options = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics(new, &options))
        .map_err(KafkaError::client("creating topics"))?;
    for result in results {
        match result {
            Ok(topic) => info!(%topic, "Created topic."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                error!(%topic, "Could not create topic.");
                return Err(KafkaError::Client {
                    operation: "creating topics",
                    error: RdKafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// Topics this client has already made sure exist, so each is checked once.
#[derive(Default)]
struct KnownTopics(std::collections::HashSet<String>);

impl KnownTopics {
    /// Creates `topic` if it is new to this client and missing on the broker.
    fn ensure(&mut self, config: &KafkaConfig, topic: &str) -> Result<(), KafkaError> {
        if !self.0.contains(topic) {
            ensure_topics(config, &[topic.to_owned()])?;
            self.0.insert(topic.to_owned());
        }
        Ok(())
    }
}

/// librdkafka's own logs and errors, as tracing events. They carry broker and protocol
/// details, never message payloads.
fn log_client(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => error!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            info!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// A client error librdkafka recovers from by itself (a broker down, a connection reset):
/// logged, not fatal.
fn log_client_error(error: &RdKafkaError, reason: &str) {
    warn!(target: "librdkafka", %error, reason, "Kafka client error (retrying).");
}

/// Implements [`rdkafka::ClientContext`] with vigil's logging.
macro_rules! client_context {
    ($context:ty) => {
        $crate::client_context!($context, {});
    };
    // With `stats`: librdkafka's statistics go to the context's `statistics` method.
    ($context:ty, stats) => {
        $crate::client_context!($context, {
            fn stats(&self, statistics: rdkafka::Statistics) {
                self.statistics(statistics);
            }
        });
    };
    ($context:ty, { $($more:item)* }) => {
        impl rdkafka::ClientContext for $context {
            fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
                $crate::log_client(level, facility, message);
            }

            fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
                $crate::log_client_error(&error, reason);
            }

            $($more)*
        }
    };
}
pub(crate) use client_context;
