//! The PostgreSQL store: one ledger shared by several gateways behind a load balancer.
//!
//! The tables mirror the SQLite file's (same columns, same hashes, same checkpoints), in the
//! schema `portcullis` of the database named by `store.url`:
//!
//! ```text
//! portcullis.meta          schema version, hash-chain format, the checkpoint verifier key
//! portcullis.head          one row: the chain head (seq, hash) — the lock that orders writers
//! portcullis.events        seq, ts_us, session_id, kind, data, prev_hash, hash
//! portcullis.checkpoints   tree_size, ts_us, root, note, frontier
//! portcullis.segment_keys  the sealing keys (see crate::seal)
//! ```
//!
//! **Ordering under concurrent writers.** Each gateway commits its queued appends as one
//! transaction (group commit, [`writer`]). The transaction first locks the `head` row
//! (`SELECT … FOR UPDATE`), so transactions of all gateways take turns: each reads the head
//! the previous one committed, numbers and hashes its events after it, inserts them and moves
//! the head, all or nothing. Sequence numbers therefore run 1, 2, 3, … without gaps across
//! every gateway, and the chain is one chain. The lock is held for two round trips and the
//! commit; the serialisation and sealing of events happen before it is taken.
//!
//! **Durability.** `durability = "default"` commits with `synchronous_commit = off`: an
//! acknowledged event survives a crash or `SIGKILL` of any gateway (the server has it), and
//! a crash of the *database server* can lose the last few hundred milliseconds of commits
//! (never a part of one: the chain stays whole). `durability = "strict"` waits for the server's
//! WAL flush (and for synchronous replicas, if the server has them) before acknowledging.
//!
//! **Checkpoints.** Any gateway may sign one; they take turns under an advisory lock and
//! extend the tree state stored with the last checkpoint. All gateways of one store must sign
//! with the same key: the first one records its verifier key in `meta`, and a gateway with
//! another key refuses to start.
//!
//! **Migrations** run at open, in one transaction under an advisory lock, so gateways starting
//! together do not race; a store written by a newer schema version is refused.

pub(crate) mod writer;

use std::path::PathBuf;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::chain::GENESIS;
use crate::error::LedgerError;
use crate::schema::{HASH_CHAIN, SCHEMA_VERSION};

/// Advisory lock keys (arbitrary constants, "portcullis" in spirit).
pub(crate) const MIGRATE_LOCK: i64 = 0x7063_6c5f_6d69_6772; // "pcl_migr"
pub(crate) const CHECKPOINT_LOCK: i64 = 0x7063_6c5f_6368_6b70; // "pcl_chkp"

