//! API clients, their access tokens and used assertion ids (migration 12). No patient data: these
//! run on a plain connection, before any request context exists.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use super::schema::{api_client as c, api_token as t, client_assertion_jti as j};
use crate::error::Error;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = c)]
pub struct ClientRow {
    pub id: i64,
    pub client_id: String,
    pub name: String,
    pub secret_hash: Option<String>,
    pub jwks: Option<Value>,
    pub scopes: String,
    pub capture_org_units: Vec<String>,
    pub search_org_units: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Program UIDs it may use; None: every program.
    pub programs: Option<Vec<String>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = c)]
pub struct NewClient<'a> {
    pub client_id: &'a str,
    pub name: &'a str,
    pub secret_hash: Option<&'a str>,
    pub jwks: Option<&'a Value>,
    pub scopes: &'a str,
    pub capture_org_units: &'a [String],
    pub search_org_units: &'a [String],
    pub programs: Option<&'a [String]>,
}

pub fn insert(conn: &mut PgConnection, new: &NewClient) -> Result<(), Error> {
    diesel::insert_into(c::table).values(new).execute(conn)?;
    Ok(())
}

pub fn by_client_id(conn: &mut PgConnection, client_id: &str) -> Result<Option<ClientRow>, Error> {
    Ok(c::table
        .filter(c::client_id.eq(client_id))
        .select(ClientRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn list(conn: &mut PgConnection) -> Result<Vec<ClientRow>, Error> {
    Ok(c::table
        .order(c::client_id)
        .select(ClientRow::as_select())
        .load(conn)?)
}

/// Revokes a client and drops its tokens: the next request with one is refused. False when there
/// is no such live client.
pub fn revoke(conn: &mut PgConnection, client_id: &str) -> Result<bool, Error> {
    changed_after(conn.transaction(|conn| {
        let id: Option<i64> = diesel::update(
            c::table
                .filter(c::client_id.eq(client_id))
                .filter(c::revoked_at.is_null()),
        )
        .set(c::revoked_at.eq(diesel::dsl::now))
        .returning(c::id)
        .get_result(conn)
        .optional()?;
        if let Some(id) = id {
            diesel::delete(t::table.filter(t::client_id.eq(id))).execute(conn)?;
        }
        Ok(id.is_some())
    }))
}

/// What a declared client says of itself now (`auth::declared`). When its scopes or org units
/// changed, its tokens are dropped: they were granted under the old ones.
#[allow(clippy::too_many_arguments)]
pub fn update(
    conn: &mut PgConnection,
    row: &ClientRow,
    name: &str,
    scopes: &str,
    capture: &[String],
    search: &[String],
    programs: Option<&[String]>,
    jwks: Option<&Value>,
) -> Result<(), Error> {
    let narrowed = row.scopes != scopes
        || row.capture_org_units != capture
        || row.search_org_units != search
        || row.programs.as_deref() != programs
        || row.jwks.as_ref() != jwks;
    conn.transaction(|conn| {
        diesel::update(c::table.filter(c::id.eq(row.id)))
            .set((
                c::name.eq(name),
                c::scopes.eq(scopes),
                c::capture_org_units.eq(capture),
                c::search_org_units.eq(search),
                c::programs.eq(programs),
                c::jwks.eq(jwks),
            ))
            .execute(conn)?;
        if narrowed {
            diesel::delete(t::table.filter(t::client_id.eq(row.id))).execute(conn)?;
        }
        Ok(())
    })
    .inspect(|_| crate::auth::cache::changed())
}

/// A new secret for a live client; its tokens are dropped. False when there is no such client.
pub fn set_secret(conn: &mut PgConnection, client_id: &str, hash: &str) -> Result<bool, Error> {
    changed_after(conn.transaction(|conn| {
        let id: Option<i64> = diesel::update(
            c::table
                .filter(c::client_id.eq(client_id))
                .filter(c::revoked_at.is_null()),
        )
        .set(c::secret_hash.eq(hash))
        .returning(c::id)
        .get_result(conn)
        .optional()?;
        if let Some(id) = id {
            diesel::delete(t::table.filter(t::client_id.eq(id))).execute(conn)?;
        }
        Ok(id.is_some())
    }))
}

pub fn insert_token(
    conn: &mut PgConnection,
    hash: &[u8],
    client: i64,
    scopes: &str,
    expires: DateTime<Utc>,
) -> Result<(), Error> {
    // Expired tokens and assertion ids are of no use to anyone: swept as new ones are issued.
    diesel::delete(t::table.filter(t::expires_at.lt(diesel::dsl::now))).execute(conn)?;
    diesel::delete(j::table.filter(j::expires_at.lt(diesel::dsl::now))).execute(conn)?;
    diesel::insert_into(t::table)
        .values((
            t::token_hash.eq(hash),
            t::client_id.eq(client),
            t::scopes.eq(scopes),
            t::expires_at.eq(expires),
        ))
        .execute(conn)?;
    Ok(())
}

/// The live client, granted scopes and expiry of an unexpired token, by the token's hash.
pub fn token(
    conn: &mut PgConnection,
    hash: &[u8],
) -> Result<Option<(ClientRow, String, DateTime<Utc>)>, Error> {
    Ok(t::table
        .inner_join(c::table)
        .filter(t::token_hash.eq(hash))
        .filter(t::expires_at.gt(diesel::dsl::now))
        .filter(c::revoked_at.is_null())
        .select((ClientRow::as_select(), t::scopes, t::expires_at))
        .first(conn)
        .optional()?)
}

/// A committed change to clients or tokens empties this process's token cache at once (other
/// processes hear of it through the `kiunga_clients` notification).
fn changed_after<T>(r: Result<T, Error>) -> Result<T, Error> {
    if r.is_ok() {
        crate::auth::cache::changed();
    }
    r
}

/// Records an assertion id; false when the client already used it (a replay).
pub fn use_jti(
    conn: &mut PgConnection,
    client: i64,
    jti: &str,
    expires: DateTime<Utc>,
) -> Result<bool, Error> {
    let n = diesel::insert_into(j::table)
        .values((
            j::client_id.eq(client),
            j::jti.eq(jti),
            j::expires_at.eq(expires),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(n == 1)
}
