//! The `[analytics]` section: where the Parquet exports live.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings for the analytics exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Directory of the Parquet exports: `<table>/geography=<g>/day=<YYYY-MM-DD>/` partitions.
    #[serde(default = "default_export_dir")]
    pub export_dir: PathBuf,
}

fn default_export_dir() -> PathBuf {
    "var/exports".into()
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            export_dir: default_export_dir(),
        }
    }
}
