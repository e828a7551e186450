//! The node directory: which member of a consumer group owns which partitions of the log
//! topics now, and where its API listens, on one compacted topic (`kafka.node_topic`) keyed
//! by node name.
//!
//! A member announces its whole assignment after every rebalance (librdkafka's eager
//! protocol hands each member its full set), and withdraws (a tombstone) when it stops
//! cleanly; a member that dies keeps its last entry until another takes its partitions and
//! announces them. The directory is therefore the group's assignment as its members last
//! saw it: readers take, per partition, the entry announced last. Entries hold node names,
//! addresses and partition numbers only.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::producer::DeliveryContext;
use crate::{KafkaConfig, KafkaError};

/// How long an announcement may take before it is given up (with a warning): it runs inside
/// rebalance callbacks, which must not wait long.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a reader waits for the directory's end offsets and messages.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition of a log topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnedPartition {
    /// The log topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// What one member announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node's name (`kafka.node`).
    pub node: String,
    /// Its consumer group.
    pub group: String,
    /// Its API's metadata listener (`https://host:port`), when it serves the API.
    pub api: Option<String>,
    /// Its peer listener (`https://host:port`), where the other nodes forward requests for
    /// the data it stores, when it serves one (`[cluster]`).
    #[serde(default)]
    pub peer: Option<String>,
    /// The log partitions assigned to it, sorted.
    pub partitions: Vec<OwnedPartition>,
    /// When it announced them (RFC 3339).
    pub at: String,
}

/// Where a node's listeners are, for its entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// The API's metadata listener.
    pub api: Option<String>,
    /// The peer listener.
    pub peer: Option<String>,
}

/// A member's announcements.
pub(crate) struct Announcer {
    producer: BaseProducer<DeliveryContext>,
    topic: String,
    node: String,
    group: String,
    addresses: Addresses,
}

impl Announcer {
    /// An announcer for this member, creating the directory topic when configured to.
    pub(crate) fn new(config: &KafkaConfig, addresses: Addresses) -> Result<Self, KafkaError> {
        ensure_directory_topic(config)?;
        Ok(Self {
            producer: crate::producer::producer(config)?,
            topic: config.node_topic.clone(),
            node: config.node.clone(),
            group: config.group_id.clone(),
            addresses,
        })
    }

    /// Announces that `partitions` are this member's now.
    pub(crate) fn announce(&self, mut partitions: Vec<OwnedPartition>) {
        partitions.sort();
        let entry = NodeEntry {
            node: self.node.clone(),
            group: self.group.clone(),
            api: self.addresses.api.clone(),
            peer: self.addresses.peer.clone(),
            partitions,
            at: OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .expect("a UTC time always formats"),
        };
        let value = serde_json::to_vec(&entry).expect("an entry always encodes");
        self.send(Some(&value));
        info!(node = %self.node, partitions = entry.partitions.len(), "Announced this node's partitions.");
    }

    /// Removes this member from the directory (it stopped cleanly).
    pub(crate) fn withdraw(&self) {
        self.send(None);
    }

    fn send(&self, value: Option<&[u8]>) {
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).key(self.node.as_bytes());
        if let Some(value) = value {
            record = record.payload(value);
        }
        let sent = crate::producer::send(&self.producer, record)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::producer::flush_within(&self.producer, ANNOUNCE_TIMEOUT));
        if let Err(error) = sent {
            warn!(topic = %self.topic, %error, "Could not update the node directory; other nodes may not know this node's partitions until its next rebalance.");
        }
    }
}

/// Creates the directory topic (one partition, compacted) if missing and configured to.
pub(crate) fn ensure_directory_topic(config: &KafkaConfig) -> Result<(), KafkaError> {
    let topic = NewTopic::new(
        &config.node_topic,
        1,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", "compact");
    crate::create_topics(config, &[topic])
}

/// A key's last message in the directory topic.
pub(crate) struct LastMessage {
    /// Where it stands in the (one-partition) topic.
    pub offset: i64,
    pub key: String,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// The directory topic as compaction would leave it: each key's last message, in key order.
pub(crate) fn read_latest(config: &KafkaConfig) -> Result<Vec<LastMessage>, KafkaError> {
    let consumer: BaseConsumer = config
        .consumer(&[
            (
                "group.id",
                format!("vigil-directory-reader-{}", std::process::id()),
            ),
            ("enable.auto.commit", "false".into()),
            ("enable.partition.eof", "false".into()),
        ])
        .create()
        .map_err(KafkaError::client("creating the directory reader"))?;
    let metadata = consumer
        .fetch_metadata(Some(&config.node_topic), READ_TIMEOUT)
        .map_err(KafkaError::client("reading the node directory's metadata"))?;
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic.name(), partition.id(), READ_TIMEOUT)
                .map_err(KafkaError::client("reading the node directory's end"))?;
            if high > 0 {
                ends.insert(partition.id(), high);
                list.add_partition_offset(topic.name(), partition.id(), Offset::Beginning)
                    .expect("a valid offset");
            }
        }
    }
    let mut latest: BTreeMap<String, (i64, Option<Vec<u8>>)> = BTreeMap::new();
    if !ends.is_empty() {
        consumer
            .assign(&list)
            .map_err(KafkaError::client("reading the node directory"))?;
        let deadline = std::time::Instant::now() + READ_TIMEOUT;
        let mut read: BTreeMap<i32, i64> = BTreeMap::new();
        while ends
            .iter()
            .any(|(p, end)| read.get(p).is_none_or(|o| o + 1 < *end))
        {
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::TimedOut(format!(
                    "the node directory ({}) could not be read to its end within {} s",
                    config.node_topic,
                    READ_TIMEOUT.as_secs()
                )));
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.map_err(KafkaError::client("reading the node directory"))?;
            read.insert(message.partition(), message.offset());
            let Some(key) = message.key() else { continue };
            latest.insert(
                String::from_utf8_lossy(key).into_owned(),
                (message.offset(), message.payload().map(<[u8]>::to_vec)),
            );
        }
    }
    Ok(latest
        .into_iter()
        .map(|(key, (offset, value))| LastMessage { offset, key, value })
        .collect())
}

/// The directory now: the members of `config.group_id` with their partitions, each partition
/// under the member that announced it last, in node order.
pub fn read_directory(config: &KafkaConfig) -> Result<Vec<NodeEntry>, KafkaError> {
    // Per node, its last entry and where it stands in the (one-partition) topic.
    let latest = read_latest(config)?.into_iter().filter_map(|last| {
        let key = last.key.as_bytes();
        if crate::changelog::is_claim_key(key) || crate::retirements::is_retirement_key(key) {
            return None;
        }
        let entry = serde_json::from_slice::<NodeEntry>(&last.value?).ok()?;
        Some((last.offset, entry))
    });
    let mut entries: Vec<(i64, NodeEntry)> = latest
        .filter(|(_, entry)| entry.group == config.group_id)
        .collect();
    // A partition moved by a rebalance is listed only under its newest owner.
    entries.sort_by_key(|(offset, _)| std::cmp::Reverse(*offset));
    let mut claimed = std::collections::BTreeSet::new();
    for (_, entry) in &mut entries {
        entry.partitions.retain(|p| claimed.insert(p.clone()));
    }
    let mut entries: Vec<NodeEntry> = entries.into_iter().map(|(_, entry)| entry).collect();
    entries.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(entries)
}
