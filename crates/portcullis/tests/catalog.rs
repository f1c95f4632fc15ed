//! Least privilege that does not trust what it cannot see: the gateway reads the target's
//! catalog, so a database-owned function that writes needs `function_call` even when called
//! from a SELECT, views are followed to the tables (and masking rules) behind them, and an
//! agent that may only read runs in read-only transactions on the target, so that a write the
//! classifier cannot see (a function behind an operator, a STABLE function calling a
//! VOLATILE one) fails in the database and the ledger says so.

mod common;

#[allow(dead_code)]
#[path = "../src/demo/seed.rs"]
mod seed;

use common::*;
use portcullis_core::{EventData, Outcome};

const ORDERS: usize = 300;

/// The demo's data, and objects a database owner made that the gateway's parser cannot see
/// through: functions that delete orders, one hidden behind an operator, one behind a STABLE
/// function; a harmless SQL function; views over the ruled `customers` table.
const OWNER_OBJECTS: &str = r#"
CREATE FUNCTION purge_orders() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN DELETE FROM orders; GET DIAGNOSTICS n = ROW_COUNT; RETURN n; END $$;
CREATE FUNCTION sneaky_total() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN RETURN purge_orders(); END $$;
CREATE FUNCTION purge_if(a int, b int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN DELETE FROM orders; RETURN a = b; END $$;
CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = purge_if);
CREATE FUNCTION order_count() RETURNS bigint LANGUAGE sql STABLE AS
  'SELECT count(*) FROM orders';
CREATE VIEW customer_names AS SELECT id, full_name AS who, phone AS tel, city FROM customers;
CREATE VIEW customer_names_again AS SELECT who AS name, city FROM customer_names;
CREATE SCHEMA crm;
CREATE VIEW crm.people AS SELECT id, upper(full_name) AS shout FROM public.customers;
"#;

fn seeded_target() -> pg_ephemeral::Cluster {
    let cluster = target(&[]);
    let f = tempfile::NamedTempFile::new().expect("temp file");
    let sql = format!("{}\n{OWNER_OBJECTS}", seed::seed_sql(200, ORDERS, 7));
    std::fs::write(f.path(), sql).expect("write seed");
    ok(psql_direct(
        &cluster,
        &["-f", &f.path().display().to_string()],
    ));
    cluster
}

/// The demo's analyst (example policies, group `analysts`, the demo's masking), and an agent
/// `dba` that may change the schema.
fn gateway(cluster: &pg_ephemeral::Cluster, dba: &Agent) -> Gateway {
    Gateway::start(
        cluster,
        GatewayOptions {
            policy_files: vec![example_policies(), "dba.cedar".into()],
            files: vec![(
                "dba.cedar".into(),
                b"permit(principal == Portcullis::Agent::\"dba\", action, resource);\n".to_vec(),
            )],
            groups: vec!["analysts".into()],
            extra_config: format!(
                "\n[[agents]]\nname = \"dba\"\nkey_hash = \"{}\"\n\n{}",
                dba.key_hash,
                seed::DEMO_MASKING
            ),
            ..GatewayOptions::default()
        },
    )
}

fn orders(cluster: &pg_ephemeral::Cluster) -> usize {
    ok(psql_direct(
        cluster,
        &["-Atc", "SELECT count(*) FROM orders"],
    ))
    .trim()
    .parse()
    .expect("a count")
}

/// psql as the analyst: (success, stdout, stderr).
fn analyst(gw: &Gateway, sql: &str) -> (bool, String, String) {
    let o = gw.psql(&["-c", sql]);
    (o.status.success(), stdout(&o), stderr(&o))
}

