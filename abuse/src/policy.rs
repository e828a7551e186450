//! The abuse policy: one TOML file (`policies/abuse.toml`) with the heuristics' lexicons and
//! patterns, the window sizes, the abuse-score formula's parameters and thresholds, and the
//! review sample size. It is read at start-up and reloaded when it changes ([`PolicyWatcher`]);
//! a changed file that does not compile is refused and the policy in force stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;
use vigil_core::Category;
use vigil_detectors::heuristics::{Heuristics, HeuristicsPolicy, PolicyError};

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The policy's version, written on every case it scores.
    pub version: String,
    /// Lexicons and pattern families.
    pub heuristics: HeuristicsPolicy,
    /// How records become per-record signals.
    pub signals: SignalsPolicy,
    /// Sliding windows.
    pub windows: WindowsPolicy,
    /// Near-duplicate detection.
    pub near_duplicates: NearDuplicatesPolicy,
    /// The abuse score.
    pub scoring: ScoringPolicy,
    /// The sample of records offered for review.
    pub sampling: SamplingPolicy,
    /// The LLM review of sampled records: category definitions and routing thresholds.
    pub review: ReviewPolicy,
}

/// Per-record signals.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsPolicy {
    /// A heuristic severity from which a record counts as harmful (the classifier's own
    /// threshold decides for its scores).
    pub heuristic_harmful_at: f32,
    /// A category is named on a case when its severity in the window reaches this.
    pub category_at: f32,
    /// How much more severe than every earlier harmful record in the window a record must be
    /// to count as an escalation.
    pub escalation_step: f32,
}

impl SignalsPolicy {
    /// Whether a heuristic of at least `heuristic_harmful_at` matched in `inspection`: the
    /// record counts as harmful, and its prompt is worth the encoder's time.
    pub fn suspicious(&self, inspection: &vigil_detectors::Inspection) -> bool {
        inspection.hits.severity() >= self.heuristic_harmful_at
    }
}

/// Sliding windows: `length_secs` long, moving in `buckets` steps; the window before is kept
/// for the trend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsPolicy {
    /// Window length in seconds.
    pub length_secs: u32,
    /// Steps per window (the window slides by `length_secs / buckets`).
    pub buckets: u32,
    /// Subjects (end users and resources) held in memory at most; beyond it the least
    /// recently active are evicted (their state stays in the store and is reloaded).
    pub max_subjects: usize,
}

impl WindowsPolicy {
    /// Seconds per bucket.
    pub fn bucket_secs(&self) -> i64 {
        i64::from(self.length_secs / self.buckets)
    }
}

/// Near-duplicate detection over SimHash fingerprints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearDuplicatesPolicy {
    /// Fingerprints at most this many bits apart (of 64) are near-duplicates.
    pub max_distance: u32,
    /// Prompt meanings at most this many bits apart (of 256) are near-duplicates: paraphrases.
    /// `256 * acos(c) / π` bits for embeddings of cosine similarity `c`; 85 is `c = 0.5`, the
    /// default (policy files written before it keep loading).
    #[serde(default = "default_max_meaning_distance")]
    pub max_meaning_distance: u32,
    /// Fingerprints of harmful records remembered per subject and window.
    pub remember: usize,
}

fn default_max_meaning_distance() -> u32 {
    85
}

/// The abuse score (see the crate docs for the formula).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringPolicy {
    /// Harmful records in a window at which frequency reaches 1 - 1/e (before the share).
    pub frequency_scale: f32,
    /// Intent events (near-duplicates, templates, escalations) at which intent reaches 1 - 1/e.
    pub intent_scale: f32,
    /// Weights of severity, intent and trend; they sum to 1.
    pub weights: Weights,
    /// Fewer harmful records than this in a window never open a case.
    pub min_harmful: u32,
    /// Thresholds for end users.
    pub end_user: SubjectScoring,
    /// Thresholds for resources as a whole.
    pub resource: SubjectScoring,
}

/// Weights of the score's components.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Of severity.
    pub severity: f32,
    /// Of intent.
    pub intent: f32,
    /// Of trend.
    pub trend: f32,
}

/// Per kind of subject.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectScoring {
    /// A case opens when the abuse score reaches this.
    pub threshold: f32,
    /// The share of harmful records at which frequency is no longer damped.
    pub share_scale: f32,
}

/// Review sampling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingPolicy {
    /// Request IDs sampled per case.
    pub size: usize,
    /// How much likelier a harmful record is to be sampled than a benign one.
    pub harmful_weight: f32,
}

