//! `hyperflight`: the Flight server (`serve`), its settings (`check-config`), a health probe for
//! container health checks (`health`) and change capture set-up (`cdc setup`, `cdc teardown`).
//! Settings: defaults < `--config` file < `HYPERFLIGHT_*` < flags.

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
    /// Print the effective settings as TOML (secrets left out) and exit: 0 if valid, 2 if not;
    /// with --connect, 1 if the database cannot be reached as configured.
    CheckConfig(CheckConfigArgs),
    /// Ask a running server for `health`: exit 0 when it answers and reaches its database.
    Health(HealthArgs),
    /// Change data capture: create or drop the publication and replication slot.
    #[command(subcommand)]
    Cdc(CdcCommand),
}

#[derive(Subcommand)]
enum CdcCommand {
    /// Create the publication and the logical replication slot for the given tables; refuse (exit
    /// 1, saying why and what to run) a set-up that would make users' UPDATEs or DELETEs fail.
    Setup(CdcSetupArgs),
    /// Drop the slot (freeing the WAL it retains) and the publication.
    Teardown(CdcNames),
}

#[derive(clap::Args)]
struct CdcNames {
    #[command(flatten)]
    settings: Overrides,
    /// The publication's name.
    #[arg(long, default_value = "hyperflight")]
    publication: String,
    /// The replication slot's name.
    #[arg(long, default_value = "hyperflight")]
    slot: String,
}

#[derive(clap::Args)]
struct CdcSetupArgs {
    #[command(flatten)]
    names: CdcNames,
    /// Hypertables or plain tables to capture, as schema.table (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    tables: Vec<String>,
    /// `all`: inserts, updates and deletes (every covered table needs a replica identity);
    /// `inserts`: inserts only, safe for any table.
    #[arg(long, value_enum, default_value = "all")]
    publish: server::cdc::Publish,
}

#[derive(clap::Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    settings: Overrides,
    /// Also connect to the database as the server would (TLS, tunnel, credentials) and say what
    /// fails, if anything.
    #[arg(long)]
    connect: bool,
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
        Command::CheckConfig(args) => match settings(&args.settings) {
            Ok((settings, config)) => {
                // A closed pipe (`check-config | head -1`) is the reader's choice, not an error.
                let text = settings.to_toml(config.database.target());
                if let Err(e) = std::io::stdout().write_all(text.as_bytes()) {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        eprintln!("hyperflight: cannot write: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                // Missing schemas are worth a connection even without --connect (a typo exposes
                // nothing, silently otherwise); only --connect makes a failed one an error.
                if !args.connect && config.schemas.is_empty() {
                    return ExitCode::SUCCESS;
                }
                let connect = args.connect;
                run(async move {
                    match probe(&config).await {
                        Ok(found) => {
                            if connect {
                                eprintln!("hyperflight: {}", found.summary);
                            }
                            for schema in found.missing_schemas {
                                eprintln!("hyperflight: warning: {}", missing_schema(&schema));
                            }
                            Ok(())
                        }
                        Err(e) if connect => Err(e),
                        Err(e) => {
                            eprintln!("hyperflight: note: could not check `schemas`: {e}");
                            Ok(())
                        }
                    }
                })
            }
            Err(code) => code,
        },
        Command::Health(args) => run(health(args)),
        Command::Cdc(command) => {
            let names = match &command {
                CdcCommand::Setup(args) => &args.names,
                CdcCommand::Teardown(names) => names,
            };
            match settings(&names.settings) {
                Ok((_, config)) => run(cdc(command, config)),
                Err(code) => code,
            }
        }
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

/// What a connection made as the server makes them found.
struct Probe {
    /// The server's version, where, as whom, with or without TLS.
    summary: String,
    /// Configured schemas the database does not have.
    missing_schemas: Vec<String>,
}

/// Connects once as the server does; fails with what to fix when the connection cannot be made.
async fn probe(config: &Config) -> Result<Probe, String> {
    let client = server::db::session_connector(config)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    let row = client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version'), \
             coalesce((SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()), false)",
            &[],
        )
        .await
        .map_err(|e| format!("connected, but a query failed: {e}"))?;
    let (version, tls): (String, bool) = (row.get(0), row.get(1));
    let rows = client
        .query(
            "SELECT s FROM unnest($1::text[]) AS s
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = s)",
            &[&config.schemas],
        )
        .await
        .map_err(|e| format!("connected, but a query failed: {e}"))?;
    let target = config.database.target();
    Ok(Probe {
        summary: format!(
            "connected to PostgreSQL {version} at {} as {:?}, {}",
            target.address(),
            target.role(),
            if tls { "with TLS" } else { "without TLS" }
        ),
        missing_schemas: rows.iter().map(|r| r.get(0)).collect(),
    })
}

fn missing_schema(name: &str) -> String {
    format!(
        "schema {name:?} (in `schemas`) does not exist in the database: nothing of it is exposed"
    )
}

async fn serve(config: Config) -> Result<(), String> {
    // Said at once, not on the first call; the server keeps running (the pool retries on every
    // call, and health names the failure), so fixing the database needs no restart.
    let probed = config.clone();
    tokio::spawn(async move {
        match probe(&probed).await {
            Ok(found) => {
                tracing::info!("{}", found.summary);
                for schema in found.missing_schemas {
                    tracing::warn!("{}", missing_schema(&schema));
                }
            }
            Err(e) => tracing::error!(
                "{e}; serving anyway: calls fail with this reason until it is fixed"
            ),
        }
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    server::run(listener, config, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Runs a `cdc` command on a session that may write (set-up makes a publication and a slot).
async fn cdc(command: CdcCommand, config: Config) -> Result<(), String> {
    let client = config
        .database
        .connect()
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    match command {
        CdcCommand::Setup(args) => {
            let request = server::cdc::SetupRequest {
                tables: args.tables,
                publication: args.names.publication,
                slot: args.names.slot,
                publish: args.publish,
            };
            let report = server::cdc::setup(&client, &request)
                .await
                .map_err(|e| e.to_string())?;
            for statement in &report.statements {
                println!("{statement};");
            }
            println!(
                "-- slot {:?} streams changes committed after {}; until a stream acknowledges \
                 them, PostgreSQL keeps their WAL: run `hyperflight cdc teardown` when done",
                request.slot, report.slot_lsn
            );
        }
        CdcCommand::Teardown(names) => {
            let done = server::cdc::teardown(&client, &names.publication, &names.slot)
                .await
                .map_err(|e| e.to_string())?;
            if done.is_empty() {
                println!("-- nothing to drop");
            }
            for line in done {
                println!("-- {line}");
            }
        }
    }
    Ok(())
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
