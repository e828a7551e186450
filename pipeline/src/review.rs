//! The review stage: worker threads that take sampled records of cases to the LLM
//! [`Reviewer`] and store its verdicts.
//!
//! - **The queue lives in the store.** When a case opens, the first `review.per_case` records
//!   of its sample are queued as review tasks (`Q` keys) in the same atomic batch as the case.
//!   A feeder thread moves at most `queue_capacity` of them into memory at a time; the rest
//!   wait on disk, however many cases open, and survive restarts.
//! - **Workers** (`workers` threads) read each task's content from the store (decrypting it
//!   only in memory), review it, and store the verdict in the batch that deletes the task,
//!   its rationale sealed under the resource's data key like the content it describes.
//! - **Content-logging-off resources** store no content, so their sampled records are
//!   reviewed in flight: the pipeline offers the content of those in the batch that opened the
//!   case, once that batch is written; only the verdict is kept, without its rationale. Each
//!   such item gets a `content_unavailable` verdict in the case's own write, which the review
//!   overwrites: when the in-memory queue is full, the record was not in that batch, or the
//!   process stops first, that verdict stands, and no sampled record is left without one.
//! - The verdicts' routing follows the policy in force (reloads included).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;
use tracing::{debug, info, info_span, warn};
use vigil_abuse::CompiledPolicy;
use vigil_core::{Content, RouteReason, Verdict};
use vigil_review::{Item, ReviewRequest, ReviewSignals, ReviewStats, Reviewer};
use vigil_storage::{GeoStore, ReviewTask, StorageError, Stores};

/// How long the feeder sleeps when there is nothing to move, unless woken.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// The policy in force, shared between the abuse stage (which reloads it) and the reviewers.
#[derive(Debug, Clone)]
pub struct PolicyHandle(Arc<RwLock<Arc<CompiledPolicy>>>);

impl PolicyHandle {
    /// A handle on `policy`.
    pub fn new(policy: Arc<CompiledPolicy>) -> Self {
        Self(Arc::new(RwLock::new(policy)))
    }

    /// The policy in force now.
    pub fn get(&self) -> Arc<CompiledPolicy> {
        self.0.read().expect("lock poisoned").clone()
    }

    /// Puts `policy` in force.
    pub fn set(&self, policy: Arc<CompiledPolicy>) {
        *self.0.write().expect("lock poisoned") = policy;
    }
}

/// `[review]` settings the stage uses.
#[derive(Debug, Clone, Copy)]
pub struct StageSettings {
    /// Worker threads.
    pub workers: usize,
    /// Items held in memory at most.
    pub queue_capacity: usize,
}

/// A content-logging-off record to review on its content in flight.
pub(crate) struct InFlight {
    pub task: ReviewTask,
    pub content: Content,
    pub signals: ReviewSignals,
}

/// One item in memory.
enum Job {
    /// A queued task: its content is read from the store.
    Stored {
        geo: Arc<GeoStore>,
        task: ReviewTask,
    },
    /// A record of a content-logging-off resource, reviewed on its content in flight.
    InFlight {
        geo: Arc<GeoStore>,
        task: ReviewTask,
        content: Content,
        signals: ReviewSignals,
    },
}

/// What the review stage did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReviewSummary {
    /// The backend and model.
    pub model: String,
    /// The reviewer's counts.
    #[serde(flatten)]
    pub stats: ReviewStats,
    /// Of the verdicts, those reached on content in flight.
    pub in_flight: u64,
    /// Items escalated because their content was no longer available.
    pub content_unavailable: u64,
    /// Tasks still queued in the stores when the summary was taken.
    pub queued: u64,
    /// The most items held in memory at once (waiting or under review): never above
    /// `queue_capacity` plus one per worker, however long the queue in the store.
    pub peak_in_memory: u64,
    /// Seconds since the stage started.
    pub elapsed_secs: f64,
}

