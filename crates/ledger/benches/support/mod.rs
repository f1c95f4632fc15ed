//! What the ledger benchmarks share: the event they append and the options a default gateway
//! opens its ledger with. Used by `benches/ledger.rs` and by `examples/append_bench.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::{EventData, NewEvent, Principal};
use portcullis_ledger::{CheckpointOptions, CheckpointSigner, Ledger, LedgerError, LedgerOptions};

/// The checkpoint key of the benchmarks (a fixed seed: benchmark fixture, not a secret).
pub fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed("bench/ledger", [1u8; 32]).expect("signer")
}

/// Checkpoints as a default gateway signs them: every 10 000 events or 10 s.
pub fn checkpoints() -> CheckpointOptions {
    CheckpointOptions {
        signer: Arc::new(signer()),
        every_events: 10_000,
        every: Duration::from_secs(10),
        mirror: None,
        mirror_bucket: None,
    }
}

/// Options for a fresh SQLite ledger `name` in `dir`, or the PostgreSQL store at `pg`.
pub fn options(
    dir: &Path,
    name: &str,
    pg: Option<&str>,
    checkpoints_on: bool,
    seal: bool,
) -> LedgerOptions {
    let base = match pg {
        Some(url) => LedgerOptions::postgres(url),
        None => LedgerOptions::new(dir.join(format!("{name}.db"))),
    };
    LedgerOptions {
        checkpoints: checkpoints_on.then(checkpoints),
        seal,
        ..base
    }
}

/// One statement event (~480 bytes), as a session appends it before forwarding.
pub fn statement(session: &str, n: u64) -> NewEvent {
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
            text: format!(
                "SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = \
                 o.customer_id WHERE o.id = {n}"
            ),
            mode: "extended".into(),
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

/// Appends `events` statement events from four concurrent bulk writers (1 000 per call), as a
/// busy gateway would.
pub fn fill(rt: &tokio::runtime::Runtime, ledger: &Ledger, events: u64) {
    rt.block_on(async {
        const PRODUCERS: u64 = 4;
        let mut tasks = Vec::new();
        for p in 0..PRODUCERS {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = p * 1000;
                while n < events {
                    let len = 1000.min(events - n);
                    let batch: Vec<NewEvent> = (n..n + len)
                        .map(|i| statement(&format!("session-{}", i % 64), i))
                        .collect();
                    // Bulk calls can outrun indexing; the ledger then refuses (IndexBehind)
                    // until SQLite catches up: wait and retry, as backpressure.
                    loop {
                        match ledger.append(batch.clone()).await {
                            Ok(_) => break,
                            Err(LedgerError::IndexBehind { .. }) => {
                                tokio::time::sleep(Duration::from_millis(20)).await
                            }
                            Err(e) => panic!("append: {e}"),
                        }
                    }
                    n += PRODUCERS * 1000;
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer");
        }
    });
}
