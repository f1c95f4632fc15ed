//! Where a PostgreSQL statement is classified.
//!
//! [`classify`] turns SQL text into a [`Classification`]: for every statement of the string,
//! the command classes it needs ([`Action`]), the tables it reads and writes, the functions it
//! calls, and the (class, object) pairs policy must allow. It uses libpg_query — the real
//! PostgreSQL grammar — through its *summary* API, which walks the whole tree in C (so a
//! `DELETE` hidden in a CTE, a subquery or an `EXPLAIN ANALYZE` is seen), and falls back to the
//! full parse tree only for the few statement types whose options change their meaning (COPY's
//! direction and PROGRAM, EXPLAIN's ANALYZE, SET's variable, PREPARE/EXECUTE names, row locks).
//!
//! Principles:
//! * Anything that does not parse is [`Action::Unknown`].
//! * When the summary cannot say which write touched which table, every write class is
//!   checked against every written table: over-cautious, never under.
//! * Unqualified table names resolve to `public` (or `pg_catalog` for `pg_*` names), as the
//!   default `search_path` does. `SET search_path` is classified `session` and noted: policies
//!   that restrict tables should not allow agents to change it.

pub mod catalog;
mod columns;
mod functions;
mod settings;

pub use catalog::Catalog;
pub use columns::{LazySources, ResultSources};

use crate::Action;
use pg_query::protobuf::node::Node as N;
use serde::Serialize;
use settings::READ_WRITE_NOTE;
use std::collections::{BTreeSet, HashMap};

/// A table as the gateway names it: `schema.table`, identifiers quoted as in SQL when they
/// are not plain lower-case names (`public."Orders"`).
pub type ObjectName = String;

/// What one statement of a string needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct StatementClass {
    /// PostgreSQL's name for the statement type (`SelectStmt`, `CopyStmt`, …), or
    /// `ParseError`.
    pub kind: String,
    pub actions: BTreeSet<Action>,
    pub reads: BTreeSet<ObjectName>,
    pub writes: BTreeSet<ObjectName>,
    pub functions: BTreeSet<String>,
    /// Functions called (not defined or dropped), as (schema if written, name): what
    /// [`catalog::refine`] looks up in the target's catalog.
    #[serde(skip)]
    pub calls: BTreeSet<(Option<String>, String)>,
    /// Each class with the object it applies to; `None` = the connection itself.
    pub checks: BTreeSet<(Action, Option<ObjectName>)>,
    /// Why the statement got a class its type alone would not give it.
    pub notes: Vec<String>,
    /// `PREPARE name AS …`: the name and what `EXECUTE name` will need.
    #[serde(skip)]
    pub prepares: Option<(String, Box<StatementClass>)>,
    /// `EXECUTE name`: resolved against the session's prepared statements by [`Classification::resolve`].
    #[serde(skip)]
    pub executes: Option<String>,
    /// `DEALLOCATE name` (`Some`) or `DEALLOCATE ALL` / `DISCARD ALL` (`None`).
    #[serde(skip)]
    pub deallocates: Option<Option<String>>,
}

impl StatementClass {
    fn add(&mut self, action: Action, object: Option<&ObjectName>) {
        self.actions.insert(action);
        self.checks.insert((action, object.cloned()));
    }

    fn note(&mut self, action: Action, note: impl Into<String>) {
        self.add(action, None);
        self.notes.push(note.into());
    }

    fn unknown(kind: &str, note: impl Into<String>) -> StatementClass {
        let mut s = StatementClass {
            kind: kind.into(),
            ..Default::default()
        };
        s.note(Action::Unknown, note);
        s
    }
}

/// What a whole SQL string needs: the union of its statements, and each statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Classification {
    pub statements: Vec<StatementClass>,
    pub actions: BTreeSet<Action>,
    pub reads: BTreeSet<ObjectName>,
    pub writes: BTreeSet<ObjectName>,
    pub functions: BTreeSet<String>,
    pub checks: BTreeSet<(Action, Option<ObjectName>)>,
    pub notes: Vec<String>,
    /// Where the result columns come from (see `columns`), traced when first asked.
    #[serde(skip)]
    pub sources: LazySources,
}

impl Classification {
    fn from_statements(statements: Vec<StatementClass>) -> Classification {
        let mut c = Classification::default();
        for s in &statements {
            c.actions.extend(s.actions.iter().copied());
            c.reads.extend(s.reads.iter().cloned());
            c.writes.extend(s.writes.iter().cloned());
            c.functions.extend(s.functions.iter().cloned());
            c.checks.extend(s.checks.iter().cloned());
            c.notes.extend(s.notes.iter().cloned());
        }
        c.statements = statements;
        // A class checked on a table need not be checked on the connection as well.
        let on_tables: BTreeSet<Action> = c
            .checks
            .iter()
            .filter(|(_, o)| o.is_some())
            .map(|(a, _)| *a)
            .collect();
        c.checks
            .retain(|(a, o)| o.is_some() || !on_tables.contains(a));
        c
    }

    /// Whether any statement names a prepared statement (`EXECUTE`), so that the result
    /// depends on the session.
    pub fn needs_session(&self) -> bool {
        self.statements.iter().any(|s| s.executes.is_some())
    }

    /// Resolves `EXECUTE name` against the session's SQL-prepared statements: the statement
    /// needs what the prepared one needs; a name the session does not know is `unknown`.
    pub fn resolve(&self, prepared: &PreparedStatements) -> Classification {
        let statements = self
            .statements
            .iter()
            .map(|s| match &s.executes {
                None => s.clone(),
                Some(name) => match prepared.get(name) {
                    // The wrapper's own needs (EXPLAIN ANALYZE, CREATE TABLE AS, …) plus the
                    // prepared statement's, in place of the unresolved placeholder.
                    Some(p) => {
                        let mut r = s.clone();
                        let placeholder = unresolved_note(name);
                        r.notes.retain(|n| n != &placeholder);
                        r.checks.remove(&(Action::Unknown, None));
                        r.actions = r.checks.iter().map(|(a, _)| *a).collect();
                        absorb(&mut r, p.clone());
                        r.executes = Some(name.clone());
                        r.notes
                            .push(format!("EXECUTE runs prepared statement {name:?}"));
                        r
                    }
                    None => s.clone(),
                },
            })
            .collect();
        let mut c = Classification::from_statements(statements);
        // The prepared statement's text is not at hand to trace its result columns: masking
        // must then assume any ruled column of the tables read is in any of them.
        c.sources = if self.statements.iter().any(|s| s.executes.is_some()) {
            LazySources::untraced()
        } else {
            self.sources.clone()
        };
        c
    }
}