/// The LLM review of sampled records.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewPolicy {
    /// Sampled records of each case the LLM reviews (the first ones of the case's sample).
    pub per_case: usize,
    /// A "no violation" answer at least this confident closes the item; anything else (a
    /// violation, or less confidence) escalates it to the human queue.
    pub close_confidence: f32,
    /// Content longer than this (characters, prompt and completion each) is cut before review.
    pub max_content_chars: usize,
    /// Each category with the short definition the reviewer is given.
    pub categories: BTreeMap<Category, String>,
}

impl Policy {
    /// Parses and checks a policy; errors name the field.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map_or_else(|| "(file)".into(), |span| format!("bytes {span:?}"));
            PolicyError::new(field, e.message().to_owned())
        })?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let unit = |field: &str, v: f32| -> Result<(), PolicyError> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(PolicyError::new(field, format!("{v} is not in [0, 1]")))
            }
        };
        let positive = |field: &str, v: f32| -> Result<(), PolicyError> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(PolicyError::new(field, format!("{v} must be above 0")))
            }
        };
        if self.version.trim().is_empty() {
            return Err(PolicyError::new("version", "must not be empty"));
        }
        unit(
            "signals.heuristic_harmful_at",
            self.signals.heuristic_harmful_at,
        )?;
        unit("signals.category_at", self.signals.category_at)?;
        unit("signals.escalation_step", self.signals.escalation_step)?;
        let w = &self.windows;
        if w.buckets == 0 || w.buckets > 64 {
            return Err(PolicyError::new("windows.buckets", "must be 1 to 64"));
        }
        if w.length_secs < w.buckets || !w.length_secs.is_multiple_of(w.buckets) {
            return Err(PolicyError::new(
                "windows.length_secs",
                "must be a multiple of windows.buckets",
            ));
        }
        if w.max_subjects == 0 {
            return Err(PolicyError::new(
                "windows.max_subjects",
                "must be at least 1",
            ));
        }
        if self.near_duplicates.max_distance > 32 {
            return Err(PolicyError::new(
                "near_duplicates.max_distance",
                "at most 32 (unrelated texts differ in about 32 bits of 64)",
            ));
        }
        if self.near_duplicates.max_meaning_distance > 128 {
            return Err(PolicyError::new(
                "near_duplicates.max_meaning_distance",
                "at most 128 (unrelated meanings differ in about 128 bits of 256)",
            ));
        }
        let s = &self.scoring;
        positive("scoring.frequency_scale", s.frequency_scale)?;
        positive("scoring.intent_scale", s.intent_scale)?;
        unit("scoring.weights.severity", s.weights.severity)?;
        unit("scoring.weights.intent", s.weights.intent)?;
        unit("scoring.weights.trend", s.weights.trend)?;
        let sum = s.weights.severity + s.weights.intent + s.weights.trend;
        if (sum - 1.0).abs() > 1e-3 {
            return Err(PolicyError::new(
                "scoring.weights",
                format!("must sum to 1, not {sum}"),
            ));
        }
        for (name, subject) in [("end_user", &s.end_user), ("resource", &s.resource)] {
            unit(&format!("scoring.{name}.threshold"), subject.threshold)?;
            unit(&format!("scoring.{name}.share_scale"), subject.share_scale)?;
            positive(&format!("scoring.{name}.share_scale"), subject.share_scale)?;
        }
        if self.sampling.size == 0 {
            return Err(PolicyError::new("sampling.size", "must be at least 1"));
        }
        let r = &self.review;
        if r.per_case == 0 || r.per_case > self.sampling.size {
            return Err(PolicyError::new(
                "review.per_case",
                "must be 1 to sampling.size",
            ));
        }
        unit("review.close_confidence", r.close_confidence)?;
        if r.max_content_chars < 64 {
            return Err(PolicyError::new(
                "review.max_content_chars",
                "must be at least 64",
            ));
        }
        for category in Category::ALL {
            match r.categories.get(&category) {
                Some(definition) if !definition.trim().is_empty() => {}
                _ => {
                    return Err(PolicyError::new(
                        format!("review.categories.{category}"),
                        "every category needs a definition",
                    ))
                }
            }
        }
        if !(self.sampling.harmful_weight.is_finite() && self.sampling.harmful_weight >= 1.0) {
            return Err(PolicyError::new(
                "sampling.harmful_weight",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A policy with its heuristics compiled.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// The policy as written.
    pub policy: Policy,
    /// Its lexicons and patterns, ready to match.
    pub heuristics: Heuristics,
}

impl CompiledPolicy {
    /// Checks and compiles a policy text.
    pub fn compile(text: &str) -> Result<Self, PolicyError> {
        let policy = Policy::parse(text)?;
        let heuristics = Heuristics::compile(&policy.heuristics)?;
        Ok(Self { policy, heuristics })
    }

    /// Reads, checks and compiles the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyError::new("(file)", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::compile(&text).map_err(|e| PolicyError {
            field: e.field,
            problem: format!("{} (in {})", e.problem, path.display()),
        })
    }
}

