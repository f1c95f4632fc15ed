//! A store that refuses writes: appends fail, nothing is half-written, and service resumes
//! once the cause is gone, with the chain intact.

mod common;

use std::time::Duration;

use common::*;
use portcullis_core::config::Durability;
use portcullis_ledger::{LedgerError, LedgerReader};

const BREAK: &str = "CREATE TRIGGER refuse BEFORE INSERT ON events \
                     BEGIN SELECT RAISE(ABORT, 'injected failure'); END;";
const REPAIR: &str = "DROP TRIGGER refuse;";

/// Fails the insert of one specific event only (the second of a multi-event call), to prove
/// the events before it in the same transaction are rolled back too.
const BREAK_ON_MARKER: &str = "CREATE TRIGGER refuse BEFORE INSERT ON events \
     WHEN NEW.data LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'injected failure'); END;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_fails_every_waiter_and_service_resumes() {
    for durability in [Durability::Default, Durability::Strict] {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let ledger = open(&path, durability);
        fill(&ledger, 5).await;

        tamper(&path, BREAK);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                ledger
                    .append(vec![statement("s", &format!("fail-{t}"))])
                    .await
            }));
        }
        for task in tasks {
            let err = task.await.unwrap().unwrap_err();
            assert!(matches!(err, LedgerError::Write { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("injected failure") && msg.contains("fail closed"),
                "{msg}"
            );
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        let stats = ledger.stats();
        assert_eq!(stats.failures, 8);
        assert_eq!(stats.last_seq, 5, "the head did not move");

        tamper(&path, REPAIR);
        let first = ledger
            .append(vec![statement("s", "ok-1"), statement("s", "ok-2")])
            .await
            .expect("service resumes once the store accepts writes");
        assert_eq!(first, 6, "no hole: the failed events took no seqs");
        ledger.close();

        assert_verified(&path, 7);
        let rows = LedgerReader::open(&path).unwrap().after(5, 10).unwrap();
        let markers: Vec<String> = rows.iter().map(marker).collect();
        assert_eq!(markers, ["ok-1", "ok-2"]);
    }
}

#[tokio::test]
async fn a_failing_event_rolls_back_its_whole_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    fill(&ledger, 3).await;
    tamper(&path, BREAK_ON_MARKER);
    let err = ledger
        .append(vec![
            statement("s", "fine"),
            statement("s", "poison"),
            statement("s", "fine-too"),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::Write { events: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        LedgerReader::open(&path).unwrap().count().unwrap(),
        3,
        "nothing of the failed call was written"
    );
    assert_eq!(
        ledger.append(vec![statement("s", "next")]).await.unwrap(),
        4
    );
    ledger.close();
    assert_verified(&path, 4);
}

#[tokio::test]
async fn detached_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    tamper(&path, BREAK);
    ledger.append_detached(vec![statement("s", "a"), statement("s", "b")]);
    // An awaited append queued behind it fails too; once it answers, the detached one is done.
    assert!(ledger.append(vec![statement("s", "c")]).await.is_err());
    assert_eq!(ledger.stats().failures, 3);
    tamper(&path, REPAIR);
    ledger.append_detached(vec![statement("s", "d")]);
    assert_eq!(ledger.append(vec![statement("s", "e")]).await.unwrap(), 2);
    ledger.close();
    assert_verified(&path, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_process_delays_but_does_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    fill(&ledger, 2).await;

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let pending = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.append(vec![statement("s", "waited")]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the append waits for the lock");
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(pending.await.unwrap().unwrap(), 3);
    ledger.close();
    assert_verified(&path, 3);
}
