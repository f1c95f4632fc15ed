//! Sealing: the parts of events that carry data (SQL text, bound parameters, error messages)
//! are encrypted under a key per *segment* — one connection, one UTC day — so that retention
//! can delete them by destroying the key (crypto-shredding) while every event, its hash, the
//! chain, the Merkle tree and the checkpoints stay exactly as they were and keep verifying.
//!
//! ```text
//! statement event as stored:  {"kind":"statement", "principal":…, "connection":"orders-prod",
//!                              "text":"", "verdict":"allow", …,
//!                              "sealed":{"segment":"orders-prod/2026-12-02","data":"<base64>"}}
//! data = base64( nonce (12 bytes, never repeated) ‖ AES-256-GCM( {"text":…,"params":[…]} ) ),
//!        with the segment name as associated data
//! ```
//!
//! The refusal `reason` and the classifier's notes are sealed with the text (a parse error can
//! quote a literal). Who, when, where, which tables, the verdict and the outcome stay in clear: an auditor can
//! still see that an agent ran an UPDATE on `public.orders` under a grant a year ago, but no
//! longer what it wrote.
//!
//! Keys live in `<ledger>-keys`, a small SQLite file beside the ledger (rollback journal and
//! `secure_delete`, so a deleted key's bytes are overwritten in the file). A key is created,
//! and made durable, by the first event of its segment, before that event is acknowledged.
//! Readers open the fields transparently ([`crate::StoredEvent::parse`]); once a key is
//! deleted they show the event with `sealed.deleted = true` and the fields empty. Lose the keys
//! file and the sealed fields are lost with it: back it up with the ledger.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use portcullis_core::calendar::{civil_from_days, days_from_civil, days_in_month};
use portcullis_core::{EventData, ParamValue, Sealed};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;

/// One day in microseconds (event timestamps are microseconds).
pub(crate) const DAY_US: i64 = 86_400_000_000;

/// The keys file of a ledger: `<ledger>-keys`.
pub fn keys_path(ledger: &Path) -> PathBuf {
    let mut s = ledger.as_os_str().to_owned();
    s.push("-keys");
    PathBuf::from(s)
}

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS segment_keys (
    segment TEXT PRIMARY KEY,
    connection TEXT NOT NULL,
    day TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    key BLOB,                -- NULL once retention deleted it
    deleted_us INTEGER,
    deleted_rule TEXT
);
";

/// The sealed fields of a statement. `reason` and the classifier's `notes` are sealed too:
/// a parse error in either can quote the statement's literals.
#[derive(Serialize, Deserialize)]
struct StatementFields {
    text: String,
    #[serde(default)]
    params: Vec<ParamValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

/// The sealed fields of a result.
#[derive(Serialize, Deserialize)]
struct ResultFields {
    message: String,
}

/// A segment's key, or the fact that retention deleted it.
#[derive(Clone)]
enum Slot {
    Live(std::sync::Arc<LessSafeKey>),
    Deleted,
}

/// One segment as the keys file knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub segment: String,
    pub connection: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// Whether retention deleted its key.
    pub deleted: bool,
}

/// Where the keys are kept: the SQLite keys file, or the PostgreSQL store's
/// `portcullis.segment_keys` table (shared by every gateway of the store).
enum KeyDb {
    Sqlite(Connection),
    Postgres(Box<crate::pg::Conn>),
}

