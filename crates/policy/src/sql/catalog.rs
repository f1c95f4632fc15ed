//! What the target's own catalog says about the functions and views a statement uses.
//!
//! The parser sees `SELECT purge_orders()` as a read with a function call; only the target
//! knows that `purge_orders` is a VOLATILE PL/pgSQL function that deletes rows, or that
//! `customer_names` is a view over `customers`. [`refine`] takes a text-only
//! [`Classification`] and what a [`Catalog`] says, and:
//!
//! * lifts a statement calling a function that is not known to be free of side effects to
//!   `function_call`: a user-defined function that is VOLATILE, SECURITY DEFINER or a
//!   procedure; a VOLATILE built-in that is not on the list of harmless ones; a function the
//!   catalog does not know at all;
//! * follows SQL-language functions' bodies and views' definitions to the tables they read
//!   (each needs `select` as if named directly) and the functions they call, and carries
//!   their result columns' sources for masking's column rules.
//!
//! Unqualified function names are matched against every schema (the most cautious reading of
//! any `search_path` the session may set), and against every overload.
//!
//! When the catalog cannot be read, [`Catalog::builtin`] stands in: PostgreSQL's built-in
//! functions from `builtins.txt`, and nothing else, so that any other function needs
//! `function_call`.

use super::{absorb, qualify, Classification, ObjectName, StatementClass};
use crate::Action;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// A function's volatility class (`pg_proc.provolatile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

impl Volatility {
    /// From `pg_proc.provolatile` (`i`, `s`, `v`); anything else is taken as volatile.
    pub fn from_code(c: &str) -> Volatility {
        match c {
            "i" => Volatility::Immutable,
            "s" => Volatility::Stable,
            _ => Volatility::Volatile,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Volatility::Immutable => "IMMUTABLE",
            Volatility::Stable => "STABLE",
            Volatility::Volatile => "VOLATILE",
        }
    }
}

/// A user-defined function (any schema but `pg_catalog` and `information_schema`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub schema: String,
    pub name: String,
    pub volatility: Volatility,
    pub security_definer: bool,
    /// `sql`, `plpgsql`, `c`, …
    pub language: String,
    /// `f` function, `p` procedure, `a` aggregate, `w` window.
    pub kind: char,
    pub owner: String,
    /// The body of a `LANGUAGE sql` function (`prosrc`), which the gateway can classify.
    pub body: Option<String>,
}

/// A view or materialized view, with its definition as `pg_get_viewdef` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Qualified as the classifier names tables (`public.customer_names`).
    pub name: ObjectName,
    pub definition: String,
    pub materialized: bool,
}

/// Where a catalog came from, for `policy explain` and the ledger's notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Read from the target (connection name, when, in how long).
    Target {
        connection: String,
        read_at: std::time::SystemTime,
    },
    /// The target's catalog was not consulted; why.
    NotConsulted(String),
}

/// What classification needs from a target's catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    functions: HashMap<String, Vec<Function>>,
    builtins: HashMap<String, Volatility>,
    views: HashMap<ObjectName, View>,
    /// Views by their unqualified name (as `quote_ident` writes it).
    views_by_name: HashMap<String, Vec<ObjectName>>,
    relations: Vec<ObjectName>,
    origin: Origin,
}

fn bare(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(_, n)| n)
}

/// VOLATILE built-ins that change nothing another session or the database sees (they read
/// clocks, sizes, status, or session-local state), so a read-only agent may call them.
/// Built-ins with real effects are classed by name in `functions.rs`; any other VOLATILE
/// built-in needs `function_call`.
const HARMLESS_VOLATILE_BUILTINS: &[&str] = &[
    "bernoulli",
    "clock_timestamp",
    "currval",
    "current_query",
    "gen_random_uuid",
    "lastval",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared",
    "pg_blocking_pids",
    "pg_collation_actual_version",
    "pg_control_checkpoint",
    "pg_control_init",
    "pg_control_recovery",
    "pg_control_system",
    "pg_current_logfile",
    "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_database_collation_actual_version",
    "pg_database_size",
    "pg_export_snapshot",
    "pg_get_wal_replay_pause_state",
    "pg_indexes_size",
    "pg_is_in_recovery",
    "pg_is_wal_replay_paused",
    "pg_isolation_test_session_is_blocked",
    "pg_jit_available",
    "pg_last_committed_xact",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_lock_status",
    "pg_notification_queue_usage",
    "pg_partition_ancestors",
    "pg_partition_tree",
    "pg_prepared_xact",
    "pg_relation_size",
    "pg_safe_snapshot_blocking_pids",
    "pg_sequence_last_value",
    "pg_stat_clear_snapshot",
    "pg_stat_force_next_flush",
    "pg_stat_have_stats",
    "pg_table_size",
    "pg_tablespace_size",
    "pg_total_relation_size",
    "pg_xact_commit_timestamp",
    "pg_xact_commit_timestamp_origin",
    "pg_xact_status",
    "random",
    "random_normal",
    "setseed",
    "system",
    "timeofday",
    "txid_current",
    "txid_current_if_assigned",
    "txid_status",
    "uuidv4",
    "uuidv7",
];

