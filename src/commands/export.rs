//! `vigil export`: brings the Parquet analytics exports in line with the stores (the
//! partitions that changed since the last export; `vigil run` and `vigil purge` do this too).

use std::sync::Arc;

use super::{lifecycle, load_registry, open_stores, output};
use crate::config::Config;

pub fn export(config: &Config) -> anyhow::Result<()> {
    let registry = load_registry(config)?;
    let stores = Arc::new(open_stores(config, &registry)?);
    let report = lifecycle(config, &stores, &registry)?.export()?;
    output(format_args!(
        "{} partitions rewritten ({} rows), {} removed, under {}",
        report.partitions_written, report.rows, report.partitions_removed, report.dir
    ))
}
