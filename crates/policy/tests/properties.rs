//! Properties of the SQL classifier, checked on generated input:
//!
//! * it never panics, whatever the text (arbitrary strings, arbitrary bytes made UTF-8, and
//!   SQL-ish soup from a grammar of fragments: keywords, quotes, dollar quotes, comments,
//!   semicolons, `U&` escapes), and what it returns hangs together;
//! * it is monotone: a statement that contains others (several statements in one string, DML
//!   in a CTE, under `EXPLAIN ANALYZE`, behind `PREPARE`) never needs less than its parts.

use portcullis_policy::sql::{classify, Classification, PreparedStatements};
use portcullis_policy::Action;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::collections::BTreeSet;

/// Moderate case counts (the whole file runs in seconds in a debug build) and no regression
/// files written next to the sources: a failure prints its minimal input instead.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// What every classification must satisfy, whatever the input.
fn check_invariants(sql: &str, c: &Classification) -> Result<(), TestCaseError> {
    prop_assert!(!c.statements.is_empty(), "no statement for {:?}", sql);
    prop_assert!(!c.actions.is_empty(), "no class needed by {:?}", sql);
    // Every class needed is checked on something, and nothing else is checked.
    let checked: BTreeSet<Action> = c.checks.iter().map(|(a, _)| *a).collect();
    prop_assert_eq!(
        &checked,
        &c.actions,
        "checks and classes differ for {:?}",
        sql
    );
    for s in &c.statements {
        prop_assert!(s.actions.is_subset(&c.actions));
        prop_assert!(s.reads.is_subset(&c.reads));
        prop_assert!(s.writes.is_subset(&c.writes));
    }
    if !c.writes.is_empty() {
        prop_assert!(
            c.actions.iter().any(|a| a.writes()),
            "{:?} writes {:?} but needs no writing class",
            sql,
            c.writes
        );
    }
    Ok(())
}

/// Pieces of SQL (and of things that look like it) to glue together.
const FRAGMENTS: &[&str] = &[
    "SELECT",
    "select",
    "FROM",
    "WHERE",
    "WITH",
    "AS",
    "RETURNING",
    "INSERT INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE FROM",
    "MERGE INTO",
    "USING",
    "ON",
    "WHEN MATCHED THEN DELETE",
    "EXPLAIN",
    "ANALYZE",
    "(ANALYZE false)",
    "PREPARE p AS",
    "EXECUTE p",
    "DEALLOCATE",
    "COPY",
    "TO STDOUT",
    "FROM STDIN",
    "PROGRAM 'id'",
    "FOR UPDATE",
    "FOR SHARE",
    "ROLE",
    "SET ROLE",
    "RESET",
    "DO",
    "CALL",
    "TRUNCATE",
    "CREATE TABLE",
    "DROP",
    "GRANT",
    "ALL",
    "TO",
    "BEGIN",
    "COMMIT",
    "DECLARE c CURSOR FOR",
    "INTO",
    "TABLE",
    "LOCK",
    "VACUUM",
    "orders",
    "public.orders",
    "\"Orders\"",
    "pg_catalog",
    "pg_read_file",
    "set_config",
    "nextval",
    "dblink",
    "x",
    "t",
    "*",
    "1",
    "0",
    "$1",
    "::int",
    "(",
    ")",
    ",",
    ".",
    "=",
    "'",
    "''",
    "'abc'",
    "E'\\''",
    "\"",
    "\"\"",
    "$$",
    "$tag$",
    "$$ BEGIN DELETE FROM t; END $$",
    "U&'\\0041'",
    "U&\"d\\0061t\"",
    "UESCAPE '!'",
    "U&'!0041' UESCAPE '!'",
    "--",
    "-- c\n",
    "/*",
    "*/",
    "/* c */",
    "/* /* nested */ */",
    ";",
    ";;",
    "\n",
    "\t",
    " ",
    "\\",
    "é",
    "\u{feff}",
    "\u{0}",
];

