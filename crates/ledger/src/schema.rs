//! The SQLite schema, shared by the writer and the readers.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use crate::chain::GENESIS;
use crate::error::LedgerError;

/// Version of the table layout, stored in `meta` under `schema_version`.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Name of the hash-chain format, stored in `meta` under `hash_chain` (see [`crate::chain`]).
pub(crate) const HASH_CHAIN: &str = "sha256-v1";

/// How long a connection waits for a lock held by another connection before giving up.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) const CREATE: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts_us INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
-- No secondary index on the hot table: an index on session_id (random UUIDs) dirtied a
-- second page per commit and cost a third of the append throughput (examples/append_bench.rs).
-- Per-session lookups will get their own small table, written once per session.
DROP INDEX IF EXISTS events_session;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Signed checkpoints of the Merkle tree over the events (crate::checkpoint): the note as
-- signed, and the tree's right edge (crate::merkle::Frontier) to resume it at the next open.
CREATE TABLE IF NOT EXISTS checkpoints (
    tree_size INTEGER PRIMARY KEY,
    ts_us INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    frontier BLOB NOT NULL
);
";

pub(crate) const INSERT: &str =
    "INSERT INTO events (seq, ts_us, session_id, kind, data, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// The columns of `events` in the order every reader selects them.
pub(crate) const COLUMNS: &str = "seq, ts_us, session_id, kind, data, prev_hash, hash";

/// The last event of the chain: the next event gets `seq + 1` and `prev_hash = hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };
}

/// Creates the tables if needed, records the schema version, and refuses files of another
/// version. Runs in a write transaction, which also proves the file is writable.
pub(crate) fn ensure(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let write = |e: rusqlite::Error| write_error(path, "creating the ledger tables", e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(write)?;
    let result = (|| {
        conn.execute_batch(CREATE).map_err(write)?;
        check_version(conn, path)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1), \
             ('hash_chain', ?2)",
            (SCHEMA_VERSION.to_string(), HASH_CHAIN),
        )
        .map_err(write)?;
        // A real page write on every open: a file we cannot write is found here, at startup,
        // and not at the first statement an agent sends.
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_open_us', ?1)",
            [portcullis_core::now_us().to_string()],
        )
        .map_err(write)?;
        conn.execute_batch("COMMIT").map_err(write)
    })();
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// Refuses a ledger whose `meta.schema_version` is not ours. A file without the row (being
/// created right now) passes.
pub(crate) fn check_version(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    if !has_table(conn, path, "meta")? {
        return Ok(());
    }
    let found: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| LedgerError::sqlite(path, "reading the schema version", e))?;
    match found {
        Some(v) if v != SCHEMA_VERSION.to_string() => Err(LedgerError::SchemaVersion {
            path: path.to_path_buf(),
            found: v,
            supported: SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

/// Whether the file has a table of that name (`events`, `meta`, `checkpoints`).
pub(crate) fn has_table(conn: &Connection, path: &Path, name: &str) -> Result<bool, LedgerError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )
    .map_err(|e| LedgerError::sqlite(path, "reading the schema", e))
}

/// Reads the chain head: the highest seq and its hash (an O(log n) lookup of the last row).
pub(crate) fn load_head(conn: &Connection, path: &Path) -> Result<Head, rusqlite::Error> {
    let row = conn
        .prepare_cached("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| {
            let seq: i64 = r.get(0)?;
            let hash = r.get_ref(1)?;
            Ok((seq, blob32(hash)))
        })
        .optional()?;
    match row {
        None => Ok(Head::EMPTY),
        Some((seq, Some(hash))) if seq > 0 => Ok(Head {
            seq: seq as u64, // seq > 0 checked above
            hash,
        }),
        Some((seq, _)) => Err(rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            format!(
                "the last event of {} (seq {seq}) has no valid 32-byte hash; the file was \
                 altered: run `portcullis audit verify`",
                path.display()
            )
            .into(),
        )),
    }
}

/// A 32-byte BLOB value, or `None` for anything else.
pub(crate) fn blob32(v: ValueRef<'_>) -> Option<[u8; 32]> {
    match v {
        ValueRef::Blob(b) => <[u8; 32]>::try_from(b).ok(),
        _ => None,
    }
}

/// Maps an error of a write at open time: read-only files get the clear message.
pub(crate) fn write_error(path: &Path, context: &'static str, e: rusqlite::Error) -> LedgerError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly)
        | Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::PermissionDenied) => LedgerError::NotWritable {
            path: path.to_path_buf(),
        },
        _ => LedgerError::sqlite(path, context, e),
    }
}
