//! vigil's HTTP API (axum), served on two listeners:
//!
//! - **the metadata listener**, TLS with the server certificate vigil's CA issues (plain HTTP
//!   only with `api.plain_http`, on loopback), for case metadata, access requests and their
//!   decisions, and resource management;
//! - **the workstation listener**, TLS requiring a client certificate from vigil's workstation
//!   CA, which alone can return content: one flagged record at a time, by case and request
//!   ID, under an active just-in-time grant.
//!
//! Both serve the same routes ([`routes::OPERATIONS`], which also generates `/openapi.json`);
//! a point query that does not arrive over the workstation listener with a registered,
//! unrevoked certificate is refused. Every `/v1` request leaves exactly one audit entry, and
//! one that cannot be audited is refused ([`attempt`]); the one exception is the repeated
//! refusals of anonymous requests, which are counted into one entry per peer and window
//! ([`anonymous`]). Both listeners bound their open connections and the time a client has to
//! send its headers ([`serve`]).
//!
//! With `[cluster]`, a third listener, the **peer listener** (mutual TLS with the cluster
//! CA), answers the other nodes of the group about the cases and records stored here
//! ([`peer`]), and the handlers forward what is not stored here to the node that has it
//! ([`cluster`], [`place`]).

pub mod anonymous;
pub mod attempt;
pub mod cluster;
pub mod error;
mod handlers;
pub mod ops;
pub mod peer;
mod place;
pub mod reference;
pub mod routes;
pub mod serve;
pub mod telemetry;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use vigil_access::{AccessConfig, AccessStore, AuditLog, RateLimiter, WorkstationCa};
use vigil_core::ResourceRegistry;
use vigil_storage::{RetentionConfig, Stores};

pub use error::ApiError;
pub use tls::Peer;

/// Settings of the API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the metadata listener (metadata, grants, management): TLS with the server
    /// certificate the workstation CA issues for `tls_hosts`. Port 0 picks one.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Serve the metadata listener as plain HTTP instead: only on a loopback address (tokens
    /// cross it).
    #[serde(default)]
    pub plain_http: bool,
    /// Address of the workstation listener (TLS with client certificates; content).
    #[serde(default = "default_workstation_listen")]
    pub workstation_listen: String,
    /// Names and addresses the server's TLS certificate is issued for.
    #[serde(default = "default_tls_hosts")]
    pub tls_hosts: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Open connections each listener accepts at most; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's headers; a keep-alive connection idle
    /// that long is closed too.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Milliseconds a request has, once its headers are in, to be read and answered.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Milliseconds over which repeated refusals of anonymous requests (no valid token) from
    /// one address are counted into one audit entry instead of one entry each.
    #[serde(default = "default_anonymous_window_ms")]
    pub anonymous_window_ms: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8700".into()
}
fn default_workstation_listen() -> String {
    "127.0.0.1:8701".into()
}
fn default_tls_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
const fn default_max_body_bytes() -> usize {
    16 * 1024
}
const fn default_max_connections() -> usize {
    1024
}
const fn default_header_read_timeout_ms() -> u64 {
    10_000
}
const fn default_request_timeout_ms() -> u64 {
    30_000
}
const fn default_anonymous_window_ms() -> u64 {
    10_000
}

impl ApiConfig {
    /// Checks the settings a TOML type cannot: limits within sense.
    pub fn validate(&self) -> Result<(), String> {
        let loopback = self
            .listen
            .parse::<SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or_else(|_| self.listen.starts_with("localhost:"));
        if self.plain_http && !loopback {
            return Err(format!(
                "api.plain_http serves tokens in the clear, so only on a loopback address; api.listen is {}",
                self.listen
            ));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err("api.max_connections must be between 1 and 65536".into());
        }
        if !(100..=600_000).contains(&self.header_read_timeout_ms) {
            return Err("api.header_read_timeout_ms must be between 100 and 600000".into());
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return Err("api.request_timeout_ms must be between 100 and 600000".into());
        }
        if !(100..=3_600_000).contains(&self.anonymous_window_ms) {
            return Err("api.anonymous_window_ms must be between 100 and 3600000".into());
        }
        Ok(())
    }

