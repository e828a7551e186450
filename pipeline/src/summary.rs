//! The run summary: what happened to every input line, and how fast.
//!
//! Every non-blank input line ends up in exactly one bucket: stored (per geography), already
//! stored (a duplicate delivery), or rejected (per reason). [`Summary::is_balanced`] states
//! that; the pipeline asserts it in debug builds and the integration tests check it on the
//! JSON summary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Busy time of each stage, summed over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    /// Reading lines, UTF-8 and JSON decoding, validation and routing.
    pub decode_secs: f64,
    /// Encrypting content and encoding stored values.
    pub seal_secs: f64,
    /// Writing batches to the geography stores (index lookups included).
    pub store_secs: f64,
    /// Writing dead letters.
    pub dead_letter_secs: f64,
    /// Making stored records and dead letters durable (flushing to disk or the broker).
    pub flush_secs: f64,
    /// Scoring content with the harm classifier.
    pub detect_secs: f64,
    /// Matching content against the abuse policy's heuristics and fingerprinting it (on the
    /// decode thread).
    pub inspect_secs: f64,
    /// Updating abuse windows, scoring and opening cases (inside the store's writes).
    pub abuse_secs: f64,
}

/// Cases opened, by kind of subject.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaseCounts {
    /// Cases about one end user.
    pub end_users: u64,
    /// Cases about a resource as a whole.
    pub resources: u64,
}

/// What recurring-abuse detection did in a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AbuseSummary {
    /// The policy version in force at the end.
    pub policy_version: String,
    /// Cases opened.
    pub cases: CaseCounts,
    /// Cases the store refused because another subject's case held their ID (left out, the
    /// stored case kept; see `vigil_storage::GeoStore::admit_case`).
    pub cases_refused: u64,
    /// Flag events published (this run's cases and any left in the outbox by an earlier one).
    pub flags_published: u64,
    /// Where flag events went.
    pub flags_destination: String,
    /// The tracker's counters: records observed, harmful, template hits, states loaded and
    /// evicted.
    pub tracker: vigil_abuse::TrackerStats,
    /// Subjects (end users and resources) whose windows were in memory at the end.
    pub subjects_in_memory: u64,
    /// Times the policy file was reloaded.
    pub policy_reloads: u64,
    /// Times a changed policy file was refused.
    pub policy_refused: u64,
}

/// What the harm classifier found in the records stored by a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DetectionSummary {
    /// The model (name@version).
    pub model: String,
    /// Its any-harm threshold.
    pub threshold: f32,
    /// Records stored with scores.
    pub scored: u64,
    /// Of those, records whose any-harm score reached the threshold.
    pub harmful: u64,
    /// Harmful records by category scoring at or above the threshold (a record may count in
    /// several).
    pub categories: BTreeMap<String, u64>,
    /// Texts (prompts and completions) the cascade's semantic stage scored, when it ran; the
    /// rest kept the cheap stage's scores.
    pub semantic_texts: Option<u64>,
    /// Texts answered from the classifier's score cache (seen before in this run), neither
    /// stage scoring them again.
    pub cached_texts: u64,
}

impl DetectionSummary {
    /// An empty summary for `model` at `threshold`.
    pub fn new(model: &str, threshold: f32) -> Self {
        Self {
            model: model.to_owned(),
            threshold,
            ..Self::default()
        }
    }

