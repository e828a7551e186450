//! vigil's analytics tables: Parquet exports of metadata (never content) and SQL over them.
//!
//! Six tables ([`Table`]): `records`, `detections`, `cases`, `verdicts`, `decisions` and
//! `audit`, each fed by a plain row struct built from `vigil_core` metadata types
//! ([`RecordRow`], [`DetectionRow`], [`CaseRow`], [`VerdictRow`], [`DecisionRow`],
//! [`AuditRow`]). [`Exports`] writes them under the export directory as
//! `<table>/geography=<g>/day=<YYYY-MM-DD>/part-0.parquet`, one partition at a time, each
//! replaced atomically ([`PartitionWriter`]). [`Sql`] and [`query`] run read-only SQL over
//! them with DataFusion.
//!
//! Architecture invariant: nothing here can carry prompt or completion text. No row struct
//! holds a [`vigil_core::Content`], the verdict row never reads the assessment's free-text
//! `rationale`, the decision row never reads the reviewer's note, and errors name paths, tables and problems, never row values. The
//! partition columns `geography` and `day` exist only in directory names, so a reader with
//! hive partitioning (DataFusion, pyarrow, pandas, DuckDB) sees them once.

mod config;
mod error;
mod export;
mod query;
mod table;

pub use config::AnalyticsConfig;
pub use error::AnalyticsError;
pub use export::{
    day_name, Exports, PartitionWriter, Written, BATCH_ROWS, PART_FILE, ROW_GROUP_ROWS,
};
pub use query::{query, Measured, OutputFormat, Sql};
pub use table::{
    AuditRow, CaseRow, DecisionRow, DetectionRow, RecordRow, Row, Table, VerdictRow,
    PARTITION_COLUMNS,
};
