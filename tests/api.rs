//! The API end to end: the real `vigil serve` on loopback ports, real TLS with workstation
//! client certificates issued by `vigil admin`, over the sample run's cases. Every refusal
//! the source documents call for is a request here, and the audit log is checked after.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use crate::util::Workdir;

/// A `vigil serve` process, stopped (SIGTERM) when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) http: String,
    pub(crate) https: String,
}

impl Server {
    pub(crate) fn start(wd: &Workdir, envs: &[(&str, &str)]) -> Self {
        Self::start_with(wd, &["serve"], envs)
    }

    /// `vigil` with `args` (a command that serves the API), and `envs`.
    pub(crate) fn start_with(wd: &Workdir, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = wd
            .command(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vigil serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // The metadata listener's URL, then the workstation listener's.
        let urls: Vec<String> = line
            .split_whitespace()
            .filter(|word| word.starts_with("http://") || word.starts_with("https://"))
            .map(str::to_owned)
            .collect();
        assert_eq!(urls.len(), 2, "two listeners in {line:?}");
        Self {
            http: urls[0].clone(),
            https: urls[1].clone(),
            child,
        }
    }

    pub(crate) fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        // SIGTERM: vigil stops cleanly, releasing its stores.
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "vigil serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client: plain, or TLS trusting vigil's CA and presenting a workstation's
/// certificate.
pub(crate) fn agent(wd: &Workdir, workstation: Option<&str>) -> ureq::Agent {
    let files = workstation.map(|name| (format!("ws/{name}.pem"), format!("ws/{name}.key")));
    tls_agent(
        wd,
        "ws/ca.pem",
        files.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
    )
}

/// An HTTP client trusting only the CA in `ca` for TLS, presenting `identity` (certificate
/// and key files) if given; paths relative to `wd`.
pub(crate) fn tls_agent(wd: &Workdir, ca: &str, identity: Option<(&str, &str)>) -> ureq::Agent {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(wd.path(ca)).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(wd.path(cert)).unwrap()],
                PrivateKeyDer::from_pem_file(wd.path(key)).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .build()
}

/// Sends a request and returns the status and JSON body (Null when not JSON).
pub(crate) fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = agent.request(method, url);
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let result = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// The sample run's cases, principals with tokens, and two workstations (one revoked).
pub(crate) struct World {
    pub(crate) wd: Workdir,
    tokens: std::collections::HashMap<&'static str, String>,
}

const PRINCIPALS: &[(&str, &str, &str)] = &[
    ("rita", "reviewer", "eea"),
    ("rhea", "reviewer", "eea"),
    ("uma", "reviewer", "non-eea"),
    ("max", "manager", "eea"),
    ("mia", "manager", "eea"),
    ("adam", "admin", "non-eea"),
];

/// The test configuration with both API listeners on ports the system picks; `extra` is
/// appended.
pub(crate) fn config_with_api(extra: &str) -> String {
    format!(
        "{}[api]\nlisten = \"127.0.0.1:0\"\nworkstation_listen = \"127.0.0.1:0\"\n{extra}",
        crate::util::CONFIG
    )
}

/// Adds a principal with `vigil admin` (`extra`: more options) and returns a token of theirs.
pub(crate) fn principal(
    wd: &Workdir,
    name: &str,
    role: &str,
    region: &str,
    extra: &[&str],
) -> String {
    principal_with(wd, [name, role, region], extra, &[])
}

/// [`principal`] with `envs` set (another node's access store).
pub(crate) fn principal_with(
    wd: &Workdir,
    [name, role, region]: [&str; 3],
    extra: &[&str],
    envs: &[(&str, &str)],
) -> String {
    let mut args = vec![
        "admin",
        "principal",
        "add",
        name,
        "--role",
        role,
        "--region",
        region,
    ];
    args.extend_from_slice(extra);
    wd.ok_with(&args, b"", envs);
    wd.ok_with(&["admin", "token", "issue", name], b"", envs)
        .0
        .trim()
        .to_owned()
}

pub(crate) fn world() -> World {
    let wd = crate::util::sample_workdir();
    wd.write(
        "vigil.toml",
        config_with_api("[access]\npoint_queries_per_minute = 6\npoint_query_burst = 12\n"),
    );
    wd.run("traffic.jsonl");
    let mut tokens = std::collections::HashMap::new();
    for (name, role, region) in PRINCIPALS {
        tokens.insert(*name, principal(&wd, name, role, region, &[]));
    }
    let cora = principal(
        &wd,
        "cora",
        "customer",
        "eea",
        &["--resource", "contoso-chat-eu"],
    );
    tokens.insert("cora", cora);
    for ws in ["ws1", "ws2"] {
        wd.ok(&[
            "admin",
            "workstation",
            "issue",
            ws,
            "--generate-key",
            "--out",
            "ws",
        ]);
    }
    wd.ok(&["admin", "workstation", "revoke", "ws2"]);
    World { wd, tokens }
}

impl World {
    pub(crate) fn token(&self, name: &str) -> Option<&str> {
        self.tokens.get(name).map(String::as_str)
    }

    /// `reviewer` asks for access to `case` with `reason` and `manager` approves it: returns
    /// the access request's ID.
    pub(crate) fn grant(
        &self,
        server: &Server,
        reviewer: &str,
        manager: &str,
        case: &str,
        reason: &str,
    ) -> String {
        let plain = agent(&self.wd, None);
        let (status, asked) = call(
            &plain,
            "POST",
            &format!("{}/v1/cases/{case}/access-requests", server.http),
            self.token(reviewer),
            Some(json!({ "reason": reason })),
        );
        assert_eq!(status, 201, "{asked}");
        let id = asked["id"].as_str().unwrap().to_owned();
        let (status, approved) = call(
            &plain,
            "POST",
            &format!("{}/v1/access-requests/{id}/approve", server.http),
            self.token(manager),
            None,
        );
        assert_eq!(status, 200, "{approved}");
        id
    }

