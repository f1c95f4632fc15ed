//! Several gateways on one PostgreSQL store (`store.kind = "postgres"`): two real
//! `portcullis serve` processes under concurrent pgbench load write one ledger whose chain and
//! signed checkpoints verify; the audit commands read the store; a gateway whose key differs
//! from the store's is refused at start.

mod common;

use common::*;
use portcullis_core::EventData;
use portcullis_ledger::{CheckpointSigner, LedgerReader, VerifyOptions, VerifyReport};

/// `[store]` lines for the store whose URL is in `PORTCULLIS_TEST_STORE_URL`, signing
/// with `key_file` (relative to the data directory).
fn store_config(key_file: &str) -> String {
    format!(
        "kind = \"postgres\"\nurl_env = \"PORTCULLIS_TEST_STORE_URL\"\n\
         checkpoints = {{ key_file = \"{key_file}\", every_secs = 1 }}\n"
    )
}

/// The target cluster, with the store in its database `ledger`, whose URL the gateways and
/// the CLI inherit from the environment (each test runs in its own process).
fn target_with_store(settings: &[(&str, &str)]) -> pg_ephemeral::Cluster {
    let cluster = target(settings);
    cluster
        .create_database("ledger")
        .expect("create the store database");
    std::env::set_var("PORTCULLIS_TEST_STORE_URL", cluster.url("ledger"));
    cluster
}

fn shared_key() -> Vec<u8> {
    // A test fixture: a throwaway signing key shared by the two gateways.
    CheckpointSigner::from_seed("test.example/shared", [9u8; 32])
        .unwrap()
        .to_skey()
        .into_bytes()
}

fn pgbench(gw: &Gateway, args: &[&str]) -> std::process::Output {
    pgbench_command(gw, args)
        .arg(DB)
        .output()
        .expect("run pgbench")
}

fn processed(o: &std::process::Output) -> u64 {
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "pgbench failed:\n{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{text}"))
}

#[test]
fn two_gateways_under_pgbench_write_one_verifying_ledger() {
    let cluster = target_with_store(&[]);
    let opts = || GatewayOptions {
        store: store_config("../shared.key"),
        files: vec![("shared.key".into(), shared_key())],
        ..GatewayOptions::default()
    };
    let mut a = Gateway::start(&cluster, opts());
    let mut b = Gateway::start(&cluster, opts());
    let init = pgbench(&a, &["-i", "-s", "1", "-q"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Both gateways at once, as behind a load balancer.
    let (ta, tb) = std::thread::scope(|s| {
        let ja = s.spawn(|| processed(&pgbench(&a, &["-n", "-c", "4", "-T", "4", "-M", "simple"])));
        let jb = s.spawn(|| {
            processed(&pgbench(
                &b,
                &["-n", "-c", "4", "-T", "4", "-M", "extended"],
            ))
        });
        (ja.join().unwrap(), jb.join().unwrap())
    });
    assert!(
        ta > 0 && tb > 0,
        "both gateways served: {ta} and {tb} transactions"
    );
    a.stop();
    b.stop();

    let reader = LedgerReader::open_postgres(&cluster.url("ledger")).expect("open the store");
    let key = CheckpointSigner::from_seed("test.example/shared", [9u8; 32])
        .unwrap()
        .verifier();
    let report = reader
        .verify_with(
            &VerifyOptions {
                key: Some(key),
                external: Vec::new(),
            },
            |_| {},
        )
        .expect("verify");
    let VerifyReport::Verified {
        events,
        checkpoints,
        ..
    } = report
    else {
        panic!("the shared ledger does not verify: {report:?}");
    };
    assert_eq!(
        checkpoints.latest, events,
        "the last gateway to stop signed the whole tree"
    );
    // Every transaction's seven statements are recorded (BEGIN, 3 UPDATEs, SELECT, INSERT, END).
    let all = reader.after(0, usize::MAX).expect("read");
    assert_eq!(all.len() as u64, events);
    let statements = all.iter().filter(|e| e.kind == "statement").count() as u64;
    assert!(
        statements >= 7 * (ta + tb),
        "{statements} statements for {ta}+{tb} transactions"
    );
    // Both gateways wrote: each recorded its own policy snapshot at start and stop.
    let snapshots = all
        .iter()
        .filter(|e| matches!(e.parse(), Ok(EventData::PolicySnapshot { .. })))
        .count();
    assert!(snapshots >= 2, "{snapshots} policy snapshots");
    // Sealed in the store, opened for the reader that holds the keys.
    let update = all
        .iter()
        .find(|e| e.kind == "statement" && e.json().contains("UPDATE pgbench_accounts"))
        .expect("an UPDATE statement is in the ledger");
    assert!(
        !update.data.contains("pgbench_accounts SET"),
        "{}",
        update.data
    );

    // The audit commands read the store from the configuration (or its URL).
    let out = ok(a.cli(&["audit", "verify"]));
    assert!(
        out.contains(&format!("ledger OK: {events} events")),
        "{out}"
    );
    assert!(out.contains("signatures checked"), "{out}");
    let tail = ok(std::process::Command::new(exe())
        .args([
            "audit",
            "tail",
            "-n",
            "3",
            "--ledger",
            &cluster.url("ledger"),
        ])
        .output()
        .expect("audit tail"));
    assert_eq!(tail.lines().count(), 3, "{tail}");
    let proof = ok(a.cli(&["audit", "prove", "5"]));
    assert!(proof.contains("\"tree_size\""), "{proof}");
}

#[test]
fn a_gateway_with_its_own_key_is_refused_by_a_shared_store() {
    let cluster = target_with_store(&[]);
    let mut a = Gateway::start(
        &cluster,
        GatewayOptions {
            store: store_config("keys/own.key"),
            ..GatewayOptions::default()
        },
    );
    // A second gateway with a key of its own (created at its first start) must not join.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace(&format!("127.0.0.1:{}", a.port), "127.0.0.1:0");
    std::fs::write(&config, text).unwrap();
    std::fs::copy(
        a.dir.path().join("target-password"),
        dir.path().join("target-password"),
    )
    .unwrap();
    std::fs::copy(
        a.dir.path().join("policies.cedar"),
        dir.path().join("policies.cedar"),
    )
    .unwrap();
    let out = std::process::Command::new(exe())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a gateway with another key started:\n{err}"
    );
    assert!(err.contains("must sign with the same key"), "{err}");
    a.stop();
}

/// The crash test on the shared store: a gateway SIGKILLed five times under pgbench, the
/// target logging every statement; each one it ran is in the store, which verifies after
/// every restart.
#[test]
fn a_killed_gateway_on_the_shared_store_loses_nothing() {
    let cluster = target_with_store(&[("log_statement", "all")]);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            store: store_config("keys/ledger.key"),
            ..GatewayOptions::default()
        },
    );
    let url = cluster.url("ledger");
    kill_under_pgbench(&mut gw, &cluster, 5, |_| {
        LedgerReader::open_postgres(&url)
            .expect("open the store")
            .of_kind("statement")
            .expect("read")
            .iter()
            .filter_map(|e| match e.parse() {
                Ok(EventData::Statement { text, .. }) => Some(text),
                _ => None,
            })
            .collect()
    });
}