/// SQL-level prepared statements of one session (`PREPARE name AS …`).
#[derive(Debug, Default, Clone)]
pub struct PreparedStatements {
    map: HashMap<String, StatementClass>,
}

impl PreparedStatements {
    pub fn get(&self, name: &str) -> Option<&StatementClass> {
        self.map.get(name)
    }

    /// Applies what a statement the target ran did to the session's prepared statements.
    pub fn apply(&mut self, c: &Classification) {
        for s in &c.statements {
            if let Some((name, inner)) = &s.prepares {
                self.map.insert(name.clone(), (**inner).clone());
            }
            match &s.deallocates {
                Some(Some(name)) => {
                    self.map.remove(name);
                }
                Some(None) => self.map.clear(),
                None => {}
            }
        }
    }
}

/// Classifies SQL text. Never panics; never fails: what it cannot parse is `unknown`.
pub fn classify(sql: &str) -> Classification {
    let mut c = classify_text(sql);
    c.sources = LazySources::new(sql);
    c
}

fn classify_text(sql: &str) -> Classification {
    if sql.contains('\0') {
        return Classification::from_statements(vec![StatementClass::unknown(
            "ParseError",
            "the text contains a NUL byte",
        )]);
    }
    if is_multi_statement(sql) {
        match pg_query::split_with_parser(sql) {
            Ok(parts) if parts.len() > 1 => {
                return Classification::from_statements(
                    parts.into_iter().map(classify_one).collect(),
                )
            }
            Ok(_) => {}
            Err(e) => {
                return Classification::from_statements(vec![StatementClass::unknown(
                    "ParseError",
                    format!("does not parse: {}", parse_message(&e)),
                )])
            }
        }
    }
    Classification::from_statements(vec![classify_one(sql)])
}

/// A `;` before the end (ignoring trailing blanks and semicolons) may separate statements.
fn is_multi_statement(sql: &str) -> bool {
    let trimmed = sql.trim_end_matches(|c: char| c.is_whitespace() || c == ';');
    trimmed.contains(';')
}

fn parse_message(e: &pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(m) => m.clone(),
        other => other.to_string(),
    }
}

fn classify_one(sql: &str) -> StatementClass {
    classify_at(sql, 0)
}

/// Statements wrapped in statements (`EXPLAIN ANALYZE COPY (…)`…) deeper than this are
/// `unknown`.
const MAX_NESTING: usize = 8;

