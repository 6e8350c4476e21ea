//! The raw baseline: the same logical reads and writes as each gateway scenario, done straight
//! against Postgres (same schema, an r2d2 pool of the gateway's size, a connection checked out per
//! operation as the gateway does per request) with no HTTP and no FHIR. It is what a hand-written
//! data-access layer over the tracker tables would cost; the gateway's figure divided by it is the
//! price of everything the gateway adds.
//!
//! What "the same logical write" means, chosen on purpose: a person is the tracked entity, its
//! attribute values and one change-log row (the version history the gateway serves through vread);
//! the gateway additionally keeps the original request (inbound log) and renders a response, which
//! the baseline does not: that is part of what the ratio measures.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{Array, BigInt, Bool, Double, Int4, Nullable, Text, Timestamptz};

use crate::gen::{Person, DAY, VITALS};
use crate::population::Ids;

pub type PgPool = Pool<ConnectionManager<PgConnection>>;

pub fn pool(url: &str, size: u32) -> Result<PgPool, String> {
    Pool::builder()
        .max_size(size)
        .build(ConnectionManager::new(url))
        .map_err(|e| format!("raw pool: {e}"))
}

fn conn(pool: &PgPool) -> Result<PooledConnection<ConnectionManager<PgConnection>>, String> {
    pool.get().map_err(|e| e.to_string())
}

// Rows are decoded in full, as a data layer would; the benchmark only counts them.
#[allow(dead_code)]
#[derive(QueryableByName, Debug)]
pub struct PersonRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub uid: String,
    #[diesel(sql_type = Int4)]
    pub version: i32,
    #[diesel(sql_type = Timestamptz)]
    pub last_updated: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = BigInt)]
    pub org_unit_id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub attribute_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub value: Option<String>,
}

#[allow(dead_code)]
#[derive(QueryableByName, Debug)]
pub struct ValueRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub uid: String,
    #[diesel(sql_type = BigInt)]
    pub data_element_id: i64,
    #[diesel(sql_type = Text)]
    pub value: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub observed_at: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = Text)]
    pub event_uid: String,
}

#[derive(QueryableByName, Debug)]
struct EventRow {
    #[diesel(sql_type = BigInt)]
    _id: i64,
    #[diesel(sql_type = Text)]
    _uid: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    _occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = Text)]
    _enrollment_uid: String,
}

#[derive(QueryableByName)]
struct Id2 {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    uid: String,
}

const PERSON_COLUMNS: &str =
    "te.id, te.uid, te.version, te.last_updated, te.org_unit_id, v.attribute_id, v.value";

/// Read Patient by id: the entity and its values in one query.
pub fn read_person(pool: &PgPool, ids: &Ids, uid: &str) -> Result<u64, String> {
    let rows: Vec<PersonRow> = diesel::sql_query(format!(
        "SELECT {PERSON_COLUMNS} FROM tracked_entity te
         LEFT JOIN tracked_entity_attribute_value v ON v.tracked_entity_id = te.id
         WHERE te.uid = $1 AND te.tracked_entity_type_id = $2 AND NOT te.deleted"
    ))
    .bind::<Text, _>(uid)
    .bind::<BigInt, _>(ids.person_type)
    .load(&mut conn(pool)?)
    .map_err(|e| e.to_string())?;
    expect_found(rows.len(), uid)
}

/// Search Patient by national ID.
pub fn search_identifier(pool: &PgPool, ids: &Ids, nid: &str) -> Result<u64, String> {
    let rows: Vec<PersonRow> = diesel::sql_query(format!(
        "SELECT {PERSON_COLUMNS} FROM tracked_entity te
         LEFT JOIN tracked_entity_attribute_value v ON v.tracked_entity_id = te.id
         WHERE te.id IN (SELECT tracked_entity_id FROM tracked_entity_attribute_value
                         WHERE attribute_id = $1 AND search_value = lower($2))
           AND NOT te.deleted"
    ))
    .bind::<BigInt, _>(ids.national_id)
    .bind::<Text, _>(nid)
    .load(&mut conn(pool)?)
    .map_err(|e| e.to_string())?;
    expect_found(rows.len(), nid)
}

