//! The outbox tables (migration 15): rules written from the target files, items enqueued in the
//! writing transaction, claimed by workers with `FOR UPDATE SKIP LOCKED`, and the map of local
//! records to the ids targets gave them.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Int4, Nullable, Text};

use super::schema::{outbox_item as oi, outbox_remote as orm, outbox_rule as rule};
use crate::error::Error;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = rule)]
pub struct RuleRow {
    pub target: String,
    pub kind: String,
    pub org_path: Option<String>,
    pub stage_ids: Option<Vec<i64>>,
    pub skip_actors: Option<Vec<String>>,
    pub relationship_type_ids: Option<Vec<i64>>,
    pub data_element_ids: Option<Vec<i64>>,
    pub attribute_ids: Option<Vec<i64>>,
}

/// Replaces every rule (the enabled targets of the mapping set in force).
pub fn replace_rules(conn: &mut PgConnection, rows: &[RuleRow]) -> Result<(), Error> {
    conn.transaction(|c| {
        diesel::delete(rule::table).execute(c)?;
        diesel::insert_into(rule::table).values(rows).execute(c)?;
        Ok(())
    })
}

/// The kinds the rules in force push (Patient, birth…).
pub fn rule_kinds(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    Ok(rule::table.select(rule::kind).distinct().load(conn)?)
}

/// One change as the change log holds it: what `enqueue` selects from.
#[derive(Debug, Clone)]
pub struct Changed {
    pub resource_type: String,
    pub uid: String,
    pub operation: String,
    pub version: i32,
}

/// Adds the items the rules select for `changes` made by `actor` (in the caller's transaction).
pub fn enqueue(
    conn: &mut PgConnection,
    changes: &[Changed],
    actor: &str,
    only_target: Option<&str>,
) -> Result<usize, Error> {
    if changes.is_empty() {
        return Ok(0);
    }
    let types: Vec<&str> = changes.iter().map(|c| c.resource_type.as_str()).collect();
    let uids: Vec<&str> = changes.iter().map(|c| c.uid.as_str()).collect();
    let ops: Vec<&str> = changes.iter().map(|c| c.operation.as_str()).collect();
    let versions: Vec<i32> = changes.iter().map(|c| c.version).collect();
    // `kiunga_outbox_enqueue` (migration 17) joins each change to its person, org-unit path and
    // stage, then to the rules; a function, so that its plan is kept for the session.
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let r: N = diesel::sql_query("SELECT kiunga_outbox_enqueue($1, $2, $3, $4, $5, $6) AS n")
        .bind::<Array<Text>, _>(types)
        .bind::<Array<Text>, _>(uids)
        .bind::<Array<Text>, _>(ops)
        .bind::<Array<Int4>, _>(versions)
        .bind::<Nullable<Text>, _>(only_target)
        .bind::<Text, _>(actor)
        .get_result(conn)?;
    Ok(r.n as usize)
}

/// Birth and death notifications of the people a unit of work touched, once their conditions
/// hold (each part may come in its own request, in any order): a birth is a child with a mother
/// relationship, a delivery event and a birth weight; a death is a person whose death attribute
/// is set and who has a cause of death (when the rule names its data elements). Once per target
/// and person (a unique index). `kiunga_outbox_enqueue_events` is in migration 17.
pub fn enqueue_events(
    conn: &mut PgConnection,
    people: &[&str],
    actor: &str,
) -> Result<usize, Error> {
    if people.is_empty() {
        return Ok(0);
    }
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let r: N = diesel::sql_query("SELECT kiunga_outbox_enqueue_events($1, $2) AS n")
        .bind::<Array<Text>, _>(people)
        .bind::<Text, _>(actor)
        .get_result(conn)?;
    Ok(r.n as usize)
}

