//! Relationships between people (served as RelatedPerson). A relationship is visible when both of
//! its people are (the caller's search scope, applied in SQL).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz};

use super::Scoped;
use crate::error::Error;
use crate::mapping::encounter::Coding;
use crate::tracker::model::RelationshipRecord;

type Tuple = (
    i64,
    String,
    i32,
    DateTime<Utc>,
    i64,
    i64,
    String,
    i64,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

fn record(t: Tuple) -> RelationshipRecord {
    RelationshipRecord {
        id: t.0,
        uid: t.1,
        version: t.2,
        last_updated: t.3,
        type_id: t.4,
        from_id: t.5,
        from_uid: t.6,
        to_id: t.7,
        to_uid: t.8,
        related_is_from: t.9,
        role: match (t.10, t.11) {
            (Some(system), Some(code)) => Some(Coding {
                system,
                code,
                display: t.12,
            }),
            _ => None,
        },
        deleted: t.13,
    }
}

/// Which relationships a look-up wants.
enum Key<'k> {
    /// One, deleted or not (for 410).
    Uid(&'k str),
    Ids(&'k [i64]),
    /// The live ones in which one of these people is RelatedPerson.patient.
    OfPatients(&'k [i64]),
}

/// Relationships with both people's uids, in id order, both people within `scope` (the search
/// scope's `sql_filter`; None: all). Built with diesel's query builder, so that the unscoped
/// statement is prepared once per connection.
fn load(
    s: &mut Scoped,
    key: Key,
    scope: Option<(Vec<String>, Vec<String>)>,
) -> Result<Vec<RelationshipRecord>, Error> {
    use super::schema::{relationship as rel, tracked_entity as te};
    let (f, t) = diesel::alias!(te as f, te as t);
    let mut q = rel::table
        .inner_join(f.on(f.field(te::id).eq(rel::from_tracked_entity_id)))
        .inner_join(t.on(t.field(te::id).eq(rel::to_tracked_entity_id)))
        .select((
            rel::id,
            rel::uid,
            rel::version,
            rel::last_updated,
            rel::relationship_type_id,
            rel::from_tracked_entity_id,
            f.field(te::uid),
            rel::to_tracked_entity_id,
            t.field(te::uid),
            rel::related_is_from,
            rel::role_system,
            rel::role_code,
            rel::role_display,
            rel::deleted,
        ))
        .order(rel::id)
        .into_boxed();
    q = match key {
        Key::Uid(uid) => q.filter(rel::uid.eq(uid.to_owned())),
        Key::Ids(ids) => q.filter(rel::id.eq_any(ids.to_vec())),
        Key::OfPatients(people) => q.filter(rel::deleted.eq(false)).filter(
            rel::related_is_from
                .eq(true)
                .and(rel::to_tracked_entity_id.eq_any(people.to_vec()))
                .or(rel::related_is_from
                    .eq(false)
                    .and(rel::from_tracked_entity_id.eq_any(people.to_vec()))),
        ),
    };
    if let Some((roots, patterns)) = scope {
        q = q
            .filter(super::scoped::people_filter_as(
                "f",
                roots.clone(),
                patterns.clone(),
            ))
            .filter(super::scoped::people_filter_as("t", roots, patterns));
    }
    Ok(q.load::<Tuple>(s.conn()?)?
        .into_iter()
        .map(record)
        .collect())
}

fn scoped(s: &mut Scoped, key: Key) -> Result<Vec<RelationshipRecord>, Error> {
    let scope = s.ctx.search.sql_filter();
    load(s, key, scope)
}

/// The relationship `uid` (deleted ones included, for 410) if the caller may see both people.
pub fn find(s: &mut Scoped, uid: &str) -> Result<Option<RelationshipRecord>, Error> {
    Ok(scoped(s, Key::Uid(uid))?.into_iter().next())
}

pub fn by_ids(s: &mut Scoped, ids: &[i64]) -> Result<Vec<RelationshipRecord>, Error> {
    scoped(s, Key::Ids(ids))
}

/// Gives each relationship a new version (a merge moved one of its people) and returns them as
/// they are now, whatever the caller's scope: every new version gets its snapshot.
pub fn bump(
    s: &mut Scoped,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<Vec<RelationshipRecord>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    diesel::sql_query(
        "UPDATE relationship SET version = version + 1, last_updated = $2 WHERE id = ANY($1) AND NOT deleted",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Timestamptz, _>(at)
    .execute(s.conn()?)?;
    Ok(load(s, Key::Ids(ids), None)?
        .into_iter()
        .filter(|r| !r.deleted)
        .collect())
}

/// The live relationships in which one of `people` is RelatedPerson.patient.
pub fn of_patients(s: &mut Scoped, people: &[i64]) -> Result<Vec<RelationshipRecord>, Error> {
    scoped(s, Key::OfPatients(people))
}

/// Of `ids`, the relationships `person` is in now (after an unmerge, those that came back).
pub fn of_person_among(
    conn: &mut PgConnection,
    ids: &[i64],
    person: i64,
) -> Result<Vec<i64>, Error> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    Ok(diesel::sql_query(
        "SELECT id FROM relationship WHERE id = ANY($1) \
         AND (from_tracked_entity_id = $2 OR to_tracked_entity_id = $2) ORDER BY id",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<BigInt, _>(person)
    .load::<Id>(conn)?
    .into_iter()
    .map(|i| i.id)
    .collect())
}

/// How many live relationships a person is in, at either end, whatever the caller's scope.
pub fn live_of_person(conn: &mut PgConnection, person: i64) -> Result<i64, Error> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    Ok(diesel::sql_query(
        "SELECT count(*)::bigint AS n FROM relationship WHERE NOT deleted \
         AND (from_tracked_entity_id = $1 OR to_tracked_entity_id = $1)",
    )
    .bind::<BigInt, _>(person)
    .get_result::<N>(conn)?
    .n)
}

/// Locks the relationship row (whatever the scope: the caller has read it already).
pub fn lock(conn: &mut PgConnection, id: i64) -> Result<(), Error> {
    diesel::sql_query("SELECT id FROM relationship WHERE id = $1 FOR UPDATE")
        .bind::<BigInt, _>(id)
        .execute(conn)?;
    Ok(())
}

/// Serialises writes of relationships of one type that end at one person, so that two
/// concurrent "mothers" cannot both pass the one-mother check.
pub fn lock_end(conn: &mut PgConnection, type_id: i64, to: i64) -> Result<(), Error> {
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtextextended('relationship-end', $1) # $2)",
    )
    .bind::<BigInt, _>(type_id)
    .bind::<BigInt, _>(to)
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Text)]
    uid: String,
}