    fn limits(&self) -> serve::Limits {
        serve::Limits {
            max_connections: self.max_connections,
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            plain_http: false,
            workstation_listen: default_workstation_listen(),
            tls_hosts: default_tls_hosts(),
            max_body_bytes: default_max_body_bytes(),
            max_connections: default_max_connections(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            anonymous_window_ms: default_anonymous_window_ms(),
        }
    }
}

/// What the handlers share.
pub struct AppState {
    /// The geography stores (records, cases, verdicts).
    pub stores: Arc<Stores>,
    /// The resource registry, as last saved (shared with the retention schedule).
    pub registry: Arc<RwLock<ResourceRegistry>>,
    /// Held while a resource change is saved and applied, so changes never overwrite each
    /// other.
    pub registry_change: Arc<std::sync::Mutex<()>>,
    /// Where the registry is saved.
    pub registry_path: PathBuf,
    /// Retention rules, to check resource changes against.
    pub retention: RetentionConfig,
    /// Principals, tokens, workstations, grants.
    pub access: AccessStore,
    /// Access settings.
    pub access_config: AccessConfig,
    /// The audit log.
    pub audit: AuditLog,
    /// Point-query rate limits.
    pub limiter: RateLimiter,
    /// Called after data was deleted or a resource changed, so exports can follow.
    pub on_change: Box<dyn Fn() + Send + Sync>,
    /// Anonymous refusals counted in the current window.
    pub anonymous: anonymous::Repeats,
    /// The other nodes of the group and the client to them, with `[cluster]`.
    pub cluster: Option<Arc<cluster::Cluster>>,
}

impl AppState {
    /// This node's name in the cluster (`local` when it is in none).
    pub fn node_name(&self) -> &str {
        self.cluster.as_ref().map_or("local", |c| c.node.as_str())
    }
}

/// The peer listener: where it listens and its TLS (the node's certificate, clients' checked
/// against the cluster CA).
pub struct PeerListener {
    /// The address (`cluster.listen`).
    pub listen: String,
    /// The TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
}

/// Everything [`ApiServer::start`] needs besides the state.
pub struct ServerParts {
    /// The handlers' state.
    pub state: AppState,
    /// Pages served beside the API on both listeners (the reviewer console), which reach
    /// data only through the API like any other client.
    pub pages: axum::Router,
    /// Listener settings.
    pub config: ApiConfig,
    /// The workstation CA (for the TLS listener's certificates).
    pub ca: WorkstationCa,
    /// The peer listener, with `[cluster]`.
    pub peer: Option<PeerListener>,
}

/// A running API server: its own Tokio runtime on a thread.
pub struct ApiServer {
    /// Where the metadata listener listens.
    pub http_addr: SocketAddr,
    /// The metadata listener's URL scheme: `https`, or `http` with `api.plain_http`.
    pub http_scheme: &'static str,
    /// Where the workstation listener listens.
    pub workstation_addr: SocketAddr,
    /// Where the peer listener listens, with `[cluster]`.
    pub peer_addr: Option<SocketAddr>,
    /// The client to the other nodes and their list, with `[cluster]`.
    pub cluster: Option<Arc<cluster::Cluster>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Binds both listeners and starts serving.
    pub fn start(parts: ServerParts) -> anyhow::Result<Self> {
        let ServerParts {
            state,
            pages,
            config,
            ca,
            peer,
        } = parts;
        config.validate().map_err(anyhow::Error::msg)?;
        let (cert, key) = ca.server_cert(&config.tls_hosts)?;
        let tls = tls::server_config(ca.ca_pem(), &cert, &key, tls::ClientAuth::Required)?;
        let metadata_tls = match config.plain_http {
            true => None,
            false => Some(tls::server_config(
                ca.ca_pem(),
                &cert,
                &key,
                tls::ClientAuth::None,
            )?),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("vigil-api")
            .build()
            .context("starting the API runtime")?;
        let (http, workstation, peers) = runtime.block_on(async {
            let http = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("api.listen {}", config.listen))?;
            let ws = tokio::net::TcpListener::bind(&config.workstation_listen)
                .await
                .with_context(|| format!("api.workstation_listen {}", config.workstation_listen))?;
            let peers = match &peer {
                Some(peer) => Some(
                    tokio::net::TcpListener::bind(&peer.listen)
                        .await
                        .with_context(|| format!("cluster.listen {}", peer.listen))?,
                ),
                None => None,
            };
            anyhow::Ok((http, ws, peers))
        })?;
        let http_addr = http.local_addr()?;
        let workstation_addr = workstation.local_addr()?;
        let peer_addr = peers.as_ref().map(|l| l.local_addr()).transpose()?;
        let cluster = state.cluster.clone();
        let state = Arc::new(state);
        let app = routes::router(state.clone(), config.max_body_bytes).merge(pages);
        let peer_app = peer::router(state.clone(), config.max_body_bytes);
        let limits = config.limits();
        let window = std::time::Duration::from_millis(config.anonymous_window_ms);
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vigil-api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Everything stops when `stopping` is dropped.
                    let (stopping, stopped) = tokio::sync::watch::channel(());
                    let metadata = {
                        let (app, stopped) = (app.clone(), stopped.clone());
                        async move {
                            match metadata_tls {
                                Some(tls) => {
                                    let listener = tls::TlsListener::new(
                                        http,
                                        tls,
                                        limits.header_read_timeout,
                                    );
                                    serve::serve(listener, app, limits, stopped).await;
                                }
                                None => {
                                    let listener = tls::PlainListener(http);
                                    serve::serve(listener, app, limits, stopped).await;
                                }
                            }
                        }
                    };
                    let secure = serve::serve(
                        tls::TlsListener::new(workstation, tls, limits.header_read_timeout),
                        app,
                        limits,
                        stopped.clone(),
                    );
                    let nodes = {
                        let stopped = stopped.clone();
                        async move {
                            if let (Some(listener), Some(peer)) = (peers, peer) {
                                let listener = tls::TlsListener::new(
                                    listener,
                                    peer.tls,
                                    limits.header_read_timeout,
                                );
                                serve::serve(listener, peer_app, limits, stopped).await;
                            }
                        }
                    };
                    // The last count is written once both listeners have drained, so that
                    // refusals of requests still in flight at the stop are counted too.
                    let (served, drained) = tokio::sync::watch::channel(());
                    let servers = async move {
                        tokio::join!(metadata, secure, nodes);
                        drop(served);
                    };
                    let tally = anonymous::record_repeats(state, window, drained);
                    let stopper = async move {
                        let _ = stop.await;
                        drop(stopping);
                    };
                    tokio::join!(servers, tally, stopper);
                });
            })
            .context("starting the API thread")?;
        Ok(Self {
            http_scheme: if config.plain_http { "http" } else { "https" },
            http_addr,
            workstation_addr,
            peer_addr,
            cluster,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Stops accepting, lets requests in flight finish, and returns.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        let plain = |listen: &str| ApiConfig {
            listen: listen.into(),
            plain_http: true,
            ..ApiConfig::default()
        };
        assert!(plain("127.0.0.1:8700").validate().is_ok());
        assert!(plain("[::1]:0").validate().is_ok());
        assert!(plain("localhost:8700").validate().is_ok());
        let refused = plain("0.0.0.0:8700").validate().unwrap_err();
        assert!(refused.contains("api.plain_http"), "{refused}");
        assert!(plain("10.0.0.5:8700").validate().is_err());
        assert!(ApiConfig {
            listen: "0.0.0.0:8700".into(),
            ..ApiConfig::default()
        }
        .validate()
        .is_ok());
    }
}
