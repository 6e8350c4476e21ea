//! Org units, read and searched as FHIR Organization / Location. Org units are metadata: every
//! caller may find them (DHIS2 lets users see the hierarchy; scope limits the records inside).

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use super::schema::org_unit;
use crate::error::Error;

#[derive(Debug, Clone, Queryable)]
pub struct OrgRow {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub parent_id: Option<i64>,
    pub path: String,
    pub level: i32,
    pub last_updated: DateTime<Utc>,
}

type Columns = (
    org_unit::id,
    org_unit::uid,
    org_unit::code,
    org_unit::name,
    org_unit::parent_id,
    org_unit::path,
    org_unit::level,
    org_unit::last_updated,
);
const COLUMNS: Columns = (
    org_unit::id,
    org_unit::uid,
    org_unit::code,
    org_unit::name,
    org_unit::parent_id,
    org_unit::path,
    org_unit::level,
    org_unit::last_updated,
);

pub fn by_uid(conn: &mut PgConnection, uid: &str) -> Result<Option<OrgRow>, Error> {
    Ok(org_unit::table
        .filter(org_unit::uid.eq(uid))
        .select(COLUMNS)
        .first(conn)
        .optional()?)
}

/// How a `name` parameter matches (FHIR string search).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    Prefix(String),
    Exact(String),
    Contains(String),
}

#[derive(Debug, Clone, Default)]
pub struct OrgQuery {
    pub ids: Option<Vec<String>>,
    pub codes: Option<Vec<String>>,
    pub names: Vec<NameMatch>,
    pub parent_uids: Option<Vec<String>>,
    pub count: i64,
    pub offset: i64,
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Matching org units ordered by path (the hierarchy), with the total.
pub fn search(conn: &mut PgConnection, q: &OrgQuery) -> Result<(Vec<OrgRow>, i64), Error> {
    let build = || {
        let mut b = org_unit::table.into_boxed();
        if let Some(ids) = &q.ids {
            b = b.filter(org_unit::uid.eq_any(ids.clone()));
        }
        if let Some(codes) = &q.codes {
            b = b.filter(org_unit::code.eq_any(codes.clone()));
        }
        for n in &q.names {
            b = match n {
                NameMatch::Exact(s) => b.filter(org_unit::name.eq(s.clone())),
                NameMatch::Prefix(s) => b.filter(
                    sql::<Bool>("lower(org_unit.name) LIKE ")
                        .bind::<Text, _>(format!("{}%", like_escape(&s.to_lowercase()))),
                ),
                NameMatch::Contains(s) => b.filter(
                    sql::<Bool>("lower(org_unit.name) LIKE ")
                        .bind::<Text, _>(format!("%{}%", like_escape(&s.to_lowercase()))),
                ),
            };
        }
        if let Some(parents) = &q.parent_uids {
            b = b.filter(
                sql::<Bool>(
                    "org_unit.parent_id IN (SELECT p.id FROM org_unit p WHERE p.uid = ANY(",
                )
                .bind::<diesel::sql_types::Array<Text>, _>(parents.clone())
                .sql("))"),
            );
        }
        b
    };
    let total: i64 = build().count().get_result(conn)?;
    let rows = build()
        .select(COLUMNS)
        .order(org_unit::path)
        .limit(q.count)
        .offset(q.offset)
        .load(conn)?;
    Ok((rows, total))
}

pub fn parent_uid(
    conn: &mut PgConnection,
    parent_id: Option<i64>,
) -> Result<Option<String>, Error> {
    match parent_id {
        None => Ok(None),
        Some(id) => Ok(org_unit::table
            .find(id)
            .select(org_unit::uid)
            .first(conn)
            .optional()?),
    }
}
