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

    /// Run a drill: let `run`, `serve`, `demo` and `purge` start with a shifted clock (`VIGIL_NOW`),
    /// which they refuse otherwise. Every audit entry written under a shifted clock says so.
    #[arg(long, global = true)]
    pub drill: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline: validate, route, encrypt, store. Reads a JSON-lines file, or the
    /// geographies' Kafka log topics as a member of the consumer group.
    Run(RunArgs),
    /// Publish a JSON-lines file to the geographies' Kafka log topics, keyed by resource.
    Produce(ProduceArgs),
    /// Flag events on the geographies' Kafka flag topics.
    #[command(subcommand)]
    Flags(FlagsCommand),
    /// The node directory: which member of the consumer group owns which log partitions now,
    /// and where its API listens (announced by each `vigil run --kafka` at every rebalance).
    Nodes(NodesArgs),
    /// The cluster CA, which lets the nodes of a group forward requests to each other over
    /// mutual TLS (`[cluster]`).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Write deterministic sample traffic and its resource registry.
    Generate(GenerateArgs),
    /// Manage the resource registry.
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// Show what the stores hold: record counts per geography and resource (never content).
    Stats,
    /// The cases recurring-abuse detection opened (the review queue): IDs, scores,
    /// categories, signals and sampled request IDs; never content.
    Cases(CasesArgs),
    /// Review what waits in the LLM review queue now (cases' sampled records), without
    /// ingesting; verdicts show in `vigil cases CASE`.
    Review(ReviewArgs),
    /// Measure file → validate → encrypt → store throughput on uniform records.
    Bench(BenchArgs),
    /// Purge everything past retention now, per geography (records, indexes, windows, cases,
    /// reviews, the expired days' data keys and export partitions), then compact the stores.
    /// `vigil run` also purges on a schedule.
    Purge(PurgeArgs),
    /// Delete a customer's data now: one request ID, or everything of a resource.
    #[command(subcommand)]
    Delete(DeleteCommand),
    /// Bring the Parquet analytics exports up to date with the stores (metadata, never
    /// content).
    Export,
    /// Run a read-only SQL query over the analytics exports (tables: records, detections,
    /// cases, verdicts, decisions, audit).
    Sql(SqlArgs),
    /// Serve the HTTP API until SIGINT or SIGTERM: case metadata, access requests and grants,
    /// resource management, and point queries from registered workstations over mutual TLS.
    /// Purges and exports on the same schedule as `vigil run`. The reviewer console is at
    /// `/console` on both listeners.
    Serve,
    /// Try the reviewer console on the sample: create a demo reviewer and manager (EEA) and a
    /// workstation certificate, print sign-in links, and serve. Run `vigil run` first.
    Demo(DemoArgs),
    /// Manage principals, their API tokens, and secure workstations (needs the access store
    /// to itself: stop `vigil serve` first). Every change is audited.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// vigil's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure the harm classifier on labelled texts: AUPRC of the any-harm score, precision,
    /// recall, F1 and false-positive rate at the operating threshold, and texts/s, per source
    /// and overall.
    Eval(EvalArgs),
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
    #[arg(
        long,
        short,
        required_unless_present = "kafka",
        conflicts_with = "kafka"
    )]
    pub input: Option<PathBuf>,
    /// Consume the geographies' log topics ([kafka] settings) instead of a file, until
    /// SIGINT/SIGTERM (then drain, commit and exit) or --stop-when-idle.
    #[arg(long)]
    pub kafka: bool,
    #[command(flatten)]
    pub kafka_args: KafkaArgs,
    /// Consumer group to join (default: kafka.group_id).
    #[arg(long, requires = "kafka")]
    pub group: Option<String>,
    /// Stop after this many seconds without a new message (for loading a backlog).
    #[arg(long, value_name = "SECS", requires = "kafka")]
    pub stop_when_idle: Option<f64>,
    /// Also serve the HTTP API ([api] listeners, the reviewer console) from this process,
    /// over the stores it writes, until the run ends: with --kafka, the production daemon.
    #[arg(long)]
    pub api: bool,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Kafka options shared by the commands that talk to a broker.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers (default: kafka.brokers).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Only these geographies' topics (repeatable; default: every geography in the registry).
    #[arg(long = "geography", value_name = "GEOGRAPHY")]
    pub geographies: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Bootstrap brokers (default: kafka.brokers).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Consumer group (default: kafka.group_id).
    #[arg(long)]
    pub group: Option<String>,
    /// How to print the directory.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Issue a node's certificate (client and server) from the cluster CA in --ca-dir,
    /// creating the CA there on first use: writes NAME.pem, NAME.key and ca.pem into the
    /// output directory, for the node's cluster.cert, cluster.key and cluster.ca. Keep the CA
    /// directory (ca.key) off the nodes.
    Issue {
        /// The node's name: its kafka.node, which its peers' audit entries name.
        #[arg(long)]
        node: String,
        /// A host name or IP address its peers reach it at (repeatable).
        #[arg(long = "host", value_name = "HOST", required = true)]
        hosts: Vec<String>,
        /// The cluster CA's directory (ca.pem, ca.key).
        #[arg(long, default_value = "var/cluster-ca")]
        ca_dir: PathBuf,
        /// Where to write the node's files.
        #[arg(long, default_value = "cluster")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// JSON-lines input file, or `-` for standard input.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Bootstrap brokers (default: kafka.brokers).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Send lines whose geography cannot be read (broken JSON) to this geography's topic,
    /// instead of skipping them.
    #[arg(long, value_name = "GEOGRAPHY")]
    pub unrouted_to: Option<String>,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Print flag events as they arrive, one JSON object a line.
    Tail {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Start at the oldest event still on the topics instead of new ones only.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many seconds without a new event.
        #[arg(long, value_name = "SECS")]
        stop_when_idle: Option<f64>,
    },
    /// Flag stored records by hand (for example, from an abuse report) and publish the event.
    Raise {
        /// Bootstrap brokers (default: kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        /// The flagged records' request IDs (repeatable; all of one resource).
        #[arg(long = "request-id", value_name = "ID", required = true)]
        request_ids: Vec<String>,
        /// Harm categories (repeatable): hate, harassment, sexual, violence, self_harm,
        /// illegal, jailbreak.
        #[arg(long = "category", value_name = "CATEGORY", required = true)]
        categories: Vec<String>,
        /// The abuse score, in [0, 1].
        #[arg(long, default_value_t = 1.0)]
        score: f32,
        /// The end user the flag is about (default: the records' end user when they share
        /// one, else the resource).
        #[arg(long)]
        end_user: Option<String>,
    },
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
pub struct EvalArgs {
    /// JSON-lines file of `{"text": ..., "flagged": 0|1, "source": ...}` (`source` optional),
    /// or `-` for standard input.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Operating threshold of the any-harm score (default: detectors.threshold, else the
    /// model's own).
    #[arg(long, conflicts_with = "reviewer")]
    pub threshold: Option<f32>,
    /// Measure the LLM reviewer ([review] backend) instead of the classifier: AUPRC of its
    /// violation probability, its escalation rate and the harmful texts it would close.
    #[arg(long)]
    pub reviewer: bool,
    /// Evaluate only this many texts, spread evenly over the file (the same ones with and
    /// without --reviewer; a local reviewer reviews about one per second).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip the side-by-side with alt-profanity-check (run by default when the project's
    /// virtual environment has it).
    #[arg(long)]
    pub no_peer: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measure Kafka → stored instead of file → stored, through the broker at these
    /// bootstrap addresses (topics are created under a fresh prefix).
    #[arg(long, value_name = "BROKERS", conflicts_with_all = ["classifier", "detection"])]
    pub kafka: Option<String>,
    /// Measure the harm classifier alone instead: texts/s and batch latency on sample
    /// prompts and completions (--records is then the number of texts).
    #[arg(long)]
    pub classifier: bool,
    /// Worker threads sharing the classifier (with --classifier).
    #[arg(long, default_value_t = 2, requires = "classifier")]
    pub threads: usize,
    /// With --classifier: skip the side-by-side with alt-profanity-check on the same texts.
    #[arg(long, requires = "classifier")]
    pub no_peer: bool,
    /// Measure recurring-abuse detection alone instead: heuristics, near-duplicates, windows
    /// and scoring on sample records (no storage), records/s, latency and memory per tracked
    /// user.
    #[arg(long, conflicts_with = "classifier")]
    pub detection: bool,
    /// Measure the LLM reviewer alone instead ([review] backend, review.workers threads):
    /// reviews/s and per-review latency on sample exchanges (--records is then the number of
    /// reviews; a local model reviews a few per second).
    #[arg(long, conflicts_with_all = ["classifier", "detection", "kafka"])]
    pub reviewer: bool,
    /// Measure the retention purge instead: store --records records under an expired day's
    /// key, delete one of them (which re-keys its resource-day), then purge the rest
    /// (records/s, with ingest of new records running alongside).
    #[arg(long, conflicts_with_all = ["classifier", "detection", "kafka", "reviewer", "sql"])]
    pub purge: bool,
    /// With --purge: purge with no ingest running alongside (the purge's own rate).
    #[arg(long, requires = "purge")]
    pub alone: bool,
    /// Measure SQL over the analytics exports instead: write --records synthetic metadata rows
    /// as Parquet partitions, then time aggregation queries over them (rows/s).
    #[arg(long, conflicts_with_all = ["classifier", "detection", "kafka", "reviewer"])]
    pub sql: bool,
    /// Point queries through the API: `--reviewers` concurrent reviewers over mutual TLS, each
    /// reading its granted case's records by ID, `--records` queries a run.
    #[arg(long, conflicts_with_all = ["classifier", "detection", "kafka", "reviewer", "sql", "purge"])]
    pub api: bool,
    /// Concurrent reviewers (client threads) for `--api`.
    #[arg(long, default_value_t = 50, requires = "api")]
    pub reviewers: usize,
    /// With --api: also read the same records through a second node that forwards each
    /// point query to the first over the peer listener (mutual TLS), and report both.
    #[arg(long, requires = "api")]
    pub forwarded: bool,
    /// With --kafka: consumer-group members (nodes) in this process, each with its own stores,
    /// sharing each run's records once the group has settled; the report gives records/s for
    /// the group and per node (--nodes 1 measures one node the same way, as the baseline).
    #[arg(long, requires = "kafka")]
    pub nodes: Option<usize>,
    /// With --kafka: measure rebuilding a store from the changelog instead: store --records
    /// records mirrored to a changelog topic of the run's own, then rebuild a second node's
    /// store from it (records/s).
    #[arg(long, requires = "kafka", conflicts_with = "nodes")]
    pub rebuild: bool,
    /// With --reviewer: review through this OpenAI-compatible API base URL (for example
    /// http://127.0.0.1:8080/v1) instead of the configured backend.
    #[arg(long, value_name = "URL", requires = "reviewer")]
    pub endpoint: Option<String>,
    /// With --detection: score every record with the harm classifier too.
    #[arg(long, requires = "detection")]
    pub with_classifier: bool,
    /// With --detection: distinct end users the records are spread over.
    #[arg(long, default_value_t = 50_000, requires = "detection")]
    pub users: usize,
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

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Skip compaction (rewriting each store without the purged data). Compaction needs the
    /// stores to itself; a scheduled purge inside `vigil run` never compacts.
    #[arg(long)]
    pub no_compact: bool,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum DeleteCommand {
    /// Delete one record (content, metadata, scores, its reviews) of a resource, by request
    /// ID. Request IDs are unique per geography, not across customers, so the resource is named.
    Request {
        /// The resource whose record it is.
        resource_id: String,
        /// The request ID.
        request_id: String,
    },
    /// Delete everything stored for a resource: its data keys first (its content is
    /// unreadable at once), then its records, windows, cases and reviews. The resource stays
    /// registered.
    Resource {
        /// The resource ID.
        resource_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    /// An aligned table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object a line.
    Json,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Set up and print what to do, but do not serve.
    #[arg(long)]
    pub no_serve: bool,
    /// Where to write the demo workstation's certificate, key and CA certificate.
    #[arg(long, default_value = "var/workstations")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE; nothing that writes).
    pub query: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    pub format: SqlFormat,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Stop after this many seconds even if tasks remain (default: review.drain_secs).
    #[arg(long, value_name = "SECS")]
    pub drain_secs: Option<u64>,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct CasesArgs {
    /// Show this case in full instead of listing them all.
    pub case_id: Option<String>,
    /// Only cases of this geography.
    #[arg(long)]
    pub geography: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Reviewers, managers, admins and customers.
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// API tokens (shown once, stored hashed).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Secure access workstations and their client certificates.
    #[command(subcommand)]
    Workstation(WorkstationCommand),
}

#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Add a principal.
    Add {
        /// A unique name (A-Z a-z 0-9 . _ -).
        name: String,
        /// reviewer, manager, admin or customer.
        #[arg(long)]
        role: String,
        /// eea or non-eea: EEA resources' content is readable only by EEA reviewers.
        #[arg(long)]
        region: String,
        /// For customers: a resource they own (repeat for several).
        #[arg(long = "resource")]
        resources: Vec<String>,
    },
    /// List principals (never tokens).
    List,
    /// Remove a principal and revoke their tokens.
    Remove {
        /// The principal's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a new API token for a principal; it is printed once. It expires after
    /// `access.token_ttl_secs` (12 hours by default); `POST /v1/tokens` re-issues it.
    Issue {
        /// The principal's name.
        name: String,
        /// Seconds it is valid, instead of `access.token_ttl_secs` (60 to 30 days).
        #[arg(long, value_name = "SECONDS")]
        ttl_secs: Option<u64>,
    },
    /// Revoke every token of a principal.
    Revoke {
        /// The principal's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkstationCommand {
    /// Issue a client certificate for a workstation and register it. With --csr, for the key
    /// of a certificate signing request made on the workstation (the private key never leaves
    /// it): writes NAME.pem and the CA certificate ca.pem into the output directory. With
    /// --generate-key (demos only), the key is made here and written beside them as NAME.key.
    /// The certificate is for client authentication only; install it on the workstation
    /// with its key, and trust ca.pem there for this vigil host only (or pin it), never as an
    /// authority for websites.
    Issue {
        /// The workstation's name (the certificate's subject, whatever the request asks).
        name: String,
        /// The workstation's PKCS#10 certificate signing request (PEM), e.g. from
        /// `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ws.key
        /// -subj /CN=ws -out ws.csr` run on the workstation.
        #[arg(long, value_name = "FILE", conflicts_with = "generate_key")]
        csr: Option<PathBuf>,
        /// Make the private key here and write it to the output directory (demos and tests
        /// only: the key then exists outside the workstation).
        #[arg(long)]
        generate_key: bool,
        /// Where to write the certificate (and, with --generate-key, the key).
        #[arg(long, default_value = "var/workstations")]
        out: PathBuf,
    },
    /// List registered workstations.
    List,
    /// Revoke a workstation: its certificate reads nothing from now on.
    Revoke {
        /// The workstation's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (the file, then `VIGIL_<SECTION>__<KEY>` variables) and
    /// print the settings in effect, secrets redacted; exits non-zero naming the first
    /// problem.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; names the first broken entry and exits non-zero if
    /// there is one.
    Verify {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Record in the audit log that it is shorter than, or different from, its head (entries
    /// cut off or replaced), so that vigil writes to it again. vigil refuses to serve with
    /// such a log until this is run; the acknowledgement is itself an audited entry.
    Acknowledge,
}
