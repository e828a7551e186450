//! Retired ratchet generations, from the node that retired them to every other node of the
//! group (see [`vigil_storage::changelog::ratchet`]).
//!
//! A node that destroys or replaces a data key retires its generation in its own ratchet
//! state and publishes the retirement in the node directory topic, under
//! `retired/<geography>/<day>/<resource>` (compaction keeps the latest, which retires the
//! most). Every node follows the topic ([`RetirementFollower`]) and applies what it reads to
//! its own state, so that within about a second no live node can derive the destroyed key,
//! and a stopped node applies it as soon as it starts again. Once the purge has moved a
//! node's ratchet past a retirement's day, the follower tombstones that entry, so the topic
//! holds the retirements of kept days only. Entries hold IDs and numbers only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::info;
use vigil_core::Geography;
use vigil_storage::changelog::Retirement;
use vigil_storage::Stores;

use crate::producer::DeliveryContext;
use crate::{KafkaConfig, KafkaError};

/// The directory key prefix of retirements.
const PREFIX: &[u8] = b"retired/";

/// How long one catch-up reads at most, so that the thread it runs on gets on with its other
/// work; what is left comes at the next one.
const CATCH_UP_AT_MOST: Duration = Duration::from_secs(5);

/// A retirement as the directory carries it.
#[derive(Serialize, Deserialize)]
struct Published {
    geography: String,
    #[serde(flatten)]
    retirement: Retirement,
}

/// Whether a directory key is a retirement (not a node entry).
pub(crate) fn is_retirement_key(key: &[u8]) -> bool {
    key.starts_with(PREFIX)
}

/// The directory key of `retirement` of `geography`.
fn key_of(geography: &Geography, retirement: &Retirement) -> String {
    format!(
        "retired/{geography}/{}/{}",
        retirement.day, retirement.resource_id
    )
}

/// The geography and day a retirement's directory key names.
fn day_of(key: &[u8]) -> Option<(Geography, u32)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.splitn(4, '/');
    let (_, geography, day) = (parts.next()?, parts.next()?, parts.next()?);
    Some((Geography::parse(geography).ok()?, day.parse().ok()?))
}

/// Queues `retirements` of `geography` on the directory topic `topic`; the producer's next
/// flush (a store flush) waits for them.
pub(crate) fn publish(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    geography: &Geography,
    retirements: &[Retirement],
) -> Result<(), String> {
    for retirement in retirements {
        let key = key_of(geography, retirement);
        let value = serde_json::to_vec(&Published {
            geography: geography.to_string(),
            retirement: retirement.clone(),
        })
        .expect("a retirement encodes");
        let record = BaseRecord::<[u8], [u8]>::to(topic)
            .key(key.as_bytes())
            .payload(&value);
        crate::producer::send(producer, record).map_err(|e| format!("sending to {topic}: {e}"))?;
    }
    Ok(())
}

/// The directory keys of the retirements in the topic, by geography and day.
type LiveRetirements = BTreeMap<(Geography, u32), BTreeSet<Vec<u8>>>;

/// Follows the node directory topic from its beginning and applies every retirement to the
/// stores of the geographies this node serves.
pub struct RetirementFollower {
    consumer: BaseConsumer,
    stores: Arc<Stores>,
    geographies: BTreeSet<Geography>,
    /// Tombstones retirements of purged days.
    producer: BaseProducer<DeliveryContext>,
    topic: String,
    /// The retirements in the topic now, by geography and day (their keys).
    live: std::sync::Mutex<LiveRetirements>,
}

