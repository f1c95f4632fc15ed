//! Retention with a fake clock: events dated in the past, a plan computed at a chosen "now",
//! and crypto-shredding that deletes exactly what the rules say while the ledger verifies.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use portcullis_core::config::{Durability, RetentionRule};
use portcullis_core::{EventData, NewEvent, Outcome, Principal};
use portcullis_ledger::retention::{self, Decision};
use portcullis_ledger::seal::{day_number, keys_path};
use portcullis_ledger::{
    CheckpointOptions, CheckpointSigner, Ledger, LedgerOptions, LedgerReader, VerifyOptions,
    VerifyReport,
};

const DAY: i64 = 86_400_000_000;

fn day(d: &str) -> i64 {
    day_number(d).unwrap() * DAY
}

fn stmt(connection: &str, session: &str, ts_us: i64, text: &str) -> NewEvent {
    let mut ev = statement(session, "x");
    ev.ts_us = ts_us;
    if let EventData::Statement {
        connection: c,
        text: t,
        ..
    } = &mut ev.data
    {
        *c = connection.into();
        *t = text.into();
    }
    ev
}

fn open_session(connection: &str, session: &str, ts_us: i64) -> NewEvent {
    NewEvent {
        ts_us,
        session_id: session.into(),
        data: EventData::SessionOpen {
            principal: Principal {
                agent: "etl-agent".into(),
                auth_method: "scram-sha-256".into(),
                identity: None,
            },
            client_addr: "10.0.0.1:1".into(),
            connection: connection.into(),
            protocol: "postgres".into(),
            tls: true,
            params: Vec::new(),
            masking: None,
        },
    }
}

fn failed(session: &str, ts_us: i64, seq: u64, message: &str) -> NewEvent {
    NewEvent {
        ts_us,
        session_id: session.into(),
        data: EventData::Result {
            statement_seq: seq,
            outcome: Outcome::Error,
            tags: Vec::new(),
            rows: 0,
            sqlstate: Some("23505".into()),
            message: Some(message.into()),
            duration_us: 10,
            sealed: None,
            masked: Default::default(),
        },
    }
}

fn rules() -> Vec<RetentionRule> {
    vec![
        RetentionRule {
            name: "orders-30d".into(),
            connections: vec!["orders".into()],
            max_age_days: Some(30),
            min_age_days: 7,
            legal_hold: false,
        },
        RetentionRule {
            name: "hr-litigation".into(),
            connections: vec!["hr".into()],
            max_age_days: Some(1),
            min_age_days: 0,
            legal_hold: true,
        },
    ]
}

