//! Enrollments (served as EpisodeOfCare) with their owner, and ownership transfer with its
//! history. An enrollment is visible when its person is (the caller's search scope, in SQL).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz};

use super::scoped::ProgramScope;
use super::Scoped;
use crate::error::Error;
use crate::tracker::model::EnrollmentRecord;

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    uid: String,
    #[diesel(sql_type = Int4)]
    version: i32,
    #[diesel(sql_type = Timestamptz)]
    last_updated: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    tracked_entity_id: i64,
    #[diesel(sql_type = Text)]
    tracked_entity_uid: String,
    #[diesel(sql_type = BigInt)]
    program_id: i64,
    #[diesel(sql_type = BigInt)]
    org_unit_id: i64,
    #[diesel(sql_type = BigInt)]
    owner_org_unit_id: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    enrolled_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    occurred_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    completed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Bool)]
    deleted: bool,
}

fn record(r: Row) -> EnrollmentRecord {
    EnrollmentRecord {
        id: r.id,
        uid: r.uid,
        version: r.version,
        last_updated: r.last_updated,
        tracked_entity_id: r.tracked_entity_id,
        tracked_entity_uid: r.tracked_entity_uid,
        program_id: r.program_id,
        org_unit_id: r.org_unit_id,
        owner_org_unit_id: r.owner_org_unit_id,
        status: r.status,
        enrolled_at: r.enrolled_at,
        occurred_at: r.occurred_at,
        completed_at: r.completed_at,
        deleted: r.deleted,
        transfer: None,
    }
}

/// Enrollments matching `filter` (`$1` ids, `$2` a uid) that the caller may see (the ownership
/// rule of [`ProgramScope`]).
fn scoped_query(
    s: &mut Scoped,
    filter: &str,
    ids: Vec<i64>,
    uid: &str,
) -> Result<Vec<EnrollmentRecord>, Error> {
    let scope = s.program_scope()?;
    query(s, filter, ids, uid, scope)
}

fn query(
    s: &mut Scoped,
    filter: &str,
    ids: Vec<i64>,
    uid: &str,
    scope: Option<ProgramScope>,
) -> Result<Vec<EnrollmentRecord>, Error> {
    let visible = match &scope {
        Some(_) => ProgramScope::call("en.id", 3),
        None => "true".to_string(),
    };
    let text = format!(
        "SELECT en.id, en.uid::text AS uid, en.version, en.last_updated, en.tracked_entity_id, te.uid::text AS tracked_entity_uid, \
         en.program_id, en.org_unit_id, COALESCE(po.org_unit_id, en.org_unit_id) AS owner_org_unit_id, en.status, \
         en.enrolled_at, en.occurred_at, en.completed_at, en.deleted \
         FROM enrollment en JOIN tracked_entity te ON te.id = en.tracked_entity_id \
         LEFT JOIN program_ownership po ON po.tracked_entity_id = en.tracked_entity_id AND po.program_id = en.program_id \
         WHERE {filter} AND {visible} ORDER BY en.enrolled_at, en.id"
    );
    let mut q = diesel::sql_query(text)
        .into_boxed()
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Text, _>(uid);
    if let Some(p) = scope {
        q = q
            .bind::<Array<BigInt>, _>(p.search)
            .bind::<Array<BigInt>, _>(p.capture)
            .bind::<Array<BigInt>, _>(p.open)
            .bind::<Array<BigInt>, _>(p.protected)
            .bind::<Text, _>(p.actor);
    }
    let rows: Vec<Row> = q.load(s.conn()?)?;
    Ok(rows.into_iter().map(record).collect())
}

/// The enrollment `uid` (deleted ones included, for 410).
pub fn find(s: &mut Scoped, uid: &str) -> Result<Option<EnrollmentRecord>, Error> {
    Ok(
        scoped_query(s, "en.uid = $2 AND cardinality($1) = 0", Vec::new(), uid)?
            .into_iter()
            .next(),
    )
}

