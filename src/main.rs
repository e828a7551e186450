//! The `vigil` command: parses the command line, loads the configuration, and hands each
//! subcommand to the crates that do the work. Nothing here knows how records are decoded,
//! routed, encrypted or stored.

mod cli;
mod commands;
mod config;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// sled and the pipeline allocate per record; mimalloc's thread-local free lists make that
/// markedly cheaper than glibc's allocator (see `vigil bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    match commands::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed stdout (`vigil run ... | head`) is a normal way to stop reading.
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "vigil: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `VIGIL_LOG` (default: warnings and errors).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
