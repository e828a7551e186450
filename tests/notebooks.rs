//! The analyst notebooks on a real export: vigil runs the shipped sample (with the local LLM
//! reviewer, so the funnel has verdicts), a reviewer asks for access, a manager approves and
//! the reviewer records decisions through the real API, `vigil export` writes the Parquet
//! tables, and `scripts/run-notebooks.py` executes every notebook in `notebooks/` with nbclient
//! in the project's virtual environment (`scripts/test.sh` installs the pinned requirements).
//! A cell that raises fails the test, and so does a committed notebook with outputs.

use std::process::Command;

use serde_json::json;

use crate::api::{call, config_with_api, principal, Server};
use crate::util::{repo, sample_workdir};

fn run_notebooks(args: &[&str]) {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "the notebooks need the project's virtual environment: run scripts/test.sh (it runs scripts/setup-python.sh --tests --notebooks)"
    );
    let status = Command::new(python)
        .arg(repo().join("scripts/run-notebooks.py"))
        .args(args)
        .current_dir(repo())
        .status()
        .expect("python runs");
    assert!(status.success(), "run-notebooks.py {args:?}: {status}");
}

#[test]
fn committed_notebooks_carry_no_outputs() {
    run_notebooks(&["--check-stripped"]);
}

#[test]
fn every_notebook_runs_on_the_sample_exports() {
    let wd = sample_workdir();
    // Plain HTTP on loopback, as `api.plain_http` allows.
    wd.write("vigil.toml", config_with_api("plain_http = true\n"));
    wd.ok_with(
        &["run", "--input", "traffic.jsonl"],
        b"",
        &[("VIGIL_REVIEW__ENABLED", "true")],
    );
    let tokens: std::collections::HashMap<&str, String> =
        [("rita", "reviewer"), ("max", "manager")]
            .into_iter()
            .map(|(name, role)| (name, principal(&wd, name, role, "eea", &[])))
            .collect();

    // One case through the whole funnel: asked, approved, decided per record and as a whole.
    let server = Server::start(&wd, &[]);
    assert!(server.http.starts_with("http://"), "{}", server.http);
    let http = ureq::Agent::new();
    let api = |who: &str, method: &str, path: &str, body: Option<serde_json::Value>| {
        let (status, body) = call(
            &http,
            method,
            &format!("{}{path}", server.http),
            Some(&tokens[who]),
            body,
        );
        assert!(status < 300, "{method} {path}: {status} {body}");
        body
    };
    let cases = api("rita", "GET", "/v1/cases", None);
    let case = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["resource_id"] == "contoso-chat-eu")
        .expect("a contoso case")
        .clone();
    let id = case["case_id"].as_str().unwrap();
    let asked = api(
        "rita",
        "POST",
        &format!("/v1/cases/{id}/access-requests"),
        Some(json!({"reason": "funnel walk-through"})),
    );
    let grant = asked["id"].as_str().unwrap();
    api(
        "max",
        "POST",
        &format!("/v1/access-requests/{grant}/approve"),
        None,
    );
    for (request, decision) in [
        (Some(&case["sample"][0]), "false_positive"),
        (Some(&case["sample"][1]), "abuse_confirmed"),
        (None, "needs_escalation"),
    ] {
        api(
            "rita",
            "POST",
            &format!("/v1/cases/{id}/decisions"),
            Some(json!({"request_id": request, "decision": decision, "note": "n"})),
        );
    }
    server.stop();
    wd.ok(&["export"]);
    assert_eq!(wd.sql("SELECT count(*) AS n FROM decisions"), ["n", "3"]);

    let exports = wd.path("var/exports");
    run_notebooks(&["--exports", exports.to_str().unwrap()]);
}
