//! `portcullis demo`: the quickstart on the embedded default.
//!
//! Starts a throwaway PostgreSQL (the system's own binaries), seeds a sample `shop` database,
//! writes a configuration with one demo agent, and runs the gateway in front of it until
//! Ctrl-C. The agent's key is printed once; the target's password stays in a file the agent
//! never sees.

mod seed;

use crate::config;
use crate::serve;
use anyhow::{anyhow, Context};
use clap::Args;
use pg_ephemeral::{Cluster, ClusterOptions, PgBinaries};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct DemoArgs {
    /// Keep everything (cluster, config, ledger) in this folder; default: a temp folder
    /// removed on exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Port for the gateway's PostgreSQL listener (0 = any free port).
    #[arg(long, default_value_t = 6432)]
    port: u16,
    /// Rows in the sample `customers` table.
    #[arg(long, default_value_t = 200)]
    customers: usize,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::init_tracing();
    let bins = PgBinaries::find().map_err(|e| anyhow!("{e}"))?;
    let (_temp, dir) = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create --data-dir {}", d.display()))?;
            (None, std::fs::canonicalize(d)?)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("portcullis-demo-")
                .tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    eprintln!("portcullis demo: data in {}", dir.display());

    let target_password = portcullis_identity::generate_api_key();
    let pw_file = dir.join("target-password");
    let password = if pw_file.exists() {
        std::fs::read_to_string(&pw_file)?.trim().to_string()
    } else {
        crate::tls::write_private(&pw_file, target_password.as_bytes())?;
        target_password
    };
    eprintln!(
        "starting a throwaway PostgreSQL from {} …",
        bins.bin_dir.display()
    );
    let cluster = Cluster::start_in(
        &bins,
        &dir.join("pg"),
        ClusterOptions {
            superuser_password: Some(password.clone()),
            keep: args.data_dir.is_some(),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow!("{e}"))?;

    let rt = serve::runtime()?;
    let code = rt.block_on(async {
        seed_database(&cluster, &password, args.customers).await?;
        let agent = crate::agent::mint();
        let port = pick_port(args.port);
        let config_path = write_config(&dir, &cluster, port, &agent.key_hash)?;
        let loaded = config::load(&config_path)?;
        let running = serve::start(&loaded).await?;
        let addr = running
            .addrs
            .first()
            .map(|(_, a)| *a)
            .ok_or_else(|| anyhow!("no listener started"))?;
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "portcullis".into());
        println!();
        println!(
            "portcullis is up: agent \"demo-agent\" may reach connection \"shop\" through {addr}."
        );
        println!("The agent's key is shown once; the database password stays with the gateway.");
        println!();
        println!("Connect as the agent:");
        println!(
            "  psql \"postgresql://demo-agent:{}@{}:{}/shop?sslmode=require\"",
            agent.key,
            addr.ip(),
            addr.port()
        );
        println!();
        println!("Watch the ledger (another terminal):");
        println!(
            "  {exe} audit tail --config {} --follow",
            config_path.display()
        );
        println!("  {exe} audit verify --config {}", config_path.display());
        println!();
        println!("Try: SELECT full_name, email, card_number, iban FROM customers LIMIT 5;");
        println!("     → names, emails, card numbers and IBANs come back masked (profile \"analyst\").");
        println!("demo-agent is a read-only analyst (policies in {}):", dir.join("policies").display());
        println!("     DELETE FROM orders;  → refused with SQLSTATE 42501, naming the policy.");
        println!("Ask the policies without connecting:");
        println!(
            "  {exe} policy explain --config {} --agent demo-agent --connection shop \"DELETE FROM orders\"",
            config_path.display()
        );
        println!("Ctrl-C stops the gateway and the database.");
        serve::wait_for_signal().await;
        eprintln!("\nstopping …");
        running.stop().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })?;
    drop(cluster);
    Ok(code)
}

async fn seed_database(cluster: &Cluster, password: &str, customers: usize) -> anyhow::Result<()> {
    let exists = cluster
        .psql(
            "postgres",
            "SELECT 1 FROM pg_database WHERE datname = 'shop'",
        )
        .map_err(|e| anyhow!("{e}"))?;
    if exists.trim() == "1" {
        return Ok(());
    }
    cluster
        .create_database("shop")
        .map_err(|e| anyhow!("{e}"))?;
    let (client, conn) = tokio_postgres::Config::new()
        .host(cluster.host())
        .port(cluster.port())
        .user(cluster.superuser())
        .password(password)
        .dbname("shop")
        .connect(tokio_postgres::NoTls)
        .await
        .context("cannot connect to the demo database to seed it")?;
    tokio::spawn(conn);
    client
        .batch_execute(&seed::seed_sql(customers, customers * 3, 42))
        .await
        .context("seeding the demo database failed")?;
    eprintln!(
        "seeded database \"shop\": {customers} customers, {} orders",
        customers * 3
    );
    Ok(())
}

fn pick_port(wanted: u16) -> u16 {
    if wanted == 0 || std::net::TcpListener::bind(("127.0.0.1", wanted)).is_ok() {
        return wanted;
    }
    eprintln!("port {wanted} is busy; using a free one");
    0
}

/// The example policies, shipped inside the binary so the demo works anywhere.
const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    (
        "guardrails.cedar",
        include_str!("../../../../examples/policies/guardrails.cedar"),
    ),
    (
        "analyst.cedar",
        include_str!("../../../../examples/policies/analyst.cedar"),
    ),
    (
        "migration.cedar",
        include_str!("../../../../examples/policies/migration.cedar"),
    ),
    (
        "support.cedar",
        include_str!("../../../../examples/policies/support.cedar"),
    ),
];

fn write_config(
    dir: &Path,
    cluster: &Cluster,
    port: u16,
    key_hash: &str,
) -> anyhow::Result<PathBuf> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)
        .with_context(|| format!("cannot create {}", policies.display()))?;
    for (name, text) in EXAMPLE_POLICIES {
        let p = policies.join(name);
        if !p.exists() {
            std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        }
    }
    let path = dir.join("portcullis.toml");
    let text = format!(
        r#"# Written by `portcullis demo`. See docs/configuration.md.
[gateway]
data_dir = "."

[store]
durability = "default"

# Who may do what: the example policies (examples/policies in the repository).
[policy]
files = ["policies"]

[[listeners]]
name = "postgres"
protocol = "postgres"
bind = "127.0.0.1:{port}"
tls = {{ mode = "optional" }}

[[connections]]
name = "shop"
type = "postgres"
host = "{host}"
port = {pg_port}
database = "shop"
user = "{user}"
password_file = "target-password"
tags = {{ env = "demo" }}

[[agents]]
name = "demo-agent"
key_hash = "{key_hash}"
description = "created by portcullis demo: a read-only analyst"
groups = ["analysts"]

# What agents see of personal data (docs/masking.md). Every detector runs on every value;
# the column rules mask whole columns whatever their content looks like. The ledger and
# recordings never keep a raw value, whatever the profile.
{masking}"#,
        masking = seed::DEMO_MASKING,
        host = cluster.host(),
        pg_port = cluster.port(),
        user = cluster.superuser(),
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
