//! The append path of the PostgreSQL store: one writer thread per gateway, group commit.
//!
//! ```text
//!  append(events) ── push onto the queue, wake the writer ──► await the answer
//!
//!  writer thread: take everything queued (up to MAX_BATCH_EVENTS) · seal and serialise ·
//!     if this gateway wrote the head last: one statement that locks the head, checks it is
//!     unchanged, inserts the rows and moves it (committed alone); otherwise (or if another
//!     gateway moved it): BEGIN · SELECT head FOR UPDATE (waits while another gateway commits) · number and hash
//!     after the head · INSERT all rows and move the head (one statement) · COMMIT · answer
//!     every submitter · sign a checkpoint when one is due
//! ```
//!
//! Unlike the SQLite path there is no journal: the commit is the record. While one group is
//! in flight the next one gathers in the queue, so the round trips are shared by every session
//! that appended meanwhile. All PostgreSQL I/O happens on this thread (the blocking client must
//! not run on the gateway's async workers).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portcullis_core::config::Durability;
use postgres::Statement;

use super::Conn;
use crate::chain::event_hash;
use crate::error::LedgerError;
use crate::merkle::{event_leaf, Frontier};
use crate::seal::KeyStore;
use crate::writer::{
    acknowledge, answer, batch_len, serialise, CheckpointOptions, LedgerOptions, LedgerStats,
    Submission,
};

const INSERT: &str = "
WITH ins AS (
    INSERT INTO portcullis.events (seq, ts_us, session_id, kind, data, prev_hash, hash)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::bytea[], $7::bytea[])
)
UPDATE portcullis.head SET seq = $8, hash = $9 WHERE id = 1";

/// The fast path: lock the head row first (so a gateway on the slow path, which also locks it
/// first, cannot deadlock with this insert), and write only if the head is still at `$10`.
/// Updates one row when it wrote, none when another gateway moved the head.
const INSERT_IF_HEAD: &str = "
WITH h AS (SELECT seq FROM portcullis.head WHERE id = 1 AND seq = $10 FOR UPDATE),
ins AS (
    INSERT INTO portcullis.events (seq, ts_us, session_id, kind, data, prev_hash, hash)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::bytea[], $7::bytea[])
    WHERE EXISTS (SELECT 1 FROM h)
)
UPDATE portcullis.head SET seq = $8, hash = $9 WHERE id = 1 AND EXISTS (SELECT 1 FROM h)";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the handles ask of the writer thread besides appends. A request is carried out only
/// once every submission queued before it is answered.
enum Request {
    DeleteKey {
        segment: String,
        rule: String,
        reply: mpsc::Sender<Result<(), LedgerError>>,
    },
    /// Answered when everything queued before it is committed (or refused).
    Flush { reply: mpsc::Sender<()> },
    /// Sign a checkpoint now, then answer.
    Checkpoint { reply: mpsc::Sender<()> },
}

#[derive(Default)]
struct Queue {
    subs: Vec<Submission>,
    /// Requests in arrival order, each with the number of submissions queued before it that
    /// are not yet taken for a commit: it is carried out once that is 0.
    requests: Vec<(usize, Request)>,
    closed: bool,
}

pub(crate) struct Shared {
    pub(crate) name: PathBuf,
    queue: Mutex<Queue>,
    wake: Condvar,
    appended: AtomicU64,
    commits: AtomicU64,
    last_seq: AtomicU64,
    failures: AtomicU64,
    checkpoint_size: AtomicU64,
    checkpoint_failures: AtomicU64,
}

