//! vigil's main job: source → decode/validate → route → seal → store, with dead letters.
//!
//! A run uses two threads joined by a bounded channel, so reading and encryption overlap with
//! storage writes and memory stays bounded however large the input is:
//!
//! - the **decode** thread reads lines, decodes and validates them, routes each record to its
//!   resource's home geography, and seals (encrypts and encodes) it;
//! - the calling thread **stores** each batch, one atomic sled batch per geography, and writes
//!   dead letters.
//!
//! Rejections never stop a run: each becomes one dead letter and one count. Only failures of
//! vigil's own machinery (the input cannot be read, a store or the dead-letter file cannot be
//! written, the master key does not match) end it, with an error.
//!
//! Later stages (detection, review) slot in between routing and storage, keeping the data
//! flowing one way.

mod input;
mod summary;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use tracing::{debug, info, info_span, warn};
use vigil_core::ResourceRegistry;
use vigil_ingest::{
    decode, DeadLetter, DeadLetterError, DeadLetterWriter, IngestConfig, Line, LineReader, Payload,
    PayloadPolicy, RejectReason, Router, SourcePosition,
};
use vigil_storage::{GeoStore, SealedRecord, StorageError, Stores, WriteOutcome};

pub use input::Input;
pub use summary::{Percentiles, StageTimes, Summary};

/// Lines per batch handed from the decode thread to the store thread.
const BATCH_LINES: usize = 1024;
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
    /// A store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Dead letters could not be written.
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
    /// The decode thread panicked (a bug).
    #[error("the decode thread panicked")]
    DecodePanicked,
}

/// Reports progress of a run, in input bytes consumed.
pub trait Progress: Sync {
    /// Called after each batch with the total bytes read so far.
    fn advanced(&self, bytes_read: u64);
}

impl Progress for () {
    fn advanced(&self, _: u64) {}
}

/// What the decode thread hands on for one input line.
enum Item {
    /// A record sealed for its geography's store.
    Sealed {
        geo: Arc<GeoStore>,
        record: SealedRecord,
        source: SourcePosition,
        /// The raw line, kept in case the store rejects it; `None` when its resource's content
        /// logging is off.
        raw: Option<Vec<u8>>,
    },
    /// A rejected input.
    Rejected(DeadLetter),
}

struct Batch {
    /// When reading its first line began.
    started: Instant,
    items: Vec<Item>,
    bytes_read: u64,
    decode_time: Duration,
    seal_time: Duration,
}

/// Sealed records of one geography within a batch, with where each came from.
struct GeoBatch {
    geo: Arc<GeoStore>,
    records: Vec<SealedRecord>,
    origins: Vec<(SourcePosition, Option<Vec<u8>>)>,
}

