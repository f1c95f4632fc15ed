//! Identity end to end: a real OpenID provider (npm `oidc-provider`), the real gateway, psql.
//! OIDC access tokens as the PostgreSQL password, refused tokens of every kind, key rotation at
//! the provider, RFC 8693 token exchange with the chain in the ledger and in policy, task
//! grants from the CLI (narrowing, revocation ending a live session, replay after restart),
//! agents refused where a person must stand (an exchange's subject_token, the grants API),
//! an RFC 7522 SAML bearer assertion signed with xmlsec1, and how the gateway reaches the
//! provider: https (a private CA trusted through `ca_file`), plain http refused off loopback
//! unless `allow_http`, and an unreachable or untrusted provider reported with its cause.

mod common;

use common::idp::{decode_jwt, test_ca, Idp, AUDIENCE, ETL_CLIENT, SUPPORT_CLIENT};
use common::*;
use portcullis_core::EventData;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Agents may read; updates need a human requester; agent-etl may never delete.
const POLICY: &str = r#"
@id("everyone-reads")
permit(principal, action in [Portcullis::Action::"read", Portcullis::Action::"transaction", Portcullis::Action::"session"], resource);
@id("etl-writes")
permit(principal in Portcullis::Group::"etl", action in Portcullis::Action::"write", resource);
@id("updates-need-a-human")
forbid(principal, action == Portcullis::Action::"update", resource) unless { context.has_requester };
@id("etl-never-deletes")
forbid(principal == Portcullis::Agent::"agent-etl", action == Portcullis::Action::"delete", resource);
"#;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Setup {
    _cluster: pg_ephemeral::Cluster,
    idp: Idp,
    gw: Gateway,
    api: String,
}

fn setup(extra: &str) -> Setup {
    let cluster = target(&[]);
    let idp = Idp::start();
    let api_port = free_port();
    let gw = Gateway::start(
        &cluster,
        GatewayOptions {
            policy_files: vec!["identity.cedar".into()],
            files: vec![("identity.cedar".into(), POLICY.as_bytes().to_vec())],
            extra_config: format!(
                r#"
[[agents]]
name = "agent-etl"
description = "token-only agent: its groups come from the IdP and from here"
groups = ["etl-config"]

[[identity.oidc]]
name = "test-idp"
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
jwks_min_refresh_secs = 1

[api]
bind = "127.0.0.1:{api_port}"
{extra}
"#,
                issuer = idp.issuer
            ),
            ..Default::default()
        },
    );
    let s = Setup {
        api: format!("https://127.0.0.1:{api_port}"),
        _cluster: cluster,
        idp,
        gw,
    };
    seed(&s);
    s
}

fn seed(s: &Setup) {
    ok(psql_direct(
        &s._cluster,
        &[
            "-d",
            DB,
            "-c",
            "CREATE TABLE orders (id int primary key, status text); INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 5) g;",
        ],
    ));
}

/// psql as `user` with a token as the password, over TLS.
fn psql_token(gw: &Gateway, user: &str, token: &str, sql: &str) -> std::process::Output {
    gw.psql_as(user, token, DB, "require", &["-c", sql])
}

/// POST a form to the gateway's token endpoint (HTTPS with the gateway's certificate).
fn token_endpoint(s: &Setup, form: &[(&str, &str)]) -> (u16, Value) {
    let cert = s.gw.dir.path().join("data/tls/server.crt");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--cacert"])
        .arg(&cert)
        .args(["-w", "\n%{http_code}", "-X", "POST"]);
    for (k, v) in form {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    cmd.arg(format!("{}/oauth/token", s.api));
    let out = cmd.output().expect("curl (apt-get install -y curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body)
            .unwrap_or_else(|_| json!({ "raw": body, "stderr": stderr(&out) })),
    )
}

const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// RFC 8693 token exchange at the gateway: `subject` for the person, `actor` for the agent.
fn exchange(s: &Setup, subject: &str, actor: &str) -> (u16, Value) {
    token_endpoint(
        s,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            ("subject_token_type", JWT_TYPE),
            ("actor_token", actor),
            ("actor_token_type", JWT_TYPE),
        ],
    )
}

/// `portcullis grant ARGS --config …` with `token` as PORTCULLIS_TOKEN.
fn grant_cli(s: &Setup, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(exe())
        .arg("grant")
        .args(args)
        .arg("--config")
        .arg(&s.gw.config)
        .env("PORTCULLIS_TOKEN", token)
        .output()
        .expect("run portcullis grant")
}

/// The ledger's `token_refused` events, as (endpoint, reason).
fn refusals(gw: &Gateway) -> Vec<(String, String)> {
    gw.events_of("token_refused")
        .iter()
        .map(|e| match e.parse() {
            Ok(EventData::TokenRefused {
                endpoint, reason, ..
            }) => (endpoint, reason),
            other => panic!("token_refused event {} does not parse: {other:?}", e.seq),
        })
        .collect()
}

fn session_principal(gw: &Gateway) -> Value {
    let ev = gw.events_of("session_open");
    let last = ev.last().expect("a session was opened");
    let v: Value = serde_json::from_str(last.json()).expect("json");
    v["principal"].clone()
}

