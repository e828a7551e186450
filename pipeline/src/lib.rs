//! vigil's main job: source → decode/validate → route → seal → store, with dead letters.
//!
//! A run uses up to three threads joined by bounded channels, so reading and encryption,
//! scoring and storage writes overlap and memory stays bounded however large the input or the
//! backlog is:
//!
//! - the **decode** thread runs the [`Source`], which pushes each input into a [`Feed`]: the
//!   feed decodes and validates it, routes the record to its resource's home geography, seals
//!   (encrypts and encodes) it, and batches it (see [`handoff`]);
//! - the **detect** thread, when the pipeline has a harm classifier, scores each batch's
//!   content in one call (the plaintext never leaves memory; only scores are kept) and passes
//!   the batch on in order, so scoring never runs on the store thread;
//! - the calling thread **stores** each batch: each geography's records and their detections
//!   are written in one atomic sled batch per geography; it hands dead
//!   letters to their [`DeadLetterSink`], and makes both durable at the points the source asks
//!   for (a Kafka consumer commits offsets only up to them) or at the configured interval.
//!
//! Rejections never stop a run: each becomes one dead letter and one count. Only failures of
//! vigil's own machinery (the input cannot be read, a store or the dead-letter destination
//! cannot be written, the master key does not match) end it, with an error.
//!
//! With an [`AbuseStage`], the decode thread also runs the abuse policy's heuristics on each
//! record's content, and the store thread adds every newly stored record to its end user's and
//! resource's windows inside the same atomic write, opening cases; after each durability
//! point, new cases are published as flag events to a [`FlagSink`] (see [`abuse`]). Cases'
//! samples are queued for the LLM reviewer's worker threads ([`ReviewStage`]); the content of
//! records whose resource logs none is kept in memory only until its batch is written, for
//! in-flight review.

pub mod abuse;
pub mod flags;
pub mod handoff;
mod input;
pub mod lifecycle;
pub mod live;
pub mod review;
mod summary;
mod telemetry;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use tracing::{debug, info, info_span, warn};
use vigil_core::{Content, Geography, ResourceRegistry};
use vigil_detectors::heuristics::Scratch;
use vigil_detectors::{DetectorError, HarmClassifier, ToDetect};
use vigil_ingest::{
    decode, DeadLetter, DeadLetterError, DeadLetterSink, IngestConfig, Line, Payload,
    PayloadPolicy, RejectReason, Router, SourcePosition,
};
use vigil_storage::{GeoStore, SealedRecord, StorageError, Stores, WriteOutcome};

pub use abuse::{AbuseStage, PublishError};
pub use flags::{FlagFile, FlagSink, FlagSinkError};
pub use handoff::{BatchSeq, Handoff, Stopped};
pub use input::Input;
pub use lifecycle::{ExportReport, Lifecycle, LifecycleError, LifecycleSummary, Scheduled};
pub use live::{LiveRegistry, RegistryWatcher};
pub use review::{PolicyHandle, ReviewStage, ReviewSummary, StageSettings};
pub use summary::{AbuseSummary, CaseCounts, DetectionSummary, Percentiles, StageTimes, Summary};

use crate::abuse::Observed;
use crate::handoff::Cost;

/// Batches in flight between the threads.
const CHANNEL_BATCHES: usize = 4;

