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
    // RESET ALL returns every setting to its value at login, the gateway's read-only default
    // included (see settings_are_classed_…).
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

/// Settings are classed by what they change, whichever syntax changes them.
#[test]
fn settings_are_classed_by_what_they_change() {
    let cases: &[(&str, &[&str])] = &[
        // pg_dump's first statement, and ordinary settings in every spelling.
        ("SELECT pg_catalog.set_config('search_path', '', false)", &["session", "select"]),
        ("SELECT set_config('search_path','',false)", &["session", "select"]),
        ("SET search_path = ''", &["session"]),
        ("SET LOCAL statement_timeout = 0", &["session"]),
        ("SELECT set_config('statement_timeout', '0', true)", &["session", "select"]),
        ("SET DATESTYLE = ISO", &["session"]),
        ("SET extra_float_digits TO 3", &["session"]),
        ("SET row_security = off", &["session"]),
        ("RESET statement_timeout", &["session"]),
        ("SET work_mem TO DEFAULT", &["session"]),
        ("SET client_encoding = 'UTF8'", &["session"]),
        ("SET NAMES 'utf-8'", &["session"]),
        ("SET standard_conforming_strings = on", &["session"]),
        ("SET default_transaction_read_only = on", &["session"]),
        // Back to the value at login: what the gateway set for a read-only session.
        ("SET default_transaction_read_only TO DEFAULT", &["session"]),
        ("RESET default_transaction_read_only", &["session"]),
        ("RESET ALL", &["session"]),
        ("SET transaction_read_only = true", &["transaction"]),
        ("SELECT set_config('default_transaction_read_only', 'yes', false)", &["session", "select"]),
        // Role changes: dcl, however they are spelled; a name the gateway cannot read too.
        ("SELECT pg_catalog.set_config('role','x',false)", &["select", "dcl"]),
        ("SELECT set_config('ROLE', 'x', false)", &["select", "dcl"]),
        ("SELECT set_config('role'::text, 'x', false)", &["select", "dcl"]),
        (
            "SELECT set_config(setting_name => 'session_authorization', new_value => 'x', is_local => false)",
            &["select", "dcl"],
        ),
        ("SELECT set_config(current_setting('x'), 'y', false)", &["select", "dcl"]),
        ("SELECT set_config('search_path', 'a', false), set_config('role', 'x', false)", &["session", "select", "dcl"]),
        ("SET ROLE postgres", &["dcl"]),
        ("RESET ROLE", &["session"]),
        // How SQL text is read, triggers off: admin.
        ("SET standard_conforming_strings = off", &["admin"]),
        ("SELECT set_config('standard_conforming_strings', 'off', false)", &["select", "admin"]),
        ("SELECT set_config('client_encoding', 'SJIS', false)", &["select", "admin"]),
        ("SET backslash_quote = on", &["admin"]),
        ("SELECT set_config('session_replication_role', 'replica', false)", &["select", "admin"]),
        ("SET session_replication_role = replica", &["admin"]),
        // Turning the read-only transaction off needs a class read-only agents lack.
        ("SET default_transaction_read_only = off", &["admin"]),
        ("SET default_transaction_read_only = 0", &["admin"]),
        ("SET SESSION default_transaction_read_only TO false", &["admin"]),
        ("RESET transaction_read_only", &["admin"]),
        ("SET transaction_read_only TO DEFAULT", &["admin"]),
        ("SET transaction_read_only = off", &["admin"]),
        ("SELECT set_config('default_transaction_read_only', 'off', false)", &["select", "admin"]),
        ("SELECT set_config('Transaction_Read_Only', 'n', true)", &["select", "admin"]),
        ("SELECT set_config('default_transaction_read_only', current_setting('x'), false)", &["select", "admin"]),
        ("SET TRANSACTION READ WRITE", &["transaction", "admin"]),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", &["session", "admin"]),
        ("BEGIN READ WRITE", &["transaction", "admin"]),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", &["transaction", "admin"]),
        // Read-only and isolation options stay transaction control.
        ("BEGIN READ ONLY", &["transaction"]),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ", &["transaction"]),
        ("BEGIN", &["transaction"]),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", &["transaction"]),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", &["transaction"]),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", &["session"]),
        ("SET transaction_isolation = 'serializable'", &["transaction"]),
    ];
    for (sql, want) in cases {
        assert_eq!(&actions(sql), want, "{sql}");
    }
    let c = classify("SET default_transaction_read_only = off");
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("turns off the read-only transaction")),
        "{:?}",
        c.notes
    );
    let c = classify("SELECT set_config('search_path','',false)");
    assert!(
        c.notes.iter().any(|n| n.contains("search_path")),
        "{:?}",
        c.notes
    );
}

