//! End to end: real PostgreSQL, the real `portcullis serve`, real clients (psql, pgbench,
//! psycopg 3, asyncpg, tokio-postgres). Every statement must be in the ledger with who ran
//! it, and the chain must verify.

mod common;

use common::*;
use portcullis_core::{EventData, Outcome};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn results_by_statement(gw: &Gateway) -> HashMap<u64, EventData> {
    gw.events_of("result")
        .into_iter()
        .filter_map(|e| match e.parse().expect("parse result") {
            r @ EventData::Result { statement_seq, .. } => Some((statement_seq, r)),
            _ => None,
        })
        .collect()
}

fn statement_text(e: &EventData) -> &str {
    match e {
        EventData::Statement { text, .. } => text,
        _ => "",
    }
}

#[test]
fn psql_statements_are_recorded_with_identity_and_outcome() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let out = ok(gw.psql(&[
        "-c",
        "CREATE TABLE t (id int, name text)",
        "-c",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        "-c",
        "SELECT name FROM t ORDER BY id",
    ]));
    assert_eq!(out.lines().collect::<Vec<_>>(), ["a", "b"]);

    let stmts = gw.statements();
    let texts: Vec<&str> = stmts.iter().map(|(_, e)| statement_text(e)).collect();
    assert_eq!(
        texts,
        [
            "CREATE TABLE t (id int, name text)",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
            "SELECT name FROM t ORDER BY id"
        ]
    );
    for (_, e) in &stmts {
        let EventData::Statement {
            principal,
            connection,
            protocol,
            mode,
            client_addr,
            verdict,
            ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(principal.agent, "test-agent");
        assert_eq!(principal.auth_method, "scram-sha-256");
        assert_eq!(connection, DB);
        assert_eq!(protocol, "postgres");
        assert_eq!(mode, "simple");
        assert_eq!(verdict, "allow");
        assert!(client_addr.starts_with("127.0.0.1:"), "{client_addr}");
    }
    gw.wait_for("session_close", 1);
    let results = results_by_statement(&gw);
    let insert = &results[&stmts[1].0];
    let select = &results[&stmts[2].0];
    match (insert, select) {
        (
            EventData::Result {
                outcome: o1,
                rows: r1,
                tags: t1,
                ..
            },
            EventData::Result {
                outcome: o2,
                rows: r2,
                tags: t2,
                ..
            },
        ) => {
            assert_eq!(
                (*o1, *r1, t1.as_slice()),
                (Outcome::Ok, 2, &["INSERT 0 2".to_string()][..])
            );
            assert_eq!(
                (*o2, *r2, t2.as_slice()),
                (Outcome::Ok, 2, &["SELECT 2".to_string()][..])
            );
        }
        _ => unreachable!(),
    }
    for (seq, _) in &stmts {
        let result_seq = gw
            .events_of("result")
            .into_iter()
            .find(|e| matches!(e.parse(), Ok(EventData::Result { statement_seq, .. }) if statement_seq == *seq))
            .map(|e| e.seq)
            .expect("result event");
        assert!(result_seq > *seq, "a result is written after its statement");
    }
    let kinds: Vec<String> = gw.events().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("policy_snapshot"),
        "the rules in force come first"
    );
    assert_eq!(kinds.get(1).map(String::as_str), Some("auth_success"));
    assert_eq!(kinds.get(2).map(String::as_str), Some("session_open"));
    assert_eq!(kinds.last().map(String::as_str), Some("session_close"));

    let verify = ok(gw.cli(&["audit", "verify"]));
    assert!(verify.contains("ledger OK"), "{verify}");
    let tail = ok(gw.cli(&["audit", "tail", "-n", "50"]));
    assert!(
        tail.contains("test-agent@app: SELECT name FROM t ORDER BY id"),
        "{tail}"
    );
    assert!(tail.contains("ok SELECT 2 rows=2"), "{tail}");
    let json = ok(gw.cli(&["audit", "tail", "-n", "1", "--json"]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("json line");
    assert_eq!(v["kind"], "session_close");
}

#[test]
fn wrong_key_unknown_agent_and_bad_connection_are_refused() {
    let cluster = target(&[("log_connections", "on")]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());

    let wrong = gw.psql_as(
        "test-agent",
        "pcs_not-the-key",
        DB,
        "disable",
        &["-c", "SELECT 1"],
    );
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("password authentication failed for agent \"test-agent\""),
        "{}",
        stderr(&wrong)
    );
    let unknown = gw.psql_as("nobody", "whatever", DB, "disable", &["-c", "SELECT 1"]);
    assert!(
        stderr(&unknown).contains("password authentication failed for agent \"nobody\""),
        "{}",
        stderr(&unknown)
    );

    let failures: Vec<EventData> = gw
        .wait_for("auth_failure", 2)
        .iter()
        .map(|e| e.parse().expect("parse"))
        .collect();
    assert_eq!(failures.len(), 2);
    for f in &failures {
        let EventData::AuthFailure {
            sqlstate, reason, ..
        } = f
        else {
            unreachable!()
        };
        assert_eq!(sqlstate, "28P01");
        assert!(reason.contains("authentication failed"), "{reason}");
    }
    let log = std::fs::read_to_string(cluster.log_file()).expect("target log");
    assert!(
        !log.contains("database=app"),
        "a refused agent must not cause an upstream login:\n{log}"
    );

    let nope = gw.psql_as(
        "test-agent",
        &gw.agent.key,
        "nope",
        "disable",
        &["-c", "SELECT 1"],
    );
    assert!(
        stderr(&nope).contains("connection \"nope\" does not exist"),
        "{}",
        stderr(&nope)
    );

    let started = Instant::now();
    let dead = gw.psql_as(
        "test-agent",
        &gw.agent.key,
        "unreachable",
        "disable",
        &["-c", "SELECT 1"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "unreachable target must fail fast, not hang"
    );
    assert!(
        stderr(&dead).contains("connection \"unreachable\": cannot reach the target"),
        "{}",
        stderr(&dead)
    );

    let connect_failures: Vec<String> = gw
        .wait_for("connect_failure", 2)
        .iter()
        .map(|e| match e.parse().expect("parse") {
            EventData::ConnectFailure { sqlstate, .. } => sqlstate,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(connect_failures, ["3D000", "08001"]);
    assert_eq!(
        ok(gw.psql(&["-c", "SELECT 'still serving'"])).trim(),
        "still serving"
    );
}

#[test]
fn malformed_and_oversized_messages_close_only_that_connection() {
    let cluster = target(&[]);
    let gw = Gateway::start(
        &cluster,
        GatewayOptions {
            extra_listener: "max_message_bytes = 4096",
            ..Default::default()
        },
    );
    // A startup packet claiming 1 GiB.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.write_all(&0x4000_0000i32.to_be_bytes()).expect("write");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&b'E'), "an ErrorResponse, then close");
    assert!(String::from_utf8_lossy(&answer).contains("08P01"));
    // Garbage protocol version.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.write_all(&[0, 0, 0, 8, 0x12, 0x34, 0x56, 0x78])
        .expect("write");
    let mut answer = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.read_to_end(&mut answer);
    assert!(String::from_utf8_lossy(&answer).contains("unsupported frontend protocol"));

    // GSSAPI encryption is declined with 'N', as PostgreSQL does without GSSAPI.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .expect("write");
    let mut answer = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.read_exact(&mut answer).expect("answer");
    assert_eq!(&answer, b"N");
    drop(s);

    // After authentication: a query larger than max_message_bytes.
    let big = format!("SELECT '{}'", "x".repeat(5000));
    let o = gw.psql(&["-c", &big]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the limit is 4096 bytes"),
        "{}",
        stderr(&o)
    );

    let errors = gw.wait_for("protocol_error", 3);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(ok(gw.psql(&["-c", "SELECT 40 + 2"])).trim(), "42");
    assert!(ok(gw.cli(&["audit", "verify"])).contains("ledger OK"));
}

#[test]
fn ledger_failure_refuses_statements_and_recovers() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = gw.tokio_client().await;
        assert_eq!(
            client
                .query_one("SELECT 1::int", &[])
                .await
                .expect("q")
                .get::<_, i32>(0),
            1
        );

        // Break the store for real: the ledger journal becomes immutable (even for root).
        let chattr = |flag: &str| {
            for j in ["ledger.db-journal-a", "ledger.db-journal-b"] {
                let p = gw.dir.path().join("data").join(j);
                let o = std::process::Command::new("chattr")
                    .arg(flag)
                    .arg(&p)
                    .output()
                    .expect("chattr (e2fsprogs) is needed: apt-get install -y e2fsprogs");
                assert!(
                    o.status.success(),
                    "chattr {flag} {}: {}",
                    p.display(),
                    stderr(&o)
                );
            }
        };
        // An open transaction: the refusal must not let half of it commit.
        client
            .batch_execute("CREATE TABLE kept (n int)")
            .await
            .expect("create");
        client
            .batch_execute("BEGIN; INSERT INTO kept VALUES (1)")
            .await
            .expect("begin");
        chattr("+i");

        let simple = client
            .simple_query("CREATE TABLE must_not_exist (id int)")
            .await;
        let Err(err) = simple else {
            panic!("must be refused")
        };
        let db_err = err.as_db_error().expect("db error");
        assert_eq!(db_err.code().code(), "58030");
        assert_eq!(db_err.severity(), "FATAL", "the session ends");
        assert!(
            db_err.message().contains("fail closed"),
            "{}",
            db_err.message()
        );

        // While the ledger is broken, new sessions are refused too.
        let config = gw.tokio_config();
        let connect = || config.connect(tokio_postgres::NoTls);
        let Err(err) = connect().await else {
            panic!("a new session must be refused")
        };
        let message = err
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(message.contains("fail closed"), "{err:?}");

        chattr("-i");
        // Service resumes with a new session; the old transaction was rolled back.
        let (client, conn) = connect().await.expect("connect after repair");
        tokio::spawn(conn);
        assert_eq!(
            client
                .query_one("SELECT count(*) FROM kept", &[])
                .await
                .expect("q")
                .get::<_, i64>(0),
            0,
            "the open transaction was rolled back, not half committed"
        );
    });
    let exists = ok(psql_direct(
        &cluster,
        &[
            "-c",
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'must_not_exist%'",
        ],
    ));
    assert_eq!(
        exists.trim(),
        "0",
        "refused statements must not reach the target"
    );
    assert!(ok(gw.cli(&["audit", "verify"])).contains("ledger OK"));
}

