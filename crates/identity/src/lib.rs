//! Identity for portcullis: who is acting, proved how, on whose behalf.
//!
//! * API keys checked with SCRAM-SHA-256 (below);
//! * OIDC access tokens checked against the issuer's JWKS ([`oidc`]), SAML 2.0 bearer
//!   assertions (`saml`), the gateway's own tokens ([`gateway_token`]);
//! * delegation chains (RFC 8693 token exchange) and task grants ([`authn`], [`grants`]).
//!
//! ## API keys
//!
//! An agent authenticates to the gateway with an API key (`pcs_…`, see
//! [`generate_api_key`]) that it presents as the PostgreSQL password. The gateway never
//! stores that key. It stores only a SCRAM-SHA-256 *verifier*
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), byte for byte the format
//! PostgreSQL keeps in `pg_authid.rolpassword`. That choice buys three things:
//!
//! * **The key never crosses the wire.** The SCRAM exchange ([`ScramServer`]) proves that the
//!   client knows the key without sending it, so a gateway log, a TLS-terminating proxy or
//!   a packet capture never sees it.
//! * **A stolen config yields no usable key.** `StoredKey` is a hash of the client key and
//!   `ServerKey` only lets a holder impersonate the *server*; neither lets an attacker log in
//!   as the agent. Recovering the key means brute-forcing PBKDF2 over 256 random bits.
//! * **Standard clients just work.** libpq, tokio-postgres, JDBC, psycopg… all speak
//!   SCRAM-SHA-256 already, and verifiers made by PostgreSQL tools parse here unchanged.
//!
//! Unknown agents get a convincing fake exchange that fails at the same step, with the same
//! error, as a wrong key ([`IdentityError::AuthenticationFailed`]), so a client cannot probe
//! which agent names exist.

mod apikey;
pub mod authn;
mod error;
pub mod gateway_token;
pub mod grants;
pub mod idp_http;
pub mod jwt;
pub mod oidc;
mod registry;
mod saml;
mod scram;

pub use apikey::generate_api_key;
pub use authn::{Authenticator, GrantRequest, Issued, Verified};
pub use error::IdentityError;
pub use gateway_token::TokenSigner;
pub use grants::{GrantBook, GrantStatus};
pub use registry::AgentRegistry;
pub use saml::{SamlAssertion, SamlVerifier, SamlVerifierConfig};
pub use scram::{ScramServer, ScramVerifier, SCRAM_SHA_256};
