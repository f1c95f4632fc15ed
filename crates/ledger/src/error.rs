//! The one error type of this crate.

use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong while opening, writing or reading a ledger.
///
/// Every message names the ledger file and says what the operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The folder that should hold the ledger file could not be created.
    #[error(
        "could not create the ledger folder {path}: {source}; create it by hand or set \
         store.path (or gateway.data_dir) to a writable location"
    )]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// SQLite could not open (or create) the ledger file.
    #[error(
        "could not open the ledger {path}: {source}; check that the path is a regular file on \
         a local filesystem and that the gateway's user may read and write it"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The ledger file (or its folder) is read-only for this process.
    #[error(
        "the ledger {path} is not writable: give the gateway's user write permission on the file \
         and on its folder (SQLite creates {path}-wal and {path}-shm next to it)"
    )]
    NotWritable { path: PathBuf },

    /// The file could not be put in write-ahead-log mode.
    #[error(
        "could not switch the ledger {path} to WAL mode (journal_mode is {mode:?}); the ledger \
         needs a local filesystem with shared-memory support (not a network share)"
    )]
    NoWal { path: PathBuf, mode: String },

    /// The file was written by a different (newer) version of portcullis.
    #[error(
        "the ledger {path} has schema version {found}, this build of portcullis understands \
         version {supported}; use a portcullis release that matches the ledger"
    )]
    SchemaVersion {
        path: PathBuf,
        found: String,
        supported: u32,
    },

    /// The file exists but is not a portcullis ledger.
    #[error(
        "{path} is not a portcullis ledger (no `events` table); check store.path in the \
         configuration"
    )]
    NotALedger { path: PathBuf },

    /// The ledger file could not be examined.
    #[error(
        "could not access the ledger {path}: {source}; check that this user may read the file \
         and its folder"
    )]
    Access {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A read-only open found no file.
    #[error("no ledger at {path}: has the gateway run with this config?")]
    NotFound { path: PathBuf },

    /// An SQLite operation outside the append path failed.
    #[error("ledger {path}: {context}: {source}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// A group commit failed: its events must be treated as not recorded (they were rolled
    /// back, except possibly when `COMMIT` itself reported an I/O error). The chain stays intact
    /// and the next append tries again.
    #[error(
        "could not record {events} event(s) in the ledger {path}: {source}; the statements are \
         refused (fail closed) and the next write tries again: check free disk space, \
         permissions, and that no other process holds a write lock on the file"
    )]
    Write {
        path: PathBuf,
        events: usize,
        /// Shared: one failed transaction fails every submission of its batch.
        #[source]
        source: Arc<rusqlite::Error>,
    },

    /// The journal (the append-only file every acknowledged event is written to before it is
    /// indexed into SQLite) could not take a group: its events are not recorded.
    #[error(
        "could not record {events} event(s) in the ledger journal {path}: {source}; the \
         statements are refused (fail closed) and the next write tries again: check free disk \
         space and permissions"
    )]
    Journal {
        path: PathBuf,
        events: usize,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// Another process has this ledger open for writing.
    #[error(
        "the ledger {path} is already open for writing by another process (lock on {lock}); \
         one gateway per ledger file: stop the other one, or give this one its own data_dir"
    )]
    Locked { path: PathBuf, lock: PathBuf },

    /// Indexing into SQLite has fallen too far behind (it keeps failing).
    #[error(
        "the ledger {path} has {pending} events not yet indexed into SQLite (it keeps \
         failing: {reason}); new statements are refused until it catches up"
    )]
    IndexBehind {
        path: PathBuf,
        pending: usize,
        reason: String,
    },

    /// An event could not be serialised to JSON.
    #[error("could not serialise a {kind} event for the ledger {path}: {source}")]
    Serialize {
        path: PathBuf,
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// An event is larger than one ledger row can hold.
    #[error(
        "a {kind} event of {bytes} bytes is too large for the ledger {path} (at most \
         1 000 000 000 bytes per event); the statement is refused"
    )]
    TooLarge {
        path: PathBuf,
        kind: &'static str,
        bytes: usize,
    },

    /// The ledger was closed (the gateway is shutting down) or its writer went away.
    #[error(
        "the ledger {path} is closed and records no more events (the gateway is shutting down, \
         or its writer stopped: see the earlier log lines)"
    )]
    Closed { path: PathBuf },

    /// The background thread could not be started.
    #[error("could not start the ledger {what} thread for {path}: {source}")]
    Spawn {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A stored row does not have the shape the ledger writes (wrong type or hash length).
    #[error(
        "ledger {path}: row seq {seq} is malformed ({detail}); the file may have been altered: \
         run `portcullis audit verify`"
    )]
    Malformed {
        path: PathBuf,
        seq: i64,
        detail: String,
    },

    /// The `data` of a stored event is not a valid event.
    #[error(
        "ledger event seq {seq} does not parse as an event ({source}); it was written by a \
         newer portcullis or altered: run `portcullis audit verify`"
    )]
    Parse {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    /// The checkpoint signing key could not be loaded or created.
    #[error("ledger checkpoint signing key {path}: {detail}")]
    CheckpointKey { path: PathBuf, detail: String },

    /// The ledger holds fewer events than a checkpoint it signed earlier: events were deleted
    /// from its end (or the file was replaced by an older copy).
    #[error(
        "the ledger {path} has {events} events but its signed checkpoint covers {checkpoint}: \
         events {first} to {checkpoint} were deleted or the file was replaced by an older copy; \
         the gateway will not write on top of that. Run `portcullis audit verify`, keep the \
         file as evidence, and restore the ledger from a copy"
    )]
    BehindCheckpoint {
        path: PathBuf,
        events: u64,
        checkpoint: u64,
        first: u64,
    },

    /// The keys file (sealing, retention) could not be used.
    #[error(
        "ledger keys file {path}: {detail}; it must be a writable SQLite file next to the \
         ledger (statements are refused until it is)"
    )]
    Keys { path: PathBuf, detail: String },

    /// At open, the ledger or its checkpoints do not match what this gateway signed: the
    /// gateway will not write on top of a changed history.
    #[error(
        "the ledger {path} was changed behind the gateway's back: {detail}. The gateway will \
         not write on top of it; keep the files as evidence and restore the ledger from a copy"
    )]
    Tampered { path: PathBuf, detail: String },

    /// The PostgreSQL store refused or failed a request.
    #[error("ledger store {path}: {context}: {source}{hint}")]
    Postgres {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: postgres::Error,
        /// What to do about it (empty when the server's message says enough).
        hint: &'static str,
    },

    /// The PostgreSQL store holds something this gateway cannot work with.
    #[error("ledger store {path}: {detail}")]
    Store { path: PathBuf, detail: String },

    /// The recordings store refused or failed a request, or holds a damaged chunk.
    #[error("recordings store {store}: {detail}")]
    Recording { store: String, detail: String },

    /// A proof was asked for that the ledger cannot give.
    #[error("ledger {path}: {detail}")]
    Proof { path: PathBuf, detail: String },
}

impl LedgerError {
    pub(crate) fn postgres(
        path: impl Into<PathBuf>,
        context: &'static str,
        source: postgres::Error,
    ) -> Self {
        // A lost or refused connection deserves a hint; a server error explains itself.
        let hint = if source.as_db_error().is_none() {
            "; check that the database in store.url is reachable and accepts this user \
             (statements are refused until it is)"
        } else {
            ""
        };
        LedgerError::Postgres {
            path: path.into(),
            context,
            source,
            hint,
        }
    }

    pub(crate) fn sqlite(
        path: impl Into<PathBuf>,
        context: &'static str,
        source: rusqlite::Error,
    ) -> Self {
        LedgerError::Sqlite {
            path: path.into(),
            context,
            source,
        }
    }
}
