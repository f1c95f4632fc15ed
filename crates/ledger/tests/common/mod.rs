//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_core::config::Durability;
use portcullis_core::{EventData, NewEvent, Principal};
use portcullis_ledger::{Ledger, LedgerOptions, LedgerReader, StoredEvent, VerifyReport};

/// A statement event whose SQL text carries `marker`, so tests can tell events apart.
pub fn statement(session: &str, marker: &str) -> NewEvent {
    NewEvent::new(
        session,
        EventData::Statement {
            principal: Principal {
                agent: "etl-agent".into(),
                auth_method: "scram-sha-256".into(),
                identity: None,
            },
            client_addr: "10.1.2.3:50000".into(),
            connection: "orders-prod".into(),
            protocol: "postgres".into(),
            text: format!("SELECT * FROM orders WHERE id = 42 /* {marker} */"),
            mode: "simple".into(),
            statement_name: None,
            params: Vec::new(),
            verdict: "allow".into(),
            reason: None,
            decision: None,
            sealed: None,
            masked: Default::default(),
        },
    )
}

/// The marker of a statement event written by [`statement`].
pub fn marker(ev: &StoredEvent) -> String {
    match ev.parse().expect("stored event parses") {
        EventData::Statement { text, .. } => {
            let start = text.find("/* ").expect("marker start") + 3;
            let end = text.find(" */").expect("marker end");
            text[start..end].to_string()
        }
        other => panic!("not a statement: {other:?}"),
    }
}

pub fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("ledger.db")
}

pub fn open(path: &Path, durability: Durability) -> Ledger {
    Ledger::open(LedgerOptions {
        path: path.to_path_buf(),
        durability,
        sync_interval: Duration::from_millis(5),
        checkpoints: None,
        seal: true,
        postgres: None,
    })
    .expect("ledger opens")
}

/// Appends `n` events one call at a time, markers `m0..m{n-1}`.
pub async fn fill(ledger: &Ledger, n: usize) {
    for i in 0..n {
        ledger
            .append(vec![statement("fill", &format!("m{i}"))])
            .await
            .expect("append");
    }
}

pub fn verify(path: &Path) -> VerifyReport {
    LedgerReader::open(path)
        .expect("reader opens")
        .verify(|_| {})
        .expect("verify runs")
}

pub fn assert_verified(path: &Path, events: u64) -> [u8; 32] {
    match verify(path) {
        VerifyReport::Verified {
            events: n, head, ..
        } => {
            assert_eq!(n, events, "verified event count");
            head
        }
        other => panic!("expected a verified ledger of {events} events, got {other:?}"),
    }
}

/// Runs SQL on the file through a separate connection (the "attacker").
pub fn tamper(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).expect("tamper connection");
    conn.execute_batch(sql).expect("tamper SQL");
}
