//! The embedded corpus (see `corpus/NOTICE.md`) and the ways text is drawn from it.

use rand::seq::SliceRandom;
use rand::Rng;

/// The completion a model gives to abusive prompts in the sample.
pub const REFUSAL: &str = "I'm sorry, but I can't help with that request.";

/// Kinds of abusive text in the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// Requests for harmful help (AdvBench, HarmBench, forbidden questions).
    HarmfulRequest,
    /// Hateful statements (ToxiGen, Davidson).
    Hate,
    /// Jailbreak prompts (jailbreak_llms).
    Jailbreak,
    /// Hateful statements in Italian (Multilingual HateCheck).
    HateItalian,
    /// Hateful statements in Mandarin Chinese (Multilingual HateCheck).
    HateChinese,
}

/// The corpus, parsed.
pub struct Corpus {
    benign_pairs: Vec<(String, String)>,
    benign_prompts: Vec<String>,
    harmful: Vec<String>,
    hate: Vec<String>,
    jailbreaks: Vec<String>,
    /// Hateful statements, Italian then Chinese.
    hate_italian: Vec<String>,
    hate_chinese: Vec<String>,
    /// Non-hateful statements in Italian and Chinese (contrast cases: they mention the same
    /// groups, with neutral or positive words, quotes and counter-speech).
    other_languages: Vec<String>,
}

fn prompts(jsonl: &str) -> Vec<String> {
    field(jsonl, "prompt")
}

/// Prompts of `multilingual.jsonl` that are hateful (or not), in language `lang` (or any).
fn multilingual(hateful: bool, lang: Option<&str>) -> Vec<String> {
    include_str!("../corpus/multilingual.jsonl")
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).expect("the embedded corpus is valid JSON");
            let wanted = v["hateful"].as_bool() == Some(hateful)
                && lang.is_none_or(|lang| v["lang"].as_str() == Some(lang));
            wanted.then(|| v["prompt"].as_str().expect("a prompt").to_owned())
        })
        .collect()
}

fn field(jsonl: &str, name: &str) -> Vec<String> {
    jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).expect("the embedded corpus is valid JSON");
            v[name]
                .as_str()
                .expect("every corpus row has the field")
                .to_owned()
        })
        .collect()
}

impl Corpus {
    /// The corpus compiled into the binary.
    pub fn embedded() -> Self {
        let pairs = include_str!("../corpus/benign_pairs.jsonl");
        let mut benign_prompts = prompts(include_str!("../corpus/benign_instructions.jsonl"));
        benign_prompts.extend(prompts(include_str!("../corpus/benign_statements.jsonl")));
        Self {
            benign_pairs: field(pairs, "prompt")
                .into_iter()
                .zip(field(pairs, "completion"))
                .collect(),
            benign_prompts,
            harmful: prompts(include_str!("../corpus/harmful_requests.jsonl")),
            hate: prompts(include_str!("../corpus/hate.jsonl")),
            jailbreaks: prompts(include_str!("../corpus/jailbreaks.jsonl")),
            hate_italian: multilingual(true, Some("it")),
            hate_chinese: multilingual(true, Some("zh")),
            other_languages: multilingual(false, None),
        }
    }

    /// One abusive text of a kind, chosen by index.
    pub fn abusive(&self, kind: Abuse, pick: usize) -> String {
        let pool = match kind {
            Abuse::HarmfulRequest => &self.harmful,
            Abuse::Hate => &self.hate,
            Abuse::Jailbreak => &self.jailbreaks,
            Abuse::HateItalian => &self.hate_italian,
            Abuse::HateChinese => &self.hate_chinese,
        };
        pool[pick % pool.len()].clone()
    }

    /// A prompt and completion of ordinary traffic: mostly benign, about one in eleven
    /// abusive (answered with a refusal); three in a hundred in Italian or Chinese.
    pub fn exchange(&self, rng: &mut impl Rng) -> (String, String) {
        let roll = rng.gen_range(0..100);
        let pick = |pool: &[String], rng: &mut dyn rand::RngCore| {
            pool.choose(rng)
                .expect("corpus pools are non-empty")
                .clone()
        };
        match roll {
            0..=3 => (pick(&self.harmful, rng), REFUSAL.to_owned()),
            4..=6 => (pick(&self.hate, rng), REFUSAL.to_owned()),
            7 => (pick(&self.jailbreaks, rng), REFUSAL.to_owned()),
            8 => match rng.gen_bool(0.5) {
                true => (pick(&self.hate_italian, rng), REFUSAL.to_owned()),
                false => (pick(&self.hate_chinese, rng), REFUSAL.to_owned()),
            },
            9..=10 => (
                pick(&self.other_languages, rng),
                "Thank you for sharing that.".to_owned(),
            ),
            // Self-instruct tasks and statements come without answers of their own.
            11..=29 => (
                pick(&self.benign_prompts, rng),
                "Sure, here you go.".to_owned(),
            ),
            _ => self.benign_pairs.choose(rng).expect("non-empty").clone(),
        }
    }
}

/// A near-copy of `text`, as a user retrying the same abuse would type it.
pub fn near_duplicate(text: &str, rng: &mut impl Rng) -> String {
    let mut out = text.to_owned();
    match rng.gen_range(0..6) {
        0 => out = out.to_lowercase(),
        1 => out = out.to_uppercase(),
        2 => out = format!("please {out}"),
        3 => out.push_str(" now"),
        4 => out = format!("{out}!!"),
        _ => {}
    }
    if rng.gen_bool(0.5) && out.len() > 10 {
        // A typo: one character dropped.
        let mut at = rng.gen_range(1..out.len() - 1);
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        out.remove(at);
    }
    out
}
