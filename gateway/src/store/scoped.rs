//! The one door to patient data: a connection paired with the caller's [`RequestContext`].
//! Queries for records take their org-unit filter from here, so scope is applied in SQL.

use diesel::dsl::sql;
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};

use super::schema::org_unit;
use crate::context::{OrgScope, RequestContext};

pub struct Scoped<'a> {
    pub conn: &'a mut PgConnection,
    pub ctx: &'a RequestContext,
}

/// `SELECT id FROM org_unit WHERE <path in scope>`, for `org_unit_id = ANY(...)` filters.
pub type OrgIdQuery = org_unit::BoxedQuery<'static, Pg, diesel::sql_types::BigInt>;

impl<'a> Scoped<'a> {
    pub fn new(conn: &'a mut PgConnection, ctx: &'a RequestContext) -> Self {
        Scoped { conn, ctx }
    }

    /// The org units the caller may find and read, or None when that is every org unit.
    pub fn searchable_org_units(&self) -> Option<OrgIdQuery> {
        org_ids_in(&self.ctx.search)
    }
}

pub fn org_ids_in(scope: &OrgScope) -> Option<OrgIdQuery> {
    let (roots, patterns) = scope.sql_filter()?;
    Some(
        org_unit::table
            .select(org_unit::id)
            .filter(
                org_unit::path
                    .eq_any(roots)
                    .or(sql::<Bool>("org_unit.path LIKE ANY(")
                        .bind::<Array<Text>, _>(patterns)
                        .sql(")")),
            )
            .into_boxed(),
    )
}
