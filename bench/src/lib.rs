//! vigil's benchmark harnesses, behind `vigil bench`: each measures one part of vigil on
//! synthetic data it makes itself, in a scratch directory, and returns its report as text.
//!
//! - [`pipeline`]: file → validate → encrypt → store, or Kafka → stored (`--kafka`), with
//!   sled's own ceiling for the storage layout (`sled_ceiling`) and lag under a burst.
//! - [`classifier`]: the harm classifier alone (`--classifier`), beside the [`peer`].
//! - [`detection`]: recurring-abuse detection alone (`--detection`).
//! - [`reviewer`]: the LLM reviewer alone (`--reviewer`).
//! - [`purge`]: the retention purge, with ingest alongside (`--purge`).
//! - [`sql`]: SQL over synthetic Parquet exports (`--sql`).
//! - [`api`]: point queries through the API over mutual TLS (`--api`).
//!
//! The timing helpers they share ([`timed_runs`], [`median_line`], [`machine`]) are also used
//! by `vigil eval --reviewer`, as is [`reviewer::review_content`]; `vigil eval` compares the
//! classifier with the same [`peer`].
//!
//! The `vigil` binary is the only caller: it parses the command line into [`BenchOptions`],
//! hands each harness the configuration sections it reads (never its whole configuration, so
//! this crate does not depend on the binary), and prints the report.
//!
//! The options are a plain struct, not clap arguments: the command line (flags, defaults, which
//! modes exclude which) stays in the binary with the rest of its command line (`BenchArgs`),
//! and the harnesses are callable without one. Errors are [`anyhow::Error`]: a harness runs once, at the command
//! line's edge, and its errors are only ever reported, never matched on.

pub mod api;
pub mod classifier;
pub mod detection;
mod exchanges;
mod measure;
pub mod peer;
pub mod pipeline;
pub mod purge;
pub mod rebuild;
pub mod reviewer;
mod sled_ceiling;
pub mod sql;

use std::path::PathBuf;

pub use measure::{machine, median_line, timed_runs};

/// What to measure, and how much: the options of `vigil bench`. Each harness reads the fields
/// it needs and ignores the others.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Records per run: texts with the classifier, reviews with the reviewer, queries with
    /// the API, rows per table with SQL.
    pub records: usize,
    /// Size of each JSON record in bytes (the pipeline and the purge).
    pub record_bytes: usize,
    /// Runs; the pipeline's each go into a fresh data directory. Reports show each run and
    /// the median.
    pub runs: usize,
    /// Working directory (default: a temporary one, removed afterwards).
    pub dir: Option<PathBuf>,
    /// Worker threads sharing the classifier ([`classifier`]).
    pub threads: usize,
    /// Skip the side-by-side with the [`peer`] ([`classifier`]).
    pub no_peer: bool,
    /// Purge with no ingest running alongside ([`purge`]).
    pub alone: bool,
    /// Concurrent reviewers, each a client thread ([`api`]).
    pub reviewers: usize,
    /// Score every record with the harm classifier too ([`detection`]).
    pub with_classifier: bool,
    /// Distinct end users the records are spread over ([`detection`]).
    pub users: usize,
    /// Consumer-group members sharing the backlog, each with its own stores ([`pipeline`]
    /// over Kafka).
    pub nodes: Option<usize>,
    /// Point queries through a second node that forwards them to the node storing the
    /// records, beside the same queries answered locally ([`api`]).
    pub forwarded: bool,
}
