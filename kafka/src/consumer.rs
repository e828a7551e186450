//! The consumer-group source: log topics in, offsets committed only behind durability.
//!
//! Every message pushed into the pipeline is noted in an [`OffsetBook`] under the number of the
//! batch it went into. When the store stage reports batches durable, their offsets become
//! committable, and are committed (synchronously: the next commit retries a failed one). A crash therefore loses no record: what was not committed
//! is delivered again, and the store's idempotent writes absorb what was already stored.
//!
//! Rebalances: librdkafka calls the revoke callback on the polling thread, inside `poll`,
//! before partitions move. The callback sends the partial batch on, waits until everything
//! pushed so far is durable, and commits it, so the next owner of a partition starts exactly
//! where this one stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};
use vigil_core::{Check, Geography, Health};
use vigil_ingest::{Line, SourcePosition};
use vigil_pipeline::{BatchSeq, Feed, Handoff, PipelineError, Source};

use crate::changelog::{RebuildReport, Rebuilder};
use crate::directory::{Addresses, Announcer, OwnedPartition};
use crate::takeover::Takeover;
use crate::{client_context, ensure_topics, KafkaConfig, KafkaError, Topics};

/// How long one poll waits for a message; also how quickly a stop request is noticed and how
/// long a record waits in a partial batch when traffic is slow.
const POLL: Duration = Duration::from_millis(100);

/// How long librdkafka pauses fetching once its queue of fetched messages is full. The decode
/// thread drains that queue continuously, so librdkafka's default (1 s) left the consumer idle
/// for most of each second under a backlog: Kafka → stored ran at a quarter of its rate.
const FETCH_QUEUE_BACKOFF: Duration = Duration::from_millis(10);

/// How long the group waits for a member between polls before evicting it. The decode thread
/// stops polling while a slow store or dead-letter broker applies backpressure, or while a
/// revoke drains, which may take up to the dead-letter flush timeout.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(600);

/// What a consumer reads and when it stops.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The geographies whose log topics to consume.
    pub geographies: Vec<Geography>,
    /// Set (by a signal handler) to stop: the source stops fetching, drains and commits.
    pub stop: Arc<AtomicBool>,
    /// Stop once no message has arrived for this long after partitions were assigned (for
    /// loading a backlog and for benchmarks); `None` runs until stopped.
    pub stop_when_idle: Option<Duration>,
    /// Largest accepted message, in bytes (`ingest.max_record_bytes`): sizes the consumer's
    /// fetches; the pipeline rejects longer messages as oversized.
    pub max_record_bytes: usize,
    /// Where the consumer says whether it has joined its group (`kafka` in `/readyz`).
    pub health: Arc<Health>,
    /// This node's API and peer addresses, announced with its partitions in the node
    /// directory.
    pub addresses: Addresses,
    /// With a changelog: rebuilds the partitions assigned to this node before they are
    /// consumed, and lets go of those it lost.
    pub rebuilder: Option<Arc<Rebuilder>>,
}

/// Offsets pushed into the pipeline, by batch, and those ready to commit.
#[derive(Default)]
struct OffsetBook {
    /// Per batch, the highest offset pushed per partition.
    pending: BTreeMap<BatchSeq, Vec<(Arc<str>, i32, i64)>>,
    /// Per partition, the next offset to consume: one past the highest durable offset.
    committable: HashMap<(Arc<str>, i32), i64>,
    /// Every batch below this has been moved from `pending` to `committable`.
    advanced: BatchSeq,
    /// Whether `committable` holds offsets not yet committed.
    dirty: bool,
}

impl OffsetBook {
    fn record(&mut self, seq: BatchSeq, topic: &Arc<str>, partition: i32, offset: i64) {
        let partitions = self.pending.entry(seq).or_default();
        match partitions
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        {
            Some(entry) => entry.2 = entry.2.max(offset),
            None => partitions.push((topic.clone(), partition, offset)),
        }
    }

