//! Privacy at rest and in logs: content never appears in the clear on disk, in logs or in
//! command output; a resource with content logging off leaves no content anywhere.

use crate::util::{record, Workdir, REGISTRY};

/// Records whose prompt and completion carry `marker`, for each resource.
fn marked_input(marker: &str, n: usize) -> String {
    let mut input = String::new();
    for i in 0..n {
        for (res, geo) in [("a", "us"), ("quiet", "eu"), ("keyed", "eu")] {
            input.push_str(&record(
                &format!("{res}-{i}"),
                res,
                geo,
                &format!("{marker} number {i}"),
            ));
            input.push('\n');
        }
    }
    input
}

#[test]
fn no_plaintext_at_rest_in_logs_or_output() {
    let marker = "VIGIL-MARKER-7f3a9c1e";
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    wd.write("keys/keyed.key", "42".repeat(32));
    wd.write("in.jsonl", marked_input(marker, 200));
    let (stdout, stderr) = wd.ok_with(
        &["run", "--input", "in.jsonl", "--format", "json"],
        b"",
        &[("VIGIL_LOG", "trace")],
    );
    assert!(
        !stderr.is_empty(),
        "trace logging produced nothing; the check would be empty"
    );
    assert!(!stdout.contains(marker) && !stderr.contains(marker));
    // Not under the data directory, in any file, in any form sled writes.
    let files = wd.files_under("var/data");
    assert!(files.len() >= 4, "expected sled files, found {files:?}");
    assert_eq!(
        wd.files_containing("var/data", marker.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    // Yet the content is there, encrypted, for the resources that log content.
    let (registry, stores) = wd.open_stores();
    let us = stores.geo(&"us".parse().unwrap()).unwrap();
    let back = us
        .get(registry.get("a").unwrap(), &"a-7".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        back.content.unwrap().prompt.unwrap(),
        format!("{marker} number 7")
    );
    let eu = stores.geo(&"eu".parse().unwrap()).unwrap();
    let keyed = eu
        .get(registry.get("keyed").unwrap(), &"keyed-3".parse().unwrap())
        .unwrap()
        .unwrap();
    assert!(keyed.content.unwrap().completion.unwrap().contains(marker));
}

#[test]
fn content_logging_off_leaves_no_content_anywhere() {
    let marker = "QUIET-MARKER-52b1d0";
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    let mut input = String::new();
    for i in 0..100 {
        input.push_str(&record(
            &format!("q-{i}"),
            "quiet",
            "eu",
            &format!("{marker} {i}"),
        ));
        input.push('\n');
    }
    // Rejected records of the quiet resource: invalid, mis-routed, and too broken to decode.
    let bad_ts = record("q-bad", "quiet", "eu", marker).replace("2026-11-20T10:00:00Z", "later");
    input.push_str(&bad_ts);
    input.push('\n');
    input.push_str(&record("q-us", "quiet", "us", marker));
    input.push('\n');
    let cut = record("q-cut", "quiet", "eu", marker);
    input.push_str(&cut[..cut.len() - 5]);
    input.push('\n');
    // A redelivered record of it that collides with another resource's request ID.
    input.push_str(&record("shared", "keyed", "eu", "other"));
    input.push('\n');
    input.push_str(&record("shared", "quiet", "eu", marker));
    input.push('\n');
    wd.write("keys/keyed.key", "42".repeat(32));
    wd.write("in.jsonl", &input);
    wd.ok_with(
        &["run", "--input", "in.jsonl"],
        b"",
        &[("VIGIL_LOG", "trace")],
    );

    // The only copy of the marker is the input file itself.
    let holders = wd.files_containing("", marker.as_bytes());
    assert_eq!(holders, vec![wd.path("in.jsonl")]);
    let letters = wd.dead_letters();
    assert_eq!(letters.len(), 4, "{letters:#?}");
    for letter in &letters {
        assert_eq!(
            letter["payload_withheld"], "content_logging_off",
            "{letter:#}"
        );
        assert!(letter.get("payload").is_none());
    }
    // Metadata is kept; content is not.
    let (registry, stores) = wd.open_stores();
    let eu = stores.geo(&"eu".parse().unwrap()).unwrap();
    let quiet = registry.get("quiet").unwrap();
    let stored = eu.get(quiet, &"q-5".parse().unwrap()).unwrap().unwrap();
    assert_eq!(stored.content, None);
    assert_eq!(stored.meta.end_user.as_deref(), Some("user-1"));
    assert_eq!(eu.request_ids(&quiet.id).unwrap().len(), 100);
}

#[test]
fn the_data_directory_and_dead_letters_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    wd.write(
        "in.jsonl",
        "{broken\n".to_owned() + &record("l1", "a", "us", "x") + "\n",
    );
    wd.ok(&["run", "--input", "in.jsonl"]);
    let mode = |rel: &str| {
        std::fs::metadata(wd.path(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("var/data"), 0o700);
    assert_eq!(mode("var/dead-letters.jsonl"), 0o600);
    assert_eq!(mode("keys/master.key"), 0o600);
}

#[test]
fn records_too_broken_to_attribute_keep_no_content_of_quiet_resources() {
    let marker = "HIDDEN-MARKER-0c44e2";
    let wd = Workdir::new();
    wd.write(
        "vigil.toml",
        crate::util::CONFIG.replace("[ingest]\n", "[ingest]\nmax_record_bytes = 4096\n"),
    );
    wd.write("resources.toml", REGISTRY);
    // Oversized, with the prompt before the resource ID (keys are written in sorted order).
    let long = record(
        "q-long",
        "quiet",
        "eu",
        &format!("{marker} {}", "x".repeat(5000)),
    );
    assert!(long.find("\"prompt\"") < long.find("\"resource_id\""));
    // Cut off, with the resource ID escaped.
    let escaped = format!(r#"{{"resource_id":"quie\u0074","prompt":"{marker} and then"#);
    wd.write("in.jsonl", format!("{long}\n{escaped}\n"));
    wd.ok(&["run", "--input", "in.jsonl"]);
    assert_eq!(
        wd.files_containing("", marker.as_bytes()),
        vec![wd.path("in.jsonl")]
    );
    let letters = wd.dead_letters();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["payload_withheld"], "resource_not_identified");
    assert_eq!(letters[1]["payload_withheld"], "content_logging_off");
}

#[test]
fn turning_content_logging_off_destroys_stored_content() {
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    wd.write(
        "in.jsonl",
        (0..20)
            .map(|i| record(&format!("b-{i}"), "b", "us", "said while logging was on") + "\n")
            .collect::<String>(),
    );
    wd.ok(&["run", "--input", "in.jsonl"]);
    let (_, stderr) = wd.ok_with(
        &["resource", "update", "b", "--content-logging", "false"],
        b"",
        &[],
    );
    assert!(
        stderr.contains("destroyed the stored content of 20 records"),
        "{stderr}"
    );
    let kept = wd.read_stored("b", "b-3", |_| ()).unwrap().unwrap();
    assert_eq!(kept.content, None, "metadata stays, content goes");
    // Even with logging turned back on, the old content cannot come back: its key is gone.
    wd.ok(&["resource", "update", "b", "--content-logging", "true"]);
    let kept = wd.read_stored("b", "b-3", |_| ()).unwrap().unwrap();
    assert_eq!(kept.content, None);
}

#[test]
fn a_registry_edited_while_vigil_was_away_is_applied_when_the_next_run_starts() {
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    wd.write(
        "in.jsonl",
        record("b-1", "b", "us", "on the record") + "\n" + &record("a-1", "a", "us", "mine") + "\n",
    );
    wd.ok(&["run", "--input", "in.jsonl"]);
    // Edited by hand: content logging off for b, and a customer key for a.
    let edited = REGISTRY
        .replace(
            "id = \"b\"\ngeography = \"us\"",
            "id = \"b\"\ngeography = \"us\"\ncontent_logging = false",
        )
        .replace(
            "id = \"a\"\ngeography = \"us\"",
            "id = \"a\"\ngeography = \"us\"\ncustomer_key = \"file:keys/a.key\"",
        );
    wd.write("resources.toml", &edited);
    wd.write("keys/a.key", "3c".repeat(32));
    wd.write("empty.jsonl", "");
    let summary = wd.run("empty.jsonl");
    assert_eq!(summary["content_forgotten"]["b"], 1, "{summary:#}");
    // Revoke a's new key: its old content is unreadable even to a master-key reader.
    std::fs::remove_file(wd.path("keys/a.key")).unwrap();
    let kept = wd.read_stored("b", "b-1", |_| ()).unwrap().unwrap();
    assert_eq!(kept.content, None);
    assert!(wd.read_stored("a", "a-1", without_customer_key).is_err());
}

#[test]
fn a_new_customer_key_wraps_existing_content_before_any_new_traffic() {
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    wd.write(
        "in.jsonl",
        record("a-1", "a", "us", "before the key") + "\n",
    );
    wd.ok(&["run", "--input", "in.jsonl"]);
    wd.write("keys/a.key", "07".repeat(32));
    wd.ok(&[
        "resource",
        "update",
        "a",
        "--customer-key",
        "file:keys/a.key",
    ]);
    // Revoke the customer key: the content that was there before it is unreadable too, even
    // to a reader that asks for the master key: the data key is now wrapped by the customer's.
    std::fs::remove_file(wd.path("keys/a.key")).unwrap();
    assert!(wd.read_stored("a", "a-1", without_customer_key).is_err());
}

/// A reader's view of a resource as if it had no customer key (only the master key).
fn without_customer_key(resource: &mut vigil_core::Resource) {
    resource.customer_key = None;
}

#[test]
fn a_lost_or_replaced_master_key_stops_the_run_before_anything_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let wd = Workdir::new();
    wd.write("resources.toml", REGISTRY);
    wd.write("in.jsonl", record("a-1", "a", "us", "x") + "\n");
    wd.ok(&["run", "--input", "in.jsonl"]);
    let key = std::fs::read(wd.path("keys/master.key")).unwrap();
    wd.write("more.jsonl", record("b-1", "b", "us", "y") + "\n");

    std::fs::remove_file(wd.path("keys/master.key")).unwrap();
    let err = wd.fails(&["run", "--input", "more.jsonl"]);
    assert!(err.contains("missing"), "{err}");
    assert!(
        !wd.path("keys/master.key").exists(),
        "no new master key may be made"
    );

    wd.write("keys/master.key", "5a".repeat(32));
    std::fs::set_permissions(
        wd.path("keys/master.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let err = wd.fails(&["run", "--input", "more.jsonl"]);
    assert!(err.contains("not the key"), "{err}");

    wd.write("keys/master.key", key);
    std::fs::set_permissions(
        wd.path("keys/master.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let summary = wd.run("more.jsonl");
    assert_eq!(summary["stored"]["us"], 1);
}
