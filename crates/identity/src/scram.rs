//! SCRAM-SHA-256 verifiers and the server side of the SASL exchange (RFC 5802, RFC 7677),
//! as PostgreSQL does it.
//!
//! No SASLprep (RFC 4013) is applied to passwords: portcullis API keys are ASCII
//! (`pcs_` + base64url), for which SASLprep is the identity, so verifiers made here match
//! those made by PostgreSQL and libpq for the same key.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::IdentityError;

/// The only SASL mechanism the gateway offers.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

const SALT_LEN: usize = 16;
const SERVER_NONCE_LEN: usize = 18;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A stored SCRAM-SHA-256 credential: what the gateway keeps instead of the key.
#[derive(Clone)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl ScramVerifier {
    /// PostgreSQL's default `scram_iterations`.
    pub const DEFAULT_ITERATIONS: u32 = 4096;

    /// Derive a verifier from `password` with a random 16-byte salt. An `iterations` of 0
    /// is treated as 1 (PBKDF2 needs at least one round).
    pub fn from_password(password: &str, iterations: u32) -> Self {
        let mut salt = vec![0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let iterations = iterations.max(1);
        let (stored_key, server_key) = Self::keys(password.as_bytes(), &salt, iterations);
        Self {
            iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// (StoredKey, ServerKey) for `password` under `salt` and `iterations`.
    fn keys(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key = Sha256::digest(client_key).into();
        (stored_key, hmac(&salted, &[b"Server Key"]))
    }

    /// Parse `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (standard base64
    /// with padding), exactly as PostgreSQL stores it in `pg_authid`.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let bad = |reason| IdentityError::InvalidVerifier { reason };
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(bad("missing SCRAM-SHA-256$ prefix"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(bad("missing '$' before the keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(bad("missing ':' after iterations"))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or(bad("missing ':' between the keys"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| bad("iterations is not a number"))?;
        if iterations == 0 {
            return Err(bad("iterations must be at least 1"));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| bad("salt is not base64"))?;
        if salt.is_empty() {
            return Err(bad("salt is empty"));
        }
        let key = |b64: &str, reason| {
            let bytes = STANDARD.decode(b64).map_err(|_| bad(reason))?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| bad(reason))
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key(stored, "StoredKey is not 32 bytes of base64")?,
            server_key: key(server, "ServerKey is not 32 bytes of base64")?,
        })
    }

    /// Does `password` match this verifier? Compared in constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let (stored, server) = Self::keys(password.as_bytes(), &self.salt, self.iterations);
        (stored.ct_eq(&self.stored_key) & server.ct_eq(&self.server_key)).into()
    }

    /// A deterministic stand-in for an unknown user: same salt for the same name within this
    /// process (as a real user would have), unguessable across processes, never matching.
    pub(crate) fn fake(user: &str) -> Self {
        static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
        let secret = SECRET.get_or_init(|| {
            let mut s = [0u8; 32];
            OsRng.fill_bytes(&mut s);
            s
        });
        let derive = |label: &[u8]| hmac(secret, &[label, b"\0", user.as_bytes()]);
        let mut salt = derive(b"salt").to_vec();
        salt.truncate(SALT_LEN);
        Self {
            iterations: Self::DEFAULT_ITERATIONS,
            salt,
            stored_key: derive(b"stored"),
            server_key: derive(b"server"),
        }
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// Prints the iteration count only: keys and salt stay out of logs.
impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl FromStr for ScramVerifier {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// Server side of one SCRAM-SHA-256 exchange. Any error ends the exchange.
pub struct ScramServer {
    verifier: ScramVerifier,
    known: bool,
    state: State,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitingClientFirst => "awaiting client-first-message",
            State::AwaitingClientFinal { .. } => "awaiting client-final-message",
            State::Done => "done",
        };
        f.debug_struct("ScramServer")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

fn malformed(reason: &'static str) -> IdentityError {
    IdentityError::MalformedScramMessage { reason }
}

impl ScramServer {
    /// `None` = unknown user: run a convincing fake exchange (salt derived deterministically
    /// from the user name + a per-process random secret, default iterations) that always
    /// fails at the final step, so clients cannot probe which agents exist.
    pub fn new(verifier: Option<ScramVerifier>, user_hint: &str) -> Self {
        let known = verifier.is_some();
        let verifier = verifier.unwrap_or_else(|| ScramVerifier::fake(user_hint));
        Self {
            verifier,
            known,
            state: State::AwaitingClientFirst,
        }
    }

    /// `mechanism` is what the client selected in SASLInitialResponse; `data` is
    /// client-first-message. Returns server-first-message bytes.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, IdentityError> {
        if !matches!(
            std::mem::replace(&mut self.state, State::Done),
            State::AwaitingClientFirst
        ) {
            return Err(IdentityError::OutOfOrder {
                expected: "nothing: the exchange has already begun",
            });
        }
        if mechanism != SCRAM_SHA_256 {
            return Err(IdentityError::UnsupportedMechanism {
                mechanism: mechanism.chars().take(64).collect(),
            });
        }
        let msg = std::str::from_utf8(data)
            .map_err(|_| malformed("client-first-message is not UTF-8"))?;
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().unwrap_or_default();
        let authzid = parts.next().ok_or(malformed("GS2 header is incomplete"))?;
        let bare = parts.next().ok_or(malformed("GS2 header is incomplete"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(IdentityError::ChannelBindingNotSupported),
            _ => return Err(malformed("GS2 channel-binding flag must be n, y or p=")),
        }
        if !authzid.is_empty() {
            return Err(malformed("authorization identity (a=) is not supported"));
        }
        // client-first-message-bare: n=<user>,r=<nonce>[,extensions]; the user name is
        // ignored (PostgreSQL takes it from the startup packet) and extensions are skipped.
        let mut attrs = bare.split(',');
        match attrs.next() {
            Some(a) if a.starts_with("m=") => {
                return Err(malformed("reserved m= extension is not supported"))
            }
            Some(a) if a.starts_with("n=") => {}
            _ => return Err(malformed("expected n=<username>")),
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(malformed("expected r=<nonce>"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(malformed("nonce must be non-empty printable ASCII"));
        }
        let mut random = [0u8; SERVER_NONCE_LEN];
        OsRng.fill_bytes(&mut random);
        let nonce = format!("{client_nonce}{}", STANDARD.encode(random));
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal {
            gs2_header: format!("{cbind},,"),
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// `data` is client-final-message. Returns server-final-message ("v=...") on success.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let State::AwaitingClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(IdentityError::OutOfOrder {
                expected: "client-first-message before client-final-message",
            });
        };
        let msg = std::str::from_utf8(data)
            .map_err(|_| malformed("client-final-message is not UTF-8"))?;
        // The proof is the last attribute; everything before it is signed.
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(malformed("expected p=<proof> last"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(malformed("expected c=<channel binding>"))?;
        let cbind = STANDARD
            .decode(cbind)
            .map_err(|_| malformed("c= is not base64"))?;
        if cbind != gs2_header.as_bytes() {
            return Err(malformed("c= does not match the GS2 header"));
        }
        if attrs.next().and_then(|a| a.strip_prefix("r=")) != Some(nonce.as_str()) {
            return Err(malformed("r= does not match the nonce"));
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| malformed("p= is not base64"))?;
        let proof =
            <[u8; 32]>::try_from(proof.as_slice()).map_err(|_| malformed("p= is not 32 bytes"))?;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let v = &self.verifier;
        let signature = hmac(&v.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for ((k, p), s) in client_key.iter_mut().zip(proof).zip(signature) {
            *k = p ^ s;
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        let ok: bool = computed.ct_eq(&v.stored_key).into();
        if !(ok && self.known) {
            return Err(IdentityError::AuthenticationFailed);
        }
        let server_signature = hmac(&v.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    const KEY: &str = "pcs_correct-horse-battery-staple";

    fn exchange(
        verifier: Option<ScramVerifier>,
        key: &str,
        cb: ChannelBinding,
    ) -> Result<(), IdentityError> {
        let mut client = ScramSha256::new(key.as_bytes(), cb);
        let mut server = ScramServer::new(verifier, "agent");
        let first = server.client_first(SCRAM_SHA_256, client.message())?;
        client
            .update(&first)
            .expect("client accepts server-first-message");
        let last = server.client_final(client.message())?;
        client
            .finish(&last)
            .expect("client verifies the server signature");
        Ok(())
    }

    #[test]
    fn independent_client_succeeds_with_right_key_and_fails_with_wrong_key() {
        let v = ScramVerifier::from_password(KEY, ScramVerifier::DEFAULT_ITERATIONS);
        for cb in [ChannelBinding::unsupported, ChannelBinding::unrequested] {
            assert_eq!(exchange(Some(v.clone()), KEY, cb()), Ok(()));
            assert_eq!(
                exchange(Some(v.clone()), "pcs_wrong", cb()),
                Err(IdentityError::AuthenticationFailed)
            );
        }
    }

    #[test]
    fn postgres_verifier_format_is_compatible() {
        let pg = postgres_protocol::password::scram_sha_256(KEY.as_bytes());
        let v = ScramVerifier::parse(&pg).expect("PostgreSQL verifier parses");
        assert!(v.verify_password(KEY));
        assert!(!v.verify_password("pcs_other"));
        assert_eq!(v.to_string(), pg);
        assert_eq!(
            exchange(Some(v), KEY, ChannelBinding::unsupported()),
            Ok(())
        );

        let ours = ScramVerifier::from_password(KEY, 5000);
        let again: ScramVerifier = ours.to_string().parse().expect("Display re-parses");
        assert_eq!(again.to_string(), ours.to_string());
        assert!(again.verify_password(KEY));
    }

    #[test]
    fn parse_rejects_malformed_verifiers() {
        let good = ScramVerifier::from_password(KEY, 4096).to_string();
        let bad = [
            String::new(),
            "md5abc".into(),
            good.replacen("SCRAM-SHA-256$4096", "SCRAM-SHA-256$0", 1),
            good.replacen("SCRAM-SHA-256$4096", "SCRAM-SHA-256$x", 1),
            good.replacen(':', ";", 1),
            good.replacen('$', "!", 2),
            good[..good.len() - 4].to_string(),
            format!("{good}AAAA"),
        ];
        for s in bad {
            assert!(
                matches!(
                    ScramVerifier::parse(&s),
                    Err(IdentityError::InvalidVerifier { .. })
                ),
                "{s:?}"
            );
        }
    }

    #[test]
    fn debug_hides_keys() {
        let v = ScramVerifier::from_password(KEY, 4096);
        let shown = format!("{v:?}");
        assert_eq!(shown, "ScramVerifier { iterations: 4096, .. }");
        let server = ScramServer::new(Some(v), "a");
        assert!(!format!("{server:?}").contains("key"));
    }

    fn salt_of(server_first: &[u8]) -> String {
        let s = std::str::from_utf8(server_first).expect("utf8");
        s.split(',')
            .find_map(|a| a.strip_prefix("s="))
            .expect("salt")
            .to_owned()
    }

    #[test]
    fn unknown_user_fails_at_final_step_like_a_wrong_key() {
        assert_eq!(
            exchange(None, KEY, ChannelBinding::unsupported()),
            Err(IdentityError::AuthenticationFailed)
        );
        // Salt is stable per name (like a real user's) and differs between names.
        let first = |user: &str| {
            let client = ScramSha256::new(KEY.as_bytes(), ChannelBinding::unsupported());
            ScramServer::new(None, user)
                .client_first(SCRAM_SHA_256, client.message())
                .expect("first")
        };
        assert_eq!(salt_of(&first("ghost")), salt_of(&first("ghost")));
        assert_ne!(salt_of(&first("ghost")), salt_of(&first("other")));
        assert!(String::from_utf8(first("ghost"))
            .expect("utf8")
            .ends_with(",i=4096"));
    }

    #[test]
    fn malformed_client_first_is_an_error() {
        let bad: [&[u8]; 14] = [
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"n,,r=abc",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,r=a b",
            b"n,,m=x,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"x,,n=,r=abc",
            b"p=tls-server-end-point,,n=,r=abc",
            b"n,,n=,r=\xff\xfe",
            b"\xc3\x28,,n=,r=abc",
        ];
        for data in bad {
            let mut s = ScramServer::new(None, "u");
            assert!(s.client_first(SCRAM_SHA_256, data).is_err(), "{data:?}");
        }
        let mut s = ScramServer::new(None, "u");
        assert_eq!(
            s.client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc"),
            Err(IdentityError::ChannelBindingNotSupported)
        );
        let mut s = ScramServer::new(None, "u");
        assert!(matches!(
            s.client_first("SCRAM-SHA-256-PLUS", b"n,,n=,r=abc"),
            Err(IdentityError::UnsupportedMechanism { .. })
        ));
        // Extensions after the nonce are tolerated.
        let mut s = ScramServer::new(None, "u");
        assert!(s
            .client_first(SCRAM_SHA_256, b"n,,n=someone,r=abc,x=1")
            .is_ok());
    }

    #[test]
    fn malformed_client_final_is_an_error() {
        let v = ScramVerifier::from_password(KEY, 4096);
        let prepare = || {
            let mut client = ScramSha256::new(KEY.as_bytes(), ChannelBinding::unsupported());
            let mut server = ScramServer::new(Some(v.clone()), "agent");
            let first = server
                .client_first(SCRAM_SHA_256, client.message())
                .expect("first");
            client.update(&first).expect("update");
            (
                server,
                String::from_utf8(client.message().to_vec()).expect("utf8"),
            )
        };
        // Each tamper is applied to the genuine message of its own fresh exchange.
        let tampers: [fn(&str, &str) -> String; 11] = [
            |_, _| String::new(),
            |_, _| "c=biws".into(),
            |head, _| head.to_owned(),
            |head, _| format!("{head},p="),
            |head, _| format!("{head},p=!!notbase64"),
            |head, _| format!("{head},p=AAAA"),
            |head, proof| format!("{head},p={proof}AAAA"),
            |head, proof| format!("{},p={proof}", head.replacen("c=biws", "c=eSws", 1)),
            |head, proof| format!("{},p={proof}", head.replacen("c=biws", "c=*", 1)),
            |head, proof| format!("{},p={proof}", head.replacen("r=", "r=X", 1)),
            |_, proof| format!("c=biws,p={proof}"),
        ];
        for tamper in tampers {
            let (mut server, genuine) = prepare();
            let (head, proof) = genuine.rsplit_once(",p=").expect("proof");
            let msg = tamper(head, proof);
            // Rejected as malformed before the proof is even checked.
            let err = server.client_final(msg.as_bytes()).unwrap_err();
            assert!(
                matches!(err, IdentityError::MalformedScramMessage { .. }),
                "{msg:?}: {err}"
            );
        }
        let (mut server, _) = prepare();
        assert!(server.client_final(b"c=biws,r=\xff,p=AAAA").is_err());
        // Each tampered message above is a fresh exchange; the genuine one still works,
        // which shows the rejections came from the tampering.
        let (mut server, msg) = prepare();
        assert!(server.client_final(msg.as_bytes()).is_ok());
    }

    #[test]
    fn steps_out_of_order_are_errors() {
        let mut s = ScramServer::new(None, "u");
        assert!(matches!(
            s.client_final(b"c=biws,r=a,p=AAAA"),
            Err(IdentityError::OutOfOrder { .. })
        ));
        let mut s = ScramServer::new(None, "u");
        s.client_first(SCRAM_SHA_256, b"n,,n=,r=abc")
            .expect("first");
        assert!(matches!(
            s.client_first(SCRAM_SHA_256, b"n,,n=,r=abc"),
            Err(IdentityError::OutOfOrder { .. })
        ));
        assert!(matches!(
            s.client_final(b"c=biws,r=a,p=AAAA"),
            Err(IdentityError::OutOfOrder { .. })
        ));
    }
}
