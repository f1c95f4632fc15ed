//! The `portcullis` command: CLI, configuration loading and wiring.

mod agent;
mod audit;
mod config;
mod demo;
mod grant;
mod identity;
mod mask;
mod policy;
mod reload;
mod retention;
mod serve;
mod sessions;
mod tls;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Identity-aware Layer 7 gateway: every agent command verified, recorded in a tamper-evident ledger, then forwarded"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One-command quickstart: a throwaway PostgreSQL with sample data behind the gateway.
    Demo(demo::DemoArgs),
    /// Run the gateway.
    Serve {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and its policies, and explain what is wrong.
    Check {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Read and verify the ledger.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Task grants: a person lets an agent act on a connection, for a reason, for a while.
    #[command(subcommand)]
    Grant(grant::GrantCommand),
    /// Explain policy decisions; print the policy schema.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Retention: delete old SQL text, parameters and error messages under the rules.
    #[command(subcommand)]
    Retention(retention::RetentionCommand),
    /// Sessions: list them, show one's events, replay its recording.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Masking: try the detectors and profiles of `[masking]` on text or CSV.
    #[command(subcommand)]
    Mask(mask::MaskCommand),
    /// Manage agent service accounts.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the JSON schema of the configuration file.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Serve { config } => serve::run(&config),
        Command::Check { config } => config::check(&config),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Agent(cmd) => agent::run(cmd),
        Command::Sessions(cmd) => sessions::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Grant(cmd) => grant::run(cmd),
        Command::Retention(cmd) => retention::run(cmd),
        Command::Mask(cmd) => mask::run(cmd),
        Command::Config(ConfigCommand::Schema) => {
            println!("{}", config::schema_json());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
