//! The changelog on Kafka: one compacted topic per geography (`kafka.changelog_topics`), with
//! as many partitions as the geography's log topic. A store's changes (see
//! [`vigil_storage::changelog`]) go to the partition of their resource in the log topic, so
//! the node that owns a log partition finds everything stored from it in the changelog
//! partition with the same number.
//!
//! - [`ChangelogProducer`] is the stores' [`ChangeSink`]: a store flush waits for the broker
//!   to acknowledge every change, and offsets are committed only after a flush, so the
//!   changelog is never behind a committed offset.
//! - [`Rebuilder`] runs when the group assigns partitions: it reads each newly assigned
//!   partition's changelog from the beginning into the store before the partition is consumed,
//!   and lets go of the resources of partitions this node lost once the node directory shows
//!   that their new owners have them (rebuilt).
//! - [`PartitionMap`] says which partition a resource's records come from: learned from the
//!   keys of the messages consumed (and of the changelog read back), else librdkafka's
//!   default partitioner for a keyed message (CRC-32 of the key).
//! - Retirements: every node applies the ratchet generations other nodes retire (see
//!   [`crate::retirements`]), on the same thread that lets go of lost partitions.
//! - Ratchet claims: the first node of a geography to need a day-key ratchet claims it in the
//!   node directory topic; Kafka's order decides which claim wins (see [`winning_claim`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn};
use vigil_core::{Geography, ResourceId, ResourceRegistry};
use vigil_storage::changelog::{self, Change, ChangeSink, ChangelogError, Moving, Retirement};
use vigil_storage::retention::{Cutoffs, RetentionConfig};
use vigil_storage::{Imported, Stores};

use crate::directory::NodeEntry;
use crate::producer::DeliveryContext;
use crate::retirements::RetirementFollower;
use crate::{KafkaConfig, KafkaError, Topics};

/// How long reading a changelog partition may go without a message before it is given up.
const READ_STALL: Duration = Duration::from_secs(30);

/// The most a rebuild fetches at once, per partition and per fetch.
const REBUILD_FETCH_BYTES: usize = 256 << 20;

/// How long a rebuild goes on reading once at the end the broker reported, for messages past
/// it (see [`Rebuilder::rebuild_gained`]).
const END_QUIET: Duration = Duration::from_secs(1);

/// How often lost partitions are checked for in the node directory.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// Changes imported per store write during a rebuild.
const IMPORT_CHUNK: usize = 4096;

/// Which partition of its geography's log topic each resource's records come from.
pub struct PartitionMap {
    /// Partitions of each geography's log topic.
    counts: HashMap<Geography, i32>,
    /// Per geography, each resource's partition as seen (looked up without allocating:
    /// this runs for every message consumed).
    learned: RwLock<HashMap<Geography, HashMap<String, i32>>>,
}