/// The newest change of every record changed since `since`, for `replay`.
pub fn changes_since(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<(Changed, String)>, Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        resource_type: String,
        #[diesel(sql_type = Text)]
        resource_uid: String,
        #[diesel(sql_type = Text)]
        operation: String,
        #[diesel(sql_type = Int4)]
        version: i32,
        #[diesel(sql_type = Text)]
        actor: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT DISTINCT ON (resource_type, resource_uid) resource_type, resource_uid::text,
                operation, version, actor
           FROM change_log
          WHERE changed_at >= $1 AND resource_type IN ('Patient', 'Encounter', 'Observation')
          ORDER BY resource_type, resource_uid, version DESC",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(since)
    .load(conn)?;
    let mut out: Vec<(Changed, String)> = rows
        .into_iter()
        .map(|r| {
            (
                Changed {
                    resource_type: r.resource_type,
                    uid: r.resource_uid,
                    operation: r.operation,
                    version: r.version,
                },
                r.actor,
            )
        })
        .collect();
    // Patients first, then Encounters, then Observations: the order a target needs them in.
    let rank = |t: &str| match t {
        "Patient" => 0,
        "Encounter" => 1,
        _ => 2,
    };
    out.sort_by_key(|(c, _)| rank(&c.resource_type));
    Ok(out)
}

/// An item a worker holds.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub resource_uid: String,
    #[diesel(sql_type = Text)]
    pub person_uid: String,
    #[diesel(sql_type = Text)]
    pub operation: String,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    /// An earlier attempt may have reached the target.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub uncertain: bool,
    #[diesel(sql_type = Text)]
    pub transaction_id: String,
}

/// Claims up to `n` due items of `target` for `lease_seconds`. An item waits while an earlier
/// item of the same person is unsettled (pending, dead or of unknown outcome): it must be its
/// person's first unsettled item. That test is a correlated `min()` rather than `NOT EXISTS`: the
/// planner runs it as a sub-plan probing (target, person, id) for each candidate, whereas an anti
/// join planned on stale statistics (a queue that grew fast) scanned every open item per probe
/// (21 ms against 1.5 ms per claim, measured on a 10,000-item backlog). An item whose
/// lease had expired was being delivered by a worker that died: it comes back uncertain.
pub fn claim(
    conn: &mut PgConnection,
    target: &str,
    n: i64,
    worker: &str,
    lease_seconds: f64,
) -> Result<Vec<Claimed>, Error> {
    Ok(diesel::sql_query(
        "WITH due AS (
           SELECT o.id FROM outbox_item o
            WHERE o.target = $1 AND o.status = 'pending' AND o.next_attempt_at <= now()
              AND (o.lease_until IS NULL OR o.lease_until < now())
              AND o.id = (
                SELECT min(p.id) FROM outbox_item p
                 WHERE p.target = o.target AND p.person_uid = o.person_uid
                   AND p.status IN ('pending', 'dead', 'unknown'))
            ORDER BY o.next_attempt_at, o.id
            LIMIT $2
            FOR UPDATE SKIP LOCKED)
         UPDATE outbox_item o
            SET lease_until = now() + make_interval(secs => $3), leased_by = $4,
                attempts = o.attempts + 1, last_attempt_at = now(),
                uncertain = o.uncertain OR o.lease_until IS NOT NULL
           FROM due WHERE o.id = due.id
         RETURNING o.id, o.kind, o.resource_uid::text, o.person_uid::text, o.operation,
                   o.attempts, o.uncertain, o.transaction_id",
    )
    .bind::<Text, _>(target)
    .bind::<BigInt, _>(n)
    .bind::<Double, _>(lease_seconds)
    .bind::<Text, _>(worker)
    .load(conn)?)
}

/// How an attempt ended, as stored.
pub enum Settle<'a> {
    Delivered {
        remote_id: Option<&'a str>,
    },
    /// Try again at `at`; `uncertain` when the attempt may have reached the target.
    Retry {
        at: DateTime<Utc>,
        kind: &'a str,
        message: &'a str,
        status: Option<i32>,
        uncertain: bool,
    },
    /// Dead letter (`dead`), a person must decide (`unknown`), or nothing to send (`skipped`).
    Stop {
        status_to: &'a str,
        kind: &'a str,
        message: &'a str,
        status: Option<i32>,
    },
}

