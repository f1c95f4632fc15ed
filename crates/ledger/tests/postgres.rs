//! The PostgreSQL store: several writers on one store make one verifying chain; tampering,
//! truncation and key mismatches are caught; an outage refuses appends and service resumes
//! when the database is back. Every test starts its own PostgreSQL (pg-ephemeral).

mod common;

use std::sync::Arc;
use std::time::Duration;

use pg_ephemeral::{Cluster, ClusterOptions, PgBinaries};
use portcullis_core::config::Durability;
use portcullis_ledger::{
    CheckpointOptions, CheckpointSigner, Ledger, LedgerOptions, LedgerReader, Problem,
    VerifyOptions, VerifyReport,
};

fn cluster() -> Cluster {
    let bins = PgBinaries::find().expect(
        "PostgreSQL server binaries (initdb, postgres) are needed: apt-get install -y postgresql",
    );
    Cluster::start(&bins, ClusterOptions::default()).expect("start PostgreSQL")
}

fn signer(seed: u8) -> Arc<CheckpointSigner> {
    Arc::new(CheckpointSigner::from_seed("test.example/ledger", [seed; 32]).unwrap())
}

fn open(url: &str, signer: &Arc<CheckpointSigner>, mirror: Option<std::path::PathBuf>) -> Ledger {
    try_open(url, signer, mirror).expect("open the PostgreSQL ledger")
}

fn try_open(
    url: &str,
    signer: &Arc<CheckpointSigner>,
    mirror: Option<std::path::PathBuf>,
) -> Result<Ledger, portcullis_ledger::LedgerError> {
    Ledger::open(LedgerOptions {
        durability: Durability::Default,
        checkpoints: Some(CheckpointOptions {
            signer: signer.clone(),
            every_events: 50,
            every: Duration::from_millis(200),
            mirror,
            mirror_bucket: None,
        }),
        ..LedgerOptions::postgres(url)
    })
}

/// Appends `n` single statements, one call each.
async fn append_n(l: &Ledger, n: usize) {
    for i in 0..n {
        l.append(vec![common::statement("s", &format!("m{i}"))])
            .await
            .unwrap();
    }
}

/// Verification blocks (as `portcullis audit verify` does): off the async workers.
fn verify(url: &str, key: &Arc<CheckpointSigner>) -> VerifyReport {
    verify_with(url, key, Vec::new())
}

