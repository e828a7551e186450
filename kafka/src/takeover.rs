//! Taking over partitions: the rebuild of newly assigned partitions runs on a thread of its
//! own while those partitions stay paused, so the consumer goes on polling (the group keeps
//! the member however long the rebuild takes, and the partitions it kept are consumed
//! meanwhile). The consumer resumes the partitions once the rebuild is done; a rebalance
//! before then cancels it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rdkafka::TopicPartitionList;
use vigil_core::Geography;

use crate::changelog::{RebuildReport, Rebuilder};
use crate::KafkaError;

/// A rebuild running for partitions this member was just assigned.
pub(crate) struct Takeover {
    /// The partitions being rebuilt.
    pub gained: BTreeSet<(Geography, i32)>,
    /// The same partitions by topic name, as they are paused and resumed.
    pub paused: Vec<(String, i32)>,
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<Result<RebuildReport, KafkaError>>,
}

impl Takeover {
    /// Starts rebuilding `gained` (topic partitions `paused`), which the caller has marked as
    /// arriving ([`Rebuilder::begin_move`]).
    pub fn start(
        rebuilder: Arc<Rebuilder>,
        gained: Vec<(Geography, i32)>,
        paused: Vec<(String, i32)>,
    ) -> Result<Self, KafkaError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let thread = {
            let cancel = cancel.clone();
            let gained = gained.clone();
            std::thread::Builder::new()
                .name("changelog-rebuild".into())
                .spawn(move || rebuilder.rebuild_gained(&gained, &cancel))
                .map_err(|error| KafkaError::Io {
                    path: "the changelog-rebuild thread".into(),
                    error,
                })?
        };
        Ok(Self {
            gained: gained.into_iter().collect(),
            paused,
            cancel,
            thread,
        })
    }

    /// The paused partitions as a list for the consumer.
    pub fn paused_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &self.paused {
            list.add_partition(topic, *partition);
        }
        list
    }

    /// Whether the rebuild has ended (done, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the rebuild to end and returns what it did.
    pub fn finish(self) -> Result<RebuildReport, KafkaError> {
        self.thread.join().unwrap_or_else(|_| {
            Err(KafkaError::Config(
                "the changelog-rebuild thread panicked".into(),
            ))
        })
    }

    /// Stops the rebuild (within one read or import step) and waits for it.
    pub fn cancel(self) -> Result<RebuildReport, KafkaError> {
        self.cancel.store(true, Ordering::Release);
        self.finish()
    }
}