/// Failures that end a run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input could not be read.
    #[error("reading {input}: {source}")]
    Input {
        /// The input's name.
        input: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The source failed (for example, the Kafka client could not be set up).
    #[error("source {source_name}: {message}")]
    Source {
        /// The source's name.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// A store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Dead letters could not be written.
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
    /// The store stage stopped while the source still had inputs; the store stage's own
    /// error is the cause.
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// The classifier failed to score a batch.
    #[error(transparent)]
    Detection(#[from] DetectorError),
    /// Flag events could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The decode thread panicked (a bug).
    #[error("the decode thread panicked")]
    DecodePanicked,
    /// The detect thread panicked (a bug).
    #[error("the detect thread panicked")]
    DetectPanicked,
}

/// Reports progress of a run, in input bytes consumed.
pub trait Progress: Sync {
    /// Called after each batch is stored with the source's progress mark: input bytes read for
    /// files, messages consumed for Kafka.
    fn advanced(&self, bytes_read: u64);
}

impl Progress for () {
    fn advanced(&self, _: u64) {}
}

/// Where a run's inputs come from: a JSON-lines file ([`Input`]) or a Kafka consumer.
pub trait Source: Send {
    /// The source's name, for logs.
    fn name(&self) -> String;

    /// Pushes inputs into `feed` until the source ends or is asked to stop. A source that
    /// acknowledges inputs does so only for batches below [`Handoff::durable`], and calls
    /// [`Handoff::sync`] before it stops.
    fn run(&mut self, feed: &mut Feed<'_>) -> Result<(), PipelineError>;
}

/// When the store stage makes what it stored durable, besides the end of the run and the
/// sources' explicit [`Handoff::sync`] requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Only at the end of the run and when the source asks: fastest for files, which can be
    /// re-read after a crash.
    #[default]
    AtEnd,
    /// Also whenever this much time has passed with stored batches not yet durable, so a
    /// source can acknowledge them.
    Every(Duration),
}

/// What the decode thread hands on for one input.
enum Item {
    /// A record sealed for its geography's store.
    Sealed {
        geo: Arc<GeoStore>,
        record: SealedRecord,
        source: SourcePosition,
        /// The raw line, kept in case the store rejects it; `None` when its resource's content
        /// logging is off.
        raw: Option<Vec<u8>>,
        /// The content in flight, for the classifier and, when the resource logs no content,
        /// for in-flight review; `None` when neither needs it.
        content: Option<Content>,
        /// What the abuse stage needs of the record; `None` when the pipeline has none (boxed:
        /// it is most of an item's size).
        observed: Option<Box<Observed>>,
    },
    /// A rejected input.
    Rejected(DeadLetter),
}

/// Sealed records of one geography within a batch, with where each came from.
struct GeoBatch {
    geo: Arc<GeoStore>,
    records: Vec<SealedRecord>,
    origins: Vec<(SourcePosition, Option<Vec<u8>>)>,
    observed: Vec<Option<Box<Observed>>>,
    /// Content kept for in-flight review (resources that log none).
    in_flight: Vec<Option<Content>>,
}

/// The decode stage as a source sees it: push inputs in, in order.
pub struct Feed<'a> {
    pipeline: &'a Pipeline<'a>,
    router: Router<'a>,
    handoff: Arc<Handoff>,
    scratch: Scratch,
}

impl Feed<'_> {
    /// Decodes, validates, routes and seals one input and appends it to the current batch.
    /// `arrived_for` is the geography whose topic it came from, for sources partitioned by
    /// geography. Returns the number of the batch it went into.
    pub fn push(
        &mut self,
        line: Line,
        source: SourcePosition,
        arrived_for: Option<&Geography>,
    ) -> Result<BatchSeq, PipelineError> {
        let start = Instant::now();
        let bytes = line.len();
        let (item, cost) = self.pipeline.process(
            line,
            source,
            arrived_for,
            &self.router,
            &mut self.scratch,
            start,
        )?;
        Ok(self.handoff.push(item, bytes, cost)?)
    }

    /// Largest accepted input, in bytes (`ingest.max_record_bytes`); a longer one is pushed as
    /// [`Line::Oversized`].
    pub fn max_record_bytes(&self) -> usize {
        self.pipeline.config.max_record_bytes
    }

    /// The handoff to the store stage, for sending partial batches, waiting for durability,
    /// and sharing with callbacks.
    pub fn handoff(&self) -> &Arc<Handoff> {
        &self.handoff
    }
}

/// The stages of a run, over one registry and one set of stores.
pub struct Pipeline<'a> {
    registry: &'a ResourceRegistry,
    stores: &'a Stores,
    config: &'a IngestConfig,
    classifier: Option<&'a HarmClassifier>,
    abuse: Option<&'a AbuseStage>,
    durability: Durability,
    /// Which inputs' payloads dead letters keep, for the registry of that generation.
    payloads: Mutex<(u64, Arc<PayloadPolicy>)>,
    /// The registry as it is now, when it may change during the run.
    live: Option<LiveRegistry>,
    /// Resources whose unavailable key was already reported in this run (warned once each;
    /// every rejected record still gets its dead letter).
    key_warned: Mutex<HashSet<String>>,
}

impl<'a> Pipeline<'a> {
    /// A pipeline routing with `registry` into `stores`.
    pub fn new(
        registry: &'a ResourceRegistry,
        stores: &'a Stores,
        config: &'a IngestConfig,
    ) -> Self {
        Self {
            registry,
            stores,
            config,
            classifier: None,
            abuse: None,
            durability: Durability::AtEnd,
            payloads: Mutex::new((0, Arc::new(PayloadPolicy::new(registry)))),
            live: None,
            key_warned: Mutex::new(HashSet::new()),
        }
    }

