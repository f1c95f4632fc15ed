//! A real OpenID provider for the integration tests: panva's `oidc-provider` (npm), run by
//! `tests/idp/provider.mjs` under Node, on a free loopback port with its keys in a temp dir.
//!
//! It issues real `client_credentials` access tokens (JWT, `aud` = `urn:portcullis:gateway`,
//! a `groups` claim) and serves its JWKS at the discovery document's `jwks_uri`. Test-only
//! endpoints mint a human's token (`/test/human-token`) and sign arbitrary claims with any of its
//! keys, or unsigned / algorithm-confusion tokens (`/test/sign`), for negative tests.
//!
//! Nothing is skipped: when Node or the npm packages are missing, this panics with the install
//! step. HTTP is a tiny blocking HTTP/1.1 client over `std::net::TcpStream`.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The audience of every token the provider issues by default.
pub const AUDIENCE: &str = "urn:portcullis:gateway";

/// Test fixture clients registered at the provider (see tests/idp/provider.mjs).
pub const ETL_CLIENT: (&str, &str) = ("agent-etl", "etl-secret");
pub const SUPPORT_CLIENT: (&str, &str) = ("agent-support", "support-secret");

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `tests/idp/provider.mjs`.
pub struct Idp {
    /// `http://127.0.0.1:PORT`, exactly as the provider puts it in `iss`.
    pub issuer: String,
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    keys_file: PathBuf,
    stderr_log: PathBuf,
}

/// `tests/idp` in the repository.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/idp")
}

fn node() -> String {
    std::env::var("PORTCULLIS_NODE").unwrap_or_else(|_| "node".to_string())
}

