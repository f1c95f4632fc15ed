//! Reading a ledger (`portcullis audit tail`, exports) and verifying its hash chain.
//!
//! A [`LedgerReader`] opens the file read-only and may run in another process while the
//! gateway appends: SQLite's WAL mode gives every query a consistent snapshot without blocking
//! the writer. (A long query, such as [`LedgerReader::verify`] on a large ledger, keeps the
//! writer from recycling the WAL until it ends, so the `-wal` file grows meanwhile.)
//!
//! # What verification proves
//!
//! [`LedgerReader::verify`] recomputes every hash (see [`crate::chain`]) and checks that the
//! sequence numbers run 1, 2, 3, … without gaps and that each row's `prev_hash` is the hash of
//! the row before. It reports the *first* problem:
//!
//! * [`Problem::Missing`]: a sequence number is absent (rows were deleted), or the ledger does
//!   not start at 1.
//! * [`Problem::Altered`]: a row's content no longer matches its stored hash (a column was
//!   changed: `data`, `ts_us`, `kind`, `session_id`, `prev_hash` or `hash`).
//! * [`Problem::Reordered`]: a row is intact on its own but sits in the wrong place: it holds an
//!   event recorded under another sequence number (rows were swapped or moved), or its
//!   `prev_hash` names a different predecessor (a row before it was rewritten *and re-hashed*,
//!   or rows were spliced in).
//!
//! The chain makes any change *inside* the ledger visible unless every later hash is
//! recomputed as well. Removing events at the *end* of the ledger, or rewriting a suffix with
//! recomputed hashes, leaves a shorter or different but self-consistent chain: that is caught
//! by comparing the `head` of a [`VerifyReport::Verified`] with a head recorded elsewhere
//! earlier (signed checkpoints, an evidence packet, a previous verification).

use std::path::{Path, PathBuf};

use portcullis_core::EventData;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use crate::chain::{event_hash, to_hex, GENESIS};
use crate::checkpoint::{self, CheckpointVerifier};
use crate::error::LedgerError;
use crate::merkle::{self, event_leaf, Frontier, Hash};
use crate::schema::{self, blob32, COLUMNS};
use crate::seal::KeyStore;

/// Event hashes handed to the Merkle tree thread at a time during verification.
const TREE_BATCH: usize = 4096;

/// How often [`LedgerReader::verify`] reports progress, in events.
const PROGRESS_EVERY: u64 = 100_000;

/// Memory-map up to this much of the file for reading (faster scans; no effect on writers).
const MMAP_BYTES: i64 = 1 << 30;

/// One stored event, as it is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_us: i64,
    pub session_id: String,
    /// The event kind (`statement`, `result`, …), also the `kind` tag inside `data`.
    pub kind: String,
    /// The JSON form of the [`EventData`], exactly as stored and hashed (with its data fields
    /// sealed, see [`crate::seal`]).
    pub data: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    /// The JSON with the sealed fields opened (or marked deleted by retention), when the
    /// reader holds the keys; `None` when nothing was sealed.
    pub opened: Option<String>,
}

impl StoredEvent {
    /// The event's JSON as a person reads it: sealed fields opened when possible.
    pub fn json(&self) -> &str {
        self.opened.as_deref().unwrap_or(&self.data)
    }

    /// Parses the event (sealed fields opened when the reader holds the keys).
    pub fn parse(&self) -> Result<EventData, LedgerError> {
        serde_json::from_str(self.json()).map_err(|source| LedgerError::Parse {
            seq: self.seq,
            source,
        })
    }

    /// Whether the stored hash matches this row's content and `prev_hash` (the chain link to
    /// the previous row is not checked here).
    pub fn hash_matches(&self) -> bool {
        event_hash(
            &self.prev_hash,
            self.seq,
            self.ts_us,
            &self.kind,
            &self.session_id,
            &self.data,
        ) == self.hash
    }
}

/// A signed checkpoint as the ledger stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub ts_us: i64,
    pub root: Hash,
    /// The signed note, exactly as signed (see [`crate::checkpoint`]).
    pub note: String,
}

/// What [`LedgerReader::verify_with`] checks besides the chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The key checkpoints must be signed with. Without one, stored checkpoints are still
    /// compared with the events, but their signatures are not checked (and mean nothing).
    pub key: Option<CheckpointVerifier>,
    /// Checkpoints kept elsewhere (the mirror folder, an auditor's copy): `(where, note)`.
    /// They must verify with `key` and match the events.
    pub external: Vec<(String, String)>,
}

/// How the checkpoints fared in a successful verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointSummary {
    /// Checkpoints compared with the events (stored and external).
    pub checked: usize,
    /// Whether their signatures were checked (a key was given).
    pub signatures: bool,
    /// The largest tree size a checkpoint covered (0: none).
    pub latest: u64,
}

/// The outcome of [`LedgerReader::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// Every event checks out. `head` is the hash of the last event (32 zero bytes for an
    /// empty ledger): note it down to detect a later truncation or rewrite. `root` is the
    /// Merkle root of all events (RFC 6962), `checkpoints` what was checked against them.
    Verified {
        events: u64,
        head: [u8; 32],
        root: Hash,
        checkpoints: CheckpointSummary,
    },
    /// The first problem found, at sequence number `seq`; `detail` explains it for a human.
    Broken {
        seq: u64,
        problem: Problem,
        detail: String,
    },
}

/// What kind of break [`LedgerReader::verify`] found (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A row's content does not match its hash.
    Altered,
    /// A sequence number is absent.
    Missing,
    /// An intact row is in the wrong place in the chain.
    Reordered,
    /// A signed checkpoint covers more events than the ledger holds: the newest were deleted.
    Truncated,
    /// The events do not have the Merkle root a checkpoint signed for them: they were
    /// replaced (and re-hashed) after it was signed, or the checkpoint was altered.
    CheckpointMismatch,
    /// A checkpoint's signature does not verify with the given key.
    BadSignature,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::Altered => "altered",
            Problem::Missing => "missing",
            Problem::Reordered => "reordered",
            Problem::Truncated => "truncated",
            Problem::CheckpointMismatch => "checkpoint mismatch",
            Problem::BadSignature => "bad checkpoint signature",
        })
    }
}

