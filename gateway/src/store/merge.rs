//! `Patient/$merge` and its undo in rows: what a person holds (enrollments, events, data values,
//! relationships, ownership), moving it to another person and back, and the record of each
//! merge (`person_merge`). What moves is decided in `tracker::merge`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::schema::{
    enrollment as en, event as ev, event_data_value as dv, person_merge as pm,
    program_ownership as po, relationship as rel, tracked_entity as te,
};
use crate::error::Error;

/// What a person holds, as a merge needs to know it (ids only).
#[derive(Debug, Default)]
pub struct Holdings {
    /// (enrollment id, program id, ACTIVE and not deleted)
    pub enrollments: Vec<(i64, i64, bool)>,
    /// (event id, enrollment id), deleted ones included
    pub events: Vec<(i64, i64)>,
    /// Relationships from / to the person, except those with `other` (they would join a person
    /// to themselves).
    pub relationships_from: Vec<i64>,
    pub relationships_to: Vec<i64>,
    /// Programs the person has an owner in.
    pub owned_programs: Vec<i64>,
}

pub fn holdings(conn: &mut PgConnection, person: i64, other: i64) -> Result<Holdings, Error> {
    let enrollments = en::table
        .filter(en::tracked_entity_id.eq(person))
        .select((en::id, en::program_id, en::status, en::deleted))
        .order(en::id)
        .load::<(i64, i64, String, bool)>(conn)?
        .into_iter()
        .map(|(id, program, status, deleted)| (id, program, status == "ACTIVE" && !deleted))
        .collect();
    let events = ev::table
        .filter(ev::tracked_entity_id.eq(person))
        .select((ev::id, ev::enrollment_id))
        .order(ev::id)
        .load(conn)?;
    let relationships_from = rel::table
        .filter(rel::from_tracked_entity_id.eq(person))
        .filter(rel::to_tracked_entity_id.ne(other))
        .select(rel::id)
        .order(rel::id)
        .load(conn)?;
    let relationships_to = rel::table
        .filter(rel::to_tracked_entity_id.eq(person))
        .filter(rel::from_tracked_entity_id.ne(other))
        .select(rel::id)
        .order(rel::id)
        .load(conn)?;
    let owned_programs = po::table
        .filter(po::tracked_entity_id.eq(person))
        .select(po::program_id)
        .load(conn)?;
    Ok(Holdings {
        enrollments,
        events,
        relationships_from,
        relationships_to,
        owned_programs,
    })
}

/// What a merge moved and changed, kept with it so that an unmerge puts exactly that back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Moved {
    /// Enrollments that moved whole, with every event in them.
    pub enrollments: Vec<i64>,
    /// Every event of the source: (event id, the enrollment it was in). Those whose enrollment
    /// stayed (the survivor had its own open enrollment in the program) moved into the
    /// survivor's.
    pub events: Vec<(i64, i64)>,
    /// Events re-homed: (event id, the survivor's enrollment it moved into).
    pub rehomed: Vec<(i64, i64)>,
    pub relationships_from: Vec<i64>,
    pub relationships_to: Vec<i64>,
    /// Programs whose ownership moved with an enrollment.
    pub ownership: Vec<i64>,
    /// The source's attribute values before the merge (attribute id → value).
    pub source_values: BTreeMap<i64, String>,
    /// Whether the source was inactive before the merge.
    pub source_inactive: bool,
    /// The survivor's attributes the merge changed: attribute id → (before, after).
    pub target_changes: BTreeMap<i64, (Option<String>, Option<String>)>,
}

