//! The handoff between the decode stage and the store stage: batches in order, and durability
//! reported back.
//!
//! The decode stage appends processed items to the batch under construction; a full batch is
//! sent to the store stage over a bounded channel (so a slow store slows the source down and
//! memory stays bounded). Batches are numbered in the order they are sent. The store stage
//! reports, as a watermark, how many batches are *durable*: written to the stores and the
//! dead-letter destination, and flushed. A source that must acknowledge its inputs (a Kafka
//! consumer committing offsets) acknowledges only what lies below that watermark.
//!
//! [`Handoff`] owns everything it holds, so a source can share it with callbacks that outlive a
//! borrow of the pipeline, such as a Kafka consumer's rebalance callback, which must drain and
//! commit in-flight work before its partitions move to another consumer.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::Item;

/// Items per batch handed from the decode stage to the store stage.
pub(crate) const BATCH_ITEMS: usize = 1024;

/// The numbered position of a batch in the order batches are sent.
pub type BatchSeq = u64;

/// A group of items handed to the store stage at once.
pub(crate) struct Batch {
    pub(crate) seq: BatchSeq,
    /// When the first of its inputs arrived.
    pub(crate) started: Instant,
    pub(crate) items: Vec<Item>,
    /// The source's progress mark (input bytes read) when the batch was sent.
    pub(crate) progress: u64,
    /// Bytes of its inputs.
    pub(crate) bytes: u64,
    pub(crate) cost: Cost,
}

/// Time spent on items before the store stage: on the decode thread, then on the detect
/// thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cost {
    /// Decoding, validating and routing.
    pub decode: Duration,
    /// Encrypting and encoding.
    pub seal: Duration,
    /// Running the abuse heuristics.
    pub inspect: Duration,
    /// Scoring content with the harm classifier (the detect stage, once per batch).
    pub detect: Duration,
}

impl Cost {
    fn total(&self) -> Duration {
        self.decode + self.seal + self.inspect
    }

    fn add(&mut self, other: Cost) {
        self.decode += other.decode;
        self.seal += other.seal;
        self.inspect += other.inspect;
        self.detect += other.detect;
    }
}

impl Batch {
    fn new(seq: BatchSeq) -> Self {
        Self {
            seq,
            started: Instant::now(),
            items: Vec::with_capacity(BATCH_ITEMS),
            progress: 0,
            bytes: 0,
            cost: Cost::default(),
        }
    }
}

/// What the decode stage sends to the store stage.
pub(crate) enum ToStore {
    /// A batch to store.
    Batch(Batch),
    /// Make everything received so far durable now.
    Sync,
}

/// The store stage has stopped (it failed, or the run is over), so nothing more becomes
/// durable.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store stage has stopped")]
pub struct Stopped;

struct Pending {
    batch: Batch,
    progress: u64,
    tx: Option<Sender<ToStore>>,
}

struct Durability {
    /// Every batch numbered below this is durable.
    durable: BatchSeq,
    /// The store stage has ended.
    stopped: bool,
}

/// The decode stage's end of the channel, and the store stage's durability watermark.
pub struct Handoff {
    pending: Mutex<Pending>,
    durability: Mutex<Durability>,
    changed: Condvar,
}

impl Handoff {
    pub(crate) fn new(tx: Sender<ToStore>) -> Self {
        Self {
            pending: Mutex::new(Pending {
                batch: Batch::new(0),
                progress: 0,
                tx: Some(tx),
            }),
            durability: Mutex::new(Durability {
                durable: 0,
                stopped: false,
            }),
            changed: Condvar::new(),
        }
    }