/// Read-only access to a ledger: the SQLite file, or a PostgreSQL store.
#[derive(Debug)]
pub struct LedgerReader {
    db: Db,
    path: PathBuf,
    /// The segment keys, to open sealed fields (`None`: the ledger has no keys file).
    keys: std::sync::Mutex<Option<KeyStore>>,
}

/// Where a reader reads from.
enum Db {
    Sqlite(Connection),
    Postgres(Box<std::sync::Mutex<crate::pg::Conn>>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Db::Sqlite(_) => "Sqlite",
            Db::Postgres(_) => "Postgres",
        })
    }
}

/// One event row as either backend hands it out, borrowed; `None` where a column does not
/// hold the type the ledger writes.
struct RawRow<'a> {
    seq: Option<i64>,
    ts_us: Option<i64>,
    session_id: Option<&'a [u8]>,
    kind: Option<&'a [u8]>,
    data: Option<&'a [u8]>,
    prev_hash: Option<[u8; 32]>,
    hash: Option<[u8; 32]>,
}

impl<'a> RawRow<'a> {
    fn sqlite(row: &'a Row<'_>) -> rusqlite::Result<RawRow<'a>> {
        let int = |v: ValueRef<'_>| match v {
            ValueRef::Integer(i) => Some(i),
            _ => None,
        };
        let text = |v: ValueRef<'a>| match v {
            ValueRef::Text(t) => Some(t),
            _ => None,
        };
        Ok(RawRow {
            seq: int(row.get_ref(0)?),
            ts_us: int(row.get_ref(1)?),
            session_id: text(row.get_ref(2)?),
            kind: text(row.get_ref(3)?),
            data: text(row.get_ref(4)?),
            prev_hash: blob32(row.get_ref(5)?),
            hash: blob32(row.get_ref(6)?),
        })
    }

    fn postgres(row: &'a postgres::Row) -> RawRow<'a> {
        let text = |i| row.try_get::<_, &str>(i).ok().map(str::as_bytes);
        let hash = |i| {
            row.try_get::<_, &[u8]>(i)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
        };
        RawRow {
            seq: row.try_get(0).ok(),
            ts_us: row.try_get(1).ok(),
            session_id: text(2),
            kind: text(3),
            data: text(4),
            prev_hash: hash(5),
            hash: hash(6),
        }
    }
}

