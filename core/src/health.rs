//! Readiness: what each part of a running vigil says about whether it can do its work, for
//! `/readyz` on the metrics listener.
//!
//! A part registers a named check once and then either sets it (the Kafka consumer says
//! "joined" or "rebalancing" from its callbacks) or gives a probe that is asked at each
//! request (the audit log says whether its last write succeeded). The process is ready when
//! every check is. A check's text is for operators and never holds an ID or content: only
//! counts, names of settings and states.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One part's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Working, with a word on how (`"4 geographies open"`).
    Ready(String),
    /// Not (yet) able to do its work, and why.
    NotReady(String),
}

impl Check {
    /// Whether the part is ready.
    pub fn is_ready(&self) -> bool {
        matches!(self, Check::Ready(_))
    }
}

type Probe = Arc<dyn Fn() -> Check + Send + Sync>;

enum Entry {
    Set(Check),
    Probe(Probe),
}

/// The checks of one process, by name.
#[derive(Default)]
pub struct Health {
    checks: Mutex<BTreeMap<&'static str, Entry>>,
}

/// What `/readyz` answers: every check in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Each check's name and state.
    pub checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    /// Whether every check is ready (and there is at least one).
    pub fn is_ready(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|(_, check)| check.is_ready())
    }

    /// One line per check: `ok stores: 4 geographies open` or `not ready kafka: joining
    /// group vigil`.
    pub fn text(&self) -> String {
        let mut text = String::new();
        if self.checks.is_empty() {
            text.push_str("not ready: starting\n");
        }
        for (name, check) in &self.checks {
            let line = match check {
                Check::Ready(how) => format!("ok {name}: {how}\n"),
                Check::NotReady(why) => format!("not ready {name}: {why}\n"),
            };
            text.push_str(&line);
        }
        text
    }
}

impl Health {
    /// A registry with no checks yet (not ready until the first is set).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets the state of check `name`.
    pub fn set(&self, name: &'static str, check: Check) {
        self.lock().insert(name, Entry::Set(check));
    }

    /// Makes `name` a probe, asked each time readiness is read.
    pub fn probe(&self, name: &'static str, probe: impl Fn() -> Check + Send + Sync + 'static) {
        self.lock().insert(name, Entry::Probe(Arc::new(probe)));
    }

    /// Every check now. Probes run outside the lock.
    pub fn readiness(&self) -> Readiness {
        let entries: Vec<(&'static str, Result<Check, Probe>)> = self
            .lock()
            .iter()
            .map(|(name, entry)| {
                let state = match entry {
                    Entry::Set(check) => Ok(check.clone()),
                    Entry::Probe(probe) => Err(probe.clone()),
                };
                (*name, state)
            })
            .collect();
        let checks = entries
            .into_iter()
            .map(|(name, state)| (name, state.unwrap_or_else(|probe| probe())))
            .collect();
        Readiness { checks }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Entry>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("readiness", &self.readiness())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_is() {
        let health = Health::new();
        assert!(!health.readiness().is_ready(), "no checks yet: starting");
        health.set("stores", Check::Ready("2 geographies open".into()));
        health.set("kafka", Check::NotReady("joining group vigil".into()));
        let readiness = health.readiness();
        assert!(!readiness.is_ready());
        assert_eq!(
            readiness.text(),
            "not ready kafka: joining group vigil\nok stores: 2 geographies open\n"
        );
        health.set("kafka", Check::Ready("joined group vigil".into()));
        assert!(health.readiness().is_ready());
    }

    #[test]
    fn probes_are_asked_each_time() {
        let health = Health::new();
        let writable = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = writable.clone();
        health.probe("audit", move || {
            match flag.load(std::sync::atomic::Ordering::Relaxed) {
                true => Check::Ready("writable".into()),
                false => Check::NotReady("the last write failed".into()),
            }
        });
        assert!(health.readiness().is_ready());
        writable.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(!health.readiness().is_ready());
    }
}
