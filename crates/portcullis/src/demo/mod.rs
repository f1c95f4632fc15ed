//! `portcullis demo`: the quickstart on the embedded default.
//!
//! Starts a throwaway PostgreSQL (the system's own binaries), seeds a sample `shop` database,
//! writes a configuration with one demo agent, and runs the gateway in front of it until
//! Ctrl-C. The agent's key is printed once; the target's password stays in a file the agent
//! never sees.
//!
//! The gateway does not log in as the superuser: the demo creates the role
//! [`GATEWAY_ROLE`] holding only what the demo agent's policies can ever allow (CONNECT on
//! `shop`, USAGE on its schema, SELECT on its two tables), so the database refuses what a
//! mistaken policy might let through. The superuser's password lives only in this process
//! (the cluster resets it at every start) and seeds the data and the role.

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

    // The superuser's password is new at every run and never written down: the cluster sets
    // it at start (also on a kept --data-dir), and only the seeding below uses it.
    let admin_password = portcullis_identity::generate_api_key();
    // The gateway role's password, in the file the configuration names (kept with --data-dir).
    let pw_file = dir.join("target-password");
    let gateway_password = if pw_file.exists() {
        let kept = std::fs::read_to_string(&pw_file)
            .with_context(|| format!("cannot read {}", pw_file.display()))?;
        let kept = kept.trim().to_string();
        if kept.is_empty() {
            return Err(anyhow!(
                "{} is empty; delete it and run the demo again to get a new password",
                pw_file.display()
            ));
        }
        kept
    } else {
        let fresh = portcullis_identity::generate_api_key();
        crate::tls::write_private(&pw_file, fresh.as_bytes())?;
        fresh
    };
    eprintln!(
        "starting a throwaway PostgreSQL from {} …",
        bins.bin_dir.display()
    );
    let cluster = Cluster::start_in(
        &bins,
        &dir.join("pg"),
        ClusterOptions {
            superuser_password: Some(admin_password.clone()),
            keep: args.data_dir.is_some(),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow!("{e}"))?;

    let rt = serve::runtime()?;
    let code = rt.block_on(async {
        let admin = connect_as_superuser(&cluster, &admin_password).await?;
        seed_database(&admin, args.customers).await?;
        create_gateway_role(&admin, &gateway_password).await?;
        drop(admin);
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
        println!(
            "The gateway logs in to PostgreSQL as \"{GATEWAY_ROLE}\", which may only read customers and orders (not the superuser)."
        );
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

/// The role the gateway logs in to the demo database as (never the superuser).
pub const GATEWAY_ROLE: &str = "portcullis_demo_gateway";

/// Connects to `shop` as the superuser, creating the database first when it is missing.
///
/// The session runs with `client_min_messages = warning`: the seeding script's
/// `DROP TABLE IF EXISTS` would otherwise send NOTICEs ("table … does not exist, skipping"),
/// which tokio-postgres logs at INFO on the demo's terminal. Warnings and errors still come
/// through (errors fail the seeding with their message).
async fn connect_as_superuser(
    cluster: &Cluster,
    password: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    let exists = cluster
        .psql(
            "postgres",
            "SELECT 1 FROM pg_database WHERE datname = 'shop'",
        )
        .map_err(|e| anyhow!("{e}"))?;
    if exists.trim() != "1" {
        cluster
            .create_database("shop")
            .map_err(|e| anyhow!("{e}"))?;
    }
    let (client, conn) = tokio_postgres::Config::new()
        .host(cluster.host())
        .port(cluster.port())
        .user(cluster.superuser())
        .password(password)
        .dbname("shop")
        .options("-c client_min_messages=warning")
        .connect(tokio_postgres::NoTls)
        .await
        .context("cannot connect to the demo database to seed it")?;
    tokio::spawn(conn);
    Ok(client)
}

/// Seeds `shop` unless its tables are there already (a kept --data-dir).
async fn seed_database(client: &tokio_postgres::Client, customers: usize) -> anyhow::Result<()> {
    let seeded: bool = client
        .query_one("SELECT to_regclass('public.orders') IS NOT NULL", &[])
        .await
        .context("cannot inspect the demo database")?
        .get(0);
    if seeded {
        return Ok(());
    }
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

/// Creates (or, on a kept --data-dir, updates) [`GATEWAY_ROLE`] with `password` and only the
/// privileges the demo agent's policies can use: the agent is a read-only analyst, so the
/// role may connect to `shop`, use its schema and SELECT from `customers` and `orders`;
/// nothing else (no sequences, no writes; PUBLIC loses CONNECT on the other databases and
/// CREATE on the schema).
async fn create_gateway_role(
    client: &tokio_postgres::Client,
    password: &str,
) -> anyhow::Result<()> {
    let role = GATEWAY_ROLE;
    let sql = format!(
        "BEGIN;
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
    CREATE ROLE {role};
  END IF;
END$$;
ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD {password};
REVOKE ALL ON DATABASE shop FROM PUBLIC;
REVOKE ALL ON DATABASE shop FROM {role};
GRANT CONNECT ON DATABASE shop TO {role};
REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM {role};
GRANT USAGE ON SCHEMA public TO {role};
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role};
GRANT SELECT ON customers, orders TO {role};
COMMIT;",
        password = seed::literal(password),
    );
    client
        .batch_execute(&sql)
        .await
        .with_context(|| format!("cannot create the gateway's database role {role}"))?;
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

# The gateway logs in as a role that may only read the two demo tables (not the superuser):
# the database itself refuses what the policies should never have allowed.
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
        user = GATEWAY_ROLE,
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
