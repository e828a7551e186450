//! Retention settings: how many days each geography (and resource) keeps records.
//!
//! Prompts and completions are kept for at most `max_days` (30 unless configured lower); a
//! geography may keep them for less, and a resource for less than its geography. Nothing may be
//! configured above the maximum: such a configuration is refused at start-up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_core::{Resource, ResourceRegistry};

/// The longest retention the source documents allow.
pub const LEGAL_MAX_DAYS: u32 = 30;

/// Retention settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// The maximum for every geography and resource, in days (at most 30).
    #[serde(default = "default_max_days")]
    pub max_days: u32,
    /// Per-geography retention in days, for geographies that keep records for less.
    #[serde(default)]
    pub geographies: BTreeMap<String, u32>,
}

const fn default_max_days() -> u32 {
    LEGAL_MAX_DAYS
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_days: default_max_days(),
            geographies: BTreeMap::new(),
        }
    }
}

/// A retention setting that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention: {0}")]
pub struct RetentionError(String);

impl RetentionConfig {
    /// Checks the settings against each other and against every registered resource.
    pub fn validate(&self, registry: &ResourceRegistry) -> Result<(), RetentionError> {
        if !(1..=LEGAL_MAX_DAYS).contains(&self.max_days) {
            return Err(RetentionError(format!(
                "max_days is {}, it must be 1-{LEGAL_MAX_DAYS}",
                self.max_days
            )));
        }
        for (geo, days) in &self.geographies {
            if !(1..=self.max_days).contains(days) {
                return Err(RetentionError(format!(
                    "geography {geo} keeps records for {days} days, it must be 1-{}",
                    self.max_days
                )));
            }
        }
        for resource in registry.iter() {
            let limit = self.geography_days(resource.geography.as_str());
            if let Some(days) = resource.retention_days.filter(|d| *d > limit) {
                return Err(RetentionError(format!(
                    "resource {} keeps records for {days} days, above its geography's {limit}",
                    resource.id
                )));
            }
        }
        Ok(())
    }

    /// Days a geography keeps records.
    pub fn geography_days(&self, geography: &str) -> u32 {
        self.geographies
            .get(geography)
            .copied()
            .unwrap_or(self.max_days)
            .min(self.max_days)
    }

    /// Days a resource's records are kept.
    pub fn resource_days(&self, resource: &Resource) -> u32 {
        let geo = self.geography_days(resource.geography.as_str());
        resource.retention_days.map_or(geo, |d| d.min(geo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::{Geography, ResourceId};

    fn registry(days: Option<u32>) -> ResourceRegistry {
        let mut r = Resource::new(
            ResourceId::parse("a").unwrap(),
            Geography::parse("eu").unwrap(),
        );
        r.retention_days = days;
        let mut reg = ResourceRegistry::default();
        reg.add(r).unwrap();
        reg
    }

    #[test]
    fn never_above_the_maximum() {
        let mut cfg = RetentionConfig::default();
        assert!(cfg.validate(&registry(Some(30))).is_ok());
        cfg.max_days = 31;
        assert!(cfg.validate(&registry(None)).is_err());
        cfg.max_days = 20;
        assert!(cfg.validate(&registry(Some(21))).is_err());
        cfg.geographies.insert("eu".into(), 25);
        assert!(cfg.validate(&registry(None)).is_err());
        cfg.geographies.insert("eu".into(), 10);
        assert!(cfg.validate(&registry(Some(11))).is_err());
        assert!(cfg.validate(&registry(Some(7))).is_ok());
        let reg = registry(Some(7));
        assert_eq!(cfg.resource_days(reg.get("a").unwrap()), 7);
        assert_eq!(cfg.geography_days("us"), 20);
    }
}
