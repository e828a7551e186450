//! What `vigil run --kafka --api` does with `[cluster]` before it consumes: each geography's
//! store gets its day-key ratchet (from a peer, or created by the node whose claim won) and
//! starts mirroring its writes to the changelog; the source gets the rebuilder that restores
//! partitions this node is assigned.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use vigil_api::cluster::Cluster;
use vigil_core::{Check, Geography, Health, ResourceRegistry};
use vigil_kafka::changelog::{
    claim_ratchet, winning_claim, ChangelogProducer, PartitionMap, RatchetClaim, Rebuilder,
};
use vigil_kafka::KafkaConfig;
use vigil_storage::changelog::RatchetState;
use vigil_storage::retention::RetentionConfig;
use vigil_storage::Stores;

/// How long a node waits for the node whose claim won to serve a geography's ratchet.
const RATCHET_WAIT: Duration = Duration::from_secs(120);

/// How often it asks again meanwhile.
const RATCHET_POLL: Duration = Duration::from_millis(500);

/// Mirrors every geography of `geographies` to its changelog topic, each store with its
/// ratchet, and returns the rebuilder for the source.
pub(super) fn mirror(
    kafka: &KafkaConfig,
    stores: &Arc<Stores>,
    geographies: &[Geography],
    cluster: &Cluster,
    retention: &RetentionConfig,
    registry: Arc<RwLock<ResourceRegistry>>,
    health: &Health,
) -> anyhow::Result<Arc<Rebuilder>> {
    health.set(
        "changelog",
        Check::NotReady("getting each geography's day-key ratchet".into()),
    );
    let partitions = Arc::new(PartitionMap::new(kafka, geographies)?);
    let producer = Arc::new(ChangelogProducer::new(kafka, partitions.clone())?);
    for geography in geographies {
        let first_day = stores.clock().today().minus(
            retention
                .geography_days(geography.as_str())
                .saturating_sub(1),
        );
        ratchet(kafka, stores, geography, cluster, first_day)?;
        stores.geo(geography)?.mirror_to(producer.clone())?;
    }
    health.set(
        "changelog",
        Check::Ready(format!(
            "mirroring to {} for {} geographies",
            kafka.changelog_topics,
            geographies.len()
        )),
    );
    Ok(Rebuilder::start(
        kafka,
        stores.clone(),
        partitions,
        retention.clone(),
        registry,
    )?)
}

/// Makes sure `geography`'s store has its ratchet state: its own, a peer's, or, when no node
/// has one yet, a new one created by the node whose claim Kafka ordered first.
fn ratchet(
    kafka: &KafkaConfig,
    stores: &Stores,
    geography: &Geography,
    cluster: &Cluster,
    first_day: vigil_core::Day,
) -> anyhow::Result<()> {
    let store = stores.geo(geography)?;
    let started = Instant::now();
    // The state this node claimed to create, installed if its claim wins.
    let mut claimed: Option<(RatchetState, u32)> = None;
    loop {
        if store.ratchet_state()?.is_some() {
            return Ok(());
        }
        if let Some(wire) = cluster.ratchet(geography.as_str()) {
            let state = RatchetState::from_wire(&wire)
                .map_err(|e| anyhow::anyhow!("a peer's ratchet for {geography}: {e}"))?;
            store.install_ratchet(&state)?;
            tracing::info!(%geography, "Got the geography's day-key ratchet from a peer.");
            return Ok(());
        }
        let winner = winning_claim(kafka, geography)?;
        let next_generation = match (&winner, &claimed) {
            (None, _) => Some(1),
            (Some(w), Some((state, generation)))
                if w.node == kafka.node && w.ratchet == hex::encode(state.id()) =>
            {
                store.install_ratchet(state)?;
                tracing::info!(%geography, generation, "Created the geography's day-key ratchet (this node's claim came first).");
                return Ok(());
            }
            // This node won earlier and lost its state before any other node copied it:
            // what the changelog holds under it cannot be opened any more.
            (Some(w), _) if w.node == kafka.node && claimed.is_none() => {
                tracing::error!(%geography, generation = w.generation, "This node created the geography's ratchet and lost it, and no peer has a copy: content in the changelog sealed under it is unreadable. Claiming a new one.");
                Some(w.generation + 1)
            }
            (Some(_), _) => None,
        };
        if let Some(generation) = next_generation {
            let state = RatchetState::create(first_day);
            let claim = RatchetClaim {
                node: kafka.node.clone(),
                ratchet: hex::encode(state.id()),
                generation,
            };
            claim_ratchet(kafka, geography, &claim)?;
            claimed = Some((state, generation));
            continue;
        }
        if started.elapsed() > RATCHET_WAIT {
            let winner = winner.map(|w| w.node).unwrap_or_default();
            return Err(anyhow::anyhow!(
                "no peer served geography {geography}'s day-key ratchet within {} s; node {winner} created it",
                RATCHET_WAIT.as_secs()
            ))
            .context("joining the cluster's changelog");
        }
        std::thread::sleep(RATCHET_POLL);
    }
}
