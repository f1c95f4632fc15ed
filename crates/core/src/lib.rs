//! portcullis core: the vocabulary every other crate speaks.
//!
//! * [`event`] — what the ledger records: session open/close, authentication outcomes,
//!   statements (written *before* they are forwarded) and their results.
//! * [`config`] — the one TOML configuration file, with its JSON schema.
//!
//! The core knows nothing of wire formats; protocol crates translate into these types.

pub mod calendar;
pub mod config;
pub mod event;

pub use event::{
    ChainLink, DecisionRecord, EventData, GrantRecord, GrantRef, Identity, MaskedCounts,
    MaskingChoice, NewEvent, Outcome, ParamValue, Principal, Sealed, SnapshotFile,
};

/// Microseconds since the Unix epoch, UTC: the timestamp of every ledger event.
pub fn now_us() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