/// The handle behind [`crate::Ledger`] for a PostgreSQL store.
pub(crate) struct PgLedger {
    pub(crate) shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for PgLedger {
    fn drop(&mut self) {
        self.close();
    }
}

impl PgLedger {
    /// Connects, migrates, checks the checkpoint key and the mirror, and starts the writer
    /// thread (which does all of that, off the caller's thread).
    pub(crate) fn open(url: &str, opts: LedgerOptions) -> Result<PgLedger, LedgerError> {
        let name = super::display_name(url);
        let shared = Arc::new(Shared {
            name: name.clone(),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            appended: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            checkpoint_size: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let shared = shared.clone();
            let url = url.to_string();
            std::thread::Builder::new()
                .name("ledger-pg-writer".into())
                .spawn(move || match Writer::start(&url, opts, &shared) {
                    Ok(mut w) => {
                        let _ = ready_tx.send(Ok(()));
                        w.run(&shared);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|source| LedgerError::Spawn {
                    path: name.clone(),
                    what: "PostgreSQL writer",
                    source,
                })?
        };
        let started = ready_rx.recv().unwrap_or_else(|_| {
            Err(LedgerError::Store {
                path: name.clone(),
                detail: "the writer thread stopped while opening the store".into(),
            })
        });
        if let Err(e) = started {
            let _ = thread.join();
            return Err(e);
        }
        Ok(PgLedger {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a submission; `Err` gives it back when the ledger is closed.
    pub(crate) fn submit(&self, sub: Submission) -> Result<(), Submission> {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(sub);
        }
        q.subs.push(sub);
        self.shared.wake.notify_one();
        Ok(())
    }

    pub(crate) fn count_failed(&self, events: usize) {
        self.shared
            .failures
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Queues `request` and waits for its answer; returns at once if the ledger is closed
    /// (everything queued was then answered by `close`) or the writer is gone.
    fn ask(&self, request: impl FnOnce(mpsc::Sender<()>) -> Request) {
        let (reply, answer) = mpsc::channel();
        {
            let mut q = lock(&self.shared.queue);
            if q.closed {
                return;
            }
            let ahead = q.subs.len();
            q.requests.push((ahead, request(reply)));
            self.shared.wake.notify_one();
        }
        let _ = answer.recv();
    }

    /// Waits until everything submitted so far is answered (committed, hence visible).
    pub(crate) fn flush(&self) {
        self.ask(|reply| Request::Flush { reply });
    }

    /// Signs a checkpoint now (after what is queued), if the tree grew. Blocking.
    pub(crate) fn checkpoint(&self) {
        self.ask(|reply| Request::Checkpoint { reply });
    }

    pub(crate) fn delete_segment_key(&self, segment: &str, rule: &str) -> Result<(), LedgerError> {
        let (reply, answer) = mpsc::channel();
        {
            let mut q = lock(&self.shared.queue);
            if q.closed {
                return Err(LedgerError::Closed {
                    path: self.shared.name.clone(),
                });
            }
            let ahead = q.subs.len();
            q.requests.push((
                ahead,
                Request::DeleteKey {
                    segment: segment.to_string(),
                    rule: rule.to_string(),
                    reply,
                },
            ));
            self.shared.wake.notify_one();
        }
        answer.recv().unwrap_or_else(|_| {
            Err(LedgerError::Closed {
                path: self.shared.name.clone(),
            })
        })
    }

    /// Stops accepting events, commits what is queued, signs a last checkpoint and joins the
    /// writer thread. Idempotent.
    pub(crate) fn close(&self) {
        {
            let mut q = lock(&self.shared.queue);
            q.closed = true;
            self.shared.wake.notify_one();
        }
        if let Some(t) = lock(&self.thread).take() {
            if t.join().is_err() {
                tracing::error!(store = %self.shared.name.display(), "ledger writer thread panicked");
            }
        }
    }

    pub(crate) fn stats(&self) -> LedgerStats {
        let s = &self.shared;
        let commits = s.commits.load(Ordering::Relaxed);
        LedgerStats {
            appended: s.appended.load(Ordering::Relaxed),
            commits,
            syncs: commits,
            last_seq: s.last_seq.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            sync_failures: 0,
            checkpoint_size: s.checkpoint_size.load(Ordering::Relaxed),
            checkpoint_failures: s.checkpoint_failures.load(Ordering::Relaxed),
        }
    }
}

/// Prepared statements of one connection (prepared again after a reconnect).
struct Prepared {
    generation: u64,
    head: Statement,
    insert: Statement,
    insert_if_head: Statement,
}

/// The columns of one group, numbered and hashed after a head, as the INSERT binds them.
struct Rows<'a> {
    seqs: Vec<i64>,
    tss: Vec<i64>,
    sessions: Vec<&'a str>,
    kinds: Vec<&'static str>,
    datas: Vec<&'a str>,
    prevs: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
    last_seq: i64,
    last_hash: [u8; 32],
    /// `last_hash` as the bytea parameter.
    last_hash_bytes: Vec<u8>,
}

impl<'a> Rows<'a> {
    /// The INSERT's parameters `$1`…`$9`, and `$10` (the expected head) for the fast path.
    fn params<'p>(
        &'p self,
        expected: Option<&'p i64>,
    ) -> Vec<&'p (dyn postgres::types::ToSql + Sync)> {
        let mut p: Vec<&'p (dyn postgres::types::ToSql + Sync)> = vec![
            &self.seqs,
            &self.tss,
            &self.sessions,
            &self.kinds,
            &self.datas,
            &self.prevs,
            &self.hashes,
            &self.last_seq,
            &self.last_hash_bytes,
        ];
        p.extend(expected.map(|e| e as &(dyn postgres::types::ToSql + Sync)));
        p
    }

    fn chain(
        ready: &'a [Submission],
        jsons: &'a [Vec<u8>],
        first: u64,
        mut prev: [u8; 32],
        name: &std::path::Path,
    ) -> Result<Rows<'a>, LedgerError> {
        let n = jsons.len();
        let mut rows = Rows {
            seqs: Vec::with_capacity(n),
            tss: Vec::with_capacity(n),
            sessions: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            datas: Vec::with_capacity(n),
            prevs: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
            last_seq: (first + n as u64 - 1) as i64,
            last_hash: prev,
            last_hash_bytes: Vec::new(),
        };
        let all = ready.iter().flat_map(|s| s.events.iter());
        for (i, (ev, json)) in all.zip(jsons).enumerate() {
            let s = first + i as u64;
            let kind = ev.data.kind();
            let h = event_hash(&prev, s, ev.ts_us, kind, &ev.session_id, json);
            let data = std::str::from_utf8(json).map_err(|_| LedgerError::Store {
                path: name.to_path_buf(),
                detail: "an event serialised to invalid UTF-8".into(),
            })?;
            rows.seqs.push(s as i64);
            rows.tss.push(ev.ts_us);
            rows.sessions.push(ev.session_id.as_str());
            rows.kinds.push(kind);
            rows.datas.push(data);
            rows.prevs.push(prev.to_vec());
            rows.hashes.push(h.to_vec());
            prev = h;
        }
        rows.last_hash = prev;
        rows.last_hash_bytes = prev.to_vec();
        Ok(rows)
    }
}

struct Writer {
    conn: Conn,
    prepared: Option<Prepared>,
    keys: Option<KeyStore>,
    checkpoints: Option<CheckpointOptions>,
    /// Events this gateway appended since its last checkpoint attempt, and when that was.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Reused across groups.
    ready: Vec<Submission>,
    /// The head this gateway committed last (`None`: unknown, read it under the lock).
    head: Option<(u64, [u8; 32])>,
    /// The largest checkpoint this gateway signed or found at open: the store's newest must
    /// never be smaller.
    signed: u64,
}

impl Writer {
    fn start(url: &str, opts: LedgerOptions, shared: &Shared) -> Result<Writer, LedgerError> {
        let mut conn = Conn::open(url)?;
        super::migrate(&mut conn)?;
        let sync = match opts.durability {
            Durability::Default => "off",
            Durability::Strict => "on",
        };
        conn.set_session(format!("SET synchronous_commit = {sync}"));
        let keys = if opts.seal {
            Some(KeyStore::open_postgres(Conn::open(url)?))
        } else {
            None
        };
        let mut w = Writer {
            conn,
            prepared: None,
            keys,
            checkpoints: opts.checkpoints,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            ready: Vec::new(),
            head: None,
            signed: 0,
        };
        let head = w.head_seq()?;
        shared.last_seq.store(head, Ordering::Relaxed);
        if w.checkpoints.is_some() {
            let size = w.check_checkpoints(head)?;
            w.signed = size;
            shared.checkpoint_size.store(size, Ordering::Relaxed);
        }
        tracing::debug!(store = %w.conn.name.display(), last_seq = head, "ledger store opened");
        Ok(w)
    }