impl PartitionMap {
    /// Reads the partition count of each geography's log topic (creating the changelog
    /// topics, with the same counts, when configured to).
    pub fn new(config: &KafkaConfig, geographies: &[Geography]) -> Result<Self, KafkaError> {
        let log_topics = config.log_topics();
        let changelog_topics = config.changelog_topics();
        let consumer: BaseConsumer = config
            .consumer(&[("group.id", "vigil-metadata".into())])
            .create()
            .map_err(KafkaError::client("creating a metadata reader"))?;
        let mut counts = HashMap::new();
        let mut new = Vec::new();
        for geography in geographies {
            let topic = log_topics.of(geography);
            crate::ensure_topics(config, std::slice::from_ref(&topic))?;
            let metadata = consumer
                .fetch_metadata(Some(&topic), READ_STALL)
                .map_err(KafkaError::client("reading a log topic's partitions"))?;
            let count = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len() as i32);
            if count == 0 {
                return Err(KafkaError::Config(format!(
                    "log topic {topic} has no partitions"
                )));
            }
            counts.insert(geography.clone(), count);
            new.push((changelog_topics.of(geography), count));
        }
        let topics: Vec<NewTopic<'_>> = new
            .iter()
            .map(|(topic, count)| {
                NewTopic::new(
                    topic,
                    *count,
                    TopicReplication::Fixed(config.replication_factor),
                )
                .set("cleanup.policy", "compact")
            })
            .collect();
        crate::create_topics(config, &topics)?;
        Ok(Self {
            counts,
            learned: RwLock::new(HashMap::new()),
        })
    }

    /// Every partition of every geography's log topic.
    pub fn all(&self) -> Vec<(Geography, i32)> {
        self.counts
            .iter()
            .flat_map(|(geography, count)| (0..*count).map(move |p| (geography.clone(), p)))
            .collect()
    }

    /// Notes that `resource`'s records come from `partition` of `geography`'s log topic.
    pub fn learn(&self, geography: &Geography, resource: &str, partition: i32) {
        if self.learned_partition(geography, resource) == Some(partition) {
            return;
        }
        (self.learned.write().expect("lock poisoned"))
            .entry(geography.clone())
            .or_default()
            .insert(resource.to_owned(), partition);
    }

    fn learned_partition(&self, geography: &Geography, resource: &str) -> Option<i32> {
        let learned = self.learned.read().expect("lock poisoned");
        learned.get(geography)?.get(resource).copied()
    }

    /// The partition `resource`'s records come from in `geography`'s log topic.
    pub fn partition_of(&self, geography: &Geography, resource: &str) -> i32 {
        if let Some(partition) = self.learned_partition(geography, resource) {
            return partition;
        }
        let count = self.counts.get(geography).copied().unwrap_or(1);
        // librdkafka's default partitioner for a keyed message (`consistent_random`).
        (crc32fast::hash(resource.as_bytes()) % count as u32) as i32
    }
}

/// The stores' [`ChangeSink`]: each change to its resource's partition of the geography's
/// changelog topic.
pub struct ChangelogProducer {
    producer: BaseProducer<DeliveryContext>,
    topics: Topics,
    partitions: Arc<PartitionMap>,
    /// The node directory topic, where retirements go (see [`crate::retirements`]).
    directory: String,
}

impl ChangelogProducer {
    /// A producer for the changelog topics.
    pub fn new(config: &KafkaConfig, partitions: Arc<PartitionMap>) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: crate::producer::producer(config)?,
            topics: config.changelog_topics(),
            partitions,
            directory: config.node_topic.clone(),
        })
    }
}

impl ChangeSink for ChangelogProducer {
    fn send(&self, geography: &Geography, changes: Vec<Change>) -> Result<(), ChangelogError> {
        let topic = self.topics.of(geography);
        let mut tombstones = 0u64;
        let count = changes.len() as u64;
        for change in &changes {
            let partition = self.partitions.partition_of(geography, &change.resource_id);
            let mut record = BaseRecord::<[u8], [u8]>::to(&topic)
                .key(change.key.as_slice())
                .partition(partition);
            match &change.value {
                Some(value) => record = record.payload(value.as_slice()),
                None => tombstones += 1,
            }
            crate::producer::send(&self.producer, record).map_err(|e| ChangelogError {
                geography: geography.to_string(),
                problem: format!("sending to {topic}: {e}"),
            })?;
        }
        let geography = geography.to_string();
        metrics::counter!("vigil_changelog_changes_total", "geography" => geography.clone(), "kind" => "write")
            .increment(count - tombstones);
        metrics::counter!("vigil_changelog_changes_total", "geography" => geography, "kind" => "tombstone")
            .increment(tombstones);
        Ok(())
    }

    fn flush(&self) -> Result<(), ChangelogError> {
        crate::producer::flush(&self.producer).map_err(|problem| ChangelogError {
            geography: "every geography".into(),
            problem,
        })
    }

    fn retired(
        &self,
        geography: &Geography,
        retirements: &[Retirement],
    ) -> Result<(), ChangelogError> {
        crate::retirements::publish(&self.producer, &self.directory, geography, retirements)
            .map_err(|problem| ChangelogError {
                geography: geography.to_string(),
                problem,
            })
    }
}

/// What one rebuild did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RebuildReport {
    /// Changelog messages read.
    pub messages: u64,
    /// What the stores imported.
    pub imported: Imported,
    /// Lost partitions whose data this node holds until their new owners announce them.
    pub releasing: u64,
    /// Seconds it took.
    pub secs: f64,
    /// Whether it was cancelled (a rebalance took the partitions first) before it finished.
    pub cancelled: bool,
}

