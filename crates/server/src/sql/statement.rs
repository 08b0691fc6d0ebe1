//! Flight SQL statements: parsed with `sqlparser`, refused unless they are exactly one read-only
//! query, parameters numbered and later inlined as typed literals (COPY takes no bind parameters),
//! then sorted: a plain scan of one exposed table ([`Scan`]) or a statement PostgreSQL runs whole.

use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::{
    visit_expressions, visit_expressions_mut, visit_statements, BinaryOperator, Expr, GroupByExpr,
    Ident, ObjectNamePart, Query, SelectItem, SetExpr, Statement as Ast, TableFactor, Value,
};
use sqlparser::dialect::{Dialect, GenericDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;

use crate::catalog::{QualifiedName, Snapshot, Table, TimeDimension};
use crate::error::Error;

/// One read-only query, its parameters numbered `$1..$n`.
#[derive(Debug, Clone)]
pub struct Statement {
    query: Query,
    parameters: usize,
}

impl Statement {
    /// Parses `sql`, refusing anything but one read-only query. Parameters may be written `$n` or
    /// `?` (ADBC's style), not both.
    pub fn parse(sql: &str) -> Result<Statement, Error> {
        // `?` is an operator in PostgreSQL's dialect: a statement with `?` placeholders parses
        // with the generic one.
        let parsed = parse_with(&PostgreSqlDialect {}, sql)
            .or_else(|e| parse_with(&GenericDialect {}, sql).map_err(|_| e))?;
        let statement = match <[Ast; 1]>::try_from(parsed) {
            Ok([s]) => s,
            Err(v) if v.is_empty() => return Err(invalid("the statement is empty".into())),
            Err(v) => return Err(invalid(format!("one statement at a time: got {}", v.len()))),
        };
        let Ast::Query(query) = statement else {
            return Err(refused(&kind(&statement)));
        };
        read_only(&query)?;
        let mut query = *query;
        let parameters = number_parameters(&mut query)?;
        Ok(Statement { query, parameters })
    }

    /// How many parameters the statement takes.
    pub fn parameters(&self) -> usize {
        self.parameters
    }

    /// The statement, its placeholders unbound.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The statement's text with `$n` placeholders, as PostgreSQL prepares it.
    pub fn text(&self) -> String {
        self.query.to_string()
    }

    /// The statement with each `$n` replaced by `literals[n - 1]` (SQL expressions this server
    /// rendered from the bound values).
    pub fn bind(&self, literals: &[String]) -> Result<Query, Error> {
        if literals.len() != self.parameters {
            return Err(invalid(format!(
                "the statement takes {} parameter(s); {} bound",
                self.parameters,
                literals.len()
            )));
        }
        let exprs = literals
            .iter()
            .map(|l| {
                Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(l)
                    .and_then(|mut p| p.parse_expr())
                    .map_err(|e| invalid(format!("cannot bind parameter: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut query = self.query.clone();
        let _ = visit_expressions_mut(&mut query, |e| {
            if let Some(n) = placeholder(e) {
                *e = exprs[n - 1].clone();
            }
            ControlFlow::<()>::Continue(())
        });
        Ok(query)
    }
}

fn parse_with(dialect: &dyn Dialect, sql: &str) -> Result<Vec<Ast>, Error> {
    Parser::parse_sql(dialect, sql).map_err(|e| invalid(format!("cannot parse the statement: {e}")))
}

fn invalid(message: String) -> Error {
    Error::InvalidRequest(protocol::status::clip(&message).into_owned())
}

fn refused(kind: &str) -> Error {
    invalid(format!(
        "{kind} statements are refused: hyperflight is read-only and runs SELECT statements only"
    ))
}

/// The kind of a statement as its first keywords say it: `INSERT`, `CREATE TABLE`, `DROP VIEW`.
fn kind(statement: &Ast) -> String {
    const MODIFIERS: &[&str] = &[
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "UNIQUE",
        "MATERIALIZED",
        "GLOBAL",
        "LOCAL",
        "RECURSIVE",
        "IF",
    ];
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default().to_uppercase();
    if !matches!(first.as_str(), "CREATE" | "DROP" | "ALTER") {
        return first;
    }
    match words.find(|w| !MODIFIERS.contains(&w.to_uppercase().as_str())) {
        Some(object) => format!("{first} {}", object.to_uppercase()),
        None => first,
    }
}

/// Refuses a query that writes or locks: a data-modifying WITH, `SELECT … INTO`, `FOR UPDATE`.
fn read_only(query: &Query) -> Result<(), Error> {
    if let ControlFlow::Break(k) = visit_statements(query, |s| match s {
        Ast::Query(_) => ControlFlow::Continue(()),
        other => ControlFlow::Break(kind(other)),
    }) {
        let k: String = k;
        return Err(refused(&k));
    }
    let mut writes = None;
    check_query(query, &mut writes);
    match writes {
        Some(k) => Err(refused(k)),
        None => Ok(()),
    }
}

fn check_query(query: &Query, writes: &mut Option<&'static str>) {
    if !query.locks.is_empty() {
        *writes = Some("SELECT … FOR UPDATE/SHARE");
    }
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            check_query(&cte.query, writes);
        }
    }
    check_set(&query.body, writes);
}

fn check_set(body: &SetExpr, writes: &mut Option<&'static str>) {
    match body {
        SetExpr::Select(s) if s.into.is_some() => *writes = Some("SELECT … INTO"),
        SetExpr::Query(q) => check_query(q, writes),
        SetExpr::SetOperation { left, right, .. } => {
            check_set(left, writes);
            check_set(right, writes);
        }
        SetExpr::Insert(_) => *writes = Some("INSERT"),
        SetExpr::Update(_) => *writes = Some("UPDATE"),
        SetExpr::Delete(_) => *writes = Some("DELETE"),
        SetExpr::Merge(_) => *writes = Some("MERGE"),
        _ => {}
    }
}

/// The number `n` of a `$n` placeholder.
fn placeholder(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => p.strip_prefix('$')?.parse().ok().filter(|n| *n > 0),
            _ => None,
        },
        _ => None,
    }
}

/// Turns `?` placeholders into `$1..$n` in the order they appear; returns the parameter count.
fn number_parameters(query: &mut Query) -> Result<usize, Error> {
    let (mut questions, mut highest, mut bad) = (0usize, 0usize, None);
    let _ = visit_expressions_mut(query, |e| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &mut v.value {
                if p == "?" {
                    questions += 1;
                    *p = format!("${questions}");
                } else if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                    highest = highest.max(n);
                } else {
                    bad = Some(p.clone());
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(p) = bad {
        return Err(invalid(format!("unsupported placeholder {p}: use ? or $n")));
    }
    match (questions, highest) {
        (0, n) | (n, 0) => Ok(n),
        _ => Err(invalid(
            "placeholders are either all ? or all $n, not both".into(),
        )),
    }
}

/// A plain scan of one exposed table: `SELECT * | col, … FROM schema.table [WHERE c AND c …]`,
/// where each condition bounds the time dimension or is a simple column predicate.
#[derive(Debug)]
pub struct Scan {
    /// The table.
    pub table: Arc<Table>,
    /// Its columns, in order; `None` for `*`.
    pub columns: Option<Vec<String>>,
    /// Bounds on the time dimension: `(start side, strict, constant expression)`.
    pub bounds: Vec<TimeBound>,
    /// Other conditions, rendered, passed down to every endpoint.
    pub predicates: Vec<String>,
}

/// One side of a time window, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeBound {
    /// A lower bound (`>=`, `>`); otherwise an upper one.
    pub lower: bool,
    /// `>` or `<` rather than `>=` or `<=`.
    pub strict: bool,
    /// The bound: an expression without column references, evaluated by PostgreSQL.
    pub value: String,
}

impl TimeBound {
    /// The bound as the planner's half-open window edge, given its value in internal units.
    pub fn edge(&self, value: i64, dimension: &TimeDimension) -> i64 {
        // [start, end): `> v` starts at v + step, `<= v` ends there.
        if self.lower == self.strict {
            value.saturating_add(dimension.step())
        } else {
            value
        }
    }
}

/// The scan `query` is, if it is one of an exposed table; `None` sends it whole to PostgreSQL.
pub fn scan(query: &Query, snapshot: &Snapshot) -> Option<Scan> {
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
        || !query.locks.is_empty()
    {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain_select = select.distinct.is_none()
        && select.top.is_none()
        && select.into.is_none()
        && select.from.len() == 1
        && select.from[0].joins.is_empty()
        && select.lateral_views.is_empty()
        && select.prewhere.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && select.having.is_none()
        && select.named_window.is_empty()
        && select.qualify.is_none()
        && select.connect_by.is_none()
        && select.cluster_by.is_empty()
        && select.distribute_by.is_empty()
        && select.sort_by.is_empty();
    if !plain_select {
        return None;
    }
    let TableFactor::Table {
        name,
        alias: None,
        args: None,
        ..
    } = &select.from[0].relation
    else {
        return None;
    };
    // Schema-qualified only: an unqualified name is PostgreSQL's to resolve (search_path).
    let [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(table)] = name.0.as_slice()
    else {
        return None;
    };
    let table = snapshot
        .table(&QualifiedName::new(folded(schema), folded(table)))?
        .clone();
    let has = |c: &str| table.columns.iter().any(|col| col.name == c);
    let columns = match select.projection.as_slice() {
        [SelectItem::Wildcard(o)]
            if o.opt_ilike.is_none()
                && o.opt_exclude.is_none()
                && o.opt_except.is_none()
                && o.opt_replace.is_none()
                && o.opt_rename.is_none() =>
        {
            None
        }
        items => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                let SelectItem::UnnamedExpr(Expr::Identifier(ident)) = item else {
                    return None;
                };
                let name = folded(ident);
                if !has(&name) || names.contains(&name) {
                    return None;
                }
                names.push(name);
            }
            Some(names)
        }
    };
    let time_column = table.time_dimension().map(|d| d.column.as_str());
    let mut scan = Scan {
        columns,
        bounds: Vec::new(),
        predicates: Vec::new(),
        table: table.clone(),
    };
    let mut conditions = Vec::new();
    if let Some(selection) = &select.selection {
        conjuncts(selection, &mut conditions);
    }
    for condition in conditions {
        let column = condition_column(condition)?;
        if !has(&column) {
            return None;
        }
        let bounds = (Some(column.as_str()) == time_column)
            .then(|| time_bounds(condition))
            .flatten();
        match bounds {
            Some(b) => scan.bounds.extend(b),
            None => scan.predicates.push(condition.to_string()),
        }
    }
    Some(scan)
}

/// An identifier as PostgreSQL resolves it: unquoted names fold to lower case.
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// The one column a simple predicate tests (`col op constant`, `col [NOT] BETWEEN c AND c`,
/// `col IS [NOT] NULL`, `col [NOT] IN (constants)`); `None` for anything else.
fn condition_column(e: &Expr) -> Option<String> {
    let column = |e: &Expr| match e {
        Expr::Identifier(ident) => Some(folded(ident)),
        _ => None,
    };
    match e {
        Expr::BinaryOp { left, op, right } if comparison(op) && constant(right) => column(left),
        Expr::Between {
            expr, low, high, ..
        } if constant(low) && constant(high) => column(expr),
        Expr::IsNull(expr) | Expr::IsNotNull(expr) => column(expr),
        Expr::InList { expr, list, .. } if list.iter().all(constant) => column(expr),
        _ => None,
    }
}

fn comparison(op: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq)
}

/// An expression without column references or subqueries: PostgreSQL evaluates it once.
fn constant(e: &Expr) -> bool {
    visit_expressions(e, |e| match e {
        Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::Subquery(_)
        | Expr::Exists { .. }
        | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_continue()
}

/// The window a condition on the time dimension sets, if it sets one.
fn time_bounds(e: &Expr) -> Option<Vec<TimeBound>> {
    let bound = |lower, strict, value: &Expr| TimeBound {
        lower,
        strict,
        value: value.to_string(),
    };
    match e {
        Expr::BinaryOp { op, right, .. } => match op {
            BinaryOperator::GtEq => Some(vec![bound(true, false, right)]),
            BinaryOperator::Gt => Some(vec![bound(true, true, right)]),
            BinaryOperator::Lt => Some(vec![bound(false, true, right)]),
            BinaryOperator::LtEq => Some(vec![bound(false, false, right)]),
            _ => None,
        },
        Expr::Between {
            negated: false,
            low,
            high,
            ..
        } => Some(vec![bound(true, false, low), bound(false, false, high)]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]
        #[test]
        fn arbitrary_text_never_panics(sql in "\\PC{0,120}") {
            let _ = Statement::parse(&sql);
        }

        #[test]
        fn sql_shaped_statements_never_panic(
            sql in "(SELECT|WITH x AS \\(SELECT 1\\) SELECT|INSERT INTO t|DELETE FROM) [a-z0-9 *,.()'$?=<>;:]{0,60}",
        ) {
            if let Ok(s) = Statement::parse(&sql) {
                let literals = vec!["1".to_string(); s.parameters()];
                let _ = s.bind(&literals).map(|q| scan(&q, &Snapshot::default()));
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
        assert!(Statement::parse(&sql).is_err());
    }

    fn refusal(sql: &str) -> String {
        match Statement::parse(sql) {
            Err(Error::InvalidRequest(m)) => m,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn writes_ddl_and_batches_are_refused_by_kind() {
        assert!(refusal("INSERT INTO t VALUES (1)").starts_with("INSERT statements are refused"));
        assert!(refusal("update t set a = 1").starts_with("UPDATE "));
        assert!(refusal("DELETE FROM t").starts_with("DELETE "));
        assert!(refusal("CREATE TABLE x (a int)").starts_with("CREATE TABLE "));
        assert!(refusal("CREATE OR REPLACE VIEW v AS SELECT 1").starts_with("CREATE VIEW "));
        assert!(refusal("DROP TABLE t").starts_with("DROP TABLE "));
        assert!(refusal("TRUNCATE t").starts_with("TRUNCATE "));
        assert!(refusal("SELECT 1; SELECT 2").contains("one statement at a time: got 2"));
        assert!(
            refusal("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").starts_with("DELETE ")
        );
        assert!(refusal("SELECT * INTO t2 FROM t").starts_with("SELECT … INTO"));
        assert!(refusal("SELECT * FROM t FOR UPDATE").starts_with("SELECT … FOR UPDATE"));
        assert!(refusal("SELEC 1").starts_with("cannot parse"));
        assert!(refusal("").contains("empty"));
    }

    #[test]
    fn placeholders_are_numbered_and_bound() {
        let s = Statement::parse("SELECT a FROM t WHERE a > ? AND b = ?").unwrap();
        assert_eq!(s.parameters(), 2);
        assert_eq!(s.text(), "SELECT a FROM t WHERE a > $1 AND b = $2");
        let bound = s
            .bind(&["CAST('5' AS \"pg_catalog\".\"int4\")".into(), "NULL".into()])
            .unwrap();
        assert_eq!(
            bound.to_string(),
            "SELECT a FROM t WHERE a > CAST('5' AS \"pg_catalog\".\"int4\") AND b = NULL"
        );
        assert!(s.bind(&[]).is_err());
        assert_eq!(Statement::parse("SELECT $2, $1").unwrap().parameters(), 2);
        assert!(Statement::parse("SELECT ?, $1").is_err());
        // The jsonb operator `?` still parses where it is one.
        assert_eq!(
            Statement::parse("SELECT '{}'::jsonb ? 'a'")
                .unwrap()
                .parameters(),
            0
        );
    }

    #[test]
    fn kinds_name_the_object() {
        let k = |sql: &str| kind(&Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0]);
        assert_eq!(k("CREATE UNIQUE INDEX i ON t (a)"), "CREATE INDEX");
        assert_eq!(k("ALTER TABLE t ADD COLUMN b int"), "ALTER TABLE");
        assert_eq!(k("SET search_path = x"), "SET");
    }
}