fn classify_at(sql: &str, depth: usize) -> StatementClass {
    if depth > MAX_NESTING {
        return StatementClass::unknown("Nested", "statements nested too deeply to classify");
    }
    let summary = match pg_query::summary(sql, 0, -1) {
        Ok(s) => s,
        Err(e) => {
            return StatementClass::unknown(
                "ParseError",
                format!("does not parse: {}", parse_message(&e)),
            )
        }
    };
    let Some(top) = summary.statement_types.first().cloned() else {
        // Only blanks and comments: PostgreSQL answers EmptyQueryResponse.
        let mut s = StatementClass {
            kind: "Empty".into(),
            ..Default::default()
        };
        s.add(Action::Session, None);
        return s;
    };
    let mut s = StatementClass {
        kind: top.clone(),
        ..Default::default()
    };
    // The full parse tree, made only when a rule needs it.
    let full = std::cell::OnceCell::new();
    let tree = || -> Option<&pg_query::ParseResult> {
        full.get_or_init(|| pg_query::parse(sql, 0).ok()).as_ref()
    };
    let top_node =
        || -> Option<&N> { tree()?.protobuf.stmts.first()?.stmt.as_ref()?.node.as_ref() };
    // The statement a wrapper (EXPLAIN, COPY, DECLARE, PREPARE, CREATE TABLE AS) runs,
    // classified on its own.
    let nested = |node: &Option<Box<pg_query::protobuf::Node>>| -> StatementClass {
        match node
            .as_ref()
            .and_then(|n| n.node.as_ref())
            .map(|n| n.deparse(pg_query::DeparseOptions::default()))
        {
            Some(Ok(text)) => classify_at(&text, depth + 1),
            _ => StatementClass::unknown(&top, "a nested statement could not be read back"),
        }
    };

    let mut selected = BTreeSet::new();
    let mut dml = BTreeSet::new();
    let mut ddl = BTreeSet::new();
    for t in &summary.tables {
        let name = qualify(&t.schema_name, &t.table_name);
        match t.context {
            pg_query::protobuf::summary_result::Context::Select => selected.insert(name),
            pg_query::protobuf::summary_result::Context::Dml => dml.insert(name),
            _ => ddl.insert(name),
        };
    }
    for f in &summary.functions {
        let bare = f.function_name.as_str();
        let shown = match &f.schema_name {
            Some(schema) => qualify(schema, bare),
            None => quote_ident(bare),
        };
        // Any use but a definition (CREATE/DROP FUNCTION names it in DDL context).
        if f.context != pg_query::protobuf::summary_result::Context::Ddl {
            if let Some((action, why)) = functions::class_of(bare) {
                s.note(action, format!("{shown}() {why}"));
            }
            s.calls.insert((f.schema_name.clone(), bare.to_string()));
        }
        s.functions.insert(shown);
    }
    // set_config() is classed by the setting it changes, read from the full tree.
    if summary.functions.iter().any(|f| {
        f.function_name == "set_config"
            && f.context != pg_query::protobuf::summary_result::Context::Ddl
    }) {
        set_config_calls(&mut s, tree(), top_node());
    }
    // The summary does not see every table: a name that is also a CTE's is dropped even where
    // the CTE is out of scope, and some DDL names its objects in other nodes. Recover them
    // from the full tree when that can matter.
    if !summary.cte_names.is_empty() {
        if let Some(t) = tree() {
            for name in tables_behind_cte_names(t, &summary.cte_names, top_node()) {
                selected.insert(name);
            }
        }
    }
    // DML anywhere in the statement (CTEs included): its target is a real table whatever the
    // CTEs are called; RETURNING reads it back; ON CONFLICT DO UPDATE updates it.
    let mut returned = BTreeSet::new();
    let mut upserted = BTreeSet::new();
    let lower = sql.to_ascii_lowercase();
    let mut merge_sources = BTreeSet::new();
    if !summary.cte_names.is_empty()
        || lower.contains("returning")
        || lower.contains("conflict")
        || lower.contains("merge")
    {
        if let Some(t) = tree() {
            let returns = |r: &Option<pg_query::protobuf::ReturningClause>| {
                r.as_ref().is_some_and(|r| !r.exprs.is_empty())
            };
            for (n, ..) in t.protobuf.nodes() {
                if let pg_query::NodeRef::MergeStmt(m) = n {
                    // MERGE's source is read.
                    if let Some(src) = m.source_relation.as_ref().and_then(|n| n.node.as_ref()) {
                        for (n, ..) in src.nodes() {
                            if let pg_query::NodeRef::RangeVar(rv) = n {
                                merge_sources.insert(qualify(&rv.schemaname, &rv.relname));
                            }
                        }
                    }
                }
                let (target, returning, upsert) = match n {
                    pg_query::NodeRef::InsertStmt(i) => (
                        i.relation.as_ref(),
                        returns(&i.returning_clause),
                        i.on_conflict_clause.as_ref().is_some_and(|c| {
                            c.action
                                == pg_query::protobuf::OnConflictAction::OnconflictUpdate as i32
                        }),
                    ),
                    pg_query::NodeRef::UpdateStmt(u) => {
                        (u.relation.as_ref(), returns(&u.returning_clause), false)
                    }
                    pg_query::NodeRef::DeleteStmt(d) => {
                        (d.relation.as_ref(), returns(&d.returning_clause), false)
                    }
                    pg_query::NodeRef::MergeStmt(m) => {
                        (m.relation.as_ref(), returns(&m.returning_clause), false)
                    }
                    _ => (None, false, false),
                };
                if let Some(rv) = target {
                    let name = qualify(&rv.schemaname, &rv.relname);
                    selected.remove(&name);
                    dml.insert(name.clone());
                    if returning {
                        returned.insert(name.clone());
                    }
                    if upsert {
                        upserted.insert(name);
                    }
                }
            }
        }
    }
    let dml_actions: Vec<Action> = summary
        .statement_types
        .iter()
        .filter_map(|t| dml_action(t))
        .collect();

    // Reads.
    let reads_rows = |s: &mut StatementClass, tables: &BTreeSet<ObjectName>| {
        for t in tables {
            s.add(Action::Select, Some(t));
            s.reads.insert(t.clone());
        }
    };
    // Writes through INSERT/UPDATE/DELETE/MERGE, wherever they are nested.
    let writes_rows = |s: &mut StatementClass, tables: &BTreeSet<ObjectName>| {
        for a in &dml_actions {
            if tables.is_empty() {
                s.add(*a, None);
            }
            for t in tables {
                s.add(*a, Some(t));
                s.writes.insert(t.clone());
            }
        }
    };
    let changes = |s: &mut StatementClass, action: Action, tables: &BTreeSet<ObjectName>| {
        if tables.is_empty() {
            s.add(action, None);
        }
        for t in tables {
            s.add(action, Some(t));
            s.writes.insert(t.clone());
        }
    };

    match top.as_str() {
        "SelectStmt" | "ValuesStmt" => {
            s.add(Action::Select, None);
            reads_rows(&mut s, &selected);
            writes_rows(&mut s, &dml);
            if !ddl.is_empty() {
                s.notes.push("SELECT INTO creates a table".into());
                changes(&mut s, Action::Ddl, &ddl);
            }
        }
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
            reads_rows(&mut s, &selected);
            writes_rows(&mut s, &dml);
            if dml.iter().any(|t| t == "pg_catalog.pg_settings") {
                // `UPDATE pg_settings SET setting = 'v' WHERE name = 'x'` is set_config('x', 'v');
                // any other write to it could change the role.
                let known = match top_node() {
                    Some(N::UpdateStmt(u))
                        if u.relation.as_ref().is_some_and(|r| {
                            r.relname == "pg_settings"
                                && (r.schemaname.is_empty() || r.schemaname == "pg_catalog")
                        }) && u.from_clause.is_empty() =>
                    {
                        let rel = u.relation.as_ref().map(|r| pg_query::protobuf::Node {
                            node: Some(N::RangeVar(r.clone())),
                        });
                        let name = pg_settings_row(rel.as_slice(), u.where_clause.as_deref());
                        let value = match u.target_list.as_slice() {
                            [t] => match t.node.as_ref() {
                                Some(N::ResTarget(r)) if r.name == "setting" => r
                                    .val
                                    .as_ref()
                                    .and_then(|v| v.node.as_ref())
                                    .and_then(const_text),
                                _ => None,
                            },
                            _ => None,
                        };
                        name.map(|n| (n, value))
                    }
                    _ => None,
                };
                match known {
                    Some((name, value)) => {
                        let value = match &value {
                            Some(v) => settings::Value::To(v),
                            None => settings::Value::Unknown,
                        };
                        match settings::class_of(&name, value) {
                            (action, Some(why)) => {
                                s.note(action, format!("writing pg_settings: {why}"))
                            }
                            (action, None) => s.add(action, None),
                        }
                    }
                    None => s.note(
                        Action::Dcl,
                        "writing pg_settings is set_config(), which can change the role",
                    ),
                }
            }
        }
        "ExplainStmt" => match top_node() {
            Some(N::ExplainStmt(e)) if explain_analyzes(&e.options) => {
                s.notes
                    .push("EXPLAIN ANALYZE runs the statement it explains".into());
                s.add(Action::Select, None);
                absorb(&mut s, nested(&e.query));
            }
            Some(N::ExplainStmt(e)) => {
                // Plans without running: it reads the catalog, not the rows.
                s.add(Action::Select, None);
                let inner = nested(&e.query);
                for t in selected
                    .iter()
                    .chain(dml.iter())
                    .chain(ddl.iter())
                    .chain(inner.reads.iter())
                    .chain(inner.writes.iter())
                {
                    s.add(Action::Select, Some(t));
                    s.reads.insert(t.clone());
                }
                s.functions.extend(inner.functions);
            }
            _ => s = StatementClass::unknown(&top, "EXPLAIN whose options could not be read"),
        },
        "CopyStmt" => match top_node() {
            Some(N::CopyStmt(c)) => {
                let tables: BTreeSet<ObjectName> = selected.union(&dml).cloned().collect();
                if c.is_from {
                    changes(&mut s, Action::CopyIn, &tables);
                } else {
                    s.add(Action::CopyOut, None);
                    for t in &tables {
                        s.add(Action::CopyOut, Some(t));
                        s.reads.insert(t.clone());
                    }
                    // COPY (query) TO: the query's own classes too (it may be DML … RETURNING).
                    if c.query.is_some() {
                        absorb(&mut s, nested(&c.query));
                    }
                }
                if c.is_program {
                    s.note(
                        Action::Admin,
                        "COPY … PROGRAM runs a shell command on the database server",
                    );
                } else if !c.filename.is_empty() {
                    s.note(
                        Action::Admin,
                        "COPY to or from a server file reads or writes the server's disk",
                    );
                }
            }
            _ => s = StatementClass::unknown(&top, "COPY whose options could not be read"),
        },
        "VariableSetStmt" => {
            match top_node() {
                Some(N::VariableSetStmt(v)) => {
                    use pg_query::protobuf::VariableSetKind as K;
                    if v.kind == K::VarResetAll as i32 {
                        // Every setting returns to its value at login: RESET ROLE to the
                        // gateway's role, default_transaction_read_only to what the gateway
                        // set in the startup packet.
                        s.add(Action::Session, None);
                    } else if v.kind == K::VarSetMulti as i32 {
                        // SET TRANSACTION … / SET SESSION CHARACTERISTICS AS TRANSACTION …
                        let base = if v.name == "TRANSACTION" {
                            Action::Transaction
                        } else {
                            Action::Session
                        };
                        s.add(base, None);
                        if sets_read_write(&v.args) {
                            s.note(Action::Admin, format!("READ WRITE {READ_WRITE_NOTE}"));
                        }
                    } else {
                        let text = set_value(&v.args);
                        let value =
                            if v.kind == K::VarReset as i32 || v.kind == K::VarSetDefault as i32 {
                                settings::Value::Default
                            } else {
                                match &text {
                                    Some(x) => settings::Value::To(x),
                                    None => settings::Value::Unknown,
                                }
                            };
                        let (action, why) = settings::class_of(&v.name, value);
                        match why {
                            Some(why) => s.note(action, why),
                            None => s.add(action, None),
                        }
                    }
                }
                _ => s = StatementClass::unknown(&top, "SET whose variable could not be read"),
            }
        }
        "PrepareStmt" => match top_node() {
            Some(N::PrepareStmt(p)) => {
                // What EXECUTE will need: the statement as if it were not prepared. Deciding
                // at PREPARE as well stops plan-time effects.
                let inner = nested(&p.query);
                s = inner.clone();
                s.kind = top.clone();
                s.executes = None;
                s.add(Action::Session, None);
                s.prepares = Some((p.name.clone(), Box::new(inner)));
            }
            _ => s = StatementClass::unknown(&top, "PREPARE whose name could not be read"),
        },
        "ExecuteStmt" => match top_node() {
            Some(N::ExecuteStmt(e)) => {
                s = StatementClass::unknown(&top, unresolved_note(&e.name));
                s.executes = Some(e.name.clone());
            }
            _ => s = StatementClass::unknown(&top, "EXECUTE whose name could not be read"),
        },
        "DeallocateStmt" => {
            s.add(Action::Session, None);
            s.deallocates = match top_node() {
                Some(N::DeallocateStmt(d)) if !d.isall && !d.name.is_empty() => {
                    Some(Some(d.name.clone()))
                }
                _ => Some(None),
            };
        }
        "DiscardStmt" => {
            s.add(Action::Session, None);
            s.deallocates = Some(None);
            if let Some(N::DiscardStmt(d)) = top_node() {
                if d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32 {
                    s.note(
                        Action::Dcl,
                        "DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT, which drops the role configured for the login",
                    );
                }
            }
        }
        "DeclareCursorStmt" => {
            // DECLARE c CURSOR FOR <query>: the query's classes.
            s.add(Action::Select, None);
            match top_node() {
                Some(N::DeclareCursorStmt(d)) => absorb(&mut s, nested(&d.query)),
                _ => s.note(Action::Unknown, "DECLARE whose query could not be read"),
            }
        }
        "CreateTableAsStmt" => {
            changes(&mut s, Action::Ddl, &ddl);
            match top_node() {
                // CREATE TABLE AS and CREATE MATERIALIZED VIEW run their query now.
                Some(N::CreateTableAsStmt(c)) => absorb(&mut s, nested(&c.query)),
                _ => s.note(
                    Action::Unknown,
                    "CREATE TABLE AS whose query could not be read",
                ),
            }
        }
        "FetchStmt" | "ClosePortalStmt" => s.add(Action::Select, None),
        "TransactionStmt" => {
            s.add(Action::Transaction, None);
            match top_node() {
                Some(N::TransactionStmt(t)) => {
                    if sets_read_write(&t.options) {
                        s.note(Action::Admin, format!("READ WRITE {READ_WRITE_NOTE}"));
                    }
                }
                _ => s.note(
                    Action::Unknown,
                    "a transaction statement whose options could not be read",
                ),
            }
        }
        "VariableShowStmt" | "ListenStmt" | "UnlistenStmt" => s.add(Action::Session, None),
        "NotifyStmt" => s.note(
            Action::FunctionCall,
            "NOTIFY sends a message to other sessions (as pg_notify() does)",
        ),
        "LockStmt" => match top_node() {
            Some(N::LockStmt(l)) => {
                let mut tables = BTreeSet::new();
                for r in &l.relations {
                    if let Some(N::RangeVar(rv)) = r.node.as_ref() {
                        tables.insert(qualify(&rv.schemaname, &rv.relname));
                    }
                }
                if tables.is_empty() {
                    tables = ddl.union(&selected).cloned().collect();
                }
                match lock_class(l.mode) {
                    Action::Select => {
                        // What every SELECT takes on the tables it reads.
                        s.add(Action::Select, None);
                        reads_rows(&mut s, &tables);
                    }
                    action => {
                        s.notes.push(if action == Action::Update {
                            format!(
                                "LOCK … IN {} MODE is the lock writers take (needs UPDATE)",
                                lock_mode_name(l.mode)
                            )
                        } else {
                            format!(
                                "LOCK … IN {} MODE blocks other sessions' writes or reads",
                                lock_mode_name(l.mode)
                            )
                        });
                        changes(&mut s, action, &tables);
                    }
                }
            }
            _ => s = StatementClass::unknown(&top, "LOCK whose mode could not be read"),
        },
        "CallStmt" => {
            s.add(Action::FunctionCall, None);
            reads_rows(&mut s, &selected);
        }
        "TruncateStmt" => changes(&mut s, Action::Truncate, &ddl),
        "GrantStmt"
        | "GrantRoleStmt"
        | "CreateRoleStmt"
        | "AlterRoleStmt"
        | "AlterRoleSetStmt"
        | "DropRoleStmt"
        | "AlterDefaultPrivilegesStmt"
        | "ReassignOwnedStmt"
        | "DropOwnedStmt"
        | "CreatePolicyStmt"
        | "AlterPolicyStmt"
        | "SecLabelStmt"
        | "CreateUserMappingStmt"
        | "AlterUserMappingStmt"
        | "DropUserMappingStmt" => {
            let ddl = with_extras(&mut s, top_node(), ddl);
            changes(&mut s, Action::Dcl, &ddl)
        }
        "DoStmt" => s.note(
            Action::Admin,
            "DO runs procedural code the gateway cannot see into",
        ),
        "AlterSystemStmt" => s.note(
            Action::Admin,
            "ALTER SYSTEM changes the server configuration",
        ),
        "LoadStmt" => s.note(Action::Admin, "LOAD loads a shared library into the server"),
        "CreateExtensionStmt" | "AlterExtensionStmt" | "AlterExtensionContentsStmt" => s.note(
            Action::Admin,
            "extensions can install code that runs inside the server",
        ),
        "VacuumStmt"
        | "ClusterStmt"
        | "ReindexStmt"
        | "CheckPointStmt"
        | "CreatedbStmt"
        | "DropdbStmt"
        | "AlterDatabaseStmt"
        | "AlterDatabaseSetStmt"
        | "AlterDatabaseRefreshCollStmt"
        | "CreateTableSpaceStmt"
        | "DropTableSpaceStmt"
        | "AlterTableSpaceOptionsStmt"
        | "CreateSubscriptionStmt"
        | "AlterSubscriptionStmt"
        | "DropSubscriptionStmt"
        | "CreatePublicationStmt"
        | "AlterPublicationStmt"
        | "CreateForeignServerStmt"
        | "AlterForeignServerStmt"
        | "CreateFdwStmt"
        | "AlterFdwStmt"
        | "ImportForeignSchemaStmt"
        | "AlterSystemSetStmt"
        | "CreateEventTrigStmt"
        | "AlterEventTrigStmt"
        | "ReplicaIdentityStmt" => {
            let ddl = with_extras(&mut s, top_node(), ddl);
            changes(&mut s, Action::Admin, &ddl)
        }
        t if is_ddl(t) => {
            let ddl = with_extras(&mut s, top_node(), ddl);
            changes(&mut s, Action::Ddl, &ddl);
            // CREATE TABLE AS / CREATE VIEW / CREATE MATERIALIZED VIEW read their query (a
            // materialized view or CTAS runs it now).
            reads_rows(&mut s, &selected);
            writes_rows(&mut s, &dml);
        }
        _ => {
            s.notes.push(format!(
                "statement type {top} is not one the gateway classifies more finely"
            ));
            changes(&mut s, Action::Admin, &ddl);
        }
    }
    // Wherever they are (a subquery, a CTE, a wrapped statement): row locks need UPDATE on
    // the tables read; a MERGE may insert, update or delete its target.
    if mentions_row_lock(sql) && has_row_lock(tree()) {
        s.notes
            .push("FOR UPDATE/SHARE locks rows (needs UPDATE privilege)".into());
        changes(&mut s, Action::Update, &selected);
    }
    if dml_actions.contains(&Action::Merge) {
        for a in [Action::Insert, Action::Update, Action::Delete] {
            changes(&mut s, a, &dml);
        }
    }
    if !upserted.is_empty() {
        s.notes
            .push("INSERT … ON CONFLICT DO UPDATE updates existing rows".into());
        changes(&mut s, Action::Update, &upserted);
    }
    // RETURNING hands rows back: PostgreSQL requires SELECT on them.
    reads_rows(&mut s, &returned);
    reads_rows(&mut s, &merge_sources);
    s
}