fn pgbench(gw: &Gateway, args: &[&str]) -> String {
    let o = pgbench_command(gw, args)
        .arg(DB)
        .output()
        .expect("run pgbench");
    let mut text = stdout(&o);
    text.push_str(&stderr(&o));
    assert!(o.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[test]
fn pgbench_in_every_protocol_is_recorded_statement_by_statement() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    pgbench(&gw, &["-i", "-s", "1", "-q"]);
    let accounts = ok(psql_direct(
        &cluster,
        &["-c", "SELECT count(*) FROM pgbench_accounts"],
    ));
    assert_eq!(accounts.trim(), "100000", "pgbench -i loads through COPY");
    let copy = gw
        .statements()
        .into_iter()
        .find(|(_, e)| statement_text(e).starts_with("copy pgbench_accounts"))
        .expect("COPY recorded");
    gw.wait_for("result", 1);
    let results = results_by_statement(&gw);
    assert!(
        matches!(&results[&copy.0], EventData::Result { rows: 100000, .. }),
        "{:?}",
        results.get(&copy.0)
    );

    for protocol in ["simple", "extended", "prepared"] {
        let before = gw.statements().len();
        let out = pgbench(
            &gw,
            &[
                "-S",
                "-c",
                "4",
                "-j",
                "2",
                "-t",
                "50",
                "--protocol",
                protocol,
            ],
        );
        assert!(
            out.contains("number of transactions actually processed: 200/200"),
            "{out}"
        );
        let new: Vec<(u64, EventData)> = gw.statements().into_iter().skip(before).collect();
        let selects: Vec<&(u64, EventData)> = new
            .iter()
            .filter(|(_, e)| statement_text(e).contains("FROM pgbench_accounts WHERE aid ="))
            .collect();
        assert_eq!(
            selects.len(),
            200,
            "protocol {protocol}: one event per executed statement"
        );
        if protocol != "simple" {
            let EventData::Statement { params, mode, .. } = &selects[0].1 else {
                unreachable!()
            };
            assert_eq!(mode, "extended");
            assert_eq!(params.len(), 1, "the bound :aid is recorded");
            let aid: i64 = params[0]
                .value
                .as_deref()
                .unwrap_or("")
                .parse()
                .expect("numeric aid");
            assert!((1..=100000).contains(&aid));
        }
    }
    assert!(ok(gw.cli(&["audit", "verify"])).contains("ledger OK"));
}

#[test]
fn copy_round_trip_through_the_gateway() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("in.csv");
    let dst = dir.path().join("out.csv");
    let mut data = String::new();
    for i in 0..20000 {
        data.push_str(&format!("{i},name {i},\"quoted, \"\"text\"\" {i}\"\n"));
    }
    std::fs::write(&src, &data).expect("write csv");
    ok(gw.psql(&["-c", "CREATE TABLE c (id int, name text, note text)"]));
    ok(gw.psql(&[
        "-c",
        &format!("\\copy c FROM '{}' WITH (FORMAT csv)", src.display()),
    ]));
    ok(gw.psql(&[
        "-c",
        &format!(
            "\\copy (SELECT * FROM c ORDER BY id) TO '{}' WITH (FORMAT csv)",
            dst.display()
        ),
    ]));
    assert_eq!(std::fs::read_to_string(&dst).expect("read"), data);
    gw.wait_for("session_close", 3);
    let tags: Vec<String> = results_by_statement(&gw)
        .values()
        .filter_map(|r| match r {
            EventData::Result { tags, .. } => tags.first().cloned(),
            _ => None,
        })
        .collect();
    assert_eq!(
        tags.iter().filter(|t| *t == "COPY 20000").count(),
        2,
        "{tags:?}"
    );
}