    fn head_seq(&mut self) -> Result<u64, LedgerError> {
        let name = self.conn.name.clone();
        let err = |e| LedgerError::postgres(&name, "reading the chain head", e);
        let seq: i64 = self
            .conn
            .client()?
            .query_one("SELECT seq FROM portcullis.head WHERE id = 1", &[])
            .and_then(|r| r.try_get(0))
            .map_err(err)?;
        Ok(seq.max(0) as u64)
    }

    /// Before writing on: all gateways of a store sign with one key (the first recorded it),
    /// the mirror verifies and is not ahead of the store, and it agrees with the stored
    /// checkpoint of its size. Returns the size of the last stored checkpoint.
    fn check_checkpoints(&mut self, head: u64) -> Result<u64, LedgerError> {
        let Some(opts) = self.checkpoints.clone() else {
            return Ok(0);
        };
        let name = self.conn.name.clone();
        let verifier = opts.signer.verifier();
        let vkey = verifier.to_vkey();
        let err = |e| LedgerError::postgres(&name, "checking the checkpoint key", e);
        let client = self.conn.client()?;
        client
            .execute(
                "INSERT INTO portcullis.meta (key, value) VALUES ('checkpoint_key', $1) \
                 ON CONFLICT (key) DO NOTHING",
                &[&vkey],
            )
            .map_err(err)?;
        let recorded: String = client
            .query_one(
                "SELECT value FROM portcullis.meta WHERE key = 'checkpoint_key'",
                &[],
            )
            .and_then(|r| r.try_get(0))
            .map_err(err)?;
        if recorded != vkey {
            return Err(LedgerError::Store {
                path: name,
                detail: format!(
                    "this store's checkpoints are signed by the key {recorded:?}, this gateway's \
                     key is {vkey:?}: every gateway of one store must sign with the same key; \
                     copy the key file (store.checkpoints.key_file) from the first gateway"
                ),
            });
        }
        let rows: Vec<(i64, Vec<u8>, String)> = client
            .query(
                "SELECT tree_size, root, note FROM portcullis.checkpoints ORDER BY tree_size",
                &[],
            )
            .map_err(err)?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, postgres::Error>>()
            .map_err(err)?;
        // Only checkpoints this store's key signed are trusted to build on.
        for (size, root, note) in &rows {
            match verifier.open(note) {
                Ok(cp) if cp.size as i64 == *size && cp.root[..] == root[..] => {}
                _ => {
                    return Err(LedgerError::Tampered {
                        path: name.clone(),
                        detail: format!(
                            "the stored checkpoint of tree size {size} is not one this store's \
                             key signed (its note does not verify, or does not match its row): \
                             run `portcullis audit verify`"
                        ),
                    })
                }
            }
        }
        let stored: Vec<(i64, Vec<u8>)> = rows.into_iter().map(|(n, r, _)| (n, r)).collect();
        let last = stored.last().map_or(0, |(n, _)| (*n).max(0) as u64);
        let behind = |checkpoint: u64| LedgerError::BehindCheckpoint {
            path: name.clone(),
            events: head,
            checkpoint,
            first: head + 1,
        };
        if last > head {
            return Err(behind(last));
        }
        for (place, note) in crate::writer::mirrored_notes(&opts, &name)? {
            let cp = verifier.open(&note).map_err(|e| LedgerError::Tampered {
                path: name.clone(),
                detail: format!(
                    "the mirrored checkpoint {place} does not verify with this gateway's key \
                     ({e}); it is evidence: keep it, find out who changed it"
                ),
            })?;
            if cp.size > head {
                return Err(behind(cp.size));
            }
            // The events' root at the mirror's size: the stored checkpoint of that size, or
            // (when the store has none, e.g. its rows were deleted) rebuilt from the events.
            let root_there = match stored.iter().find(|(n, _)| *n as u64 == cp.size) {
                Some((_, r)) => r.clone(),
                None => self.root_of_first(cp.size)?.to_vec(),
            };
            if root_there[..] != cp.root[..] {
                return Err(LedgerError::Tampered {
                    path: name.clone(),
                    detail: format!(
                        "the checkpoint in {place} (tree size {}) signs another root than the \
                         store's events of that size have: they were replaced after it was \
                         signed; run `portcullis audit verify`",
                        cp.size
                    ),
                });
            }
        }
        Ok(last)
    }