/// Moves the rows `m` names from `source` to `target`. Live events and data values get a new
/// version (their subject changed); returns their ids.
pub fn move_rows(
    conn: &mut PgConnection,
    source: i64,
    target: i64,
    m: &Moved,
    now: DateTime<Utc>,
) -> Result<(Vec<i64>, Vec<i64>), Error> {
    diesel::update(en::table.filter(en::id.eq_any(&m.enrollments)))
        .set((
            en::tracked_entity_id.eq(target),
            en::version.eq(en::version + 1),
            en::last_updated.eq(now),
        ))
        .execute(conn)?;
    let mut into: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (event, enrollment) in &m.rehomed {
        into.entry(*enrollment).or_default().push(*event);
    }
    for (enrollment, events) in into {
        diesel::update(ev::table.filter(ev::id.eq_any(events)))
            .set(ev::enrollment_id.eq(enrollment))
            .execute(conn)?;
    }
    let events: Vec<i64> = m.events.iter().map(|(e, _)| *e).collect();
    let (live_events, live_values) = reassign(conn, &events, source, target, now)?;
    diesel::update(rel::table.filter(rel::id.eq_any(&m.relationships_from)))
        .set(rel::from_tracked_entity_id.eq(target))
        .execute(conn)?;
    diesel::update(rel::table.filter(rel::id.eq_any(&m.relationships_to)))
        .set(rel::to_tracked_entity_id.eq(target))
        .execute(conn)?;
    diesel::update(
        po::table
            .filter(po::tracked_entity_id.eq(source))
            .filter(po::program_id.eq_any(&m.ownership)),
    )
    .set((po::tracked_entity_id.eq(target), po::last_updated.eq(now)))
    .execute(conn)?;
    Ok((live_events, live_values))
}

/// Puts back what [`move_rows`] moved. Events recorded since in an enrollment that moved go
/// back with it. Returns the live events and data values given a new version.
pub fn restore_rows(
    conn: &mut PgConnection,
    source: i64,
    target: i64,
    m: &Moved,
    now: DateTime<Utc>,
) -> Result<(Vec<i64>, Vec<i64>), Error> {
    let mut back: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (event, enrollment) in &m.events {
        back.entry(*enrollment).or_default().push(*event);
    }
    for (enrollment, events) in back {
        diesel::update(ev::table.filter(ev::id.eq_any(events)))
            .set(ev::enrollment_id.eq(enrollment))
            .execute(conn)?;
    }
    let mut events: Vec<i64> = m.events.iter().map(|(e, _)| *e).collect();
    events.extend(
        ev::table
            .filter(ev::enrollment_id.eq_any(&m.enrollments))
            .filter(ev::tracked_entity_id.eq(target))
            .select(ev::id)
            .load::<i64>(conn)?,
    );
    events.sort_unstable();
    events.dedup();
    diesel::update(en::table.filter(en::id.eq_any(&m.enrollments)))
        .set((
            en::tracked_entity_id.eq(source),
            en::version.eq(en::version + 1),
            en::last_updated.eq(now),
        ))
        .execute(conn)?;
    let moved = reassign(conn, &events, target, source, now)?;
    diesel::update(rel::table.filter(rel::id.eq_any(&m.relationships_from)))
        .filter(rel::from_tracked_entity_id.eq(target))
        .set(rel::from_tracked_entity_id.eq(source))
        .execute(conn)?;
    diesel::update(rel::table.filter(rel::id.eq_any(&m.relationships_to)))
        .filter(rel::to_tracked_entity_id.eq(target))
        .set(rel::to_tracked_entity_id.eq(source))
        .execute(conn)?;
    diesel::update(
        po::table
            .filter(po::tracked_entity_id.eq(target))
            .filter(po::program_id.eq_any(&m.ownership)),
    )
    .set((po::tracked_entity_id.eq(source), po::last_updated.eq(now)))
    .execute(conn)?;
    Ok(moved)
}