#[test]
fn a_database_owned_function_that_writes_needs_a_policy_that_permits_it() {
    let cluster = seeded_target();
    let dba = agent("dba");
    let gw = gateway(&cluster, &dba);
    assert_eq!(orders(&cluster), ORDERS);

    for sql in [
        "SELECT purge_orders()",
        "SELECT public.purge_orders()",
        "SELECT id FROM customers WHERE purge_orders() > 0",
        "SELECT * FROM (SELECT purge_orders()) s",
        "SELECT no_such_function_anywhere()",
    ] {
        let (ok, _, err) = analyst(&gw, sql);
        assert!(!ok, "{sql} ran for the read-only analyst");
        assert!(
            err.contains("permission denied") && err.contains("function_call"),
            "{sql}: {err}"
        );
        assert_eq!(orders(&cluster), ORDERS, "{sql} deleted orders");
    }
    // What the catalog knows to be harmless still runs.
    let (ok, out, err) = analyst(&gw, "SELECT order_count(), lower('A'), now() IS NOT NULL");
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("{ORDERS}|a|t")), "{out}");

    // The refusal says what the catalog said.
    let refused = gw
        .statements()
        .into_iter()
        .find_map(|(_, e)| match e {
            EventData::Statement { text, decision, .. } if text == "SELECT purge_orders()" => {
                decision.map(|d| d.notes)
            }
            _ => None,
        })
        .expect("the refused statement is in the ledger");
    assert!(
        refused
            .iter()
            .any(|n| n.contains("purge_orders() is VOLATILE (plpgsql")),
        "{refused:?}"
    );

    // `policy explain --catalog` reads the same catalog and says so; without it, it says the
    // catalog was not consulted.
    let explain = |extra: &[&str]| {
        std::process::Command::new(exe())
            .args([
                "policy",
                "explain",
                "--agent",
                &gw.agent.name,
                "--connection",
                DB,
            ])
            .arg("--config")
            .arg(&gw.config)
            .args(extra)
            .arg("SELECT order_count()")
            .output()
            .expect("run portcullis")
    };
    let with = explain(&["--catalog"]);
    assert!(with.status.success(), "{}", stderr(&with));
    let with = stdout(&with);
    assert!(with.contains("catalog: read from connection"), "{with}");
    assert!(with.contains("order_count() is STABLE (sql"), "{with}");
    let without = explain(&[]);
    assert!(
        stdout(&without).contains("catalog: not consulted"),
        "{}",
        stdout(&without)
    );
    assert!(
        !without.status.success(),
        "an unknown function is not allowed"
    );
}

