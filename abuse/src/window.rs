//! One subject's sliding-window state: bucketed counters over the current and the previous
//! window, the fingerprints (words and meaning) of its recent harmful records, and its review
//! reservoir.
//!
//! Time is event time (the records' timestamps), cut into buckets of `length / buckets`
//! seconds; the current window is the `buckets` buckets ending with the newest one seen, the
//! previous window the `buckets` before those. Older buckets are dropped. The state is
//! serialised with postcard for the store's checkpoint.

use serde::{Deserialize, Serialize};
use vigil_core::{Category, RequestId};
use vigil_detectors::{simhash, MeaningHash};

use crate::policy::Policy;
use crate::signal::RecordSignal;

/// The counters of one bucket.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Bucket {
    index: i64,
    totals: Totals,
}

/// A request ID in the review reservoir, with its sampling key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sampled {
    key: f32,
    bucket: i64,
    request_id: RequestId,
}

/// One subject's state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SubjectState {
    /// Seconds per bucket when the state was written (a state laid out differently is
    /// discarded).
    bucket_secs: i64,
    /// Oldest first; only buckets of the current and the previous window.
    buckets: Vec<Bucket>,
    /// Fingerprints of recent harmful records and their buckets, oldest first.
    fingerprints: Vec<(u64, i64)>,
    /// The review reservoir (weighted sampling without replacement).
    reservoir: Vec<Sampled>,
    /// Bucket index until which no new case opens (exclusive).
    quiet_until: i64,
    /// Meaning hashes of recent harmful records whose prompt the encoder read, and their
    /// buckets, oldest first. Last, so that a checkpoint written before it existed fails to
    /// decode as this layout and is read as [`SubjectStateV1`] instead.
    meanings: Vec<(MeaningHash, i64)>,
}

/// A window state as checkpointed before meaning hashes (the same fields, without them).
#[derive(Deserialize)]
struct SubjectStateV1 {
    bucket_secs: i64,
    buckets: Vec<Bucket>,
    fingerprints: Vec<(u64, i64)>,
    reservoir: Vec<Sampled>,
    quiet_until: i64,
}

impl From<SubjectStateV1> for SubjectState {
    fn from(v1: SubjectStateV1) -> Self {
        Self {
            bucket_secs: v1.bucket_secs,
            buckets: v1.buckets,
            fingerprints: v1.fingerprints,
            reservoir: v1.reservoir,
            quiet_until: v1.quiet_until,
            meanings: Vec::new(),
        }
    }
}

/// Appends `entry` to `recent`, dropping the oldest first when `limit` are held.
fn remember<T>(recent: &mut Vec<T>, limit: usize, entry: T) {
    if recent.len() >= limit {
        recent.remove(0);
    }
    recent.push(entry);
}

/// Counters over a bucket or a window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Records.
    pub records: u32,
    /// Harmful records.
    pub harmful: u32,
    /// Sum of their severities.
    pub severity_sum: f32,
    /// The highest of their severities.
    pub max_severity: f32,
    /// Near-duplicate retries.
    pub near_duplicates: u32,
    /// Pattern-family matches.
    pub template_hits: u32,
    /// Escalations.
    pub escalations: u32,
    /// Pattern families seen.
    pub families: u64,
    /// Highest severity per category.
    pub categories: [f32; Category::ALL.len()],
}

impl Totals {
    fn add(&mut self, b: &Totals) {
        self.records += b.records;
        self.harmful += b.harmful;
        self.severity_sum += b.severity_sum;
        self.max_severity = self.max_severity.max(b.max_severity);
        self.near_duplicates += b.near_duplicates;
        self.template_hits += b.template_hits;
        self.escalations += b.escalations;
        self.families |= b.families;
        for (total, seen) in self.categories.iter_mut().zip(b.categories) {
            *total = total.max(seen);
        }
    }
}

