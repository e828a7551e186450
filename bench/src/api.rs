//! `vigil bench --api`: point queries against a running API, the way reviewers make them.
//!
//! In a scratch directory it stores flagged records of an EEA resource, one case per
//! reviewer (ten sampled records each), and gives `--reviewers` EEA reviewers an approved
//! grant for their case and a registered workstation certificate. Then as many client
//! threads, each with its own keep-alive TLS connection, read their case's records by ID
//! through the workstation listener until `--records` queries are done: every query passes
//! the whole gate (token, workstation, rate limit, grant, flag, region, decryption) and is
//! audited with an fsync before it is answered. Reports queries/s and latency percentiles.
//!
//! With `--forwarded`, a second node then serves the same reviewers (its own access store,
//! grants and audit log) over empty stores, knowing the first as its peer: each of its point
//! queries is checked there, forwarded over the peer listener (mutual TLS with cluster-CA
//! certificates) to the first node, checked and audited again there, and answered. The report
//! puts the two side by side.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::Duration;
use vigil_access::{
    AccessConfig, AccessRequest, AccessStore, GrantState, Principal, Region, Role, Workstation,
    WorkstationCa,
};
use vigil_analytics::AnalyticsConfig;
use vigil_api::cluster::{ClusterConfig, PeerNode};
use vigil_api::{ApiConfig, ApiServer};
use vigil_core::{
    Case, CaseSignals, FlagScores, FlagSubject, FlagWindow, Geography, LogRecord, RequestId,
    Resource, ResourceId, ResourceRegistry,
};
use vigil_storage::{Annex, StorageConfig, Stores};

use crate::{machine, median_line, timed_runs, BenchOptions};

const RESOURCE: &str = "bench-eu";
const PER_CASE: usize = 10;

/// The configuration sections the API reads, as configured; [`bench()`] points them at its
/// scratch directory and lifts the rate limit before it serves them.
#[derive(Debug, Clone)]
pub struct ApiSections {
    /// The resource registry file.
    pub resources: PathBuf,
    /// Geography stores, keys and retention.
    pub storage: StorageConfig,
    /// The Parquet analytics exports.
    pub analytics: AnalyticsConfig,
    /// Principals, grants, the workstation CA, rate limits and the audit log.
    pub access: AccessConfig,
    /// The API's listeners.
    pub api: ApiConfig,
    /// The peer listener (`--forwarded` enables it on both nodes).
    pub cluster: ClusterConfig,
    /// The node's name (`kafka.node`), which its cluster certificate names.
    pub node: String,
}

/// The API as `vigil serve` runs it, which the binary assembles: [`bench()`] sets up its
/// scratch stores, principals and grants through it, then serves them.
pub trait Server {
    /// Opens the stores of `config`, as `vigil serve` does.
    fn open_stores(
        &self,
        config: &ApiSections,
        registry: &ResourceRegistry,
    ) -> anyhow::Result<Stores>;

    /// Starts the API of `config` over `stores`, as `vigil serve` does (the retention
    /// schedule aside).
    fn start(
        &self,
        config: &ApiSections,
        stores: &Arc<Stores>,
        registry: &ResourceRegistry,
    ) -> anyhow::Result<ApiServer>;
}