/// SQL-ish text: fragments joined by blanks or by nothing; or a real statement with fragments
/// spliced into it (which parses more often, and so reaches more of the classifier).
fn sqlish() -> impl Strategy<Value = String> {
    let soup = prop::collection::vec(
        (
            prop::sample::select(FRAGMENTS),
            prop::sample::select(&[" ", "", "\n"][..]),
        ),
        0..24,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .flat_map(|(f, sep)| [f, sep])
            .collect::<String>()
    });
    let all: Vec<&'static str> = STATEMENTS
        .iter()
        .chain(DML)
        .chain(QUERIES)
        .copied()
        .collect();
    let spliced = (
        prop::sample::select(all),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop::sample::select(FRAGMENTS),
            ),
            0..4,
        ),
    )
        .prop_map(|(base, inserts)| {
            let mut s = base.to_string();
            for (at, fragment) in inserts {
                let bounds: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
                let i = bounds[at.index(bounds.len())];
                s.insert_str(i, &format!(" {fragment} "));
            }
            s
        });
    prop_oneof![soup, spliced]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn never_panics_on_arbitrary_strings(sql in any::<String>()) {
        let c = classify(&sql);
        check_invariants(&sql, &c)?;
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let sql = String::from_utf8_lossy(&bytes);
        let c = classify(&sql);
        check_invariants(&sql, &c)?;
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn never_panics_on_sqlish_text(sql in sqlish()) {
        let c = classify(&sql);
        check_invariants(&sql, &c)?;
    }
}

/// Single statements covering every class (and the ways a class is reached).
const STATEMENTS: &[&str] = &[
    // transaction
    "BEGIN",
    "COMMIT",
    "SAVEPOINT s",
    "ROLLBACK TO SAVEPOINT s",
    // session
    "SET work_mem = '64MB'",
    "SHOW work_mem",
    "RESET ALL",
    "DISCARD ALL",
    "LISTEN chan",
    "NOTIFY chan, 'x'",
    "DEALLOCATE p",
    "SET search_path = evil, public",
    "RESET ROLE",
    "PREPARE q AS SELECT * FROM orders",
    // select
    "SELECT 1",
    "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id",
    "VALUES (1), (2)",
    "TABLE orders",
    "EXPLAIN DELETE FROM orders",
    "FETCH 10 FROM c",
    "DECLARE c CURSOR FOR SELECT * FROM orders",
    // copy out
    "COPY orders TO STDOUT",
    "COPY (SELECT * FROM customers) TO STDOUT",
    // function call
    "CALL refresh_orders(1)",
    "SELECT nextval('orders_id_seq')",
    // insert, update, delete, merge
    "INSERT INTO orders (id) VALUES (1)",
    "INSERT INTO archive SELECT * FROM orders",
    "UPDATE orders SET total = 0 WHERE id = 1",
    "SELECT * FROM orders FOR UPDATE",
    "DELETE FROM orders WHERE id = 1",
    "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    "MERGE INTO orders o USING staging s ON o.id = s.id WHEN MATCHED THEN DELETE",
    // copy in, truncate
    "COPY orders FROM STDIN",
    "TRUNCATE orders",
    // ddl
    "CREATE TABLE t (a int)",
    "ALTER TABLE orders ADD COLUMN note text",
    "DROP TABLE orders",
    "CREATE INDEX ON orders (id)",
    "COMMENT ON TABLE orders IS 'x'",
    "SELECT * INTO copy_of_orders FROM orders",
    "CREATE TABLE summary AS SELECT count(*) FROM orders",
    // dcl
    "GRANT SELECT ON orders TO bob",
    "REVOKE ALL ON orders FROM bob",
    "CREATE ROLE bob",
    "SET ROLE postgres",
    "SELECT set_config('role', 'postgres', false)",
    // admin
    "DO $$BEGIN DELETE FROM orders; END$$",
    "ALTER SYSTEM SET work_mem = '1GB'",
    "LOAD 'plpgsql'",
    "VACUUM orders",
    "CHECKPOINT",
    "CREATE EXTENSION hstore",
    "COPY orders FROM PROGRAM 'id'",
    "SELECT pg_read_file('/etc/passwd')",
    // unknown
    "SELEC 1",
    "EXECUTE p(1)",
];

/// DML a wrapper runs (no RETURNING of their own: the wrappers that need one add it).
const DML: &[&str] = &[
    "INSERT INTO orders (id) VALUES (1)",
    "INSERT INTO archive SELECT * FROM orders",
    "INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET total = 0",
    "UPDATE orders SET total = 0 WHERE id = 1",
    "UPDATE orders SET total = c.credit FROM customers c WHERE c.id = orders.customer_id",
    "DELETE FROM orders WHERE id = 1",
    "DELETE FROM orders USING customers c WHERE c.id = orders.customer_id",
    "DELETE FROM orders WHERE pg_terminate_backend(1)",
    "INSERT INTO orders (id) SELECT nextval('orders_id_seq')",
    "MERGE INTO orders o USING staging s ON o.id = s.id WHEN MATCHED THEN DELETE",
    "MERGE INTO orders o USING staging s ON o.id = s.id \
     WHEN MATCHED THEN UPDATE SET total = s.total WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)",
];

