//! `hyperflight-loadtest`: N concurrent clients read random time windows from a hyperflight server
//! and verify every row count against SQL, optionally under a fault. Prints a report on stdout; exits
//! 0 when every read was verified, 1 when not, 2 when the run could not be set up.

use std::process::ExitCode;

use clap::Parser;
use loadtest::{self, Options};

#[derive(Parser)]
#[command(
    version,
    about = "Load test for a hyperflight server: concurrent verified reads, optional faults"
)]
struct Cli {
    #[command(flatten)]
    options: Options,
    /// Check the options, print them and exit without touching anything.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    server::cli::init_logging("info", server::cli::LogFormat::Text);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hyperflight-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cli.options.validate() {
        eprintln!("hyperflight-loadtest: {e}");
        return ExitCode::from(2);
    }
    if cli.dry_run {
        let mut shown = cli.options.clone();
        // The URL may carry a password.
        shown.database_url = shown.database_url.map(|_| "(set)".into());
        println!("{shown:#?}");
        return ExitCode::SUCCESS;
    }
    match runtime.block_on(loadtest::run(cli.options, server::cli::shutdown_signal())) {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("hyperflight-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}