/// The class a `LOCK TABLE … IN mode MODE` needs on each table: ACCESS SHARE is what a SELECT
/// takes; ROW SHARE and ROW EXCLUSIVE are what `SELECT … FOR UPDATE` and DML take; stronger
/// modes block other sessions' writes (SHARE and up) or reads (ACCESS EXCLUSIVE).
fn lock_class(mode: i32) -> Action {
    match mode {
        1 => Action::Select,
        2 | 3 => Action::Update,
        _ => Action::Admin,
    }
}

fn lock_mode_name(mode: i32) -> &'static str {
    match mode {
        1 => "ACCESS SHARE",
        2 => "ROW SHARE",
        3 => "ROW EXCLUSIVE",
        4 => "SHARE UPDATE EXCLUSIVE",
        5 => "SHARE",
        6 => "SHARE ROW EXCLUSIVE",
        7 => "EXCLUSIVE",
        _ => "ACCESS EXCLUSIVE",
    }
}

fn dml_action(statement_type: &str) -> Option<Action> {
    match statement_type {
        "InsertStmt" => Some(Action::Insert),
        "UpdateStmt" => Some(Action::Update),
        "DeleteStmt" => Some(Action::Delete),
        "MergeStmt" => Some(Action::Merge),
        _ => None,
    }
}

