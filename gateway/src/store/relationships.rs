//! Relationships between people (served as RelatedPerson). A relationship is visible when both of
//! its people are (the caller's search scope, applied in SQL).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz};

use super::Scoped;
use crate::error::Error;
use crate::mapping::encounter::Coding;
use crate::tracker::model::RelationshipRecord;

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
    relationship_type_id: i64,
    #[diesel(sql_type = BigInt)]
    from_id: i64,
    #[diesel(sql_type = Text)]
    from_uid: String,
    #[diesel(sql_type = BigInt)]
    to_id: i64,
    #[diesel(sql_type = Text)]
    to_uid: String,
    #[diesel(sql_type = Bool)]
    related_is_from: bool,
    #[diesel(sql_type = Nullable<Text>)]
    role_system: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    role_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    role_display: Option<String>,
    #[diesel(sql_type = Bool)]
    deleted: bool,
}

fn record(r: Row) -> RelationshipRecord {
    RelationshipRecord {
        id: r.id,
        uid: r.uid,
        version: r.version,
        last_updated: r.last_updated,
        type_id: r.relationship_type_id,
        from_id: r.from_id,
        from_uid: r.from_uid,
        to_id: r.to_id,
        to_uid: r.to_uid,
        related_is_from: r.related_is_from,
        role: match (r.role_system, r.role_code) {
            (Some(system), Some(code)) => Some(Coding {
                system,
                code,
                display: r.role_display,
            }),
            _ => None,
        },
        deleted: r.deleted,
    }
}

const SELECT: &str = "SELECT r.id, r.uid::text AS uid, r.version, r.last_updated, r.relationship_type_id, \
     r.from_tracked_entity_id AS from_id, f.uid::text AS from_uid, r.to_tracked_entity_id AS to_id, \
     t.uid::text AS to_uid, r.related_is_from, r.role_system, r.role_code, r.role_display, r.deleted \
     FROM relationship r JOIN tracked_entity f ON f.id = r.from_tracked_entity_id \
     JOIN tracked_entity t ON t.id = r.to_tracked_entity_id";

/// Relationships matching `filter` (`$1` ids, `$2` a uid), both people in the caller's search scope.
fn scoped_query(
    s: &mut Scoped,
    filter: &str,
    ids: Option<Vec<i64>>,
    uid: Option<&str>,
) -> Result<Vec<RelationshipRecord>, Error> {
    let scope = s.ctx.search.sql_filter();
    query(s, filter, ids, uid, scope)
}

fn query(
    s: &mut Scoped,
    filter: &str,
    ids: Option<Vec<i64>>,
    uid: Option<&str>,
    scope: Option<(Vec<String>, Vec<String>)>,
) -> Result<Vec<RelationshipRecord>, Error> {
    let (scoped, roots, patterns) = match scope {
        Some((r, p)) => (true, r, p),
        None => (false, Vec::new(), Vec::new()),
    };
    let (f, t) = (
        super::person_in_scope_sql("f", "$4", "$5"),
        super::person_in_scope_sql("t", "$4", "$5"),
    );
    let text = format!("{SELECT} WHERE {filter} AND (NOT $3 OR ({f} AND {t})) ORDER BY r.id");
    let rows: Vec<Row> = diesel::sql_query(text)
        .bind::<Array<BigInt>, _>(ids.unwrap_or_default())
        .bind::<Text, _>(uid.unwrap_or_default())
        .bind::<Bool, _>(scoped)
        .bind::<Array<Text>, _>(roots)
        .bind::<Array<Text>, _>(patterns)
        .load(s.conn()?)?;
    Ok(rows.into_iter().map(record).collect())
}

/// The relationship `uid` (deleted ones included, for 410) if the caller may see both people.
pub fn find(s: &mut Scoped, uid: &str) -> Result<Option<RelationshipRecord>, Error> {
    Ok(
        scoped_query(s, "r.uid = $2 AND cardinality($1) = 0", None, Some(uid))?
            .into_iter()
            .next(),
    )
}

pub fn by_ids(s: &mut Scoped, ids: &[i64]) -> Result<Vec<RelationshipRecord>, Error> {
    scoped_query(s, "r.id = ANY($1) AND $2 = ''", Some(ids.to_vec()), None)
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
    query(
        s,
        "r.id = ANY($1) AND NOT r.deleted AND $2 = ''",
        Some(ids.to_vec()),
        None,
        None,
    )
}

/// The live relationships in which one of `people` is RelatedPerson.patient.
pub fn of_patients(s: &mut Scoped, people: &[i64]) -> Result<Vec<RelationshipRecord>, Error> {
    scoped_query(
        s,
        "NOT r.deleted AND $2 = '' AND ((r.related_is_from AND r.to_tracked_entity_id = ANY($1)) \
         OR (NOT r.related_is_from AND r.from_tracked_entity_id = ANY($1)))",
        Some(people.to_vec()),
        None,
    )
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
