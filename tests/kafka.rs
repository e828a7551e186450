//! Kafka ingest against a real broker (Tansu): produce, consume, dead-letter, crash, share a
//! group, survive a broker restart, and publish flag events.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::broker::Broker;
use crate::util::{count, http_get, record, series_sum, total, Workdir, REGISTRY};

/// A workdir whose vigil talks to `broker`, with `registry` and `traffic.jsonl`.
pub(crate) fn workdir(broker: &Broker, registry: &str, traffic: &str) -> Workdir {
    let wd = Workdir::new();
    let config = std::fs::read_to_string(wd.path("vigil.toml")).unwrap();
    wd.write("vigil.toml", config + &broker.vigil_config());
    wd.write("resources.toml", registry);
    wd.write("traffic.jsonl", traffic);
    wd
}

/// `vigil run --kafka` in the background, logging at info level to a file.
pub(crate) struct Consumer {
    child: Child,
    /// The last lines of its log once [`Consumer::wait_for_log`] took it over (IDs and codes
    /// only: vigil logs no content), for the message when it fails.
    log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl Consumer {
    pub(crate) fn start(wd: &Workdir, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut args = vec!["run", "--kafka", "--format", "json"];
        args.extend_from_slice(extra);
        let mut cmd = wd.command(&args);
        cmd.env("VIGIL_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Self {
            child: cmd.spawn().expect("vigil starts"),
            log: Default::default(),
        }
    }

    /// The last lines of its log (see [`Consumer::wait_for_lines`]).
    pub(crate) fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits until a line of its log contains `needle`; the log is read on a thread that
    /// keeps draining it afterwards.
    pub(crate) fn wait_for_log(&mut self, needle: &'static str) {
        self.wait_for_lines(&[needle]);
    }

    /// Waits until each of `needles` has appeared in a line of its log, and returns the first
    /// such line of each (escape codes removed), in order; the log is read on a thread that
    /// keeps draining it afterwards.
    pub(crate) fn wait_for_lines(&mut self, needles: &[&'static str]) -> Vec<String> {
        let stderr = self.child.stderr.take().expect("stderr not yet taken");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        let needles: Vec<&'static str> = needles.to_vec();
        let wanted = needles.clone();
        std::thread::spawn(move || {
            let mut found: Vec<Option<String>> = vec![None; wanted.len()];
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let plain = without_escapes(&line);
                for (needle, slot) in wanted.iter().zip(&mut found) {
                    if slot.is_none() && plain.contains(needle) {
                        *slot = Some(plain.clone());
                    }
                }
                if !sent && found.iter().all(Option::is_some) {
                    let _ = tx.send(found.iter().flatten().cloned().collect::<Vec<_>>());
                    sent = true;
                }
                let mut log = log.lock().unwrap();
                if log.len() == 40 {
                    log.pop_front();
                }
                log.push_back(plain);
            }
        });
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(lines) => lines,
            Err(_) => {
                let log = self.log.lock().unwrap();
                let tail = log.iter().cloned().collect::<Vec<_>>().join("\n");
                panic!("the consumer never logged all of {needles:?}; its last lines:\n{tail}");
            }
        }
    }

    /// Sends SIGTERM and returns the JSON summary it prints on a clean exit.
    pub(crate) fn terminate(self) -> Value {
        let pid = self.child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        self.finish()
    }

    /// Kills it (SIGKILL), as a crash would: nothing is drained or committed.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for it to exit by itself (--stop-when-idle) and returns its JSON summary.
    pub(crate) fn finish(mut self) -> Value {
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut stderr).unwrap();
        } else {
            // The draining thread ends with the process; give it a moment to read the rest.
            std::thread::sleep(Duration::from_millis(200));
            let log = self.log.lock().unwrap();
            stderr = log.iter().cloned().collect::<Vec<_>>().join("\n");
        }
        assert!(
            status.success(),
            "the consumer failed ({status})\n{stdout}\n{stderr}"
        );
        serde_json::from_str(&stdout).expect("the JSON summary parses")
    }
}