/// Search Observation by patient and code.
pub fn search_observations(
    pool: &PgPool,
    data_element: i64,
    patient_uid: &str,
) -> Result<u64, String> {
    let rows: Vec<ValueRow> = diesel::sql_query(
        "SELECT dv.id, dv.uid, dv.data_element_id, dv.value, dv.observed_at, ev.uid AS event_uid
         FROM event_data_value dv
         JOIN event ev ON ev.id = dv.event_id
         WHERE dv.tracked_entity_id = (SELECT id FROM tracked_entity WHERE uid = $1 AND NOT deleted)
           AND dv.data_element_id = $2 AND NOT dv.deleted
         ORDER BY dv.observed_at DESC",
    )
    .bind::<Text, _>(patient_uid)
    .bind::<BigInt, _>(data_element)
    .load(&mut conn(pool)?)
    .map_err(|e| e.to_string())?;
    expect_found(rows.len(), patient_uid)
}

/// `$everything`: the person, the enrollments, the events and every data value.
pub fn everything(pool: &PgPool, ids: &Ids, uid: &str) -> Result<u64, String> {
    let mut c = conn(pool)?;
    let person: Vec<PersonRow> = diesel::sql_query(format!(
        "SELECT {PERSON_COLUMNS} FROM tracked_entity te
         LEFT JOIN tracked_entity_attribute_value v ON v.tracked_entity_id = te.id
         WHERE te.uid = $1 AND te.tracked_entity_type_id = $2 AND NOT te.deleted"
    ))
    .bind::<Text, _>(uid)
    .bind::<BigInt, _>(ids.person_type)
    .load(&mut c)
    .map_err(|e| e.to_string())?;
    let Some(te) = person.first().map(|p| p.id) else {
        return Err(format!("raw: {uid} not found"));
    };
    let events: Vec<EventRow> = diesel::sql_query(
        "SELECT ev.id AS _id, ev.uid AS _uid, ev.occurred_at AS _occurred_at, en.uid AS _enrollment_uid
         FROM event ev JOIN enrollment en ON en.id = ev.enrollment_id
         WHERE ev.tracked_entity_id = $1 AND NOT ev.deleted ORDER BY ev.occurred_at",
    )
    .bind::<BigInt, _>(te)
    .load(&mut c)
    .map_err(|e| e.to_string())?;
    let values: Vec<ValueRow> = diesel::sql_query(
        "SELECT dv.id, dv.uid, dv.data_element_id, dv.value, dv.observed_at, ev.uid AS event_uid
         FROM event_data_value dv JOIN event ev ON ev.id = dv.event_id
         WHERE dv.tracked_entity_id = $1 AND NOT dv.deleted",
    )
    .bind::<BigInt, _>(te)
    .load(&mut c)
    .map_err(|e| e.to_string())?;
    Ok(1 + events.len() as u64 + values.len() as u64)
}

fn expect_found(n: usize, what: &str) -> Result<u64, String> {
    if n == 0 {
        Err(format!("raw: nothing found for {what}"))
    } else {
        Ok(1)
    }
}

struct Attrs {
    te_index: Vec<i32>,
    attribute: Vec<i64>,
    value: Vec<String>,
    unique: Vec<bool>,
}

fn attrs(ids: &Ids, people: &[Person]) -> Attrs {
    let mut a = Attrs {
        te_index: vec![],
        attribute: vec![],
        value: vec![],
        unique: vec![],
    };
    for (k, p) in people.iter().enumerate() {
        let sex = if p.female { "FEMALE" } else { "MALE" };
        for (attr, val, uniq) in [
            (ids.national_id, p.national_id.as_str(), true),
            (ids.given, p.given, false),
            (ids.family, p.family, false),
            (ids.sex, sex, false),
            (ids.dob, p.birth_date.as_str(), false),
            (ids.phone, p.phone.as_str(), false),
            (ids.village, p.village.as_str(), false),
        ] {
            a.te_index.push(k as i32);
            a.attribute.push(attr);
            a.value.push(val.to_string());
            a.unique.push(uniq);
        }
    }
    a
}