    /// Counts one stored record's detection.
    pub fn count(&mut self, detection: &vigil_core::Detection) {
        self.scored += 1;
        if detection.harmful {
            self.harmful += 1;
            for (category, _) in detection.scores.categories_over(self.threshold) {
                *self
                    .categories
                    .entry(category.name().to_owned())
                    .or_default() += 1;
            }
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (sorted in place); all zero when there are none.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[i].as_secs_f64() * 1000.0
        };
        Self {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Non-blank input lines read.
    pub read: u64,
    /// Records newly stored, per geography.
    pub stored: BTreeMap<String, u64>,
    /// Of the stored records, those whose content was not stored because their resource's
    /// content logging is off (metadata only).
    pub content_not_logged: u64,
    /// Records already stored by an earlier delivery, left as they were.
    pub duplicates: u64,
    /// What the harm classifier found, when the run had one.
    pub detection: Option<DetectionSummary>,
    /// What recurring-abuse detection found, when the run had it.
    pub abuse: Option<AbuseSummary>,
    /// What the LLM reviewer did, when the run had one.
    pub review: Option<crate::ReviewSummary>,
    /// What the retention purge and the analytics exports did, when the run had them.
    pub lifecycle: Option<crate::LifecycleSummary>,
    /// Resources whose content logging was turned off since the last run, with the number of
    /// records whose stored content this run destroyed before starting.
    pub content_forgotten: BTreeMap<String, u64>,
    /// Rejected inputs, per reason code; each has one dead letter.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Where the dead letters went.
    pub dead_letters: String,
    /// Wall-clock time of the run.
    pub elapsed_secs: f64,
    /// Input lines per second of wall-clock time.
    pub records_per_sec: f64,
    /// Time from the first input's arrival to the last batch stored: the run's elapsed time
    /// less waiting for a source that had nothing to give (joining a consumer group, idling).
    pub active_secs: f64,
    /// Busy time per stage.
    pub stages: StageTimes,
    /// Time from reading a batch's first line to having stored it: an upper bound on each
    /// record's latency through the pipeline.
    pub batch_latency: Percentiles,
}

impl Summary {
    /// Records stored in all geographies.
    pub fn stored_total(&self) -> u64 {
        self.stored.values().sum()
    }

    /// Inputs rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Whether every input line is accounted for exactly once.
    pub fn is_balanced(&self) -> bool {
        self.read == self.stored_total() + self.duplicates + self.rejected_total()
    }

    pub(crate) fn finish(&mut self, elapsed: Duration) {
        self.elapsed_secs = elapsed.as_secs_f64();
        self.records_per_sec = if self.elapsed_secs > 0.0 {
            self.read as f64 / self.elapsed_secs
        } else {
            0.0
        };
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "records read          {:>10}", self.read)?;
        writeln!(f, "stored                {:>10}", self.stored_total())?;
        for (geo, n) in &self.stored {
            writeln!(f, "  in {geo:<17} {n:>10}")?;
        }
        writeln!(
            f,
            "  content not logged  {:>10}   (content logging off: metadata only)",
            self.content_not_logged
        )?;
        writeln!(
            f,
            "already stored        {:>10}   (duplicates, skipped)",
            self.duplicates
        )?;
        if let Some(d) = &self.detection {
            writeln!(
                f,
                "scored                {:>10}   ({}, any-harm threshold {:.2})",
                d.scored, d.model, d.threshold
            )?;
            if let Some(texts) = d.semantic_texts {
                writeln!(
                    f,
                    "  by the encoder      {texts:>10}   (texts the cheap stage could not settle)"
                )?;
            }
            writeln!(
                f,
                "  from the cache      {:>10}   (texts seen before in this run)",
                d.cached_texts
            )?;
            writeln!(f, "  harmful             {:>10}", d.harmful)?;
            for (category, n) in &d.categories {
                writeln!(f, "    {category:<17} {n:>10}")?;
            }
        }
        if let Some(a) = &self.abuse {
            writeln!(
                f,
                "abuse windows         {:>10}   (records observed; policy {})",
                a.tracker.observed, a.policy_version
            )?;
            writeln!(
                f,
                "  harmful             {:>10}   ({} matched a jailbreak template)",
                a.tracker.harmful, a.tracker.template_hits
            )?;
            writeln!(
                f,
                "  cases opened        {:>10}   ({} end users, {} resources)",
                a.cases.end_users + a.cases.resources,
                a.cases.end_users,
                a.cases.resources
            )?;
            if a.cases_refused > 0 {
                writeln!(
                    f,
                    "  cases refused       {:>10}   (their ID held by another subject's case)",
                    a.cases_refused
                )?;
            }
            writeln!(
                f,
                "  flags published     {:>10}   (to {})",
                a.flags_published, a.flags_destination
            )?;
        }
        if let Some(review) = &self.review {
            writeln!(f, "{review}")?;
        }
        if let Some(lifecycle) = &self.lifecycle {
            writeln!(f, "{lifecycle}")?;
        }
        writeln!(f, "rejected              {:>10}", self.rejected_total())?;
        for (code, n) in &self.rejected {
            writeln!(f, "  {code:<19} {n:>10}")?;
        }
        if self.rejected_total() > 0 {
            writeln!(f, "  dead letters in {}", self.dead_letters)?;
        }
        for (resource, n) in &self.content_forgotten {
            writeln!(
                f,
                "content destroyed     {n:>10}   ({resource}: content logging turned off)"
            )?;
        }
        write!(
            f,
            "elapsed               {:>9.2}s   ({:.0} records/s)",
            self.elapsed_secs, self.records_per_sec
        )
    }
}
