//! The `audit_event` table (migration 13): inserted into, searched, never changed.

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};

use super::schema::audit_event as a;
use crate::error::Error;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = a, treat_none_as_default_value = false)]
pub struct NewAuditRow {
    /// When the access happened (a row written in a later batch keeps its own time).
    pub recorded: DateTime<Utc>,
    pub request_id: Option<String>,
    pub agent: String,
    pub action: String,
    pub subtype: String,
    pub resource_type: Option<String>,
    pub query: Option<String>,
    pub entity: Vec<String>,
    pub patient: Vec<String>,
    pub http_status: Option<i16>,
    pub outcome: i16,
    pub outcome_desc: Option<String>,
    pub source_ip: Option<String>,
    pub purpose: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = a)]
pub struct AuditRow {
    pub id: i64,
    pub recorded: DateTime<Utc>,
    pub request_id: Option<String>,
    pub agent: String,
    pub action: String,
    pub subtype: String,
    pub resource_type: Option<String>,
    pub query: Option<String>,
    pub entity: Vec<String>,
    pub patient: Vec<String>,
    pub http_status: Option<i16>,
    pub outcome: i16,
    pub outcome_desc: Option<String>,
    pub source_ip: Option<String>,
    pub purpose: Option<String>,
}

pub fn insert(conn: &mut PgConnection, rows: &[NewAuditRow]) -> Result<(), Error> {
    // A write's own record, or a batch of the sink's (up to 500 reads).
    insert_rows!(conn, a::table, rows)?;
    Ok(())
}

pub fn by_id(conn: &mut PgConnection, id: i64) -> Result<Option<AuditRow>, Error> {
    Ok(a::table
        .find(id)
        .select(AuditRow::as_select())
        .first(conn)
        .optional()?)
}

/// What `AuditEvent?` searches on; every filter present must hold.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Rows naming any of these records (`Patient/abc`).
    pub entity: Vec<String>,
    /// Rows about any of these people (their records or themselves).
    pub patient: Vec<String>,
    /// Agents (`client:emr-a`).
    pub agent: Vec<String>,
    pub subtype: Vec<String>,
    pub action: Vec<String>,
    pub outcome: Vec<i16>,
    /// `recorded >= from` and `recorded < to`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A page of rows, newest first, and the total matching the filter.
pub fn search(
    conn: &mut PgConnection,
    f: &Filter,
    offset: i64,
    count: i64,
) -> Result<(Vec<AuditRow>, i64), Error> {
    let build = || {
        let mut q = a::table.into_boxed();
        if !f.entity.is_empty() {
            q = q.filter(
                sql::<Bool>("audit_event.entity && ").bind::<Array<Text>, _>(f.entity.clone()),
            );
        }
        if !f.patient.is_empty() {
            q = q.filter(
                sql::<Bool>("(audit_event.patient && ")
                    .bind::<Array<Text>, _>(f.patient.clone())
                    .sql(" OR audit_event.entity && ")
                    .bind::<Array<Text>, _>(f.patient.clone())
                    .sql(")"),
            );
        }
        if !f.agent.is_empty() {
            q = q.filter(a::agent.eq_any(f.agent.clone()));
        }
        if !f.subtype.is_empty() {
            q = q.filter(a::subtype.eq_any(f.subtype.clone()));
        }
        if !f.action.is_empty() {
            q = q.filter(a::action.eq_any(f.action.clone()));
        }
        if !f.outcome.is_empty() {
            q = q.filter(a::outcome.eq_any(f.outcome.clone()));
        }
        if let Some(t) = f.from {
            q = q.filter(a::recorded.ge(t));
        }
        if let Some(t) = f.to {
            q = q.filter(a::recorded.lt(t));
        }
        q
    };
    let total: i64 = build().count().get_result(conn)?;
    let rows = build()
        .order((a::recorded.desc(), a::id.desc()))
        .offset(offset)
        .limit(count)
        .select(AuditRow::as_select())
        .load(conn)?;
    Ok((rows, total))
}