    /// Makes the offsets of batches below `durable` committable.
    fn advance(&mut self, durable: BatchSeq) {
        if durable <= self.advanced {
            return;
        }
        self.advanced = durable;
        let still_pending = self.pending.split_off(&durable);
        for (topic, partition, offset) in std::mem::replace(&mut self.pending, still_pending)
            .into_values()
            .flatten()
        {
            let next = self.committable.entry((topic, partition)).or_insert(0);
            *next = (*next).max(offset + 1);
            self.dirty = true;
        }
    }

    fn commit_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::with_capacity(self.committable.len());
        for ((topic, partition), next) in &self.committable {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .expect("a valid offset");
        }
        list
    }

    /// Drops what is known of partitions this consumer no longer owns.
    fn forget(&mut self, revoked: &TopicPartitionList) {
        for element in revoked.elements() {
            self.committable
                .retain(|(t, p), _| !(*p == element.partition() && &**t == element.topic()));
            for partitions in self.pending.values_mut() {
                partitions
                    .retain(|(t, p, _)| !(*p == element.partition() && &**t == element.topic()));
            }
        }
    }
}

/// How often librdkafka reports statistics, from which each partition's consumer lag is read.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// The consumer's callbacks: rebalances drain and commit; commit failures are retried;
/// statistics become the lag gauges.
struct GroupContext {
    handoff: Mutex<Option<Arc<Handoff>>>,
    book: Mutex<OffsetBook>,
    assigned: AtomicBool,
    group: String,
    health: Arc<Health>,
    /// Announces this member's partitions in the node directory.
    directory: Announcer,
    rebuilder: Option<Arc<Rebuilder>>,
    /// The partitions whose data this member holds current: its last assignment, less the
    /// partitions still being rebuilt (`None` before the first assignment).
    owned: Mutex<Option<BTreeSet<(Geography, i32)>>>,
    /// The rebuild of newly assigned partitions, while it runs.
    takeover: Mutex<Option<Takeover>>,
    /// A rebuild that failed: the source stops with it.
    failed: Mutex<Option<String>>,
    log_topics: Topics,
}

client_context!(GroupContext, stats);

impl GroupContext {
    /// Each assigned partition's lag: messages between the consumer's position and the end.
    fn statistics(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in statistics.topics {
            for (partition, stats) in stats.partitions {
                // -1: the internal unassigned partition, or a partition not consumed here.
                if partition < 0 || stats.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!("vigil_kafka_consumer_lag", "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
            }
        }
    }

    fn book(&self) -> MutexGuard<'_, OffsetBook> {
        self.book.lock().expect("offset book lock poisoned")
    }

    fn handoff(&self) -> Option<Arc<Handoff>> {
        self.handoff.lock().expect("handoff lock poisoned").clone()
    }

    /// Commits every offset that is durable and not yet committed, and waits for the broker
    /// to acknowledge it (a commit each commit interval costs one round trip).
    fn commit(&self, consumer: &BaseConsumer<Self>, durable: BatchSeq) {
        let list = {
            let mut book = self.book();
            book.advance(durable);
            if !book.dirty {
                return;
            }
            book.dirty = false;
            book.commit_list()
        };
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                metrics::counter!("vigil_kafka_commits_total", "outcome" => "ok").increment(1);
                debug!(offsets = ?list, "Offsets committed.");
            }
            Err(error) => {
                metrics::counter!("vigil_kafka_commits_total", "outcome" => "failed").increment(1);
                warn!(%error, "Committing offsets failed; retrying with the next commit.");
                self.book().dirty = true;
            }
        }
    }
}

