//! End to end: least-privilege policy on parsed statements. Real PostgreSQL, the real
//! `portcullis serve` with the example policies, real psql and tokio-postgres.

mod common;

use common::*;
use portcullis_core::{EventData, Outcome};
use std::time::{Duration, Instant};

const SETUP: &str = "CREATE TABLE orders (id int PRIMARY KEY, total numeric, note text);
INSERT INTO orders SELECT g, g * 10, 'n' || g FROM generate_series(1, 50) g;
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers VALUES (1, 'ada'), (2, 'grace');
CREATE TABLE audit_log (id int);";

/// Everything the database holds that a write could change: row counts, contents, schema,
/// roles and settings.
const FINGERPRINT: &str = "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
  SELECT 'o' || o::text AS x FROM orders o
  UNION ALL SELECT 'c' || c::text FROM customers c
  UNION ALL SELECT 'a' || a::text FROM audit_log a
  UNION ALL SELECT 't' || relname || relkind::text FROM pg_class WHERE relnamespace = 'public'::regnamespace
  UNION ALL SELECT 'r' || rolname FROM pg_roles
  UNION ALL SELECT 'f' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
  UNION ALL SELECT 's' || setting FROM pg_settings WHERE name = 'work_mem' AND source <> 'session'
) f";

fn analyst_gateway(cluster: &pg_ephemeral::Cluster) -> Gateway {
    Gateway::start(
        cluster,
        GatewayOptions {
            policy_files: vec![example_policies()],
            groups: vec!["analysts".into()],
            ..Default::default()
        },
    )
}

