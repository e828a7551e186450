//! The reviewer: a backend behind retries with backoff, a circuit breaker and the malformed-
//! output rule, ending every item in a [`Verdict`] routed by the policy's thresholds.
//!
//! - Transient failures (connection, timeout, HTTP 429/5xx) are retried up to
//!   `retry.max_retries` times, with exponential backoff and jitter, while the breaker allows.
//! - A malformed answer is retried once with the strict instruction; a second one escalates
//!   the item (`malformed_output`).
//! - Permanent failures, exhausted retries and an open breaker escalate the item at once
//!   (`backend_unavailable`): humans review it instead of it waiting on a dead backend. An
//!   item the backend rejects (HTTP 400/413/422) escalates the same way without counting
//!   against the breaker; a panicking backend counts as a failed call.
//! - An assessment is routed by [`route`]: a confident "no violation" closes the item,
//!   anything else escalates it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{debug, warn};
use vigil_abuse::ReviewPolicy;
use vigil_core::{Assessment, RequestId, Route, RouteReason, Verdict};

use crate::backend::{Backend, BackendError, Instruction, ReviewRequest};
use crate::breaker::{BreakerConfig, CircuitBreaker};

/// `[review.retry]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries of a transient failure, after the first attempt.
    pub max_retries: u32,
    /// The first pause; each retry doubles it, up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    /// The longest pause.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff_ms: 250,
            max_backoff_ms: 8_000,
        }
    }
}

impl RetryConfig {
    /// The pause before retry number `retry` (0-based): exponential, with up to 50% jitter
    /// drawn from `seed` so that workers retrying together spread out.
    pub fn backoff(&self, retry: u32, seed: u64) -> Duration {
        let base = self
            .initial_backoff_ms
            .saturating_mul(1 << retry.min(20))
            .min(self.max_backoff_ms);
        let jitter = vigil_abuse::stable_hash(&seed.wrapping_add(u64::from(retry)).to_le_bytes())
            % (base / 2 + 1);
        Duration::from_millis(base - jitter)
    }
}

/// Where an assessment sends its item under `policy`: closed only for a "no violation" at
/// least `close_confidence` sure.
pub fn route(assessment: &Assessment, policy: &ReviewPolicy) -> (Route, RouteReason) {
    if assessment.violation {
        (Route::Escalated, RouteReason::Violation)
    } else if assessment.confidence >= policy.close_confidence {
        (Route::Closed, RouteReason::ConfidentNoViolation)
    } else {
        (Route::Escalated, RouteReason::LowConfidence)
    }
}

/// What the reviewer did, counted.
#[derive(Debug, Default)]
pub struct ReviewCounters {
    reviewed: AtomicU64,
    closed: AtomicU64,
    escalated: AtomicU64,
    retries: AtomicU64,
    malformed: AtomicU64,
    backend_unavailable: AtomicU64,
    breaker_opened: AtomicU64,
}

/// A snapshot of [`ReviewCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewStats {
    /// Verdicts produced.
    pub reviewed: u64,
    /// Of which closed.
    pub closed: u64,
    /// Of which escalated to humans.
    pub escalated: u64,
    /// Transient failures retried.
    pub retries: u64,
    /// Malformed answers (each retried once, strictly).
    pub malformed: u64,
    /// Items escalated because the backend failed or its breaker was open.
    pub backend_unavailable: u64,
    /// Times the circuit breaker opened.
    pub breaker_opened: u64,
}

/// A record to review, as the reviewer is given it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The case it was sampled for.
    pub case_id: &'a str,
    /// The record.
    pub request_id: &'a RequestId,
    /// Whether its content is reviewed in flight (never stored).
    pub in_flight: bool,
}

/// A backend with retries, a breaker and routing (see the module docs). Shared by workers.
pub struct Reviewer {
    backend: Box<dyn Backend>,
    retry: RetryConfig,
    breaker: CircuitBreaker,
    counters: ReviewCounters,
}

impl Reviewer {
    /// A reviewer over `backend`.
    pub fn new(backend: Box<dyn Backend>, retry: RetryConfig, breaker: BreakerConfig) -> Self {
        Self {
            backend,
            retry,
            breaker: CircuitBreaker::new(breaker),
            counters: ReviewCounters::default(),
        }
    }

    /// The backend's model name.
    pub fn model(&self) -> String {
        self.backend.model()
    }

    /// Reviews one record and returns its verdict; never fails (failures escalate).
    pub fn review(&self, item: Item<'_>, request: &ReviewRequest<'_>) -> Verdict {
        let (assessed, attempts) = self.assess(item, request);
        let (route, reason) = match &assessed {
            Ok(assessment) => route(assessment, request.policy),
            Err(reason) => (Route::Escalated, *reason),
        };
        self.count_verdict(route);
        let verdict = self.verdict(item, request.policy_version, route, reason);
        Verdict {
            assessment: assessed.ok(),
            attempts,
            ..verdict
        }
    }