/// The request IDs stored under each geography of a workdir (after its runs ended).
pub(crate) fn stored_ids(wd: &Workdir, data_dir: &str) -> Vec<(String, String)> {
    let registry = vigil_core::ResourceRegistry::load(&wd.path("resources.toml")).unwrap();
    let config = vigil_storage::StorageConfig {
        data_dir: wd.path(data_dir),
        master_key: wd.path("keys/master.key"),
        ..vigil_storage::StorageConfig::default()
    };
    let stores = vigil_storage::Stores::open(&config, wd.root()).unwrap();
    let mut ids = Vec::new();
    for geo in stores.geographies_on_disk().unwrap() {
        let store = stores.geo(&geo).unwrap();
        for resource in registry.iter() {
            for id in store.request_ids(&resource.id).unwrap() {
                ids.push((geo.to_string(), id.to_string()));
            }
        }
    }
    ids.sort();
    ids
}

/// `n` valid records numbered from `from`, spread over the `a`, `b` and `quiet` resources of
/// [`REGISTRY`].
pub(crate) fn valid_records(n: usize, from: usize) -> String {
    (from..from + n)
        .map(|i| {
            let (resource, geo) = [("a", "us"), ("b", "us"), ("quiet", "eu")][i % 3];
            record(
                &format!("req-{i:06}"),
                resource,
                geo,
                &format!("prompt {i}"),
            ) + "\n"
        })
        .collect()
}

/// A registry of `n` resources in `us`, and `records` valid records spread over them.
fn many_resources(n: usize, records: usize) -> (String, String) {
    let registry = (0..n)
        .map(|r| format!("[[resources]]\nid = \"r{r}\"\ngeography = \"us\"\n"))
        .collect();
    let traffic = (0..records)
        .map(|i| record(&format!("req-{i:06}"), &format!("r{}", i % n), "us", "p") + "\n")
        .collect();
    (registry, traffic)
}

