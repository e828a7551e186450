//! Hashed character and word n-gram features: the exact mirror of `analyze` and the hashing
//! in `notebooks/train_classifier.ipynb` (scikit-learn's `HashingVectorizer` with
//! `alternate_sign=False`).
//!
//! A text is normalised ([`crate::text`]), padded with a space at each end, and cut into
//! character n-grams; words (split at spaces and ASCII punctuation) add unigrams and bigrams
//! under their own prefixes. Each feature's UTF-8 bytes are hashed with MurmurHash3 (x86,
//! 32-bit, seed 0) into one of `n_features` buckets. The model receives, per text, each bucket
//! present and how often it occurred; weighting and normalisation happen inside the model.

use crate::text::normalize_into;

/// Prefix of word-unigram features (a byte normalised text never contains).
const WORD: u8 = 0x01;
/// Prefix of word-bigram features.
const BIGRAM: u8 = 0x02;

/// The featurisation a model was trained with, read from its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Number of hash buckets.
    pub n_features: u32,
    /// Characters of normalised text looked at.
    pub max_chars: usize,
    /// Character n-gram lengths.
    pub char_ngrams: Vec<usize>,
}

impl FeatureSpec {
    /// Parses the `vigil.featurizer` metadata string, for example
    /// `v1;n_features=524288;max_chars=2048;char_ngrams=2,3,4,5;words=1,2;hash=murmur3_32`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.split(';');
        if parts.next() != Some("v1") {
            return Err(format!(
                "unsupported featurizer {spec:?} (this vigil reads v1)"
            ));
        }
        let (mut n_features, mut max_chars, mut char_ngrams) = (None, None, None);
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("featurizer entry {part:?} is not key=value"))?;
            let bad = |_| format!("featurizer entry {part:?} has a bad value");
            match key {
                "n_features" => n_features = Some(value.parse::<u32>().map_err(bad)?),
                "max_chars" => max_chars = Some(value.parse::<usize>().map_err(bad)?),
                "char_ngrams" => {
                    char_ngrams = Some(
                        value
                            .split(',')
                            .map(str::parse::<usize>)
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(bad)?,
                    )
                }
                "words" if value == "1,2" => {}
                "hash" if value == "murmur3_32" => {}
                _ => return Err(format!("unsupported featurizer entry {part:?}")),
            }
        }
        let spec = Self {
            n_features: n_features.ok_or("featurizer lacks n_features")?,
            max_chars: max_chars.ok_or("featurizer lacks max_chars")?,
            char_ngrams: char_ngrams.ok_or("featurizer lacks char_ngrams")?,
        };
        if spec.n_features == 0 || spec.char_ngrams.contains(&0) {
            return Err("featurizer has zero buckets or a zero-length n-gram".into());
        }
        Ok(spec)
    }
}

/// Sparse features of a batch of texts, laid out as the model's inputs: one entry per
/// (text, bucket) present.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FeatureBatch {
    /// Bucket of each entry.
    pub ids: Vec<i64>,
    /// How many features of the text fell in the bucket.
    pub counts: Vec<f32>,
    /// The text (row) each entry belongs to.
    pub rows: Vec<i64>,
    /// Number of texts.
    pub len: usize,
}

impl FeatureBatch {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.counts.clear();
        self.rows.clear();
        self.len = 0;
    }
}

/// Turns texts into [`FeatureBatch`] rows. Holds scratch buffers: one per thread.
#[derive(Debug)]
pub struct Featurizer {
    spec: FeatureSpec,
    normalized: String,
    padded: String,
    /// Byte offset of each character of the padded text, plus its end.
    bounds: Vec<usize>,
    buckets: Vec<u32>,
    counts: BucketCounts,
    scratch: Vec<u8>,
}

impl Featurizer {
    /// A featurizer for `spec`.
    pub fn new(spec: FeatureSpec) -> Self {
        Self {
            spec,
            normalized: String::new(),
            padded: String::new(),
            bounds: Vec::new(),
            buckets: Vec::new(),
            counts: BucketCounts::default(),
            scratch: Vec::new(),
        }
    }

    /// Appends `text` to `batch` as its next row.
    pub fn push(&mut self, text: &str, batch: &mut FeatureBatch) {
        let row = batch.len as i64;
        batch.len += 1;
        normalize_into(text, self.spec.max_chars, &mut self.normalized);
        let body = self.normalized.as_str();
        let padded = &mut self.padded;
        padded.clear();
        padded.push(' ');
        padded.push_str(body);
        padded.push(' ');
        self.buckets.clear();
        let n_features = self.spec.n_features;

        self.bounds.clear();
        self.bounds.extend(padded.char_indices().map(|(i, _)| i));
        self.bounds.push(padded.len());
        let chars = self.bounds.len() - 1;
        for &n in &self.spec.char_ngrams {
            for start in 0..chars.saturating_sub(n - 1) {
                let gram = &padded.as_bytes()[self.bounds[start]..self.bounds[start + n]];
                self.buckets.push(bucket(murmur3_32(gram, 0), n_features));
            }
        }

        let mut previous: Option<&str> = None;
        for word in body
            .split(|c: char| c == ' ' || c.is_ascii_punctuation())
            .filter(|w| !w.is_empty())
        {
            let hash = prefixed_hash(&mut self.scratch, WORD, &[word]);
            self.buckets.push(bucket(hash, n_features));
            if let Some(previous) = previous {
                let hash = prefixed_hash(&mut self.scratch, BIGRAM, &[previous, " ", word]);
                self.buckets.push(bucket(hash, n_features));
            }
            previous = Some(word);
        }

        self.counts.count(&self.buckets);
        for (id, count) in self.counts.drain() {
            batch.ids.push(i64::from(id));
            batch.counts.push(count as f32);
            batch.rows.push(row);
        }
    }
}

