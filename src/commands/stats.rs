//! `vigil stats`: record counts per geography and resource. IDs and numbers only: no content
//! is read or decrypted.

use std::fmt::Write as _;

use super::{load_registry, open_stores, output};
use crate::config::Config;

pub fn stats(config: &Config) -> anyhow::Result<()> {
    let registry = load_registry(config)?;
    let stores = open_stores(config, &registry)?;
    let mut report = String::new();
    let geographies = stores.geographies_on_disk()?;
    if geographies.is_empty() {
        write!(
            report,
            "no stores under {}",
            config.storage.data_dir.display()
        )?;
    }
    for geo in geographies {
        let store = stores.geo(&geo)?;
        writeln!(report, "{geo}: {} records", store.len())?;
        for resource in registry.iter().filter(|r| r.geography == geo) {
            let n = store.count(&resource.id)?;
            if n > 0 {
                let note = if resource.content_logging {
                    ""
                } else {
                    "   (metadata only)"
                };
                writeln!(report, "  {:<32} {n:>8}{note}", resource.id.as_str())?;
            }
        }
    }
    output(report.trim_end())
}
