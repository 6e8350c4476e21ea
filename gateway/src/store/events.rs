//! Enrollments, events and their data values.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::dsl::sql;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Date};

use super::page::Vouched;
use super::schema::{enrollment as en, event as ev, event_data_value as dv, tracked_entity as te};
use super::Scoped;
use crate::error::Error;
use crate::tracker::model::{DataValueRecord, EventRecord};

type EventRow = (
    i64,
    String,
    i32,
    DateTime<Utc>,
    i64,
    i64,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    i64,
    String,
    i64,
    String,
    bool,
);

fn event_record(r: EventRow) -> EventRecord {
    let (
        id,
        uid,
        version,
        last_updated,
        stage_id,
        org_unit_id,
        status,
        occurred_at,
        completed_at,
        tracked_entity_id,
        tracked_entity_uid,
        enrollment_id,
        enrollment_uid,
        deleted,
    ) = r;
    EventRecord {
        id,
        uid,
        version,
        last_updated,
        stage_id,
        org_unit_id,
        status,
        occurred_at,
        completed_at,
        tracked_entity_id,
        tracked_entity_uid,
        enrollment_id,
        enrollment_uid,
        deleted,
    }
}

macro_rules! event_select {
    () => {
        (
            ev::id,
            ev::uid,
            ev::version,
            ev::last_updated,
            ev::program_stage_id,
            ev::org_unit_id,
            ev::status,
            ev::occurred_at,
            ev::completed_at,
            ev::tracked_entity_id,
            te::uid,
            ev::enrollment_id,
            en::uid,
            ev::deleted,
        )
    };
}