#[test]
fn same_results_direct_and_through_the_gateway() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let setup = "CREATE TABLE d (id serial primary key, n numeric, t timestamptz, j jsonb, a int[], b bytea, u text, nothing text);
                 INSERT INTO d (n, t, j, a, b, u) SELECT g * 1.25, '2025-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
                   jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x')), ARRAY[g, g+1], decode(md5(g::text), 'hex'),
                   'ünïcødé ✓ ' || g FROM generate_series(1, 3000) g;";
    ok(psql_direct(&cluster, &["-c", setup]));
    let queries = [
        "SELECT * FROM d ORDER BY id",
        "SELECT count(*), sum(n), min(t), max(j->>'g') FROM d",
        "SELECT g, repeat('w', g) FROM generate_series(1, 200) g",
        "BEGIN; UPDATE d SET u = 'changed' WHERE id < 10; SELECT count(*) FROM d WHERE u = 'changed'; ROLLBACK",
        "SELECT NULL::int, ''::text, 'tab\there', E'new\\nline'",
        "SHOW server_version_num",
        "SELECT current_user, current_database()",
    ];
    for q in queries {
        let direct = ok(psql_direct(&cluster, &["-c", q]));
        let via = ok(gw.psql(&["-c", q]));
        assert_eq!(direct, via, "differs for {q}");
    }
    // Errors: same SQLSTATE and message.
    let q = "SELECT 1/0";
    let direct = psql_direct(&cluster, &["-v", "VERBOSITY=verbose", "-c", q]);
    let via = gw.psql(&["-v", "VERBOSITY=verbose", "-c", q]);
    let first = |o: &std::process::Output| stderr(o).lines().next().unwrap_or_default().to_string();
    assert_eq!(first(&direct), first(&via));
    assert!(first(&via).contains("22012"), "{}", first(&via));
}

