//! `vigil run`: the shipped sample end to end, idempotent re-runs, and every rejection reason
//! with its dead letter.

use std::fs;

use serde_json::Value;
use vigil_core::RequestId;

use crate::util::{count, record, repo, sample_workdir, total, Workdir, REGISTRY};

fn assert_balanced(summary: &Value) {
    let stored = total(summary, "stored");
    let rejected = total(summary, "rejected");
    assert_eq!(
        count(summary, &["read"]),
        stored + count(summary, &["duplicates"]) + rejected,
        "every line is stored, a duplicate, or rejected: {summary:#}"
    );
}

#[test]
fn the_shipped_sample_runs_and_reruns_store_nothing_twice() {
    let wd = sample_workdir();
    let lines = fs::read(wd.path("traffic.jsonl"))
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;

    let first = wd.run("traffic.jsonl");
    assert_balanced(&first);
    assert_eq!(count(&first, &["read"]), lines);
    for geo in ["us", "eu", "apac"] {
        assert!(count(&first, &["stored", geo]) > 100, "{geo}: {first:#}");
    }
    assert!(count(&first, &["content_not_logged"]) > 0);
    // The sample redelivers one record.
    assert_eq!(count(&first, &["duplicates"]), 1);
    for code in [
        "malformed_json",
        "missing_field",
        "invalid_field",
        "invalid_utf8",
        "unknown_resource",
        "residency_mismatch",
    ] {
        assert!(count(&first, &["rejected", code]) >= 1, "{code}: {first:#}");
    }
    let rejected = total(&first, "rejected");
    assert_eq!(wd.dead_letters().len() as u64, rejected);

    let stored = total(&first, "stored");
    let second = wd.run("traffic.jsonl");
    assert_balanced(&second);
    assert!(
        second["stored"].as_object().unwrap().is_empty(),
        "{second:#}"
    );
    assert_eq!(count(&second, &["duplicates"]), stored + 1);
    assert_eq!(second["rejected"], first["rejected"]);

    // What is on disk is exactly one record per stored request ID.
    let (registry, stores) = wd.open_stores();
    let mut on_disk = 0;
    for geo in stores.geographies_on_disk().unwrap() {
        let store = stores.geo(&geo).unwrap();
        for resource in registry.iter().filter(|r| r.geography == geo) {
            on_disk += store.request_ids(&resource.id).unwrap().len() as u64;
        }
        assert_eq!(store.len() as u64, count(&first, &["stored", geo.as_str()]));
    }
    assert_eq!(on_disk, stored);
}