/// Queries a wrapper runs: row locks, functions that lift the class, plain reads.
const QUERIES: &[&str] = &[
    "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * FROM orders FOR SHARE",
    "SELECT nextval('orders_id_seq')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT set_config('role', 'postgres', false)",
];

/// Wrappers that run the DML they wrap.
const DML_WRAPPERS: &[fn(&str) -> String] = &[
    |d| format!("WITH x AS ({d} RETURNING 1) SELECT * FROM x"),
    |d| format!("EXPLAIN ANALYZE {d}"),
    |d| format!("EXPLAIN (ANALYZE, BUFFERS) {d}"),
    |d| format!("PREPARE p AS {d}"),
    |d| format!("COPY ({d} RETURNING 1) TO STDOUT"),
    |d| format!("CREATE TABLE w AS WITH x AS ({d} RETURNING 1) SELECT * FROM x"),
];

/// Wrappers that run the query they wrap.
const QUERY_WRAPPERS: &[fn(&str) -> String] = &[
    |q| format!("WITH x AS ({q}) SELECT * FROM x"),
    |q| format!("SELECT * FROM ({q}) s"),
    |q| format!("EXPLAIN ANALYZE {q}"),
    |q| format!("PREPARE p AS {q}"),
    |q| format!("COPY ({q}) TO STDOUT"),
    |q| format!("DECLARE c CURSOR FOR {q}"),
    |q| format!("CREATE TABLE w AS {q}"),
];

/// `outer`, which runs `inner`, needs every writing class `inner` needs, reads and writes
/// every table `inner` does, and is at least as privileged.
fn runs_at_least(
    outer_sql: &str,
    outer: &Classification,
    inner_sql: &str,
    inner: &Classification,
) -> Result<(), String> {
    let fail = |what: &str, o: &dyn std::fmt::Debug, i: &dyn std::fmt::Debug| {
        Err(format!(
            "{outer_sql:?} {what} {o:?}, less than {i:?} for {inner_sql:?}"
        ))
    };
    if max_action(outer) < max_action(inner) {
        return fail("needs at most", &max_action(outer), &max_action(inner));
    }
    let (ow, iw) = (write_classes(outer), write_classes(inner));
    if !ow.is_superset(&iw) {
        return fail("needs writing classes", &ow, &iw);
    }
    if !outer.writes.is_superset(&inner.writes) {
        return fail("writes", &outer.writes, &inner.writes);
    }
    if !outer.reads.is_superset(&inner.reads) {
        return fail("reads", &outer.reads, &inner.reads);
    }
    Ok(())
}

fn wrapped(statements: &[&str], wrappers: &[fn(&str) -> String]) -> Vec<String> {
    let mut failures = Vec::new();
    for s in statements {
        let inner = classify(s);
        assert!(!is_unknown(&inner), "{s:?} should parse");
        for wrap in wrappers {
            let sql = wrap(s);
            let outer = classify(&sql);
            if let Err(e) = check_invariants(&sql, &outer) {
                failures.push(e.to_string());
            }
            if let Err(e) = runs_at_least(&sql, &outer, s, &inner) {
                failures.push(e);
            }
        }
    }
    failures
}

