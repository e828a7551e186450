//! The `[abuse]` section of `vigil.toml`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of recurring-abuse detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseConfig {
    /// Whether `vigil run` tracks recurring abuse (heuristics, windows, cases, flags).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// The policy file; a relative path is looked for in the working directory, then in the
    /// directories above the `vigil` binary, like the model.
    #[serde(default = "default_policy")]
    pub policy: PathBuf,
    /// Where flag events go (JSON lines) when vigil is not consuming from Kafka; a Kafka run
    /// publishes them on the flag topics.
    #[serde(default = "default_flags")]
    pub flags: PathBuf,
}

fn enabled() -> bool {
    true
}

fn default_policy() -> PathBuf {
    "policies/abuse.toml".into()
}

fn default_flags() -> PathBuf {
    "var/flags.jsonl".into()
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            enabled: enabled(),
            policy: default_policy(),
            flags: default_flags(),
        }
    }
}