/// What [`PolicyWatcher::check`] found.
#[derive(Debug)]
pub enum Reload {
    /// The file has not changed.
    Unchanged,
    /// The file changed and compiled: this is the policy in force now.
    Reloaded(Arc<CompiledPolicy>),
    /// The file changed but was refused; the previous policy stays in force.
    Refused(PolicyError),
}

/// Watches the policy file and reloads it when its modification time changes.
#[derive(Debug)]
pub struct PolicyWatcher {
    path: PathBuf,
    modified: Option<SystemTime>,
    current: Arc<CompiledPolicy>,
}

impl PolicyWatcher {
    /// Loads the policy at `path`; a policy that does not compile is an error.
    pub fn open(path: &Path) -> Result<Self, PolicyError> {
        let modified = modified(path);
        let current = Arc::new(CompiledPolicy::load(path)?);
        Ok(Self {
            path: path.to_path_buf(),
            modified,
            current,
        })
    }

    /// The policy in force.
    pub fn current(&self) -> &Arc<CompiledPolicy> {
        &self.current
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads the file if it changed since it was last read. Windows cannot change while
    /// vigil runs (the state in memory and in the store is laid out by them); such a change is
    /// refused until the next start.
    pub fn check(&mut self) -> Reload {
        let now = modified(&self.path);
        if now == self.modified {
            return Reload::Unchanged;
        }
        self.modified = now;
        match CompiledPolicy::load(&self.path) {
            Ok(policy) if policy.policy.windows != self.current.policy.windows => Reload::Refused(
                PolicyError::new("windows", "window settings change only when vigil starts"),
            ),
            Ok(policy) => {
                self.current = Arc::new(policy);
                Reload::Reloaded(self.current.clone())
            }
            Err(error) => Reload::Refused(error),
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The policy shipped in the repository.
    pub(crate) fn shipped() -> String {
        // Where the crate is when the test runs (cargo sets it), not where it was built.
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        );
        std::fs::read_to_string(crate_dir.join("../policies/abuse.toml")).unwrap()
    }

    #[test]
    fn a_policy_written_before_meaning_hashes_still_loads() {
        let old = shipped().replace("max_meaning_distance = 85\n", "");
        assert_ne!(old, shipped());
        let policy = Policy::parse(&old).unwrap();
        assert_eq!(policy.near_duplicates.max_meaning_distance, 85);
    }

    #[test]
    fn the_shipped_policy_compiles() {
        let policy = CompiledPolicy::compile(&shipped()).unwrap();
        assert!(policy.policy.heuristics.lexicon.len() >= 5);
        assert!(policy.policy.heuristics.patterns.len() >= 5);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = shipped().replace("length_secs = 86400", "length_secs = 86401");
        assert_eq!(
            CompiledPolicy::compile(&bad).unwrap_err().field,
            "windows.length_secs"
        );
        let bad = shipped().replace("trend = 0.2", "trend = 0.5");
        assert_eq!(
            CompiledPolicy::compile(&bad).unwrap_err().to_string(),
            "policy field `scoring.weights`: must sum to 1, not 1.3"
        );
        let bad = shipped().replace("[sampling]", "[sampling]\nbogus = 1");
        assert!(CompiledPolicy::compile(&bad)
            .unwrap_err()
            .problem
            .contains("bogus"));
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abuse.toml");
        std::fs::write(&path, shipped()).unwrap();
        let mut watcher = PolicyWatcher::open(&path).unwrap();
        assert!(matches!(watcher.check(), Reload::Unchanged));
        let set_mtime = |secs: u64| {
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        };
        std::fs::write(
            &path,
            shipped().replace("threshold = 0.5,", "threshold = 0.6,"),
        )
        .unwrap();
        set_mtime(1_000);
        match watcher.check() {
            Reload::Reloaded(policy) => assert_eq!(policy.policy.scoring.end_user.threshold, 0.6),
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "version = ").unwrap();
        set_mtime(2_000);
        assert!(matches!(watcher.check(), Reload::Refused(_)));
        assert_eq!(watcher.current().policy.scoring.end_user.threshold, 0.6);
        std::fs::write(&path, shipped().replace("buckets = 24", "buckets = 12")).unwrap();
        set_mtime(3_000);
        match watcher.check() {
            Reload::Refused(e) => assert_eq!(e.field, "windows"),
            other => panic!("{other:?}"),
        }
    }
}
