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
