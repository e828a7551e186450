//! One module per subcommand; each loads what it needs and calls into the crates.

mod bench;
mod generate;
mod resource;
mod run;
mod stats;

use std::io::Write;

use anyhow::Context;
use vigil_core::ResourceRegistry;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// Runs the subcommand the command line names.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run(args) => run::run(&config, &args),
        Command::Generate(args) => generate::generate(&config, &args),
        Command::Resource(cmd) => resource::resource(&config, cmd),
        Command::Stats => stats::stats(&config),
        Command::Bench(args) => bench::bench(&args),
    }
}

/// Loads the registry and checks it against the retention settings.
fn load_registry(config: &Config) -> anyhow::Result<ResourceRegistry> {
    let registry = ResourceRegistry::load(&config.resources)?;
    config.storage.retention.validate(&registry)?;
    Ok(registry)
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
