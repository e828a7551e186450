//! The metrics listener of `vigil run` and `vigil serve`: started first (so `/healthz`
//! answers while the rest starts), with the readiness checks the commands set as their parts
//! come up, and the gauges read from the stores at each scrape (sizes on disk, review tasks
//! queued).

use std::sync::Arc;

use vigil_api::ops::MetricsServer;
use vigil_core::{Check, Health};
use vigil_storage::Stores;

use crate::config::Config;

/// The listener, when `metrics.enabled`; the checks either way.
pub(super) struct Monitoring {
    /// Where the parts of this process say whether they are ready.
    pub health: Arc<Health>,
    server: Option<MetricsServer>,
}

impl Monitoring {
    /// Starts the listener on `metrics.listen`.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let health = Health::new();
        let server = match config.metrics.enabled {
            false => None,
            true => {
                let server = MetricsServer::start(&config.metrics, health.clone())?;
                tracing::info!(address = %server.addr, "Serving /metrics, /healthz and /readyz.");
                Some(server)
            }
        };
        Ok(Self { health, server })
    }

    /// Reports the stores as open, and reads their sizes and review queues at each scrape.
    pub fn stores_open(&self, stores: &Arc<Stores>) -> anyhow::Result<()> {
        let geographies = stores.geographies_on_disk()?.len();
        self.health.set(
            "stores",
            Check::Ready(format!("{geographies} geographies on disk")),
        );
        if let Some(server) = &self.server {
            let stores = stores.clone();
            server.on_scrape(Box::new(move || vigil_api::ops::report_stores(&stores)));
        }
        Ok(())
    }

    /// Stops the listener.
    pub fn stop(self) {
        if let Some(server) = self.server {
            server.stop();
        }
    }
}