/// Panics with the install step when Node or the provider's npm packages are missing.
fn check_prerequisites() {
    let node = node();
    match Command::new(&node).arg("--version").output() {
        Ok(o) if o.status.success() => {
            // "v20.20.2"; oidc-provider 9 needs 20.12+ (crypto.hash). Debian bookworm's own
            // nodejs is 18: the machine image ships NodeSource's 20.x.
            let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let mut parts = version.trim_start_matches('v').split('.');
            let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            if (major, minor) < (20, 12) {
                panic!(
                    "the OpenID provider tests need Node.js 20.12 or newer, `{node}` is {version}"
                );
            }
        }
        Ok(o) => panic!(
            "`{node} --version` failed ({}): {}; the OpenID provider tests need Node.js 20+: \
             apt-get install -y nodejs npm (scripts/test.sh installs it)",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "cannot run `{node}` ({e}); the OpenID provider tests need Node.js 20+: \
             apt-get install -y nodejs npm (scripts/test.sh installs it)"
        ),
    }
    let dir = package_dir();
    if !dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
    {
        panic!(
            "{} has no node_modules/oidc-provider; install the test OpenID provider with: \
             cd tests/idp && npm ci   (scripts/test.sh does it)",
            dir.display()
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Idp {
    /// Picks a free port, runs `node tests/idp/provider.mjs` with a fresh keys file (one RS256,
    /// one ES256, one EdDSA key; the RS256 key signs) and waits for its READY line.
    pub fn start() -> Idp {
        check_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("portcullis-idp-")
            .tempdir()
            .expect("tempdir");
        let mut idp = Idp {
            issuer: String::new(),
            port: 0,
            keys_file: dir.path().join("keys.json"),
            stderr_log: dir.path().join("provider.log"),
            child: None,
            dir,
        };
        // If another test took the port between free_port() and the provider's bind, try another.
        let mut last = String::new();
        for _ in 0..3 {
            idp.port = free_port();
            idp.issuer = format!("http://127.0.0.1:{}", idp.port);
            match idp.spawn(false) {
                Ok(()) => return idp,
                Err(e) if e.contains("EADDRINUSE") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last}")
    }

    /// Stops the provider and starts it again on the same port with `--rotate`: a new RS256 key
    /// is prepended to the keys file, so the JWKS then holds the new key and all the old ones,
    /// and the new key signs from now on.
    pub fn rotate(&mut self) {
        self.stop();
        self.spawn(true).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops the provider (the issuer then refuses connections: "IdP down" tests).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the provider again (same port, same keys) after `stop`.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(false).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The JSON array of private JWKs the provider runs with, newest first.
    pub fn keys_file(&self) -> &Path {
        &self.keys_file
    }

    /// What the provider printed on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    fn spawn(&mut self, rotate: bool) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .expect("open provider log");
        let mut cmd = Command::new(node());
        cmd.current_dir(package_dir())
            .arg("provider.mjs")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--keys")
            .arg(&self.keys_file);
        if rotate {
            cmd.arg("--rotate");
        }
        // stdin stays a pipe held by this process: the provider exits when it closes, so a test
        // that dies (even by SIGKILL) leaves no provider behind.
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", node()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout after READY too, so the provider never writes into a closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let expected = format!("READY {}", self.issuer);
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        let failure = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim_end() == expected => {
                    self.child = Some(child);
                    return Ok(());
                }
                Ok(line) => {
                    eprintln!("idp stdout: {line}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break format!("no `{expected}` within {READY_TIMEOUT:?}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    break format!("provider.mjs exited before READY ({status})");
                }
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "the test OpenID provider (node tests/idp/provider.mjs --port {}) did not start: \
             {failure}\n--- its stderr ---\n{}",
            self.port,
            self.log()
        ))
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub fn discovery(&self) -> Value {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        get_json(&url)
    }

    fn endpoint(&self, name: &str) -> String {
        self.discovery()[name]
            .as_str()
            .unwrap_or_else(|| panic!("discovery document has no {name}"))
            .to_string()
    }

    /// The provider's public JWKS, fetched from the discovery document's `jwks_uri`.
    pub fn jwks(&self) -> Value {
        get_json(&self.endpoint("jwks_uri"))
    }

    /// The `kid`s in the JWKS, in its order (the current signing key first).
    pub fn kids(&self) -> Vec<String> {
        self.jwks()["keys"]
            .as_array()
            .expect("jwks keys")
            .iter()
            .filter_map(|k| k["kid"].as_str().map(String::from))
            .collect()
    }

    /// A real token request at the discovery document's `token_endpoint`: `form` is the
    /// urlencoded body, `basic` the client_secret_basic credentials if any. Returns the status
    /// and the JSON body, whatever they are (for negative tests).
    pub fn token_request(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let auth = basic.map(|(id, secret)| {
            format!(
                "Basic {}",
                base64_encode(format!("{}:{}", form_encode(id), form_encode(secret)).as_bytes())
            )
        });
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        let resp = http_request(
            "POST",
            &self.endpoint("token_endpoint"),
            &headers,
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("token request to {}: {e}", self.issuer));
        (resp.status, resp.json())
    }

    /// A real OAuth 2.0 client_credentials grant (client_secret_basic, scope `db`): the access
    /// token, a JWT signed by the provider's current key with `aud` = `urn:portcullis:gateway`,
    /// `sub` = `client_id` = the client, `groups` from the fixture, `scope` = `db`, TTL 300 s.
    pub fn client_token(&self, client_id: &str, secret: &str) -> String {
        let (status, body) = self.token_request(
            &[("grant_type", "client_credentials"), ("scope", "db")],
            Some((client_id, secret)),
        );
        if status != 200 {
            panic!("client_credentials for {client_id}: HTTP {status}: {body}");
        }
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_string()
    }

    /// A human's access token (stands in for an interactive login): body
    /// `{"sub", "groups"?, "may_act"?, "ttl"?, "aud"?, ...extra claims}`, signed by the
    /// provider's current signing key with `typ: at+jwt` and its `kid`.
    pub fn human_token(&self, body: Value) -> String {
        self.post_test("/test/human-token", &body)
    }

    /// Signs `claims` verbatim with one of the provider's keys: `"rs"`, `"es"`, `"ed"` (the
    /// newest key of that kind), `"hs-with-public-key"` (HS256 keyed with the RS key's public PEM,
    /// RS kid in the header) or `"none"` (unsigned, `alg: none`). The header starts as
    /// `{alg, typ: "at+jwt", kid}` for that key; fields in `header` replace those, and a field set
    /// to `null` is removed.
    pub fn sign(&self, key: &str, header: Value, claims: Value) -> String {
        self.post_test(
            "/test/sign",
            &json!({ "key": key, "header": header, "claims": claims }),
        )
    }

    fn post_test(&self, path: &str, body: &Value) -> String {
        let url = format!("{}{path}", self.issuer);
        let resp = http_request(
            "POST",
            &url,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let value = resp.json();
        if resp.status != 200 {
            panic!("POST {url}: HTTP {}: {value}", resp.status);
        }
        value["token"]
            .as_str()
            .unwrap_or_else(|| panic!("POST {url}: no token in {value}"))
            .to_string()
    }
}

// --- HTTPS in front of the provider, with a private CA ---------------------------------------

/// A private certificate authority made at test time, and a server certificate it signed for
/// `127.0.0.1` and `localhost`.
pub struct TestCa {
    /// The CA's certificate (what a `ca_file` holds).
    pub ca_pem: String,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

pub fn test_ca() -> TestCa {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis test private CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let leaf_key = rcgen::KeyPair::generate().expect("server key");
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params");
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .expect("server certificate");
    TestCa {
        ca_pem: ca_cert.pem(),
        leaf_der: leaf_cert.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

/// HTTPS on a free loopback port with `TestCa`'s server certificate, each connection forwarded
/// to the provider's plain-http port. Stops when dropped.
pub struct HttpsFront {
    pub port: u16,
    _runtime: tokio::runtime::Runtime,
}

impl Idp {
    /// An HTTPS front for this provider (see [`HttpsFront`]).
    pub fn https_front(&self, ca: &TestCa) -> HttpsFront {
        use std::sync::Arc;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let certs = vec![rustls_pki_types::CertificateDer::from(ca.leaf_der.clone())];
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rustls_pki_types::PrivatePkcs8KeyDer::from(ca.leaf_key_der.clone()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate and key");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the HTTPS front");
        let port = listener.local_addr().expect("local addr").port();
        let upstream = self.port;
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        HttpsFront {
            port,
            _runtime: runtime,
        }
    }

    /// The path of the provider's JWKS (`jwks_uri` without the scheme and authority).
    pub fn jwks_path(&self) -> String {
        let uri = self.endpoint("jwks_uri");
        uri.strip_prefix(&self.issuer)
            .unwrap_or_else(|| panic!("jwks_uri {uri} is not under {}", self.issuer))
            .to_string()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

// --- JWT inspection ---------------------------------------------------------------------------

/// Decodes base64url (padding optional).
pub fn base64url_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err(format!("invalid base64url character {:?}", c as char)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The header and payload of a compact JWS, decoded but NOT verified.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    let part = |i: usize| -> Value {
        let bytes = base64url_decode(parts[i]).unwrap_or_else(|e| panic!("{e} in {token}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e} in {token}"))
    };
    (part(0), part(1))
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= n {
                out.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// application/x-www-form-urlencoded (also what RFC 6749 §2.3.1 asks of Basic credentials).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// --- a tiny blocking HTTP/1.1 client ----------------------------------------------------------

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// GETs `url` and parses the 200 response as JSON; panics otherwise.
pub fn get_json(url: &str) -> Value {
    let resp = http_request("GET", url, &[], b"").unwrap_or_else(|e| panic!("GET {url}: {e}"));
    if resp.status != 200 {
        panic!(
            "GET {url}: HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
    }
    resp.json()
}

/// One request over a fresh connection (`Connection: close`), plain `http://` only.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid(format!("only http:// URLs are supported: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = TcpStream::connect(&addr)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |msg: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("bad HTTP status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[head_end + 4..];
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    resp.body = if chunked {
        decode_chunked(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if rest.len() < len {
            return Err(bad("body shorter than Content-Length"));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out); // trailers, if any, are ignored
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