    /// A case of `resource` with its sampled request IDs, and a request ID of the same
    /// resource that no case flagged.
    pub(crate) fn case_of(&self, server: &Server, resource: &str) -> (String, Vec<String>, String) {
        let (status, body) = call(
            &agent(&self.wd, None),
            "GET",
            &format!("{}/v1/cases", server.http),
            self.token("rita"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let cases = body["cases"].as_array().unwrap();
        let case = cases
            .iter()
            .find(|c| c["resource_id"] == resource && c["subject"]["kind"] != "resource")
            .or_else(|| cases.iter().find(|c| c["resource_id"] == resource))
            .unwrap_or_else(|| panic!("no case of {resource}"));
        let sample: Vec<String> = case["sample"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        let flagged: Vec<&Value> = cases
            .iter()
            .flat_map(|c| c["sample"].as_array().unwrap())
            .collect();
        let traffic = traffic(&self.wd);
        let unflagged = traffic
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["resource_id"] == resource && !flagged.contains(&&r["request_id"]))
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .unwrap();
        (
            case["case_id"].as_str().unwrap().to_owned(),
            sample,
            unflagged,
        )
    }
}

/// The sample traffic (it has deliberately broken lines, some not UTF-8).
pub(crate) fn traffic(wd: &Workdir) -> String {
    String::from_utf8_lossy(&std::fs::read(wd.path("traffic.jsonl")).unwrap()).into_owned()
}

pub(crate) fn prompt_of(wd: &Workdir, request_id: &str) -> String {
    let traffic = traffic(wd);
    traffic
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["request_id"] == request_id)
        .and_then(|r| r["prompt"].as_str().map(str::to_owned))
        .unwrap()
}

pub(crate) fn audit_lines(wd: &Workdir) -> Vec<Value> {
    std::fs::read_to_string(wd.path("var/audit/audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn grants_gate_point_queries_and_every_refusal_is_audited() {
    let w = world();
    let wd = &w.wd;
    let server = Server::start(wd, &[]);
    let (plain, ws1, ws2) = (
        agent(wd, None),
        agent(wd, Some("ws1")),
        agent(wd, Some("ws2")),
    );
    let (case, sample, unflagged) = w.case_of(&server, "contoso-chat-eu");
    let (us_case, us_sample, _) = w.case_of(&server, "tailspin-support-us");
    let (quiet_case, _, _) = w.case_of(&server, "northwind-health-eu");
    let http = |path: &str| format!("{}{path}", server.http);
    let https = |path: &str| format!("{}{path}", server.https);
    let record = |case: &str, request: &str| format!("/v1/cases/{case}/records/{request}");
    let reason = |text: &str| Some(json!({"reason": text}));
    let ask = |who: &str, case: &str, text: &str| {
        call(
            &plain,
            "POST",
            &http(&format!("/v1/cases/{case}/access-requests")),
            w.token(who),
            reason(text),
        )
    };
    let read = |client: &ureq::Agent, who: &str, case: &str, request: &str| {
        call(
            client,
            "GET",
            &https(&record(case, request)),
            w.token(who),
            None,
        )
    };

    // Who am I; no token and a wrong token.
    let (s, me) = call(&plain, "GET", &http("/v1/me"), w.token("rita"), None);
    assert_eq!(
        (s, me["role"].as_str(), me["region"].as_str()),
        (200, Some("reviewer"), Some("eea"))
    );
    assert_eq!(call(&plain, "GET", &http("/v1/cases"), None, None).0, 401);
    assert_eq!(
        call(&plain, "GET", &http("/v1/cases"), Some("vgl_forged"), None).0,
        401
    );
    // Wrong role: an admin reads no case metadata and requests nothing.
    let (s, b) = call(&plain, "GET", &http("/v1/cases"), w.token("adam"), None);
    assert_eq!((s, code(&b)), (403, "wrong_role"));

    // A reviewer without a grant reads nothing, even from a registered workstation.
    let (s, b) = read(&ws1, "rita", &case, &sample[0]);
    assert_eq!((s, code(&b)), (403, "no_grant"));

    // The EEA rule: a non-EEA reviewer cannot even ask.
    let (s, b) = ask("uma", &case, "look");
    assert_eq!((s, code(&b)), (403, "eea_rule"));
    // Content logging off: nothing to grant.
    let (s, b) = ask("rita", &quiet_case, "look");
    assert_eq!((s, code(&b)), (409, "content_logging_off"));
    // An empty reason.
    let (s, b) = ask("rita", &case, "  ");
    assert_eq!((s, code(&b)), (400, "invalid_input"));

    // Rita asks; pending reads nothing.
    let (s, req) = ask("rita", &case, "repeated jailbreak attempts");
    assert_eq!((s, req["status"].as_str()), (201, Some("pending")), "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    let (s, b) = read(&ws1, "rita", &case, &sample[0]);
    assert_eq!((s, code(&b)), (403, "grant_pending"));
    // A reviewer cannot approve; a manager may not approve their own request.
    let approve = |id: &str| http(&format!("/v1/access-requests/{id}/approve"));
    let (s, b) = call(&plain, "POST", &approve(&id), w.token("rita"), None);
    assert_eq!((s, code(&b)), (403, "wrong_role"));
    let (s, own) = ask("max", &case, "mine");
    assert_eq!(s, 201);
    let own_id = own["id"].as_str().unwrap();
    let (s, b) = call(&plain, "POST", &approve(own_id), w.token("max"), None);
    assert_eq!((s, code(&b)), (403, "self_approval"));
    // Longer than the cap is refused.
    let (s, b) = call(
        &plain,
        "POST",
        &approve(&id),
        w.token("max"),
        Some(json!({"duration_secs": 9 * 3600})),
    );
    assert_eq!((s, code(&b)), (422, "grant_too_long"));
    // Max approves Rita's; a second decision is refused.
    let (s, granted) = call(&plain, "POST", &approve(&id), w.token("max"), None);
    assert_eq!(
        (s, granted["status"].as_str()),
        (200, Some("active")),
        "{granted}"
    );
    let (s, b) = call(
        &plain,
        "POST",
        &http(&format!("/v1/access-requests/{id}/deny")),
        w.token("mia"),
        None,
    );
    assert_eq!((s, code(&b)), (409, "already_decided"));

    // The grant reads flagged records of its case, from a registered workstation only.
    let (s, rec) = read(&ws1, "rita", &case, &sample[0]);
    assert_eq!(s, 200, "{rec}");
    assert_eq!(rec["prompt"].as_str().unwrap(), prompt_of(wd, &sample[0]));
    assert_eq!(rec["watermark"]["reviewer"], "rita");
    assert_eq!(rec["watermark"]["workstation"], "ws1");
    let (s, b) = call(
        &plain,
        "GET",
        &http(&record(&case, &sample[0])),
        w.token("rita"),
        None,
    );
    assert_eq!((s, code(&b)), (403, "no_workstation"), "plain HTTP");
    let (s, b) = read(&ws2, "rita", &case, &sample[0]);
    assert_eq!(
        (s, code(&b)),
        (403, "no_workstation"),
        "a revoked workstation"
    );
    let no_cert = agent(wd, None).get(&https("/v1/me")).call();
    assert!(
        matches!(no_cert, Err(ureq::Error::Transport(_))),
        "TLS without a client certificate: {no_cert:?}"
    );
    // The same grant is no key to another reviewer.
    let (s, b) = read(&ws1, "rhea", &case, &sample[0]);
    assert_eq!((s, code(&b)), (403, "no_grant"));

    // Unflagged, absent and other-case records get one answer, which says nothing of existence.
    let (s1, b1) = read(&ws1, "rita", &case, &unflagged);
    let (s2, b2) = read(&ws1, "rita", &case, "chatcmpl-never-stored");
    let (s3, b3) = read(&ws1, "rita", &case, &us_sample[0]);
    assert_eq!((s1, &b1), (404, &b2));
    assert_eq!((s2, &b2), (s3, &b3));
    assert_eq!(code(&b1), "not_available");
    // Another case needs its own grant.
    let (s, b) = read(&ws1, "rita", &us_case, &us_sample[0]);
    assert_eq!((s, code(&b)), (403, "no_grant"));

    // Revoked: reads nothing.
    let (s, _) = call(
        &plain,
        "POST",
        &http(&format!("/v1/access-requests/{id}/revoke")),
        w.token("mia"),
        None,
    );
    assert_eq!(s, 200);
    let (s, b) = read(&ws1, "rita", &case, &sample[0]);
    assert_eq!((s, code(&b)), (403, "grant_revoked"));

    // Expired: a one-second grant.
    let (_, again) = ask("rita", &case, "once more");
    let again = again["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &plain,
        "POST",
        &approve(&again),
        w.token("mia"),
        Some(json!({"duration_secs": 1})),
    );
    assert_eq!(s, 200);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (s, b) = read(&ws1, "rita", &case, &sample[0]);
    assert_eq!((s, code(&b)), (403, "grant_expired"));
    let (s, list) = call(
        &plain,
        "GET",
        &http("/v1/access-requests?state=expired"),
        w.token("rita"),
        None,
    );
    assert_eq!(
        (s, list["access_requests"].as_array().unwrap().len()),
        (200, 1)
    );

    // Rate limit: Rhea's burst of 12, then 429 with Retry-After; Rita is not affected.
    let (_, r) = ask("rhea", &us_case, "burst");
    let r = r["id"].as_str().unwrap().to_owned();
    call(&plain, "POST", &approve(&r), w.token("max"), None);
    let statuses: Vec<u16> = (0..13)
        .map(|_| read(&ws1, "rhea", &us_case, &us_sample[0]).0)
        .collect();
    // (Her refused read above took one from the bucket too.)
    assert_eq!(statuses[..11], [200; 11]);
    assert_eq!(statuses[11..], [429; 2]);

    // The audit log: one entry per /v1 request, the chain intact, never content.
    server.stop();
    let entries = audit_lines(wd);
    let reads: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "record.read")
        .collect();
    assert_eq!(
        reads.iter().filter(|e| e["outcome"] == "granted").count(),
        12
    );
    // Every refused point query names the case, the request and the workstation it came
    // from (a revoked one too).
    for refused in reads.iter().filter(|e| e["outcome"] == "refused") {
        assert!(
            refused["case_id"].is_string() && refused["request_id"].is_string(),
            "{refused}"
        );
    }
    assert!(reads
        .iter()
        .any(|e| e["reason"] == "no_workstation" && e["workstation"] == "ws2 (revoked)"));
    for reason in [
        "no_grant",
        "grant_pending",
        "no_workstation",
        "not_available",
        "grant_revoked",
        "grant_expired",
        "rate_limited",
    ] {
        assert!(
            reads.iter().any(|e| e["reason"] == reason),
            "no audited {reason}"
        );
    }
    for (action, reason) in [
        ("grant.request", "eea_rule"),
        ("grant.request", "content_logging_off"),
        ("grant.approve", "self_approval"),
        ("cases.list", "unauthenticated"),
        ("cases.list", "wrong_role"),
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e["action"] == action && e["reason"] == reason),
            "no audited {action} {reason}"
        );
    }
    let granted = entries
        .iter()
        .find(|e| e["action"] == "grant.approve" && e["outcome"] == "done")
        .unwrap();
    assert_eq!(
        (
            granted["actor"].as_str(),
            granted["access_request"].as_str()
        ),
        (Some("max"), Some(id.as_str()))
    );
    let log = std::fs::read_to_string(wd.path("var/audit/audit.jsonl")).unwrap();
    assert!(
        !log.contains(&prompt_of(wd, &sample[0])),
        "content in the audit log"
    );
    let out = wd.ok(&["audit", "verify"]);
    assert!(out.contains("chain intact"), "{out}");

    // The audit table copies the log's structured fields.
    wd.ok(&["export"]);
    let granted = wd.sql(
        "SELECT count(*) AS n FROM audit WHERE action = 'record.read' AND outcome = 'granted'",
    );
    assert_eq!(granted, ["n", "12"]);

    // A tampered entry is found, by line.
    let lines: Vec<&str> = log.lines().collect();
    let target = lines
        .iter()
        .position(|l| l.contains("\"self_approval\""))
        .unwrap();
    let tampered = log.replacen("\"self_approval\"", "\"no_grant\"", 1);
    std::fs::write(wd.path("var/audit/audit.jsonl"), tampered).unwrap();
    let out = wd.output(&["audit", "verify", "--format", "json"], b"", &[]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["first_broken"]["line"],
        target as u64 + 1,
        "{report}"
    );
    std::fs::write(wd.path("var/audit/audit.jsonl"), &log).unwrap();

    // Fail closed: with an audit log that cannot be written, nothing is read or decided.
    let (_, pending) = {
        let server = Server::start(wd, &[]);
        let result = call(
            &plain,
            "POST",
            &format!("{}/v1/cases/{us_case}/access-requests", server.http),
            w.token("rita"),
            reason("later"),
        );
        server.stop();
        result
    };
    let pending = pending["id"].as_str().unwrap().to_owned();
    let broken = Server::start(wd, &[("VIGIL_ACCESS__AUDIT_LOG", "/dev/full")]);
    let (s, b) = call(
        &ws1,
        "GET",
        &format!("{}{}", broken.https, record(&us_case, &us_sample[0])),
        w.token("rhea"),
        None,
    );
    assert_eq!((s, code(&b)), (503, "audit_unavailable"), "{b}");
    assert!(b.get("prompt").is_none());
    let (s, _) = call(
        &plain,
        "POST",
        &format!("{}/v1/access-requests/{pending}/approve", broken.http),
        w.token("max"),
        None,
    );
    assert_eq!(s, 503);
    // A refusal that cannot be recorded says so, rather than its reason alone.
    let (s, b) = call(
        &plain,
        "GET",
        &format!("{}/v1/cases", broken.http),
        None,
        None,
    );
    assert_eq!((s, code(&b)), (503, "audit_unavailable"), "{b}");
    broken.stop();
    let server = Server::start(wd, &[]);
    let (_, still) = call(
        &plain,
        "GET",
        &format!("{}/v1/access-requests/{pending}", server.http),
        w.token("rita"),
        None,
    );
    assert_eq!(
        still["status"], "pending",
        "a decision was made without an audit entry"
    );
    server.stop();
    assert!(wd.ok(&["audit", "verify"]).contains("chain intact"));

    // Entries cut off the end (the head kept): serving, and any audited command, refuses to
    // start until the gap is acknowledged, which is itself an entry.
    let path = wd.path("var/audit/audit.jsonl");
    let log = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = log.lines().collect();
    let kept = &kept[..kept.len() - 2];
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let refused = exits_within(wd.command(&["serve"]), Duration::from_secs(60));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("2 entries were cut off its end")
            && stderr.contains("vigil audit acknowledge"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().lines().count(),
        kept.len()
    );
    assert!(wd.fails(&["audit", "verify"]).contains("broken"));
    let acknowledged = wd.ok(&["audit", "acknowledge"]);
    assert!(acknowledged.contains("gap recorded"), "{acknowledged}");
    let server = Server::start(wd, &[]);
    server.stop();
    assert!(wd.ok(&["audit", "verify"]).contains("chain intact"));
    let log = std::fs::read_to_string(&path).unwrap();
    let ack: Value = serde_json::from_str(log.lines().nth(kept.len()).unwrap()).unwrap();
    assert_eq!(ack["action"], "audit.acknowledge_gap");
    assert!(ack["actor"].as_str().unwrap().starts_with("cli:"));
}

/// Runs `command` to its end, which must come within `limit`.
fn exits_within(mut command: std::process::Command, limit: Duration) -> std::process::Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let id = child.id();
    let (done, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match waited.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &id.to_string()])
                .status();
            panic!("still running after {limit:?}");
        }
    }
}

