//! Tracked entities and their attribute values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::schema::{tracked_entity as te, tracked_entity_attribute_value as teav};
use super::Scoped;
use crate::error::Error;
use crate::tracker::model::PersonRecord;

/// One attribute value row to insert.
pub struct ValueRow<'a> {
    pub attribute_id: i64,
    pub value: &'a str,
    pub search_value: String,
    pub is_unique: bool,
}

type EntityRow = (
    i64,
    String,
    i32,
    DateTime<Utc>,
    i64,
    bool,
    bool,
    Option<i64>,
);

fn entity_columns() -> (
    te::id,
    te::uid,
    te::version,
    te::last_updated,
    te::org_unit_id,
    te::inactive,
    te::deleted,
    te::merged_into_id,
) {
    (
        te::id,
        te::uid,
        te::version,
        te::last_updated,
        te::org_unit_id,
        te::inactive,
        te::deleted,
        te::merged_into_id,
    )
}

fn with_values(conn: &mut PgConnection, row: EntityRow) -> Result<PersonRecord, Error> {
    let (id, uid, version, last_updated, org_unit_id, inactive, deleted, merged_into) = row;
    let values: BTreeMap<i64, String> = teav::table
        .filter(teav::tracked_entity_id.eq(id))
        .select((teav::attribute_id, teav::value))
        .load::<(i64, String)>(conn)?
        .into_iter()
        .collect();
    Ok(PersonRecord {
        id,
        uid,
        version,
        last_updated,
        org_unit_id,
        inactive,
        deleted,
        merged_into,
        values,
    })
}

/// The person with `uid` if the caller may see it (deleted ones included, for 410).
pub fn find(s: &mut Scoped, entity_type_id: i64, uid: &str) -> Result<Option<PersonRecord>, Error> {
    if let Some(p) = s.cache.person(uid, &s.ctx.search) {
        return Ok(Some(p.clone()));
    }
    // The entity, its values and whether anyone is linked to it, in one round trip.
    let mut q = te::table
        .left_join(teav::table)
        .filter(te::uid.eq(uid))
        .filter(te::tracked_entity_type_id.eq(entity_type_id))
        .select((
            (
                entity_columns(),
                (teav::attribute_id, teav::value).nullable(),
            ),
            te::linked,
        ))
        .into_boxed();
    if let Some(visible) = s.visible_people() {
        q = q.filter(visible);
    }
    let rows: Vec<(JoinedRow, bool)> = q.load(s.conn()?)?;
    if rows.first().is_some_and(|(_, linked)| !linked) {
        s.note_unlinked(uid);
    }
    Ok(group(rows.into_iter().map(|(row, _)| row).collect()).pop())
}

/// A row of the person ⟕ attribute value join: the person and one of her values.
type JoinedRow = (EntityRow, Option<(i64, String)>);

/// Folds (entity, value) rows of a join ordered by entity into one record per person.
fn group(rows: Vec<JoinedRow>) -> Vec<PersonRecord> {
    let mut out: Vec<PersonRecord> = Vec::new();
    for ((id, uid, version, last_updated, org_unit_id, inactive, deleted, merged_into), value) in
        rows
    {
        if out.last().is_none_or(|p| p.id != id) {
            out.push(PersonRecord {
                id,
                uid,
                version,
                last_updated,
                org_unit_id,
                inactive,
                deleted,
                merged_into,
                values: BTreeMap::new(),
            });
        }
        if let (Some(p), Some((attribute, v))) = (out.last_mut(), value) {
            p.values.insert(attribute, v);
        }
    }
    out
}

/// Like [`find`], but locks the row until the transaction ends (serialises concurrent updates),
/// and returns the state as it is once the lock is held.
pub fn find_for_update(
    s: &mut Scoped,
    entity_type_id: i64,
    uid: &str,
) -> Result<Option<PersonRecord>, Error> {
    s.cache.evict_person(uid);
    let Some(visible) = find(s, entity_type_id, uid)? else {
        return Ok(None);
    };
    let row: EntityRow = te::table
        .find(visible.id)
        .select(entity_columns())
        .for_update()
        .first(s.conn()?)?;
    with_values(s.conn()?, row).map(Some)
}

