//! The export directory and its partition writer.
//!
//! Layout (hive style, so DataFusion, pyarrow, pandas and DuckDB read it with partitioning):
//!
//! ```text
//! <export_dir>/<table>/geography=<g>/day=<YYYY-MM-DD>/part-0.parquet
//! ```
//!
//! `geography` and `day` live only in the path, never inside the files, so readers that add
//! the hive columns see no clash. Directories are created with mode 0700 and files with 0600
//! (end-user IDs are personal data even without content).
//!
//! A partition is always written whole: [`PartitionWriter`] streams rows into a temporary
//! file in the partition's directory (`.part-0.<pid>-<n>.tmp`: hidden, and not `.parquet`,
//! so every reader skips it), syncs it, then renames it over `part-0.parquet` and syncs the
//! directory. A reader sees the old file or the new one, never half of one; a crash leaves at
//! most a stale temporary file, which the next write to that partition removes. A partition
//! finished with no rows is removed instead. One writer per partition at a time: the caller
//! must not write the same partition from two places at once.
//!
//! Compression: parquet's default features are compiled in (datafusion depends on parquet
//! with them), so files use ZSTD level 1 with dictionary encoding, which pyarrow, DuckDB and
//! Spark all read. Row groups hold at most [`ROW_GROUP_ROWS`] rows, which bounds the writer's
//! memory whatever the partition's size.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::Date;
use vigil_core::Geography;

use crate::error::AnalyticsError;
use crate::table::sealed::Columns as _;
use crate::table::{Row, Table};
use crate::AnalyticsConfig;

/// Rows buffered in Arrow builders before they go to the Parquet writer as one batch.
pub const BATCH_ROWS: usize = 64 * 1024;

/// The most rows in one Parquet row group.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// The one data file of a partition.
pub const PART_FILE: &str = "part-0.parquet";

/// How `day=` directories write a date.
const DAY_FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// The export directory: one directory per table, partitioned by geography and day.
#[derive(Debug, Clone)]
pub struct Exports {
    dir: PathBuf,
}

/// What [`PartitionWriter::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Rows in the partition (0: the partition was removed).
    pub rows: u64,
    /// Size of its file in bytes (0 when removed).
    pub bytes: u64,
}

impl Exports {
    /// Opens the export directory named in `config`, creating it (mode 0700) if needed.
    pub fn open(config: &AnalyticsConfig) -> Result<Self, AnalyticsError> {
        let dir = config.export_dir.clone();
        create_dirs(&dir)?;
        Ok(Self { dir })
    }

    /// The export directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of one table.
    pub fn table_dir(&self, table: Table) -> PathBuf {
        self.dir.join(table.name())
    }

    /// The directory of one partition of `table`.
    pub fn partition_dir(&self, table: Table, geography: &Geography, day: Date) -> PathBuf {
        self.table_dir(table)
            .join(format!("geography={geography}"))
            .join(format!("day={}", day_name(day)))
    }

    /// A writer that replaces the partition (`geography`, `day`) of `R`'s table with the rows
    /// pushed to it, once [`PartitionWriter::finish`] is called. Nothing on disk changes
    /// before then, except a temporary file in the partition's directory.
    pub fn partition<R: Row>(
        &self,
        geography: &Geography,
        day: Date,
    ) -> Result<PartitionWriter<R>, AnalyticsError> {
        Ok(PartitionWriter {
            dir: self.partition_dir(R::TABLE, geography, day),
            geography: geography.clone(),
            columns: R::Columns::with_capacity(BATCH_ROWS),
            file: None,
            rows: 0,
            _row: PhantomData,
        })
    }

    /// Removes the partition (`geography`, `day`) of `table`, if it exists, with its
    /// directory, and its geography's directory if that is left empty. Returns whether it
    /// existed.
    pub fn remove(
        &self,
        table: Table,
        geography: &Geography,
        day: Date,
    ) -> Result<bool, AnalyticsError> {
        remove_partition(&self.partition_dir(table, geography, day))
    }

