//! Recurring-abuse detection: one bad message is not abuse; a user who sends forty variants of
//! the same jailbreak in an hour is.
//!
//! For every record, per end user and per resource, the [`Tracker`] keeps sliding windows of
//! what the detectors found ([`RecordSignal`]: harmful or not, severity, categories, known
//! jailbreak templates, a near-duplicate fingerprint) and scores them ([`abuse_score`]):
//!
//! ```text
//! frequency = (1 - exp(-h / frequency_scale)) * min(1, (h / n) / share_scale)
//! severity  = mean severity of the h harmful records
//! intent    = 1 - exp(-(near_duplicates + template_hits + escalations) / intent_scale)
//! trend     = h / (h + h_prev)
//! abuse     = frequency * (w_severity * severity + w_intent * intent + w_trend * trend)
//! ```
//!
//! with `h` harmful records of `n` in the current window and `h_prev` in the one before. When a
//! subject with at least `min_harmful` harmful records scores at or above its threshold, a
//! [`Case`](vigil_core::Case) opens with a weighted reservoir sample of the subject's records in
//! the window, once per subject and window, under an ID keyed with the installation's secret
//! ([`CaseIdKey`]). Every parameter is in the [`Policy`] file, which is
//! reloaded when it changes ([`PolicyWatcher`]).
//!
//! States are bounded in memory and checkpointed by the caller (the pipeline writes them in
//! the same atomic batch as the records that changed them), so a restart forgets nothing.

mod case_id;
pub mod config;
pub mod policy;
mod score;
mod signal;
mod tracker;
mod window;

pub use case_id::{CaseIdKey, CaseIdKeyError, CASE_ID_KEY_LEN};
pub use config::AbuseConfig;
pub use policy::{CompiledPolicy, Policy, PolicyWatcher, Reload, ReviewPolicy};
pub use score::abuse_score;
pub use signal::RecordSignal;
pub use tracker::{LoadState, Observation, SubjectKey, Tracker, TrackerStats};
pub use window::{SubjectState, Totals};

/// FNV-1a, 64 bits, then a finaliser so that every bit depends on every input byte: stable
/// across builds and platforms, for sampling keys and jitter. Not for identifiers: anyone can
/// search for collisions of it in about 2^32 steps (case IDs are keyed, see [`CaseIdKey`]).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let fnv = bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    vigil_detectors::simhash::mix(fnv)
}
