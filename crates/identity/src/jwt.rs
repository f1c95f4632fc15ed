//! Looking at a JWT before trusting it, and the claim checks every token passes.
//!
//! The header and payload are read *unverified* only to pick the issuer and the key; nothing
//! read here is believed until the signature has been checked with a key the gateway chose
//! (from the issuer's JWKS, or its own). The algorithm is never taken from the token alone:
//! `none` and every HMAC algorithm are refused before any key is looked at, so a token signed
//! with an RSA public key as an HMAC secret (algorithm confusion) cannot pass.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::IdentityError;

/// Claims of a token, as JSON.
pub type Claims = Map<String, Value>;

/// The parts of a JWT, decoded but not verified.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Claims,
}

pub(crate) fn rejected(reason: impl Into<String>) -> IdentityError {
    IdentityError::TokenRejected {
        reason: reason.into(),
    }
}

/// Splits and decodes a compact JWS. Refuses anything that is not three base64url parts with
/// JSON objects in the first two, and `alg` values that are never acceptable.
pub fn peek(token: &str) -> Result<Unverified, IdentityError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(rejected(
            "not a JWT: expected three base64url parts separated by dots",
        ));
    };
    let header: Map<String, Value> = decode_part(h, "header")?;
    let claims: Claims = decode_part(p, "payload")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| rejected("JWT header has no \"alg\""))?
        .to_string();
    if alg.eq_ignore_ascii_case("none") {
        return Err(rejected("alg \"none\" (unsigned token) is never accepted"));
    }
    if alg.to_ascii_uppercase().starts_with("HS") {
        return Err(rejected(format!(
            "alg {alg:?} (HMAC) is never accepted: tokens must be signed with the issuer's private key (RS256, ES256 or EdDSA)"
        )));
    }
    if header.contains_key("crit") {
        return Err(rejected(
            "JWT header has \"crit\" extensions, which are not supported",
        ));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Unverified { alg, kid, claims })
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| rejected(format!("JWT {what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| rejected(format!("JWT {what} is not a JSON object")))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 form of a Unix time, for messages.
pub fn show_time(secs: i64) -> String {
    portcullis_core::calendar::rfc3339_secs(secs)
}

/// The registered-claim checks, with messages that say which bound failed and by how much.
pub fn check_time_and_audience(
    claims: &Claims,
    issuer: &str,
    audiences: &[String],
    leeway: i64,
    now: i64,
) -> Result<(), IdentityError> {
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == issuer => {}
        Some(iss) => return Err(rejected(format!("issuer {iss:?} is not {issuer:?}"))),
        None => return Err(rejected("token has no \"iss\" claim")),
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| rejected("token has no numeric \"exp\" claim"))?;
    if now > exp + leeway {
        return Err(rejected(format!(
            "token expired at {} (now {}, leeway {leeway} s)",
            show_time(exp),
            show_time(now)
        )));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64) {
        if now + leeway < nbf {
            return Err(rejected(format!(
                "token not valid before {} (now {}, leeway {leeway} s)",
                show_time(nbf),
                show_time(now)
            )));
        }
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !auds.iter().any(|a| audiences.iter().any(|w| w == a)) {
        return Err(rejected(format!(
            "audience {auds:?} does not include any of {audiences:?}"
        )));
    }
    Ok(())
}

/// A claim that holds one string or a list of strings, as a list.
pub fn string_list(claims: &Claims, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn none_and_hmac_are_refused_before_any_key() {
        let body = b64(&serde_json::json!({"iss": "x"}));
        for alg in ["none", "NONE", "HS256", "hs512"] {
            let t = format!("{}.{body}.", b64(&serde_json::json!({ "alg": alg })));
            let e = peek(&t).unwrap_err().to_string();
            assert!(e.contains("never accepted"), "{alg}: {e}");
        }
        let ok = format!(
            "{}.{body}.c2ln",
            b64(&serde_json::json!({"alg": "RS256", "kid": "k"}))
        );
        let u = peek(&ok).expect("well-formed");
        assert_eq!((u.alg.as_str(), u.kid.as_deref()), ("RS256", Some("k")));
        assert!(peek("a.b").is_err());
        assert!(peek("not base64.x.y").is_err());
    }

    #[test]
    fn time_and_audience_checks_say_what_failed() {
        let c = |v: serde_json::Value| v.as_object().cloned().expect("object");
        let aud = vec!["gw".to_string()];
        let good = c(serde_json::json!({"iss": "i", "aud": ["x", "gw"], "exp": 1000, "nbf": 900}));
        assert!(check_time_and_audience(&good, "i", &aud, 30, 950).is_ok());
        assert!(
            check_time_and_audience(&good, "i", &aud, 30, 1029).is_ok(),
            "within leeway"
        );
        let e = check_time_and_audience(&good, "i", &aud, 30, 1031)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expired at 1970-01-01T00:16:40Z"), "{e}");
        let e = check_time_and_audience(&good, "i", &aud, 30, 800)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid before"), "{e}");
        let e = check_time_and_audience(&good, "j", &aud, 30, 950)
            .unwrap_err()
            .to_string();
        assert!(e.contains("issuer \"i\" is not \"j\""), "{e}");
        let e = check_time_and_audience(&good, "i", &["other".into()], 30, 950)
            .unwrap_err()
            .to_string();
        assert!(e.contains("audience"), "{e}");
        assert_eq!(show_time(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