fn is_ddl(statement_type: &str) -> bool {
    const PREFIXES: &[&str] = &["Create", "Alter", "Drop", "Rename", "Comment", "Define"];
    PREFIXES.iter().any(|p| statement_type.starts_with(p))
        || matches!(
            statement_type,
            "IndexStmt"
                | "ViewStmt"
                | "RuleStmt"
                | "RefreshMatViewStmt"
                | "CompositeTypeStmt"
                | "CreateEnumStmt"
                | "ObjectWithArgs"
        )
}

/// Cheap pre-check before reading a SELECT's locking clause from the full tree.
fn mentions_row_lock(sql: &str) -> bool {
    // The keywords cannot be quoted, escaped or split by a comment, so the text must contain
    // them as written.
    let lower = sql.to_ascii_lowercase();
    lower.contains("for") && (lower.contains("update") || lower.contains("share"))
}

/// Whether any SELECT in the statement, at any depth, has FOR UPDATE/SHARE.
fn has_row_lock(tree: Option<&pg_query::ParseResult>) -> bool {
    match tree {
        Some(r) => r.protobuf.nodes().iter().any(|(n, ..)| match n {
            pg_query::NodeRef::LockingClause(_) => true,
            pg_query::NodeRef::SelectStmt(s) => !s.locking_clause.is_empty(),
            _ => false,
        }),
        // Cannot tell: assume it locks (the cautious answer).
        None => true,
    }
}

