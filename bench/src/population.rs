//! The synthetic population, written straight into the tracker tables with set-based SQL.
//!
//! Loading 100,000 people (1,000,000 Observations) through the API would make the benchmark's set-up
//! longer than the benchmark, so the rows are generated in Postgres in the shape the gateway writes
//! them (tracked entity + attribute values with their search form, one OPD enrollment with its
//! ownership row, two OPD visits per person, five vital-sign values per visit). They carry no change
//! history: no scenario reads `_history`. `verify` then reads a sample back through the gateway so a
//! drift between this generator and the gateway's own writes fails the run instead of skewing it.
//!
//! Person `i` (from 1) is fully determined by `i`: uid `bP` + 9 digits, national ID `KD` + 10 digits,
//! so load clients pick a random `i` and know what they will find.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

/// Ids of the demo metadata the generator and the raw baseline use.
#[derive(Debug, Clone)]
pub struct Ids {
    pub person_type: i64,
    pub opd: i64,
    pub opd_visit: i64,
    pub facilities: Vec<i64>,
    pub facility_uids: Vec<String>,
    pub national_id: i64,
    pub given: i64,
    pub family: i64,
    pub sex: i64,
    pub dob: i64,
    pub phone: i64,
    pub village: i64,
    pub weight: i64,
    pub height: i64,
    pub temperature: i64,
    pub systolic: i64,
    pub diastolic: i64,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct OrgRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    uid: String,
}

fn id_of(conn: &mut PgConnection, table: &str, code: &str) -> Result<i64, String> {
    diesel::sql_query(format!("SELECT id FROM {table} WHERE code = $1"))
        .bind::<Text, _>(code)
        .get_result::<IdRow>(conn)
        .map(|r| r.id)
        .map_err(|e| format!("demo metadata: {table} {code}: {e}"))
}

impl Ids {
    pub fn load(conn: &mut PgConnection) -> Result<Ids, String> {
        let attr = |conn: &mut PgConnection, c| id_of(conn, "tracked_entity_attribute", c);
        let de = |conn: &mut PgConnection, c| id_of(conn, "data_element", c);
        let orgs: Vec<OrgRow> = diesel::sql_query(
            "SELECT id, uid FROM org_unit WHERE level = (SELECT max(level) FROM org_unit) ORDER BY id",
        )
        .load(conn)
        .map_err(|e| format!("org units: {e}"))?;
        if orgs.is_empty() {
            return Err(
                "the demo metadata has no facilities (is the gateway's metadata loaded?)".into(),
            );
        }
        Ok(Ids {
            person_type: id_of(conn, "tracked_entity_type", "PERSON")?,
            opd: id_of(conn, "program", "OPD")?,
            opd_visit: id_of(conn, "program_stage", "OPD_VISIT")?,
            facilities: orgs.iter().map(|o| o.id).collect(),
            facility_uids: orgs.into_iter().map(|o| o.uid).collect(),
            national_id: attr(conn, "NATIONAL_ID")?,
            given: attr(conn, "GIVEN_NAME")?,
            family: attr(conn, "FAMILY_NAME")?,
            sex: attr(conn, "SEX")?,
            dob: attr(conn, "DOB")?,
            phone: attr(conn, "PHONE")?,
            village: attr(conn, "VILLAGE")?,
            weight: de(conn, "WEIGHT")?,
            height: de(conn, "HEIGHT")?,
            temperature: de(conn, "TEMPERATURE")?,
            systolic: de(conn, "BP_SYSTOLIC")?,
            diastolic: de(conn, "BP_DIASTOLIC")?,
        })
    }
}

pub fn patient_uid(i: u64) -> String {
    format!("bP{i:09}")
}

pub fn national_id(i: u64) -> String {
    format!("KD{i:010}")
}

pub const GIVEN: &[&str] = &[
    "Amina", "Baraka", "Chausiku", "Daudi", "Eshe", "Faraji", "Grace", "Hamisi", "Imani", "Juma",
    "Kesi", "Lulu", "Mosi", "Neema", "Omari", "Pendo", "Rehema", "Saida", "Tumaini", "Zawadi",
];
pub const FAMILY: &[&str] = &[
    "Mwangi", "Otieno", "Kamau", "Wanjiru", "Mohamed", "Ochieng", "Njoroge", "Akinyi", "Kiprop",
    "Mutua", "Chebet", "Wambui", "Hassan", "Achieng", "Kariuki", "Nyambura", "Mollel", "Massawe",
];

fn sql_list(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    format!("ARRAY[{}]", quoted.join(","))
}

/// Number of people of the synthetic population already loaded.
pub fn count(conn: &mut PgConnection) -> Result<u64, String> {
    diesel::sql_query(
        "SELECT count(*)::int8 AS id FROM tracked_entity WHERE uid >= 'bP000000000' AND uid <= 'bP999999999'",
    )
    .get_result::<IdRow>(conn)
    .map(|r| r.id as u64)
    .map_err(|e| e.to_string())
}

