//! Where a query's result columns come from: which table columns each output column is
//! computed from, through aliases, casts, function calls, subqueries, CTEs and set operations.
//!
//! Masking applies column rules (`customers.email = "partial"`) by result column name; without
//! this, `SELECT email AS contact`, `SELECT email::text` or `SELECT x FROM (SELECT email AS x
//! …) s` would rename a ruled column out of its rule. The answer over-approximates on
//! purpose: all the query's SELECT lists share one namespace, so an output name that could
//! carry a ruled column's value is treated as that column (masking too much, never too little).
//! The one exception is `count(…)`, whose arguments are not sources: it counts values
//! without showing them. A whole row
//! (`SELECT c FROM customers c`, `c::text`) is a source named `customers.*`.
//!
//! It walks libpg_query's full parse tree generically (as JSON), so an expression type it has
//! no case for still has its column references found. A statement too deeply nested to
//! follow whole is [`ResultSources::untraced`]: masking then treats every result column as
//! holding any ruled column of the tables read.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

/// For each name a result column of the query can have (lower case), the table column names
/// (lower case) its value may come from. A plain column reference maps to itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSources {
    map: BTreeMap<String, BTreeSet<String>>,
    untraced: bool,
}

impl ResultSources {
    /// The source column names of the result column `name` (case-insensitive), itself
    /// excluded.
    pub fn of(&self, name: &str) -> impl Iterator<Item = &str> {
        let name = name.to_ascii_lowercase();
        self.map
            .get(&name)
            .into_iter()
            .flatten()
            .filter(move |s| **s != name)
            .map(String::as_str)
    }

    /// Whether the statement was too deeply nested to trace whole (see the module docs).
    pub fn untraced(&self) -> bool {
        self.untraced
    }

    /// Traces the result columns of `sql`; untraced when it does not parse here (the
    /// parser's stack may be smaller than the server's).
    pub fn of_sql(sql: &str) -> ResultSources {
        let untraced = ResultSources {
            untraced: true,
            ..ResultSources::default()
        };
        let Ok(parsed) = pg_query::parse(sql, 0) else {
            return untraced;
        };
        let Ok(tree) = serde_json::to_value(&parsed.protobuf) else {
            return untraced;
        };
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut deep = false;
        collect(&tree, &mut map, &mut deep);
        let settled = settle(&mut map);
        ResultSources {
            map,
            untraced: deep || !settled,
        }
    }

    /// These sources and those of views or function bodies the query reads through: a
    /// view's column `who` traced to `full_name` makes the query's `who` come from
    /// `full_name` too (one namespace, as within a query).
    pub fn merged<'a>(&self, more: impl IntoIterator<Item = &'a ResultSources>) -> ResultSources {
        let mut map = self.map.clone();
        let mut untraced = self.untraced;
        for m in more {
            untraced |= m.untraced;
            for (name, sources) in &m.map {
                map.entry(name.clone())
                    .or_default()
                    .extend(sources.iter().cloned());
            }
        }
        let settled = settle(&mut map);
        ResultSources {
            map,
            untraced: untraced || !settled,
        }
    }
}

/// Names that refer to other output names (a subquery's alias used outside it) take those
/// names' sources too, until nothing changes; false if that did not settle.
fn settle(map: &mut BTreeMap<String, BTreeSet<String>>) -> bool {
    for _ in 0..MAX_DEPTH {
        let mut changed = false;
        let snapshot = map.clone();
        for sources in map.values_mut() {
            let more: Vec<String> = sources
                .iter()
                .filter_map(|s| snapshot.get(s))
                .flatten()
                .filter(|s| !sources.contains(*s))
                .cloned()
                .collect();
            changed |= !more.is_empty();
            sources.extend(more);
        }
        if !changed {
            return true;
        }
    }
    false
}

/// Parse trees nested deeper than this (JSON levels: each level of SQL nesting takes about
/// eight) are not followed further, and the statement is untraced. libpg_query's own tree
/// decoder gives up sooner (about 25 nested subqueries), which is untraced too.
const MAX_DEPTH: usize = 400;