#[test]
fn a_write_the_classifier_cannot_see_fails_in_the_database_for_a_read_only_agent() {
    let cluster = seeded_target();
    let dba = agent("dba");
    let gw = gateway(&cluster, &dba);

    // Control: directly, both hide a DELETE that works (rolled back here).
    for sql in ["SELECT sneaky_total()", "SELECT 1 === 1"] {
        let out = ok(psql_direct(
            &cluster,
            &[
                "-Atc",
                &format!("BEGIN; {sql}; SELECT count(*) FROM orders; ROLLBACK"),
            ],
        ));
        assert!(out.lines().any(|l| l == "0"), "{sql} did not delete: {out}");
    }

    // Through the gateway the classifier lets them pass (a STABLE function; an operator), but
    // the analyst's transactions are read-only on the target.
    for sql in [
        "SELECT sneaky_total()",
        "SELECT 1 === 1",
        "RESET ALL; SELECT 1 === 1",
        "SET default_transaction_read_only TO DEFAULT; SELECT 1 === 1",
    ] {
        let (ok, _, err) = analyst(&gw, sql);
        assert!(!ok, "{sql} succeeded");
        assert!(err.contains("read-only transaction"), "{sql}: {err}");
        assert_eq!(orders(&cluster), ORDERS, "{sql} deleted orders");
    }
    // Turning it off is refused by policy.
    for sql in [
        "SET default_transaction_read_only = off",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "BEGIN READ WRITE",
        "BEGIN; SET transaction_read_only = off",
        "BEGIN; RESET transaction_read_only",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
    ] {
        let (ok, _, err) = analyst(&gw, &format!("{sql}; SELECT 1 === 1"));
        assert!(!ok, "{sql} succeeded");
        assert!(err.contains("permission denied"), "{sql}: {err}");
        assert_eq!(orders(&cluster), ORDERS, "{sql} deleted orders");
    }
    // Reading still works.
    let (ok, out, err) = analyst(&gw, "SELECT count(*) FROM orders");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), ORDERS.to_string());

    // The ledger: the session was opened read-only, and the failure is recorded as such.
    let opens = gw.events_of("session_open");
    assert!(opens.iter().any(|e| matches!(&e.parse().expect("parse"),
        EventData::SessionOpen { params, .. }
            if params.iter().any(|(k, v)| k == "options" && v.contains("default_transaction_read_only=on")))));
    let failures: Vec<_> = gw
        .events_of("result")
        .into_iter()
        .filter(|e| {
            matches!(&e.parse().expect("parse"), EventData::Result { outcome: Outcome::Error, sqlstate: Some(s), .. } if s == "25006")
        })
        .collect();
    assert!(failures.len() >= 4, "{} results with 25006", failures.len());

    // An agent that may write gets ordinary transactions.
    let o = gw.psql_as(
        "dba",
        &dba.key,
        DB,
        "prefer",
        &["-c", "BEGIN; SELECT 1 === 1; ROLLBACK"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn views_over_ruled_tables_are_masked_like_the_tables() {
    let cluster = seeded_target();
    let dba = agent("dba");
    let gw = gateway(&cluster, &dba);
    let raw: Vec<String> = ok(psql_direct(
        &cluster,
        &["-Atc", "SELECT full_name, phone FROM customers ORDER BY id"],
    ))
    .lines()
    .map(str::to_string)
    .collect();
    let names: Vec<&str> = raw
        .iter()
        .filter_map(|l| l.split_once('|').map(|(n, _)| n))
        .collect();
    assert_eq!(names.len(), 200);

    for (sql, what) in [
        (
            "SELECT who FROM customer_names ORDER BY id",
            "a renaming view",
        ),
        (
            "SELECT name FROM customer_names_again",
            "a view over a view",
        ),
        ("SELECT shout FROM crm.people", "a view in another schema"),
        (
            "SET search_path = crm, public; SELECT shout FROM people",
            "found by search_path",
        ),
        ("SELECT * FROM customer_names", "SELECT *"),
    ] {
        let (ok, out, err) = analyst(&gw, sql);
        assert!(ok, "{what}: {err}");
        assert!(out.lines().count() >= 200, "{what}: {out}");
        for n in &names {
            assert!(
                !out.contains(n) && !out.contains(&n.to_uppercase()),
                "{what}: raw name {n} in:\n{out}"
            );
        }
    }
    // The phone rule (`last4`) follows the alias `tel`; the city (no rule) is whole.
    let (ok, out, err) = analyst(&gw, "SELECT tel, city FROM customer_names ORDER BY id");
    assert!(ok, "{err}");
    let direct = ok_lines(&cluster, "SELECT phone, city FROM customers ORDER BY id");
    for (m, r) in out.lines().zip(&direct) {
        let (mt, mc) = m.split_once('|').expect("two columns");
        let (rt, rc) = r.split_once('|').expect("two columns");
        assert_eq!(mc, rc, "city is kept");
        if !rt.is_empty() {
            assert_ne!(mt, rt, "a raw phone number through the view");
        }
    }
}

fn ok_lines(cluster: &pg_ephemeral::Cluster, sql: &str) -> Vec<String> {
    ok(psql_direct(cluster, &["-Atc", sql]))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_schema_change_through_the_gateway_is_seen_at_once() {
    let cluster = seeded_target();
    let dba = agent("dba");
    let gw = gateway(&cluster, &dba);
    let as_dba = |sql: &str| {
        let o = gw.psql_as("dba", &dba.key, DB, "prefer", &["-c", sql]);
        assert!(o.status.success(), "{sql}: {}", stderr(&o));
    };
    as_dba("CREATE FUNCTION tally() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT 1::bigint'");
    let (ok, _, err) = analyst(&gw, "SELECT tally()");
    assert!(ok, "a STABLE function created through the gateway: {err}");

    // Redefined to write, in a transaction: not trusted while it is open, and once it is
    // committed the catalog is read again before the analyst's next statement.
    as_dba(
        "BEGIN; DROP FUNCTION tally(); \
         CREATE FUNCTION tally() RETURNS bigint LANGUAGE plpgsql AS \
         'BEGIN DELETE FROM orders; RETURN 0; END'; COMMIT",
    );
    let (ok, _, err) = analyst(&gw, "SELECT tally()");
    assert!(!ok, "the redefined function ran");
    assert!(err.contains("function_call"), "{err}");
    assert_eq!(orders(&cluster), ORDERS);
}