/// A live relationship of `type_id` ending at `to` other than `except` (one mother per child),
/// whatever the caller's scope: a rule about the registry, not a read.
pub fn other_to(
    conn: &mut PgConnection,
    type_id: i64,
    to: i64,
    except: i64,
) -> Result<Option<String>, Error> {
    Ok(diesel::sql_query(
        "SELECT uid::text AS uid FROM relationship WHERE relationship_type_id = $1 AND to_tracked_entity_id = $2 \
         AND id <> $3 AND NOT deleted LIMIT 1",
    )
    .bind::<BigInt, _>(type_id)
    .bind::<BigInt, _>(to)
    .bind::<BigInt, _>(except)
    .get_result::<Found>(conn)
    .optional()?
    .map(|f| f.uid))
}

/// The same relationship recorded already (same type, same people, same direction).
pub fn same(
    conn: &mut PgConnection,
    type_id: i64,
    from: i64,
    to: i64,
    except: i64,
) -> Result<Option<String>, Error> {
    Ok(diesel::sql_query(
        "SELECT uid::text AS uid FROM relationship WHERE relationship_type_id = $1 AND from_tracked_entity_id = $2 \
         AND to_tracked_entity_id = $3 AND id <> $4 AND NOT deleted LIMIT 1",
    )
    .bind::<BigInt, _>(type_id)
    .bind::<BigInt, _>(from)
    .bind::<BigInt, _>(to)
    .bind::<BigInt, _>(except)
    .get_result::<Found>(conn)
    .optional()?
    .map(|f| f.uid))
}

/// What a relationship row holds, for insert and update.
pub struct Values<'a> {
    pub type_id: i64,
    pub from: i64,
    pub to: i64,
    pub related_is_from: bool,
    pub role: &'a Coding,
    pub at: DateTime<Utc>,
}

pub fn insert(conn: &mut PgConnection, uid: &str, v: &Values) -> Result<i64, Error> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    Ok(diesel::sql_query(
        "INSERT INTO relationship (uid, relationship_type_id, from_tracked_entity_id, to_tracked_entity_id, \
         related_is_from, role_system, role_code, role_display, created, last_updated) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
    )
    .bind::<Text, _>(uid)
    .bind::<BigInt, _>(v.type_id)
    .bind::<BigInt, _>(v.from)
    .bind::<BigInt, _>(v.to)
    .bind::<Bool, _>(v.related_is_from)
    .bind::<Text, _>(&v.role.system)
    .bind::<Text, _>(&v.role.code)
    .bind::<Nullable<Text>, _>(v.role.display.as_deref())
    .bind::<Timestamptz, _>(v.at)
    .get_result::<Id>(conn)?
    .id)
}

pub fn update(conn: &mut PgConnection, id: i64, version: i32, v: &Values) -> Result<(), Error> {
    diesel::sql_query(
        "UPDATE relationship SET relationship_type_id = $2, from_tracked_entity_id = $3, to_tracked_entity_id = $4, \
         related_is_from = $5, role_system = $6, role_code = $7, role_display = $8, version = $9, last_updated = $10 \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<BigInt, _>(v.type_id)
    .bind::<BigInt, _>(v.from)
    .bind::<BigInt, _>(v.to)
    .bind::<Bool, _>(v.related_is_from)
    .bind::<Text, _>(&v.role.system)
    .bind::<Text, _>(&v.role.code)
    .bind::<Nullable<Text>, _>(v.role.display.as_deref())
    .bind::<Int4, _>(version)
    .bind::<Timestamptz, _>(v.at)
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
        "UPDATE relationship SET deleted = true, version = $2, last_updated = $3 WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Int4, _>(version)
    .bind::<Timestamptz, _>(at)
    .execute(conn)?;
    Ok(())
}
