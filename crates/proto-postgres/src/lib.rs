//! portcullis PostgreSQL protocol support.
//!
//! * [`server`] — the client leg: TLS negotiation, startup, agent authentication (SCRAM, or
//!   cleartext over TLS), upstream login, cancel requests.
//! * [`relay`] — the full-duplex loop where every statement is recorded before it is
//!   forwarded and its outcome after the target answers.
//! * [`catalog`] — reading a target's catalog (functions, views) for classification.
//! * [`upstream`] — the target leg: dialing, TLS, the gateway's own login (SCRAM, md5,
//!   password, trust).
//! * [`wire`] — the few message formats the gateway reads or writes itself.
//!
//! The crate knows nothing of policy internals or storage: it produces ledger events and obeys
//! the ledger's answer (fail closed).

pub mod cancel;
pub mod catalog;
pub mod error;
pub mod masking;
pub mod relay;
pub mod server;
pub mod stream;
pub mod tls;
pub mod transcript;
pub mod upstream;
pub mod wire;

pub use error::PgError;
pub use server::{ListenerSettings, PgGateway};
pub use upstream::Target;
