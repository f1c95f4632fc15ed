//! Ordinary tools through the gateway, with the real tools: `pg_dump` (schema, and schema with
//! data) as the demo's read-only analyst under the example policies and the demo's masking;
//! NOTIFY refused for that analyst (no message reaches a listener); psycopg 3 with libpq ≥ 17
//! cancelling over TLS and being told the cancel worked.

mod common;

#[allow(dead_code)]
#[path = "../src/demo/seed.rs"]
mod seed;

use common::*;
use std::process::{Command, Output};

const CUSTOMERS: usize = 200;

fn seeded_target() -> pg_ephemeral::Cluster {
    let cluster = target(&[]);
    let f = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(f.path(), seed::seed_sql(CUSTOMERS, 300, 7)).expect("write seed");
    ok(psql_direct(
        &cluster,
        &["-f", &f.path().display().to_string()],
    ));
    cluster
}

/// The demo's analyst: the example policies, group `analysts`, the demo's masking profile.
fn analyst_gateway(cluster: &pg_ephemeral::Cluster) -> Gateway {
    Gateway::start(
        cluster,
        GatewayOptions {
            policy_files: vec![example_policies()],
            groups: vec!["analysts".into()],
            extra_config: seed::DEMO_MASKING.into(),
            ..GatewayOptions::default()
        },
    )
}

fn pg_dump(port: u16, user: &str, password: &str, sslmode: &str, args: &[&str]) -> Output {
    Command::new(bins().path("pg_dump"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            DB,
        ])
        .args(["--no-password"])
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", sslmode)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run pg_dump ({e}): apt-get install -y postgresql-client")
        })
}

/// The data lines of one table's `COPY … FROM stdin;` block in a plain-format dump.
fn copy_block(dump: &str, table: &str) -> Vec<String> {
    let head = format!("COPY public.{table} ");
    let mut lines = dump.lines().skip_while(|l| !l.starts_with(&head));
    assert!(
        lines.next().is_some(),
        "no COPY block for {table} in the dump"
    );
    lines
        .take_while(|l| *l != "\\.")
        .map(str::to_string)
        .collect()
}

#[test]
fn pg_dump_works_for_the_read_only_analyst_and_its_data_is_masked() {
    let cluster = seeded_target();
    let gw = analyst_gateway(&cluster);
    let (user, key) = (gw.agent.name.clone(), gw.agent.key.clone());

    let schema = pg_dump(gw.port, &user, &key, "require", &["--schema-only"]);
    assert!(
        schema.status.success(),
        "pg_dump --schema-only through the gateway failed:\n{}\ngateway log:\n{}",
        stderr(&schema),
        gw.log()
    );
    let schema = stdout(&schema);
    for want in [
        "CREATE TABLE public.customers",
        "CREATE TABLE public.orders",
    ] {
        assert!(schema.contains(want), "{want} missing from:\n{schema}");
    }
    let direct_schema = stdout(&pg_dump(
        cluster.port(),
        "postgres",
        TARGET_PASSWORD,
        "disable",
        &["--schema-only"],
    ));
    let ddl = |d: &str| -> Vec<String> {
        d.lines()
            // Comments, and pg_dump's per-run random `\restrict KEY` / `\unrestrict KEY`.
            .filter(|l| {
                !l.starts_with("--")
                    && !l.is_empty()
                    && !l.starts_with("\\restrict ")
                    && !l.starts_with("\\unrestrict ")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        ddl(&schema),
        ddl(&direct_schema),
        "the schema through the gateway is the schema"
    );

    let full = pg_dump(gw.port, &user, &key, "require", &[]);
    assert!(
        full.status.success(),
        "pg_dump through the gateway failed:\n{}\ngateway log:\n{}",
        stderr(&full),
        gw.log()
    );
    let full = stdout(&full);
    let direct = pg_dump(cluster.port(), "postgres", TARGET_PASSWORD, "disable", &[]);
    let direct = ok(direct);

    let masked = copy_block(&full, "customers");
    let raw = copy_block(&direct, "customers");
    assert_eq!(masked.len(), CUSTOMERS);
    assert_eq!(raw.len(), CUSTOMERS);
    // Column order of the demo table: id, full_name, email, phone, card_number, iban,
    // national_id, national_id_kind, city, … (see seed.rs). Every raw email and name is gone.
    let header = full
        .lines()
        .find(|l| l.starts_with("COPY public.customers "))
        .expect("COPY header");
    let columns: Vec<&str> = header
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(c, _)| c.split(", ").collect())
        .expect("column list");
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no column {name} in {columns:?}"))
    };
    let id = col("id");
    let sensitive = [
        "full_name",
        "email",
        "phone",
        "card_number",
        "iban",
        "national_id",
    ];
    let mut leaked = std::collections::BTreeMap::<&str, usize>::new();
    let mut emails = 0;
    for (m, r) in masked.iter().zip(&raw) {
        let m: Vec<&str> = m.split('\t').collect();
        let r: Vec<&str> = r.split('\t').collect();
        assert_eq!(m[id], r[id], "ids are kept");
        emails += usize::from(r[col("email")] != "\\N");
        for c in sensitive {
            let i = col(c);
            if r[i] != "\\N" && m[i] == r[i] {
                *leaked.entry(c).or_default() += 1;
            }
        }
    }
    eprintln!("raw values through pg_dump, per column: {leaked:?}");
    // Values the detectors find are masked in COPY rows. Known gap (masking owner): COPY TO
    // applies no column rules yet, so rule-only columns (full_name, phone, national_id) come
    // through pg_dump's COPY as they are; add them here once COPY rows carry column rules.
    for c in ["email", "card_number", "iban"] {
        assert_eq!(leaked.get(c), None, "raw {c} values came through pg_dump");
    }
    assert!(emails > 0, "the demo data has emails");
    // Non-sensitive data is whole: orders has no personal data.
    assert_eq!(copy_block(&full, "orders"), copy_block(&direct, "orders"));

    // What pg_dump ran was decided, not waved through: the ledger holds its set_config,
    // its read-only transaction and its ACCESS SHARE locks as allowed statements.
    let texts: Vec<String> = gw
        .statements()
        .into_iter()
        .filter_map(|(_, e)| match e {
            portcullis_core::EventData::Statement { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    for want in [
        "set_config('search_path', '', false)",
        "READ ONLY",
        "IN ACCESS SHARE MODE",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(want)),
            "no statement with {want:?} in the ledger: {texts:#?}"
        );
    }
}

const NOTIFY_SCRIPT: &str = r#"
import sys, json, psycopg
gateway, direct = sys.argv[1], sys.argv[2]
out = {}
with psycopg.connect(direct, autocommit=True) as listener, \
     psycopg.connect(gateway, autocommit=True) as agent, \
     psycopg.connect(direct, autocommit=True) as control:
    listener.execute("LISTEN ch")
    for sql in ["NOTIFY ch, 'from the agent'", "SELECT pg_notify('ch', 'from the agent')"]:
        try:
            agent.execute(sql)
            out[sql] = "ran"
        except psycopg.Error as e:
            out[sql] = e.sqlstate
    out["after"] = agent.execute("SELECT 1").fetchone()[0]
    control.execute("NOTIFY ch, 'control'")
    out["heard"] = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
print(json.dumps(out))
"#;

#[test]
fn notify_is_refused_for_the_read_only_analyst() {
    let cluster = seeded_target();
    let gw = analyst_gateway(&cluster);
    let direct = format!(
        "postgresql://postgres:{TARGET_PASSWORD}@127.0.0.1:{}/{DB}",
        cluster.port()
    );
    let out = ok(Command::new(python())
        .args(["-c", NOTIFY_SCRIPT, &gw.url(DB), &direct])
        .output()
        .expect("run python"));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["NOTIFY ch, 'from the agent'"], "42501", "{v}");
    assert_eq!(
        v["SELECT pg_notify('ch', 'from the agent')"], "42501",
        "{v}"
    );
    assert_eq!(v["after"], 1, "the session goes on: {v}");
    // The listener works (it heard the control message) and heard nothing from the agent.
    assert_eq!(v["heard"], serde_json::json!(["control"]), "{v}");
}

