//! The test OpenID provider itself (tests/idp/provider.mjs, panva's oidc-provider under Node):
//! real client_credentials tokens, the test-only endpoints, key rotation, no orphan on drop.

#[path = "common/idp.rs"]
mod idp;

use idp::{decode_jwt, Idp, AUDIENCE, ETL_CLIENT, SUPPORT_CLIENT};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn provider_issues_tokens_and_rotates_keys() {
    let mut idp = Idp::start();
    let port = idp.port;

    let discovery = idp.discovery();
    assert_eq!(discovery["issuer"], idp.issuer);
    assert_eq!(discovery["jwks_uri"], format!("{}/jwks", idp.issuer));
    let kids = idp.kids();
    assert_eq!(kids.len(), 3, "RS256, ES256, EdDSA: {:?}", idp.jwks());
    let algs: Vec<_> = idp.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(algs, ["RS256", "ES256", "EdDSA"]);
    for key in idp.jwks()["keys"].as_array().unwrap() {
        assert!(key.get("d").is_none(), "private part published: {key}");
    }

    // A real client_credentials grant.
    let token = idp.client_token(ETL_CLIENT.0, ETL_CLIENT.1);
    let (header, claims) = decode_jwt(&token);
    eprintln!("client_credentials header: {header}\nclaims: {claims}");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], kids[0].as_str());
    assert_eq!(claims["iss"], idp.issuer);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], "agent-etl");
    assert_eq!(claims["client_id"], "agent-etl");
    assert_eq!(claims["groups"], json!(["etl"]));
    assert_eq!(claims["scope"], "db");
    assert!(claims["jti"].is_string());
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!((iat - now()).abs() < 60, "iat {iat}");
    assert_eq!(exp - iat, 300);

    let (_, support) = decode_jwt(&idp.client_token(SUPPORT_CLIENT.0, SUPPORT_CLIENT.1));
    assert_eq!(support["sub"], "agent-support");
    assert_eq!(support["groups"], json!(["support"]));

    // client_secret_post works too; a wrong secret does not.
    let (status, body) = idp.token_request(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "agent-etl"),
            ("client_secret", "etl-secret"),
        ],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        decode_jwt(body["access_token"].as_str().unwrap()).1["groups"],
        json!(["etl"])
    );
    let (status, body) = idp.token_request(
        &[("grant_type", "client_credentials")],
        Some(("agent-etl", "wrong")),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");

    // A human's token, with a delegation to an agent.
    let human = idp.human_token(json!({
        "sub": "alice@example.com",
        "groups": ["analysts"],
        "may_act": { "sub": "agent-etl" },
    }));
    let (header, claims) = decode_jwt(&human);
    assert_eq!(header["kid"], kids[0].as_str());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["iss"], idp.issuer);
    assert_eq!(claims["sub"], "alice@example.com");
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["groups"], json!(["analysts"]));
    assert_eq!(claims["may_act"], json!({ "sub": "agent-etl" }));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    let (_, short) =
        decode_jwt(&idp.human_token(json!({ "sub": "bob", "ttl": -30, "aud": "other" })));
    assert_eq!(short["aud"], "other");
    assert!(short["exp"].as_i64().unwrap() < now());
    assert!(short.get("may_act").is_none());

    // Arbitrary signing, for negative tests.
    let claims = json!({ "iss": idp.issuer, "sub": "x", "aud": AUDIENCE, "exp": now() - 10 });
    for (key, alg, kid) in [
        ("rs", "RS256", Some(&kids[0])),
        ("es", "ES256", Some(&kids[1])),
        ("ed", "EdDSA", Some(&kids[2])),
        ("hs-with-public-key", "HS256", Some(&kids[0])),
        ("none", "none", None),
    ] {
        let token = idp.sign(key, json!({}), claims.clone());
        let (h, c) = decode_jwt(&token);
        assert_eq!(h["alg"], alg, "{key}");
        assert_eq!(h["kid"].as_str(), kid.map(String::as_str), "{key}");
        assert_eq!(c, claims, "{key}");
        assert_eq!(token.ends_with('.'), key == "none", "{key}: {token}");
    }
    let (h, _) = decode_jwt(&idp.sign("es", json!({ "alg": "RS256", "typ": null }), json!({})));
    assert_eq!(h, json!({ "alg": "RS256", "kid": kids[1] }));

    // Rotation: a new RS256 key signs, the old keys stay published.
    idp.rotate();
    assert_eq!(idp.port, port);
    let rotated = idp.kids();
    assert_eq!(rotated.len(), kids.len() + 1, "{rotated:?}");
    assert!(!kids.contains(&rotated[0]), "{rotated:?}");
    assert_eq!(&rotated[1..], &kids[..]);
    let (header, claims) = decode_jwt(&idp.client_token(ETL_CLIENT.0, ETL_CLIENT.1));
    assert_eq!(header["kid"], rotated[0].as_str());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], idp.issuer);
    let (header, _) = decode_jwt(&idp.human_token(json!({ "sub": "alice@example.com" })));
    assert_eq!(header["kid"], rotated[0].as_str());

    // Dropping the harness stops the provider.
    drop(idp);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the provider still listens after drop"
    );
}
