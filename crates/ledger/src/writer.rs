//! The append path: a journal on the hot path, SQLite behind it.
//!
//! ```text
//!  append(events) ── push onto the queue ──► try to take the writer lock
//!     │                                        ├─ got it: lead a group commit of everything
//!     │                                        │  queued: serialise + hash (chain head in
//!     │                                        │  memory), ONE write() of the records to the
//!     │                                        │  journal (+ fdatasync in strict mode), answer
//!     │                                        │  every waiter; repeat while the queue is not empty
//!     │                                        └─ busy: the current leader will take it
//!     └── await the answer (already there when this caller led)
//!
//!  append_detached(events) ── push only: joins the next group, or the background tick's
//!
//!  background thread, every sync_interval:
//!     lead (detached events) · fdatasync the journal (default mode) ·
//!     index: switch the hot path to the other journal file, insert the rows written since
//!     the last tick into SQLite in one transaction (synchronous=FULL), then empty the old file
//! ```
//!
//! Why a journal: a SQLite commit writes whole 4 KiB pages into its WAL, so a group of one or
//! two events cost as much as a page write, a B-tree update and WAL-index locking; measured
//! through the gateway, that was a third of its CPU at 8 clients. The journal takes a group as
//! one `write()` of the records themselves, and SQLite gets them in large batches where those
//! costs are shared by hundreds of events.
//!
//! Why the caller leads rather than a writer thread: on a small machine the handoff (wake the
//! writer, wake the caller back) costs two context switches per statement, more than the write.
//!
//! **Journal format.** Two files, `<ledger>-journal-a` and `-b`, written alternately. Each
//! record: `u32 BE length of the rest` ‖ `seq u64 BE` ‖ `ts_us i64 BE` ‖ `prev_hash (32)` ‖
//! `hash (32)` ‖ `u32 BE len` kind ‖ `u32 BE len` session_id ‖ `u32 BE len` data — the same
//! fields as a row. On open, records newer than SQLite's head are replayed into SQLite if they
//! continue the chain (a torn record from a power loss ends the replay), then both files are
//! emptied. An exclusive `flock` on `-journal-a` keeps a second process from writing the
//! same ledger.
//!
//! Readers see SQLite, so an event reaches `audit tail` within one `sync_interval`; after a
//! crash, the last few milliseconds of events are in the journal until the ledger is opened
//! again.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portcullis_core::config::Durability;
use portcullis_core::NewEvent;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use crate::chain::event_hash;
use crate::checkpoint::CheckpointSigner;
use crate::error::LedgerError;
use crate::merkle::{event_leaf, Frontier};
use crate::schema::{self, Head};
use crate::seal::KeyStore;

/// Upper bound on the events of one group commit. A larger single submission still goes into
/// one write (its events must stay consecutive); the cap only stops draining the queue.
const MAX_BATCH_EVENTS: usize = 10_000;

/// WAL size, in pages (4 KiB), that triggers a checkpoint of the index.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// WAL size, in bytes, SQLite truncates the file to after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Capacity of the reused buffers beyond which they are freed after use.
const BUFFER_KEEP: usize = 16 * 1024 * 1024;

/// Largest `data` (or `session_id`) accepted, in bytes: SQLite's default limit on a value.
const MAX_FIELD_BYTES: usize = 1_000_000_000;

/// SQLite page cache of the index connection, in KiB (negative `cache_size` = KiB).
const CACHE_KIB: i64 = 16 * 1024;

/// Events written to the journal but not yet in SQLite beyond which appends are refused
/// (indexing keeps failing; memory must not grow without bound).
const MAX_UNINDEXED: usize = 250_000;

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
    /// Signed Merkle checkpoints (see [`crate::checkpoint`]); `None` writes none.
    pub checkpoints: Option<CheckpointOptions>,
    /// Seal SQL text, parameters and error messages under per-segment keys, so that
    /// retention can delete them (see [`crate::seal`]). On by default.
    pub seal: bool,
    /// Keep the events in this PostgreSQL database (a `postgres://` URL) instead of the
    /// SQLite file, shared with other gateways (see [`crate::pg`]). `path` then only names
    /// nothing; [`LedgerOptions::postgres`] sets both.
    pub postgres: Option<String>,
}

/// When and how the ledger signs checkpoints of its Merkle tree.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub signer: Arc<CheckpointSigner>,
    /// A checkpoint once this many events arrived since the last one …
    pub every_events: u64,
    /// … or once this much time passed, if any event arrived (and always at close).
    pub every: Duration,
    /// A folder on other storage that receives every checkpoint as `<folder>/checkpoint`
    /// (replaced atomically), so that a truncated or rewritten ledger no longer matches it.
    pub mirror: Option<PathBuf>,
    /// An S3-compatible bucket that receives every checkpoint the same way (see
    /// [`crate::blob::mirror_checkpoint`]).
    pub mirror_bucket: Option<crate::blob::BlobStore>,
}

impl LedgerOptions {
    /// Options with the configuration file's defaults: `Default` durability, 5 ms interval.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LedgerOptions {
            path: path.into(),
            durability: Durability::Default,
            sync_interval: Duration::from_millis(5),
            checkpoints: None,
            seal: true,
            postgres: None,
        }
    }

    /// Options for a PostgreSQL store at `url`, with the same defaults as [`new`](Self::new).
    pub fn postgres(url: &str) -> Self {
        LedgerOptions {
            postgres: Some(url.to_string()),
            ..LedgerOptions::new(crate::pg::display_name(url))
        }
    }
}

