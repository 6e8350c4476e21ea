//! Inserts deferred to the end of a unit of work (a request or a whole transaction Bundle) and sent
//! as a few multi-row statements instead of one round trip each.
//!
//! Queued: new people with their attribute values, blocking keys and matching decisions, the
//! change and inbound logs, enrollments with their ownership, events and data values. Their ids
//! are reserved from the sequences up front, their uids are fresh and their references were
//! checked when they were queued, so the one constraint a flush can break is a unique attribute (a
//! national ID already registered, or carried by two new people). Each queued unique value keeps
//! a [`UniqueClaim`] saying who claimed it, so that the refusal still names the entry and element
//! that carried it. (A decision's pair is unique too; an update deletes the engine's decisions
//! about its record before it queues new ones.)
//!
//! [`super::Scoped`] flushes before any other statement runs on the connection, so a query
//! never misses a row that is still queued, and before the transaction commits.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::Value;

use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::{
    change_log as cl, enrollment as en, event as ev, event_data_value as dv, inbound_log as il,
    person_link as pl, person_match_key as mk, program_ownership as po, tracked_entity as te,
    tracked_entity_attribute_value as teav,
};
use crate::error::Error;

// Field names are the column names: each struct is the row as written.

#[derive(Insertable)]
#[diesel(table_name = cl, treat_none_as_default_value = false)]
pub struct ChangeRow {
    pub resource_type: String,
    pub resource_uid: String,
    pub version: i32,
    pub operation: String,
    pub changed_at: DateTime<Utc>,
    pub actor: String,
    pub request_id: Option<String>,
    pub mapping_version: Option<String>,
    pub state: Option<Value>,
}

#[derive(Insertable)]
#[diesel(table_name = il, treat_none_as_default_value = false)]
pub struct InboundRow {
    pub request_id: Option<String>,
    pub actor: String,
    pub interaction: String,
    pub resource_type: String,
    pub resource_uid: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
    pub mapping_version: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = te, treat_none_as_default_value = false)]
pub struct PersonRow {
    pub id: i64,
    pub uid: String,
    pub tracked_entity_type_id: i64,
    pub org_unit_id: i64,
    pub inactive: bool,
    pub version: i32,
    pub created: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = teav, treat_none_as_default_value = false)]
pub struct AttributeValueRow {
    pub tracked_entity_id: i64,
    pub attribute_id: i64,
    pub value: String,
    pub search_value: String,
    pub is_unique: bool,
    pub created: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = mk, treat_none_as_default_value = false)]
pub struct MatchKeyRow {
    pub tracked_entity_id: i64,
    pub kind: String,
    pub code: String,
    pub year: Option<i32>,
    /// The person's single-valued identifiers as `system|value` (see migration 7).
    pub sv: Option<Vec<String>>,
    /// Whether the person holds a value of the primary single-valued system (migration 9).
    pub hard: Option<bool>,
}

#[derive(Insertable)]
#[diesel(table_name = pl, treat_none_as_default_value = false)]
pub struct LinkRow {
    pub source_id: i64,
    pub target_id: i64,
    pub status: String,
    pub origin: String,
    pub score: f64,
    pub grade: String,
    pub ruleset: String,
    pub explanation: Value,
    pub created: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
    pub decided_by: Option<String>,
}

/// Who queued a unique attribute value, for the message if the flush finds it taken.
pub struct UniqueClaim {
    pub attribute_id: i64,
    pub value: String,
    /// Where it came from, e.g. `Bundle.entry[3] (POST Patient)`; None outside a Bundle.
    pub entry: Option<String>,
    /// FHIRPath of the element, rooted at the entry when there is one
    /// (`Bundle.entry[3].resource.identifier[0].value`, else `Patient.identifier[0].value`).
    pub expression: String,
    /// The element as the resource names it (`Patient.identifier[0].value`).
    pub element: String,
    /// The attribute's name (`National ID`).
    pub attribute: String,
}

impl UniqueClaim {
    fn at(&self) -> String {
        match &self.entry {
            Some(entry) => format!("{entry}: {}", self.element),
            None => self.element.clone(),
        }
    }
}

