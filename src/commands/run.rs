//! `vigil run`: the main job, over a JSON-lines file or as a Kafka consumer-group member.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use vigil_abuse::{CaseIdKey, PolicyWatcher};
use vigil_core::{Check, Health, ResourceRegistry};
use vigil_detectors::HarmClassifier;
use vigil_ingest::{DeadLetterSink, DeadLetterWriter};
use vigil_kafka::directory::Addresses;
use vigil_kafka::{DeadLetterTopic, FlagPublisher, KafkaSource, SourceOptions};
use vigil_pipeline::{
    AbuseStage, Durability, FlagFile, FlagSink, Input, LiveRegistry, Pipeline, PolicyHandle,
    Progress, ReviewStage, Source, StageSettings, Summary,
};
use vigil_review::Reviewer;
use vigil_storage::Stores;

use super::monitoring::Monitoring;
use super::{
    geographies, kafka_config, lifecycle, load_registry, open_stores, output, stop_on_signals,
};
use crate::cli::{Format, RunArgs};
use crate::config::Config;

/// A progress bar on a terminal, for inputs large enough to wait for.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn advanced(&self, bytes_read: u64) {
        self.0.set_position(bytes_read);
    }
}

const BAR_MIN_BYTES: u64 = 8 << 20;

/// How often what a stream (standard input) gave is made durable.
const STREAM_DURABILITY: Duration = Duration::from_secs(1);

fn progress_bar(input: &Input) -> Option<Bar> {
    let len = input.len.filter(|l| *l >= BAR_MIN_BYTES)?;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("the template is valid"),
    );
    Some(Bar(bar))
}

pub fn run(config: &Config, args: &RunArgs) -> anyhow::Result<()> {
    // Taken first: a change saved while the registry loads is then seen as one.
    let loaded = vigil_pipeline::live::registry_version(&config.resources);
    let registry = load_registry(config)?;
    // First, so that /healthz answers (and /readyz says what is still starting) at once.
    let monitoring = Monitoring::start(config)?;
    // Loaded and checked before anything is read: a bad model stops the run here.
    let classifier = open_classifier(config)?;
    if let Some(classifier) = &classifier {
        monitoring.health.set(
            "model",
            Check::Ready(format!("harm classifier {} loaded", classifier.model())),
        );
    }
    let abuse = open_abuse(config, args)?;
    let stores = Arc::new(open_stores(config, &registry)?);
    monitoring.stores_open(&stores)?;
    // The retention purge runs now and on its schedule beside ingest; the exports follow.
    let lifecycle = Arc::new(lifecycle(config, &stores, &registry)?);
    // The registry as it is now: changes made while the run lasts (content logging turned
    // off) reach the pipeline and the reviewer at once.
    let live = LiveRegistry::new(lifecycle.registry_handle());
    let abuse = match abuse {
        Some(abuse) => {
            let review = open_review(config, abuse.policy_handle(), &stores, live.clone())?;
            Some(match review {
                Some(review) => abuse.with_review(review),
                None => abuse,
            })
        }
        None => None,
    };
    // With --api, the API serves these stores while the run lasts.
    let api = if args.api {
        let api = super::serve::start_api(
            config,
            &stores,
            &lifecycle,
            &live,
            &monitoring.health,
            Some(&run_kafka_config(config, args)),
        )?;
        // On stderr: stdout carries the run's summary.
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            super::serve::announcement(config, &api)
        );
        Some(api)
    } else {
        None
    };
    let _watcher = super::watch_registry(config, loaded, &stores, &live)?;
    // In a cluster, every write is mirrored to the changelog from here on (the purge's
    // included), and the source rebuilds the partitions it is assigned.
    let cluster = api.as_ref().and_then(|api| api.server.cluster.clone());
    let rebuilder = match (&args.input, cluster) {
        (None, Some(cluster)) => Some(super::changelog::mirror(
            &run_kafka_config(config, args),
            &stores,
            &geographies(&registry, &args.kafka_args.geographies)?,
            &cluster,
            &config.storage.retention,
            lifecycle.registry_handle(),
            &monitoring.health,
        )?),
        _ => None,
    };
    let schedule = lifecycle.schedule(Duration::from_secs(
        config.storage.retention.purge_interval_secs,
    ));
    let pipeline = Pipeline::new(&registry, &stores, &config.ingest)
        .with_classifier(classifier.as_ref())
        .with_abuse(abuse.as_ref())
        .with_live_registry(live);
    let mut summary = match &args.input {
        Some(path) => run_file(config, pipeline, path)?,
        None => {
            let advertised = Addresses {
                api: api
                    .as_ref()
                    .map(|api| format!("{}://{}", api.server.http_scheme, api.server.http_addr)),
                peer: api.as_ref().and_then(|api| api.peer_url(config)),
            };
            run_kafka(
                config,
                &registry,
                pipeline,
                args,
                &monitoring.health,
                advertised,
                rebuilder,
            )?
        }
    };
    if let Some(review) = abuse.as_ref().and_then(AbuseStage::review) {
        if args.input.is_some() {
            let limit = Duration::from_secs(config.review.drain_secs);
            if !review.drain(limit)? {
                tracing::info!(drain_secs = config.review.drain_secs, "Review time is up; the rest of the queue waits in the store for `vigil review` or the next run.");
            }
        }
        review.stop();
        summary.review = Some(review.summary());
    }
    if let Some(api) = api {
        api.stop();
    }
    summary.lifecycle = Some(schedule.finish()?);
    monitoring.stop();
    match args.format {
        Format::Text => output(&summary),
        Format::Json => output(serde_json::to_string_pretty(&summary)?),
    }
}