/// Runs `f` where the blocking PostgreSQL client may run: on this thread, or on a scoped one
/// when this thread drives an async runtime (the client would refuse to block it).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl LedgerReader {
    /// Opens a PostgreSQL store (`store.kind = "postgres"`) for reading. Fails clearly when
    /// the database cannot be reached or holds no ledger.
    pub fn open_postgres(url: &str) -> Result<Self, LedgerError> {
        off_runtime(|| {
            let mut conn = crate::pg::Conn::open(url)?;
            let name = conn.name.clone();
            let client = conn.client()?;
            if !crate::pg::has_tables(client, &name)? {
                return Err(LedgerError::Store {
                    path: name,
                    detail: "this database holds no portcullis ledger (no table \
                             portcullis.events): has a gateway run with this store.url?"
                        .into(),
                });
            }
            crate::pg::check_meta(client, &name)?;
            let keys = crate::seal::KeyStore::open_postgres(crate::pg::Conn::open(url)?);
            Ok(LedgerReader {
                db: Db::Postgres(Box::new(std::sync::Mutex::new(conn))),
                path: name,
                keys: std::sync::Mutex::new(Some(keys)),
            })
        })
    }

    /// Runs `f` with the PostgreSQL client (off the async runtime), mapping its errors.
    fn pg<T: Send>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, LedgerError> {
        let Db::Postgres(conn) = &self.db else {
            return Err(LedgerError::Store {
                path: self.path.clone(),
                detail: "not a PostgreSQL store".into(),
            });
        };
        off_runtime(|| Self::with_client(conn, context, f))
    }

    fn with_client<T>(
        conn: &std::sync::Mutex<crate::pg::Conn>,
        context: &'static str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, LedgerError> {
        let mut conn = conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = conn.name.clone();
        let client = conn.client()?;
        let out = f(client).map_err(|e| LedgerError::postgres(&name, context, e));
        if out.is_err() && client.is_closed() {
            conn.reset();
        }
        out
    }

    /// Opens the ledger at `path` read-only. If a crashed gateway left events in the journal
    /// and no gateway holds the ledger now, they are first replayed into SQLite (the one write
    /// a reader does), so a reader always sees every acknowledged event. Fails clearly if there is no file, or if the file
    /// is not a portcullis ledger of a schema version this build understands.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let not_found = || LedgerError::NotFound {
            path: path.to_path_buf(),
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(not_found()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(source) => {
                return Err(LedgerError::Access {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        crate::writer::recover_if_abandoned(path);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| LedgerError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(schema::BUSY_TIMEOUT)
            .map_err(|e| LedgerError::sqlite(path, "setting busy_timeout", e))?;
        // Not essential: a failure only makes scans slower.
        let _ = conn.pragma_update(None, "mmap_size", MMAP_BYTES);
        if !schema::has_table(&conn, path, "events")? {
            return Err(LedgerError::NotALedger {
                path: path.to_path_buf(),
            });
        }
        schema::check_version(&conn, path)?;
        let keys = KeyStore::open_ro(path)?;
        Ok(LedgerReader {
            db: Db::Sqlite(conn),
            path: path.to_path_buf(),
            keys: std::sync::Mutex::new(keys),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Up to `limit` events with `seq > after_seq`, in ascending order (for paging and
    /// following a live ledger: pass the last seq seen).
    pub fn after(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        let Ok(after) = i64::try_from(after_seq) else {
            return Ok(Vec::new()); // beyond any storable seq
        };
        if let Db::Postgres(_) = self.db {
            let sql = format!(
                "SELECT {COLUMNS} FROM portcullis.events WHERE seq > $1 ORDER BY seq LIMIT $2"
            );
            return self.pg_select(&sql, vec![after, clamp(limit)], None);
        }
        let sql = format!("SELECT {COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        self.select(&sql, (after, clamp(limit)))
    }

    /// Every event of the sessions whose id starts with `prefix` (a whole id, or the first
    /// characters `audit tail` shows), in ascending order. A full scan: no index on sessions.
    pub fn of_session(&self, prefix: &str) -> Result<Vec<StoredEvent>, LedgerError> {
        if let Db::Postgres(_) = self.db {
            let sql = format!(
                "SELECT {COLUMNS} FROM portcullis.events WHERE left(session_id, length($1)) = $1 \
                 ORDER BY seq"
            );
            return self.pg_select(&sql, Vec::new(), Some(prefix));
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE substr(session_id, 1, length(?1)) = ?1 ORDER BY seq"
        );
        self.select(&sql, [prefix])
    }

    /// Every event of one kind, in ascending order (the grant events the gateway replays at
    /// start, for instance).
    pub fn of_kind(&self, kind: &str) -> Result<Vec<StoredEvent>, LedgerError> {
        if let Db::Postgres(_) = self.db {
            let sql =
                format!("SELECT {COLUMNS} FROM portcullis.events WHERE kind = $1 ORDER BY seq");
            return self.pg_select(&sql, Vec::new(), Some(kind));
        }
        let sql = format!("SELECT {COLUMNS} FROM events WHERE kind = ?1 ORDER BY seq");
        self.select(&sql, [kind])
    }

    /// The last `n` events, in ascending order.
    pub fn last(&self, n: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        if let Db::Postgres(_) = self.db {
            let sql = format!(
                "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM portcullis.events ORDER BY seq \
                 DESC LIMIT $1) AS last ORDER BY seq"
            );
            return self.pg_select(&sql, vec![clamp(n)], None);
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM events ORDER BY seq DESC LIMIT ?1) \
             ORDER BY seq"
        );
        self.select(&sql, [clamp(n)])
    }

    /// The number of stored events.
    pub fn count(&self) -> Result<u64, LedgerError> {
        let conn = match &self.db {
            Db::Sqlite(conn) => conn,
            Db::Postgres(_) => {
                return self
                    .pg("counting events", |c| {
                        c.query_one("SELECT count(*) FROM portcullis.events", &[])?
                            .try_get::<_, i64>(0)
                    })
                    .map(|n| n.max(0) as u64)
            }
        };
        conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| LedgerError::sqlite(&self.path, "counting events", e))
    }

    fn select(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredEvent>, LedgerError> {
        let err = |e| LedgerError::sqlite(&self.path, "reading events", e);
        let Db::Sqlite(conn) = &self.db else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(sql).map_err(err)?;
        let mut rows = stmt.query(params).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            out.push(self.stored(&RawRow::sqlite(row).map_err(err)?)?);
        }
        Ok(out)
    }

    /// Events from the PostgreSQL store: `ints` are the query's integer parameters, `text`
    /// (if any) its one text parameter.
    fn pg_select(
        &self,
        sql: &str,
        ints: Vec<i64>,
        text: Option<&str>,
    ) -> Result<Vec<StoredEvent>, LedgerError> {
        let Db::Postgres(conn) = &self.db else {
            return Ok(Vec::new());
        };
        let (path, keys) = (&self.path, &self.keys);
        // The rows are opened (keys looked up in the store) off the async runtime too.
        off_runtime(|| {
            let rows = Self::with_client(conn, "reading events", |c| {
                let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
                if let Some(t) = &text {
                    params.push(t);
                }
                for i in &ints {
                    params.push(i);
                }
                c.query(sql, &params)
            })?;
            rows.iter()
                .map(|r| to_event(path, keys, &RawRow::postgres(r)))
                .collect()
        })
    }

    fn stored(&self, row: &RawRow<'_>) -> Result<StoredEvent, LedgerError> {
        to_event(&self.path, &self.keys, row)
    }

    /// The segments of the keys file (none if the ledger has no keys file).
    pub fn segments(&self) -> Result<Vec<crate::seal::Segment>, LedgerError> {
        let keys = &self.keys;
        off_runtime(|| {
            let mut keys = keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match keys.as_mut() {
                Some(k) => k.segments(),
                None => Ok(Vec::new()),
            }
        })
    }

    /// First seq, last seq and number of the events sealed under each segment.
    pub fn segment_ranges(
        &self,
    ) -> Result<std::collections::HashMap<String, (u64, u64, u64)>, LedgerError> {
        let conn = match &self.db {
            Db::Sqlite(conn) => conn,
            Db::Postgres(_) => {
                return self.pg("reading segments", |c| {
                    let rows = c.query(
                        "SELECT s, min(seq), max(seq), count(*) FROM (SELECT \
                         (data::jsonb) #>> '{sealed,segment}' AS s, seq FROM portcullis.events \
                         WHERE kind IN ('statement', 'result')) AS e WHERE s IS NOT NULL \
                         GROUP BY s",
                        &[],
                    )?;
                    rows.iter()
                        .map(|r| {
                            Ok((
                                r.try_get::<_, String>(0)?,
                                (
                                    r.try_get::<_, i64>(1)? as u64,
                                    r.try_get::<_, i64>(2)? as u64,
                                    r.try_get::<_, i64>(3)? as u64,
                                ),
                            ))
                        })
                        .collect()
                })
            }
        };
        let err = |e| LedgerError::sqlite(&self.path, "reading segments", e);
        let mut stmt = conn
            .prepare(
                "SELECT json_extract(data, '$.sealed.segment') AS s, min(seq), max(seq), count(*) \
                 FROM events WHERE kind IN ('statement', 'result') AND s IS NOT NULL GROUP BY s",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                    ),
                ))
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// Walks every event in `seq` order, recomputing the hash chain, and reports the first
    /// problem (see the [module docs](self) for what each [`Problem`] means).
    ///
    /// `progress` is called with the number of events checked so far every 100 000 events, and
    /// with the final count at the end (once, even when it is a multiple of 100 000). The walk reads one consistent snapshot, so it may run while the
    /// gateway appends (events appended meanwhile are not included). It does not parse the
    /// JSON and allocates nothing per row.
    ///
    /// `Err` means the file could not be read; a damaged chain is an `Ok(Broken { .. })`.
    pub fn verify(&self, progress: impl FnMut(u64)) -> Result<VerifyReport, LedgerError> {
        self.verify_with(&VerifyOptions::default(), progress)
    }

    /// [`verify`](Self::verify), and also: builds the Merkle tree of the events and compares
    /// its root with every stored checkpoint and every one in `opts.external` (signatures
    /// checked with `opts.key`). A checkpoint larger than the ledger is
    /// [`Problem::Truncated`]; one whose root differs, [`Problem::CheckpointMismatch`].
    /// Checking every checkpoint against the same events also proves them consistent with
    /// each other (each is a prefix of the next).
    pub fn verify_with(
        &self,
        opts: &VerifyOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<VerifyReport, LedgerError> {
        let mut targets = match self.checkpoint_targets(opts)? {
            Ok(t) => t,
            Err(report) => return Ok(report),
        };
        targets.sort_by_key(|t| t.size);
        // A checkpoint of the empty tree is compared here: the tree thread starts at size 1.
        if let Some(t) = targets
            .iter()
            .find(|t| t.size == 0 && t.root != merkle::empty_root())
        {
            return Ok(VerifyReport::Broken {
                seq: 0,
                problem: Problem::CheckpointMismatch,
                detail: format!(
                    "the {} of tree size 0 signs a root that is not the empty tree's",
                    t.label
                ),
            });
        }
        targets.retain(|t| t.size > 0);
        let mut prev = GENESIS;
        let mut checked: u64 = 0;
        let mut until_progress = PROGRESS_EVERY;
        let mut broken = None;
        // The chain is checked here as SQLite hands out the rows; the Merkle tree is built on
        // a second thread from the event hashes, in batches, and compared with the
        // checkpoints there (about a third of the work, done in parallel).
        let (frontier, mismatch) = std::thread::scope(|scope| {
            let (to_tree, batches) = std::sync::mpsc::sync_channel::<Vec<Hash>>(8);
            let (recycle, recycled) = std::sync::mpsc::channel::<Vec<Hash>>();
            let targets = &targets;
            let tree = scope.spawn(move || {
                let mut frontier = Frontier::new();
                let mut next = 0;
                for batch in batches {
                    for h in &batch {
                        frontier.push(event_leaf(h));
                        while next < targets.len() && targets[next].size == frontier.size() {
                            let root = frontier.root();
                            if root != targets[next].root {
                                return (frontier, Some((next, root)));
                            }
                            next += 1;
                        }
                    }
                    let _ = recycle.send(batch);
                }
                (frontier, None)
            });
            let mut batch: Vec<Hash> = Vec::with_capacity(TREE_BATCH);
            let scanned = self.scan(&mut |row| {
                let expected = checked + 1;
                match check_row(row, expected, &prev) {
                    Check::Linked(hash) => {
                        prev = hash;
                        checked = expected;
                        batch.push(hash);
                        if batch.len() == TREE_BATCH {
                            let fresh = recycled
                                .try_recv()
                                .unwrap_or_else(|_| Vec::with_capacity(TREE_BATCH));
                            if to_tree.send(std::mem::replace(&mut batch, fresh)).is_err() {
                                return false; // the tree found a mismatch: stop
                            }
                            batch.clear();
                        }
                        until_progress -= 1;
                        if until_progress == 0 {
                            progress(checked);
                            until_progress = PROGRESS_EVERY;
                        }
                    }
                    Check::Broken(b) => {
                        broken = Some((b, expected));
                        return false;
                    }
                }
                true
            });
            let _ = to_tree.send(batch);
            drop(to_tree);
            let joined = tree.join();
            scanned.map(|()| joined)
        })?
        .unwrap_or_else(|_| (Frontier::new(), Some((usize::MAX, GENESIS))));
        if let Some((i, root)) = mismatch {
            let Some(t) = targets.get(i) else {
                return Err(LedgerError::Proof {
                    path: self.path.clone(),
                    detail: "the Merkle tree thread of verification panicked".into(),
                });
            };
            return Ok(VerifyReport::Broken {
                seq: t.size,
                problem: Problem::CheckpointMismatch,
                detail: format!(
                    "the {} at tree size {} signs root {}, but events 1 to {} have root {}: \
                     events up to {} were replaced (and re-hashed) after it was signed",
                    t.label,
                    t.size,
                    to_hex(&t.root),
                    t.size,
                    to_hex(&root),
                    t.size
                ),
            });
        }
        if let Some((b, expected)) = broken {
            return Ok(self.explain(b, expected, &prev));
        }
        if until_progress != PROGRESS_EVERY || checked == 0 {
            progress(checked); // the final count, unless it was just reported
        }
        if let Some(t) = targets.last().filter(|t| t.size > checked) {
            return Ok(VerifyReport::Broken {
                seq: checked + 1,
                problem: Problem::Truncated,
                detail: format!(
                    "the {} covers {} events but the ledger has {checked}: events {} to {} \
                     were deleted (or the file was replaced by an older copy)",
                    t.label,
                    t.size,
                    checked + 1,
                    t.size
                ),
            });
        }
        Ok(VerifyReport::Verified {
            events: checked,
            head: prev,
            root: frontier.root(),
            checkpoints: CheckpointSummary {
                checked: targets.len(),
                signatures: opts.key.is_some(),
                latest: targets.last().map_or(0, |t| t.size),
            },
        })
    }

    /// Every checkpoint verification compares with the events, after checking what can be
    /// checked without them (signatures, stored columns against the note).
    fn checkpoint_targets(
        &self,
        opts: &VerifyOptions,
    ) -> Result<Result<Vec<Target>, VerifyReport>, LedgerError> {
        let bad = |seq: u64, problem, detail: String| {
            Ok(Err(VerifyReport::Broken {
                seq,
                problem,
                detail,
            }))
        };
        let mut targets = Vec::new();
        for cp in self.checkpoints()? {
            let label = "stored checkpoint".to_string();
            let said = match &opts.key {
                Some(key) => match key.open(&cp.note) {
                    Ok(said) => said,
                    Err(e) => {
                        return bad(
                            cp.size,
                            Problem::BadSignature,
                            format!("the {label} of tree size {} does not verify: {e}", cp.size),
                        )
                    }
                },
                None => match checkpoint::peek(&cp.note) {
                    Some(said) => said,
                    None => {
                        return bad(
                            cp.size,
                            Problem::BadSignature,
                            format!(
                                "the {label} of tree size {} is not a readable checkpoint note",
                                cp.size
                            ),
                        )
                    }
                },
            };
            if said.size != cp.size || said.root != cp.root {
                return bad(
                    cp.size,
                    Problem::CheckpointMismatch,
                    format!(
                        "the {label} of tree size {}: its row says root {}, its signed note says \
                         size {} root {} (the row was altered)",
                        cp.size,
                        to_hex(&cp.root),
                        said.size,
                        to_hex(&said.root)
                    ),
                );
            }
            targets.push(Target {
                size: cp.size,
                root: cp.root,
                label,
            });
        }
        for (place, note) in &opts.external {
            let said = match &opts.key {
                Some(key) => key.open(note),
                None => checkpoint::peek(note).ok_or_else(|| "not a checkpoint note".to_string()),
            };
            match said {
                Ok(said) => targets.push(Target {
                    size: said.size,
                    root: said.root,
                    label: format!("checkpoint in {place}"),
                }),
                Err(e) => {
                    return bad(
                        0,
                        Problem::BadSignature,
                        format!("the checkpoint in {place} does not verify: {e}"),
                    )
                }
            }
        }
        Ok(Ok(targets))
    }

    /// The stored checkpoints, oldest first (none if the ledger predates checkpoints).
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        let conn = match &self.db {
            Db::Sqlite(conn) => conn,
            Db::Postgres(_) => {
                let rows = self.pg("reading checkpoints", |c| {
                    c.query(
                        "SELECT tree_size, ts_us, root, note FROM portcullis.checkpoints \
                         ORDER BY tree_size",
                        &[],
                    )
                })?;
                let err = |e| LedgerError::postgres(&self.path, "reading checkpoints", e);
                return rows
                    .iter()
                    .map(|r| {
                        let size: i64 = r.try_get(0).map_err(err)?;
                        let root: &[u8] = r.try_get(2).map_err(err)?;
                        Ok(StoredCheckpoint {
                            size: size.max(0) as u64,
                            ts_us: r.try_get(1).map_err(err)?,
                            root: <[u8; 32]>::try_from(root).map_err(|_| {
                                LedgerError::Malformed {
                                    path: self.path.clone(),
                                    seq: size,
                                    detail: "checkpoint row: root is not 32 bytes".into(),
                                }
                            })?,
                            note: r.try_get(3).map_err(err)?,
                        })
                    })
                    .collect();
            }
        };
        let err = |e| LedgerError::sqlite(&self.path, "reading checkpoints", e);
        if !schema::has_table(conn, &self.path, "checkpoints")? {
            return Ok(Vec::new());
        }
        let mut stmt = conn
            .prepare("SELECT tree_size, ts_us, root, note FROM checkpoints ORDER BY tree_size")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let size: i64 = row.get(0).map_err(err)?;
            let malformed = |detail: &str| LedgerError::Malformed {
                path: self.path.clone(),
                seq: size,
                detail: format!("checkpoint row: {detail}"),
            };
            out.push(StoredCheckpoint {
                size: u64::try_from(size).map_err(|_| malformed("negative tree size"))?,
                ts_us: row.get(1).map_err(err)?,
                root: blob32(row.get_ref(2).map_err(err)?)
                    .ok_or_else(|| malformed("root is not a 32-byte blob"))?,
                note: row.get(3).map_err(err)?,
            });
        }
        Ok(out)
    }

    /// An inclusion proof of event `seq` in the tree of the stored checkpoint of size `size`
    /// (the latest checkpoint when `None`): everything needed to check offline that the event
    /// is in the signed ledger.
    pub fn prove(&self, seq: u64, size: Option<u64>) -> Result<InclusionProof, LedgerError> {
        let proof_err = |detail: String| LedgerError::Proof {
            path: self.path.clone(),
            detail,
        };
        let checkpoints = self.checkpoints()?;
        let cp = match size {
            Some(n) => checkpoints.iter().find(|c| c.size == n).ok_or_else(|| {
                proof_err(format!(
                    "there is no stored checkpoint of tree size {n}; `portcullis audit \
                     checkpoints` lists them"
                ))
            })?,
            None => checkpoints.last().ok_or_else(|| {
                proof_err(
                    "the ledger has no signed checkpoint yet: enable store.checkpoints and let \
                     the gateway run (it signs one every few seconds, and at shutdown)"
                        .into(),
                )
            })?,
        };
        if seq == 0 || seq > cp.size {
            return Err(proof_err(format!(
                "event {seq} is not covered by the checkpoint of {} events{}",
                cp.size,
                if seq > cp.size {
                    "; wait for the next checkpoint (every few seconds) or stop the gateway, which signs one"
                } else {
                    ""
                }
            )));
        }
        let mut leaves =
            Vec::with_capacity(usize::try_from(cp.size.min(self.count()?)).unwrap_or(0));
        let mut bad = false;
        self.scan_hashes(cp.size, &mut |h| match h {
            Some(h) => leaves.push(event_leaf(&h)),
            None => bad = true,
        })?;
        if bad {
            return Err(proof_err(
                "an event hash is not 32 bytes: run `portcullis audit verify`".into(),
            ));
        }
        if leaves.len() as u64 != cp.size || merkle::root(&leaves) != cp.root {
            return Err(proof_err(format!(
                "the events no longer match the checkpoint of {} events: run `portcullis audit \
                 verify`",
                cp.size
            )));
        }
        let event = self
            .after(seq - 1, 1)?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq)
            .ok_or_else(|| proof_err(format!("event {seq} is not in the ledger")))?;
        let path = merkle::inclusion_proof(seq - 1, &leaves)
            .ok_or_else(|| proof_err(format!("event {seq} is outside the tree")))?;
        Ok(InclusionProof {
            event,
            tree_size: cp.size,
            path,
            root: cp.root,
            checkpoint: cp.note.clone(),
        })
    }

    /// Hands every event row to `f` in `seq` order, from one consistent snapshot, until `f`
    /// returns `false`. Rows are borrowed from the backend (nothing is allocated per row).
    /// With a PostgreSQL store this blocks the calling thread, which must not be an async
    /// runtime's worker (`f` need not be `Send`, so it cannot move to another thread).
    fn scan(&self, f: &mut dyn FnMut(&RawRow<'_>) -> bool) -> Result<(), LedgerError> {
        match &self.db {
            Db::Sqlite(conn) => {
                let err = |e| LedgerError::sqlite(&self.path, "reading events for verification", e);
                let sql = format!("SELECT {COLUMNS} FROM events ORDER BY seq");
                let mut stmt = conn.prepare(&sql).map_err(err)?;
                let mut rows = stmt.query([]).map_err(err)?;
                while let Some(row) = rows.next().map_err(err)? {
                    if !f(&RawRow::sqlite(row).map_err(err)?) {
                        break;
                    }
                }
                Ok(())
            }
            Db::Postgres(conn) => Self::with_client(conn, "reading events for verification", |c| {
                use postgres::fallible_iterator::FallibleIterator;
                let mut tx = c
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let sql = format!("SELECT {COLUMNS} FROM portcullis.events ORDER BY seq");
                let mut rows = tx.query_raw(&sql, std::iter::empty::<i64>())?;
                while let Some(row) = rows.next()? {
                    if !f(&RawRow::postgres(&row)) {
                        break;
                    }
                }
                drop(rows);
                tx.commit()
            }),
        }
    }

    /// Hands the hash of every event up to `size` to `f` in `seq` order (`None`: not 32 bytes).
    fn scan_hashes(
        &self,
        size: u64,
        f: &mut (dyn FnMut(Option<Hash>) + Send),
    ) -> Result<(), LedgerError> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        match &self.db {
            Db::Sqlite(conn) => {
                let err =
                    |e| LedgerError::sqlite(&self.path, "reading event hashes for a proof", e);
                let mut stmt = conn
                    .prepare("SELECT hash FROM events WHERE seq <= ?1 ORDER BY seq")
                    .map_err(err)?;
                let mut rows = stmt.query([size]).map_err(err)?;
                while let Some(row) = rows.next().map_err(err)? {
                    f(blob32(row.get_ref(0).map_err(err)?));
                }
                Ok(())
            }
            Db::Postgres(_) => self.pg("reading event hashes for a proof", |c| {
                use postgres::fallible_iterator::FallibleIterator;
                let mut rows = c.query_raw(
                    "SELECT hash FROM portcullis.events WHERE seq <= $1 ORDER BY seq",
                    [size],
                )?;
                while let Some(row) = rows.next()? {
                    f(row
                        .try_get::<_, &[u8]>(0)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok()));
                }
                Ok(())
            }),
        }
    }

    /// Turns the first failed check into a report, looking further into the file (only on
    /// this slow path) to tell a moved row from an altered one.
    fn explain(&self, broken: BrokenRow, expected: u64, prev: &[u8; 32]) -> VerifyReport {
        let report = |seq: u64, problem, detail: String| VerifyReport::Broken {
            seq,
            problem,
            detail,
        };
        let prev_seq = expected - 1;
        match broken {
            BrokenRow::BadSeq { seq } if seq < 1 => report(
                0,
                Problem::Altered,
                format!("a row has seq {seq}; sequence numbers start at 1"),
            ),
            BrokenRow::BadSeq { seq } if seq as u64 > expected => {
                let seq = seq as u64; // positive, checked by the guard above
                let missing = if seq == expected + 1 {
                    format!("event {expected} is missing")
                } else {
                    format!("events {expected} to {} are missing", seq - 1)
                };
                let detail = if expected == 1 {
                    format!("{missing}: the ledger starts at seq {seq} instead of 1")
                } else {
                    format!("{missing} (deleted): the next stored row is seq {seq}")
                };
                report(expected, Problem::Missing, detail)
            }
            BrokenRow::BadSeq { seq } => report(
                seq as u64, // 1 <= seq < expected here
                Problem::Reordered,
                format!("seq {seq} occurs more than once (the table's key was altered)"),
            ),
            BrokenRow::BadColumn { column } => report(
                expected,
                Problem::Altered,
                format!("row {expected}: column {column} does not hold the type the ledger writes"),
            ),
            BrokenRow::Unlinked { row } => {
                let follows = match self.seq_where("hash", &row.prev_hash) {
                    Some(p) => format!("; its prev_hash is the hash of row {p}"),
                    None => String::new(),
                };
                report(
                    expected,
                    Problem::Reordered,
                    format!(
                        "row {expected} is intact but does not follow row {prev_seq}{follows}: \
                         its prev_hash is {}, the hash of row {prev_seq} is {}; an earlier row \
                         was rewritten with a recomputed hash, or rows were moved or inserted",
                        to_hex(&row.prev_hash),
                        to_hex(prev),
                    ),
                )
            }
            BrokenRow::HashMismatch { row, computed } => {
                if let Some(original) = self.original_seq(&row, expected) {
                    return report(
                        expected,
                        Problem::Reordered,
                        format!(
                            "row {expected} holds the event recorded as seq {original}: rows \
                             were swapped or moved"
                        ),
                    );
                }
                let link = if row.prev_hash == *prev {
                    ""
                } else {
                    " (its prev_hash does not match the previous row either)"
                };
                report(
                    expected,
                    Problem::Altered,
                    format!(
                        "row {expected} was altered: its content hashes to {}, the stored hash is \
                         {}{link}",
                        to_hex(&computed),
                        to_hex(&row.hash),
                    ),
                )
            }
        }
    }

    /// If `row` (found at position `at`, where its hash does not match) is an intact event
    /// recorded under another seq, that seq. Tries the seqs its neighbours point at (the row
    /// holding its `prev_hash`, the row naming its `hash` as `prev_hash`), then a window
    /// around `at`. Slow path only: runs once, after the scan stopped.
    fn original_seq(&self, row: &OwnedRow, at: u64) -> Option<u64> {
        const WINDOW: u64 = 4096;
        let after_pred = self.seq_where("hash", &row.prev_hash).map(|q| q + 1);
        let before_succ = self.seq_where("prev_hash", &row.hash).map(|r| r - 1);
        let genesis = (row.prev_hash == GENESIS).then_some(1);
        let window = at.saturating_sub(WINDOW).max(1)..=at.saturating_add(WINDOW);
        [after_pred, before_succ, genesis]
            .into_iter()
            .flatten()
            .chain(window)
            .filter(|&s| s != at && s >= 1)
            .find(|&s| {
                event_hash(
                    &row.prev_hash,
                    s,
                    row.ts_us,
                    &row.kind,
                    &row.session_id,
                    &row.data,
                ) == row.hash
            })
    }

    /// The lowest seq whose `column` (`hash` or `prev_hash`) equals `value`, if any (a full
    /// scan: diagnostics only).
    fn seq_where(&self, column: &'static str, value: &[u8; 32]) -> Option<u64> {
        let found = match &self.db {
            Db::Sqlite(conn) => {
                let sql =
                    format!("SELECT seq FROM events WHERE {column} = ?1 ORDER BY seq LIMIT 1");
                conn.query_row(&sql, [&value[..]], |r| r.get::<_, i64>(0))
                    .optional()
                    .ok()
                    .flatten()
            }
            Db::Postgres(_) => {
                let sql = format!(
                    "SELECT seq FROM portcullis.events WHERE {column} = $1 ORDER BY seq LIMIT 1"
                );
                self.pg("diagnosing a broken chain", |c| {
                    c.query_opt(&sql, &[&&value[..]])?
                        .map(|r| r.try_get::<_, i64>(0))
                        .transpose()
                })
                .ok()
                .flatten()
            }
        };
        found
            .and_then(|s| u64::try_from(s).ok())
            .filter(|&s| s >= 1)
    }
}

/// A stored event from a row, its sealed fields opened with `keys` when they can be.
fn to_event(
    path: &Path,
    keys: &std::sync::Mutex<Option<KeyStore>>,
    row: &RawRow<'_>,
) -> Result<StoredEvent, LedgerError> {
    let raw_seq = row.seq.unwrap_or(-1);
    let malformed = |detail: &str| LedgerError::Malformed {
        path: path.to_path_buf(),
        seq: raw_seq,
        detail: detail.to_string(),
    };
    let text = |v: Option<&[u8]>, name: &str| -> Result<String, LedgerError> {
        match v {
            Some(t) => String::from_utf8(t.to_vec())
                .map_err(|_| malformed(&format!("{name} is not valid UTF-8"))),
            None => Err(malformed(&format!("{name} is not text"))),
        }
    };
    let hash = |v: Option<[u8; 32]>, name: &str| -> Result<[u8; 32], LedgerError> {
        v.ok_or_else(|| malformed(&format!("{name} is not a 32-byte blob")))
    };
    Ok(StoredEvent {
        seq: row
            .seq
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| malformed("seq is not a positive integer"))?,
        ts_us: row
            .ts_us
            .ok_or_else(|| malformed("ts_us is not an integer"))?,
        session_id: text(row.session_id, "session_id")?,
        kind: text(row.kind, "kind")?,
        data: text(row.data, "data")?,
        prev_hash: hash(row.prev_hash, "prev_hash")?,
        hash: hash(row.hash, "hash")?,
        opened: None,
    })
    .map(|mut ev| {
        let mut keys = keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = keys.as_mut() {
            ev.opened = k.unseal(&ev.data);
        }
        ev
    })
}

