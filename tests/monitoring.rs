//! Monitoring: Debian's Prometheus server scrapes a running vigil and the series move while
//! records flow; `/metrics` never carries an ID or content; `/healthz` and `/readyz`; the
//! shipped alerting rules pass `promtool` and load into the real server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::llm::free_port;
use crate::util::{http_get, record, repo, series_sum, Feeding, Workdir};

/// A Debian tool on PATH. `scripts/test.sh` installs the `prometheus` package; under CI a
/// missing tool fails the test, elsewhere it is skipped with a note.
#[allow(clippy::print_stderr)] // Says so when this machine lacks Prometheus.
fn debian_tool(name: &str) -> Option<PathBuf> {
    let found = crate::util::which(name);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed: scripts/test.sh installs Debian's prometheus package"
        );
        eprintln!("{name} is not on PATH (apt-get install prometheus): skipped");
    }
    found
}

/// A Prometheus server scraping one vigil every second, with vigil's alerting rules loaded.
struct Prometheus {
    child: Child,
    url: String,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: PathBuf, target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: ['{target}']\n",
            rules = repo().join("deploy/alerts.yml").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(),
            _dir: dir,
        };
        wait_until("Prometheus is ready", Duration::from_secs(60), || {
            prometheus
                .agent
                .get(&format!("{}/-/ready", prometheus.url))
                .call()
                .is_ok()
        });
        prometheus
    }

    /// The result vector of an instant query.
    fn query(&self, query: &str) -> Vec<Value> {
        let body: Value = self
            .agent
            .get(&format!("{}/api/v1/query", self.url))
            .query("query", query)
            .call()
            .unwrap_or_else(|e| panic!("querying {query}: {e}"))
            .into_json()
            .unwrap();
        assert_eq!(body["status"], "success", "{body}");
        body["data"]["result"].as_array().unwrap().clone()
    }

    /// The value of a query that yields one series, if it does.
    fn value(&self, query: &str) -> Option<f64> {
        let result = self.query(query);
        let sample = result.first()?;
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` yields `expected`.
    fn wait_for(&self, query: &str, expected: f64) {
        let mut last = None;
        wait_until(query, Duration::from_secs(60), || {
            last = self.value(query);
            last == Some(expected)
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A GET on the metrics listener: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    http_get(&format!("http://{addr}{path}"))
}

const REGISTRY: &str = "[[resources]]\nid = 'shop-eu'\ngeography = 'eu'\n";

/// A `vigil run --api` reading standard input, with the classifier, its metrics listener and
/// its metadata listener (plain HTTP) on the addresses returned.
fn flowing() -> (Workdir, Feeding, String, String) {
    let wd = Workdir::new();
    wd.write(
        "vigil.toml",
        crate::api::config_with_api("plain_http = true\n"),
    );
    wd.write("resources.toml", REGISTRY);
    let (metrics, api) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let run = Feeding::start_with(
        &wd,
        &["--api"],
        &[
            ("VIGIL_METRICS__LISTEN", &metrics),
            ("VIGIL_API__LISTEN", &api),
            ("VIGIL_DETECTORS__ENABLED", "true"),
        ],
    );
    (wd, run, metrics, api)
}

/// Records `req-FROM..` (their prompts are `MARKER-<id>`).
fn send(run: &mut Feeding, from: usize, n: usize) -> Vec<String> {
    let ids: Vec<String> = (from..from + n).map(|i| format!("req-{i:04}")).collect();
    run.send(
        "shop-eu",
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    ids
}

/// A line that names a request and carries a marker, but is not a record.
const BROKEN: &str = "{\"request_id\": \"req-broken\", \"prompt\": \"MARKER-broken\"";

/// Two anonymous API requests: one refused, one for the OpenAPI document.
fn call_api(api: &str) {
    let anonymous = ureq::get(&format!("http://{api}/v1/cases")).call();
    assert!(matches!(anonymous, Err(ureq::Error::Status(401, _))));
    ureq::get(&format!("http://{api}/openapi.json"))
        .call()
        .unwrap();
}

#[test]
fn prometheus_sees_the_series_move_while_records_flow() {
    let Some(binary) = debian_tool("prometheus") else {
        return;
    };
    let (_wd, mut run, metrics, api) = flowing();
    let prometheus = Prometheus::start(binary, &metrics);
    prometheus.wait_for("up{job=\"vigil\"}", 1.0);

    send(&mut run, 0, 20);
    prometheus.wait_for("sum(vigil_records_stored_total{geography=\"eu\"})", 20.0);
    prometheus.wait_for("sum(vigil_records_read_total)", 20.0);

    // The series move: more records, a rejected one, API requests.
    run.send_line(BROKEN);
    send(&mut run, 20, 10);
    call_api(&api);
    prometheus.wait_for("sum(vigil_records_stored_total{geography=\"eu\"})", 30.0);
    prometheus.wait_for(
        "sum(vigil_records_rejected_total{reason=\"malformed_json\",geography=\"unknown\"})",
        1.0,
    );
    prometheus.wait_for(
        "sum(vigil_api_requests_total{operation=\"cases.list\",code=\"401\"})",
        1.0,
    );
    prometheus.wait_for(
        "sum(vigil_api_requests_total{operation=\"openapi\",code=\"200\"})",
        1.0,
    );
    for (query, what) in [
        ("vigil_ingest_bytes_total", "bytes read"),
        (
            "vigil_stage_duration_seconds_count{stage=\"decode\"}",
            "decode timings",
        ),
        (
            "vigil_stage_duration_seconds_count{stage=\"detect\"}",
            "detect timings",
        ),
        (
            "vigil_stage_duration_seconds_count{stage=\"flush\"}",
            "flushes",
        ),
        ("vigil_batch_latency_seconds_count", "batch latencies"),
        (
            "vigil_store_size_bytes{geography=\"eu\"}",
            "the store's size",
        ),
        ("vigil_audit_fsync_duration_seconds_count", "audit syncs"),
        ("vigil_build_info", "the build"),
    ] {
        let value = prometheus.value(query);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{what}: {query} = {value:?}"
        );
    }
    // Stages this run does not have are not sampled at 0 s.
    assert_eq!(
        prometheus.value("vigil_stage_duration_seconds_count{stage=\"abuse\"}"),
        None
    );
    // Alerts compare counters over time: theirs exist from the start, at zero.
    assert_eq!(prometheus.value("vigil_audit_failures_total"), Some(0.0));
    // A histogram, not a summary: buckets a query can aggregate.
    let p99 = prometheus.value(
        "histogram_quantile(0.99, sum by (le) (vigil_stage_duration_seconds_bucket{stage=\"store\"}))",
    );
    assert!(p99.is_some_and(|v| v > 0.0), "{p99:?}");
    // The rules loaded into the real server, and evaluate.
    let rules: Value = ureq::get(&format!("{}/api/v1/rules", prometheus.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{rules}");
    for rule in groups[0]["rules"].as_array().unwrap() {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    let summary = run.finish();
    assert_eq!(crate::util::count(&summary, &["stored", "eu"]), 30);
    // The listener went with the process.
    assert_eq!(get(&metrics, "/healthz").0, 0);
}

#[test]
fn metrics_and_readiness_carry_no_ids_or_content() {
    let (_wd, mut run, metrics, api) = flowing();
    let mut sent = send(&mut run, 0, 20);
    run.send_line(BROKEN);
    sent.extend(send(&mut run, 20, 10));
    call_api(&api);
    let started = Instant::now();
    let exposition = loop {
        let (_, body) = get(&metrics, "/metrics");
        if series_sum(&body, "vigil_records_stored_total") == 30.0
            && series_sum(&body, "vigil_records_rejected_total") == 1.0
            && series_sum(&body, "vigil_api_requests_total") >= 2.0
        {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{body}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let (status, readiness) = get(&metrics, "/readyz");
    assert_eq!(status, 200, "{readiness}");
    for part in ["ok stores:", "ok model:", "ok audit:"] {
        assert!(readiness.contains(part), "{part} in {readiness}");
    }
    assert_eq!(get(&metrics, "/healthz"), (200, "ok\n".into()));

    // Byte for byte, neither names a record, resource, user or content.
    let forbidden = sent.iter().map(String::as_str).chain([
        "req-broken",
        "MARKER",
        "shop-eu",
        "user-1",
        "reply to",
    ]);
    for needle in forbidden {
        for (what, text) in [("/metrics", &exposition), ("/readyz", &readiness)] {
            assert!(
                !text
                    .as_bytes()
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes()),
                "{needle} appears in {what}"
            );
        }
    }
    // Every label is one of the bounded kinds.
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.split_once('}').unwrap().0;
        for pair in labels.split("\",") {
            let (key, _) = pair.split_once('=').unwrap();
            assert!(
                [
                    "geography",
                    "reason",
                    "stage",
                    "le",
                    "operation",
                    "code",
                    "outcome",
                    "version",
                    "subject",
                    "route",
                    "answer",
                    "topic",
                    "partition",
                    "kind",
                ]
                .contains(&key),
                "unexpected label {key} in {line}"
            );
        }
    }
    run.finish();
}

#[test]
fn the_alerting_rules_pass_promtool() {
    let Some(promtool) = debian_tool("promtool") else {
        return;
    };
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(repo().join("deploy/alerts.yml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn readiness_says_when_the_audit_log_cannot_be_written() {
    let wd = Workdir::new();
    wd.write(
        "vigil.toml",
        crate::api::config_with_api("plain_http = true\n"),
    );
    wd.write("resources.toml", REGISTRY);
    wd.write("one.jsonl", record("r1", "shop-eu", "eu", "hello") + "\n");
    wd.run("one.jsonl");
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = crate::api::Server::start(
        &wd,
        &[
            ("VIGIL_ACCESS__AUDIT_LOG", "/dev/full"),
            ("VIGIL_METRICS__LISTEN", &metrics),
        ],
    );
    let (status, readiness) = get(&metrics, "/readyz");
    assert_eq!(status, 200, "{readiness}");
    // A request whose audit entry cannot be written is refused, and the process says it is
    // not ready (it cannot serve reviewers), while still alive.
    let refused = ureq::get(&format!("{}/v1/cases", server.http)).call();
    assert!(matches!(refused, Err(ureq::Error::Status(503, _))));
    let (status, readiness) = get(&metrics, "/readyz");
    assert_eq!(status, 503, "{readiness}");
    assert!(
        readiness.contains("not ready audit: the audit log's writer stopped after a failed write"),
        "{readiness}"
    );
    assert!(readiness.contains("ok stores:"), "{readiness}");
    assert_eq!(get(&metrics, "/healthz").0, 200);
    server.stop();
}
