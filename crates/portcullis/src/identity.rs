//! Building the authenticator from the configuration: OIDC issuers, SAML IdPs, the gateway's
//! token key, and the task grants replayed from the ledger.

use crate::config::Loaded;
use anyhow::{anyhow, Context};
use portcullis_core::EventData;
use portcullis_identity::{Authenticator, TokenSigner};
use std::collections::HashMap;

/// The authenticator for `serve`, with every grant the ledger holds back in force.
pub fn authenticator(loaded: &Loaded) -> anyhow::Result<Authenticator> {
    let cfg = &loaded.config;
    let key_path = cfg
        .identity
        .tokens
        .signing_key_file
        .clone()
        .unwrap_or_else(|| loaded.data_dir.join("keys").join("token-signing.pem"));
    let signer = TokenSigner::load_or_create(&key_path, &cfg.identity.tokens.issuer)
        .map_err(|e| anyhow!("{e}"))?;
    let mut certs = Vec::new();
    for idp in &cfg.identity.saml {
        let pem = std::fs::read_to_string(&idp.certificate_file).with_context(|| {
            format!(
                "{}: identity.saml {:?}: cannot read certificate_file {}",
                loaded.path.display(),
                idp.name,
                idp.certificate_file.display()
            )
        })?;
        certs.push((idp.name.clone(), pem));
    }
    let groups: HashMap<String, Vec<String>> = cfg
        .agents
        .iter()
        .map(|a| (a.name.clone(), a.groups.clone()))
        .collect();
    let api_url = api_url(loaded);
    let authn = Authenticator::new(
        cfg.identity.clone(),
        signer,
        &certs,
        groups,
        api_url.as_deref(),
    )
    .map_err(|e| anyhow!("{}: {e}", loaded.path.display()))?;
    replay_grants(loaded, &authn)?;
    Ok(authn)
}

/// The URL clients reach the API at.
pub fn api_url(loaded: &Loaded) -> Option<String> {
    let api = loaded.config.api.as_ref()?;
    Some(
        api.public_url.clone().unwrap_or_else(|| {
            format!("{}://{}", if api.tls { "https" } else { "http" }, api.bind)
        }),
    )
}

/// Grants are ledger events: put every grant created and not revoked back in force.
fn replay_grants(loaded: &Loaded, authn: &Authenticator) -> anyhow::Result<()> {
    let postgres = crate::config::store_url(&loaded.config)?.is_some();
    if !postgres && !loaded.ledger_path.exists() {
        return Ok(());
    }
    // (The gateway opened the store, and created its tables, before this runs.)
    let reader = crate::config::open_reader(&loaded.config, &loaded.ledger_path)
        .map_err(|e| anyhow!("reading grants from the ledger: {e}"))?;
    let mut events = reader
        .of_kind("grant_created")
        .map_err(|e| anyhow!("reading grants from the ledger: {e}"))?;
    events.extend(
        reader
            .of_kind("grant_revoked")
            .map_err(|e| anyhow!("reading grants from the ledger: {e}"))?,
    );
    events.sort_by_key(|e| e.seq);
    let mut n = 0;
    for e in events {
        match e.parse() {
            Ok(EventData::GrantCreated { grant, .. }) => {
                authn.grants.insert(grant);
                n += 1;
            }
            Ok(EventData::GrantRevoked { id, by, .. }) => {
                authn.grants.replay_revoked(&id, &by, e.ts_us / 1_000_000)
            }
            _ => {}
        }
    }
    if n > 0 {
        tracing::info!("{n} task grant(s) replayed from the ledger");
    }
    Ok(())
}
