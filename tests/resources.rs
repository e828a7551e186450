//! `vigil resource`: the registry from the command line.

use serde_json::Value;

use crate::util::Workdir;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn add_show_update_list() {
    let wd = Workdir::new();
    let added = json(&wd.ok(&["resource", "add", "acme-eu", "--geography", "eu"]));
    assert_eq!(added["geography"], "eu");
    assert_eq!(added["content_logging"], true);
    assert_eq!(added["capabilities"], serde_json::json!([]));

    let off = json(&wd.ok(&[
        "resource",
        "update",
        "acme-eu",
        "--content-logging",
        "false",
    ]));
    assert_eq!(
        off["capabilities"],
        serde_json::json!([{"name": "ContentLogging", "value": "false"}])
    );
    let shown = json(&wd.ok(&["resource", "show", "acme-eu"]));
    assert_eq!(shown, off);

    let keyed = json(&wd.ok(&[
        "resource",
        "update",
        "acme-eu",
        "--content-logging",
        "true",
        "--customer-key",
        "file:keys/acme.key",
        "--retention-days",
        "7",
    ]));
    assert_eq!(keyed["capabilities"], serde_json::json!([]));
    assert_eq!(keyed["customer_key"], "file:keys/acme.key");
    assert_eq!(keyed["retention_days"], 7);
    let cleared = json(&wd.ok(&[
        "resource",
        "update",
        "acme-eu",
        "--no-customer-key",
        "--no-retention-override",
    ]));
    assert_eq!(cleared["customer_key"], Value::Null);
    assert_eq!(cleared["retention_days"], Value::Null);

    wd.ok(&["resource", "add", "acme-us", "--geography", "us"]);
    let list = wd.ok(&["resource", "list"]);
    let ids: Vec<String> = list
        .lines()
        .map(|l| json(l)["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["acme-eu", "acme-us"]);
    // The file is the registry `vigil run` reads.
    let text = std::fs::read_to_string(wd.path("resources.toml")).unwrap();
    assert!(text.contains("id = \"acme-us\""), "{text}");
}

#[test]
fn refusals_name_the_problem() {
    let wd = Workdir::new();
    wd.ok(&["resource", "add", "acme", "--geography", "eu"]);
    assert!(wd
        .fails(&["resource", "add", "acme", "--geography", "us"])
        .contains("already registered"));
    assert!(wd
        .fails(&["resource", "show", "ghost"])
        .contains("not registered"));
    assert!(wd
        .fails(&["resource", "add", "bad id", "--geography", "eu"])
        .contains("resource ID"));
    assert!(wd
        .fails(&["resource", "add", "x", "--geography", "EU"])
        .contains("geography"));
    assert!(wd
        .fails(&["resource", "update", "acme", "--retention-days", "31"])
        .contains("retention"));
    assert!(wd
        .fails(&["resource", "update", "acme", "--customer-key", "vault:x"])
        .contains("file:PATH"));
}

use crate::util::{count, Feeding};

#[test]
fn content_logging_turned_off_during_a_run_stops_content_at_once() {
    let wd = Workdir::new();
    wd.write(
        "resources.toml",
        "[[resources]]\nid = 'quiet-eu'\ngeography = 'eu'\n\n[[resources]]\nid = 'loud-eu'\ngeography = 'eu'\n",
    );
    let mut run = Feeding::start(&wd, &[]);
    run.send("quiet-eu", &["q1", "q2"]);
    run.send("loud-eu", &["l1"]);
    // The run holds the stores: the running vigil applies the change, and says so.
    let (_, stderr) = wd.ok_with(
        &[
            "resource",
            "update",
            "quiet-eu",
            "--content-logging",
            "false",
        ],
        b"",
        &[],
    );
    assert!(
        stderr.contains("the running vigil process applied the change"),
        "{stderr}"
    );
    run.send("quiet-eu", &["q3", "q4"]);
    run.send("loud-eu", &["l2"]);
    let summary = run.finish();
    assert_eq!(count(&summary, &["stored", "eu"]), 6, "{summary:#}");

    for id in ["q1", "q2", "q3", "q4"] {
        let stored = wd.read_stored("quiet-eu", id, |_| {}).unwrap().unwrap();
        assert!(stored.content.is_none(), "{id} kept its content");
    }
    // What was stored before the change is destroyed too: not even its key opens it.
    for id in ["q1", "q2"] {
        let sealed = wd.read_stored("quiet-eu", id, |r| r.content_logging = true);
        assert!(
            !sealed.is_ok_and(|r| r.is_some_and(|r| r.content.is_some())),
            "{id}'s content survives"
        );
    }
    for id in ["l1", "l2"] {
        let stored = wd.read_stored("loud-eu", id, |_| {}).unwrap().unwrap();
        assert_eq!(stored.content.unwrap().prompt, Some(format!("MARKER-{id}")));
    }
}

#[test]
fn a_customer_key_revoked_during_a_run_stops_sealing() {
    let wd = Workdir::new();
    wd.write(
        "resources.toml",
        "[[resources]]\nid = 'keyed-eu'\ngeography = 'eu'\ncustomer_key = 'file:keys/keyed.key'\n",
    );
    wd.write("keys/keyed.key", "42".repeat(32));
    let mut run = Feeding::start(&wd, &[("VIGIL_STORAGE__CUSTOMER_KEY_CHECK_SECS", "1")]);
    run.send("keyed-eu", &["k1", "k2"]);
    std::fs::remove_file(wd.path("keys/keyed.key")).unwrap();
    run.send("keyed-eu", &["k3", "k4"]);
    let summary = run.finish();
    assert_eq!(count(&summary, &["stored", "eu"]), 2, "{summary:#}");
    assert_eq!(
        count(&summary, &["rejected", "key_unavailable"]),
        2,
        "{summary:#}"
    );
    // The first two are stored, under a key that is gone.
    let without = wd.read_stored("keyed-eu", "k1", |_| {});
    assert!(without.is_err(), "{without:?}");
    wd.write("keys/keyed.key", "42".repeat(32));
    let k1 = wd.read_stored("keyed-eu", "k1", |_| {}).unwrap().unwrap();
    assert_eq!(k1.content.unwrap().prompt.as_deref(), Some("MARKER-k1"));
}
