//! Reloading policies while the gateway runs: on SIGHUP, and when the configuration or a
//! policy file changes (content checked every second when `policy.watch` is on).
//!
//! A new version is loaded and validated completely before it replaces the old one; every
//! version put in force is a `policy_snapshot` ledger event, every refused one a
//! `policy_rejected` event, and the old version keeps running. What reloads: policies,
//! agents' groups, connections' tags. Listeners, connections, agents and their keys are read
//! at start only (a change to them is logged as needing a restart).

use crate::config;
use portcullis_core::{EventData, NewEvent};
use portcullis_ledger::Ledger;
use portcullis_policy::Gate;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Runs until aborted.
pub async fn watch(path: PathBuf, poll: bool, hash: String, gate: Arc<Gate>, ledger: Ledger) {
    let mut kept_hash = hash;
    let mut last_seen = fingerprint(&path).await;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let trigger = tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick(), if poll => "file change",
        };
        #[cfg(not(unix))]
        let trigger = {
            tick.tick().await;
            "file change"
        };
        let now = fingerprint(&path).await;
        if trigger == "file change" && now == last_seen {
            continue;
        }
        last_seen = now;
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&p)).await;
        let event = match loaded {
            Ok(Ok(l)) => {
                let new_hash = l.policies.hash().to_string();
                gate.replace(l.gate_state());
                tracing::info!(
                    "{trigger}: policies reloaded from {} ({} policies, snapshot {})",
                    path.display(),
                    l.policies.len(),
                    &new_hash[..16]
                );
                kept_hash = new_hash;
                l.snapshot_event(trigger)
            }
            Ok(Err(e)) => {
                tracing::error!("{trigger}: the new configuration is refused, the previous one stays in force: {e:#}");
                EventData::PolicyRejected {
                    trigger: trigger.into(),
                    error: format!("{e:#}"),
                    kept: kept_hash.clone(),
                }
            }
            Err(e) => {
                tracing::error!("{trigger}: reload failed: {e}");
                continue;
            }
        };
        if let Err(e) = ledger.append(vec![NewEvent::new("gateway", event)]).await {
            tracing::error!("cannot record the policy reload in the ledger: {e}");
        }
    }
}

/// Hash of the configuration's text and of every policy file it names (missing files count
/// as changes too, so a broken edit is reported).
async fn fingerprint(path: &Path) -> String {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        let text = std::fs::read(&path).unwrap_or_default();
        all.extend_from_slice(&text);
        if let Ok((cfg, _, _)) = config::parse(&path) {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if let Ok(files) = config::policy_files(&cfg, &base, "") {
                for f in files {
                    all.extend_from_slice(f.display().to_string().as_bytes());
                    all.extend_from_slice(&std::fs::read(&f).unwrap_or_default());
                }
            }
        }
        config::sha256_hex(&all)
    })
    .await
    .unwrap_or_default()
}
