//! The reviewer console in a real browser: headless Chromium (Debian's `/usr/bin/chromium`)
//! driven by Playwright (`playwright-core` from npm, in `tests/console/node_modules`, both
//! installed by `scripts/test.sh`), against the real `vigil serve` on loopback ports over the
//! sample run's cases. The browser part is `tests/console/console.test.mjs`; this side seeds
//! the world, hands it the IDs and tokens, and checks afterwards what the browser changed: the
//! audit log, the stored decisions, the exports. Screenshots of the main screens are written
//! to `<target>/tmp/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::api::{agent, call, code, prompt_of, traffic, world, Server};

const NOTE: &str = "Reviewer note: same slur pattern across the window, confirmed.";

fn console_dir() -> PathBuf {
    crate::util::repo().join("tests/console")
}

/// The screenshots' folder, kept after the test for people to look at.
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

#[test]
fn a_reviewer_requests_a_manager_approves_and_the_reviewer_reads_and_decides_in_chromium() {
    let playwright = console_dir().join("node_modules/playwright-core");
    assert!(
        playwright.exists() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Debian's chromium and tests/console's npm packages: run scripts/test.sh, which installs both"
    );
    let w = world();
    let wd = &w.wd;
    let server = Server::start(wd, &[]);
    let (case, sample, _) = w.case_of(&server, "contoso-chat-eu");
    let (quiet_case, _, _) = w.case_of(&server, "northwind-health-eu");
    let (_, all) = call(
        &agent(wd, None),
        "GET",
        &format!("{}/v1/cases", server.http),
        w.token("rita"),
        None,
    );
    let cases = all["cases"].as_array().unwrap();
    let other = cases
        .iter()
        .find(|c| c["resource_id"] == "contoso-chat-eu" && c["case_id"] != case.as_str())
        .expect("a second contoso case");
    // Prompts of every flagged record: none may show anywhere in the queue.
    let flagged: Vec<String> = cases
        .iter()
        .flat_map(|c| c["sample"].as_array().unwrap())
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let secrets: Vec<String> = traffic(wd)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| flagged.iter().any(|f| r["request_id"] == f.as_str()))
        .filter_map(|r| r["prompt"].as_str().map(str::to_owned))
        .filter(|p| p.chars().count() >= 24)
        .map(|p| p.chars().take(40).collect())
        .collect();
    assert!(!secrets.is_empty());
    let config = json!({
        "http": server.http,
        "https": server.https,
        "tokens": {"rita": w.token("rita"), "uma": w.token("uma"), "max": w.token("max"), "mia": w.token("mia")},
        "cert": wd.path("ws/ws1.pem"),
        "key": wd.path("ws/ws1.key"),
        "workstation": "ws1",
        "case": {"id": case, "sample": sample, "prompt": prompt_of(wd, &sample[0])},
        "case_count": cases.len(),
        "quiet_case": quiet_case,
        // Long enough to approve, reload and open the record on a loaded CI machine first.
        "expiry": {"case": other["case_id"], "request": other["sample"][0], "seconds": 15},
        "note": NOTE,
        "secrets": secrets,
        "screenshots": screenshots(),
    });
    let status = Command::new("node")
        .arg("console.test.mjs")
        .current_dir(console_dir())
        .env("VIGIL_CONSOLE_TEST", config.to_string())
        .status()
        .expect("node runs (the machine's Node.js)");
    assert!(
        status.success(),
        "the browser test failed ({status}); screenshots so far in {}",
        screenshots().display()
    );

    // What the browser did, as the API refuses it elsewhere.
    let decide = |who: &str, case: &str, body: Value| {
        call(
            &agent(wd, None),
            "POST",
            &format!("{}/v1/cases/{case}/decisions", server.http),
            w.token(who),
            Some(body),
        )
    };
    let confirmed = json!({"decision": "abuse_confirmed"});
    assert_eq!(
        code(&decide("rhea", &case, confirmed.clone()).1),
        "no_grant"
    );
    assert_eq!(code(&decide("uma", &case, confirmed.clone()).1), "no_grant");
    let expired_case = other["case_id"].as_str().unwrap();
    assert_eq!(
        code(&decide("rita", expired_case, confirmed.clone()).1),
        "grant_expired"
    );
    assert_eq!(
        code(&decide("adam", &case, confirmed.clone()).1),
        "wrong_role"
    );
    let (status, body) = decide("rita", &case, json!({"decision": "maybe"}));
    assert_eq!((status, code(&body)), (400, "invalid_input"), "{body}");
    // A record of the other case that this one did not sample (a resource's case and its
    // end user's may share records).
    let elsewhere = other["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .find(|r| !sample.iter().any(|s| s == r))
        .expect("the other case sampled a record this one did not");
    let (_, body) = decide(
        "rita",
        &case,
        json!({"decision": "false_positive", "request_id": elsewhere}),
    );
    assert_eq!(code(&body), "not_available", "a record of another case");
    // Notes only for holders of an active grant: rhea sees the decisions, not the note.
    let (_, view) = call(
        &agent(wd, None),
        "GET",
        &format!("{}/v1/cases/{case}", server.http),
        w.token("rhea"),
        None,
    );
    let decisions = view["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{view}");
    assert!(decisions.iter().all(|d| d["note"].is_null()), "{view}");
    server.stop();

    // Audited without the note; exported without the note.
    let audit = crate::api::audit_lines(wd);
    let recorded: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "decision.record" && e["outcome"] == "done")
        .collect();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|e| e["actor"] == "rita"));
    wd.ok(&["export"]);
    let rows = wd.sql(
        "SELECT reviewer, decision, request_id IS NULL AS whole_case FROM decisions ORDER BY decided_at",
    );
    assert_eq!(
        rows,
        [
            "reviewer,decision,whole_case",
            "rita,abuse_confirmed,false",
            "rita,needs_escalation,true"
        ]
    );
    for dir in ["var/audit", "var/exports"] {
        assert!(
            wd.files_containing(dir, NOTE.as_bytes()).is_empty(),
            "the note leaked into {dir}"
        );
    }
}