/// Rebuilds the partitions a node is assigned, and lets go of those it lost.
pub struct Rebuilder {
    config: KafkaConfig,
    stores: Arc<Stores>,
    partitions: Arc<PartitionMap>,
    retention: RetentionConfig,
    registry: Arc<RwLock<ResourceRegistry>>,
    /// Partitions this node lost and still holds the data of, until another node announces
    /// them (it has rebuilt them by then): see [`Rebuilder::release`].
    releasing: Mutex<BTreeSet<(Geography, i32)>>,
    /// Partitions being rebuilt here, and those whose rebuild a rebalance cancelled until
    /// they are let go of: not served.
    arriving: Mutex<BTreeSet<(Geography, i32)>>,
    /// Held while partitions start moving and while lost ones are let go of.
    moves: Mutex<()>,
}

impl std::fmt::Debug for Rebuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuilder")
            .field("topics", &self.config.changelog_topics)
            .finish_non_exhaustive()
    }
}

impl Rebuilder {
    /// A rebuilder for `stores`, whose changelog is `partitions`' geographies' changelog
    /// topics; what is past `retention` for the resources of `registry` is left out. A thread
    /// applies the ratchet retirements other nodes publish, and lets go of lost partitions
    /// once their new owners have announced them ([`release`]), reading the node directory
    /// every `RELEASE_EVERY`; it ends with the rebuilder.
    ///
    /// [`release`]: Rebuilder::release
    pub fn start(
        config: &KafkaConfig,
        stores: Arc<Stores>,
        partitions: Arc<PartitionMap>,
        retention: RetentionConfig,
        registry: Arc<RwLock<ResourceRegistry>>,
    ) -> Result<Arc<Self>, KafkaError> {
        let rebuilder = Arc::new(Self {
            config: config.clone(),
            stores,
            partitions,
            retention,
            registry,
            releasing: Mutex::new(BTreeSet::new()),
            arriving: Mutex::new(BTreeSet::new()),
            moves: Mutex::new(()),
        });
        // The stores learn which resources are moving, so that only one node at a time
        // writes each to the changelog.
        let geographies: BTreeSet<Geography> = rebuilder
            .partitions
            .all()
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        for geography in geographies {
            let weak = Arc::downgrade(&rebuilder);
            let store = rebuilder
                .stores
                .geo(&geography)
                .map_err(KafkaError::store)?;
            store.watch_moves(Arc::new(move |resource: &str| {
                weak.upgrade()?.moving(&geography, resource)
            }));
        }
        let follower = RetirementFollower::new(
            config,
            rebuilder.stores.clone(),
            rebuilder.partitions.all().into_iter().map(|(g, _)| g),
        )?;
        // Retired while this node was stopped: applied before anything is imported.
        follower.catch_up_to_end()?;
        let weak = Arc::downgrade(&rebuilder);
        std::thread::Builder::new()
            .name("changelog-release".into())
            .spawn(move || loop {
                std::thread::sleep(RELEASE_EVERY);
                let Some(rebuilder) = weak.upgrade() else {
                    return;
                };
                if let Err(error) = follower.catch_up() {
                    warn!(%error, "Applying retired ratchet generations failed; retrying.");
                }
                if rebuilder.lock_releasing().is_empty() {
                    continue;
                }
                match crate::directory::read_directory(&rebuilder.config) {
                    Ok(directory) => {
                        if let Err(error) = rebuilder.release(&directory) {
                            warn!(%error, "Letting go of partitions another node took failed; retrying.");
                        }
                    }
                    Err(error) => {
                        warn!(%error, "Reading the node directory failed; lost partitions are let go of later.")
                    }
                }
            })
            .map_err(|e| KafkaError::Io {
                path: "the changelog-release thread".into(),
                error: e,
            })?;
        Ok(rebuilder)
    }

