//! The nodes of one geography as the API sees them: who the other nodes are, and a client
//! that asks them, over mutual TLS with certificates from the cluster CA
//! ([`vigil_access::cluster`]), for what this node does not hold.
//!
//! Each node stores only the records of the log partitions it consumed, so a case, its
//! records and their deletion live on one node (the one that owns the resource's
//! partition). A request for something not stored here is forwarded: case views and grant
//! requests look the case up on every peer (its owner answers; the others say they do not
//! have it), point queries and decisions go to the node that answered, case lists gather
//! every peer's cases, and deletions go to every peer (an earlier owner may still hold a copy
//! from before a rebalance). Who the peers are comes from the node directory on Kafka, which
//! the binary reads into [`Peers`]; the access rules are applied on the node the reviewer
//! called, and the owner applies the rules about the data itself (flagged, content logging,
//! the resource) and audits what it was asked ([`crate::peer`]).
//!
//! The wire format is JSON over HTTP/1.1 on the peer listener, under `/peer/v1`; it names IDs,
//! scores and categories, and carries content only in the answer to a forwarded point query.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use vigil_access::Refusal;
use vigil_core::{Case, Day, Decision, Verdict};

use crate::error::ApiError;

/// Idle keep-alive connections kept to each peer.
const IDLE_CONNECTIONS: usize = 64;

/// Settings of the peer listener and client (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Serve the peer listener and forward to the other nodes of the group.
    #[serde(default)]
    pub enabled: bool,
    /// Address of the peer listener (mutual TLS with the cluster CA). Port 0 picks one.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL other nodes reach the peer listener at (`https://host:port`), announced in
    /// the node directory; by default `https://` and the address it is bound to.
    #[serde(default)]
    pub advertise: Option<String>,
    /// The cluster CA's certificate (PEM), which every node's certificate must chain to.
    #[serde(default = "default_ca")]
    pub ca: PathBuf,
    /// This node's certificate (PEM), issued by `vigil cluster issue` for its name.
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    /// This node's private key (PEM, mode 0600).
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// Milliseconds a peer has to answer a forwarded request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Milliseconds between readings of the node directory.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8702".into()
}
fn default_ca() -> PathBuf {
    "cluster/ca.pem".into()
}
fn default_cert() -> PathBuf {
    "cluster/node.pem".into()
}
fn default_key() -> PathBuf {
    "cluster/node.key".into()
}
const fn default_timeout_ms() -> u64 {
    5_000
}
const fn default_refresh_ms() -> u64 {
    2_000
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: default_listen(),
            advertise: None,
            ca: default_ca(),
            cert: default_cert(),
            key: default_key(),
            timeout_ms: default_timeout_ms(),
            refresh_ms: default_refresh_ms(),
        }
    }
}

impl ClusterConfig {
    /// Checks the settings a TOML type cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(100..=600_000).contains(&self.timeout_ms) {
            return Err("cluster.timeout_ms must be between 100 and 600000".into());
        }
        if !(100..=3_600_000).contains(&self.refresh_ms) {
            return Err("cluster.refresh_ms must be between 100 and 3600000".into());
        }
        if let Some(url) = &self.advertise {
            if !url.starts_with("https://") {
                return Err(format!(
                    "cluster.advertise must be an https:// URL (peers speak mutual TLS); it is {url}"
                ));
            }
        }
        Ok(())
    }

    /// The CA, certificate and key files, read.
    pub fn identity(&self) -> Result<Identity, anyhow::Error> {
        use anyhow::Context;
        let read = |path: &PathBuf, what: &str| {
            std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cluster.{what} {}: the node's TLS files come from `vigil cluster issue`",
                    path.display()
                )
            })
        };
        Ok(Identity {
            ca_pem: read(&self.ca, "ca")?,
            cert_pem: read(&self.cert, "cert")?,
            key_pem: read(&self.key, "key")?,
        })
    }
}

/// A node's TLS identity in the cluster, PEM.
pub struct Identity {
    /// The cluster CA's certificate.
    pub ca_pem: String,
    /// The node's certificate.
    pub cert_pem: String,
    /// The node's private key.
    pub key_pem: String,
}

impl Identity {
    /// The node name the certificate was issued for.
    pub fn node(&self) -> Option<String> {
        let der = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .next()?
            .ok()?;
        vigil_access::cluster::node_name(&der)
    }
}

/// Another node, as the directory names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// Its name (`kafka.node`, and its certificate's common name).
    pub name: String,
    /// Its peer listener (`https://host:port`).
    pub url: String,
}