/// Measures point queries through the API that `server` starts, with `config`'s sections
/// pointed at a scratch directory; returns the report.
pub fn bench(
    options: &BenchOptions,
    config: &ApiSections,
    server: &impl Server,
) -> anyhow::Result<String> {
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("creating the bench directory")?;
    let dir = scratch.path();
    let mut config = config.clone();
    config.resources = dir.join("resources.toml");
    config.storage.data_dir = dir.join("data");
    config.storage.master_key = dir.join("keys/master.key");
    config.analytics.export_dir = dir.join("exports");
    config.access.dir = dir.join("access");
    config.access.ca_dir = dir.join("access/ca");
    config.access.audit_log = dir.join("audit/audit.jsonl");
    // The rate limit is not what is measured.
    config.access.point_queries_per_minute = u32::MAX;
    config.access.point_query_burst = u32::MAX;
    config.api.listen = "127.0.0.1:0".into();
    config.api.workstation_listen = "127.0.0.1:0".into();

    let reviewers = options.reviewers.max(1);
    let mut registry = ResourceRegistry::default();
    let eu = Geography::parse("eu")?;
    registry.add(Resource::new(ResourceId::parse(RESOURCE)?, eu.clone()))?;
    registry.save(&config.resources)?;
    let registry = ResourceRegistry::load(&config.resources)?;
    let stores = Arc::new(server.open_stores(&config, &registry)?);
    let cases = store_cases(&stores, &registry, reviewers)?;

    let ca = WorkstationCa::load_or_create(&config.access.ca_dir, &config.api.tls_hosts)?;
    let issued = ca.issue_workstation("bench-ws")?;
    let tokens = grant_reviewers(&config, &cases, &issued, stores.clock().now())?;
    if options.forwarded {
        config.cluster = node_certificate(dir, "bench-owner", &config.cluster)?;
        config.node = "bench-owner".into();
    }
    let owner_api = server.start(&config, &stores, &registry)?;
    let client = client_config(&ca, &issued)?;
    let mut report = format!(
        "API point queries · {reviewers} concurrent reviewers, each on its own keep-alive TLS connection · {} queries a run · every query audited (fsync) · {}\n",
        options.records,
        machine()
    );
    let base = format!("https://{}", owner_api.workstation_addr);
    let local = measure(options, &client, &base, &cases, &tokens)?;
    if !options.forwarded {
        report.push_str(&local.0);
        owner_api.stop();
        return Ok(report);
    }
    // The second node: its own stores (empty), access store and audit log, the same
    // workstation CA; the first node is its peer.
    let owner = owner_api
        .peer_addr
        .context("the first node serves no peer listener")?;
    let mut front = config.clone();
    front.storage.data_dir = dir.join("front/data");
    front.analytics.export_dir = dir.join("front/exports");
    front.access.dir = dir.join("front/access");
    front.access.audit_log = dir.join("front/audit/audit.jsonl");
    front.cluster = node_certificate(dir, "bench-front", &config.cluster)?;
    front.node = "bench-front".into();
    let front_tokens = grant_reviewers(&front, &cases, &issued, stores.clock().now())?;
    let front_stores = Arc::new(server.open_stores(&front, &registry)?);
    let front_server = server.start(&front, &front_stores, &registry)?;
    front_server
        .cluster
        .as_ref()
        .context("the second node is in no cluster")?
        .peers
        .set(vec![PeerNode {
            name: "bench-owner".into(),
            url: format!("https://{owner}"),
        }]);
    let base = format!("https://{}", front_server.workstation_addr);
    let forwarded = measure(options, &client, &base, &cases, &front_tokens)?;
    writeln!(report, "answered by the node storing the records:")?;
    report.push_str(&local.0);
    writeln!(
        report,
        "\nthrough a second node, forwarded to it over the peer listener (both on this machine, loopback):"
    )?;
    report.push_str(&forwarded.0);
    write!(
        report,
        "\nforwarding: median p50 {:.2} ms against {:.2} ms, p99 {:.2} ms against {:.2} ms",
        forwarded.1 .0, local.1 .0, forwarded.1 .1, local.1 .1
    )?;
    front_server.stop();
    owner_api.stop();
    Ok(report)
}

/// Runs the point queries through `base` (a workstation listener): the per-run lines and the
/// median line, and the p50 and p99 latencies in milliseconds.
fn measure(
    options: &BenchOptions,
    client: &Arc<rustls::ClientConfig>,
    base: &str,
    cases: &[Case],
    tokens: &[String],
) -> anyhow::Result<(String, (f64, f64))> {
    let reviewers = cases.len();
    let agents: Vec<ureq::Agent> = (0..reviewers)
        .map(|_| ureq::AgentBuilder::new().tls_config(client.clone()).build())
        .collect();
    let (mut rates, mut latencies) =
        timed_runs(options.runs, reviewers, options.records, 1, |one| {
            for i in one {
                let who = i % reviewers;
                let case = &cases[who];
                let request_id = &case.sample[(i / reviewers) % case.sample.len()];
                let url = format!("{base}/v1/cases/{}/records/{request_id}", case.case_id);
                let response = agents[who]
                    .get(&url)
                    .set("Authorization", &format!("Bearer {}", tokens[who]))
                    .call()
                    .with_context(|| format!("point query {url}"))?;
                let body = response.into_string()?;
                anyhow::ensure!(
                    body.contains("\"prompt\""),
                    "a point query returned no content"
                );
            }
            Ok(())
        })?;
    let mut report = String::new();
    for (run, rate) in rates.iter().enumerate() {
        writeln!(report, "run {}: {rate:>8.0} queries/s", run + 1)?;
    }
    let latency = vigil_pipeline::Percentiles::of(&mut latencies);
    let percentiles = (latency.p50_ms, latency.p99_ms);
    report.push_str(&median_line(&mut rates, &mut latencies, "queries"));
    report.push_str(" (a batch is one query)");
    Ok((report, percentiles))
}

