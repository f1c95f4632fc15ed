//! The upstream leg: reach the target, log in with the gateway's own credentials (the agent
//! never sees them) and collect what the client must be told (ParameterStatus, key data).

use crate::error::PgError;
use crate::stream::Stream;
use crate::wire::{self, ErrorFields, Reader};
use bytes::{Buf, BufMut, BytesMut};
use portcullis_core::config::{UpstreamAuth, UpstreamTls};
use postgres_protocol::authentication::sasl::{
    ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A configured target, ready to dial.
pub struct Target {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub tls_mode: UpstreamTls,
    pub tls: Option<tokio_rustls::TlsConnector>,
    pub connect_timeout: Duration,
    /// Login methods the target may ask for.
    pub auth: Vec<UpstreamAuth>,
    /// What its sessions record (see `portcullis_ledger::recording`).
    pub recording: portcullis_core::config::RecordingMode,
    /// The connection's masking profile, when no `[[masking.assign]]` rule picks one.
    pub masking_profile: Option<String>,
    /// Run the sessions of agents that may only read here in read-only transactions.
    pub read_only_sessions: bool,
}

/// A logged-in upstream connection.
pub struct Upstream {
    pub stream: Stream,
    /// Raw ParameterStatus messages to replay to the client.
    pub parameter_status: BytesMut,
    /// The target's cancel key.
    pub backend_pid: i32,
    pub backend_secret: i32,
    /// Bytes read past ReadyForQuery (normally empty).
    pub leftover: BytesMut,
}

impl Target {
    fn fail(&self, sqlstate: &'static str, message: String) -> PgError {
        PgError::Upstream {
            connection: self.name.clone(),
            sqlstate,
            message,
        }
    }

    /// Opens a TCP (and TLS, per mode) connection to the target.
    pub async fn dial(&self) -> Result<Stream, PgError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&addr)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(self.fail("08001", format!("cannot reach the target at {addr}: {e}")))
            }
            Err(_) => {
                return Err(self.fail(
                    "08001",
                    format!(
                        "cannot reach the target at {addr}: no answer within {} ms",
                        self.connect_timeout.as_millis()
                    ),
                ))
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(connector) = &self.tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let mut tcp = tcp;
        let mut req = BytesMut::new();
        req.put_i32(8);
        req.put_i32(wire::SSL_REQUEST);
        tcp.write_all(&req).await.map_err(PgError::upstream_io)?;
        let answer = tcp.read_u8().await.map_err(PgError::upstream_io)?;
        match answer {
            b'S' => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| self.fail("08001", format!("bad host name for TLS: {e}")))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.fail("08001", format!("TLS handshake with {addr}: {e}")))?;
                Ok(Stream::ClientTls(Box::new(tls)))
            }
            b'N' if self.tls_mode == UpstreamTls::Prefer => Ok(Stream::Tcp(tcp)),
            b'N' => Err(self.fail(
                "08001",
                format!("the target at {addr} does not offer TLS but the connection requires it"),
            )),
            other => Err(self.fail(
                "08001",
                format!("unexpected answer {other:#x} to SSLRequest from {addr}"),
            )),
        }
    }

    /// Dials and logs in, forwarding the allowed startup parameters.
    pub async fn connect(&self, params: &[(String, String)]) -> Result<Upstream, PgError> {
        let mut stream = self.dial().await?;
        let mut out = BytesMut::new();
        let len_at = out.len();
        out.put_i32(0);
        out.put_i32(wire::PROTOCOL_3_0);
        for (k, v) in [
            ("user", self.user.as_str()),
            ("database", self.database.as_str()),
        ]
        .into_iter()
        .chain(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            wire::put_cstr(&mut out, k);
            wire::put_cstr(&mut out, v);
        }
        out.put_u8(0);
        let len = (out.len() - len_at) as i32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        stream.write_all(&out).await.map_err(PgError::upstream_io)?;
        stream.flush().await.map_err(PgError::upstream_io)?;

        let mut buf = BytesMut::with_capacity(8192);
        let mut scram: Option<ScramSha256> = None;
        let mut scram_verified = false;
        // Whether the target asked for any credential (AuthenticationOk alone = trust).
        let mut asked = false;
        let mut parameter_status = BytesMut::new();
        let mut key = (0, 0);
        loop {
            let (tag, body) = read_message(&mut stream, &mut buf).await?;
            match tag {
                b'R' => {
                    let mut r = Reader::new(&body);
                    let code = r
                        .i32()
                        .ok_or_else(|| self.bad("short authentication request"))?;
                    let mut reply = BytesMut::new();
                    let method = match code {
                        0 if scram.is_none() && !asked => Some(UpstreamAuth::Trust),
                        3 => Some(UpstreamAuth::Password),
                        5 => Some(UpstreamAuth::Md5),
                        10 => Some(UpstreamAuth::ScramSha256),
                        _ => None,
                    };
                    if let Some(method) = method {
                        asked = true;
                        if !self.auth.contains(&method) {
                            return Err(self.fail(
                                "08004",
                                format!(
                                    "the target asks for {} login, which this connection does not allow (auth = {:?})",
                                    auth_name(method),
                                    self.auth.iter().map(|a| auth_name(*a)).collect::<Vec<_>>()
                                ),
                            ));
                        }
                    }
                    match code {
                        // Once SCRAM has started, only a verified server signature ends it:
                        // a server that skips it could be anyone.
                        0 if scram.is_some() && !scram_verified => {
                            return Err(self.fail(
                                "08004",
                                "the target ended SCRAM authentication without proving it knows the password".into(),
                            ))
                        }
                        0 => continue,
                        3 => {
                            let pw = self.password_for("cleartext password")?;
                            wire::put_message(&mut reply, b'p', |b| wire::put_cstr(b, pw));
                        }
                        5 => {
                            let pw = self.password_for("md5")?;
                            let salt = r.bytes(4).ok_or_else(|| self.bad("short md5 salt"))?;
                            let salt = [salt[0], salt[1], salt[2], salt[3]];
                            let hash = postgres_protocol::authentication::md5_hash(
                                self.user.as_bytes(),
                                pw.as_bytes(),
                                salt,
                            );
                            wire::put_message(&mut reply, b'p', |b| wire::put_cstr(b, &hash));
                        }
                        10 => {
                            let pw = self.password_for("SCRAM-SHA-256")?;
                            let mut offered = Vec::new();
                            while let Some(m) = r.cstr() {
                                if m.is_empty() {
                                    break;
                                }
                                offered.push(m);
                            }
                            if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                                return Err(self.fail(
                                    "08004",
                                    format!("the target offers SASL mechanisms {offered:?}; the gateway supports SCRAM-SHA-256"),
                                ));
                            }
                            // Over TLS, bind the exchange to the target's certificate
                            // (tls-server-end-point) when the target offers it: a
                            // man in the middle then cannot relay the login.
                            let end_point = server_end_point(&stream);
                            let plus = offered.iter().any(|m| m == SCRAM_SHA_256_PLUS);
                            let (mechanism, cb) = match end_point {
                                Some(hash) if plus => (
                                    SCRAM_SHA_256_PLUS,
                                    ChannelBinding::tls_server_end_point(hash),
                                ),
                                Some(_) => (SCRAM_SHA_256, ChannelBinding::unrequested()),
                                None => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                            };
                            let s = ScramSha256::new(pw.as_bytes(), cb);
                            wire::put_message(&mut reply, b'p', |b| {
                                wire::put_cstr(b, mechanism);
                                b.put_i32(s.message().len() as i32);
                                b.put_slice(s.message());
                            });
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| self.bad("SASL continue before SASL start"))?;
                            s.update(&body[4..]).map_err(|e| {
                                self.fail("08004", format!("SCRAM exchange with the target: {e}"))
                            })?;
                            wire::put_message(&mut reply, b'p', |b| b.put_slice(s.message()));
                        }
                        12 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| self.bad("SASL final before SASL start"))?;
                            s.finish(&body[4..]).map_err(|e| {
                                self.fail(
                                    "08004",
                                    format!("the target's SCRAM signature did not verify: {e}"),
                                )
                            })?;
                            scram_verified = true;
                            continue;
                        }
                        other => {
                            return Err(self.fail(
                                "08004",
                                format!("the target asks for authentication method {other}, which the gateway does not support (use scram-sha-256, md5, password or trust)"),
                            ))
                        }
                    }
                    stream
                        .write_all(&reply)
                        .await
                        .map_err(PgError::upstream_io)?;
                    stream.flush().await.map_err(PgError::upstream_io)?;
                }
                b'S' => wire::put_message(&mut parameter_status, b'S', |b| b.put_slice(&body)),
                b'K' => {
                    let mut r = Reader::new(&body);
                    key = (
                        r.i32().ok_or_else(|| self.bad("short BackendKeyData"))?,
                        r.i32().ok_or_else(|| self.bad("short BackendKeyData"))?,
                    );
                }
                b'N' | b'v' => {}
                b'E' => {
                    let e = ErrorFields::parse(&body);
                    return Err(self.fail(
                        "08004",
                        format!(
                            "the target refused the gateway's login as {:?}: {} (SQLSTATE {})",
                            self.user, e.message, e.code
                        ),
                    ));
                }
                b'Z' => {
                    return Ok(Upstream {
                        stream,
                        parameter_status,
                        backend_pid: key.0,
                        backend_secret: key.1,
                        leftover: buf,
                    })
                }
                other => {
                    return Err(self.bad(&format!(
                        "unexpected message {:?} during login",
                        other as char
                    )))
                }
            }
        }
    }

    fn password_for(&self, method: &str) -> Result<&str, PgError> {
        self.password.as_deref().ok_or_else(|| {
            self.fail(
                "08004",
                format!("the target asks for a {method} login but the connection has no password_env or password_file"),
            )
        })
    }

    fn bad(&self, what: &str) -> PgError {
        self.fail("08P01", format!("protocol violation by the target: {what}"))
    }

    /// Sends a CancelRequest for the target's backend `pid`/`secret`.
    pub async fn cancel(&self, pid: i32, secret: i32) -> Result<(), PgError> {
        let mut stream = self.dial().await?;
        let mut req = BytesMut::new();
        req.put_i32(16);
        req.put_i32(wire::CANCEL_REQUEST);
        req.put_i32(pid);
        req.put_i32(secret);
        stream.write_all(&req).await.map_err(PgError::upstream_io)?;
        stream.flush().await.map_err(PgError::upstream_io)?;
        // The server closes the connection once it has read the request.
        let mut sink = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
        Ok(())
    }
}

