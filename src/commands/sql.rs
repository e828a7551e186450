//! `vigil sql`: read-only SQL over the analytics exports (`[analytics] export_dir`), printed
//! as an aligned table, CSV or JSON lines. Statements that would write (DDL, `INSERT`,
//! `COPY ... TO`, `SET`) are refused by `vigil_analytics` before anything runs.

use vigil_analytics::OutputFormat;

use super::output;
use crate::cli::{SqlArgs, SqlFormat};
use crate::config::Config;

pub fn sql(config: &Config, args: &SqlArgs) -> anyhow::Result<()> {
    let format = match args.format {
        SqlFormat::Table => OutputFormat::Table,
        SqlFormat::Csv => OutputFormat::Csv,
        SqlFormat::Json => OutputFormat::Json,
    };
    let result = vigil_analytics::query(&config.analytics, &args.query, format)?;
    // JSON lines of an empty result: print nothing rather than a blank line.
    if result.is_empty() {
        return Ok(());
    }
    output(result)
}