    /// Scores every record's content with `classifier`, if any, and stores the detections.
    pub fn with_classifier(mut self, classifier: Option<&'a HarmClassifier>) -> Self {
        self.classifier = classifier;
        self
    }

    /// Tracks recurring abuse with `abuse`, if any: heuristics, windows, cases and flags.
    pub fn with_abuse(mut self, abuse: Option<&'a AbuseStage>) -> Self {
        self.abuse = abuse;
        self
    }

    /// Follows `live` while running: once a resource's content logging is off there, its
    /// records are sealed, written and dead-lettered without content.
    pub fn with_live_registry(mut self, live: LiveRegistry) -> Self {
        *self.payloads.get_mut().expect("lock poisoned") = (
            live.generation(),
            Arc::new(PayloadPolicy::new(&live.snapshot())),
        );
        self.live = Some(live);
        self
    }

    /// Whether `resource`'s content may be stored now (see [`LiveRegistry::logs_content`]).
    fn logs_content(&self, resource: &vigil_core::ResourceId) -> bool {
        self.live
            .as_ref()
            .is_none_or(|live| live.logs_content(resource))
    }

    /// The dead-letter payload policy for the registry as it is now.
    fn payload_policy(&self) -> Arc<PayloadPolicy> {
        let mut payloads = self.payloads.lock().expect("lock poisoned");
        if let Some(live) = &self.live {
            let generation = live.generation();
            if payloads.0 != generation {
                *payloads = (generation, Arc::new(PayloadPolicy::new(&live.snapshot())));
            }
        }
        payloads.1.clone()
    }

    /// Sets when stored batches are made durable.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Runs every input of `source` through every stage, rejected ones to `dead_letters`, and
    /// returns what happened. Everything stored is durable before this returns.
    pub fn run(
        &self,
        source: &mut dyn Source,
        dead_letters: &mut dyn DeadLetterSink,
        progress: &dyn Progress,
    ) -> Result<Summary, PipelineError> {
        let span = info_span!("run", source = %source.name());
        let _enter = span.enter();
        let started = Instant::now();
        let mut summary = Summary {
            dead_letters: dead_letters.destination(),
            detection: self
                .classifier
                .map(|c| DetectionSummary::new(c.model(), c.threshold())),
            ..Summary::default()
        };
        let reconciled = self.stores.reconcile(self.registry)?;
        reconciled.log();
        for (resource_id, records) in reconciled.content_forgotten {
            summary
                .content_forgotten
                .insert(resource_id.to_string(), records as u64);
        }
        let (tx, rx) = bounded(CHANNEL_BATCHES);
        let handoff = Arc::new(Handoff::new(tx));
        let stored = std::thread::scope(|scope| {
            let decode_span = info_span!(parent: &span, "decode");
            let mut feed = Feed {
                pipeline: self,
                router: Router::new(self.registry),
                handoff: handoff.clone(),
                scratch: Scratch::default(),
            };
            let decoder = scope.spawn(move || {
                decode_span.in_scope(|| {
                    let handoff = feed.handoff.clone();
                    // Closes the channel even if the source panics, so the store stage ends.
                    let _close = handoff::OnDrop(&handoff, |h| {
                        let _ = h.finish();
                    });
                    let ran = source.run(&mut feed);
                    let finished = handoff.finish().map_err(PipelineError::from);
                    ran.and(finished)
                })
            });
            // With a classifier, batches pass through the detect thread on their way to the
            // store stage; the thread ends when the decode side closes its channel (or the
            // store side closes its own), dropping its sender so the store stage ends too.
            let (to_store, detector) = match self.classifier {
                Some(classifier) => {
                    let (detected_tx, detected_rx) = bounded(CHANNEL_BATCHES);
                    let detect_span = info_span!(parent: &span, "detect");
                    let detector = scope.spawn(move || {
                        detect_span.in_scope(|| detect_stage(classifier, rx, detected_tx))
                    });
                    (detected_rx, Some(detector))
                }
                None => (rx, None),
            };
            let stored = {
                // Wakes a source waiting for durability even if the store stage panics.
                let _stopped = handoff::OnDrop(&handoff, Handoff::mark_stopped);
                self.store_stage(to_store, &handoff, dead_letters, &mut summary, progress)
            };
            let detected = detector.map_or(Ok(()), |detector| {
                detector.join().map_err(|_| PipelineError::DetectPanicked)?
            });
            let decoded = decoder.join().map_err(|_| PipelineError::DecodePanicked)?;
            // A store failure is the root cause when all fail (the others then only see the
            // stopped stage after them), then a detect failure.
            stored.and(detected).and(decoded)
        });
        stored?;
        if let (Some(detection), Some(classifier)) = (summary.detection.as_mut(), self.classifier) {
            detection.semantic_texts = classifier.semantic_texts();
            detection.cached_texts = classifier.cached_texts();
        }
        summary.abuse = self.abuse.map(AbuseStage::summary);
        summary.finish(started.elapsed());
        debug_assert!(summary.is_balanced(), "an input was lost or counted twice");
        info!(
            read = summary.read,
            stored = summary.stored_total(),
            duplicates = summary.duplicates,
            rejected = summary.rejected_total(),
            "Run finished."
        );
        Ok(summary)
    }

