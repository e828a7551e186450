//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// vigil: abuse monitoring for LLM traffic.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Configuration file (TOML). Defaults to ./vigil.toml when it exists. Every setting can be
    /// overridden by an environment variable VIGIL_<SECTION>__<KEY>, such as
    /// VIGIL_STORAGE__DATA_DIR.
    #[arg(long, global = true, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline over a JSON-lines input: validate, route, encrypt, store.
    Run(RunArgs),
    /// Write deterministic sample traffic and its resource registry.
    Generate(GenerateArgs),
    /// Manage the resource registry.
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// Show what the stores hold: record counts per geography and resource (never content).
    Stats,
    /// Measure file → validate → encrypt → store throughput on uniform records.
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people.
    Text,
    /// One JSON object.
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// JSON-lines input file, or `-` for standard input.
    #[arg(long, short)]
    pub input: PathBuf,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write the traffic.
    #[arg(long, short, default_value = "sample/traffic.jsonl")]
    pub output: PathBuf,
    /// Where to write the resource registry (default: the configured registry). Key files go
    /// beside it.
    #[arg(long)]
    pub resources: Option<PathBuf>,
    /// Records of ordinary traffic.
    #[arg(long, default_value_t = 4000)]
    pub records: usize,
    /// Seed; the same seed gives the same bytes.
    #[arg(long, default_value_t = 20261120)]
    pub seed: u64,
}

#[derive(Debug, Subcommand)]
pub enum ResourceCommand {
    /// Register a resource.
    Add {
        /// The resource ID.
        id: String,
        #[command(flatten)]
        settings: ResourceSettings,
        /// Its home geography (where its data is stored).
        #[arg(long)]
        geography: String,
    },
    /// Change a registered resource's settings (its geography cannot change).
    Update {
        /// The resource ID.
        id: String,
        #[command(flatten)]
        settings: ResourceSettings,
        /// Use vigil's master key again instead of a customer-managed key.
        #[arg(long, conflicts_with = "customer_key")]
        no_customer_key: bool,
        /// Drop the retention override: keep records as long as the geography does.
        #[arg(long, conflicts_with = "retention_days")]
        no_retention_override: bool,
    },
    /// Show one resource, with its capabilities, as JSON.
    Show {
        /// The resource ID.
        id: String,
    },
    /// List all resources, one JSON object a line.
    List,
}

#[derive(Debug, Args)]
pub struct ResourceSettings {
    /// Whether prompts and completions are stored at rest (false: modified abuse monitoring).
    #[arg(long)]
    pub content_logging: Option<bool>,
    /// Customer-managed key reference, `file:PATH` (relative to the registry's directory).
    #[arg(long)]
    pub customer_key: Option<String>,
    /// Days to keep records, if shorter than the geography's retention.
    #[arg(long)]
    pub retention_days: Option<u32>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Records per run.
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,
    /// Size of each JSON record in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Runs, each into a fresh data directory; the report shows each and the median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Working directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}