/// A random uid of DHIS2's shape (a letter, then 10 letters or digits), as the gateway makes them.
fn new_uid(prefix: char) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..10)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

fn ids_by_uid(rows: Vec<Id2>, uids: &[String]) -> Result<Vec<i64>, diesel::result::Error> {
    let map: std::collections::HashMap<String, i64> =
        rows.into_iter().map(|r| (r.uid, r.id)).collect();
    uids.iter()
        .map(|u| map.get(u).copied().ok_or(diesel::result::Error::NotFound))
        .collect()
}

/// Writes `people` (and, with `visits`, one enrollment, one visit and five vital signs each) in one
/// transaction with set-based statements: the fastest a hand-written layer could do it.
/// Returns the number of resources written (Patient, Encounter and Observations).
pub fn write(
    pool: &PgPool,
    ids: &Ids,
    people: &[Person],
    visits: bool,
    prefix: char,
) -> Result<u64, String> {
    let mut c = conn(pool)?;
    c.transaction::<_, diesel::result::Error, _>(|c| {
        let te_uids: Vec<String> = (0..people.len())
            .map(|_| new_uid(prefix))
            .collect();
        let te_orgs: Vec<i64> = people.iter().map(|p| ids.facilities[p.facility]).collect();
        let created: Vec<Id2> = diesel::sql_query(
            "INSERT INTO tracked_entity (uid, tracked_entity_type_id, org_unit_id, inactive, version, created, last_updated)
             SELECT u, $3, o, false, 1, now(), now() FROM unnest($1::text[], $2::int8[]) AS x(u, o)
             RETURNING id, uid",
        )
        .bind::<Array<Text>, _>(&te_uids)
        .bind::<Array<BigInt>, _>(&te_orgs)
        .bind::<BigInt, _>(ids.person_type)
        .load(c)?;
        let te_ids = ids_by_uid(created, &te_uids)?;
        let a = attrs(ids, people);
        let a_te: Vec<i64> = a.te_index.iter().map(|k| te_ids[*k as usize]).collect();
        diesel::sql_query(
            "INSERT INTO tracked_entity_attribute_value
               (tracked_entity_id, attribute_id, value, search_value, is_unique, created, last_updated)
             SELECT t, a, v, lower(v), u, now(), now() FROM unnest($1::int8[], $2::int8[], $3::text[], $4::bool[]) AS x(t, a, v, u)",
        )
        .bind::<Array<BigInt>, _>(&a_te)
        .bind::<Array<BigInt>, _>(&a.attribute)
        .bind::<Array<Text>, _>(&a.value)
        .bind::<Array<Bool>, _>(&a.unique)
        .execute(c)?;
        let mut log_types = vec!["Patient".to_string(); people.len()];
        let mut log_uids = te_uids.clone();
        if visits {
            let en_uids: Vec<String> = te_uids.iter().map(|u| format!("n{}", &u[1..])).collect();
            let ens: Vec<Id2> = diesel::sql_query(
                "WITH e AS (
                   INSERT INTO enrollment (uid, tracked_entity_id, program_id, org_unit_id, status, enrolled_at, occurred_at, version, created, last_updated)
                   SELECT u, t, $3, o, 'ACTIVE', now(), now(), 1, now(), now() FROM unnest($1::text[], $2::int8[], $4::int8[]) AS x(u, t, o)
                   RETURNING id, uid, tracked_entity_id, org_unit_id),
                 w AS (INSERT INTO program_ownership (tracked_entity_id, program_id, org_unit_id, last_updated)
                       SELECT tracked_entity_id, $3, org_unit_id, now() FROM e)
                 SELECT id, uid FROM e",
            )
            .bind::<Array<Text>, _>(&en_uids)
            .bind::<Array<BigInt>, _>(&te_ids)
            .bind::<BigInt, _>(ids.opd)
            .bind::<Array<BigInt>, _>(&te_orgs)
            .load(c)?;
            let en_ids = ids_by_uid(ens, &en_uids)?;
            let ev_uids: Vec<String> = te_uids.iter().map(|u| format!("v{}", &u[1..])).collect();
            let at = format!("{DAY}T09:00:00Z");
            let evs: Vec<Id2> = diesel::sql_query(
                "INSERT INTO event (uid, enrollment_id, program_stage_id, org_unit_id, tracked_entity_id, status, occurred_at, completed_at, version, created, last_updated)
                 SELECT u, e, $4, o, t, 'COMPLETED', $6::timestamptz, $6::timestamptz, 1, now(), now()
                 FROM unnest($1::text[], $2::int8[], $3::int8[], $5::int8[]) AS x(u, e, t, o)
                 RETURNING id, uid",
            )
            .bind::<Array<Text>, _>(&ev_uids)
            .bind::<Array<BigInt>, _>(&en_ids)
            .bind::<Array<BigInt>, _>(&te_ids)
            .bind::<BigInt, _>(ids.opd_visit)
            .bind::<Array<BigInt>, _>(&te_orgs)
            .bind::<Text, _>(&at)
            .load(c)?;
            let ev_ids = ids_by_uid(evs, &ev_uids)?;
            let des = [ids.weight, ids.height, ids.temperature, ids.systolic, ids.diastolic];
            let (mut dv_uid, mut dv_ev, mut dv_te, mut dv_de, mut dv_val, mut dv_num) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            let (mut dv_en, mut dv_owner) = (vec![], vec![]);
            for (k, (ev_id, ev_uid)) in ev_ids.iter().zip(&ev_uids).enumerate() {
                for (i, (_, _, value, _)) in VITALS.iter().enumerate() {
                    dv_uid.push(format!("o{}{i}", &ev_uid[1..10]));
                    dv_ev.push(*ev_id);
                    dv_en.push(en_ids[k]);
                    // The enrollment is new and owned where it was made (its owner row above).
                    dv_owner.push(te_orgs[k]);
                    dv_te.push(te_ids[k]);
                    dv_de.push(des[i]);
                    dv_val.push(value.to_string());
                    dv_num.push(*value);
                }
            }
            diesel::sql_query(
                "INSERT INTO event_data_value (uid, event_id, data_element_id, tracked_entity_id, value, value_num, observed_at, version, created, last_updated, enrollment_id, program_id, owner_org_unit_id)
                 SELECT u, e, d, t, v, n, $7::timestamptz, 1, now(), now(), en, $9, ow
                 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::text[], $6::float8[], $8::int8[], $10::int8[]) AS x(u, e, t, d, v, n, en, ow)",
            )
            .bind::<Array<Text>, _>(&dv_uid)
            .bind::<Array<BigInt>, _>(&dv_ev)
            .bind::<Array<BigInt>, _>(&dv_te)
            .bind::<Array<BigInt>, _>(&dv_de)
            .bind::<Array<Text>, _>(&dv_val)
            .bind::<Array<Double>, _>(&dv_num)
            .bind::<Text, _>(&at)
            .bind::<Array<BigInt>, _>(&dv_en)
            .bind::<BigInt, _>(ids.opd)
            .bind::<Array<BigInt>, _>(&dv_owner)
            .execute(c)?;
            log_types.extend(std::iter::repeat_n("EpisodeOfCare".to_string(), en_uids.len()));
            log_uids.extend(en_uids);
            log_types.extend(std::iter::repeat_n("Encounter".to_string(), ev_uids.len()));
            log_uids.extend(ev_uids);
            log_types.extend(std::iter::repeat_n("Observation".to_string(), dv_uid.len()));
            log_uids.extend(dv_uid);
        }
        diesel::sql_query(
            "INSERT INTO change_log (resource_type, resource_uid, version, operation, changed_at, actor, state)
             SELECT t, u, 1, 'create', now(), 'bench', jsonb_build_object('uid', u) FROM unnest($1::text[], $2::text[]) AS x(t, u)",
        )
        .bind::<Array<Text>, _>(&log_types)
        .bind::<Array<Text>, _>(&log_uids)
        .execute(c)?;
        Ok(())
    })
    .map_err(|e| format!("raw write: {e}"))?;
    Ok(if visits {
        people.len() as u64 * (2 + VITALS.len() as u64)
    } else {
        people.len() as u64
    })
}
