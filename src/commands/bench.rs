//! `vigil bench`: picks the harness of `vigil_bench` the flags name, hands it the
//! configuration sections it reads, and prints its report.

use std::sync::Arc;

use vigil_api::ApiServer;
use vigil_bench::api::ApiSections;
use vigil_bench::BenchOptions;
use vigil_core::ResourceRegistry;
use vigil_pipeline::LiveRegistry;
use vigil_review::BackendKind;
use vigil_storage::Stores;

use super::eval_reviewer::standalone_reviewer;
use super::{kafka_config, lifecycle, open_stores, output, serve};
use crate::cli::BenchArgs;
use crate::config::Config;

pub fn bench(config: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    let options = options(args);
    // Measured as served: with the metrics recorder counting, as `vigil run` and `vigil serve`
    // do unless `metrics.enabled` is false (no listener: nothing scrapes a benchmark).
    if config.metrics.enabled {
        vigil_api::telemetry::recorder()?;
    }
    let report = if args.classifier {
        vigil_bench::classifier::bench(&options, &config.detectors)?
    } else if args.detection {
        vigil_bench::detection::bench(&options, &config.abuse.policy, &config.detectors)?
    } else if args.reviewer {
        let mut review = config.review.clone();
        if let Some(url) = &args.endpoint {
            review.backend = BackendKind::Openai;
            review.openai.url.clone_from(url);
        }
        let (policy, reviewer) = standalone_reviewer(config, &review)?;
        vigil_bench::reviewer::bench(&options, &reviewer, &policy, review.workers)?
    } else if args.purge {
        vigil_bench::purge::bench(&options)?
    } else if args.sql {
        vigil_bench::sql::bench(&options)?
    } else if args.api {
        let sections = ApiSections {
            resources: config.resources.clone(),
            storage: config.storage.clone(),
            analytics: config.analytics.clone(),
            access: config.access.clone(),
            api: config.api.clone(),
            cluster: config.cluster.clone(),
            node: config.kafka.node.clone(),
        };
        vigil_bench::api::bench(&options, &sections, &Serve(config))?
    } else if args.rebuild {
        let brokers = args.kafka.as_deref();
        vigil_bench::rebuild::bench(&options, &kafka_config(config, brokers))?
    } else {
        // With --kafka: the configured Kafka settings (so `VIGIL_KAFKA__*` and the config file
        // tune the consumer measured), with the brokers given.
        let kafka = args
            .kafka
            .as_deref()
            .map(|brokers| kafka_config(config, Some(brokers)));
        vigil_bench::pipeline::bench(&options, kafka.as_ref())?
    };
    output(report)
}

fn options(args: &BenchArgs) -> BenchOptions {
    BenchOptions {
        records: args.records,
        record_bytes: args.record_bytes,
        runs: args.runs,
        dir: args.dir.clone(),
        threads: args.threads,
        no_peer: args.no_peer,
        alone: args.alone,
        reviewers: args.reviewers,
        with_classifier: args.with_classifier,
        users: args.users,
        nodes: args.nodes,
        forwarded: args.forwarded,
    }
}

/// The API as `vigil serve` opens and starts it, over the configuration with the API bench's
/// scratch sections in place of the configured ones.
struct Serve<'a>(&'a Config);

impl Serve<'_> {
    fn config(&self, sections: &ApiSections) -> Config {
        Config {
            resources: sections.resources.clone(),
            storage: sections.storage.clone(),
            analytics: sections.analytics.clone(),
            access: sections.access.clone(),
            api: sections.api.clone(),
            cluster: sections.cluster.clone(),
            kafka: vigil_kafka::KafkaConfig {
                node: sections.node.clone(),
                ..self.0.kafka.clone()
            },
            ..self.0.clone()
        }
    }
}

impl vigil_bench::api::Server for Serve<'_> {
    fn open_stores(
        &self,
        sections: &ApiSections,
        registry: &ResourceRegistry,
    ) -> anyhow::Result<Stores> {
        open_stores(&self.config(sections), registry)
    }

    fn start(
        &self,
        sections: &ApiSections,
        stores: &Arc<Stores>,
        registry: &ResourceRegistry,
    ) -> anyhow::Result<ApiServer> {
        let config = self.config(sections);
        let lifecycle = Arc::new(lifecycle(&config, stores, registry)?);
        let live = LiveRegistry::new(lifecycle.registry_handle());
        let api = serve::start_api(
            &config,
            stores,
            &lifecycle,
            &live,
            &vigil_core::Health::default(),
            None,
        )?;
        Ok(api.server)
    }
}
