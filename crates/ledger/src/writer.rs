//! The append path: group commit by whichever caller gets there first, and a background thread
//! that flushes detached events and (in `default` durability) syncs the WAL.
//!
//! ```text
//!  append(events) ── push onto the queue ──► try to take the writer lock
//!     │                                        ├─ got it: be the leader — drain the queue
//!     │                                        │  (everyone's submissions), serialise + hash,
//!     │                                        │  ONE transaction, COMMIT, answer every
//!     │                                        │  waiter; repeat while the queue is not empty
//!     │                                        └─ busy: the current leader will take it
//!     └── await the answer (already there when this caller led)
//!
//!  append_detached(events) ── push only: committed with the next leader's group, or by the
//!                              background thread within `sync_interval`
//!  background thread: every interval, lead if the queue holds anything; fsync the WAL when
//!                     there were commits since the last sync (`default` durability)
//! ```
//!
//! Why the caller commits rather than a dedicated writer thread: on a small machine the
//! handoff (wake the writer, wake the caller back) costs two context switches per statement,
//! more than the commit itself. Here an uncontended append commits on the caller's own thread
//! with no handoff at all, and under contention every submission queued while a commit runs
//! shares the next one (and, in `strict` mode, its fsync). Result events ride along with the
//! next statement's commit instead of paying for their own.
//!
//! The chain is a strict sequence, so there is exactly one writer connection, behind a mutex
//! that only the leader holds; nobody ever blocks waiting for it (`try_lock`), except `close`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portcullis_core::config::Durability;
use portcullis_core::NewEvent;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::chain::event_hash;
use crate::error::LedgerError;
use crate::schema::{self, Head};

/// Upper bound on the events of one group commit. A larger single submission still goes into
/// one transaction (its events must stay consecutive); the cap only stops draining the queue.
const MAX_BATCH_EVENTS: usize = 10_000;

/// WAL size, in pages (4 KiB), that triggers a checkpoint.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// WAL size, in bytes, SQLite truncates the file to after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Capacity of the reused JSON buffer beyond which it is freed after use.
const DATA_BUFFER_KEEP: usize = 16 * 1024 * 1024;

/// Largest `data` (or `session_id`) accepted, in bytes: SQLite's default limit on a value.
const MAX_FIELD_BYTES: usize = 1_000_000_000;

/// SQLite page cache of the writer connection, in KiB (negative `cache_size` = KiB).
const CACHE_KIB: i64 = 16 * 1024;

/// How to open a [`Ledger`].
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// The SQLite file. Its folder is created if missing; SQLite keeps `<path>-wal` and
    /// `<path>-shm` next to it.
    pub path: PathBuf,
    /// When an append counts as recorded (see the crate documentation).
    pub durability: Durability,
    /// In `Default` durability: the longest time between a commit and the fsync that makes it
    /// survive a power loss. Ignored in `Strict` durability (every commit is synced).
    pub sync_interval: Duration,
}

impl LedgerOptions {
    /// Options with the configuration file's defaults: `Default` durability, 5 ms interval.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LedgerOptions {
            path: path.into(),
            durability: Durability::Default,
            sync_interval: Duration::from_millis(5),
        }
    }
}

/// Counters of a [`Ledger`] since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Events committed.
    pub appended: u64,
    /// Transactions committed (each a group of one or more submissions).
    pub commits: u64,
    /// Syncs to disk: fsyncs of the WAL by the syncer in `Default` durability, synchronous
    /// commits in `Strict` durability.
    pub syncs: u64,
    /// Sequence number of the last event in the ledger (0 when it is empty).
    pub last_seq: u64,
    /// Events that could not be recorded: their submitter got an error (or, for
    /// [`Ledger::append_detached`], the error was logged).
    pub failures: u64,
    /// Failed fsyncs of the WAL in `Default` durability (logged as errors).
    pub sync_failures: u64,
}