fn verify_with(
    url: &str,
    key: &Arc<CheckpointSigner>,
    external: Vec<(String, String)>,
) -> VerifyReport {
    let (url, key) = (url.to_string(), key.clone());
    std::thread::spawn(move || {
        let reader = LedgerReader::open_postgres(&url).expect("open the store for reading");
        let opts = VerifyOptions {
            key: Some(key.verifier()),
            external,
        };
        reader.verify_with(&opts, |_| {}).expect("verify")
    })
    .join()
    .expect("verification thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_chain() {
    let pg = cluster();
    let url = pg.url("postgres");
    let key = signer(7);
    // Two writers, as two gateways behind a load balancer (each has its own connection and
    // writer thread; they meet only in the database).
    let a = open(&url, &key, None);
    let b = open(&url, &key, None);
    let mut tasks = Vec::new();
    for (g, ledger) in [("a", a.clone()), ("b", b.clone())] {
        for s in 0..8 {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let session = format!("{g}-{s}");
                let mut seqs = Vec::new();
                for i in 0..60 {
                    let events = vec![
                        common::statement(&session, &format!("{session}-{i}-x")),
                        common::statement(&session, &format!("{session}-{i}-y")),
                    ];
                    seqs.push(ledger.append(events).await.expect("append"));
                }
                seqs
            }));
        }
    }
    let mut firsts = Vec::new();
    for t in tasks {
        firsts.extend(t.await.expect("appender"));
    }
    a.close();
    b.close();
    // Every call got two consecutive, unshared seqs: 1..=1920 covered exactly once.
    let mut seqs: Vec<u64> = firsts.iter().flat_map(|&f| [f, f + 1]).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1920).collect::<Vec<u64>>());
    match verify(&url, &key) {
        VerifyReport::Verified {
            events,
            checkpoints,
            ..
        } => {
            assert_eq!(events, 1920);
            assert!(checkpoints.checked >= 2, "{checkpoints:?}");
            assert_eq!(
                checkpoints.latest, 1920,
                "the closing checkpoint covers all"
            );
        }
        other => panic!("two writers broke the chain: {other:?}"),
    }
    // The events of one call stay adjacent and in order, and the sealed text opens.
    let reader = LedgerReader::open_postgres(&url).unwrap();
    let events = reader.after(0, 10_000).unwrap();
    assert_eq!(events.len(), 1920);
    for pair in events.chunks(2) {
        let (x, y) = (common::marker(&pair[0]), common::marker(&pair[1]));
        assert!(x.ends_with("-x") && y.ends_with("-y"), "{x} {y}");
        assert_eq!(x.trim_end_matches("-x"), y.trim_end_matches("-y"));
    }
    assert!(
        !events[0].data.contains("SELECT"),
        "statement text is sealed in the store: {}",
        events[0].data
    );
    // An inclusion proof from the store verifies offline.
    let proof = reader.prove(777, None).expect("prove");
    proof.verify(&key.verifier()).expect("proof verifies");
    assert_eq!(reader.count().unwrap(), 1920);
    assert_eq!(reader.last(1).unwrap()[0].seq, 1920);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_another_key_is_refused() {
    let pg = cluster();
    let url = pg.url("postgres");
    let a = open(&url, &signer(1), None);
    a.append(vec![common::statement("s", "m")]).await.unwrap();
    let err = try_open(&url, &signer(2), None).expect_err("another key must be refused");
    assert!(
        err.to_string().contains("must sign with the same key"),
        "{err}"
    );
    a.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_and_truncation_are_caught() {
    let pg = cluster();
    let url = pg.url("postgres");
    let key = signer(3);
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let l = open(&url, &key, Some(mirror.clone()));
    append_n(&l, 100).await;
    l.close();
    assert!(matches!(
        verify(&url, &key),
        VerifyReport::Verified { events: 100, .. }
    ));

    // A changed row.
    pg.psql(
        "postgres",
        "UPDATE portcullis.events SET ts_us = ts_us + 1 WHERE seq = 40",
    )
    .unwrap();
    match verify(&url, &key) {
        VerifyReport::Broken { seq, problem, .. } => {
            assert_eq!((seq, problem), (40, Problem::Altered))
        }
        other => panic!("altered row not found: {other:?}"),
    }
    pg.psql(
        "postgres",
        "UPDATE portcullis.events SET ts_us = ts_us - 1 WHERE seq = 40",
    )
    .unwrap();
    assert!(matches!(verify(&url, &key), VerifyReport::Verified { .. }));

    // The tail cut off, checkpoints and head with it: the mirror still knows.
    pg.psql(
        "postgres",
        "DELETE FROM portcullis.events WHERE seq > 90; DELETE FROM portcullis.checkpoints; \
         UPDATE portcullis.head SET seq = 90, hash = (SELECT hash FROM portcullis.events WHERE seq = 90)",
    )
    .unwrap();
    let note =
        std::fs::read_to_string(portcullis_ledger::checkpoint::mirror_file(&mirror)).unwrap();
    match verify_with(&url, &key, vec![("mirror".into(), note)]) {
        VerifyReport::Broken { problem, seq, .. } => {
            assert_eq!((problem, seq), (Problem::Truncated, 91))
        }
        other => panic!("truncation not found: {other:?}"),
    }
    // And a gateway refuses to write on a store behind its mirror (it would fork the log).
    let err = try_open(&url, &key, Some(mirror)).expect_err("must refuse");
    assert!(err.to_string().contains("100"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_refuses_appends_and_service_resumes() {
    let bins = PgBinaries::find().expect("apt-get install -y postgresql");
    let mut pg = Cluster::start(&bins, ClusterOptions::default()).unwrap();
    let url = pg.url("postgres");
    let key = signer(4);
    let l = open(&url, &key, None);
    l.append(vec![common::statement("s", "before")])
        .await
        .unwrap();
    let port = pg.port();
    let data = pg.data_dir().to_path_buf();
    pg.stop().unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        l.append(vec![common::statement("s", "during")]),
    )
    .await
    .expect("an outage must answer, not hang")
    .expect_err("no store, no append");
    assert!(err.to_string().contains("not recorded"), "{err}");
    // The same cluster back on the same port.
    let back = Cluster::start_in(
        &bins,
        &data,
        ClusterOptions {
            port: Some(port),
            keep: true,
            ..ClusterOptions::default()
        },
    )
    .unwrap();
    let seq = l
        .append(vec![common::statement("s", "after")])
        .await
        .expect("appends resume once the store is back");
    assert_eq!(seq, 2, "the refused event took no seq");
    l.close();
    assert!(matches!(
        verify(&url, &key),
        VerifyReport::Verified { events: 2, .. }
    ));
    drop(back);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_shreds_keys_in_the_store() {
    let pg = cluster();
    let url = pg.url("postgres");
    let key = signer(5);
    let l = open(&url, &key, None);
    l.append(vec![common::statement("s", "secret")])
        .await
        .unwrap();
    let reader = LedgerReader::open_postgres(&url).unwrap();
    let segments = reader.segments().unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(common::marker(&reader.after(0, 1).unwrap()[0]), "secret");
    l.delete_segment_key(&segments[0].segment, "test-rule")
        .unwrap();
    l.close();
    let reader = LedgerReader::open_postgres(&url).unwrap();
    let ev = &reader.after(0, 1).unwrap()[0];
    assert!(ev.json().contains("\"deleted\":true"), "{}", ev.json());
    assert!(!ev.json().contains("secret"));
    assert!(matches!(
        verify(&url, &key),
        VerifyReport::Verified { events: 1, .. }
    ));
    let key_col = pg
        .psql(
            "postgres",
            "SELECT key IS NULL FROM portcullis.segment_keys",
        )
        .unwrap();
    assert_eq!(key_col, "t");
}

/// Rewritten history with the store's checkpoints deleted: the mirror still knows the root, so
/// a gateway refuses to start (and would otherwise sign the forgery with the real key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_store_without_its_checkpoints_is_refused_at_start() {
    let pg = cluster();
    let url = pg.url("postgres");
    let key = signer(6);
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let l = open(&url, &key, Some(mirror.clone()));
    append_n(&l, 60).await;
    l.close();
    pg.psql(
        "postgres",
        "UPDATE portcullis.events SET hash = sha256(hash) WHERE seq = 40; \
         DELETE FROM portcullis.checkpoints",
    )
    .unwrap();
    let err = try_open(&url, &key, Some(mirror)).expect_err("must refuse");
    assert!(err.to_string().contains("signs another root"), "{err}");
}

/// flush and checkpoint from several threads at once answer, in order, and never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_and_checkpoints_all_return() {
    let pg = cluster();
    let url = pg.url("postgres");
    let key = signer(8);
    let l = open(&url, &key, None);
    l.append(vec![common::statement("s", "one")]).await.unwrap();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let l = l.clone();
            std::thread::spawn(move || {
                l.append_detached(vec![common::statement("s", &format!("t{i}"))]);
                if i % 2 == 0 {
                    l.checkpoint()
                } else {
                    l.flush()
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(l.stats().last_seq, 7);
    l.close();
    l.flush(); // after close: returns at once
    l.checkpoint();
    assert!(matches!(
        verify(&url, &key),
        VerifyReport::Verified { events: 7, .. }
    ));
}
