//! vigil's configuration: one typed struct, from built-in defaults, then a TOML file, then
//! `VIGIL_<SECTION>__<KEY>` environment variables. Unknown keys are errors, not silently
//! ignored typos.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use vigil_abuse::AbuseConfig;
use vigil_access::AccessConfig;
use vigil_analytics::AnalyticsConfig;
use vigil_api::cluster::ClusterConfig;
use vigil_api::ops::MetricsConfig;
use vigil_api::ApiConfig;
use vigil_detectors::ClassifierConfig;
use vigil_ingest::IngestConfig;
use vigil_kafka::KafkaConfig;
use vigil_review::ReviewConfig;
use vigil_storage::StorageConfig;

/// Everything vigil can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The resource registry file.
    #[serde(default = "default_resources")]
    pub resources: PathBuf,
    /// Sources, validation and dead letters.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Geography stores, keys and retention.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Brokers, consumer group and topics for `vigil run --kafka`, `vigil produce` and flag
    /// events.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// The harm classifier: its model, ONNX Runtime, batching and threshold.
    #[serde(default)]
    pub detectors: ClassifierConfig,
    /// Recurring-abuse detection: the policy file and where flag events go.
    #[serde(default)]
    pub abuse: AbuseConfig,
    /// The LLM reviewer of cases' samples: backend, workers, queue, retries and breaker.
    #[serde(default)]
    pub review: ReviewConfig,
    /// The Parquet analytics exports that `vigil sql` queries.
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// Principals, grants, the workstation CA, rate limits and the audit log.
    #[serde(default)]
    pub access: AccessConfig,
    /// The HTTP API's listeners (`vigil serve`, `vigil run --api`).
    #[serde(default)]
    pub api: ApiConfig,
    /// The metrics listener (`/metrics`, `/healthz`, `/readyz`) of `vigil run` and
    /// `vigil serve`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The peer listener and forwarding between the nodes of a group (`vigil run --kafka
    /// --api` on several machines).
    #[serde(default)]
    pub cluster: ClusterConfig,
}

fn default_resources() -> PathBuf {
    "resources.toml".into()
}

/// The file read when `--config` is not given, if it exists.
const DEFAULT_FILE: &str = "vigil.toml";

/// Whether the environment variable `VIGIL_<key>` is a setting: `VIGIL_<SECTION>__<KEY>`, or
/// the one top-level setting, `VIGIL_RESOURCES`. Any other `VIGIL_*` variable (`VIGIL_LOG`,
/// `VIGIL_NOW`, or one a script sets for itself, such as `VIGIL_BIN`) is not vigil's
/// configuration, and never makes it invalid.
fn is_setting(key: &str) -> bool {
    key.contains("__") || key.eq_ignore_ascii_case("resources")
}

impl Config {
    /// Loads the configuration. An explicitly named file must exist.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config {
            resources: default_resources(),
            ..Config::default()
        }));
        match file {
            Some(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "configuration file {} does not exist",
                    path.display()
                );
                figment = figment.merge(Toml::file(path));
            }
            None if Path::new(DEFAULT_FILE).exists() => {
                figment = figment.merge(Toml::file(DEFAULT_FILE))
            }
            None => {}
        }
        let env = Env::prefixed("VIGIL_")
            .filter(|key| is_setting(key.as_str()))
            .split("__");
        figment
            .merge(env)
            .extract()
            .context("invalid configuration")
    }
}

impl Config {
    /// Checks what the types cannot, section by section, as the commands that use each
    /// section do when they start; the registry file is read for the retention rules.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.storage.validate()?;
        let registry = vigil_core::ResourceRegistry::load(&self.resources)?;
        self.storage.retention.validate(&registry)?;
        self.kafka.validate()?;
        self.access.validate()?;
        self.api.validate().map_err(anyhow::Error::msg)?;
        self.metrics.validate().map_err(anyhow::Error::msg)?;
        self.cluster.validate().map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own error type.
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "v.toml",
                "resources = 'r.toml'\n[storage]\ndata_dir = 'from-file'\n[ingest]\nmax_record_bytes = 10\n",
            )?;
            jail.set_env("VIGIL_STORAGE__DATA_DIR", "from-env");
            jail.set_env("VIGIL_LOG", "debug");
            let c = Config::load(Some(Path::new("v.toml"))).map_err(|e| format!("{e:#}"))?;
            assert_eq!(c.resources, PathBuf::from("r.toml"));
            assert_eq!(c.storage.data_dir, PathBuf::from("from-env"));
            assert_eq!(c.ingest.max_record_bytes, 10);
            assert_eq!(c.storage.master_key, StorageConfig::default().master_key);
            assert_eq!(c.kafka, KafkaConfig::default());
            Ok(())
        });
    }

    #[test]
    fn only_section_settings_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            // Variables vigil does not own (a script's, the log filter) are not settings.
            jail.set_env("VIGIL_BIN", "/usr/local/bin/vigil");
            jail.set_env("VIGIL_LOG", "debug");
            jail.set_env("VIGIL_RESOURCES", "elsewhere.toml");
            jail.set_env("VIGIL_API__MAX_CONNECTIONS", "16");
            let c = Config::load(None).map_err(|e| format!("{e:#}"))?;
            assert_eq!(c.resources, PathBuf::from("elsewhere.toml"));
            assert_eq!(c.api.max_connections, 16);
            // A section's unknown key is a typo, and an error.
            jail.set_env("VIGIL_API__MAX_CONECTIONS", "16");
            let err = Config::load(None).unwrap_err();
            assert!(format!("{err:#}").contains("max_conections"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("v.toml", "[storage]\ndata_dri = 'typo'\n")?;
            let err = Config::load(Some(Path::new("v.toml"))).unwrap_err();
            assert!(format!("{err:#}").contains("data_dri"), "{err:#}");
            Ok(())
        });
    }
}