/// Fail closed on the shared store: with the store's database down, statements are refused
/// with the reason (the target never sees them); once it is back, the same gateway serves
/// again without a restart, and the ledger verifies.
#[test]
fn statements_are_refused_while_the_store_is_down_and_flow_again_after() {
    let cluster = target(&[("log_statement", "all")]);
    let bins = bins();
    let mut store = pg_ephemeral::Cluster::start(&bins, pg_ephemeral::ClusterOptions::default())
        .expect("start the store's PostgreSQL");
    let url = store.url("postgres");
    std::env::set_var("PORTCULLIS_TEST_STORE_URL", &url);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            store: store_config("keys/ledger.key"),
            ..GatewayOptions::default()
        },
    );
    ok(gw.psql(&["-c", "SELECT 'before the outage'"]));
    let (port, data) = (store.port(), store.data_dir().to_path_buf());
    store.stop().expect("stop the store");
    let out = gw.psql(&["-c", "SELECT 'during the outage'"]);
    assert!(!out.status.success(), "a statement ran with the store down");
    assert!(stderr(&out).contains("not recorded"), "{}", stderr(&out));
    let log = std::fs::read_to_string(cluster.log_file()).unwrap();
    assert!(
        !log.contains("during the outage"),
        "the target ran an unrecorded statement"
    );
    let back = pg_ephemeral::Cluster::start_in(
        &bins,
        &data,
        pg_ephemeral::ClusterOptions {
            port: Some(port),
            keep: true,
            ..pg_ephemeral::ClusterOptions::default()
        },
    )
    .expect("restart the store");
    ok(gw.psql(&["-c", "SELECT 'after the outage'"]));
    gw.stop();
    let texts: Vec<String> = LedgerReader::open_postgres(&url)
        .unwrap()
        .of_kind("statement")
        .unwrap()
        .iter()
        .filter_map(|e| match e.parse() {
            Ok(EventData::Statement { text, .. }) => Some(text),
            _ => None,
        })
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("before the outage")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("after the outage")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("during the outage")),
        "{texts:?}"
    );
    assert!(ok(gw.cli(&["audit", "verify"])).contains("ledger OK"));
    drop(back);
}
