//! The client leg: accept, negotiate TLS, read the startup packet, authenticate the agent,
//! open the upstream session, then hand both streams to the relay.

use crate::cancel::{CancelRegistry, CancelTarget};
use crate::error::PgError;
use crate::relay::{Relay, SessionInfo, SessionLimit};
use crate::stream::Stream;
use crate::upstream::Target;
use crate::wire::{self, ErrorFields, Reader};
use bytes::{BufMut, BytesMut};
use portcullis_core::config::RecordingMode;
use portcullis_core::config::{ClientAuth, ListenerTlsMode};
use portcullis_core::{EventData, NewEvent, Principal};
use portcullis_identity::{AgentRegistry, Authenticator, ScramServer};
use portcullis_ledger::recording::Recorder;
use portcullis_ledger::Ledger;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const PROTOCOL: &str = "postgres";

/// Startup parameters passed on to the target. Anything else is dropped: notably `options`,
/// which could change the session's role or settings behind the gateway's back,
/// `replication`, and `search_path`, which would change which tables unqualified names in
/// statements mean after policy decided them (`SET search_path` is a statement, decided as one).
const FORWARDED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "bytea_output",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// Listener settings.
pub struct ListenerSettings {
    pub name: String,
    pub tls_mode: ListenerTlsMode,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub client_auth: ClientAuth,
    pub max_message_bytes: u32,
    pub startup_timeout: Duration,
}

/// A PostgreSQL gateway: one listener's settings plus what every session needs.
pub struct PgGateway {
    pub settings: ListenerSettings,
    pub ledger: Ledger,
    pub agents: Arc<AgentRegistry>,
    /// Token logins (OIDC, gateway tokens, grants); `None` = API keys only.
    pub authn: Option<Arc<Authenticator>>,
    /// Decides every statement (policies in force, swapped on reload).
    pub gate: Arc<portcullis_policy::Gate>,
    pub targets: HashMap<String, Arc<Target>>,
    /// Each connection's catalog reading (functions, views), which classification consults.
    pub catalogs: HashMap<String, Arc<crate::catalog::CatalogCache>>,
    pub cancels: CancelRegistry,
    /// Where session recordings go, and the chunk size in bytes (`None`: not configured;
    /// connections with `recording` on then fail to start, see `serve`).
    pub recordings: Option<(portcullis_ledger::recording::BlobStore, usize)>,
    /// Masks responses and what the ledger keeps; chooses each session's profile.
    pub masker: Arc<portcullis_mask::Masker>,
}

