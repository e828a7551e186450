//! The recurring-abuse stage: heuristics on the decode thread, windows and cases on the
//! store thread, flag events after durability.
//!
//! - The decode thread inspects each record's content with the policy's heuristics while the
//!   content is still in memory ([`AbuseStage::inspect`]); only the [`Inspection`] (numbers)
//!   travels on with the sealed record.
//! - The store thread, inside each geography's atomic write, adds every newly stored record to
//!   its end user's and resource's windows and writes the changed window states and any case
//!   opened in the same batch ([`AbuseStage::observe`]): records, the windows they changed and
//!   the cases they opened become durable together, and a redelivered duplicate counts nowhere.
//! - A case whose ID another subject's case already holds in the store (or in the same batch)
//!   is refused by the store ([`GeoStore::admit_case`]): it is counted and left out, with its
//!   review items, and the stored case is kept.
//! - After each durability point, cases still in the outbox are published as flag events and
//!   taken out of it ([`AbuseStage::publish`]).
//! - When a case opens and the stage has a [`ReviewStage`], the first `review.per_case`
//!   records of its sample are queued for the LLM reviewer in the same atomic write (or, for
//!   resources that log no content, offered to it in flight; see [`crate::review`]).
//! - The policy file is checked for changes at most once a second and reloaded between
//!   batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tracing::{info, warn};
use vigil_abuse::{
    CaseIdKey, CompiledPolicy, Observation, PolicyWatcher, RecordSignal, Reload, Tracker,
};
use vigil_core::{Case, Content, FlagSubject};
use vigil_detectors::heuristics::Scratch;
use vigil_detectors::{Inspection, MeaningHash};
use vigil_review::ReviewSignals;
use vigil_storage::{
    Annex, GeoStore, ReviewTask, SealedRecord, StorageError, Stores, WriteOutcome,
};

use crate::flags::{FlagSink, FlagSinkError};
use crate::review::{InFlight, PolicyHandle, ReviewStage};
use crate::summary::AbuseSummary;

/// How often the policy file is checked for changes.
const POLICY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the decode (and detect) threads learned about a record, for its windows.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub end_user: Option<String>,
    pub timestamp: OffsetDateTime,
    pub inspection: Inspection,
    /// A heuristic of at least the policy's `heuristic_harmful_at` matched: the classifier
    /// sends the prompt to its encoder whatever its cheap score.
    pub suspicious: bool,
    /// The prompt's meaning, when the classifier's encoder read it.
    pub meaning: Option<MeaningHash>,
}

/// Recurring-abuse detection for a run (see the module docs).
pub struct AbuseStage {
    watcher: Mutex<PolicyWatcher>,
    current: PolicyHandle,
    tracker: Mutex<Tracker>,
    flags: Mutex<Box<dyn FlagSink>>,
    checked: Mutex<Instant>,
    summary: Mutex<AbuseSummary>,
    /// Whether the stores' outboxes may hold cases: at start (an earlier run may have left
    /// some) and after a case opens; publishing looks at the stores only then.
    outbox_pending: AtomicBool,
    /// The LLM review of cases' samples, if any.
    review: Option<ReviewStage>,
}

impl AbuseStage {
    /// A stage under the policy `watcher` watches, naming cases with the installation's
    /// `case_ids` secret and publishing flag events to `flags`.
    pub fn new(watcher: PolicyWatcher, case_ids: CaseIdKey, flags: Box<dyn FlagSink>) -> Self {
        let current = watcher.current().clone();
        let summary = AbuseSummary {
            policy_version: current.policy.version.clone(),
            flags_destination: flags.destination(),
            ..AbuseSummary::default()
        };
        Self {
            tracker: Mutex::new(Tracker::new(current.clone(), case_ids)),
            current: PolicyHandle::new(current),
            watcher: Mutex::new(watcher),
            flags: Mutex::new(flags),
            checked: Mutex::new(Instant::now()),
            summary: Mutex::new(summary),
            outbox_pending: AtomicBool::new(true),
            review: None,
        }
    }

    /// The policy in force, as a handle that follows reloads (for the review stage).
    pub fn policy_handle(&self) -> PolicyHandle {
        self.current.clone()
    }

    /// Queues the samples of the cases it opens for `review`.
    pub fn with_review(mut self, review: ReviewStage) -> Self {
        self.review = Some(review);
        self
    }

    /// The review stage, if any.
    pub fn review(&self) -> Option<&ReviewStage> {
        self.review.as_ref()
    }