#[test]
fn tls_on_the_client_leg_and_cleartext_only_over_tls() {
    let cluster = target(&[]);
    let gw = Gateway::start(
        &cluster,
        GatewayOptions {
            tls_mode: "required",
            extra_listener: "client_auth = \"password\"",
            ..Default::default()
        },
    );
    let plain = gw.psql_as(
        &gw.agent.name,
        &gw.agent.key,
        DB,
        "disable",
        &["-c", "SELECT 1"],
    );
    assert!(!plain.status.success());
    assert!(
        stderr(&plain).contains("accepts only TLS"),
        "{}",
        stderr(&plain)
    );
    let tls = ok(gw.psql_as(
        &gw.agent.name,
        &gw.agent.key,
        DB,
        "require",
        &["-c", "SELECT 'over tls'"],
    ));
    assert_eq!(tls.trim(), "over tls");
    let opened: Vec<EventData> = gw
        .wait_for("session_open", 1)
        .iter()
        .map(|e| e.parse().expect("parse"))
        .collect();
    let EventData::SessionOpen { tls, principal, .. } = &opened[0] else {
        unreachable!()
    };
    assert!(*tls);
    assert_eq!(principal.auth_method, "password");
    assert!(
        gw.dir.path().join("data/tls/server.crt").exists(),
        "self-signed certificate kept"
    );
}

