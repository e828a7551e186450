//! The metrics listener: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers) and `/readyz` (every part of it can do its work, with reasons), served by
//! `vigil run` and `vigil serve` on an address of its own (`metrics.listen`, loopback by
//! default), apart from the API's listeners so that a scraper needs no token and a flood of
//! API requests cannot starve the probes.
//!
//! Nothing served here carries an ID or content: the series are described in [`telemetry`]
//! with bounded labels only, and readiness texts name parts and states.
//!
//! [`telemetry`]: crate::telemetry

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use vigil_core::Health;
use vigil_storage::Stores;

use crate::serve::{self, Limits};
use crate::tls::PlainListener;

/// Settings of the metrics listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether `vigil run` and `vigil serve` serve `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Address of the metrics listener (plain HTTP; keep it on loopback or a private
    /// network). Port 0 picks one.
    #[serde(default = "default_listen")]
    pub listen: String,
}

const fn default_enabled() -> bool {
    true
}
fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            listen: default_listen(),
        }
    }
}

impl MetricsConfig {
    /// Checks the address parses.
    pub fn validate(&self) -> Result<(), String> {
        match self.listen.parse::<SocketAddr>() {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "metrics.listen must be an address such as 127.0.0.1:9464 ({e})"
            )),
        }
    }
}

/// Limits of the metrics listener: a scraper and a few probes need little.
const LIMITS: Limits = Limits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(30),
};

/// Called before each scrape, to bring gauges read from elsewhere (sizes on disk) up to date.
pub type OnScrape = Box<dyn Fn() + Send + Sync>;

type Hooks = Arc<std::sync::RwLock<Vec<OnScrape>>>;

/// A running metrics listener: its own small Tokio runtime on a thread.
pub struct MetricsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    hooks: Hooks,
    shutdown: Option<tokio::sync::watch::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Installs the metrics recorder (once per process), binds `config.listen` and serves.
    pub fn start(config: &MetricsConfig, health: Arc<Health>) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let handle = crate::telemetry::recorder()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the metrics runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&config.listen))
            .with_context(|| {
                format!(
                    "metrics.listen {} (another vigil on this machine? set [metrics] listen, or enabled = false)",
                    config.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let hooks = Hooks::default();
        let scraped = hooks.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let (handle, hooks) = (handle.clone(), scraped.clone());
                    async move {
                        // Blocking reads (stores on disk): off the runtime's thread.
                        let _ = tokio::task::spawn_blocking(move || {
                            for hook in hooks.read().unwrap_or_else(|e| e.into_inner()).iter() {
                                hook();
                            }
                        })
                        .await;
                        (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            handle.render(),
                        )
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || {
                    let readiness = health.readiness();
                    async move {
                        let status = match readiness.is_ready() {
                            true => StatusCode::OK,
                            false => StatusCode::SERVICE_UNAVAILABLE,
                        };
                        (status, readiness.text()).into_response()
                    }
                }),
            );
        let (shutdown, stopped) = tokio::sync::watch::channel(());
        let thread = std::thread::Builder::new()
            .name("vigil-metrics".into())
            .spawn(move || {
                runtime.block_on(serve::serve(PlainListener(listener), app, LIMITS, stopped));
            })
            .context("starting the metrics thread")?;
        Ok(Self {
            addr,
            hooks,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Calls `hook` before each scrape from now on.
    pub fn on_scrape(&self, hook: OnScrape) {
        self.hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Stops listening and returns once requests in flight are answered.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// Sets the gauges of each geography's store this process has open: its size on disk and the
/// review tasks queued in it. Only open stores are read, so a scrape never opens (or brings
/// back) a store.
pub fn report_stores(stores: &Stores) {
    for (geography, store) in stores.opened() {
        let label = geography.as_str().to_owned();
        if let Ok(bytes) = store.size_on_disk() {
            metrics::gauge!("vigil_store_size_bytes", "geography" => label.clone())
                .set(bytes as f64);
        }
        metrics::gauge!("vigil_review_queue_depth", "geography" => label)
            .set(store.review_queue_len() as f64);
    }
}
