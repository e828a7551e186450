//! A circuit breaker for the backend: after `failures` failures in a row it opens, and for
//! `cooldown` every review escalates at once instead of waiting on a backend that is down.
//! Then one probe is let through (half-open): a success closes the breaker, a failure opens it
//! for another cooldown.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `[review.breaker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the breaker.
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out; everyone else is refused until it reports.
    HalfOpen,
}

/// The breaker (shared by the worker threads).
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may go to the backend now. When the cooldown is over, the first caller
    /// becomes the probe.
    pub fn allow(&self) -> bool {
        let mut state = self.state.lock().expect("lock poisoned");
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// The backend answered (even with a malformed answer: it is up).
    pub fn succeeded(&self) {
        let mut state = self.state.lock().expect("lock poisoned");
        if !matches!(*state, State::Closed { .. }) {
            metrics::gauge!("vigil_review_breaker_open").set(0.0);
        }
        *state = State::Closed { failures: 0 };
    }

    /// A call failed. Returns true when this opened the breaker.
    pub fn failed(&self) -> bool {
        let mut state = self.state.lock().expect("lock poisoned");
        let open = State::Open {
            until: Instant::now() + Duration::from_millis(self.config.cooldown_ms),
        };
        match *state {
            State::Closed { failures } if failures + 1 >= self.config.failures => {
                *state = open;
                metrics::gauge!("vigil_review_breaker_open").set(1.0);
                true
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen => {
                *state = open;
                true
            }
            State::Open { .. } => false,
        }
    }

    /// Whether the breaker is open (or probing) now.
    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().expect("lock poisoned"),
            State::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_after_the_cooldown() {
        let breaker = CircuitBreaker::new(BreakerConfig {
            failures: 3,
            cooldown_ms: 50,
        });
        assert!(!breaker.failed());
        breaker.succeeded();
        assert!(!breaker.failed() && !breaker.failed());
        assert!(breaker.allow(), "two failures in a row do not open it");
        assert!(breaker.failed(), "the third does");
        assert!(!breaker.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow(), "one probe after the cooldown");
        assert!(!breaker.allow(), "only one");
        assert!(breaker.failed(), "a failed probe reopens it");
        assert!(!breaker.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow());
        breaker.succeeded();
        assert!(breaker.allow() && breaker.allow() && !breaker.is_open());
    }
}
