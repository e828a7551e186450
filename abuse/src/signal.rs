//! What one record contributes to its subjects' windows: whether it is harmful and how
//! severely, in which categories, whether it matches a known jailbreak template, and its
//! near-duplicate fingerprints (of its words and, when the encoder read the prompt, of its
//! meaning). Built from the classifier's detection (when there is one) and the heuristics'
//! inspection, under the policy's thresholds.

use vigil_core::{Category, Detection};
use vigil_detectors::{Inspection, MeaningHash};

use crate::policy::Policy;

/// One record's signal.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RecordSignal {
    /// Harmful by the classifier or by a heuristic of at least `heuristic_harmful_at`.
    pub harmful: bool,
    /// Its severity when harmful (the classifier's "any harm" score or the heuristic
    /// severity, whichever is higher), else 0.
    pub severity: f32,
    /// Severity per category (classifier scores of a harmful record, heuristic matches).
    pub categories: [f32; Category::ALL.len()],
    /// A jailbreak or prompt-injection pattern of at least `heuristic_harmful_at` matched.
    pub template: bool,
    /// Pattern families that matched.
    pub families: u64,
    /// SimHash of the prompt.
    pub fingerprint: u64,
    /// Hash of the prompt's embedding, when the encoder read it.
    pub meaning: Option<MeaningHash>,
}

impl RecordSignal {
    /// The signal of a record with these detection results.
    pub fn of(
        policy: &Policy,
        detection: Option<&Detection>,
        inspection: &Inspection,
        meaning: Option<MeaningHash>,
    ) -> Self {
        let at = policy.signals.heuristic_harmful_at;
        let hits = &inspection.hits;
        let mut signal = Self {
            families: hits.families,
            fingerprint: inspection.fingerprint,
            meaning,
            template: hits.families != 0 && hits.categories[Category::Jailbreak.index()] >= at,
            ..Self::default()
        };
        if let Some(detection) = detection.filter(|d| d.harmful) {
            signal.harmful = true;
            signal.severity = detection.scores.any_harm;
            signal.categories = detection.scores.categories;
        }
        for (slot, heuristic) in signal.categories.iter_mut().zip(hits.categories) {
            if heuristic >= at {
                *slot = slot.max(heuristic);
                signal.harmful = true;
                signal.severity = signal.severity.max(heuristic);
            }
        }
        signal
    }
}