#[test]
fn management_api_and_malformed_input() {
    let w = world();
    let wd = &w.wd;
    let server = Server::start(wd, &[]);
    let plain = agent(wd, None);
    let http = |path: &str| format!("{}{path}", server.http);

    // Capabilities: ContentLogging=false exactly when logging is off, no entry otherwise.
    let (s, quiet) = call(
        &plain,
        "GET",
        &http("/v1/resources/northwind-health-eu"),
        w.token("adam"),
        None,
    );
    assert_eq!(
        (s, &quiet["capabilities"]),
        (200, &json!([{"name": "ContentLogging", "value": "false"}]))
    );
    let (_, loud) = call(
        &plain,
        "GET",
        &http("/v1/resources/contoso-chat-eu"),
        w.token("adam"),
        None,
    );
    assert_eq!(loud["capabilities"], json!([]));
    // A customer sees their own resource only; another reads as unknown. Reviewers manage nothing.
    assert_eq!(
        call(
            &plain,
            "GET",
            &http("/v1/resources/contoso-chat-eu"),
            w.token("cora"),
            None
        )
        .0,
        200
    );
    let (s, b) = call(
        &plain,
        "GET",
        &http("/v1/resources/northwind-health-eu"),
        w.token("cora"),
        None,
    );
    assert_eq!((s, code(&b)), (404, "unknown_resource"));
    assert_eq!(
        call(
            &plain,
            "GET",
            &http("/v1/resources/contoso-chat-eu"),
            w.token("rita"),
            None
        )
        .0,
        403
    );
    // Only admins change settings.
    let (s, _) = call(
        &plain,
        "PATCH",
        &http("/v1/resources/contoso-chat-eu"),
        w.token("cora"),
        Some(json!({"content_logging": false})),
    );
    assert_eq!(s, 403);
    let (s, b) = call(
        &plain,
        "PATCH",
        &http("/v1/resources/contoso-chat-eu"),
        w.token("adam"),
        Some(json!({"retention_days": 31})),
    );
    assert_eq!((s, code(&b)), (400, "invalid_input"), "{b}");

    // A customer deletes one request of theirs, not another customer's.
    let delete_as_cora = |request: &str| {
        call(
            &plain,
            "DELETE",
            &http(&format!("/v1/resources/contoso-chat-eu/requests/{request}")),
            w.token("cora"),
            None,
        )
    };
    let (case, sample, _) = w.case_of(&server, "contoso-chat-eu");
    let (_, us_sample, _) = w.case_of(&server, "tailspin-support-us");
    let (s, b) = delete_as_cora(&us_sample[0]);
    assert_eq!((s, code(&b)), (404, "not_available"));
    let (s, b) = delete_as_cora(&sample[1]);
    assert_eq!((s, b["deleted"].as_bool()), (200, Some(true)), "{b}");
    let (s, _) = delete_as_cora(&sample[1]);
    assert_eq!(s, 404);

    // Turning content logging off destroys stored content and shows in the capabilities;
    // requests for that resource then say there is nothing to grant.
    let (s, b) = call(
        &plain,
        "PATCH",
        &http("/v1/resources/contoso-chat-eu"),
        w.token("adam"),
        Some(json!({"content_logging": false})),
    );
    assert_eq!(
        (s, &b["capabilities"]),
        (200, &json!([{"name": "ContentLogging", "value": "false"}])),
        "{b}"
    );
    assert!(b["content_destroyed_records"].as_u64().unwrap() > 0);
    let (s, b) = call(
        &plain,
        "POST",
        &http(&format!("/v1/cases/{case}/access-requests")),
        w.token("rita"),
        Some(json!({"reason": "look"})),
    );
    assert_eq!((s, code(&b)), (409, "content_logging_off"));
    let registry = std::fs::read_to_string(wd.path("resources.toml")).unwrap();
    assert!(registry.contains("content_logging = false"));

    // Malformed input: 4xx, never 5xx.
    let big = "x".repeat(64 * 1024);
    let long_id = "a".repeat(300);
    let ws1 = agent(wd, Some("ws1"));
    let raw = |method: &str, path: &str, content_type: Option<&str>, body: &str| {
        // Record paths over the workstation listener, so validation is what answers.
        let (client, url) = if path.contains("/records/") {
            (&ws1, format!("{}{path}", server.https))
        } else {
            (&plain, http(path))
        };
        let mut request = client.request(method, &url).set(
            "Authorization",
            &format!("Bearer {}", w.token("rita").unwrap()),
        );
        if let Some(ct) = content_type {
            request = request.set("Content-Type", ct);
        }
        match request.send_string(body) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    };
    let access = format!("/v1/cases/{case}/access-requests");
    let cases = [
        (
            "POST",
            access.as_str(),
            Some("application/json"),
            format!("{{\"reason\":\"{big}\"}}"),
            413,
        ),
        (
            "POST",
            access.as_str(),
            Some("text/plain"),
            "{\"reason\":\"x\"}".to_owned(),
            415,
        ),
        (
            "POST",
            access.as_str(),
            Some("application/json"),
            "{\"reason\":".to_owned(),
            422,
        ),
        (
            "POST",
            access.as_str(),
            Some("application/json"),
            "{\"reason\":\"x\",\"admin\":true}".to_owned(),
            422,
        ),
        (
            "POST",
            access.as_str(),
            Some("application/json"),
            "[1,2]".to_owned(),
            422,
        ),
        (
            "GET",
            "/v1/cases/..%2F..%2Fetc%2Fpasswd",
            None,
            String::new(),
            400,
        ),
        (
            "GET",
            "/v1/cases/case-1/records/..%2F..%2Fkeys%2Fmaster.key",
            None,
            String::new(),
            400,
        ),
        (
            "GET",
            &format!("/v1/cases/case-1/records/{long_id}"),
            None,
            String::new(),
            400,
        ),
        ("GET", "/v1/cases/case-%00", None, String::new(), 400),
        (
            "GET",
            "/v1/access-requests/acc-ZZZ",
            None,
            String::new(),
            400,
        ),
        (
            "GET",
            "/v1/access-requests?state=everything",
            None,
            String::new(),
            400,
        ),
        (
            "GET",
            "/v1/access-requests/acc-0000000000000000",
            None,
            String::new(),
            404,
        ),
        ("GET", "/v1/resources/bad%20id", None, String::new(), 403),
        ("DELETE", "/v1/cases", None, String::new(), 405),
        ("GET", "/v1/nothing/here", None, String::new(), 404),
        ("GET", "/../../etc/passwd", None, String::new(), 404),
    ];
    for (method, path, ct, body, want) in &cases {
        let got = raw(method, path, *ct, body);
        assert_eq!(got, *want, "{method} {path}");
    }
    let (s, b) = call(
        &plain,
        "GET",
        &http("/v1/resources/bad%20id"),
        w.token("adam"),
        None,
    );
    assert_eq!((s, code(&b)), (400, "invalid_input"));

    // The OpenAPI document lists exactly what is served: each documented operation answers
    // (refused or not, never "no such route" or "method not allowed").
    let (s, doc) = call(&plain, "GET", &http("/openapi.json"), None, None);
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, methods) in paths {
        let concrete = path
            .replace("{case_id}", "case-0")
            .replace("{request_id}", "acc-0000000000000000")
            .replace("{resource_id}", "nobody");
        for method in methods.as_object().unwrap().keys() {
            operations += 1;
            let (s, b) = call(
                &plain,
                &method.to_uppercase(),
                &http(&concrete),
                w.token("adam"),
                None,
            );
            assert!(
                s != 405 && code(&b) != "no_route" && s < 500,
                "{method} {path}: {s} {b}"
            );
        }
    }
    assert_eq!(operations, vigil_api::routes::OPERATIONS.len());
    server.stop();
    assert!(wd.ok(&["audit", "verify"]).contains("chain intact"));
}

