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
    /// The secret case IDs are keyed with (32 random bytes as hex, created with mode 0600 on
    /// first use, beside the master key by default). Keep it as private as the master key:
    /// whoever holds it can compute any subject's case IDs.
    #[serde(default = "default_case_id_key")]
    pub case_id_key: PathBuf,
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

fn default_case_id_key() -> PathBuf {
    "var/keys/case-id.key".into()
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            enabled: enabled(),
            policy: default_policy(),
            flags: default_flags(),
            case_id_key: default_case_id_key(),
        }
    }
}
