//! The linear heads of the harm model, computed in Rust from the weights in its ONNX file.
//!
//! The ONNX graph (`notebooks/train_classifier.ipynb`, `build_onnx`) is the model's definition:
//! sublinear TF-IDF of the sparse features, L2 normalisation per text, one logistic regression
//! per head. Evaluated by ONNX Runtime it spends most of its time in `ScatterElements` over
//! every (text, bucket, head) entry; the same arithmetic as a sparse dot product in Rust is
//! tens of times faster. [`crate::HarmClassifier`] therefore scores with [`LinearHeads`] and
//! uses ONNX Runtime to check, at start-up, that both agree on probe texts.

use crate::features::FeatureBatch;
use crate::onnx_file::{self, Tensor};

/// The heads' parameters, laid out for one cache line per bucket: each bucket's row holds its
/// idf, then its weight for every head, padded to [`ROW`] floats (32 bytes, aligned), so scoring
/// a text touches one line per bucket it contains. `bias` holds one value per head.
#[derive(Debug, Clone)]
pub struct LinearHeads {
    rows: Vec<Row>,
    bias: Vec<f32>,
}

/// Floats per bucket row: idf and up to seven heads.
const ROW: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
struct Row([f32; ROW]);

impl LinearHeads {
    /// Reads the `idf`, `weights` and `bias` initializers of an ONNX model file, checking their
    /// shapes against each other and against `n_features` buckets.
    pub fn from_onnx(model: &[u8], n_features: usize) -> Result<Self, String> {
        let mut tensors = onnx_file::float_initializers(model)?;
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| format!("the model has no {name:?} initializer"))
        };
        let (idf, weights, bias) = (take("idf")?, take("weights")?, take("bias")?);
        let heads = bias.values.len();
        let shaped = |t: &Tensor, dims: &[usize]| t.dims == dims;
        if !shaped(&idf, &[n_features])
            || !shaped(&weights, &[n_features, heads])
            || !shaped(&bias, &[heads])
        {
            return Err(format!(
                "initializer shapes idf {:?}, weights {:?}, bias {:?} do not fit {n_features} buckets",
                idf.dims, weights.dims, bias.dims
            ));
        }
        if heads == 0 || heads >= ROW {
            return Err(format!(
                "{heads} heads: vigil serves 1 to {} heads",
                ROW - 1
            ));
        }
        let rows = idf
            .values
            .iter()
            .zip(weights.values.chunks_exact(heads))
            .map(|(&idf, weights)| {
                let mut row = Row::default();
                row.0[0] = idf;
                row.0[1..=heads].copy_from_slice(weights);
                row
            })
            .collect();
        Ok(Self {
            rows,
            bias: bias.values,
        })
    }

    /// Number of heads (output columns).
    pub fn heads(&self) -> usize {
        self.bias.len()
    }

    /// Probabilities of every head for every row of `batch`, row-major, appended to `out`.
    /// Entries of a row must be contiguous (as [`crate::features::Featurizer`] writes them).
    pub fn score(&self, batch: &FeatureBatch, out: &mut Vec<f32>) {
        let heads = self.heads();
        let start = out.len();
        out.resize(start + batch.len * heads, 0.0);
        let mut entry = 0;
        while entry < batch.ids.len() {
            let text = batch.rows[entry];
            // One pass gathers each bucket's row and its weighted term frequency, summing the
            // weighted head scores and the squared norm; dividing by the norm comes last.
            let mut sum_sq = 0.0f32;
            let mut dots = [0.0f32; ROW];
            while entry < batch.ids.len() && batch.rows[entry] == text {
                let row = &self.rows[batch.ids[entry] as usize].0;
                let count = batch.counts[entry];
                // Sublinear TF: 1 + ln(count) for count >= 1.
                let x = (count.max(1.0).ln() + count.min(1.0)) * row[0];
                sum_sq += x * x;
                for (dot, w) in dots.iter_mut().zip(row) {
                    *dot += w * x;
                }
                entry += 1;
            }
            let norm = sum_sq.sqrt().max(1e-12);
            let logits = &mut out[start + text as usize * heads..][..heads];
            for (logit, dot) in logits.iter_mut().zip(&dots[1..]) {
                *logit = dot / norm;
            }
        }
        for logits in out[start..].chunks_exact_mut(heads) {
            for (logit, bias) in logits.iter_mut().zip(&self.bias) {
                *logit = sigmoid(*logit + bias);
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_a_hand_computed_case() {
        let row = |idf: f32, w: [f32; 2]| {
            let mut row = Row::default();
            row.0[..3].copy_from_slice(&[idf, w[0], w[1]]);
            row
        };
        let heads = LinearHeads {
            rows: vec![
                row(1.0, [1.0, 0.0]),
                row(2.0, [0.0, 1.0]),
                row(3.0, [-1.0, 2.0]),
            ],
            bias: vec![0.5, -0.5],
        };
        // Row 0: bucket 0 once, bucket 2 three times; row 1: nothing; row 2: bucket 1 once.
        let batch = FeatureBatch {
            ids: vec![0, 2, 1],
            counts: vec![1.0, 3.0, 1.0],
            rows: vec![0, 0, 2],
            len: 3,
        };
        let mut out = vec![7.0]; // appended to, not overwritten
        heads.score(&batch, &mut out);
        let x0 = 1.0f32;
        let x2 = (1.0 + 3f32.ln()) * 3.0;
        let norm = (x0 * x0 + x2 * x2).sqrt();
        let expected = [
            7.0,
            sigmoid(0.5 + x0 / norm - x2 / norm),
            sigmoid(-0.5 + 2.0 * x2 / norm),
            sigmoid(0.5),
            sigmoid(-0.5),
            sigmoid(0.5),
            sigmoid(-0.5 + 1.0),
        ];
        assert_eq!(out.len(), expected.len());
        for (got, want) in out.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{out:?}");
        }
    }
}