    /// The Merkle root of events 1 to `size` as the store holds them now.
    fn root_of_first(&mut self, size: u64) -> Result<[u8; 32], LedgerError> {
        let name = self.conn.name.clone();
        let err = |e| LedgerError::postgres(&name, "rebuilding the Merkle tree", e);
        let rows = self
            .conn
            .client()?
            .query(
                "SELECT hash FROM portcullis.events WHERE seq <= $1 ORDER BY seq",
                &[&(size as i64)],
            )
            .map_err(err)?;
        let mut frontier = Frontier::new();
        for row in &rows {
            let hash: &[u8] = row.try_get(0).map_err(err)?;
            let h = <[u8; 32]>::try_from(hash).map_err(|_| LedgerError::Malformed {
                path: name.clone(),
                seq: frontier.size() as i64 + 1,
                detail: "an event hash is not 32 bytes".into(),
            })?;
            frontier.push(event_leaf(&h));
        }
        Ok(frontier.root())
    }

    fn run(&mut self, shared: &Shared) {
        let tick = self
            .checkpoints
            .as_ref()
            .map_or(Duration::from_secs(3600), |c| {
                c.every.max(Duration::from_millis(50))
            });
        loop {
            let (mut batch, requests, closing) = {
                let mut q = lock(&shared.queue);
                if q.subs.is_empty() && q.requests.is_empty() && !q.closed {
                    let wait = tick.saturating_sub(self.last_checkpoint.elapsed());
                    q = shared
                        .wake
                        .wait_timeout(q, wait.max(Duration::from_millis(1)))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                let n = batch_len(&q.subs);
                let batch: Vec<Submission> = q.subs.drain(..n).collect();
                let closing = q.closed && q.subs.is_empty();
                // A request is due once the submissions queued before it are in this batch
                // (or an earlier one); later ones wait, in order, even if theirs are.
                for (ahead, _) in q.requests.iter_mut() {
                    *ahead = ahead.saturating_sub(n);
                }
                let due = q
                    .requests
                    .iter()
                    .take_while(|(ahead, _)| *ahead == 0)
                    .count();
                let requests: Vec<Request> = q.requests.drain(..due).map(|(_, r)| r).collect();
                (batch, requests, closing)
            };
            if !batch.is_empty() {
                self.commit(shared, &mut batch);
            }
            for r in requests {
                match r {
                    Request::DeleteKey {
                        segment,
                        rule,
                        reply,
                    } => {
                        let outcome = match self.keys.as_mut() {
                            Some(k) => k.delete(&segment, &rule),
                            None => Err(LedgerError::Keys {
                                path: self.conn.name.clone(),
                                detail: "this ledger was opened without sealing".into(),
                            }),
                        };
                        let _ = reply.send(outcome);
                    }
                    Request::Flush { reply } => {
                        let _ = reply.send(());
                    }
                    Request::Checkpoint { reply } => {
                        self.checkpoint_step(shared, true);
                        let _ = reply.send(());
                    }
                }
            }
            self.checkpoint_step(shared, closing);
            if closing {
                return;
            }
        }
    }

    /// One group commit. On failure every submitter gets the error (fail closed) and the
    /// connection is dropped, so the next group reconnects.
    fn commit(&mut self, shared: &Shared, batch: &mut Vec<Submission>) {
        let name = self.conn.name.clone();
        self.ready.clear();
        let jsons = serialise(
            self.keys.as_mut(),
            &name,
            batch,
            &mut self.ready,
            &shared.failures,
        );
        if self.ready.is_empty() {
            return;
        }
        let events = jsons.len();
        match self.write(&jsons) {
            Ok(first) => {
                shared.appended.fetch_add(events as u64, Ordering::Relaxed);
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared
                    .last_seq
                    .store(first + events as u64 - 1, Ordering::Relaxed);
                self.since_checkpoint += events as u64;
                acknowledge(&mut self.ready, first);
            }
            Err(e) => {
                self.conn.reset();
                self.prepared = None;
                self.head = None;
                shared.failures.fetch_add(events as u64, Ordering::Relaxed);
                tracing::error!(store = %name.display(), error = %e, events, "ledger store write failed: events not recorded, statements refused");
                let msg = e.to_string();
                for sub in self.ready.drain(..) {
                    answer(
                        sub.reply,
                        Err(LedgerError::Store {
                            path: name.clone(),
                            detail: format!("{} event(s) not recorded: {msg}", sub.events.len()),
                        }),
                    );
                }
            }
        }
    }

    /// The transaction of one group: lock the head, chain after it, insert, move the head.
    /// Returns the first seq.
    fn write(&mut self, jsons: &[Vec<u8>]) -> Result<u64, LedgerError> {
        let name = self.conn.name.clone();
        let err = |e| LedgerError::postgres(&name, "appending events", e);
        self.conn.client()?; // reconnects if needed, before the generation is read
        let generation = self.conn.generation();
        if self
            .prepared
            .as_ref()
            .is_none_or(|p| p.generation != generation)
        {
            let client = self.conn.client()?;
            let head = client
                .prepare("SELECT seq, hash FROM portcullis.head WHERE id = 1 FOR UPDATE")
                .map_err(err)?;
            let insert = client.prepare(INSERT).map_err(err)?;
            let insert_if_head = client.prepare(INSERT_IF_HEAD).map_err(err)?;
            self.prepared = Some(Prepared {
                generation,
                head,
                insert,
                insert_if_head,
            });
            self.head = None;
        }
        let Some(p) = self.prepared.as_ref() else {
            return Err(LedgerError::Store {
                path: name,
                detail: "statements not prepared".into(),
            });
        };
        // Fast path: this gateway wrote the head last (the usual case with one gateway, and
        // between other gateways' groups): one statement, committed on its own, that locks
        // the head row first and writes only if it is still what this gateway wrote.
        if let Some((seq, hash)) = self.head {
            let rows = Rows::chain(&self.ready, jsons, seq + 1, hash, &name)?;
            let client = self.conn.client()?;
            let moved = client
                .execute(&p.insert_if_head, &rows.params(Some(&(seq as i64))))
                .map_err(err)?;
            if moved == 1 {
                self.head = Some((rows.last_seq as u64, rows.last_hash));
                return Ok(seq + 1);
            }
            self.head = None; // another gateway wrote since: take the lock and read the head
        }
        let client = self.conn.client()?;
        let mut tx = client.transaction().map_err(err)?;
        let row = tx.query_one(&p.head, &[]).map_err(err)?;
        let seq: i64 = row.try_get(0).map_err(err)?;
        let hash: Vec<u8> = row.try_get(1).map_err(err)?;
        let prev: [u8; 32] = hash.as_slice().try_into().map_err(|_| LedgerError::Store {
            path: name.clone(),
            detail: "the chain head's hash is not 32 bytes: run `portcullis audit verify`".into(),
        })?;
        let first = seq as u64 + 1;
        let rows = Rows::chain(&self.ready, jsons, first, prev, &name)?;
        tx.execute(&p.insert, &rows.params(None)).map_err(err)?;
        tx.commit().map_err(err)?;
        self.head = Some((rows.last_seq as u64, rows.last_hash));
        Ok(first)
    }

    /// Signs and stores a checkpoint when one is due: under the checkpoint lock (gateways take
    /// turns), extends the tree state of the last stored checkpoint with the events committed
    /// since (by any gateway).
    fn checkpoint_step(&mut self, shared: &Shared, force: bool) {
        let Some(opts) = self.checkpoints.clone() else {
            return;
        };
        let due = force
            || self.since_checkpoint >= opts.every_events
            || self.last_checkpoint.elapsed() >= opts.every;
        if !due {
            return;
        }
        self.last_checkpoint = Instant::now();
        self.since_checkpoint = 0;
        match self.sign_checkpoint(&opts) {
            Ok(Some((size, note))) => {
                shared.checkpoint_size.store(size, Ordering::Relaxed);
                crate::writer::mirror_everywhere(&opts, size, &note, &shared.checkpoint_failures);
                tracing::debug!(store = %self.conn.name.display(), size, "ledger checkpoint signed");
            }
            Ok(None) => {}
            Err(e) => {
                self.conn.reset();
                self.prepared = None;
                shared.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(store = %self.conn.name.display(), error = %e, "could not sign a ledger checkpoint; will retry");
            }
        }
    }

    /// `Some((size, note))` when a new checkpoint was stored.
    fn sign_checkpoint(
        &mut self,
        opts: &CheckpointOptions,
    ) -> Result<Option<(u64, String)>, LedgerError> {
        let name = self.conn.name.clone();
        let err = |e| LedgerError::postgres(&name, "signing a checkpoint", e);
        let verifier = opts.signer.verifier();
        let mut tx = self.conn.client()?.transaction().map_err(err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&super::CHECKPOINT_LOCK],
        )
        .map_err(err)?;
        let last = tx
            .query_opt(
                "SELECT tree_size, root, frontier, note FROM portcullis.checkpoints \
                 ORDER BY tree_size DESC LIMIT 1",
                &[],
            )
            .map_err(err)?;
        let mut frontier = Frontier::new();
        if let Some(row) = last {
            let size: i64 = row.try_get(0).map_err(err)?;
            let root: Vec<u8> = row.try_get(1).map_err(err)?;
            let bytes: Vec<u8> = row.try_get(2).map_err(err)?;
            let note: String = row.try_get(3).map_err(err)?;
            let size = size.max(0) as u64;
            let trusted = matches!(verifier.open(&note), Ok(cp) if cp.size == size && cp.root[..] == root[..]);
            frontier = Frontier::from_bytes(size, &bytes)
                .filter(|f| trusted && f.root()[..] == root[..])
                .ok_or_else(|| LedgerError::Tampered {
                    path: name.clone(),
                    detail: format!(
                        "the stored checkpoint of tree size {size} is not one this store's key \
                         signed (its note or tree state does not match its row): run \
                         `portcullis audit verify`"
                    ),
                })?;
        }
        if frontier.size() < self.signed {
            return Err(LedgerError::Tampered {
                path: name.clone(),
                detail: format!(
                    "the store's newest checkpoint covers {} events, but this gateway saw one \
                     of {} events: checkpoints were deleted from the store; not signing over \
                     what may be rewritten history (run `portcullis audit verify`)",
                    frontier.size(),
                    self.signed
                ),
            });
        }
        let from = frontier.size() as i64;
        let rows = tx
            .query(
                "SELECT seq, hash FROM portcullis.events WHERE seq > $1 ORDER BY seq",
                &[&from],
            )
            .map_err(err)?;
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(err)?;
            let hash: &[u8] = row.try_get(1).map_err(err)?;
            match <[u8; 32]>::try_from(hash) {
                Ok(h) if seq as u64 == frontier.size() + 1 => frontier.push(event_leaf(&h)),
                _ => {
                    return Err(LedgerError::Malformed {
                        path: name.clone(),
                        seq,
                        detail: "the events do not run 1, 2, 3, … with 32-byte hashes".into(),
                    })
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let size = frontier.size();
        let root = frontier.root();
        let note = opts.signer.sign(size, root);
        tx.execute(
            "INSERT INTO portcullis.checkpoints (tree_size, ts_us, root, note, frontier) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &(size as i64),
                &portcullis_core::now_us(),
                &&root[..],
                &note,
                &frontier.to_bytes(),
            ],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        self.signed = size;
        Ok(Some((size, note)))
    }
}
