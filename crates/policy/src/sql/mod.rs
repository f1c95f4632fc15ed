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

mod functions;

use crate::Action;
use pg_query::protobuf::node::Node as N;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// A table as the gateway names it: `schema.table`, identifiers quoted as in SQL when they
/// are not plain lower-case names (`public."Orders"`).
pub type ObjectName = String;

/// What one statement of a string needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatementClass {
    /// PostgreSQL's name for the statement type (`SelectStmt`, `CopyStmt`, …), or
    /// `ParseError`.
    pub kind: String,
    pub actions: BTreeSet<Action>,
    pub reads: BTreeSet<ObjectName>,
    pub writes: BTreeSet<ObjectName>,
    pub functions: BTreeSet<String>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Classification {
    pub statements: Vec<StatementClass>,
    pub actions: BTreeSet<Action>,
    pub reads: BTreeSet<ObjectName>,
    pub writes: BTreeSet<ObjectName>,
    pub functions: BTreeSet<String>,
    pub checks: BTreeSet<(Action, Option<ObjectName>)>,
    pub notes: Vec<String>,
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
                    Some(p) => {
                        let mut r = p.clone();
                        r.kind = "ExecuteStmt".into();
                        r.executes = Some(name.clone());
                        r.notes.push(format!("EXECUTE runs prepared statement {name:?}"));
                        r
                    }
                    None => {
                        let mut r = StatementClass::unknown(
                            "ExecuteStmt",
                            format!("EXECUTE of prepared statement {name:?}, which the gateway has not seen prepared"),
                        );
                        r.executes = Some(name.clone());
                        r
                    }
                },
            })
            .collect();
        Classification::from_statements(statements)
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
        if f.context == pg_query::protobuf::summary_result::Context::Call {
            if let Some((action, why)) = functions::class_of(bare) {
                s.note(action, format!("{shown}() {why}"));
            }
        }
        s.functions.insert(shown);
    }
    let nested: BTreeSet<&str> = summary
        .statement_types
        .iter()
        .skip(1)
        .map(String::as_str)
        .collect();
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
            if mentions_row_lock(sql) && has_row_lock(sql) {
                s.notes
                    .push("FOR UPDATE/SHARE locks rows (needs UPDATE privilege)".into());
                changes(&mut s, Action::Update, &selected);
            }
        }
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
            reads_rows(&mut s, &selected);
            writes_rows(&mut s, &dml);
            if top == "MergeStmt" {
                // MERGE's WHEN clauses may insert, update or delete: all three, on its target.
                for a in [Action::Insert, Action::Update, Action::Delete] {
                    for t in &dml {
                        s.add(a, Some(t));
                    }
                }
            }
        }
        "ExplainStmt" => match parse_top(sql) {
            Some(N::ExplainStmt(e)) if explain_analyzes(&e.options) => {
                s.notes
                    .push("EXPLAIN ANALYZE runs the statement it explains".into());
                s.add(Action::Select, None);
                reads_rows(&mut s, &selected);
                writes_rows(&mut s, &dml);
                if !ddl.is_empty() {
                    changes(&mut s, Action::Ddl, &ddl);
                }
            }
            Some(N::ExplainStmt(_)) => {
                // Plans without running: it reads the catalog, not the rows.
                s.add(Action::Select, None);
                for t in selected.iter().chain(dml.iter()).chain(ddl.iter()) {
                    s.add(Action::Select, Some(t));
                    s.reads.insert(t.clone());
                }
            }
            _ => s = StatementClass::unknown(&top, "EXPLAIN whose options could not be read"),
        },
        "CopyStmt" => match parse_top(sql) {
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
                    // COPY (query) TO: the query's own classes too.
                    if c.query.is_some() {
                        reads_rows(&mut s, &selected);
                        writes_rows(&mut s, &dml);
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
        "VariableSetStmt" => match parse_top(sql) {
            Some(N::VariableSetStmt(v)) => {
                let kind = v.kind;
                let resets = kind == pg_query::protobuf::VariableSetKind::VarReset as i32
                    || kind == pg_query::protobuf::VariableSetKind::VarResetAll as i32
                    || kind == pg_query::protobuf::VariableSetKind::VarSetDefault as i32
                    || is_none_value(&v.args);
                match v.name.as_str() {
                    "role" | "session_authorization" if !resets => s.note(
                        Action::Dcl,
                        format!("SET {} changes the role statements run as", v.name),
                    ),
                    "search_path" => s.note(
                        Action::Session,
                        "SET search_path changes which tables unqualified names mean",
                    ),
                    _ => s.add(Action::Session, None),
                }
            }
            _ => s = StatementClass::unknown(&top, "SET whose variable could not be read"),
        },
        "PrepareStmt" => match parse_top(sql) {
            Some(N::PrepareStmt(p)) => {
                // What EXECUTE will need: the statement as if it were not prepared.
                let mut inner = StatementClass::default();
                let inner_top = nested.iter().next().copied().unwrap_or("");
                inner.kind = inner_top.to_string();
                inner.functions = s.functions.clone();
                for n in s.notes.drain(..) {
                    inner.notes.push(n);
                }
                for (a, o) in std::mem::take(&mut s.checks) {
                    inner.add(a, o.as_ref());
                }
                if matches!(inner_top, "SelectStmt" | "ValuesStmt") {
                    inner.add(Action::Select, None);
                }
                reads_rows(&mut inner, &selected);
                writes_rows(&mut inner, &dml);
                if !ddl.is_empty() {
                    changes(&mut inner, Action::Ddl, &ddl);
                }
                // Deciding at PREPARE as well stops plan-time effects.
                s = inner.clone();
                s.kind = top.clone();
                s.add(Action::Session, None);
                s.prepares = Some((p.name.clone(), Box::new(inner)));
            }
            _ => s = StatementClass::unknown(&top, "PREPARE whose name could not be read"),
        },
        "ExecuteStmt" => match parse_top(sql) {
            Some(N::ExecuteStmt(e)) => {
                s = StatementClass::unknown(
                    &top,
                    format!(
                        "EXECUTE of prepared statement {:?}, not yet resolved",
                        e.name
                    ),
                );
                s.executes = Some(e.name.clone());
            }
            _ => s = StatementClass::unknown(&top, "EXECUTE whose name could not be read"),
        },
        "DeallocateStmt" => {
            s.add(Action::Session, None);
            s.deallocates = match parse_top(sql) {
                Some(N::DeallocateStmt(d)) if !d.isall && !d.name.is_empty() => {
                    Some(Some(d.name.clone()))
                }
                _ => Some(None),
            };
        }
        "DiscardStmt" => {
            s.add(Action::Session, None);
            s.deallocates = Some(None);
        }
        "DeclareCursorStmt" => {
            // DECLARE c CURSOR FOR <query>: the query's classes.
            s.add(Action::Select, None);
            reads_rows(&mut s, &selected);
            writes_rows(&mut s, &dml);
            if mentions_row_lock(sql) {
                changes(&mut s, Action::Update, &selected);
            }
        }
        "FetchStmt" | "ClosePortalStmt" => s.add(Action::Select, None),
        "TransactionStmt" => s.add(Action::Transaction, None),
        "VariableShowStmt" | "ListenStmt" | "UnlistenStmt" | "NotifyStmt" => {
            s.add(Action::Session, None)
        }
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
        | "DropUserMappingStmt" => changes(&mut s, Action::Dcl, &ddl),
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
        | "LockStmt"
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
        | "ReplicaIdentityStmt" => changes(&mut s, Action::Admin, &ddl),
        t if is_ddl(t) => {
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
    s
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
    let lower = sql.to_ascii_lowercase();
    lower.contains("update") || lower.contains("share")
}

/// Whether any SELECT in the statement, at any depth, has FOR UPDATE/SHARE.
fn has_row_lock(sql: &str) -> bool {
    match pg_query::parse(sql, 0) {
        Ok(r) => r.protobuf.nodes().iter().any(|(n, ..)| match n {
            pg_query::NodeRef::LockingClause(_) => true,
            pg_query::NodeRef::SelectStmt(s) => !s.locking_clause.is_empty(),
            _ => false,
        }),
        // Cannot tell: assume it locks (the cautious answer).
        Err(_) => true,
    }
}

/// The top statement's node from the full parse tree.
fn parse_top(sql: &str) -> Option<N> {
    let r = pg_query::parse(sql, 0).ok()?;
    let stmt = r.protobuf.stmts.into_iter().next()?;
    stmt.stmt?.node
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

/// `SET ROLE NONE`.
fn is_none_value(args: &[pg_query::protobuf::Node]) -> bool {
    fn text(n: &pg_query::protobuf::Node) -> Option<&str> {
        match n.node.as_ref()? {
            N::AConst(c) => match c.val.as_ref()? {
                pg_query::protobuf::a_const::Val::Sval(s) => Some(s.sval.as_str()),
                _ => None,
            },
            N::String(s) => Some(s.sval.as_str()),
            _ => None,
        }
    }
    args.len() == 1 && text(&args[0]).is_some_and(|t| t.eq_ignore_ascii_case("none"))
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
