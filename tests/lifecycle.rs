//! The storage lifecycle end to end, through the real `vigil` binary: retention purges with a
//! shifted clock (`VIGIL_NOW`), a purge killed midway and run again, customer deletion, and
//! the Parquet exports and `vigil sql` following all of it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::util::{count, record, total, Workdir};

const EU: &str = "contoso-chat-eu";
const US: &str = "contoso-chat-us";

/// An RFC 3339 instant `days` days ago.
fn days_ago(days: i64) -> String {
    (OffsetDateTime::now_utc() - Duration::days(days))
        .format(&Rfc3339)
        .unwrap()
}

/// A working directory with the sample registry and its keys.
fn workdir() -> Workdir {
    let wd = crate::util::sample_workdir();
    // Detection is not what these tests are about; it only slows the runs down.
    wd.write(
        "vigil.toml",
        format!(
            "{}[detectors]\nenabled = false\n[abuse]\nenabled = false\n",
            crate::util::CONFIG
        ),
    );
    wd
}

/// `n` records named `<tag>-<i>` for `resource` in `geography`, with `tag` in the prompt.
fn records(tag: &str, resource: &str, geography: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            record(
                &format!("{tag}-{i:06}"),
                resource,
                geography,
                &format!("{tag} prompt {i}"),
            ) + "\n"
        })
        .collect()
}

/// Runs vigil with `args`, logging at `level`, and kills it with SIGKILL as soon as it logs a
/// line containing `needle`; fails if it ended by itself first.
fn kill_9_at(wd: &Workdir, args: &[&str], level: &str, needle: &str) {
    let mut child = wd
        .command(args)
        .env("VIGIL_LOG", level)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains(needle) {
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "vigil {args:?} ended by itself before {needle:?}: {status}"
    );
}

/// Every record `resource` has in its store, checked to decrypt with its content; returns
/// their request IDs, each once.
fn all_decrypt(wd: &Workdir, resource: &str) -> Vec<vigil_core::RequestId> {
    let (registry, stores) = wd.open_stores();
    let r = registry.get(resource).unwrap();
    let store = stores.geo(&r.geography).unwrap();
    let ids = store.request_ids(&r.id).unwrap();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a request ID is stored twice");
    for id in &ids {
        let record = store.get(r, id).unwrap().expect("listed, so stored");
        assert!(record.content.is_some(), "{id} lost its content");
    }
    ids
}

/// `vigil run --drill` over `input` as of `VIGIL_NOW = now`.
fn run_at(wd: &Workdir, input: &str, now: &str) -> Value {
    let args = ["run", "--drill", "--input", input, "--format", "json"];
    wd.summary(&args, &[("VIGIL_NOW", now)])
}

fn stored(wd: &Workdir, resource: &str) -> usize {
    let (registry, stores) = wd.open_stores();
    let r = registry.get(resource).unwrap();
    stores.geo(&r.geography).unwrap().count(&r.id).unwrap()
}

#[test]
fn a_run_purges_what_expired_while_it_ingests_and_the_exports_follow() {
    let wd = workdir();
    wd.write("old.jsonl", records("oldmarker", EU, "eu", 300));
    wd.write(
        "new.jsonl",
        records("newmarker", EU, "eu", 200) + &records("usnew", US, "us", 50),
    );
    let first = run_at(&wd, "old.jsonl", &days_ago(40));
    assert_eq!(total(&first, "stored"), 300);
    assert_eq!(wd.sql("SELECT count(*) AS n FROM records"), ["n", "300"]);

    // Forty days later the run's purge removes the old records while it stores new ones.
    let second = run_at(&wd, "new.jsonl", &days_ago(0));
    assert_eq!(total(&second, "stored"), 250);
    let purged: u64 = second["lifecycle"]["purged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["records"].as_u64().unwrap())
        .sum();
    assert_eq!(purged, 300);
    // The run also compacted the store the purge left old entries in, while it ingested: no
    // byte of a purged record is left, without stopping for `vigil purge`.
    assert!(second["lifecycle"]["compactions"].as_u64().unwrap() >= 1);
    assert!(second["lifecycle"]["bytes_reclaimed"].as_u64().unwrap() > 0);
    assert!(wd.files_containing("var/data", b"oldmarker").is_empty());
    assert_eq!(stored(&wd, EU), 200);
    assert_eq!(stored(&wd, US), 50);
    assert!(wd
        .read_stored(EU, "oldmarker-000007", |_| {})
        .unwrap()
        .is_none());
    let kept = wd
        .read_stored(EU, "newmarker-000007", |_| {})
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.content.unwrap().prompt.as_deref(),
        Some("newmarker prompt 7")
    );

    // The exports hold exactly what the stores hold, per geography and day.
    let today = OffsetDateTime::now_utc().date().to_string();
    assert_eq!(
        wd.sql("SELECT geography, day, count(*) AS n FROM records GROUP BY geography, day ORDER BY geography"),
        ["geography,day,n".to_owned(), format!("eu,{today},200"), format!("us,{today},50")]
    );
    assert!(wd.files_containing("var/exports", b"oldmarker").is_empty());

    // After `vigil purge` compacts, no byte of a purged record is left in the data directory.
    let (report, _) = wd.ok_with(&["purge", "--format", "json"], b"", &[]);
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["compacted"].as_array().unwrap().len(), 2);
    assert!(wd.files_containing("var/data", b"oldmarker").is_empty());
    assert!(!wd
        .files_containing("var/data", b"newmarker-000199")
        .is_empty());
    // Content is never in the exports, whatever was purged.
    assert!(wd.files_containing("var/exports", b"prompt").is_empty());
}