#[test]
fn oidc_access_tokens_log_in_and_every_bad_token_is_refused_with_its_reason() {
    let mut s = setup("");
    let token = s.idp.client_token(ETL_CLIENT.0, ETL_CLIENT.1);
    let (_, claims) = decode_jwt(&token);

    // A client-credentials token from the provider is the password.
    let out = psql_token(&s.gw, "agent-etl", &token, "SELECT count(*) FROM orders");
    assert_eq!(ok(out).trim(), "5");
    let p = session_principal(&s.gw);
    assert_eq!(p["agent"], "agent-etl");
    assert_eq!(p["auth_method"], "oidc");
    assert_eq!(p["identity"]["issuer"], s.idp.issuer.as_str());
    assert_eq!(p["identity"]["subject"], "agent-etl");
    assert_eq!(p["identity"]["token_id"], claims["jti"]);
    assert_eq!(p["identity"]["groups"], json!(["etl", "etl-config"]));
    // The IdP's group put agent-etl in Group "etl": it may write.
    ok(psql_token(
        &s.gw,
        "agent-etl",
        &token,
        "INSERT INTO orders VALUES (6, 'new')",
    ));

    // Every way a token can be wrong, with the reason in the ledger.
    let t = now();
    let base = json!({"iss": s.idp.issuer, "sub": "agent-etl", "client_id": "agent-etl", "aud": AUDIENCE, "iat": t, "exp": t + 300});
    let with = |patch: Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let parts: Vec<&str> = token.split('.').collect();
    let evil_payload = {
        let (_, mut c) = decode_jwt(&token);
        c["sub"] = json!("agent-admin");
        base64url(c.to_string().as_bytes())
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            s.idp.sign("rs", json!({}), with(json!({"exp": t - 3600}))),
            "expired at",
        ),
        (
            "not yet valid",
            s.idp.sign("rs", json!({}), with(json!({"nbf": t + 3600}))),
            "not valid before",
        ),
        (
            "wrong audience",
            s.idp
                .sign("rs", json!({}), with(json!({"aud": "urn:other-service"}))),
            "audience",
        ),
        (
            "wrong issuer",
            s.idp
                .sign("rs", json!({}), with(json!({"iss": "http://127.0.0.1:1"}))),
            "is not configured",
        ),
        (
            "tampered",
            format!("{}.{}.{}", parts[0], evil_payload, parts[2]),
            "signature does not verify",
        ),
        (
            "alg none",
            s.idp.sign("none", json!({}), base.clone()),
            "alg \"none\"",
        ),
        (
            "HS256 keyed with the public key",
            s.idp.sign("hs-with-public-key", json!({}), base.clone()),
            "HMAC",
        ),
        (
            "unknown kid",
            s.idp.sign("rs", json!({"kid": "made-up"}), base.clone()),
            "not published",
        ),
        (
            "for another agent",
            s.idp.client_token(SUPPORT_CLIENT.0, SUPPORT_CLIENT.1),
            "it is for agent \"agent-support\"",
        ),
    ];
    for (what, bad, reason) in &cases {
        let out = psql_token(&s.gw, "agent-etl", bad, "SELECT 1");
        assert!(!out.status.success(), "{what}: a bad token logged in");
        let err = stderr(&out);
        assert!(
            err.contains("password authentication failed"),
            "{what}: {err}"
        );
        assert!(
            err.contains(reason),
            "{what}: the client is told why ({reason}): {err}"
        );
    }
    let failures: Vec<String> =
        s.gw.events_of("auth_failure")
            .iter()
            .map(|e| e.json().to_string())
            .collect();
    for (what, _, reason) in &cases {
        assert!(
            failures
                .iter()
                .any(|f| f.contains(&reason.replace('"', "\\\""))),
            "{what}: no auth_failure event with {reason:?} in {failures:#?}"
        );
    }
    // ES256 and EdDSA keys of the provider are accepted like RS256.
    for key in ["es", "ed"] {
        let good = s.idp.sign(key, json!({}), base.clone());
        ok(psql_token(&s.gw, "agent-etl", &good, "SELECT 1"));
    }

    // Without TLS a token cannot be sent (libpq would be asked for SCRAM and fail), and the
    // hint says so.
    let out =
        s.gw.psql_as("agent-etl", &token, DB, "disable", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sslmode=require"), "{}", stderr(&out));

    // Key rotation at the provider: the new kid is fetched without restarting the gateway.
    let old_kids = s.idp.kids();
    s.idp.rotate();
    let fresh = s.idp.client_token(ETL_CLIENT.0, ETL_CLIENT.1);
    let (header, _) = decode_jwt(&fresh);
    assert!(
        !old_kids.contains(&header["kid"].as_str().unwrap_or("").to_string()),
        "a new kid signs"
    );
    std::thread::sleep(Duration::from_millis(1100)); // past jwks_min_refresh_secs
    assert_eq!(
        ok(psql_token(
            &s.gw,
            "agent-etl",
            &fresh,
            "SELECT count(*) FROM orders"
        ))
        .trim(),
        "6"
    );
    assert!(
        s.gw.log().matches("fetched JWKS").count() >= 2,
        "{}",
        s.gw.log()
    );

    // API keys keep working beside tokens.
    ok(s.gw.psql(&["-c", "SELECT 1"]));
    ok(s.gw.cli(&["audit", "verify"]));
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn token_exchange_carries_the_human_to_the_ledger_and_to_policy() {
    let s = setup("");
    let agent = s.idp.client_token(ETL_CLIENT.0, ETL_CLIENT.1);
    let alice = s.idp.human_token(
        json!({"sub": "alice@example.com", "groups": ["dba"], "may_act": {"sub": "agent-etl"}}),
    );

    // On its own, agent-etl may not update (no human behind it).
    let out = psql_token(
        &s.gw,
        "agent-etl",
        &agent,
        "UPDATE orders SET status = 'x' WHERE id = 1",
    );
    assert!(
        stderr(&out).contains("updates-need-a-human"),
        "{}",
        stderr(&out)
    );

    let (status, body) = exchange(&s, &alice, &agent);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    let delegated = body["access_token"].as_str().expect("token").to_string();
    let (_, c) = decode_jwt(&delegated);
    assert_eq!(c["sub"], "alice@example.com");
    assert_eq!(c["act"]["sub"], "agent-etl");
    assert!(
        body["expires_in"].as_i64().unwrap_or(0) <= 300,
        "never outlives the tokens presented"
    );

    // Acting for alice, the update is allowed, and every event names the chain.
    ok(psql_token(
        &s.gw,
        "agent-etl",
        &delegated,
        "UPDATE orders SET status = 'shipped' WHERE id = 1",
    ));
    let p = session_principal(&s.gw);
    assert_eq!(p["auth_method"], "gateway-token");
    let chain: Vec<&str> = p["identity"]["chain"]
        .as_array()
        .expect("chain")
        .iter()
        .filter_map(|l| l["subject"].as_str())
        .collect();
    assert_eq!(chain, ["alice@example.com", "agent-etl"]);
    // The agent's link keeps its own token's sub and issuer at the provider.
    let agent_link = &p["identity"]["chain"][1];
    assert_eq!(agent_link["issuer"], s.idp.issuer.as_str());
    assert_eq!(agent_link["idp_subject"], "agent-etl");
    assert!(p["identity"]["chain"][0].get("idp_subject").is_none());
    let st =
        s.gw.statements()
            .into_iter()
            .rev()
            .find_map(|(_, e)| match e {
                EventData::Statement {
                    principal,
                    text,
                    verdict,
                    ..
                } if text.starts_with("UPDATE") && verdict == "allow" => Some(principal),
                _ => None,
            })
            .expect("the allowed update is recorded");
    assert_eq!(st.requester(), Some("alice@example.com"));
    assert!(s
        .gw
        .events_of("token_issued")
        .iter()
        .any(|e| e.json().contains("alice@example.com")));

    // A provider whose service accounts have opaque subjects: the agent name comes from
    // client_id, and the chain keeps the sub the provider knows the agent by.
    let t = now();
    let opaque = s.idp.sign(
        "rs",
        json!({}),
        json!({"iss": s.idp.issuer, "sub": "6f1c9a40-service-account", "client_id": "agent-etl",
               "aud": AUDIENCE, "iat": t, "exp": t + 300}),
    );
    let (status, body) = exchange(&s, &alice, &opaque);
    assert_eq!(status, 200, "{body}");
    let delegated = body["access_token"].as_str().expect("token").to_string();
    ok(psql_token(&s.gw, "agent-etl", &delegated, "SELECT 1"));
    let p = session_principal(&s.gw);
    assert_eq!(p["agent"], "agent-etl");
    assert_eq!(
        p["identity"]["chain"],
        json!([
            {"subject": "alice@example.com", "issuer": s.idp.issuer},
            {"subject": "agent-etl", "issuer": s.idp.issuer, "idp_subject": "6f1c9a40-service-account"}
        ])
    );

    // may_act names agent-etl: agent-support cannot act for alice.
    let support = s.idp.client_token(SUPPORT_CLIENT.0, SUPPORT_CLIENT.1);
    let (status, body) = exchange(&s, &alice, &support);
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("may_act"),
        "{body}"
    );
    // A forged subject token is refused, and the refusal is recorded.
    let (status, body) = exchange(
        &s,
        &s.idp
            .sign("none", json!({}), json!({"sub": "alice@example.com"})),
        &agent,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // Indexing runs behind the acknowledgement: wait for the events, do not sample once.
    assert!(s.gw.wait_for("token_refused", 2).len() >= 2);
    // Unsupported grant type: RFC 6749 error.
    let (status, body) = token_endpoint(&s, &[("grant_type", "password")]);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    ok(s.gw.cli(&["audit", "verify"]));
}

/// The gap: an agent posing as its own human. Its own token (or another client's) as the
/// subject_token, or one principal as both subject and actor, would give a chain with a
/// "requester" and pass `updates-need-a-human`. Each is refused with 403 invalid_request and a
/// token_refused event that says why; a person's token still works, and a delegated token still
/// grows the chain.
#[test]
fn an_agent_cannot_be_its_own_human_in_a_token_exchange() {
    let s = setup("");
    let etl = s.idp.client_token(ETL_CLIENT.0, ETL_CLIENT.1);
    let support = s.idp.client_token(SUPPORT_CLIENT.0, SUPPORT_CLIENT.1);
    let alice = s
        .idp
        .human_token(json!({"sub": "alice@example.com", "groups": ["dba"]}));

    let cases: Vec<(&str, &str, &str, &str)> = vec![
        (
            "agent-etl's own token as its own human",
            &etl,
            &etl,
            "the subject_token is agent \"agent-etl\"'s own token",
        ),
        (
            "another agent client's token as the human (agent-support is no [[agents]] entry, and no may_act)",
            &support,
            &etl,
            "the subject_token is client \"agent-support\"'s own token",
        ),
        (
            "a person as both subject and actor",
            &alice,
            &alice,
            "the subject_token and the actor_token are the same principal (\"alice@example.com\")",
        ),
    ];
    for (what, subject, actor, reason) in &cases {
        let (status, body) = exchange(&s, subject, actor);
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(body["error"], "invalid_request", "{what}: {body}");
        let description = body["error_description"].as_str().unwrap_or("");
        assert!(
            description.starts_with("not a person: ") && description.contains(reason),
            "{what}: the client is told why ({reason}): {body}"
        );
    }
    // Recorded, each with its reason, at the token endpoint; no token was issued.
    let refused = refusals(&s.gw);
    for (what, _, _, reason) in &cases {
        assert!(
            refused
                .iter()
                .any(|(ep, r)| ep == "/oauth/token token-exchange" && r.contains(reason)),
            "{what}: no token_refused event with {reason:?} in {refused:#?}"
        );
    }
    assert!(s.gw.events_of("token_issued").is_empty());

    // So agent-etl still has no human behind it: the update stays forbidden.
    let out = psql_token(
        &s.gw,
        "agent-etl",
        &etl,
        "UPDATE orders SET status = 'x' WHERE id = 1",
    );
    assert!(
        stderr(&out).contains("updates-need-a-human"),
        "{}",
        stderr(&out)
    );

    // A person's token is a subject, and a delegated token (alice → agent-etl) still grows the
    // chain: its sub is the person, the agents are in its act claim.
    let (status, body) = exchange(&s, &alice, &etl);
    assert_eq!(status, 200, "{body}");
    let delegated = body["access_token"].as_str().expect("token").to_string();
    let (status, body) = exchange(&s, &delegated, &support);
    assert_eq!(status, 200, "{body}");
    let (_, c) = decode_jwt(body["access_token"].as_str().expect("token"));
    assert_eq!(c["sub"], "alice@example.com");
    assert_eq!(c["act"]["sub"], "agent-support");
    assert_eq!(c["act"]["act"]["sub"], "agent-etl");
    // …but the agent acting now cannot be the subject's person.
    let (status, body) = exchange(&s, &delegated, &alice);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("invalid_request")),
        "{body}"
    );
    ok(s.gw.cli(&["audit", "verify"]));
}

