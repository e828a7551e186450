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
