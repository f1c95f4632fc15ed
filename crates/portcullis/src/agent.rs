//! `portcullis agent create`: mint an API key and the hash that goes into the config.

use clap::Subcommand;
use portcullis_identity::{generate_api_key, ScramVerifier};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Create an API key for an agent; prints the key once and the config entry to add.
    Create {
        /// The agent's name (what it passes as the PostgreSQL user).
        name: String,
    },
}

pub struct NewAgent {
    pub key: String,
    pub key_hash: String,
}

pub fn mint() -> NewAgent {
    let key = generate_api_key();
    let key_hash =
        ScramVerifier::from_password(&key, ScramVerifier::DEFAULT_ITERATIONS).to_string();
    NewAgent { key, key_hash }
}

pub fn run(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCommand::Create { name } => {
            if name.is_empty() || name.chars().any(|c| c.is_control() || c == '"') {
                anyhow::bail!(
                    "agent name {name:?} is not usable: use letters, digits, '-', '_' or '.'"
                );
            }
            let a = mint();
            eprintln!(
                "API key for agent {name:?} (shown once; the agent uses it as its password):"
            );
            println!("{}", a.key);
            eprintln!("\nAdd this to the configuration file (only the hash is stored):\n");
            eprintln!("[[agents]]\nname = {name:?}\nkey_hash = {:?}", a.key_hash);
            Ok(ExitCode::SUCCESS)
        }
    }
}