fn harmless_builtin(name: &str) -> bool {
    HARMLESS_VOLATILE_BUILTINS.contains(&name) || name.starts_with("pg_stat_get_")
}

/// Views and SQL function bodies within views and function bodies deeper than this are not
/// followed: the statement then needs `function_call` (it cannot be seen whole).
const MAX_DEPTH: usize = 6;

impl Catalog {
    /// A catalog read from a target.
    pub fn new(
        origin: Origin,
        functions: Vec<Function>,
        builtins: impl IntoIterator<Item = (String, Volatility)>,
        views: Vec<View>,
        relations: Vec<ObjectName>,
    ) -> Catalog {
        let mut by_name: HashMap<String, Vec<Function>> = HashMap::new();
        for f in functions {
            by_name.entry(f.name.clone()).or_default().push(f);
        }
        let mut views_by_name: HashMap<String, Vec<ObjectName>> = HashMap::new();
        for v in &views {
            views_by_name
                .entry(bare(&v.name).to_string())
                .or_default()
                .push(v.name.clone());
        }
        Catalog {
            functions: by_name,
            builtins: builtins.into_iter().collect(),
            views: views.into_iter().map(|v| (v.name.clone(), v)).collect(),
            views_by_name,
            relations,
            origin,
        }
    }

    /// PostgreSQL's built-in functions only, for when the target's catalog cannot be read.
    pub fn builtin(why: impl Into<String>) -> Catalog {
        Catalog {
            functions: HashMap::new(),
            builtins: builtin_table().clone(),
            views: HashMap::new(),
            views_by_name: HashMap::new(),
            relations: Vec::new(),
            origin: Origin::NotConsulted(why.into()),
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Every user relation (tables, views, materialized views, foreign tables), qualified.
    pub fn relations(&self) -> &[ObjectName] {
        &self.relations
    }

    pub fn view(&self, name: &str) -> Option<&View> {
        self.views.get(name)
    }

    /// The views a table name read by a statement may mean. The classifier writes an
    /// unqualified name as `public.name`; the session's `search_path` may put another schema
    /// first, so a view of that name in any schema is followed too (the cautious reading).
    pub fn views_for<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a View> + 'a {
        let exact = self.views.get(table);
        let others = table
            .strip_prefix("public.")
            .and_then(|b| self.views_by_name.get(b))
            .into_iter()
            .flatten()
            .filter(move |n| n.as_str() != table)
            .filter_map(|n| self.views.get(n));
        exact.into_iter().chain(others)
    }

    /// Whether [`refine`] can change `c`: it calls a function or reads a view.
    pub fn concerns(&self, c: &Classification) -> bool {
        c.statements.iter().any(|s| {
            !s.calls.is_empty() || s.reads.iter().any(|t| self.views_for(t).next().is_some())
        })
    }

    /// The same catalog with no user-defined functions known (each then needs
    /// `function_call`): for while a schema change the gateway cannot see yet is in flight.
    pub fn without_user_functions(&self, why: impl Into<String>) -> Catalog {
        Catalog {
            functions: HashMap::new(),
            builtins: self.builtins.clone(),
            views: self.views.clone(),
            views_by_name: self.views_by_name.clone(),
            relations: self.relations.clone(),
            origin: Origin::NotConsulted(why.into()),
        }
    }

    /// User-defined functions named `name` (every schema, every overload).
    pub fn functions_named(&self, name: &str) -> &[Function] {
        self.functions.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// One line for `policy explain`.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Target {
                connection,
                read_at,
            } => {
                let age = read_at.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                format!(
                    "read from connection {connection:?} {age} s ago: {} user functions, {} built-ins, {} views, {} relations",
                    self.functions.values().map(Vec::len).sum::<usize>(),
                    self.builtins.len(),
                    self.views.len(),
                    self.relations.len()
                )
            }
            Origin::NotConsulted(why) => format!(
                "not consulted ({why}); only PostgreSQL's built-in functions are known, any other function needs function_call"
            ),
        }
    }
}

