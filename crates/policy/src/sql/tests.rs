use super::*;

fn actions(sql: &str) -> Vec<&'static str> {
    classify(sql).actions.iter().map(|a| a.name()).collect()
}

#[test]
fn dml_hidden_in_a_cte_is_dml() {
    let c = classify("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d");
    assert_eq!(
        actions("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"),
        ["select", "delete"]
    );
    assert!(c.writes.contains("public.orders"));
    assert!(c
        .checks
        .contains(&(Action::Delete, Some("public.orders".into()))));
}

#[test]
fn explain_analyze_runs_what_it_explains() {
    assert_eq!(
        actions("EXPLAIN ANALYZE DELETE FROM orders"),
        ["select", "delete"]
    );
    assert_eq!(
        actions("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1"),
        ["select", "update"]
    );
    assert_eq!(actions("EXPLAIN DELETE FROM orders"), ["select"]);
    assert_eq!(
        actions("EXPLAIN (ANALYZE false) DELETE FROM orders"),
        ["select"]
    );
}

#[test]
fn every_statement_of_a_string_counts() {
    let c = classify("SELECT 1; DELETE FROM orders;");
    assert_eq!(c.statements.len(), 2);
    assert_eq!(c.statements[1].kind, "DeleteStmt");
    assert_eq!(
        actions("SELECT 1; DELETE FROM orders"),
        ["select", "delete"]
    );
}

#[test]
fn copy_direction_and_program() {
    assert_eq!(actions("COPY orders TO STDOUT"), ["copy_out"]);
    assert_eq!(actions("COPY orders FROM STDIN"), ["copy_in"]);
    assert_eq!(
        actions("COPY orders FROM PROGRAM 'id'"),
        ["copy_in", "admin"]
    );
    assert_eq!(actions("COPY orders TO '/tmp/x'"), ["copy_out", "admin"]);
}

#[test]
fn role_changes_are_dcl_and_resets_are_not() {
    assert_eq!(actions("SET ROLE postgres"), ["dcl"]);
    assert_eq!(actions("set local role postgres"), ["dcl"]);
    assert_eq!(actions("SET SESSION AUTHORIZATION postgres"), ["dcl"]);
    assert_eq!(actions("RESET ROLE"), ["session"]);
    assert_eq!(actions("SET ROLE NONE"), ["dcl"]);
    assert_eq!(actions("RESET ALL"), ["session"]);
    assert_eq!(actions("SET work_mem = '64MB'"), ["session"]);
    assert_eq!(
        actions("SELECT set_config('role', 'postgres', false)"),
        ["select", "dcl"]
    );
}

#[test]
fn prepare_and_execute_resolve() {
    let p = classify("PREPARE p(int) AS DELETE FROM orders WHERE id = $1");
    assert_eq!(
        p.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
        ["session", "delete"]
    );
    let e = classify("EXECUTE p(1)");
    assert!(e.needs_session());
    assert_eq!(
        e.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
        ["unknown"]
    );
    let mut session = PreparedStatements::default();
    session.apply(&p);
    let r = e.resolve(&session);
    assert_eq!(
        r.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
        ["delete"]
    );
    assert!(r.writes.contains("public.orders"));
    // Its result columns cannot be traced from `EXECUTE p` alone: masking assumes the worst.
    assert!(r.sources.get().untraced());
    assert!(!p.sources.get().untraced());
    session.apply(&classify("DEALLOCATE p"));
    assert_eq!(
        e.resolve(&session)
            .actions
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>(),
        ["unknown"]
    );
}

#[test]
fn dangerous_things_are_admin() {
    assert_eq!(actions("DO $$BEGIN DELETE FROM t; END$$"), ["admin"]);
    assert_eq!(actions("ALTER SYSTEM SET work_mem = '1GB'"), ["admin"]);
    assert_eq!(actions("LOAD 'plpgsql'"), ["admin"]);
    assert_eq!(
        actions("SELECT pg_catalog.pg_read_file('/etc/passwd')"),
        ["select", "admin"]
    );
    assert_eq!(
        actions("select * from dblink('x', 'delete from t') as t(a int)"),
        ["select", "admin"]
    );
}

#[test]
fn row_locks_need_update() {
    assert_eq!(actions("SELECT * FROM t FOR UPDATE"), ["select", "update"]);
    assert_eq!(
        actions("SELECT * FROM (SELECT * FROM t FOR SHARE) x"),
        ["select", "update"]
    );
    assert_eq!(actions("SELECT updated_at FROM t"), ["select"]);
}

#[test]
fn names_are_qualified_and_quoted() {
    let c = classify(
        r#"select * from Public."Orders" o join customers c on true join pg_class p on true"#,
    );
    let reads: Vec<_> = c.reads.iter().map(String::as_str).collect();
    assert_eq!(
        reads,
        [
            "pg_catalog.pg_class",
            "public.\"Orders\"",
            "public.customers"
        ]
    );
}

#[test]
fn garbage_is_unknown() {
    assert_eq!(actions("SELEC 1"), ["unknown"]);
    assert_eq!(actions("SELECT 1\0"), ["unknown"]);
    assert_eq!(actions("SELECT 1; SELEC 2"), ["unknown"]);
    assert_eq!(actions(""), ["session"]);
    assert_eq!(actions("-- nothing"), ["session"]);
}