    /// Decodes, routes and seals one input, and inspects its content for the abuse stage;
    /// `start` is when its processing began. Returns the item with the time spent on it.
    fn process(
        &self,
        line: Line,
        source: SourcePosition,
        arrived_for: Option<&Geography>,
        router: &Router<'_>,
        scratch: &mut Scratch,
        start: Instant,
    ) -> Result<(Item, Cost), PipelineError> {
        let decoded = |decode: Duration| Cost {
            decode,
            ..Cost::default()
        };
        let raw = match line {
            Line::Complete(raw) => raw,
            Line::Oversized { prefix, len } => {
                let reason = RejectReason::Oversized {
                    len,
                    limit: self.config.max_record_bytes,
                };
                let letter = self.dead_letter(&reason, source, Some((&prefix, true)), None);
                return Ok((Item::Rejected(letter), decoded(start.elapsed())));
            }
        };
        let mut record = match decode(&raw) {
            Ok(record) => record,
            Err(reason) => {
                let item = self.reject(&reason, source, &raw, None);
                return Ok((item, decoded(start.elapsed())));
            }
        };
        // A resource added to the registry since the run started is routed from the live
        // registry.
        let added;
        let routed = match router.route(&record, arrived_for) {
            Err(RejectReason::UnknownResource) => {
                added = (self.live.as_ref())
                    .and_then(|live| live.resource(record.meta.resource_id.as_str()));
                match &added {
                    Some(resource) => Router::admit(resource, &record, arrived_for),
                    None => Err(RejectReason::UnknownResource),
                }
            }
            routed => routed,
        };
        let decode_time = start.elapsed();
        let ids = (
            record.meta.request_id.as_str(),
            record.meta.resource_id.as_str(),
        );
        let resource = match routed {
            Ok(resource) => resource,
            Err(reason) => {
                let item = self.reject(&reason, source, &raw, Some(ids));
                return Ok((item, decoded(decode_time)));
            }
        };
        // Content logging turned off, or a new customer key, since the run started applies
        // at once.
        let changed = self.live.as_ref().and_then(|live| live.changed(resource));
        let resource = changed.as_ref().unwrap_or(resource);
        let sealing = Instant::now();
        let geo = self.stores.geo(&resource.geography)?;
        let sealed = geo.seal(&record, resource);
        let seal_time = sealing.elapsed();
        let inspecting = Instant::now();
        let item = match sealed {
            Ok(sealed) => Item::Sealed {
                geo,
                record: sealed,
                source,
                raw: resource.content_logging.then_some(raw),
                observed: self.abuse.map(|abuse| {
                    let end_user = record.meta.end_user.take();
                    let at = record.meta.timestamp;
                    Box::new(abuse.inspect(end_user, at, &record.content, scratch))
                }),
                content: (self.classifier.is_some() || self.reviews_in_flight(resource))
                    .then(|| std::mem::take(&mut record.content)),
            },
            // A customer key that cannot be used affects only its resource: reject its
            // records and go on. Any other key failure concerns the master key: stop.
            Err(StorageError::Key(error)) if error.is_resource_scoped() => {
                let first = (self.key_warned.lock().expect("lock poisoned"))
                    .insert(resource.id.to_string());
                if first {
                    warn!(resource_id = %resource.id, %error, "Rejecting the resource's records: its key is unavailable.");
                }
                self.reject(&RejectReason::KeyUnavailable, source, &raw, Some(ids))
            }
            Err(e) => return Err(e.into()),
        };
        let cost = Cost {
            decode: decode_time,
            seal: seal_time,
            inspect: inspecting.elapsed(),
            ..Cost::default()
        };
        Ok((item, cost))
    }