/// Walks a parse tree depth first: `visit` sees every JSON object and says whether to go on
/// into it. Past `MAX_DEPTH` the walk stops and sets `deep`.
fn walk(
    v: &Value,
    depth: usize,
    deep: &mut bool,
    visit: &mut dyn FnMut(&serde_json::Map<String, Value>, &mut bool) -> bool,
) {
    if depth > MAX_DEPTH {
        *deep = true;
        return;
    }
    match v {
        Value::Object(o) if visit(o, deep) => {
            for child in o.values() {
                walk(child, depth + 1, deep, visit);
            }
        }
        Value::Array(a) => {
            for child in a {
                walk(child, depth + 1, deep, visit);
            }
        }
        _ => {}
    }
}

/// Finds every SELECT list in the tree (and the column lists that rename them).
fn collect(tree: &Value, map: &mut BTreeMap<String, BTreeSet<String>>, deep: &mut bool) {
    walk(tree, 0, deep, &mut |o, deep| {
        if let Some(select) = o.get("SelectStmt") {
            let mut tables = BTreeMap::new();
            if let Some(from) = select.get("from_clause") {
                from_tables(from, &mut tables, deep);
            }
            let lists = target_lists(select, 0, deep);
            // Set operations: names from the first branch, values from every branch.
            if let Some(first) = lists.first() {
                for (i, target) in first.iter().enumerate() {
                    let entry = map.entry(output_name(target)).or_default();
                    for t in lists.iter().filter_map(|list| list.get(i)) {
                        let refs = references(t, deep);
                        // A reference to a FROM item's name is its whole row.
                        entry.extend(
                            refs.iter()
                                .filter_map(|r| tables.get(r))
                                .map(|table| format!("{table}.*")),
                        );
                        entry.extend(refs);
                    }
                }
            }
        }
        // `(SELECT email FROM customers) AS s(contact)`, `WITH c(contact) AS (…)`.
        let renamed = match (o.get("RangeSubselect"), o.get("CommonTableExpr")) {
            (Some(r), _) => Some((
                r.pointer("/alias/colnames"),
                r.pointer("/subquery/node/SelectStmt"),
            )),
            (_, Some(c)) => Some((
                c.get("aliascolnames"),
                c.pointer("/ctequery/node/SelectStmt"),
            )),
            _ => None,
        };
        if let Some((Some(Value::Array(names)), Some(select))) = renamed {
            let lists = target_lists(select, 0, deep);
            for (i, name) in names.iter().enumerate() {
                let Some(name) = string_value(name) else {
                    continue;
                };
                let entry = map.entry(name).or_default();
                for t in lists.iter().filter_map(|list| list.get(i)) {
                    entry.extend(references(t, deep));
                    entry.insert(output_name(t));
                }
            }
        }
        true
    });
}

/// The tables a FROM list reads, by the name a query refers to them with (alias, else the
/// table's own name), lower case. Subqueries have their own FROM lists.
fn from_tables(from: &Value, out: &mut BTreeMap<String, String>, deep: &mut bool) {
    walk(from, 0, deep, &mut |o, _| {
        if let Some(r) = o.get("RangeVar") {
            if let Some(table) = r.get("relname").and_then(Value::as_str) {
                let table = table.to_ascii_lowercase();
                let alias = r
                    .pointer("/alias/aliasname")
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase);
                out.insert(alias.unwrap_or_else(|| table.clone()), table);
            }
            return false;
        }
        !o.contains_key("RangeSubselect")
    });
}

