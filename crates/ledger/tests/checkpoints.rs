//! Signed Merkle checkpoints: written by the ledger as it runs, checked by verification, and
//! what they catch that the chain alone cannot (a deleted tail, a rewritten and re-hashed
//! ledger), plus inclusion proofs checked offline.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use portcullis_core::config::Durability;
use portcullis_ledger::chain::GENESIS;
use portcullis_ledger::{
    event_hash, CheckpointOptions, CheckpointSigner, CheckpointVerifier, Ledger, LedgerError,
    LedgerOptions, LedgerReader, Problem, VerifyOptions, VerifyReport,
};

fn signer(name: &str) -> Arc<CheckpointSigner> {
    Arc::new(CheckpointSigner::from_seed(name, [42u8; 32]).unwrap())
}

fn open_signed(path: &Path, signer: &Arc<CheckpointSigner>, mirror: Option<PathBuf>) -> Ledger {
    Ledger::open(LedgerOptions {
        path: path.to_path_buf(),
        durability: Durability::Default,
        sync_interval: Duration::from_millis(5),
        checkpoints: Some(CheckpointOptions {
            signer: signer.clone(),
            every_events: u64::MAX,
            every: Duration::from_secs(3600),
            mirror,
            mirror_bucket: None,
        }),
        seal: true,
        postgres: None,
    })
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A closed ledger of `n` events with a checkpoint after every 7 events and at close, and a
/// mirror folder.
fn signed_ledger(dir: &tempfile::TempDir, n: usize) -> (PathBuf, PathBuf, CheckpointVerifier) {
    let path = db_path(dir);
    let mirror = dir.path().join("mirror");
    let s = signer("test.example/ledger");
    let ledger = open_signed(&path, &s, Some(mirror.clone()));
    let rt = runtime();
    for chunk in 0..n / 7 {
        rt.block_on(fill(&ledger, 7));
        ledger.checkpoint();
        assert_eq!(ledger.stats().checkpoint_size, (chunk as u64 + 1) * 7);
    }
    rt.block_on(fill(&ledger, n % 7));
    ledger.close();
    (path, mirror, s.verifier())
}

fn verify_with(path: &Path, key: &CheckpointVerifier, mirror: Option<&Path>) -> VerifyReport {
    let external = mirror
        .map(|m| {
            let file = m.join("checkpoint");
            vec![(
                file.display().to_string(),
                std::fs::read_to_string(&file).unwrap(),
            )]
        })
        .unwrap_or_default();
    LedgerReader::open(path)
        .unwrap()
        .verify_with(
            &VerifyOptions {
                key: Some(key.clone()),
                external,
            },
            |_| {},
        )
        .unwrap()
}

fn broken(report: VerifyReport) -> (u64, Problem, String) {
    match report {
        VerifyReport::Broken {
            seq,
            problem,
            detail,
        } => (seq, problem, detail),
        other => panic!("the change went unnoticed: {other:?}"),
    }
}

/// Recomputes every hash from `from` on, as someone who can rewrite the whole file would:
/// the chain then verifies on its own.
fn rehash_from(path: &Path, from: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let events = LedgerReader::open(path)
        .unwrap()
        .after(0, 1_000_000)
        .unwrap();
    let mut prev = GENESIS;
    for e in events {
        if e.seq >= from {
            let h = event_hash(&prev, e.seq, e.ts_us, &e.kind, &e.session_id, &e.data);
            conn.execute(
                "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                (&prev[..], &h[..], e.seq),
            )
            .unwrap();
            prev = h;
        } else {
            prev = e.hash;
        }
    }
}

#[test]
fn checkpoints_cover_every_event_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mirror, key) = signed_ledger(&dir, 45);
    let reader = LedgerReader::open(&path).unwrap();
    let cps = reader.checkpoints().unwrap();
    let sizes: Vec<u64> = cps.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [7, 14, 21, 28, 35, 42, 45]);
    assert_eq!(cps.last().map(|c| c.size), Some(45), "close signs the tail");
    for c in &cps {
        assert_eq!(key.open(&c.note).unwrap().size, c.size);
    }
    match verify_with(&path, &key, Some(&mirror)) {
        VerifyReport::Verified {
            events,
            checkpoints,
            root,
            ..
        } => {
            assert_eq!(events, 45);
            assert_eq!(
                checkpoints.checked,
                cps.len() + 1,
                "stored ones and the mirror"
            );
            assert!(checkpoints.signatures);
            assert_eq!(checkpoints.latest, 45);
            assert_eq!(root, cps[cps.len() - 1].root);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reopening_resumes_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = signer("test.example/ledger");
    let rt = runtime();
    for _ in 0..3 {
        let ledger = open_signed(&path, &s, None);
        rt.block_on(fill(&ledger, 11));
        ledger.close();
    }
    // Every checkpoint, including those signed after a reopen, matches the events.
    match verify_with(&path, &s.verifier(), None) {
        VerifyReport::Verified {
            events,
            checkpoints,
            ..
        } => {
            assert_eq!(events, 33);
            assert_eq!(checkpoints.latest, 33);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deleted_tail_is_caught_by_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mirror, key) = signed_ledger(&dir, 30);
    tamper(&path, "DELETE FROM events WHERE seq > 25");
    // The chain alone would be happy with the shorter ledger (no `Missing`); the stored
    // checkpoint is not.
    let (seq, problem, detail) = broken(verify_with(&path, &key, None));
    assert_eq!((seq, problem), (26, Problem::Truncated), "{detail}");
    assert!(detail.contains("events 26 to 30"), "{detail}");

    // Deleting the stored checkpoints as well still leaves the mirror.
    tamper(&path, "DELETE FROM checkpoints WHERE tree_size > 25");
    assert!(matches!(
        verify_with(&path, &key, None),
        VerifyReport::Verified { .. }
    ));
    let (seq, problem, detail) = broken(verify_with(&path, &key, Some(&mirror)));
    assert_eq!((seq, problem), (26, Problem::Truncated), "{detail}");
    assert!(
        detail.contains("mirror"),
        "names where the checkpoint is: {detail}"
    );

    // And the gateway refuses to write on top of the cut.
    let err = Ledger::open(LedgerOptions {
        path: path.clone(),
        durability: Durability::Default,
        sync_interval: Duration::from_millis(5),
        checkpoints: Some(CheckpointOptions {
            signer: signer("test.example/ledger"),
            every_events: 7,
            every: Duration::from_secs(3600),
            mirror: Some(mirror),
            mirror_bucket: None,
        }),
        seal: true,
        postgres: None,
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::BehindCheckpoint {
                events: 25,
                checkpoint: 30,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_rewritten_and_rehashed_ledger_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mirror, key) = signed_ledger(&dir, 30);
    tamper(
        &path,
        "UPDATE events SET data = replace(data, 'orders', 'payroll') WHERE seq = 12",
    );
    rehash_from(&path, 12);
    let reopen = || {
        Ledger::open(LedgerOptions {
            path: path.clone(),
            durability: Durability::Default,
            sync_interval: Duration::from_millis(5),
            checkpoints: Some(CheckpointOptions {
                signer: signer("test.example/ledger"),
                every_events: u64::MAX,
                every: Duration::from_secs(3600),
                mirror: Some(mirror.clone()),
                mirror_bucket: None,
            }),
            seal: true,
            postgres: None,
        })
    };
    // (With the stored checkpoints intact it resumes from the last one: `audit verify`, below,
    // is what compares every checkpoint with the whole history.) Once they are deleted and
    // the ledger is padded past the mirror's size, the tree is rebuilt from the events and
    // compared with the mirror: the gateway refuses to start.
    let saved = std::fs::read(&path).unwrap();
    tamper(&path, "DELETE FROM checkpoints");
    {
        let unsigned = Ledger::open(LedgerOptions::new(&path)).unwrap();
        runtime().block_on(fill(&unsigned, 5));
        unsigned.close();
    }
    let err = reopen().unwrap_err();
    assert!(matches!(err, LedgerError::Tampered { .. }), "{err}");
    assert!(err.to_string().contains("mirror"), "{err}");
    // A mirror that no longer verifies stops it too.
    std::fs::write(mirror.join("checkpoint"), "not a checkpoint\n").unwrap();
    let err = reopen().unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    std::fs::write(&path, saved).unwrap();
    // Not `Altered`: the chain itself is intact; only the signed roots tell.
    let (seq, problem, detail) = broken(verify_with(&path, &key, None));
    assert_eq!(problem, Problem::CheckpointMismatch, "{detail}");
    assert_eq!(
        seq, 14,
        "the first checkpoint after the change (size 14): {detail}"
    );
    // Without its checkpoints the rewritten ledger would pass.
    tamper(&path, "DELETE FROM checkpoints");
    assert_verified(&path, 30);
}

#[test]
fn checkpoint_notes_and_rows_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _mirror, key) = signed_ledger(&dir, 20);
    // A note altered by hand no longer verifies.
    tamper(
        &path,
        "UPDATE checkpoints SET note = replace(note, 'test.example/ledger\n7\n', 'test.example/ledger\n6\n') WHERE tree_size = 7",
    );
    let (_, problem, detail) = broken(verify_with(&path, &key, None));
    assert_eq!(problem, Problem::BadSignature, "{detail}");
    // Another key does not vouch for these checkpoints.
    let dir2 = tempfile::tempdir().unwrap();
    let (path2, _, _) = signed_ledger(&dir2, 10);
    let other = CheckpointSigner::from_seed("test.example/ledger", [9u8; 32]).unwrap();
    let (_, problem, detail) = broken(verify_with(&path2, &other.verifier(), None));
    assert_eq!(problem, Problem::BadSignature, "{detail}");
    assert!(detail.contains("not signed by"), "{detail}");
}

#[test]
fn inclusion_proofs_verify_offline_and_catch_a_changed_event() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _mirror, key) = signed_ledger(&dir, 37);
    let reader = LedgerReader::open(&path).unwrap();
    for seq in [1, 2, 17, 36, 37] {
        let proof = reader.prove(seq, None).unwrap();
        assert_eq!(proof.tree_size, 37);
        let cp = proof.verify(&key).unwrap();
        assert_eq!(cp.size, 37);
        // Against an older checkpoint too.
        let old = reader.prove(seq.min(14), Some(14)).unwrap();
        assert!(old.verify(&key).is_ok());
    }
    let good = reader.prove(17, None).unwrap();
    let mut changed = good.clone();
    changed.event.data = changed.event.data.replace("orders", "payroll");
    assert!(changed.verify(&key).unwrap_err().contains("altered"));
    // A consistent event from elsewhere in the ledger does not fit this path.
    let mut moved = good.clone();
    moved.event = reader.after(15, 1).unwrap().remove(0);
    assert!(moved.verify(&key).unwrap_err().contains("audit path"));
    assert!(reader.prove(38, None).is_err());
    assert!(
        reader.prove(20, Some(15)).is_err(),
        "no checkpoint of size 15"
    );
}
