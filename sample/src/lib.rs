//! Deterministic sample traffic for vigil: what a model host would stream in, benign and
//! abusive mixed, with the mistakes real streams contain.
//!
//! [`generate`] builds a resource registry (about twenty resources in three geographies, one
//! with content logging off, one with a customer-managed key) and a JSON-lines traffic file.
//! The text comes from a small, license-noted corpus in `corpus/` (see its `NOTICE.md`),
//! compiled into the binary so that generation needs nothing else. Some end users repeat
//! near-duplicate abuse over time, the pattern detection looks for, and a few lines are broken
//! in each way ingest must reject. The same seed always gives the same bytes.
//!
//! [`fixed_size`] makes uniform records of a chosen size for benchmarks.

mod corpus;
mod resources;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use time::{Duration, OffsetDateTime};
use vigil_core::{
    Content, Deployment, Geography, LogRecord, Operation, RecordMeta, RequestId, ResourceId,
    ResourceRegistry,
};

pub use corpus::Corpus;
use resources::{SampleResource, RESOURCES};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct SampleSpec {
    /// Well-formed records of ordinary traffic (repeat offenders and broken lines come on top).
    pub records: usize,
    /// Seed of the pseudo-random generator.
    pub seed: u64,
}

impl Default for SampleSpec {
    fn default() -> Self {
        Self {
            records: 4000,
            seed: 20261120,
        }
    }
}

/// A customer-managed key file the sample registry refers to.
#[derive(Debug, Clone)]
pub struct KeyFile {
    /// Path relative to the registry file's directory.
    pub relative_path: String,
    /// The key, as 64 hex digits. A sample key: never use it for real data.
    pub hex: String,
}

/// Generated traffic and the registry it belongs to.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The resources.
    pub registry: ResourceRegistry,
    /// Key files the registry refers to.
    pub key_files: Vec<KeyFile>,
    /// The traffic, one JSON object per line (a few lines deliberately broken).
    pub lines: Vec<Vec<u8>>,
}

impl Sample {
    /// The traffic as one JSON-lines byte string.
    pub fn traffic(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.iter().map(|l| l.len() + 1).sum());
        for line in &self.lines {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out
    }
}

/// The first moment of sample traffic.
fn epoch() -> OffsetDateTime {
    time::macros::datetime!(2026-11-20 00:00:00 UTC)
}

const SPAN_SECS: i64 = 2 * 24 * 3600;

struct Generator<'c> {
    rng: ChaCha8Rng,
    corpus: &'c Corpus,
    next_id: u64,
}

impl<'c> Generator<'c> {
    fn new(corpus: &'c Corpus, seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            corpus,
            next_id: 0,
        }
    }

    fn request_id(&mut self) -> RequestId {
        self.next_id += 1;
        let tag: u32 = self.rng.gen();
        RequestId::parse(format!("chatcmpl-{:06}-{tag:08x}", self.next_id))
            .expect("generated IDs follow the grammar")
    }

    fn meta(
        &mut self,
        res: &SampleResource,
        end_user: Option<String>,
        at: OffsetDateTime,
    ) -> RecordMeta {
        let deployment = *res.deployments.choose(&mut self.rng).expect("non-empty");
        let processed_in = match deployment {
            Deployment::Standard | Deployment::Datazone => res.regions.choose(&mut self.rng),
            Deployment::Global => resources::ALL_REGIONS.choose(&mut self.rng),
        };
        let (operation, model) = *[
            (Operation::Chat, "gpt-4o"),
            (Operation::Chat, "gpt-4o-mini"),
            (Operation::Chat, "gpt-4.1"),
            (Operation::Chat, "o3-mini"),
            (Operation::Completion, "gpt-35-turbo-instruct"),
            (Operation::Embedding, "text-embedding-3-large"),
            (Operation::Image, "dall-e-3"),
        ]
        .choose_weighted(&mut self.rng, |(op, _)| match op {
            Operation::Chat => 20,
            Operation::Completion => 4,
            Operation::Embedding => 3,
            Operation::Image => 1,
        })
        .expect("weights are positive");
        RecordMeta {
            request_id: self.request_id(),
            resource_id: ResourceId::parse(res.id).expect("static IDs are valid"),
            geography: Geography::parse(res.geography).expect("static geographies are valid"),
            deployment,
            processed_in: processed_in.map(|r| (*r).to_owned()),
            timestamp: at,
            operation,
            model: model.to_owned(),
            end_user,
        }
    }

    fn at(&mut self) -> OffsetDateTime {
        epoch() + Duration::seconds(self.rng.gen_range(0..SPAN_SECS))
    }

    fn end_user(&mut self, res: &SampleResource) -> Option<String> {
        // Some customers do not pass end-user IDs at all.
        (res.users > 0 && self.rng.gen_bool(0.9))
            .then(|| format!("{}-user-{:02}", res.short, self.rng.gen_range(0..res.users)))
    }

    /// Content for an operation: embeddings and images have no completion.
    fn content(&mut self, meta: &RecordMeta, prompt: String, completion: String) -> Content {
        let completion = match meta.operation {
            Operation::Chat | Operation::Completion => Some(completion),
            Operation::Embedding | Operation::Image => None,
        };
        Content {
            prompt: Some(prompt),
            completion,
        }
    }

    fn ordinary(&mut self) -> LogRecord {
        let res = RESOURCES
            .choose_weighted(&mut self.rng, |r| r.weight)
            .expect("weights are positive");
        let user = self.end_user(res);
        let at = self.at();
        let meta = self.meta(res, user, at);
        let (prompt, completion) = self.corpus.exchange(&mut self.rng);
        let content = self.content(&meta, prompt, completion);
        LogRecord { meta, content }
    }

    /// A user who keeps sending near-copies of the same abusive prompt.
    fn repeat_offender(&mut self, offender: &resources::Offender) -> Vec<LogRecord> {
        let res = RESOURCES
            .iter()
            .find(|r| r.id == offender.resource)
            .expect("offenders name sample resources");
        let base = self.corpus.abusive(offender.category, offender.pick);
        let start = self.rng.gen_range(0..SPAN_SECS / 2);
        (0..offender.times)
            .map(|i| {
                let at = epoch()
                    + Duration::seconds(
                        start + i as i64 * offender.every_secs + self.rng.gen_range(0..60),
                    );
                let meta = self.meta(res, Some(offender.user.to_owned()), at);
                let prompt = corpus::near_duplicate(&base, &mut self.rng);
                let content = self.content(&meta, prompt, corpus::REFUSAL.to_owned());
                LogRecord { meta, content }
            })
            .collect()
    }
}