    // A panic on either side poisons nothing that matters here: the other side must still be
    // able to close the channel and wake waiters, so poisoned locks are taken over.
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn durability(&self) -> MutexGuard<'_, Durability> {
        self.durability.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one item to the batch under construction, sending the batch on when it is full.
    /// `bytes` is the input's size. Returns the number of the batch the item went into.
    pub(crate) fn push(&self, item: Item, bytes: u64, cost: Cost) -> Result<BatchSeq, Stopped> {
        let mut pending = self.pending();
        let batch = &mut pending.batch;
        if batch.items.is_empty() {
            batch.started = Instant::now() - cost.total();
        }
        batch.items.push(item);
        batch.bytes += bytes;
        batch.cost.add(cost);
        let seq = batch.seq;
        if batch.items.len() >= BATCH_ITEMS {
            Self::send(&mut pending)?;
        }
        Ok(seq)
    }

    /// Records the source's progress (input bytes read or messages consumed so far), reported
    /// once the items read before it are stored.
    pub fn set_progress(&self, bytes_read: u64) {
        self.pending().progress = bytes_read;
    }

    fn send(pending: &mut Pending) -> Result<(), Stopped> {
        let next = Batch::new(pending.batch.seq + 1);
        let mut batch = std::mem::replace(&mut pending.batch, next);
        batch.progress = pending.progress;
        let tx = pending.tx.as_ref().ok_or(Stopped)?;
        tx.send(ToStore::Batch(batch)).map_err(|_| Stopped)
    }

    /// Sends the batch under construction on now, if it holds anything, so that inputs do
    /// not wait for a batch to fill when traffic is slow.
    pub fn send_partial(&self) -> Result<(), Stopped> {
        self.send_older_than(Duration::ZERO)
    }

    /// Sends the batch under construction on if its first item arrived at least `age` ago, so
    /// that a steady trickle of inputs does not wait for the batch to fill.
    pub fn send_older_than(&self, age: Duration) -> Result<(), Stopped> {
        let mut pending = self.pending();
        if pending.batch.items.is_empty() || pending.batch.started.elapsed() < age {
            return Ok(());
        }
        Self::send(&mut pending)
    }

    /// Sends everything pushed so far on and waits until it is durable. Returns the durable
    /// watermark: every batch numbered below it is durable.
    pub fn sync(&self) -> Result<BatchSeq, Stopped> {
        let target = {
            let mut pending = self.pending();
            if !pending.batch.items.is_empty() {
                Self::send(&mut pending)?;
            }
            let tx = pending.tx.as_ref().ok_or(Stopped)?;
            tx.send(ToStore::Sync).map_err(|_| Stopped)?;
            pending.batch.seq
        };
        let mut durability = self.durability();
        loop {
            if durability.durable >= target {
                return Ok(durability.durable);
            }
            if durability.stopped {
                return Err(Stopped);
            }
            durability = self
                .changed
                .wait(durability)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The durable watermark: every batch numbered below it is durable.
    pub fn durable(&self) -> BatchSeq {
        self.durability().durable
    }

    /// Sends the last batch and closes the channel: the source is done.
    pub(crate) fn finish(&self) -> Result<(), Stopped> {
        let mut pending = self.pending();
        let sent = if pending.batch.items.is_empty() {
            Ok(())
        } else {
            Self::send(&mut pending)
        };
        pending.tx = None;
        sent
    }

    /// Called by the store stage once every batch below `through` is durable.
    pub(crate) fn mark_durable(&self, through: BatchSeq) {
        let mut durability = self.durability();
        durability.durable = durability.durable.max(through);
        self.changed.notify_all();
    }

    /// Called when the store stage ends, for whatever reason.
    pub(crate) fn mark_stopped(&self) {
        self.durability().stopped = true;
        self.changed.notify_all();
    }
}

/// Calls `action` on the handoff when dropped: ends a stage's side of the handoff even when the
/// stage panics, so the other side is not left waiting.
pub(crate) struct OnDrop<'a>(pub(crate) &'a Handoff, pub(crate) fn(&Handoff));

impl Drop for OnDrop<'_> {
    fn drop(&mut self) {
        (self.1)(self.0);
    }
}