impl RetirementFollower {
    /// A follower for `stores`' `geographies`, reading `config.node_topic` (created if
    /// missing and configured to) from its beginning.
    pub fn new(
        config: &KafkaConfig,
        stores: Arc<Stores>,
        geographies: impl IntoIterator<Item = Geography>,
    ) -> Result<Self, KafkaError> {
        crate::directory::ensure_directory_topic(config)?;
        let consumer: BaseConsumer = config
            .consumer(&[
                (
                    "group.id",
                    format!("vigil-retirements-{}", std::process::id()),
                ),
                ("enable.auto.commit", "false".into()),
                ("enable.partition.eof", "false".into()),
            ])
            .create()
            .map_err(KafkaError::client("creating the retirement follower"))?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&config.node_topic, 0, Offset::Beginning)
            .expect("a valid offset");
        consumer
            .assign(&list)
            .map_err(KafkaError::client("following the node directory"))?;
        Ok(Self {
            consumer,
            stores,
            geographies: geographies.into_iter().collect(),
            producer: crate::producer::producer(config)?,
            topic: config.node_topic.clone(),
            live: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Reads what the directory has that this follower has not seen (until nothing comes for
    /// a moment), and applies the retirements among it. Returns how many changed a state.
    pub fn catch_up(&self) -> Result<usize, KafkaError> {
        self.read_and_apply(None)
    }

    /// Reads the directory to the end it has now (a node does before it rebuilds anything,
    /// so that it imports no key retired while it was stopped), and applies the retirements.
    pub fn catch_up_to_end(&self) -> Result<usize, KafkaError> {
        let (_, end) = self
            .consumer
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(10))
            .map_err(KafkaError::client("reading the node directory's end"))?;
        self.read_and_apply(Some(end))
    }

    /// Reads until nothing comes for a moment (or, with `end`, until that offset), then
    /// applies what it read, even when reading failed midway: nothing read is dropped.
    fn read_and_apply(&self, end: Option<i64>) -> Result<usize, KafkaError> {
        let started = Instant::now();
        let mut read: BTreeMap<Geography, Vec<Retirement>> = BTreeMap::new();
        let mut failed = None;
        let mut at = -1;
        while started.elapsed() < CATCH_UP_AT_MOST && end.is_none_or(|end| at + 1 < end) {
            let Some(message) = self.consumer.poll(Duration::from_millis(100)) else {
                if end.is_none() {
                    break;
                }
                continue;
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            };
            at = message.offset();
            if let Some((geography, retirement)) = self.note(&message) {
                read.entry(geography).or_default().push(retirement);
            }
        }
        let mut changed = 0;
        for (geography, retirements) in read {
            let store = self.stores.geo(&geography).map_err(KafkaError::store)?;
            let now = store
                .apply_retirements(&retirements)
                .map_err(KafkaError::store)?;
            if now > 0 {
                info!(%geography, retired = now, "Retired ratchet generations other nodes destroyed.");
                metrics::counter!("vigil_changelog_retirements_applied_total", "geography" => geography.to_string())
                    .increment(now as u64);
            }
            changed += now;
        }
        if let Some(error) = failed {
            return Err(KafkaError::client("following the node directory")(error));
        }
        self.tombstone_purged_days()?;
        Ok(changed)
    }

    /// Notes a directory message: which retirements are in the topic now, and the one it
    /// carries, if any, for a geography this node serves.
    fn note(&self, message: &BorrowedMessage<'_>) -> Option<(Geography, Retirement)> {
        let key = message.key().filter(|key| is_retirement_key(key))?;
        let day = day_of(key)?;
        {
            let mut live = self.live.lock().expect("lock poisoned");
            let keys = live.entry(day).or_default();
            match message.payload() {
                Some(_) => keys.insert(key.to_vec()),
                None => keys.remove(key),
            };
        }
        let published: Published = serde_json::from_slice(message.payload()?).ok()?;
        let geography = Geography::parse(&published.geography).ok()?;
        self.geographies
            .contains(&geography)
            .then_some((geography, published.retirement))
    }

    /// Tombstones the retirements of days this node's ratchet has moved past (the purge):
    /// nothing derives those days any more, so compaction may drop them.
    fn tombstone_purged_days(&self) -> Result<(), KafkaError> {
        let mut live = self.live.lock().expect("lock poisoned");
        let mut gone = Vec::new();
        for (geography, day) in live.keys() {
            if !self.geographies.contains(geography) {
                continue;
            }
            let store = self.stores.geo(geography).map_err(KafkaError::store)?;
            let purged = store
                .ratchet_day()
                .map_err(KafkaError::store)?
                .is_some_and(|oldest| oldest.number() > *day);
            if purged {
                gone.push((geography.clone(), *day));
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        for day in gone {
            for key in live.remove(&day).unwrap_or_default() {
                let record = BaseRecord::<[u8], [u8]>::to(&self.topic).key(&key);
                crate::producer::send(&self.producer, record)
                    .map_err(KafkaError::client("tombstoning a purged day's retirement"))?;
            }
        }
        crate::producer::flush(&self.producer).map_err(KafkaError::Delivery)
    }
}