#[test]
fn read_only_analyst_reads_and_every_write_is_refused_with_42501() {
    let cluster = target(&[]);
    ok(psql_direct(&cluster, &["-c", SETUP]));
    let before = ok(psql_direct(&cluster, &["-c", FINGERPRINT]));
    let gw = analyst_gateway(&cluster);

    assert_eq!(
        ok(gw.psql(&["-c", "SELECT count(*) FROM orders"])).trim(),
        "50"
    );
    assert_eq!(
        ok(gw.psql(&["-c", "SELECT name FROM customers ORDER BY id"])).trim(),
        "ada\ngrace"
    );

    let writes = [
        "INSERT INTO orders VALUES (100, 1, 'x')",
        "UPDATE orders SET total = 0",
        "DELETE FROM orders",
        "MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN DELETE",
        "TRUNCATE orders",
        "DROP TABLE orders",
        "CREATE TABLE evil (x int)",
        "ALTER TABLE orders ADD COLUMN y int",
        "CREATE ROLE mallory LOGIN SUPERUSER",
        "GRANT ALL ON orders TO PUBLIC",
        "SET ROLE postgres",
        "ALTER SYSTEM SET work_mem = '1GB'",
        "DO $$BEGIN DELETE FROM orders; END$$",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d",
        "WITH a AS (SELECT 1), b AS (WITH c AS (UPDATE orders SET total = 0 RETURNING 1) SELECT * FROM c) SELECT * FROM b",
        "EXPLAIN ANALYZE DELETE FROM orders",
        "SELECT 1; DELETE FROM orders",
        "select 1;/* hidden */dElEtE/**/FROM \"orders\"",
        "SELECT * INTO stolen FROM customers",
        "CREATE TABLE copy AS SELECT * FROM customers",
        "COPY orders FROM PROGRAM 'true'",
        "COPY orders TO '/tmp/portcullis-test-exfil'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_catalog.pg_ls_dir('.')",
        "SELECT nextval('orders_id_seq')",
        "SELECT set_config('role', 'postgres', false)",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "NOTIFY orders_changed, 'x'",
        "SELECT query_to_xml('DELETE FROM orders RETURNING 1', true, true, '')",
        "SELECT * FROM orders FOR UPDATE",
        "PREPARE p AS DELETE FROM orders",
        "LOAD 'plpgsql'",
        "SELECT rolpassword FROM pg_authid",
        "INSERT INTO audit_log VALUES ($$a;b$$)",
        "SELEC 1",
    ];
    for sql in writes {
        let o = gw.psql(&["-v", "VERBOSITY=verbose", "-c", sql]);
        let err = stderr(&o);
        assert!(
            !o.status.success(),
            "{sql:?} was not refused: {}",
            stdout(&o)
        );
        assert!(
            err.contains("ERROR:  42501: portcullis: permission denied"),
            "{sql:?}: expected SQLSTATE 42501 from the gateway, got: {err}"
        );
    }
    // The policy that decided is named.
    let o = gw.psql(&["-c", "SELECT rolpassword FROM pg_authid"]);
    assert!(
        stderr(&o).contains("guard-no-credential-catalogs"),
        "{}",
        stderr(&o)
    );
    let o = gw.psql(&["-v", "VERBOSITY=verbose", "-c", "DELETE FROM orders"]);
    assert!(
        stderr(&o).contains("no policy permits delete on public.orders for agent \"test-agent\""),
        "{}",
        stderr(&o)
    );

    // The session stays usable, and a refused write inside a transaction aborts it: the
    // earlier (allowed) statements of the transaction cannot commit half of it.
    let script = "BEGIN;
SELECT count(*) FROM orders;
DELETE FROM orders;
SELECT 1;
COMMIT;
SELECT 'after', count(*) FROM orders;
SELECT 1 / 0;
SELECT 'still usable';";
    let o = std::process::Command::new(bins().path("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "VERBOSITY=verbose",
            "-h",
            "127.0.0.1",
        ])
        .args(["-p", &gw.port.to_string(), "-U", &gw.agent.name, "-d", DB])
        .env("PGPASSWORD", &gw.agent.key)
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(script);
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(out.contains("50"), "{out}");
    assert!(err.contains("42501"), "{err}");
    assert!(
        err.contains("25P02"),
        "after the refusal the transaction is aborted on the target: {err}"
    );
    assert!(
        out.contains("ROLLBACK"),
        "COMMIT of an aborted transaction rolls back: {out}"
    );
    assert!(out.contains("after|50"), "{out}");
    assert!(
        err.contains("22012"),
        "an ordinary error still comes from the target: {err}"
    );
    assert!(out.contains("still usable"), "{out}");

    let after = ok(psql_direct(&cluster, &["-c", FINGERPRINT]));
    assert_eq!(
        before, after,
        "the database changed under a read-only policy"
    );
    assert!(!std::path::Path::new("/tmp/portcullis-test-exfil").exists());

    // Every decision is in the ledger: verdict, classes, deciding policies, snapshot.
    let events = gw.events();
    let snapshots: Vec<String> = events
        .iter()
        .filter_map(|e| match e.parse().ok()? {
            EventData::PolicySnapshot { hash, policies, .. } => {
                assert_eq!(policies.len(), 4, "the four example files are recorded");
                assert!(policies.iter().all(|p| !p.text.is_empty()));
                Some(hash)
            }
            _ => None,
        })
        .collect();
    assert_eq!(snapshots.len(), 1);
    let mut denied = 0;
    for e in &events {
        let Ok(EventData::Statement {
            text,
            verdict,
            reason,
            decision,
            ..
        }) = e.parse()
        else {
            continue;
        };
        let d = decision.expect("statement events carry the decision");
        assert_eq!(d.snapshot, snapshots[0]);
        if text == "SELECT rolpassword FROM pg_authid" {
            assert_eq!(verdict, "deny");
            assert_eq!(d.policies, ["guard-no-credential-catalogs"]);
            assert_eq!(d.reads, ["pg_catalog.pg_authid"]);
        }
        if text == "SELECT count(*) FROM orders" {
            assert_eq!(verdict, "allow");
            assert_eq!(d.classes, ["select"]);
            assert_eq!(d.policies, ["analyst-read"]);
        }
        if text == "EXPLAIN ANALYZE DELETE FROM orders" {
            assert_eq!(d.classes, ["select", "delete"]);
        }
        if verdict == "deny" {
            denied += 1;
            assert!(reason.is_some());
        }
    }
    assert!(denied >= writes.len(), "{denied} denials recorded");
    let refused = events
        .iter()
        .filter(|e| {
            matches!(e.parse(), Ok(EventData::Result { outcome: Outcome::Refused, sqlstate: Some(ref s), .. }) if s == "42501")
        })
        .count();
    assert!(refused >= writes.len(), "{refused} refused results");
    ok(gw.cli(&["audit", "verify"]));
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &str) -> std::process::Output;
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }
}