/// Grants are a person's act: an agent's token cannot create, list or revoke them (403, a
/// clear message, a token_refused event), nor can a delegated token (an agent acting for the
/// person). The person's own token still does all three.
#[test]
fn agent_tokens_cannot_create_list_or_revoke_grants() {
    let s = setup("");
    let etl = s.idp.client_token(ETL_CLIENT.0, ETL_CLIENT.1);
    let support = s.idp.client_token(SUPPORT_CLIENT.0, SUPPORT_CLIENT.1);
    let alice = s
        .idp
        .human_token(json!({"sub": "alice@example.com", "groups": ["dba"]}));
    let delegated = s.idp.human_token(
        json!({"sub": "alice@example.com", "groups": ["dba"], "act": {"sub": "agent-etl"}}),
    );
    let create = [
        "create",
        "--agent",
        "agent-etl",
        "--connection",
        DB,
        "--reason",
        "backfill order statuses (INC-7)",
        "--ttl",
        "10m",
        "--actions",
        "select,update",
    ];
    let refused_with = |out: std::process::Output, what: &str, reason: &str| {
        assert!(!out.status.success(), "{what}: an agent token was accepted");
        let err = stderr(&out);
        assert!(
            err.contains("HTTP 403") && err.contains("not a person") && err.contains(reason),
            "{what}: the CLI says why ({reason}): {err}"
        );
    };
    refused_with(
        grant_cli(&s, &etl, &create),
        "agent-etl's own token, creating a grant for itself",
        "your token is agent \"agent-etl\"'s own token",
    );
    refused_with(
        grant_cli(&s, &support, &create),
        "agent-support's client token",
        "your token is client \"agent-support\"'s own token",
    );
    refused_with(
        grant_cli(&s, &delegated, &create),
        "a delegated token (agent-etl acting for alice)",
        "your token is delegated (agent \"agent-etl\" acting for its subject)",
    );
    assert!(s.gw.events_of("grant_created").is_empty());

    // Alice's own token: a grant. The agent can neither list it nor revoke it.
    let credential = ok(grant_cli(&s, &alice, &create)).trim().to_string();
    let (_, c) = decode_jwt(&credential);
    let grant_id = c["grant"].as_str().expect("grant claim").to_string();
    refused_with(
        grant_cli(&s, &etl, &["list"]),
        "an agent listing grants",
        "your token is agent \"agent-etl\"'s own token",
    );
    refused_with(
        grant_cli(&s, &etl, &["revoke", &grant_id]),
        "an agent revoking a grant",
        "your token is agent \"agent-etl\"'s own token",
    );
    assert!(s.gw.events_of("grant_revoked").is_empty());
    let list = ok(grant_cli(&s, &alice, &["list"]));
    assert!(
        list.contains(&grant_id) && list.contains("active"),
        "{list}"
    );
    ok(psql_token(&s.gw, "agent-etl", &credential, "SELECT 1"));

    // Every refusal is in the ledger with the endpoint and the reason.
    let refused = refusals(&s.gw);
    for ep in ["/v1/grants", "/v1/grants (list)", "/v1/grants/revoke"] {
        assert!(
            refused
                .iter()
                .any(|(e, r)| e == ep && r.starts_with("not a person: your token")),
            "no token_refused event at {ep} in {refused:#?}"
        );
    }
    assert_eq!(
        refused.iter().filter(|(e, _)| e == "/v1/grants").count(),
        3,
        "{refused:#?}"
    );
    ok(s.gw.cli(&["audit", "verify"]));
}

