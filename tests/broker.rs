//! A real Kafka-protocol broker for tests: Tansu, started on a free loopback port and stopped
//! when dropped. `scripts/test.sh` installs it (`cargo install tansu --version 0.6.0 --locked
//! --features dynostore,libsql`) when it is missing; `VIGIL_TANSU` may name the binary.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::llm::free_port;

/// Where the broker keeps its data.
enum Storage {
    /// In memory: gone when the broker stops.
    Memory,
    /// An SQLite file in this directory: survives restarts.
    Sqlite(PathBuf),
}

/// A running broker.
pub struct Broker {
    port: u16,
    storage: Storage,
    child: Option<Child>,
    log: PathBuf,
    _logs: tempfile::TempDir,
}

fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("VIGIL_TANSU") {
        return path.into();
    }
    let installed = crate::util::which("tansu").or_else(|| {
        let home = std::env::var_os("HOME")?;
        Some(Path::new(&home).join(".cargo/bin/tansu")).filter(|p| p.is_file())
    });
    installed.expect(
        "the Tansu broker is not installed: run ./scripts/test.sh, or `cargo install tansu \
         --version 0.6.0 --locked --features dynostore,libsql`",
    )
}

impl Broker {
    /// A broker keeping its data in memory.
    pub fn memory() -> Self {
        Self::start(Storage::Memory)
    }

    /// A broker keeping its data in an SQLite file under `dir`, so it survives restarts.
    pub fn sqlite(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        Self::start(Storage::Sqlite(dir.to_owned()))
    }

    fn start(storage: Storage) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let mut broker = Self {
            port: free_port(),
            storage,
            child: None,
            log: logs.path().join("tansu.log"),
            _logs: logs,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = Command::new(tansu());
        cmd.arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .env("RUST_LOG", "warn");
        match &self.storage {
            Storage::Memory => {
                cmd.args(["--storage-engine", "memory://tansu/"]);
            }
            Storage::Sqlite(dir) => {
                cmd.current_dir(dir)
                    .args(["--storage-engine", "sqlite://tansu.db"]);
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tansu exited ({status}):\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "tansu did not listen in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The bootstrap address.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The `[kafka]` settings for vigil with this broker: short timeouts so tests are quick.
    pub fn vigil_config(&self) -> String {
        format!(
            "\n[kafka]\nbrokers = \"{}\"\npartitions = 4\ncommit_interval_ms = 200\nsession_timeout_ms = 6000\n",
            self.address()
        )
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.address());
        config
    }

    /// Sends `payload` to `topic` with `key`, and waits for the acknowledgement.
    pub fn send(&self, topic: &str, key: &str, payload: &[u8]) {
        let producer: BaseProducer = self.client().create().unwrap();
        producer
            .send(BaseRecord::to(topic).key(key).payload(payload))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Every message on `topic` (from the start, until none arrives for a while).
    pub fn read_all(&self, topic: &str) -> Vec<TopicMessage> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", format!("test-reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut out = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < Duration::from_secs(if out.is_empty() { 15 } else { 3 }) {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = match message {
                    Ok(message) => message,
                    // A topic nothing was ever published to does not exist yet: it is empty.
                    Err(rdkafka::error::KafkaError::MessageConsumption(
                        rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                    )) => continue,
                    Err(e) => panic!("reading {topic}: {e}"),
                };
                last = Instant::now();
                let headers = message.headers().map_or_else(Vec::new, |h| {
                    h.iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), value.into_owned())
                        })
                        .collect()
                });
                out.push(TopicMessage {
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers,
                    raw_key: message.key().unwrap_or_default().to_vec(),
                    tombstone: message.payload().is_none(),
                });
            }
        }
        out
    }

    /// Whether `group` has committed, on every partition of `topics`, the partition's end.
    pub fn group_caught_up(&self, group: &str, topics: &[&str]) -> bool {
        let consumer: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let timeout = Duration::from_secs(10);
        let mut list = TopicPartitionList::new();
        for topic in topics {
            let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else {
                return false;
            };
            for t in metadata.topics() {
                for p in t.partitions() {
                    list.add_partition(topic, p.id());
                }
            }
        }
        let Ok(committed) = consumer.committed_offsets(list, timeout) else {
            return false;
        };
        committed.elements().iter().all(|e| {
            let Ok((_, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout) else {
                return false;
            };
            match e.offset() {
                Offset::Offset(o) => o >= high,
                _ => high == 0,
            }
        })
    }

    /// Waits until [`Broker::group_caught_up`].
    pub fn wait_caught_up(&self, group: &str, topics: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.group_caught_up(group, topics) {
            assert!(
                Instant::now() < deadline,
                "group {group} did not commit everything in 120 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message read back from a topic.
#[derive(Debug)]
pub struct TopicMessage {
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// The key's bytes as sent.
    pub raw_key: Vec<u8>,
    /// Whether the message has no value (a tombstone on a compacted topic).
    pub tombstone: bool,
}

impl TopicMessage {
    /// The value of header `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
