//! Three `vigil run --kafka --api` nodes in one consumer group, as separate processes with
//! their own data directories, access stores and audit logs, on a real Tansu broker: each
//! stores only its partitions' records, and a reviewer or an admin reaches every case and
//! flagged record through any node, which forwards to the node storing it over mutual TLS
//! with cluster-CA certificates (`[cluster]`). Both nodes audit a forwarded request, and a
//! node killed with SIGKILL is reported unreachable, never taken for one without the data;
//! when its disk is lost as well, the survivors rebuild its partitions from the changelog and
//! answer for every record again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{call, code};
use crate::broker::{self, Broker};
use crate::kafka::{produce, stored_ids, workdir, Consumer};
use crate::util::{http_get, series_sum, Workdir};

/// One node: its name, its settings and, once started, its listeners (on ports the system
/// picked: no other test can take them between choosing and binding).
struct Node {
    name: String,
    envs: Vec<(String, String)>,
    api: String,
    workstations: String,
    peer: String,
    metrics: String,
    process: Option<Consumer>,
}

impl Node {
    fn new(wd: &Workdir, n: usize) -> Self {
        let name = format!("node-{n}");
        wd.ok(&[
            "cluster",
            "issue",
            "--node",
            &name,
            "--host",
            "127.0.0.1",
            "--ca-dir",
            "var/cluster-ca",
            "--out",
            "cluster",
        ]);
        let dir = format!("var/{name}");
        let envs: Vec<(String, String)> = [
            ("VIGIL_KAFKA__NODE", name.clone()),
            ("VIGIL_STORAGE__DATA_DIR", format!("{dir}/data")),
            ("VIGIL_ANALYTICS__EXPORT_DIR", format!("{dir}/exports")),
            ("VIGIL_ABUSE__CASE_ID_KEY", format!("{dir}/case-id.key")),
            ("VIGIL_ACCESS__DIR", format!("{dir}/access")),
            ("VIGIL_ACCESS__AUDIT_LOG", format!("{dir}/audit.jsonl")),
            ("VIGIL_ACCESS__POINT_QUERIES_PER_MINUTE", "100000".into()),
            ("VIGIL_ACCESS__POINT_QUERY_BURST", "1000".into()),
            ("VIGIL_API__PLAIN_HTTP", "true".into()),
            ("VIGIL_API__LISTEN", "127.0.0.1:0".into()),
            ("VIGIL_API__WORKSTATION_LISTEN", "127.0.0.1:0".into()),
            ("VIGIL_METRICS__LISTEN", "127.0.0.1:0".into()),
            ("VIGIL_CLUSTER__ENABLED", "true".into()),
            ("VIGIL_CLUSTER__LISTEN", "127.0.0.1:0".into()),
            ("VIGIL_CLUSTER__CA", "cluster/ca.pem".into()),
            ("VIGIL_CLUSTER__CERT", format!("cluster/{name}.pem")),
            ("VIGIL_CLUSTER__KEY", format!("cluster/{name}.key")),
            ("VIGIL_CLUSTER__REFRESH_MS", "300".into()),
            // Idle keep-alive connections close after 2 s: forwarding must not trip over one
            // its peer closed (the test pauses longer than that below).
            ("VIGIL_API__HEADER_READ_TIMEOUT_MS", "2000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            name,
            envs,
            api: String::new(),
            workstations: String::new(),
            peer: String::new(),
            metrics: String::new(),
            process: None,
        }
    }

    fn envs(&self) -> Vec<(&str, &str)> {
        self.envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// `vigil` with this node's settings (its access store, its audit log).
    fn ok(&self, wd: &Workdir, args: &[&str]) -> String {
        wd.ok_with(args, b"", &self.envs()).0
    }

    /// Adds a principal to this node's access store and returns a token of theirs.
    fn principal(&self, wd: &Workdir, name: &str, role: &str, region: &str) -> String {
        crate::api::principal_with(wd, [name, role, region], &[], &self.envs())
    }

    /// Starts the node and reads where its listeners are from its log: the metrics
    /// listener's line, then the API's announcement (metadata, workstation and peer URLs).
    fn start(&mut self, wd: &Workdir) {
        let mut process = Consumer::start(wd, &["--api"], &self.envs());
        let lines =
            process.wait_for_lines(&["Serving /metrics", "vigil API on", "Partitions assigned"]);
        self.metrics = lines[0]
            .split_whitespace()
            .find_map(|word| word.strip_prefix("address="))
            .expect("the metrics listener's address")
            .to_owned();
        let urls: Vec<&str> = lines[1]
            .split_whitespace()
            .filter(|word| word.starts_with("http"))
            .map(|url| url.trim_end_matches([',', ')', ';']))
            .collect();
        assert_eq!(
            urls.len(),
            3,
            "metadata, workstation and peer URLs in {}",
            lines[1]
        );
        self.api = urls[0].to_owned();
        self.workstations = urls[1].to_owned();
        self.peer = urls[2].trim_start_matches("https://").to_owned();
        self.process = Some(process);
    }

    /// A point query through this node's workstation listener, from its workstation.
    fn read(&self, wd: &Workdir, token: &str, case: &str, request: &str) -> (u16, Value) {
        call(
            &crate::api::agent(wd, Some(&format!("ws-{}", self.name))),
            "GET",
            &format!("{}/v1/cases/{case}/records/{request}", self.workstations),
            Some(token),
            None,
        )
    }

    fn audit(&self, wd: &Workdir) -> Vec<Value> {
        std::fs::read_to_string(wd.path(&format!("var/{}/audit.jsonl", self.name)))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Waits until the directory lists `n` nodes, each owning partitions, every log partition
/// exactly once.
fn wait_for_directory(wd: &Workdir, n: usize, partitions: usize) {
    let started = Instant::now();
    loop {
        let nodes: Value = serde_json::from_str(&wd.ok(&["nodes", "--format", "json"])).unwrap();
        let entries = nodes.as_array().unwrap();
        let owned: Vec<Value> = entries
            .iter()
            .flat_map(|e| e["partitions"].as_array().unwrap().clone())
            .collect();
        let distinct: BTreeSet<String> = owned.iter().map(Value::to_string).collect();
        let all_peers = entries
            .iter()
            .all(|e| !e["partitions"].as_array().unwrap().is_empty() && e["peer"].is_string());
        if entries.len() == n
            && all_peers
            && owned.len() == partitions
            && distinct.len() == partitions
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{nodes:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until the `alive` nodes own every partition between them and who owns what has not
/// changed for longer than a member takes to notice a rebalance (a node announces its
/// partitions only once it has rebuilt them). Tansu 0.6's coordinator sometimes keeps two
/// members taking turns at rebalancing, each time with the same assignment, so the
/// announcements' times and the nodes' readiness are left out.
fn settle(wd: &Workdir, nodes: &[Node], alive: &[usize]) {
    let names: BTreeSet<&str> = alive.iter().map(|i| nodes[*i].name.as_str()).collect();
    let started = Instant::now();
    let mut settled: Option<(BTreeMap<String, Value>, Instant)> = None;
    loop {
        let directory: Value =
            serde_json::from_str(&wd.ok(&["nodes", "--format", "json"])).unwrap();
        let owners: BTreeMap<String, Value> = directory
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| names.contains(e["node"].as_str().unwrap()))
            .map(|e| {
                (
                    e["node"].as_str().unwrap().to_owned(),
                    e["partitions"].clone(),
                )
            })
            .collect();
        let owned: usize = owners.values().map(|p| p.as_array().unwrap().len()).sum();
        if owned == 12 {
            match &settled {
                Some((seen, since)) if *seen == owners => {
                    if since.elapsed() > Duration::from_secs(8) {
                        return;
                    }
                }
                _ => settled = Some((owners, Instant::now())),
            }
        } else {
            settled = None;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let logs: Vec<String> = alive
                .iter()
                .map(|i| nodes[*i].process.as_ref().unwrap().tail())
                .collect();
            panic!(
                "the nodes {names:?} did not settle: {directory:#}\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A client of the peer listener: trusting the cluster CA, presenting `identity` (a
/// certificate and its key) if given.
fn peer_client(wd: &Workdir, identity: Option<(&str, &str)>) -> ureq::Agent {
    crate::api::tls_agent(wd, "cluster/ca.pem", identity)
}

#[test]
fn three_nodes_answer_for_each_other_over_mutual_tls() {
    let broker = Broker::memory();
    let sample = crate::util::sample_workdir();
    let traffic = std::fs::read(sample.path("traffic.jsonl")).unwrap();
    let registry = std::fs::read_to_string(sample.path("resources.toml")).unwrap();
    let wd = workdir(&broker, &registry, &String::from_utf8_lossy(&traffic));
    wd.write("traffic.jsonl", &traffic);
    for key in std::fs::read_dir(sample.path("keys")).unwrap() {
        let key = key.unwrap();
        wd.write(
            &format!("keys/{}", key.file_name().to_string_lossy()),
            std::fs::read(key.path()).unwrap(),
        );
    }
    // One workstation CA for the three nodes' workstation listeners (each node registers
    // the reviewer's certificate in its own access store).
    let config = std::fs::read_to_string(wd.path("vigil.toml")).unwrap();
    wd.write(
        "vigil.toml",
        config + "[access]\nca_dir = \"var/workstation-ca\"\n",
    );
    let mut nodes: Vec<Node> = (1..=3).map(|n| Node::new(&wd, n)).collect();
    let mut tokens: BTreeMap<(usize, &str), String> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for (name, role, region) in [
            ("rita", "reviewer", "eea"),
            ("max", "manager", "eea"),
            ("adam", "admin", "non-eea"),
        ] {
            tokens.insert((i, name), node.principal(&wd, name, role, region));
        }
        let ws = format!("ws-{}", node.name);
        node.ok(
            &wd,
            &[
                "admin",
                "workstation",
                "issue",
                &ws,
                "--generate-key",
                "--out",
                "ws",
            ],
        );
    }
    // One at a time: the first creates the workstation listener's server certificate.
    for node in &mut nodes {
        node.start(&wd);
    }
    wait_for_directory(&wd, 3, 12);
    produce(&wd, "traffic.jsonl");
    broker.wait_caught_up(
        "vigil",
        &["vigil.logs.us", "vigil.logs.eu", "vigil.logs.apac"],
    );

    // The case list is the same from every node, and its cases are spread over the nodes.
    let plain = crate::api::agent(&wd, None);
    let mut lists = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (status, body) = call(
            &plain,
            "GET",
            &format!("{}/v1/cases", node.api),
            Some(&tokens[&(i, "rita")]),
            None,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["unreachable_nodes"], json!([]), "{body}");
        let cases: BTreeMap<String, (String, Vec<String>, String)> = body["cases"]
            .as_array()
            .unwrap()
            .iter()
            // Cases of resources that keep no content have nothing to read.
            .filter(|c| c["content_logging"] == true)
            .map(|c| {
                let sample = c["sample"].as_array().unwrap();
                (
                    c["case_id"].as_str().unwrap().to_owned(),
                    (
                        c["node"].as_str().unwrap().to_owned(),
                        sample
                            .iter()
                            .map(|r| r.as_str().unwrap().to_owned())
                            .collect(),
                        c["resource_id"].as_str().unwrap().to_owned(),
                    ),
                )
            })
            .collect();
        lists.push(cases);
    }
    assert!(!lists[0].is_empty());
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[0], lists[2]);
    let cases = lists.swap_remove(0);
    let holders: BTreeSet<&str> = cases.values().map(|(n, _, _)| n.as_str()).collect();
    assert!(holders.len() >= 2, "cases all on one node: {holders:?}");

    // A reviewer reads every flagged record of every case through every node: through the
    // node storing it, and through the others, which forward the read.
    let records: Vec<Value> = String::from_utf8_lossy(&traffic)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let prompts: BTreeMap<String, String> = records
        .iter()
        .filter_map(|r| {
            Some((
                r["request_id"].as_str()?.to_owned(),
                r["prompt"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let mut forwarded = 0;
    for (i, node) in nodes.iter().enumerate() {
        for (case, (holder, sample, _)) in &cases {
            let (status, asked) = call(
                &plain,
                "POST",
                &format!("{}/v1/cases/{case}/access-requests", node.api),
                Some(&tokens[&(i, "rita")]),
                Some(json!({"reason": "cluster test"})),
            );
            assert_eq!(status, 201, "{asked}");
            let id = asked["id"].as_str().unwrap();
            let (status, approved) = call(
                &plain,
                "POST",
                &format!("{}/v1/access-requests/{id}/approve", node.api),
                Some(&tokens[&(i, "max")]),
                None,
            );
            assert_eq!(status, 200, "{approved}");
            for request in sample {
                let (status, record) = node.read(&wd, &tokens[&(i, "rita")], case, request);
                assert_eq!(
                    status, 200,
                    "{} reading {case}/{request}: {record}",
                    node.name
                );
                assert_eq!(
                    record["prompt"].as_str(),
                    prompts.get(request).map(String::as_str)
                );
                if *holder != node.name {
                    forwarded += 1;
                }
            }
        }
    }
    assert!(forwarded > 0);

    // Both nodes audited each forwarded read: the one the reviewer called names the node
    // that answered, the owner names the node that forwarded it.
    let (case, (holder, sample, resource)) = cases
        .iter()
        .find(|(_, (holder, _, _))| *holder != nodes[0].name)
        .unwrap();
    let owner = nodes.iter().position(|n| n.name == *holder).unwrap();
    let read = |entry: &Value| {
        entry["action"] == "record.read"
            && entry["outcome"] == "granted"
            && entry["case_id"] == case.as_str()
            && entry["request_id"] == sample[0].as_str()
    };
    let asked = nodes[0].audit(&wd);
    assert!(
        asked.iter().any(|e| read(e)
            && e["actor"] == "rita"
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("answered by node {holder}"))),
        "no entry on node-1 for the forwarded read"
    );
    let answered = nodes[owner].audit(&wd);
    assert!(
        answered.iter().any(|e| read(e)
            && e["actor"] == "rita"
            && e["workstation"] == "ws-node-1"
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("forwarded by node node-1")),
        "no entry on {holder} for the read node-1 forwarded"
    );
    // The case lookups before it are on record there too, under the reviewer's name.
    assert!(
        answered.iter().any(|e| e["action"] == "peer.case.view"
            && e["actor"] == "rita"
            && e["role"] == "reviewer"
            && e["case_id"] == case.as_str()),
        "no case lookup by rita on {holder}"
    );
    // A record the case did not flag is refused (by the owner: the case is remembered there).
    let unflagged = records
        .iter()
        .filter(|r| r["resource_id"] == resource.as_str())
        .filter_map(|r| r["request_id"].as_str())
        .find(|r| !cases.values().any(|(_, s, _)| s.iter().any(|f| f == r)))
        .unwrap();
    let (status, refused) = nodes[0].read(&wd, &tokens[&(0, "rita")], case, unflagged);
    assert_eq!(
        (status, code(&refused)),
        (404, "not_available"),
        "{refused}"
    );

    // The peer listener takes only cluster certificates: a node's is answered, a
    // workstation's, or none, is refused during the handshake.
    let peer_cases = format!("https://{}/peer/v1/cases", nodes[owner].peer);
    let answered = peer_client(&wd, Some(("cluster/node-1.pem", "cluster/node-1.key")))
        .get(&peer_cases)
        .call()
        .unwrap();
    assert_eq!(answered.status(), 200);
    for client in [
        peer_client(&wd, Some(("ws/ws-node-1.pem", "ws/ws-node-1.key"))),
        peer_client(&wd, None),
    ] {
        let refused = client.get(&peer_cases).call();
        assert!(
            matches!(refused, Err(ureq::Error::Transport(_))),
            "{refused:?}"
        );
    }

    // An admin deletes a record through a node that does not store it: the owner deletes it
    // and audits it, and no node reads it any more.
    let deleting = (owner + 1) % 3;
    let delete = || {
        call(
            &plain,
            "DELETE",
            &format!(
                "{}/v1/resources/{resource}/requests/{}",
                nodes[deleting].api, sample[0]
            ),
            Some(&tokens[&(deleting, "adam")]),
            None,
        )
    };
    let (status, deleted) = delete();
    assert_eq!(status, 200, "{deleted}");
    // The owner deleted it; a node that held its partition before a rebalance, and has not
    // let go of it yet, deletes its copy too.
    assert!(
        deleted["nodes"]
            .as_array()
            .unwrap()
            .contains(&json!(holder)),
        "{deleted}"
    );
    assert!(nodes[owner]
        .audit(&wd)
        .iter()
        .any(|e| e["action"] == "data.delete_request"
            && e["actor"] == "adam"
            && e["request_id"] == sample[0].as_str()
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("forwarded by node {}", nodes[deleting].name))));
    // In the changelog, the record is in no segment compaction keeps: its segment's latest
    // version leaves it out (its resource-day was re-sealed under a new key), though older
    // versions still hold it until compaction removes them.
    let registry = vigil_core::ResourceRegistry::load(&wd.path("resources.toml")).unwrap();
    let geography = &registry.get(resource).unwrap().geography;
    let changelog = broker.read_all(&format!("vigil.changelog.{geography}"));
    let mut latest: BTreeMap<&[u8], &broker::TopicMessage> = BTreeMap::new();
    for message in &changelog {
        latest.insert(&message.raw_key, message);
    }
    // Segments (changelog key `r` + `S`...) hold records; a case's sample names the record
    // too, by ID only, and stays.
    let mentions = |m: &broker::TopicMessage| {
        m.raw_key.starts_with(b"rS")
            && m.value
                .windows(sample[0].len())
                .any(|w| w == sample[0].as_bytes())
    };
    assert!(
        changelog.iter().any(mentions),
        "the record was never in the changelog"
    );
    let kept: Vec<_> = latest
        .values()
        .filter(|m| !m.tombstone && mentions(m))
        .collect();
    assert!(
        kept.is_empty(),
        "the deleted record is in {} kept changelog values",
        kept.len()
    );
    // Longer than the peers keep an idle connection open (reading the changelog took that).
    std::thread::sleep(Duration::from_secs(1));
    for (i, node) in nodes.iter().enumerate() {
        let (status, gone) = node.read(&wd, &tokens[&(i, "rita")], case, &sample[0]);
        assert_eq!((status, code(&gone)), (404, "not_available"), "{gone}");
    }
    let (status, again) = delete();
    assert_eq!((status, code(&again)), (404, "not_available"), "{again}");

    // The owner counted the reads it answered for other nodes.
    let (_, exposition) = http_get(&format!("http://{}/metrics", nodes[owner].metrics));
    let answered_reads = exposition
        .lines()
        .find(|l| l.starts_with("vigil_peer_requests_total{operation=\"read\",code=\"200\"}"))
        .unwrap_or_else(|| panic!("no peer reads counted:\n{exposition}"));
    assert!(!answered_reads.ends_with(" 0"), "{answered_reads}");

    // Every node is ready; between them they stored each valid record once.
    let mut stored = 0.0;
    for node in &nodes {
        let started = Instant::now();
        loop {
            let (status, readiness) = http_get(&format!("http://{}/readyz", node.metrics));
            if status == 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{}: {readiness}",
                node.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let (_, exposition) = http_get(&format!("http://{}/metrics", node.metrics));
        stored += series_sum(&exposition, "vigil_records_stored_total");
    }

    // The owner dies (kill -9). The others say they cannot reach it, rather than answer as if
    // its cases did not exist.
    nodes[owner].process.take().unwrap().kill();
    let asking = (owner + 1) % 3;
    let (status, listed) = call(
        &plain,
        "GET",
        &format!("{}/v1/cases", nodes[asking].api),
        Some(&tokens[&(asking, "rita")]),
        None,
    );
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["unreachable_nodes"], json!([holder]), "{listed}");
    let (status, view) = call(
        &plain,
        "GET",
        &format!("{}/v1/cases/{case}", nodes[asking].api),
        Some(&tokens[&(asking, "rita")]),
        None,
    );
    assert_eq!((status, code(&view)), (503, "peer_unavailable"), "{view}");
    assert!(view["error"]["message"]
        .as_str()
        .unwrap()
        .contains(holder.as_str()));

    // Its disk is lost too. The group gives its partitions to the survivors, which rebuild
    // them from the changelog before they consume them.
    std::fs::remove_dir_all(wd.path(&format!("var/{holder}/data"))).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    settle(&wd, &nodes, &survivors);
    let mut rebuilt = 0.0;
    for i in &survivors {
        let (_, exposition) = http_get(&format!("http://{}/metrics", nodes[*i].metrics));
        rebuilt += series_sum(&exposition, "vigil_changelog_rebuilt_records_total");
    }
    assert!(rebuilt > 0.0, "no record was rebuilt from the changelog");

    // Every flagged record of the lost node's cases reads through `node` (the `i`th) as it
    // was sent; the deleted one stays deleted.
    let reads_lost_cases = |node: &Node, i: usize| {
        for (lost_case, (was_on, flagged, _)) in &cases {
            if was_on != holder {
                continue;
            }
            for request in flagged {
                let (status, record) = node.read(&wd, &tokens[&(i, "rita")], lost_case, request);
                if *request == sample[0] {
                    assert_eq!((status, code(&record)), (404, "not_available"), "{record}");
                    continue;
                }
                assert_eq!(
                    status, 200,
                    "{} reading {lost_case}/{request}: {record}",
                    node.name
                );
                assert_eq!(
                    record["prompt"].as_str(),
                    prompts.get(request).map(String::as_str)
                );
            }
        }
    };
    // Every case is back, and readable through either survivor.
    for i in &survivors {
        let (status, listed) = call(
            &plain,
            "GET",
            &format!("{}/v1/cases", nodes[*i].api),
            Some(&tokens[&(*i, "rita")]),
            None,
        );
        assert_eq!(status, 200, "{listed}");
        let listed: BTreeSet<&str> = listed["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["content_logging"] == true)
            .map(|c| c["case_id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, cases.keys().map(String::as_str).collect());
        reads_lost_cases(&nodes[*i], *i);
    }

    // The lost node comes back with an empty disk. It gets the day-key ratchet from a peer,
    // rebuilds the partitions it is given, and reads the lost cases' records again itself.
    nodes[owner].start(&wd);
    let everyone: Vec<usize> = (0..3).collect();
    settle(&wd, &nodes, &everyone);
    let (_, exposition) = http_get(&format!("http://{}/metrics", nodes[owner].metrics));
    assert!(
        series_sum(&exposition, "vigil_changelog_rebuilt_records_total") > 0.0,
        "{holder} came back without rebuilding its partitions"
    );
    reads_lost_cases(&nodes[owner], owner);

    // All three are killed, once what they stored is on disk (sled writes its buffers out
    // every half second): stopping one cleanly would hand its partitions to the others.
    // Between them, their data directories hold every record stored, less the deleted one:
    // as many as the three nodes' metrics counted before the loss, so none was stored twice
    // by the group and none is lost. (A node gives a moved partition's data up only once its
    // new owner has announced it, so a partition moving when they are killed is on two disks.)
    std::thread::sleep(Duration::from_secs(2));
    for node in &mut nodes {
        if let Some(process) = node.process.take() {
            process.kill();
        }
    }
    let mut all = BTreeSet::new();
    for node in &nodes {
        let ids = stored_ids(&wd, &format!("var/{}/data", node.name));
        assert!(!ids.is_empty(), "{} stored nothing", node.name);
        all.extend(ids);
    }
    assert_eq!(all.len() as f64 + 1.0, stored);
    assert!(!all.iter().any(|(_, request)| request == &sample[0]));

    // The deletion retired the old key of the record's resource-day on every node, the node
    // back with an empty disk included: the owner published the retirement in the node
    // directory and each node applied it to its ratchet state. So the changelog's copy of
    // that key from before the deletion, and with it every old version of the record's
    // segment, opens with none of their states (each imported into a store of someone
    // else's, as a thief holding the topic's bytes and a node's disk would).
    let today = vigil_core::Day::of(time::OffsetDateTime::now_utc());
    let res = registry.get(resource).unwrap();
    let old_key = changelog
        .iter()
        .find(|m| {
            m.raw_key.starts_with(b"k")
                && vigil_storage::changelog::resource_of(&m.raw_key) == Some(resource)
        })
        .expect("the resource's data key in the changelog");
    let mut stolen: Vec<(Vec<u8>, Option<Vec<u8>>)> = changelog
        .iter()
        .filter(|m| !m.tombstone && mentions(m))
        .map(|m| (m.raw_key.clone(), Some(m.value.clone())))
        .collect();
    stolen.push((old_key.raw_key.clone(), Some(old_key.value.clone())));
    let cutoffs = vigil_storage::Cutoffs::new(
        &vigil_storage::RetentionConfig::default(),
        &registry,
        geography,
        today,
    );
    for node in &nodes {
        let state = node_stores(&wd, &format!("var/{}/data", node.name), "keys/master.key")
            .geo(geography)
            .unwrap()
            .ratchet_state()
            .unwrap()
            .expect("a ratchet state");
        assert!(
            state.live_generation(today, resource) >= 1,
            "{} did not retire the deleted record's key",
            node.name
        );
        let thief = node_stores(
            &wd,
            &format!("var/thief-{}/data", node.name),
            &format!("var/thief-{}/master.key", node.name),
        );
        let store = thief.geo(geography).unwrap();
        store.install_ratchet(&state).unwrap();
        let imported = store.import(&stolen, &cutoffs).unwrap();
        assert_eq!(imported.data_keys, 0, "{}: {imported:?}", node.name);
        let id = vigil_core::RequestId::parse(&sample[0]).unwrap();
        let opened = store.get(res, &id).ok().flatten().and_then(|r| r.content);
        assert!(opened.is_none(), "{} opens the deleted record", node.name);
    }
}

/// The stores in `data_dir`, opened with master key `master_key` (paths in `wd`).
fn node_stores(wd: &Workdir, data_dir: &str, master_key: &str) -> vigil_storage::Stores {
    let config = vigil_storage::StorageConfig {
        data_dir: wd.path(data_dir),
        master_key: wd.path(master_key),
        ..vigil_storage::StorageConfig::default()
    };
    vigil_storage::Stores::open(&config, wd.root()).unwrap()
}

/// A node's changelog after the purge: every byte it ever held, read back with the node's own
/// ratchet state (as someone holding the topic's log files and a copy of the node's disk would
/// read it), opens none of the purged records; records stored since do open, so the reading is
/// real.
#[test]
fn after_the_purge_no_purged_record_opens_from_the_changelog() {
    use vigil_storage::changelog::RatchetState;
    use vigil_storage::RetentionConfig;

    let broker = Broker::memory();
    let wd = workdir(&broker, crate::util::REGISTRY, "");
    let node = Node::new(&wd, 1);
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(40);
    let at = |when: time::OffsetDateTime| {
        when.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    // Forty days ago (a drill's clock): records of `a` and `b` stored and mirrored.
    wd.write("old.jsonl", crate::kafka::valid_records(60, 0));
    produce(&wd, "old.jsonl");
    let then = at(old);
    let mut envs = node.envs();
    envs.push(("VIGIL_NOW", then.as_str()));
    let first =
        Consumer::start(&wd, &["--api", "--drill", "--stop-when-idle", "3"], &envs).finish();
    assert_eq!(first["stored"]["us"], 40, "{first:#}");

    // With the node stopped, a customer deletes one of the old records: its day is re-keyed
    // and the old key's generation retired, all kept until the node runs again.
    node.ok(&wd, &["delete", "request", "a", "req-000000"]);

    // Today: the node starts, purges the forty-day-old records first, and stores new ones.
    wd.write("new.jsonl", crate::kafka::valid_records(30, 1000));
    produce(&wd, "new.jsonl");
    let second = Consumer::start(&wd, &["--api", "--stop-when-idle", "3"], &node.envs()).finish();
    assert_eq!(second["stored"]["us"], 20, "{second:#}");

    // The retirement reached the node directory when the node ran again; once the purge had
    // moved its ratchet past that day, the node tombstoned it, so compaction keeps no
    // retirement of a purged day.
    let mut retired: BTreeMap<String, bool> = BTreeMap::new();
    let mut published = false;
    for message in broker.read_all("vigil.nodes") {
        if message.raw_key.starts_with(b"retired/us/") {
            published |= !message.tombstone;
            let key = String::from_utf8_lossy(&message.raw_key).into_owned();
            retired.insert(key, message.tombstone);
        }
    }
    assert!(published, "no retirement was published");
    assert!(retired.values().all(|tombstone| *tombstone), "{retired:?}");

    let messages = broker.read_all("vigil.changelog.us");
    // Compaction keeps no segment of the purged day: the purge wrote a tombstone after each.
    let mut latest: BTreeMap<&[u8], &broker::TopicMessage> = BTreeMap::new();
    for message in &messages {
        latest.insert(&message.raw_key, message);
    }
    let segments: Vec<_> = latest
        .iter()
        .filter(|(key, _)| key.starts_with(b"rS"))
        .collect();
    let kept = segments.iter().filter(|(_, m)| !m.tombstone).count();
    assert!(
        kept > 0 && kept < segments.len(),
        "{kept} of {} segments kept",
        segments.len()
    );

    // The node's ratchet state now starts at the oldest day it keeps.
    let stores = |dir: &str, master: &str| node_stores(&wd, dir, master);
    let us = vigil_core::Geography::parse("us").unwrap();
    let state: RatchetState = stores("var/node-1/data", "keys/master.key")
        .geo(&us)
        .unwrap()
        .ratchet_state()
        .unwrap()
        .unwrap();
    let today = vigil_core::Day::of(time::OffsetDateTime::now_utc());
    assert_eq!(state.day(), today.minus(29));

    // Every value the topic ever held, tombstones left out and retention ignored, imported
    // with that state into a store of someone else's.
    let thief = stores("var/thief/data", "var/thief/master.key");
    let store = thief.geo(&us).unwrap();
    store.install_ratchet(&state).unwrap();
    let registry = vigil_core::ResourceRegistry::load(&wd.path("resources.toml")).unwrap();
    let forty_days_ago = vigil_storage::Cutoffs::new(
        &RetentionConfig::default(),
        &registry,
        &us,
        vigil_core::Day::of(old),
    );
    let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = messages
        .iter()
        .filter(|m| !m.tombstone)
        .map(|m| (m.raw_key.clone(), Some(m.value.clone())))
        .collect();
    let imported = store.import(&changes, &forty_days_ago).unwrap();
    // The deleted record's segment's latest version leaves it out.
    assert_eq!(imported.records, 40 - 1 + 20, "{imported:?}");
    assert_eq!(imported.foreign_keys, 0, "{imported:?}");
    for resource in ["a", "b"] {
        let resource = registry.get(resource).unwrap();
        for id in store.request_ids(&resource.id).unwrap() {
            let opened = store
                .get(resource, &id)
                .ok()
                .flatten()
                .and_then(|r| r.content);
            let purged = id.as_str() < "req-001000";
            assert_eq!(
                opened.is_none(),
                purged,
                "{id}: opened {}",
                opened.is_some()
            );
        }
    }
}

/// A deletion made with the node stopped (`vigil delete`: no changelog attached) reaches the
/// changelog when the node runs again, before it rebuilds its partitions from it: the record
/// does not come back, on this node's disk or in what compaction keeps.
#[test]
fn a_deletion_made_offline_is_not_undone_by_the_next_rebuild() {
    let broker = Broker::memory();
    let wd = workdir(&broker, crate::util::REGISTRY, "");
    let node = Node::new(&wd, 1);
    wd.write("records.jsonl", crate::kafka::valid_records(30, 0));
    produce(&wd, "records.jsonl");
    let run = || Consumer::start(&wd, &["--api", "--stop-when-idle", "3"], &node.envs()).finish();
    let first = run();
    assert_eq!(first["stored"]["us"], 20, "{first:#}");
    let victim = "req-000000";
    let stored = stored_ids(&wd, "var/node-1/data");
    assert!(stored.iter().any(|(_, id)| id == victim));

    // With the node stopped, the customer's deletion is carried out on its disk.
    let deleted: Value =
        serde_json::from_str(&node.ok(&wd, &["delete", "request", "a", victim])).unwrap();
    assert_eq!(deleted["deleted"], "request", "{deleted}");

    // The node runs again: its first assignment rebuilds its partitions from the changelog.
    let second = run();
    assert_eq!(
        second["stored"]["us"].as_u64().unwrap_or(0),
        0,
        "{second:#}"
    );
    let after = stored_ids(&wd, "var/node-1/data");
    assert_eq!(after.len(), stored.len() - 1);
    assert!(
        !after.iter().any(|(_, id)| id == victim),
        "the deleted record came back"
    );
    let mut latest: BTreeMap<Vec<u8>, broker::TopicMessage> = BTreeMap::new();
    for message in broker.read_all("vigil.changelog.us") {
        latest.insert(message.raw_key.clone(), message);
    }
    let kept = latest.values().filter(|m| {
        !m.tombstone
            && m.raw_key.starts_with(b"rS")
            && m.value
                .windows(victim.len())
                .any(|w| w == victim.as_bytes())
    });
    assert_eq!(
        kept.count(),
        0,
        "the deleted record is in a kept changelog value"
    );
}