    /// The partitions of `table` that hold a data file, sorted by geography then day.
    /// Directories that do not follow the layout are ignored.
    pub fn partitions(&self, table: Table) -> Result<Vec<(Geography, Date)>, AnalyticsError> {
        let mut found = Vec::new();
        for (geography_dir, name) in subdirs(&self.table_dir(table))? {
            let Some(geography) = name
                .strip_prefix("geography=")
                .and_then(|g| Geography::parse(g).ok())
            else {
                continue;
            };
            for (day_dir, name) in subdirs(&geography_dir)? {
                let Some(day) = name
                    .strip_prefix("day=")
                    .and_then(|d| Date::parse(d, DAY_FORMAT).ok())
                else {
                    continue;
                };
                if day_dir.join(PART_FILE).is_file() {
                    found.push((geography.clone(), day));
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

/// A day as its `day=` directory writes it: `YYYY-MM-DD`.
pub fn day_name(day: Date) -> String {
    day.format(DAY_FORMAT)
        .expect("a calendar date always formats as [year]-[month]-[day]")
}

/// Streams rows into one partition. Rows are buffered [`BATCH_ROWS`] at a time and written
/// to a temporary file; [`PartitionWriter::finish`] puts the file in place atomically. A
/// writer dropped without `finish` removes its temporary file and leaves the partition as it
/// was.
pub struct PartitionWriter<R: Row> {
    dir: PathBuf,
    geography: Geography,
    columns: R::Columns,
    /// The Parquet writer and its temporary file, from the first flushed batch on.
    file: Option<(ArrowWriter<File>, PathBuf)>,
    rows: u64,
    _row: PhantomData<fn(&R)>,
}

impl<R: Row> std::fmt::Debug for PartitionWriter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("table", &R::TABLE)
            .field("dir", &self.dir)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<R: Row> PartitionWriter<R> {
    /// Adds one row. Every [`BATCH_ROWS`] rows, the buffered batch is written out.
    pub fn push(&mut self, row: &R) -> Result<(), AnalyticsError> {
        if row.geography().is_some_and(|g| *g != self.geography) {
            return Err(AnalyticsError::WrongGeography { table: R::TABLE });
        }
        self.columns.push(row);
        self.rows += 1;
        if self.columns.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the partition: renames the finished file over `part-0.parquet`, or, when no
    /// row was pushed, removes the partition.
    pub fn finish(mut self) -> Result<Written, AnalyticsError> {
        self.flush()?;
        let Some((writer, temp)) = self.file.take() else {
            remove_partition(&self.dir)?;
            return Ok(Written { rows: 0, bytes: 0 });
        };
        let result = put_in_place(writer, &temp, &self.dir);
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        let bytes = result?;
        Ok(Written {
            rows: self.rows,
            bytes,
        })
    }

    /// Writes the buffered rows as one batch.
    fn flush(&mut self) -> Result<(), AnalyticsError> {
        if self.columns.len() == 0 {
            return Ok(());
        }
        let batch =
            RecordBatch::try_new(R::TABLE.schema(), self.columns.finish()).map_err(|cause| {
                AnalyticsError::Batch {
                    table: R::TABLE,
                    cause,
                }
            })?;
        if self.file.is_none() {
            self.file = Some(open_temp(&self.dir, R::TABLE)?);
        }
        let (writer, temp) = self.file.as_mut().expect("opened above");
        writer
            .write(&batch)
            .map_err(|cause| AnalyticsError::Parquet {
                path: temp.clone(),
                cause,
            })
    }
}

impl<R: Row> Drop for PartitionWriter<R> {
    fn drop(&mut self) {
        if let Some((writer, temp)) = self.file.take() {
            drop(writer);
            let _ = fs::remove_file(temp);
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700.
fn create_dirs(dir: &Path) -> Result<(), AnalyticsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(AnalyticsError::io("creating directory", dir))
}

/// Whether `name` is one of the partition writer's temporary files.
fn is_temp_file(name: &str) -> bool {
    name.starts_with(".part-0.") && name.ends_with(".tmp")
}

/// Removes temporary files left in a partition's directory by a writer that crashed.
fn remove_stale_temp_files(dir: &Path) -> Result<(), AnalyticsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AnalyticsError::io("reading directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(AnalyticsError::io("reading directory", dir))?;
        if entry.file_name().to_str().is_some_and(is_temp_file) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(AnalyticsError::io("removing stale file", path)(e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Creates the partition's directory and a fresh temporary file in it, with a Parquet
/// writer over it.
fn open_temp(dir: &Path, table: Table) -> Result<(ArrowWriter<File>, PathBuf), AnalyticsError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    create_dirs(dir)?;
    remove_stale_temp_files(dir)?;
    let temp = dir.join(format!(
        ".part-0.{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(AnalyticsError::io("creating", &temp))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_dictionary_enabled(true)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    match ArrowWriter::try_new(file, table.schema(), Some(properties)) {
        Ok(writer) => Ok((writer, temp)),
        Err(cause) => {
            let _ = fs::remove_file(&temp);
            Err(AnalyticsError::Parquet { path: temp, cause })
        }
    }
}

/// Finishes the Parquet file, syncs it, renames it over the partition's data file and syncs
/// the directory. Returns the file's size.
fn put_in_place(writer: ArrowWriter<File>, temp: &Path, dir: &Path) -> Result<u64, AnalyticsError> {
    let file = writer
        .into_inner()
        .map_err(|cause| AnalyticsError::Parquet {
            path: temp.to_owned(),
            cause,
        })?;
    file.sync_all()
        .map_err(AnalyticsError::io("syncing", temp))?;
    let bytes = file
        .metadata()
        .map_err(AnalyticsError::io("reading metadata of", temp))?
        .len();
    drop(file);
    let target = dir.join(PART_FILE);
    fs::rename(temp, &target).map_err(AnalyticsError::io("renaming into place", &target))?;
    sync_dir(dir)?;
    Ok(bytes)
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), AnalyticsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AnalyticsError::io("syncing directory", dir))
}

/// Removes a partition's data file first (readers stop seeing it at once), then its
/// directory, then its geography's directory if empty. Returns whether a data file existed.
fn remove_partition(dir: &Path) -> Result<bool, AnalyticsError> {
    let data = dir.join(PART_FILE);
    let existed = match fs::remove_file(&data) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(AnalyticsError::io("removing", data)(e)),
    };
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(existed),
        Err(e) => return Err(AnalyticsError::io("removing directory", dir)(e)),
    }
    if let Some(geography_dir) = dir.parent() {
        match fs::remove_dir(geography_dir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                ) => {}
            Err(e) => return Err(AnalyticsError::io("removing directory", geography_dir)(e)),
        }
        if let Some(table_dir) = geography_dir.parent() {
            sync_dir(table_dir)?;
        }
    }
    Ok(existed)
}

/// The subdirectories of `dir` with their names (none when `dir` does not exist).
fn subdirs(dir: &Path) -> Result<Vec<(PathBuf, String)>, AnalyticsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AnalyticsError::io("reading directory", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(AnalyticsError::io("reading directory", dir))?;
        let is_dir = entry
            .file_type()
            .map_err(AnalyticsError::io("reading directory", dir))?
            .is_dir();
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
            found.push((entry.path(), name.to_owned()));
        }
    }
    Ok(found)
}