/// Settles an item this worker holds. A worker whose lease ran out (another may hold the item
/// now) changes nothing: false.
pub fn settle(conn: &mut PgConnection, id: i64, worker: &str, how: Settle) -> Result<bool, Error> {
    let now = Utc::now();
    let q = diesel::update(
        oi::table
            .find(id)
            .filter(oi::leased_by.eq(worker))
            .filter(oi::status.eq("pending")),
    );
    let n = match how {
        Settle::Delivered { remote_id } => q
            .set((
                oi::status.eq("delivered"),
                oi::delivered_at.eq(now),
                oi::lease_until.eq(None::<DateTime<Utc>>),
                oi::uncertain.eq(false),
                oi::remote_id.eq(remote_id),
            ))
            .execute(conn)?,
        Settle::Retry {
            at,
            kind,
            message,
            status,
            uncertain,
        } => q
            .set((
                oi::next_attempt_at.eq(at),
                oi::lease_until.eq(None::<DateTime<Utc>>),
                oi::uncertain.eq(uncertain),
                oi::error_kind.eq(kind),
                oi::last_error.eq(message),
                oi::last_status.eq(status),
            ))
            .execute(conn)?,
        Settle::Stop {
            status_to,
            kind,
            message,
            status,
        } => q
            .set((
                oi::status.eq(status_to),
                oi::lease_until.eq(None::<DateTime<Utc>>),
                oi::error_kind.eq(kind),
                oi::last_error.eq(message),
                oi::last_status.eq(status),
            ))
            .execute(conn)?,
    };
    Ok(n == 1)
}

pub fn remote_id(
    conn: &mut PgConnection,
    target: &str,
    resource_type: &str,
    uid: &str,
) -> Result<Option<String>, Error> {
    Ok(orm::table
        .find((target, resource_type, uid))
        .select(orm::remote_id)
        .first(conn)
        .optional()?)
}

pub fn set_remote_id(
    conn: &mut PgConnection,
    target: &str,
    resource_type: &str,
    uid: &str,
    remote: &str,
) -> Result<(), Error> {
    diesel::insert_into(orm::table)
        .values((
            orm::target.eq(target),
            orm::resource_type.eq(resource_type),
            orm::resource_uid.eq(uid),
            orm::remote_id.eq(remote),
        ))
        .on_conflict((orm::target, orm::resource_type, orm::resource_uid))
        .do_update()
        .set(orm::remote_id.eq(remote))
        .execute(conn)?;
    Ok(())
}

/// Whether a remote id is already the image of another local record (a look-up must not adopt
/// it twice).
pub fn remote_taken(
    conn: &mut PgConnection,
    target: &str,
    resource_type: &str,
    remote: &str,
) -> Result<bool, Error> {
    Ok(diesel::select(diesel::dsl::exists(
        orm::table
            .filter(orm::target.eq(target))
            .filter(orm::resource_type.eq(resource_type))
            .filter(orm::remote_id.eq(remote)),
    ))
    .get_result(conn)?)
}

pub fn forget_remote(
    conn: &mut PgConnection,
    target: &str,
    resource_type: &str,
    uid: &str,
) -> Result<(), Error> {
    diesel::delete(orm::table.find((target, resource_type, uid))).execute(conn)?;
    Ok(())
}

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = oi)]
pub struct ItemRow {
    pub id: i64,
    pub target: String,
    pub kind: String,
    pub resource_uid: String,
    pub person_uid: String,
    pub operation: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub uncertain: bool,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub error_kind: Option<String>,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
    pub remote_id: Option<String>,
}

pub fn item(conn: &mut PgConnection, id: i64) -> Result<Option<ItemRow>, Error> {
    Ok(oi::table
        .find(id)
        .select(ItemRow::as_select())
        .first(conn)
        .optional()?)
}