#[test]
fn extended_protocol_refusals_keep_the_session_and_the_pipeline_consistent() {
    let cluster = target(&[]);
    ok(psql_direct(&cluster, &["-c", SETUP]));
    let gw = analyst_gateway(&cluster);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = gw.tokio_client().await;
        // Refused at Parse (prepare).
        let e = client
            .prepare("DELETE FROM orders WHERE id = $1")
            .await
            .expect_err("a DELETE must be refused");
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{e:?}"
        );
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(msg.contains("delete on public.orders"), "{msg}");
        // Allowed statements keep working on the same session, with parameters.
        let row = client
            .query_one("SELECT total FROM orders WHERE id = $1", &[&7i32])
            .await
            .expect("select");
        let total: rust_decimal_free::Numeric = row.get(0);
        assert_eq!(total.0, "70");
        // A refused statement in a pipeline fails alone; what follows runs.
        let (a, b, c) = tokio::join!(
            client.query_one("SELECT count(*)::int FROM orders", &[]),
            client.execute("UPDATE orders SET total = 0", &[]),
            client.query_one("SELECT 2::int", &[]),
        );
        assert_eq!(a.expect("first").get::<_, i32>(0), 50);
        assert_eq!(
            b.expect_err("update refused").code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
        );
        assert_eq!(c.expect("third").get::<_, i32>(0), 2);
    });
    let n = ok(psql_direct(
        &cluster,
        &["-c", "SELECT sum(total) FROM orders"],
    ));
    assert_eq!(n.trim(), "12750");
}

/// numeric as text, without pulling a decimal crate in.
mod rust_decimal_free {
    pub struct Numeric(pub String);
    impl<'a> tokio_postgres::types::FromSql<'a> for Numeric {
        fn from_sql(
            _: &tokio_postgres::types::Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            // Binary numeric: ndigits, weight, sign, dscale, then base-10000 digits.
            let n = i16::from_be_bytes([raw[0], raw[1]]) as usize;
            let weight = i16::from_be_bytes([raw[2], raw[3]]) as i32;
            let mut v: i64 = 0;
            for i in 0..n {
                let d = u16::from_be_bytes([raw[8 + 2 * i], raw[9 + 2 * i]]) as i64;
                v = v * 10_000 + d;
            }
            let scale = weight + 1 - n as i32;
            for _ in 0..scale.max(0) {
                v *= 10_000;
            }
            Ok(Numeric(v.to_string()))
        }
        fn accepts(ty: &tokio_postgres::types::Type) -> bool {
            *ty == tokio_postgres::types::Type::NUMERIC
        }
    }
}

