//! A search's page, run by the store. For program data (enrollments, events, data values) the
//! store adds the caller's ownership rule to the search's conditions itself, so the ids it hands
//! back are known to be in scope: reading them for the page does not evaluate the rule a second
//! time (it was a fifth of an Observation search with a restricted scope, docs/performance.md).

use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl};

use super::dynamic::{Bind, Sql};
use super::scoped::Scoped;
use crate::error::Error;

/// A search's conditions joined, with the ownership rule among them when the search is over
/// program data and the caller's scope is restricted. Only [`Scoped::search_where`] makes one.
pub struct Where {
    text: String,
    /// The caller's program scope is applied (or the caller may see all program data).
    ruled: bool,
}

impl Where {
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The ids of one page, found by [`Scoped::page`] in this unit of work.
pub struct Vouched {
    ids: Vec<i64>,
    ruled: bool,
}

impl Vouched {
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// The statement that found them carried the ownership rule: the store reads them without it.
    pub(crate) fn ruled(&self) -> bool {
        self.ruled
    }
}

/// One id of a result page, with the size of the whole result (`count(*) OVER ()`).
#[derive(QueryableByName)]
struct PageRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl Scoped<'_> {
    /// `conditions` joined; with `rule` (what the ownership rule is evaluated over, program data)
    /// the caller's ownership rule is added, its values bound in `sql`.
    pub fn search_where(
        &mut self,
        sql: &mut Sql,
        conditions: &[String],
        rule: Option<super::RuleOn>,
    ) -> Result<Where, Error> {
        let mut c = conditions.to_vec();
        if let (Some(on), Some(p)) = (rule, self.program_scope()?) {
            c.push(p.bound(sql, on));
        }
        // With no scope to apply (the caller sees all program data) there is nothing to re-check.
        let ruled = rule.is_some();
        Ok(Where {
            text: c.join(" AND "),
            ruled,
        })
    }

    /// One page of `id_column` over `from` and `wh`, in `order`, with the number of all matches
    /// (None when the page is empty: past the end, count apart).
    #[allow(clippy::too_many_arguments)]
    pub fn page(
        &mut self,
        mut sql: Sql,
        from: &str,
        wh: &Where,
        id_column: &str,
        order: &[String],
        limit: i64,
        offset: i64,
    ) -> Result<(Vouched, Option<i64>), Error> {
        let l = sql.bind(Bind::Int(limit));
        let o = sql.bind(Bind::Int(offset));
        let rows: Vec<PageRow> = sql
            .query(format!(
                "SELECT {id_column} AS id, count(*) OVER ()::bigint AS n FROM {from} WHERE {} ORDER BY {} LIMIT {l} OFFSET {o}",
                wh.text,
                order.join(", ")
            ))
            .load(self.conn()?)?;
        let total = rows.first().map(|r| r.n);
        Ok((
            Vouched {
                ids: rows.into_iter().map(|r| r.id).collect(),
                ruled: wh.ruled,
            },
            total,
        ))
    }
}