fn explain_analyzes(options: &[pg_query::protobuf::Node]) -> bool {
    options.iter().any(|o| match &o.node {
        Some(N::DefElem(d)) => d.defname == "analyze" && !is_false(&d.arg),
        _ => false,
    })
}

/// `ANALYZE false` / `ANALYZE off` / `ANALYZE 0`.
fn is_false(arg: &Option<Box<pg_query::protobuf::Node>>) -> bool {
    let Some(node) = arg.as_ref().and_then(|a| a.node.as_ref()) else {
        return false;
    };
    match node {
        N::Boolean(b) => !b.boolval,
        N::String(s) => matches!(
            s.sval.to_ascii_lowercase().as_str(),
            "false" | "off" | "0" | "no"
        ),
        N::Integer(i) => i.ival == 0,
        _ => false,
    }
}

/// [`ddl_extras`] for a DDL, DCL or admin statement: the objects it names are taken from the
/// full tree only when the summary named none.
fn with_extras(
    s: &mut StatementClass,
    top: Option<&N>,
    mut ddl: BTreeSet<ObjectName>,
) -> BTreeSet<ObjectName> {
    if let Some(n) = top {
        let mut found = BTreeSet::new();
        ddl_extras(s, n, &mut found);
        if ddl.is_empty() {
            ddl = found;
        }
    }
    ddl
}

/// The single value of a SET, as text.
fn set_value(args: &[pg_query::protobuf::Node]) -> Option<String> {
    let [arg] = args else { return None };
    const_text(arg.node.as_ref()?)
}

/// A constant as text: a string, a boolean, an integer, or one of them cast to a type
/// (`'role'::text`). `None` for anything that is computed.
fn const_text(node: &N) -> Option<String> {
    match node {
        N::AConst(c) => match c.val.as_ref()? {
            pg_query::protobuf::a_const::Val::Sval(s) => Some(s.sval.clone()),
            pg_query::protobuf::a_const::Val::Boolval(b) => Some(b.boolval.to_string()),
            pg_query::protobuf::a_const::Val::Ival(i) => Some(i.ival.to_string()),
            _ => None,
        },
        N::String(s) => Some(s.sval.clone()),
        N::Integer(i) => Some(i.ival.to_string()),
        N::Boolean(b) => Some(b.boolval.to_string()),
        N::TypeCast(t) => const_text(t.arg.as_ref()?.node.as_ref()?),
        _ => None,
    }
}

/// Whether transaction options (`BEGIN …`, `SET TRANSACTION …`, `SET SESSION CHARACTERISTICS
/// AS TRANSACTION …`) include READ WRITE, or a read-only option the gateway cannot read.
fn sets_read_write(options: &[pg_query::protobuf::Node]) -> bool {
    options.iter().any(|o| match o.node.as_ref() {
        Some(N::DefElem(d)) if d.defname == "transaction_read_only" => !d
            .arg
            .as_ref()
            .and_then(|a| a.node.as_ref())
            .and_then(const_text)
            .is_some_and(|v| settings::parses_true(&v)),
        _ => false,
    })
}

