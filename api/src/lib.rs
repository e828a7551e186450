//! vigil's HTTP API (axum), served on two listeners:
//!
//! - **plain HTTP** for case metadata, access requests and their decisions, and resource
//!   management;
//! - **the workstation listener**, TLS requiring a client certificate from vigil's workstation
//!   CA, which alone can return content: one flagged record at a time, by case and request
//!   ID, under an active just-in-time grant.
//!
//! Both serve the same routes ([`routes::OPERATIONS`], which also generates `/openapi.json`);
//! a point query that does not arrive over the workstation listener with a registered,
//! unrevoked certificate is refused. Every `/v1` request leaves exactly one audit entry, and
//! one that cannot be audited is refused ([`attempt`]).

pub mod attempt;
pub mod error;
mod handlers;
pub mod routes;
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
    /// Address of the plain HTTP listener (metadata, grants, management). Port 0 picks one.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Address of the workstation listener (TLS with client certificates; content).
    #[serde(default = "default_workstation_listen")]
    pub workstation_listen: String,
    /// Names and addresses the server's TLS certificate is issued for.
    #[serde(default = "default_tls_hosts")]
    pub tls_hosts: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Whether `vigil run` also serves the API while it runs.
    #[serde(default)]
    pub serve_in_run: bool,
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

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            workstation_listen: default_workstation_listen(),
            tls_hosts: default_tls_hosts(),
            max_body_bytes: default_max_body_bytes(),
            serve_in_run: false,
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
    pub registry_change: std::sync::Mutex<()>,
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
    /// Whether resource settings may change through the API. Not while this process also
    /// ingests: the pipeline reads the registry once, at start, and would go on storing
    /// content for a resource whose logging was just turned off.
    pub settings_writable: bool,
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
}

/// A running API server: its own Tokio runtime on a thread.
pub struct ApiServer {
    /// Where the plain listener listens.
    pub http_addr: SocketAddr,
    /// Where the workstation listener listens.
    pub workstation_addr: SocketAddr,
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
        } = parts;
        let (cert, key) = ca.server_cert(&config.tls_hosts)?;
        let tls = tls::server_config(ca.ca_pem(), &cert, &key)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("vigil-api")
            .build()
            .context("starting the API runtime")?;
        let (http, workstation) = runtime.block_on(async {
            let http = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("api.listen {}", config.listen))?;
            let ws = tokio::net::TcpListener::bind(&config.workstation_listen)
                .await
                .with_context(|| format!("api.workstation_listen {}", config.workstation_listen))?;
            anyhow::Ok((http, ws))
        })?;
        let http_addr = http.local_addr()?;
        let workstation_addr = workstation.local_addr()?;
        let app = routes::router(Arc::new(state), config.max_body_bytes)
            .merge(pages)
            .into_make_service_with_connect_info::<Peer>();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vigil-api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let tls = match tls::TlsListener::new(workstation, tls) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "The workstation listener failed.");
                            return;
                        }
                    };
                    // Both listeners stop when `stopping` is dropped.
                    let (stopping, stopped) = tokio::sync::watch::channel(());
                    let plain = axum::serve(tls::PlainListener(http), app.clone())
                        .with_graceful_shutdown(wait(stopped.clone()));
                    let secure = axum::serve(tls, app).with_graceful_shutdown(wait(stopped));
                    let stopper = async move {
                        let _ = stop.await;
                        drop(stopping);
                    };
                    let (a, b, ()) = tokio::join!(plain, secure, stopper);
                    for result in [a, b] {
                        if let Err(e) = result {
                            tracing::error!(error = %e, "The API server stopped with an error.");
                        }
                    }
                });
            })
            .context("starting the API thread")?;
        Ok(Self {
            http_addr,
            workstation_addr,
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

async fn wait(mut rx: tokio::sync::watch::Receiver<()>) {
    // Resolves when the sender is dropped.
    while rx.changed().await.is_ok() {}
}
