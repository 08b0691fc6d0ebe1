//! `hyperflight serve`: the Flight server. Settings: defaults < `--config` file < `HYPERFLIGHT_*` < flags.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use server::cli::{init_logging, shutdown_signal, LogFormat};
use server::config::{Overrides, Settings};

#[derive(Parser)]
#[command(
    version,
    about = "Arrow Flight server for TimescaleDB hypertables and PostgreSQL tables"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "HYPERFLIGHT_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Flight until SIGINT or SIGTERM.
    Serve(Overrides),
    /// Print the effective settings (secrets redacted) and exit: 0 if valid, 2 if not.
    CheckConfig(Overrides),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging("info", cli.log_format);
    let (overrides, serve_it) = match cli.command {
        Command::Serve(o) => (o, true),
        Command::CheckConfig(o) => (o, false),
    };
    let settings = Settings::load(&overrides);
    if !serve_it {
        if let Ok(s) = &settings {
            println!("{s:#?}");
        }
    }
    let config = match settings.and_then(Settings::validate) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hyperflight: {e}");
            return ExitCode::from(2);
        }
    };
    if !serve_it {
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hyperflight: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyperflight: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: server::config::Config) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    server::server::run(listener, config, shutdown_signal()).await?;
    Ok(())
}
