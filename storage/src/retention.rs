//! Retention settings: how many days each geography (and resource) keeps records.
//!
//! Prompts and completions are kept for at most `max_days` (30 unless configured lower); a
//! geography may keep them for less, and a resource for less than its geography. Nothing may be
//! configured above the maximum: such a configuration is refused at start-up.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use vigil_core::{Day, Geography, Resource, ResourceRegistry};

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
    /// How often `vigil run` purges what is past retention (and refreshes the exports), in
    /// seconds; it also purges when it starts. Days expire at midnight UTC, so a record is
    /// kept at most its retention plus this interval.
    #[serde(default = "default_purge_interval_secs")]
    pub purge_interval_secs: u64,
}

const fn default_purge_interval_secs() -> u64 {
    3600
}

const fn default_max_days() -> u32 {
    LEGAL_MAX_DAYS
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_days: default_max_days(),
            geographies: BTreeMap::new(),
            purge_interval_secs: default_purge_interval_secs(),
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
        if self.purge_interval_secs == 0 {
            return Err(RetentionError(
                "purge_interval_secs is 0, it must be at least 1".into(),
            ));
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

/// Which days are past retention in one geography, as of one day: a record stored on day
/// `d` by a resource kept `n` days expires when day `d + n` begins (UTC), so nothing is kept
/// longer than `n` days plus the time until the next purge.
#[derive(Debug, Clone)]
pub struct Cutoffs {
    today: Day,
    geography_days: u32,
    resource_days: HashMap<String, u32>,
}

impl Cutoffs {
    /// The cutoffs of `geography` on `today`. Resources no longer registered are kept as long
    /// as their geography keeps records.
    pub fn new(
        retention: &RetentionConfig,
        registry: &ResourceRegistry,
        geography: &Geography,
        today: Day,
    ) -> Self {
        Self {
            today,
            geography_days: retention.geography_days(geography.as_str()),
            resource_days: registry
                .iter()
                .filter(|r| &r.geography == geography)
                .map(|r| (r.id.as_str().to_owned(), retention.resource_days(r)))
                .collect(),
        }
    }

    /// The day the purge runs as of.
    pub fn today(&self) -> Day {
        self.today
    }

    /// The oldest day of `resource` still kept.
    pub fn first_kept(&self, resource: &str) -> Day {
        let days = self
            .resource_days
            .get(resource)
            .copied()
            .unwrap_or(self.geography_days);
        self.today.minus(days.saturating_sub(1))
    }

    /// The oldest day any resource of the geography keeps (export partitions before it hold
    /// nothing).
    pub fn first_kept_by_geography(&self) -> Day {
        self.today.minus(self.geography_days.saturating_sub(1))
    }

    /// Whether what `resource` stored on `day` is past retention.
    pub fn expired(&self, resource: &str, day: Day) -> bool {
        day < self.first_kept(resource)
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

    #[test]
    fn a_day_expires_when_its_retention_has_fully_passed() {
        let mut cfg = RetentionConfig::default();
        cfg.geographies.insert("eu".into(), 10);
        let reg = registry(Some(3));
        let today = Day::from_number(100);
        let cut = Cutoffs::new(&cfg, &reg, &Geography::parse("eu").unwrap(), today);
        // Kept 3 days: today and the two before it.
        assert!(!cut.expired("a", Day::from_number(98)));
        assert!(cut.expired("a", Day::from_number(97)));
        // An unregistered resource is kept as long as its geography keeps records.
        assert!(!cut.expired("gone", Day::from_number(91)));
        assert!(cut.expired("gone", Day::from_number(90)));
        assert_eq!(cut.first_kept_by_geography(), Day::from_number(91));
    }
}
