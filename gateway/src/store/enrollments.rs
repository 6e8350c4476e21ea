//! Enrollments (served as EpisodeOfCare) with their owner, and ownership transfer with its
//! history. An enrollment is visible when its person is (the caller's search scope, in SQL).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Int4, Nullable, Text, Timestamptz};

use super::scoped::ProgramScope;
use super::Scoped;
use crate::error::Error;
use crate::tracker::model::EnrollmentRecord;

type Tuple = (
    i64,
    String,
    i32,
    DateTime<Utc>,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    bool,
);

/// Which enrollments a look-up wants.
enum Key<'k> {
    /// One, deleted or not (for 410).
    Uid(&'k str),
    Ids(&'k [i64]),
    /// A person's live ones.
    Person(i64),
}

/// Enrollments with their owner, oldest first, that `scope` may see (the ownership rule of
/// [`ProgramScope`]; None: all). Built with diesel's query builder, so that the unscoped statement
/// is prepared once per connection (`$everything` and each rendered EpisodeOfCare pay no
/// planning).
fn load(
    s: &mut Scoped,
    key: Key,
    scope: Option<ProgramScope>,
) -> Result<Vec<EnrollmentRecord>, Error> {
    use super::schema::{enrollment as en, program_ownership as po, tracked_entity as te};
    let mut q = en::table
        .inner_join(te::table)
        .left_join(
            po::table.on(po::tracked_entity_id
                .eq(en::tracked_entity_id)
                .and(po::program_id.eq(en::program_id))),
        )
        .select((
            en::id,
            en::uid,
            en::version,
            en::last_updated,
            en::tracked_entity_id,
            te::uid,
            en::program_id,
            en::org_unit_id,
            po::org_unit_id.nullable(),
            en::status,
            en::enrolled_at,
            en::occurred_at,
            en::completed_at,
            en::deleted,
        ))
        .order((en::enrolled_at, en::id))
        .into_boxed();
    q = match key {
        Key::Uid(uid) => q.filter(en::uid.eq(uid.to_owned())),
        Key::Ids(ids) => q.filter(en::id.eq_any(ids.to_vec())),
        Key::Person(person) => q
            .filter(en::tracked_entity_id.eq(person))
            .filter(en::deleted.eq(false)),
    };
    if let Some(scope) = scope {
        q = q.filter(scope.visible(super::RuleOn::Enrollment("enrollment.id")));
    }
    Ok(q.load::<Tuple>(s.conn()?)?
        .into_iter()
        .map(|t| EnrollmentRecord {
            id: t.0,
            uid: t.1,
            version: t.2,
            last_updated: t.3,
            tracked_entity_id: t.4,
            tracked_entity_uid: t.5,
            program_id: t.6,
            org_unit_id: t.7,
            owner_org_unit_id: t.8.unwrap_or(t.7),
            status: t.9,
            enrolled_at: t.10,
            occurred_at: t.11,
            completed_at: t.12,
            deleted: t.13,
            transfer: None,
        })
        .collect())
}

fn scoped(s: &mut Scoped, key: Key) -> Result<Vec<EnrollmentRecord>, Error> {
    let scope = s.program_scope()?;
    load(s, key, scope)
}

/// The enrollment `uid` (deleted ones included, for 410).
pub fn find(s: &mut Scoped, uid: &str) -> Result<Option<EnrollmentRecord>, Error> {
    Ok(scoped(s, Key::Uid(uid))?.into_iter().next())
}

pub fn by_ids(s: &mut Scoped, ids: &[i64]) -> Result<Vec<EnrollmentRecord>, Error> {
    scoped(s, Key::Ids(ids))
}

/// The enrollments of a search's page, found under the caller's scope
/// ([`super::page::Vouched`]): the ownership rule is not run again.
pub fn vouched(
    s: &mut Scoped,
    page: &super::page::Vouched,
) -> Result<Vec<EnrollmentRecord>, Error> {
    if page.ruled() {
        load(s, Key::Ids(page.ids()), None)
    } else {
        by_ids(s, page.ids())
    }
}

/// Enrollments by id whatever the caller may see: for rules about the registry (one enrollment
/// per program) and for new versions a transfer writes, never to show.
pub fn by_ids_unscoped(s: &mut Scoped, ids: &[i64]) -> Result<Vec<EnrollmentRecord>, Error> {
    load(s, Key::Ids(ids), None)
}

/// A person's live enrollments whatever the caller may see (see [`by_ids_unscoped`]).
pub fn of_person_unscoped(s: &mut Scoped, person: i64) -> Result<Vec<EnrollmentRecord>, Error> {
    load(s, Key::Person(person), None)
}

/// A person's live enrollments, oldest first.
pub fn of_person(s: &mut Scoped, person: i64) -> Result<Vec<EnrollmentRecord>, Error> {
    scoped(s, Key::Person(person))
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