/// The SELECT lists of a SelectStmt: its own, or each branch's for UNION / INTERSECT /
/// EXCEPT, left to right.
fn target_lists<'a>(select: &'a Value, depth: usize, deep: &mut bool) -> Vec<Vec<&'a Value>> {
    if depth > MAX_DEPTH {
        *deep = true;
        return Vec::new();
    }
    let branch = |k: &str| select.get(k).filter(|b| b.is_object());
    match (branch("larg"), branch("rarg")) {
        (Some(l), Some(r)) => {
            let mut lists = target_lists(l, depth + 1, deep);
            lists.extend(target_lists(r, depth + 1, deep));
            lists
        }
        _ => {
            let targets = select
                .get("target_list")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.pointer("/node/ResTarget"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            vec![targets]
        }
    }
}

/// The name PostgreSQL gives a result column (its alias, else what its expression is named
/// after: the column, the function, the cast's argument), lower case; `?column?` otherwise.
fn output_name(target: &Value) -> String {
    if let Some(name) = target.get("name").and_then(Value::as_str) {
        if !name.is_empty() {
            return name.to_ascii_lowercase();
        }
    }
    target
        .pointer("/val/node")
        .and_then(|n| expression_name(n, 0))
        .unwrap_or_else(|| "?column?".into())
}

fn expression_name(node: &Value, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return None;
    }
    if let Some(c) = node.get("ColumnRef") {
        return column_name(c);
    }
    if let Some(f) = node.get("FuncCall") {
        return function_name(f);
    }
    if let Some(t) = node.get("TypeCast") {
        return expression_name(t.pointer("/arg/node")?, depth + 1)
            .or_else(|| last_name(t.get("type_name")?, "names"));
    }
    for (key, name) in [
        ("CaseExpr", "case"),
        ("CoalesceExpr", "coalesce"),
        ("NullIfExpr", "nullif"),
    ] {
        if node.get(key).is_some() {
            return Some(name.into());
        }
    }
    None
}

/// Every column name referenced in a SELECT list entry's expression, lower case; not inside
/// `count(…)`.
fn references(target: &Value, deep: &mut bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(val) = target.get("val") {
        walk(val, 0, deep, &mut |o, _| {
            if let Some(c) = o.get("ColumnRef") {
                out.extend(column_name(c));
                return false;
            }
            o.get("FuncCall")
                .and_then(function_name)
                .is_none_or(|n| n != "count")
        });
    }
    out
}

/// The last name of a list of names, lower case: the function a FuncCall calls
/// (`pg_catalog.lower` is `lower`), the column a ColumnRef names (`c.email` is `email`; `None`
/// for `*`).
fn last_name(node: &Value, list: &str) -> Option<String> {
    node.get(list)?.as_array()?.last().and_then(string_value)
}

fn function_name(call: &Value) -> Option<String> {
    last_name(call, "funcname")
}

fn column_name(column_ref: &Value) -> Option<String> {
    last_name(column_ref, "fields")
}

/// A String node's text, lower case.
fn string_value(node: &Value) -> Option<String> {
    node.pointer("/node/String/sval")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

/// [`ResultSources`] of a classified statement, traced the first time masking asks (a full
/// parse, needed only when a profile has column rules).
#[derive(Clone, Default)]
pub struct LazySources {
    sql: Option<Arc<str>>,
    sources: Arc<OnceLock<ResultSources>>,
}

impl LazySources {
    pub(crate) fn new(sql: &str) -> LazySources {
        LazySources {
            sql: Some(sql.into()),
            sources: Arc::default(),
        }
    }

    /// Sources that cannot be traced (see [`ResultSources::untraced`]).
    pub(crate) fn untraced() -> LazySources {
        LazySources {
            sql: None,
            sources: Arc::new(OnceLock::from(ResultSources {
                untraced: true,
                ..ResultSources::default()
            })),
        }
    }

    /// These sources merged with those of the views and SQL function bodies the statement
    /// reads through (see [`ResultSources::merged`]).
    pub(crate) fn with_more(&self, more: Vec<LazySources>) -> LazySources {
        if more.is_empty() {
            return self.clone();
        }
        let merged = self.get().merged(more.iter().map(LazySources::get));
        LazySources {
            sql: None,
            sources: Arc::new(OnceLock::from(merged)),
        }
    }

    pub fn get(&self) -> &ResultSources {
        self.sources.get_or_init(|| {
            self.sql
                .as_deref()
                .map(ResultSources::of_sql)
                .unwrap_or_default()
        })
    }
}

impl std::fmt::Debug for LazySources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LazySources")
    }
}