/// Registers the workstation `issued` in `config`'s access store and gives one EEA reviewer
/// per case an approved grant for it; returns their tokens.
fn grant_reviewers(
    config: &ApiSections,
    cases: &[Case],
    issued: &vigil_access::workstation::Issued,
    now: time::OffsetDateTime,
) -> anyhow::Result<Vec<String>> {
    let access = AccessStore::open(&config.access.dir)?;
    access.register_workstation(&Workstation {
        name: "bench-ws".into(),
        fingerprint: issued.fingerprint.clone(),
        issued_at: now,
        revoked_at: None,
    })?;
    let mut tokens = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = format!("reviewer-{i:03}");
        access.add_principal(&Principal {
            name: name.clone(),
            role: Role::Reviewer,
            region: Region::Eea,
            resources: vec![],
        })?;
        tokens.push(
            access
                .issue_token(
                    &name,
                    time::OffsetDateTime::now_utc() + time::Duration::days(1),
                )?
                .expose()
                .to_owned(),
        );
        access.add_request(&AccessRequest {
            id: AccessRequest::new_id(),
            case_id: case.case_id.clone(),
            geography: case.geography.clone(),
            resource_id: case.resource_id.clone(),
            requester: name,
            reason: "bench".into(),
            requested_at: now,
            state: GrantState::Approved {
                by: "bench-manager".into(),
                at: now,
                expires_at: now + Duration::hours(4),
            },
        })?;
    }
    Ok(tokens)
}

/// `base` with the peer listener on, on a loopback port the system picks, and a certificate
/// for `node` from a cluster CA in the scratch directory `dir`.
fn node_certificate(
    dir: &std::path::Path,
    node: &str,
    base: &ClusterConfig,
) -> anyhow::Result<ClusterConfig> {
    let ca = vigil_access::ClusterCa::load_or_create(&dir.join("cluster-ca"))?;
    let issued = ca.issue_node(node, &["127.0.0.1".into()])?;
    let files = dir.join("cluster");
    std::fs::create_dir_all(&files)?;
    let (cert, key, ca_pem) = (
        files.join(format!("{node}.pem")),
        files.join(format!("{node}.key")),
        files.join("ca.pem"),
    );
    std::fs::write(&cert, &issued.cert_pem)?;
    vigil_access::workstation::write_private(&key, &issued.key_pem)?;
    std::fs::write(&ca_pem, ca.ca_pem())?;
    Ok(ClusterConfig {
        enabled: true,
        listen: "127.0.0.1:0".into(),
        advertise: None,
        ca: ca_pem,
        cert,
        key,
        ..base.clone()
    })
}

/// Stores `PER_CASE` records per reviewer and a case sampling them.
fn store_cases(
    stores: &vigil_storage::Stores,
    registry: &ResourceRegistry,
    reviewers: usize,
) -> anyhow::Result<Vec<Case>> {
    let resource = registry.get(RESOURCE).expect("registered above");
    let store = stores.geo(&resource.geography)?;
    let now = stores.clock().now();
    let mut cases = Vec::new();
    for r in 0..reviewers {
        let mut sealed = Vec::new();
        let mut sample = Vec::new();
        for k in 0..PER_CASE {
            let id = format!("bench-{r:03}-{k:02}");
            let line = serde_json::json!({
                "request_id": id, "resource_id": RESOURCE, "geography": "eu",
                "deployment": "standard", "timestamp": now.format(&time::format_description::well_known::Rfc3339)?,
                "operation": "chat", "model": "gpt-4o", "end_user": format!("user-{r}"),
                "prompt": format!("bench prompt {r} {k}: {}", "lorem ipsum ".repeat(30)),
                "completion": format!("bench completion {r} {k}: {}", "dolor sit amet ".repeat(30)),
            });
            let record = LogRecord::from_json(&line.to_string())
                .map_err(|e| anyhow::anyhow!("bench record: {e}"))?;
            sealed.push(store.seal(&record, resource)?);
            sample.push(RequestId::parse(id)?);
        }
        let case = Case {
            case_id: format!("case-bench{r:04}"),
            opened_at: now,
            geography: resource.geography.clone(),
            resource_id: resource.id.clone(),
            subject: FlagSubject::EndUser {
                end_user: format!("user-{r}"),
            },
            window: FlagWindow {
                start: now - Duration::hours(1),
                end: now,
            },
            scores: FlagScores {
                abuse: 0.9,
                categories: Default::default(),
            },
            categories: vec![],
            signals: CaseSignals::default(),
            pattern_families: vec![],
            sample,
            policy_version: "bench".into(),
        };
        let annex = Annex::Case(Box::new(case.clone()));
        store.write_batch_with(&sealed, |_| Ok(vec![annex]))?;
        cases.push(case);
    }
    stores.flush()?;
    Ok(cases)
}

fn client_config(
    ca: &WorkstationCa,
    issued: &vigil_access::workstation::Issued,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.ca_pem().as_bytes())?)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?,
        )?;
    Ok(Arc::new(config))
}
