//! Ledger append throughput (acknowledged, group commit) and verification speed, on SQLite and
//! on the PostgreSQL store, as criterion benchmarks.
//!
//! ```text
//! cargo bench -p portcullis-ledger --bench ledger                 # SQLite and PostgreSQL
//! cargo bench -p portcullis-ledger --bench ledger -- sqlite       # one store
//! ```
//!
//! Each benchmark prints events/s ("thrpt"). Appends are one statement event per call from 64
//! concurrent appenders, each waiting for its acknowledgement as a session does before it
//! forwards a statement; checkpoints and sealing are on, as in a default gateway. `strict` is
//! the durable mode (the event is on disk, or committed with the WAL flushed, before the
//! acknowledgement); `default` acknowledges after the journal write. Verification reads a
//! ledger of `VERIFY_EVENTS` events and checks the chain, the Merkle tree and every signed
//! checkpoint. The PostgreSQL store is a throwaway cluster (pg-ephemeral, `fsync = on`) on this
//! machine; `apt-get install -y postgresql` provides it. Files go to a temporary folder under
//! `PORTCULLIS_BENCH_DIR` (default: the system temp folder). Latency percentiles and the other
//! appender counts come from `cargo run --release -p portcullis-ledger --example append_bench`.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_core::config::Durability;
use portcullis_ledger::{Ledger, LedgerOptions, LedgerReader, VerifyOptions, VerifyReport};

mod support;
use support::{options, signer, statement};

const APPENDERS: u64 = 64;
const VERIFY_EVENTS: u64 = 300_000;

fn append(
    rt: &tokio::runtime::Runtime,
    c: &mut Criterion,
    group: &str,
    opts: impl Fn(Durability) -> LedgerOptions,
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    for durability in [Durability::Strict, Durability::Default] {
        let name = format!(
            "append_{}_{APPENDERS}_appenders",
            format!("{durability:?}").to_lowercase()
        );
        let ledger = Ledger::open(opts(durability)).expect("open the bench ledger");
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(APPENDERS).max(1);
                rt.block_on(async {
                    let start = Instant::now();
                    let mut tasks = Vec::new();
                    for a in 0..APPENDERS {
                        let ledger = ledger.clone();
                        tasks.push(tokio::spawn(async move {
                            let session = format!("session-{a}");
                            for n in 0..per {
                                ledger
                                    .append(vec![statement(&session, n)])
                                    .await
                                    .expect("append");
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.expect("appender task");
                    }
                    // Scale to the iterations asked for (per × APPENDERS ≥ iters were run).
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * APPENDERS) as f64)
                })
            })
        });
        ledger.close();
    }
    g.finish();
}

/// A fresh ledger of `VERIFY_EVENTS` events.
fn fill(rt: &tokio::runtime::Runtime, opts: LedgerOptions) {
    let ledger = Ledger::open(opts).expect("open the bench ledger");
    support::fill(rt, &ledger, VERIFY_EVENTS);
    ledger.close();
}

fn verify(c: &mut Criterion, group: &str, open: impl Fn() -> LedgerReader) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    let events = match open()
        .verify_with(&verify_options(), |_| {})
        .expect("verify")
    {
        VerifyReport::Verified { events, .. } => events,
        other => panic!("the bench ledger does not verify: {other:?}"),
    };
    g.throughput(Throughput::Elements(events));
    g.bench_function("verify_chain_tree_checkpoints", |b| {
        b.iter(|| {
            let report = open()
                .verify_with(&verify_options(), |_| {})
                .expect("verify");
            assert!(
                matches!(report, VerifyReport::Verified { .. }),
                "{report:?}"
            );
        })
    });
    g.finish();
}

fn verify_options() -> VerifyOptions {
    VerifyOptions {
        key: Some(signer().verifier()),
        external: Vec::new(),
    }
}

fn sqlite(c: &mut Criterion, rt: &tokio::runtime::Runtime, dir: &Path) {
    append(rt, c, "ledger_sqlite", |durability| LedgerOptions {
        durability,
        ..options(dir, &format!("append-{durability:?}"), None, true, true)
    });
    fill(rt, options(dir, "verify", None, true, true));
    let path = dir.join("verify.db");
    verify(c, "ledger_sqlite", || {
        LedgerReader::open(&path).expect("open the bench ledger")
    });
}

fn postgres(c: &mut Criterion, rt: &tokio::runtime::Runtime, dir: &Path) {
    let bins = pg_ephemeral::PgBinaries::find()
        .expect("PostgreSQL server binaries for the PostgreSQL-store benchmarks: apt-get install -y postgresql");
    let cluster = pg_ephemeral::Cluster::start(
        &bins,
        pg_ephemeral::ClusterOptions {
            fsync: true,
            parent_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .expect("start a throwaway PostgreSQL for the store");
    // One database per ledger: the append runs and the verified ledger stay apart.
    let url_of = |db: &str| {
        cluster.create_database(db).expect("create database");
        cluster.url(db)
    };
    let strict = url_of("append_strict");
    let default = url_of("append_default");
    let verified = url_of("verify");
    append(rt, c, "ledger_postgres", |durability| {
        let url = if durability == Durability::Strict {
            &strict
        } else {
            &default
        };
        LedgerOptions {
            durability,
            ..options(dir, "unused", Some(url), true, true)
        }
    });
    fill(rt, options(dir, "unused", Some(&verified), true, true));
    verify(c, "ledger_postgres", || {
        LedgerReader::open_postgres(&verified).expect("open the bench store")
    });
}

fn benches(c: &mut Criterion) {
    let base = std::env::var_os("PORTCULLIS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("temp folder for the bench ledgers");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    sqlite(c, &rt, dir.path());
    postgres(c, &rt, dir.path());
}

criterion_group!(ledger, benches);
criterion_main!(ledger);