/// A flood of anonymous requests from loopback, and connections that never send a request:
/// the audit log grows by a count, not an entry a request; silent connections are closed
/// after the header timeout; a reviewer's request during it all is answered.
#[test]
fn a_flood_of_anonymous_requests_and_silent_connections_cannot_hold_the_server() {
    const THREADS: usize = 4;
    const EACH: usize = 250;
    let wd = crate::util::sample_workdir();
    wd.write(
        "vigil.toml",
        config_with_api("max_connections = 8\nheader_read_timeout_ms = 500\n"),
    );
    let adam = principal(&wd, "adam", "admin", "non-eea", &[]);
    wd.ok(&[
        "admin",
        "workstation",
        "issue",
        "ws1",
        "--generate-key",
        "--out",
        "ws",
    ]);
    let before = audit_lines(&wd).len();
    let server = Server::start(&wd, &[]);

    let flood: Vec<_> = (0..THREADS)
        .map(|t| {
            let (url, agent) = match t {
                // Anonymous point queries over the workstation listener, which name IDs.
                0 => (
                    format!(
                        "{}/v1/cases/case-0123456789abcdef/records/req-{t}",
                        server.https
                    ),
                    agent(&wd, Some("ws1")),
                ),
                _ => (format!("{}/v1/cases", server.http), agent(&wd, None)),
            };
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|_| call(&agent, "GET", &url, None, None).0)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let me = format!("{}/v1/me", server.http);
    let (s, b) = call(&agent(&wd, None), "GET", &me, Some(&adam), None);
    assert_eq!(s, 200, "a legitimate request during the flood: {b}");
    for thread in flood {
        assert!(thread.join().unwrap().iter().all(|&s| s == 401));
    }

    // More silent connections than the listener takes: they are closed after the header
    // timeout, and the reviewer's request behind them is answered.
    let addr = server.http.split_once("://").unwrap().1.to_owned();
    let silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let started = std::time::Instant::now();
    let (s, b) = call(&agent(&wd, None), "GET", &me, Some(&adam), None);
    assert_eq!(s, 200, "{b}");
    assert!(started.elapsed() < Duration::from_secs(10));
    for mut conn in silent {
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let read = std::io::Read::read(&mut conn, &mut buf);
        assert!(
            matches!(read, Ok(0))
                || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "a silent connection was left open"
        );
    }
    server.stop();

    // One entry for the first refusal of each kind, then one with the count of the rest.
    let entries = audit_lines(&wd);
    let anonymous: Vec<&Value> = entries[before..]
        .iter()
        .filter(|e| e["actor"] == "anonymous")
        .collect();
    assert!(anonymous.len() <= 4, "{anonymous:#?}");
    let total: u64 = anonymous
        .iter()
        .map(|e| {
            assert_eq!(e["peer"], "127.0.0.1");
            assert_eq!(e["reason"], "unauthenticated");
            match e["detail"].as_str() {
                Some(detail) => detail
                    .strip_prefix("repeated ")
                    .and_then(|d| d.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap(),
                None => 1,
            }
        })
        .sum();
    assert_eq!(total, (THREADS * EACH) as u64);
    // The refused point query names what it asked for, and from which workstation.
    let read = anonymous
        .iter()
        .find(|e| e["action"] == "record.read" && e["detail"].is_null())
        .unwrap();
    assert_eq!(read["case_id"], "case-0123456789abcdef");
    assert_eq!(read["request_id"], "req-0");
    assert_eq!(read["workstation"], "ws1");
    assert!(wd.ok(&["audit", "verify"]).contains("chain intact"));
}

/// A workstation brings its own key: it makes a key and a certificate signing request (asking
/// for another name and a server name, which vigil ignores), `vigil admin workstation issue
/// --csr` answers with a certificate for that key and writes nothing private, and with the two
/// the workstation reads `/v1/me` over the workstation listener. Issuing with neither `--csr`
/// nor `--generate-key` is refused, naming both, and registers nothing.
#[test]
fn a_workstation_issued_from_its_own_csr_reads_over_the_workstation_listener() {
    let wd = crate::util::sample_workdir();
    wd.write("vigil.toml", config_with_api(""));
    let rita = principal(&wd, "rita", "reviewer", "eea", &[]);

    let error = wd.fails(&["admin", "workstation", "issue", "ws1", "--out", "ws"]);
    assert!(
        error.contains("--csr") && error.contains("--generate-key"),
        "{error}"
    );
    assert_eq!(wd.ok(&["admin", "workstation", "list"]).trim(), "");

    // On the workstation.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut request = rcgen::CertificateParams::new(vec!["intruder.example.com".into()]).unwrap();
    request
        .distinguished_name
        .push(rcgen::DnType::CommonName, "not-ws1");
    wd.write(
        "ws1.csr",
        request.serialize_request(&key).unwrap().pem().unwrap(),
    );

    let said = wd.ok(&[
        "admin",
        "workstation",
        "issue",
        "ws1",
        "--csr",
        "ws1.csr",
        "--out",
        "ws",
    ]);
    assert!(said.contains("workstation ws1 registered"), "{said}");
    let mut written = wd.files_under("ws");
    written.sort();
    assert_eq!(written, [wd.path("ws/ca.pem"), wd.path("ws/ws1.pem")]);
    assert!(wd.files_containing("ws", b"PRIVATE KEY").is_empty());
    let listed = wd.ok(&["admin", "workstation", "list"]);
    assert!(listed.contains("\"ws1\""), "{listed}");

    // The workstation's key beside its certificate, as `agent` reads them.
    wd.write("ws/ws1.key", key.serialize_pem());
    let server = Server::start(&wd, &[]);
    let me = format!("{}/v1/me", server.https);
    let (status, body) = call(&agent(&wd, Some("ws1")), "GET", &me, Some(&rita), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workstation"], "ws1");
    server.stop();
}

/// A reviewer's note is text about content: it is stored sealed (no byte of it in the data
/// directory, the audit log or the exports), listed nowhere, and shown only over the
/// workstation listener to a holder of an active grant for the case, where showing it is
/// audited as a content read before it leaves. A grant holder over the plain listener, a
/// reviewer without a grant on a workstation, and a revoked workstation see it withheld.
#[test]
fn a_decision_note_is_sealed_at_rest_and_shown_only_on_the_workstation_listener_as_a_read() {
    const NOTE: &str = "notemarker-5c1e: the prompt asked twice for the same recipe";
    let w = world();
    let wd = &w.wd;
    let server = Server::start(wd, &[]);
    let (plain, ws1, ws2) = (
        agent(wd, None),
        agent(wd, Some("ws1")),
        agent(wd, Some("ws2")),
    );
    let (case, sample, _) = w.case_of(&server, "contoso-chat-eu");
    let http = |path: &str| format!("{}{path}", server.http);
    let https = |path: &str| format!("{}{path}", server.https);
    let case_path = format!("/v1/cases/{case}");
    let grant = w.grant(&server, "rita", "max", &case, "confirm the pattern");
    // Recorded (deciding needs a grant, not a workstation); the answer does not echo it.
    let (status, recorded) = call(
        &plain,
        "POST",
        &http(&format!("{case_path}/decisions")),
        w.token("rita"),
        Some(json!({"request_id": sample[0], "decision": "abuse_confirmed", "note": NOTE})),
    );
    assert_eq!(status, 201, "{recorded}");
    assert_eq!(recorded["note_status"], "withheld", "{recorded}");
    assert!(!recorded.to_string().contains("notemarker"), "{recorded}");

    let withheld = |client: &ureq::Agent, url: String, who: &str| {
        let (status, view) = call(client, "GET", &url, w.token(who), None);
        assert_eq!(status, 200, "{view}");
        assert!(!view.to_string().contains("notemarker"), "{who}: {view}");
        view
    };
    // The grant holder over the plain listener: the decision, not its note.
    let view = withheld(&plain, http(&case_path), "rita");
    let decision = &view["decisions"][0];
    assert_eq!(decision["outcome"], "abuse_confirmed", "{view}");
    assert!(decision["note"].is_null(), "{view}");
    assert_eq!(decision["note_status"], "withheld", "{view}");
    // The queue never shows notes, on either listener.
    withheld(&plain, http("/v1/cases"), "rita");
    withheld(&ws1, https("/v1/cases"), "rita");
    // A workstation without a grant; a revoked workstation with one.
    withheld(&ws1, https(&case_path), "rhea");
    withheld(&ws2, https(&case_path), "rita");
    // The grant holder on a registered workstation: the note.
    let (status, view) = call(&ws1, "GET", &https(&case_path), w.token("rita"), None);
    assert_eq!(status, 200, "{view}");
    let decision = &view["decisions"][0];
    assert_eq!(decision["note"], NOTE, "{view}");
    assert_eq!(decision["note_status"], "shown", "{view}");
    server.stop();

    // Showing it was a content read, on record; every view that withheld it was not.
    let audit = audit_lines(wd);
    let views: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "case.view" && e["case_id"] == case.as_str())
        .collect();
    let granted: Vec<&&Value> = views.iter().filter(|e| e["outcome"] == "granted").collect();
    assert_eq!(granted.len(), 1, "{views:#?}");
    let read = granted[0];
    assert_eq!(
        (
            &read["actor"],
            &read["workstation"],
            &read["access_request"]
        ),
        (&json!("rita"), &json!("ws1"), &json!(grant)),
        "{read}"
    );
    assert_eq!(read["resource_id"], "contoso-chat-eu");
    assert_eq!(views.len(), 4, "{views:#?}");
    assert!(wd.ok(&["audit", "verify"]).contains("chain intact"));
    // At rest: nowhere in the data directory (sealed), the audit log or the exports.
    wd.ok(&["export"]);
    for dir in ["var/data", "var/audit", "var/exports"] {
        assert!(
            wd.files_containing(dir, b"notemarker").is_empty(),
            "the note is in the clear under {dir}"
        );
    }
    assert!(!wd.files_under("var/data").is_empty());
}

/// A customer key revoked while `vigil serve` runs: the next point query finds it gone,
/// though the data key it wrapped is cached, and the key's return opens the record again.
#[test]
fn a_customer_key_revoked_while_serving_answers_no_point_query() {
    let w = world();
    let wd = &w.wd;
    wd.write("keys/contoso.key", "5a".repeat(32));
    wd.ok(&[
        "resource",
        "update",
        "contoso-chat-eu",
        "--customer-key",
        "file:keys/contoso.key",
    ]);
    let server = Server::start(wd, &[]);
    let ws1 = agent(wd, Some("ws1"));
    let (case, sample, _) = w.case_of(&server, "contoso-chat-eu");
    w.grant(&server, "rita", "max", &case, "customer key check");
    let url = format!("{}/v1/cases/{case}/records/{}", server.https, sample[0]);
    let read = || call(&ws1, "GET", &url, w.token("rita"), None);
    assert_eq!(read().0, 200);
    std::fs::remove_file(wd.path("keys/contoso.key")).unwrap();
    let (s, b) = read();
    assert_eq!((s, code(&b)), (404, "not_available"), "{b}");
    assert!(b.get("prompt").is_none());
    wd.write("keys/contoso.key", "5a".repeat(32));
    assert_eq!(read().0, 200);
    server.stop();
}

/// Tokens expire (`access.token_ttl_secs`, or `--ttl-secs`), and a holder re-issues theirs
/// through the API, which retires the one presented.
#[test]
fn tokens_expire_and_are_reissued() {
    let wd = crate::util::sample_workdir();
    wd.write("vigil.toml", config_with_api(""));
    let rita = principal(&wd, "rita", "reviewer", "eea", &[]);
    wd.ok(&[
        "admin",
        "workstation",
        "issue",
        "ws1",
        "--generate-key",
        "--out",
        "ws",
    ]);
    let brief = wd.ok(&["admin", "token", "issue", "rita", "--ttl-secs", "60"]);
    let brief = brief.trim();
    assert!(wd
        .fails(&["admin", "token", "issue", "rita", "--ttl-secs", "59"])
        .contains("token_ttl_secs"));
    let plain = agent(&wd, None);
    let server = Server::start(&wd, &[]);
    let me = format!("{}/v1/me", server.http);
    let (s, b) = call(&plain, "GET", &me, Some(&rita), None);
    assert_eq!(s, 200, "{b}");
    let expires = time::OffsetDateTime::parse(
        b["token_expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::hours(11) && left <= time::Duration::hours(12),
        "{left}"
    );
    let (s, fresh) = call(
        &plain,
        "POST",
        &format!("{}/v1/tokens", server.http),
        Some(&rita),
        None,
    );
    assert_eq!(s, 201, "{fresh}");
    let fresh = fresh["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&plain, "GET", &me, Some(&rita), None).0,
        401,
        "the old token still works"
    );
    assert_eq!(call(&plain, "GET", &me, Some(&fresh), None).0, 200);
    assert_eq!(call(&plain, "GET", &me, Some(brief), None).0, 200);
    server.stop();

    // Two minutes on (a drill clock), the one-minute token has expired, the fresh one not.
    let later = (time::OffsetDateTime::now_utc() + time::Duration::minutes(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let server = Server::start_with(&wd, &["serve", "--drill"], &[("VIGIL_NOW", &later)]);
    let me = format!("{}/v1/me", server.http);
    let (s, b) = call(&plain, "GET", &me, Some(brief), None);
    assert_eq!((s, code(&b)), (401, "unauthenticated"));
    assert_eq!(call(&plain, "GET", &me, Some(&fresh), None).0, 200);
    server.stop();
    let log = std::fs::read_to_string(wd.path("var/audit/audit.jsonl")).unwrap();
    assert!(
        !log.contains(&fresh) && !log.contains(brief),
        "a token in the audit log"
    );
}

/// `vigil demo` links carry one-time sign-in codes, never a token; a code signs in once.
#[test]
fn demo_links_carry_one_time_codes_not_tokens() {
    let wd = crate::util::sample_workdir();
    wd.write("vigil.toml", config_with_api(""));
    let guide = wd.ok(&["demo", "--no-serve", "--out", "ws"]);
    assert!(!guide.contains("#token="), "{guide}");
    let codes: Vec<&str> = guide
        .split_whitespace()
        .filter_map(|w| w.split_once("#code=").map(|(_, code)| code))
        .collect();
    assert_eq!(codes.len(), 3, "{guide}");
    let plain = agent(&wd, None);
    let server = Server::start(&wd, &[]);
    let sign_in = |code: &str| {
        call(
            &plain,
            "POST",
            &format!("{}/v1/sign-in", server.http),
            None,
            Some(json!({ "code": code })),
        )
    };
    let (s, issued) = sign_in(codes[0]);
    assert_eq!(s, 201, "{issued}");
    let token = issued["token"].as_str().unwrap();
    let (s, me) = call(
        &plain,
        "GET",
        &format!("{}/v1/me", server.http),
        Some(token),
        None,
    );
    assert_eq!((s, me["name"].as_str()), (200, Some("demo-manager")));
    // Spent: the same link signs no one in again.
    let (s, b) = sign_in(codes[0]);
    assert_eq!((s, code(&b)), (401, "unauthenticated"));
    server.stop();
    let entries = audit_lines(&wd);
    assert!(entries
        .iter()
        .any(|e| e["action"] == "session.sign_in" && e["actor"] == "demo-manager"));
    let log = std::fs::read_to_string(wd.path("var/audit/audit.jsonl")).unwrap();
    assert!(!log.contains(codes[0]) && !log.contains(token));
}
