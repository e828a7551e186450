//! Kafka settings: brokers, the consumer group, topic names, and librdkafka passthrough.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use vigil_core::Geography;

use crate::KafkaError;

/// The placeholder that topic templates must contain once.
const GEOGRAPHY: &str = "{geography}";

/// Settings for vigil's Kafka source and sinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The consumer group that `vigil run --kafka` processes join to split the partitions.
    pub group_id: String,
    /// Log topic of each geography; `{geography}` is replaced by its name.
    pub log_topics: String,
    /// Flag-event topic of each geography.
    pub flag_topics: String,
    /// Where rejected messages go, with headers saying why and where they came from.
    pub dead_letter_topic: String,
    /// The node directory: which member of the group owns which log partitions now, and
    /// where its API listens (one compacted topic, keyed by node).
    pub node_topic: String,
    /// Changelog topic of each geography (compacted): every store write of the geography,
    /// already sealed, from which a node rebuilds the partitions it takes over. Used when
    /// `[cluster]` is enabled.
    pub changelog_topics: String,
    /// This node's name in the directory; unique within the group (default: the host name).
    pub node: String,
    /// Create missing topics on start (with `partitions` partitions).
    pub create_topics: bool,
    /// Partitions of topics vigil creates.
    pub partitions: i32,
    /// Replication factor of topics vigil creates.
    pub replication_factor: i32,
    /// How often stored records are made durable and their offsets committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// Upper bound on messages the consumer fetches ahead of processing, in KiB; with the
    /// pipeline's bounded channel this bounds memory whatever the lag.
    pub fetch_buffer_kib: u32,
    /// Longest time the broker may hold a fetch open waiting for data, in milliseconds
    /// (librdkafka's `fetch.wait.max.ms`). Apache Kafka answers as soon as data is there, so
    /// this only sets how often an idle consumer asks again; Tansu 0.6 holds every fetch for
    /// this long (half of it from 250 ms up) even when it has data, so with Tansu it bounds
    /// throughput at one fetch (at most 5 MiB) per wait.
    pub fetch_wait_ms: u32,
    /// The consumer's session timeout in milliseconds: how long the group waits for a consumer
    /// that stopped answering before giving its partitions to another.
    pub session_timeout_ms: u32,
    /// Largest message the loader and the dead-letter producer send, in bytes.
    pub max_message_bytes: u32,
    /// Further librdkafka properties for every client, such as `security.protocol` or
    /// `sasl.mechanisms`.
    pub client: BTreeMap<String, String>,
    /// Further librdkafka properties for producers only, such as `linger.ms` or
    /// `compression.type`.
    pub producer: BTreeMap<String, String>,
    /// Further librdkafka properties for consumers only, such as `fetch.min.bytes`; they
    /// override vigil's own consumer settings.
    pub consumer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "vigil".into(),
            log_topics: "vigil.logs.{geography}".into(),
            flag_topics: "vigil.flags.{geography}".into(),
            dead_letter_topic: "vigil.deadletter".into(),
            node_topic: "vigil.nodes".into(),
            changelog_topics: "vigil.changelog.{geography}".into(),
            node: host_name(),
            create_topics: true,
            partitions: 6,
            replication_factor: 1,
            commit_interval_ms: 1000,
            fetch_buffer_kib: 16 * 1024,
            fetch_wait_ms: 50,
            session_timeout_ms: 10_000,
            max_message_bytes: 8 * 1024 * 1024,
            client: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }
}

/// The machine's host name, the default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "vigil".into())
}

