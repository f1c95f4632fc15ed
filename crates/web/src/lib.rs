//! The gateway's HTTP API.
//!
//! * `POST /oauth/token` — the OAuth token endpoint. Two grant types:
//!   - RFC 8693 token exchange (`urn:ietf:params:oauth:grant-type:token-exchange`): an agent
//!     presents a person's token as `subject_token` and its own as `actor_token`, and gets a
//!     short-lived gateway token whose `sub` is the person and whose `act` is the agent.
//!   - RFC 7522 SAML 2.0 bearer (`urn:ietf:params:oauth:grant-type:saml2-bearer`): a signed
//!     assertion from a configured IdP becomes a gateway token for the service principal.
//!     Errors follow RFC 6749 §5.2 (`{"error": "invalid_grant", "error_description": …}`).
//!     A `subject_token` that is not a person's (an agent's or a client's own token, or the
//!     same principal as the actor) is refused with 403 and `invalid_request` (RFC 8693
//!     §2.2.2): policy would otherwise take the agent for its own human requester.
//! * `GET /.well-known/jwks.json` — the public key of gateway tokens.
//! * `POST /v1/grants`, `GET /v1/grants`, `POST /v1/grants/{id}/revoke` — task grants, as the
//!   person holding the `Authorization: Bearer` OIDC token; an agent's token gets 403.
//!
//! Every token issued or refused and every grant created or revoked is a ledger event, written
//! before the answer leaves: a credential the ledger does not know about is never handed out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Extension, Form, Json, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use portcullis_core::{EventData, NewEvent};
use portcullis_identity::jwt::now_secs;
use portcullis_identity::{Authenticator, GrantRequest, IdentityError};
use portcullis_ledger::Ledger;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const GRANT_TYPE_SAML2_BEARER: &str = "urn:ietf:params:oauth:grant-type:saml2-bearer";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:jwt",
    TOKEN_TYPE_ACCESS_TOKEN,
    "urn:ietf:params:oauth:token-type:id_token",
];

/// The one error type of this crate: failures to start serving.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("API listener {bind}: {reason}")]
    Bind { bind: String, reason: String },
}

/// What the handlers need.
pub struct ApiState {
    pub authn: Arc<Authenticator>,
    pub ledger: Ledger,
    /// Connection names from the configuration (a grant must name one).
    pub connections: Vec<String>,
}

#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// The routes, with their state.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/grants", post(create_grant).get(list_grants))
        .route("/v1/grants/{id}/revoke", post(revoke_grant))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// Serves the API on `listener` (with TLS when `tls` is given) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("API accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let svc = TowerToHyperService::new(app.clone().layer(Extension(Peer(peer))));
        let tls = tls.clone();
        tokio::spawn(async move {
            let http = hyper::server::conn::http1::Builder::new();
            let result = match tls {
                Some(acceptor) => match tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(s)) => http.serve_connection(TokioIo::new(s), svc).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "API TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                },
                None => http.serve_connection(TokioIo::new(tcp), svc).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "API connection ended: {e}");
            }
        });
    }
}

/// Binds the API address, with a message that names it.
pub async fn bind(addr: &str) -> Result<TcpListener, WebError> {
    TcpListener::bind(addr).await.map_err(|e| WebError::Bind {
        bind: addr.to_string(),
        reason: format!("{e}; pick a free address for [api] bind"),
    })
}

/// An OAuth error response (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description.into() })),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
    requested_token_type: Option<String>,
    assertion: Option<String>,
}

async fn record(state: &ApiState, data: EventData) -> Result<(), Response> {
    state
        .ledger
        .append(vec![NewEvent::new("", data)])
        .await
        .map(|_| ())
        .map_err(|e| {
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("the ledger cannot record this request, so it was not carried out: {e}"),
            )
        })
}

async fn refuse(
    state: &ApiState,
    peer: Peer,
    endpoint: &str,
    status: StatusCode,
    error: &str,
    reason: String,
) -> Response {
    let ev = EventData::TokenRefused {
        endpoint: endpoint.to_string(),
        client_addr: peer.0.to_string(),
        reason: reason.clone(),
    };
    if let Err(r) = record(state, ev).await {
        return r;
    }
    oauth_error(status, error, reason)
}