#[test]
fn a_purge_killed_midway_is_finished_by_the_next_one() {
    let wd = workdir();
    wd.write("old.jsonl", records("old", EU, "eu", 30_000));
    wd.write("recent.jsonl", records("recent", EU, "eu", 100));
    run_at(&wd, "old.jsonl", &days_ago(45));
    run_at(&wd, "recent.jsonl", &days_ago(20));
    // The second run's purge saw nothing expired: the old records were 25 days old then.
    assert_eq!(stored(&wd, EU), 30_100);

    kill_9_at(&wd, &["purge"], "info", "Purge progress.");
    // Killed midway: the expired day's key is gone (flushed before anything else), so what
    // is left of it is unreadable already; removals not yet flushed are simply redone.
    let left = stored(&wd, EU);
    assert!(
        left > 100,
        "the purge finished before the kill: {left} records left"
    );
    assert!(wd.read_stored(EU, "old-029999", |_| {}).is_err());

    let (report, _) = wd.ok_with(&["purge", "--format", "json"], b"", &[]);
    let report: Value = serde_json::from_str(&report).unwrap();
    let eu = report["purged"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["geography"] == "eu")
        .unwrap();
    assert_eq!(eu["records"].as_u64().unwrap() as usize, left - 100);
    assert!(eu["complete"].as_bool().unwrap());
    assert_eq!(stored(&wd, EU), 100);
    assert!(wd
        .read_stored(EU, "recent-000042", |_| {})
        .unwrap()
        .is_some());
    assert_eq!(wd.sql("SELECT count(*) AS n FROM records"), ["n", "100"]);
}

#[test]
fn a_request_deletion_killed_while_its_day_is_re_keyed_is_finished_at_the_next_start() {
    let wd = workdir();
    wd.write("day.jsonl", records("day", EU, "eu", 30_000));
    run_at(&wd, "day.jsonl", &days_ago(0));
    kill_9_at(
        &wd,
        &["delete", "request", EU, "day-000042"],
        "debug",
        "Re-key progress.",
    );
    // The next open finishes the re-key: the deleted record (its segment went first) is gone,
    // every other one decrypts, none is there twice.
    let ids = all_decrypt(&wd, EU);
    assert_eq!(ids.len(), 29_999);
    assert!(wd.read_stored(EU, "day-000042", |_| {}).unwrap().is_none());
    let out = wd.summary(&["delete", "request", EU, "day-000042"], &[]);
    assert_eq!(out["found"], false);
}