    /// Whether `resource`'s sampled records are reviewed on their content in flight: it logs
    /// no content, and cases are reviewed.
    fn reviews_in_flight(&self, resource: &vigil_core::Resource) -> bool {
        !resource.content_logging && self.abuse.is_some_and(|a| a.review().is_some())
    }

    fn reject(
        &self,
        reason: &RejectReason,
        source: SourcePosition,
        raw: &[u8],
        ids: Option<(&str, &str)>,
    ) -> Item {
        Item::Rejected(self.dead_letter(reason, source, Some((raw, false)), ids))
    }

    /// The dead letter for one rejected input. `raw` is the input and whether it was cut
    /// short, or `None` when the input's resource is known to have content logging off.
    fn dead_letter(
        &self,
        reason: &RejectReason,
        source: SourcePosition,
        raw: Option<(&[u8], bool)>,
        ids: Option<(&str, &str)>,
    ) -> DeadLetter {
        debug!(code = reason.code(), field = reason.field(), %source, "Rejected input.");
        let payload = match raw {
            Some((raw, truncated)) => self.payload_policy().payload(raw, truncated),
            None => Payload::content_logging_off(),
        };
        let letter = DeadLetter::new(reason, source, payload);
        match ids {
            Some((request, resource)) => letter.with_ids(request, resource),
            None => letter,
        }
    }

    fn store_stage(
        &self,
        rx: Receiver<handoff::ToStore>,
        handoff: &Handoff,
        dead_letters: &mut dyn DeadLetterSink,
        summary: &mut Summary,
        progress: &dyn Progress,
    ) -> Result<(), PipelineError> {
        let _span = info_span!("store").entered();
        let mut latencies = Vec::new();
        // Every batch below `received` has been stored; every batch below `durable`, flushed.
        let mut received: BatchSeq = 0;
        let mut durable: BatchSeq = 0;
        let mut durable_at = Instant::now();
        let mut active: Option<(Instant, Instant)> = None;
        let wait = match self.durability {
            Durability::AtEnd => Duration::MAX,
            Durability::Every(interval) => interval,
        };
        loop {
            let message = match rx.recv_timeout(wait.saturating_sub(durable_at.elapsed())) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let sync = match message {
                Some(handoff::ToStore::Batch(batch)) => {
                    received = batch.seq + 1;
                    let first = active.map_or(batch.started, |(first, _)| first);
                    self.store_batch(batch, dead_letters, summary, &mut latencies, progress)?;
                    active = Some((first, Instant::now()));
                    durable_at.elapsed() >= wait
                }
                Some(handoff::ToStore::Sync) | None => true,
            };
            if sync {
                if received > durable {
                    self.make_durable(dead_letters, summary)?;
                    durable = received;
                    debug!(durable, "Stored batches are durable.");
                    handoff.mark_durable(durable);
                }
                durable_at = Instant::now();
            }
        }
        self.make_durable(dead_letters, summary)?;
        handoff.mark_durable(received);
        summary.batch_latency = Percentiles::of(&mut latencies);
        summary.active_secs = active.map_or(0.0, |(first, last)| (last - first).as_secs_f64());
        Ok(())
    }

    /// Flushes the stores and the dead-letter destination.
    fn make_durable(
        &self,
        dead_letters: &mut dyn DeadLetterSink,
        summary: &mut Summary,
    ) -> Result<(), PipelineError> {
        let flushing = Instant::now();
        self.stores.flush()?;
        dead_letters.flush()?;
        summary.stages.flush_secs += flushing.elapsed().as_secs_f64();
        telemetry::stage_time("flush", flushing.elapsed());
        if let Some(abuse) = self.abuse {
            abuse.publish(self.stores)?;
        }
        Ok(())
    }