/// The tls-server-end-point channel-binding value (RFC 5929): SHA-256 of the target's
/// certificate, as PostgreSQL computes it for certificates signed with SHA-256 (or weaker).
fn server_end_point(stream: &Stream) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let Stream::ClientTls(tls) = stream else {
        return None;
    };
    let cert = tls.get_ref().1.peer_certificates()?.first()?;
    Some(Sha256::digest(cert.as_ref()).to_vec())
}

fn auth_name(a: UpstreamAuth) -> &'static str {
    match a {
        UpstreamAuth::ScramSha256 => "scram-sha-256",
        UpstreamAuth::Md5 => "md5",
        UpstreamAuth::Password => "password",
        UpstreamAuth::Trust => "trust",
    }
}

/// Reads one whole typed message during login (small messages only).
async fn read_message(stream: &mut Stream, buf: &mut BytesMut) -> Result<(u8, BytesMut), PgError> {
    read_message_upto(stream, buf, 1 << 20, "during login").await
}

/// Reads one whole typed message of at most `max` bytes; `when` names the phase in errors.
pub(crate) async fn read_message_upto(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max: usize,
    when: &str,
) -> Result<(u8, BytesMut), PgError> {
    loop {
        if buf.len() >= 5 {
            let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            if len < 4 || len as usize > max {
                return Err(PgError::UpstreamProtocol(format!(
                    "message length {len} {when} (the limit is {max} bytes)"
                )));
            }
            let total = 1 + len as usize;
            if buf.len() >= total {
                let tag = buf[0];
                let mut msg = buf.split_to(total);
                msg.advance(5);
                return Ok((tag, msg));
            }
        }
        let n = stream.read_buf(buf).await.map_err(PgError::upstream_io)?;
        if n == 0 {
            return Err(PgError::UpstreamProtocol(format!(
                "the target closed the connection {when}"
            )));
        }
    }
}
