//! The blocking keys of `Patient/$match` (`matching::keys`) and the counts behind its
//! term-frequency weights.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::pending::MatchKeyRow;
use super::schema::{person_match_key as mk, tracked_entity_attribute_value as teav};
use super::Scoped;
use crate::error::Error;
use crate::matching::keys::Key;

/// The rows of a person's keys; `sv` are their single-valued identifiers (`system|value`), `hard`
/// whether one of them is of the primary system (`Demographics::holds_primary`).
pub fn rows(person: i64, keys: Vec<Key>, sv: &[String], hard: bool) -> Vec<MatchKeyRow> {
    let sv = (!sv.is_empty()).then(|| sv.to_vec());
    keys.into_iter()
        .map(|k| MatchKeyRow {
            tracked_entity_id: person,
            kind: k.kind.to_owned(),
            code: k.code,
            year: k.year,
            sv: sv.clone(),
            hard: Some(hard),
        })
        .collect()
}

/// Replaces a person's keys (after an update changed their names, birth date or phone).
pub fn replace(
    s: &mut Scoped,
    person: i64,
    keys: Vec<Key>,
    sv: &[String],
    hard: bool,
) -> Result<(), Error> {
    let conn = s.conn()?;
    diesel::delete(mk::table.filter(mk::tracked_entity_id.eq(person))).execute(conn)?;
    let rows = rows(person, keys, sv, hard);
    if !rows.is_empty() {
        diesel::insert_into(mk::table).values(&rows).execute(conn)?;
    }
    Ok(())
}

/// Below this many people, names get no term-frequency adjustment.
pub const TF_MIN_PEOPLE: i64 = 1000;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Shares counted recently, per (attribute, value): counting a common name reads thousands of
/// index entries, and how common a name is changes slowly.
struct ShareCache {
    at: Instant,
    shares: HashMap<(i64, String), f64>,
}

static SHARES: Mutex<Option<ShareCache>> = Mutex::new(None);
/// How long counted shares are reused.
const SHARE_TTL: Duration = Duration::from_secs(600);
/// The cache starts again when it holds this many names.
const SHARE_CACHE_MAX: usize = 100_000;

/// A count of people made recently, kept for [`SHARE_TTL`] like the shares it divides.
static PEOPLE: Mutex<Option<(Instant, i64)>> = Mutex::new(None);

/// How many people the registry holds, for term frequencies. The planner's estimate is enough
/// for a share, and costs nothing at any size; a table too small or too new to have one (never
/// analysed since a bulk load) is counted, and the count kept for a while: counting 100,000
/// people took 10 ms, which every `$match` paid until autovacuum analysed the table.
pub fn people(conn: &mut diesel::PgConnection) -> Result<i64, Error> {
    let estimate: Count = diesel::sql_query(
        "SELECT GREATEST(reltuples, 0)::int8 AS n FROM pg_class WHERE relname = 'tracked_entity'",
    )
    .get_result(conn)?;
    if estimate.n >= TF_MIN_PEOPLE {
        return Ok(estimate.n);
    }
    if let Some((at, n)) = *PEOPLE.lock().unwrap_or_else(|p| p.into_inner()) {
        if at.elapsed() < SHARE_TTL && n >= TF_MIN_PEOPLE {
            return Ok(n);
        }
    }
    let n = diesel::sql_query("SELECT count(*) AS n FROM tracked_entity WHERE NOT deleted")
        .get_result::<Count>(conn)?
        .n;
    *PEOPLE.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), n));
    Ok(n)
}

/// How common each of `values` (in search form) is in `attribute`: the share of the registry's
/// `people` holding it. Empty below [`TF_MIN_PEOPLE`] people, where a count says little.
pub fn shares(
    conn: &mut diesel::PgConnection,
    people: i64,
    attribute: i64,
    values: &[String],
) -> Result<HashMap<String, f64>, Error> {
    if values.is_empty() || people < TF_MIN_PEOPLE {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    let mut missing = Vec::new();
    {
        let mut cache = SHARES.lock().unwrap_or_else(|p| p.into_inner());
        if cache
            .as_ref()
            .is_none_or(|c| c.at.elapsed() > SHARE_TTL || c.shares.len() > SHARE_CACHE_MAX)
        {
            *cache = Some(ShareCache {
                at: Instant::now(),
                shares: HashMap::new(),
            });
        }
        if let Some(c) = cache.as_ref() {
            for v in values {
                match c.shares.get(&(attribute, v.clone())) {
                    Some(share) => {
                        out.insert(v.clone(), *share);
                    }
                    None => missing.push(v.clone()),
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let counts: Vec<(String, i64)> = teav::table
        .filter(teav::attribute_id.eq(attribute))
        .filter(teav::search_value.eq_any(&missing))
        .group_by(teav::search_value)
        .select((teav::search_value, diesel::dsl::count_star()))
        .load(conn)?;
    let counted: HashMap<String, f64> = counts
        .into_iter()
        .map(|(v, n)| (v, n as f64 / people as f64))
        .collect();
    let mut cache = SHARES.lock().unwrap_or_else(|p| p.into_inner());
    for v in missing {
        let share = counted.get(&v).copied().unwrap_or(0.0);
        if let Some(c) = cache.as_mut() {
            c.shares.insert((attribute, v.clone()), share);
        }
        out.insert(v, share);
    }
    Ok(out)
}

/// Up to `limit` live people with an id above `after`, in id order (for a rebuild in batches).
pub fn people_after(s: &mut Scoped, after: i64, limit: i64) -> Result<Vec<i64>, Error> {
    use super::schema::tracked_entity as te;
    Ok(te::table
        .filter(te::id.gt(after))
        .filter(te::deleted.eq(false))
        .order(te::id)
        .select(te::id)
        .limit(limit)
        .load(s.conn()?)?)
}

/// Drops the keys of `people`, before they are written again.
pub fn forget(s: &mut Scoped, people: &[i64]) -> Result<(), Error> {
    diesel::delete(mk::table.filter(mk::tracked_entity_id.eq_any(people.to_vec())))
        .execute(s.conn()?)?;
    Ok(())
}
