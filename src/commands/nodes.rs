//! `vigil nodes`: the node directory, read to its end.

use std::fmt::Write as _;

use vigil_kafka::directory::read_directory;

use super::{kafka_config, output};
use crate::cli::{Format, NodesArgs};
use crate::config::Config;

pub fn nodes(config: &Config, args: &NodesArgs) -> anyhow::Result<()> {
    let mut kafka = kafka_config(config, args.brokers.as_deref());
    if let Some(group) = &args.group {
        kafka.group_id.clone_from(group);
    }
    let entries = read_directory(&kafka)?;
    match args.format {
        Format::Json => output(serde_json::to_string_pretty(&entries)?),
        Format::Text => {
            let mut text = format!("group {}: {} nodes\n", kafka.group_id, entries.len());
            for entry in &entries {
                let partitions: Vec<String> = entry
                    .partitions
                    .iter()
                    .map(|p| format!("{}/{}", p.topic, p.partition))
                    .collect();
                writeln!(
                    text,
                    "{:<20} {:<28} {:<28} {}",
                    entry.node,
                    entry.api.as_deref().unwrap_or("(no API)"),
                    entry.peer.as_deref().unwrap_or("(no peer listener)"),
                    partitions.join(" ")
                )?;
            }
            output(text.trim_end())
        }
    }
}
