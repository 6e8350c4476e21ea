//! The `kiunga` command: `serve` (the default) runs the gateway; `mappings check` validates the
//! mapping files against the metadata and prints `file:line: problem` for each problem.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiunga::app::{AppState, Gateway, StartError};
use kiunga::config::Config;

#[derive(Parser)]
#[command(name = "kiunga", version, about = "FHIR R4 gateway for tracker-style health registries")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway (migrations, metadata and mappings load first).
    Serve,
    /// Work with mapping files.
    Mappings {
        #[command(subcommand)]
        action: MappingsAction,
    },
}

#[derive(Subcommand)]
enum MappingsAction {
    /// Check every mapping file; exit status 1 when any has a problem.
    Check {
        /// Mappings directory (default: the configured one, `mappings`).
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::from(2);
        }
    };
    kiunga::telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Mappings { action: MappingsAction::Check { dir } } => check_mappings(config, dir),
    }
}

fn serve(config: Config) -> ExitCode {
    let state = match AppState::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiunga: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = state.base.clone();
    let result = actix_web::rt::System::new().block_on(async move {
        let server = Gateway::new(state).listen()?;
        tracing::info!(%base, "Kiunga is serving FHIR R4");
        server.await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiunga: cannot serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_mappings(mut config: Config, dir: Option<PathBuf>) -> ExitCode {
    if let Some(d) = dir {
        config.mappings_dir = d;
    }
    let dir = config.mappings_dir.display().to_string();
    match AppState::start(config) {
        Ok(state) => {
            println!("{dir}: OK (mappings version {})", state.mappings().version);
            ExitCode::SUCCESS
        }
        Err(StartError::Mappings(problems)) => {
            for p in &problems.0 {
                println!("{p}");
            }
            eprintln!("{} problem(s)", problems.0.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kiunga: {e}");
            ExitCode::from(2)
        }
    }
}