    /// The verdict for an item that could not be reviewed at all (`reason` says why),
    /// counted.
    pub fn unreviewed(&self, item: Item<'_>, policy_version: &str, reason: RouteReason) -> Verdict {
        self.count_verdict(Route::Escalated);
        self.unreviewed_verdict(item, policy_version, reason)
    }

    /// The same verdict as [`Reviewer::unreviewed`], not counted (a placeholder).
    pub fn unreviewed_verdict(
        &self,
        item: Item<'_>,
        policy_version: &str,
        reason: RouteReason,
    ) -> Verdict {
        self.verdict(item, policy_version, Route::Escalated, reason)
    }

    fn count_verdict(&self, route: Route) {
        self.counters.reviewed.fetch_add(1, Ordering::Relaxed);
        let label = match route {
            Route::Closed => "closed",
            Route::Escalated => "escalated",
        };
        metrics::counter!("vigil_review_verdicts_total", "route" => label).increment(1);
        match route {
            Route::Closed => &self.counters.closed,
            Route::Escalated => &self.counters.escalated,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A verdict with no assessment and no attempts, reached now.
    fn verdict(
        &self,
        item: Item<'_>,
        policy_version: &str,
        route: Route,
        reason: RouteReason,
    ) -> Verdict {
        Verdict {
            case_id: item.case_id.to_owned(),
            request_id: item.request_id.clone(),
            reviewed_at: OffsetDateTime::now_utc(),
            route,
            reason,
            assessment: None,
            model: self.backend.model(),
            policy_version: policy_version.to_owned(),
            attempts: 0,
            in_flight: item.in_flight,
        }
    }

    /// Calls the backend under the retry, malformed-output and breaker rules. Returns the
    /// assessment (or why there is none) and the number of calls made.
    fn assess(
        &self,
        item: Item<'_>,
        request: &ReviewRequest<'_>,
    ) -> (Result<Assessment, RouteReason>, u32) {
        let mut attempts = 0;
        let mut retries = 0;
        let mut instruction = Instruction::Normal;
        loop {
            if !self.breaker.allow() {
                self.counters
                    .backend_unavailable
                    .fetch_add(1, Ordering::Relaxed);
                return (Err(RouteReason::BackendUnavailable), attempts);
            }
            attempts += 1;
            // A panicking backend is a failed call: the worker lives on, and a half-open
            // breaker gets its answer.
            let assessed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.backend.assess(request, instruction)
            }))
            .unwrap_or_else(|_| Err(BackendError::Permanent("the backend panicked".into())));
            match assessed {
                Ok(assessment) => {
                    self.breaker.succeeded();
                    return (Ok(assessment), attempts);
                }
                Err(BackendError::Malformed(problem)) => {
                    self.breaker.succeeded();
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(case_id = item.case_id, request_id = %item.request_id, %problem, strict = instruction == Instruction::Strict, "The reviewer's answer was malformed.");
                    if instruction == Instruction::Strict {
                        return (Err(RouteReason::MalformedOutput), attempts);
                    }
                    instruction = Instruction::Strict;
                }
                Err(error @ BackendError::Rejected(_)) => {
                    self.breaker.succeeded();
                    warn!(case_id = item.case_id, request_id = %item.request_id, %error, "The reviewer backend rejected the item; escalating.");
                    self.counters
                        .backend_unavailable
                        .fetch_add(1, Ordering::Relaxed);
                    return (Err(RouteReason::BackendUnavailable), attempts);
                }
                Err(error) => {
                    metrics::counter!("vigil_review_backend_errors_total").increment(1);
                    if self.breaker.failed() {
                        self.counters.breaker_opened.fetch_add(1, Ordering::Relaxed);
                        warn!(model = %self.backend.model(), %error, "The reviewer's circuit breaker opened: items escalate to humans until the backend answers again.");
                    }
                    let transient = matches!(error, BackendError::Transient(_));
                    if !transient || retries >= self.retry.max_retries {
                        warn!(case_id = item.case_id, request_id = %item.request_id, %error, attempts, "The reviewer backend failed; escalating.");
                        self.counters
                            .backend_unavailable
                            .fetch_add(1, Ordering::Relaxed);
                        return (Err(RouteReason::BackendUnavailable), attempts);
                    }
                    let pause = self.retry.backoff(
                        retries,
                        vigil_abuse::stable_hash(item.request_id.as_str().as_bytes()),
                    );
                    debug!(%error, retry = retries + 1, ?pause, "Retrying the reviewer backend.");
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    retries += 1;
                    std::thread::sleep(pause);
                }
            }
        }
    }

    /// What the reviewer has done so far.
    pub fn stats(&self) -> ReviewStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ReviewStats {
            reviewed: load(&c.reviewed),
            closed: load(&c.closed),
            escalated: load(&c.escalated),
            retries: load(&c.retries),
            malformed: load(&c.malformed),
            backend_unavailable: load(&c.backend_unavailable),
            breaker_opened: load(&c.breaker_opened),
        }
    }
}