/// Generates the sample registry and traffic.
pub fn generate(spec: SampleSpec) -> Sample {
    let corpus = Corpus::embedded();
    let mut g = Generator::new(&corpus, spec.seed);
    let mut records: Vec<LogRecord> = (0..spec.records).map(|_| g.ordinary()).collect();
    for offender in resources::OFFENDERS {
        records.extend(g.repeat_offender(offender));
    }
    records.sort_by(|a, b| {
        (a.meta.timestamp, a.meta.request_id.as_str())
            .cmp(&(b.meta.timestamp, b.meta.request_id.as_str()))
    });
    let mut lines: Vec<Vec<u8>> = records.iter().map(|r| r.to_json().into_bytes()).collect();
    let broken = resources::broken_lines(&records);
    let stride = (lines.len() / (broken.len() + 1)).max(1);
    for (i, line) in broken.into_iter().enumerate() {
        lines.insert(((i + 1) * stride + i).min(lines.len()), line);
    }
    let key = resources::sample_customer_key(spec.seed);
    Sample {
        registry: resources::registry(),
        key_files: vec![key],
        lines,
    }
}

/// What [`fixed_size`] makes.
#[derive(Debug, Clone, Copy)]
pub struct FixedSizeSpec {
    /// How many records.
    pub records: usize,
    /// Approximate size of each JSON line in bytes.
    pub record_bytes: usize,
    /// Seed of the pseudo-random generator.
    pub seed: u64,
}

/// Uniform, valid records of about `record_bytes` each, over the sample registry's resources
/// that log content: the input of `vigil bench`.
pub fn fixed_size(spec: FixedSizeSpec) -> Sample {
    let corpus = Corpus::embedded();
    let mut g = Generator::new(&corpus, spec.seed);
    let logged: Vec<&SampleResource> = RESOURCES
        .iter()
        .filter(|r| r.content_logging && !r.customer_key)
        .collect();
    let lines = (0..spec.records)
        .map(|i| {
            let res = logged[i % logged.len()];
            let user = g.end_user(res);
            let at = g.at();
            let mut meta = g.meta(res, user, at);
            meta.operation = Operation::Chat;
            let (prompt, completion) = g.corpus.exchange(&mut g.rng);
            let mut record = LogRecord {
                meta,
                content: Content {
                    prompt: Some(prompt),
                    completion: Some(completion),
                },
            };
            // Too short: append more of the corpus's answers, natural text that compresses as
            // real completions do (a repeated filler would flatter compression).
            while record_len(&record) < spec.record_bytes {
                let (_, more) = g.corpus.exchange(&mut g.rng);
                let completion = record.content.completion.as_mut().expect("set above");
                completion.push_str("\n\n");
                completion.push_str(&more);
            }
            // Too long: trim the completion, then the prompt. Trimming n characters removes at
            // least n bytes of JSON.
            for completion_first in [true, false] {
                let over = record_len(&record).saturating_sub(spec.record_bytes);
                let content = &mut record.content;
                let part = if completion_first {
                    &mut content.completion
                } else {
                    &mut content.prompt
                };
                let text = part.as_mut().expect("set above");
                let mut cut = text.len().saturating_sub(over);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            record.to_json().into_bytes()
        })
        .collect();
    Sample {
        registry: resources::registry(),
        key_files: vec![resources::sample_customer_key(spec.seed)],
        lines,
    }
}

fn record_len(record: &LogRecord) -> usize {
    record.to_json().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_mostly_valid() {
        let spec = SampleSpec {
            records: 300,
            seed: 1,
        };
        let a = generate(spec);
        let b = generate(spec);
        assert_eq!(a.traffic(), b.traffic());
        let valid = a
            .lines
            .iter()
            .filter(|l| {
                std::str::from_utf8(l)
                    .ok()
                    .and_then(|s| LogRecord::from_json(s).ok())
                    .is_some()
            })
            .count();
        let offenders: usize = resources::OFFENDERS.iter().map(|o| o.times).sum();
        // Valid: ordinary + offenders + the redelivered duplicate + the two that fail only
        // routing (unknown resource, residency mismatch).
        assert_eq!(valid, 300 + offenders + 3);
        assert!(a.registry.len() >= 18);
        assert_eq!(a.registry.iter().filter(|r| !r.content_logging).count(), 1);
        assert_eq!(
            a.registry
                .iter()
                .filter(|r| r.customer_key.is_some())
                .count(),
            1
        );
    }

    #[test]
    fn fixed_size_records_are_near_the_target() {
        let s = fixed_size(FixedSizeSpec {
            records: 50,
            record_bytes: 1024,
            seed: 3,
        });
        for line in &s.lines {
            assert!((1000..=1024).contains(&line.len()), "{}", line.len());
            LogRecord::from_json(std::str::from_utf8(line).unwrap()).unwrap();
        }
    }
}