/// A checkpoint to compare with the events during verification.
struct Target {
    size: u64,
    root: Hash,
    label: String,
}

/// Proof that one event is in a signed ledger: the event, the audit path from its leaf to the
/// root of the checkpoint's tree, and the checkpoint. Checked offline by
/// [`InclusionProof::verify`], `portcullis audit verify-proof`, or
/// `docs/tools/verify_proof.py` (independent of portcullis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub event: StoredEvent,
    pub tree_size: u64,
    /// Sibling hashes from the leaf up (RFC 6962 audit path).
    pub path: Vec<Hash>,
    pub root: Hash,
    /// The signed checkpoint note whose root `root` is.
    pub checkpoint: String,
}

/// Name of the proof file format, in its `format` field.
pub const PROOF_FORMAT: &str = "portcullis-inclusion-proof-v1";

impl InclusionProof {
    /// The proof as a JSON document (what `portcullis audit prove` prints). Hashes are
    /// lower-case hex; `event.data` is the stored text exactly as hashed.
    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.event;
        serde_json::json!({
            "format": PROOF_FORMAT,
            "event": {
                "seq": e.seq,
                "ts_us": e.ts_us,
                "session_id": e.session_id,
                "kind": e.kind,
                "data": e.data,
                "prev_hash": to_hex(&e.prev_hash),
                "hash": to_hex(&e.hash),
            },
            "leaf_index": e.seq.saturating_sub(1),
            "tree_size": self.tree_size,
            "path": self.path.iter().map(|h| to_hex(h)).collect::<Vec<_>>(),
            "root": to_hex(&self.root),
            "checkpoint": self.checkpoint,
        })
    }

    /// Reads a proof written by [`to_json`](Self::to_json).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if v["format"] != PROOF_FORMAT {
            return Err(format!(
                "not a {PROOF_FORMAT} document (its \"format\" field)"
            ));
        }
        let field = |ptr: &str| v.pointer(ptr).ok_or_else(|| format!("missing field {ptr}"));
        let text_at = |ptr: &str| -> Result<String, String> {
            field(ptr)?
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{ptr} is not a string"))
        };
        let hash_at = |ptr: &str| -> Result<Hash, String> {
            from_hex(&text_at(ptr)?).ok_or_else(|| format!("{ptr} is not a 64-digit hex hash"))
        };
        let u64_at = |ptr: &str| -> Result<u64, String> {
            field(ptr)?
                .as_u64()
                .ok_or_else(|| format!("{ptr} is not a non-negative integer"))
        };
        let path = field("/path")?
            .as_array()
            .ok_or("/path is not a list")?
            .iter()
            .map(|h| h.as_str().and_then(from_hex))
            .collect::<Option<Vec<_>>>()
            .ok_or("/path holds something other than hex hashes")?;
        Ok(InclusionProof {
            event: StoredEvent {
                seq: u64_at("/event/seq")?,
                ts_us: field("/event/ts_us")?
                    .as_i64()
                    .ok_or("/event/ts_us is not an integer")?,
                session_id: text_at("/event/session_id")?,
                kind: text_at("/event/kind")?,
                data: text_at("/event/data")?,
                prev_hash: hash_at("/event/prev_hash")?,
                hash: hash_at("/event/hash")?,
                opened: None,
            },
            tree_size: u64_at("/tree_size")?,
            path,
            root: hash_at("/root")?,
            checkpoint: text_at("/checkpoint")?,
        })
    }

    /// Checks the proof: the event's hash from its fields, the path to the root, and the
    /// checkpoint's signature and root. Returns what the checkpoint says.
    pub fn verify(&self, key: &CheckpointVerifier) -> Result<checkpoint::Checkpoint, String> {
        let e = &self.event;
        if !e.hash_matches() {
            return Err(format!(
                "event {}: its fields do not hash to its hash: the event was altered",
                e.seq
            ));
        }
        let cp = key.open(&self.checkpoint)?;
        if cp.size != self.tree_size || cp.root != self.root {
            return Err(format!(
                "the proof is for tree size {} root {}, the checkpoint says size {} root {}",
                self.tree_size,
                to_hex(&self.root),
                cp.size,
                to_hex(&cp.root)
            ));
        }
        let index = e
            .seq
            .checked_sub(1)
            .ok_or("event seq 0 is not in any ledger")?;
        if !merkle::verify_inclusion(index, cp.size, &event_leaf(&e.hash), &self.path, &cp.root) {
            return Err(format!(
                "the audit path does not lead from event {} to the checkpoint's root: the \
                 event is not the one the checkpoint covers at that position",
                e.seq
            ));
        }
        Ok(cp)
    }
}

