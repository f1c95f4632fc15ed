//! The append path: ordering, atomicity, reopening, durability modes, reading back.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use portcullis_core::config::Durability;
use portcullis_core::{EventData, NewEvent};
use portcullis_ledger::chain::GENESIS;
use portcullis_ledger::{event_hash, Ledger, LedgerError, LedgerOptions, LedgerReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_contiguous_and_each_call_is_consecutive() {
    const TASKS: usize = 16;
    const EVENTS_PER_TASK: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);

    let mut handles = Vec::new();
    for t in 0..TASKS {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            // Calls of 1 to 4 events, so that multi-event calls interleave with others.
            let mut calls = Vec::new();
            let mut i = 0;
            while i < EVENTS_PER_TASK {
                let len = (1 + (t + i) % 4).min(EVENTS_PER_TASK - i);
                let events: Vec<NewEvent> = (i..i + len)
                    .map(|k| statement(&format!("task-{t}"), &format!("t{t}-e{k}")))
                    .collect();
                let first = ledger.append(events).await.expect("append");
                calls.push((first, i, len));
                i += len;
            }
            (t, calls)
        }));
    }
    let mut all_calls = Vec::new();
    for h in handles {
        all_calls.push(h.await.unwrap());
    }
    let total = (TASKS * EVENTS_PER_TASK) as u64;
    let stats = ledger.stats();
    assert_eq!(stats.appended, total);
    assert_eq!(stats.last_seq, total);
    assert_eq!(stats.failures, 0);
    assert!(stats.commits >= 1 && stats.commits <= total);
    ledger.close();

    let reader = LedgerReader::open(&path).unwrap();
    let rows = reader.after(0, usize::MAX).unwrap();
    assert_eq!(rows.len() as u64, total);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.seq, i as u64 + 1, "seqs are contiguous from 1");
    }
    let mut seen_firsts = HashSet::new();
    for (t, calls) in all_calls {
        for (first, start, len) in calls {
            assert!(seen_firsts.insert(first), "two calls got first seq {first}");
            for k in 0..len {
                let row = &rows[(first - 1) as usize + k];
                assert_eq!(row.session_id, format!("task-{t}"));
                assert_eq!(marker(row), format!("t{t}-e{}", start + k));
            }
        }
    }
    assert_verified(&path, total);
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    fill(&ledger, 10).await;
    drop(ledger); // the last clone closes
    let head = assert_verified(&path, 10);

    let ledger = open(&path, Durability::Default);
    assert_eq!(ledger.stats().last_seq, 10);
    let first = ledger
        .append(vec![statement("s", "after-reopen")])
        .await
        .unwrap();
    assert_eq!(first, 11);
    ledger.close();

    let reader = LedgerReader::open(&path).unwrap();
    let row = &reader.after(10, 10).unwrap()[0];
    assert_eq!(row.seq, 11);
    assert_eq!(row.prev_hash, head, "the new event links to the old head");
    assert!(row.hash_matches());
    assert_verified(&path, 11);
}

#[tokio::test]
async fn stored_rows_follow_the_documented_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    let ev = statement("sess-9", "x");
    let expected_data = serde_json::to_string(&ev.data).unwrap();
    let ts = ev.ts_us;
    assert_eq!(ledger.append(vec![ev]).await.unwrap(), 1);
    ledger.close();

    let rows = LedgerReader::open(&path).unwrap().after(0, 10).unwrap();
    let row = &rows[0];
    assert_eq!(row.seq, 1);
    assert_eq!(row.ts_us, ts);
    assert_eq!(row.kind, "statement");
    assert_eq!(row.session_id, "sess-9");
    // Stored with its SQL text sealed; the reader opens it back to the event as appended.
    assert!(!row.data.contains("orders WHERE"), "{}", row.data);
    assert!(
        row.data.contains(r#""sealed":{"segment":"orders-prod/"#),
        "{}",
        row.data
    );
    assert_eq!(row.json(), expected_data);
    assert_eq!(row.prev_hash, GENESIS);
    assert_eq!(
        row.hash,
        event_hash(&GENESIS, 1, ts, "statement", "sess-9", &row.data)
    );
}