    /// Inspects a record's content with the policy in force (decode thread).
    pub(crate) fn inspect(
        &self,
        end_user: Option<String>,
        timestamp: OffsetDateTime,
        content: &Content,
        scratch: &mut Scratch,
    ) -> Observed {
        let policy = self.current.get();
        let inspection = policy.heuristics.inspect(content, scratch);
        Observed {
            end_user,
            timestamp,
            suspicious: policy.policy.signals.suspicious(&inspection),
            inspection,
            meaning: None,
        }
    }

    /// Reloads the policy file if it changed (store thread, between batches).
    pub(crate) fn reload_if_changed(&self) {
        let mut checked = self.checked.lock().expect("lock poisoned");
        if checked.elapsed() < POLICY_CHECK_EVERY {
            return;
        }
        *checked = Instant::now();
        let mut watcher = self.watcher.lock().expect("lock poisoned");
        let mut summary = self.summary.lock().expect("lock poisoned");
        match watcher.check() {
            Reload::Unchanged => {}
            Reload::Reloaded(policy) => {
                info!(path = %watcher.path().display(), version = %policy.policy.version, "Reloaded the abuse policy.");
                summary.policy_reloads += 1;
                metrics::counter!("vigil_policy_reloads_total", "outcome" => "ok").increment(1);
                summary.policy_version = policy.policy.version.clone();
                self.current.set(policy.clone());
                self.tracker
                    .lock()
                    .expect("lock poisoned")
                    .set_policy(policy);
            }
            Reload::Refused(error) => {
                warn!(path = %watcher.path().display(), %error, "The changed abuse policy was refused; the previous one stays in force.");
                summary.policy_refused += 1;
                metrics::counter!("vigil_policy_reloads_total", "outcome" => "refused")
                    .increment(1);
            }
        }
    }