impl GroupContext {
    /// With a changelog: notes the partitions this member lost (to let go of once their new
    /// owners have them) and starts rebuilding those it gained, on a thread of their own;
    /// `post_rebalance` pauses them until the rebuild is done ([`GroupContext::settle`]).
    /// Returns whether a rebuild started (`kafka` in `/readyz` says `rebuilding` meanwhile).
    fn take_over(&self, assigned: &TopicPartitionList) -> bool {
        let Some(rebuilder) = &self.rebuilder else {
            return false;
        };
        let now: BTreeSet<(Geography, i32)> = assigned
            .elements()
            .iter()
            .filter_map(|e| Some((self.log_topics.geography(e.topic())?, e.partition())))
            .collect();
        let mut owned = self.owned.lock().expect("lock poisoned");
        let (gained, lost): (Vec<_>, Vec<_>) = match owned.take() {
            Some(before) => (
                now.difference(&before).cloned().collect(),
                before.difference(&now).cloned().collect(),
            ),
            // The first assignment: every partition is rebuilt (the store may hold nothing, or
            // what a previous life stored), and whatever the store holds of another partition
            // is a previous life's, to let go of too.
            None => (
                now.iter().cloned().collect(),
                rebuilder
                    .partitions()
                    .all()
                    .into_iter()
                    .filter(|p| !now.contains(p))
                    .collect(),
            ),
        };
        // What this member holds current data of: the partitions it kept; those it gained
        // join once rebuilt.
        *owned = Some(
            now.iter()
                .filter(|p| !gained.contains(p))
                .cloned()
                .collect(),
        );
        drop(owned);
        rebuilder.begin_move(&lost, &gained);
        if gained.is_empty() {
            return false;
        }
        let paused = assigned
            .elements()
            .iter()
            .filter(|e| {
                self.log_topics
                    .geography(e.topic())
                    .is_some_and(|g| gained.contains(&(g, e.partition())))
            })
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        self.health.set(
            "kafka",
            Check::NotReady(format!(
                "rebuilding {} partitions from the changelog",
                gained.len()
            )),
        );
        match Takeover::start(rebuilder.clone(), gained, paused) {
            Ok(takeover) => {
                *self.takeover.lock().expect("lock poisoned") = Some(takeover);
                true
            }
            Err(error) => {
                self.fail(error);
                false
            }
        }
    }

    /// A rebuild failed: the source stops, so that another member takes its partitions.
    fn fail(&self, error: impl std::fmt::Display) {
        tracing::error!(%error, "Rebuilding partitions from the changelog failed; stopping this node so that another takes them.");
        *self.failed.lock().expect("lock poisoned") = Some(error.to_string());
    }

    /// Cancels a rebuild still running (a rebalance came first): what it imported of its
    /// partitions is let go of unless they come back. A rebuild that had just finished counts
    /// as done.
    fn cancel_takeover(&self) {
        let Some(takeover) = self.takeover.lock().expect("lock poisoned").take() else {
            return;
        };
        let gained = takeover.gained.clone();
        match takeover.cancel() {
            Ok(report) if !report.cancelled => self.rebuilt(gained, &report),
            Ok(report) => {
                if let Some(rebuilder) = &self.rebuilder {
                    rebuilder.begin_move(&gained.iter().cloned().collect::<Vec<_>>(), &[]);
                }
                info!(
                    partitions = gained.len(),
                    records = report.imported.records,
                    "A rebalance cancelled the rebuild of partitions it took away."
                );
            }
            Err(error) => self.fail(error),
        }
    }

    /// Once a rebuild has ended: resumes its partitions and announces them (done), or stops
    /// the source (failed). Called from the polling loop.
    fn settle(&self, consumer: &BaseConsumer<Self>) {
        let mut slot = self.takeover.lock().expect("lock poisoned");
        if !slot.as_ref().is_some_and(Takeover::is_finished) {
            return;
        }
        let takeover = slot.take().expect("checked");
        drop(slot);
        let paused = takeover.paused_list();
        let gained = takeover.gained.clone();
        match takeover.finish() {
            Ok(report) => self.rebuilt(gained, &report),
            Err(error) => return self.fail(error),
        }
        if let Err(error) = consumer.resume(&paused) {
            return self.fail(format!("resuming the rebuilt partitions: {error}"));
        }
        match consumer.assignment() {
            Ok(assigned) => self.joined(&assigned, &BTreeSet::new()),
            Err(error) => self.fail(format!("reading the assignment: {error}")),
        }
    }

