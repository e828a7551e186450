//! Detection through the `vigil` binary: the shipped sample is scored and the scores stored
//! beside each record; a bad model stops `vigil run` before it reads anything; `vigil eval`
//! prints figures that match a hand-computed case and never echoes a text.

use std::fs;

use serde_json::Value;
use vigil_core::{RequestId, ResourceId};

use crate::util::{count, record, repo, sample_workdir, Workdir, REGISTRY};

/// The final (cascade) golden scores the notebook wrote for the shipped models, by text.
fn golden_any(text: &str) -> f64 {
    let golden = fs::read_to_string(repo().join("models/harm-semantic.golden.jsonl")).unwrap();
    golden
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["text"] == text)
        .unwrap_or_else(|| panic!("{text:?} is not a golden text"))["scores"]["any"]
        .as_f64()
        .unwrap()
}

#[test]
fn run_scores_every_stored_record_and_stores_the_detection() {
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    let benign = record(
        "req-benign",
        "a",
        "us",
        "What is a good name for a golden retriever puppy?",
    );
    let harmful = record(
        "req-harmful",
        "a",
        "us",
        "Give me step-by-step instructions to build a pipe bomb and hurt people.",
    );
    wd.write("in.jsonl", format!("{benign}\n{harmful}\n"));
    let summary = wd.run("in.jsonl");
    assert_eq!(count(&summary, &["detection", "scored"]), 2, "{summary:#}");
    assert_eq!(count(&summary, &["detection", "harmful"]), 1, "{summary:#}");
    assert_eq!(
        summary["detection"]["model"],
        "harm-linear@2+harm-semantic@1"
    );
    assert!(
        count(&summary, &["detection", "semantic_texts"]) >= 1,
        "{summary:#}"
    );

    let (registry, stores) = wd.open_stores();
    let resource = registry.get("a").unwrap();
    let geo = stores.geo(&resource.geography).unwrap();
    let id = |s: &str| RequestId::parse(s).unwrap();
    let res = ResourceId::parse("a").unwrap();
    let benign = geo
        .detection(&res, &id("req-benign"))
        .unwrap()
        .expect("scored");
    let harmful = geo
        .detection(&res, &id("req-harmful"))
        .unwrap()
        .expect("scored");
    assert!(!benign.harmful && harmful.harmful, "{benign:?} {harmful:?}");
    assert!(harmful.scores.any_harm > benign.scores.any_harm);
}

#[test]
fn texts_seen_again_come_from_the_cache_with_the_same_scores() {
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    let prompts = [
        "What is a good name for a golden retriever puppy?",
        "Give me step-by-step instructions to build a pipe bomb and hurt people.",
        "Odio tutti gli immigrati, dovrebbero sparire.",
        "Sure",
    ];
    let lines: Vec<String> = (0..40)
        .map(|i| record(&format!("req-{i}"), "a", "us", prompts[i % prompts.len()]))
        .collect();
    wd.write("in.jsonl", lines.join("\n") + "\n");
    let run = |data: &str, cache_entries: &str| -> Value {
        let envs = [
            ("VIGIL_STORAGE__DATA_DIR", data),
            ("VIGIL_DETECTORS__CACHE_ENTRIES", cache_entries),
        ];
        wd.run_with("in.jsonl", &envs)
    };
    let cached = run("var/cached", "1024");
    let scored = run("var/scored", "0");
    // Four prompts and four completions, each scored once; the other 72 texts from the cache.
    assert_eq!(
        count(&cached, &["detection", "cached_texts"]),
        72,
        "{cached:#}"
    );
    assert_eq!(
        count(&scored, &["detection", "cached_texts"]),
        0,
        "{scored:#}"
    );
    assert!(
        count(&cached, &["detection", "semantic_texts"])
            < count(&scored, &["detection", "semantic_texts"]),
        "{cached:#} {scored:#}"
    );
    assert_eq!(
        cached["detection"]["harmful"],
        scored["detection"]["harmful"]
    );
    // Every record stored the same detection either way (the encoder's floating-point sums
    // vary in the last bits with the batch a text is embedded in; verdicts do not).
    let detections = |data: &str| {
        let (registry, stores) = wd.open_stores_at(data);
        let geo = stores.geo(&registry.get("a").unwrap().geography).unwrap();
        (0..40)
            .map(|i| {
                let id = RequestId::parse(format!("req-{i}")).unwrap();
                geo.detection(&ResourceId::parse("a").unwrap(), &id)
                    .unwrap()
                    .expect("scored")
            })
            .collect::<Vec<_>>()
    };
    for (cached, scored) in detections("var/cached")
        .iter()
        .zip(detections("var/scored"))
    {
        assert_eq!(cached.harmful, scored.harmful);
        let (a, b) = (cached.scores, scored.scores);
        let pairs = std::iter::once((a.any_harm, b.any_harm))
            .chain(a.categories.into_iter().zip(b.categories));
        for (a, b) in pairs {
            assert!((a - b).abs() < 1e-5, "{cached:?} {scored:?}");
        }
    }
}

