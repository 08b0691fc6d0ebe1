//! `hyperflight-airbyte`: an Airbyte source over the Flight service — `spec`, `check --config F`,
//! `discover --config F`, `read --config F --catalog F [--state F]`. Airbyte messages go to stdout,
//! one per line, and nothing else does; diagnostics go to stderr (filter: `HYPERFLIGHT_LOG`,
//! default `warn`). The logic lives in the `airbyte` library crate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use airbyte::{self, output::Output, Command};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Airbyte source reading TimescaleDB hypertables chunk by chunk over Arrow Flight"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the connector specification.
    Spec,
    /// Check that the config can read: database, TimescaleDB, Flight service.
    Check {
        /// Config JSON file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the catalog: one stream per exposed table.
    Discover {
        /// Config JSON file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Read the configured streams as RECORD and STATE messages.
    Read {
        /// Config JSON file.
        #[arg(long)]
        config: PathBuf,
        /// Configured catalog JSON file.
        #[arg(long)]
        catalog: PathBuf,
        /// State JSON file (a list of STATE messages from an earlier read).
        #[arg(long)]
        state: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    server::cli::init_logging("warn", server::cli::LogFormat::Text);
    let command = match cli.command {
        Cmd::Spec => Command::Spec,
        Cmd::Check { config } => Command::Check { config },
        Cmd::Discover { config } => Command::Discover { config },
        Cmd::Read {
            config,
            catalog,
            state,
        } => Command::Read {
            config,
            catalog,
            state,
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hyperflight-airbyte: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = Output::stdout();
    let code = runtime.block_on(airbyte::run(command, &mut out));
    // Everything was written and flushed; do not wait on stragglers.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}