#[tokio::test]
async fn deletes_exactly_what_the_rules_say_and_the_ledger_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let signer = Arc::new(CheckpointSigner::from_seed("test/retention", [5; 32]).unwrap());
    let ledger = Ledger::open(LedgerOptions {
        path: path.clone(),
        durability: Durability::Default,
        sync_interval: Duration::from_millis(5),
        checkpoints: Some(CheckpointOptions {
            signer: signer.clone(),
            every_events: 4,
            every: Duration::from_secs(3600),
            mirror: None,
            mirror_bucket: None,
        }),
        seal: true,
        postgres: None,
    })
    .unwrap();
    let old = day("2026-10-01") + 3_600_000_000;
    let recent = day("2026-11-30") + 3_600_000_000;
    ledger
        .append(vec![open_session("orders", "s1", old)])
        .await
        .unwrap();
    let s_old = ledger
        .append(vec![stmt(
            "orders",
            "s1",
            old,
            "UPDATE cards SET pan = '4111111111111111'",
        )])
        .await
        .unwrap();
    let r_old = ledger
        .append(vec![failed(
            "s1",
            old,
            s_old,
            "duplicate key (pan)=(4111111111111111)",
        )])
        .await
        .unwrap();
    let s_recent = ledger
        .append(vec![stmt("orders", "s2", recent, "SELECT 'recent-orders'")])
        .await
        .unwrap();
    let s_hr = ledger
        .append(vec![stmt("hr", "s3", old, "SELECT 'held-for-litigation'")])
        .await
        .unwrap();
    let s_other = ledger
        .append(vec![stmt(
            "billing",
            "s4",
            old,
            "SELECT 'no-rule-covers-billing'",
        )])
        .await
        .unwrap();
    ledger.checkpoint();

    // The orders key of 2026-10-01, to look for after the deletion.
    let old_key: Vec<u8> = rusqlite::Connection::open(keys_path(&path))
        .unwrap()
        .query_row(
            "SELECT key FROM segment_keys WHERE segment = 'orders/2026-10-01'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_key.len(), 32);

    let now = day("2026-12-02") + 12 * 3_600_000_000;
    let reader = LedgerReader::open(&path).unwrap();
    let plan = retention::plan(&reader, &rules(), now).unwrap();
    let by_segment = |s: &str| {
        plan.items
            .iter()
            .find(|i| i.segment.segment == s)
            .unwrap_or_else(|| panic!("segment {s} in {plan:?}"))
            .clone()
    };
    let doomed = by_segment("orders/2026-10-01");
    assert!(
        matches!(&doomed.decision, Decision::Delete { rule, age_days: 61, .. } if rule == "orders-30d"),
        "{doomed:?}"
    );
    assert_eq!(
        doomed.range,
        Some((s_old, r_old, 2)),
        "the statement and its result"
    );
    assert!(
        matches!(by_segment("orders/2026-11-30").decision, Decision::Keep { why } if why.contains("minimum of 7"))
    );
    assert!(
        matches!(by_segment("hr/2026-10-01").decision, Decision::Keep { why } if why.contains("legal hold"))
    );
    assert!(
        matches!(by_segment("billing/2026-10-01").decision, Decision::Keep { why } if why.contains("no retention rule"))
    );
    assert_eq!(plan.deletions().count(), 1);
    drop(reader);

    let done = ledger.apply_retention(&plan, "test", None).await.unwrap();
    assert_eq!(done.len(), 1);
    ledger.close();

    let reader = LedgerReader::open(&path).unwrap();
    let ev = |seq: u64| reader.after(seq - 1, 1).unwrap().remove(0).parse().unwrap();
    match ev(s_old) {
        EventData::Statement {
            text,
            sealed,
            connection,
            ..
        } => {
            assert_eq!(text, "");
            assert_eq!(connection, "orders", "who/where stays");
            assert!(sealed.is_some_and(|s| s.deleted));
        }
        other => panic!("{other:?}"),
    }
    match ev(r_old) {
        EventData::Result {
            message,
            sealed,
            sqlstate,
            ..
        } => {
            assert_eq!(message, None);
            assert_eq!(sqlstate.as_deref(), Some("23505"));
            assert!(sealed.is_some_and(|s| s.deleted));
        }
        other => panic!("{other:?}"),
    }
    for (seq, text) in [
        (s_recent, "SELECT 'recent-orders'"),
        (s_hr, "SELECT 'held-for-litigation'"),
        (s_other, "SELECT 'no-rule-covers-billing'"),
    ] {
        match ev(seq) {
            EventData::Statement {
                text: t, sealed, ..
            } => {
                assert_eq!(t, text);
                assert_eq!(sealed, None);
            }
            other => panic!("{other:?}"),
        }
    }
    match ev(done[0]) {
        EventData::RetentionDeleted {
            rule,
            segment,
            first_seq,
            last_seq,
            events,
            by,
            ..
        } => {
            assert_eq!(
                (
                    rule.as_str(),
                    segment.as_str(),
                    first_seq,
                    last_seq,
                    events,
                    by.as_str()
                ),
                ("orders-30d", "orders/2026-10-01", s_old, r_old, 2, "test")
            );
        }
        other => panic!("{other:?}"),
    }

    // The chain, the tree and every checkpoint signed before the deletion still verify.
    match reader
        .verify_with(
            &VerifyOptions {
                key: Some(signer.verifier()),
                external: Vec::new(),
            },
            |_| {},
        )
        .unwrap()
    {
        VerifyReport::Verified { checkpoints, .. } => assert!(checkpoints.checked >= 2),
        other => panic!("{other:?}"),
    }

    // The key's bytes are gone from the keys file, and no raw value was ever in the ledger.
    let keys_file = std::fs::read(keys_path(&path)).unwrap();
    assert!(!keys_file.windows(32).any(|w| w == old_key.as_slice()));
    for f in [path.clone(), dir.path().join("ledger.db-wal")] {
        if let Ok(bytes) = std::fs::read(&f) {
            let hay = String::from_utf8_lossy(&bytes);
            assert!(
                !hay.contains("4111111111111111"),
                "{} holds a raw value",
                f.display()
            );
        }
    }

    // A second run finds nothing more to do.
    let again = retention::plan(&reader, &rules(), now).unwrap();
    assert_eq!(again.deletions().count(), 0);
    assert_eq!(
        again
            .items
            .iter()
            .find(|i| i.segment.segment == "orders/2026-10-01")
            .map(|i| i.decision.clone()),
        Some(Decision::AlreadyDeleted)
    );
}