/// The keys of a ledger's segments (writer or reader side).
pub struct KeyStore {
    path: PathBuf,
    conn: KeyDb,
    cache: HashMap<String, Slot>,
    rng: SystemRandom,
    /// Connection of each open session (result events name only their session).
    sessions: HashMap<String, String>,
    /// Nonces: 8 random bytes drawn when this store was opened (and again whenever the
    /// counter wraps) followed by a 4-byte counter, so no nonce repeats under a key without a
    /// system call per event (a random 96-bit nonce per event cost a `getrandom` each).
    nonce_prefix: [u8; 8],
    nonce_counter: u32,
    /// The segment used last (connection, day number, segment, key): most events go to it.
    last: Option<(String, i64, String, std::sync::Arc<LessSafeKey>)>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn key_err(path: &Path, detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::Keys {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

impl KeyStore {
    /// Opens (or creates) the keys file for writing.
    pub fn open_rw(ledger: &Path) -> Result<KeyStore, LedgerError> {
        let path = keys_path(ledger);
        let conn = Connection::open(&path).map_err(|e| key_err(&path, e))?;
        conn.busy_timeout(crate::schema::BUSY_TIMEOUT)
            .map_err(|e| key_err(&path, e))?;
        // A rollback journal (not WAL) and secure_delete: a deleted key is overwritten in the
        // file itself at commit, not left behind in a log.
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;",
        )
        .map_err(|e| key_err(&path, e))?;
        conn.execute_batch(CREATE).map_err(|e| key_err(&path, e))?;
        Ok(KeyStore::new(path, KeyDb::Sqlite(conn)))
    }

    /// The keys of a PostgreSQL store (its own connection; the tables exist after
    /// [`crate::pg::migrate`]).
    pub(crate) fn open_postgres(conn: crate::pg::Conn) -> KeyStore {
        let path = conn.name.clone();
        KeyStore::new(path, KeyDb::Postgres(Box::new(conn)))
    }

    /// Opens the keys file read-only; `None` if the ledger has none (it predates sealing).
    pub fn open_ro(ledger: &Path) -> Result<Option<KeyStore>, LedgerError> {
        let path = keys_path(ledger);
        if !path.is_file() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| key_err(&path, e))?;
        conn.busy_timeout(crate::schema::BUSY_TIMEOUT)
            .map_err(|e| key_err(&path, e))?;
        Ok(Some(KeyStore::new(path, KeyDb::Sqlite(conn))))
    }

    fn new(path: PathBuf, conn: KeyDb) -> KeyStore {
        let rng = SystemRandom::new();
        let mut nonce_prefix = [0u8; 8];
        // A failure leaves zeros, and the first seal draws again (see next_nonce).
        let _ = rng.fill(&mut nonce_prefix);
        KeyStore {
            path,
            conn,
            cache: HashMap::new(),
            rng,
            sessions: HashMap::new(),
            nonce_prefix,
            nonce_counter: 0,
            last: None,
        }
    }

    fn next_nonce(&mut self) -> Result<[u8; NONCE_LEN], LedgerError> {
        if self.nonce_counter == u32::MAX || self.nonce_prefix == [0u8; 8] {
            self.rng
                .fill(&mut self.nonce_prefix)
                .map_err(|_| key_err(&self.path, "no randomness for nonces"))?;
            self.nonce_counter = 0;
        }
        self.nonce_counter += 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&self.nonce_prefix);
        nonce[8..].copy_from_slice(&self.nonce_counter.to_be_bytes());
        Ok(nonce)
    }

