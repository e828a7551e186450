//! Detection-quality measures, as `vigil eval` prints them.
//!
//! AUPRC is average precision, as scikit-learn's `average_precision_score` computes it: the
//! texts are ranked by score, and the precision at each distinct score is weighted by the
//! recall it adds (`Σ (Rₖ − Rₖ₋₁) · Pₖ`), so tied scores count as one step. Precision,
//! recall, F1 and the false-positive rate are taken at the operating threshold: a text is
//! predicted harmful when its score is at or above it.

use std::collections::BTreeMap;

use serde::Serialize;

/// Quality of scores against labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Texts.
    pub texts: usize,
    /// Texts labelled harmful.
    pub positives: usize,
    /// Average precision of the scores; `None` without positives.
    pub auprc: Option<f64>,
    /// Share of texts predicted harmful that are; `None` when none is predicted.
    pub precision: Option<f64>,
    /// Share of harmful texts predicted harmful; `None` without positives.
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall; `None` when either is.
    pub f1: Option<f64>,
    /// Share of harmless texts predicted harmful; `None` without harmless texts.
    pub false_positive_rate: Option<f64>,
}

impl Metrics {
    /// Measures `(score, harmful)` pairs at `threshold`.
    pub fn compute(samples: &[(f32, bool)], threshold: f32) -> Self {
        let positives = samples.iter().filter(|s| s.1).count();
        let negatives = samples.len() - positives;
        let (mut tp, mut fp) = (0usize, 0usize);
        for &(score, harmful) in samples {
            if score >= threshold {
                if harmful {
                    tp += 1;
                } else {
                    fp += 1;
                }
            }
        }
        let ratio = |num: usize, den: usize| (den > 0).then(|| num as f64 / den as f64);
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, positives);
        let f1 = match (precision, recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        Self {
            texts: samples.len(),
            positives,
            auprc: average_precision(samples),
            precision,
            recall,
            f1,
            false_positive_rate: ratio(fp, negatives),
        }
    }
}

/// Average precision of `(score, harmful)` pairs (see the module docs); `None` without
/// positives.
pub fn average_precision(samples: &[(f32, bool)]) -> Option<f64> {
    let positives = samples.iter().filter(|s| s.1).count();
    if positives == 0 {
        return None;
    }
    let mut ranked: Vec<(f32, bool)> = samples.to_vec();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < ranked.len() {
        let score = ranked[i].0;
        while i < ranked.len() && ranked[i].0 == score {
            tp += usize::from(ranked[i].1);
            seen += 1;
            i += 1;
        }
        let recall = tp as f64 / positives as f64;
        ap += (recall - last_recall) * (tp as f64 / seen as f64);
        last_recall = recall;
    }
    Some(ap)
}

/// An evaluation: metrics per source and overall, at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The operating threshold used.
    pub threshold: f32,
    /// Metrics of each source's texts, by source name.
    pub sources: BTreeMap<String, Metrics>,
    /// Metrics of all texts.
    pub overall: Metrics,
}

impl Evaluation {
    /// Evaluates `(source, score, harmful)` triples at `threshold`.
    pub fn compute<'a>(
        samples: impl IntoIterator<Item = (&'a str, f32, bool)>,
        threshold: f32,
    ) -> Self {
        let mut by_source: BTreeMap<String, Vec<(f32, bool)>> = BTreeMap::new();
        let mut all = Vec::new();
        for (source, score, harmful) in samples {
            by_source
                .entry(source.to_owned())
                .or_default()
                .push((score, harmful));
            all.push((score, harmful));
        }
        Self {
            threshold,
            sources: by_source
                .into_iter()
                .map(|(source, s)| (source, Metrics::compute(&s, threshold)))
                .collect(),
            overall: Metrics::compute(&all, threshold),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn matches_a_hand_computed_case() {
        // Ranked: T F T F T. Recall steps of 1/3 at precisions 1, 2/3 and 3/5.
        let s = [
            (0.9, true),
            (0.8, false),
            (0.7, true),
            (0.3, false),
            (0.2, true),
        ];
        let m = Metrics::compute(&s, 0.5);
        assert!(close(m.auprc, (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0));
        assert!(close(m.precision, 2.0 / 3.0));
        assert!(close(m.recall, 2.0 / 3.0));
        assert!(close(m.f1, 2.0 / 3.0));
        assert!(close(m.false_positive_rate, 0.5));
        assert_eq!((m.texts, m.positives), (5, 3));
    }

    #[test]
    fn tied_scores_are_one_step() {
        // scikit-learn: average_precision_score([1, 0, 1], [0.5, 0.5, 0.1]) == 0.5 * 0.5 + 0.5 * 2/3
        let s = [(0.5, true), (0.5, false), (0.1, true)];
        assert!(close(average_precision(&s), 0.5 * 0.5 + 0.5 * (2.0 / 3.0)));
    }

    #[test]
    fn undefined_measures_are_none() {
        let m = Metrics::compute(&[(0.1, false)], 0.5);
        assert_eq!(
            (m.auprc, m.precision, m.recall, m.f1),
            (None, None, None, None)
        );
        assert!(close(m.false_positive_rate, 0.0));
        let e = Evaluation::compute([("a", 0.9, true), ("b", 0.2, false)], 0.5);
        assert_eq!(e.sources.len(), 2);
        assert!(close(e.overall.auprc, 1.0));
    }
}