/// How long a connection attempt may take before the store counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const CREATE: &str = "
CREATE SCHEMA IF NOT EXISTS portcullis;
CREATE TABLE IF NOT EXISTS portcullis.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS portcullis.head (
    id integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    hash bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS portcullis.events (
    seq bigint PRIMARY KEY,
    ts_us bigint NOT NULL,
    session_id text NOT NULL,
    kind text NOT NULL,
    data text NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS portcullis.checkpoints (
    tree_size bigint PRIMARY KEY,
    ts_us bigint NOT NULL,
    root bytea NOT NULL,
    note text NOT NULL,
    frontier bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS portcullis.segment_keys (
    segment text PRIMARY KEY,
    connection text NOT NULL,
    day text NOT NULL,
    created_us bigint NOT NULL,
    key bytea,
    deleted_us bigint,
    deleted_rule text
);
";

/// The store's name in messages: the URL without its password.
pub fn display_name(url: &str) -> PathBuf {
    let shown = match url.parse::<postgres::Config>() {
        Ok(cfg) => {
            let host = cfg
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = cfg.get_ports().first().copied().unwrap_or(5432);
            format!(
                "postgres://{}@{host}:{port}/{}",
                cfg.get_user().unwrap_or(""),
                cfg.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "postgres://(unparseable url)".into(),
    };
    PathBuf::from(shown)
}

/// A connection to the store that reconnects when it was lost: a statement refused because
/// the database was away does not keep the next one from succeeding once it is back.
pub(crate) struct Conn {
    config: postgres::Config,
    pub(crate) name: PathBuf,
    client: Option<Client>,
    /// Connections made so far (prepared statements belong to one).
    generation: u64,
    /// Run on every new connection (session settings).
    session: Option<String>,
}

impl Conn {
    /// Parses `url` and connects once (so a wrong URL or password stops the gateway at start).
    pub(crate) fn open(url: &str) -> Result<Conn, LedgerError> {
        let name = display_name(url);
        let mut config: postgres::Config =
            url.parse()
                .map_err(|e: postgres::Error| LedgerError::Store {
                    path: name.clone(),
                    detail: format!(
                        "store.url is not a PostgreSQL connection URL ({e}); write it as \
                     postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                    ),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("portcullis-ledger");
        let mut conn = Conn {
            config,
            name,
            client: None,
            generation: 0,
            session: None,
        };
        conn.client()?;
        Ok(conn)
    }

    /// The live client, reconnecting first if the last one was lost.
    pub(crate) fn client(&mut self) -> Result<&mut Client, LedgerError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut client = self
                .config
                .connect(NoTls)
                .map_err(|e| LedgerError::postgres(&self.name, "connecting", e))?;
            if let Some(sql) = &self.session {
                client
                    .batch_execute(sql)
                    .map_err(|e| LedgerError::postgres(&self.name, "setting up the session", e))?;
            }
            self.generation += 1;
            self.client = Some(client);
        }
        // Just set above when it was None.
        self.client.as_mut().ok_or_else(|| LedgerError::Store {
            path: self.name.clone(),
            detail: "no connection".into(),
        })
    }

    /// Which connection `client()` hands out (changes at every reconnect).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Session settings for this and every later connection (the current one reconnects).
    pub(crate) fn set_session(&mut self, sql: String) {
        self.session = Some(sql);
        self.client = None;
    }

    /// Forgets the client after an error that may have left it unusable (the next call
    /// reconnects). Cheap when the connection was fine: only one reconnect.
    pub(crate) fn reset(&mut self) {
        self.client = None;
    }
}

impl Drop for Conn {
    /// Closing the blocking client blocks too: on an async runtime's thread, hand it to a
    /// thread of its own (the client would panic there).
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("ledger-pg-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

/// Creates or upgrades the tables (under an advisory lock: gateways starting together wait
/// for each other) and refuses a store of another schema version or hash-chain format.
pub(crate) fn migrate(conn: &mut Conn) -> Result<(), LedgerError> {
    let name = conn.name.clone();
    let err = |e| LedgerError::postgres(&name, "creating the ledger tables", e);
    let client = conn.client()?;
    let mut tx = client.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .map_err(err)?;
    tx.batch_execute(CREATE).map_err(err)?;
    tx.execute(
        "INSERT INTO portcullis.head (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING",
        &[&&GENESIS[..]],
    )
    .map_err(err)?;
    tx.execute(
        "INSERT INTO portcullis.meta (key, value) VALUES ('schema_version', $1), ('hash_chain', $2) \
         ON CONFLICT (key) DO NOTHING",
        &[&SCHEMA_VERSION.to_string(), &HASH_CHAIN],
    )
    .map_err(err)?;
    check_meta(&mut tx, &name)?;
    tx.commit().map_err(err)?;
    Ok(())
}

/// Refuses a store of another schema version or chain format (readers call this too).
pub(crate) fn check_meta(
    client: &mut impl postgres::GenericClient,
    name: &std::path::Path,
) -> Result<(), LedgerError> {
    let err = |e| LedgerError::postgres(name, "reading the store's schema version", e);
    let rows = client
        .query(
            "SELECT key, value FROM portcullis.meta WHERE key IN ('schema_version', 'hash_chain')",
            &[],
        )
        .map_err(err)?;
    for row in rows {
        let key: String = row.try_get(0).map_err(err)?;
        let value: String = row.try_get(1).map_err(err)?;
        match key.as_str() {
            "schema_version" if value != SCHEMA_VERSION.to_string() => {
                return Err(LedgerError::SchemaVersion {
                    path: name.to_path_buf(),
                    found: value,
                    supported: SCHEMA_VERSION,
                })
            }
            "hash_chain" if value != HASH_CHAIN => {
                return Err(LedgerError::Store {
                    path: name.to_path_buf(),
                    detail: format!(
                        "the store's hash chain format is {value:?}, this build writes \
                         {HASH_CHAIN:?}; use a portcullis release that matches the store"
                    ),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the store has the ledger tables at all (readers: "has a gateway run here?").
pub(crate) fn has_tables(client: &mut Client, name: &std::path::Path) -> Result<bool, LedgerError> {
    client
        .query_one("SELECT to_regclass('portcullis.events') IS NOT NULL", &[])
        .and_then(|r| r.try_get::<_, bool>(0))
        .map_err(|e| LedgerError::postgres(name, "looking for the ledger tables", e))
}
