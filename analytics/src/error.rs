//! Errors of the analytics exports and queries.
//!
//! Messages name the path, the table or the stage and what went wrong; never a value of a
//! row. The one exception is what DataFusion says about a query, which may quote the query
//! itself (its author's own text) but not the rows it read.

use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;

use crate::table::Table;

/// What went wrong in an export or a query.
///
/// Each variant's message includes its cause; the cause is not repeated as
/// [`std::error::Error::source`], so printing the chain does not say it twice.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A file or directory of the exports could not be created, read, renamed or removed.
    #[error("{action} {}: {cause}", path.display())]
    Io {
        /// What vigil was doing (`creating directory`, `renaming`, ...).
        action: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The Parquet writer failed.
    #[error("writing Parquet file {}: {cause}", path.display())]
    Parquet {
        /// The file being written (the temporary file of a partition).
        path: PathBuf,
        /// The cause.
        cause: ParquetError,
    },
    /// A batch of rows did not match its table's schema (a bug in this crate).
    #[error("building a batch of table {table}: {cause}")]
    Batch {
        /// The table.
        table: Table,
        /// The cause.
        cause: ArrowError,
    },
    /// A row names a geography other than the partition's it was pushed to.
    #[error("table {table}: a row of another geography was pushed to this partition")]
    WrongGeography {
        /// The table.
        table: Table,
    },
    /// A statement that would write or change something (DDL, DML such as `INSERT` or
    /// `COPY ... TO`, `SET` and other statements): the analytics SQL is read-only.
    #[error("refused: only read-only queries are allowed ({reason})")]
    ReadOnly {
        /// What DataFusion found in the plan (for example `DDL not supported: CreateMemoryTable`).
        reason: String,
    },
    /// The query did not parse, plan or run (bad SQL, an unknown table or column, ...).
    #[error("query failed: {cause}")]
    Query {
        /// DataFusion's error.
        cause: DataFusionError,
    },
    /// A table's directory could not be registered with the query engine.
    #[error("registering table {table} over {}: {cause}", path.display())]
    Register {
        /// The table.
        table: Table,
        /// Its directory.
        path: PathBuf,
        /// DataFusion's error.
        cause: DataFusionError,
    },
    /// The result could not be written in the requested format.
    #[error("formatting the result as {format}: {cause}")]
    Format {
        /// The format (`table`, `csv` or `json`).
        format: &'static str,
        /// The cause.
        cause: ArrowError,
    },
    /// The query engine's threads could not be started.
    #[error("starting the query runtime: {cause}")]
    Runtime {
        /// The cause.
        cause: std::io::Error,
    },
}

impl AnalyticsError {
    /// An I/O error while `action` on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |cause| Self::Io {
            action,
            path,
            cause,
        }
    }
}