#[test]
fn psycopg3_through_the_gateway() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let o = python_client("psycopg-basic", &gw.url(DB), &[]);
    let out = ok(o);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["count"], 15);
    assert_eq!(v["sum"], "292.5");
    assert_eq!(
        v["names"],
        serde_json::json!(["item-1", "item-2", "item-3"])
    );
    assert_eq!(v["error_sqlstate"], "42P01");
    assert_eq!(v["after_error"], "still ok");
    assert_eq!(v["copy_rows"], 20);
    assert_eq!(v["pipeline"], "ok");
    assert_eq!(v["notices"], serde_json::json!(["hello notice"]));
    let inserts: Vec<EventData> = gw
        .statements()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| statement_text(e).starts_with("INSERT INTO py_items"))
        .collect();
    assert_eq!(inserts.len(), 20);
    let recorded: Vec<Option<String>> = inserts
        .iter()
        .map(|e| match e {
            EventData::Statement { params, .. } => params.get(1).and_then(|p| p.value.clone()),
            _ => None,
        })
        .collect();
    assert!(recorded.contains(&Some("item-7".into())), "{recorded:?}");
}

#[test]
fn asyncpg_through_the_gateway_with_binary_parameters_and_cancel() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let out = ok(python_client("asyncpg-basic", &gw.url(DB), &[]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        v["rows"],
        serde_json::json!([[1, "v1", 0.25], [2, "v2", 0.5], [3, "v3", 0.75]])
    );
    assert_eq!(v["prepared"], serde_json::json!(["v4", "v5"]));
    assert_eq!(v["changed"], "changed");
    assert_eq!(v["timeout"], "cancelled");
    assert_eq!(v["after_timeout"], 7);
    assert_eq!(v["copied"], "copied");
    // asyncpg binds in binary; the gateway learns the types from ParameterDescription.
    let insert = gw
        .statements()
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| statement_text(e).starts_with("INSERT INTO apg VALUES"))
        .expect("insert recorded");
    let EventData::Statement { params, .. } = insert else {
        unreachable!()
    };
    assert_eq!(params[0].format, "binary");
    assert_eq!(params[0].type_name.as_deref(), Some("int8"));
    assert_eq!(params[0].value.as_deref(), Some("1"));
    assert_eq!(params[1].value.as_deref(), Some("v1"));
    assert_eq!(params[4].type_name.as_deref(), Some("uuid"));
    assert_eq!(
        params[4].value.as_deref(),
        Some("00000000-0000-0000-0000-000000000001")
    );
    let cancels: Vec<EventData> = gw
        .wait_for("cancel", 1)
        .iter()
        .map(|e| e.parse().expect("parse"))
        .collect();
    assert!(
        matches!(cancels[0], EventData::Cancel { matched: true, .. }),
        "{cancels:?}"
    );
}