impl std::fmt::Display for ReviewSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "reviewed by LLM       {:>10}   ({}; {} in flight; {:.1}s)",
            s.reviewed, self.model, self.in_flight, self.elapsed_secs
        )?;
        writeln!(
            f,
            "  closed              {:>10}   (confident: no violation)",
            s.closed
        )?;
        writeln!(
            f,
            "  escalated           {:>10}   (to humans; {} backend unavailable, {} content unavailable)",
            s.escalated, s.backend_unavailable, self.content_unavailable
        )?;
        write!(
            f,
            "  still queued        {:>10}   (waiting in the store for `vigil review`)",
            self.queued
        )
    }
}

struct Shared {
    reviewer: Reviewer,
    policy: PolicyHandle,
    stores: Arc<Stores>,
    registry: crate::LiveRegistry,
    jobs: (Sender<Job>, Receiver<Job>),
    /// Keys (`case \0 request`) of tasks in memory or under review: not fed twice.
    taken: Mutex<HashSet<String>>,
    /// Raised to wake the feeder early (new tasks, or room in memory).
    wake: (Mutex<bool>, Condvar),
    stop: AtomicBool,
    in_flight: AtomicU64,
    content_unavailable: AtomicU64,
    peak_in_memory: AtomicU64,
}

/// The review stage (see the module docs). Stops its threads when dropped.
pub struct ReviewStage {
    shared: Arc<Shared>,
    started: Instant,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ReviewStage {
    /// Starts the feeder and `settings.workers` workers over `stores`.
    pub fn start(
        reviewer: Reviewer,
        policy: PolicyHandle,
        stores: Arc<Stores>,
        registry: crate::LiveRegistry,
        settings: StageSettings,
    ) -> Self {
        let shared = Arc::new(Shared {
            reviewer,
            policy,
            stores,
            registry,
            jobs: bounded(settings.queue_capacity.max(1)),
            taken: Mutex::new(HashSet::new()),
            wake: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            content_unavailable: AtomicU64::new(0),
            peak_in_memory: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        let feeder = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("review-feeder".into())
                .spawn(move || info_span!("review_feeder").in_scope(|| feeder.feed()))
                .expect("spawning a thread"),
        );
        for n in 0..settings.workers.max(1) {
            let worker = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("review-{n}"))
                    .spawn(move || info_span!("reviewer", n).in_scope(|| worker.work()))
                    .expect("spawning a thread"),
            );
        }
        info!(model = %shared.reviewer.model(), workers = settings.workers, capacity = settings.queue_capacity, "Review stage started.");
        Self {
            shared,
            started: Instant::now(),
            threads: Mutex::new(threads),
        }
    }

    /// Tells the feeder that tasks may have been queued.
    pub fn notify(&self) {
        self.shared.notify();
    }