pub fn by_ids(s: &mut Scoped, ids: &[i64]) -> Result<Vec<EnrollmentRecord>, Error> {
    scoped_query(s, "en.id = ANY($1) AND $2 = ''", ids.to_vec(), "")
}

/// Enrollments by id whatever the caller may see: for rules about the registry (one enrollment
/// per program) and for new versions a transfer writes, never to show.
pub fn by_ids_unscoped(s: &mut Scoped, ids: &[i64]) -> Result<Vec<EnrollmentRecord>, Error> {
    query(s, "en.id = ANY($1) AND $2 = ''", ids.to_vec(), "", None)
}

/// A person's live enrollments whatever the caller may see (see [`by_ids_unscoped`]).
pub fn of_person_unscoped(s: &mut Scoped, person: i64) -> Result<Vec<EnrollmentRecord>, Error> {
    query(
        s,
        "en.tracked_entity_id = ANY($1) AND NOT en.deleted AND $2 = ''",
        vec![person],
        "",
        None,
    )
}

/// A person's live enrollments, oldest first.
pub fn of_person(s: &mut Scoped, person: i64) -> Result<Vec<EnrollmentRecord>, Error> {
    scoped_query(
        s,
        "en.tracked_entity_id = ANY($1) AND NOT en.deleted AND $2 = ''",
        vec![person],
        "",
    )
}

pub fn lock(conn: &mut PgConnection, id: i64) -> Result<(), Error> {
    diesel::sql_query("SELECT id FROM enrollment WHERE id = $1 FOR UPDATE")
        .bind::<BigInt, _>(id)
        .execute(conn)?;
    Ok(())
}

pub struct Change {
    pub status: String,
    pub enrolled_at: DateTime<Utc>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub at: DateTime<Utc>,
}