/// The error for a refused unique value: naming the entries that carried it when two new people
/// in this unit of work did, else saying it belongs to someone already registered.
fn unique_refusal(claims: &[UniqueClaim], e: DieselError) -> Error {
    let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = &e else {
        return e.into();
    };
    if info.constraint_name() != Some("teav_unique_value_idx") {
        return e.into();
    }
    // Detail reads `Key (attribute_id, value)=(<id>, <value>) already exists.`
    let key = info.details().and_then(|d| {
        let inner = d.split_once("=(")?.1.rsplit_once(") already exists")?.0;
        let (id, value) = inner.split_once(", ")?;
        Some((id.trim().parse::<i64>().ok()?, value.to_owned()))
    });
    let mine: Vec<&UniqueClaim> = match &key {
        Some((id, value)) => claims
            .iter()
            .filter(|c| c.attribute_id == *id && &c.value == value)
            .collect(),
        None => Vec::new(),
    };
    match mine.as_slice() {
        [] => Error::Conflict {
            message: "a value that must be unique is already registered to another person".into(),
            expression: None,
        },
        [one] => Error::Conflict {
            message: format!(
                "{}: this {} is already registered to another person; a {} identifies one person only",
                one.at(),
                one.attribute,
                one.attribute
            ),
            expression: Some(one.expression.clone()),
        },
        [first, .., last] => Error::Conflict {
            message: format!(
                "{}: this {} is also carried by {}; a {} identifies one person only",
                last.at(),
                last.attribute,
                first.at(),
                last.attribute
            ),
            expression: Some(last.expression.clone()),
        },
    }
}

#[derive(Insertable)]
#[diesel(table_name = en, treat_none_as_default_value = false)]
pub struct EnrollmentRow {
    pub id: i64,
    pub uid: String,
    pub tracked_entity_id: i64,
    pub program_id: i64,
    pub org_unit_id: i64,
    pub status: String,
    pub enrolled_at: DateTime<Utc>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = ev, treat_none_as_default_value = false)]
pub struct EventRow {
    pub id: i64,
    pub uid: String,
    pub enrollment_id: i64,
    pub program_stage_id: i64,
    pub org_unit_id: i64,
    pub tracked_entity_id: i64,
    pub status: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub created: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

/// A data value queued for writing; [`Pending::flush`] adds its program and owner.
pub struct ValueRow {
    pub id: i64,
    pub uid: String,
    pub event_id: i64,
    pub data_element_id: i64,
    pub tracked_entity_id: i64,
    pub value: String,
    pub value_num: Option<f64>,
    pub observed_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub created: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
    /// The event's enrollment (the ownership rule reads it from the value).
    pub enrollment_id: i64,
}

/// A [`ValueRow`] as written: with its enrollment's program and owner, which the ownership rule
/// reads from the value (migration 20). `COPY` takes flat rows only, hence the fields repeated.
#[derive(Insertable)]
#[diesel(table_name = dv, treat_none_as_default_value = false)]
struct OwnedValueRow {
    id: i64,
    uid: String,
    event_id: i64,
    data_element_id: i64,
    tracked_entity_id: i64,
    value: String,
    value_num: Option<f64>,
    observed_at: Option<DateTime<Utc>>,
    version: i32,
    created: DateTime<Utc>,
    last_updated: DateTime<Utc>,
    enrollment_id: i64,
    program_id: i64,
    owner_org_unit_id: i64,
}

#[derive(Default)]
pub struct Pending {
    pub persons: Vec<PersonRow>,
    pub person_values: Vec<AttributeValueRow>,
    pub unique_claims: Vec<UniqueClaim>,
    pub match_keys: Vec<MatchKeyRow>,
    pub links: Vec<LinkRow>,
    pub changes: Vec<ChangeRow>,
    pub inbound: Vec<InboundRow>,
    pub enrollments: Vec<EnrollmentRow>,
    pub events: Vec<EventRow>,
    pub values: Vec<ValueRow>,
    /// Leaves the blocking keys queued when the rest is written: a transaction Bundle writes
    /// its records before it takes its matching locks, and its people's keys after it has read
    /// their candidates (`tracker::identity::settle`), so that no candidate read is one of its
    /// own people and the locks are held only for the matching itself.
    pub hold_match_keys: bool,
}

/// Rows per `INSERT` of ownership rows: well under Postgres' 65,535 bind parameters.
const CHUNK: usize = 2_000;

/// Writes and empties one queue ([`insert_rows`]).
macro_rules! write_rows {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let rows = std::mem::take(&mut $rows);
        insert_rows!($conn, $table, rows.as_slice())
    }};
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.persons.is_empty()
            && self.person_values.is_empty()
            && (self.hold_match_keys || self.match_keys.is_empty())
            && self.links.is_empty()
            && self.changes.is_empty()
            && self.inbound.is_empty()
            && self.enrollments.is_empty()
            && self.events.is_empty()
            && self.values.is_empty()
    }

    /// Writes everything queued, parents before children, and empties the queue.
    pub fn flush(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        write_rows!(conn, te::table, self.persons)?;
        let claims = std::mem::take(&mut self.unique_claims);
        write_rows!(conn, teav::table, self.person_values)
            .map_err(|e| unique_refusal(&claims, e))?;
        if !self.hold_match_keys {
            write_rows!(conn, mk::table, self.match_keys)?;
        }
        write_rows!(conn, pl::table, self.links)?;
        // Ownership rows go with their enrollments; an earlier enrollment may already have made the
        // person's owner row in the program, which stays (transfer is explicit).
        for chunk in self.enrollments.chunks(CHUNK) {
            let owners: Vec<_> = chunk
                .iter()
                .map(|r| {
                    (
                        po::tracked_entity_id.eq(r.tracked_entity_id),
                        po::program_id.eq(r.program_id),
                        po::org_unit_id.eq(r.org_unit_id),
                        po::last_updated.eq(r.created),
                    )
                })
                .collect();
            diesel::insert_into(po::table)
                .values(&owners)
                .on_conflict_do_nothing()
                .execute(conn)?;
        }
        write_rows!(conn, en::table, self.enrollments)?;
        write_rows!(conn, ev::table, self.events)?;
        let mut values = owners_of_values(conn, std::mem::take(&mut self.values))?;
        write_rows!(conn, dv::table, values)?;
        write_rows!(conn, cl::table, self.changes)?;
        write_rows!(conn, il::table, self.inbound)?;
        Ok(())
    }
}