fn builtin_table() -> &'static HashMap<String, Volatility> {
    static TABLE: OnceLock<HashMap<String, Volatility>> = OnceLock::new();
    TABLE.get_or_init(|| {
        include_str!("builtins.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, v)| (name.to_string(), Volatility::from_code(v)))
            .collect()
    })
}

/// The classification of `c` with what `catalog` says (see the module docs). `classify`
/// classifies a view's definition or a function's body (the gate's cached classifier).
pub fn refine(
    c: &Classification,
    catalog: &Catalog,
    classify: &dyn Fn(&str) -> Arc<Classification>,
) -> Classification {
    refine_at(c, catalog, classify, 0)
}

fn refine_at(
    c: &Classification,
    catalog: &Catalog,
    classify: &dyn Fn(&str) -> Arc<Classification>,
    depth: usize,
) -> Classification {
    let mut extra_sources = Vec::new();
    let statements = c
        .statements
        .iter()
        .map(|s| refine_statement(s, catalog, classify, depth, &mut extra_sources))
        .collect();
    let mut out = Classification::from_statements(statements);
    out.sources = c.sources.with_more(extra_sources);
    out
}

fn refine_statement(
    s: &StatementClass,
    catalog: &Catalog,
    classify: &dyn Fn(&str) -> Arc<Classification>,
    depth: usize,
    sources: &mut Vec<super::columns::LazySources>,
) -> StatementClass {
    let mut r = s.clone();
    for (schema, name) in &s.calls {
        check_call(
            &mut r,
            schema.as_deref(),
            name,
            catalog,
            classify,
            depth,
            sources,
        );
    }
    for (table, view) in s
        .reads
        .iter()
        .flat_map(|t| catalog.views_for(t).map(move |v| (t, v)))
    {
        if depth >= MAX_DEPTH {
            r.note(
                Action::FunctionCall,
                format!("{table} is a view nested too deeply to follow"),
            );
            continue;
        }
        let inner = refine_at(&classify(&view.definition), catalog, classify, depth + 1);
        let bases: Vec<&str> = inner.reads.iter().map(String::as_str).collect();
        r.notes.push(format!(
            "{table} is a {} over {}",
            if view.materialized {
                "materialized view"
            } else {
                "view"
            },
            if bases.is_empty() {
                "no table".to_string()
            } else {
                bases.join(", ")
            }
        ));
        sources.push(inner.sources.clone());
        // Its tables need `select` as if named here, its function calls their classes.
        for st in inner.statements {
            absorb(&mut r, st);
        }
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn check_call(
    r: &mut StatementClass,
    schema: Option<&str>,
    name: &str,
    catalog: &Catalog,
    classify: &dyn Fn(&str) -> Arc<Classification>,
    depth: usize,
    sources: &mut Vec<super::columns::LazySources>,
) {
    let shown = match schema {
        Some(s) => format!("{s}.{name}"),
        None => name.to_string(),
    };
    // Classed by name already (pg_read_file, nextval, …), or by the setting it changes
    // (set_config, see settings.rs).
    if super::functions::class_of(name).is_some() || name == "set_config" {
        return;
    }
    let builtin = match schema {
        None | Some("pg_catalog") => catalog.builtins.get(name).copied(),
        Some(_) => None,
    };
    let users: Vec<&Function> = catalog
        .functions_named(name)
        .iter()
        .filter(|f| schema.is_none_or(|s| s == f.schema))
        .collect();
    if builtin.is_none() && users.is_empty() {
        let why = match &catalog.origin {
            Origin::Target { connection, .. } => format!(
                "{shown}() is not in the catalog of connection {connection:?}: it cannot be known to be free of side effects"
            ),
            Origin::NotConsulted(_) => format!(
                "{shown}() is not a built-in function and the target's catalog was not consulted: it may change data"
            ),
        };
        r.note(Action::FunctionCall, why);
        return;
    }
    if let Some(v) = builtin {
        if v == Volatility::Volatile && !harmless_builtin(name) {
            r.note(
                Action::FunctionCall,
                format!(
                    "pg_catalog.{name}() is a VOLATILE built-in function not known to be harmless"
                ),
            );
        }
    }
    for f in users {
        let what = format!(
            "{}() is {} ({}, owner {})",
            qualify(&f.schema, &f.name),
            f.volatility.name(),
            f.language,
            f.owner
        );
        if f.kind == 'p' {
            r.note(Action::FunctionCall, format!("{what}: a procedure"));
        } else if f.volatility == Volatility::Volatile {
            r.note(Action::FunctionCall, format!("{what}: it may change data"));
        } else if f.security_definer {
            r.note(
                Action::FunctionCall,
                format!("{what}, SECURITY DEFINER: it runs with its owner's rights"),
            );
        } else {
            r.notes.push(format!("{what}: cannot change data"));
        }
        match &f.body {
            Some(body) if depth < MAX_DEPTH => {
                let inner = refine_at(&classify(body), catalog, classify, depth + 1);
                sources.push(inner.sources.clone());
                for st in inner.statements {
                    absorb(r, st);
                }
            }
            Some(_) => r.note(
                Action::FunctionCall,
                format!("{what}: nested too deeply to follow"),
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::classify;

    fn catalog() -> Catalog {
        let f = |name: &str, v: &str, lang: &str, body: Option<&str>, secdef: bool| Function {
            schema: "public".into(),
            name: name.into(),
            volatility: Volatility::from_code(v),
            security_definer: secdef,
            language: lang.into(),
            kind: 'f',
            owner: "owner".into(),
            body: body.map(str::to_string),
        };
        Catalog::new(
            Origin::Target {
                connection: "shop".into(),
                read_at: std::time::SystemTime::now(),
            },
            vec![
                f("purge_orders", "v", "plpgsql", None, false),
                f(
                    "order_total",
                    "s",
                    "sql",
                    Some("SELECT sum(amount) FROM orders WHERE customer_id = $1"),
                    false,
                ),
                f("shout", "i", "plpgsql", None, false),
                f("peek", "s", "plpgsql", None, true),
                Function {
                    kind: 'p',
                    ..f("archive", "v", "plpgsql", None, false)
                },
            ],
            builtin_table().clone(),
            vec![
                View {
                    name: "public.customer_names".into(),
                    definition: "SELECT id, full_name AS who FROM customers".into(),
                    materialized: false,
                },
                View {
                    name: "public.busy".into(),
                    definition: "SELECT purge_orders() AS x FROM customer_names".into(),
                    materialized: false,
                },
            ],
            vec!["public.customers".into(), "public.orders".into()],
        )
    }

    fn refined(sql: &str, cat: &Catalog) -> Classification {
        refine(&classify(sql), cat, &|t| Arc::new(classify(t)))
    }

    fn actions(c: &Classification) -> Vec<&'static str> {
        c.actions.iter().map(|a| a.name()).collect()
    }

    #[test]
    fn functions_not_known_to_be_harmless_need_function_call() {
        let cat = catalog();
        for sql in [
            "SELECT purge_orders()",
            "SELECT public.purge_orders()",
            "SELECT * FROM customers WHERE purge_orders() IS NOT NULL",
            "SELECT peek()",
            "SELECT no_such_function()",
            "SELECT other_schema.shout('x')",
            "SELECT pg_catalog.brin_summarize_new_values('i')",
            "SELECT x FROM busy",
            "SELECT 1 FROM (SELECT purge_orders()) s",
        ] {
            let c = refined(sql, &cat);
            assert!(
                c.actions.contains(&Action::FunctionCall),
                "{sql}: {:?} {:?}",
                actions(&c),
                c.notes
            );
        }
    }

    #[test]
    fn harmless_functions_stay_reads() {
        let cat = catalog();
        for sql in [
            "SELECT lower(full_name), now(), random(), gen_random_uuid() FROM customers",
            "SELECT shout('x')",
            "SELECT order_total(1)",
            "SELECT pg_catalog.pg_get_viewdef('customer_names'::regclass)",
            "SELECT pg_catalog.set_config('search_path', '', false)",
            "SELECT count(*) FROM customer_names",
        ] {
            let c = refined(sql, &cat);
            assert!(
                !c.actions.iter().any(|a| a.writes()),
                "{sql}: {:?} {:?}",
                actions(&c),
                c.notes
            );
        }
    }

    #[test]
    fn views_and_sql_bodies_are_read_through() {
        let cat = catalog();
        let c = refined("SELECT who FROM customer_names", &cat);
        assert!(c.reads.contains("public.customers"), "{:?}", c.reads);
        assert!(c
            .checks
            .contains(&(Action::Select, Some("public.customers".to_string()))));
        assert_eq!(c.sources.get().of("who").collect::<Vec<_>>(), ["full_name"]);
        let c = refined("SELECT order_total(7)", &cat);
        assert!(c.reads.contains("public.orders"), "{:?}", c.reads);
    }

    #[test]
    fn without_the_catalog_only_builtins_are_trusted() {
        let cat = Catalog::builtin("test");
        assert!(!refined("SELECT lower('A'), now()", &cat)
            .actions
            .contains(&Action::FunctionCall));
        assert!(refined("SELECT purge_orders()", &cat)
            .actions
            .contains(&Action::FunctionCall));
    }
}
