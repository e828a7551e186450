//! The classifier's score cache: final scores of recently seen texts, keyed by a hash of the
//! text, so that a text met again (a greeting, a canned reply, an app's fixed prompt, an
//! abuser's retried jailbreak) costs a hash and a lookup instead of the cascade.
//!
//! - **Bounded.** Two generations of at most `capacity / 2` entries each: new entries go into
//!   the young one; when it is full it becomes the old one and the previous old one is dropped;
//!   a hit in the old generation moves the entry back into the young one. Recently used texts
//!   stay, memory never exceeds `capacity` entries (about 100 bytes each), and no operation
//!   scans the cache.
//! - **No content.** The key is the first 128 bits of the text's SHA-256: the cache holds
//!   scores and meaning hashes, never text, and lives in memory only.
//! - **Exact text, fullest scoring.** A cached entry is what scoring the same text computed.
//!   An entry made without the encoder is not used where the encoder must read the text (see
//!   [`HarmClassifier::detect`](crate::HarmClassifier::detect)); an entry made with it (the
//!   text was routed, or a suspicious prompt forced it) serves every later occurrence, which
//!   so gets the cascade's final scores even where the cheap stage alone would have kept its
//!   own. Within a batch, repeats of a text get the scoring of its most demanding occurrence.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::meaning::MeaningHash;

/// The cache key of a text.
pub type TextKey = u128;

/// The key of `text`: the first 128 bits of its SHA-256.
pub fn text_key(text: &str) -> TextKey {
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// What scoring a text produced.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedScores {
    /// The final head probabilities, in the model's head order.
    pub probabilities: Box<[f32]>,
    /// The text's meaning, when the encoder read it.
    pub meaning: Option<MeaningHash>,
}

#[derive(Debug, Default)]
struct Generations {
    young: HashMap<TextKey, CachedScores>,
    old: HashMap<TextKey, CachedScores>,
}

/// The cache (see the module docs). Shared by every thread that scores.
#[derive(Debug)]
pub struct ScoreCache {
    generation: usize,
    entries: Mutex<Generations>,
}

impl ScoreCache {
    /// A cache of at most `capacity` entries; `None` when `capacity` is below 2 (no cache).
    pub fn new(capacity: usize) -> Option<Self> {
        (capacity >= 2).then(|| Self {
            generation: capacity / 2,
            entries: Mutex::new(Generations::default()),
        })
    }

    /// The entry for `key`, if cached.
    pub fn get(&self, key: TextKey) -> Option<CachedScores> {
        let mut entries = self.entries.lock().expect("a cache lock was poisoned");
        if let Some(found) = entries.young.get(&key) {
            return Some(found.clone());
        }
        let found = entries.old.remove(&key)?;
        Self::insert_young(&mut entries, self.generation, key, found.clone());
        Some(found)
    }

    /// Caches `scores` for `key`.
    pub fn put(&self, key: TextKey, scores: CachedScores) {
        let mut entries = self.entries.lock().expect("a cache lock was poisoned");
        entries.old.remove(&key);
        Self::insert_young(&mut entries, self.generation, key, scores);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        let entries = self.entries.lock().expect("a cache lock was poisoned");
        entries.young.len() + entries.old.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_young(
        entries: &mut Generations,
        generation: usize,
        key: TextKey,
        scores: CachedScores,
    ) {
        if entries.young.len() >= generation && !entries.young.contains_key(&key) {
            entries.old = std::mem::take(&mut entries.young);
        }
        entries.young.insert(key, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(value: f32) -> CachedScores {
        CachedScores {
            probabilities: vec![value; 3].into(),
            meaning: None,
        }
    }

    #[test]
    fn keys_differ_for_different_texts_and_ignore_nothing() {
        assert_eq!(
            text_key("Sure, here you go."),
            text_key("Sure, here you go.")
        );
        assert_ne!(
            text_key("Sure, here you go."),
            text_key("Sure, here you go!")
        );
        assert_ne!(text_key(""), text_key(" "));
    }

    #[test]
    fn holds_at_most_its_capacity_and_keeps_what_is_used() {
        assert!(ScoreCache::new(1).is_none(), "too small: no cache");
        let cache = ScoreCache::new(4).unwrap();
        cache.put(1, scores(0.1));
        cache.put(2, scores(0.2));
        // The young generation (2 entries) is full: 1 and 2 become old.
        cache.put(3, scores(0.3));
        assert_eq!(cache.len(), 3);
        // A hit in the old generation brings 1 back; 3 and 1 are young, 2 is old.
        assert_eq!(cache.get(1), Some(scores(0.1)));
        // Young is full again: {3, 1} become old and 2 is dropped.
        cache.put(4, scores(0.4));
        assert_eq!(cache.get(2), None);
        for (key, value) in [(3, 0.3), (1, 0.1), (4, 0.4)] {
            assert_eq!(cache.get(key), Some(scores(value)), "{key}");
        }
        for key in 10..100 {
            cache.put(key, scores(0.5));
            assert!(cache.len() <= 4);
        }
        // Replacing an entry keeps one copy.
        cache.put(99, scores(0.9));
        assert_eq!(cache.get(99), Some(scores(0.9)));
        assert!(cache.len() <= 4);
    }
}