#[test]
fn wrapped_dml_needs_what_it_wraps() {
    let failures = wrapped(DML, DML_WRAPPERS);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn wrapped_queries_need_what_they_wrap() {
    let failures = wrapped(QUERIES, QUERY_WRAPPERS);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// `EXECUTE p`, once resolved against `PREPARE p AS s`, needs what `s` needs; and so do the
/// statements that run `EXECUTE p` in turn.
#[test]
fn executing_a_prepared_statement_needs_what_it_runs() {
    let mut failures = Vec::new();
    for s in DML.iter().chain(QUERIES) {
        let mut session = PreparedStatements::default();
        session.apply(&classify(&format!("PREPARE p AS {s}")));
        let inner = classify(s);
        let execute = classify("EXECUTE p").resolve(&session);
        if let Err(e) = runs_at_least("EXECUTE p", &execute, s, &inner) {
            failures.push(e);
        }
        let mut runners = vec!["EXPLAIN ANALYZE EXECUTE p", "EXPLAIN (ANALYZE) EXECUTE p"];
        if !s.starts_with("INSERT") && !s.starts_with("UPDATE") && !s.starts_with("DELETE") {
            runners.push("CREATE TABLE w AS EXECUTE p");
        }
        for sql in runners {
            let c = classify(sql);
            let resolved = if c.needs_session() {
                c.resolve(&session)
            } else {
                c
            };
            if let Err(e) = runs_at_least(sql, &resolved, &format!("EXECUTE p = {s}"), &execute) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Statements that do what other statements do, among other things, need at least as much.
#[test]
fn statements_need_what_their_clauses_do() {
    let cases: &[(&str, &[&str])] = &[
        (
            "INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET total = 0",
            &[
                "INSERT INTO orders (id) VALUES (1)",
                "UPDATE orders SET total = 0",
            ],
        ),
        (
            "DELETE FROM archive WHERE id IN (SELECT id FROM orders FOR UPDATE)",
            &["DELETE FROM archive", "SELECT id FROM orders FOR UPDATE"],
        ),
        (
            "WITH x AS (SELECT * FROM orders FOR UPDATE) DELETE FROM archive",
            &["DELETE FROM archive", "SELECT * FROM orders FOR UPDATE"],
        ),
    ];
    let mut failures = Vec::new();
    for (whole, parts) in cases {
        if let Err(e) = needs_at_least(whole, parts) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn is_unknown(c: &Classification) -> bool {
    c.actions.contains(&Action::Unknown)
}

fn max_action(c: &Classification) -> Option<Action> {
    c.actions.iter().next_back().copied()
}

fn write_classes(c: &Classification) -> BTreeSet<Action> {
    c.actions.iter().copied().filter(|a| a.writes()).collect()
}

/// `whole` needs at least what every one of `parts` needs. When `whole` is `unknown` (a part
/// that does not parse makes the whole string unparseable) it is the most restricted class
/// there is, so only the rank is compared.
fn needs_at_least(whole_sql: &str, parts: &[&str]) -> Result<(), TestCaseError> {
    let whole = classify(whole_sql);
    check_invariants(whole_sql, &whole)?;
    let mut actions = BTreeSet::new();
    let mut reads = BTreeSet::new();
    let mut writes = BTreeSet::new();
    let mut max = None;
    for p in parts {
        let c = classify(p);
        actions.extend(c.actions.iter().copied());
        reads.extend(c.reads.iter().cloned());
        writes.extend(c.writes.iter().cloned());
        max = max.max(max_action(&c));
    }
    prop_assert!(
        max_action(&whole) >= max,
        "{:?} needs at most {:?}, less than its parts' {:?}",
        whole_sql,
        max_action(&whole),
        max
    );
    if is_unknown(&whole) {
        return Ok(());
    }
    prop_assert!(
        whole.actions.is_superset(&actions),
        "{:?} needs {:?}, its parts {:?}: missing {:?}",
        whole_sql,
        whole.actions,
        actions,
        actions.difference(&whole.actions).collect::<Vec<_>>()
    );
    prop_assert!(
        whole.reads.is_superset(&reads),
        "{:?} reads {:?}, its parts {:?}",
        whole_sql,
        whole.reads,
        reads
    );
    prop_assert!(
        whole.writes.is_superset(&writes),
        "{:?} writes {:?}, its parts {:?}",
        whole_sql,
        whole.writes,
        writes
    );
    Ok(())
}

/// Every pair of statements in one string, exhaustively (a few thousand classifications).
#[test]
fn two_statements_need_what_each_needs() {
    let mut failures = Vec::new();
    for a in STATEMENTS {
        for b in STATEMENTS {
            if let Err(e) = needs_at_least(&format!("{a}; {b}"), &[a, b]) {
                failures.push(e.to_string());
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

proptest! {
    #![proptest_config(config(256))]

    /// Longer strings, with the separators written in the ways clients write them.
    #[test]
    fn several_statements_need_what_each_needs(
        picks in prop::collection::vec(
            (
                prop::sample::select(STATEMENTS),
                prop::sample::select(&["; ", ";\n", " ;-- c\n", ";/* c */", ";;\n\t"][..]),
            ),
            1..6,
        ),
        trailing in prop::sample::select(&["", ";", "; ", ";\n-- end"][..]),
    ) {
        let mut sql = String::new();
        for (i, (s, sep)) in picks.iter().enumerate() {
            if i > 0 {
                sql.push_str(sep);
            }
            sql.push_str(s);
        }
        sql.push_str(trailing);
        let parts: Vec<&str> = picks.iter().map(|(s, _)| *s).collect();
        needs_at_least(&sql, &parts)?;
    }
}