/// Every `set_config(name, value, is_local)` call of a statement, classed by the setting it
/// changes. A name that is not a constant could be `role`: `dcl`.
fn set_config_calls(s: &mut StatementClass, tree: Option<&pg_query::ParseResult>, top: Option<&N>) {
    let Some(tree) = tree else {
        s.note(
            Action::Dcl,
            "set_config() can change the role (the statement could not be read further)",
        );
        return;
    };
    // pg_dump's `SELECT set_config(name, 'v', false) FROM pg_settings WHERE name = 'x'`: in
    // the top SELECT's own columns, `name` can only be 'x'.
    let mut row_name: Option<(String, Vec<i32>)> = None;
    if let Some(N::SelectStmt(sel)) = top {
        if let Some(name) = pg_settings_row(&sel.from_clause, sel.where_clause.as_deref()) {
            let at = sel
                .target_list
                .iter()
                .filter_map(|t| match t.node.as_ref() {
                    Some(N::ResTarget(r)) => match r.val.as_ref()?.node.as_ref()? {
                        N::FuncCall(f) => Some(f.location),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            row_name = Some((name, at));
        }
    }
    for (n, ..) in tree.protobuf.nodes() {
        let pg_query::NodeRef::FuncCall(f) = n else {
            continue;
        };
        let is_set_config = matches!(
            f.funcname.last().and_then(|p| p.node.as_ref()),
            Some(N::String(x)) if x.sval == "set_config"
        );
        if !is_set_config {
            continue;
        }
        // Positional or named (`setting_name => …, new_value => …`) arguments.
        let arg = |pos: usize, named: &str| -> Option<&N> {
            let mut positional = 0;
            for a in &f.args {
                match a.node.as_ref()? {
                    N::NamedArgExpr(na) => {
                        if na.name == named {
                            return na.arg.as_ref()?.node.as_ref();
                        }
                    }
                    other => {
                        if positional == pos {
                            return Some(other);
                        }
                        positional += 1;
                    }
                }
            }
            None
        };
        let column_name = match (&row_name, arg(0, "setting_name")) {
            (Some((name, at)), Some(N::ColumnRef(c)))
                if at.contains(&f.location) && is_name_column(c) =>
            {
                Some(name.clone())
            }
            _ => None,
        };
        let Some(name) = column_name.or_else(|| arg(0, "setting_name").and_then(const_text)) else {
            s.note(
                Action::Dcl,
                "set_config() with a setting name the gateway cannot read could change the role",
            );
            continue;
        };
        let value = arg(1, "new_value").and_then(const_text);
        let value = match &value {
            Some(v) => settings::Value::To(v),
            None => settings::Value::Unknown,
        };
        match settings::class_of(&name, value) {
            (action, Some(why)) => s.note(action, format!("set_config(): {why}")),
            (action, None) => s.add(action, None),
        }
    }
}

/// `FROM pg_settings WHERE name = 'x'` (pg_settings alone, as `pg_settings` or
/// `pg_catalog.pg_settings`; a plain `=`): the name of the only row it can reach.
fn pg_settings_row(
    from: &[pg_query::protobuf::Node],
    filter: Option<&pg_query::protobuf::Node>,
) -> Option<String> {
    let [rel] = from else { return None };
    let Some(N::RangeVar(rv)) = rel.node.as_ref() else {
        return None;
    };
    if rv.relname != "pg_settings" || !(rv.schemaname.is_empty() || rv.schemaname == "pg_catalog") {
        return None;
    }
    let Some(N::AExpr(e)) = filter?.node.as_ref() else {
        return None;
    };
    let is_eq = e.kind == pg_query::protobuf::AExprKind::AexprOp as i32
        && matches!(e.name.as_slice(), [op] if matches!(op.node.as_ref(), Some(N::String(x)) if x.sval == "="));
    if !is_eq {
        return None;
    }
    match (node_of(&e.lexpr)?, node_of(&e.rexpr)?) {
        (N::ColumnRef(c), other) | (other, N::ColumnRef(c)) if is_name_column(c) => {
            const_text(other)
        }
        _ => None,
    }
}

fn node_of(n: &Option<Box<pg_query::protobuf::Node>>) -> Option<&N> {
    n.as_ref().and_then(|n| n.node.as_ref())
}

/// A column reference to `name` or `pg_settings.name`.
fn is_name_column(c: &pg_query::protobuf::ColumnRef) -> bool {
    let parts: Vec<&str> = c
        .fields
        .iter()
        .filter_map(|f| match f.node.as_ref() {
            Some(N::String(x)) => Some(x.sval.as_str()),
            _ => None,
        })
        .collect();
    parts.len() == c.fields.len() && matches!(parts.as_slice(), ["name"] | ["pg_settings", "name"])
}

fn unresolved_note(name: &str) -> String {
    format!("EXECUTE of prepared statement {name:?}, which the gateway has not seen prepared")
}

/// Adds what a nested statement needs to its wrapper's needs.
fn absorb(s: &mut StatementClass, inner: StatementClass) {
    for (a, o) in inner.checks {
        s.add(a, o.as_ref());
    }
    s.reads.extend(inner.reads);
    s.writes.extend(inner.writes);
    s.functions.extend(inner.functions);
    s.calls.extend(inner.calls);
    s.notes.extend(inner.notes);
    if inner.executes.is_some() {
        s.executes = inner.executes;
    }
}

/// Tables the summary hides behind CTE names. It drops every table named like a CTE, also
/// where that CTE is out of scope. Taken as scoped correctly only when the statement has one
/// WITH, at its top, and no CTE refers to itself or a later one without RECURSIVE; otherwise
/// every table named like a CTE is counted as read (cautious).
fn tables_behind_cte_names(
    t: &pg_query::ParseResult,
    ctes: &[String],
    top: Option<&N>,
) -> BTreeSet<ObjectName> {
    let nodes = t.protobuf.nodes();
    let withs = nodes
        .iter()
        .filter(|(n, ..)| match n {
            pg_query::NodeRef::SelectStmt(x) => x.with_clause.is_some(),
            pg_query::NodeRef::InsertStmt(x) => x.with_clause.is_some(),
            pg_query::NodeRef::UpdateStmt(x) => x.with_clause.is_some(),
            pg_query::NodeRef::DeleteStmt(x) => x.with_clause.is_some(),
            pg_query::NodeRef::MergeStmt(x) => x.with_clause.is_some(),
            pg_query::NodeRef::WithClause(_) => true,
            _ => false,
        })
        .count();
    let top_with = match top {
        Some(N::SelectStmt(x)) => x.with_clause.as_ref(),
        Some(N::InsertStmt(x)) => x.with_clause.as_ref(),
        Some(N::UpdateStmt(x)) => x.with_clause.as_ref(),
        Some(N::DeleteStmt(x)) => x.with_clause.as_ref(),
        Some(N::MergeStmt(x)) => x.with_clause.as_ref(),
        _ => None,
    };
    let named_like_cte =
        |rv: &pg_query::protobuf::RangeVar| rv.schemaname.is_empty() && ctes.contains(&rv.relname);
    let mut out = BTreeSet::new();
    match top_with {
        Some(w) if withs == 1 => {
            if w.recursive {
                return out;
            }
            // A CTE body sees only the CTEs before it.
            let names: Vec<String> = w
                .ctes
                .iter()
                .filter_map(|c| match c.node.as_ref() {
                    Some(N::CommonTableExpr(c)) => Some(c.ctename.clone()),
                    _ => None,
                })
                .collect();
            for (i, c) in w.ctes.iter().enumerate() {
                let Some(N::CommonTableExpr(c)) = c.node.as_ref() else {
                    continue;
                };
                let Some(body) = c.ctequery.as_ref().and_then(|q| q.node.as_ref()) else {
                    continue;
                };
                for (n, ..) in body.nodes() {
                    if let pg_query::NodeRef::RangeVar(rv) = n {
                        if rv.schemaname.is_empty() && names[i..].contains(&rv.relname) {
                            out.insert(qualify("", &rv.relname));
                        }
                    }
                }
            }
        }
        _ => {
            for (n, ..) in &nodes {
                if let pg_query::NodeRef::RangeVar(rv) = n {
                    if named_like_cte(rv) {
                        out.insert(qualify("", &rv.relname));
                    }
                }
            }
        }
    }
    out
}

/// What DDL does beyond changing the schema: functions it evaluates now (DEFAULT, USING),
/// C-language functions (as good as LOAD), privilege and row-security changes, and the objects
/// it names where the summary does not report them.
fn ddl_extras(s: &mut StatementClass, top: &N, ddl: &mut BTreeSet<ObjectName>) {
    use pg_query::protobuf::{AlterTableType as At, ObjectType as Ot};
    // The protobuf tree has no generic walk over every field; its Debug form names every node.
    // Scanned for string values (function names and literals alike: a literal that spells a
    // dangerous function's name only makes this cautious) and for relations.
    let dump = format!("{top:?}");
    for (i, _) in dump.match_indices("sval: \"") {
        let rest = &dump[i + 7..];
        if let Some(end) = rest.find('"') {
            let name = &rest[..end];
            let class = functions::class_of(name)
                .or_else(|| (name == "set_config").then_some((Action::Dcl, "can change the role")));
            if let Some((action, why)) = class {
                s.note(
                    action,
                    format!("{name}() {why} (evaluated by the DDL statement itself)"),
                );
            }
        }
    }
    for (i, _) in dump.match_indices("RangeVar { catalogname: \"") {
        let rest = &dump[i..];
        let field = |key: &str| -> Option<String> {
            let at = rest.find(key)? + key.len();
            let end = rest[at..].find('"')?;
            Some(rest[at..at + end].to_string())
        };
        if let (Some(schema), Some(rel)) = (field("schemaname: \""), field("relname: \"")) {
            ddl.insert(qualify(&schema, &rel));
        }
    }
    match top {
        N::AlterTableStmt(a) => {
            for c in &a.cmds {
                if let Some(N::AlterTableCmd(c)) = c.node.as_ref() {
                    if c.subtype == At::AtChangeOwner as i32
                        || c.subtype == At::AtDisableRowSecurity as i32
                        || c.subtype == At::AtNoForceRowSecurity as i32
                    {
                        s.note(
                            Action::Dcl,
                            "changes the owner or turns row-level security off",
                        );
                    }
                }
            }
        }
        N::CreateFunctionStmt(f) => {
            let language = f.options.iter().find_map(|o| match o.node.as_ref() {
                Some(N::DefElem(d)) if d.defname == "language" => {
                    match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                        Some(N::String(s)) => Some(s.sval.to_ascii_lowercase()),
                        _ => None,
                    }
                }
                _ => None,
            });
            if matches!(language.as_deref(), Some("c") | Some("internal")) {
                s.note(
                    Action::Admin,
                    "a C-language function loads a shared library into the server",
                );
            }
        }
        N::DropStmt(d) => {
            let policy = d.remove_type == Ot::ObjectPolicy as i32;
            if policy {
                s.note(Action::Dcl, "DROP POLICY changes row-level security");
            }
            let relation = [
                Ot::ObjectTable,
                Ot::ObjectView,
                Ot::ObjectMatview,
                Ot::ObjectIndex,
                Ot::ObjectSequence,
                Ot::ObjectForeignTable,
            ]
            .iter()
            .any(|t| *t as i32 == d.remove_type);
            for o in &d.objects {
                if let Some(N::List(l)) = o.node.as_ref() {
                    let mut parts: Vec<String> = l
                        .items
                        .iter()
                        .filter_map(|p| match p.node.as_ref() {
                            Some(N::String(s)) => Some(s.sval.clone()),
                            _ => None,
                        })
                        .collect();
                    if policy {
                        parts.pop(); // the policy's own name; the rest names its table
                    } else if !relation {
                        continue;
                    }
                    match parts.as_slice() {
                        [t] => {
                            ddl.insert(qualify("", t));
                        }
                        [.., sc, t] => {
                            ddl.insert(qualify(sc, t));
                        }
                        _ => {}
                    }
                }
            }
        }
        N::AlterOwnerStmt(_) => s.note(Action::Dcl, "changes an object's owner"),
        _ => {}
    }
}

/// `schema.table` with the default schema filled in and identifiers quoted where SQL would.
pub fn qualify(schema: &str, table: &str) -> ObjectName {
    let schema = if !schema.is_empty() {
        schema
    } else if table.starts_with("pg_") {
        "pg_catalog"
    } else {
        "public"
    };
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// An identifier as SQL would need to write it: bare when it is a plain lower-case name.
pub fn quote_ident(ident: &str) -> String {
    let plain = !ident.is_empty()
        && ident
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && ident
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        ident.to_string()
    } else {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests;
