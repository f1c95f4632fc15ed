//! The commands people type: `demo`, `audit verify` against a tampered ledger, `agent create`,
//! `check`.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn verify_with_python(ledger: &std::path::Path) -> std::process::Output {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tools/verify_ledger.py");
    Command::new(python())
        .arg(script)
        .arg(ledger)
        .output()
        .expect("run verify_ledger.py")
}

#[test]
fn audit_verify_names_the_first_tampered_event() {
    let cluster = target(&[]);
    let mut gw = Gateway::start(&cluster, GatewayOptions::default());
    for i in 0..5 {
        ok(gw.psql(&["-c", &format!("SELECT {i} AS n")]));
    }
    gw.stop();
    let ledger = gw.ledger_path();
    let pristine = std::fs::read(&ledger).expect("read ledger");
    let clean = ok(gw.cli(&["audit", "verify"]));
    assert!(clean.contains("ledger OK"), "{clean}");
    let independent = ok(verify_with_python(&ledger));
    assert!(independent.starts_with("OK "), "{independent}");
    let total = gw.events().len();
    assert!(total >= 20, "{total} events");

    let tamper = |sql: &str| {
        std::fs::write(&ledger, &pristine).expect("restore");
        let db = rusqlite::Connection::open(&ledger).expect("open");
        db.execute_batch(sql).expect("tamper");
    };
    let expect_broken = |seq: u64, what: &str| {
        let o = gw.cli(&["audit", "verify"]);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        let text = stdout(&o);
        assert!(
            text.contains(&format!("FAILED at event #{seq}: {what}")),
            "{text}"
        );
        let py = stdout(&verify_with_python(&ledger));
        assert!(py.starts_with(&format!("BROKEN at seq {seq}")), "{py}");
    };

    // The SQL text is sealed in the stored row; change a field in clear of that statement.
    let seq2 = gw
        .statements()
        .into_iter()
        .find(|(_, d)| matches!(d, portcullis_core::EventData::Statement { text, .. } if text == "SELECT 2 AS n"))
        .map(|(seq, _)| seq)
        .expect("the statement is in the ledger");
    tamper(&format!(
        r#"UPDATE events SET data = replace(data, '"verdict":"allow"', '"verdict":"deny"') WHERE seq = {seq2}"#
    ));
    expect_broken(seq2, "altered");

    tamper("DELETE FROM events WHERE seq = 7");
    expect_broken(7, "missing");

    // Swap two events' contents, keeping their positions: the first one no longer matches.
    tamper(
        "UPDATE events SET seq = -1 WHERE seq = 9; UPDATE events SET seq = 9 WHERE seq = 10; UPDATE events SET seq = 10 WHERE seq = -1;",
    );
    let o = gw.cli(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("FAILED at event #9"), "{}", stdout(&o));

    std::fs::write(&ledger, &pristine).expect("restore");
    assert!(ok(gw.cli(&["audit", "verify"])).contains(&format!("{total} events verified")));
}

