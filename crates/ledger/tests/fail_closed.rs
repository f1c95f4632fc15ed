//! A store that refuses writes: appends fail, nothing is half-written, and service resumes
//! once the cause is gone, with the chain intact. And a SQLite index that refuses writes loses
//! nothing: the events wait in the journal.
//!
//! The journal is made unwritable for real with `chattr +i` (the immutable attribute stops
//! writes even through descriptors that are already open, and even for root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use portcullis_core::config::Durability;
use portcullis_ledger::{LedgerError, LedgerReader};

fn journals(db: &Path) -> [PathBuf; 2] {
    let s = db.display().to_string();
    [
        PathBuf::from(format!("{s}-journal-a")),
        PathBuf::from(format!("{s}-journal-b")),
    ]
}

fn chattr(flag: &str, db: &Path) {
    for j in journals(db) {
        let out = Command::new("chattr")
            .arg(flag)
            .arg(&j)
            .output()
            .expect("chattr (e2fsprogs) is needed: apt-get install -y e2fsprogs");
        assert!(
            out.status.success(),
            "chattr {flag} {}: {} (the tests need a filesystem with file attributes, e.g. ext4, and root)",
            j.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const BREAK_INDEX: &str = "CREATE TRIGGER refuse BEFORE INSERT ON events \
                           BEGIN SELECT RAISE(ABORT, 'injected failure'); END;";
const REPAIR_INDEX: &str = "DROP TRIGGER refuse;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_fails_every_waiter_and_service_resumes() {
    for durability in [Durability::Default, Durability::Strict] {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let ledger = open(&path, durability);
        fill(&ledger, 5).await;

        chattr("+i", &path);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                ledger
                    .append(vec![
                        statement("s", &format!("fail-{t}")),
                        statement("s", &format!("fail-{t}-b")),
                    ])
                    .await
            }));
        }
        for task in tasks {
            let err = task.await.unwrap().unwrap_err();
            assert!(matches!(err, LedgerError::Journal { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("fail closed"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        let stats = ledger.stats();
        assert_eq!(stats.failures, 16);
        assert_eq!(stats.last_seq, 5, "the head did not move");

        chattr("-i", &path);
        let first = ledger
            .append(vec![statement("s", "ok-1"), statement("s", "ok-2")])
            .await
            .expect("service resumes once the journal accepts writes");
        assert_eq!(first, 6, "no hole: the failed events took no seqs");
        ledger.close();

        assert_verified(&path, 7);
        let rows = LedgerReader::open(&path).unwrap().after(5, 10).unwrap();
        let markers: Vec<String> = rows.iter().map(marker).collect();
        assert_eq!(markers, ["ok-1", "ok-2"]);
    }
}

#[tokio::test]
async fn detached_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    chattr("+i", &path);
    ledger.append_detached(vec![statement("s", "a"), statement("s", "b")]);
    // An awaited append queued behind it fails too; once it answers, the detached one is done.
    assert!(ledger.append(vec![statement("s", "c")]).await.is_err());
    assert_eq!(ledger.stats().failures, 3);
    chattr("-i", &path);
    ledger.append_detached(vec![statement("s", "d")]);
    assert_eq!(ledger.append(vec![statement("s", "e")]).await.unwrap(), 2);
    ledger.close();
    assert_verified(&path, 2);
}

/// SQLite refusing the rows does not refuse statements: the events are safe in the journal,
/// indexing retries, and nothing is lost across a restart either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_index_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    fill(&ledger, 3).await;
    ledger.flush();
    tamper(&path, BREAK_INDEX);
    for i in 0..20 {
        ledger
            .append(vec![statement("s", &format!("kept-{i}"))])
            .await
            .expect("appends go on while indexing fails");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        LedgerReader::open(&path).unwrap().count().unwrap(),
        3,
        "not indexed while SQLite refuses"
    );
    tamper(&path, REPAIR_INDEX);
    ledger.flush();
    assert_verified(&path, 23);

    // Again, and this time the gateway stops while SQLite still refuses: reopening replays.
    tamper(&path, BREAK_INDEX);
    for i in 0..5 {
        ledger
            .append(vec![statement("s", &format!("late-{i}"))])
            .await
            .unwrap();
    }
    ledger.close();
    tamper(&path, REPAIR_INDEX);
    let reopened = open(&path, Durability::Default);
    assert_eq!(
        reopened
            .append(vec![statement("s", "after")])
            .await
            .unwrap(),
        29
    );
    reopened.close();
    assert_verified(&path, 29);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_reader_does_not_delay_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    fill(&ledger, 2).await;

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let appended = tokio::time::timeout(
        Duration::from_secs(2),
        ledger.append(vec![statement("s", "not delayed")]),
    )
    .await
    .expect("the append does not wait for the SQLite lock");
    assert_eq!(appended.unwrap(), 3);
    other.execute_batch("COMMIT").unwrap();
    ledger.close();
    assert_verified(&path, 3);
}
