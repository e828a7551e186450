//! `vigil resource`: add, update, show and list registry entries.

use serde_json::json;
use std::io::Write;

use vigil_core::{Geography, KeyRef, Resource, ResourceId, ResourceRegistry};

use super::{open_stores, output};
use crate::cli::{ResourceCommand, ResourceSettings};
use crate::config::Config;
use vigil_pipeline::live::{applied_marker, registry_version};

fn describe(resource: &Resource) -> serde_json::Value {
    json!({
        "id": resource.id,
        "geography": resource.geography,
        "content_logging": resource.content_logging,
        "customer_key": resource.customer_key.as_ref().map(KeyRef::as_str),
        "retention_days": resource.retention_days,
        "capabilities": resource.capabilities(),
    })
}

fn apply(resource: &mut Resource, settings: ResourceSettings) -> anyhow::Result<()> {
    if let Some(on) = settings.content_logging {
        resource.content_logging = on;
    }
    if let Some(key) = settings.customer_key {
        resource.customer_key = Some(KeyRef::parse(key)?);
    }
    if let Some(days) = settings.retention_days {
        resource.retention_days = Some(days);
    }
    Ok(())
}

pub fn resource(config: &Config, cmd: ResourceCommand) -> anyhow::Result<()> {
    let path = &config.resources;
    let mut registry = ResourceRegistry::load(path)?;
    let get = |registry: &ResourceRegistry, id: &str| -> anyhow::Result<Resource> {
        registry
            .get(id)
            .cloned()
            .ok_or_else(|| vigil_core::RegistryError::NotFound(id.to_owned()).into())
    };
    let changed = match cmd {
        ResourceCommand::Add {
            id,
            settings,
            geography,
        } => {
            let id = ResourceId::parse(id).map_err(|e| anyhow::anyhow!("resource ID {e}"))?;
            let geography =
                Geography::parse(geography).map_err(|e| anyhow::anyhow!("geography {e}"))?;
            let mut resource = Resource::new(id, geography);
            apply(&mut resource, settings)?;
            registry.add(resource.clone())?;
            resource
        }
        ResourceCommand::Update {
            id,
            settings,
            no_customer_key,
            no_retention_override,
        } => {
            let mut resource = get(&registry, &id)?;
            apply(&mut resource, settings)?;
            if no_customer_key {
                resource.customer_key = None;
            }
            if no_retention_override {
                resource.retention_days = None;
            }
            registry.update(resource.clone())?;
            resource
        }
        ResourceCommand::Show { id } => {
            return output(serde_json::to_string_pretty(&describe(&get(
                &registry, &id,
            )?))?)
        }
        ResourceCommand::List => {
            let lines: Vec<String> = registry.iter().map(|r| describe(r).to_string()).collect();
            return output(lines.join("\n"));
        }
    };
    config.storage.retention.validate(&registry)?;
    super::OperatorAudit::open(config, vigil_core::Clock::from_env()?)?.record(
        "resource.update",
        |e| {
            e.resource_id = Some(changed.id.to_string());
            e.detail = Some(format!(
                "content_logging: {}, retention_days: {:?}, customer_key: {}",
                changed.content_logging,
                changed.retention_days,
                changed.customer_key.is_some()
            ));
        },
    )?;
    registry.save(path)?;
    output(serde_json::to_string_pretty(&describe(&changed))?)?;
    apply_to_stores(config, &registry)
}

/// How long `vigil resource` waits for a running vigil to apply a change it saved.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Applies a registry change to the stores now (content destroyed when content logging was
/// turned off, data keys re-wrapped under a new customer key). When the stores cannot be
/// opened because a running `vigil run` or `vigil serve` holds them, that process applies the
/// change itself (it watches the registry file), and this waits until it says it did. If
/// neither happens, this fails: the change is saved, but nobody confirmed it took effect.
fn apply_to_stores(config: &Config, registry: &ResourceRegistry) -> anyhow::Result<()> {
    if !config.storage.data_dir.exists() {
        return Ok(());
    }
    let applied = open_stores(config, registry).and_then(|stores| Ok(stores.reconcile(registry)?));
    match applied {
        Ok(done) => {
            for (resource_id, records) in &done.content_forgotten {
                // A result the user asked for, not a log line.
                let _ = writeln!(
                    std::io::stderr(),
                    "content logging is off for {resource_id}: destroyed the stored content of {records} records"
                );
            }
            done.log();
            Ok(())
        }
        Err(error) => {
            let saved = registry_version(&config.resources);
            let marker = applied_marker(&config.storage.data_dir);
            let started = std::time::Instant::now();
            while started.elapsed() < APPLY_WAIT {
                if saved.is_some() && std::fs::read_to_string(&marker).ok() == saved {
                    let _ = writeln!(
                        std::io::stderr(),
                        "the running vigil process applied the change to its stores"
                    );
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(error.context(format!(
                "the change is saved in {}, but the stores could not be updated, and no running vigil process confirmed applying it within {} s; until one does, treat the change as not in effect (a vigil that starts applies it first)",
                config.resources.display(),
                APPLY_WAIT.as_secs()
            )))
        }
    }
}