/// Items, newest first, filtered by target and status.
pub fn items(
    conn: &mut PgConnection,
    target: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<ItemRow>, Error> {
    let mut q = oi::table.select(ItemRow::as_select()).into_boxed();
    if let Some(t) = target {
        q = q.filter(oi::target.eq(t.to_string()));
    }
    if let Some(s) = status {
        q = q.filter(oi::status.eq(s.to_string()));
    }
    Ok(q.order(oi::id.desc()).limit(limit).load(conn)?)
}

/// Counts per (target, status), and the age of each target's oldest pending item.
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct StatusRow {
    #[diesel(sql_type = Text)]
    pub target: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub items: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub oldest_seconds: Option<f64>,
}

pub fn status(conn: &mut PgConnection) -> Result<Vec<StatusRow>, Error> {
    Ok(diesel::sql_query(
        "SELECT target, status, count(*) AS items,
                extract(epoch FROM now() - min(created_at))::float8 AS oldest_seconds
           FROM outbox_item GROUP BY target, status ORDER BY target, status",
    )
    .load(conn)?)
}

/// Puts a dead, unknown or skipped item back in the queue, due now. An item of unknown outcome
/// retried by a person is sent without a look-up: they decided it did not arrive.
pub fn retry(conn: &mut PgConnection, id: i64) -> Result<bool, Error> {
    let n = diesel::update(
        oi::table
            .find(id)
            .filter(oi::status.eq_any(["dead", "unknown", "skipped"])),
    )
    .set((
        oi::status.eq("pending"),
        oi::next_attempt_at.eq(Utc::now()),
        oi::lease_until.eq(None::<DateTime<Utc>>),
        // A dead item that once timed out is still looked up first; only an `unknown` one
        // retried by a person is sent without (they decided it did not arrive).
        oi::uncertain.eq(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "CASE WHEN status = 'unknown' THEN false ELSE uncertain END",
        )),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Settles an unsettled item without sending it (a person decided), so the person's later
/// items may go.
pub fn skip(conn: &mut PgConnection, id: i64, why: &str) -> Result<bool, Error> {
    // Not while a worker is sending it: its result would still settle it.
    let n = diesel::update(
        oi::table
            .find(id)
            .filter(oi::status.eq_any(["pending", "dead", "unknown"]))
            .filter(oi::lease_until.is_null().or(oi::lease_until.lt(Utc::now()))),
    )
    .set((
        oi::status.eq("skipped"),
        oi::lease_until.eq(None::<DateTime<Utc>>),
        oi::error_kind.eq("skipped-by-operator"),
        oi::last_error.eq(why),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Pending items per target and the oldest one's age, for the metrics.
pub fn backlog(conn: &mut PgConnection) -> Result<Vec<StatusRow>, Error> {
    Ok(status(conn)?
        .into_iter()
        .filter(|r| r.status == "pending")
        .collect())
}

/// What a birth or death notification is built from: the mother (births), the newest event of
/// the given stages, and the newest value of the given data elements, by uid.
#[derive(Debug, Default)]
pub struct NotificationParts {
    pub mother: Option<String>,
    pub event: Option<String>,
    pub value: Option<String>,
}

pub fn notification_parts(
    conn: &mut PgConnection,
    person: &str,
    relationship_type: Option<i64>,
    stages: &[i64],
    elements: &[i64],
) -> Result<NotificationParts, Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Text>)]
        mother: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        event: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        value: Option<String>,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT
           (SELECT m.uid::text FROM relationship r JOIN tracked_entity m ON m.id = r.from_tracked_entity_id
             WHERE r.to_tracked_entity_id = te.id AND r.relationship_type_id = $2 AND NOT r.deleted
             ORDER BY r.id DESC LIMIT 1) AS mother,
           (SELECT e.uid::text FROM event e
             WHERE e.tracked_entity_id = te.id AND NOT e.deleted AND e.program_stage_id = ANY ($3)
             ORDER BY e.occurred_at DESC NULLS LAST, e.id DESC LIMIT 1) AS event,
           (SELECT d.uid::text FROM event_data_value d
             WHERE d.tracked_entity_id = te.id AND NOT d.deleted AND d.data_element_id = ANY ($4)
             ORDER BY d.id DESC LIMIT 1) AS value
         FROM tracked_entity te WHERE te.uid = $1",
    )
    .bind::<Text, _>(person)
    .bind::<Nullable<BigInt>, _>(relationship_type)
    .bind::<Array<BigInt>, _>(stages)
    .bind::<Array<BigInt>, _>(elements)
    .get_result(conn)
    .optional()?;
    Ok(row
        .map(|r| NotificationParts {
            mother: r.mother,
            event: r.event,
            value: r.value,
        })
        .unwrap_or_default())
}