impl KafkaConfig {
    /// Checks the settings that are vigil's own (librdkafka checks its own when clients start).
    pub fn validate(&self) -> Result<(), KafkaError> {
        for (field, template) in [
            ("log_topics", &self.log_topics),
            ("flag_topics", &self.flag_topics),
            ("changelog_topics", &self.changelog_topics),
        ] {
            if template.matches(GEOGRAPHY).count() != 1 {
                return Err(KafkaError::Config(format!(
                    "kafka.{field} must contain `{GEOGRAPHY}` exactly once"
                )));
            }
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err(KafkaError::Config(
                "kafka.partitions and kafka.replication_factor must be at least 1".into(),
            ));
        }
        if self.node.trim().is_empty() || self.node_topic.trim().is_empty() {
            return Err(KafkaError::Config(
                "kafka.node and kafka.node_topic must not be empty".into(),
            ));
        }
        if self.commit_interval_ms == 0 {
            return Err(KafkaError::Config(
                "kafka.commit_interval_ms must be positive".into(),
            ));
        }
        if !(1..=300_000).contains(&self.fetch_wait_ms) {
            return Err(KafkaError::Config(format!(
                "kafka.fetch_wait_ms must be between 1 and 300000, not {}",
                self.fetch_wait_ms
            )));
        }
        Ok(())
    }

    /// The commit interval.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    /// The log topics.
    pub fn log_topics(&self) -> Topics {
        Topics(self.log_topics.clone())
    }

    /// The changelog topics.
    pub fn changelog_topics(&self) -> Topics {
        Topics(self.changelog_topics.clone())
    }

    /// The flag-event topics.
    pub fn flag_topics(&self) -> Topics {
        Topics(self.flag_topics.clone())
    }

    /// A client configuration with the brokers and the passthrough properties.
    pub(crate) fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }

    /// A producer configuration: every message acknowledged by all in-sync replicas.
    pub(crate) fn producer(&self) -> ClientConfig {
        let mut config = self.client();
        config
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.max.bytes", self.max_message_bytes.to_string());
        for (key, value) in &self.producer {
            config.set(key, value);
        }
        config
    }

    /// A consumer configuration: `base` (vigil's settings for this consumer), then the
    /// passthrough consumer properties.
    pub(crate) fn consumer(&self, base: &[(&str, String)]) -> ClientConfig {
        let mut config = self.client();
        for (key, value) in base {
            config.set(*key, value);
        }
        for (key, value) in &self.consumer {
            config.set(key, value);
        }
        config
    }
}

/// A per-geography topic naming scheme, such as `vigil.logs.{geography}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics(String);

impl Topics {
    /// The topic of `geography`.
    pub fn of(&self, geography: &Geography) -> String {
        self.0.replace(GEOGRAPHY, geography.as_str())
    }

    /// The naming scheme itself, such as `vigil.flags.{geography}`.
    pub fn pattern(&self) -> &str {
        &self.0
    }

    /// The geography whose topic `topic` is, if it is one.
    pub fn geography(&self, topic: &str) -> Option<Geography> {
        let (prefix, suffix) = self.0.split_once(GEOGRAPHY)?;
        let name = topic.strip_prefix(prefix)?.strip_suffix(suffix)?;
        Geography::parse(name).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_geographies_and_back() {
        let topics = KafkaConfig::default().log_topics();
        let eu = Geography::parse("eu").unwrap();
        assert_eq!(topics.of(&eu), "vigil.logs.eu");
        assert_eq!(topics.geography("vigil.logs.eu"), Some(eu));
        assert_eq!(topics.geography("vigil.flags.eu"), None);
        assert_eq!(topics.geography("vigil.logs."), None);
        let odd = Topics("{geography}-logs".into());
        assert_eq!(odd.geography("us-logs").unwrap().as_str(), "us");
    }

    #[test]
    fn templates_need_the_placeholder() {
        let config = KafkaConfig {
            log_topics: "vigil.logs".into(),
            ..KafkaConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.log_topics"), "{err}");
        assert!(KafkaConfig::default().validate().is_ok());
    }

    #[test]
    fn a_fetch_wait_of_zero_is_refused() {
        let config = KafkaConfig {
            fetch_wait_ms: 0,
            ..KafkaConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.fetch_wait_ms"), "{err}");
    }
}
