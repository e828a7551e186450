//! `vigil review`: reviews what waits in the review queue now, without ingesting anything
//! (for example after a run whose `review.drain_secs` ran out, or with another backend).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vigil_abuse::PolicyWatcher;
use vigil_pipeline::PolicyHandle;

use super::run::open_review;
use super::{load_registry, open_stores, output};
use crate::cli::{Format, ReviewArgs};
use crate::config::Config;

pub fn review(config: &Config, args: &ReviewArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.review.enabled,
        "review.enabled is false: there is no reviewer to run"
    );
    let registry = load_registry(config)?;
    let path = vigil_detectors::runtime::resolve(&config.abuse.policy);
    let watcher = PolicyWatcher::open(&path).context("loading the abuse policy")?;
    let policy = PolicyHandle::new(watcher.current().clone());
    let stores = Arc::new(open_stores(config, &registry)?);
    let live = vigil_pipeline::LiveRegistry::new(Arc::new(std::sync::RwLock::new(registry)));
    let review =
        open_review(config, policy, &stores, live)?.context("the review stage did not start")?;
    let limit = Duration::from_secs(args.drain_secs.unwrap_or(config.review.drain_secs));
    let drained = review.drain(limit)?;
    review.stop();
    let summary = review.summary();
    match args.format {
        Format::Json => output(serde_json::to_string_pretty(&summary)?),
        Format::Text if drained => output(&summary),
        Format::Text => output(format_args!("{summary}\n(time is up; run again to go on)")),
    }
}