    /// Every segment, oldest day first.
    pub fn segments(&mut self) -> Result<Vec<Segment>, LedgerError> {
        const SQL: &str = "SELECT segment, connection, day, key IS NULL FROM segment_keys \
                           ORDER BY day, segment";
        match &mut self.conn {
            KeyDb::Sqlite(conn) => {
                let err = |e| key_err(&self.path, e);
                let mut stmt = conn.prepare(SQL).map_err(err)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(Segment {
                            segment: r.get(0)?,
                            connection: r.get(1)?,
                            day: r.get(2)?,
                            deleted: r.get(3)?,
                        })
                    })
                    .map_err(err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(err)
            }
            KeyDb::Postgres(conn) => {
                let rows = conn
                    .client()?
                    .query(&SQL.replace("FROM ", "FROM portcullis."), &[])
                    .map_err(|e| key_err(&self.path, e))?;
                rows.iter()
                    .map(|r| {
                        Ok(Segment {
                            segment: r.try_get(0)?,
                            connection: r.try_get(1)?,
                            day: r.try_get(2)?,
                            deleted: r.try_get(3)?,
                        })
                    })
                    .collect::<Result<Vec<_>, postgres::Error>>()
                    .map_err(|e| key_err(&self.path, e))
            }
        }
    }

    /// Destroys a segment's key (crypto-shredding). Idempotent.
    pub fn delete(&mut self, segment: &str, rule: &str) -> Result<(), LedgerError> {
        let now = portcullis_core::now_us();
        match &mut self.conn {
            KeyDb::Sqlite(conn) => conn
                .execute(
                    "UPDATE segment_keys SET key = NULL, deleted_us = ?2, deleted_rule = ?3 \
                     WHERE segment = ?1",
                    (segment, now, rule),
                )
                .map(drop)
                .map_err(|e| key_err(&self.path, e))?,
            // The row's old version stays in the table's pages until VACUUM reclaims them
            // (PostgreSQL has no secure_delete): see docs/ledger.md.
            KeyDb::Postgres(conn) => conn
                .client()?
                .execute(
                    "UPDATE portcullis.segment_keys SET key = NULL, deleted_us = $2, \
                     deleted_rule = $3 WHERE segment = $1",
                    &[&segment, &now, &rule],
                )
                .map(drop)
                .map_err(|e| key_err(&self.path, e))?,
        }
        self.cache.insert(segment.to_string(), Slot::Deleted);
        if self.last.as_ref().is_some_and(|l| l.2 == segment) {
            self.last = None;
        }
        Ok(())
    }

    /// The key of `segment`, from the cache or the file.
    fn lookup(&mut self, segment: &str) -> Result<Option<Slot>, LedgerError> {
        if let Some(slot) = self.cache.get(segment) {
            return Ok(Some(slot.clone()));
        }
        let row: Option<Option<Vec<u8>>> = match &mut self.conn {
            KeyDb::Sqlite(conn) => conn
                .query_row(
                    "SELECT key FROM segment_keys WHERE segment = ?1",
                    [segment],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| key_err(&self.path, e))?,
            KeyDb::Postgres(conn) => conn
                .client()?
                .query_opt(
                    "SELECT key FROM portcullis.segment_keys WHERE segment = $1",
                    &[&segment],
                )
                .and_then(|r| r.map(|r| r.try_get(0)).transpose())
                .map_err(|e| key_err(&self.path, e))?,
        };
        let slot = match row {
            None => return Ok(None),
            Some(None) => Slot::Deleted,
            Some(Some(bytes)) => {
                Slot::Live(std::sync::Arc::new(make_key(&bytes).ok_or_else(|| {
                    key_err(
                        &self.path,
                        format!("the key of segment {segment} is not 32 bytes"),
                    )
                })?))
            }
        };
        self.cache.insert(segment.to_string(), slot.clone());
        Ok(Some(slot))
    }

    /// The live key for new events of `connection` on `day`, created (durably) if needed. If
    /// retention already deleted that segment's key, a new generation `…#2`, `…#3` is used.
    fn key_for(
        &mut self,
        connection: &str,
        day: &str,
    ) -> Result<(String, std::sync::Arc<LessSafeKey>), LedgerError> {
        let base = format!("{connection}/{day}");
        for generation in 1u32.. {
            let segment = if generation == 1 {
                base.clone()
            } else {
                format!("{base}#{generation}")
            };
            match self.lookup(&segment)? {
                Some(Slot::Live(k)) => return Ok((segment, k)),
                Some(Slot::Deleted) => continue,
                None => {
                    let mut bytes = [0u8; 32];
                    self.rng
                        .fill(&mut bytes)
                        .map_err(|_| key_err(&self.path, "no randomness for a new key"))?;
                    let now = portcullis_core::now_us();
                    match &mut self.conn {
                        KeyDb::Sqlite(conn) => conn
                            .execute(
                                "INSERT INTO segment_keys (segment, connection, day, created_us, \
                                 key) VALUES (?1, ?2, ?3, ?4, ?5)",
                                (&segment, connection, day, now, &bytes[..]),
                            )
                            .map(drop)
                            .map_err(|e| key_err(&self.path, e))?,
                        KeyDb::Postgres(conn) => {
                            // Another gateway may create the same segment's key at the same
                            // moment: the first insert wins and both use its key.
                            conn.client()?
                                .execute(
                                    "INSERT INTO portcullis.segment_keys (segment, connection, \
                                     day, created_us, key) VALUES ($1, $2, $3, $4, $5) \
                                     ON CONFLICT (segment) DO NOTHING",
                                    &[&segment, &connection, &day, &now, &&bytes[..]],
                                )
                                .map_err(|e| key_err(&self.path, e))?;
                            match self.lookup(&segment)? {
                                Some(Slot::Live(k)) => return Ok((segment, k)),
                                _ => continue, // deleted meanwhile: next generation
                            }
                        }
                    }
                    let key = std::sync::Arc::new(
                        make_key(&bytes).ok_or_else(|| key_err(&self.path, "bad key length"))?,
                    );
                    self.cache.insert(segment.clone(), Slot::Live(key.clone()));
                    return Ok((segment, key));
                }
            }
        }
        Err(key_err(&self.path, "no free segment generation"))
    }

    /// Seals the data-carrying fields of `data` in place (writer side). Events without such
    /// fields are left alone; session events only teach which connection a session is on.
    pub fn seal(
        &mut self,
        session_id: &str,
        ts_us: i64,
        data: &mut EventData,
    ) -> Result<(), LedgerError> {
        match data {
            EventData::SessionOpen { connection, .. } => {
                self.sessions
                    .insert(session_id.to_string(), connection.clone());
            }
            EventData::SessionClose { .. } => {
                self.sessions.remove(session_id);
            }
            EventData::Statement {
                connection,
                text,
                params,
                reason,
                decision,
                sealed,
                ..
            } if sealed.is_none() && !(text.is_empty() && params.is_empty()) => {
                let fields = StatementFields {
                    text: std::mem::take(text),
                    params: std::mem::take(params),
                    reason: reason.take(),
                    notes: decision
                        .as_mut()
                        .map(|d| std::mem::take(&mut d.notes))
                        .unwrap_or_default(),
                };
                let connection = connection.clone();
                *sealed = Some(self.encrypt(&connection, ts_us, &fields)?);
            }
            EventData::Result {
                message, sealed, ..
            } if sealed.is_none() && message.is_some() => {
                let fields = ResultFields {
                    message: message.take().unwrap_or_default(),
                };
                let connection = self
                    .sessions
                    .get(session_id)
                    .cloned()
                    .unwrap_or_else(|| "-".to_string());
                *sealed = Some(self.encrypt(&connection, ts_us, &fields)?);
            }
            _ => {}
        }
        Ok(())
    }

    fn encrypt(
        &mut self,
        connection: &str,
        ts_us: i64,
        fields: &impl Serialize,
    ) -> Result<Sealed, LedgerError> {
        let day_n = ts_us.div_euclid(DAY_US);
        let (segment, key) = match &self.last {
            Some((c, d, seg, key)) if *d == day_n && c == connection => (seg.clone(), key.clone()),
            _ => {
                let (seg, key) = self.key_for(connection, &day_of(ts_us))?;
                self.last = Some((connection.to_string(), day_n, seg.clone(), key.clone()));
                (seg, key)
            }
        };
        let mut buf = serde_json::to_vec(fields).map_err(|e| key_err(&self.path, e))?;
        let nonce = self.next_nonce()?;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(segment.as_bytes()),
            &mut buf,
        )
        .map_err(|_| key_err(&self.path, "encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(Sealed {
            segment,
            data: B64.encode(out),
            deleted: false,
        })
    }

    /// Opens the sealed fields of a stored event (reader side): the event's JSON as if it had
    /// never been sealed, or with `sealed.deleted = true` once retention deleted its key.
    /// `None` when there is nothing to open (not sealed, or not an event).
    pub fn unseal(&mut self, data: &str) -> Option<String> {
        if !data.contains("\"sealed\":") {
            return None;
        }
        let mut ev: EventData = serde_json::from_str(data).ok()?;
        let (sealed, target) = match &mut ev {
            EventData::Statement {
                sealed,
                text,
                params,
                reason,
                decision,
                ..
            } => (sealed, Target::Statement(text, params, reason, decision)),
            EventData::Result {
                sealed, message, ..
            } => (sealed, Target::Result(message)),
            _ => return None,
        };
        let s = sealed.as_mut()?;
        match self.lookup(&s.segment).ok().flatten() {
            Some(Slot::Live(key)) => {
                let raw = B64.decode(&s.data).ok()?;
                if raw.len() < NONCE_LEN {
                    return None;
                }
                let (nonce, ct) = raw.split_at(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
                let mut ct = ct.to_vec();
                let plain = key
                    .open_in_place(nonce, Aad::from(s.segment.as_bytes()), &mut ct)
                    .ok()?;
                match target {
                    Target::Statement(text, params, reason, decision) => {
                        let f: StatementFields = serde_json::from_slice(plain).ok()?;
                        *text = f.text;
                        *params = f.params;
                        *reason = f.reason;
                        if let Some(d) = decision.as_mut() {
                            d.notes = f.notes;
                        }
                    }
                    Target::Result(message) => {
                        let f: ResultFields = serde_json::from_slice(plain).ok()?;
                        *message = Some(f.message);
                    }
                }
                *sealed = None;
            }
            Some(Slot::Deleted) => s.deleted = true,
            None => return None, // keys file without this segment: leave it sealed
        }
        serde_json::to_string(&ev).ok()
    }
}

enum Target<'a> {
    Statement(
        &'a mut String,
        &'a mut Vec<ParamValue>,
        &'a mut Option<String>,
        &'a mut Option<Box<portcullis_core::DecisionRecord>>,
    ),
    Result(&'a mut Option<String>),
}

fn make_key(bytes: &[u8]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .ok()
        .map(LessSafeKey::new)
}

/// The UTC day of a timestamp, `YYYY-MM-DD`.
pub fn day_of(ts_us: i64) -> String {
    let (y, m, d) = civil_from_days(ts_us.div_euclid(DAY_US));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` day; `None` if it is not one.
pub fn day_number(day: &str) -> Option<i64> {
    let mut it = day.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(-1), "1969-12-31");
        assert_eq!(day_of(1_764_633_600_000_000), "2025-12-02");
        assert_eq!(day_of(951_782_400_000_000), "2000-02-29");
        for n in [0i64, 1, 59, 60, 11_016, 20_000, 2_932_896] {
            assert_eq!(day_number(&day_of(n * DAY_US)), Some(n), "day {n}");
        }
        assert_eq!(day_number("2025-02-30"), None);
        assert_eq!(day_number("2025-13-01"), None);
        assert_eq!(day_number("soon"), None);
    }
}
