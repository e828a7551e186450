//! The producer every sink shares: sends that wait out a full local queue, and flushes that
//! report any message the broker did not acknowledge.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::{client_context, KafkaConfig, KafkaError};

/// How long a flush waits for the broker to acknowledge every message sent; librdkafka retries
/// within it (a broker restart, a leader change).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(300);

/// How long to let the producer drain when its local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

/// Remembers the first delivery failure since the last flush.
#[derive(Default)]
pub(crate) struct DeliveryContext {
    failed: Mutex<Option<String>>,
}

client_context!(DeliveryContext);

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            let mut failed = self.failed.lock().expect("lock poisoned");
            failed.get_or_insert_with(|| error.to_string());
        }
    }
}

impl DeliveryContext {
    /// The first delivery failure since the last call, if any.
    pub(crate) fn take_failure(&self) -> Option<String> {
        self.failed.lock().expect("lock poisoned").take()
    }
}

/// Creates a producer that records delivery failures.
pub(crate) fn producer(config: &KafkaConfig) -> Result<BaseProducer<DeliveryContext>, KafkaError> {
    config
        .producer()
        .create_with_context(DeliveryContext::default())
        .map_err(KafkaError::client("creating a producer"))
}

/// Sends one message, waiting while the producer's local queue is full.
pub(crate) fn send(
    producer: &BaseProducer<DeliveryContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), rdkafka::error::KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                producer.poll(QUEUE_FULL_WAIT);
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Waits until every message sent is acknowledged, and reports any that failed.
pub(crate) fn flush(producer: &BaseProducer<DeliveryContext>) -> Result<(), String> {
    flush_within(producer, FLUSH_TIMEOUT)
}

/// [`flush`], waiting at most `timeout`.
pub(crate) fn flush_within(
    producer: &BaseProducer<DeliveryContext>,
    timeout: Duration,
) -> Result<(), String> {
    producer.flush(timeout).map_err(|e| e.to_string())?;
    match producer.context().take_failure() {
        Some(failure) => Err(format!("a message was not delivered: {failure}")),
        None => Ok(()),
    }
}
