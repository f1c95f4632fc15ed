//! Cancel keys. A client gets the gateway's own (pid, secret), never the target's; a
//! CancelRequest carrying it is mapped to the target's key and sent upstream.

use crate::upstream::Target;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct CancelTarget {
    pub target: Arc<Target>,
    pub pid: i32,
    pub secret: i32,
}

#[derive(Default, Clone)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<(i32, i32), CancelTarget>>>,
}

/// Removes the key when the session ends.
pub struct CancelGuard {
    registry: CancelRegistry,
    pub key: (i32, i32),
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.inner.lock() {
            map.remove(&self.key);
        }
    }
}

impl CancelRegistry {
    /// Issues a fresh client-facing key for a session's target key.
    pub fn register(&self, target: CancelTarget) -> CancelGuard {
        let mut rng = rand::thread_rng();
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = loop {
            let key = (rng.gen_range(1..i32::MAX), rng.gen::<i32>());
            if !map.contains_key(&key) {
                break key;
            }
        };
        map.insert(key, target);
        CancelGuard {
            registry: self.clone(),
            key,
        }
    }

    pub fn lookup(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let map = match self.inner.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(&(pid, secret)).cloned()
    }
}
