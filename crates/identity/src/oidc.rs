//! OpenID Connect issuers: JWT access tokens checked against the issuer's published keys.
//!
//! Keys come from the issuer's JWKS (found through discovery unless `jwks_uri` is set) and
//! are cached. A token whose `kid` is not in the cache triggers one refetch — that is how a key
//! rotation at the provider is picked up without a restart — but at most once per
//! `jwks_min_refresh_secs`, so a stream of tokens with made-up `kid`s cannot turn the gateway
//! into a load generator against the provider. Concurrent misses share one fetch.
//!
//! The algorithm must be in the issuer's allowed list *and* match the key's type (an RSA key
//! only verifies RS256, an EC P-256 key only ES256, an Ed25519 key only EdDSA), so the
//! token's header cannot pick how its own signature is checked.
//!
//! Keys are fetched over HTTPS (or plain http on loopback, or with `allow_http`), trusting the
//! issuer's `ca_file` besides the system's roots: see [`crate::idp_http`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_core::config::OidcIssuerConfig;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::idp_http::{check_runtime_url, error_chain};
use crate::jwt::{self, rejected, Claims, Unverified};
use crate::IdentityError;

/// Signature algorithms a JWT from an identity provider may use.
const SUPPORTED: [&str; 3] = ["RS256", "ES256", "EdDSA"];

struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

struct KeyCache {
    keys: HashMap<String, Key>,
    /// Keys without a `kid`, usable only when the token has none either.
    anonymous: Vec<Key>,
    fetched: Option<Instant>,
}

/// One configured issuer with its key cache.
pub struct OidcIssuer {
    pub config: OidcIssuerConfig,
    http: reqwest::Client,
    cache: RwLock<KeyCache>,
    /// Held while fetching; holds when the last fetch failed and why, so that an issuer that
    /// is down is asked at most once per [`FAILED_FETCH_BACKOFF`] (not once per login).
    fetching: Mutex<Option<(Instant, String)>>,
    allowed: Vec<Algorithm>,
}

/// After a failed JWKS fetch, logins that need the issuer's keys fail at once with the same
/// reason for this long instead of each asking the issuer again.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(2);

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: Claims,
    pub issuer: String,
}

impl VerifiedToken {
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
    pub fn jti(&self) -> Option<String> {
        self.claims
            .get("jti")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
    pub fn exp(&self) -> Option<i64> {
        self.claims.get("exp").and_then(Value::as_i64)
    }
}

fn parse_alg(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// The one algorithm a JWK can verify, from its key type (and `alg`, when it states one).
fn key_alg(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match jwk.common.key_algorithm.map(|a| format!("{a:?}")) {
        Some(stated) if stated != format!("{by_type:?}") => None,
        _ => Some(by_type),
    }
}

impl OidcIssuer {
    /// An issuer fetching its keys with `http` (see [`crate::idp_http::http_client`]). Its
    /// URLs must pass [`crate::idp_http::check_transport`].
    pub fn new(config: OidcIssuerConfig, http: reqwest::Client) -> Result<Self, IdentityError> {
        crate::idp_http::check_transport(&config)?;
        let mut allowed = Vec::new();
        for a in &config.algorithms {
            match parse_alg(a) {
                Some(alg) => allowed.push(alg),
                None => {
                    return Err(IdentityError::Setup {
                        what: format!("identity.oidc {:?}: algorithms", config.name),
                        reason: format!(
                            "{a:?} is not accepted; use a subset of {SUPPORTED:?} (HMAC and none never are)"
                        ),
                    })
                }
            }
        }
        if config.audiences.is_empty() {
            return Err(IdentityError::Setup {
                what: format!("identity.oidc {:?}: audiences", config.name),
                reason: "at least one audience is required, so that tokens minted for another service are refused".into(),
            });
        }
        Ok(OidcIssuer {
            config,
            http,
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                anonymous: Vec::new(),
                fetched: None,
            }),
            fetching: Mutex::new(None),
            allowed,
        })
    }

    /// Verifies a token already peeked at (its `iss` names this issuer).
    pub async fn verify(
        &self,
        token: &str,
        peeked: &Unverified,
        now: i64,
    ) -> Result<VerifiedToken, IdentityError> {
        let Some(alg) = parse_alg(&peeked.alg).filter(|a| self.allowed.contains(a)) else {
            return Err(rejected(format!(
                "alg {:?} is not accepted for issuer {:?} (accepted: {:?})",
                peeked.alg, self.config.issuer, self.config.algorithms
            )));
        };
        let claims = self.check_signature(token, peeked, alg).await?;
        jwt::check_time_and_audience(
            &claims,
            &self.config.issuer,
            &self.config.audiences,
            self.config.leeway_secs as i64,
            now,
        )?;
        if claims.get("sub").and_then(Value::as_str).is_none() {
            return Err(rejected("token has no \"sub\" claim"));
        }
        Ok(VerifiedToken {
            claims,
            issuer: self.config.issuer.clone(),
        })
    }