#[test]
fn task_grants_narrow_policy_end_with_revocation_and_survive_restart() {
    let mut s = setup("");
    let alice = s
        .idp
        .human_token(json!({"sub": "alice@example.com", "groups": ["dba"]}));
    let config = s.gw.config.clone();
    let grant = |args: &[&str]| {
        let mut cmd = Command::new(exe());
        cmd.arg("grant").args(args).arg("--config").arg(&config);
        cmd.env("PORTCULLIS_TOKEN", &alice);
        cmd.output().expect("run portcullis grant")
    };
    // Issue: select and delete only, with a reason and a ticket.
    let out = grant(&[
        "create",
        "--agent",
        "agent-etl",
        "--connection",
        DB,
        "--reason",
        "fix order 1 status (INC-42)",
        "--ticket",
        "https://tickets.example/INC-42",
        "--ttl",
        "10m",
        "--actions",
        "select,delete",
    ]);
    let credential = ok(out).trim().to_string();
    let (_, c) = decode_jwt(&credential);
    let grant_id = c["grant"].as_str().expect("grant claim").to_string();

    // Within the grant: reads work and carry the grant, the requester and the reason.
    assert_eq!(
        ok(psql_token(
            &s.gw,
            "agent-etl",
            &credential,
            "SELECT count(*) FROM orders"
        ))
        .trim(),
        "5"
    );
    let p = session_principal(&s.gw);
    assert_eq!(p["auth_method"], "grant");
    assert_eq!(p["identity"]["grant"]["id"], grant_id.as_str());
    assert_eq!(p["identity"]["grant"]["requester"], "alice@example.com");
    assert_eq!(
        p["identity"]["grant"]["reason"],
        "fix order 1 status (INC-42)"
    );
    assert_eq!(
        p["identity"]["grant"]["ticket"],
        "https://tickets.example/INC-42"
    );
    // Outside the grant (update is not in it) → refused even though policy would allow it.
    let out = psql_token(
        &s.gw,
        "agent-etl",
        &credential,
        "UPDATE orders SET status = 'x' WHERE id = 1",
    );
    assert!(
        stderr(&out).contains(&format!("outside task grant {grant_id}")),
        "{}",
        stderr(&out)
    );
    // In the grant but forbidden by the agent's policy → still refused: a grant never widens.
    let out = psql_token(
        &s.gw,
        "agent-etl",
        &credential,
        "DELETE FROM orders WHERE id = 1",
    );
    assert!(
        stderr(&out).contains("etl-never-deletes"),
        "{}",
        stderr(&out)
    );
    // Only for its connection.
    let out = s.gw.psql_as(
        "agent-etl",
        &credential,
        "unreachable",
        "require",
        &["-c", "SELECT 1"],
    );
    assert!(
        stderr(&out).contains("is for connection"),
        "{}",
        stderr(&out)
    );

    // A second grant that stays active across the restart below.
    let other = ok(grant(&[
        "create",
        "--agent",
        "agent-etl",
        "--connection",
        DB,
        "--reason",
        "nightly export",
        "--ttl",
        "1h",
    ]));
    let list = ok(grant(&["list"]));
    assert!(
        list.contains(&grant_id) && list.contains("nightly export"),
        "{list}"
    );

    // A live psql session under the grant ends the moment the grant is revoked.
    let mut live = Command::new(bins().path("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &s.gw.port.to_string(),
            "-U",
            "agent-etl",
            "-d",
            DB,
        ])
        .env("PGPASSWORD", &credential)
        .env("PGSSLMODE", "require")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    let mut stdin = live.stdin.take().expect("stdin");
    writeln!(stdin, "SELECT 'still here';").expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s
        .gw
        .events_of("statement")
        .iter()
        .any(|e| e.json().contains("still here"))
    {
        assert!(
            Instant::now() < deadline,
            "live session did not run its first statement"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ok(grant(&["revoke", &grant_id]));
    assert!(out.contains("1 live session(s) ended"), "{out}");
    let _ = writeln!(stdin, "SELECT 'after revocation';");
    drop(stdin);
    let done = live.wait_with_output().expect("psql ends");
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(
        err.contains(&format!("task grant {grant_id} was revoked")),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&done.stdout).contains("after revocation"));
    assert!(!s
        .gw
        .events_of("statement")
        .iter()
        .any(|e| e.json().contains("after revocation")));
    let closes = s.gw.events_of("session_close");
    assert!(
        closes.iter().any(|e| e.json().contains("was revoked")),
        "session_close names the revocation"
    );
    // The credential no longer logs in.
    let out = psql_token(&s.gw, "agent-etl", &credential, "SELECT 1");
    assert!(
        stderr(&out).contains("revoked by alice@example.com"),
        "{}",
        stderr(&out)
    );

    // Grants are ledger events: after a restart the revoked one stays revoked, the other works.
    s.gw.stop();
    s.gw.spawn();
    let out = psql_token(&s.gw, "agent-etl", &credential, "SELECT 1");
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    ok(psql_token(&s.gw, "agent-etl", other.trim(), "SELECT 1"));

    // Grants are issued by a person with a valid token; nonsense is refused clearly.
    let mut cmd = Command::new(exe());
    let out = cmd
        .args(["grant", "list", "--config"])
        .arg(&s.gw.config)
        .env("PORTCULLIS_TOKEN", "not-a-token")
        .output()
        .expect("run");
    assert!(
        !out.status.success() && stderr(&out).contains("401"),
        "{}",
        stderr(&out)
    );
    let out = grant(&[
        "create",
        "--agent",
        "agent-etl",
        "--connection",
        "nope",
        "--reason",
        "x y z",
        "--ttl",
        "1h",
    ]);
    assert!(
        stderr(&out).contains("connection \\\"nope\\\" does not exist")
            || stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );
    let out = grant(&[
        "create",
        "--agent",
        "agent-etl",
        "--connection",
        DB,
        "--reason",
        "x y z",
        "--ttl",
        "1h",
        "--actions",
        "selekt",
    ]);
    assert!(stderr(&out).contains("unknown action"), "{}", stderr(&out));
    ok(s.gw.cli(&["audit", "verify"]));
    let tail = ok(s.gw.cli(&["audit", "tail", "-n", "200"]));
    assert!(
        tail.contains(&format!("GRANT REVOKED {grant_id} by alice@example.com")),
        "{tail}"
    );
}

/// RFC 7522: a SAML assertion signed by the IdP's key (xmlsec1, a test key pair made here)
/// exchanged for a gateway token, then used with psql; tampered and replayed ones refused.
#[test]
fn saml_bearer_assertion_becomes_a_gateway_token() {
    for tool in ["xmlsec1", "openssl"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok()
                || Command::new(tool).arg("version").output().is_ok(),
            "{tool} not found: apt-get install -y xmlsec1 openssl"
        );
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keys.path().join("idp.key");
    let cert = keys.path().join("idp.crt");
    ok(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-saml-idp",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl"));
    let extra = format!(
        r#"
[[identity.saml]]
name = "test-saml"
entity_id = "https://idp.example/saml"
certificate_file = "{}"
audience = "urn:portcullis:gateway"
"#,
        cert.display()
    );
    let s = setup(&extra);
    let recipient = format!("{}/oauth/token", s.api);
    let sign = |name_id: &str, not_after: i64| -> String {
        let t = now();
        let iso = |secs: i64| {
            // xmlsec1 does not care; the gateway parses xs:dateTime in UTC.
            let out = Command::new("date")
                .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
                .output()
                .expect("date");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let id = format!("_a{}", uuid_like());
        let xml = format!(
            r##"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{now}"><saml:Issuer>https://idp.example/saml</saml:Issuer><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature><saml:Subject><saml:NameID>{name_id}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="{after}" Recipient="{recipient}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{before}" NotOnOrAfter="{after}"><saml:AudienceRestriction><saml:Audience>urn:portcullis:gateway</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AttributeStatement><saml:Attribute Name="groups"><saml:AttributeValue>etl</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion>"##,
            now = iso(t),
            before = iso(t - 60),
            after = iso(not_after),
        );
        let tpl = keys.path().join(format!("{id}.xml"));
        std::fs::write(&tpl, xml).expect("write template");
        let signed = ok(Command::new("xmlsec1")
            .args(["--sign", "--privkey-pem"])
            .arg(&key)
            .args([
                "--id-attr:ID",
                "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
            ])
            .arg(&tpl)
            .output()
            .expect("xmlsec1"));
        base64url(signed.as_bytes())
    };
    let bearer = |assertion: &str| {
        token_endpoint(
            &s,
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:saml2-bearer",
                ),
                ("assertion", assertion),
            ],
        )
    };
    let good = sign("agent-etl", now() + 300);
    let (status, body) = bearer(&good);
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(
        ok(psql_token(
            &s.gw,
            "agent-etl",
            &token,
            "SELECT count(*) FROM orders"
        ))
        .trim(),
        "5"
    );
    let p = session_principal(&s.gw);
    assert_eq!(p["identity"]["groups"], json!(["etl", "etl-config"]));
    // The same assertion twice: a bearer assertion is good for one exchange.
    let (status, body) = bearer(&good);
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("already exchanged"),
        "{body}"
    );
    // Tampered after signing: the NameID changed.
    let xml = String::from_utf8(decode_b64url(&sign("agent-etl", now() + 300))).expect("utf8");
    let tampered = base64url(xml.replace(">agent-etl<", ">agent-admin<").as_bytes());
    let (status, body) = bearer(&tampered);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("SAML assertion refused"),
        "{body}"
    );
    // Expired.
    let (status, body) = bearer(&sign("agent-etl", now() - 120));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("expired"),
        "{body}"
    );
    ok(s.gw.cli(&["audit", "verify"]));
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        now(),
        std::process::id() as u64 * 7919 + rand_u32() as u64
    )
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now() as u64);
    h.finish() as u32
}

