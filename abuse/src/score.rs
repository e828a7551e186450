//! The abuse score: frequency, severity, intent and trend over a subject's window, combined as
//! documented in `policies/abuse.toml` and the crate docs.

use vigil_core::CaseSignals;

use crate::policy::{ScoringPolicy, SubjectScoring};
use crate::window::Totals;

/// The abuse score in [0, 1] of a window (`current`) against the one before, with its
/// components.
pub fn abuse_score(
    scoring: &ScoringPolicy,
    subject: &SubjectScoring,
    current: &Totals,
    previous: &Totals,
) -> (f32, CaseSignals) {
    let h = current.harmful as f32;
    let share = if current.records == 0 {
        0.0
    } else {
        h / current.records as f32
    };
    let frequency =
        (1.0 - (-h / scoring.frequency_scale).exp()) * (share / subject.share_scale).min(1.0);
    let severity = if current.harmful == 0 {
        0.0
    } else {
        (current.severity_sum / h).clamp(0.0, 1.0)
    };
    let events = (current.near_duplicates + current.template_hits + current.escalations) as f32;
    let intent = 1.0 - (-events / scoring.intent_scale).exp();
    let before = previous.harmful as f32;
    let trend = if h + before == 0.0 {
        0.0
    } else {
        h / (h + before)
    };
    let w = &scoring.weights;
    let abuse = frequency * (w.severity * severity + w.intent * intent + w.trend * trend);
    let signals = CaseSignals {
        records: current.records,
        harmful: current.harmful,
        previous_harmful: previous.harmful,
        near_duplicates: current.near_duplicates,
        template_hits: current.template_hits,
        escalations: current.escalations,
        frequency,
        severity,
        intent,
        trend,
    };
    (abuse.clamp(0.0, 1.0), signals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn policy() -> Policy {
        Policy::parse(&crate::policy::tests::shipped()).unwrap()
    }

    fn totals(records: u32, harmful: u32, severity: f32, events: u32) -> Totals {
        Totals {
            records,
            harmful,
            severity_sum: severity * harmful as f32,
            near_duplicates: events,
            ..Totals::default()
        }
    }

    #[test]
    fn the_documented_formula() {
        let p = policy();
        let (user, resource) = (&p.scoring.end_user, &p.scoring.resource);
        let none = Totals::default();
        // One severe message: frequency gates it far below the threshold.
        let (one, _) = abuse_score(&p.scoring, user, &totals(1, 1, 0.95, 0), &none);
        assert!(one < 0.2, "{one}");
        // Forty near-duplicate retries: well above.
        let (forty, s) = abuse_score(&p.scoring, user, &totals(40, 40, 0.9, 39), &none);
        assert!(forty > 0.9, "{forty}");
        assert_eq!((s.harmful, s.trend), (40, 1.0));
        // By hand: h = 6 of 6, severity 0.8, 5 events, nothing before.
        let f = 1.0 - (-6.0f32 / 5.0).exp();
        let i = 1.0 - (-5.0f32 / 5.0).exp();
        let expected = f * (0.55 * 0.8 + 0.25 * i + 0.2);
        let (six, _) = abuse_score(&p.scoring, user, &totals(6, 6, 0.8, 5), &none);
        assert!((six - expected).abs() < 1e-5, "{six} vs {expected}");
        // The same harm spread over a busy resource is damped by its share.
        let (busy, s) = abuse_score(&p.scoring, resource, &totals(4000, 40, 0.9, 39), &none);
        assert!(busy < 0.25, "{busy} {s:?}");
        // A steady abuser's trend is flat.
        let (_, s) = abuse_score(
            &p.scoring,
            user,
            &totals(10, 10, 0.9, 0),
            &totals(10, 10, 0.9, 0),
        );
        assert_eq!(s.trend, 0.5);
    }
}