/// Counters of a [`Ledger`] since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Events committed.
    pub appended: u64,
    /// Group commits: journal writes, each of one or more submissions.
    pub commits: u64,
    /// Syncs to disk: fsyncs of the journal by the background thread in `Default` durability,
    /// fsynced group commits in `Strict` durability.
    pub syncs: u64,
    /// Sequence number of the last event in the ledger (0 when it is empty).
    pub last_seq: u64,
    /// Events that could not be recorded: their submitter got an error (or, for
    /// [`Ledger::append_detached`], the error was logged).
    pub failures: u64,
    /// Failed fsyncs of the WAL in `Default` durability (logged as errors).
    pub sync_failures: u64,
    /// Tree size of the last signed checkpoint (0: none yet, or checkpoints are off).
    pub checkpoint_size: u64,
    /// Checkpoints that could not be stored or mirrored (logged as errors).
    pub checkpoint_failures: u64,
}

/// The append handle of a ledger. Cheap to clone; all clones share one writer.
///
/// Dropping the last clone closes the ledger (see [`Ledger::close`]).
#[derive(Clone)]
pub struct Ledger {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<Inner>),
    Postgres(Arc<crate::pg::writer::PgLedger>),
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path())
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
    /// Submissions not yet written, in arrival order. `closed` refuses new ones.
    queue: Mutex<Queue>,
    /// The journal writer; held only by the leader of a group commit. `None` once closed.
    writer: Mutex<Option<Writer>>,
    /// The SQLite index; used by the background thread (and `close`).
    index: Mutex<Option<Index>>,
    interval: Duration,
    strict: bool,
    /// Second handles on the two journal files, for the background fsync.
    journal_files: [File; 2],
    appended: AtomicU64,
    commits: AtomicU64,
    syncs: AtomicU64,
    last_seq: AtomicU64,
    failures: AtomicU64,
    sync_failures: AtomicU64,
    checkpoint_size: AtomicU64,
    checkpoint_failures: AtomicU64,
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
    /// When the oldest journal write not yet covered by an fsync happened; `None` = synced.
    pending_since: Option<Instant>,
    shutdown: bool,
}

pub(crate) struct Submission {
    pub(crate) events: Vec<NewEvent>,
    pub(crate) reply: Option<oneshot::Sender<Result<u64, LedgerError>>>,
}

/// One event as stored: what goes into the journal and then into SQLite.
struct Row {
    seq: u64,
    ts_us: i64,
    session_id: String,
    kind: String,
    data: Vec<u8>,
    prev: [u8; 32],
    hash: [u8; 32],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded sections never panic; if one did, the plain data inside is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn journal_path(db: &Path, which: usize) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(if which == 0 {
        "-journal-a"
    } else {
        "-journal-b"
    });
    PathBuf::from(s)
}

impl Ledger {
    /// Opens (or creates) the ledger and starts its background thread.
    ///
    /// Creates the parent folders and the schema, proves the file is writable with a real
    /// write (so a permission problem stops the gateway at startup, not at its first
    /// statement), takes the writer lock, replays what a crash left in the journal, and
    /// loads the chain head.
    ///
    /// Opening does not verify the whole chain (that takes a while on a large ledger); run
    /// [`crate::LedgerReader::verify`] for that.
    ///
    /// With [`LedgerOptions::postgres`] set, connects to that store instead, creates or
    /// upgrades its tables, and starts its writer thread (see [`crate::pg`]).
    pub fn open(opts: LedgerOptions) -> Result<Ledger, LedgerError> {
        if let Some(url) = opts.postgres.clone() {
            let pg = crate::pg::writer::PgLedger::open(&url, opts)?;
            return Ok(Ledger {
                backend: Backend::Postgres(Arc::new(pg)),
            });
        }
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
        // The journal files, and the lock that makes this process the ledger's only writer.
        let open_journal = |which: usize| {
            std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(journal_path(&path, which))
                .map_err(|_| LedgerError::NotWritable {
                    path: journal_path(&path, which),
                })
        };
        let journals = [open_journal(0)?, open_journal(1)?];
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(journals[0].as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(LedgerError::Locked {
                path: path.clone(),
                lock: journal_path(&path, 0),
            });
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
        configure(&conn, &path)?;
        schema::ensure(&conn, &path)?;

        let mut index = Index { conn, tree: None };
        let head = index.replay(&path, &journals)?;
        if let Some(opts) = opts.checkpoints {
            index.tree = Some(Tree::load(&index.conn, &path, opts, head)?);
        }
        let checkpoint_size = index.tree.as_ref().map_or(0, |t| t.last_size);
        // The files were possibly just created: make their directory entries durable too.
        sync_dir(folder.as_deref().unwrap_or(Path::new(".")));

        let clone = |f: &File| {
            f.try_clone()
                .map_err(|_| LedgerError::NotWritable { path: path.clone() })
        };
        let journal_files = [clone(&journals[0])?, clone(&journals[1])?];
        let strict = opts.durability == Durability::Strict;
        let keys = if opts.seal {
            Some(KeyStore::open_rw(&path)?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            path: path.clone(),
            queue: Mutex::new(Queue::default()),
            writer: Mutex::new(Some(Writer {
                journals,
                lens: [0, 0],
                current: 0,
                other_dirty: false,
                strict,
                head,
                ready: Vec::new(),
                buf: Vec::new(),
                unindexed: Vec::new(),
                index_error: None,
                keys,
            })),
            index: Mutex::new(Some(index)),
            interval: opts.sync_interval,
            strict,
            journal_files,
            appended: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            last_seq: AtomicU64::new(head.seq),
            failures: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
            checkpoint_size: AtomicU64::new(checkpoint_size),
            checkpoint_failures: AtomicU64::new(0),
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
            backend: Backend::Sqlite(Arc::new(Inner {
                background: Mutex::new(Some(background)),
                shared,
            })),
        })
    }

    /// The ledger file (for a PostgreSQL store: its URL without the password).
    pub fn path(&self) -> &Path {
        match &self.backend {
            Backend::Sqlite(inner) => &inner.shared.path,
            Backend::Postgres(pg) => &pg.shared.name,
        }
    }

    /// Appends `events` atomically and in order, as consecutive sequence numbers, and returns
    /// the first one (the events get `first, first + 1, …`).
    ///
    /// Resolves once the events are recorded per the durability mode: written to the journal
    /// with `write()` (`Default`) or written and fsynced (`Strict`). On `Err` the caller must
    /// treat the events as not recorded (the gateway refuses the statement); the chain stays
    /// intact and the next append continues it. An empty `events` records nothing and returns
    /// `Ok(0)` (no event has seq 0).
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
        if let Backend::Sqlite(inner) = &self.backend {
            inner.shared.lead();
        }
        // A dropped sender means the leader went away without answering (it panicked).
        answer.await.unwrap_or_else(|_| Err(self.closed()))
    }

