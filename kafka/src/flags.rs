//! Flag events on the flag topic of each geography: published by vigil, read by streaming
//! consumers (and by `vigil flags tail`).
//!
//! Each event is one message: the value is the event's JSON ([`FlagEvent`]), the key its
//! resource ID (so one resource's flags stay in order), and the header `vigil.schema_version`
//! the schema version.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord};
use tracing::warn;
use vigil_core::{FlagEvent, Geography};
use vigil_pipeline::{FlagSink, FlagSinkError};

use crate::dead_letter::HEADER_PREFIX;
use crate::producer::{flush, producer, send, DeliveryContext};
use crate::{ensure_topics, KafkaConfig, KafkaError, KnownTopics, Topics};

/// Publishes flag events.
pub struct FlagPublisher {
    producer: BaseProducer<DeliveryContext>,
    topics: Topics,
    config: KafkaConfig,
    known: KnownTopics,
}

impl FlagPublisher {
    /// A publisher to the configured flag topics.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        config.validate()?;
        Ok(Self {
            producer: producer(config)?,
            topics: config.flag_topics(),
            config: config.clone(),
            known: KnownTopics::default(),
        })
    }

    /// Validates `event` and sends it to its geography's flag topic; returns the topic.
    pub fn publish(&mut self, event: &FlagEvent) -> Result<String, KafkaError> {
        event.validate()?;
        let topic = self.topics.of(&event.geography);
        self.known.ensure(&self.config, &topic)?;
        let json = serde_json::to_vec(event).expect("a flag event serializes");
        let headers = OwnedHeaders::new().insert(Header {
            key: &format!("{HEADER_PREFIX}schema_version"),
            value: Some(event.schema_version.to_string().as_bytes()),
        });
        let record = BaseRecord::to(&topic)
            .payload(json.as_slice())
            .key(event.resource_id.as_str().as_bytes())
            .headers(headers);
        send(&self.producer, record).map_err(KafkaError::client("publishing a flag event"))?;
        Ok(topic)
    }

    /// Waits until every event published is acknowledged by the broker.
    pub fn flush(&self) -> Result<(), KafkaError> {
        flush(&self.producer).map_err(KafkaError::Delivery)
    }
}

impl FlagSink for FlagPublisher {
    fn destination(&self) -> String {
        format!("kafka topics {}", self.topics.pattern())
    }

    fn publish(&mut self, event: &FlagEvent) -> Result<(), FlagSinkError> {
        FlagPublisher::publish(self, event)
            .map(|_| ())
            .map_err(|e| self.sink_error(e))
    }

    fn flush(&mut self) -> Result<(), FlagSinkError> {
        FlagPublisher::flush(self).map_err(|e| self.sink_error(e))
    }
}

impl FlagPublisher {
    fn sink_error(&self, error: KafkaError) -> FlagSinkError {
        FlagSinkError {
            destination: FlagSink::destination(self),
            message: error.to_string(),
        }
    }
}

/// Reads flag events as a streaming consumer would, without joining a shared group or
/// committing anything.
pub struct FlagTail {
    consumer: BaseConsumer<DefaultConsumerContext>,
    stop: Arc<AtomicBool>,
    stop_when_idle: Option<Duration>,
    last: Instant,
}

impl FlagTail {
    /// Subscribes to the flag topics of `geographies`, from their beginning or from now.
    pub fn new(
        config: &KafkaConfig,
        geographies: &[Geography],
        from_beginning: bool,
        stop: Arc<AtomicBool>,
        stop_when_idle: Option<Duration>,
    ) -> Result<Self, KafkaError> {
        config.validate()?;
        let topics: Vec<String> = geographies
            .iter()
            .map(|g| config.flag_topics().of(g))
            .collect();
        ensure_topics(config, &topics)?;
        // A group of its own: every tail sees every event.
        let group = format!("vigil-flags-tail-{}-{}", std::process::id(), nanos());
        let reset = if from_beginning { "earliest" } else { "latest" };
        let consumer: BaseConsumer<DefaultConsumerContext> = config
            .consumer(&[
                ("group.id", group),
                ("enable.auto.commit", "false".into()),
                ("auto.offset.reset", reset.into()),
            ])
            .create()
            .map_err(KafkaError::client("creating the flag consumer"))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(KafkaError::client("subscribing to flag topics"))?;
        Ok(Self {
            consumer,
            stop,
            stop_when_idle,
            last: Instant::now(),
        })
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl Iterator for FlagTail {
    type Item = FlagEvent;

    /// The next valid flag event; `None` once stopped or idle. Messages that are not valid
    /// flag events are skipped with a warning naming only their position.
    fn next(&mut self) -> Option<FlagEvent> {
        loop {
            if self.stop.load(Ordering::Acquire)
                || self
                    .stop_when_idle
                    .is_some_and(|i| self.last.elapsed() >= i)
            {
                return None;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(error)) => warn!(%error, "Consuming flag events failed (retrying)."),
                Some(Ok(message)) => {
                    self.last = Instant::now();
                    let parsed = message.payload().map(serde_json::from_slice::<FlagEvent>);
                    match parsed {
                        Some(Ok(event)) => return Some(event),
                        _ => warn!(
                            topic = message.topic(),
                            partition = message.partition(),
                            offset = message.offset(),
                            "Skipping a message that is not a flag event."
                        ),
                    }
                }
            }
        }
    }
}
