//! The append-only change log (one row per version) and inbound log (original request bodies).
//! Both are written at the end of the unit of work ([`super::pending`]); reads go through
//! [`Scoped::conn`], which writes them first.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde_json::Value;

use super::pending::{ChangeRow, InboundRow};
use super::schema::change_log as cl;
use super::Scoped;
use crate::error::Error;

pub struct Change<'a> {
    pub resource_type: &'a str,
    pub uid: &'a str,
    pub version: i32,
    pub operation: &'a str,
    pub at: DateTime<Utc>,
    pub mapping_version: &'a str,
    pub state: Option<Value>,
}

/// Queues one version for the change log (written with the rest of the unit of work).
pub fn record_change(s: &mut Scoped, c: Change) {
    s.touched.written(c.resource_type, c.uid, c.state.as_ref());
    s.changed = true;
    let row = ChangeRow {
        resource_type: c.resource_type.to_string(),
        resource_uid: c.uid.to_string(),
        version: c.version,
        operation: c.operation.to_string(),
        changed_at: c.at,
        actor: s.ctx.actor.to_string(),
        request_id: Some(s.ctx.request_id.clone()),
        mapping_version: Some(c.mapping_version.to_string()),
        state: c.state,
    };
    s.defer().changes.push(row);
}

/// Records a write: its version in the change log (with the tracker snapshot) and the original
/// request body in the inbound log, both under the record's uid.
pub fn record_write<'a>(s: &mut Scoped, change: Change<'a>, mut inbound: Inbound<'a>) {
    inbound.uid = Some(change.uid);
    record_inbound(s, inbound);
    record_change(s, change);
}

/// Records the version that deletes a record (no state: nothing is left to render).
pub fn record_deletion(
    s: &mut Scoped,
    resource_type: &str,
    uid: &str,
    version: i32,
    at: DateTime<Utc>,
    mapping_version: &str,
) {
    record_change(
        s,
        Change {
            resource_type,
            uid,
            version,
            operation: "delete",
            at,
            mapping_version,
            state: None,
        },
    )
}

/// One version as recorded: (version, operation, changed_at, state).
pub type VersionRow = (i32, String, DateTime<Utc>, Option<Value>);

pub fn version(
    conn: &mut PgConnection,
    resource_type: &str,
    uid: &str,
    version: i32,
) -> Result<Option<VersionRow>, Error> {
    Ok(cl::table
        .filter(cl::resource_type.eq(resource_type))
        .filter(cl::resource_uid.eq(uid))
        .filter(cl::version.eq(version))
        .select((cl::version, cl::operation, cl::changed_at, cl::state))
        .first(conn)
        .optional()?)
}

/// Every version of one record, newest first.
pub fn versions(
    conn: &mut PgConnection,
    resource_type: &str,
    uid: &str,
) -> Result<Vec<VersionRow>, Error> {
    Ok(cl::table
        .filter(cl::resource_type.eq(resource_type))
        .filter(cl::resource_uid.eq(uid))
        .order(cl::version.desc())
        .select((cl::version, cl::operation, cl::changed_at, cl::state))
        .load(conn)?)
}

pub struct Inbound<'a> {
    pub interaction: &'a str,
    pub resource_type: &'a str,
    pub uid: Option<&'a str>,
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub mapping_version: &'a str,
}

pub fn record_inbound(s: &mut Scoped, i: Inbound) {
    let row = InboundRow {
        request_id: Some(s.ctx.request_id.clone()),
        actor: s.ctx.actor.to_string(),
        interaction: i.interaction.to_string(),
        resource_type: i.resource_type.to_string(),
        resource_uid: i.uid.map(str::to_string),
        content_type: i.content_type.to_string(),
        body: i.body.to_vec(),
        mapping_version: Some(i.mapping_version.to_string()),
    };
    s.defer().inbound.push(row);
}

/// (type, uid, version, mapping version, actor) of one recorded version.
pub type VersionAuthor = (String, String, i32, Option<String>, String);

/// The mapping version and the actor of every version of the records asked for, in one query
/// whatever the mix of types: (type, uid, version, mapping version, actor).
pub fn mapping_versions(
    conn: &mut PgConnection,
    keys: &[(String, String)],
) -> Result<Vec<VersionAuthor>, Error> {
    let (types, uids): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(t, u)| (t.as_str(), u.as_str())).unzip();
    Ok(cl::table
        .filter(RecordsIn { types, uids })
        .select((
            cl::resource_type,
            cl::resource_uid,
            cl::version,
            cl::mapping_version,
            cl::actor,
        ))
        .load(conn)?)
}

/// `(change_log.resource_type, change_log.resource_uid) IN (SELECT * FROM unnest($1, $2))` as a
/// fragment of fixed text, so that the statement stays prepared (every rendered record runs it; a
/// `sql()` literal would have it parsed and planned each time).
#[derive(Debug, Clone)]
struct RecordsIn<'a> {
    types: Vec<&'a str>,
    uids: Vec<&'a str>,
}

impl diesel::expression::Expression for RecordsIn<'_> {
    type SqlType = diesel::sql_types::Bool;
}
impl<QS> diesel::expression::AppearsOnTable<QS> for RecordsIn<'_> {}
impl<QS> diesel::expression::SelectableExpression<QS> for RecordsIn<'_> {}
impl<GB> diesel::expression::ValidGrouping<GB> for RecordsIn<'_> {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}
impl diesel::query_builder::QueryId for RecordsIn<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}
impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for RecordsIn<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, Text};
        out.push_sql(
            "(change_log.resource_type, change_log.resource_uid) IN (SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.types)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.uids)?;
        out.push_sql("))");
        Ok(())
    }
}