/// A case as the node storing it holds it: what a case view is made from. Decisions come
/// without their notes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseData {
    /// The node storing it.
    pub node: String,
    /// The day the case was last written (what retention counts from), as a day number.
    pub day: u32,
    /// The case.
    pub case: Case,
    /// The LLM reviewer's verdicts on its sampled records.
    pub verdicts: Vec<Verdict>,
    /// Human decisions, notes withheld.
    pub decisions: Vec<Decision>,
}

impl CaseData {
    /// The day the case was last written.
    pub fn day(&self) -> Day {
        Day::from_number(self.day)
    }
}

/// A node's cases (`GET /peer/v1/cases`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseList {
    /// The answering node.
    pub node: String,
    /// Its cases.
    pub cases: Vec<CaseData>,
}

/// A point query the calling node has allowed (grant, role, workstation, region), for the
/// owner to answer (`POST /peer/v1/reads`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedRead {
    /// The case.
    pub case_id: String,
    /// The flagged record.
    pub request_id: String,
    /// The resource the grant is for.
    pub resource_id: String,
    /// The reviewer.
    pub reviewer: String,
    /// The reviewer's role.
    pub role: String,
    /// The grant.
    pub access_request: String,
    /// The workstation the reviewer used, by name.
    pub workstation: Option<String>,
}

/// A flagged record opened for a point query: what the node storing it answers a forwarded
/// query with, and what this node answers from its own store. Never logged (no `Debug`).
#[derive(Clone, Serialize, Deserialize)]
pub struct OpenedRecord {
    /// When it was stored (RFC 3339).
    pub stored_at: String,
    /// The model that answered.
    pub model: String,
    /// The prompt, when present.
    pub prompt: Option<String>,
    /// The completion, when present.
    pub completion: Option<String>,
}

/// A decision to store with its case on the owner (`POST /peer/v1/decisions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedDecision {
    /// The decision, note included (the owner seals it under the resource's data key).
    pub decision: Decision,
    /// The deciding reviewer's role.
    pub role: String,
    /// The workstation, by name, if any.
    pub workstation: Option<String>,
}

/// A deletion a customer or admin asked for on another node (`POST /peer/v1/deletions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedDeletion {
    /// The resource.
    pub resource_id: String,
    /// One request, or the resource's whole data when absent.
    pub request_id: Option<String>,
    /// Who asked.
    pub actor: String,
    /// Their role.
    pub role: String,
}

/// What a node deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionDone {
    /// The node.
    pub node: String,
    /// Whether it held the request (request deletions).
    pub deleted: bool,
    /// Data keys destroyed.
    pub data_keys: usize,
    /// Records deleted.
    pub records: usize,
    /// Window checkpoints deleted.
    pub windows: usize,
    /// Cases deleted.
    pub cases: usize,
    /// LLM verdicts and pending reviews removed with a request.
    pub reviews: usize,
}

/// Who a forwarded request is made for: the answering node's audit entry names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnBehalf {
    /// The principal's name.
    pub actor: String,
    /// Their role.
    pub role: String,
}

/// The headers carrying [`OnBehalf`] (principal names are ASCII letters, digits and `._-`).
pub const ACTOR_HEADER: &str = "x-vigil-actor";
/// See [`ACTOR_HEADER`].
pub const ROLE_HEADER: &str = "x-vigil-role";

/// The other nodes, as last read from the directory.
#[derive(Debug, Default)]
pub struct Peers(RwLock<Vec<PeerNode>>);

impl Peers {
    /// Replaces the list.
    pub fn set(&self, peers: Vec<PeerNode>) {
        *self.0.write().expect("peers lock poisoned") = peers;
    }

    /// The list now.
    pub fn list(&self) -> Vec<PeerNode> {
        self.0.read().expect("peers lock poisoned").clone()
    }
}

/// Cases remembered with the peer that answered for them, at most this many.
const REMEMBERED_CASES: usize = 100_000;

/// This node's view of the cluster, and its client to the others.
pub struct Cluster {
    /// This node's name.
    pub node: String,
    /// The other nodes.
    pub peers: Arc<Peers>,
    agent: ureq::Agent,
    /// Which peer answered for a case last: a point query or decision under a grant goes
    /// there without looking the case up again (the peer checks the case itself).
    located: std::sync::Mutex<std::collections::HashMap<String, PeerNode>>,
}

/// The answer of a peer that could not be used.
#[derive(Debug)]
enum PeerFailure {
    /// It answered with an error (`code` from its JSON body).
    Refused(String),
    /// It did not answer, or not in JSON.
    Unreachable(String),
}

