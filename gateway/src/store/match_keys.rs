//! The blocking keys of `Patient/$match` (`matching::keys`) and the counts behind its
//! term-frequency weights.

use std::collections::HashMap;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable};

use super::pending::MatchKeyRow;
use super::schema::{person_match_key as mk, tracked_entity_attribute_value as teav};
use super::Scoped;
use crate::error::Error;
use crate::matching::keys::Key;

pub fn rows(person: i64, keys: Vec<Key>) -> Vec<MatchKeyRow> {
    keys.into_iter()
        .map(|k| MatchKeyRow {
            tracked_entity_id: person,
            kind: k.kind.to_owned(),
            code: k.code,
            year: k.year,
        })
        .collect()
}

/// Replaces a person's keys (after an update changed their names, birth date or phone).
pub fn replace(s: &mut Scoped, person: i64, keys: Vec<Key>) -> Result<(), Error> {
    let conn = s.conn()?;
    diesel::delete(mk::table.filter(mk::tracked_entity_id.eq(person))).execute(conn)?;
    let rows = rows(person, keys);
    if !rows.is_empty() {
        diesel::insert_into(mk::table).values(&rows).execute(conn)?;
    }
    Ok(())
}

/// The people sharing a name code within `window` years of `year` (or with no birth year, or
/// any year when the query has none), or sharing the phone; at most `max`. Scope is applied
/// when the candidates are read (`patients::by_ids`).
pub fn candidates(
    s: &mut Scoped,
    codes: &[String],
    year: Option<i32>,
    window: i32,
    phone: Option<&str>,
    max: i64,
) -> Result<Vec<i64>, Error> {
    let names = mk::kind.eq("n").and(mk::code.eq_any(codes.to_vec())).and(
        mk::year.is_null().or(sql::<Bool>("")
            .bind::<Nullable<Integer>, _>(year)
            .sql(" IS NULL")
            .or(mk::year.between(year.unwrap_or(0) - window, year.unwrap_or(0) + window))),
    );
    let phones = mk::kind
        .eq("t")
        .and(mk::code.eq(phone.unwrap_or_default().to_owned()))
        .and(sql::<Bool>("").bind::<Bool, _>(phone.is_some()));
    Ok(mk::table
        .filter(names.or(phones))
        .select(mk::tracked_entity_id)
        .distinct()
        .limit(max)
        .load(s.conn()?)?)
}

/// The people holding any of `(attribute id, value)`.
pub fn holding_any(s: &mut Scoped, pairs: &[(i64, String)]) -> Result<Vec<i64>, Error> {
    let mut out = Vec::new();
    for (attribute, value) in pairs {
        let mut ids: Vec<i64> = teav::table
            .filter(teav::attribute_id.eq(attribute))
            .filter(teav::value.eq(value))
            .select(teav::tracked_entity_id)
            .load(s.conn()?)?;
        out.append(&mut ids);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Below this many people, names get no term-frequency adjustment.
pub const TF_MIN_PEOPLE: i64 = 1000;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many people hold each of `values` (in search form) in `attribute`, and how many people
/// there are: the shares that lower the weight of agreeing on a common name.
pub fn shares(
    s: &mut Scoped,
    attribute: i64,
    values: &[String],
) -> Result<HashMap<String, f64>, Error> {
    if values.is_empty() {
        return Ok(HashMap::new());
    }
    let counts: Vec<(String, i64)> = teav::table
        .filter(teav::attribute_id.eq(attribute))
        .filter(teav::search_value.eq_any(values.to_vec()))
        .group_by(teav::search_value)
        .select((teav::search_value, diesel::dsl::count_star()))
        .load(s.conn()?)?;
    // The planner's estimate is enough for a share, and costs nothing at any size; a table too
    // small or too new to have one is counted.
    let estimate: Count = diesel::sql_query(
        "SELECT GREATEST(reltuples, 0)::int8 AS n FROM pg_class WHERE relname = 'tracked_entity'",
    )
    .get_result(s.conn()?)?;
    let people = if estimate.n >= 1000 {
        estimate.n
    } else {
        diesel::sql_query("SELECT count(*) AS n FROM tracked_entity WHERE NOT deleted")
            .get_result::<Count>(s.conn()?)?
            .n
    };
    // A share counted in a small registry says little about how common a name is.
    if people < TF_MIN_PEOPLE {
        return Ok(HashMap::new());
    }
    let people = people as f64;
    Ok(counts
        .into_iter()
        .map(|(v, n)| (v, n as f64 / people))
        .collect())
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