#[test]
fn the_text_summary_names_every_bucket() {
    let wd = sample_workdir();
    let text = wd.ok(&["run", "--input", "traffic.jsonl"]);
    for needle in [
        "records read",
        "in eu",
        "content not logged",
        "already stored",
        "residency_mismatch",
        "dead letters in var/dead-letters.jsonl",
        "records/s",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn reads_standard_input() {
    let wd = Workdir::new();
    wd.write(
        "resources.toml",
        "[[resources]]\nid = 'a'\ngeography = 'us'\n",
    );
    let input = format!(
        "{}\n{}\n",
        record("r1", "a", "us", "one"),
        record("r2", "a", "us", "two")
    );
    let (out, _) = wd.ok_with(
        &["run", "--input", "-", "--format", "json"],
        input.as_bytes(),
        &[],
    );
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(count(&summary, &["stored", "us"]), 2);
    let letters = wd.dead_letters();
    assert!(letters.is_empty());
}

#[test]
fn every_rejection_reason_has_one_dead_letter_and_good_records_are_unaffected() {
    let wd = Workdir::new();
    // Put the size limit into the [ingest] section.
    wd.write(
        "vigil.toml",
        crate::util::CONFIG.replace("[ingest]\n", "[ingest]\nmax_record_bytes = 2048\n"),
    );
    wd.write("resources.toml", REGISTRY);
    let good = |i: usize| record(&format!("good-{i}"), "a", "us", "fine");
    let mut bad_type: Value = serde_json::from_str(&record("t1", "a", "us", "x")).unwrap();
    bad_type["model"] = Value::from(7);
    let mut no_ts: Value = serde_json::from_str(&record("t2", "a", "us", "x")).unwrap();
    no_ts.as_object_mut().unwrap().remove("timestamp");
    let mut bad_ts: Value = serde_json::from_str(&record("t3", "a", "us", "x")).unwrap();
    bad_ts["timestamp"] = Value::from("yesterday");
    let mut lines: Vec<Vec<u8>> = vec![
        good(0).into(),
        br#"{"request_id": "cut"#.to_vec(), // 2 malformed_json
        b"{\"request_id\":\"r\",\"prompt\":\"\xff\xfe\"}".to_vec(), // 3 invalid_utf8
        no_ts.to_string().into(),           // 4 missing_field
        bad_type.to_string().into(),        // 5 invalid_field
        bad_ts.to_string().into(),          // 6 invalid_field
        record("big", "a", "us", &"x".repeat(3000)).into(), // 7 oversized
        record("u1", "nobody", "us", "x").into(), // 8 unknown_resource
        record("m1", "a", "eu", "x").into(), // 9 residency_mismatch
        record("k1", "keyed", "eu", "x").into(), // 10 key_unavailable
        record("good-0", "b", "us", "x").into(), // 11 request_id_conflict
        good(1).into(),
        b"".to_vec(), // blank: skipped
        good(2).into(),
    ];
    lines.push(good(0).into()); // 15: a redelivery, not a rejection
    let mut input = lines.join(&b'\n');
    input.push(b'\n');
    wd.write("in.jsonl", &input);

    let summary = wd.run("in.jsonl");
    assert_balanced(&summary);
    assert_eq!(count(&summary, &["read"]), 14);
    assert_eq!(count(&summary, &["stored", "us"]), 3);
    assert_eq!(count(&summary, &["duplicates"]), 1);
    let expected = [
        (2, "malformed_json", None),
        (3, "invalid_utf8", None),
        (4, "missing_field", Some("timestamp")),
        (5, "invalid_field", Some("model")),
        (6, "invalid_field", Some("timestamp")),
        (7, "oversized", None),
        (8, "unknown_resource", Some("resource_id")),
        (9, "residency_mismatch", Some("geography")),
        (10, "key_unavailable", Some("resource_id")),
        (11, "request_id_conflict", Some("request_id")),
    ];
    let letters = wd.dead_letters();
    assert_eq!(letters.len(), expected.len(), "{letters:#?}");
    for (line, code, field) in expected {
        let letter = letters
            .iter()
            .find(|l| l["source"]["line"] == line)
            .unwrap_or_else(|| panic!("no dead letter for line {line}: {letters:#?}"));
        assert_eq!(letter["source"]["file"], "in.jsonl");
        assert_eq!(letter["reason"]["code"], code, "line {line}");
        assert_eq!(letter["reason"]["field"].as_str(), field, "line {line}");
        assert!(!letter["reason"]["message"].as_str().unwrap().is_empty());
        let raw = &lines[line as usize - 1];
        match code {
            "invalid_utf8" => assert_eq!(
                letter["payload_base64"].as_str().unwrap(),
                base64_std(raw),
                "line {line}"
            ),
            // The kept 2048 bytes end inside the prompt, before `resource_id`, and the broken
            // line names none: either may belong to the resource whose content logging is
            // off, so nothing is kept.
            "oversized" | "malformed_json" => assert_eq!(
                letter["payload_withheld"], "resource_not_identified",
                "line {line}"
            ),
            _ => assert_eq!(
                letter["payload"].as_str().unwrap().as_bytes(),
                raw.as_slice(),
                "line {line}"
            ),
        }
        assert_eq!(
            count(&summary, &["rejected", code]),
            expected.iter().filter(|e| e.1 == code).count() as u64
        );
    }
    // The conflicting record did not replace the original.
    let (registry, stores) = wd.open_stores();
    let us = stores.geo(&"us".parse().unwrap()).unwrap();
    let good0 = RequestId::parse("good-0").unwrap();
    let a = registry.get("a").unwrap();
    let stored = us.get(a, &good0).unwrap().unwrap();
    assert_eq!(stored.content.unwrap().prompt.as_deref(), Some("fine"));
    assert_eq!(us.get(registry.get("b").unwrap(), &good0).unwrap(), None);
    // Nothing of the keyed resource was stored in eu.
    let eu = stores.geo(&"eu".parse().unwrap()).unwrap();
    assert!(eu.is_empty());
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_customer_key_that_appears_later_is_used() {
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    wd.write("in.jsonl", record("k1", "keyed", "eu", "x") + "\n");
    assert_eq!(
        count(&wd.run("in.jsonl"), &["rejected", "key_unavailable"]),
        1
    );
    wd.write("keys/keyed.key", "11".repeat(32));
    let summary = wd.run("in.jsonl");
    assert_eq!(count(&summary, &["stored", "eu"]), 1);
}

#[test]
fn retention_above_the_maximum_is_refused() {
    let wd = Workdir::new();
    wd.write(
        "resources.toml",
        "[[resources]]\nid = 'a'\ngeography = 'us'\nretention_days = 45\n",
    );
    wd.write("in.jsonl", "");
    let err = wd.fails(&["run", "--input", "in.jsonl"]);
    assert!(err.contains("retention") && err.contains("45"), "{err}");
}

#[test]
fn a_missing_input_is_a_clear_error() {
    let wd = Workdir::new();
    let err = wd.fails(&["run", "--input", "nope.jsonl"]);
    assert!(err.contains("nope.jsonl"), "{err}");
}

#[test]
fn stats_counts_records_per_resource_without_content() {
    let wd = sample_workdir();
    let summary = wd.run("traffic.jsonl");
    let stats = wd.ok(&["stats"]);
    let eu_line = format!("eu: {} records", count(&summary, &["stored", "eu"]));
    assert!(stats.contains(&eu_line), "{stats}");
    let quiet = stats
        .lines()
        .find(|l| l.contains("northwind-health-eu"))
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(quiet.ends_with("(metadata only)"), "{quiet}");
}

#[test]
fn vigil_generate_reproduces_the_shipped_sample() {
    let wd = Workdir::new();
    let out = wd.ok(&[
        "generate",
        "--output",
        "gen/traffic.jsonl",
        "--resources",
        "gen/resources.toml",
    ]);
    assert!(out.contains("20 resources"), "{out}");
    let sample = repo().join("sample");
    for file in [
        "traffic.jsonl",
        "resources.toml",
        "keys/fabrikam-legal-eu.key",
    ] {
        assert!(
            fs::read(wd.path(&format!("gen/{file}"))).unwrap()
                == fs::read(sample.join(file)).unwrap(),
            "sample/{file} is not what `vigil generate` writes; regenerate it"
        );
    }
}

/// The storage benchmarks' harness works end to end on a small input (the figures themselves
/// are for `vigil bench` runs, not for tests).
#[test]
fn the_storage_benchmarks_run_on_a_small_input() {
    let wd = Workdir::new();
    let report = wd.ok(&["bench", "--records", "3000", "--runs", "1"]);
    for expected in [
        "median:",
        "stored as",
        "layout 3, an entry per record",
        "layout 4, segments",
        "of sled's ceiling",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from:\n{report}"
        );
    }
    let report = wd.ok(&["bench", "--purge", "--records", "3000", "--runs", "1"]);
    for expected in [
        "purged 2999 records",
        "deleting one request first",
        "compaction (online):",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from:\n{report}"
        );
    }
}
