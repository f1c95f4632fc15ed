//! Retention end to end: statements sealed as the gateway records them, old history (events
//! dated two months back: the fake clock) deleted by `portcullis retention run` under the
//! configured rule, recent statements kept, deletions recorded, the ledger still verifying,
//! and no raw SQL text anywhere in the ledger files.

mod common;

use common::*;
use portcullis_core::{EventData, NewEvent, Principal};
use portcullis_ledger::{Ledger, LedgerOptions};
use std::path::Path;

fn retention_config() -> String {
    format!(
        r#"
[retention]
interval_mins = 60
[[retention.rules]]
name = "app-30-days"
connections = ["{DB}"]
max_age_days = 30
min_age_days = 7
"#
    )
}

fn old_statement(ts_us: i64, text: &str) -> NewEvent {
    NewEvent {
        ts_us,
        session_id: "old-session".into(),
        data: EventData::Statement {
            principal: Principal {
                agent: "test-agent".into(),
                auth_method: "scram-sha-256".into(),
                identity: None,
            },
            client_addr: "127.0.0.1:1".into(),
            connection: DB.into(),
            protocol: "postgres".into(),
            text: text.into(),
            mode: "simple".into(),
            statement_name: None,
            params: Vec::new(),
            verdict: "allow".into(),
            reason: None,
            decision: None,
            sealed: None,
            masked: Default::default(),
        },
    }
}

fn files_contain(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read data dir").flatten() {
        let p = entry.path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn retention_run_deletes_old_sql_text_keeps_recent_and_the_ledger_verifies() {
    let cluster = target(&[]);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            extra_config: retention_config(),
            ..GatewayOptions::default()
        },
    );
    ok(gw.psql(&["-c", "SELECT 'recent-canary-7731' AS kept"]));

    // While the gateway runs, a real run is refused with the reason; a dry run works.
    let o = gw.cli(&["retention", "run"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("the gateway is running"),
        "{}",
        stderr(&o)
    );
    ok(gw.cli(&["retention", "run", "--dry-run"]));
    gw.stop();

    // Two months of history before today (the fake clock: events dated in the past).
    let now = portcullis_core::now_us();
    let sixty_days_ago = now - 60 * 86_400_000_000;
    {
        let ledger = Ledger::open(LedgerOptions::new(gw.ledger_path())).expect("open ledger");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(ledger.append(vec![
            old_statement(sixty_days_ago, "SELECT 'old-canary-5519'"),
            old_statement(sixty_days_ago + 1, "SELECT 'old-canary-5520'"),
        ]))
        .expect("append history");
        ledger.close();
    }

    let dry = ok(gw.cli(&["retention", "run", "--dry-run"]));
    // Ages count whole days since the segment's day ended: 59 or 60 here.
    assert!(
        dry.contains(" days old, rule app-30-days keeps 30)"),
        "{dry}"
    );
    assert!(
        dry.contains("keep: its day has not ended"),
        "today is kept: {dry}"
    );
    assert!(
        dry.contains("dry run: nothing deleted (1 segment(s) would be)"),
        "{dry}"
    );
    let tail = ok(gw.cli(&["audit", "tail", "-n", "200"]));
    assert!(
        tail.contains("old-canary-5519"),
        "still readable before the run: {tail}"
    );

    let run = ok(gw.cli(&["retention", "run"]));
    assert!(run.contains("deleted 1 segment(s)"), "{run}");

    let tail = ok(gw.cli(&["audit", "tail", "-n", "200"]));
    assert!(!tail.contains("old-canary"), "{tail}");
    assert!(tail.contains("[text deleted by retention:"), "{tail}");
    assert!(
        tail.contains("recent-canary-7731"),
        "recent statements stay: {tail}"
    );
    assert!(
        tail.contains("RETENTION deleted the sealed fields of app/") && tail.contains("(2 events"),
        "the deletion is an event: {tail}"
    );
    let verify = ok(gw.cli(&["audit", "verify"]));
    assert!(verify.contains("signed checkpoint(s) match"), "{verify}");

    // Nothing raw in any ledger file, deleted or not; nothing to do on a second run.
    let data = gw.dir.path().join("data");
    for needle in ["old-canary-5519", "recent-canary-7731"] {
        assert!(
            files_contain(&data, needle).is_empty(),
            "{needle} in {:?}",
            files_contain(&data, needle)
        );
    }
    let again = ok(gw.cli(&["retention", "run"]));
    assert!(!again.contains("deleted 1"), "{again}");

    // The gateway starts again on the shredded ledger and records as before.
    gw.spawn();
    ok(gw.psql(&["-c", "SELECT 'after-retention' AS ok"]));
    gw.stop();
    let tail = ok(gw.cli(&["audit", "tail", "-n", "5"]));
    assert!(tail.contains("after-retention"), "{tail}");
}