#[test]
fn cancel_request_stops_pg_sleep() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let out = ok(python_client("psycopg-cancel", &gw.url(DB), &[]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["cancelled"], true, "{v}");
    assert_eq!(v["sqlstate"], "57014");
    assert!(v["seconds"].as_f64().unwrap_or(99.0) < 10.0, "{v}");
    assert_eq!(v["after"], 42);
    let sleep_seq = gw
        .statements()
        .into_iter()
        .find(|(_, e)| statement_text(e).contains("pg_sleep(30)"))
        .map(|(s, _)| s)
        .expect("pg_sleep recorded");
    gw.wait_for("session_close", 1);
    match &results_by_statement(&gw)[&sleep_seq] {
        EventData::Result {
            outcome, sqlstate, ..
        } => {
            assert_eq!(*outcome, Outcome::Error);
            assert_eq!(sqlstate.as_deref(), Some("57014"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn notifications_arrive_asynchronously() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let direct = format!(
        "postgresql://postgres:{TARGET_PASSWORD}@127.0.0.1:{}/{DB}",
        cluster.port()
    );
    let out = ok(python_client("psycopg-notify", &gw.url(DB), &[&direct]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        v["notifications"],
        serde_json::json!([{"channel": "portcullis_test", "payload": "hello through the gateway"}])
    );
}

#[test]
fn strict_durability_records_and_verifies() {
    let cluster = target(&[]);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            durability: "strict",
            ..Default::default()
        },
    );
    pgbench(&gw, &["-i", "-s", "1", "-q"]);
    let out = pgbench(
        &gw,
        &["-c", "4", "-j", "2", "-t", "25", "--protocol", "extended"],
    );
    assert!(
        out.contains("number of transactions actually processed: 100/100"),
        "{out}"
    );
    gw.stop();
    // The tpcb-like script runs 7 statements per transaction.
    let updates = gw
        .statements()
        .into_iter()
        .filter(|(_, e)| statement_text(e).starts_with("UPDATE pgbench_accounts"))
        .count();
    assert_eq!(updates, 100);
    assert!(ok(gw.cli(&["audit", "verify"])).contains("ledger OK"));
}

/// A CA and a server certificate for 127.0.0.1, as PEM: (ca, cert, key).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn upstream_login_with_md5_trust_and_tls() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cluster = target(&[]);
    ok(psql_direct(&cluster, &["-c", "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5-secret'; CREATE ROLE trustuser LOGIN;"]));
    // md5 and trust lines before the cluster's scram line, and TLS on the target.
    let data = cluster.data_dir().to_path_buf();
    let hba = data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).expect("read hba");
    std::fs::write(
        &hba,
        format!("host all md5user 127.0.0.1/32 md5\nhost all trustuser 127.0.0.1/32 trust\n{old}"),
    )
    .expect("write hba");
    let (ca, cert, key) = test_pki();
    let owner = std::fs::metadata(&data).expect("meta");
    for (name, body) in [("server.crt", &cert), ("server.key", &key)] {
        let p = data.join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid())).expect("chown");
    }
    ok(psql_direct(&cluster, &["-c", "ALTER SYSTEM SET ssl = on"]));
    ok(psql_direct(&cluster, &["-c", "SELECT pg_reload_conf()"]));
    std::thread::sleep(Duration::from_millis(500));

    let (other_ca, _, _) = test_pki();
    let port = cluster.port();
    let conn = |name: &str, user: &str, pw: &str, tls: &str, ca: &str| {
        format!(
            "\n[[connections]]\nname = \"{name}\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\ndatabase = \"{DB}\"\nuser = \"{user}\"\n{pw}tls = \"{tls}\"\n{ca}"
        )
    };
    let extra = [
        conn(
            "md5",
            "md5user",
            "password_file = \"md5-password\"\n",
            "disable",
            "",
        ),
        conn("trust", "trustuser", "", "disable", ""),
        conn(
            "tls",
            "postgres",
            "password_file = \"target-password\"\n",
            "require",
            "",
        ),
        conn(
            "verified",
            "postgres",
            "password_file = \"target-password\"\n",
            "verify-full",
            "ca_file = \"ca.pem\"\n",
        ),
        conn(
            "wrong-ca",
            "postgres",
            "password_file = \"target-password\"\n",
            "verify-full",
            "ca_file = \"other-ca.pem\"\n",
        ),
        conn(
            "scram-only",
            "md5user",
            "password_file = \"md5-password\"\n",
            "disable",
            "auth = [\"scram-sha-256\"]\n",
        ),
    ]
    .concat();
    let gw = Gateway::start(
        &cluster,
        GatewayOptions {
            extra_connections: extra,
            files: vec![
                ("md5-password".into(), b"md5-secret\n".to_vec()),
                ("ca.pem".into(), ca.into_bytes()),
                ("other-ca.pem".into(), other_ca.into_bytes()),
            ],
            ..Default::default()
        },
    );
    let q = |db: &str, sql: &str| {
        gw.psql_as(&gw.agent.name, &gw.agent.key, db, "disable", &["-c", sql])
    };
    assert_eq!(ok(q("md5", "SELECT current_user")).trim(), "md5user");
    assert_eq!(ok(q("trust", "SELECT current_user")).trim(), "trustuser");
    let ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    assert_eq!(ok(q(DB, ssl)).trim(), "f", "tls = disable stays plaintext");
    assert_eq!(ok(q("tls", ssl)).trim(), "t");
    assert_eq!(ok(q("verified", ssl)).trim(), "t");
    let bad = q("wrong-ca", "SELECT 1");
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("TLS handshake"), "{}", stderr(&bad));
    // A target asking for a weaker login than the connection allows gets no password.
    let weak = q("scram-only", "SELECT 1");
    assert!(!weak.status.success());
    assert!(
        stderr(&weak).contains("asks for md5 login, which this connection does not allow"),
        "{}",
        stderr(&weak)
    );
}

