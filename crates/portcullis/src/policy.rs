//! `portcullis policy explain|schema`: ask the policies without connecting anywhere.

use crate::config;
use clap::Subcommand;
use portcullis_policy::sql::{catalog, classify, Catalog};
use portcullis_policy::{engine, Action, Actor, Gate, GrantScope, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Show how a statement is classified and how the policies decide it, without
    /// connecting. Exit status: 0 allow, 1 deny or review.
    Explain {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Agent name (its groups come from the configuration).
        #[arg(long)]
        agent: String,
        /// Connection name (its tags come from the configuration).
        #[arg(long)]
        connection: String,
        /// Business justification, as `context.justification`.
        #[arg(long)]
        justification: Option<String>,
        /// The human the agent acts for, as `context.requester` (and the chain
        /// requester → agent).
        #[arg(long)]
        requester: Option<String>,
        /// Decide as under a task grant that allows only these classes (comma-separated).
        #[arg(long, value_delimiter = ',')]
        grant_actions: Vec<String>,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
        /// Read the connection's catalog from the target (with the configuration's
        /// credentials), as the gateway does, so that functions and views are judged by what
        /// the target says. Without it the catalog is not consulted: only PostgreSQL's
        /// built-in functions are known and views are not followed.
        #[arg(long)]
        catalog: bool,
        /// The SQL (several statements allowed, as in a simple query).
        sql: String,
    },
    /// Print the Cedar schema policies are validated against.
    Schema,
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Schema => {
            print!("{}", engine::SCHEMA);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain {
            config: path,
            agent,
            connection,
            justification,
            requester,
            grant_actions,
            json,
            catalog: read_catalog,
            sql,
        } => {
            let (cfg, policies) = config::load_policies(&path)?;
            let mut notes = Vec::new();
            if !cfg.agents.iter().any(|a| a.name == agent) {
                notes.push(format!(
                    "agent {agent:?} is not in {}: it has no groups (and could not log in)",
                    path.display()
                ));
            }
            if !cfg.connections.iter().any(|c| c.name == connection) {
                notes.push(format!(
                    "connection {connection:?} is not in {}: it has no tags",
                    path.display()
                ));
            }
            let gate = Gate::new(config::gate_state(&cfg, policies), 16);
            let catalog = if read_catalog {
                target_catalog(&path, &connection)?
            } else {
                Catalog::builtin("pass --catalog to read the connection's catalog from the target")
            };
            let class = catalog::refine(&classify(&sql), &catalog, &|t| Arc::new(classify(t)));
            let mut actions = Vec::new();
            for a in &grant_actions {
                actions.push(Action::from_name(a.trim()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--grant-actions: unknown class {a:?}; classes are {}",
                        Action::ALL
                            .iter()
                            .map(|a| a.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?);
            }
            let who = Actor {
                name: agent.clone(),
                chain: requester
                    .iter()
                    .cloned()
                    .chain(requester.as_ref().map(|_| agent.clone()))
                    .collect(),
                requester,
                grant: (!actions.is_empty()).then(|| GrantScope {
                    id: "explain".into(),
                    actions,
                }),
                ..Default::default()
            };
            let gd = gate.decide(&who, &connection, &class, &sql, justification.as_deref());
            let d = &gd.decision;
            if json {
                let out = serde_json::json!({
                    "classification": class,
                    "decision": d,
                    "snapshot": gd.snapshot,
                    "catalog": catalog.describe(),
                    "notes": notes,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for n in &notes {
                    println!("note: {n}");
                }
                println!("catalog: {}", catalog.describe());
                for (i, s) in class.statements.iter().enumerate() {
                    println!("statement {}: {}", i + 1, s.kind);
                    let list = |v: Vec<String>| {
                        if v.is_empty() {
                            "-".to_string()
                        } else {
                            v.join(", ")
                        }
                    };
                    println!(
                        "  classes:   {}",
                        list(s.actions.iter().map(|a| a.to_string()).collect())
                    );
                    println!("  reads:     {}", list(s.reads.iter().cloned().collect()));
                    println!("  writes:    {}", list(s.writes.iter().cloned().collect()));
                    println!(
                        "  functions: {}",
                        list(s.functions.iter().cloned().collect())
                    );
                    for n in &s.notes {
                        println!("  note:      {n}");
                    }
                }
                println!("checks:");
                for c in &d.checks {
                    let on = c
                        .object
                        .clone()
                        .unwrap_or_else(|| format!("connection {connection}"));
                    let by = if c.policies.is_empty() {
                        "no policy matched".to_string()
                    } else {
                        c.policies.join(", ")
                    };
                    println!(
                        "  {:<14} on {:<32} {:<6} ({by})",
                        c.action.to_string(),
                        on,
                        c.verdict.name()
                    );
                }
                for e in &d.errors {
                    println!("policy error (the policy was skipped): {e}");
                }
                println!(
                    "verdict: {} — {}",
                    d.verdict.name().to_uppercase(),
                    d.reason
                );
                println!("policy snapshot: {}", gd.snapshot);
            }
            Ok(if d.verdict == Verdict::Allow {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// The catalog of `connection` as the gateway reads it.
fn target_catalog(path: &std::path::Path, connection: &str) -> anyhow::Result<Catalog> {
    let loaded = config::load(path)?;
    let targets = crate::serve::targets(&loaded)?;
    let target = targets.get(connection).ok_or_else(|| {
        anyhow::anyhow!(
            "--catalog: connection {connection:?} is not in {}",
            path.display()
        )
    })?;
    let rt = crate::serve::runtime()?;
    rt.block_on(portcullis_proto_postgres::catalog::read(target))
        .map_err(|e| anyhow::anyhow!("--catalog: cannot read the catalog of {connection:?}: {e}"))
}