/// Parses 64 hex digits.
fn from_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The outcome of checking one row during verification.
enum Check {
    /// Intact and linked to its predecessor; carries its hash.
    Linked([u8; 32]),
    Broken(BrokenRow),
}

/// A copy of a row that failed, for diagnosis after the scan stopped.
struct OwnedRow {
    ts_us: i64,
    session_id: Vec<u8>,
    kind: Vec<u8>,
    data: Vec<u8>,
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

enum BrokenRow {
    /// The row's seq is not the expected one (`seq` as stored).
    BadSeq { seq: i64 },
    /// A column has the wrong type or size.
    BadColumn { column: &'static str },
    /// The hash matches the content but `prev_hash` is not the previous row's hash.
    Unlinked { row: OwnedRow },
    /// The hash does not match the content.
    HashMismatch { row: OwnedRow, computed: [u8; 32] },
}

/// Checks the row that should be event `expected`, following `prev`. Borrows the column
/// values from the backend; copies only when the row is broken.
fn check_row(row: &RawRow<'_>, expected: u64, prev: &[u8; 32]) -> Check {
    let broken = Check::Broken;
    let Some(seq) = row.seq else {
        return broken(BrokenRow::BadColumn { column: "seq" });
    };
    if u64::try_from(seq).ok() != Some(expected) {
        return broken(BrokenRow::BadSeq { seq });
    }
    let Some(ts_us) = row.ts_us else {
        return broken(BrokenRow::BadColumn { column: "ts_us" });
    };
    let Some(session_id) = row.session_id else {
        return broken(BrokenRow::BadColumn {
            column: "session_id",
        });
    };
    let Some(kind) = row.kind else {
        return broken(BrokenRow::BadColumn { column: "kind" });
    };
    let Some(data) = row.data else {
        return broken(BrokenRow::BadColumn { column: "data" });
    };
    let Some(prev_hash) = row.prev_hash else {
        return broken(BrokenRow::BadColumn {
            column: "prev_hash",
        });
    };
    let Some(hash) = row.hash else {
        return broken(BrokenRow::BadColumn { column: "hash" });
    };
    let computed = event_hash(&prev_hash, expected, ts_us, kind, session_id, data);
    let owned = || OwnedRow {
        ts_us,
        session_id: session_id.to_vec(),
        kind: kind.to_vec(),
        data: data.to_vec(),
        prev_hash,
        hash,
    };
    if computed != hash {
        return broken(BrokenRow::HashMismatch {
            row: owned(),
            computed,
        });
    }
    if prev_hash != *prev {
        return broken(BrokenRow::Unlinked { row: owned() });
    }
    Check::Linked(hash)
}
