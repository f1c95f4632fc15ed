//! Reading a target's catalog for classification (see `portcullis_policy::sql::catalog`).
//!
//! The gateway logs in to the target with the connection's own credentials (as it does for a
//! session) and reads, in one round trip: the user-defined functions (volatility, language,
//! kind, SECURITY DEFINER, owner, the body of SQL functions), the built-in functions'
//! volatility, the views' definitions and the user relations. One [`CatalogCache`] per
//! connection keeps the last reading for [`FRESH_FOR`], is read again at once after a
//! statement that changed the schema completed through the gateway, and stands in
//! PostgreSQL's built-in functions only ([`Catalog::builtin`]) when the catalog cannot be
//! read: every other function then needs `function_call` (fail closed).

use crate::error::PgError;
use crate::upstream::{read_message_upto, Target};
use crate::wire::{self, ErrorFields, Reader};
use bytes::BytesMut;
use portcullis_policy::sql::catalog::{Catalog, Function, Origin, View, Volatility};
use portcullis_policy::sql::qualify;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;

/// How long a reading is used before the catalog is read again (changes made to the target
/// other than through the gateway show up within this time).
pub const FRESH_FOR: Duration = Duration::from_secs(60);
/// After a failed reading, how long the fallback stands before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The whole reading must finish within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on what a target may send: one message, all messages, rows.
const MAX_MESSAGE: usize = 16 << 20;
const MAX_TOTAL: usize = 128 << 20;
const MAX_ROWS: usize = 1_000_000;

/// The catalog query: four result sets, in this order.
const QUERY: &str = "\
SELECT n.nspname, p.proname, p.provolatile, p.prosecdef, l.lanname, p.prokind::text, \
       pg_catalog.pg_get_userbyid(p.proowner), CASE WHEN l.lanname = 'sql' THEN p.prosrc END \
  FROM pg_catalog.pg_proc p \
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'); \
SELECT p.proname, max(p.provolatile::text) \
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
 WHERE n.nspname = 'pg_catalog' GROUP BY p.proname; \
SELECT n.nspname, c.relname, c.relkind::text, pg_catalog.pg_get_viewdef(c.oid) \
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema'); \
SELECT n.nspname, c.relname \
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

struct Reading {
    catalog: Arc<Catalog>,
    read_at: Instant,
    /// The value of `changes` the reading was started after.
    generation: u64,
    /// Whether it is the fallback of a failed reading (retried sooner).
    failed: bool,
}

/// The catalog of one connection, shared by its sessions.
pub struct CatalogCache {
    target: Arc<Target>,
    current: RwLock<Arc<Reading>>,
    /// Schema changes seen through the gateway (each makes the reading stale).
    changes: AtomicU64,
    refresh: tokio::sync::Mutex<()>,
}

