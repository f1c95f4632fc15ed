//! Verification against a ledger altered behind the gateway's back, through a separate SQLite
//! connection on the file.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use portcullis_core::config::Durability;
use portcullis_ledger::{event_hash, LedgerReader, Problem, StoredEvent, VerifyReport};

const N: u64 = 20;

/// A closed, verified ledger of `N` events.
fn ledger(dir: &tempfile::TempDir) -> PathBuf {
    let path = db_path(dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ledger = open(&path, Durability::Default);
    rt.block_on(fill(&ledger, N as usize));
    ledger.close();
    assert_verified(&path, N);
    path
}

fn broken(path: &Path) -> (u64, Problem, String) {
    match verify(path) {
        VerifyReport::Broken {
            seq,
            problem,
            detail,
        } => (seq, problem, detail),
        other => panic!("tampering went unnoticed: {other:?}"),
    }
}

fn row(path: &Path, seq: u64) -> StoredEvent {
    LedgerReader::open(path).unwrap().after(seq - 1, 1).unwrap()[0].clone()
}

/// Overwrites every column but `seq` of row `seq` with `ev`'s values.
fn overwrite(path: &Path, seq: u64, ev: &StoredEvent) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "UPDATE events SET ts_us = ?1, session_id = ?2, kind = ?3, data = ?4, prev_hash = ?5, \
         hash = ?6 WHERE seq = ?7",
        (
            ev.ts_us,
            &ev.session_id,
            &ev.kind,
            &ev.data,
            &ev.prev_hash[..],
            &ev.hash[..],
            seq,
        ),
    )
    .unwrap();
}

fn swap(path: &Path, a: u64, b: u64) {
    let (ra, rb) = (row(path, a), row(path, b));
    overwrite(path, a, &rb);
    overwrite(path, b, &ra);
}

#[test]
fn updated_data_is_altered_at_that_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    tamper(
        &path,
        "UPDATE events SET data = replace(data, 'orders-prod', 'orders-test') WHERE seq = 7",
    );
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (7, Problem::Altered), "{detail}");
    assert!(detail.contains("row 7 was altered"), "{detail}");
}

#[test]
fn changed_ts_kind_or_session_is_altered() {
    for (column, sql) in [
        ("ts_us", "UPDATE events SET ts_us = ts_us + 1 WHERE seq = 5"),
        ("kind", "UPDATE events SET kind = 'result' WHERE seq = 5"),
        (
            "session_id",
            "UPDATE events SET session_id = 'other' WHERE seq = 5",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger(&dir);
        tamper(&path, sql);
        let (seq, problem, detail) = broken(&path);
        assert_eq!((seq, problem), (5, Problem::Altered), "{column}: {detail}");
    }
}

#[test]
fn changed_hash_or_prev_hash_is_altered() {
    for sql in [
        "UPDATE events SET hash = zeroblob(32) WHERE seq = 9",
        "UPDATE events SET prev_hash = zeroblob(32) WHERE seq = 9",
        "UPDATE events SET hash = x'00' WHERE seq = 9",
        "UPDATE events SET data = CAST(data AS BLOB) WHERE seq = 9",
        "UPDATE events SET ts_us = 'noon' WHERE seq = 9",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger(&dir);
        tamper(&path, sql);
        let (seq, problem, detail) = broken(&path);
        assert_eq!((seq, problem), (9, Problem::Altered), "{sql}: {detail}");
    }
}

#[test]
fn deleted_row_is_missing_at_that_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    tamper(&path, "DELETE FROM events WHERE seq = 12");
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (12, Problem::Missing), "{detail}");
    assert!(detail.contains("event 12 is missing"), "{detail}");

    tamper(&path, "DELETE FROM events WHERE seq IN (13, 14)");
    let (_, _, detail) = broken(&path);
    assert!(detail.contains("events 12 to 14 are missing"), "{detail}");
}

#[test]
fn ledger_not_starting_at_one_is_missing_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    tamper(&path, "DELETE FROM events WHERE seq <= 3");
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (1, Problem::Missing), "{detail}");
    assert!(detail.contains("starts at seq 4"), "{detail}");
}

#[test]
fn renumbered_row_is_missing_at_its_old_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    tamper(&path, "UPDATE events SET seq = 100 WHERE seq = 6");
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (6, Problem::Missing), "{detail}");
}