#[tokio::test]
async fn strict_mode_syncs_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Strict);
    fill(&ledger, 20).await;
    let stats = ledger.stats();
    assert_eq!(stats.appended, 20);
    assert!(stats.syncs > 0);
    assert_eq!(stats.syncs, stats.commits, "one fsync per group commit");
    ledger.close();
    assert_verified(&path, 20);
}

#[tokio::test]
async fn default_mode_syncs_after_the_interval_and_not_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = Ledger::open(LedgerOptions {
        path: path.clone(),
        durability: Durability::Default,
        sync_interval: Duration::from_millis(300),
        checkpoints: None,
        seal: true,
        postgres: None,
    })
    .unwrap();
    ledger
        .append(vec![statement("s", "a"), statement("s", "b")])
        .await
        .unwrap();
    assert_eq!(
        ledger.stats().syncs,
        0,
        "commits do not fsync in default mode"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ledger.stats().syncs == 0 {
        assert!(std::time::Instant::now() < deadline, "no sync within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let synced = ledger.stats().syncs;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ledger.stats().syncs, synced, "no syncs without commits");
    assert_eq!(ledger.stats().sync_failures, 0);
    ledger.close();
}

#[tokio::test]
async fn close_syncs_what_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = Ledger::open(LedgerOptions {
        path: path.clone(),
        durability: Durability::Default,
        sync_interval: Duration::from_secs(3600),
        checkpoints: None,
        seal: true,
        postgres: None,
    })
    .unwrap();
    ledger.append(vec![statement("s", "a")]).await.unwrap();
    assert_eq!(ledger.stats().syncs, 0);
    ledger.close();
    assert_eq!(ledger.stats().syncs, 1, "close does the final fsync");
}

#[tokio::test]
async fn detached_appends_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    let first = ledger.append(vec![statement("s", "stmt")]).await.unwrap();
    ledger.append_detached(vec![NewEvent::new(
        "s",
        EventData::Result {
            statement_seq: first,
            outcome: portcullis_core::Outcome::Ok,
            tags: vec!["SELECT 1".into()],
            rows: 1,
            sqlstate: None,
            message: None,
            duration_us: 120,
            sealed: None,
            masked: Default::default(),
        },
    )]);
    let next = ledger.append(vec![statement("s", "next")]).await.unwrap();
    assert_eq!(next, 3, "the detached result took seq 2");
    ledger.close();

    let rows = LedgerReader::open(&path).unwrap().after(0, 10).unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["statement", "result", "statement"]);
    match rows[1].parse().unwrap() {
        EventData::Result { statement_seq, .. } => assert_eq!(statement_seq, 1),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn close_is_idempotent_and_later_appends_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    let other = ledger.clone();
    ledger.append(vec![statement("s", "a")]).await.unwrap();
    // Queued detached events are still written by close.
    ledger.append_detached(vec![statement("s", "b"), statement("s", "c")]);
    ledger.close();
    ledger.close();
    other.close();
    let err = other
        .append(vec![statement("s", "late")])
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Closed { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    other.append_detached(vec![statement("s", "late")]);
    let stats = other.stats();
    assert_eq!(stats.appended, 3);
    assert_eq!(stats.failures, 2);
    assert_verified(&path, 3);
}

#[tokio::test]
async fn empty_append_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    assert_eq!(ledger.append(Vec::new()).await.unwrap(), 0);
    ledger.append_detached(Vec::new());
    assert_eq!(ledger.append(vec![statement("s", "a")]).await.unwrap(), 1);
    ledger.close();
    assert_verified(&path, 1);
}

#[tokio::test]
async fn reader_pages_tails_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    fill(&ledger, 25).await;

    // The reader works while the writer is open (once the events are indexed).
    ledger.flush();
    let reader = LedgerReader::open(&path).unwrap();
    assert_eq!(reader.count().unwrap(), 25);
    let page = reader.after(10, 5).unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    assert_eq!(marker(&page[0]), "m10");
    let tail = reader.last(3).unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [23, 24, 25]);
    assert_eq!(reader.last(100).unwrap().len(), 25);
    assert!(reader.after(25, 10).unwrap().is_empty());
    assert!(reader.after(u64::MAX, 10).unwrap().is_empty());

    // New events become visible to the same reader.
    ledger.append(vec![statement("s", "new")]).await.unwrap();
    ledger.flush();
    assert_eq!(reader.after(25, 10).unwrap().len(), 1);
    ledger.close();
    assert_eq!(reader.count().unwrap(), 26);
}

