//! Inserts deferred to the end of a unit of work (a request or a whole transaction Bundle) and sent
//! as a few multi-row statements instead of one round trip each.
//!
//! Only rows that cannot fail on a constraint the caller must hear about per entry are deferred:
//! the change and inbound logs, enrollments with their ownership, events and data values (their ids
//! are reserved from the sequences up front, their uids are fresh, their references were checked
//! when they were queued). Tracked entities and attribute values are written at once, because a
//! unique attribute (a national ID) must be refused naming the entry that carried it.
//!
//! [`super::Scoped`] flushes before any other statement runs on the connection, so a query
//! never misses a row that is still queued, and before the transaction commits.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use serde_json::Value;

use super::schema::{
    change_log as cl, enrollment as en, event as ev, event_data_value as dv, inbound_log as il,
    program_ownership as po,
};
use crate::error::Error;

pub struct ChangeRow {
    pub resource_type: String,
    pub uid: String,
    pub version: i32,
    pub operation: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub request_id: String,
    pub mapping_version: String,
    pub state: Option<Value>,
}

pub struct InboundRow {
    pub request_id: String,
    pub actor: String,
    pub interaction: String,
    pub resource_type: String,
    pub uid: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
    pub mapping_version: String,
}

pub struct EnrollmentRow {
    pub id: i64,
    pub uid: String,
    pub tracked_entity_id: i64,
    pub program_id: i64,
    pub org_unit_id: i64,
    pub enrolled_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

pub struct EventRow {
    pub id: i64,
    pub uid: String,
    pub enrollment_id: i64,
    pub stage_id: i64,
    pub org_unit_id: i64,
    pub tracked_entity_id: i64,
    pub status: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

pub struct ValueRow {
    pub id: i64,
    pub uid: String,
    pub event_id: i64,
    pub data_element_id: i64,
    pub tracked_entity_id: i64,
    pub value: String,
    pub value_num: Option<f64>,
    pub observed_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

#[derive(Default)]
pub struct Pending {
    pub changes: Vec<ChangeRow>,
    pub inbound: Vec<InboundRow>,
    pub enrollments: Vec<EnrollmentRow>,
    pub events: Vec<EventRow>,
    pub values: Vec<ValueRow>,
}

/// Rows per statement: well under Postgres' 65,535 bind parameters for the widest row (11 columns).
const CHUNK: usize = 2_000;

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.inbound.is_empty()
            && self.enrollments.is_empty()
            && self.events.is_empty()
            && self.values.is_empty()
    }

    /// Writes everything queued, parents before children, and empties the queue.
    pub fn flush(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        let enrollments = std::mem::take(&mut self.enrollments);
        for chunk in enrollments.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|r| {
                    (
                        en::id.eq(r.id),
                        en::uid.eq(&r.uid),
                        en::tracked_entity_id.eq(r.tracked_entity_id),
                        en::program_id.eq(r.program_id),
                        en::org_unit_id.eq(r.org_unit_id),
                        en::status.eq("ACTIVE"),
                        en::enrolled_at.eq(r.enrolled_at),
                        en::occurred_at.eq(r.enrolled_at),
                        en::created.eq(r.now),
                        en::last_updated.eq(r.now),
                    )
                })
                .collect();
            diesel::insert_into(en::table).values(&rows).execute(conn)?;
            let owners: Vec<_> = chunk
                .iter()
                .map(|r| {
                    (
                        po::tracked_entity_id.eq(r.tracked_entity_id),
                        po::program_id.eq(r.program_id),
                        po::org_unit_id.eq(r.org_unit_id),
                        po::last_updated.eq(r.now),
                    )
                })
                .collect();
            diesel::insert_into(po::table)
                .values(&owners)
                .on_conflict_do_nothing()
                .execute(conn)?;
        }
        let events = std::mem::take(&mut self.events);
        for chunk in events.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|e| {
                    (
                        ev::id.eq(e.id),
                        ev::uid.eq(&e.uid),
                        ev::enrollment_id.eq(e.enrollment_id),
                        ev::program_stage_id.eq(e.stage_id),
                        ev::org_unit_id.eq(e.org_unit_id),
                        ev::tracked_entity_id.eq(e.tracked_entity_id),
                        ev::status.eq(&e.status),
                        ev::occurred_at.eq(e.occurred_at),
                        ev::completed_at.eq(e.completed_at),
                        ev::version.eq(1),
                        ev::created.eq(e.now),
                        ev::last_updated.eq(e.now),
                    )
                })
                .collect();
            diesel::insert_into(ev::table).values(&rows).execute(conn)?;
        }
        let values = std::mem::take(&mut self.values);
        for chunk in values.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|v| {
                    (
                        dv::id.eq(v.id),
                        dv::uid.eq(&v.uid),
                        dv::event_id.eq(v.event_id),
                        dv::data_element_id.eq(v.data_element_id),
                        dv::tracked_entity_id.eq(v.tracked_entity_id),
                        dv::value.eq(&v.value),
                        dv::value_num.eq(v.value_num),
                        dv::observed_at.eq(v.observed_at),
                        dv::version.eq(1),
                        dv::created.eq(v.now),
                        dv::last_updated.eq(v.now),
                    )
                })
                .collect();
            diesel::insert_into(dv::table).values(&rows).execute(conn)?;
        }
        let changes = std::mem::take(&mut self.changes);
        for chunk in changes.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|c| {
                    (
                        cl::resource_type.eq(&c.resource_type),
                        cl::resource_uid.eq(&c.uid),
                        cl::version.eq(c.version),
                        cl::operation.eq(&c.operation),
                        cl::changed_at.eq(c.at),
                        cl::actor.eq(&c.actor),
                        cl::request_id.eq(&c.request_id),
                        cl::mapping_version.eq(&c.mapping_version),
                        cl::state.eq(&c.state),
                    )
                })
                .collect();
            diesel::insert_into(cl::table).values(&rows).execute(conn)?;
        }
        let inbound = std::mem::take(&mut self.inbound);
        for chunk in inbound.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|i| {
                    (
                        il::request_id.eq(&i.request_id),
                        il::actor.eq(&i.actor),
                        il::interaction.eq(&i.interaction),
                        il::resource_type.eq(&i.resource_type),
                        il::resource_uid.eq(&i.uid),
                        il::content_type.eq(&i.content_type),
                        il::body.eq(&i.body),
                        il::mapping_version.eq(&i.mapping_version),
                    )
                })
                .collect();
            diesel::insert_into(il::table).values(&rows).execute(conn)?;
        }
        Ok(())
    }
}

/// Sequences whose ids are handed out ahead of the deferred insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Seq {
    Enrollment,
    Event,
    DataValue,
}

impl Seq {
    fn table(self) -> &'static str {
        match self {
            Seq::Enrollment => "enrollment",
            Seq::Event => "event",
            Seq::DataValue => "event_data_value",
        }
    }
}

#[derive(QueryableByName)]
struct Reserved {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Takes `n` ids from the table's sequence in one round trip (ids unused at rollback are lost, as
/// with any sequence).
pub fn reserve(conn: &mut PgConnection, seq: Seq, n: i32) -> Result<Vec<i64>, Error> {
    let rows: Vec<Reserved> = diesel::sql_query(format!(
        "SELECT nextval(pg_get_serial_sequence('{}', 'id')) AS id FROM generate_series(1, $1)",
        seq.table()
    ))
    .bind::<Integer, _>(n)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}
