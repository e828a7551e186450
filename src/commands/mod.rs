//! One module per subcommand; each loads what it needs and calls into the crates.

mod admin;
mod audit;
mod bench;
mod cases;
mod changelog;
mod cluster;
mod config;
mod delete;
mod demo;
mod eval;
mod eval_reviewer;
mod export;
mod flags;
mod generate;
mod monitoring;
mod nodes;
mod produce;
mod purge;
mod resource;
mod review;
mod run;
mod serve;
mod sql;
mod stats;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use vigil_analytics::Exports;
use vigil_core::{Clock, Geography, ResourceRegistry};
use vigil_kafka::KafkaConfig;
use vigil_pipeline::{Lifecycle, LiveRegistry, RegistryWatcher};
use vigil_storage::Stores;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// Runs the subcommand the command line names.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    if matches!(
        cli.command,
        Command::Run(_) | Command::Serve | Command::Demo(_) | Command::Purge(_)
    ) {
        refuse_a_shifted_clock_outside_a_drill(cli.drill)?;
    }
    match cli.command {
        Command::Run(args) => run::run(&config, &args),
        Command::Produce(args) => produce::produce(&config, &args),
        Command::Flags(cmd) => flags::flags(&config, cmd),
        Command::Nodes(args) => nodes::nodes(&config, &args),
        Command::Cluster(cmd) => cluster::cluster(cmd),
        Command::Generate(args) => generate::generate(&config, &args),
        Command::Resource(cmd) => resource::resource(&config, cmd),
        Command::Stats => stats::stats(&config),
        Command::Config(crate::cli::ConfigCommand::Check) => config::check(&config),
        Command::Cases(args) => cases::cases(&config, &args),
        Command::Review(args) => review::review(&config, &args),
        Command::Bench(args) => bench::bench(&config, &args),
        Command::Eval(args) => eval::eval(&config, &args),
        Command::Purge(args) => purge::purge(&config, &args),
        Command::Delete(cmd) => delete::delete(&config, cmd),
        Command::Export => export::export(&config),
        Command::Sql(args) => sql::sql(&config, &args),
        Command::Serve => serve::serve(&config),
        Command::Demo(args) => demo::demo(&config, &args),
        Command::Admin(cmd) => admin::admin(&config, cmd),
        Command::Audit(cmd) => audit::audit(&config, cmd),
    }
}

/// Loads the registry and checks it against the retention settings.
fn load_registry(config: &Config) -> anyhow::Result<ResourceRegistry> {
    let registry = ResourceRegistry::load(&config.resources)?;
    config.storage.retention.validate(&registry)?;
    Ok(registry)
}

/// `VIGIL_NOW` is for tests and drills: the long-running commands and the purge refuse it
/// without `--drill`, since everything they store would be dated, and expire, by it (and a
/// purge would delete what has not expired).
fn refuse_a_shifted_clock_outside_a_drill(drill: bool) -> anyhow::Result<()> {
    let clock = Clock::from_env()?;
    anyhow::ensure!(
        drill || !clock.is_shifted(),
        "{} is set (the clock reads {}): `vigil run`, `serve`, `demo` and `purge` refuse a shifted clock outside a drill, since records would be dated, and expire, by it; for a drill, pass --drill (every audit entry is then marked as written in a drill)",
        Clock::ENV,
        clock.now()
    );
    Ok(())
}

/// Opens the stores, dated by the system clock, or by the instant `VIGIL_NOW` names (for
/// tests and retention drills; a warning says so).
fn open_stores(config: &Config, registry: &ResourceRegistry) -> anyhow::Result<Stores> {
    let clock = Clock::from_env()?;
    if clock.is_shifted() {
        tracing::warn!(now = %clock.now(), "The clock is shifted by {}: records are dated, and expire, by it.", Clock::ENV);
    }
    Ok(Stores::open_with_clock(
        &config.storage,
        registry.base_dir(),
        clock,
    )?)
}

/// The retention purge and analytics exports over `stores`.
fn lifecycle(
    config: &Config,
    stores: &Arc<Stores>,
    registry: &ResourceRegistry,
) -> anyhow::Result<Lifecycle> {
    let exports = Exports::open(&config.analytics).context("opening the analytics exports")?;
    Ok(Lifecycle::new(
        stores.clone(),
        Arc::new(std::sync::RwLock::new(registry.clone())),
        config.storage.retention.clone(),
        exports,
    )
    .with_audit_log(config.access.audit_log.clone()))
}

/// How often a running process looks for changes to the registry file.
const REGISTRY_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Starts watching the registry file for a process that runs for a while: changes since
/// version `loaded` (taken before the registry was loaded) replace `live` (the registry the lifecycle, the API, the pipeline and the reviewer share) and are
/// applied to `stores`.
fn watch_registry(
    config: &Config,
    loaded: Option<String>,
    stores: &Arc<Stores>,
    live: &LiveRegistry,
) -> anyhow::Result<RegistryWatcher> {
    RegistryWatcher::start(
        config.resources.clone(),
        loaded,
        live.clone(),
        stores.clone(),
        config.storage.retention.clone(),
        REGISTRY_WATCH_INTERVAL,
    )
    .context("starting the registry watcher")
}

/// An audit entry by the operator at the command line: deletions, purges, resource and access
/// changes made by `vigil` commands are recorded as `cli:$USER` (role `operator`) before they
/// are made.
fn operator_event(action: &str) -> vigil_access::AuditEvent {
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let mut event =
        vigil_access::AuditEvent::new(actor, action).outcome(vigil_access::Outcome::Done);
    event.role = Some("operator".into());
    event
}

struct OperatorAudit {
    log: vigil_access::AuditLog,
}

impl OperatorAudit {
    fn open(config: &Config, clock: Clock) -> anyhow::Result<Self> {
        Ok(Self {
            log: vigil_access::AuditLog::open(&config.access.audit_log, clock)?,
        })
    }

    /// Records `action` before it is carried out; if it cannot be recorded, it is not.
    fn record(
        &self,
        action: &str,
        fill: impl FnOnce(&mut vigil_access::AuditEvent),
    ) -> anyhow::Result<()> {
        let mut event = operator_event(action);
        fill(&mut event);
        self.log
            .append_blocking(event)
            .context("the audit log cannot record this, so it was not done")?;
        Ok(())
    }
}

/// The Kafka settings, with the brokers given on the command line if any.
fn kafka_config(config: &Config, brokers: Option<&str>) -> KafkaConfig {
    let mut kafka = config.kafka.clone();
    if let Some(brokers) = brokers {
        kafka.brokers = brokers.to_owned();
    }
    kafka
}

/// The geographies named on the command line, or else every geography of the registry.
fn geographies(registry: &ResourceRegistry, named: &[String]) -> anyhow::Result<Vec<Geography>> {
    if named.is_empty() {
        let all: BTreeSet<Geography> = registry.iter().map(|r| r.geography.clone()).collect();
        return Ok(all.into_iter().collect());
    }
    named
        .iter()
        .map(|g| Geography::parse(g.as_str()).context("--geography"))
        .collect()
}

/// A flag set by the first SIGINT or SIGTERM, asking a long-running command to finish
/// cleanly; a second one exits at once, with status 130.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Writes `text` and a newline to stdout. Command output, not logging: it is the result the
/// user asked for.
fn output(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(anyhow::Error::from)
        .context("writing to stdout")
        .map_err(|e| match e.root_cause().downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                std::io::Error::from(std::io::ErrorKind::BrokenPipe).into()
            }
            _ => e,
        })
}