pub(crate) fn produce(wd: &Workdir, file: &str) -> Value {
    let out = wd.ok(&[
        "produce",
        "--input",
        file,
        "--unrouted-to",
        "us",
        "--format",
        "json",
    ]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn every_valid_record_is_stored_once_and_every_bad_one_dead_lettered() {
    let broker = Broker::memory();
    // The shipped sample's shape (broken lines included), generated small. The same file run
    // through `vigil run --input` into a data directory of its own is the oracle.
    let wd = workdir(&broker, "", "");
    wd.ok(&["generate", "--records", "1500", "--output", "traffic.jsonl"]);
    let oracle_env = [
        ("VIGIL_STORAGE__DATA_DIR", "var/oracle"),
        (
            "VIGIL_INGEST__DEAD_LETTERS",
            "var/oracle-dead-letters.jsonl",
        ),
    ];
    let expected = wd.run_with("traffic.jsonl", &oracle_env);
    let loaded = produce(&wd, "traffic.jsonl");
    assert_eq!(count(&loaded, &["unrouted"]), 0);
    // A correct record that arrives on another geography's topic is not stored anywhere.
    let stray = record("stray-1", "contoso-chat-us", "us", "stray prompt");
    broker.send("vigil.logs.eu", "contoso-chat-us", stray.as_bytes());

    let summary = Consumer::start(&wd, &["--stop-when-idle", "4"], &[]).finish();
    assert_eq!(summary["stored"], expected["stored"], "{summary:#}");
    assert_eq!(
        count(&summary, &["content_not_logged"]),
        count(&expected, &["content_not_logged"])
    );
    let mut rejected = expected["rejected"].as_object().unwrap().clone();
    rejected.insert("wrong_topic".into(), 1.into());
    assert_eq!(summary["rejected"], Value::Object(rejected), "{summary:#}");
    assert_eq!(summary["dead_letters"], "kafka topic vigil.deadletter");
    assert!(!stored_ids(&wd, "var/data")
        .iter()
        .any(|(_, id)| id == "stray-1"));

    // Every rejection is one message on the dead-letter topic, with its reason and position.
    let letters = broker.read_all("vigil.deadletter");
    assert_eq!(letters.len() as u64, total(&summary, "rejected"));
    let mut positions = BTreeSet::new();
    for letter in &letters {
        let reason = letter.header("vigil.reason").expect("a reason header");
        assert!(summary["rejected"].get(reason).is_some(), "{reason}");
        assert!(letter.header("vigil.message").is_some());
        let topic = letter.header("vigil.source.topic").unwrap();
        assert!(topic.starts_with("vigil.logs."), "{topic}");
        let partition: i32 = letter
            .header("vigil.source.partition")
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = letter
            .header("vigil.source.offset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(positions.insert((topic.to_owned(), partition, offset)));
        match letter.header("vigil.payload_withheld") {
            // Withheld for a resource that logs no content, or for a broken input that
            // might belong to one.
            Some(why) => {
                assert!(
                    ["content_logging_off", "resource_not_identified"].contains(&why),
                    "{why}"
                );
                assert!(letter.value.is_empty());
            }
            None => assert!(!letter.value.is_empty()),
        }
    }
    let stray_letter = letters
        .iter()
        .find(|l| l.header("vigil.reason") == Some("wrong_topic"))
        .unwrap();
    assert_eq!(stray_letter.value, stray.as_bytes());
    assert_eq!(stray_letter.header("vigil.request_id"), Some("stray-1"));
    // Headers never carry content: only IDs, positions and reasons (the value holds the
    // payload).
    let allowed = [
        "reason",
        "field",
        "message",
        "rejected_at",
        "request_id",
        "resource_id",
        "source.topic",
        "source.partition",
        "source.offset",
        "payload_withheld",
    ];
    for letter in &letters {
        for (key, _) in &letter.headers {
            assert!(
                allowed.iter().any(|a| key == &format!("vigil.{a}")),
                "{key}"
            );
        }
    }

    // Recurring abuse: the same cases as the file run (each resource's records arrive in
    // order on one partition), each published once on its geography's flag topic.
    assert_eq!(
        summary["abuse"]["cases"], expected["abuse"]["cases"],
        "{summary:#}"
    );
    let oracle_flags = std::fs::read_to_string(wd.path("var/flags.jsonl")).unwrap();
    let case_ids = |events: Vec<Value>| -> BTreeSet<String> {
        events
            .iter()
            .map(|e| e["case_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let expected_cases = case_ids(
        oracle_flags
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    );
    assert!(
        !expected_cases.is_empty(),
        "the sample has repeat offenders"
    );
    let mut published = Vec::new();
    for geography in ["apac", "eu", "us"] {
        for message in broker.read_all(&format!("vigil.flags.{geography}")) {
            let event: Value = serde_json::from_slice(&message.value).unwrap();
            assert_eq!(event["geography"], geography);
            published.push(event);
        }
    }
    assert_eq!(published.len(), expected_cases.len(), "{published:#?}");
    assert_eq!(case_ids(published), expected_cases);
}

#[test]
fn a_consumer_killed_midway_resumes_without_losing_or_duplicating() {
    let broker = Broker::memory();
    let n = 20_000;
    let wd = workdir(&broker, REGISTRY, &valid_records(n, 0));
    // Tansu 0.6.0 cannot fetch from an offset inside a stored record batch (it skips to the
    // next batch), so a consumer resuming from a committed offset would miss the rest of that
    // batch. Real Kafka returns the whole batch. One message per batch keeps every offset a
    // batch boundary.
    let config = std::fs::read_to_string(wd.path("vigil.toml")).unwrap();
    wd.write(
        "vigil.toml",
        config + "[kafka.producer]\n\"batch.num.messages\" = \"1\"\n",
    );
    produce(&wd, "traffic.jsonl");
    // This test is about offsets, not detection: its 40,000 two-word texts sit near the cheap
    // stage's routing score and would all go through the sentence encoder, so the cheap stage
    // alone scores them.
    let cheap = ("VIGIL_DETECTORS__SEMANTIC__ENABLED", "false");
    let mut first = Consumer::start(&wd, &[], &[("VIGIL_LOG", "info,vigil_kafka=debug"), cheap]);
    first.wait_for_log("Offsets committed");
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // The killed member keeps its partitions until its session times out; the group has
    // caught up once every partition's committed offset is its end.
    let second = Consumer::start(&wd, &[], &[cheap]);
    broker.wait_caught_up("vigil", &["vigil.logs.us", "vigil.logs.eu"]);
    let second = second.terminate();
    let reread = count(&second, &["read"]);
    assert!(
        0 < reread && reread < n as u64,
        "the consumer was not killed midway: {second:#}"
    );
    let ids = stored_ids(&wd, "var/data");
    assert_eq!(ids.len(), n, "every record stored exactly once");
    let expected: BTreeSet<String> = (0..n).map(|i| format!("req-{i:06}")).collect();
    let got: BTreeSet<String> = ids.into_iter().map(|(_, id)| id).collect();
    assert_eq!(got, expected);
}

#[test]
fn two_consumers_in_one_group_share_the_partitions() {
    let broker = Broker::memory();
    let n = 6_000;
    let (registry, traffic) = many_resources(12, n);
    let wd = workdir(&broker, &registry, &traffic);
    // Each group member owns its data directory (sled allows one process per directory) and
    // its exports (two processes rewriting one partition directory race on its files).
    let mut one = Consumer::start(
        &wd,
        &["--stop-when-idle", "15"],
        &[
            ("VIGIL_STORAGE__DATA_DIR", "var/one"),
            ("VIGIL_ANALYTICS__EXPORT_DIR", "var/one-exports"),
            ("VIGIL_KAFKA__NODE", "node-one"),
        ],
    );
    one.wait_for_log("Partitions assigned");
    let mut two = Consumer::start(
        &wd,
        &["--stop-when-idle", "15"],
        &[
            ("VIGIL_STORAGE__DATA_DIR", "var/two"),
            ("VIGIL_ANALYTICS__EXPORT_DIR", "var/two-exports"),
            ("VIGIL_KAFKA__NODE", "node-two"),
        ],
    );
    two.wait_for_log("Partitions assigned");
    // The node directory names both members, each of the log topic's 4 partitions under
    // exactly one.
    let started = Instant::now();
    let directory = loop {
        let nodes: Value = serde_json::from_str(&wd.ok(&["nodes", "--format", "json"])).unwrap();
        let owned: Vec<(String, u64)> = (nodes.as_array().unwrap().iter())
            .flat_map(|n| n["partitions"].as_array().unwrap().clone())
            .map(|p| {
                (
                    p["topic"].as_str().unwrap().to_owned(),
                    p["partition"].as_u64().unwrap(),
                )
            })
            .collect();
        let distinct: BTreeSet<_> = owned.iter().cloned().collect();
        let both = (nodes.as_array().unwrap().iter())
            .all(|n| !n["partitions"].as_array().unwrap().is_empty());
        if nodes.as_array().unwrap().len() == 2 && both && owned.len() == 4 && distinct.len() == 4 {
            break nodes;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{nodes:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(directory[0]["node"], "node-one", "{directory:#}");
    assert_eq!(directory[1]["node"], "node-two", "{directory:#}");
    produce(&wd, "traffic.jsonl");
    let (s1, s2) = (one.finish(), two.finish());
    // Members that stopped cleanly leave the directory.
    let left: Value = serde_json::from_str(&wd.ok(&["nodes", "--format", "json"])).unwrap();
    assert_eq!(left, serde_json::json!([]));
    let ids1 = stored_ids(&wd, "var/one");
    let ids2 = stored_ids(&wd, "var/two");
    assert!(
        !ids1.is_empty() && !ids2.is_empty(),
        "one consumer got no partitions: {s1:#} {s2:#}"
    );
    let set1: BTreeSet<_> = ids1.iter().cloned().collect();
    assert!(
        ids2.iter().all(|id| !set1.contains(id)),
        "a record stored twice"
    );
    assert_eq!(ids1.len() + ids2.len(), n);
    // One resource's records all went to one consumer: keyed by resource, one partition.
    let owner = |request_id: &str| request_id["req-".len()..].parse::<usize>().unwrap() % 12;
    for resource in 0..12 {
        let in1 = ids1.iter().any(|(_, id)| owner(id) == resource);
        let in2 = ids2.iter().any(|(_, id)| owner(id) == resource);
        assert!(
            in1 != in2,
            "resource r{resource} was split across consumers"
        );
    }
}

#[test]
fn the_consumer_rides_out_a_broker_restart() {
    let state = tempfile::tempdir().unwrap();
    let mut broker = Broker::sqlite(state.path());
    let wd = workdir(&broker, REGISTRY, &valid_records(3_000, 0));
    wd.write("more.jsonl", valid_records(3_000, 3_000));
    let mut consumer = Consumer::start(&wd, &[], &[]);
    consumer.wait_for_log("Partitions assigned");
    produce(&wd, "traffic.jsonl");
    let topics = ["vigil.logs.us", "vigil.logs.eu"];
    broker.wait_caught_up("vigil", &topics);

    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    produce(&wd, "more.jsonl");
    broker.wait_caught_up("vigil", &topics);
    let started = Instant::now();
    let summary = consumer.terminate();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "SIGTERM took too long"
    );
    assert_eq!(total(&summary, "rejected"), 0, "{summary:#}");
    let ids = stored_ids(&wd, "var/data");
    assert_eq!(ids.len(), 6_000, "{summary:#}");
}

#[test]
fn flag_events_are_published_and_tailed_without_content() {
    let broker = Broker::memory();
    let marker = "MARKER-flagged-content-7731";
    let traffic = [
        record("bad-1", "a", "us", marker),
        record("bad-2", "a", "us", marker),
        record("fine-1", "b", "us", "hello"),
    ]
    .join("\n");
    let wd = workdir(&broker, REGISTRY, &traffic);
    wd.run("traffic.jsonl");
    let raised: Value = serde_json::from_str(&wd.ok(&[
        "flags",
        "raise",
        "--request-id",
        "bad-1",
        "--request-id",
        "bad-2",
        "--category",
        "jailbreak",
        "--score",
        "0.9",
    ]))
    .unwrap();
    let err = wd.fails(&[
        "flags",
        "raise",
        "--request-id",
        "nope",
        "--category",
        "hate",
    ]);
    assert!(
        err.contains("no stored record has request ID nope"),
        "{err}"
    );
    let err = wd.fails(&[
        "flags",
        "raise",
        "--request-id",
        "bad-1",
        "--category",
        "rude",
    ]);
    assert!(err.contains("--category: unknown category"), "{err}");

    let tailed = wd.ok(&[
        "flags",
        "tail",
        "--from-beginning",
        "--stop-when-idle",
        "8",
        "--geography",
        "us",
    ]);
    let events: Vec<Value> = tailed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events, vec![raised.clone()], "{tailed}");
    let event = &events[0];
    assert_eq!(event["schema_version"], 1);
    assert_eq!(event["origin"], "manual");
    assert_eq!(event["geography"], "us");
    assert_eq!(event["resource_id"], "a");
    assert_eq!(event["subject"]["kind"], "end_user");
    assert_eq!(event["request_ids"], serde_json::json!(["bad-1", "bad-2"]));
    assert_eq!(event["categories"], serde_json::json!(["jailbreak"]));
    assert!(!tailed.contains(marker) && !tailed.contains("reply to"));
    // The topic itself holds the same event, keyed by resource, and nothing else.
    let messages = broker.read_all("vigil.flags.us");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].key.as_deref(), Some("a"));
    assert_eq!(messages[0].header("vigil.schema_version"), Some("1"));
    assert!(!String::from_utf8_lossy(&messages[0].value).contains(marker));
}

/// The production shape: one `vigil run --kafka --api` process consumes, stores, serves the
/// API and the metrics listener, takes up a changed policy and a registry change without a
/// restart, and on SIGTERM drains, commits and closes every listener.
#[test]
fn the_daemon_serves_reloads_and_drains_on_sigterm() {
    let broker = Broker::memory();
    let wd = workdir(&broker, REGISTRY, &valid_records(1_500, 0));
    wd.write("more.jsonl", valid_records(900, 1_500));
    let config = std::fs::read_to_string(wd.path("vigil.toml")).unwrap();
    wd.write("vigil.toml", config + "[api]\nplain_http = true\n");
    let policy = std::fs::read_to_string(crate::util::repo().join("policies/abuse.toml")).unwrap();
    wd.write("policy.toml", &policy);
    let free = || format!("127.0.0.1:{}", crate::llm::free_port());
    let (metrics, api, workstations) = (free(), free(), free());
    let policy_path = wd.path("policy.toml");
    let admin = crate::api::principal(&wd, "adam", "admin", "non-eea", &[]);
    let mut daemon = Consumer::start(
        &wd,
        &["--api"],
        &[
            ("VIGIL_METRICS__LISTEN", &metrics),
            ("VIGIL_API__LISTEN", &api),
            ("VIGIL_API__WORKSTATION_LISTEN", &workstations),
            ("VIGIL_ABUSE__POLICY", policy_path.to_str().unwrap()),
        ],
    );
    daemon.wait_for_log("Partitions assigned");
    let started = Instant::now();
    let readiness = loop {
        let (status, body) = http_get(&format!("http://{metrics}/readyz"));
        if status == 200 {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for part in [
        "ok kafka: joined group vigil",
        "ok stores:",
        "ok model:",
        "ok audit:",
    ] {
        assert!(readiness.contains(part), "{part} in {readiness}");
    }

    // The node directory names this node, its API and every log partition.
    let nodes: Value = serde_json::from_str(&wd.ok(&["nodes", "--format", "json"])).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes:#}");
    assert_eq!(nodes[0]["api"], format!("http://{api}"), "{nodes:#}");
    assert_eq!(
        nodes[0]["partitions"].as_array().unwrap().len(),
        8,
        "{nodes:#}"
    );

    produce(&wd, "traffic.jsonl");
    let topics = ["vigil.logs.us", "vigil.logs.eu"];
    broker.wait_caught_up("vigil", &topics);
    // The API answers from the same process.
    let anonymous = ureq::get(&format!("http://{api}/v1/cases")).call();
    assert!(matches!(anonymous, Err(ureq::Error::Status(401, _))));
    // The policy and the registry change under the running daemon.
    wd.write(
        "policy.toml",
        policy.replace("version = \"2026-12-04.1\"", "version = \"2026-12-04.2\""),
    );
    let changed: Value = ureq::request("PATCH", &format!("http://{api}/v1/resources/b"))
        .set("Authorization", &format!("Bearer {admin}"))
        .send_json(serde_json::json!({"content_logging": false}))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(changed["content_destroyed_records"], 500, "{changed}");
    // A resource added to the file is taken up too (its records were unknown before), once
    // the daemon records that it applied the new version.
    let marker = wd.path("var/data/registry.applied");
    let registry = std::fs::read_to_string(wd.path("resources.toml")).unwrap();
    wd.write(
        "resources.toml",
        registry + "\n[[resources]]\nid = \"c\"\ngeography = \"us\"\n",
    );
    let version = vigil_pipeline::live::registry_version(&wd.path("resources.toml"));
    wd.write("added.jsonl", record("req-c-1", "c", "us", "p") + "\n");
    let started = Instant::now();
    while std::fs::read_to_string(&marker).ok() != version {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the change was never applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    produce(&wd, "more.jsonl");
    produce(&wd, "added.jsonl");
    broker.wait_caught_up("vigil", &topics);
    let started = Instant::now();
    let exposition = loop {
        let (_, body) = http_get(&format!("http://{metrics}/metrics"));
        if series_sum(&body, "vigil_kafka_consumer_lag") == 0.0
            && body.contains("vigil_kafka_consumer_lag{")
            && series_sum(&body, "vigil_records_stored_total") == 2_401.0
        {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{body}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(series_sum(&exposition, "vigil_kafka_commits_total") > 0.0);
    assert!(series_sum(&exposition, "vigil_policy_reloads_total") == 1.0);

    let stopping = Instant::now();
    let summary = daemon.terminate();
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "SIGTERM took too long"
    );
    assert_eq!(summary["stored"]["us"].as_u64(), Some(1_601), "{summary:#}");
    assert_eq!(total(&summary, "rejected"), 0, "{summary:#}");
    assert_eq!(
        summary["abuse"]["policy_reloads"].as_u64(),
        Some(1),
        "{summary:#}"
    );
    assert_eq!(summary["abuse"]["policy_version"], "2026-12-04.2");
    // Every listener closed with the process.
    for addr in [&metrics, &api, &workstations] {
        assert!(
            std::net::TcpStream::connect(addr.as_str()).is_err(),
            "{addr} still open"
        );
    }
    // What the daemon read is committed: a member joining now finds nothing left to read.
    let rest = Consumer::start(&wd, &["--stop-when-idle", "3"], &[]).finish();
    assert_eq!(rest["read"].as_u64(), Some(0), "{rest:#}");
    assert_eq!(stored_ids(&wd, "var/data").len(), 2_401);
    // A record of `b` sent after the change was stored without its content.
    let after = wd.read_stored("b", "req-001501", |_| {}).unwrap().unwrap();
    assert!(after.content.is_none());
}

/// `line` without terminal escape sequences (the log's colours).
fn without_escapes(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