impl Cluster {
    /// A client presenting `identity`'s certificate and trusting only the cluster CA.
    pub fn new(
        node: &str,
        identity: &Identity,
        timeout: Duration,
        peers: Arc<Peers>,
    ) -> Result<Self, anyhow::Error> {
        use anyhow::Context;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(identity.ca_pem.as_bytes()) {
            roots.add(ca.context("cluster CA certificate")?)?;
        }
        let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("cluster.cert")?;
        let key =
            PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).context("cluster.key")?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("the node's certificate and key do not match")?;
        // Keep-alive connections to each peer for as many requests as run at once (ureq keeps
        // one per host by default: the others would each pay a TLS handshake).
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .timeout(timeout)
            .max_idle_connections(IDLE_CONNECTIONS)
            .max_idle_connections_per_host(IDLE_CONNECTIONS)
            .build();
        Ok(Self {
            node: node.to_owned(),
            peers,
            agent,
            located: Default::default(),
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        peer: &PeerNode,
        path: &str,
        on_behalf: &OnBehalf,
        body: Option<&impl Serialize>,
    ) -> Result<T, PeerFailure> {
        let url = format!("{}/peer/v1/{path}", peer.url.trim_end_matches('/'));
        let request = |method| {
            self.agent
                .request(method, &url)
                .set(ACTOR_HEADER, &on_behalf.actor)
                .set(ROLE_HEADER, &on_behalf.role)
        };
        let answer = match body {
            // A kept-alive connection the peer closed while idle fails the next request on
            // it; ureq retries a GET on a fresh one by itself, and a POST is retried here. Each
            // is safe to send twice: a read is audited again at worst, a decision has its ID
            // already, a deletion finds nothing left.
            Some(body) => match request("POST").send_json(body) {
                Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::Io => {
                    request("POST").send_json(body)
                }
                answer => answer,
            },
            None => request("GET").call(),
        };
        match answer {
            Ok(response) => response
                .into_json()
                .map_err(|e| PeerFailure::Unreachable(format!("unreadable answer: {e}"))),
            Err(ureq::Error::Status(_, response)) => {
                let body: serde_json::Value = response.into_json().unwrap_or_default();
                match body["error"]["code"].as_str() {
                    Some(code) => Err(PeerFailure::Refused(code.to_owned())),
                    None => Err(PeerFailure::Unreachable("an answer without a code".into())),
                }
            }
            Err(e) => Err(PeerFailure::Unreachable(e.to_string())),
        }
    }

    /// Calls every peer at once and returns their answers in peer order.
    fn scatter<T: DeserializeOwned + Send>(
        &self,
        path: &str,
        on_behalf: &OnBehalf,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Vec<(PeerNode, Result<T, PeerFailure>)> {
        let peers = self.peers.list();
        std::thread::scope(|scope| {
            let calls: Vec<_> = peers
                .iter()
                .map(|peer| scope.spawn(move || self.call(peer, path, on_behalf, body)))
                .collect();
            peers
                .iter()
                .cloned()
                .zip(calls.into_iter().map(|call| {
                    call.join().unwrap_or_else(|_| {
                        Err(PeerFailure::Unreachable("the call panicked".into()))
                    })
                }))
                .collect()
        })
    }

    /// `geography`'s day-key ratchet state from the first peer that has one (`None` when no
    /// peer answered with one).
    pub fn ratchet(&self, geography: &str) -> Option<vigil_storage::changelog::RatchetWire> {
        let as_node = OnBehalf {
            actor: format!("node {}", self.node),
            role: String::new(),
        };
        let path = format!("ratchets/{geography}");
        self.scatter(&path, &as_node, None::<&()>)
            .into_iter()
            .find_map(|(_, answer)| answer.ok())
    }

    /// Every peer's cases, and the names of the peers that did not answer.
    pub fn cases(&self, on_behalf: &OnBehalf) -> (Vec<CaseData>, Vec<String>) {
        let mut cases = Vec::new();
        let mut missing = Vec::new();
        for (peer, answer) in self.scatter::<CaseList>("cases", on_behalf, None::<&()>) {
            match answer {
                Ok(list) => cases.extend(list.cases),
                Err(failure) => {
                    warn_unanswered(&peer, &failure);
                    missing.push(peer.name);
                }
            }
        }
        (cases, missing)
    }

    /// The case, from the peer that holds it. A peer that could not be asked makes the
    /// answer unavailable rather than "no such case".
    pub fn find_case(
        &self,
        case_id: &str,
        on_behalf: &OnBehalf,
    ) -> Result<Option<(PeerNode, CaseData)>, ApiError> {
        let mut unanswered = None;
        let path = format!("cases/{case_id}");
        for (peer, answer) in self.scatter::<CaseData>(&path, on_behalf, None::<&()>) {
            match answer {
                Ok(data) => {
                    self.remember(&data.case.case_id, &peer);
                    return Ok(Some((peer, data)));
                }
                Err(PeerFailure::Refused(code)) if code == Refusal::UnknownCase.code() => {}
                Err(failure) => {
                    warn_unanswered(&peer, &failure);
                    unanswered = Some(peer.name);
                }
            }
        }
        match unanswered {
            Some(node) => Err(ApiError::peer_unavailable(&node)),
            None => Ok(None),
        }
    }

    /// The peer that answered for `case_id` last, while it is still a peer.
    pub fn remembered(&self, case_id: &str) -> Option<PeerNode> {
        let peer = self
            .located
            .lock()
            .expect("lock poisoned")
            .get(case_id)
            .cloned()?;
        self.peers.list().contains(&peer).then_some(peer)
    }

    fn remember(&self, case_id: &str, peer: &PeerNode) {
        let mut located = self.located.lock().expect("lock poisoned");
        if located.len() >= REMEMBERED_CASES {
            located.clear();
        }
        located.insert(case_id.to_owned(), peer.clone());
    }

    /// Forgets where `case_id` is (its peer refused or did not answer).
    pub fn forget(&self, case_id: &str) {
        self.located.lock().expect("lock poisoned").remove(case_id);
    }

    /// Asks `owner`, which answered for `case_id` before; where the case is, is forgotten when
    /// the answer is not what was asked for. When `owner` does not answer, or no longer has the
    /// case (its partition moved to another node, which rebuilt it), the peers are asked where
    /// the case is now and the one that has it is asked instead. Returns the peer that
    /// answered, or the failure and the peer it came from.
    fn ask_owner<T: DeserializeOwned>(
        &self,
        owner: &PeerNode,
        case_id: &str,
        path: &str,
        on_behalf: &OnBehalf,
        body: &impl Serialize,
    ) -> Result<(PeerNode, T), (PeerNode, PeerFailure)> {
        let answer = self.call(owner, path, on_behalf, Some(body));
        let failure = match answer {
            Ok(answer) => return Ok((owner.clone(), answer)),
            Err(failure) => failure,
        };
        self.forget(case_id);
        let moved = match &failure {
            PeerFailure::Unreachable(_) => true,
            PeerFailure::Refused(code) => code == Refusal::UnknownCase.code(),
        };
        match self.find_case(case_id, on_behalf) {
            Ok(Some((now, _))) if moved && now.name != owner.name => self
                .call(&now, path, on_behalf, Some(body))
                .map(|answer| (now.clone(), answer))
                .map_err(|failure| (now, failure)),
            _ => Err((owner.clone(), failure)),
        }
    }

    /// The record, from `owner` (or from the node its case moved to), and the node that
    /// answered.
    pub fn read(
        &self,
        owner: &PeerNode,
        read: &ForwardedRead,
    ) -> Result<(PeerNode, OpenedRecord), ApiError> {
        let on_behalf = OnBehalf {
            actor: read.reviewer.clone(),
            role: read.role.clone(),
        };
        self.ask_owner(owner, &read.case_id, "reads", &on_behalf, read)
            .map_err(|(peer, failure)| refusal_of(&peer, failure))
    }

    /// Stores a decision on `owner` (or on the node its case moved to); `false` when the case
    /// is no longer anywhere.
    pub fn decide(&self, owner: &PeerNode, decision: &ForwardedDecision) -> Result<bool, ApiError> {
        let on_behalf = OnBehalf {
            actor: decision.decision.reviewer.clone(),
            role: decision.role.clone(),
        };
        let case_id = &decision.decision.case_id;
        match self.ask_owner::<serde_json::Value>(owner, case_id, "decisions", &on_behalf, decision)
        {
            Ok(_) => Ok(true),
            Err((_, PeerFailure::Refused(code))) if code == Refusal::UnknownCase.code() => {
                Ok(false)
            }
            Err((peer, failure)) => Err(refusal_of(&peer, failure)),
        }
    }

    /// Deletes on every peer; fails (after all were asked) when one could not be.
    pub fn delete(&self, deletion: &ForwardedDeletion) -> Result<Vec<DeletionDone>, ApiError> {
        let on_behalf = OnBehalf {
            actor: deletion.actor.clone(),
            role: deletion.role.clone(),
        };
        let mut done = Vec::new();
        let mut unanswered = None;
        for (peer, answer) in self.scatter::<DeletionDone>("deletions", &on_behalf, Some(deletion))
        {
            match answer {
                Ok(report) => done.push(report),
                Err(failure) => {
                    warn_unanswered(&peer, &failure);
                    unanswered = Some(peer.name);
                }
            }
        }
        match unanswered {
            Some(node) => Err(ApiError::peer_unavailable(&node)),
            None => Ok(done),
        }
    }
}

fn warn_unanswered(peer: &PeerNode, failure: &PeerFailure) {
    let (answer, problem) = match failure {
        PeerFailure::Refused(code) => ("refused", code),
        PeerFailure::Unreachable(problem) => ("unreachable", problem),
    };
    metrics::counter!("vigil_peer_failures_total", "answer" => answer).increment(1);
    tracing::warn!(node = %peer.name, url = %peer.url, answer, problem = %problem, "A peer node did not answer a forwarded request.");
}

/// The refusal a peer answered with, as this node answers it; anything else is the peer
/// being unavailable.
fn refusal_of(peer: &PeerNode, failure: PeerFailure) -> ApiError {
    let known = [
        Refusal::NotAvailable,
        Refusal::UnknownCase,
        Refusal::ContentLoggingOff,
        Refusal::AuditUnavailable,
    ];
    match &failure {
        PeerFailure::Refused(code) => {
            if let Some(refusal) = known.into_iter().find(|r| r.code() == code) {
                return refusal.into();
            }
        }
        PeerFailure::Unreachable(_) => {}
    }
    warn_unanswered(peer, &failure);
    ApiError::peer_unavailable(&peer.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client for `node`, with a certificate from a fresh cluster CA in `dir`.
    fn client(dir: &std::path::Path, node: &str, peers: Vec<PeerNode>) -> Cluster {
        let ca = vigil_access::ClusterCa::load_or_create(&dir.join("ca")).unwrap();
        let issued = ca.issue_node(node, &["127.0.0.1".into()]).unwrap();
        let identity = Identity {
            ca_pem: ca.ca_pem().to_owned(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        };
        assert_eq!(identity.node().as_deref(), Some(node));
        let list = Arc::new(Peers::default());
        list.set(peers);
        Cluster::new(node, &identity, Duration::from_millis(500), list).unwrap()
    }

    /// A loopback address nothing listens on.
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("https://{addr}")
    }

    #[test]
    fn a_peer_that_does_not_answer_is_never_taken_for_one_without_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let gone = PeerNode {
            name: "node-gone".into(),
            url: closed_port(),
        };
        let cluster = client(dir.path(), "node-1", vec![gone.clone()]);
        // A case lookup is unavailable, not "no such case".
        let rita = OnBehalf {
            actor: "rita".into(),
            role: "reviewer".into(),
        };
        let refused = cluster.find_case("case-0001", &rita).unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (503, "peer_unavailable")
        );
        assert!(refused.message.contains("node-gone"), "{}", refused.message);
        // A case list names the peer whose cases it lacks.
        let (cases, missing) = cluster.cases(&rita);
        assert!(cases.is_empty());
        assert_eq!(missing, vec!["node-gone".to_owned()]);
        // A deletion that could not reach a peer fails, after the others were asked.
        let deletion = ForwardedDeletion {
            resource_id: "r".into(),
            request_id: None,
            actor: "adam".into(),
            role: "admin".into(),
        };
        assert_eq!(
            cluster.delete(&deletion).unwrap_err().code,
            "peer_unavailable"
        );
        // With no peers, nothing is forwarded and nothing is missing.
        let alone = client(dir.path(), "node-2", vec![]);
        assert!(alone.find_case("case-0001", &rita).unwrap().is_none());
        assert_eq!(alone.cases(&rita).1, Vec::<String>::new());
    }

    #[test]
    fn settings_are_checked() {
        assert!(ClusterConfig::default().validate().is_ok());
        let plain = ClusterConfig {
            advertise: Some("http://10.0.0.1:8702".into()),
            ..ClusterConfig::default()
        };
        assert!(plain.validate().unwrap_err().contains("https://"));
        let slow = ClusterConfig {
            timeout_ms: 0,
            ..ClusterConfig::default()
        };
        assert!(slow.validate().unwrap_err().contains("cluster.timeout_ms"));
    }
}
