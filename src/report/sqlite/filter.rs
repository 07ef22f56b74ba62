//! What a filter matches, as SQL over the raw tables ([`super::raw`]). The
//! same rules tested on one value in memory are
//! [`crate::report::matching`], shared by recent traffic ([`super::recent`])
//! and the column store ([`crate::report::columns`]); all must give the same
//! answers (the test below holds the SQL and the memory to each other), so a
//! change to one side is made in both, together.
//!
//! The rules:
//! - A filter's values are alternatives: `is` passes a row when one of them
//!   matches, `is not` when none does, `contains` when one is a substring.
//! - A missing value (SQL `NULL`; no value in memory) is matched only by the
//!   none value (`None`, "Direct / None"): `is` and `contains` pass it when
//!   the none value is among the values, `is not` when it is not. In SQL the
//!   other comparisons with `NULL` are unknown, hence `NOT COALESCE(…, 0)`.
//! - `contains` ignores ASCII case only, as SQLite's `LIKE` does: other
//!   letters compare exactly, and `%`, `_` and `\` in the value are literal
//!   (escaped).
//! - A page value (the event's page; not entry or exit pages) with `*` is a
//!   pattern for `is` and `is not`: `*` and `**` alike match any run of
//!   characters, `/` included; `?` and `[` are literal. Goal pages use the
//!   same wildcard ([`glob_of`], [`glob`]).
//! - Anything else is equal byte for byte (no collation is declared).
//! - A property key with `"` cannot be named in a JSON path, so no event has
//!   that property. Properties are stored as strings only, so the JSON value
//!   SQL reads is the string held in memory.
//!
//! Column names come from [`crate::report::model::VisitColumn::name`] and
//! fixed text here, never from a request; values are bound parameters.

use crate::report::matching::prop_key_named;
#[cfg(test)]
use crate::report::matching::value_matches;
use crate::report::model::{Filter, FilterField, FilterOp};

/// SQL text with its parameters, built together so they cannot drift apart.
#[derive(Default)]
pub(super) struct Sql {
    pub(super) text: String,
    args: Vec<Box<dyn rusqlite::ToSql>>,
}

impl Sql {
    pub(super) fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    pub(super) fn arg<T: rusqlite::ToSql + 'static>(&mut self, value: T) -> &mut Sql {
        self.text.push('?');
        self.args.push(Box::new(value));
        self
    }

    pub(super) fn params(&self) -> impl rusqlite::Params + '_ {
        rusqlite::params_from_iter(self.args.iter().map(|a| a.as_ref()))
    }
}

/// The value of property `key` of event `e`. A `"` cannot be escaped
/// inside a JSON path label, so no event has such a property: its value is
/// `NULL`, as a missing property's is (a path SQLite cannot parse would
/// fail the whole query instead).
pub(super) fn prop_sql(sql: &mut Sql, key: &str) {
    if !prop_key_named(key) {
        sql.push("NULL");
    } else {
        sql.push("json_extract(e.props, ")
            .arg(format!("$.\"{key}\""))
            .push(")");
    }
}

/// The SQL expression of a field: events as `e`, visits as `v`.
fn field_sql(sql: &mut Sql, field: &FilterField) {
    match field {
        FilterField::Page => {
            sql.push("e.path");
        }
        FilterField::EventName => {
            sql.push("e.name");
        }
        FilterField::Prop(key) => prop_sql(sql, key),
        FilterField::Visit(column) => {
            sql.push("v.").push(column.name());
        }
    }
}

/// Appends ` AND (…)` for one filter.
pub(super) fn filter_sql(sql: &mut Sql, f: &Filter) {
    sql.push(" AND ");
    if f.op == FilterOp::IsNot {
        sql.push("NOT COALESCE(");
    }
    sql.push("(");
    for (i, value) in f.values.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        field_sql(sql, &f.field);
        match (value, f.op) {
            (None, _) => {
                sql.push(" IS NULL");
            }
            (Some(v), FilterOp::Contains) => {
                sql.push(" LIKE ")
                    .arg(format!("%{}%", like_escape(v)))
                    .push(" ESCAPE '\\'");
            }
            (Some(v), _) if f.field == FilterField::Page && v.contains('*') => {
                // `**` and `*` both become GLOB's `*`; `?` and `[` stay literal.
                sql.push(" GLOB ").arg(glob_of(&v.replace("**", "*")));
            }
            (Some(v), _) => {
                sql.push(" = ").arg(v.clone());
            }
        }
    }
    sql.push(")");
    if f.op == FilterOp::IsNot {
        sql.push(", 0)");
    }
}