    fn store_batch(
        &self,
        batch: handoff::Batch,
        dead_letters: &mut dyn DeadLetterSink,
        summary: &mut Summary,
        latencies: &mut Vec<Duration>,
        progress: &dyn Progress,
    ) -> Result<(), PipelineError> {
        summary.stages.decode_secs += batch.cost.decode.as_secs_f64();
        summary.stages.seal_secs += batch.cost.seal.as_secs_f64();
        summary.stages.inspect_secs += batch.cost.inspect.as_secs_f64();
        summary.stages.detect_secs += batch.cost.detect.as_secs_f64();
        if let Some(abuse) = self.abuse {
            abuse.reload_if_changed();
        }
        summary.read += batch.items.len() as u64;
        debug!(
            seq = batch.seq,
            items = batch.items.len(),
            "Storing a batch."
        );
        let inputs = batch.items.len();
        let items = batch.items;
        let mut by_geo: BTreeMap<String, GeoBatch> = BTreeMap::new();
        let mut letters = Vec::new();
        for item in items {
            match item {
                Item::Sealed {
                    geo,
                    mut record,
                    source,
                    mut raw,
                    content,
                    observed,
                } => {
                    // Sealed before its resource's content logging was turned off: written
                    // without its content all the same.
                    if record.content_logged && !self.logs_content(&record.resource_id) {
                        record.forget_content();
                        raw = None;
                    }
                    let entry = by_geo
                        .entry(geo.geography().to_string())
                        .or_insert_with(|| GeoBatch {
                            geo: geo.clone(),
                            records: Vec::new(),
                            origins: Vec::new(),
                            observed: Vec::new(),
                            in_flight: Vec::new(),
                        });
                    // Only records whose resource logs no content keep it this far.
                    entry
                        .in_flight
                        .push(content.filter(|_| !record.content_logged));
                    entry.records.push(record);
                    entry.origins.push((source, raw));
                    entry.observed.push(observed);
                }
                Item::Rejected(letter) => letters.push(letter),
            }
        }
        let storing = Instant::now();
        let mut abuse_time = Duration::ZERO;
        for (geo_name, part) in by_geo {
            let mut offers = Vec::new();
            let outcomes = match self.abuse {
                None => part.geo.write_batch(&part.records)?,
                Some(abuse) => part.geo.write_batch_with(&part.records, |outcomes| {
                    let observing = Instant::now();
                    let annex = abuse.observe(
                        &part.geo,
                        &part.records,
                        &part.observed,
                        &part.in_flight,
                        &mut offers,
                        outcomes,
                    );
                    abuse_time += observing.elapsed();
                    annex
                })?,
            };
            if let Some(abuse) = self.abuse {
                abuse.offer_in_flight(&part.geo, offers)?;
            }
            let results = outcomes.iter().zip(&part.records).zip(part.origins);
            let (mut stored, mut duplicates) = (0, 0);
            for ((outcome, record), (source, raw)) in results {
                match outcome {
                    WriteOutcome::Stored => {
                        stored += 1;
                        *summary.stored.entry(geo_name.clone()).or_default() += 1;
                        summary.content_not_logged += u64::from(!record.content_logged);
                        if let (Some(counts), Some(detection)) =
                            (summary.detection.as_mut(), &record.detection)
                        {
                            counts.count(detection);
                        }
                    }
                    WriteOutcome::Duplicate => {
                        duplicates += 1;
                        summary.duplicates += 1;
                    }
                    WriteOutcome::Conflict => letters.push(self.dead_letter(
                        &RejectReason::RequestIdConflict,
                        source,
                        raw.as_deref().map(|raw| (raw, false)),
                        Some((record.request_id.as_str(), record.resource_id.as_str())),
                    )),
                }
            }
            telemetry::written(&geo_name, stored, duplicates);
        }
        if let Some(abuse) = self.abuse {
            let sweeping = Instant::now();
            abuse.end_batch();
            abuse_time += sweeping.elapsed();
        }
        let store_time = storing.elapsed() - abuse_time;
        summary.stages.abuse_secs += abuse_time.as_secs_f64();
        summary.stages.store_secs += store_time.as_secs_f64();
        let writing = Instant::now();
        for letter in &letters {
            *summary.rejected.entry(letter.reason.code).or_default() += 1;
        }
        dead_letters.write_all(&letters)?;
        telemetry::rejected(letters.iter().map(|letter| {
            let home = (letter.resource_id.as_deref())
                .and_then(|id| self.registry.get(id))
                .map(|resource| &resource.geography);
            (letter.reason.code, home)
        }));
        let dead_letter_time = writing.elapsed();
        summary.stages.dead_letter_secs += dead_letter_time.as_secs_f64();
        let latency = batch.started.elapsed();
        latencies.push(latency);
        telemetry::batch(&telemetry::BatchReport {
            inputs,
            bytes: batch.bytes,
            cost: batch.cost,
            detected: self.classifier.is_some(),
            store: store_time,
            abuse: self.abuse.map(|_| abuse_time),
            dead_letter: (!letters.is_empty()).then_some(dead_letter_time),
            latency,
        });
        progress.advanced(batch.progress);
        Ok(())
    }
}

