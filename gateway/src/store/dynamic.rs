//! Queries built at run time (searches) that Postgres may still keep prepared.
//!
//! diesel never caches a `sql_query`: its text could be anything, so every search would be
//! parsed and planned anew (0.2–0.5 ms, a large share of a search). A search's text, though, is
//! built from a small vocabulary: the parameters used, their modifiers, the caller's scope
//! shape. [`Sql::query`] lets diesel cache a statement by its text, up to [`SHAPES`] distinct
//! texts per process; texts beyond that (unusual combinations) run unprepared, so neither this
//! process nor Postgres holds an unbounded number of statements per connection.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Date, Double, Text, Timestamptz, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// Distinct statement texts a process lets diesel keep prepared (per pooled connection).
pub const SHAPES: usize = 128;

/// A bound value of a dynamically built query.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    Int(i64),
    Ints(Vec<i64>),
    Texts(Vec<String>),
    Date(NaiveDate),
    Time(DateTime<Utc>),
    Num(f64),
    Flag(bool),
    Flags(Vec<bool>),
}

/// SQL text with `$n` placeholders and their values, built clause by clause.
#[derive(Default, Clone)]
pub struct Sql {
    binds: Vec<Bind>,
}

impl Sql {
    /// Adds a value; returns its placeholder (which may appear in the text more than once).
    pub fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    /// The statement `text` (whose `$n` are this builder's values), ready to run.
    pub fn query(&self, text: String) -> Dynamic {
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        let mut sql = String::new();
        while let Some(i) = rest.find('$') {
            let digits = rest[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
            let n: Option<usize> = rest[i + 1..i + 1 + digits].parse().ok();
            match n.filter(|n| (1..=self.binds.len()).contains(n)) {
                Some(n) => {
                    sql.push_str(&rest[..i]);
                    parts.push((std::mem::take(&mut sql), n - 1));
                    rest = &rest[i + 1 + digits..];
                }
                None => {
                    sql.push_str(&rest[..=i]);
                    rest = &rest[i + 1..];
                }
            }
        }
        sql.push_str(rest);
        Dynamic {
            cacheable: admitted(&text),
            parts,
            tail: sql,
            binds: self.binds.clone(),
        }
    }
}

fn admitted(text: &str) -> bool {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.contains(text) {
        return true;
    }
    if seen.len() < SHAPES {
        seen.insert(text.to_string());
        return true;
    }
    false
}

/// A run-time statement: text pieces, each followed by one bound value (diesel numbers the
/// placeholders in order, so a value used twice is bound twice).
pub struct Dynamic {
    cacheable: bool,
    parts: Vec<(String, usize)>,
    tail: String,
    binds: Vec<Bind>,
}

impl QueryFragment<Pg> for Dynamic {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if !self.cacheable {
            out.unsafe_to_cache_prepared();
        }
        for (sql, i) in &self.parts {
            out.push_sql(sql);
            match &self.binds[*i] {
                Bind::Text(v) => out.push_bind_param::<Text, _>(v)?,
                Bind::Int(v) => out.push_bind_param::<BigInt, _>(v)?,
                Bind::Ints(v) => out.push_bind_param::<Array<BigInt>, _>(v)?,
                Bind::Texts(v) => out.push_bind_param::<Array<Text>, _>(v)?,
                Bind::Date(v) => out.push_bind_param::<Date, _>(v)?,
                Bind::Time(v) => out.push_bind_param::<Timestamptz, _>(v)?,
                Bind::Num(v) => out.push_bind_param::<Double, _>(v)?,
                Bind::Flag(v) => out.push_bind_param::<Bool, _>(v)?,
                Bind::Flags(v) => out.push_bind_param::<Array<Bool>, _>(v)?,
            }
        }
        out.push_sql(&self.tail);
        Ok(())
    }
}

impl QueryId for Dynamic {
    type QueryId = ();
    // Cached, when cacheable, by its SQL text and bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Dynamic {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Dynamic {}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::debug_query;

    #[test]
    fn placeholders_become_diesels_in_order_and_a_reused_one_is_bound_again() {
        let mut sql = Sql::default();
        let a = sql.bind(Bind::Text("x".into()));
        let b = sql.bind(Bind::Int(3));
        let q = sql.query(format!(
            "SELECT 1 WHERE a = {a} AND b = {b} AND c = {a} AND d = '$9'"
        ));
        let shown = debug_query::<Pg, _>(&q).to_string();
        assert!(
            shown.starts_with("SELECT 1 WHERE a = $1 AND b = $2 AND c = $3 AND d = '$9'"),
            "{shown}"
        );
        assert!(shown.contains("binds: [\"x\", 3, \"x\"]"), "{shown}");
    }

    #[test]
    fn only_a_bounded_number_of_texts_are_kept_prepared() {
        let sql = Sql::default();
        let unique = crate::tracker::new_uid();
        let kept = (0..SHAPES + 5)
            .filter(|i| sql.query(format!("SELECT {i} /* {unique} */")).cacheable)
            .count();
        assert!(kept <= SHAPES, "{kept}");
        assert!(
            !sql.query(format!("SELECT 'beyond' /* {unique} */"))
                .cacheable
        );
    }
}