/// Also the small things a new user sees: seeding prints no server NOTICEs, the gateway logs
/// in as a role that is not a superuser and may only read the two tables, and a session whose
/// one statement was refused closes as "0 run, 1 refused".
#[test]
fn demo_runs_and_serves_the_sample_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = Command::new(exe())
        .args(["demo", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.reopen().expect("reopen")))
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut url = None;
    let mut tail_cmd = None;
    while url.is_none() || tail_cmd.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("demo prints its connection line within 2 minutes");
        let line = line.trim().to_string();
        if let Some(rest) = line.strip_prefix("psql \"") {
            url = Some(rest.trim_end_matches('"').to_string());
        }
        if line.contains("audit tail --config") {
            tail_cmd = Some(line);
        }
    }
    let url = url.expect("url");
    assert!(url.starts_with("postgresql://demo-agent:pcs_"), "{url}");
    let o = Command::new(bins().path("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            &url,
            "-c",
            "SELECT count(*) FROM customers",
        ])
        .output()
        .expect("psql");
    assert_eq!(common::stdout(&o).trim(), "200", "{}", common::stderr(&o));
    let o = Command::new(bins().path("psql"))
        .args(["-X", "-A", "-t", &url, "-c", "SELECT count(*) FROM orders"])
        .output()
        .expect("psql");
    assert_eq!(common::stdout(&o).trim(), "600");

    // The gateway's own login: the demo's role, no superuser, no write privilege.
    let query = |sql: &str| {
        Command::new(bins().path("psql"))
            .args(["-X", "-A", "-t", "-F", "|", &url, "-c", sql])
            .output()
            .expect("psql")
    };
    let o = query("SELECT current_user");
    assert_eq!(
        common::stdout(&o).trim(),
        "portcullis_demo_gateway",
        "{}",
        common::stderr(&o)
    );
    let o = query("SHOW is_superuser");
    assert_eq!(common::stdout(&o).trim(), "off", "{}", common::stderr(&o));
    let o = query(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    );
    assert_eq!(
        common::stdout(&o).trim(),
        "f|f|f|f",
        "{}",
        common::stderr(&o)
    );
    let o = query(
        "SELECT has_table_privilege('orders', 'SELECT'), has_table_privilege('orders', 'DELETE'), has_table_privilege('customers', 'UPDATE')",
    );
    assert_eq!(common::stdout(&o).trim(), "t|f|f", "{}", common::stderr(&o));
    let config = dir.path().join("portcullis.toml");
    let config_text = std::fs::read_to_string(&config).expect("read the demo's config");
    assert!(
        config_text.contains("user = \"portcullis_demo_gateway\""),
        "{config_text}"
    );
    assert!(
        !config_text.contains("user = \"postgres\""),
        "{config_text}"
    );

    // A session whose only statement is refused.
    let o = query("DELETE FROM orders");
    assert!(
        common::stderr(&o).contains("permission denied"),
        "{}",
        common::stderr(&o)
    );

    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let demo_log = std::fs::read_to_string(log.path()).expect("read the demo's stderr");
    assert!(
        demo_log.contains("seeded database \"shop\""),
        "the demo seeded nothing? {demo_log}"
    );
    assert!(
        !demo_log.contains("NOTICE") && !demo_log.contains("skipping"),
        "seeding printed server notices:\n{demo_log}"
    );
    let o = Command::new(exe())
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .expect("verify");
    assert!(
        common::stdout(&o).contains("ledger OK"),
        "{}",
        common::stdout(&o)
    );
    let o = Command::new(exe())
        .args(["audit", "tail", "-n", "100", "--config"])
        .arg(&config)
        .output()
        .expect("tail");
    let tail = common::stdout(&o);
    assert!(
        tail.contains("demo-agent@shop: SELECT count(*) FROM customers"),
        "{tail}"
    );
    assert!(
        tail.contains("session closed: demo-agent after 1 run, 0 refused"),
        "{tail}"
    );
    assert!(
        tail.contains("session closed: demo-agent after 0 run, 1 refused"),
        "{tail}"
    );
}

#[test]
fn agent_create_prints_a_key_that_matches_its_hash() {
    let o = Command::new(exe())
        .args(["agent", "create", "bot-1"])
        .output()
        .expect("run");
    let key = common::stdout(&o).trim().to_string();
    assert!(key.starts_with("pcs_") && key.len() > 40, "{key}");
    let err = common::stderr(&o);
    let hash = err
        .lines()
        .find_map(|l| l.strip_prefix("key_hash = \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .expect("key_hash line");
    let v = portcullis_identity::ScramVerifier::parse(&hash).expect("parses");
    assert!(v.verify_password(&key));
    assert!(!v.verify_password("pcs_other"));
}

#[test]
fn check_reports_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[[listeners]]\nname = \"pg\"\nprotocol = \"postgres\"\nbind = \"nowhere\"\n",
    )
    .expect("write");
    let o = Command::new(exe())
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let err = common::stderr(&o);
    assert!(err.contains("bad.toml") && err.contains("nowhere"), "{err}");
    std::fs::write(
        &p,
        "[[listeners]]\nname = \"pg\"\nprotocol = \"mongodb\"\nbind = \"127.0.0.1:1\"\n",
    )
    .expect("write");
    let o = Command::new(exe())
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    let err = common::stderr(&o);
    assert!(err.contains("bad.toml:3"), "{err}");
}

#[test]
fn unusable_store_stops_serve_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The data directory's place is taken by a file: the ledger cannot be created.
    std::fs::write(dir.path().join("data"), "not a folder").expect("write");
    let p = dir.path().join("portcullis.toml");
    std::fs::write(
        &p,
        "[gateway]\ndata_dir = \"data\"\n[[listeners]]\nname = \"pg\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:0\"\n\
         [[connections]]\nname = \"db\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\ndatabase = \"x\"\nuser = \"x\"\n",
    )
    .expect("write");
    let o = Command::new(exe())
        .args(["serve", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let err = common::stderr(&o);
    assert!(err.contains("data"), "{err}");
}

#[test]
fn audit_tail_follow_prints_new_events() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    ok(gw.psql(&["-c", "SELECT 'before follow'"]));
    let mut child = Command::new(exe())
        .args(["audit", "tail", "-n", "1", "--follow", "--config"])
        .arg(&gw.config)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    ok(gw.psql(&["-c", "SELECT 'while following'"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("test-agent@app: SELECT 'while following'") {
            seen = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen, "audit tail --follow did not show the new statement");
}