/// Adds people `from..=to` with their enrollments, visits and vital signs, 5,000 per transaction.
pub fn load(conn: &mut PgConnection, ids: &Ids, from: u64, to: u64) -> Result<(), String> {
    let orgs = format!(
        "ARRAY[{}]::int8[]",
        ids.facilities
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let n_orgs = ids.facilities.len();
    let (given, family) = (sql_list(GIVEN), sql_list(FAMILY));
    let (ng, nf) = (GIVEN.len(), FAMILY.len());
    let people = format!(
        "WITH p AS (
           INSERT INTO tracked_entity (uid, tracked_entity_type_id, org_unit_id, inactive, version, created, last_updated)
           SELECT 'bP' || lpad(i::text, 9, '0'), {pt}, ({orgs})[1 + i % {n_orgs}], false, 1, now(), now()
           FROM generate_series($1::int8, $2::int8) AS i
           RETURNING id, substr(uid, 3)::int8 AS i)
         INSERT INTO tracked_entity_attribute_value
           (tracked_entity_id, attribute_id, value, search_value, is_unique, created, last_updated)
         SELECT p.id, v.attr, v.val, lower(v.val), v.uniq, now(), now()
         FROM p, LATERAL (VALUES
           ({nid}, 'KD' || lpad(p.i::text, 10, '0'), true),
           ({gv}, ({given})[1 + (p.i * 7) % {ng}], false),
           ({fm}, ({family})[1 + (p.i * 13) % {nf}], false),
           ({sx}, CASE WHEN p.i % 2 = 0 THEN 'FEMALE' ELSE 'MALE' END, false),
           ({dob}, to_char(date '1950-01-01' + ((p.i * 37) % 25000)::int, 'YYYY-MM-DD'), false),
           ({ph}, '+2557' || lpad((p.i % 100000000)::text, 8, '0'), false),
           ({vl}, 'Village ' || (p.i % 500)::text, false)
         ) AS v(attr, val, uniq)",
        pt = ids.person_type,
        nid = ids.national_id,
        gv = ids.given,
        fm = ids.family,
        sx = ids.sex,
        dob = ids.dob,
        ph = ids.phone,
        vl = ids.village,
    );
    let enrollments = format!(
        "WITH e AS (
           INSERT INTO enrollment (uid, tracked_entity_id, program_id, org_unit_id, status, enrolled_at, occurred_at, version, created, last_updated)
           SELECT 'bN' || substr(te.uid, 3), te.id, {opd}, te.org_unit_id, 'ACTIVE',
                  timestamptz '2025-01-01 08:00Z', timestamptz '2025-01-01 08:00Z', 1, now(), now()
           FROM tracked_entity te
           WHERE te.uid BETWEEN 'bP' || lpad($1::text, 9, '0') AND 'bP' || lpad($2::text, 9, '0')
           RETURNING tracked_entity_id, org_unit_id)
         INSERT INTO program_ownership (tracked_entity_id, program_id, org_unit_id, last_updated)
         SELECT tracked_entity_id, {opd}, org_unit_id, now() FROM e",
        opd = ids.opd
    );
    let events = format!(
        "INSERT INTO event (uid, enrollment_id, program_stage_id, org_unit_id, tracked_entity_id, status,
                            occurred_at, completed_at, version, created, last_updated)
         SELECT 'bE' || lpad((substr(en.uid, 3)::int8 * 2 + k)::text, 9, '0'), en.id, {stage}, en.org_unit_id,
                en.tracked_entity_id, 'COMPLETED', t, t, 1, now(), now()
         FROM enrollment en, generate_series(0, 1) AS k,
              LATERAL (SELECT timestamptz '2025-01-01 09:00Z'
                              + ((substr(en.uid, 3)::int8 % 300) || ' days')::interval
                              + (k * 30 || ' days')::interval AS t) AS w
         WHERE en.uid BETWEEN 'bN' || lpad($1::text, 9, '0') AND 'bN' || lpad($2::text, 9, '0')",
        stage = ids.opd_visit
    );
    let values = format!(
        "INSERT INTO event_data_value (uid, event_id, data_element_id, tracked_entity_id, value, value_num,
                                       observed_at, version, created, last_updated, enrollment_id,
                                       program_id, owner_org_unit_id)
         SELECT 'bO' || lpad((n * 5 + v.j)::text, 9, '0'), ev.id, v.de, ev.tracked_entity_id, v.num::text,
                v.num::float8, ev.occurred_at, 1, now(), now(), ev.enrollment_id,
                {opd}, ev.org_unit_id
         FROM event ev, LATERAL (SELECT substr(ev.uid, 3)::int8 AS n) AS x, LATERAL (VALUES
           (0, {w}, (40 + n % 60)::numeric + (n % 2) * 0.5),
           (1, {h}, (150 + n % 40)::numeric),
           (2, {t}, round(36.5 + (n % 10)::numeric / 10, 1)),
           (3, {sy}, (105 + n % 40)::numeric),
           (4, {di}, (65 + n % 25)::numeric)
         ) AS v(j, de, num)
         WHERE ev.uid BETWEEN 'bE' || lpad(($1 * 2)::text, 9, '0') AND 'bE' || lpad(($2 * 2 + 1)::text, 9, '0')",
        w = ids.weight,
        h = ids.height,
        t = ids.temperature,
        sy = ids.systolic,
        di = ids.diastolic,
        // Every event here is in its person's one OPD enrollment, owned where it was made.
        opd = ids.opd
    );
    let mut a = from;
    while a <= to {
        let b = (a + 4_999).min(to);
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            for q in [&people, &enrollments, &events, &values] {
                diesel::sql_query(q.as_str())
                    .bind::<BigInt, _>(a as i64)
                    .bind::<BigInt, _>(b as i64)
                    .execute(conn)?;
            }
            Ok(())
        })
        .map_err(|e| format!("population {a}..{b}: {e}"))?;
        a = b + 1;
    }
    diesel::sql_query("ANALYZE")
        .execute(conn)
        .map_err(|e| e.to_string())?;
    Ok(())
}
