//! Read-only SQL over the exports, with DataFusion.
//!
//! A [`Sql`] session registers every table of [`Table::ALL`] by name as a listing table over
//! `<export_dir>/<table>/`, with the hive partition columns `geography` and `day` (`Utf8`) and
//! the table's fixed schema, so a query never depends on what files happen to exist: a table
//! whose directory does not exist yet is registered empty with the same columns. Only
//! `*.parquet` files are read; the writer's temporary files are skipped.
//!
//! Every statement is planned first and its plan checked before anything runs: DDL
//! (`CREATE`, `DROP`), DML (`INSERT`, `COPY ... TO`) and other statements (`SET`, `PREPARE`,
//! transactions) are refused with [`AnalyticsError::ReadOnly`]. Queries cannot name files
//! either: URL tables are not enabled. `SELECT`, `WITH`, `EXPLAIN`, `SHOW` and `DESCRIBE`
//! work (the information schema is on).
//!
//! A session lists the files of a table when a query plans, so a session opened before an
//! export sees the partitions present at each query; [`query`] opens a fresh session anyway.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::AnalyticsError;
use crate::table::{Table, PARTITION_COLUMNS};
use crate::AnalyticsConfig;

/// How [`Sql::query`] writes a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned table with borders.
    Table,
    /// CSV with a header line; list columns written as `[a, b]`.
    Csv,
    /// One JSON object a line, nulls written as `null`.
    Json,
}

impl OutputFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }
}

/// What one statement returned and read, from [`Sql::measure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Rows in the result.
    pub rows: usize,
    /// Rows the table scans produced (every scan of the plan, summed).
    pub scanned_rows: usize,
}

/// A read-only SQL session over the exports, with its own thread pool.
pub struct Sql {
    runtime: tokio::runtime::Runtime,
    context: SessionContext,
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql").finish_non_exhaustive()
    }
}

/// Runs one read-only statement over the exports named in `config` and writes its result in
/// `format` (without a final newline).
pub fn query(
    config: &AnalyticsConfig,
    sql: &str,
    format: OutputFormat,
) -> Result<String, AnalyticsError> {
    Sql::open(config)?.query(sql, format)
}

impl Sql {
    /// Opens a session over the exports named in `config`, with one query thread per core.
    /// Creates nothing on disk.
    pub fn open(config: &AnalyticsConfig) -> Result<Self, AnalyticsError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("vigil-sql")
            .enable_all()
            .build()
            .map_err(|cause| AnalyticsError::Runtime { cause })?;
        let session = SessionConfig::new()
            .with_target_partitions(cores)
            .with_information_schema(true);
        let context = SessionContext::new_with_config(session);
        let export_dir = std::path::absolute(&config.export_dir)
            .map_err(AnalyticsError::io("resolving", &config.export_dir))?;
        for table in Table::ALL {
            let dir = export_dir.join(table.name());
            let provider = provider(&context, table, &dir)
                .map_err(|cause| register_error(table, &dir, cause))?;
            context
                .register_table(table.name(), provider)
                .map_err(|cause| register_error(table, &dir, cause))?;
        }
        Ok(Self { runtime, context })
    }

    /// Runs one read-only statement and writes its result in `format` (without a final
    /// newline; an empty string for a JSON result with no rows).
    pub fn query(&self, sql: &str, format: OutputFormat) -> Result<String, AnalyticsError> {
        let (schema, batches, _) = self.run(sql)?;
        render(schema, &batches, format)
    }

    /// Runs one read-only statement and counts the rows it returned and scanned.
    pub fn measure(&self, sql: &str) -> Result<Measured, AnalyticsError> {
        let (_, batches, plan) = self.run(sql)?;
        Ok(Measured {
            rows: batches.iter().map(RecordBatch::num_rows).sum(),
            scanned_rows: scanned_rows(&plan),
        })
    }

    /// Plans `sql`, refuses anything but a query, runs it and collects the batches.
    fn run(&self, sql: &str) -> Result<Ran, AnalyticsError> {
        let query_error = |cause| AnalyticsError::Query { cause };
        self.runtime.block_on(async {
            let state = self.context.state();
            let plan = state.create_logical_plan(sql).await.map_err(query_error)?;
            read_only()
                .verify_plan(&plan)
                .map_err(|e| AnalyticsError::ReadOnly {
                    reason: e.strip_backtrace(),
                })?;
            let frame = self
                .context
                .execute_logical_plan(plan)
                .await
                .map_err(query_error)?;
            let task = Arc::new(frame.task_ctx());
            let plan = frame.create_physical_plan().await.map_err(query_error)?;
            let batches = datafusion::physical_plan::collect(plan.clone(), task)
                .await
                .map_err(query_error)?;
            Ok((plan.schema(), batches, plan))
        })
    }
}