    /// Appends like [`append`](Self::append), in the same order relative to other appends,
    /// without waiting for the outcome (for result events, whose statement already ran). The
    /// events join the next group commit, at the latest within one `sync_interval`.
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

    /// Makes every event acknowledged so far visible to readers (indexes the journal into
    /// SQLite now instead of at the next background tick). Blocking.
    pub fn flush(&self) {
        let shared = match &self.backend {
            Backend::Sqlite(inner) => &inner.shared,
            Backend::Postgres(pg) => return pg.flush(),
        };
        shared.lead();
        // Two steps: the first may only be able to index without switching files.
        shared.index_step();
        shared.index_step();
    }

    /// Destroys a segment's key (retention; see [`crate::retention`]). Later events of that
    /// connection and day, if any, get a new key.
    pub fn delete_segment_key(&self, segment: &str, rule: &str) -> Result<(), LedgerError> {
        let inner = match &self.backend {
            Backend::Sqlite(inner) => inner,
            Backend::Postgres(pg) => return pg.delete_segment_key(segment, rule),
        };
        let result = {
            let mut guard = lock(&inner.shared.writer);
            match guard.as_mut().and_then(|w| w.keys.as_mut()) {
                Some(keys) => keys.delete(segment, rule),
                None => Err(LedgerError::Keys {
                    path: crate::seal::keys_path(self.path()),
                    detail: "this ledger was opened without sealing (or is closed)".into(),
                }),
            }
        };
        // Appenders that found the writer busy meanwhile left their events to us.
        inner.shared.lead();
        result
    }

    /// Syncs the journal to disk: every event acknowledged so far survives a power loss (what
    /// `Strict` durability does for every group).
    ///
    /// A PostgreSQL store has nothing to do here: its commits are the server's to make durable.
    pub fn sync(&self) -> Result<(), LedgerError> {
        let shared = match &self.backend {
            Backend::Sqlite(inner) => &inner.shared,
            Backend::Postgres(_) => return Ok(()),
        };
        for (which, f) in shared.journal_files.iter().enumerate() {
            f.sync_data().map_err(|source| LedgerError::Journal {
                path: journal_path(&shared.path, which),
                events: 0,
                source: Arc::new(source),
            })?;
        }
        Ok(())
    }

    /// Makes every event acknowledged so far visible to readers and signs a checkpoint of
    /// them now (if checkpoints are on and the tree grew). Blocking.
    pub fn checkpoint(&self) {
        self.flush();
        match &self.backend {
            Backend::Sqlite(inner) => inner.shared.checkpoint_step(true),
            Backend::Postgres(pg) => pg.checkpoint(),
        }
    }

    /// Stops accepting events, writes everything already queued, indexes it, performs the
    /// final fsync and joins the background thread. Idempotent; concurrent callers wait for
    /// the first. Also runs when the last clone is dropped (blocking that thread).
    pub fn close(&self) {
        match &self.backend {
            Backend::Sqlite(inner) => inner.close(),
            Backend::Postgres(pg) => pg.close(),
        }
    }