pub fn update(
    conn: &mut PgConnection,
    id: i64,
    org_unit_id: i64,
    inactive: bool,
    version: i32,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(te::table.find(id))
        .set((
            te::org_unit_id.eq(org_unit_id),
            te::inactive.eq(inactive),
            te::deleted.eq(false),
            te::version.eq(version),
            te::last_updated.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn mark_deleted(
    conn: &mut PgConnection,
    id: i64,
    version: i32,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(te::table.find(id))
        .set((
            te::deleted.eq(true),
            te::version.eq(version),
            te::last_updated.eq(now),
        ))
        .execute(conn)?;
    // A deleted person's unique values (national ID...) become free for a new registration; the
    // change log keeps the state of every earlier version.
    diesel::delete(teav::table.filter(teav::tracked_entity_id.eq(id))).execute(conn)?;
    Ok(())
}

/// Replaces the values of `attribute_ids` with `rows` in one statement each (delete, multi-row insert).
pub fn replace_values(
    conn: &mut PgConnection,
    id: i64,
    attribute_ids: &[i64],
    rows: &[ValueRow],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // A mapping with no attributes has nothing to replace.
    if !attribute_ids.is_empty() {
        diesel::delete(
            teav::table
                .filter(teav::tracked_entity_id.eq(id))
                .filter(teav::attribute_id.eq_any(attribute_ids)),
        )
        .execute(conn)?;
    }
    if rows.is_empty() {
        return Ok(());
    }
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                teav::tracked_entity_id.eq(id),
                teav::attribute_id.eq(r.attribute_id),
                teav::value.eq(r.value),
                teav::search_value.eq(&r.search_value),
                teav::is_unique.eq(r.is_unique),
                teav::created.eq(now),
                teav::last_updated.eq(now),
            )
        })
        .collect();
    diesel::insert_into(teav::table)
        .values(&values)
        .execute(conn)?;
    Ok(())
}

/// The join people are read through, with their values.
/// People by id (scope applied; deleted and merged ones left out), values included, in one query.
/// Like [`find`], notes the people nobody is linked to, so that rendering a page of them needs
/// no look-up of `Patient.link`.
pub fn by_ids(s: &mut Scoped, ids: &[i64]) -> Result<Vec<PersonRecord>, Error> {
    let scope = s.people_scope();
    let (people, unlinked) = live_by_ids(s.conn()?, ids, scope)?;
    for uid in &unlinked {
        s.note_unlinked(uid);
    }
    Ok(people)
}

/// Live people with their values, in id order, within `scope` when there is one; and the uids
/// of those whose record says nobody is linked to them (`tracked_entity.linked`).
fn live_by_ids(
    conn: &mut PgConnection,
    ids: &[i64],
    scope: Option<super::scoped::PeopleScope>,
) -> Result<(Vec<PersonRecord>, Vec<String>), Error> {
    let mut q = te::table
        .left_join(teav::table)
        .filter(te::id.eq_any(ids))
        .filter(te::deleted.eq(false))
        .filter(te::merged_into_id.is_null())
        .select((
            (
                entity_columns(),
                (teav::attribute_id, teav::value).nullable(),
            ),
            te::linked,
        ))
        .order(te::id)
        .into_boxed();
    if let Some(scope) = scope {
        q = q.filter(scope.filter());
    }
    let rows: Vec<(JoinedRow, bool)> = q.load(conn)?;
    let mut unlinked: Vec<String> = rows
        .iter()
        .filter(|(_, linked)| !linked)
        .map(|((entity, _), _)| entity.1.clone())
        .collect();
    unlinked.dedup();
    Ok((
        group(rows.into_iter().map(|(row, _)| row).collect()),
        unlinked,
    ))
}

/// People by id whatever the caller's scope (deleted ones left out), for matching on write:
/// a person registered elsewhere is still the same person. Never shown as such: what a caller
/// sees of the decisions is filtered by scope where it is read.
pub fn by_ids_for_matching(s: &mut Scoped, ids: &[i64]) -> Result<Vec<PersonRecord>, Error> {
    Ok(live_by_ids(s.conn_unflushed(), ids, None)?.0)
}

/// The ids of the people holding `value` in `attribute_id` (an identifier system's attribute),
/// deleted ones included: callers read them through [`by_ids`], which applies scope.
pub fn ids_holding(s: &mut Scoped, attribute_id: i64, value: &str) -> Result<Vec<i64>, Error> {
    Ok(teav::table
        .filter(teav::attribute_id.eq(attribute_id))
        .filter(teav::value.eq(value))
        .select(teav::tracked_entity_id)
        .load(s.conn()?)?)
}

/// The people holding `value` in `attribute_id`, values included; scope applied and deleted
/// ones left out by [`by_ids`].
pub fn holding(s: &mut Scoped, attribute_id: i64, value: &str) -> Result<Vec<PersonRecord>, Error> {
    let ids = ids_holding(s, attribute_id, value)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    by_ids(s, &ids)
}
