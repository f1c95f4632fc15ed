//! `portcullis grant create|list|revoke`: a person lets an agent act, for a reason, for a while.
//!
//! The CLI talks to the gateway's HTTP API as the person: their OIDC access token goes in
//! `--token` (or `PORTCULLIS_TOKEN`). With `--config`, the API address and the gateway's
//! certificate (the generated one, unless the first listener names its own) come from the
//! configuration file; otherwise give `--api` and, for a private certificate, `--ca`.

use crate::config;
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ApiArgs {
    /// The gateway's configuration (for the API address and certificate).
    #[arg(long, short, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    /// The API URL, e.g. https://gateway.example:6480 (default: from --config).
    #[arg(long, env = "PORTCULLIS_API")]
    api: Option<String>,
    /// PEM certificate to trust for the API (default: the gateway's, from --config).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Your OIDC access token: grants are issued in your name.
    #[arg(long, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum GrantCommand {
    /// Issue a grant and print the credential the agent uses (as its PostgreSQL password).
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// The agent allowed to act.
        #[arg(long)]
        agent: String,
        /// The one connection it may use.
        #[arg(long)]
        connection: String,
        /// Why: recorded on every event of every session under the grant.
        #[arg(long)]
        reason: String,
        /// Ticket or change-request URL.
        #[arg(long)]
        ticket: Option<String>,
        /// How long the grant lasts (`30m`, `2h`, …).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Command classes allowed (comma-separated, e.g. `select,update`); default: whatever
        /// the agent's policy allows. A grant never widens the policy.
        #[arg(long, value_delimiter = ',')]
        actions: Vec<String>,
    },
    /// List grants (active, expired, revoked) with their live sessions.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a grant: its credential stops working and its open sessions end at once.
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        /// Grant id (`grt_…`).
        id: String,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(a: &ApiArgs) -> anyhow::Result<Client> {
        let mut base = a.api.clone();
        let mut ca = a.ca.clone();
        if let Some(path) = &a.config {
            let loaded = config::load(path)?;
            if base.is_none() {
                base = crate::identity::api_url(&loaded);
                if base.is_none() {
                    bail!("{}: no [api] section: the gateway serves no HTTP API; add [api] bind = \"127.0.0.1:6480\"", path.display());
                }
            }
            if ca.is_none() {
                ca = Some(
                    loaded
                        .config
                        .listeners
                        .first()
                        .and_then(|l| l.tls.cert_file.clone())
                        .unwrap_or_else(|| loaded.data_dir.join("tls").join("server.crt")),
                );
            }
        }
        let base = base.ok_or_else(|| anyhow!("give --api URL or --config FILE"))?;
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = ca.filter(|_| base.starts_with("https:")) {
            let pem = std::fs::read(&ca)
                .with_context(|| format!("cannot read the API certificate {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        Ok(Client {
            http: b.build().context("HTTP client")?,
            base: base.trim_end_matches('/').to_string(),
            token: a.token.trim().to_string(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway API at {url}"))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .with_context(|| format!("{url}: HTTP {status} without a JSON answer"))?;
        if !status.is_success() {
            bail!(
                "{url}: HTTP {status}: {}",
                v.get("error").and_then(Value::as_str).unwrap_or("refused")
            );
        }
        Ok(v)
    }
}

fn when(secs: i64) -> String {
    portcullis_identity::jwt::show_time(secs)
}

pub fn run(cmd: GrantCommand) -> anyhow::Result<ExitCode> {
    let rt = crate::serve::runtime()?;
    rt.block_on(async move {
        match cmd {
            GrantCommand::Create {
                api,
                agent,
                connection,
                reason,
                ticket,
                ttl,
                actions,
            } => {
                let c = Client::new(&api)?;
                let v = c
                    .call(
                        reqwest::Method::POST,
                        "/v1/grants",
                        Some(json!({
                            "agent": agent, "connection": connection, "reason": reason,
                            "ticket": ticket, "ttl_secs": ttl.as_secs(), "actions": actions,
                        })),
                    )
                    .await?;
                if api.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(ExitCode::SUCCESS);
                }
                let g = &v["grant"];
                eprintln!(
                    "grant {} for agent {} on {} until {} (requested by {})",
                    g["id"].as_str().unwrap_or(""),
                    g["agent"].as_str().unwrap_or(""),
                    g["connection"].as_str().unwrap_or(""),
                    when(g["expires_at"].as_i64().unwrap_or(0)),
                    g["requester"].as_str().unwrap_or(""),
                );
                eprintln!("give the agent this credential; it logs in with user={agent} dbname={connection} sslmode=require and the credential as its password:");
                println!("{}", v["credential"].as_str().unwrap_or(""));
                Ok(ExitCode::SUCCESS)
            }
            GrantCommand::List { api } => {
                let c = Client::new(&api)?;
                let v = c.call(reqwest::Method::GET, "/v1/grants", None).await?;
                if api.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(ExitCode::SUCCESS);
                }
                let list = v["grants"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no grants");
                }
                for g in list {
                    println!(
                        "{}  {:<8} agent={} connection={} until={} by={} sessions={} actions={} reason={:?}{}",
                        g["id"].as_str().unwrap_or(""),
                        g["state"].as_str().unwrap_or(""),
                        g["agent"].as_str().unwrap_or(""),
                        g["connection"].as_str().unwrap_or(""),
                        when(g["expires_at"].as_i64().unwrap_or(0)),
                        g["requester"].as_str().unwrap_or(""),
                        g["live_sessions"].as_u64().unwrap_or(0),
                        g["actions"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "policy".into()),
                        g["reason"].as_str().unwrap_or(""),
                        g["ticket"]
                            .as_str()
                            .map(|t| format!(" ticket={t}"))
                            .unwrap_or_default(),
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            GrantCommand::Revoke { api, id } => {
                let c = Client::new(&api)?;
                let v = c
                    .call(reqwest::Method::POST, &format!("/v1/grants/{id}/revoke"), None)
                    .await?;
                if api.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "revoked {}; {} live session(s) ended",
                        v["revoked"].as_str().unwrap_or(&id),
                        v["sessions_ended"].as_u64().unwrap_or(0)
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