/// The stages of a run, over one registry and one set of stores.
pub struct Pipeline<'a> {
    registry: &'a ResourceRegistry,
    stores: &'a Stores,
    config: &'a IngestConfig,
    payloads: PayloadPolicy,
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
            payloads: PayloadPolicy::new(registry),
            key_warned: Mutex::new(HashSet::new()),
        }
    }

    /// Runs `input` through every stage and returns what happened. Everything stored is
    /// flushed to disk before this returns.
    pub fn run(&self, input: Input, progress: &dyn Progress) -> Result<Summary, PipelineError> {
        let span = info_span!("run", input = %input.name);
        let _enter = span.enter();
        let started = Instant::now();
        let mut dead_letters = DeadLetterWriter::new(&self.config.dead_letters);
        let mut summary = Summary {
            dead_letters: self.config.dead_letters.display().to_string(),
            ..Summary::default()
        };
        let reconciled = self.stores.reconcile(self.registry)?;
        for (resource_id, records) in reconciled.content_forgotten {
            info!(%resource_id, records, "Content logging is off: destroyed the resource's stored content.");
            summary
                .content_forgotten
                .insert(resource_id.to_string(), records as u64);
        }
        for error in reconciled.key_problems {
            warn!(%error, "A customer key is unavailable; that resource's content is unreadable.");
        }
        let (tx, rx) = bounded(CHANNEL_BATCHES);
        let stored = std::thread::scope(|scope| {
            let decode_span = info_span!(parent: &span, "decode");
            let decoder =
                scope.spawn(move || decode_span.in_scope(|| self.decode_stage(input, tx)));
            let stored = self.store_stage(rx, &mut dead_letters, &mut summary, progress);
            let decoded = decoder.join().map_err(|_| PipelineError::DecodePanicked)?;
            // A store failure is the root cause when both fail (the decoder then only sees
            // the closed channel).
            stored.and(decoded)
        });
        let flushed = self.stores.flush().map_err(PipelineError::from);
        let dl_flushed = dead_letters.flush().map_err(PipelineError::from);
        stored.and(flushed).and(dl_flushed)?;
        summary.finish(started.elapsed());
        debug_assert!(summary.is_balanced(), "a line was lost or counted twice");
        info!(
            read = summary.read,
            stored = summary.stored_total(),
            duplicates = summary.duplicates,
            rejected = summary.rejected_total(),
            "Run finished."
        );
        Ok(summary)
    }

    fn decode_stage(&self, input: Input, tx: Sender<Batch>) -> Result<(), PipelineError> {
        let name = input.name.clone();
        let mut reader = LineReader::new(input.reader, &input.name, self.config.max_record_bytes);
        let router = Router::new(self.registry);
        loop {
            let mut batch = Batch {
                started: Instant::now(),
                items: Vec::with_capacity(BATCH_LINES),
                bytes_read: 0,
                decode_time: Duration::ZERO,
                seal_time: Duration::ZERO,
            };
            let mut at_end = false;
            while batch.items.len() < BATCH_LINES {
                let start = Instant::now();
                let next = reader.next_line().map_err(|source| PipelineError::Input {
                    input: name.clone(),
                    source,
                })?;
                let Some((line, source)) = next else {
                    at_end = true;
                    batch.decode_time += start.elapsed();
                    break;
                };
                let item = self.process(line, source, &router, &mut batch, start)?;
                batch.items.push(item);
            }
            batch.bytes_read = reader.bytes_read();
            if !batch.items.is_empty() && tx.send(batch).is_err() {
                // The store stage stopped; it reports why.
                return Ok(());
            }
            if at_end {
                return Ok(());
            }
        }
    }

    /// Decodes, routes and seals one line; `start` is when reading it began.
    fn process(
        &self,
        line: Line,
        source: SourcePosition,
        router: &Router<'_>,
        batch: &mut Batch,
        start: Instant,
    ) -> Result<Item, PipelineError> {
        let raw = match line {
            Line::Complete(raw) => raw,
            Line::Oversized { prefix, len } => {
                batch.decode_time += start.elapsed();
                let reason = RejectReason::Oversized {
                    len,
                    limit: self.config.max_record_bytes,
                };
                let letter = self.dead_letter(&reason, source, Some((&prefix, true)), None);
                return Ok(Item::Rejected(letter));
            }
        };
        let record = match decode(&raw) {
            Ok(record) => record,
            Err(reason) => {
                batch.decode_time += start.elapsed();
                return Ok(self.reject(&reason, source, &raw, None));
            }
        };
        let routed = router.route(&record);
        batch.decode_time += start.elapsed();
        let ids = (
            record.meta.request_id.as_str(),
            record.meta.resource_id.as_str(),
        );
        let resource = match routed {
            Ok(resource) => resource,
            Err(reason) => return Ok(self.reject(&reason, source, &raw, Some(ids))),
        };
        let sealing = Instant::now();
        let geo = self.stores.geo(&resource.geography)?;
        let sealed = geo.seal(&record, resource);
        batch.seal_time += sealing.elapsed();
        match sealed {
            Ok(sealed) => Ok(Item::Sealed {
                geo,
                record: sealed,
                source,
                raw: resource.content_logging.then_some(raw),
            }),
            // A customer key that cannot be used affects only its resource: reject its
            // records and go on. Any other key failure concerns the master key: stop.
            Err(StorageError::Key(error)) if error.is_resource_scoped() => {
                let first = (self.key_warned.lock().expect("lock poisoned"))
                    .insert(resource.id.to_string());
                if first {
                    warn!(resource_id = %resource.id, %error, "Rejecting the resource's records: its key is unavailable.");
                }
                Ok(self.reject(&RejectReason::KeyUnavailable, source, &raw, Some(ids)))
            }
            Err(e) => Err(e.into()),
        }
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
            Some((raw, truncated)) => self.payloads.payload(raw, truncated),
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
        rx: Receiver<Batch>,
        dead_letters: &mut DeadLetterWriter,
        summary: &mut Summary,
        progress: &dyn Progress,
    ) -> Result<(), PipelineError> {
        let _span = info_span!("store").entered();
        let mut latencies = Vec::new();
        for batch in rx {
            summary.stages.decode_secs += batch.decode_time.as_secs_f64();
            summary.stages.seal_secs += batch.seal_time.as_secs_f64();
            summary.read += batch.items.len() as u64;
            let mut by_geo: BTreeMap<String, GeoBatch> = BTreeMap::new();
            let mut letters = Vec::new();
            for item in batch.items {
                match item {
                    Item::Sealed {
                        geo,
                        record,
                        source,
                        raw,
                    } => {
                        let entry =
                            by_geo
                                .entry(geo.geography().to_string())
                                .or_insert_with(|| GeoBatch {
                                    geo: geo.clone(),
                                    records: Vec::new(),
                                    origins: Vec::new(),
                                });
                        entry.records.push(record);
                        entry.origins.push((source, raw));
                    }
                    Item::Rejected(letter) => letters.push(letter),
                }
            }
            let storing = Instant::now();
            for (geo_name, part) in by_geo {
                let outcomes = part.geo.write_batch(&part.records)?;
                let results = outcomes.iter().zip(&part.records).zip(part.origins);
                for ((outcome, record), (source, raw)) in results {
                    match outcome {
                        WriteOutcome::Stored => {
                            *summary.stored.entry(geo_name.clone()).or_default() += 1;
                            summary.content_not_logged += u64::from(!record.content_logged);
                        }
                        WriteOutcome::Duplicate => summary.duplicates += 1,
                        WriteOutcome::Conflict => letters.push(self.dead_letter(
                            &RejectReason::RequestIdConflict,
                            source,
                            raw.as_deref().map(|raw| (raw, false)),
                            Some((record.request_id.as_str(), record.resource_id.as_str())),
                        )),
                    }
                }
            }
            summary.stages.store_secs += storing.elapsed().as_secs_f64();
            let writing = Instant::now();
            for letter in &letters {
                *summary.rejected.entry(letter.reason.code).or_default() += 1;
            }
            dead_letters.write_all(&letters)?;
            summary.stages.dead_letter_secs += writing.elapsed().as_secs_f64();
            latencies.push(batch.started.elapsed());
            progress.advanced(batch.bytes_read);
        }
        summary.batch_latency = Percentiles::of(&mut latencies);
        Ok(())
    }
}