    /// Offers a content-logging-off record's content for review in flight. Returns the task
    /// back when the in-memory queue is full (the content is then dropped unreviewed).
    pub(crate) fn offer_in_flight(
        &self,
        geo: Arc<GeoStore>,
        offer: InFlight,
    ) -> Option<ReviewTask> {
        let key = task_key(&offer.task);
        self.shared.take(&key);
        let job = Job::InFlight {
            geo,
            task: offer.task,
            content: offer.content,
            signals: offer.signals,
        };
        match self.shared.jobs.0.try_send(job) {
            Ok(()) => None,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.shared.release(&key);
                match job {
                    Job::InFlight { task, .. } | Job::Stored { task, .. } => Some(task),
                }
            }
        }
    }

    /// The verdict (counted) for a record whose content is gone before it could be reviewed.
    pub fn content_unavailable(&self, task: &ReviewTask, in_flight: bool) -> Verdict {
        self.shared.unavailable(task, in_flight)
    }

    /// The `content_unavailable` verdict written with an in-flight item's case, which its
    /// review then overwrites; not counted.
    pub(crate) fn placeholder(&self, task: &ReviewTask) -> Verdict {
        let version = self.shared.policy.get().policy.version.clone();
        self.shared.reviewer.unreviewed_verdict(
            item_of(task, true),
            &version,
            RouteReason::ContentUnavailable,
        )
    }

    /// Waits until every queued task is reviewed, or `limit` passes. Returns whether the
    /// queue is empty.
    pub fn drain(&self, limit: Duration) -> Result<bool, StorageError> {
        let start = Instant::now();
        loop {
            self.notify();
            let idle = self.shared.taken.lock().expect("lock poisoned").is_empty();
            if idle && self.queued()? == 0 {
                return Ok(true);
            }
            if start.elapsed() >= limit {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Tasks queued in the stores (those in memory included).
    pub fn queued(&self) -> Result<u64, StorageError> {
        let mut queued = 0;
        for geography in self.shared.stores.geographies_on_disk()? {
            queued += self.shared.stores.geo(&geography)?.review_queue_len() as u64;
        }
        Ok(queued)
    }

    /// Items in memory now (at most `queue_capacity` waiting, plus one per worker).
    pub fn in_memory(&self) -> usize {
        self.shared.taken.lock().expect("lock poisoned").len()
    }

    /// What the stage did so far.
    pub fn summary(&self) -> ReviewSummary {
        ReviewSummary {
            model: self.shared.reviewer.model(),
            stats: self.shared.reviewer.stats(),
            in_flight: self.shared.in_flight.load(Ordering::Relaxed),
            content_unavailable: self.shared.content_unavailable.load(Ordering::Relaxed),
            queued: self.queued().unwrap_or(0),
            peak_in_memory: self.shared.peak_in_memory.load(Ordering::Relaxed),
            elapsed_secs: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Stops the threads once the reviews under way end; what is queued stays in the store
    /// (items already in memory are dropped: stored tasks stay queued, in-flight ones keep
    /// their `content_unavailable` verdict).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.notify();
        for thread in self.threads.lock().expect("lock poisoned").drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for ReviewStage {
    fn drop(&mut self) {
        self.stop();
    }
}

fn task_key(task: &ReviewTask) -> String {
    format!("{}\0{}", task.case_id, task.request_id)
}

impl Shared {
    fn notify(&self) {
        *self.wake.0.lock().expect("lock poisoned") = true;
        self.wake.1.notify_all();
    }

    /// Marks a task as held in memory.
    fn take(&self, key: &str) {
        let mut taken = self.taken.lock().expect("lock poisoned");
        taken.insert(key.to_owned());
        self.peak_in_memory
            .fetch_max(taken.len() as u64, Ordering::Relaxed);
    }

    fn release(&self, key: &str) {
        self.taken.lock().expect("lock poisoned").remove(key);
        self.notify();
    }

    /// Moves queued tasks from the stores into memory while there is room.
    fn feed(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let moved = match self.feed_once() {
                Ok(moved) => moved,
                Err(error) => {
                    warn!(%error, "Reading the review queue failed; retrying.");
                    0
                }
            };
            if moved == 0 {
                let guard = self.wake.0.lock().expect("lock poisoned");
                let (mut woken, _) = self
                    .wake
                    .1
                    .wait_timeout_while(guard, IDLE_POLL, |woken| !*woken)
                    .expect("lock poisoned");
                *woken = false;
            }
        }
    }

    fn feed_once(&self) -> Result<usize, StorageError> {
        let mut moved = 0;
        for geography in self.stores.geographies_on_disk()? {
            let room = self.jobs.0.capacity().unwrap_or(1) - self.jobs.0.len();
            if room == 0 {
                break;
            }
            let geo = self.stores.geo(&geography)?;
            let tasks = {
                let taken = self.taken.lock().expect("lock poisoned");
                geo.review_queue(room, |task| taken.contains(&task_key(task)))?
            };
            for task in tasks {
                if self.stop.load(Ordering::Relaxed) {
                    return Ok(moved);
                }
                let key = task_key(&task);
                self.take(&key);
                let job = Job::Stored {
                    geo: geo.clone(),
                    task,
                };
                if self.jobs.0.try_send(job).is_err() {
                    self.release(&key);
                    return Ok(moved);
                }
                moved += 1;
            }
        }
        Ok(moved)
    }

    fn work(&self) {
        loop {
            let job = match self.jobs.1.recv_timeout(Duration::from_millis(100)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) if !self.stop.load(Ordering::Relaxed) => continue,
                Err(_) => return,
            };
            let (geo, task) = match &job {
                Job::Stored { geo, task } | Job::InFlight { geo, task, .. } => {
                    (geo.clone(), task.clone())
                }
            };
            if self.stop.load(Ordering::Relaxed) {
                // Stopping: a stored task stays queued in the store; an in-flight one's content
                // is dropped, and its `content_unavailable` verdict stands (now counted).
                if let Job::InFlight { .. } = job {
                    let verdict = self.unavailable(&task, true);
                    if let Err(error) = geo.store_verdict(&verdict, None) {
                        warn!(%error, case_id = %task.case_id, request_id = %task.request_id, "Storing a verdict failed.");
                    }
                }
                self.release(&task_key(&task));
                continue;
            }
            let verdict = self.review(job);
            debug!(case_id = %verdict.case_id, request_id = %verdict.request_id, route = ?verdict.route, reason = verdict.reason.name(), "Reviewed.");
            // The rationale is sealed under the resource's data key (never kept for one that
            // logs no content, nor for a review in flight).
            // As the registry is now: content logging may have gone off during the review.
            let resource = self.registry.resource(task.resource_id.as_str());
            if let Err(error) = geo.store_verdict(&verdict, resource.as_ref()) {
                warn!(%error, case_id = %task.case_id, request_id = %task.request_id, "Storing a verdict failed; the task stays queued.");
                // Not straight back to the backend for the same task.
                std::thread::sleep(Duration::from_secs(1));
            }
            self.release(&task_key(&task));
        }
    }

    /// Reviews one job; every outcome is a verdict.
    fn review(&self, job: Job) -> Verdict {
        let compiled = self.policy.get();
        let policy = &compiled.policy;
        match job {
            Job::InFlight {
                task,
                content,
                signals,
                ..
            } => {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
                let item = item_of(&task, true);
                self.reviewer
                    .review(item, &ReviewRequest::new(&content, &signals, policy))
            }
            Job::Stored { geo, task } => match self.stored_content(&geo, &task) {
                Ok(Some((content, signals))) => {
                    let item = item_of(&task, false);
                    self.reviewer
                        .review(item, &ReviewRequest::new(&content, &signals, policy))
                }
                Ok(None) => self.unavailable(&task, false),
                Err(error) => {
                    warn!(%error, case_id = %task.case_id, request_id = %task.request_id, "Reading a sampled record failed; escalating it.");
                    self.unavailable(&task, false)
                }
            },
        }
    }

    /// The task's content (decrypted, in memory only) and signals; `None` when the record
    /// or its content is gone (deleted, purged, or its resource logs no content).
    fn stored_content(
        &self,
        geo: &GeoStore,
        task: &ReviewTask,
    ) -> Result<Option<(Content, ReviewSignals)>, StorageError> {
        let Some(resource) = self.registry.resource(task.resource_id.as_str()) else {
            return Ok(None);
        };
        let Some(record) = geo.get(&resource, &task.request_id)? else {
            return Ok(None);
        };
        let Some(content) = record.content else {
            return Ok(None);
        };
        let Some(case) = geo.case(&task.case_id)? else {
            return Ok(None);
        };
        let detection = geo.detection(&task.resource_id, &task.request_id)?;
        let category_at = self.policy.get().policy.signals.category_at;
        let signals = ReviewSignals::of(detection.as_ref(), &case, category_at);
        Ok(Some((content, signals)))
    }

    fn unavailable(&self, task: &ReviewTask, in_flight: bool) -> Verdict {
        self.content_unavailable.fetch_add(1, Ordering::Relaxed);
        let version = self.policy.get().policy.version.clone();
        self.reviewer.unreviewed(
            item_of(task, in_flight),
            &version,
            RouteReason::ContentUnavailable,
        )
    }
}

fn item_of(task: &ReviewTask, in_flight: bool) -> Item<'_> {
    Item {
        case_id: &task.case_id,
        request_id: &task.request_id,
        in_flight,
    }
}