    /// `gained` are rebuilt: this member holds them current from now on.
    fn rebuilt(&self, gained: BTreeSet<(Geography, i32)>, report: &RebuildReport) {
        metrics::counter!("vigil_changelog_rebuilt_records_total")
            .increment(report.imported.records);
        metrics::histogram!("vigil_changelog_rebuild_seconds").record(report.secs);
        info!(
            gained = gained.len(),
            messages = report.messages,
            records = report.imported.records,
            entries = report.imported.entries,
            data_keys = report.imported.data_keys,
            expired = report.imported.expired,
            foreign_keys = report.imported.foreign_keys,
            releasing = report.releasing,
            secs = report.secs,
            records_per_sec = report.imported.records as f64 / report.secs.max(1e-9),
            "Rebuilt partitions from the changelog."
        );
        if let Some(owned) = self.owned.lock().expect("lock poisoned").as_mut() {
            owned.extend(gained);
        }
    }

    /// Says the member is ready with `assigned`, and announces those partitions but
    /// `rebuilding` in the node directory.
    fn joined(&self, assigned: &TopicPartitionList, rebuilding: &BTreeSet<(Geography, i32)>) {
        let announced: Vec<OwnedPartition> = assigned
            .elements()
            .iter()
            .filter(|e| {
                !self
                    .log_topics
                    .geography(e.topic())
                    .is_some_and(|g| rebuilding.contains(&(g, e.partition())))
            })
            .map(|e| OwnedPartition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            })
            .collect();
        if rebuilding.is_empty() {
            self.health.set(
                "kafka",
                Check::Ready(format!(
                    "joined group {}, {} partitions assigned",
                    self.group,
                    assigned.count()
                )),
            );
        }
        self.directory.announce(announced);
        if rebuilding.is_empty() {
            self.assigned.store(true, Ordering::Release);
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                info!(
                    partitions = revoked.count(),
                    "Partitions revoked: draining and committing in-flight records."
                );
                metrics::counter!("vigil_kafka_rebalances_total", "kind" => "revoke").increment(1);
                self.health.set(
                    "kafka",
                    Check::NotReady(format!("rebalancing group {}", self.group)),
                );
                for element in revoked.elements() {
                    metrics::gauge!("vigil_kafka_consumer_lag", "topic" => element.topic().to_owned(), "partition" => element.partition().to_string())
                        .set(0.0);
                }
                self.cancel_takeover();
                if let Some(handoff) = self.handoff() {
                    match handoff.sync() {
                        Ok(durable) => self.commit(consumer, durable),
                        Err(stopped) => {
                            warn!(%stopped, "Could not drain before the rebalance; uncommitted records will be delivered again.")
                        }
                    }
                }
                self.book().forget(revoked);
            }
            Rebalance::Assign(assigned) => {
                info!(partitions = assigned.count(), "Partitions assigned.");
                metrics::counter!("vigil_kafka_rebalances_total", "kind" => "assign").increment(1);
                self.assigned.store(false, Ordering::Release);
                let rebuilding = match self.take_over(assigned) {
                    true => self
                        .takeover
                        .lock()
                        .expect("lock poisoned")
                        .as_ref()
                        .map(|t| t.gained.clone())
                        .unwrap_or_default(),
                    false => BTreeSet::new(),
                };
                self.joined(assigned, &rebuilding);
            }
            Rebalance::Error(error) => warn!(%error, "Rebalance failed."),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // The partitions being rebuilt are fetched from only once their rebuild is done.
        if let Rebalance::Assign(_) = rebalance {
            if let Some(takeover) = self.takeover.lock().expect("lock poisoned").as_ref() {
                if let Err(error) = consumer.pause(&takeover.paused_list()) {
                    self.fail(format!("pausing the partitions being rebuilt: {error}"));
                }
            }
        }
    }
}

/// `vigil run --kafka`: a member of the consumer group reading the geographies' log topics.
pub struct KafkaSource {
    consumer: BaseConsumer<GroupContext>,
    log_topics: Topics,
    topics: Vec<String>,
    options: SourceOptions,
}

