//! Strict parsing of a model's answer into an [`Assessment`].
//!
//! The answer must be exactly one JSON object with exactly the five keys of the verdict
//! format: no prose around it, no code fence, no extra key, every value of the right type and
//! range, categories from the closed set, and an answer consistent with itself (no categories
//! on a "no violation"). Anything else is [`BackendError::Malformed`], described without
//! repeating the answer (which may echo content). A rationale that quotes the record is
//! replaced, so no content reaches a stored verdict through it.

use serde::Deserialize;
use vigil_core::{Assessment, Category, Content, Severity};

use crate::backend::BackendError;

/// Longest rationale kept, in characters.
const MAX_RATIONALE_CHARS: usize = 300;

/// Runs of this many words shared with the record count as quoting it.
const QUOTE_WORDS: usize = 4;

/// What replaces a rationale that quoted the record.
pub const WITHHELD_RATIONALE: &str =
    "The model's rationale quoted the reviewed record and was withheld.";

/// The answer exactly as the format requires it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    violation: bool,
    categories: Vec<String>,
    severity: String,
    confidence: f64,
    rationale: String,
}

/// Parses `answer` strictly; `content` is the record reviewed, to keep its words out of the
/// rationale.
pub fn parse_answer(answer: &str, content: &Content) -> Result<Assessment, BackendError> {
    let malformed = |problem: &str| BackendError::Malformed(problem.to_owned());
    let answer = answer.trim();
    if !(answer.starts_with('{') && answer.ends_with('}')) {
        return Err(malformed("the answer is not a bare JSON object"));
    }
    // serde's own messages quote the offending key or value, which may be content the model
    // echoed: only the error's class is reported.
    let parsed: Answer = serde_json::from_str(answer).map_err(|e| {
        BackendError::Malformed(match e.classify() {
            serde_json::error::Category::Data => {
                "the answer's keys or value types are not the verdict's".into()
            }
            _ => "the answer is not valid JSON".into(),
        })
    })?;
    let mut categories = Vec::with_capacity(parsed.categories.len());
    for name in &parsed.categories {
        let category = Category::parse(name)
            .ok_or_else(|| malformed("`categories` holds a name outside the policy's set"))?;
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    let severity = Severity::parse(&parsed.severity)
        .ok_or_else(|| malformed("`severity` is not none, low, medium or high"))?;
    if !(parsed.confidence.is_finite() && (0.0..=1.0).contains(&parsed.confidence)) {
        return Err(malformed("`confidence` is not a number in [0, 1]"));
    }
    if !parsed.violation && (!categories.is_empty() || severity != Severity::None) {
        return Err(malformed(
            "a \"no violation\" answer names categories or a severity",
        ));
    }
    if parsed.violation && severity == Severity::None {
        return Err(malformed("a violation answer has severity \"none\""));
    }
    let rationale = first_sentence(&parsed.rationale);
    if rationale.is_empty() {
        return Err(malformed("`rationale` is empty"));
    }
    let rationale = if quotes(&rationale, content) {
        WITHHELD_RATIONALE.to_owned()
    } else {
        rationale
    };
    Ok(Assessment {
        violation: parsed.violation,
        categories,
        severity,
        confidence: parsed.confidence as f32,
        rationale,
    })
}

/// The first sentence of `text`, on one line, at most [`MAX_RATIONALE_CHARS`] characters.
fn first_sentence(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let end = one_line
        .char_indices()
        .find(|&(i, c)| {
            matches!(c, '.' | '!' | '?')
                && one_line[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_none_or(char::is_whitespace)
        })
        .map_or(one_line.len(), |(i, c)| i + c.len_utf8());
    crate::prompt::cut(&one_line[..end], MAX_RATIONALE_CHARS).to_owned()
}

/// Whether `rationale` repeats a run of [`QUOTE_WORDS`] words of the record.
fn quotes(rationale: &str, content: &Content) -> bool {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let said = words(rationale);
    if said.len() < QUOTE_WORDS {
        return false;
    }
    let record: Vec<String> = [content.prompt.as_deref(), content.completion.as_deref()]
        .into_iter()
        .flatten()
        .flat_map(words)
        .collect();
    let runs: std::collections::HashSet<&[String]> = record.windows(QUOTE_WORDS).collect();
    said.windows(QUOTE_WORDS).any(|run| runs.contains(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            prompt: Some("Tell me how to build a pipe bomb at home please".into()),
            completion: None,
        }
    }

    #[test]
    fn a_well_formed_answer_parses() {
        let answer = r#" {"violation": true, "categories": ["illegal", "violence", "illegal"],
            "severity": "high", "confidence": 0.93,
            "rationale": "The user asks for explosive instructions. More text."} "#;
        let assessment = parse_answer(answer, &content()).unwrap();
        assert!(assessment.violation);
        assert_eq!(
            assessment.categories,
            vec![Category::Illegal, Category::Violence]
        );
        assert_eq!(assessment.severity, Severity::High);
        assert_eq!(
            assessment.rationale,
            "The user asks for explosive instructions."
        );
        assert!((assessment.violation_probability() - 0.93).abs() < 1e-6);
    }

    #[test]
    fn anything_but_the_exact_format_is_malformed() {
        let ok = r#"{"violation": false, "categories": [], "severity": "none", "confidence": 0.9, "rationale": "Benign."}"#;
        assert!(parse_answer(ok, &content()).is_ok());
        for bad in [
            format!("Sure! {ok}"),
            format!("```json\n{ok}\n```"),
            ok.replace("\"confidence\": 0.9", "\"confidence\": 1.5"),
            ok.replace("\"confidence\": 0.9", "\"confidence\": \"high\""),
            ok.replace("\"none\"", "\"extreme\""),
            ok.replace("[]", "[\"spam\"]"),
            ok.replace("[]", "[\"hate\"]"),
            ok.replace("}", ", \"note\": \"x\"}"),
            ok.replace(", \"rationale\": \"Benign.\"", ""),
            ok.replace("Benign.", "  "),
            r#"{"violation": true, "categories": [], "severity": "none", "confidence": 0.9, "rationale": "x."}"#.into(),
            "[]".into(),
            String::new(),
        ] {
            let error = parse_answer(&bad, &content()).unwrap_err();
            assert!(matches!(error, BackendError::Malformed(_)), "{bad}");
            assert!(!error.to_string().contains("pipe bomb"));
        }
    }

    #[test]
    fn errors_never_repeat_what_the_model_echoed() {
        let echoed = [
            r#"{"violation": "build a pipe bomb", "categories": [], "severity": "none", "confidence": 0.9, "rationale": "x."}"#,
            r#"{"violation": false, "build a pipe bomb": 1, "categories": [], "severity": "none", "confidence": 0.9, "rationale": "x."}"#,
            r#"{"violation": false, "categories": ["build a pipe bomb"], "severity": "none", "confidence": 0.9, "rationale": "x."}"#,
            r#"{"violation": false, "categories": [], "severity": "build a pipe bomb", "confidence": 0.9, "rationale": "x."}"#,
            r#"{"violation": false build a pipe bomb}"#,
        ];
        for answer in echoed {
            let error = parse_answer(answer, &content()).unwrap_err().to_string();
            assert!(!error.contains("pipe"), "{error}");
        }
    }

    #[test]
    fn a_rationale_quoting_the_record_is_withheld() {
        let answer = r#"{"violation": true, "categories": ["illegal"], "severity": "high",
            "confidence": 0.9, "rationale": "They asked: how to build a Pipe Bomb."}"#;
        let assessment = parse_answer(answer, &content()).unwrap();
        assert_eq!(assessment.rationale, WITHHELD_RATIONALE);
    }
}
