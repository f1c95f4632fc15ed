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
//! **Fail closed.** An append is acknowledged only once its events are in the journal (below).
//! If the journal cannot take a group (disk full, I/O error, an immutable file), a partial
//! record is cut off, the chain head does not move, and *every* submitter of that group gets
//! an `Err`: the gateway then refuses the statements. The next append tries again, so service
//! resumes by itself once the cause is gone, and the chain continues without a hole or a fork.
//! If SQLite refuses the rows, nothing is refused and nothing is lost: they stay in the
//! journal and indexing retries (appends are refused only if it falls 250 000 events
//! behind).
//!
//! **Durability** (`store.durability` in the configuration):
//!
//! * [`Durability::Default`](portcullis_core::config::Durability::Default): when `append`
//!   resolves, the group's records have been `write()`n to the journal file, i.e. they are in
//!   the operating system's page cache. A crashed or `SIGKILL`ed gateway therefore loses
//!   **nothing** it acknowledged: the next open (of the ledger, or of a reader when no gateway
//!   holds it) replays the journal into SQLite. A background thread `fsync`s the journal every
//!   `sync_interval` when there were writes since the last sync (and not at all while idle). A
//!   **power loss or kernel crash** can lose events acknowledged during the last
//!   `sync_interval`; it cannot corrupt the chain: replay stops at the first record that does
//!   not continue it.
//! * [`Durability::Strict`](portcullis_core::config::Durability::Strict): every group is
//!   `fdatasync`ed before `append` resolves, so an acknowledged event survives a power loss too.
//!   Because appends are grouped, all sessions that append while one fsync is in flight share
//!   the next one: the cost is one fsync per group, not per statement.
//!
//! SQLite (WAL mode, `synchronous=FULL`) receives the rows from the journal in one
//! transaction per `sync_interval`; a journal file is emptied only after that transaction is
//! synced. Readers therefore see an event within about one interval.
//!
//! **Tamper evidence.** Each event carries the SHA-256 hash of its content and of its
//! predecessor's hash ([`chain`] documents the exact bytes). [`LedgerReader::verify`] finds a
//! changed, deleted, inserted or moved row and reports the first one ([`reader`] explains
//! precisely what the chain can and cannot prove on its own).
//!
//! # Design
//!
//! See [`writer`]: the caller that finds the writer free leads a group commit of everything
//! queued (serialise, hash with the chain head kept in memory, one `write()` of the records to
//! the journal); a background thread indexes the journal into SQLite in large batches. One
//! process writes a ledger (an `flock` refuses a second). Readers (`portcullis audit tail`,
//! `portcullis audit verify`) open the SQLite file read-only, possibly from another process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), portcullis_ledger::LedgerError> {
//! use portcullis_core::{EventData, NewEvent};
//! use portcullis_ledger::{Ledger, LedgerOptions, LedgerReader, VerifyReport};
//!
//! let ledger = Ledger::open(LedgerOptions::new("data/ledger.db"))?;
//! let ev = NewEvent::new("session-1", EventData::Cancel { client_addr: "10.0.0.7:5555".into(), matched: false });
//! let seq = ledger.append(vec![ev]).await?; // recorded: now the statement may be forwarded
//! ledger.close(); // indexes what is left into SQLite
//!
//! let reader = LedgerReader::open("data/ledger.db".as_ref())?;
//! assert!(matches!(reader.verify(|_| {})?, VerifyReport::Verified { .. }));
//! # let _ = seq; Ok(()) }
//! ```

pub mod blob;
pub mod chain;
pub mod checkpoint;
mod error;
pub mod merkle;
pub mod pg;
pub mod reader;
pub mod recording;
pub mod retention;
mod schema;
pub mod seal;
pub mod writer;

pub use chain::event_hash;
pub use checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifier};
pub use error::LedgerError;
pub use reader::{
    CheckpointSummary, InclusionProof, LedgerReader, Problem, StoredCheckpoint, StoredEvent,
    VerifyOptions, VerifyReport,
};
pub use writer::{CheckpointOptions, Ledger, LedgerOptions, LedgerStats};
