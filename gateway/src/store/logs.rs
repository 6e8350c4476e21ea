//! The append-only change log (one row per version) and inbound log (original request bodies).

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde_json::Value;

use super::schema::{change_log as cl, inbound_log as il};
use crate::context::RequestContext;
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

pub fn record_change(
    conn: &mut PgConnection,
    ctx: &RequestContext,
    c: Change,
) -> Result<(), Error> {
    diesel::insert_into(cl::table)
        .values((
            cl::resource_type.eq(c.resource_type),
            cl::resource_uid.eq(c.uid),
            cl::version.eq(c.version),
            cl::operation.eq(c.operation),
            cl::changed_at.eq(c.at),
            cl::actor.eq(ctx.actor.to_string()),
            cl::request_id.eq(&ctx.request_id),
            cl::mapping_version.eq(c.mapping_version),
            cl::state.eq(c.state),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records a write: its version in the change log (with the tracker snapshot) and the original
/// request body in the inbound log, both under the record's uid.
pub fn record_write<'a>(
    conn: &mut PgConnection,
    ctx: &RequestContext,
    change: Change<'a>,
    mut inbound: Inbound<'a>,
) -> Result<(), Error> {
    inbound.uid = Some(change.uid);
    record_change(conn, ctx, change)?;
    record_inbound(conn, ctx, inbound)
}

/// Records the version that deletes a record (no state: nothing is left to render).
pub fn record_deletion(
    conn: &mut PgConnection,
    ctx: &RequestContext,
    resource_type: &str,
    uid: &str,
    version: i32,
    at: DateTime<Utc>,
    mapping_version: &str,
) -> Result<(), Error> {
    record_change(
        conn,
        ctx,
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

pub fn record_inbound(
    conn: &mut PgConnection,
    ctx: &RequestContext,
    i: Inbound,
) -> Result<(), Error> {
    diesel::insert_into(il::table)
        .values((
            il::request_id.eq(&ctx.request_id),
            il::actor.eq(ctx.actor.to_string()),
            il::interaction.eq(i.interaction),
            il::resource_type.eq(i.resource_type),
            il::resource_uid.eq(i.uid),
            il::content_type.eq(i.content_type),
            il::body.eq(i.body),
            il::mapping_version.eq(i.mapping_version),
        ))
        .execute(conn)?;
    Ok(())
}

/// The mapping version that wrote each (uid, version) of one resource type, in one query.
pub fn mapping_versions(
    conn: &mut PgConnection,
    resource_type: &str,
    uids: &[String],
) -> Result<Vec<(String, i32, String)>, Error> {
    let rows: Vec<(String, i32, Option<String>)> = cl::table
        .filter(cl::resource_type.eq(resource_type))
        .filter(cl::resource_uid.eq_any(uids))
        .select((cl::resource_uid, cl::version, cl::mapping_version))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(u, v, m)| Some((u, v, m?)))
        .collect())
}