fn decode_b64url(s: &str) -> Vec<u8> {
    common::idp::base64url_decode(s).expect("base64url")
}

/// A configuration that `check` accepts apart from its `[[identity.oidc]]` entry.
fn config_with_issuer(dir: &std::path::Path, oidc: &str) -> std::path::PathBuf {
    let path = dir.join("portcullis.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
data_dir = "data"

[[listeners]]
name = "pg"
protocol = "postgres"
bind = "127.0.0.1:{port}"

[[connections]]
name = "db"
type = "postgres"
host = "127.0.0.1"
database = "db"
user = "postgres"

[[identity.oidc]]
name = "corp"
audiences = ["{AUDIENCE}"]
{oidc}
"#,
            port = free_port()
        ),
    )
    .expect("write config");
    path
}

fn check_config(path: &std::path::Path) -> std::process::Output {
    Command::new(exe())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("run portcullis check")
}

/// `portcullis serve` on a configuration it must refuse: it exits (within 30 s) with an error.
fn serve_refuses(path: &std::path::Path) -> String {
    let log = path.with_file_name("serve.log");
    let mut child = Command::new(exe())
        .args(["serve", "--config"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn portcullis serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "portcullis serve accepted the configuration and kept running:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "serve exited with success: {text}");
    text
}

/// Plain http to a provider that is not on loopback would let anyone on the path swap the
/// signing keys: `check` and `serve` both refuse it, naming the issuer, the setting (with its
/// line) and the fix. Loopback stays accepted; `allow_http = true` accepts it with a warning;
/// an unreadable `ca_file` is refused up front.
#[test]
fn plain_http_issuers_off_loopback_are_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_with_issuer(dir.path(), r#"issuer = "http://idp.corp.example""#);
    let line = std::fs::read_to_string(&path)
        .expect("read config")
        .lines()
        .position(|l| l.contains("http://idp.corp.example"))
        .expect("issuer line")
        + 1;
    let out = check_config(&path);
    assert!(!out.status.success(), "check accepted: {}", stdout(&out));
    let err = stderr(&out);
    for text in [err.clone(), serve_refuses(&path)] {
        for needle in [
            format!("portcullis.toml:{line}"),
            "identity.oidc \"corp\"".to_string(),
            "issuer = \"http://idp.corp.example\"".to_string(),
            "plain http to idp.corp.example, which is not a loopback address".to_string(),
            "https://".to_string(),
            "ca_file".to_string(),
            "allow_http = true".to_string(),
        ] {
            assert!(text.contains(&needle), "{needle:?} missing in: {text}");
        }
    }

    // A jwks_uri over plain http is refused the same way, naming jwks_uri.
    let path = config_with_issuer(
        dir.path(),
        "issuer = \"https://idp.corp.example\"\njwks_uri = \"http://keys.corp.example/jwks\"",
    );
    let out = check_config(&path);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("jwks_uri = \"http://keys.corp.example/jwks\""),
        "{}",
        stderr(&out)
    );

    // Loopback over http (what the test provider does): accepted, no warning.
    let path = config_with_issuer(dir.path(), r#"issuer = "http://127.0.0.1:4000""#);
    let out = check_config(&path);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("allow_http"), "{}", stderr(&out));

    // allow_http = true: accepted, with a warning that says what it costs.
    let path = config_with_issuer(
        dir.path(),
        "issuer = \"http://idp.corp.example\"\nallow_http = true",
    );
    let out = check_config(&path);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning:")
            && err.contains("identity.oidc \"corp\": allow_http = true")
            && err.contains("over plain http"),
        "{err}"
    );

    // A ca_file that cannot be read: refused by check, naming the file.
    let path = config_with_issuer(
        dir.path(),
        "issuer = \"https://idp.corp.example\"\nca_file = \"missing-ca.pem\"",
    );
    let out = check_config(&path);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("identity.oidc \"corp\": ca_file") && err.contains("missing-ca.pem"),
        "{err}"
    );
}

