//! The gateway's own tokens: short-lived JWTs signed with the gateway's Ed25519 key.
//!
//! The token endpoint issues them (token exchange, SAML bearer grant) and task grants are
//! credentials of this kind. They carry the whole identity the gateway verified — subject,
//! agent, groups, the RFC 8693 `act` chain, the grant id — so a session opened with one needs
//! no second look at the original tokens. The public key is published as a JWKS
//! (`/.well-known/jwks.json` on the API) so other services can verify them too.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::jwt::{self, Claims, Unverified};
use crate::IdentityError;

/// Audience of gateway tokens: only this gateway (and its peers sharing the key) accept them.
pub const GATEWAY_AUDIENCE: &str = "urn:portcullis:gateway";

pub struct TokenSigner {
    issuer: String,
    kid: String,
    public: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
}

fn setup(what: &Path, reason: impl Into<String>) -> IdentityError {
    IdentityError::Setup {
        what: format!("token signing key {}", what.display()),
        reason: reason.into(),
    }
}

impl TokenSigner {
    /// Loads the PKCS#8 PEM key at `path`, creating it (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path, issuer: &str) -> Result<TokenSigner, IdentityError> {
        let der = if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| setup(path, e.to_string()))?;
            let b64: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .concat();
            STANDARD.decode(b64.trim()).map_err(|_| {
                setup(
                    path,
                    "not a PEM file (expected -----BEGIN PRIVATE KEY-----)",
                )
            })?
        } else {
            let rng = ring::rand::SystemRandom::new();
            let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| setup(path, "could not generate an Ed25519 key"))?;
            let der = doc.as_ref().to_vec();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| setup(path, e.to_string()))?;
            }
            let b64 = STANDARD.encode(&der);
            let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(chunk));
                pem.push('\n');
            }
            pem.push_str("-----END PRIVATE KEY-----\n");
            write_private(path, pem.as_bytes()).map_err(|e| setup(path, e.to_string()))?;
            der
        };
        Self::from_pkcs8(&der, issuer).map_err(|r| setup(path, r))
    }

    /// From a PKCS#8 DER Ed25519 key.
    pub fn from_pkcs8(der: &[u8], issuer: &str) -> Result<TokenSigner, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| "not an Ed25519 PKCS#8 private key".to_string())?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        let kid = hex16(&Sha256::digest(public));
        let x = URL_SAFE_NO_PAD.encode(public);
        Ok(TokenSigner {
            issuer: issuer.to_string(),
            kid,
            public,
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(self.public),
        }]})
    }

    /// Signs `claims`, adding `iss`, `aud`, `iat`, `exp` (`now + ttl`) and a fresh `jti`.
    /// Returns the token and its `jti`.
    pub fn issue(
        &self,
        mut claims: Claims,
        now: i64,
        ttl: i64,
    ) -> Result<(String, String), IdentityError> {
        let jti = uuid::Uuid::new_v4().to_string();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(GATEWAY_AUDIENCE));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl.max(1)));
        claims.insert("jti".into(), json!(jti));
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| {
            IdentityError::Setup {
                what: "signing a gateway token".into(),
                reason: e.to_string(),
            }
        })?;
        Ok((token, jti))
    }

    /// Verifies a token this gateway issued (signature, issuer, audience, time; no leeway
    /// needed: the same clock made it).
    pub fn verify(
        &self,
        token: &str,
        peeked: &Unverified,
        now: i64,
    ) -> Result<Claims, IdentityError> {
        if peeked.alg != "EdDSA" {
            return Err(jwt::rejected(format!(
                "alg {:?} is not the gateway's (EdDSA)",
                peeked.alg
            )));
        }
        if peeked.kid.as_deref().is_some_and(|k| k != self.kid) {
            return Err(jwt::rejected(
                "signed by a gateway key that is not in force (the signing key changed): get a new token",
            ));
        }
        let claims = crate::oidc::verify_with(token, &self.decoding, Algorithm::EdDSA)?;
        jwt::check_time_and_audience(&claims, &self.issuer, &[GATEWAY_AUDIENCE.into()], 5, now)?;
        Ok(claims)
    }
}

fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_altered_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("pc-signer-{}", uuid::Uuid::new_v4()));
        let path = dir.join("k.pem");
        let s = TokenSigner::load_or_create(&path, "urn:gw").expect("create");
        let again = TokenSigner::load_or_create(&path, "urn:gw").expect("load");
        assert_eq!(s.jwks(), again.jwks(), "the key is kept");
        let mut c = Claims::new();
        c.insert("sub".into(), json!("alice"));
        let (t, jti) = s.issue(c, 1000, 60).expect("sign");
        let p = jwt::peek(&t).expect("peek");
        let claims = again.verify(&t, &p, 1010).expect("verifies");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["jti"], jti.as_str());
        assert!(again
            .verify(&t, &p, 2000)
            .unwrap_err()
            .to_string()
            .contains("expired"));
        // Change one claim: the signature no longer matches.
        let parts: Vec<&str> = t.split('.').collect();
        let body = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).expect("b64"))
                .expect("utf8")
                .replace("alice", "mallory"),
        );
        let forged = format!("{}.{body}.{}", parts[0], parts[2]);
        let e = again
            .verify(&forged, &jwt::peek(&forged).expect("peek"), 1010)
            .unwrap_err();
        assert!(e.to_string().contains("signature does not verify"), "{e}");
        let other = TokenSigner::load_or_create(&dir.join("other.pem"), "urn:gw").expect("other");
        assert!(other.verify(&t, &p, 1010).is_err(), "another gateway key");
        let _ = std::fs::remove_dir_all(dir);
    }
}