/// Counts the distinct buckets of one text: an open-addressing table (linear probing) small
/// enough to stay in L1, cheaper than sorting the text's features. Buckets come out in the
/// order they first occurred.
#[derive(Debug, Default)]
struct BucketCounts {
    /// `(bucket + 1, count)`; 0 marks an empty slot.
    slots: Vec<(u32, u32)>,
    /// Slots in use, in first-occurrence order.
    used: Vec<usize>,
}

impl BucketCounts {
    fn count(&mut self, buckets: &[u32]) {
        let wanted = (buckets.len() * 2).next_power_of_two().max(64);
        if self.slots.len() < wanted {
            self.slots = vec![(0, 0); wanted];
        }
        let mask = self.slots.len() - 1;
        for &bucket in buckets {
            let key = bucket + 1;
            let mut slot = (key.wrapping_mul(0x9e37_79b1) as usize) & mask;
            loop {
                let (k, n) = &mut self.slots[slot];
                if *k == key {
                    *n += 1;
                    break;
                }
                if *k == 0 {
                    (*k, *n) = (key, 1);
                    self.used.push(slot);
                    break;
                }
                slot = (slot + 1) & mask;
            }
        }
    }

    /// The distinct buckets and their counts, emptying the table.
    fn drain(&mut self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let slots = &mut self.slots;
        self.used
            .drain(..)
            .map(move |slot| std::mem::take(&mut slots[slot]))
            .map(|(key, count)| (key - 1, count))
    }
}

/// The hash of the feature `prefix` followed by `parts`, assembled in `scratch`.
fn prefixed_hash(scratch: &mut Vec<u8>, prefix: u8, parts: &[&str]) -> i32 {
    scratch.clear();
    scratch.push(prefix);
    for part in parts {
        scratch.extend_from_slice(part.as_bytes());
    }
    murmur3_32(scratch, 0)
}

/// scikit-learn's bucket for a signed 32-bit hash: `abs(h) % n`, with `abs(i32::MIN)` defined
/// as scikit-learn defines it.
fn bucket(hash: i32, n_features: u32) -> u32 {
    if hash == i32::MIN {
        (i32::MAX as u32 - (n_features - 1)) % n_features
    } else {
        hash.unsigned_abs() % n_features
    }
}

/// MurmurHash3, x86 32-bit variant, as a signed integer (as scikit-learn's `murmurhash3_32`
/// with `positive=False`).
pub fn murmur3_32(data: &[u8], seed: u32) -> i32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, &b) in tail.iter().enumerate() {
            k |= u32::from(b) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FeatureSpec {
        FeatureSpec::parse(
            "v1;n_features=524288;max_chars=2048;char_ngrams=2,3,4,5;words=1,2;hash=murmur3_32",
        )
        .unwrap()
    }

    #[test]
    fn murmur3_matches_scikit_learn() {
        // Values from sklearn.utils.murmurhash3_32(key, seed=0, positive=False).
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"foo", 0), -156908512);
        assert_eq!(murmur3_32(b"hello world", 0), 1586663183);
        assert_eq!(murmur3_32("ü kill".as_bytes(), 0), -647462992);
    }

    #[test]
    fn parses_the_spec_and_refuses_unknown_ones() {
        let spec = spec();
        assert_eq!(spec.n_features, 1 << 19);
        assert_eq!(spec.char_ngrams, vec![2, 3, 4, 5]);
        assert!(FeatureSpec::parse("v2;n_features=8").is_err());
        assert!(FeatureSpec::parse("v1;n_features=8;max_chars=9").is_err());
        assert!(FeatureSpec::parse("v1;n_features=8;max_chars=9;char_ngrams=2;hash=md5").is_err());
    }

    #[test]
    fn counts_each_bucket_once_per_text_with_its_row() {
        let mut featurizer = Featurizer::new(spec());
        let mut batch = FeatureBatch::default();
        featurizer.push("aa aa", &mut batch);
        featurizer.push("", &mut batch);
        featurizer.push("b", &mut batch);
        assert_eq!(batch.len, 3);
        // " aa aa ": 6 bigrams (" a" twice, "aa" twice, "a " twice), 5 trigrams, 4 four-grams,
        // 3 five-grams; words: "aa" twice, bigram "aa aa" once.
        let first: f32 = batch
            .rows
            .iter()
            .zip(&batch.counts)
            .filter(|(r, _)| **r == 0)
            .map(|(_, c)| c)
            .sum();
        assert_eq!(first, 6.0 + 5.0 + 4.0 + 3.0 + 2.0 + 1.0);
        // "  " has one bigram and no words.
        assert_eq!(batch.rows.iter().filter(|r| **r == 1).count(), 1);
        assert!(batch.ids.iter().all(|&id| (0..1 << 19).contains(&id)));
        let mut ids: Vec<_> = batch.rows.iter().zip(&batch.ids).collect();
        ids.dedup();
        assert_eq!(
            ids.len(),
            batch.ids.len(),
            "a bucket repeated within a text"
        );
    }
}