    fn lock_releasing(&self) -> MutexGuard<'_, BTreeSet<(Geography, i32)>> {
        self.releasing.lock().expect("lock poisoned")
    }

    fn lock_arriving(&self) -> MutexGuard<'_, BTreeSet<(Geography, i32)>> {
        self.arriving.lock().expect("lock poisoned")
    }

    /// Whether `resource` of `geography` is moving to or from this node.
    pub fn moving(&self, geography: &Geography, resource: &str) -> Option<Moving> {
        // One lock at a time, never while letting go (see `release`).
        let partition = || {
            (
                geography.clone(),
                self.partitions.partition_of(geography, resource),
            )
        };
        {
            let arriving = self.lock_arriving();
            if !arriving.is_empty() && arriving.contains(&partition()) {
                return Some(Moving::Arriving);
            }
        }
        let releasing = self.lock_releasing();
        (!releasing.is_empty() && releasing.contains(&partition())).then_some(Moving::Leaving)
    }

    /// Lets go of the data of lost partitions that another member of the group has announced
    /// in `directory` (it announces them once it has rebuilt them), so that every record is
    /// on some node's disk while its partition moves. Returns how many resources went.
    pub fn release(&self, directory: &[NodeEntry]) -> Result<u64, KafkaError> {
        let log_topics = self.config.log_topics();
        let taken: BTreeSet<(Geography, i32)> = directory
            .iter()
            .filter(|entry| entry.node != self.config.node)
            .flat_map(|entry| &entry.partitions)
            .filter_map(|p| Some((log_topics.geography(&p.topic)?, p.partition)))
            .collect();
        // Held throughout, so that no rebalance gives a partition back while it goes; the
        // sets themselves are locked only briefly (writes ask them whether a resource moves,
        // while holding their store's writer lock, which letting go needs too).
        let _moves = self.moves.lock().expect("lock poisoned");
        let now: Vec<(Geography, i32)> = self
            .lock_releasing()
            .intersection(&taken)
            .cloned()
            .collect();
        if now.is_empty() {
            return Ok(0);
        }
        let forgotten = self.forget(&now)?;
        let mut releasing = self.lock_releasing();
        let mut arriving = self.lock_arriving();
        for partition in &now {
            releasing.remove(partition);
            arriving.remove(partition);
        }
        info!(
            partitions = now.len(),
            resources = forgotten,
            "Let go of partitions their new owners have rebuilt."
        );
        Ok(forgotten)
    }

    /// The partition map the changelog producer shares.
    pub fn partitions(&self) -> &Arc<PartitionMap> {
        &self.partitions
    }

    /// Rebuilds the `gained` partitions from the changelog (a gained partition still held
    /// from before is imported over what is held), which [`Rebuilder::begin_move`] marked as
    /// arriving. Stops early, with `cancelled` in the report, once `cancel` is set.
    pub fn rebuild_gained(
        &self,
        gained: &[(Geography, i32)],
        cancel: &AtomicBool,
    ) -> Result<RebuildReport, KafkaError> {
        let _span = info_span!("rebuild", gained = gained.len()).entered();
        let started = Instant::now();
        let mut report = RebuildReport {
            releasing: self.lock_releasing().len() as u64,
            ..RebuildReport::default()
        };
        let mut by_geography: BTreeMap<Geography, Vec<i32>> = BTreeMap::new();
        for (geography, partition) in gained {
            by_geography
                .entry(geography.clone())
                .or_default()
                .push(*partition);
        }
        let rebuilt = !by_geography.is_empty();
        for (geography, partitions) in by_geography {
            self.rebuild(&geography, &partitions, &mut report, cancel)?;
            if report.cancelled {
                report.secs = started.elapsed().as_secs_f64();
                return Ok(report);
            }
        }
        // Rebuilt: this node writes them from here on (the reconcile below included), and
        // what was written of them meanwhile goes to the changelog now.
        let mut arriving = self.lock_arriving();
        for partition in gained {
            arriving.remove(partition);
        }
        drop(arriving);
        let geographies: BTreeSet<&Geography> = gained.iter().map(|(g, _)| g).collect();
        for geography in geographies {
            let store = self.stores.geo(geography).map_err(KafkaError::store)?;
            store.send_arrived().map_err(KafkaError::store)?;
        }
        if rebuilt {
            // The registry as it is now applies to what came in: content of a resource whose
            // content logging was turned off is destroyed here too, and in the changelog.
            let registry = self
                .registry
                .read()
                .expect("registry lock poisoned")
                .clone();
            self.stores
                .reconcile(&registry)
                .map_err(KafkaError::store)?
                .log();
        }
        report.secs = started.elapsed().as_secs_f64();
        Ok(report)
    }

    fn forget(&self, lost: &[(Geography, i32)]) -> Result<u64, KafkaError> {
        let mut forgotten = 0;
        let lost: BTreeSet<&(Geography, i32)> = lost.iter().collect();
        let geographies: BTreeSet<&Geography> = lost.iter().map(|(g, _)| g).collect();
        for geography in geographies {
            let store = self.stores.geo(geography).map_err(KafkaError::store)?;
            for resource in store.resources_with_records().map_err(KafkaError::store)? {
                let partition = self.partitions.partition_of(geography, &resource);
                if !lost.contains(&(geography.clone(), partition)) {
                    continue;
                }
                let Ok(id) = ResourceId::parse(&resource) else {
                    continue;
                };
                match store.forget_resource(&id).map_err(KafkaError::store)? {
                    Some(done) => {
                        forgotten += 1;
                        info!(%geography, resource_id = %resource, records = done.records, partition, "Let go of a resource whose partition moved to another node.");
                    }
                    None => {
                        warn!(%geography, resource_id = %resource, partition, "Keeping a resource whose partition moved: the store held it before it was mirrored to the changelog.")
                    }
                }
            }
        }
        Ok(forgotten)
    }

    /// Notes that `lost` partitions are leaving this node (taken by a rebalance, or their
    /// rebuild cancelled: what it holds of them goes once another node has them, or is
    /// imported over if they come back) and that `gained` ones are arriving (being rebuilt).
    /// Idempotent; the consumer calls it in the assignment callback, before the rebuild's
    /// thread starts, so that no write of a moving resource goes to the changelog meanwhile.
    pub fn begin_move(&self, lost: &[(Geography, i32)], gained: &[(Geography, i32)]) {
        let _moves = self.moves.lock().expect("lock poisoned");
        let mut releasing = self.lock_releasing();
        releasing.extend(lost.iter().cloned());
        for partition in gained {
            releasing.remove(partition);
        }
        drop(releasing);
        self.lock_arriving().extend(gained.iter().cloned());
    }

    /// Reads `partitions` of `geography`'s changelog from the beginning to their current end
    /// into its store, unless `cancel` is set first (then `report.cancelled`).
    fn rebuild(
        &self,
        geography: &Geography,
        partitions: &[i32],
        report: &mut RebuildReport,
        cancel: &AtomicBool,
    ) -> Result<(), KafkaError> {
        let topic = self.config.changelog_topics().of(geography);
        let store = self.stores.geo(geography).map_err(KafkaError::store)?;
        let cutoffs = {
            let registry = self.registry.read().expect("registry lock poisoned");
            Cutoffs::new(
                &self.retention,
                &registry,
                geography,
                self.stores.clock().today(),
            )
        };
        let consumer: BaseConsumer = self
            .config
            .consumer(&[
                (
                    "group.id",
                    format!("vigil-changelog-reader-{}", self.config.node),
                ),
                ("enable.auto.commit", "false".into()),
                ("enable.partition.eof", "false".into()),
                ("fetch.wait.max.ms", self.config.fetch_wait_ms.to_string()),
                // Whole partitions per fetch where they fit: a fetch that resumes inside a
                // record batch loses the rest of that batch on Tansu 0.6 (see the book's
                // Kafka chapter), and a large fetch resumes far less often.
                ("max.partition.fetch.bytes", REBUILD_FETCH_BYTES.to_string()),
                ("fetch.max.bytes", REBUILD_FETCH_BYTES.to_string()),
                (
                    "receive.message.max.bytes",
                    (REBUILD_FETCH_BYTES + (1 << 20)).to_string(),
                ),
            ])
            .create()
            .map_err(KafkaError::client("creating the changelog reader"))?;
        let mut ends = BTreeMap::new();
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, READ_STALL)
                .map_err(KafkaError::client("reading the changelog's end"))?;
            if high > low {
                ends.insert(partition, high);
                list.add_partition_offset(&topic, partition, Offset::Beginning)
                    .expect("a valid offset");
            }
        }
        if ends.is_empty() {
            return Ok(());
        }
        consumer
            .assign(&list)
            .map_err(KafkaError::client("reading the changelog"))?;
        let mut read: BTreeMap<i32, i64> = BTreeMap::new();
        let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
        let mut last_message = Instant::now();
        // To the end the broker reports, then on until nothing more comes for `END_QUIET`:
        // Tansu 0.6 reports the end of a partition whose last record batch holds several
        // messages as that batch's first offset plus one, which would leave out the rest of
        // the batch.
        loop {
            if cancel.load(std::sync::atomic::Ordering::Acquire) {
                report.cancelled = true;
                return Ok(());
            }
            let at_end = ends
                .iter()
                .all(|(p, end)| read.get(p).is_some_and(|o| o + 1 >= *end));
            if at_end && last_message.elapsed() >= END_QUIET {
                break;
            }
            if !at_end && last_message.elapsed() > READ_STALL {
                return Err(KafkaError::TimedOut(format!(
                    "changelog {topic} could not be read to its end: no message for {} s",
                    READ_STALL.as_secs()
                )));
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.map_err(KafkaError::client("reading the changelog"))?;
            last_message = Instant::now();
            read.insert(message.partition(), message.offset());
            report.messages += 1;
            let Some(key) = message.key() else { continue };
            if let Some(resource) = changelog::resource_of(key) {
                self.partitions
                    .learn(geography, resource, message.partition());
            }
            chunk.push((key.to_vec(), message.payload().map(<[u8]>::to_vec)));
            if chunk.len() >= IMPORT_CHUNK {
                report.imported += store.import(&chunk, &cutoffs).map_err(KafkaError::store)?;
                chunk.clear();
            }
        }
        report.imported += store.import(&chunk, &cutoffs).map_err(KafkaError::store)?;
        for (partition, end) in &ends {
            let last = read.get(partition).copied().unwrap_or(-1);
            info!(%topic, partition, reported_end = end, last_offset = last, "Read a changelog partition to its end.");
        }
        Ok(())
    }
}