impl SubjectState {
    /// A state decoded from its checkpoint, or `None` if it cannot be read or was laid out
    /// with other window settings.
    pub fn decode(bytes: &[u8], policy: &Policy) -> Option<Self> {
        let state: Self = postcard::from_bytes(bytes).ok().or_else(|| {
            postcard::from_bytes::<SubjectStateV1>(bytes)
                .ok()
                .map(Self::from)
        })?;
        (state.bucket_secs == policy.windows.bucket_secs()).then_some(state)
    }

    /// The checkpoint encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a window state always encodes")
    }

    /// The newest bucket index seen, if any.
    pub fn newest(&self) -> Option<i64> {
        self.buckets.last().map(|b| b.index)
    }

    /// Bytes this state holds on the heap (an estimate used for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<Bucket>()
            + self.fingerprints.capacity() * size_of::<(u64, i64)>()
            + self.meanings.capacity() * size_of::<(MeaningHash, i64)>()
            + self.reservoir.capacity() * size_of::<Sampled>()
            + self
                .reservoir
                .iter()
                .map(|s| s.request_id.as_str().len())
                .sum::<usize>()
    }

    /// Adds one record, at bucket `index`.
    pub(crate) fn observe(
        &mut self,
        policy: &Policy,
        index: i64,
        signal: &RecordSignal,
        request_id: &RequestId,
    ) {
        let buckets = i64::from(policy.windows.buckets);
        self.bucket_secs = policy.windows.bucket_secs();
        let newest = self.newest().map_or(index, |n| n.max(index));
        let window_start = newest - buckets + 1;
        // Buckets older than the previous window, and fingerprints and samples older than
        // the current one, no longer count.
        self.buckets.retain(|b| b.index > newest - 2 * buckets);
        self.fingerprints.retain(|(_, b)| *b >= window_start);
        self.meanings.retain(|(_, b)| *b >= window_start);
        self.reservoir.retain(|s| s.bucket >= window_start);
        if index <= newest - 2 * buckets {
            return; // Too late to count anywhere.
        }
        let before = self.totals_after(newest - buckets, newest);
        let bucket = &mut self.bucket_mut(index).totals;
        bucket.records += 1;
        bucket.families |= signal.families;
        if signal.template {
            bucket.template_hits += 1;
        }
        if signal.harmful {
            bucket.harmful += 1;
            bucket.severity_sum += signal.severity;
            bucket.max_severity = bucket.max_severity.max(signal.severity);
            let step = policy.signals.escalation_step;
            if before.harmful > 0 && signal.severity >= before.max_severity + step {
                bucket.escalations += 1;
            }
            for (slot, seen) in bucket.categories.iter_mut().zip(signal.categories) {
                *slot = slot.max(seen);
            }
        }
        if (signal.harmful || signal.template) && index >= window_start {
            let near = &policy.near_duplicates;
            let edited = self
                .fingerprints
                .iter()
                .any(|(fp, _)| simhash::distance(*fp, signal.fingerprint) <= near.max_distance);
            let paraphrased = signal.meaning.is_some_and(|meaning| {
                self.meanings
                    .iter()
                    .any(|(seen, _)| seen.distance(&meaning) <= near.max_meaning_distance)
            });
            if edited || paraphrased {
                self.bucket_mut(index).totals.near_duplicates += 1;
            }
            remember(
                &mut self.fingerprints,
                near.remember,
                (signal.fingerprint, index),
            );
            if let Some(meaning) = signal.meaning {
                remember(&mut self.meanings, near.remember, (meaning, index));
            }
        }
        if index >= window_start {
            self.sample(policy, index, signal, request_id);
        }
    }

    /// Totals of the buckets after `start` up to and including `end`.
    fn totals_after(&self, start: i64, end: i64) -> Totals {
        let mut totals = Totals::default();
        for bucket in self
            .buckets
            .iter()
            .filter(|b| b.index > start && b.index <= end)
        {
            totals.add(&bucket.totals);
        }
        totals
    }

    fn bucket_mut(&mut self, index: i64) -> &mut Bucket {
        let at = match self.buckets.binary_search_by_key(&index, |b| b.index) {
            Ok(at) => at,
            Err(at) => {
                self.buckets.insert(
                    at,
                    Bucket {
                        index,
                        totals: Totals::default(),
                    },
                );
                at
            }
        };
        &mut self.buckets[at]
    }

    /// Efraimidis-Spirakis weighted reservoir: each record gets the key `u^(1/w)`, with `u`
    /// uniform in (0, 1) derived from its request ID (so sampling is reproducible) and `w`
    /// its weight; the `size` largest keys are the sample.
    fn sample(&mut self, policy: &Policy, index: i64, signal: &RecordSignal, id: &RequestId) {
        if self.reservoir.iter().any(|s| &s.request_id == id) {
            return;
        }
        let weight = if signal.harmful || signal.template {
            policy.sampling.harmful_weight
        } else {
            1.0
        };
        let u =
            ((crate::stable_hash(id.as_str().as_bytes()) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let key = u.powf(1.0 / f64::from(weight)) as f32;
        let entry = Sampled {
            key,
            bucket: index,
            request_id: id.clone(),
        };
        if self.reservoir.len() < policy.sampling.size {
            self.reservoir.push(entry);
        } else if let Some((at, smallest)) = self
            .reservoir
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.key.total_cmp(&b.1.key))
        {
            if smallest.key < key {
                self.reservoir[at] = entry;
            }
        }
    }

    /// Totals of the current window (ending at `newest`) and of the one before.
    pub fn windows(&self, policy: &Policy) -> (Totals, Totals) {
        let Some(newest) = self.newest() else {
            return (Totals::default(), Totals::default());
        };
        let buckets = i64::from(policy.windows.buckets);
        (
            self.totals_after(newest - buckets, newest),
            self.totals_after(newest - 2 * buckets, newest - buckets),
        )
    }

    /// The sampled request IDs, most likely to matter first.
    pub fn sample_ids(&self) -> Vec<RequestId> {
        let mut sampled = self.reservoir.clone();
        sampled.sort_by(|a, b| b.key.total_cmp(&a.key));
        sampled.into_iter().map(|s| s.request_id).collect()
    }

    /// Whether a case may open at bucket `index`.
    pub fn may_open_case(&self, index: i64) -> bool {
        index >= self.quiet_until
    }

    /// Records that a case opened at bucket `index`: the next one may open only when the
    /// window has moved past every bucket of this one.
    pub fn case_opened(&mut self, index: i64, policy: &Policy) {
        self.quiet_until = index + i64::from(policy.windows.buckets);
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    /// A checkpoint as written before meaning hashes.
    #[derive(Serialize)]
    struct V1<'a> {
        bucket_secs: i64,
        buckets: &'a [Bucket],
        fingerprints: &'a [(u64, i64)],
        reservoir: &'a [Sampled],
        quiet_until: i64,
    }

    #[test]
    fn a_checkpoint_from_before_meaning_hashes_still_decodes() {
        let policy = Policy::parse(&crate::policy::tests::shipped()).unwrap();
        let mut state = SubjectState::default();
        let signal = RecordSignal {
            harmful: true,
            severity: 0.9,
            fingerprint: 7,
            meaning: Some(MeaningHash([1, 2, 3, 4])),
            ..RecordSignal::default()
        };
        state.observe(&policy, 100, &signal, &RequestId::parse("r-1").unwrap());
        let v1 = postcard::to_stdvec(&V1 {
            bucket_secs: state.bucket_secs,
            buckets: &state.buckets,
            fingerprints: &state.fingerprints,
            reservoir: &state.reservoir,
            quiet_until: state.quiet_until,
        })
        .unwrap();
        let old = SubjectState::decode(&v1, &policy).expect("a checkpoint of before decodes");
        assert_eq!(old.windows(&policy), state.windows(&policy));
        assert_eq!(old.sample_ids(), state.sample_ids());
        assert!(old.meanings.is_empty() && !state.meanings.is_empty());
        assert_eq!(SubjectState::decode(&state.encode(), &policy), Some(state));
    }
}