#[test]
fn support_agent_is_limited_to_two_tables_and_migrations_wait_for_review() {
    let cluster = target(&[]);
    ok(psql_direct(&cluster, &["-c", SETUP]));
    // The test agent plays "support" here: the example policies, agent renamed, no groups.
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            policy_files: vec![example_policies()],
            ..Default::default()
        },
    );
    gw.stop();
    let text = std::fs::read_to_string(&gw.config).expect("config");
    let text = text.replace("name = \"test-agent\"", "name = \"support\"");
    std::fs::write(&gw.config, text).expect("config");
    gw.agent.name = "support".into();
    gw.spawn();
    ok(gw.psql(&[
        "-c",
        "SELECT c.name, o.total FROM customers c JOIN orders o ON o.id = c.id",
    ]));
    ok(gw.psql(&["-c", "UPDATE orders SET note = 'call back' WHERE id = 1"]));
    for sql in [
        "SELECT * FROM audit_log",
        "DELETE FROM orders WHERE id = 1",
        "UPDATE customers SET name = 'x'",
        "SET search_path = pg_temp",
    ] {
        let o = gw.psql(&["-v", "VERBOSITY=verbose", "-c", sql]);
        assert!(
            stderr(&o).contains("42501"),
            "{sql}: {} / {} / {:?}\n{}",
            stderr(&o),
            stdout(&o),
            o.status,
            gw.log()
        );
    }
    let note = ok(psql_direct(
        &cluster,
        &["-c", "SELECT note FROM orders WHERE id = 1"],
    ));
    assert_eq!(note.trim(), "call back");

    // The migrator: DDL is held for review (refused until approvals exist, with its reason).
    gw.stop();
    let text = std::fs::read_to_string(&gw.config).expect("config");
    std::fs::write(
        &gw.config,
        text.replace("name = \"support\"", "name = \"migrator\""),
    )
    .expect("config");
    gw.agent.name = "migrator".into();
    gw.spawn();
    let o = gw.psql(&[
        "-v",
        "VERBOSITY=verbose",
        "-c",
        "CREATE INDEX ON orders (total)",
    ]);
    let err = stderr(&o);
    assert!(err.contains("42501: portcullis: held for review"), "{err}");
    assert!(
        err.contains("schema changes need a DBA's approval"),
        "{err}"
    );
    assert!(err.contains("migrator-ddl-needs-review"), "{err}");
    let reviews = gw
        .statements()
        .into_iter()
        .filter(|(_, e)| matches!(e, EventData::Statement { verdict, .. } if verdict == "review"))
        .count();
    assert_eq!(reviews, 1);
}

