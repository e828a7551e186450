//! Near-duplicates by meaning: a 256-bit locality-sensitive hash of a sentence embedding.
//!
//! [`simhash`](crate::simhash) finds edited repeats (the same words, retyped); a user who
//! paraphrases a request ("how do I build a pipe bomb" / "steps to assemble an explosive from a
//! metal pipe", or the same in Italian) shares few n-grams with the first try but lands near it
//! in the multilingual encoder's embedding space. Keeping whole embeddings per subject would
//! cost 2 KiB each, so each is reduced to the signs of its projections on [`BITS`] random
//! hyperplanes (Charikar's SimHash for cosine similarity): two embeddings at angle θ differ in
//! each bit with probability θ/π, so [`MeaningHash::distance`] estimates the angle, and 32
//! bytes a record are enough to tell paraphrases (cosine about 0.5 and more with USE
//! multilingual v3) from unrelated requests (about 0.2).
//!
//! The hyperplanes come from a fixed seed, so a hash means the same in every build and a
//! checkpointed window state stays comparable across restarts and upgrades.

use serde::{Deserialize, Serialize};

/// Bits per hash.
pub const BITS: usize = 256;

/// The hash of one embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MeaningHash(pub [u64; BITS / 64]);

impl MeaningHash {
    /// Bits in which two hashes differ: about `BITS * angle / π` for embeddings at that angle.
    pub fn distance(&self, other: &Self) -> u32 {
        self.0
            .iter()
            .zip(other.0)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// The bit distance that corresponds to a cosine similarity of `cosine`: hashes at most
    /// this far apart come from embeddings about at least that similar.
    pub fn distance_for_cosine(cosine: f32) -> u32 {
        let angle = cosine.clamp(-1.0, 1.0).acos();
        (BITS as f32 * angle / std::f32::consts::PI).round() as u32
    }
}

/// The hyperplanes of one embedding width.
#[derive(Debug, Clone)]
pub struct MeaningHasher {
    dim: usize,
    /// `BITS` rows of `dim` Gaussian components.
    planes: Vec<f32>,
}

/// The seed of the hyperplanes. Changing it changes every hash: never do it without
/// discarding the window states that hold them.
const SEED: u64 = 0x7669_6769_6c2d_6d65; // "vigil-me"

impl MeaningHasher {
    /// The hasher for embeddings of `dim` floats.
    pub fn new(dim: usize) -> Self {
        let mut state = SEED;
        let mut uniform = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            // 53 random bits in (0, 1).
            ((crate::simhash::mix(state) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        // Box-Muller: two uniforms, one standard normal (the second is not needed).
        let planes = (0..BITS * dim)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect();
        Self { dim, planes }
    }

    /// The hash of `embedding` (`dim` floats; its norm does not matter).
    pub fn hash(&self, embedding: &[f32]) -> MeaningHash {
        assert_eq!(
            embedding.len(),
            self.dim,
            "an embedding of the hasher's width"
        );
        let mut words = [0u64; BITS / 64];
        for (bit, plane) in self.planes.chunks_exact(self.dim).enumerate() {
            let dot: f32 = plane.iter().zip(embedding).map(|(p, e)| p * e).sum();
            if dot > 0.0 {
                words[bit / 64] |= 1 << (bit % 64);
            }
        }
        MeaningHash(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    /// A unit vector at cosine `cosine` from `a`, in the plane of `a` and `b` (orthonormal).
    fn at_cosine(a: &[f32], b: &[f32], cosine: f32) -> Vec<f32> {
        let sine = (1.0 - cosine * cosine).sqrt();
        a.iter()
            .zip(b)
            .map(|(x, y)| cosine * x + sine * y)
            .collect()
    }

    #[test]
    fn hash_distance_tracks_the_angle_between_embeddings() {
        let dim = 512;
        let hasher = MeaningHasher::new(dim);
        let a = unit((0..dim).map(|i| ((i * 7 % 13) as f32) - 6.0).collect());
        // b: orthogonal to a (Gram-Schmidt on another vector).
        let raw: Vec<f32> = (0..dim).map(|i| ((i * 5 % 11) as f32) - 5.0).collect();
        let along: f32 = raw.iter().zip(&a).map(|(x, y)| x * y).sum();
        let b = unit(raw.iter().zip(&a).map(|(x, y)| x - along * y).collect());
        let ha = hasher.hash(&a);
        assert_eq!(ha.distance(&ha), 0);
        assert_eq!(hasher.hash(&a), ha, "deterministic");
        let mut previous = 0;
        for cosine in [0.95, 0.8, 0.5, 0.2, 0.0, -0.5] {
            let d = ha.distance(&hasher.hash(&at_cosine(&a, &b, cosine)));
            let expected = MeaningHash::distance_for_cosine(cosine);
            // One standard deviation of a binomial over 256 bits is at most 8.
            assert!(
                d.abs_diff(expected) <= 24,
                "cosine {cosine}: {d} bits, expected about {expected}"
            );
            assert!(d >= previous, "less similar, farther apart");
            previous = d;
        }
        assert_eq!(MeaningHash::distance_for_cosine(1.0), 0);
        assert_eq!(MeaningHash::distance_for_cosine(0.5), 85);
        assert_eq!(MeaningHash::distance_for_cosine(-1.0), 256);
    }

    #[test]
    fn the_hyperplanes_never_change() {
        // A checkpointed window state holds hashes: they must mean the same in every build.
        let hasher = MeaningHasher::new(4);
        let h = hasher.hash(&[0.5, -0.25, 0.125, 1.0]);
        assert_eq!(h, MeaningHasher::new(4).hash(&[0.5, -0.25, 0.125, 1.0]));
        assert_eq!(format!("{:016x}", h.0[0]), PINNED_FIRST_WORD);
    }

    /// The first 64 bits of the hash above, as this version computes them.
    const PINNED_FIRST_WORD: &str = "e9a8a4f1bc45a5e3";
}
