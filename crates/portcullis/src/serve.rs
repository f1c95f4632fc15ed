//! `portcullis serve`: open the ledger, bind the listeners, run until Ctrl-C or SIGTERM.

use crate::config::{self, Loaded};
use anyhow::{anyhow, Context};
use portcullis_core::config::Protocol;
use portcullis_core::NewEvent;
use portcullis_identity::AgentRegistry;
use portcullis_ledger::{CheckpointOptions, CheckpointSigner, Ledger, LedgerOptions};
use portcullis_policy::Gate;
use portcullis_proto_postgres::{tls::upstream_connector, ListenerSettings, PgGateway, Target};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    crate::init_tracing();
    let loaded = config::load(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if loaded.policies.is_empty() {
        tracing::warn!("no policy files in {}: every statement will be denied; add [policy] files = [...] (see examples/policies)", path.display());
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let running = start(&loaded).await?;
        for (name, addr) in &running.addrs {
            tracing::info!("listener {name:?} accepting PostgreSQL clients on {addr}");
        }
        if let Some(addr) = running.api_addr {
            tracing::info!("HTTP API (token endpoint, grants) on {addr}");
        }
        tracing::info!("ledger: {}", running.ledger.path().display());
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A started gateway.
pub struct Running {
    pub addrs: Vec<(String, SocketAddr)>,
    /// Where the HTTP API (token endpoint, grants) listens, when configured.
    pub api_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ledger: Ledger,
    reloader: tokio::task::JoinHandle<()>,
    retention: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Ends every session, drains the ledger, syncs it.
    pub async fn stop(self) {
        self.reloader.abort();
        self.retention.abort();
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let ledger = self.ledger.clone();
        let _ = tokio::task::spawn_blocking(move || ledger.close()).await;
    }
}

pub async fn start(loaded: &Loaded) -> anyhow::Result<Running> {
    let cfg = &loaded.config;
    std::fs::create_dir_all(&loaded.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            loaded.data_dir.display()
        )
    })?;
    let ledger = Ledger::open(ledger_options(cfg, &loaded.data_dir, &loaded.ledger_path)?)
        .map_err(|e| anyhow!("{e}"))?;
    let agents = Arc::new(
        AgentRegistry::new(
            cfg.agents
                .iter()
                .filter_map(|a| Some((a.name.as_str(), a.key_hash.as_deref()?))),
        )
        .map_err(|e| anyhow!("{e}"))?,
    );
    let authn = Arc::new(crate::identity::authenticator(loaded)?);
    let gate = Arc::new(Gate::new(loaded.gate_state(), cfg.policy.cache_entries));
    // The rules in force are part of the record: before any statement is decided.
    ledger
        .append(vec![NewEvent::new(
            "gateway",
            loaded.snapshot_event("start"),
        )])
        .await
        .map_err(|e| anyhow!("cannot record the policy snapshot: {e}"))?;
    let targets = targets(loaded)?;
    // One catalog reading per connection, shared by every listener's sessions.
    let catalogs: HashMap<String, Arc<portcullis_proto_postgres::catalog::CatalogCache>> = targets
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                Arc::new(portcullis_proto_postgres::catalog::CatalogCache::new(
                    t.clone(),
                )),
            )
        })
        .collect();
    let recordings = crate::sessions::store(cfg, &loaded.data_dir)?;
    if recordings.is_some()
        && cfg.store.kind == portcullis_core::config::StoreKind::Postgres
        && cfg.recordings.store == portcullis_core::config::RecordingStoreKind::Local
    {
        tracing::warn!(
            "the ledger is shared (store.kind = \"postgres\") but recordings go to a local folder: \
             replay and retention on another gateway will not find this gateway's chunks; use \
             [recordings] store = \"s3\" when several gateways share the store"
        );
    }
    let (shutdown, rx) = watch::channel(false);
    let cancels = portcullis_proto_postgres::cancel::CancelRegistry::default();
    let mut tasks = Vec::new();
    let mut addrs = Vec::new();
    for l in &cfg.listeners {
        match l.protocol {
            Protocol::Postgres => {}
        }
        let tls = match l.tls.mode {
            portcullis_core::config::ListenerTlsMode::Disabled => None,
            _ => Some(crate::tls::acceptor(&l.tls, &loaded.data_dir)?),
        };
        let listener = tokio::net::TcpListener::bind(&l.bind)
            .await
            .with_context(|| format!("listener {:?}: cannot bind {}", l.name, l.bind))?;
        addrs.push((l.name.clone(), listener.local_addr()?));
        let gw = Arc::new(PgGateway {
            settings: ListenerSettings {
                name: l.name.clone(),
                tls_mode: l.tls.mode,
                tls,
                client_auth: l.client_auth,
                max_message_bytes: l.max_message_bytes,
                startup_timeout: Duration::from_millis(l.startup_timeout_ms),
            },
            ledger: ledger.clone(),
            agents: agents.clone(),
            authn: Some(authn.clone()),
            gate: gate.clone(),
            targets: targets.clone(),
            catalogs: catalogs.clone(),
            cancels: cancels.clone(),
            recordings: recordings.clone(),
            masker: loaded.masker.clone(),
        });
        tasks.push(tokio::spawn(gw.serve(listener, rx.clone())));
    }
    let mut api_addr = None;
    if let Some(api) = &cfg.api {
        let listener = portcullis_web::bind(&api.bind)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        api_addr = Some(listener.local_addr()?);
        let tls = if api.tls {
            let listener_tls = cfg
                .listeners
                .first()
                .map(|l| l.tls.clone())
                .unwrap_or_default();
            Some(crate::tls::acceptor(&listener_tls, &loaded.data_dir)?)
        } else {
            None
        };
        let app = portcullis_web::router(Arc::new(portcullis_web::ApiState {
            authn: authn.clone(),
            ledger: ledger.clone(),
            connections: cfg.connections.iter().map(|c| c.name.clone()).collect(),
        }));
        tasks.push(tokio::spawn(portcullis_web::serve(
            listener,
            tls,
            app,
            rx.clone(),
        )));
    }
    let retention = tokio::spawn(crate::retention::schedule(
        loaded.path.clone(),
        cfg.clone(),
        loaded.ledger_path.clone(),
        ledger.clone(),
    ));
    let reloader = tokio::spawn(crate::reload::watch(
        loaded.path.clone(),
        cfg.policy.watch,
        loaded.policies.hash().to_string(),
        gate.clone(),
        ledger.clone(),
    ));
    Ok(Running {
        addrs,
        api_addr,
        shutdown,
        tasks,
        ledger,
        reloader,
        retention,
    })
}