/// The harm classifier, unless `detectors.enabled` is false.
pub(super) fn open_classifier(config: &Config) -> anyhow::Result<Option<HarmClassifier>> {
    if !config.detectors.enabled {
        return Ok(None);
    }
    let classifier = HarmClassifier::open(&config.detectors)
        .context("loading the harm classifier (detectors.enabled = false runs without it)")?;
    Ok(Some(classifier))
}

/// The recurring-abuse stage, unless `abuse.enabled` is false: its policy is loaded and
/// checked here, its case-ID secret read (or created on the first run) from
/// `abuse.case_id_key`, and its flag events go to the file `abuse.flags`, or to the Kafka flag
/// topics when consuming from Kafka.
fn open_abuse(config: &Config, args: &RunArgs) -> anyhow::Result<Option<AbuseStage>> {
    if !config.abuse.enabled {
        return Ok(None);
    }
    let path = vigil_detectors::runtime::resolve(&config.abuse.policy);
    let watcher = PolicyWatcher::open(&path)
        .context("loading the abuse policy (abuse.enabled = false runs without it)")?;
    let case_ids = CaseIdKey::load_or_create(&config.abuse.case_id_key)?;
    let flags: Box<dyn FlagSink> = match &args.input {
        Some(_) => Box::new(FlagFile::new(&config.abuse.flags)),
        None => Box::new(FlagPublisher::new(&kafka_config(
            config,
            args.kafka_args.brokers.as_deref(),
        ))?),
    };
    Ok(Some(AbuseStage::new(watcher, case_ids, flags)))
}

/// The LLM review stage, unless `review.enabled` is false: its backend is opened here (a
/// missing local model stops the run with the way to install it), and its workers start.
pub(super) fn open_review(
    config: &Config,
    policy: PolicyHandle,
    stores: &Arc<Stores>,
    registry: LiveRegistry,
) -> anyhow::Result<Option<ReviewStage>> {
    let review = &config.review;
    if !review.enabled {
        return Ok(None);
    }
    let backend = vigil_review::open_backend(review)
        .context("opening the LLM reviewer (review.enabled = false runs without it)")?;
    let reviewer = Reviewer::new(backend, review.retry, review.breaker);
    let settings = StageSettings {
        workers: review.workers,
        queue_capacity: review.queue_capacity,
    };
    Ok(Some(ReviewStage::start(
        reviewer,
        policy,
        stores.clone(),
        registry,
        settings,
    )))
}

fn run_file(
    config: &Config,
    pipeline: Pipeline<'_>,
    path: &std::path::Path,
) -> anyhow::Result<Summary> {
    let mut input =
        Input::open(path).with_context(|| format!("opening input {}", path.display()))?;
    // A stream cannot be read again after a crash: what it gave is made durable each second,
    // not only at its end.
    let pipeline = match input.len {
        Some(_) => pipeline,
        None => pipeline.with_durability(Durability::Every(STREAM_DURABILITY)),
    };
    let bar = progress_bar(&input);
    let mut dead_letters = DeadLetterWriter::new(&config.ingest.dead_letters);
    let progress = bar.as_ref().map_or(&() as &dyn Progress, |b| b);
    let summary = pipeline.run(&mut input, &mut dead_letters, progress)?;
    if let Some(bar) = bar {
        bar.0.finish_and_clear();
    }
    Ok(summary)
}

/// The Kafka settings of this run: the file's, with `--brokers` and `--group`.
fn run_kafka_config(config: &Config, args: &RunArgs) -> vigil_kafka::KafkaConfig {
    let mut kafka = kafka_config(config, args.kafka_args.brokers.as_deref());
    if let Some(group) = &args.group {
        kafka.group_id.clone_from(group);
    }
    kafka
}

fn run_kafka(
    config: &Config,
    registry: &ResourceRegistry,
    pipeline: Pipeline<'_>,
    args: &RunArgs,
    health: &Arc<Health>,
    addresses: Addresses,
    rebuilder: Option<Arc<vigil_kafka::changelog::Rebuilder>>,
) -> anyhow::Result<Summary> {
    let kafka = run_kafka_config(config, args);
    let options = SourceOptions {
        geographies: geographies(registry, &args.kafka_args.geographies)?,
        stop: stop_on_signals()?,
        stop_when_idle: args.stop_when_idle.map(Duration::from_secs_f64),
        max_record_bytes: config.ingest.max_record_bytes,
        health: health.clone(),
        addresses,
        rebuilder,
    };
    let mut source = KafkaSource::new(&kafka, options)?;
    let mut dead_letters = DeadLetterTopic::new(&kafka)?;
    tracing::info!(source = %source.name(), dead_letters = %dead_letters.destination(), "Consuming.");
    let pipeline = pipeline.with_durability(Durability::Every(kafka.commit_interval()));
    Ok(pipeline.run(&mut source, &mut dead_letters, &())?)
}