/// The append handle of a ledger. Cheap to clone; all clones share one writer thread.
///
/// Dropping the last clone closes the ledger (see [`Ledger::close`]).
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.inner.shared.path)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner {
    background: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// State shared by the handles and the background thread.
struct Shared {
    path: PathBuf,
    /// Submissions not yet committed, in arrival order. `closed` refuses new ones.
    queue: Mutex<Queue>,
    /// The writer connection; held only by the leader of a group commit. `None` once closed.
    writer: Mutex<Option<Writer>>,
    interval: Duration,
    /// `Some` in `Default` durability: the WAL the background thread fsyncs.
    wal: Option<PathBuf>,
    appended: AtomicU64,
    commits: AtomicU64,
    syncs: AtomicU64,
    last_seq: AtomicU64,
    failures: AtomicU64,
    sync_failures: AtomicU64,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
}

#[derive(Default)]
struct Queue {
    subs: Vec<Submission>,
    closed: bool,
}

#[derive(Default)]
struct SyncState {
    /// When the oldest commit not yet covered by an fsync happened; `None` = all synced.
    pending_since: Option<Instant>,
    shutdown: bool,
}

struct Submission {
    events: Vec<NewEvent>,
    reply: Option<oneshot::Sender<Result<u64, LedgerError>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded sections never panic; if one did, the plain data inside is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ledger {
    /// Opens (or creates) the ledger file and starts its writer thread.
    ///
    /// Creates the parent folders and the schema, proves the file is writable with a real
    /// write (so a permission problem stops the gateway at startup, not at its first
    /// statement), loads the chain head (last seq and hash), then starts the writer thread
    /// and, in `Default` durability, the syncer thread.
    ///
    /// Opening does not verify the whole chain (that takes a while on a large ledger); run
    /// [`crate::LedgerReader::verify`] for that.
    pub fn open(opts: LedgerOptions) -> Result<Ledger, LedgerError> {
        let path = opts.path;
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf);
        if let Some(folder) = &folder {
            std::fs::create_dir_all(folder).map_err(|source| LedgerError::CreateDir {
                path: folder.clone(),
                source,
            })?;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::PermissionDenied) => {
                LedgerError::NotWritable { path: path.clone() }
            }
            _ => LedgerError::Open {
                path: path.clone(),
                source,
            },
        })?;
        // SQLite silently falls back to read-only when the file is write-protected.
        if conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|e| LedgerError::sqlite(&path, "checking write access", e))?
        {
            return Err(LedgerError::NotWritable { path });
        }
        configure(&conn, &path, opts.durability)?;
        schema::ensure(&conn, &path)?;
        let head = schema::load_head(&conn, &path)
            .map_err(|e| LedgerError::sqlite(&path, "reading the chain head", e))?;
        // The file and its -wal were possibly just created: make their directory entries
        // durable too, or a power loss could lose the whole file despite fsyncs.
        sync_dir(folder.as_deref().unwrap_or(Path::new(".")));

        let strict = opts.durability == Durability::Strict;
        let wal = (!strict).then(|| {
            // Absolute and with symlinks resolved, as SQLite places the WAL next to the real
            // file, and so that a later change of working directory does not matter.
            wal_path(&std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone()))
        });
        let shared = Arc::new(Shared {
            path: path.clone(),
            queue: Mutex::new(Queue::default()),
            writer: Mutex::new(Some(Writer {
                conn,
                strict,
                last_seq: head.seq,
                data: Vec::new(),
                spans: Vec::new(),
                ready: Vec::new(),
            })),
            interval: opts.sync_interval,
            wal,
            appended: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            last_seq: AtomicU64::new(head.seq),
            failures: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
            sync: Mutex::new(SyncState::default()),
            sync_cv: Condvar::new(),
        });
        let background = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("ledger-flusher".into())
                .spawn(move || run_background(&shared))
                .map_err(|source| LedgerError::Spawn {
                    path: path.clone(),
                    what: "flusher",
                    source,
                })?
        };
        tracing::debug!(path = %path.display(), last_seq = head.seq, durability = ?opts.durability, "ledger opened");
        Ok(Ledger {
            inner: Arc::new(Inner {
                background: Mutex::new(Some(background)),
                shared,
            }),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// Appends `events` atomically and in order, as consecutive sequence numbers, and returns
    /// the first one (the events get `first, first + 1, …`).
    ///
    /// Resolves once the events are recorded per the durability mode: written to the WAL
    /// (`Default`) or written and fsynced (`Strict`). On `Err` the caller must treat the events
    /// as not recorded (the gateway refuses the statement): the transaction was rolled back,
    /// or, in the one ambiguous case of `COMMIT` itself reporting an I/O error, possibly
    /// recorded. Either way the chain stays intact and the next append continues it.
    /// An empty `events` records nothing and returns `Ok(0)` (no event has seq 0).
    ///
    /// Dropping the future after the call does not withdraw the events: they are written, only
    /// the answer is lost.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<u64, LedgerError> {
        if events.is_empty() {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        if let Err(sub) = self.submit(Submission {
            events,
            reply: Some(reply),
        }) {
            self.count_failed(sub.events.len());
            return Err(self.closed());
        }
        self.inner.shared.lead();
        // A dropped sender means the leader went away without answering (it panicked).
        answer.await.unwrap_or_else(|_| Err(self.closed()))
    }

    /// Appends like [`append`](Self::append), in the same order relative to other appends,
    /// without waiting for the outcome (for result events, whose statement already ran).
    /// Failures are logged and counted in [`LedgerStats::failures`].
    pub fn append_detached(&self, events: Vec<NewEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(sub) = self.submit(Submission {
            events,
            reply: None,
        }) {
            self.count_failed(sub.events.len());
            tracing::error!(
                path = %self.path().display(),
                events = sub.events.len(),
                "ledger is closed; detached events were not recorded"
            );
        }
    }

    /// Stops accepting events, lets the writer commit everything already queued, performs the
    /// final fsync and joins the threads. Idempotent; concurrent callers wait for the first.
    /// Also runs when the last clone is dropped (blocking that thread for the drain).
    pub fn close(&self) {
        self.inner.close();
    }

    /// Counters since the ledger was opened.
    pub fn stats(&self) -> LedgerStats {
        let s = &self.inner.shared;
        LedgerStats {
            appended: s.appended.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            last_seq: s.last_seq.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            sync_failures: s.sync_failures.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, sub: Submission) -> Result<(), Submission> {
        let mut q = lock(&self.inner.shared.queue);
        if q.closed {
            return Err(sub);
        }
        q.subs.push(sub);
        Ok(())
    }

    fn count_failed(&self, events: usize) {
        self.inner
            .shared
            .failures
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    fn closed(&self) -> LedgerError {
        LedgerError::Closed {
            path: self.path().to_path_buf(),
        }
    }
}

impl Inner {
    fn close(&self) {
        let shared = &self.shared;
        lock(&shared.queue).closed = true;
        // Wait for any leader, then commit whatever is still queued.
        let mut writer = lock(&shared.writer);
        if let Some(w) = writer.as_mut() {
            loop {
                let mut batch = shared.take_batch();
                if batch.is_empty() {
                    break;
                }
                w.commit_batch(shared, &mut batch);
            }
        }
        // The background thread does the final fsync, then the connection closes (SQLite
        // checkpoints the WAL into the database file).
        lock(&shared.sync).shutdown = true;
        shared.sync_cv.notify_all();
        if let Some(handle) = lock(&self.background).take() {
            if handle.join().is_err() {
                tracing::error!(path = %shared.path.display(), "ledger flusher thread panicked");
            }
        }
        if writer.take().is_some() {
            tracing::debug!(path = %shared.path.display(), "ledger closed");
        }
    }
}

impl Shared {
    /// Takes queued submissions for one group commit (at least one whole submission).
    fn take_batch(&self) -> Vec<Submission> {
        let mut q = lock(&self.queue);
        let mut events = 0;
        let mut n = 0;
        for sub in &q.subs {
            if n > 0 && events + sub.events.len() > MAX_BATCH_EVENTS {
                break;
            }
            events += sub.events.len();
            n += 1;
        }
        q.subs.drain(..n).collect()
    }

    /// Commits everything queued, unless another caller is already doing so (it will pick up
    /// what was queued before it let go: the queue is re-checked after every release).
    fn lead(&self) {
        loop {
            {
                let mut guard = match self.writer.try_lock() {
                    Ok(g) => g,
                    Err(TryLockError::WouldBlock) => return,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                };
                let Some(writer) = guard.as_mut() else {
                    return; // closed: close() drained the queue
                };
                loop {
                    let mut batch = self.take_batch();
                    if batch.is_empty() {
                        break;
                    }
                    writer.commit_batch(self, &mut batch);
                }
            }
            // A submission pushed while we held the lock, whose own try_lock failed, is ours.
            if lock(&self.queue).subs.is_empty() {
                return;
            }
        }
    }
}

/// Pragmas of the writer connection.
fn configure(conn: &Connection, path: &Path, durability: Durability) -> Result<(), LedgerError> {
    conn.busy_timeout(schema::BUSY_TIMEOUT)
        .map_err(|e| LedgerError::sqlite(path, "setting busy_timeout", e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| schema::write_error(path, "switching to WAL mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // NORMAL in WAL mode: a commit write()s its frames into the WAL but does not fsync;
    // checkpoints are synced. FULL: every commit fsyncs the WAL before returning.
    let synchronous = match durability {
        Durability::Default => "NORMAL",
        Durability::Strict => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| LedgerError::sqlite(path, "setting synchronous", e))?;
    // Checkpoints run inside a COMMIT on this thread, each with two fsyncs. Fewer, larger
    // ones (every ~40 MB of WAL instead of SQLite's ~4 MB) cost less in total, because a page
    // rewritten by many commits (the right edge of the table) is copied once: measured +45% appends/s
    // with 64 appenders and a third of the p99 latency (examples/append_bench.rs).
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(|e| LedgerError::sqlite(path, "setting wal_autocheckpoint", e))?;
    // After a checkpoint that a long reader held back, shrink the WAL file again.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(|e| LedgerError::sqlite(path, "setting journal_size_limit", e))?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(|e| LedgerError::sqlite(path, "setting cache_size", e))?;
    Ok(())
}

/// SQLite's name for the write-ahead log of `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Best-effort fsync of a directory (makes newly created entries durable on Linux).
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not sync the ledger folder");
    }
}

/// Binds already-valid UTF-8 bytes (serde_json output) as TEXT without re-checking them.
struct Text<'a>(&'a [u8]);

impl ToSql for Text<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}

struct Writer {
    conn: Connection,
    strict: bool,
    /// The last seq this writer committed (to notice another writer on the same file).
    last_seq: u64,
    /// Reused buffers: the JSON of every event of the batch, back to back …
    data: Vec<u8>,
    /// … the byte range of each event in `data` …
    spans: Vec<(usize, usize)>,
    /// … and the submissions that serialised and go into the transaction.
    ready: Vec<Submission>,
}

impl Writer {
    /// Writes one group commit and answers its submitters.
    fn commit_batch(&mut self, shared: &Shared, batch: &mut Vec<Submission>) {
        let path = &shared.path;

        // 1. Serialise outside the transaction: one bad event fails only its own submission.
        if self.data.capacity() > DATA_BUFFER_KEEP {
            self.data = Vec::new(); // do not hold on to the memory of one huge batch
        }
        self.data.clear();
        self.spans.clear();
        self.ready.clear();
        for sub in batch.drain(..) {
            let (data_mark, span_mark) = (self.data.len(), self.spans.len());
            let mut failed = None;
            for ev in &sub.events {
                let start = self.data.len();
                if let Err(source) = serde_json::to_writer(&mut self.data, &ev.data) {
                    failed = Some(LedgerError::Serialize {
                        path: path.clone(),
                        kind: ev.data.kind(),
                        source,
                    });
                    break;
                }
                let bytes = (self.data.len() - start).max(ev.session_id.len());
                if bytes > MAX_FIELD_BYTES {
                    // Refused here, alone: inside the transaction SQLite's own limit would
                    // fail the whole group commit, i.e. every other session's statements too.
                    failed = Some(LedgerError::TooLarge {
                        path: path.clone(),
                        kind: ev.data.kind(),
                        bytes,
                    });
                    break;
                }
                self.spans.push((start, self.data.len()));
            }
            match failed {
                None => self.ready.push(sub),
                Some(err) => {
                    self.data.truncate(data_mark);
                    self.spans.truncate(span_mark);
                    shared
                        .failures
                        .fetch_add(sub.events.len() as u64, Ordering::Relaxed);
                    tracing::error!(path = %path.display(), error = %err, "event not recorded");
                    answer(sub.reply, Err(err));
                }
            }
        }
        if self.ready.is_empty() {
            return;
        }
        let events = self.spans.len();

        // 2. One transaction for the whole group.
        match write_group(&self.conn, path, &self.ready, &self.data, &self.spans) {
            Ok((old_head, new_head)) => {
                if old_head.seq != self.last_seq {
                    // Not an error (the chain continues from the file's real head), but one
                    // ledger file should have one gateway.
                    tracing::warn!(
                        path = %path.display(),
                        expected = self.last_seq,
                        found = old_head.seq,
                        "another process appended to the ledger; continuing from its head"
                    );
                }
                self.last_seq = new_head.seq;
                let s = shared;
                s.appended.fetch_add(events as u64, Ordering::Relaxed);
                s.commits.fetch_add(1, Ordering::Relaxed);
                s.last_seq.store(new_head.seq, Ordering::Relaxed);
                if self.strict {
                    s.syncs.fetch_add(1, Ordering::Relaxed);
                } else {
                    let mut st = lock(&s.sync);
                    // The background thread picks this up within one interval.
                    if st.pending_since.is_none() {
                        st.pending_since = Some(Instant::now());
                    }
                }
                let mut next = old_head.seq + 1;
                for sub in self.ready.drain(..) {
                    let first = next;
                    next += sub.events.len() as u64;
                    answer(sub.reply, Ok(first));
                }
            }
            Err(e) => {
                // Fail closed: nothing of the group is acknowledged. Roll back if the
                // transaction is still open. The head is read from the file inside every
                // transaction, so the next group continues exactly where the stored chain
                // ends, even if COMMIT reported an error after reaching the file.
                if !self.conn.is_autocommit() {
                    if let Err(rb) = self.conn.execute_batch("ROLLBACK") {
                        tracing::error!(path = %path.display(), error = %rb, "ledger rollback failed");
                    }
                }
                shared.failures.fetch_add(events as u64, Ordering::Relaxed);
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    events,
                    "ledger commit failed: events not recorded, statements refused"
                );
                let source = Arc::new(e);
                for sub in self.ready.drain(..) {
                    let err = LedgerError::Write {
                        path: path.clone(),
                        events: sub.events.len(),
                        source: source.clone(),
                    };
                    answer(sub.reply, Err(err));
                }
            }
        }
    }
}

/// Sends an outcome to a waiting submitter; a detached submission has nobody to tell (its
/// failures were logged and counted by the caller).
fn answer(
    reply: Option<oneshot::Sender<Result<u64, LedgerError>>>,
    outcome: Result<u64, LedgerError>,
) {
    if let Some(reply) = reply {
        // The receiver is gone if the append future was dropped: nothing to do.
        let _ = reply.send(outcome);
    }
}

/// Inserts the group in one transaction, chained to the head read inside that transaction
/// (so the chain continues from what the file holds, whatever happened before); returns the
/// head before and after.
fn write_group(
    conn: &Connection,
    path: &Path,
    subs: &[Submission],
    data: &[u8],
    spans: &[(usize, usize)],
) -> rusqlite::Result<(Head, Head)> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let head = schema::load_head(conn, path)?;
    let mut seq = head.seq;
    let mut prev = head.hash;
    {
        let mut insert = conn.prepare_cached(schema::INSERT)?;
        let events = subs.iter().flat_map(|s| s.events.iter());
        for (ev, &(start, end)) in events.zip(spans) {
            let json = &data[start..end];
            seq += 1;
            let kind = ev.data.kind();
            let hash = event_hash(&prev, seq, ev.ts_us, kind, &ev.session_id, json);
            insert.execute((
                seq,
                ev.ts_us,
                ev.session_id.as_str(),
                kind,
                Text(json),
                &prev[..],
                &hash[..],
            ))?;
            prev = hash;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok((head, Head { seq, hash: prev }))
}

/// The background thread: every `interval`, commits what detached appends left in the queue,
/// and (in `Default` durability) fsyncs the WAL if there were commits since the last sync, so a
/// power loss loses at most that window. On shutdown it does a last sync.
fn run_background(shared: &Shared) {
    let mut file: Option<File> = None;
    loop {
        let shutdown = {
            let st = lock(&shared.sync);
            let st = if st.shutdown {
                st
            } else {
                shared
                    .sync_cv
                    .wait_timeout(st, shared.interval)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            };
            st.shutdown
        };
        if !shutdown {
            shared.lead();
        }
        if let Some(wal) = &shared.wal {
            // Everything committed up to now is covered by the fsync below; a later commit
            // sets pending_since again and gets the next one.
            if lock(&shared.sync).pending_since.take().is_some() {
                sync_wal(shared, wal, &mut file);
            }
        }
        if shutdown {
            return;
        }
    }
}

fn sync_wal(shared: &Shared, wal: &Path, file: &mut Option<File>) {
    if file.is_none() {
        match std::fs::OpenOptions::new().write(true).open(wal) {
            Ok(f) => *file = Some(f),
            Err(e) => {
                shared.sync_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(wal = %wal.display(), error = %e, "could not open the ledger WAL to sync it; will retry");
                return;
            }
        }
    }
    if let Some(f) = file {
        match f.sync_data() {
            Ok(()) => {
                shared.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.sync_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(wal = %wal.display(), error = %e, "fsync of the ledger WAL failed: recent events may not survive a power loss");
                *file = None;
            }
        }
    }
}