impl PgGateway {
    /// Accepts clients until `shutdown` turns true, then waits for live sessions to end.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let gw = self.clone();
                        let stop = shutdown.clone();
                        tasks.spawn(async move { gw.handle(tcp, peer, stop).await });
                    }
                    Err(e) => {
                        tracing::warn!(listener = %self.settings.name, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn handle(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let _ = tcp.set_nodelay(true);
        let client_addr = peer.to_string();
        let started = tokio::time::timeout(
            self.settings.startup_timeout,
            self.startup(Stream::Tcp(tcp), &client_addr),
        )
        .await;
        let session = match started {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(%client_addr, "startup ended: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%client_addr, "startup timed out");
                self.record_detached(
                    "",
                    EventData::ProtocolError {
                        client_addr,
                        detail: format!(
                            "startup not completed within {} ms",
                            self.settings.startup_timeout.as_millis()
                        ),
                    },
                );
                return;
            }
        };
        session.run(shutdown).await;
    }

    fn record_detached(&self, session_id: &str, data: EventData) {
        self.ledger
            .append_detached(vec![NewEvent::new(session_id, data)]);
    }

    /// Everything up to the first ReadyForQuery. `Ok(None)` = handled (cancel request, refused
    /// client); errors already answered to the client when possible.
    async fn startup(
        &self,
        mut client: Stream,
        client_addr: &str,
    ) -> Result<Option<Relay>, PgError> {
        let mut tls_done = false;
        let params = loop {
            let packet = match read_startup_packet(&mut client).await {
                Ok(p) => p,
                Err(e) => {
                    if let PgError::ClientProtocol(detail) = &e {
                        self.record_detached(
                            "",
                            EventData::ProtocolError {
                                client_addr: client_addr.to_string(),
                                detail: detail.clone(),
                            },
                        );
                        let _ =
                            send_error(&mut client, &ErrorFields::fatal("08P01", detail.clone()))
                                .await;
                    }
                    return Err(e);
                }
            };
            let mut r = Reader::new(&packet);
            let code = r.i32().unwrap_or(0);
            match code {
                wire::SSL_REQUEST if !tls_done => {
                    match (&self.settings.tls, self.settings.tls_mode) {
                        (Some(acceptor), mode) if mode != ListenerTlsMode::Disabled => {
                            write_flush(&mut client, b"S").await?;
                            let Stream::Tcp(tcp) = client else {
                                return Err(PgError::ClientProtocol(
                                    "SSLRequest inside TLS".into(),
                                ));
                            };
                            let tls = acceptor.accept(tcp).await.map_err(|e| {
                                PgError::Tls(format!("handshake with {client_addr}: {e}"))
                            })?;
                            client = Stream::ServerTls(Box::new(tls));
                            tls_done = true;
                        }
                        _ => write_flush(&mut client, b"N").await?,
                    }
                }
                wire::GSSENC_REQUEST => write_flush(&mut client, b"N").await?,
                wire::CANCEL_REQUEST => {
                    let pid = r.i32().unwrap_or(0);
                    let secret = r.i32().unwrap_or(0);
                    self.cancel(pid, secret, client_addr).await;
                    // As PostgreSQL does: close the connection cleanly, over TLS with a
                    // close_notify (libpq 17 sends cancels encrypted and reports a bare EOF
                    // as a failed cancel).
                    close_quietly(&mut client).await;
                    return Ok(None);
                }
                code if code >> 16 == 3 => {
                    break parse_startup_params(&mut r, code, &mut client).await?
                }
                other => {
                    let detail = format!(
                        "unsupported frontend protocol {}.{}: the gateway speaks 3.0",
                        other >> 16,
                        other & 0xffff
                    );
                    self.record_detached(
                        "",
                        EventData::ProtocolError {
                            client_addr: client_addr.to_string(),
                            detail: detail.clone(),
                        },
                    );
                    send_error(&mut client, &ErrorFields::fatal("08P01", detail)).await?;
                    return Ok(None);
                }
            }
        };

        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let agent = get("user").unwrap_or_default();
        let connection = get("database").unwrap_or_else(|| agent.clone());

        let fail_auth = |reason: String, sqlstate: &str| EventData::AuthFailure {
            claimed_agent: agent.clone(),
            auth_method: String::new(),
            client_addr: client_addr.to_string(),
            connection: connection.clone(),
            protocol: PROTOCOL.into(),
            reason,
            sqlstate: sqlstate.into(),
        };

        if !client.is_tls() && self.settings.tls_mode == ListenerTlsMode::Required {
            let msg = "this gateway accepts only TLS connections";
            self.record_detached("", fail_auth(msg.into(), "28000"));
            send_error(
                &mut client,
                &ErrorFields::fatal("28000", msg).with_hint("connect with sslmode=require"),
            )
            .await?;
            return Ok(None);
        }
        if agent.is_empty() {
            self.record_detached(
                "",
                fail_auth("no user name in the startup packet".into(), "28000"),
            );
            send_error(
                &mut client,
                &ErrorFields::fatal(
                    "28000",
                    "no user name given: connect with user=<agent name>",
                ),
            )
            .await?;
            return Ok(None);
        }

        // Authenticate the agent: SCRAM for API-key agents; a cleartext password over TLS
        // for everyone else (a token: OIDC access token, gateway token, grant credential), and
        // for everyone on `client_auth = "password"` listeners (API key or token).
        let key_agent = self.agents.verifier(&agent).is_some();
        let use_cleartext =
            client.is_tls() && (self.settings.client_auth == ClientAuth::Password || !key_agent);
        let auth_method = if use_cleartext {
            "password"
        } else {
            "scram-sha-256"
        };
        let outcome = if use_cleartext {
            self.auth_cleartext(&mut client, &agent, &connection)
                .await?
        } else if self.auth_scram(&mut client, &agent).await? {
            Ok(Principal {
                agent: agent.clone(),
                auth_method: auth_method.into(),
                identity: None,
            })
        } else {
            Err(format!("{auth_method} authentication failed"))
        };
        let principal = match outcome {
            Ok(p) => p,
            // The token could not be checked at all: the identity provider's keys could not be
            // fetched (IdentityError::IssuerUnavailable, whose message starts so). Not a wrong
            // password: a connection failure the client may retry, with the cause.
            Err(reason) if reason.starts_with("identity provider ") => {
                let mut ev = fail_auth(reason.clone(), "08001");
                if let EventData::AuthFailure { auth_method: m, .. } = &mut ev {
                    *m = auth_method.into();
                }
                self.record_detached("", ev);
                let e = ErrorFields::fatal(
                    "08001",
                    format!(
                        "cannot check the token of agent \"{agent}\": the gateway could not fetch the identity provider's keys"
                    ),
                )
                .with_detail(reason)
                .with_hint("this is not a problem with the token: retry later; the gateway's operator should check the issuer URL, its ca_file and the network path to the identity provider");
                send_error(&mut client, &e).await?;
                return Ok(None);
            }
            Err(reason) => {
                let mut ev = fail_auth(reason.clone(), "28P01");
                if let EventData::AuthFailure { auth_method: m, .. } = &mut ev {
                    *m = auth_method.into();
                }
                self.record_detached("", ev);
                let mut e = ErrorFields::fatal(
                    "28P01",
                    format!("password authentication failed for agent \"{agent}\""),
                );
                e = if reason.starts_with("token") || reason.starts_with("grant") {
                    e.with_detail(reason)
                        .with_hint("get a fresh token, or check that it was issued for this agent and connection")
                } else if use_cleartext {
                    e.with_hint("the password is the agent's API key or a token (OIDC access token, gateway token or grant credential); check it and the user name")
                } else {
                    e.with_hint("the password is the agent's API key; check it and the user name. Tokens (OIDC, grants) are accepted only over TLS: connect with sslmode=require")
                };
                send_error(&mut client, &e).await?;
                return Ok(None);
            }
        };
        let session_id = uuid::Uuid::new_v4().to_string();
        if let Err(e) = self
            .ledger
            .append(vec![NewEvent::new(
                session_id.clone(),
                EventData::AuthSuccess {
                    principal: principal.clone(),
                    client_addr: client_addr.to_string(),
                    connection: connection.clone(),
                    protocol: PROTOCOL.into(),
                },
            )])
            .await
        {
            send_error(&mut client, &ledger_refusal(&e.to_string(), "FATAL")).await?;
            return Ok(None);
        }

        let connect_failure = |reason: String, sqlstate: &str| EventData::ConnectFailure {
            principal: principal.clone(),
            client_addr: client_addr.to_string(),
            connection: connection.clone(),
            protocol: PROTOCOL.into(),
            reason,
            sqlstate: sqlstate.into(),
        };
        let Some(target) = self.targets.get(&connection).cloned() else {
            let mut names: Vec<&str> = self.targets.keys().map(|s| s.as_str()).collect();
            names.sort_unstable();
            let msg = format!("connection \"{connection}\" does not exist");
            self.record_detached(&session_id, connect_failure(msg.clone(), "3D000"));
            send_error(
                &mut client,
                &ErrorFields::fatal("3D000", msg).with_hint(format!(
                    "dbname selects the connection; configured: {}",
                    names.join(", ")
                )),
            )
            .await?;
            return Ok(None);
        };

        if let Some((_, enc)) = params
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case("client_encoding") && !safe_client_encoding(v))
        {
            let msg = format!("client_encoding {enc:?} is not accepted by the gateway");
            self.record_detached(&session_id, connect_failure(msg.clone(), "22023"));
            send_error(
                &mut client,
                &ErrorFields::fatal("22023", msg).with_detail(
                    "in this encoding a multi-byte character can contain the bytes of ' and \\, so SQL text could mean one thing to the gateway's parser and another to the server",
                ).with_hint("use UTF8 (PGCLIENTENCODING=UTF8)"),
            )
            .await?;
            return Ok(None);
        }
        let mut forwarded: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| FORWARDED_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
            .cloned()
            .collect();
        let actor = self
            .gate
            .with_configured_groups(&crate::relay::actor_of(&principal));
        // An agent no policy lets write here gets read-only transactions on the target too:
        // a write the classifier missed (a function's hidden side effect) then fails in the
        // database. The setting's value at login is what RESET and DISCARD return to; turning
        // it off by SET or READ WRITE is classed `admin`. Recorded with the session's opening.
        if target.read_only_sessions && !self.gate.may_write(&actor, &connection) {
            forwarded.push((
                "options".into(),
                "-c default_transaction_read_only=on".into(),
            ));
        }
        let upstream = match target.connect(&forwarded).await {
            Ok(u) => u,
            Err(e) => {
                let (sqlstate, msg) = match &e {
                    PgError::Upstream {
                        sqlstate, message, ..
                    } => (*sqlstate, message.clone()),
                    other => ("08001", other.to_string()),
                };
                let msg = format!("connection \"{connection}\": {msg}");
                self.record_detached(&session_id, connect_failure(msg.clone(), sqlstate));
                send_error(&mut client, &ErrorFields::fatal(sqlstate, msg)).await?;
                return Ok(None);
            }
        };

        let cancel_guard = self.cancels.register(CancelTarget {
            target: target.clone(),
            pid: upstream.backend_pid,
            secret: upstream.backend_secret,
        });
        let tls = client.is_tls();
        // The session's masking profile, recorded with its opening.
        let justification = principal
            .identity
            .as_ref()
            .and_then(|i| i.justification())
            .map(str::to_string);
        let assigned = self.masker.assign(&portcullis_mask::Who {
            agent: &actor.name,
            groups: &actor.groups,
            connection: &connection,
            connection_profile: target.masking_profile.as_deref(),
            justified: justification.is_some(),
        });
        let masking = crate::masking::SessionMasking {
            masker: self.masker.clone(),
            profile: assigned.profile.clone(),
        };
        if let Err(e) = self
            .ledger
            .append(vec![NewEvent::new(
                session_id.clone(),
                EventData::SessionOpen {
                    principal: principal.clone(),
                    client_addr: client_addr.to_string(),
                    connection: connection.clone(),
                    protocol: PROTOCOL.into(),
                    tls,
                    params: forwarded,
                    masking: Some(portcullis_core::MaskingChoice {
                        profile: assigned.profile.name.clone(),
                        unmasked: assigned.profile.keeps_anything(),
                        rule: assigned.rule,
                    }),
                },
            )])
            .await
        {
            send_error(&mut client, &ledger_refusal(&e.to_string(), "FATAL")).await?;
            return Ok(None);
        }

        // A session under a task grant ends when the grant is revoked or expires.
        let limit = principal
            .identity
            .as_ref()
            .and_then(|i| i.grant.as_ref())
            .and_then(|g| {
                let authn = self.authn.as_ref()?;
                let record = authn
                    .grants
                    .check(&g.id, portcullis_identity::jwt::now_secs())
                    .ok()?;
                let left = record.expires_at - portcullis_identity::jwt::now_secs();
                Some(SessionLimit {
                    grant: g.id.clone(),
                    revoked: authn.grants.watch(&g.id)?,
                    deadline: tokio::time::Instant::now() + Duration::from_secs(left.max(0) as u64),
                })
            });

        let mut hello = BytesMut::new();
        wire::auth_request(&mut hello, 0, &[]);
        hello.extend_from_slice(&upstream.parameter_status);
        wire::put_message(&mut hello, b'K', |b| {
            b.put_i32(cancel_guard.key.0);
            b.put_i32(cancel_guard.key.1);
        });
        wire::ready_for_query(&mut hello, b'I');
        write_flush(&mut client, &hello).await?;

        let started = Instant::now();
        // A session that may see raw values records what it typed, never the responses:
        // a recording must not become a raw copy of the data.
        let recording = match target.recording {
            RecordingMode::Full if assigned.profile.keeps_anything() => RecordingMode::Commands,
            other => other,
        };
        let recorder = match (recording, &self.recordings) {
            (RecordingMode::Off, _) | (_, None) => None,
            (mode, Some((store, chunk))) => Some(Recorder::new(
                store.clone(),
                self.ledger.clone(),
                session_id.clone(),
                connection.clone(),
                started,
                mode == RecordingMode::Full,
                *chunk,
            )),
        };
        let catalog = self
            .catalogs
            .get(&connection)
            .cloned()
            .unwrap_or_else(|| Arc::new(crate::catalog::CatalogCache::new(target.clone())));
        Ok(Some(Relay::new(
            SessionInfo {
                actor,
                justification,
                limit,
                session_id,
                principal,
                client_addr: client_addr.to_string(),
                connection,
                started,
                recorder,
                masking,
                catalog,
            },
            client,
            upstream,
            self.ledger.clone(),
            self.gate.clone(),
            self.settings.max_message_bytes,
            cancel_guard,
        )))
    }

    async fn auth_scram(&self, client: &mut Stream, agent: &str) -> Result<bool, PgError> {
        let mut scram = ScramServer::new(self.agents.verifier(agent).cloned(), agent);
        let mut out = BytesMut::new();
        let mut mechs = BytesMut::new();
        wire::put_cstr(&mut mechs, portcullis_identity::SCRAM_SHA_256);
        mechs.put_u8(0);
        wire::auth_request(&mut out, 10, &mechs);
        write_flush(client, &out).await?;

        let body = read_password_message(client).await?;
        let mut r = Reader::new(&body);
        let mechanism = r
            .cstr()
            .ok_or_else(|| PgError::ClientProtocol("bad SASLInitialResponse".into()))?;
        let len = r.i32().unwrap_or(-1);
        let data = if len < 0 {
            &[][..]
        } else {
            r.bytes(len as usize).unwrap_or(&[])
        };
        let server_first = match scram.client_first(&mechanism, data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(agent, "SCRAM client-first rejected: {e}");
                return Ok(false);
            }
        };
        out.clear();
        wire::auth_request(&mut out, 11, &server_first);
        write_flush(client, &out).await?;

        let body = read_password_message(client).await?;
        match scram.client_final(&body) {
            Ok(server_final) => {
                out.clear();
                wire::auth_request(&mut out, 12, &server_final);
                write_flush(client, &out).await?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Asks for a cleartext password (TLS only) and checks it: a token (three base64url
    /// parts) through the authenticator, anything else as the agent's API key.
    async fn auth_cleartext(
        &self,
        client: &mut Stream,
        agent: &str,
        connection: &str,
    ) -> Result<Result<Principal, String>, PgError> {
        let mut out = BytesMut::new();
        wire::auth_request(&mut out, 3, &[]);
        write_flush(client, &out).await?;
        let body = read_password_message(client).await?;
        let password = Reader::new(&body).cstr().unwrap_or_default();
        if !looks_like_jwt(&password) {
            return Ok(if self.agents.verify_password(agent, &password) {
                Ok(Principal {
                    agent: agent.to_string(),
                    auth_method: "password".into(),
                    identity: None,
                })
            } else {
                Err("password authentication failed".into())
            });
        }
        let Some(authn) = &self.authn else {
            return Ok(Err(
                "token presented but no identity provider is configured ([identity])".into(),
            ));
        };
        let now = portcullis_identity::jwt::now_secs();
        let verified = match authn.login(&password, now).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let p = verified.principal;
        if p.agent != agent {
            return Ok(Err(format!(
                "token refused: it is for agent {:?}, but the client connected as {agent:?}; connect with user={}",
                p.agent, p.agent
            )));
        }
        if let Some(g) = p.identity.as_ref().and_then(|i| i.grant.as_ref()) {
            if g.connection != connection {
                return Ok(Err(format!(
                    "grant {} is for connection {:?}, not {connection:?}",
                    g.id, g.connection
                )));
            }
        }
        Ok(Ok(p))
    }

    async fn cancel(&self, pid: i32, secret: i32, client_addr: &str) {
        let found = self.cancels.lookup(pid, secret);
        self.record_detached(
            "",
            EventData::Cancel {
                client_addr: client_addr.to_string(),
                matched: found.is_some(),
            },
        );
        if let Some(t) = found {
            if let Err(e) = t.target.cancel(t.pid, t.secret).await {
                tracing::warn!("forwarding a cancel request failed: {e}");
            }
        }
    }
}

/// Ends a connection the gateway has answered: TLS close_notify (or TCP FIN), bounded in time
/// so that a client that stopped reading cannot hold the task.
async fn close_quietly(client: &mut Stream) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.shutdown()).await;
}

/// The error a client gets when the ledger cannot take an event: nothing is forwarded.
pub fn ledger_refusal(reason: &str, severity: &str) -> ErrorFields {
    ErrorFields {
        severity: severity.into(),
        ..ErrorFields::error(
            "58030",
            format!("the gateway could not record this in its ledger, so it was not forwarded (fail closed): {reason}"),
        )
        .with_hint("the gateway operator must make the ledger store writable again")
    }
}

async fn write_flush(client: &mut Stream, bytes: &[u8]) -> Result<(), PgError> {
    client.write_all(bytes).await.map_err(PgError::client_io)?;
    client.flush().await.map_err(PgError::client_io)
}

/// Client encodings whose multi-byte characters never contain ASCII bytes, so that the
/// gateway's parser (which reads UTF-8) and the server split SQL text the same way. The
/// others (SJIS, BIG5, GBK, UHC, GB18030, JOHAB and their aliases) are refused.
/// A compact JWS: three base64url parts, the first a JSON object (`eyJ` = `{"`).
fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ")
        && s.split('.').count() == 3
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

fn safe_client_encoding(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    !matches!(
        n.as_str(),
        "sjis"
            | "shiftjis"
            | "shiftjis2004"
            | "mskanji"
            | "win932"
            | "windows932"
            | "cp932"
            | "big5"
            | "win950"
            | "windows950"
            | "cp950"
            | "gbk"
            | "win936"
            | "windows936"
            | "cp936"
            | "uhc"
            | "win949"
            | "windows949"
            | "cp949"
            | "gb18030"
            | "johab"
    )
}

async fn send_error(client: &mut Stream, e: &ErrorFields) -> Result<(), PgError> {
    let mut out = BytesMut::new();
    e.encode(&mut out);
    write_flush(client, &out).await
}

/// Reads an untyped startup-phase packet (length, then body), enforcing PostgreSQL's limit.
async fn read_startup_packet(client: &mut Stream) -> Result<BytesMut, PgError> {
    let len = client.read_i32().await.map_err(PgError::client_io)?;
    if !(8..=wire::MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(PgError::ClientProtocol(format!(
            "invalid startup packet length {len} (allowed 8..{})",
            wire::MAX_STARTUP_PACKET
        )));
    }
    let mut body = BytesMut::zeroed(len as usize - 4);
    client
        .read_exact(&mut body)
        .await
        .map_err(PgError::client_io)?;
    Ok(body)
}

/// Parses StartupMessage parameters; answers NegotiateProtocolVersion for 3.x>0 or `_pq_.`
/// options, as PostgreSQL does.
async fn parse_startup_params(
    r: &mut Reader<'_>,
    code: i32,
    client: &mut Stream,
) -> Result<Vec<(String, String)>, PgError> {
    let mut params = Vec::new();
    let mut unsupported = Vec::new();
    loop {
        let key = r.cstr().ok_or_else(|| {
            PgError::ClientProtocol("startup packet: unterminated parameter name".into())
        })?;
        if key.is_empty() {
            break;
        }
        let value = r.cstr().ok_or_else(|| {
            PgError::ClientProtocol(format!("startup packet: no value for {key:?}"))
        })?;
        if key.starts_with("_pq_.") {
            unsupported.push(key);
        } else {
            params.push((key, value));
        }
    }
    if code & 0xffff != 0 || !unsupported.is_empty() {
        let mut out = BytesMut::new();
        wire::put_message(&mut out, b'v', |b| {
            b.put_i32(wire::PROTOCOL_3_0);
            b.put_i32(unsupported.len() as i32);
            for u in &unsupported {
                wire::put_cstr(b, u);
            }
        });
        write_flush(client, &out).await?;
    }
    Ok(params)
}

/// Reads a PasswordMessage / SASL response ('p') during authentication.
async fn read_password_message(client: &mut Stream) -> Result<BytesMut, PgError> {
    let tag = client.read_u8().await.map_err(PgError::client_io)?;
    if tag != b'p' {
        return Err(PgError::ClientProtocol(format!(
            "expected a password message, got {:?}",
            tag as char
        )));
    }
    let len = client.read_i32().await.map_err(PgError::client_io)?;
    if !(4..=wire::MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(PgError::ClientProtocol(format!(
            "invalid password message length {len}"
        )));
    }
    let mut body = BytesMut::zeroed(len as usize - 4);
    client
        .read_exact(&mut body)
        .await
        .map_err(PgError::client_io)?;
    Ok(body)
}