/// A provider behind a private CA, over HTTPS: with `ca_file` its keys are fetched and its
/// tokens accepted; without, the fetch fails and the ledger and the client's DETAIL name the
/// TLS cause, with a hint that is not "get a fresh token".
#[test]
fn an_https_issuer_is_trusted_through_ca_file_and_an_untrusted_certificate_is_named() {
    let cluster = target(&[]);
    let idp = Idp::start();
    let ca = test_ca();
    let trusted = idp.https_front(&ca);
    let untrusted = idp.https_front(&ca);
    let jwks = idp.jwks_path();
    let trusted_iss = format!("https://127.0.0.1:{}", trusted.port);
    let untrusted_iss = format!("https://127.0.0.1:{}", untrusted.port);
    let gw = Gateway::start(
        &cluster,
        GatewayOptions {
            files: vec![("idp-ca.pem".into(), ca.ca_pem.clone().into_bytes())],
            extra_config: format!(
                r#"
[[agents]]
name = "agent-etl"

[[identity.oidc]]
name = "private-ca"
issuer = "{trusted_iss}"
jwks_uri = "{trusted_iss}{jwks}"
audiences = ["{AUDIENCE}"]
ca_file = "idp-ca.pem"

[[identity.oidc]]
name = "no-ca-file"
issuer = "{untrusted_iss}"
jwks_uri = "{untrusted_iss}{jwks}"
audiences = ["{AUDIENCE}"]
"#
            ),
            ..Default::default()
        },
    );
    let t = now();
    let token_from = |iss: &str| {
        idp.sign(
            "rs",
            json!({}),
            json!({"iss": iss, "sub": "agent-etl", "client_id": "agent-etl", "aud": AUDIENCE,
                   "iat": t, "exp": t + 300}),
        )
    };

    // Trusted through ca_file: the keys are fetched over TLS, the token logs in.
    ok(psql_token(
        &gw,
        "agent-etl",
        &token_from(&trusted_iss),
        "SELECT 1",
    ));
    let p = session_principal(&gw);
    assert_eq!(p["identity"]["issuer"], trusted_iss.as_str());

    // The same certificate without ca_file: refused, and everyone is told why.
    let out = psql_token(&gw, "agent-etl", &token_from(&untrusted_iss), "SELECT 1");
    assert!(
        !out.status.success(),
        "an untrusted provider's token logged in"
    );
    let err = stderr(&out);
    for needle in [
        "could not fetch the identity provider's keys",
        "invalid peer certificate: UnknownIssuer",
        "set ca_file",
        "not a problem with the token",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(!err.contains("get a fresh token"), "{err}");
    let failures: Vec<String> = gw
        .events_of("auth_failure")
        .iter()
        .map(|e| e.json().to_string())
        .collect();
    assert!(
        failures.iter().any(|f| f.contains(&untrusted_iss)
            && f.contains("invalid peer certificate: UnknownIssuer")
            && f.contains("\"sqlstate\":\"08001\"")),
        "{failures:#?}"
    );
    ok(gw.cli(&["audit", "verify"]));
}

/// The provider is down: the client and the ledger get the root cause (connection refused),
/// not only "error sending request"; the hint says it is not the token; the token endpoint
/// answers 503 (worth a retry), not "invalid_grant".
#[test]
fn an_unreachable_issuer_is_reported_with_its_root_cause() {
    let mut s = setup("");
    let token = s.idp.client_token(ETL_CLIENT.0, ETL_CLIENT.1);
    let alice = s
        .idp
        .human_token(json!({"sub": "alice@example.com", "groups": ["dba"]}));
    s.idp.stop();

    let out = psql_token(&s.gw, "agent-etl", &token, "SELECT 1");
    assert!(
        !out.status.success(),
        "logged in without the provider's keys"
    );
    let err = stderr(&out);
    for needle in [
        "could not fetch the identity provider's keys",
        s.idp.issuer.as_str(),
        "Connection refused",
        "not a problem with the token",
        "ca_file",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(!err.contains("get a fresh token"), "{err}");
    let failures: Vec<String> =
        s.gw.events_of("auth_failure")
            .iter()
            .map(|e| e.json().to_string())
            .collect();
    assert!(
        failures
            .iter()
            .any(|f| f.contains("Connection refused") && f.contains("\"sqlstate\":\"08001\"")),
        "{failures:#?}"
    );

    std::thread::sleep(Duration::from_millis(2100)); // past the failed-fetch backoff
    let (status, body) = exchange(&s, &alice, &token);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("Connection refused"),
        "{body}"
    );
    ok(s.gw.cli(&["audit", "verify"]));
}