#[test]
fn lock_modes_need_what_they_block() {
    let on = |sql: &str, action: Action, table: &str| {
        let c = classify(sql);
        assert!(
            c.checks.contains(&(action, Some(table.to_string()))),
            "{sql}: {:?}",
            c.checks
        );
    };
    let cases: &[(&str, &[&str])] = &[
        ("LOCK TABLE t IN ACCESS SHARE MODE", &["select"]),
        (
            "LOCK TABLE public.a, b, s.c IN ACCESS SHARE MODE",
            &["select"],
        ),
        ("LOCK TABLE t IN ROW SHARE MODE", &["update"]),
        ("LOCK t IN ROW EXCLUSIVE MODE NOWAIT", &["update"]),
        ("LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE", &["admin"]),
        ("LOCK TABLE t IN SHARE MODE", &["admin"]),
        ("LOCK TABLE t IN EXCLUSIVE MODE", &["admin"]),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", &["admin"]),
        // Without a mode: ACCESS EXCLUSIVE.
        ("LOCK t", &["admin"]),
        ("LOCK TABLE ONLY t", &["admin"]),
    ];
    for (sql, want) in cases {
        assert_eq!(&actions(sql), want, "{sql}");
    }
    on("LOCK t IN ACCESS SHARE MODE", Action::Select, "public.t");
    for t in ["public.a", "public.b", "s.c"] {
        on(
            "LOCK TABLE public.a, b, s.c IN ACCESS SHARE MODE",
            Action::Select,
            t,
        );
    }
    assert!(classify("LOCK t IN ACCESS SHARE MODE").writes.is_empty());
    on("LOCK t IN ROW EXCLUSIVE MODE", Action::Update, "public.t");
    on("LOCK t", Action::Admin, "public.t");
    on("LOCK pg_class", Action::Admin, "pg_catalog.pg_class");
}

#[test]
fn messages_to_other_sessions_are_function_calls() {
    let cases: &[(&str, &[&str])] = &[
        ("NOTIFY ch, 'x'", &["function_call"]),
        ("NOTIFY ch", &["function_call"]),
        ("SELECT pg_notify('ch','x')", &["select", "function_call"]),
        ("LISTEN ch", &["session"]),
        ("UNLISTEN *", &["session"]),
        ("UNLISTEN ch", &["session"]),
    ];
    for (sql, want) in cases {
        assert_eq!(&actions(sql), want, "{sql}");
    }
    assert!(classify("NOTIFY ch, 'x'")
        .notes
        .iter()
        .any(|n| n.contains("sends a message to other sessions")));
}

/// `… FROM pg_settings WHERE name = 'x'` reaches only setting x (pg_dump runs
/// `SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = …`).
#[test]
fn pg_settings_rows_are_the_setting_they_name() {
    let cases: &[(&str, &[&str])] = &[
        (
            "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'",
            &["session", "select"],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM pg_catalog.pg_settings WHERE 'role' = name",
            &["select", "dcl"],
        ),
        (
            "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'default_transaction_read_only'",
            &["select", "admin"],
        ),
        // Anything looser could reach any setting, role included.
        ("SELECT set_config(name, 'x', false) FROM pg_settings", &["select", "dcl"]),
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name LIKE 'search%'",
            &["select", "dcl"],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'search_path' OR true",
            &["select", "dcl"],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings, t WHERE name = 'search_path'",
            &["select", "dcl"],
        ),
        (
            "SELECT (SELECT set_config(name, 'x', false) FROM t) FROM pg_settings WHERE name = 'search_path'",
            &["select", "dcl"],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM s.pg_settings WHERE name = 'search_path'",
            &["select", "dcl"],
        ),
        // UPDATE pg_settings is set_config() too (and an update of the view).
        (
            "UPDATE pg_settings SET setting = 'postgres' WHERE name = 'role'",
            &["update", "dcl"],
        ),
        (
            "UPDATE pg_settings SET setting = '1min' WHERE name = 'statement_timeout'",
            &["session", "update"],
        ),
        (
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'default_transaction_read_only'",
            &["update", "admin"],
        ),
        ("UPDATE pg_settings SET setting = 'x'", &["update", "dcl"]),
    ];
    for (sql, want) in cases {
        assert_eq!(&actions(sql), want, "{sql}");
    }
}
