//! The reviewer console in a real browser: headless Chromium (Debian's `/usr/bin/chromium`)
//! driven by Playwright (`playwright-core` from npm, in `tests/console/node_modules`, both
//! installed by `scripts/test.sh`), against the real `vigil serve` on loopback ports over the
//! sample run's cases. The browser part is `tests/console/console.test.mjs`; this side seeds
//! the world, hands it the IDs and tokens, and checks afterwards what the browser changed: the
//! audit log, the stored decisions, the exports. Screenshots of the main screens are written
//! to `<target>/tmp/console-screenshots/`.
//!
//! `tests/console/workstation.test.mjs` drives a Chromium that holds the workstation
//! certificate itself, in an NSS store this side prepares with `certutil` and `pk12util`
//! (Debian's libnss3-tools) and `openssl`: the way a real workstation's browser presents it,
//! where `console.test.mjs`'s contexts get it from Playwright, which makes the TLS connection
//! for the browser and so never shows what the browser itself would send.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::api::{agent, call, code, prompt_of, traffic, world, Server};

const NOTE: &str = "Reviewer note: same slur pattern across the window, confirmed.";

fn console_dir() -> PathBuf {
    crate::util::repo().join("tests/console")
}

/// The screenshots' folder, kept after the test for people to look at.
/// Runs the browser test `script` with `config`.
fn run_script(
    wd: &crate::util::Workdir,
    script: &str,
    config: &serde_json::Value,
) -> std::process::ExitStatus {
    Command::new("node")
        .arg(script)
        .current_dir(console_dir())
        .env("VIGIL_CONSOLE_TEST", config.to_string())
        // The metadata listener's TLS certificate is vigil's CA's, as the workstation's.
        .env("NODE_EXTRA_CA_CERTS", wd.path("ws/ca.pem"))
        .status()
        .expect("node runs (the machine's Node.js)")
}

/// Debian's Chromium and the npm packages that drive it (`scripts/test.sh` installs both).
fn require_a_browser() {
    let playwright = console_dir().join("node_modules/playwright-core");
    assert!(
        playwright.exists() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Debian's chromium and tests/console's npm packages: run scripts/test.sh, which installs both"
    );
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

#[test]
fn a_reviewer_requests_a_manager_approves_and_the_reviewer_reads_and_decides_in_chromium() {
    require_a_browser();
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
    let status = run_script(wd, "console.test.mjs", &config);
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

/// A temporary HOME whose `.pki/nssdb` (where Chromium on Linux keeps certificates) trusts
/// vigil's workstation CA and holds workstation `ws`'s certificate and private key.
fn nss_home(wd: &crate::util::Workdir, ws: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    let p12 = home.path().join(format!("{ws}.p12"));
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("{program} runs ({e}): scripts/test.sh installs it (libnss3-tools, openssl)")
            });
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("certutil", &["-N", "-d", &db, "--empty-password"]);
    // The CA trusted to identify servers ("C,,"), as an operator would install it.
    let ca = wd.path("ws/ca.pem");
    let ca = ca.to_str().unwrap();
    run(
        "certutil",
        &[
            "-A",
            "-d",
            &db,
            "-n",
            "vigil workstation CA",
            "-t",
            "C,,",
            "-i",
            ca,
        ],
    );
    let (cert, key) = (
        wd.path(&format!("ws/{ws}.pem")),
        wd.path(&format!("ws/{ws}.key")),
    );
    run(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-in",
            cert.to_str().unwrap(),
            "-inkey",
            key.to_str().unwrap(),
            "-name",
            ws,
            "-passout",
            "pass:",
            "-out",
            p12.to_str().unwrap(),
        ],
    );
    run(
        "pk12util",
        &["-i", p12.to_str().unwrap(), "-d", &db, "-W", ""],
    );
    std::fs::remove_file(&p12).unwrap();
    home
}

#[test]
fn in_chromium_with_its_own_certificate_revocation_closes_the_record_and_links_ask_first() {
    require_a_browser();
    let w = world();
    let wd = &w.wd;
    let server = Server::start(wd, &[]);
    let (case, sample, _) = w.case_of(&server, "contoso-chat-eu");
    // rita asks, max approves: an active grant for the browser to read under.
    let grant = w.grant(
        &server,
        "rita",
        "max",
        &case,
        "Recurring flags; confirm before escalation.",
    );
    // One record read with the browser's certificate, one left open until the revocation.
    let (cert_read, revoked_read) = (sample[0].clone(), sample[1].clone());
    let home = nss_home(wd, "ws1");
    let config = json!({
        "http": server.http,
        "https": server.https,
        "tokens": {"rita": w.token("rita"), "rhea": w.token("rhea"), "max": w.token("max")},
        "nss_home": home.path(),
        "ca_name": "vigil workstation CA",
        "workstation": "ws1",
        "case": {
            "id": case,
            "grant": grant,
            "reads": [cert_read, revoked_read],
            "prompts": {
                cert_read.as_str(): prompt_of(wd, &cert_read),
                revoked_read.as_str(): prompt_of(wd, &revoked_read),
            },
        },
        // The console polls the grant every 2 s; a loaded machine gets some slack.
        "close_within_ms": 8000,
        "screenshots": screenshots(),
    });
    let status = run_script(wd, "workstation.test.mjs", &config);
    assert!(
        status.success(),
        "the browser test failed ({status}); screenshots in {}",
        screenshots().display()
    );
    server.stop();

    // Each record was read once, from the workstation; the polls that watched the open
    // record's grant read metadata only.
    let audit = crate::api::audit_lines(wd);
    for request in [&cert_read, &revoked_read] {
        let reads: Vec<&Value> = audit
            .iter()
            .filter(|e| e["action"] == "record.read" && e["request_id"] == request.as_str())
            .collect();
        assert_eq!(reads.len(), 1, "one content read of {request}: {reads:?}");
        assert_eq!(reads[0]["outcome"], "granted");
        assert_eq!(reads[0]["actor"], "rita");
        assert_eq!(reads[0]["workstation"], "ws1");
    }
    let polls = audit
        .iter()
        .filter(|e| {
            e["action"] == "grant.view" && e["actor"] == "rita" && e["access_request"] == grant
        })
        .count();
    assert!(polls >= 1, "the open record's grant was polled");
}
