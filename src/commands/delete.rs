//! `vigil delete`: a customer's deletion of one request ID, or of everything stored for a
//! resource. Deleted content is unreadable when the command returns (the record is gone from
//! the store's trees; for a resource, its data keys are destroyed first), the export
//! partitions are rewritten without it, and it leaves the disk at the next compaction (the
//! lifecycle in `vigil run` compacts online; `vigil purge` compacts too).

use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use vigil_core::{RequestId, Resource, ResourceId, ResourceRegistry};

use super::{lifecycle, load_registry, open_stores, output, OperatorAudit};
use crate::cli::DeleteCommand;
use crate::config::Config;

pub fn delete(config: &Config, cmd: DeleteCommand) -> anyhow::Result<()> {
    let registry = load_registry(config)?;
    let stores = Arc::new(open_stores(config, &registry)?);
    let audit = OperatorAudit::open(config, *stores.clock())?;
    let deleted = match cmd {
        DeleteCommand::Request {
            resource_id,
            request_id,
        } => {
            let resource = registered(&registry, resource_id)?;
            let request_id = RequestId::parse(request_id).context("request ID")?;
            audit.record("data.delete_request", |e| {
                e.resource_id = Some(resource.id.to_string());
                e.request_id = Some(request_id.to_string())
            })?;
            match stores.delete_request(resource, &request_id)? {
                Some(d) => {
                    json!({"deleted": "request", "request_id": request_id, "geography": d.geography,
                    "resource_id": d.resource_id, "reviews": d.reviews})
                }
                // Deleting what is not there is not an error: the outcome the customer asked
                // for holds.
                None => json!({"deleted": "request", "request_id": request_id,
                    "resource_id": resource.id, "found": false}),
            }
        }
        DeleteCommand::Resource { resource_id } => {
            let resource = registered(&registry, resource_id)?;
            audit.record("data.delete_resource", |e| {
                e.resource_id = Some(resource.id.to_string())
            })?;
            let report = stores
                .geo(&resource.geography)?
                .delete_resource(&resource.id)?;
            json!({"deleted": "resource", "resource_id": resource.id, "geography": resource.geography,
                "data_keys": report.data_keys, "records": report.records, "windows": report.windows,
                "cases": report.cases})
        }
    };
    let exports = lifecycle(config, &stores, &registry)?.export()?;
    let mut out = deleted;
    out["export_partitions_rewritten"] = json!(exports.partitions_written);
    out["export_partitions_removed"] = json!(exports.partitions_removed);
    output(serde_json::to_string(&out)?)
}

/// The registered resource named `raw`.
fn registered(registry: &ResourceRegistry, raw: String) -> anyhow::Result<&Resource> {
    let resource_id = ResourceId::parse(raw).context("resource ID")?;
    registry
        .get(resource_id.as_str())
        .with_context(|| format!("resource {resource_id} is not registered"))
}