/// The ledger's central promise: a statement is recorded before the target sees it. The
/// target logs every statement it runs; the gateway is SIGKILLed ten times in the middle of a
/// pgbench run; every statement the target ran must be in the ledger, and the chain must
/// verify after every restart.
#[test]
fn killed_gateway_never_lets_an_unrecorded_statement_through() {
    let cluster = target(&[("log_statement", "all")]);
    let mut gw = Gateway::start(&cluster, GatewayOptions::default());
    kill_under_pgbench(&mut gw, &cluster, 10, |gw| {
        gw.statements()
            .into_iter()
            .map(|(_, e)| statement_text(&e).to_string())
            .collect()
    });
}

/// 1 500 statements with 20 kB in and out each, in one psycopg pipeline: everything recorded,
/// nothing stalls (the relay keeps reading the target while a write to it is pending).
#[test]
fn a_large_pipeline_streams_through() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let started = Instant::now();
    let mut child = std::process::Command::new(python())
        .arg(clients_script())
        .args(["psycopg-big-pipeline", &gw.url(DB)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the pipeline did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ok(child.wait_with_output().expect("output"));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["last"], 20004);
    // 1 500 × 20 kB of sealed parameters take SQLite a while to index: one batch can outlast
    // the 100 ms of quiet `statements()` waits for, so poll until all are visible.
    let deadline = Instant::now() + Duration::from_secs(20);
    let n = loop {
        let n = gw
            .statements()
            .into_iter()
            .filter(|(_, e)| statement_text(e).starts_with("SELECT length("))
            .count();
        if n >= 1500 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(n, 1500);
}
