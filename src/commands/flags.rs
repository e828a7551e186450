//! `vigil flags`: flag events on the Kafka flag topics. `tail` prints them as a streaming
//! consumer sees them; `raise` flags stored records by hand.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Context};
use time::OffsetDateTime;
use vigil_core::{
    Category, FlagEvent, FlagOrigin, FlagScores, FlagSubject, RequestId, FLAG_SCHEMA_VERSION,
};
use vigil_kafka::{FlagPublisher, FlagTail};

use super::{geographies, kafka_config, load_registry, open_stores, output, stop_on_signals};
use crate::cli::FlagsCommand;
use crate::config::Config;

pub fn flags(config: &Config, command: FlagsCommand) -> anyhow::Result<()> {
    match command {
        FlagsCommand::Tail {
            kafka,
            from_beginning,
            stop_when_idle,
        } => {
            let registry = load_registry(config)?;
            let settings = kafka_config(config, kafka.brokers.as_deref());
            let tail = FlagTail::new(
                &settings,
                &geographies(&registry, &kafka.geographies)?,
                from_beginning,
                stop_on_signals()?,
                stop_when_idle.map(Duration::from_secs_f64),
            )?;
            for event in tail {
                output(serde_json::to_string(&event)?)?;
            }
            Ok(())
        }
        FlagsCommand::Raise {
            brokers,
            request_ids,
            categories,
            score,
            end_user,
        } => {
            let event = manual_flag(config, &request_ids, &categories, score, end_user)?;
            let mut publisher = FlagPublisher::new(&kafka_config(config, brokers.as_deref()))?;
            let topic = publisher.publish(&event)?;
            publisher.flush()?;
            tracing::info!(flag_id = %event.flag_id, %topic, "Flag published.");
            output(serde_json::to_string(&event)?)
        }
    }
}

/// A flag event for stored records, found by request ID in the stores. Only metadata is read.
fn manual_flag(
    config: &Config,
    request_ids: &[String],
    categories: &[String],
    score: f32,
    end_user: Option<String>,
) -> anyhow::Result<FlagEvent> {
    let registry = load_registry(config)?;
    let stores = open_stores(config, &registry)?;
    let categories = categories
        .iter()
        .map(|c| {
            Category::parse(c).with_context(|| {
                let known: Vec<_> = Category::ALL.iter().map(|c| c.name()).collect();
                format!("--category: unknown category; one of {}", known.join(", "))
            })
        })
        .collect::<anyhow::Result<BTreeSet<_>>>()?;
    let mut found = Vec::new();
    for id in request_ids {
        let request_id = RequestId::parse(id.as_str()).context("--request-id")?;
        let mut meta = None;
        for geography in stores.geographies_on_disk()? {
            let store = stores.geo(&geography)?;
            let Some(resource_id) = store.resource_of(request_id.as_str())? else {
                continue;
            };
            let resource = registry
                .get(resource_id.as_str())
                .context("the record's resource is no longer registered")?;
            meta = store.get_meta(resource, &request_id)?.map(|(m, _)| m);
            break;
        }
        let Some(meta) = meta else {
            bail!("--request-id: no stored record has request ID {request_id}");
        };
        found.push(meta);
    }
    let first = &found[0];
    if found.iter().any(|m| m.resource_id != first.resource_id) {
        bail!("--request-id: a flag is about one resource; these records belong to several");
    }
    let end_user = end_user.or_else(|| {
        let user = first.end_user.clone()?;
        found
            .iter()
            .all(|m| m.end_user.as_ref() == Some(&user))
            .then_some(user)
    });
    Ok(FlagEvent {
        schema_version: FLAG_SCHEMA_VERSION,
        flag_id: flag_id(),
        flagged_at: OffsetDateTime::now_utc(),
        origin: FlagOrigin::Manual,
        geography: first.geography.clone(),
        resource_id: first.resource_id.clone(),
        subject: match end_user {
            Some(end_user) => FlagSubject::EndUser { end_user },
            None => FlagSubject::Resource,
        },
        case_id: None,
        request_ids: found.into_iter().map(|m| m.request_id).collect(),
        scores: FlagScores {
            abuse: score,
            categories: categories.iter().map(|c| (*c, score)).collect(),
        },
        categories: categories.into_iter().collect(),
        window: None,
    })
}

/// A random flag ID.
fn flag_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("flag-{}", hex::encode(bytes))
}
