//! `vigil cluster issue`, and what `vigil run --api` and `vigil serve` need to join the other
//! nodes of their group (`[cluster]`): the peer listener's TLS, the client to the other
//! nodes, and the thread that keeps the list of them current from the node directory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vigil_access::cluster::ClusterCa;
use vigil_api::cluster::{Cluster, PeerNode, Peers};
use vigil_api::PeerListener;
use vigil_kafka::directory::read_directory;
use vigil_kafka::KafkaConfig;

use super::output;
use crate::cli::ClusterCommand;
use crate::config::Config;

pub fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Issue {
            node,
            hosts,
            ca_dir,
            out,
        } => {
            let ca = ClusterCa::load_or_create(&ca_dir)?;
            let issued = ca.issue_node(&node, &hosts)?;
            std::fs::create_dir_all(&out).with_context(|| format!("{}", out.display()))?;
            let cert = out.join(format!("{node}.pem"));
            let key = out.join(format!("{node}.key"));
            std::fs::write(&cert, &issued.cert_pem)
                .with_context(|| format!("{}", cert.display()))?;
            vigil_access::workstation::write_private(&key, &issued.key_pem)?;
            std::fs::write(out.join("ca.pem"), ca.ca_pem())
                .with_context(|| format!("{}", out.display()))?;
            output(format!(
                "node {node}: {} and {} (certificate {}), with the cluster CA {}; set cluster.cert, cluster.key and cluster.ca to them on that node",
                cert.display(),
                key.display(),
                &issued.fingerprint[..16],
                out.join("ca.pem").display()
            ))
        }
    }
}

/// This node in its cluster: the peer listener to serve, and the client to the others.
pub(super) struct Joined {
    /// The peer listener.
    pub listener: PeerListener,
    /// The client, with the list of peers the directory watch keeps current.
    pub cluster: Arc<Cluster>,
}

/// This node's place in the cluster, when `[cluster]` is enabled: its certificate must have
/// been issued for its name (`kafka.node`).
pub(super) fn join(config: &Config) -> anyhow::Result<Option<Joined>> {
    let settings = &config.cluster;
    if !settings.enabled {
        return Ok(None);
    }
    settings.validate().map_err(anyhow::Error::msg)?;
    let identity = settings.identity()?;
    let named = identity.node();
    let node = &config.kafka.node;
    if named.as_deref() != Some(node.as_str()) {
        anyhow::bail!(
            "cluster.cert {} was issued for node {}, but this node is kafka.node = {node}; issue one with `vigil cluster issue --node {node}`",
            settings.cert.display(),
            named.as_deref().unwrap_or("(none)")
        );
    }
    let tls = vigil_api::tls::server_config(
        &identity.ca_pem,
        &settings.cert,
        &settings.key,
        vigil_api::tls::ClientAuth::Required,
    )?;
    let cluster = Cluster::new(
        node,
        &identity,
        Duration::from_millis(settings.timeout_ms),
        Arc::new(Peers::default()),
    )?;
    Ok(Some(Joined {
        listener: PeerListener {
            listen: settings.listen.clone(),
            tls,
        },
        cluster: Arc::new(cluster),
    }))
}

/// Keeps a cluster's list of peers current: every `cluster.refresh_ms`, the node directory's
/// members that serve a peer listener, other than this node. A member counts whether or not it
/// owns partitions now: it still stores what it consumed before a rebalance, and one that died
/// stays listed (answered as unreachable) until it comes back or stops cleanly. Stops when
/// dropped.
pub(super) struct DirectoryWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DirectoryWatch {
    pub(super) fn start(
        kafka: KafkaConfig,
        cluster: &Arc<Cluster>,
        every: Duration,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (stopping, cluster) = (stop.clone(), cluster.clone());
        let thread = std::thread::Builder::new()
            .name("cluster-directory".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match read_directory(&kafka) {
                        Ok(entries) => cluster.peers.set(
                            entries
                                .into_iter()
                                .filter(|e| e.node != cluster.node)
                                .filter_map(|e| {
                                    Some(PeerNode {
                                        url: e.peer?,
                                        name: e.node,
                                    })
                                })
                                .collect(),
                        ),
                        Err(error) => {
                            tracing::warn!(%error, "Reading the node directory failed; forwarding uses the peers last read.");
                        }
                    }
                    let deadline = std::time::Instant::now() + every;
                    while !stopping.load(Ordering::Relaxed) && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
            .context("starting the directory watch")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DirectoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