/// The queued values with their program and owner, from their enrollments, in one statement
/// for the batch (after the enrollments and their owner rows are written). A value inserted
/// without them would cost a trigger call of its own (migration 20), about 17 µs a row.
fn owners_of_values(
    conn: &mut PgConnection,
    values: Vec<ValueRow>,
) -> Result<Vec<OwnedValueRow>, Error> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<i64> = values.iter().map(|v| v.enrollment_id).collect();
    wanted.sort_unstable();
    wanted.dedup();
    // Built with the query builder, so that the statement stays prepared on the connection (a
    // `sql_query` is parsed again on every write of values).
    let found: Vec<(i64, i64, i64, Option<i64>)> = en::table
        .left_join(
            po::table.on(po::tracked_entity_id
                .eq(en::tracked_entity_id)
                .and(po::program_id.eq(en::program_id))),
        )
        .filter(en::id.eq_any(&wanted))
        .select((
            en::id,
            en::program_id,
            en::org_unit_id,
            po::org_unit_id.nullable(),
        ))
        .load(conn)?;
    let by_id: std::collections::HashMap<i64, (i64, i64)> = found
        .into_iter()
        .map(|(id, program, enrolled_at, owner)| (id, (program, owner.unwrap_or(enrolled_at))))
        .collect();
    values
        .into_iter()
        .map(|row| {
            let (program_id, owner_org_unit_id) =
                *by_id.get(&row.enrollment_id).ok_or_else(|| {
                    Error::Internal(format!(
                        "a data value names enrollment {}, which is not stored",
                        row.enrollment_id
                    ))
                })?;
            Ok(OwnedValueRow {
                id: row.id,
                uid: row.uid,
                event_id: row.event_id,
                data_element_id: row.data_element_id,
                tracked_entity_id: row.tracked_entity_id,
                value: row.value,
                value_num: row.value_num,
                observed_at: row.observed_at,
                version: row.version,
                created: row.created,
                last_updated: row.last_updated,
                enrollment_id: row.enrollment_id,
                program_id,
                owner_org_unit_id,
            })
        })
        .collect()
}

/// Sequences whose ids are handed out ahead of the deferred insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Seq {
    Person,
    Enrollment,
    Event,
    DataValue,
}

impl Seq {
    fn table(self) -> &'static str {
        match self {
            Seq::Person => "tracked_entity",
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
    // Kept prepared (one text per table): parsing it cost more than running it, on every create.
    // The sequence is looked up once, not once per id: a Bundle takes hundreds, and per id the
    // catalog look-up was 3 % of Postgres' time during Bundle ingest (700 ids: 1.95 ms against
    // 0.44 ms). `OFFSET 0` keeps the planner from pulling the look-up back into every row.
    let mut sql = super::dynamic::Sql::default();
    let count = sql.bind(super::dynamic::Bind::Int(i64::from(n)));
    let rows: Vec<Reserved> = sql
        .query(format!(
            "SELECT nextval(q.seq) AS id \
             FROM (SELECT pg_get_serial_sequence('{}', 'id')::regclass AS seq OFFSET 0) q, \
             generate_series(1, {count})",
            seq.table()
        ))
        .load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}