/// A node's claim to create a geography's day-key ratchet, in the node directory topic (IDs
/// only: the ratchet's key never leaves the nodes' keyrings but between nodes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatchetClaim {
    /// The claiming node.
    pub node: String,
    /// The ratchet it would create (its public ID, hex).
    pub ratchet: String,
    /// Claims start at generation 1; a node that won and lost its state before any other
    /// node copied it claims the next generation.
    pub generation: u32,
}

/// The directory key of `node`'s claim for `geography`.
fn claim_key(geography: &Geography, node: &str) -> String {
    format!("ratchet/{geography}/{node}")
}

/// Whether a directory key is a ratchet claim (not a node entry).
pub(crate) fn is_claim_key(key: &[u8]) -> bool {
    key.starts_with(b"ratchet/")
}

/// Publishes `claim` for `geography` in the node directory, and waits for the broker.
pub fn claim_ratchet(
    config: &KafkaConfig,
    geography: &Geography,
    claim: &RatchetClaim,
) -> Result<(), KafkaError> {
    crate::directory::ensure_directory_topic(config)?;
    let producer = crate::producer::producer(config)?;
    let key = claim_key(geography, &claim.node);
    let value = serde_json::to_vec(claim).expect("a claim encodes");
    let record = BaseRecord::<[u8], [u8]>::to(&config.node_topic)
        .key(key.as_bytes())
        .payload(&value);
    crate::producer::send(&producer, record).map_err(KafkaError::client("claiming a ratchet"))?;
    crate::producer::flush(&producer).map_err(KafkaError::Delivery)
}

/// The claim that decides who creates `geography`'s ratchet: among the claims of the highest
/// generation, the first in the directory topic's order. `None` before anyone claimed.
pub fn winning_claim(
    config: &KafkaConfig,
    geography: &Geography,
) -> Result<Option<RatchetClaim>, KafkaError> {
    let prefix = format!("ratchet/{geography}/");
    let mut claims: Vec<(i64, RatchetClaim)> = crate::directory::read_latest(config)?
        .into_iter()
        .filter(|last| last.key.starts_with(&prefix))
        .filter_map(|last| Some((last.offset, serde_json::from_slice(&last.value?).ok()?)))
        .collect();
    let top = claims.iter().map(|(_, c)| c.generation).max();
    claims.retain(|(_, c)| Some(c.generation) == top);
    claims.sort_by_key(|(offset, _)| *offset);
    Ok(claims.into_iter().next().map(|(_, claim)| claim))
}