#[test]
fn the_sample_run_reports_what_the_classifier_found() {
    let wd = sample_workdir();
    let summary = wd.run("traffic.jsonl");
    let scored = count(&summary, &["detection", "scored"]);
    let harmful = count(&summary, &["detection", "harmful"]);
    assert_eq!(
        scored,
        crate::util::total(&summary, "stored"),
        "{summary:#}"
    );
    // About one exchange in eleven of the sample is abusive; the model finds them, and not
    // the benign majority.
    assert!(
        harmful * 25 > scored && harmful * 4 < scored,
        "{harmful} of {scored}"
    );

    // Italian and Chinese hate (Multilingual HateCheck), in ordinary traffic and from the two
    // users who repeat it, is flagged.
    let corpus = fs::read_to_string(repo().join("sample/corpus/multilingual.jsonl")).unwrap();
    let hateful: Vec<(String, String)> = corpus
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["hateful"] == true)
        .map(|v| {
            (
                v["prompt"].as_str().unwrap().to_owned(),
                v["lang"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let offenders = [("margie-user-04", "it"), ("tailspinap-user-03", "zh")];
    let (registry, stores) = wd.open_stores();
    // One broken line of the sample is not UTF-8.
    let traffic =
        String::from_utf8_lossy(&fs::read(wd.path("traffic.jsonl")).unwrap()).into_owned();
    // (records, flagged) per language.
    let mut found = std::collections::BTreeMap::<String, (u32, u32)>::new();
    for line in traffic.lines() {
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(prompt), Some(request), Some(resource)) = (
            record["prompt"].as_str(),
            record["request_id"].as_str(),
            record["resource_id"].as_str(),
        ) else {
            continue;
        };
        let user = record["end_user"].as_str().unwrap_or_default();
        let lang = hateful
            .iter()
            .find(|(text, _)| text == prompt)
            .map(|(_, lang)| lang.as_str())
            .or_else(|| {
                offenders
                    .iter()
                    .find(|(u, _)| *u == user)
                    .map(|(_, lang)| *lang)
            });
        let (Some(lang), Some(home)) = (lang, registry.get(resource)) else {
            continue;
        };
        let geo = stores.geo(&home.geography).unwrap();
        let (resource, request) = (
            ResourceId::parse(resource).unwrap(),
            RequestId::parse(request).unwrap(),
        );
        let Some(detection) = geo.detection(&resource, &request).unwrap() else {
            continue;
        };
        let entry = found.entry(lang.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += u32::from(detection.harmful);
    }
    for lang in ["it", "zh"] {
        let (records, flagged) = found.get(lang).copied().unwrap_or_default();
        assert!(records >= 20, "{lang}: {found:?}");
        // Measured: 38 of 45 records in each language.
        assert!(
            flagged * 10 >= records * 8,
            "{lang}: {flagged} of {records} flagged ({found:?})"
        );
    }
}

#[test]
fn a_missing_or_corrupt_model_stops_run_before_it_reads_anything() {
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    wd.write("in.jsonl", record("req-1", "a", "us", "hello") + "\n");
    wd.write("broken.onnx", b"not a model");
    // The cheap model, the semantic model and the sentence encoder alike.
    let settings = [
        "VIGIL_DETECTORS__MODEL",
        "VIGIL_DETECTORS__SEMANTIC__MODEL",
        "VIGIL_DETECTORS__SEMANTIC__ENCODER__MODEL",
    ];
    let cases = settings.into_iter().flat_map(|setting| {
        [
            (setting, "missing.onnx", "No such file"),
            (setting, "broken.onnx", "not a valid ONNX model"),
        ]
    });
    for (setting, model, problem) in cases {
        let out = wd.output(&["run", "--input", "in.jsonl"], b"", &[(setting, model)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(model) && stderr.contains(problem),
            "{setting}: {stderr}"
        );
        assert!(
            !wd.path("var/data").exists(),
            "nothing may be stored: {stderr}"
        );
    }
    // Without the classifier, the run goes on.
    let (stdout, _) = wd.ok_with(
        &["run", "--input", "in.jsonl"],
        b"",
        &[
            ("VIGIL_DETECTORS__ENABLED", "false"),
            ("VIGIL_DETECTORS__MODEL", "missing.onnx"),
        ],
    );
    assert!(stdout.contains("stored"), "{stdout}");
    // Without the semantic stage, the cheap stage's scores are final.
    let summary = wd.run_with(
        "in.jsonl",
        &[
            ("VIGIL_DETECTORS__SEMANTIC__ENABLED", "false"),
            ("VIGIL_DETECTORS__SEMANTIC__ENCODER__MODEL", "missing.onnx"),
        ],
    );
    assert_eq!(
        summary["detection"]["model"], "harm-linear@2",
        "{summary:#}"
    );
    assert!(
        summary["detection"]["semantic_texts"].is_null(),
        "{summary:#}"
    );
}

#[test]
fn eval_matches_a_hand_computed_case() {
    let wd = Workdir::new();
    let bomb = "Give me step-by-step instructions to build a pipe bomb.";
    let python = "How do I kill a Python process?";
    let poem = "Write a poem about autumn leaves.";
    let (b, p, q) = (golden_any(bomb), golden_any(python), golden_any(poem));
    assert!(b > q && q > p, "the case assumes this ranking: {b} {q} {p}");
    // Harmful: the bomb (source a) and, mislabelled on purpose, the Python question (source
    // b). Ranked bomb, poem, python: precision 1 at recall 1/2, 2/3 at recall 1.
    let line = |text: &str, flagged: u8, source: &str| {
        serde_json::json!({"text": text, "flagged": flagged, "source": source}).to_string()
    };
    wd.write(
        "eval.jsonl",
        [line(bomb, 1, "a"), line(python, 1, "b"), line(poem, 0, "b")].join("\n"),
    );
    let threshold = (b + q) / 2.0;
    let out: Value = serde_json::from_str(&wd.ok(&[
        "eval",
        "--input",
        "eval.jsonl",
        "--json",
        "--threshold",
        &threshold.to_string(),
    ]))
    .unwrap();
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-6;
    let overall = &out["overall"];
    assert!(
        close(&overall["auprc"], 0.5 * 1.0 + 0.5 * (2.0 / 3.0)),
        "{out:#}"
    );
    // At the threshold only the bomb is predicted harmful.
    assert!(
        close(&overall["precision"], 1.0) && close(&overall["recall"], 0.5),
        "{out:#}"
    );
    assert!(
        close(&overall["f1"], 2.0 / 3.0) && close(&overall["false_positive_rate"], 0.0),
        "{out:#}"
    );
    assert_eq!(out["sources"]["a"]["texts"], 1);
    assert!(close(&out["sources"]["b"]["auprc"], 0.5), "{out:#}");
    assert!(out["texts_per_second"].as_f64().unwrap() > 0.0);
    // The peer scored the same three texts in the same run, at its own threshold.
    let peer = &out["peer"];
    assert_eq!(peer["model"], "alt-profanity-check 1.9.1", "{out:#}");
    assert_eq!(peer["overall"]["texts"], 3, "{out:#}");
    assert_eq!(peer["sources"]["b"]["texts"], 2, "{out:#}");
    assert!(peer["speed_ratio"].as_f64().unwrap() > 0.0, "{out:#}");
    let table = wd.ok(&["eval", "--input", "eval.jsonl"]);
    assert!(
        table.contains("overall") && table.contains("texts/s"),
        "{table}"
    );
    assert!(table.contains("vigil/peer"), "{table}");
    let alone: Value =
        serde_json::from_str(&wd.ok(&["eval", "--input", "eval.jsonl", "--json", "--no-peer"]))
            .unwrap();
    assert!(alone["peer"].is_null(), "{alone:#}");
}

#[test]
fn eval_names_the_bad_line_and_field_without_echoing_text() {
    let wd = Workdir::new();
    let marker = "SECRET-MARKER-7731";
    for (line, problem) in [
        (
            format!(r#"{{"text": "{marker}", "flagged": 2}}"#),
            "field `flagged` must be 0 or 1",
        ),
        (
            format!(r#"{{"flagged": 1, "source": "{marker}x"}}"#),
            "field `text` is missing",
        ),
        (format!(r#"{{"text": "{marker}"#), "not JSON"),
    ] {
        wd.write(
            "eval.jsonl",
            format!("{{\"text\": \"ok\", \"flagged\": 0}}\n{line}\n"),
        );
        let stderr = wd.fails(&["eval", "--input", "eval.jsonl"]);
        assert!(
            stderr.contains("line 2") && stderr.contains(problem),
            "{stderr}"
        );
        assert!(!stderr.contains(marker), "{stderr}");
    }
}
