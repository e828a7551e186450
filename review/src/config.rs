//! `[review]` in `vigil.toml`: which backend reviews, how many workers, how much waits in
//! memory, and the retry and breaker settings. Routing thresholds and category definitions
//! are policy, not configuration: they live in the policy file's `[review]` section.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::local::LocalConfig;
use crate::openai::OpenAiConfig;
use crate::reviewer::RetryConfig;

/// Which backend reviews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// The embedded default: a small GGUF model on the CPU, in-process.
    #[default]
    Local,
    /// Any OpenAI-compatible chat-completions endpoint (`[review.openai]`).
    Openai,
}

/// `[review]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// Whether cases' samples are reviewed at all.
    pub enabled: bool,
    /// The backend.
    pub backend: BackendKind,
    /// Reviews running at once (worker threads).
    pub workers: usize,
    /// Items held in memory, waiting for a worker; the rest wait in the store.
    pub queue_capacity: usize,
    /// At the end of `vigil run --input`, how long to keep reviewing what is queued before
    /// exiting; what is left waits in the store for the next run or `vigil review`.
    pub drain_secs: u64,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// The OpenAI-compatible backend.
    pub openai: OpenAiConfig,
    /// The local backend.
    pub local: LocalConfig,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: BackendKind::Local,
            workers: 1,
            queue_capacity: 16,
            drain_secs: 120,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            openai: OpenAiConfig::default(),
            local: LocalConfig::default(),
        }
    }
}