/// The detect stage: scores each batch from `batches` (see [`detect`]) and sends it on to the
/// store stage in the order received, with sync requests in their place. Ends when the decode
/// side is done, or the store stage has stopped; a classifier failure ends it with the error.
fn detect_stage(
    classifier: &HarmClassifier,
    batches: Receiver<handoff::ToStore>,
    store: crossbeam_channel::Sender<handoff::ToStore>,
) -> Result<(), PipelineError> {
    for message in batches {
        let message = match message {
            handoff::ToStore::Batch(mut batch) => {
                let detecting = Instant::now();
                detect(classifier, &mut batch.items)?;
                batch.cost.detect += detecting.elapsed();
                handoff::ToStore::Batch(batch)
            }
            sync @ handoff::ToStore::Sync => sync,
        };
        if store.send(message).is_err() {
            break; // the store stage stopped; its own error says why
        }
    }
    Ok(())
}

/// Scores the content of the sealed items and attaches each record's detection (see
/// [`HarmClassifier::detect`]), and the prompt's meaning to what the abuse stage observes. The
/// content is dropped here, past which only scores remain, except for records whose resource
/// logs no content: theirs stays in memory until their batch is written, for in-flight review.
fn detect(classifier: &HarmClassifier, items: &mut [Item]) -> Result<(), DetectorError> {
    let empty = Content::default();
    let records: Vec<ToDetect<'_>> = items
        .iter()
        .filter_map(|item| match item {
            Item::Sealed {
                content, observed, ..
            } => Some(ToDetect {
                content: content.as_ref().unwrap_or(&empty),
                encode_prompt: observed.as_ref().is_some_and(|o| o.suspicious),
            }),
            Item::Rejected(_) => None,
        })
        .collect();
    let detected = classifier.detect(&records)?;
    let sealed = items.iter_mut().filter_map(|item| match item {
        Item::Sealed {
            record,
            content,
            observed,
            ..
        } => Some((record, content, observed)),
        Item::Rejected(_) => None,
    });
    for ((record, content, observed), detected) in sealed.zip(detected) {
        record.detection = Some(detected.detection);
        if let Some(observed) = observed {
            observed.meaning = detected.meaning;
        }
        if record.content_logged {
            *content = None;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ingest::DeadLetterWriter;
    use vigil_storage::StorageConfig;

    /// A source that pushes one line, then panics (or waits for durability, then panics).
    struct Panicking {
        sync_first: bool,
    }

    impl Source for Panicking {
        fn name(&self) -> String {
            "panicking".into()
        }

        fn run(&mut self, feed: &mut Feed<'_>) -> Result<(), PipelineError> {
            let position = SourcePosition::File {
                file: "t".into(),
                line: 1,
            };
            feed.push(Line::Complete(b"{}".to_vec()), position, None)?;
            if self.sync_first {
                feed.handoff().sync()?;
            }
            panic!("a bug in a source");
        }
    }

    #[test]
    fn a_panicking_source_ends_the_run_with_an_error_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageConfig {
            data_dir: dir.path().join("data"),
            master_key: dir.path().join("master.key"),
            ..StorageConfig::default()
        };
        let stores = Stores::open(&storage, dir.path()).unwrap();
        let registry = ResourceRegistry::default();
        let ingest = IngestConfig {
            dead_letters: dir.path().join("dead-letters.jsonl"),
            ..IngestConfig::default()
        };
        for sync_first in [false, true] {
            let pipeline = Pipeline::new(&registry, &stores, &ingest)
                .with_durability(Durability::Every(Duration::from_millis(50)));
            let mut dead_letters = DeadLetterWriter::new(&ingest.dead_letters);
            let result = pipeline.run(&mut Panicking { sync_first }, &mut dead_letters, &());
            assert!(matches!(result, Err(PipelineError::DecodePanicked)));
        }
    }
}
