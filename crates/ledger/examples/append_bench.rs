//! Measures the ledger's acknowledged-append throughput (with latency percentiles, for 1, 8 and
//! 64 appenders) and its verification speed. The criterion benchmarks of the same paths are
//! `cargo bench -p portcullis-ledger --bench ledger`.
//!
//! ```text
//! cargo run --release -p portcullis-ledger --example append_bench
//! ```
//!
//! Each appender is a tokio task that appends one statement event per call and waits for the
//! acknowledgement, as a gateway session does before forwarding a statement. The ledger lives
//! in a temporary folder under `PORTCULLIS_BENCH_DIR` (default: the system temp folder; use a
//! folder on the disk you care about: fsync cost is what `strict` measures).
//! `PORTCULLIS_BENCH_SECS` sets the duration of each run (default 3),
//! `PORTCULLIS_BENCH_VERIFY_EVENTS` the size of the verified ledger (default 1 000 000).
//! Signed checkpoints are on, as in a default gateway (every 10 000 events or 10 s);
//! `PORTCULLIS_BENCH_CHECKPOINTS=0` turns them off for comparison, and
//! `PORTCULLIS_BENCH_SEAL=0` the sealing of SQL text (on in a gateway).
//! `PORTCULLIS_BENCH_STORE=postgres` measures the PostgreSQL store instead, on a throwaway
//! cluster (pg-ephemeral, `fsync = on`) in the same folder; `both` runs the two in turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_core::config::Durability;
use portcullis_ledger::{Ledger, LedgerOptions, LedgerReader, VerifyOptions, VerifyReport};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{signer, statement};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    events: u64,
    secs: f64,
    commits: u64,
    syncs: u64,
    p50_us: u64,
    p99_us: u64,
}

/// Options for one run: a fresh SQLite file, or the PostgreSQL store at `pg`.
fn options(dir: &std::path::Path, name: &str, pg: Option<&str>) -> LedgerOptions {
    support::options(
        dir,
        name,
        pg,
        env_u64("PORTCULLIS_BENCH_CHECKPOINTS", 1) != 0,
        env_u64("PORTCULLIS_BENCH_SEAL", 1) != 0,
    )
}

async fn run(
    dir: &std::path::Path,
    durability: Durability,
    appenders: usize,
    secs: u64,
    pg: Option<&str>,
) -> Run {
    let ledger = Ledger::open(LedgerOptions {
        durability,
        ..options(dir, &format!("bench-{durability:?}-{appenders}"), pg)
    })
    .expect("open ledger");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let ledger = ledger.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let session = format!("session-{a}");
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                ledger
                    .append(vec![statement(&session, n)])
                    .await
                    .expect("append");
                latencies.push(t.elapsed().as_micros() as u64);
                n += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("appender task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = ledger.stats();
    ledger.close();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    Run {
        events: stats.appended,
        secs: elapsed,
        commits: stats.commits,
        syncs: stats.syncs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn main() {
    let base = std::env::var_os("PORTCULLIS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("temp folder");
    let secs = env_u64("PORTCULLIS_BENCH_SECS", 3);
    let verify_events = env_u64("PORTCULLIS_BENCH_VERIFY_EVENTS", 1_000_000);
    // e.g. "default-64,strict-1": run only these append benchmarks (and skip verify unless
    // "verify" is listed).
    let only = std::env::var("PORTCULLIS_BENCH_ONLY").ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let store = std::env::var("PORTCULLIS_BENCH_STORE").unwrap_or_else(|_| "sqlite".into());
    let stores: &[&str] = match store.as_str() {
        "sqlite" => &["sqlite"],
        "postgres" => &["postgres"],
        "both" => &["sqlite", "postgres"],
        other => panic!("PORTCULLIS_BENCH_STORE={other}: use sqlite, postgres or both"),
    };
    for store in stores {
        let cluster = (*store == "postgres").then(|| {
            let bins = pg_ephemeral::PgBinaries::find().expect("apt-get install -y postgresql");
            pg_ephemeral::Cluster::start(
                &bins,
                pg_ephemeral::ClusterOptions {
                    fsync: true,
                    parent_dir: Some(dir.path().to_path_buf()),
                    ..Default::default()
                },
            )
            .expect("start PostgreSQL")
        });
        let url = cluster.as_ref().map(|c| c.url("postgres"));
        bench_store(
            &rt,
            dir.path(),
            store,
            url.as_deref(),
            secs,
            verify_events,
            only.as_deref(),
        );
    }
}

fn bench_store(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    store: &str,
    pg: Option<&str>,
    secs: u64,
    verify_events: u64,
    only: Option<&str>,
) {
    println!("{store} ledger in {}", dir.display());
    println!("acknowledged appends, 1 statement event per call, {secs} s per run");
    println!(
        "{:<8} {:>9} {:>12} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "mode", "appenders", "events/s", "commits", "ev/commit", "syncs", "p50 µs", "p99 µs"
    );
    for durability in [Durability::Default, Durability::Strict] {
        for appenders in [1, 8, 64] {
            let name = format!("{}-{appenders}", format!("{durability:?}").to_lowercase());
            if only.is_some_and(|o| !o.split(',').any(|x| x == name)) {
                continue;
            }
            let r = rt.block_on(run(dir, durability, appenders, secs, pg));
            println!(
                "{:<8} {:>9} {:>12.0} {:>10} {:>10.1} {:>10} {:>9} {:>9}",
                format!("{durability:?}").to_lowercase(),
                appenders,
                r.events as f64 / r.secs,
                r.commits,
                r.events as f64 / r.commits.max(1) as f64,
                r.syncs,
                r.p50_us,
                r.p99_us,
            );
        }
    }

    if only.is_some_and(|o| !o.split(',').any(|x| x == "verify")) {
        return;
    }
    // Verification speed over a large ledger, built with large calls from a few concurrent
    // writers (as a busy gateway would).
    let path = dir.join("verify.db");
    // On PostgreSQL the timed runs above left events in the store: verify covers them too.
    let ledger = Ledger::open(options(dir, "verify", pg)).expect("open ledger");
    let before = ledger.stats().last_seq;
    let build = Instant::now();
    support::fill(rt, &ledger, verify_events);
    let build_secs = build.elapsed().as_secs_f64();
    ledger.close();
    let size = match pg {
        Some(_) => 0,
        None => std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
    };
    println!();
    println!(
        "bulk append (1000 events per call, 4 callers): {verify_events} events in {build_secs:.2} s = {:.0} events/s, file {:.0} MiB (the ledger held {before} events before)",
        verify_events as f64 / build_secs,
        size as f64 / (1024.0 * 1024.0)
    );
    for pass in ["cold-ish", "warm"] {
        let reader = match pg {
            Some(url) => LedgerReader::open_postgres(url),
            None => LedgerReader::open(&path),
        }
        .expect("open reader");
        let t = Instant::now();
        let opts = VerifyOptions {
            key: Some(signer().verifier()),
            external: Vec::new(),
        };
        let report = reader.verify_with(&opts, |_| {}).expect("verify");
        let secs = t.elapsed().as_secs_f64();
        match report {
            VerifyReport::Verified {
                events,
                checkpoints,
                ..
            } => println!(
                "verify ({pass}, chain + Merkle tree + {} signed checkpoints): {events} events in {secs:.2} s = {:.0} events/s",
                checkpoints.checked,
                events as f64 / secs
            ),
            other => panic!("bench ledger does not verify: {other:?}"),
        }
    }
}