/// A finished statement: its result's schema, its batches, and the plan that ran (with its
/// metrics).
type Ran = (SchemaRef, Vec<RecordBatch>, Arc<dyn ExecutionPlan>);

/// What the analytics SQL may run: queries only.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

fn register_error(table: Table, dir: &Path, cause: DataFusionError) -> AnalyticsError {
    AnalyticsError::Register {
        table,
        path: dir.to_owned(),
        cause,
    }
}

/// A listing table over `dir`, or an empty table with the same columns when `dir` does not
/// exist yet.
fn provider(
    context: &SessionContext,
    table: Table,
    dir: &Path,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    if !dir.is_dir() {
        return Ok(Arc::new(EmptyTable::new(table.query_schema())));
    }
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            PARTITION_COLUMNS
                .iter()
                .map(|c| (c.to_string(), DataType::Utf8))
                .collect(),
        )
        .with_session_config_options(context.state().config());
    let config = ListingTableConfig::new(ListingTableUrl::parse(directory_url(dir))?)
        .with_listing_options(options)
        .with_schema(table.schema());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// `file://` URL of the absolute directory `dir`, with a trailing slash, every byte outside
/// the URL-safe set percent-encoded (so `*`, `?` or `[` in a path are never read as a glob).
fn directory_url(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &byte in PathBuf::from(dir).as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~') {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    if !url.ends_with('/') {
        url.push('/');
    }
    url
}

/// Rows produced by the leaves (the scans) of a finished plan.
fn scanned_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let children = plan.children();
    if children.is_empty() {
        return plan
            .metrics()
            .and_then(|m| m.output_rows())
            .unwrap_or_default();
    }
    children.into_iter().map(scanned_rows).sum()
}

/// Writes `batches` in `format`.
fn render(
    schema: SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<String, AnalyticsError> {
    let error = |cause| AnalyticsError::Format {
        format: format.name(),
        cause,
    };
    let mut text = match format {
        OutputFormat::Table => pretty_format_batches_with_schema(schema, batches)
            .map_err(error)?
            .to_string(),
        OutputFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                // An empty batch still writes the header.
                let flat = flat_schema(&schema);
                writer
                    .write(&RecordBatch::new_empty(flat.clone()))
                    .map_err(error)?;
                for batch in batches {
                    writer
                        .write(&flatten(batch, &flat).map_err(error)?)
                        .map_err(error)?;
                }
            }
            String::from_utf8(out).map_err(|e| error(ArrowError::CsvError(e.to_string())))?
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(Vec::new());
            for batch in batches {
                writer.write(batch).map_err(error)?;
            }
            writer.finish().map_err(error)?;
            String::from_utf8(writer.into_inner())
                .map_err(|e| error(ArrowError::JsonError(e.to_string())))?
        }
    };
    while text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// `schema` with nested columns (lists, structs, maps) turned into `Utf8`, which CSV can hold.
fn flat_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type().is_nested() {
            true => Field::new(f.name(), DataType::Utf8, true),
            false => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `batch` with its nested columns written as text (`[a, b]`), under `flat` (from
/// [`flat_schema`]).
fn flatten(batch: &RecordBatch, flat: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let options = FormatOptions::default();
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !column.data_type().is_nested() {
                return Ok(column.clone());
            }
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let mut text = StringBuilder::with_capacity(column.len(), column.len() * 16);
            for i in 0..column.len() {
                match column.is_null(i) {
                    true => text.append_null(),
                    false => text.append_value(formatter.value(i).try_to_string()?),
                }
            }
            Ok(Arc::new(text.finish()) as ArrayRef)
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(flat.clone(), columns)
}