#[test]
fn a_compaction_killed_midway_leaves_the_store_whole() {
    let wd = workdir();
    wd.write("old.jsonl", records("oldmarker", EU, "eu", 5_000));
    wd.write("new.jsonl", records("newmarker", EU, "eu", 30_000));
    run_at(&wd, "old.jsonl", &days_ago(45));
    run_at(&wd, "new.jsonl", &days_ago(0));
    kill_9_at(&wd, &["purge"], "debug", "Compaction progress.");
    // The next open tidies the copy away; the purge held, and every kept record decrypts.
    let ids = all_decrypt(&wd, EU);
    assert_eq!(ids.len(), 30_000);
    assert!(ids.iter().all(|id| id.as_str().starts_with("newmarker")));
    let generations: Vec<_> = std::fs::read_dir(wd.path("var/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("eu.gen"))
        .collect();
    assert!(generations.len() <= 1, "{generations:?}");
    // Compacting again finishes the job: no byte of a purged record is left (the run's online
    // compaction had already removed them; the killed one brought none back).
    wd.ok(&["purge"]);
    assert!(wd.files_containing("var/data", b"oldmarker").is_empty());
    assert_eq!(stored(&wd, EU), 30_000);
}

#[test]
fn a_shifted_clock_is_refused_outside_a_drill_and_marked_in_the_audit_log() {
    let wd = workdir();
    wd.write("in.jsonl", records("drill", EU, "eu", 3));
    let now = days_ago(40);
    for args in [&["run", "--input", "in.jsonl"][..], &["serve"], &["purge"]] {
        let out = wd.output(args, b"", &[("VIGIL_NOW", &now)]);
        assert!(
            !out.status.success(),
            "vigil {args:?} started with VIGIL_NOW"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("VIGIL_NOW is set") && stderr.contains("--drill"),
            "{stderr}"
        );
    }
    assert_eq!(total(&run_at(&wd, "in.jsonl", &now), "stored"), 3);
    // An audited command under the shifted clock: its entry is marked as a drill.
    wd.ok_with(
        &["delete", "request", EU, "drill-000001"],
        b"",
        &[("VIGIL_NOW", &now)],
    );
    wd.ok(&["delete", "request", EU, "drill-000002"]);
    let log = std::fs::read_to_string(wd.path("var/audit/audit.jsonl")).unwrap();
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_request = |id: &str| {
        entries
            .iter()
            .find(|e| e["request_id"] == id)
            .unwrap_or_else(|| panic!("no entry for {id}: {log}"))
            .clone()
    };
    assert_eq!(by_request("drill-000001")["drill"], true);
    assert_eq!(by_request("drill-000002").get("drill"), None);
    assert!(wd.ok(&["audit", "verify"]).contains("chain intact"));
}

#[test]
fn customers_delete_one_request_or_a_whole_resource() {
    let wd = workdir();
    wd.write(
        "in.jsonl",
        records("eu", EU, "eu", 20)
            + &records("us", US, "us", 20)
            + &records("ski", "alpine-ski-eu", "eu", 5),
    );
    let summary = run_at(&wd, "in.jsonl", &days_ago(0));
    assert_eq!(total(&summary, "stored"), 45);

    // Request IDs are unique per geography, not per customer: named with another resource of
    // the same geography, the record is not found and stays; an unknown resource is refused.
    let other = wd.summary(&["delete", "request", "alpine-ski-eu", "eu-000003"], &[]);
    assert_eq!(other["found"], false);
    assert!(wd.read_stored(EU, "eu-000003", |_| {}).unwrap().is_some());
    let unknown = wd.fails(&["delete", "request", "no-such-resource", "eu-000003"]);
    assert!(
        unknown.contains("resource no-such-resource is not registered"),
        "{unknown}"
    );
    let out = wd.summary(&["delete", "request", EU, "eu-000003"], &[]);
    assert_eq!(out["resource_id"], EU);
    assert!(wd.read_stored(EU, "eu-000003", |_| {}).unwrap().is_none());
    assert!(wd
        .read_stored(EU, "eu-000004", |_| {})
        .unwrap()
        .unwrap()
        .content
        .is_some());
    assert_eq!(stored(&wd, EU), 19);
    // Deleting it again finds nothing and is not an error.
    let again = wd.summary(&["delete", "request", EU, "eu-000003"], &[]);
    assert_eq!(again["found"], false);

    let out = wd.summary(&["delete", "resource", US], &[]);
    assert_eq!(count(&out, &["records"]), 20);
    assert_eq!(stored(&wd, US), 0);
    assert!(wd.read_stored(US, "us-000001", |_| {}).unwrap().is_none());
    // Other resources are untouched, and the exports agree at once.
    assert_eq!(stored(&wd, EU), 19);
    assert_eq!(stored(&wd, "alpine-ski-eu"), 5);
    assert_eq!(
        wd.sql("SELECT resource_id, count(*) AS n FROM records GROUP BY resource_id ORDER BY resource_id"),
        ["resource_id,n", "alpine-ski-eu,5", "contoso-chat-eu,19"]
    );
    assert!(wd
        .fails(&["delete", "resource", "no-such-resource"])
        .contains("not registered"));
    // The resource stays registered and stores new records.
    wd.write("more.jsonl", records("us2", US, "us", 3));
    assert_eq!(total(&run_at(&wd, "more.jsonl", &days_ago(0)), "stored"), 3);
}

#[test]
fn sql_is_read_only_and_speaks_csv_json_and_tables() {
    let wd = workdir();
    // Before anything is exported every table exists, empty.
    for table in ["records", "detections", "cases", "verdicts"] {
        assert_eq!(
            wd.sql(&format!("SELECT count(*) AS n FROM {table}")),
            ["n", "0"]
        );
    }
    wd.write("in.jsonl", records("r", EU, "eu", 4));
    run_at(&wd, "in.jsonl", &days_ago(0));
    let json = wd.ok(&[
        "sql",
        "SELECT request_id FROM records ORDER BY request_id LIMIT 2",
        "--format",
        "json",
    ]);
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            serde_json::json!({"request_id": "r-000000"}),
            serde_json::json!({"request_id": "r-000001"})
        ]
    );
    let table = wd.ok(&["sql", "SELECT count(*) AS n FROM records"]);
    assert!(
        table.contains("| n |") && table.contains("| 4 |"),
        "{table}"
    );
    for refused in [
        "DROP TABLE records",
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO records SELECT * FROM records",
        "COPY (SELECT 1) TO 'out.csv'",
    ] {
        wd.fails(&["sql", refused]);
    }
    assert!(!wd.path("out.csv").exists());
    let err = wd.fails(&["sql", "SELECT prompt FROM records"]);
    assert!(err.contains("prompt"), "names the unknown column: {err}");
}