fn wait_for_snapshot(gw: &Gateway, kind: &str, n: usize) -> Vec<EventData> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let evs: Vec<EventData> = gw
            .events_of(kind)
            .into_iter()
            .filter_map(|e| e.parse().ok())
            .collect();
        if evs.len() >= n || Instant::now() > deadline {
            return evs;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn policies_reload_on_change_and_on_sighup_and_a_bad_version_is_refused() {
    let cluster = target(&[]);
    ok(psql_direct(&cluster, &["-c", SETUP]));
    let read_only = "permit(principal, action in [Portcullis::Action::\"select\", Portcullis::Action::\"session\"], resource);\n";
    let gw = Gateway::start(
        &cluster,
        GatewayOptions {
            files: vec![("p.cedar".into(), read_only.as_bytes().to_vec())],
            policy_files: vec!["p.cedar".into()],
            ..Default::default()
        },
    );
    let policy = gw.dir.path().join("p.cedar");
    let delete = || gw.psql(&["-v", "VERBOSITY=verbose", "-c", "DELETE FROM audit_log"]);
    assert!(stderr(&delete()).contains("42501"));

    // A broken edit is refused; the old policies stay in force.
    std::fs::write(
        &policy,
        format!(
            "{read_only}\npermit(principal, action == Portcullis::Action::\"delet\", resource);\n"
        ),
    )
    .expect("write");
    let rejected = wait_for_snapshot(&gw, "policy_rejected", 1);
    assert_eq!(
        rejected.len(),
        1,
        "no policy_rejected event; log:\n{}",
        gw.log()
    );
    let EventData::PolicyRejected { error, trigger, .. } = &rejected[0] else {
        unreachable!()
    };
    assert_eq!(trigger, "file change");
    assert!(error.contains("p.cedar:3:"), "{error}");
    assert!(stderr(&delete()).contains("42501"));
    ok(gw.psql(&["-c", "SELECT 1"]));

    // A good edit is put in force without a restart, and recorded with its full text.
    let writer = format!(
        "{read_only}permit(principal, action == Portcullis::Action::\"delete\", resource);\n"
    );
    std::fs::write(&policy, &writer).expect("write");
    let snaps = wait_for_snapshot(&gw, "policy_snapshot", 2);
    assert_eq!(snaps.len(), 2, "log:\n{}", gw.log());
    let EventData::PolicySnapshot {
        trigger,
        policies,
        hash,
        ..
    } = &snaps[1]
    else {
        unreachable!()
    };
    assert_eq!(trigger, "file change");
    assert_eq!(policies[0].text, writer);
    ok(delete());
    let last = gw.statements().pop().expect("a statement");
    let EventData::Statement { decision, .. } = last.1 else {
        unreachable!()
    };
    assert_eq!(
        &decision.expect("decision").snapshot,
        hash,
        "the statement names the snapshot in force"
    );

    // SIGHUP reloads too (here: the same files, recorded again as the version in force).
    let pid = gw.pid();
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let snaps = wait_for_snapshot(&gw, "policy_snapshot", 3);
    let EventData::PolicySnapshot { trigger, .. } = &snaps[2] else {
        unreachable!()
    };
    assert_eq!(trigger, "SIGHUP");
}

#[test]
fn check_and_explain_point_at_files_lines_and_policies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("portcullis.toml");
    std::fs::write(
        &cfg,
        format!(
            "[policy]\nfiles = [{:?}, \"extra.cedar\"]\n\n[[listeners]]\nname = \"pg\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:0\"\n\n[[connections]]\nname = \"shop\"\ntype = \"postgres\"\nhost = \"127.0.0.1\"\ndatabase = \"shop\"\nuser = \"x\"\ntags = {{ env = \"prod\" }}\n\n[[agents]]\nname = \"analyst\"\nkey_hash = {:?}\ngroups = [\"analysts\"]\n",
            example_policies(),
            agent("analyst").key_hash
        ),
    )
    .expect("write");
    let extra = dir.path().join("extra.cedar");
    std::fs::write(
        &extra,
        "// extra\npermit(principal, action, resource)\nwhen { context.nonsense == 1 };\n",
    )
    .expect("write");
    let run = |args: &[&str]| {
        std::process::Command::new(exe())
            .args(args)
            .output()
            .expect("run")
    };
    let cfg_s = cfg.display().to_string();
    let o = run(&["check", "--config", &cfg_s]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}:3:", extra.display())), "{err}");
    assert!(err.contains("nonsense"), "{err}");

    std::fs::write(&extra, "// nothing more\n").expect("write");
    let o = run(&["check", "--config", &cfg_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("policy file"), "{}", stdout(&o));

    let o = run(&[
        "policy",
        "explain",
        "--config",
        &cfg_s,
        "--agent",
        "analyst",
        "--connection",
        "shop",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    ]);
    assert_eq!(o.status.code(), Some(1), "deny exits 1");
    let out = stdout(&o);
    assert!(out.contains("classes:   select, delete"), "{out}");
    assert!(
        out.contains("select         on public.orders"),
        "RETURNING reads: {out}"
    );
    assert!(out.contains("analyst-read"), "{out}");
    assert!(
        out.contains("verdict: DENY — no policy permits delete on public.orders"),
        "{out}"
    );
    let o = run(&[
        "policy",
        "explain",
        "--config",
        &cfg_s,
        "--agent",
        "analyst",
        "--connection",
        "shop",
        "--json",
        "SELECT * FROM orders",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["decision"]["verdict"], "allow");
    assert_eq!(v["decision"]["policies"][0], "analyst-read");
    let o = run(&["policy", "schema"]);
    assert!(stdout(&o).contains("namespace Portcullis"));
}

#[test]
fn client_encodings_the_parser_could_misread_are_refused() {
    let cluster = target(&[]);
    let gw = analyst_gateway(&cluster);
    let run = |encoding: &str| {
        std::process::Command::new(bins().path("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &gw.port.to_string(),
            ])
            .args(["-U", &gw.agent.name, "-d", DB, "-c", "SELECT 1"])
            .env("PGPASSWORD", &gw.agent.key)
            .env("PGCLIENTENCODING", encoding)
            .output()
            .expect("psql")
    };
    let o = run("SJIS");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("client_encoding \"SJIS\" is not accepted by the gateway"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ok(run("UTF8")).trim(), "1");
    assert_eq!(ok(run("LATIN1")).trim(), "1");
}