const CANCEL_SCRIPT: &str = r#"
import sys, json, time, threading, psycopg
v = psycopg.pq.version()
if v < 170000:
    sys.exit(f"libpq {v} is older than 17: this test needs libpq 17's encrypted cancel; "
             "install psycopg[binary]>=3.2 in the test venv (pip install -U 'psycopg[binary]')")
out = {"libpq": v, "psycopg": psycopg.__version__}
with psycopg.connect(sys.argv[1], sslmode="require") as conn:
    out["tls"] = conn.pgconn.ssl_in_use
    errors = []
    def cancel():
        try:
            conn.cancel_safe(timeout=10)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    t = threading.Timer(0.5, cancel)
    t.start()
    started = time.time()
    try:
        conn.execute("SELECT pg_sleep(10)")
        out["ended"] = "completed"
    except psycopg.errors.QueryCanceled as e:
        out["ended"] = "QueryCanceled"
    except psycopg.Error as e:
        out["ended"] = f"{type(e).__name__}: {e}"
    t.join()
    out["seconds"] = round(time.time() - started, 2)
    out["cancel_errors"] = errors
    conn.rollback()
    out["after"] = conn.execute("SELECT 42").fetchone()[0]
print(json.dumps(out))
"#;

#[test]
fn psycopg_cancel_over_tls_reports_success() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let run = Command::new(python())
        .args(["-c", CANCEL_SCRIPT, &gw.url(DB)])
        .output()
        .expect("run python");
    let out = ok(run);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    eprintln!("psycopg {} libpq {}", v["psycopg"], v["libpq"]);
    assert_eq!(v["tls"], true, "{v}");
    assert_eq!(v["ended"], "QueryCanceled", "{v}");
    assert_eq!(
        v["cancel_errors"],
        serde_json::json!([]),
        "cancel_safe() must report success: {v}"
    );
    assert!(v["seconds"].as_f64().is_some_and(|s| s < 5.0), "{v}");
    assert_eq!(v["after"], 42, "{v}");
    let cancels = gw.wait_for("cancel", 1);
    assert_eq!(cancels.len(), 1, "one cancel request in the ledger");
}