    /// Counters since the ledger was opened.
    pub fn stats(&self) -> LedgerStats {
        let s = match &self.backend {
            Backend::Sqlite(inner) => &inner.shared,
            Backend::Postgres(pg) => return pg.stats(),
        };
        LedgerStats {
            appended: s.appended.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            last_seq: s.last_seq.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            sync_failures: s.sync_failures.load(Ordering::Relaxed),
            checkpoint_size: s.checkpoint_size.load(Ordering::Relaxed),
            checkpoint_failures: s.checkpoint_failures.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, sub: Submission) -> Result<(), Submission> {
        let inner = match &self.backend {
            Backend::Sqlite(inner) => inner,
            Backend::Postgres(pg) => return pg.submit(sub),
        };
        let mut q = lock(&inner.shared.queue);
        if q.closed {
            return Err(sub);
        }
        q.subs.push(sub);
        Ok(())
    }

    fn count_failed(&self, events: usize) {
        match &self.backend {
            Backend::Sqlite(inner) => inner
                .shared
                .failures
                .fetch_add(events as u64, Ordering::Relaxed),
            Backend::Postgres(pg) => {
                pg.count_failed(events);
                0
            }
        };
    }

    fn closed(&self) -> LedgerError {
        LedgerError::Closed {
            path: self.path().to_path_buf(),
        }
    }
}

/// Replays a journal that a crashed writer left behind, if no writer holds the ledger now.
pub(crate) fn recover_if_abandoned(db: &Path) {
    let leftover = (0..2).any(|w| {
        std::fs::metadata(journal_path(db, w))
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
    if !leftover {
        return;
    }
    match Ledger::open(LedgerOptions::new(db)) {
        Ok(ledger) => ledger.close(),
        // A live gateway indexes them itself within one interval.
        Err(LedgerError::Locked { .. }) => {}
        Err(e) => {
            tracing::warn!(path = %db.display(), error = %e, "could not replay the ledger journal")
        }
    }
}

impl Inner {
    fn close(&self) {
        let shared = &self.shared;
        lock(&shared.queue).closed = true;
        // Wait for any leader, then write whatever is still queued.
        {
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
        }
        // The background thread indexes the rest, does the final fsync and stops.
        lock(&shared.sync).shutdown = true;
        shared.sync_cv.notify_all();
        if let Some(handle) = lock(&self.background).take() {
            if handle.join().is_err() {
                tracing::error!(path = %shared.path.display(), "ledger flusher thread panicked");
            }
        }
        lock(&shared.writer).take();
        // Let another process open the ledger now (the lock lives on every descriptor of
        // journal A, including the background's clone kept in `shared`).
        // SAFETY: flock on a descriptor we own.
        unsafe {
            libc::flock(shared.journal_files[0].as_raw_fd(), libc::LOCK_UN);
        }
        if lock(&shared.index).take().is_some() {
            tracing::debug!(path = %shared.path.display(), "ledger closed");
        }
    }
}

impl Shared {
    /// Takes queued submissions for one group commit (at least one whole submission).
    fn take_batch(&self) -> Vec<Submission> {
        let mut q = lock(&self.queue);
        let n = batch_len(&q.subs);
        q.subs.drain(..n).collect()
    }

    /// Writes everything queued, unless another caller is already doing so (it will pick up
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

    /// One indexing step: switch the writer to the other journal file, put the rows written
    /// to the old one into SQLite, then empty the old file. On failure the rows stay queued
    /// (and the old file untouched) for the next step.
    fn index_step(&self) {
        let mut index_guard = lock(&self.index);
        let Some(index) = index_guard.as_mut() else {
            return;
        };
        let (rows, old) = {
            let mut guard = lock(&self.writer);
            let Some(w) = guard.as_mut() else { return };
            if w.unindexed.is_empty() {
                return;
            }
            if w.other_dirty {
                // A previous step failed to empty the other file: retry without switching.
                (std::mem::take(&mut w.unindexed), None)
            } else {
                let old = w.current;
                w.current = 1 - old;
                w.other_dirty = true;
                (std::mem::take(&mut w.unindexed), Some(old))
            }
        };
        match index.insert(&rows) {
            Ok(()) => {
                let emptied = match old {
                    Some(old) => self.journal_files[old].set_len(0),
                    // Without a switch the rows share the current file with newer ones; it is
                    // emptied by a later step.
                    None => Ok(()),
                };
                let mut guard = lock(&self.writer);
                if let Some(w) = guard.as_mut() {
                    w.index_error = None;
                    if let Some(old) = old {
                        match emptied {
                            Ok(()) => {
                                w.other_dirty = false;
                                w.lens[old] = 0;
                            }
                            Err(e) => {
                                tracing::warn!(path = %self.path.display(), error = %e, "could not empty an indexed journal file; will retry")
                            }
                        }
                    } else {
                        // Switch now that the rows are safe in SQLite: the other file (indexed
                        // long ago) can be emptied and reused.
                        let other = 1 - w.current;
                        if self.journal_files[other].set_len(0).is_ok() {
                            w.other_dirty = false;
                            w.lens[other] = 0;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, rows = rows.len(), "indexing the ledger journal into SQLite failed; the events are safe in the journal, will retry");
                let mut guard = lock(&self.writer);
                if let Some(w) = guard.as_mut() {
                    let mut rows = rows;
                    rows.append(&mut w.unindexed);
                    w.unindexed = rows;
                    // If we switched, writes go on into the new file; the old one keeps its
                    // records (other_dirty) until a later step indexes them.
                    w.index_error = Some(e.to_string());
                }
            }
        }
    }
}

impl Shared {
    /// Signs and stores a checkpoint if one is due (`force`: whenever the tree grew).
    fn checkpoint_step(&self, force: bool) {
        let mut guard = lock(&self.index);
        let Some(index) = guard.as_mut() else { return };
        let Some(tree) = index.tree.as_mut() else {
            return;
        };
        let size = tree.frontier.size();
        if size == tree.last_size {
            return;
        }
        let due = force
            || size - tree.last_size >= tree.opts.every_events
            || tree.last_at.elapsed() >= tree.opts.every;
        if !due {
            return;
        }
        let root = tree.frontier.root();
        let note = tree.opts.signer.sign(size, root);
        let stored = index.conn.execute(
            "INSERT OR REPLACE INTO checkpoints (tree_size, ts_us, root, note, frontier) VALUES (?1, ?2, ?3, ?4, ?5)",
            (
                size as i64,
                portcullis_core::now_us(),
                &root[..],
                note.as_str(),
                tree.frontier.to_bytes(),
            ),
        );
        if let Err(e) = stored {
            self.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), error = %e, size, "could not store a ledger checkpoint; will retry");
            return;
        }
        tree.last_size = size;
        tree.last_at = Instant::now();
        self.checkpoint_size.store(size, Ordering::Relaxed);
        mirror_everywhere(&tree.opts, size, &note, &self.checkpoint_failures);
        tracing::debug!(path = %self.path.display(), size, "ledger checkpoint signed");
    }
}

/// Writes a new checkpoint to the mirror folder and the mirror bucket, if configured; a
/// failure is logged and counted (the next checkpoint tries again).
pub(crate) fn mirror_everywhere(
    opts: &CheckpointOptions,
    size: u64,
    note: &str,
    failures: &AtomicU64,
) {
    if let Some(mirror) = &opts.mirror {
        if let Err(e) = write_mirror(mirror, note) {
            failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(folder = %mirror.display(), error = %e, size, "could not write the ledger checkpoint to its mirror; the next checkpoint tries again");
        }
    }
    if let Some(bucket) = &opts.mirror_bucket {
        if let Err(e) = crate::blob::mirror_checkpoint(bucket, size, note) {
            failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(bucket = %bucket.name(), error = %e, size, "could not write the ledger checkpoint to its mirror bucket; the next checkpoint tries again");
        }
    }
}

/// The mirrored checkpoints to check before writing on: `(where, note)` from the folder and
/// the bucket; a mirror that exists but cannot be read is an error.
pub(crate) fn mirrored_notes(
    opts: &CheckpointOptions,
    path: &Path,
) -> Result<Vec<(String, String)>, LedgerError> {
    let tampered = |detail: String| LedgerError::Tampered {
        path: path.to_path_buf(),
        detail,
    };
    let mut out = Vec::new();
    if let Some(mirror) = &opts.mirror {
        let file = crate::checkpoint::mirror_file(mirror);
        match std::fs::read_to_string(&file) {
            Ok(note) => out.push((file.display().to_string(), note)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(tampered(format!(
                    "the mirrored checkpoint {} cannot be read ({e})",
                    file.display()
                )))
            }
        }
    }
    if let Some(bucket) = &opts.mirror_bucket {
        // An unreachable bucket stops the start: without it a truncated ledger would pass.
        if let Some(note) = crate::blob::mirrored_checkpoint(bucket)? {
            out.push((
                format!("{}/{}", bucket.name(), crate::blob::MIRROR_LATEST),
                note,
            ));
        }
    }
    Ok(out)
}

/// Replaces `<folder>/checkpoint` with `note`, atomically and durably.
fn write_mirror(folder: &Path, note: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    let tmp = folder.join(".checkpoint.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(note.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, crate::checkpoint::mirror_file(folder))?;
    sync_dir(folder);
    Ok(())
}

struct Writer {
    journals: [File; 2],
    /// Bytes in each journal file (kept here: no stat on the hot path).
    lens: [u64; 2],
    /// Which journal file takes new records.
    current: usize,
    /// The other file still holds records that are not known to be in SQLite.
    other_dirty: bool,
    strict: bool,
    head: Head,
    /// Reused buffers: the submissions that serialised and go into the write …
    ready: Vec<Submission>,
    /// … and the journal records of the group.
    buf: Vec<u8>,
    /// Rows written to the journal, not yet in SQLite.
    unindexed: Vec<Row>,
    /// Why the last indexing step failed, if it did.
    index_error: Option<String>,
    /// Segment keys, when events are sealed.
    keys: Option<KeyStore>,
}

impl Writer {
    /// Writes one group commit to the journal and answers its submitters.
    fn commit_batch(&mut self, shared: &Shared, batch: &mut Vec<Submission>) {
        let path = &shared.path;
        if self.unindexed.len() > MAX_UNINDEXED {
            let err = |_: ()| LedgerError::IndexBehind {
                path: path.clone(),
                pending: self.unindexed.len(),
                reason: self.index_error.clone().unwrap_or_default(),
            };
            for sub in batch.drain(..) {
                shared
                    .failures
                    .fetch_add(sub.events.len() as u64, Ordering::Relaxed);
                answer(sub.reply, Err(err(())));
            }
            return;
        }

        // 1. Serialise: one bad event fails only its own submission.
        if self.buf.capacity() > BUFFER_KEEP {
            self.buf = Vec::new(); // do not hold on to the memory of one huge batch
        }
        self.ready.clear();
        let jsons = serialise(
            self.keys.as_mut(),
            path,
            batch,
            &mut self.ready,
            &shared.failures,
        );
        if self.ready.is_empty() {
            return;
        }
        let events = jsons.len();

        // 2. Chain and encode.
        self.buf.clear();
        let mut head = self.head;
        let mut rows = Vec::with_capacity(events);
        let all = self.ready.iter().flat_map(|s| s.events.iter());
        for (ev, json) in all.zip(jsons) {
            let seq = head.seq + 1;
            let kind = ev.data.kind();
            let hash = event_hash(&head.hash, seq, ev.ts_us, kind, &ev.session_id, &json);
            let row = Row {
                seq,
                ts_us: ev.ts_us,
                session_id: ev.session_id.clone(),
                kind: kind.to_string(),
                data: json,
                prev: head.hash,
                hash,
            };
            encode(&row, &mut self.buf);
            rows.push(row);
            head = Head { seq, hash };
        }

        // 3. One write (and in strict mode one fsync) for the whole group.
        let file = &mut self.journals[self.current];
        let before = self.lens[self.current];
        let written = file.write_all(&self.buf).and_then(|()| {
            if self.strict {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                let first = self.head.seq + 1;
                self.head = head;
                self.lens[self.current] += self.buf.len() as u64;
                self.unindexed.append(&mut rows);
                let s = shared;
                s.appended.fetch_add(events as u64, Ordering::Relaxed);
                s.commits.fetch_add(1, Ordering::Relaxed);
                s.last_seq.store(head.seq, Ordering::Relaxed);
                if self.strict {
                    s.syncs.fetch_add(1, Ordering::Relaxed);
                } else {
                    // The background thread syncs within one interval.
                    let mut st = lock(&s.sync);
                    if st.pending_since.is_none() {
                        st.pending_since = Some(Instant::now());
                    }
                }
                acknowledge(&mut self.ready, first);
            }
            Err(e) => {
                // Fail closed: nothing of the group is acknowledged, the head does not move,
                // and a partial record is cut off so the next group continues cleanly.
                if let Err(t) = file.set_len(before) {
                    tracing::error!(path = %path.display(), error = %t, "could not cut a failed write off the ledger journal");
                }
                shared.failures.fetch_add(events as u64, Ordering::Relaxed);
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    events,
                    "ledger journal write failed: events not recorded, statements refused"
                );
                let source = Arc::new(e);
                for sub in self.ready.drain(..) {
                    let err = LedgerError::Journal {
                        path: journal_path(path, self.current),
                        events: sub.events.len(),
                        source: source.clone(),
                    };
                    answer(sub.reply, Err(err));
                }
            }
        }
    }
}

/// How many of the queued submissions go into one group commit: at least one, then as many
/// as fit in [`MAX_BATCH_EVENTS`] (a submission's events stay together).
pub(crate) fn batch_len(subs: &[Submission]) -> usize {
    let mut events = 0;
    let mut n = 0;
    for sub in subs {
        if n > 0 && events + sub.events.len() > MAX_BATCH_EVENTS {
            break;
        }
        events += sub.events.len();
        n += 1;
    }
    n
}

/// Seals and serialises the events of `batch` (all of it is taken) for one group commit:
/// submissions whose events all serialise go to `ready`, in order, with their JSON returned
/// (one buffer per event, which the row then owns); a submission with a bad event is answered
/// with its error and counted in `failures`, without holding up the others.
pub(crate) fn serialise(
    mut keys: Option<&mut KeyStore>,
    path: &Path,
    batch: &mut Vec<Submission>,
    ready: &mut Vec<Submission>,
    failures: &AtomicU64,
) -> Vec<Vec<u8>> {
    let mut jsons: Vec<Vec<u8>> = Vec::new();
    for mut sub in batch.drain(..) {
        let mark = jsons.len();
        let mut failed = None;
        for ev in sub.events.iter_mut() {
            if let Some(keys) = keys.as_deref_mut() {
                if let Err(e) = keys.seal(&ev.session_id, ev.ts_us, &mut ev.data) {
                    failed = Some(e);
                    break;
                }
            }
            let json = match serde_json::to_vec(&ev.data) {
                Ok(json) => json,
                Err(source) => {
                    failed = Some(LedgerError::Serialize {
                        path: path.to_path_buf(),
                        kind: ev.data.kind(),
                        source,
                    });
                    break;
                }
            };
            let bytes = json.len().max(ev.session_id.len());
            if bytes > MAX_FIELD_BYTES {
                failed = Some(LedgerError::TooLarge {
                    path: path.to_path_buf(),
                    kind: ev.data.kind(),
                    bytes,
                });
                break;
            }
            jsons.push(json);
        }
        match failed {
            None => ready.push(sub),
            Some(err) => {
                jsons.truncate(mark);
                failures.fetch_add(sub.events.len() as u64, Ordering::Relaxed);
                tracing::error!(path = %path.display(), error = %err, "event not recorded");
                answer(sub.reply, Err(err));
            }
        }
    }
    jsons
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
    buf.extend_from_slice(b);
}

/// Appends one journal record (see the module documentation for the layout).
fn encode(row: &Row, buf: &mut Vec<u8>) {
    let len_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&row.seq.to_be_bytes());
    buf.extend_from_slice(&row.ts_us.to_be_bytes());
    buf.extend_from_slice(&row.prev);
    buf.extend_from_slice(&row.hash);
    put_bytes(buf, row.kind.as_bytes());
    put_bytes(buf, row.session_id.as_bytes());
    put_bytes(buf, &row.data);
    let len = (buf.len() - len_at - 4) as u32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Decodes the records of a journal file; stops at the first incomplete or malformed one (a
/// write torn by a power loss).
fn decode_all(bytes: &[u8]) -> Vec<Row> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    fn u32_at(b: &mut &[u8]) -> Option<usize> {
        take(b, 4).map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize)
    }
    fn field(b: &mut &[u8]) -> Option<Vec<u8>> {
        let n = u32_at(b)?;
        take(b, n).map(<[u8]>::to_vec)
    }
    let mut rows = Vec::new();
    let mut rest = bytes;
    while let Some(len) = u32_at(&mut rest) {
        let Some(mut rec) = take(&mut rest, len) else {
            break;
        };
        let row = (|| {
            let seq = u64::from_be_bytes(take(&mut rec, 8)?.try_into().ok()?);
            let ts_us = i64::from_be_bytes(take(&mut rec, 8)?.try_into().ok()?);
            let prev: [u8; 32] = take(&mut rec, 32)?.try_into().ok()?;
            let hash: [u8; 32] = take(&mut rec, 32)?.try_into().ok()?;
            let kind = String::from_utf8(field(&mut rec)?).ok()?;
            let session_id = String::from_utf8(field(&mut rec)?).ok()?;
            let data = field(&mut rec)?;
            std::str::from_utf8(&data).ok()?;
            Some(Row {
                seq,
                ts_us,
                session_id,
                kind,
                data,
                prev,
                hash,
            })
        })();
        match row {
            Some(r) => rows.push(r),
            None => break,
        }
    }
    rows
}

/// The SQLite side: rows arrive here in large batches.
struct Index {
    conn: Connection,
    /// The Merkle tree over the indexed events, when checkpoints are on.
    tree: Option<Tree>,
}

/// The Merkle tree of the indexed events and the checkpoint schedule.
struct Tree {
    frontier: Frontier,
    opts: CheckpointOptions,
    /// Size of the last stored checkpoint.
    last_size: u64,
    last_at: Instant,
}

impl Tree {
    /// Resumes the tree at open: from the last stored checkpoint's frontier plus the events
    /// after it (or from every event, the first time). Refuses a ledger shorter than a
    /// checkpoint it signed, in its table or in the mirror: writing on would fork the log.
    fn load(
        conn: &Connection,
        path: &Path,
        opts: CheckpointOptions,
        head: Head,
    ) -> Result<Tree, LedgerError> {
        let err = |e| LedgerError::sqlite(path, "resuming the Merkle tree", e);
        let verifier = opts.signer.verifier();
        let tampered = |detail: String| LedgerError::Tampered {
            path: path.to_path_buf(),
            detail,
        };
        let last: Option<(i64, Vec<u8>, Vec<u8>, String)> = conn
            .query_row(
                "SELECT tree_size, root, frontier, note FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(err)?;
        let behind = |checkpoint: u64| LedgerError::BehindCheckpoint {
            path: path.to_path_buf(),
            events: head.seq,
            checkpoint,
            first: head.seq + 1,
        };
        // What must hold before writing on: (tree size, signed root, where it was found).
        let mut must_match: Vec<(u64, [u8; 32], String)> = Vec::new();
        for (place, note) in mirrored_notes(&opts, path)? {
            match verifier.open(&note) {
                Ok(cp) if cp.size > head.seq => return Err(behind(cp.size)),
                Ok(cp) => must_match.push((cp.size, cp.root, place)),
                Err(e) => {
                    return Err(tampered(format!(
                        "the mirrored checkpoint {place} does not verify with this gateway's key \
                         ({e}); it is evidence: keep it, find out who changed it, and move \
                         it away only once the ledger is known to be intact"
                    )))
                }
            }
        }
        let mut frontier = Frontier::new();
        let mut last_size = 0;
        if let Some((size, root, bytes, note)) = last {
            let size = u64::try_from(size).unwrap_or(0);
            if size > head.seq {
                return Err(behind(size));
            }
            // Only a row this key signed is trusted to resume from.
            match verifier.open(&note) {
                Ok(cp) if cp.size == size && cp.root[..] == root[..] => {}
                _ => {
                    return Err(tampered(format!(
                        "the stored checkpoint of tree size {size} is not one this gateway \
                         signed (its note does not verify, or does not match its row)"
                    )))
                }
            }
            let resumed = Frontier::from_bytes(size, &bytes).filter(|f| f.root()[..] == root[..]);
            // A mirror at another size than the last row is checked by rebuilding the tree.
            let mirror_elsewhere = must_match.iter().any(|(n, ..)| *n != size);
            match resumed {
                Some(f) if !mirror_elsewhere => {
                    for (n, r, place) in &must_match {
                        if r[..] != root[..] {
                            return Err(tampered(format!(
                                "the checkpoint in {place} (tree size {n}) and the stored one of \
                                 the same size sign different roots"
                            )));
                        }
                    }
                    must_match.clear();
                    frontier = f;
                    last_size = size;
                }
                _ => {
                    if !mirror_elsewhere {
                        tracing::warn!(path = %path.display(), size, "the last checkpoint's tree state is unreadable; rebuilding the tree from every event");
                    }
                    if let Ok(r) = <[u8; 32]>::try_from(root.as_slice()) {
                        must_match.push((size, r, "the stored checkpoints".into()));
                    }
                    last_size = size;
                }
            }
        }
        let check = |frontier: &Frontier| -> Result<(), LedgerError> {
            for (n, r, place) in &must_match {
                if *n == frontier.size() && frontier.root() != *r {
                    return Err(tampered(format!(
                        "events 1 to {n} no longer have the root the checkpoint in {place} \
                         signed: they were replaced after it; run `portcullis audit verify`"
                    )));
                }
            }
            Ok(())
        };
        check(&frontier)?;
        let mut stmt = conn
            .prepare("SELECT seq, hash FROM events WHERE seq > ?1 ORDER BY seq")
            .map_err(err)?;
        let mut rows = stmt.query([frontier.size() as i64]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let seq: i64 = row.get(0).map_err(err)?;
            let hash = schema::blob32(row.get_ref(1).map_err(err)?);
            match hash {
                Some(h) if seq as u64 == frontier.size() + 1 => {
                    frontier.push(event_leaf(&h));
                    check(&frontier)?;
                }
                _ => {
                    return Err(LedgerError::Malformed {
                        path: path.to_path_buf(),
                        seq,
                        detail: "the events do not run 1, 2, 3, … with 32-byte hashes".into(),
                    })
                }
            }
        }
        Ok(Tree {
            frontier,
            opts,
            last_size,
            last_at: Instant::now(),
        })
    }
}

impl Index {
    fn insert(&mut self, rows: &[Row]) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| {
            let mut insert = self.conn.prepare_cached(schema::INSERT)?;
            for r in rows {
                insert.execute((
                    r.seq,
                    r.ts_us,
                    r.session_id.as_str(),
                    r.kind.as_str(),
                    Text(&r.data),
                    &r.prev[..],
                    &r.hash[..],
                ))?;
            }
            Ok(())
        })();
        match result.and_then(|()| self.conn.execute_batch("COMMIT")) {
            Ok(()) => {
                if let Some(tree) = &mut self.tree {
                    for r in rows {
                        tree.frontier.push(event_leaf(&r.hash));
                    }
                }
                Ok(())
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Brings SQLite up to date with the journal (after a crash), empties the journal, and
    /// returns the chain head.
    fn replay(&mut self, path: &Path, journals: &[File; 2]) -> Result<Head, LedgerError> {
        let mut head = schema::load_head(&self.conn, path)
            .map_err(|e| LedgerError::sqlite(path, "reading the chain head", e))?;
        let mut rows = Vec::new();
        for (which, mut f) in journals.iter().enumerate() {
            let mut bytes = Vec::new();
            (&mut f)
                .read_to_end(&mut bytes)
                .map_err(|_| LedgerError::NotWritable {
                    path: journal_path(path, which),
                })?;
            rows.extend(decode_all(&bytes));
        }
        rows.retain(|r| r.seq > head.seq);
        rows.sort_by_key(|r| r.seq);
        let mut keep = Vec::new();
        for r in rows {
            let continues = r.seq == head.seq + 1
                && r.prev == head.hash
                && event_hash(&r.prev, r.seq, r.ts_us, &r.kind, &r.session_id, &r.data) == r.hash;
            if !continues {
                tracing::warn!(path = %path.display(), seq = r.seq, "the ledger journal ends with a record that does not continue the chain (torn by a crash?); replay stops there");
                break;
            }
            head = Head {
                seq: r.seq,
                hash: r.hash,
            };
            keep.push(r);
        }
        if !keep.is_empty() {
            tracing::info!(path = %path.display(), events = keep.len(), "replayed events from the ledger journal");
            self.insert(&keep)
                .map_err(|e| LedgerError::sqlite(path, "replaying the journal", e))?;
        }
        for (which, f) in journals.iter().enumerate() {
            f.set_len(0).map_err(|_| LedgerError::NotWritable {
                path: journal_path(path, which),
            })?;
        }
        Ok(head)
    }
}

/// The background thread: every `interval`, writes what detached appends left in the queue,
/// fsyncs the journal if there were writes since the last sync (`Default` durability: a
/// power loss loses at most that window), and indexes the journal into SQLite. On shutdown
/// it does all three one last time.
fn run_background(shared: &Shared) {
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
        if !shared.strict && lock(&shared.sync).pending_since.take().is_some() {
            let mut ok = true;
            for f in &shared.journal_files {
                if let Err(e) = f.sync_data() {
                    ok = false;
                    shared.sync_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(path = %shared.path.display(), error = %e, "fsync of the ledger journal failed: recent events may not survive a power loss");
                }
            }
            if ok {
                shared.syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.index_step();
        if shutdown {
            // Everything written is indexed once the other file is clean too.
            shared.index_step();
            shared.checkpoint_step(true);
            return;
        }
        shared.checkpoint_step(false);
    }
}

/// Pragmas of the index connection.
fn configure(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
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
    // FULL: an index commit is synced before the journal records it covers are dropped.
    conn.pragma_update(None, "synchronous", "FULL")
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

/// Answers every submission of a committed group with its first seq (the group's events are
/// `first, first + 1, …` in submission order).
pub(crate) fn acknowledge(ready: &mut Vec<Submission>, first: u64) {
    let mut next = first;
    for sub in ready.drain(..) {
        let len = sub.events.len() as u64;
        answer(sub.reply, Ok(next));
        next += len;
    }
}

/// Sends an outcome to a waiting submitter; a detached submission has nobody to tell (its
/// failures were logged and counted by the caller).
pub(crate) fn answer(
    reply: Option<oneshot::Sender<Result<u64, LedgerError>>>,
    outcome: Result<u64, LedgerError>,
) {
    if let Some(reply) = reply {
        // The receiver is gone if the append future was dropped: nothing to do.
        let _ = reply.send(outcome);
    }
}
