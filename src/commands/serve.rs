//! `vigil serve`: the HTTP API over the stores, with the retention schedule running beside
//! it and the metrics listener. Also used by `vigil run --api`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vigil_access::{AccessStore, AuditLog, RateLimiter, WorkstationCa};
use vigil_api::{ApiServer, AppState, ServerParts};
use vigil_core::{Check, Health};
use vigil_kafka::KafkaConfig;
use vigil_pipeline::{Lifecycle, LiveRegistry};
use vigil_storage::Stores;

use super::cluster::{DirectoryWatch, Joined};
use super::monitoring::Monitoring;
use super::{lifecycle, load_registry, open_stores, output, stop_on_signals};
use crate::config::Config;

/// The API's listeners, and with `[cluster]` the watch that keeps its peers current.
pub(super) struct Api {
    pub server: ApiServer,
    _directory: Option<DirectoryWatch>,
}

impl Api {
    /// The peer listener's URL, as the node directory announces it.
    pub fn peer_url(&self, config: &Config) -> Option<String> {
        let addr = self.server.peer_addr?;
        Some(
            config
                .cluster
                .advertise
                .clone()
                .unwrap_or_else(|| format!("https://{addr}")),
        )
    }

    /// Stops the listeners (requests in flight finish) and the watch.
    pub fn stop(self) {
        self.server.stop();
    }
}

/// Starts the API over `stores`, sharing `lifecycle`'s registry (a retention change made
/// through the API applies from the schedule's next pass); deletions and resource changes
/// nudge `lifecycle` to bring the exports up to date. With `[cluster]`, the peer listener
/// starts too, and the peers are read from the node directory on `kafka` (without it, the
/// caller sets them: the forwarding benchmark).
pub(super) fn start_api(
    config: &Config,
    stores: &Arc<Stores>,
    lifecycle: &Arc<Lifecycle>,
    live: &LiveRegistry,
    health: &Health,
    kafka: Option<&KafkaConfig>,
) -> anyhow::Result<Api> {
    let joined = super::cluster::join(config)?;
    config.access.validate()?;
    let access = AccessStore::open(&config.access.dir)?;
    let pruned = access.prune_expired(stores.clock().now())?;
    tracing::info!(pruned, "Removed expired tokens and sign-in codes.");
    let audit = AuditLog::open(&config.access.audit_log, *stores.clock())
        .context("opening the audit log")?;
    let watched = audit.clone();
    health.probe("audit", move || match watched.is_writable() {
        true => Check::Ready(format!("writable, {} failed appends", watched.failures())),
        false => Check::NotReady(format!(
            "the audit log's writer stopped after a failed write ({} failed appends); audited requests are refused until vigil restarts",
            watched.failures()
        )),
    });
    let ca = WorkstationCa::load_or_create(&config.access.ca_dir, &config.api.tls_hosts)?;
    let (nudge, nudged) = std::sync::mpsc::channel::<()>();
    let exporter = lifecycle.clone();
    std::thread::Builder::new()
        .name("api-exports".into())
        .spawn(move || {
            while nudged.recv().is_ok() {
                while nudged.try_recv().is_ok() {}
                if let Err(error) = exporter.export() {
                    tracing::warn!(%error, "Bringing the exports up to date after a change failed; the next scheduled pass retries.");
                }
            }
        })
        .context("starting the export thread")?;
    let state = AppState {
        stores: stores.clone(),
        registry: lifecycle.registry_handle(),
        registry_change: live.change_lock(),
        registry_path: config.resources.clone(),
        retention: config.storage.retention.clone(),
        limiter: RateLimiter::new(
            config.access.point_queries_per_minute,
            config.access.point_query_burst,
        ),
        access,
        access_config: config.access.clone(),
        audit,
        on_change: Box::new(move || {
            let _ = nudge.send(());
        }),
        anonymous: Default::default(),
        cluster: joined.as_ref().map(|j| j.cluster.clone()),
    };
    let (peer, cluster) = match joined {
        Some(Joined { listener, cluster }) => (Some(listener), kafka.map(|k| (k, cluster))),
        None => (None, None),
    };
    let server = ApiServer::start(ServerParts {
        state,
        pages: vigil_console::router(),
        config: config.api.clone(),
        ca,
        peer,
    })?;
    let directory = cluster
        .map(|(kafka, cluster)| {
            DirectoryWatch::start(
                kafka.clone(),
                &cluster,
                Duration::from_millis(config.cluster.refresh_ms),
            )
        })
        .transpose()?;
    Ok(Api {
        server,
        _directory: directory,
    })
}

/// Where the API listens, for the operator (tests read this line for the ports).
pub(super) fn announcement(config: &Config, api: &Api) -> String {
    let server = &api.server;
    let peers = match api.peer_url(config) {
        Some(url) => format!("; peer listener (other nodes, cluster CA) on {url}"),
        None => String::new(),
    };
    format!(
        "vigil API on {}://{} (metadata, access requests, management) and https://{} (workstations: client certificate from {} required; content only here); reviewer console at /console on both{peers}",
        server.http_scheme,
        server.http_addr,
        server.workstation_addr,
        config.access.ca_dir.join("ca.pem").display()
    )
}

pub fn serve(config: &Config) -> anyhow::Result<()> {
    serve_then(config, |_| Ok(()))
}

/// Serves until SIGINT or SIGTERM, calling `ready` once the listeners are bound (after the
/// announcement line).
pub(super) fn serve_then(
    config: &Config,
    ready: impl FnOnce(&ApiServer) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Taken first: a change saved while the registry loads is then seen as one.
    let loaded = vigil_pipeline::live::registry_version(&config.resources);
    let registry = load_registry(config)?;
    let monitoring = Monitoring::start(config)?;
    let stores = Arc::new(open_stores(config, &registry)?);
    // Finish deletions a crash cut short, and apply registry changes made while stopped.
    stores.reconcile(&registry)?;
    monitoring.stores_open(&stores)?;
    let lifecycle = Arc::new(lifecycle(config, &stores, &registry)?);
    let stop = stop_on_signals()?;
    let live = LiveRegistry::new(lifecycle.registry_handle());
    let api = start_api(
        config,
        &stores,
        &lifecycle,
        &live,
        &monitoring.health,
        Some(&super::kafka_config(config, None)),
    )?;
    let _watcher = super::watch_registry(config, loaded, &stores, &live)?;
    output(announcement(config, &api))?;
    ready(&api.server)?;
    let schedule = lifecycle.schedule(Duration::from_secs(
        config.storage.retention.purge_interval_secs,
    ));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("Stopping the API.");
    monitoring
        .health
        .set("shutdown", Check::NotReady("stopping".into()));
    api.stop();
    schedule.finish()?;
    stores.flush()?;
    monitoring.stop();
    Ok(())
}