impl KafkaSource {
    /// Creates the consumer (and the topics, when configured to); it joins the group when the
    /// pipeline runs it.
    pub fn new(config: &KafkaConfig, options: SourceOptions) -> Result<Self, KafkaError> {
        config.validate()?;
        if options.geographies.is_empty() {
            return Err(KafkaError::Config(
                "no geography to consume: the registry has no resources".into(),
            ));
        }
        let log_topics = config.log_topics();
        let topics: Vec<String> = options
            .geographies
            .iter()
            .map(|g| log_topics.of(g))
            .collect();
        ensure_topics(config, &topics)?;
        options.health.set(
            "kafka",
            Check::NotReady(format!("joining group {}", config.group_id)),
        );
        let context = GroupContext {
            handoff: Mutex::new(None),
            book: Mutex::new(OffsetBook::default()),
            assigned: AtomicBool::new(false),
            group: config.group_id.clone(),
            health: options.health.clone(),
            directory: Announcer::new(config, options.addresses.clone())?,
            rebuilder: options.rebuilder.clone(),
            owned: Mutex::new(None),
            takeover: Mutex::new(None),
            failed: Mutex::new(None),
            log_topics: log_topics.clone(),
        };
        let consumer = config
            .consumer(&[
                ("group.id", config.group_id.clone()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                ("auto.offset.reset", "earliest".into()),
                (
                    "statistics.interval.ms",
                    STATS_INTERVAL.as_millis().to_string(),
                ),
                ("enable.partition.eof", "false".into()),
                ("session.timeout.ms", config.session_timeout_ms.to_string()),
                (
                    "max.poll.interval.ms",
                    MAX_POLL_INTERVAL.as_millis().to_string(),
                ),
                (
                    "queued.max.messages.kbytes",
                    config.fetch_buffer_kib.to_string(),
                ),
                ("fetch.wait.max.ms", config.fetch_wait_ms.to_string()),
                (
                    "fetch.queue.backoff.ms",
                    FETCH_QUEUE_BACKOFF.as_millis().to_string(),
                ),
                (
                    "fetch.message.max.bytes",
                    (options.max_record_bytes + 1024).to_string(),
                ),
            ])
            .create_with_context(context)
            .map_err(KafkaError::client("creating the consumer"))?;
        Ok(Self {
            consumer,
            log_topics,
            topics,
            options,
        })
    }

    fn commit(&self, handoff: &Handoff) {
        (self.consumer.context()).commit(&self.consumer, handoff.durable());
    }

    fn consume(&self, feed: &mut Feed<'_>) -> Result<(), PipelineError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|e| self.failed("subscribing", e))?;
        info!(topics = ?self.topics, "Subscribed; joining the consumer group.");
        // Topic name → (shared name for positions, the geography whose topic it is).
        let mut known: HashMap<String, (Arc<str>, Option<Geography>)> = HashMap::new();
        let mut last_input: Option<Instant> = None;
        let mut consumed: u64 = 0;
        let handoff = feed.handoff().clone();
        let limit = feed.max_record_bytes();
        loop {
            if self.options.stop.load(Ordering::Acquire) {
                info!("Stopping: draining in-flight records and committing.");
                self.options.health.set(
                    "kafka",
                    Check::NotReady("stopping: draining and committing".into()),
                );
                return Ok(());
            }
            self.consumer.context().settle(&self.consumer);
            if let Some(failure) = self
                .consumer
                .context()
                .failed
                .lock()
                .expect("lock poisoned")
                .take()
            {
                return Err(self.failed("rebuilding from the changelog", failure));
            }
            if self.consumer.context().assigned.load(Ordering::Acquire) {
                let idle_since = *last_input.get_or_insert_with(Instant::now);
                if let Some(idle) = self.options.stop_when_idle {
                    if idle_since.elapsed() >= idle {
                        info!(idle_secs = idle.as_secs_f64(), "No new messages: stopping.");
                        return Ok(());
                    }
                }
            }
            match self.consumer.poll(POLL) {
                None => handoff.send_partial()?,
                Some(Err(error)) => warn!(%error, "Consuming failed (retrying)."),
                Some(Ok(message)) => {
                    last_input = Some(Instant::now());
                    let name = message.topic();
                    let (topic, geography) = match known.get(name) {
                        Some(entry) => entry.clone(),
                        None => {
                            let entry = (name.into(), self.log_topics.geography(name));
                            known.insert(name.to_owned(), entry.clone());
                            entry
                        }
                    };
                    let payload = message.payload().unwrap_or_default();
                    let line = if payload.len() > limit {
                        Line::Oversized {
                            prefix: payload[..limit].to_vec(),
                            len: payload.len() as u64,
                        }
                    } else {
                        Line::Complete(payload.to_vec())
                    };
                    let (partition, offset) = (message.partition(), message.offset());
                    if let (Some(rebuilder), Some(geography), Some(key)) =
                        (&self.options.rebuilder, &geography, message.key())
                    {
                        if let Ok(resource) = std::str::from_utf8(key) {
                            rebuilder.partitions().learn(geography, resource, partition);
                        }
                    }
                    let position = SourcePosition::Kafka {
                        topic: topic.clone(),
                        partition,
                        offset,
                    };
                    let seq = feed.push(line, position, geography.as_ref())?;
                    consumed += 1;
                    handoff.set_progress(consumed);
                    handoff.send_older_than(POLL)?;
                    (self.consumer.context().book()).record(seq, &topic, partition, offset);
                }
            }
            self.commit(&handoff);
        }
    }

    fn failed(&self, operation: &str, error: impl std::fmt::Display) -> PipelineError {
        PipelineError::Source {
            source_name: self.name(),
            message: format!("{operation}: {error}"),
        }
    }
}

impl Source for KafkaSource {
    fn name(&self) -> String {
        format!("kafka {}", self.topics.join(","))
    }