    async fn check_signature(
        &self,
        token: &str,
        peeked: &Unverified,
        alg: Algorithm,
    ) -> Result<Claims, IdentityError> {
        if self.cache.read().await.fetched.is_none() {
            self.refresh(true).await?;
        }
        for attempt in 0..2 {
            {
                let cache = self.cache.read().await;
                let key = match &peeked.kid {
                    Some(kid) => cache.keys.get(kid),
                    None if cache.anonymous.len() + cache.keys.len() == 1 => cache
                        .anonymous
                        .first()
                        .or_else(|| cache.keys.values().next()),
                    None => {
                        return Err(rejected(
                            "token has no \"kid\" and the issuer publishes several keys",
                        ))
                    }
                };
                if let Some(key) = key {
                    if key.alg != alg {
                        return Err(rejected(format!(
                            "alg {:?} does not match the key {:?} ({:?})",
                            peeked.alg,
                            peeked.kid.as_deref().unwrap_or(""),
                            key.alg
                        )));
                    }
                    return verify_with(token, &key.key, alg);
                }
            }
            if attempt == 0 && !self.refresh(false).await? {
                break;
            }
        }
        Err(rejected(format!(
            "signing key {:?} is not published by issuer {:?} (its JWKS was refetched at most {} s ago)",
            peeked.kid.as_deref().unwrap_or(""),
            self.config.issuer,
            self.config.jwks_min_refresh_secs
        )))
    }

    /// Refetches the JWKS unless one was fetched within the minimum interval (`first`: only
    /// if none was ever fetched). Returns whether the cache is worth looking at again.
    async fn refresh(&self, first: bool) -> Result<bool, IdentityError> {
        let mut last_failure = self.fetching.lock().await;
        let min = Duration::from_secs(self.config.jwks_min_refresh_secs);
        if let Some(at) = self.cache.read().await.fetched {
            if first || at.elapsed() < min {
                // Fetched by someone else meanwhile, or too recently to fetch again.
                return Ok(true);
            }
        }
        if let Some((at, reason)) = last_failure.as_ref() {
            if at.elapsed() < FAILED_FETCH_BACKOFF.min(min.max(Duration::from_millis(1))) {
                return Err(IdentityError::IssuerUnavailable {
                    issuer: self.config.issuer.clone(),
                    reason: format!(
                        "{reason} (a fetch {} ms ago failed; asked again at most every {} s)",
                        at.elapsed().as_millis(),
                        FAILED_FETCH_BACKOFF.as_secs()
                    ),
                });
            }
        }
        let set = match self.fetch_jwks().await {
            Ok(set) => {
                *last_failure = None;
                set
            }
            Err(e) => {
                let reason = match &e {
                    IdentityError::IssuerUnavailable { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                *last_failure = Some((Instant::now(), reason));
                return Err(e);
            }
        };
        let mut keys = HashMap::new();
        let mut anonymous = Vec::new();
        for jwk in &set.keys {
            let Some(alg) = key_alg(jwk) else { continue };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.insert(kid.clone(), Key { alg, key });
                }
                None => anonymous.push(Key { alg, key }),
            }
        }
        tracing::info!(issuer = %self.config.issuer, keys = keys.len() + anonymous.len(), "fetched JWKS");
        *self.cache.write().await = KeyCache {
            keys,
            anonymous,
            fetched: Some(Instant::now()),
        };
        Ok(true)
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, IdentityError> {
        let unavailable = |reason: String| IdentityError::IssuerUnavailable {
            issuer: self.config.issuer.clone(),
            reason,
        };
        let jwks_uri = match &self.config.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = self.config.discovery_url.clone().unwrap_or_else(|| {
                    format!(
                        "{}/.well-known/openid-configuration",
                        self.config.issuer.trim_end_matches('/')
                    )
                });
                let doc: Value = self.get_json(&url).await.map_err(&unavailable)?;
                if doc.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
                    return Err(unavailable(format!(
                        "discovery document {url} names issuer {:?}, not the configured one",
                        doc.get("issuer")
                    )));
                }
                let jwks_uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        unavailable(format!("discovery document {url} has no jwks_uri"))
                    })?
                    .to_string();
                check_runtime_url(&self.config, &jwks_uri).map_err(|e| {
                    unavailable(format!("discovery document {url} names jwks_uri: {e}"))
                })?;
                jwks_uri
            }
        };
        let v: Value = self.get_json(&jwks_uri).await.map_err(&unavailable)?;
        // Parse key by key, so one key of a type we do not know does not hide the others.
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| unavailable(format!("{jwks_uri} is not a JWKS (no \"keys\")")))?
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect();
        Ok(JwkSet { keys })
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e.without_url())))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        resp.json()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e.without_url())))
    }
}

/// Checks the signature only; claims are checked by the caller with its own messages.
pub(crate) fn verify_with(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<Claims, IdentityError> {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Claims>(token.trim(), key, &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => rejected(
                "signature does not verify (the token was altered or signed by another key)",
            ),
            other => rejected(format!("signature check failed: {other:?}")),
        })
}

#[cfg(test)]
mod backoff_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// An issuer that is down is asked once per backoff window, not once per login.
    #[tokio::test]
    async fn failed_fetches_are_rate_limited() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(conn); // close at once: every fetch fails
            }
        });
        let config: OidcIssuerConfig = serde_json::from_value(serde_json::json!({
            "name": "down",
            "issuer": format!("http://127.0.0.1:{port}"),
            "jwks_uri": format!("http://127.0.0.1:{port}/jwks"),
            "audiences": ["portcullis"],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let issuer =
            OidcIssuer::new(config, reqwest::Client::new()).unwrap_or_else(|e| panic!("{e}"));
        let mut last = String::new();
        for _ in 0..5 {
            last = match issuer.refresh(false).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("a closed connection cannot give keys"),
            };
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "one fetch for five attempts"
        );
        assert!(last.contains("asked again at most every 2 s"), "{last}");
        tokio::time::sleep(FAILED_FETCH_BACKOFF + Duration::from_millis(200)).await;
        let _ = issuer.refresh(false).await;
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "asked again after the backoff"
        );
    }
}
