//! `vigil produce`: a JSON-lines file onto the geographies' Kafka log topics.

use std::fmt::Write as _;

use anyhow::Context;
use vigil_core::Geography;
use vigil_pipeline::Input;

use super::{kafka_config, output};
use crate::cli::{Format, ProduceArgs};
use crate::config::Config;

pub fn produce(config: &Config, args: &ProduceArgs) -> anyhow::Result<()> {
    let kafka = kafka_config(config, args.brokers.as_deref());
    let unrouted = args
        .unrouted_to
        .as_deref()
        .map(Geography::parse)
        .transpose()
        .context("--unrouted-to")?;
    let input = Input::open(&args.input)
        .with_context(|| format!("opening input {}", args.input.display()))?;
    let summary = vigil_kafka::load(
        &kafka,
        input.reader,
        &input.name,
        unrouted.as_ref(),
        &|_| {},
    )?;
    match args.format {
        Format::Json => output(serde_json::to_string_pretty(&summary)?),
        Format::Text => {
            let mut report = String::new();
            for (topic, n) in &summary.sent {
                writeln!(report, "sent {n:>10} to {topic}")?;
            }
            if summary.unrouted > 0 {
                writeln!(
                    report,
                    "skipped {:>7} lines without a readable geography (see --unrouted-to)",
                    summary.unrouted
                )?;
            }
            if summary.too_large > 0 {
                writeln!(
                    report,
                    "skipped {:>7} lines over kafka.max_message_bytes",
                    summary.too_large
                )?;
            }
            write!(
                report,
                "elapsed {:>9.2}s   ({:.0} messages/s)",
                summary.elapsed_secs, summary.messages_per_sec
            )?;
            output(report)
        }
    }
}