#[tokio::test]
async fn verify_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    // Large calls: one transaction each.
    for c in 0..20 {
        let events = (0..10_000)
            .map(|i| statement("bulk", &format!("c{c}-{i}")))
            .collect();
        ledger.append(events).await.unwrap();
    }
    ledger.flush();
    let progress_calls = || {
        let mut calls = Vec::new();
        let report = LedgerReader::open(&path)
            .unwrap()
            .verify(|n| calls.push(n))
            .unwrap();
        assert!(
            matches!(report, portcullis_ledger::VerifyReport::Verified { .. }),
            "{report:?}"
        );
        calls
    };
    assert_eq!(progress_calls(), [100_000, 200_000], "the final count once");
    fill(&ledger, 5).await;
    ledger.flush();
    assert_eq!(progress_calls(), [100_000, 200_000, 200_005]);
    ledger.close();
}

#[test]
fn empty_ledger_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    open(&path, Durability::Default).close();
    assert_eq!(assert_verified(&path, 0), GENESIS);
    assert!(LedgerReader::open(&path)
        .unwrap()
        .last(5)
        .unwrap()
        .is_empty());
}

#[test]
fn open_creates_parent_folders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/ledger.db");
    open(&path, Durability::Strict).close();
    assert!(path.exists());
}

#[test]
fn open_explains_an_impossible_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Ledger::open(LedgerOptions::new(file.join("ledger.db"))).unwrap_err();
    assert!(matches!(err, LedgerError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[test]
fn open_refuses_a_foreign_sqlite_file_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    open(&path, Durability::Default).close();
    tamper(
        &path,
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
    );
    let err = Ledger::open(LedgerOptions::new(&path)).unwrap_err();
    assert!(
        matches!(err, LedgerError::SchemaVersion { ref found, .. } if found == "99"),
        "{err:?}"
    );
    let err = LedgerReader::open(&path).unwrap_err();
    assert!(matches!(err, LedgerError::SchemaVersion { .. }), "{err:?}");
}

#[test]
fn reader_explains_a_missing_or_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.db");
    let err = LedgerReader::open(&path).unwrap_err();
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no ledger at") && msg.contains("nope.db"),
        "{msg}"
    );
    assert!(!path.exists(), "a reader never creates a file");

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = LedgerReader::open(&other).unwrap_err();
    assert!(matches!(err, LedgerError::NotALedger { .. }), "{err:?}");
}

#[test]
fn open_refuses_a_file_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::write(&path, vec![b'z'; 8192]).unwrap();
    let err = Ledger::open(LedgerOptions::new(&path)).unwrap_err();
    assert!(err.to_string().contains("ledger.db"), "{err}");
}

#[tokio::test]
async fn dropping_the_last_clone_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ledger = open(&path, Durability::Default);
    ledger.append_detached(vec![statement("s", "a")]);
    let clone = ledger.clone();
    drop(ledger);
    clone.append_detached(vec![statement("s", "b")]);
    drop(clone); // drains the queue and joins the writer
                 // After a clean close SQLite has checkpointed and removed the WAL.
    assert!(!dir.path().join("ledger.db-wal").exists());
    assert_verified(&path, 2);
}

#[tokio::test]
async fn a_second_writer_is_refused_at_open() {
    // One gateway per ledger: a second writer would fork the chain, so it cannot open it.
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let a = open(&path, Durability::Default);
    a.append(vec![statement("s", "0")]).await.unwrap();
    let second = Ledger::open(LedgerOptions::new(&path));
    let err = second.map(|_| ()).unwrap_err();
    assert!(matches!(err, LedgerError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("one gateway per ledger"), "{err}");
    a.close();
    // Once the first is closed, the ledger opens again and continues the chain.
    let b = open(&path, Durability::Strict);
    assert_eq!(b.append(vec![statement("s", "1")]).await.unwrap(), 2);
    b.close();
    assert_verified(&path, 2);
}