    /// Adds the records of one geography's batch that were newly stored to their windows, and
    /// returns what to write with them: the changed window states, the cases opened and their
    /// review tasks. `in_flight` holds the content of records whose resource logs none; the
    /// sampled ones go into `offers`, for [`AbuseStage::offer_in_flight`] once the write
    /// succeeded. Runs inside the store's atomic write.
    pub(crate) fn observe(
        &self,
        geo: &Arc<GeoStore>,
        records: &[SealedRecord],
        observed: &[Option<Box<Observed>>],
        in_flight: &[Option<Content>],
        offers: &mut Vec<InFlight>,
        outcomes: &[WriteOutcome],
    ) -> Result<Vec<Annex>, StorageError> {
        let mut tracker = self.tracker.lock().expect("lock poisoned");
        let policy = tracker.policy().clone();
        let mut annex = Vec::new();
        let mut load = |key: &vigil_abuse::SubjectKey| {
            geo.window_state(&key.resource_id, key.end_user.as_deref())
        };
        let stored = records.iter().zip(observed).zip(outcomes);
        for ((record, observed), _) in stored.filter(|(_, o)| **o == WriteOutcome::Stored) {
            let Some(observed) = observed else { continue };
            let observation = Observation {
                geography: geo.geography(),
                resource_id: &record.resource_id,
                end_user: observed.end_user.as_deref(),
                request_id: &record.request_id,
                timestamp: observed.timestamp,
                signal: RecordSignal::of(
                    &policy.policy,
                    record.detection.as_ref(),
                    &observed.inspection,
                    observed.meaning,
                ),
            };
            for case in tracker.observe(&observation, &mut load)? {
                let mut summary = self.summary.lock().expect("lock poisoned");
                match geo.admit_case(&case, &annex) {
                    Ok(()) => {}
                    Err(StorageError::CaseConflict(_)) => {
                        summary.cases_refused += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                info!(case_id = %case.case_id, resource_id = %case.resource_id, abuse = case.scores.abuse, "Opened a case.");
                match case.subject {
                    FlagSubject::EndUser { .. } => {
                        summary.cases.end_users += 1;
                        metrics::counter!("vigil_cases_opened_total", "subject" => "end_user")
                            .increment(1);
                    }
                    FlagSubject::Resource => {
                        summary.cases.resources += 1;
                        metrics::counter!("vigil_cases_opened_total", "subject" => "resource")
                            .increment(1);
                    }
                }
                self.outbox_pending.store(true, Ordering::Relaxed);
                if let Some(review) = &self.review {
                    let logged = record.content_logged;
                    let reviews = Reviews {
                        review,
                        records,
                        in_flight,
                        offers: &mut *offers,
                        policy: &policy,
                    };
                    annex.extend(reviews.of(&case, logged));
                }
                annex.push(Annex::Case(Box::new(case)));
            }
        }
        annex.extend(
            tracker
                .take_dirty(geo.geography())
                .into_iter()
                .map(|(key, state)| Annex::Window {
                    resource_id: key.resource_id,
                    end_user: key.end_user,
                    state,
                }),
        );
        Ok(annex)
    }

    /// Hands the in-flight reviews `observe` prepared to the review stage, once their batch is
    /// written. What does not fit in memory keeps its `content_unavailable` verdict.
    pub(crate) fn offer_in_flight(
        &self,
        geo: &Arc<GeoStore>,
        offers: Vec<InFlight>,
    ) -> Result<(), StorageError> {
        let Some(review) = &self.review else {
            return Ok(());
        };
        for offer in offers {
            if let Some(task) = review.offer_in_flight(geo.clone(), offer) {
                geo.store_verdict(&review.content_unavailable(&task, true), None)?;
            }
        }
        Ok(())
    }

    /// Ends a batch: evicts idle and excess window states from memory.
    pub(crate) fn end_batch(&self) {
        self.tracker.lock().expect("lock poisoned").sweep();
    }

    /// Publishes the flag events of every case in the outbox of `stores` and clears them from
    /// it. Call only when the stores are durable.
    pub(crate) fn publish(&self, stores: &Stores) -> Result<(), PublishError> {
        if !self.outbox_pending.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(review) = &self.review {
            review.notify();
        }
        let mut flags = self.flags.lock().expect("lock poisoned");
        for geography in stores.geographies_on_disk()? {
            let geo = stores.geo(&geography)?;
            let cases = geo.unpublished_cases()?;
            if cases.is_empty() {
                continue;
            }
            for case in &cases {
                flags.publish(&case.flag_event())?;
            }
            flags.flush()?;
            geo.mark_published(cases.iter().map(|c| c.case_id.as_str()))?;
            self.summary.lock().expect("lock poisoned").flags_published += cases.len() as u64;
            metrics::counter!("vigil_flags_published_total").increment(cases.len() as u64);
        }
        Ok(())
    }

    /// What the stage did, with the tracker's counters.
    pub fn summary(&self) -> AbuseSummary {
        let tracker = self.tracker.lock().expect("lock poisoned");
        let mut summary = self.summary.lock().expect("lock poisoned").clone();
        summary.tracker = tracker.stats().clone();
        summary.subjects_in_memory = tracker.len() as u64;
        summary
    }
}

/// Where a new case's review items go.
struct Reviews<'a> {
    review: &'a ReviewStage,
    records: &'a [SealedRecord],
    in_flight: &'a [Option<Content>],
    offers: &'a mut Vec<InFlight>,
    policy: &'a CompiledPolicy,
}

impl Reviews<'_> {
    /// The first `review.per_case` records of `case`'s sample: queued in the store when its
    /// resource logs content (`logged`). Otherwise each gets a `content_unavailable` verdict
    /// in the same write, which an in-flight review overwrites when the record's content is
    /// in this batch (so every sampled record ends with a verdict, even after a crash).
    fn of(self, case: &Case, logged: bool) -> Vec<Annex> {
        let mut annex = Vec::new();
        let per_case = self.policy.policy.review.per_case;
        for request_id in case.sample.iter().take(per_case) {
            let task = ReviewTask {
                case_id: case.case_id.clone(),
                request_id: request_id.clone(),
                resource_id: case.resource_id.clone(),
                queued_at: time::OffsetDateTime::now_utc(),
            };
            if logged {
                annex.push(Annex::Review(task));
                continue;
            }
            let here = self
                .records
                .iter()
                .position(|r| &r.request_id == request_id);
            // Cloned: the end user's and the resource's cases may both sample the record.
            match here.and_then(|i| self.in_flight[i].as_ref().map(|c| (i, c.clone()))) {
                Some((i, content)) => {
                    let placeholder = self.review.placeholder(&task);
                    annex.push(Annex::Verdict(Box::new(placeholder)));
                    let category_at = self.policy.policy.signals.category_at;
                    let detection = self.records[i].detection.as_ref();
                    let signals = ReviewSignals::of(detection, case, category_at);
                    self.offers.push(InFlight {
                        task,
                        content,
                        signals,
                    });
                }
                None => {
                    let verdict = self.review.content_unavailable(&task, true);
                    annex.push(Annex::Verdict(Box::new(verdict)));
                }
            }
        }
        annex
    }
}

/// Why flag events could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The outbox could not be read or cleared.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The flag sink failed.
    #[error(transparent)]
    Sink(#[from] FlagSinkError),
}