/// Derived from the statement text, which the classification is of: never part of its
/// identity.
impl PartialEq for LazySources {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LazySources {}

impl std::hash::Hash for LazySources {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(sql: &str, name: &str) -> Vec<String> {
        ResultSources::of_sql(sql)
            .of(name)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn result_columns_are_traced_to_table_columns() {
        let s = |sql: &str, name: &str| sources(sql, name);
        assert_eq!(
            s("SELECT email AS contact FROM customers", "contact"),
            ["email"]
        );
        assert_eq!(
            s("SELECT email AS \"Contact\" FROM customers", "Contact"),
            ["email"]
        );
        assert_eq!(
            s("SELECT email::text FROM customers", "email"),
            Vec::<String>::new()
        );
        assert_eq!(s("SELECT lower(email) FROM customers", "lower"), ["email"]);
        assert_eq!(
            s(
                "SELECT upper(full_name)::varchar(20) AS n FROM customers",
                "n"
            ),
            ["full_name"]
        );
        assert_eq!(
            s("SELECT coalesce(email, phone) FROM customers", "coalesce"),
            ["email", "phone"]
        );
        assert_eq!(
            s("SELECT email || '' FROM customers", "?column?"),
            ["email"]
        );
        assert_eq!(
            s("SELECT x FROM (SELECT email AS x FROM customers) s", "x"),
            ["email"]
        );
        assert_eq!(
            s(
                "SELECT y FROM (SELECT lower(email) AS x FROM customers) s(y)",
                "y"
            ),
            ["email", "x"]
        );
        assert_eq!(
            s(
                "WITH c(y) AS (SELECT email FROM customers) SELECT y AS z FROM c",
                "z"
            ),
            ["email", "y"]
        );
        assert_eq!(
            s(
                "SELECT id AS v FROM orders UNION ALL SELECT email FROM customers",
                "v"
            ),
            ["email", "id"]
        );
        assert_eq!(
            s("SELECT (SELECT email FROM customers LIMIT 1) AS e", "e"),
            ["email"]
        );
        assert_eq!(
            s(
                "SELECT CASE WHEN true THEN email END AS e FROM customers",
                "e"
            ),
            ["email"]
        );
        assert_eq!(s("SELECT c FROM customers c", "c"), ["customers.*"]);
        assert_eq!(
            s(
                "SELECT c::text AS r FROM orders o JOIN customers c ON true",
                "r"
            ),
            ["c", "customers.*"]
        );
        assert_eq!(
            s("SELECT customers FROM customers", "customers"),
            ["customers.*"]
        );
        // Counting shows no value.
        assert_eq!(
            s("SELECT count(email) AS n FROM customers", "n"),
            Vec::<String>::new()
        );
        assert_eq!(s("not sql at all", "x"), Vec::<String>::new());
        assert!(ResultSources::of_sql("not sql at all").untraced());
    }

    #[test]
    fn nesting_too_deep_to_follow_is_untraced() {
        let nest = |n: usize| {
            let mut sql = "SELECT full_name AS x FROM customers".to_string();
            for _ in 0..n {
                sql = format!("SELECT x FROM ({sql}) s");
            }
            sql
        };
        for n in [5, 20] {
            let traced = ResultSources::of_sql(&nest(n));
            assert!(!traced.untraced(), "{n}");
            assert_eq!(traced.of("x").collect::<Vec<_>>(), ["full_name"], "{n}");
        }
        // libpg_query's tree decoder stops at about 25 levels of subqueries; the walk here
        // would stop at about 50.
        for n in [30, 80] {
            let deep = ResultSources::of_sql(&nest(n));
            assert!(
                deep.untraced(),
                "{n}: too deep to follow, masking must assume the worst"
            );
        }
    }
}