/// Which records a scoped look-up wants.
enum Key<'k> {
    Ids(&'k [i64]),
    /// A page found under the caller's scope ([`Vouched`]): the ownership rule is not run again.
    Vouched(&'k [i64]),
    Uid(&'k str),
    /// Every live record of one person, oldest first.
    Person(i64),
}

/// Events with the caller's scope applied (a person's records in a program follow its owner).
fn scoped_events(s: &mut Scoped, key: Key) -> Result<Vec<EventRecord>, Error> {
    let mut q = ev::table
        .inner_join(te::table)
        .inner_join(en::table)
        .select(event_select!())
        .into_boxed();
    let vouched = matches!(key, Key::Vouched(_));
    q = match key {
        Key::Ids(ids) | Key::Vouched(ids) => q.filter(ev::id.eq_any(ids)),
        Key::Uid(uid) => q.filter(ev::uid.eq(uid)),
        Key::Person(id) => q
            .filter(ev::tracked_entity_id.eq(id))
            .filter(ev::deleted.eq(false))
            .order((ev::occurred_at.asc().nulls_last(), ev::id)),
    };
    // An event follows its enrollment's owner (DHIS2's ownership rule, store::scoped::ProgramScope).
    if !vouched {
        if let Some(scope) = s.program_scope()? {
            q = q.filter(scope.visible(super::RuleOn::Enrollment("event.enrollment_id")));
        }
    }
    Ok(q.load::<EventRow>(s.conn()?)?
        .into_iter()
        .map(event_record)
        .collect())
}

pub fn events_by_ids(s: &mut Scoped, ids: &[i64]) -> Result<Vec<EventRecord>, Error> {
    scoped_events(s, Key::Ids(ids))
}

/// The events of a search's page, found under the caller's scope.
pub fn events_vouched(s: &mut Scoped, page: &Vouched) -> Result<Vec<EventRecord>, Error> {
    scoped_events(s, vouched_key(page))
}

fn vouched_key(page: &Vouched) -> Key<'_> {
    if page.ruled() {
        Key::Vouched(page.ids())
    } else {
        Key::Ids(page.ids())
    }
}

/// A person's live events, oldest first (for `$everything`).
pub fn events_of_person(s: &mut Scoped, person: i64) -> Result<Vec<EventRecord>, Error> {
    scoped_events(s, Key::Person(person))
}

pub fn find_event(s: &mut Scoped, uid: &str) -> Result<Option<EventRecord>, Error> {
    if let Some(e) = s.cache.event(uid, &s.ctx.search) {
        return Ok(Some(e.clone()));
    }
    Ok(scoped_events(s, Key::Uid(uid))?.into_iter().next())
}

pub fn lock_event(conn: &mut PgConnection, id: i64) -> Result<EventRecord, Error> {
    ev::table
        .find(id)
        .select(ev::id)
        .for_update()
        .first::<i64>(conn)?;
    let row = ev::table
        .inner_join(te::table)
        .inner_join(en::table)
        .filter(ev::id.eq(id))
        .select(event_select!())
        .first::<EventRow>(conn)?;
    Ok(event_record(row))
}

#[allow(clippy::too_many_arguments)]
pub fn update_event(
    conn: &mut PgConnection,
    id: i64,
    stage_id: i64,
    org_unit_id: i64,
    status: &str,
    occurred_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    version: i32,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(ev::table.find(id))
        .set((
            ev::program_stage_id.eq(stage_id),
            ev::org_unit_id.eq(org_unit_id),
            ev::status.eq(status),
            ev::occurred_at.eq(occurred_at),
            ev::completed_at.eq(completed_at),
            ev::deleted.eq(false),
            ev::version.eq(version),
            ev::last_updated.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn mark_event_deleted(
    conn: &mut PgConnection,
    id: i64,
    version: i32,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(ev::table.find(id))
        .set((
            ev::deleted.eq(true),
            ev::version.eq(version),
            ev::last_updated.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Live events of a stage within an enrollment (for non-repeatable stages).
pub fn events_in_stage(
    conn: &mut PgConnection,
    enrollment_id: i64,
    stage_id: i64,
) -> Result<Vec<String>, Error> {
    Ok(ev::table
        .filter(ev::enrollment_id.eq(enrollment_id))
        .filter(ev::program_stage_id.eq(stage_id))
        .filter(ev::deleted.eq(false))
        .select(ev::uid)
        .load(conn)?)
}

/// The person's live event of `stage` on `day`, if any (where dateless Observations land).
pub fn event_on_day(
    conn: &mut PgConnection,
    tracked_entity_id: i64,
    stage_id: i64,
    day: NaiveDate,
) -> Result<Option<i64>, Error> {
    Ok(ev::table
        .filter(ev::tracked_entity_id.eq(tracked_entity_id))
        .filter(ev::program_stage_id.eq(stage_id))
        .filter(ev::deleted.eq(false))
        .filter(sql::<Bool>("(event.occurred_at AT TIME ZONE 'UTC')::date = ").bind::<Date, _>(day))
        .order(ev::id)
        .select(ev::id)
        .first(conn)
        .optional()?)
}

/// (id, uid, tracked entity id, program id, status) of an enrollment.
pub type EnrollmentRow = (i64, String, i64, i64, String);

pub fn enrollment_by_uid(
    conn: &mut PgConnection,
    uid: &str,
) -> Result<Option<EnrollmentRow>, Error> {
    Ok(en::table
        .filter(en::uid.eq(uid))
        .filter(en::deleted.eq(false))
        .select((
            en::id,
            en::uid,
            en::tracked_entity_id,
            en::program_id,
            en::status,
        ))
        .first(conn)
        .optional()?)
}

pub fn active_enrollment(
    conn: &mut PgConnection,
    tracked_entity_id: i64,
    program_id: i64,
) -> Result<Option<EnrollmentRow>, Error> {
    Ok(en::table
        .filter(en::tracked_entity_id.eq(tracked_entity_id))
        .filter(en::program_id.eq(program_id))
        .filter(en::status.eq("ACTIVE"))
        .filter(en::deleted.eq(false))
        .select((
            en::id,
            en::uid,
            en::tracked_entity_id,
            en::program_id,
            en::status,
        ))
        .first(conn)
        .optional()?)
}

pub fn any_enrollment(
    conn: &mut PgConnection,
    tracked_entity_id: i64,
    program_id: i64,
) -> Result<bool, Error> {
    Ok(diesel::select(diesel::dsl::exists(
        en::table
            .filter(en::tracked_entity_id.eq(tracked_entity_id))
            .filter(en::program_id.eq(program_id))
            .filter(en::deleted.eq(false)),
    ))
    .get_result(conn)?)
}

// ---- data values -------------------------------------------------------------------------------

type ValueRow = (
    i64,
    String,
    i32,
    DateTime<Utc>,
    i64,
    String,
    i64,
    i64,
    String,
    String,
    Option<DateTime<Utc>>,
    bool,
);

fn value_record(r: ValueRow) -> DataValueRecord {
    let (
        id,
        uid,
        version,
        last_updated,
        event_id,
        event_uid,
        data_element_id,
        tracked_entity_id,
        tracked_entity_uid,
        value,
        observed_at,
        deleted,
    ) = r;
    DataValueRecord {
        id,
        uid,
        version,
        last_updated,
        event_id,
        event_uid,
        data_element_id,
        tracked_entity_id,
        tracked_entity_uid,
        value,
        observed_at,
        deleted,
    }
}

macro_rules! value_select {
    () => {
        (
            dv::id,
            dv::uid,
            dv::version,
            dv::last_updated,
            dv::event_id,
            ev::uid,
            dv::data_element_id,
            dv::tracked_entity_id,
            te::uid,
            dv::value,
            dv::observed_at,
            dv::deleted,
        )
    };
}

/// Data values with the caller's scope applied (they follow their event's enrollment).
fn scoped_values(s: &mut Scoped, key: Key) -> Result<Vec<DataValueRecord>, Error> {
    let mut q = dv::table
        .inner_join(ev::table)
        .inner_join(te::table)
        .select(value_select!())
        .into_boxed();
    let vouched = matches!(key, Key::Vouched(_));
    q = match key {
        Key::Ids(ids) | Key::Vouched(ids) => q.filter(dv::id.eq_any(ids)),
        Key::Uid(uid) => q.filter(dv::uid.eq(uid)),
        Key::Person(id) => q
            .filter(dv::tracked_entity_id.eq(id))
            .filter(dv::deleted.eq(false))
            .order((dv::observed_at.asc().nulls_last(), dv::id)),
    };
    if !vouched {
        if let Some(scope) = s.program_scope()? {
            q = q.filter(scope.visible(super::RuleOn::Value("event_data_value")));
        }
    }
    Ok(q.load::<ValueRow>(s.conn()?)?
        .into_iter()
        .map(value_record)
        .collect())
}

pub fn values_by_ids(s: &mut Scoped, ids: &[i64]) -> Result<Vec<DataValueRecord>, Error> {
    scoped_values(s, Key::Ids(ids))
}

/// The data values of a search's page, found under the caller's scope.
pub fn values_vouched(s: &mut Scoped, page: &Vouched) -> Result<Vec<DataValueRecord>, Error> {
    scoped_values(s, vouched_key(page))
}

/// A person's live data values, oldest first (for `$everything`).
pub fn values_of_person(s: &mut Scoped, person: i64) -> Result<Vec<DataValueRecord>, Error> {
    scoped_values(s, Key::Person(person))
}

pub fn find_value(s: &mut Scoped, uid: &str) -> Result<Option<DataValueRecord>, Error> {
    Ok(scoped_values(s, Key::Uid(uid))?.into_iter().next())
}

pub fn lock_value(conn: &mut PgConnection, id: i64) -> Result<DataValueRecord, Error> {
    dv::table
        .find(id)
        .select(dv::id)
        .for_update()
        .first::<i64>(conn)?;
    let row = dv::table
        .inner_join(ev::table)
        .inner_join(te::table)
        .filter(dv::id.eq(id))
        .select(value_select!())
        .first::<ValueRow>(conn)?;
    Ok(value_record(row))
}

pub struct NewValue<'a> {
    pub uid: &'a str,
    pub event_id: i64,
    /// The event's enrollment (the ownership rule reads it from the value).
    pub enrollment_id: i64,
    pub data_element_id: i64,
    pub tracked_entity_id: i64,
    pub value: &'a str,
    pub value_num: Option<f64>,
    pub observed_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

pub fn update_value(
    conn: &mut PgConnection,
    id: i64,
    v: &NewValue,
    version: i32,
) -> Result<(), Error> {
    diesel::update(dv::table.find(id))
        .set((
            dv::event_id.eq(v.event_id),
            dv::enrollment_id.eq(v.enrollment_id),
            dv::data_element_id.eq(v.data_element_id),
            dv::value.eq(v.value),
            dv::value_num.eq(v.value_num),
            dv::observed_at.eq(v.observed_at),
            dv::deleted.eq(false),
            dv::version.eq(version),
            dv::last_updated.eq(v.now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn mark_value_deleted(
    conn: &mut PgConnection,
    id: i64,
    version: i32,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(dv::table.find(id))
        .set((
            dv::deleted.eq(true),
            dv::version.eq(version),
            dv::last_updated.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn live_values_of_event(conn: &mut PgConnection, event_id: i64) -> Result<i64, Error> {
    Ok(dv::table
        .filter(dv::event_id.eq(event_id))
        .filter(dv::deleted.eq(false))
        .count()
        .get_result(conn)?)
}

pub fn live_events_of_person(
    conn: &mut PgConnection,
    tracked_entity_id: i64,
) -> Result<i64, Error> {
    Ok(ev::table
        .filter(ev::tracked_entity_id.eq(tracked_entity_id))
        .filter(ev::deleted.eq(false))
        .count()
        .get_result(conn)?)
}