fn like_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A page path with `*` wildcards as a GLOB pattern: `*` stays a wildcard,
/// `?` and `[` are literal.
pub(super) fn glob_of(path: &str) -> String {
    path.replace('[', "[[]").replace('?', "[?]")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A property key with `"` names no property: filters on it answer as
    /// for a missing one, and the query runs (a JSON path with the key in
    /// it failed with "bad JSON path").
    /// Keys with `"` or `\` (which the JSON path cannot name) are missing
    /// properties in SQL as in memory.
    #[test]
    fn a_property_key_with_a_quote_is_a_missing_property() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            r#"CREATE TABLE e (props TEXT);
               INSERT INTO e VALUES ('{"a\"b": "x", "a\\b": "x"}'), ('{"a": "x"}'), (NULL);"#,
        )
        .unwrap();
        for (key, values, op, expected) in ["a\"b", "a\\b"].into_iter().flat_map(|key| {
            [
                (key, vec![Some("x")], FilterOp::Is, 0),
                (key, vec![None], FilterOp::Is, 3),
                (key, vec![Some("x")], FilterOp::IsNot, 3),
                (key, vec![Some("x")], FilterOp::Contains, 0),
            ]
        }) {
            assert!(!prop_key_named(key));
            let f = Filter {
                field: FilterField::Prop(key.into()),
                op,
                values: values.iter().map(|v| v.map(str::to_string)).collect(),
            };
            let mut sql = Sql::default();
            sql.push("SELECT COUNT(*) FROM e WHERE 1");
            filter_sql(&mut sql, &f);
            let n: i64 = conn
                .query_row(&sql.text, sql.params(), |r| r.get(0))
                .unwrap();
            assert_eq!(n, expected, "{key} {op:?} {values:?}");
            assert_eq!(
                conn.query_row("SELECT COUNT(*) FROM e", [], |r| r.get::<_, i64>(0))
                    .unwrap(),
                3
            );
            // The same answer in memory: the value is missing.
            assert_eq!(value_matches(&f, None), expected == 3, "{op:?} {values:?}");
        }
    }

    /// Every filter of a set picks the same pages from a set of paths in
    /// SQLite and in memory: the rules above, held to themselves.
    #[test]
    fn the_sql_and_the_memory_agree() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE e (path TEXT)").unwrap();
        let paths: Vec<Option<&str>> = vec![
            None,
            Some("/blog/a"),
            Some("/Blog/A"),
            Some("/blog"),
            Some("/blog/a/b"),
            Some("/a?b"),
            Some("/axb"),
            Some("/a[b]"),
            Some("/ab"),
            Some("50% off"),
            Some("50 off"),
            Some("a_b"),
            Some("axb"),
            Some("x\\y"),
            Some("/é"),
            Some("/É"),
            Some(""),
        ];
        for p in &paths {
            conn.execute("INSERT INTO e (path) VALUES (?1)", [p])
                .unwrap();
        }
        let value_sets: Vec<Vec<Option<&str>>> = vec![
            vec![Some("/blog/a")],
            vec![Some("/blog/*")],
            vec![Some("/blog/**")],
            vec![Some("/blog*")],
            vec![Some("*/a")],
            vec![Some("/a?b")],
            vec![Some("/a[b]*")],
            vec![Some("BLOG")],
            vec![Some("50%")],
            vec![Some("a_b")],
            vec![Some("\\")],
            vec![Some("é")],
            vec![Some("É")],
            vec![Some("")],
            vec![None],
            vec![None, Some("/ab")],
            vec![Some("/ab"), Some("/blog")],
        ];
        for values in &value_sets {
            for op in [FilterOp::Is, FilterOp::IsNot, FilterOp::Contains] {
                let f = Filter {
                    field: FilterField::Page,
                    op,
                    values: values.iter().map(|v| v.map(str::to_string)).collect(),
                };
                let mut sql = Sql::default();
                sql.push("SELECT path FROM e WHERE 1");
                filter_sql(&mut sql, &f);
                sql.push(" ORDER BY rowid");
                let mut stmt = conn.prepare(&sql.text).unwrap();
                let in_sql: Vec<Option<String>> = stmt
                    .query_map(sql.params(), |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let in_memory: Vec<Option<String>> = paths
                    .iter()
                    .filter(|p| value_matches(&f, **p))
                    .map(|p| p.map(str::to_string))
                    .collect();
                assert_eq!(in_sql, in_memory, "{op:?} {values:?}");
            }
        }
    }
}