pub fn update(conn: &mut PgConnection, id: i64, c: &Change) -> Result<(), Error> {
    diesel::sql_query(
        "UPDATE enrollment SET status = $2, enrolled_at = $3, occurred_at = $4, completed_at = $5, version = $6, \
         last_updated = $7 WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(&c.status)
    .bind::<Timestamptz, _>(c.enrolled_at)
    .bind::<Nullable<Timestamptz>, _>(c.occurred_at)
    .bind::<Nullable<Timestamptz>, _>(c.completed_at)
    .bind::<Int4, _>(c.version)
    .bind::<Timestamptz, _>(c.at)
    .execute(conn)?;
    Ok(())
}

/// Gives each enrollment a new version (a transfer changed what it renders).
pub fn bump(conn: &mut PgConnection, ids: &[i64], at: DateTime<Utc>) -> Result<(), Error> {
    diesel::sql_query(
        "UPDATE enrollment SET version = version + 1, last_updated = $2 WHERE id = ANY($1)",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Timestamptz, _>(at)
    .execute(conn)?;
    Ok(())
}

pub fn mark_deleted(
    conn: &mut PgConnection,
    id: i64,
    version: i32,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::sql_query(
        "UPDATE enrollment SET deleted = true, version = $2, last_updated = $3 WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Int4, _>(version)
    .bind::<Timestamptz, _>(at)
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub fn live_events(conn: &mut PgConnection, id: i64) -> Result<i64, Error> {
    Ok(diesel::sql_query(
        "SELECT count(*)::bigint AS n FROM event WHERE enrollment_id = $1 AND NOT deleted",
    )
    .bind::<BigInt, _>(id)
    .get_result::<Count>(conn)?
    .n)
}

#[derive(QueryableByName)]
struct Owner {
    #[diesel(sql_type = BigInt)]
    org_unit_id: i64,
}

/// The person's owner in the program, if an enrollment made one.
pub fn owner(conn: &mut PgConnection, person: i64, program: i64) -> Result<Option<i64>, Error> {
    Ok(diesel::sql_query(
        "SELECT org_unit_id FROM program_ownership WHERE tracked_entity_id = $1 AND program_id = $2",
    )
    .bind::<BigInt, _>(person)
    .bind::<BigInt, _>(program)
    .get_result::<Owner>(conn)
    .optional()?
    .map(|o| o.org_unit_id))
}

/// The person's owner in the program, locked until the transaction ends.
pub fn owner_for_update(
    conn: &mut PgConnection,
    person: i64,
    program: i64,
) -> Result<Option<i64>, Error> {
    Ok(diesel::sql_query(
        "SELECT org_unit_id FROM program_ownership WHERE tracked_entity_id = $1 AND program_id = $2 FOR UPDATE",
    )
    .bind::<BigInt, _>(person)
    .bind::<BigInt, _>(program)
    .get_result::<Owner>(conn)
    .optional()?
    .map(|o| o.org_unit_id))
}

/// Moves the person's ownership in the program and records who, when, from, to and why.
#[allow(clippy::too_many_arguments)]
pub fn transfer(
    conn: &mut PgConnection,
    person: i64,
    program: i64,
    from: Option<i64>,
    to: i64,
    by: &str,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::sql_query(
        "INSERT INTO program_ownership (tracked_entity_id, program_id, org_unit_id, last_updated) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tracked_entity_id, program_id) DO UPDATE SET org_unit_id = EXCLUDED.org_unit_id, last_updated = EXCLUDED.last_updated",
    )
    .bind::<BigInt, _>(person)
    .bind::<BigInt, _>(program)
    .bind::<BigInt, _>(to)
    .bind::<Timestamptz, _>(at)
    .execute(conn)?;
    diesel::sql_query(
        "INSERT INTO program_ownership_history (tracked_entity_id, program_id, from_org_unit_id, to_org_unit_id, changed_at, changed_by, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind::<BigInt, _>(person)
    .bind::<BigInt, _>(program)
    .bind::<Nullable<BigInt>, _>(from)
    .bind::<BigInt, _>(to)
    .bind::<Timestamptz, _>(at)
    .bind::<Text, _>(by)
    .bind::<Nullable<Text>, _>(reason)
    .execute(conn)?;
    Ok(())
}

/// Records a break-the-glass grant (append-only: the table is the audit).
pub fn grant_override(
    conn: &mut PgConnection,
    person: i64,
    program: i64,
    actor: &str,
    reason: &str,
    expires_at: DateTime<Utc>,
    request_id: &str,
) -> Result<(), Error> {
    diesel::sql_query(
        "INSERT INTO ownership_override (tracked_entity_id, program_id, actor, reason, granted_at, expires_at, request_id) \
         VALUES ($1, $2, $3, $4, now(), $5, $6)",
    )
    .bind::<BigInt, _>(person)
    .bind::<BigInt, _>(program)
    .bind::<Text, _>(actor)
    .bind::<Text, _>(reason)
    .bind::<Timestamptz, _>(expires_at)
    .bind::<Text, _>(request_id)
    .execute(conn)?;
    Ok(())
}

/// The programs a person is enrolled in (live enrollments), for a transfer of them all.
pub fn programs_of(conn: &mut PgConnection, person: i64) -> Result<Vec<i64>, Error> {
    #[derive(QueryableByName)]
    struct P {
        #[diesel(sql_type = BigInt)]
        program_id: i64,
    }
    Ok(diesel::sql_query(
        "SELECT DISTINCT program_id FROM enrollment WHERE tracked_entity_id = $1 AND NOT deleted ORDER BY program_id",
    )
    .bind::<BigInt, _>(person)
    .load::<P>(conn)?
    .into_iter()
    .map(|p| p.program_id)
    .collect())
}

/// The live enrollment ids of a person in a program.
pub fn in_program(conn: &mut PgConnection, person: i64, program: i64) -> Result<Vec<i64>, Error> {
    #[derive(QueryableByName)]
    struct I {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    Ok(diesel::sql_query(
        "SELECT id FROM enrollment WHERE tracked_entity_id = $1 AND program_id = $2 AND NOT deleted ORDER BY id",
    )
    .bind::<BigInt, _>(person)
    .bind::<BigInt, _>(program)
    .load::<I>(conn)?
    .into_iter()
    .map(|i| i.id)
    .collect())
}
