//! Task grants in force: who let which agent act where, why, until when — and revocation.
//!
//! The ledger is the grants' store: every grant is a `grant_created` event and every
//! revocation a `grant_revoked` event, so the gateway rebuilds this book from the ledger at
//! start ([`GrantBook::replay`]) and a grant's history is evidence like everything else.
//! Each session opened with a grant watches it; revoking flips the watch and the session ends
//! at once.

use std::collections::HashMap;
use std::sync::Mutex;

use portcullis_core::GrantRecord;
use tokio::sync::watch;

use crate::IdentityError;

struct Entry {
    record: GrantRecord,
    revoked: Option<(String, i64)>,
    tx: watch::Sender<bool>,
}

/// A grant as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrantStatus {
    #[serde(flatten)]
    pub record: GrantRecord,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// Sessions open under it now.
    pub live_sessions: usize,
}

#[derive(Default)]
pub struct GrantBook {
    entries: Mutex<HashMap<String, Entry>>,
}

fn refused(reason: impl Into<String>) -> IdentityError {
    IdentityError::GrantRefused {
        reason: reason.into(),
    }
}

impl GrantBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a grant (a new one, or one replayed from the ledger).
    pub fn insert(&self, record: GrantRecord) {
        let (tx, _) = watch::channel(false);
        self.lock().insert(
            record.id.clone(),
            Entry {
                record,
                revoked: None,
                tx,
            },
        );
    }

    /// Rebuilds state from the ledger's grant events, in order.
    pub fn replay_revoked(&self, id: &str, by: &str, at: i64) {
        if let Some(e) = self.lock().get_mut(id) {
            e.revoked = Some((by.to_string(), at));
            let _ = e.tx.send(true);
        }
    }

    /// Revokes a grant: later logins with it fail and every session watching it ends.
    /// Returns the grant and how many sessions were told to end.
    pub fn revoke(
        &self,
        id: &str,
        by: &str,
        now: i64,
    ) -> Result<(GrantRecord, usize), IdentityError> {
        let mut all = self.lock();
        let e = all.get_mut(id).ok_or_else(|| {
            refused(format!(
                "no grant {id:?}; `portcullis grant list` shows them"
            ))
        })?;
        if let Some((who, _)) = &e.revoked {
            return Err(refused(format!("grant {id} was already revoked by {who}")));
        }
        e.revoked = Some((by.to_string(), now));
        let sessions = e.tx.receiver_count();
        let _ = e.tx.send(true);
        Ok((e.record.clone(), sessions))
    }

    /// The grant, if it may be used now.
    pub fn check(&self, id: &str, now: i64) -> Result<GrantRecord, IdentityError> {
        let all = self.lock();
        let e = all
            .get(id)
            .ok_or_else(|| refused(format!("grant {id} is unknown to this gateway")))?;
        if let Some((by, _)) = &e.revoked {
            return Err(refused(format!("grant {id} was revoked by {by}")));
        }
        if now >= e.record.expires_at {
            return Err(refused(format!(
                "grant {id} expired at {}",
                crate::jwt::show_time(e.record.expires_at)
            )));
        }
        Ok(e.record.clone())
    }

    /// A watch that turns true when the grant is revoked (None if unknown).
    pub fn watch(&self, id: &str) -> Option<watch::Receiver<bool>> {
        self.lock().get(id).map(|e| e.tx.subscribe())
    }

    /// Every grant, newest first.
    pub fn list(&self, now: i64) -> Vec<GrantStatus> {
        let mut v: Vec<GrantStatus> = self
            .lock()
            .values()
            .map(|e| GrantStatus {
                record: e.record.clone(),
                state: if e.revoked.is_some() {
                    "revoked"
                } else if now >= e.record.expires_at {
                    "expired"
                } else {
                    "active"
                }
                .into(),
                revoked_by: e.revoked.as_ref().map(|r| r.0.clone()),
                revoked_at: e.revoked.as_ref().map(|r| r.1),
                live_sessions: e.tx.receiver_count(),
            })
            .collect();
        v.sort_by_key(|g| std::cmp::Reverse(g.record.created_at));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_reaches_watchers_and_blocks_use() {
        let book = GrantBook::default();
        book.insert(GrantRecord {
            id: "g1".into(),
            agent: "a".into(),
            expires_at: 100,
            ..Default::default()
        });
        assert!(book.check("g1", 50).is_ok());
        assert!(book
            .check("g1", 100)
            .unwrap_err()
            .to_string()
            .contains("expired"));
        let w = book.watch("g1").expect("known");
        assert!(!*w.borrow());
        let (_, sessions) = book.revoke("g1", "alice", 60).expect("revoked");
        assert_eq!(sessions, 1);
        assert!(*w.borrow());
        assert!(book
            .check("g1", 50)
            .unwrap_err()
            .to_string()
            .contains("revoked by alice"));
        assert!(book.revoke("g1", "bob", 61).is_err(), "twice");
        assert!(book.revoke("nope", "bob", 61).is_err());
        assert_eq!(book.list(70)[0].state, "revoked");
    }
}