/// How `serve` (and `retention run`) open the ledger: durability, checkpoints (creating the
/// signing key on first use), sealing.
pub fn ledger_options(
    cfg: &portcullis_core::config::Config,
    data_dir: &Path,
    ledger_path: &Path,
) -> anyhow::Result<LedgerOptions> {
    let checkpoints = if cfg.store.checkpoints.enabled {
        let (key, mirror) = config::checkpoint_paths(cfg, data_dir);
        let signer =
            CheckpointSigner::load_or_create(&key, cfg.store.checkpoints.origin.as_deref())
                .map_err(|e| anyhow!("{e}"))?;
        Some(CheckpointOptions {
            signer: Arc::new(signer),
            every_events: cfg.store.checkpoints.every_events.max(1),
            every: Duration::from_secs(cfg.store.checkpoints.every_secs.max(1)),
            mirror,
            mirror_bucket: config::mirror_bucket(cfg)?,
        })
    } else {
        None
    };
    let base = match config::store_url(cfg)? {
        Some(url) => LedgerOptions::postgres(&url),
        None => LedgerOptions::new(ledger_path),
    };
    Ok(LedgerOptions {
        durability: cfg.store.durability,
        sync_interval: Duration::from_millis(cfg.store.sync_interval_ms.max(1)),
        checkpoints,
        seal: true,
        ..base
    })
}

pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// The configured connections, ready to dial (with their passwords and TLS settings).
pub fn targets(loaded: &Loaded) -> anyhow::Result<HashMap<String, Arc<Target>>> {
    let cfg = &loaded.config;
    let mut targets = HashMap::new();
    for c in &cfg.connections {
        let tls = upstream_connector(c.tls, c.ca_file.as_deref())
            .map_err(|e| anyhow!("connection {:?}: {e}", c.name))?;
        targets.insert(
            c.name.clone(),
            Arc::new(Target {
                name: c.name.clone(),
                host: c.host.clone(),
                port: c.port,
                database: c.database.clone(),
                user: c.user.clone(),
                password: loaded.passwords.get(&c.name).cloned().flatten(),
                tls_mode: c.tls,
                tls,
                connect_timeout: Duration::from_millis(c.connect_timeout_ms),
                auth: c.auth.clone(),
                recording: c.recording,
                masking_profile: c.masking_profile.clone(),
                read_only_sessions: c.read_only_sessions,
            }),
        );
    }
    Ok(targets)
}
