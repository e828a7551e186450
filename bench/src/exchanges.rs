//! The sample exchanges (prompt and completion, about one in twelve abusive) that the
//! classifier, detection and reviewer harnesses measure on: drawn from the embedded sample
//! corpus with a fixed seed, so every run measures the same texts.

use rand::SeedableRng;
use vigil_sample::Corpus;

/// `count` sample exchanges (prompt, completion), in a fixed order.
pub(crate) fn corpus_exchanges(count: usize) -> Vec<(String, String)> {
    let corpus = Corpus::embedded();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261123);
    (0..count).map(|_| corpus.exchange(&mut rng)).collect()
}