/// Gives `events` (and their data values) held by `from` to `to`; live ones get a new version.
fn reassign(
    conn: &mut PgConnection,
    events: &[i64],
    from: i64,
    to: i64,
    now: DateTime<Utc>,
) -> Result<(Vec<i64>, Vec<i64>), Error> {
    let live_events = diesel::update(
        ev::table
            .filter(ev::id.eq_any(events))
            .filter(ev::tracked_entity_id.eq(from))
            .filter(ev::deleted.eq(false)),
    )
    .set((
        ev::tracked_entity_id.eq(to),
        ev::version.eq(ev::version + 1),
        ev::last_updated.eq(now),
    ))
    .returning(ev::id)
    .get_results(conn)?;
    // Deleted rows keep their last version: their history ends at the deletion.
    diesel::update(
        ev::table
            .filter(ev::id.eq_any(events))
            .filter(ev::tracked_entity_id.eq(from)),
    )
    .set(ev::tracked_entity_id.eq(to))
    .execute(conn)?;
    let live_values = diesel::update(
        dv::table
            .filter(dv::event_id.eq_any(events))
            .filter(dv::tracked_entity_id.eq(from))
            .filter(dv::deleted.eq(false)),
    )
    .set((
        dv::tracked_entity_id.eq(to),
        dv::version.eq(dv::version + 1),
        dv::last_updated.eq(now),
    ))
    .returning(dv::id)
    .get_results(conn)?;
    diesel::update(
        dv::table
            .filter(dv::event_id.eq_any(events))
            .filter(dv::tracked_entity_id.eq(from)),
    )
    .set(dv::tracked_entity_id.eq(to))
    .execute(conn)?;
    Ok((live_events, live_values))
}

/// Marks `person` merged into `target` (or, with None, no longer merged).
pub fn set_merged_into(
    conn: &mut PgConnection,
    person: i64,
    target: Option<i64>,
    inactive: bool,
    version: i32,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(te::table.find(person))
        .set((
            te::merged_into_id.eq(target),
            te::inactive.eq(inactive),
            te::version.eq(version),
            te::last_updated.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// A new version of the survivor (its values are written by the caller).
pub fn bump(
    conn: &mut PgConnection,
    person: i64,
    version: i32,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(te::table.find(person))
        .set((te::version.eq(version), te::last_updated.eq(now)))
        .execute(conn)?;
    Ok(())
}

pub fn uid_of(conn: &mut PgConnection, person: i64) -> Result<String, Error> {
    Ok(te::table.find(person).select(te::uid).first(conn)?)
}

pub fn record(
    conn: &mut PgConnection,
    source: i64,
    target: i64,
    actor: &str,
    moved: &Moved,
    now: DateTime<Utc>,
) -> Result<i64, Error> {
    let moved = serde_json::to_value(moved)
        .map_err(|e| Error::Internal(format!("merge record not serialisable: {e}")))?;
    Ok(diesel::insert_into(pm::table)
        .values((
            pm::source_id.eq(source),
            pm::target_id.eq(target),
            pm::merged_at.eq(now),
            pm::merged_by.eq(actor),
            pm::moved.eq(moved),
        ))
        .returning(pm::id)
        .get_result(conn)?)
}

/// The merge of `source` that stands, locked: its id and what moved.
pub fn standing_for_update(
    conn: &mut PgConnection,
    source: i64,
) -> Result<Option<(i64, Moved)>, Error> {
    let row: Option<(i64, serde_json::Value)> = pm::table
        .filter(pm::source_id.eq(source))
        .filter(pm::undone_at.is_null())
        .select((pm::id, pm::moved))
        .for_update()
        .first(conn)
        .optional()?;
    row.map(|(id, moved)| {
        let moved: Moved = serde_json::from_value(moved)
            .map_err(|e| Error::Internal(format!("merge record {id} is unreadable: {e}")))?;
        Ok((id, moved))
    })
    .transpose()
}

pub fn mark_undone(
    conn: &mut PgConnection,
    merge: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(pm::table.find(merge))
        .set((pm::undone_at.eq(now), pm::undone_by.eq(actor)))
        .execute(conn)?;
    Ok(())
}