    fn run(&mut self, feed: &mut Feed<'_>) -> Result<(), PipelineError> {
        let context = self.consumer.context();
        *context.handoff.lock().expect("handoff lock poisoned") = Some(feed.handoff().clone());
        let consumed = self.consume(feed);
        context.cancel_takeover();
        // Whatever happened, commit what is durable: after a clean stop that is everything.
        let synced = feed.handoff().sync();
        self.commit(feed.handoff());
        *context.handoff.lock().expect("handoff lock poisoned") = None;
        self.consumer.unsubscribe();
        // Gone from the directory: the members left take its partitions and announce them.
        context.directory.withdraw();
        consumed?;
        synced?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(book: &OffsetBook) -> Vec<(String, i32, i64)> {
        let mut v: Vec<_> = book
            .committable
            .iter()
            .map(|((t, p), o)| (t.to_string(), *p, *o))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_durable_batches_become_committable() {
        let t: Arc<str> = "vigil.logs.eu".into();
        let mut book = OffsetBook::default();
        book.record(0, &t, 0, 10);
        book.record(0, &t, 0, 11);
        book.record(0, &t, 1, 5);
        book.record(1, &t, 0, 12);
        book.advance(0);
        assert!(!book.dirty && book.committable.is_empty());
        book.advance(1);
        assert!(book.dirty);
        assert_eq!(
            offsets(&book),
            [
                ("vigil.logs.eu".into(), 0, 12),
                ("vigil.logs.eu".into(), 1, 6)
            ]
        );
        book.advance(2);
        assert_eq!(offsets(&book)[0], ("vigil.logs.eu".into(), 0, 13));
        assert_eq!(book.commit_list().count(), 2);
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let t: Arc<str> = "vigil.logs.eu".into();
        let mut book = OffsetBook::default();
        book.record(0, &t, 0, 1);
        book.record(1, &t, 1, 1);
        book.advance(1);
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("vigil.logs.eu", 0);
        revoked.add_partition("vigil.logs.eu", 1);
        book.forget(&revoked);
        book.advance(2);
        assert!(book.committable.is_empty());
    }
}