#[test]
fn row_with_seq_zero_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    tamper(
        &path,
        "INSERT INTO events SELECT 0, ts_us, session_id, kind, data, prev_hash, hash \
         FROM events WHERE seq = 1",
    );
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (0, Problem::Altered), "{detail}");
}

#[test]
fn swapped_rows_are_reordered_at_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    swap(&path, 4, 15);
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (4, Problem::Reordered), "{detail}");
    assert!(detail.contains("recorded as seq 15"), "{detail}");
}

#[test]
fn swapped_neighbours_are_reordered_at_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    swap(&path, 8, 9);
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (8, Problem::Reordered), "{detail}");
    assert!(detail.contains("recorded as seq 9"), "{detail}");
}

#[test]
fn swapped_first_and_last_rows_are_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    swap(&path, 1, N);
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (1, Problem::Reordered), "{detail}");

    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    swap(&path, N - 1, N);
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (N - 1, Problem::Reordered), "{detail}");
}

#[test]
fn copied_row_is_reordered() {
    // Row 3 duplicated over row 10: the copy is an intact event 3 in the wrong place.
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    let r3 = row(&path, 3);
    overwrite(&path, 10, &r3);
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (10, Problem::Reordered), "{detail}");
    assert!(detail.contains("recorded as seq 3"), "{detail}");
}

#[test]
fn rewritten_and_rehashed_row_breaks_the_link_to_the_next() {
    // The attacker edits row 6 and recomputes its hash (anyone can: SHA-256 has no key), but
    // does not rewrite every later row: row 7 no longer follows row 6.
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    let mut r6 = row(&path, 6);
    r6.data = r6.data.replace("orders-prod", "orders-test");
    r6.hash = event_hash(
        &r6.prev_hash,
        6,
        r6.ts_us,
        &r6.kind,
        &r6.session_id,
        &r6.data,
    );
    assert!(r6.hash_matches());
    overwrite(&path, 6, &r6);
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (7, Problem::Reordered), "{detail}");
    assert!(detail.contains("does not follow row 6"), "{detail}");
}

#[test]
fn forged_row_at_the_end_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    // Self-consistent, but chained to nothing in this ledger.
    let mut forged = row(&path, N);
    forged.seq = N + 1;
    forged.prev_hash = [9; 32];
    forged.hash = event_hash(
        &forged.prev_hash,
        forged.seq,
        forged.ts_us,
        &forged.kind,
        &forged.session_id,
        &forged.data,
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO events (seq, ts_us, session_id, kind, data, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        (
            forged.seq,
            forged.ts_us,
            &forged.session_id,
            &forged.kind,
            &forged.data,
            &forged.prev_hash[..],
            &forged.hash[..],
        ),
    )
    .unwrap();
    drop(conn);
    let (seq, problem, detail) = broken(&path);
    assert_eq!((seq, problem), (N + 1, Problem::Reordered), "{detail}");
}

#[test]
fn first_problem_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    tamper(
        &path,
        "UPDATE events SET data = data || ' ' WHERE seq = 15; DELETE FROM events WHERE seq = 4",
    );
    let (seq, problem, _) = broken(&path);
    assert_eq!((seq, problem), (4, Problem::Missing));
}

#[test]
fn truncated_tail_verifies_with_a_different_head() {
    // The documented limit of a bare chain: a cut at the end is only visible against a head
    // recorded elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    let head = assert_verified(&path, N);
    tamper(&path, &format!("DELETE FROM events WHERE seq > {}", N - 2));
    let cut = assert_verified(&path, N - 2);
    assert_ne!(head, cut);
    assert_eq!(cut, row(&path, N - 2).hash);
}

#[test]
fn malformed_rows_are_clear_errors_for_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(&dir);
    tamper(&path, "UPDATE events SET hash = x'0102' WHERE seq = 2");
    let err = LedgerReader::open(&path).unwrap().after(0, 10).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("seq 2") && msg.contains("audit verify"),
        "{msg}"
    );

    tamper(&path, "UPDATE events SET data = '{not json' WHERE seq = 3");
    let r3 = row(&path, 3);
    let err = r3.parse().unwrap_err();
    assert!(err.to_string().contains("seq 3"), "{err}");
}
