//! Classifications of repeated statements.
//!
//! Agents and drivers send the same text again and again (prepared statements, ORM queries).
//! Parsing is the costly part of a decision, so classifications are kept by text, shared by
//! every session. The cache is bounded: when full, a quarter of it is dropped.

use crate::sql::{classify, Classification};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Statements longer than this are classified every time (they are rarely repeated and would
/// fill the cache).
const MAX_CACHED_TEXT: usize = 4096;

pub struct ClassificationCache {
    map: Mutex<HashMap<Arc<str>, Arc<Classification>>>,
    capacity: usize,
}

impl ClassificationCache {
    pub fn new(capacity: usize) -> Self {
        ClassificationCache {
            map: Mutex::new(HashMap::with_capacity(capacity.min(1 << 16))),
            capacity: capacity.max(1),
        }
    }

    /// The classification of `sql`, from the cache or freshly made.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        if sql.len() > MAX_CACHED_TEXT {
            return Arc::new(classify(sql));
        }
        if let Some(c) = self.lock().get(sql) {
            return c.clone();
        }
        let c = Arc::new(classify(sql));
        let mut map = self.lock();
        if map.len() >= self.capacity {
            let drop: Vec<Arc<str>> = map.keys().take(self.capacity / 4 + 1).cloned().collect();
            for k in drop {
                map.remove(&k);
            }
        }
        map.insert(sql.into(), c.clone());
        c
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Classification>>> {
        // A panic while holding the lock leaves a valid map: keep using it.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for ClassificationCache {
    fn default() -> Self {
        ClassificationCache::new(10_000)
    }
}