impl CatalogCache {
    pub fn new(target: Arc<Target>) -> CatalogCache {
        CatalogCache {
            target,
            current: RwLock::new(Arc::new(Reading {
                catalog: Arc::new(Catalog::builtin("the catalog has not been read yet")),
                read_at: Instant::now(),
                generation: u64::MAX,
                failed: true,
            })),
            changes: AtomicU64::new(0),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn reading(&self) -> Arc<Reading> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn usable(&self, r: &Reading) -> bool {
        let ttl = if r.failed { RETRY_AFTER } else { FRESH_FOR };
        r.generation == self.changes.load(Ordering::Acquire) && r.read_at.elapsed() < ttl
    }

    /// The catalog to classify with: the last reading while it is fresh, else a new one (one
    /// reading at a time; sessions asking meanwhile wait for it).
    pub async fn get(&self) -> Arc<Catalog> {
        let r = self.reading();
        if self.usable(&r) {
            return r.catalog.clone();
        }
        let _one = self.refresh.lock().await;
        let r = self.reading();
        if self.usable(&r) {
            return r.catalog.clone();
        }
        let generation = self.changes.load(Ordering::Acquire);
        let (catalog, failed) = match tokio::time::timeout(READ_TIMEOUT, read(&self.target)).await {
            Ok(Ok(c)) => (c, false),
            Ok(Err(e)) => (
                Catalog::builtin(format!(
                    "reading the catalog of connection {:?} failed: {e}",
                    self.target.name
                )),
                true,
            ),
            Err(_) => (
                Catalog::builtin(format!(
                    "reading the catalog of connection {:?} took longer than {} s",
                    self.target.name,
                    READ_TIMEOUT.as_secs()
                )),
                true,
            ),
        };
        if failed {
            tracing::warn!(connection = %self.target.name, "{}", catalog.describe());
        }
        let catalog = Arc::new(catalog);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Reading {
            catalog: catalog.clone(),
            read_at: Instant::now(),
            generation,
            failed,
        });
        catalog
    }

    /// A statement changed the schema (it completed through the gateway): the next
    /// classification reads the catalog again.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }
}

/// Reads the catalog of `target` with its own credentials.
pub async fn read(target: &Target) -> Result<Catalog, PgError> {
    let mut up = target.connect(&[]).await?;
    let mut out = BytesMut::new();
    wire::put_message(&mut out, b'Q', |b| wire::put_cstr(b, QUERY));
    up.stream
        .write_all(&out)
        .await
        .map_err(PgError::upstream_io)?;
    up.stream.flush().await.map_err(PgError::upstream_io)?;
    let mut buf = std::mem::take(&mut up.leftover);
    let mut sets: Vec<Vec<Vec<Option<String>>>> = vec![Vec::new()];
    let (mut total, mut rows) = (0usize, 0usize);
    let mut error = None;
    loop {
        let (tag, body) =
            read_message_upto(&mut up.stream, &mut buf, MAX_MESSAGE, "reading the catalog").await?;
        total += body.len();
        if total > MAX_TOTAL {
            return Err(PgError::UpstreamProtocol(format!(
                "the catalog is larger than {} MiB",
                MAX_TOTAL >> 20
            )));
        }
        match tag {
            b'D' => {
                rows += 1;
                if rows > MAX_ROWS {
                    return Err(PgError::UpstreamProtocol(format!(
                        "the catalog has more than {MAX_ROWS} rows"
                    )));
                }
                let row = data_row(&body).ok_or_else(|| {
                    PgError::UpstreamProtocol("malformed DataRow in the catalog".into())
                })?;
                if let Some(set) = sets.last_mut() {
                    set.push(row);
                }
            }
            b'C' => sets.push(Vec::new()),
            b'E' => error = Some(ErrorFields::parse(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    let _ = up.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
    let _ = up.stream.shutdown().await;
    if let Some(e) = error {
        return Err(PgError::Upstream {
            connection: target.name.clone(),
            sqlstate: "XX000",
            message: format!(
                "the catalog query failed: {} (SQLSTATE {})",
                e.message, e.code
            ),
        });
    }
    // Each CommandComplete opened the next set: four results leave five.
    if sets.len() != 5 {
        return Err(PgError::UpstreamProtocol(format!(
            "the catalog query returned {} result sets, not 4",
            sets.len().saturating_sub(1)
        )));
    }
    let text = |row: &[Option<String>], i: usize| -> String {
        row.get(i).cloned().flatten().unwrap_or_default()
    };
    let functions = sets[0]
        .iter()
        .map(|r| Function {
            schema: text(r, 0),
            name: text(r, 1),
            volatility: Volatility::from_code(&text(r, 2)),
            security_definer: text(r, 3) == "t",
            language: text(r, 4),
            kind: text(r, 5).chars().next().unwrap_or('f'),
            owner: text(r, 6),
            body: r.get(7).cloned().flatten().filter(|b| !b.trim().is_empty()),
        })
        .collect();
    let builtins = sets[1]
        .iter()
        .map(|r| (text(r, 0), Volatility::from_code(&text(r, 1))));
    let views = sets[2]
        .iter()
        .map(|r| View {
            name: qualify(&text(r, 0), &text(r, 1)),
            definition: text(r, 3),
            materialized: text(r, 2) == "m",
        })
        .collect();
    let relations = sets[3]
        .iter()
        .map(|r| qualify(&text(r, 0), &text(r, 1)))
        .collect();
    Ok(Catalog::new(
        Origin::Target {
            connection: target.name.clone(),
            read_at: SystemTime::now(),
        },
        functions,
        builtins,
        views,
        relations,
    ))
}

fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let mut r = Reader::new(body);
    let n = r.i16()? as u16;
    let mut row = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.i32()?;
        row.push(if len < 0 {
            None
        } else {
            Some(String::from_utf8_lossy(r.bytes(len as usize)?).into_owned())
        });
    }
    Some(row)
}
