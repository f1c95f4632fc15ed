//! portcullis ledger: the tamper-evident record of everything agents did through the gateway.
//!
//! The gateway appends an event *before* it forwards a statement, and refuses the statement if
//! the append fails. That ordering is the whole point: an agent cannot run a command that the
//! ledger does not know about. This crate makes the append fast enough to sit on that path,
//! durable in a precisely stated sense, and verifiable afterwards by anyone holding the file.
//!
//! # Guarantees
//!
//! **Order and atomicity.** [`Ledger::append`] writes its events as consecutive sequence
//! numbers in one transaction: all of them or none. Sequence numbers start at 1 and have no
//! gaps; calls are ordered as they reach the queue.
//!
//! **Fail closed.** If a transaction fails (disk full, I/O error, a lock held too long), it is
//! rolled back, the chain head does not move, and *every* submitter of that group commit gets
//! an `Err`: the gateway then refuses the statements. (If `COMMIT` itself reports an I/O
//! error, SQLite cannot say whether the data reached the file; the submitters still get `Err`,
//! and the next transaction continues from whatever head the file holds.) The next append tries again, so service
//! resumes by itself once the cause is gone, and the chain continues without a hole or a fork.
//!
//! **Durability** (`store.durability` in the configuration):
//!
//! * [`Durability::Default`](portcullis_core::config::Durability::Default): SQLite runs with
//!   `synchronous=NORMAL` in WAL mode. When `append` resolves, the transaction's pages have
//!   been `write()`n into `<ledger>-wal`, i.e. they are in the operating system's page cache.
//!   A crashed or `SIGKILL`ed gateway therefore loses **nothing** it acknowledged: SQLite
//!   recovers the committed transactions from the WAL on the next open. A background thread
//!   `fsync`s the WAL (`File::sync_data`) every `sync_interval` when there were commits since
//!   the last sync (and not at all while idle). A **power loss or kernel crash** can lose
//!   events acknowledged during the last `sync_interval` (plus the duration of one disk flush);
//!   it cannot corrupt the chain, because SQLite checksums WAL frames and discards a torn tail,
//!   and the chain's head simply ends earlier. Checkpoints (copying the WAL into the main file)
//!   are always synced by SQLite.
//! * [`Durability::Strict`](portcullis_core::config::Durability::Strict):
//!   `synchronous=FULL`: every commit `fsync`s the WAL before `append` resolves, so an
//!   acknowledged event survives a power loss too. Because commits are grouped, all sessions
//!   that append while one fsync is in flight share the next one: the cost is one fsync per
//!   group, not per statement.
//!
//! **Tamper evidence.** Each event carries the SHA-256 hash of its content and of its
//! predecessor's hash ([`chain`] documents the exact bytes). [`LedgerReader::verify`] finds a
//! changed, deleted, inserted or moved row and reports the first one ([`reader`] explains
//! precisely what the chain can and cannot prove on its own).
//!
//! # Design
//!
//! One SQLite connection, behind a mutex, does all writing ([`writer`] explains why). An
//! append queues its events and tries to take that mutex: the caller that gets it leads a
//! group commit of everything queued (serialise, hash, one transaction with a cached prepared
//! `INSERT`, commit, answer every waiter); the others wait for its answer. Detached appends
//! (result events) only queue, and ride along with the next group, or are committed by the
//! background thread within `sync_interval`. Readers (`portcullis audit tail`,
//! `portcullis audit verify`) open the file read-only, possibly from another process, and see
//! consistent snapshots without slowing the writer.
//!
//! Each transaction reads the chain head from the file (an O(log n) lookup) rather than
//! trusting memory, so a failed commit can never leave a hole or a fork behind, and even a
//! second process appending to the same file (a misconfiguration: one gateway per ledger)
//! only interleaves with the chain, it cannot split it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), portcullis_ledger::LedgerError> {
//! use portcullis_core::{EventData, NewEvent};
//! use portcullis_ledger::{Ledger, LedgerOptions, LedgerReader, VerifyReport};
//!
//! let ledger = Ledger::open(LedgerOptions::new("data/ledger.db"))?;
//! let ev = NewEvent::new("session-1", EventData::Cancel { client_addr: "10.0.0.7:5555".into(), matched: false });
//! let seq = ledger.append(vec![ev]).await?; // recorded: now the statement may be forwarded
//! ledger.close();
//!
//! let reader = LedgerReader::open("data/ledger.db".as_ref())?;
//! assert!(matches!(reader.verify(|_| {})?, VerifyReport::Verified { .. }));
//! # let _ = seq; Ok(()) }
//! ```

pub mod chain;
mod error;
pub mod reader;
mod schema;
pub mod writer;

pub use chain::event_hash;
pub use error::LedgerError;
pub use reader::{LedgerReader, Problem, StoredEvent, VerifyReport};
pub use writer::{Ledger, LedgerOptions, LedgerStats};
