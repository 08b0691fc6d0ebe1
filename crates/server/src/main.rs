//! `hyperflight`: the Flight server (`serve`), its settings (`check-config`) and a health probe for
//! container health checks (`health`). Settings: defaults < `--config` file < `HYPERFLIGHT_*` < flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use server::cli::{init_logging, shutdown_signal, LogFormat};
use server::config::{Config, Overrides, Settings};

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
    /// Print the effective settings as TOML (secrets left out) and exit: 0 if valid, 2 if not.
    CheckConfig(Overrides),
    /// Ask a running server for `health`: exit 0 when it answers and reaches its database.
    Health(HealthArgs),
}

#[derive(clap::Args)]
struct HealthArgs {
    /// The server: grpc://host:port or grpc+tls://host:port.
    #[arg(long, default_value = "grpc://127.0.0.1:50051")]
    url: String,
    /// Bearer token, when the server requires one (or HYPERFLIGHT_AUTH_TOKEN).
    #[arg(long, env = "HYPERFLIGHT_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed a TLS server's certificate.
    #[arg(long)]
    tls_root_certs: Option<PathBuf>,
    /// Give up after this long (inside a container HEALTHCHECK's own timeout).
    #[arg(long, default_value_t = 4)]
    timeout_seconds: u64,
}

fn main() -> ExitCode {
    return_large_buffers_to_the_os();
    let cli = Cli::parse();
    init_logging("info", cli.log_format);
    match cli.command {
        Command::Serve(o) => match settings(&o) {
            Ok((_, config)) => run(serve(config)),
            Err(code) => code,
        },
        Command::CheckConfig(o) => match settings(&o) {
            Ok((settings, config)) => {
                // A closed pipe (`check-config | head -1`) is the reader's choice, not an error.
                let text = settings.to_toml(&config.database);
                if let Err(e) = std::io::stdout().write_all(text.as_bytes()) {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        eprintln!("hyperflight: cannot write: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                if !config.schemas.is_empty() {
                    run(warn_missing_schemas(config));
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Health(args) => run(health(args)),
    }
}

/// Decoded batches are megabytes each. glibc raises its mmap threshold after the first such buffer
/// is freed and then keeps later ones in its arenas, so RSS would grow with the number of streams
/// rather than stay near `max_memory_mb`; a fixed threshold maps them and unmaps them when freed.
fn return_large_buffers_to_the_os() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Loads and validates the settings; on failure says why and gives exit code 2.
fn settings(o: &Overrides) -> Result<(Settings, Config), ExitCode> {
    let loaded = Settings::load(o).and_then(|s| s.clone().validate().map(|c| (s, c)));
    loaded.map_err(|e| {
        eprintln!("hyperflight: {e}");
        ExitCode::from(2)
    })
}

fn run(f: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hyperflight: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyperflight: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Says on stderr which configured schemas the database does not have (a typo exposes nothing,
/// silently otherwise); a database that cannot be reached is mentioned, not an error.
async fn warn_missing_schemas(config: Config) -> Result<(), String> {
    let mut pg = config.database.clone();
    pg.connect_timeout(Duration::from_secs(5));
    let (client, connection) = match pg.connect(tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hyperflight: note: could not reach the database to check `schemas` ({e})");
            return Ok(());
        }
    };
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT s FROM unnest($1::text[]) AS s
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = s)",
            &[&config.schemas],
        )
        .await
        .map_err(|e| e.to_string())?;
    for row in rows {
        eprintln!(
            "hyperflight: warning: schema {:?} (in `schemas`) does not exist in the database: nothing of it is exposed",
            row.get::<_, String>(0)
        );
    }
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    server::run(listener, config, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn health(args: HealthArgs) -> Result<(), String> {
    use protocol::client::{ClientConfig, Connection};
    let tls_root_certs = match &args.tls_root_certs {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?)
        }
        None => None,
    };
    let limit = Duration::from_secs(args.timeout_seconds.max(1));
    let config = ClientConfig {
        url: args.url.clone(),
        token: args.token,
        tls_root_certs,
        connect_timeout: Some(limit),
    };
    let connection = Connection::lazy(&config).map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(limit, connection.action(protocol::ActionName::Health))
        .await
        .map_err(|_| format!("health: no answer from {} within {limit:?}", args.url))?
        .map_err(|e| format!("health: {}", protocol::client::ReadError::from(e)))?;
    println!("{}", String::from_utf8_lossy(&answer));
    Ok(())
}