async fn token(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let endpoint = "/oauth/token";
    let Form(f) = match form {
        Ok(f) => f,
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("expected an application/x-www-form-urlencoded body: {e}"),
            )
        }
    };
    let now = now_secs();
    let (grant_type, issued) = match f.grant_type.as_deref() {
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => {
            let ep = format!("{endpoint} token-exchange");
            let (Some(subject), Some(actor)) = (&f.subject_token, &f.actor_token) else {
                return refuse(&state, peer, &ep, StatusCode::BAD_REQUEST, "invalid_request",
                    "token exchange needs subject_token (the person's token) and actor_token (the agent's own token)".into()).await;
            };
            for (name, ty) in [
                ("subject_token_type", &f.subject_token_type),
                ("actor_token_type", &f.actor_token_type),
            ] {
                match ty.as_deref() {
                    Some(t) if JWT_TOKEN_TYPES.contains(&t) => {}
                    other => {
                        return refuse(
                            &state,
                            peer,
                            &ep,
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            format!("{name} {other:?} is not supported; use one of {JWT_TOKEN_TYPES:?}"),
                        )
                        .await
                    }
                }
            }
            if let Some(t) = f.requested_token_type.as_deref() {
                if t != TOKEN_TYPE_ACCESS_TOKEN && t != JWT_TOKEN_TYPES[0] {
                    return refuse(&state, peer, &ep, StatusCode::BAD_REQUEST, "invalid_request",
                        format!("requested_token_type {t:?} is not offered; the gateway issues {TOKEN_TYPE_ACCESS_TOKEN}")).await;
                }
            }
            match state.authn.exchange(subject, actor, now).await {
                Ok(i) => ("token-exchange", i),
                // Valid tokens, unacceptable roles: RFC 8693 §2.2.2 says invalid_request.
                Err(e @ IdentityError::NotAPerson { .. }) => {
                    return refuse(
                        &state,
                        peer,
                        &ep,
                        StatusCode::FORBIDDEN,
                        "invalid_request",
                        e.to_string(),
                    )
                    .await
                }
                // The tokens could not be checked (the provider's keys could not be fetched):
                // not the client's fault, worth a retry.
                Err(e @ IdentityError::IssuerUnavailable { .. }) => {
                    return refuse(
                        &state,
                        peer,
                        &ep,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        e.to_string(),
                    )
                    .await
                }
                Err(e) => {
                    return refuse(
                        &state,
                        peer,
                        &ep,
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        e.to_string(),
                    )
                    .await
                }
            }
        }
        Some(GRANT_TYPE_SAML2_BEARER) => {
            let ep = format!("{endpoint} saml2-bearer");
            let Some(assertion) = &f.assertion else {
                return refuse(
                    &state,
                    peer,
                    &ep,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the SAML bearer grant needs `assertion` (base64url of the signed assertion)"
                        .into(),
                )
                .await;
            };
            match state.authn.saml_bearer(assertion, now) {
                Ok(i) => ("saml2-bearer", i),
                Err(e) => {
                    return refuse(
                        &state,
                        peer,
                        &ep,
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        e.to_string(),
                    )
                    .await
                }
            }
        }
        other => {
            return refuse(
                &state,
                peer,
                endpoint,
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {other:?} is not offered; use {GRANT_TYPE_TOKEN_EXCHANGE} or {GRANT_TYPE_SAML2_BEARER}"),
            )
            .await
        }
    };
    let ev = EventData::TokenIssued {
        grant_type: grant_type.into(),
        principal: issued.principal.clone(),
        client_addr: peer.0.to_string(),
    };
    if let Err(r) = record(&state, ev).await {
        return r;
    }
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", "no-store".parse().expect("static header"));
    (
        StatusCode::OK,
        headers,
        Json(json!({
            "access_token": issued.token,
            "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        })),
    )
        .into_response()
}

async fn jwks(State(state): State<Arc<ApiState>>) -> Response {
    Json(state.authn.signer().jwks()).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn api_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Debug, Deserialize)]
struct GrantBody {
    agent: String,
    connection: String,
    reason: String,
    #[serde(default)]
    ticket: Option<String>,
    ttl_secs: u64,
    #[serde(default)]
    actions: Vec<String>,
}

async fn refuse_grant(
    state: &ApiState,
    peer: Peer,
    endpoint: &str,
    status: StatusCode,
    reason: String,
) -> Response {
    let ev = EventData::TokenRefused {
        endpoint: endpoint.into(),
        client_addr: peer.0.to_string(),
        reason: reason.clone(),
    };
    if let Err(r) = record(state, ev).await {
        return r;
    }
    api_error(status, reason)
}

fn grant_status(e: &IdentityError) -> StatusCode {
    match e {
        IdentityError::NotAPerson { .. } => StatusCode::FORBIDDEN,
        IdentityError::GrantRefused { reason } if reason.starts_with("your token") => {
            StatusCode::UNAUTHORIZED
        }
        IdentityError::GrantRefused { reason } if reason.contains("none of the groups") => {
            StatusCode::FORBIDDEN
        }
        IdentityError::GrantRefused { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNAUTHORIZED,
    }
}

async fn create_grant(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Json<GrantBody>, JsonRejection>,
) -> Response {
    let ep = "/v1/grants";
    let Some(token) = bearer(&headers) else {
        return refuse_grant(&state, peer, ep, StatusCode::UNAUTHORIZED,
            "no Authorization: Bearer token: grants are issued by a person, authenticated with their OIDC token".into()).await;
    };
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, format!("bad grant request: {e}")),
    };
    if !state.connections.contains(&b.connection) {
        return refuse_grant(
            &state,
            peer,
            ep,
            StatusCode::BAD_REQUEST,
            format!(
                "connection {:?} does not exist; configured: {}",
                b.connection,
                state.connections.join(", ")
            ),
        )
        .await;
    }
    let mut actions = Vec::new();
    for a in &b.actions {
        match portcullis_policy::Action::from_name(a.trim()) {
            Some(act) => actions.push(act.name().to_string()),
            None => {
                return refuse_grant(
                    &state,
                    peer,
                    ep,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown action {a:?}; actions are the command classes: {}",
                        portcullis_policy::Action::ALL
                            .iter()
                            .map(|a| a.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .await
            }
        }
    }
    let req = GrantRequest {
        agent: b.agent,
        connection: b.connection,
        reason: b.reason,
        ticket: b.ticket,
        ttl_secs: b.ttl_secs,
        actions,
    };
    let now = now_secs();
    let (record_, credential) = match state.authn.create_grant(token, req, now).await {
        Ok(x) => x,
        Err(e) => return refuse_grant(&state, peer, ep, grant_status(&e), e.to_string()).await,
    };
    let ev = EventData::GrantCreated {
        grant: record_.clone(),
        client_addr: peer.0.to_string(),
    };
    if let Err(r) = record(&state, ev).await {
        // Not recorded: the grant must not be usable.
        let _ = state
            .authn
            .grants
            .revoke(&record_.id, "gateway (ledger unavailable)", now);
        return r;
    }
    (
        StatusCode::CREATED,
        Json(json!({ "grant": record_, "credential": credential })),
    )
        .into_response()
}

/// The person calling a grants endpoint, from their Bearer token; refusals are recorded.
async fn person(
    state: &ApiState,
    peer: Peer,
    ep: &str,
    headers: &HeaderMap,
    now: i64,
) -> Result<portcullis_identity::Verified, Response> {
    let Some(token) = bearer(headers) else {
        return Err(refuse_grant(
            state,
            peer,
            ep,
            StatusCode::UNAUTHORIZED,
            "no Authorization: Bearer token".into(),
        )
        .await);
    };
    match state.authn.grant_requester(token, now).await {
        Ok(w) => Ok(w),
        Err(e) => Err(refuse_grant(state, peer, ep, grant_status(&e), e.to_string()).await),
    }
}

async fn list_grants(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let now = now_secs();
    if let Err(r) = person(&state, peer, "/v1/grants (list)", &headers, now).await {
        return r;
    }
    Json(json!({ "grants": state.authn.grants.list(now) })).into_response()
}

async fn revoke_grant(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ep = "/v1/grants/revoke";
    let now = now_secs();
    let who = match person(&state, peer, ep, &headers, now).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let by = who
        .principal
        .identity
        .as_ref()
        .map(|i| i.subject.clone())
        .unwrap_or_default();
    // Record first, then revoke: a revocation the ledger does not hold does not happen.
    if let Err(e) = state.authn.grants.check(&id, now) {
        return refuse_grant(&state, peer, ep, StatusCode::NOT_FOUND, e.to_string()).await;
    }
    let ev = EventData::GrantRevoked {
        id: id.clone(),
        by: by.clone(),
        client_addr: peer.0.to_string(),
        sessions_ended: state
            .authn
            .grants
            .list(now)
            .iter()
            .find(|g| g.record.id == id)
            .map(|g| g.live_sessions as u64)
            .unwrap_or(0),
    };
    if let Err(r) = record(&state, ev).await {
        return r;
    }
    match state.authn.grants.revoke(&id, &by, now) {
        Ok((g, sessions)) => Json(json!({
            "revoked": g.id,
            "by": by,
            "sessions_ended": sessions,
        }))
        .into_response(),
        Err(e) => api_error(StatusCode::CONFLICT, e.to_string()),
    }
}
