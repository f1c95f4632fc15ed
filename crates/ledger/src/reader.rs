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
use crate::error::LedgerError;
use crate::schema::{self, blob32, COLUMNS};

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
    /// The JSON form of the [`EventData`], exactly as hashed.
    pub data: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl StoredEvent {
    /// Parses `data` into an [`EventData`].
    pub fn parse(&self) -> Result<EventData, LedgerError> {
        serde_json::from_str(&self.data).map_err(|source| LedgerError::Parse {
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

/// The outcome of [`LedgerReader::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// Every event checks out. `head` is the hash of the last event (32 zero bytes for an
    /// empty ledger): note it down to detect a later truncation or rewrite.
    Verified { events: u64, head: [u8; 32] },
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
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::Altered => "altered",
            Problem::Missing => "missing",
            Problem::Reordered => "reordered",
        })
    }
}

/// Read-only access to a ledger file.
#[derive(Debug)]
pub struct LedgerReader {
    conn: Connection,
    path: PathBuf,
}

impl LedgerReader {
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
        if !schema::has_events_table(&conn, path)? {
            return Err(LedgerError::NotALedger {
                path: path.to_path_buf(),
            });
        }
        schema::check_version(&conn, path)?;
        Ok(LedgerReader {
            conn,
            path: path.to_path_buf(),
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
        let sql = format!("SELECT {COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        self.select(&sql, (after, clamp(limit)))
    }

    /// Every event of one kind, in ascending order (the grant events the gateway replays at
    /// start, for instance).
    pub fn of_kind(&self, kind: &str) -> Result<Vec<StoredEvent>, LedgerError> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE kind = ?1 ORDER BY seq");
        self.select(&sql, [kind])
    }

    /// The last `n` events, in ascending order.
    pub fn last(&self, n: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM events ORDER BY seq DESC LIMIT ?1) \
             ORDER BY seq"
        );
        self.select(&sql, [clamp(n)])
    }

    /// The number of stored events.
    pub fn count(&self) -> Result<u64, LedgerError> {
        self.conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| LedgerError::sqlite(&self.path, "counting events", e))
    }

    fn select(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredEvent>, LedgerError> {
        let err = |e| LedgerError::sqlite(&self.path, "reading events", e);
        let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
        let mut rows = stmt.query(params).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            out.push(self.stored(row)?);
        }
        Ok(out)
    }

    fn stored(&self, row: &Row<'_>) -> Result<StoredEvent, LedgerError> {
        let err = |e| LedgerError::sqlite(&self.path, "reading events", e);
        let raw_seq: i64 = row.get(0).map_err(err)?;
        let malformed = |detail: &str| LedgerError::Malformed {
            path: self.path.clone(),
            seq: raw_seq,
            detail: detail.to_string(),
        };
        let text = |i: usize, name: &str| -> Result<String, LedgerError> {
            match row.get_ref(i).map_err(err)? {
                ValueRef::Text(t) => String::from_utf8(t.to_vec())
                    .map_err(|_| malformed(&format!("{name} is not valid UTF-8"))),
                _ => Err(malformed(&format!("{name} is not text"))),
            }
        };
        let hash = |i: usize, name: &str| -> Result<[u8; 32], LedgerError> {
            blob32(row.get_ref(i).map_err(err)?)
                .ok_or_else(|| malformed(&format!("{name} is not a 32-byte blob")))
        };
        Ok(StoredEvent {
            seq: u64::try_from(raw_seq).map_err(|_| malformed("negative seq"))?,
            ts_us: match row.get_ref(1).map_err(err)? {
                ValueRef::Integer(t) => t,
                _ => return Err(malformed("ts_us is not an integer")),
            },
            session_id: text(2, "session_id")?,
            kind: text(3, "kind")?,
            data: text(4, "data")?,
            prev_hash: hash(5, "prev_hash")?,
            hash: hash(6, "hash")?,
        })
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
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport, LedgerError> {
        let err = |e| LedgerError::sqlite(&self.path, "reading events for verification", e);
        let sql = format!("SELECT {COLUMNS} FROM events ORDER BY seq");
        let mut stmt = self.conn.prepare(&sql).map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut prev = GENESIS;
        let mut checked: u64 = 0;
        let mut until_progress = PROGRESS_EVERY;
        while let Some(row) = rows.next().map_err(err)? {
            let expected = checked + 1;
            match check_row(row, expected, &prev).map_err(err)? {
                Check::Linked(hash) => {
                    prev = hash;
                    checked = expected;
                    until_progress -= 1;
                    if until_progress == 0 {
                        progress(checked);
                        until_progress = PROGRESS_EVERY;
                    }
                }
                Check::Broken(broken) => {
                    drop(rows);
                    return Ok(self.explain(broken, expected, &prev));
                }
            }
        }
        if until_progress != PROGRESS_EVERY || checked == 0 {
            progress(checked); // the final count, unless it was just reported
        }
        Ok(VerifyReport::Verified {
            events: checked,
            head: prev,
        })
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
        let sql = format!("SELECT seq FROM events WHERE {column} = ?1 ORDER BY seq LIMIT 1");
        self.conn
            .query_row(&sql, [&value[..]], |r| r.get::<_, i64>(0))
            .optional()
            .ok()
            .flatten()
            .and_then(|s| u64::try_from(s).ok())
            .filter(|&s| s >= 1)
    }
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
/// values from SQLite; copies only when the row is broken.
fn check_row(row: &Row<'_>, expected: u64, prev: &[u8; 32]) -> rusqlite::Result<Check> {
    let broken = |b| Ok(Check::Broken(b));
    let seq = match row.get_ref(0)? {
        ValueRef::Integer(s) => s,
        _ => return broken(BrokenRow::BadColumn { column: "seq" }),
    };
    if u64::try_from(seq).ok() != Some(expected) {
        return broken(BrokenRow::BadSeq { seq });
    }
    let ts_us = match row.get_ref(1)? {
        ValueRef::Integer(t) => t,
        _ => return broken(BrokenRow::BadColumn { column: "ts_us" }),
    };
    let ValueRef::Text(session_id) = row.get_ref(2)? else {
        return broken(BrokenRow::BadColumn {
            column: "session_id",
        });
    };
    let ValueRef::Text(kind) = row.get_ref(3)? else {
        return broken(BrokenRow::BadColumn { column: "kind" });
    };
    let ValueRef::Text(data) = row.get_ref(4)? else {
        return broken(BrokenRow::BadColumn { column: "data" });
    };
    let Some(prev_hash) = blob32(row.get_ref(5)?) else {
        return broken(BrokenRow::BadColumn {
            column: "prev_hash",
        });
    };
    let Some(hash) = blob32(row.get_ref(6)?) else {
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
    Ok(Check::Linked(hash))
}
