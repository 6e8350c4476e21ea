//! Search for Patient, Encounter, Observation, RelatedPerson and EpisodeOfCare: every parameter becomes SQL on indexed tracker
//! columns (never a filter in Rust), the caller's scope included; then the page's records are
//! loaded, rendered, and `_include` / `_revinclude` added once each.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use serde_json::{json, Value};

use crate::error::Error;
use crate::fhir::bundle::{self, SearchEntry};
use crate::fhir::search::{paging, query_with_offset, Param};
use crate::store::dynamic::{Bind, Sql};
use crate::store::events;
use crate::store::page::Vouched;
use crate::store::patients as person_store;
use crate::store::{RuleOn, Scoped};
use crate::tracker::Env;
use crate::translate::{self, reference_id};

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// The size of a whole result, counted apart (a page past its end, `_summary=count`).
#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn bad(message: impl Into<String>) -> Error {
    Error::invalid(message)
}

fn split(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// FHIR search prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Sa,
    Eb,
    Ap,
}

pub(crate) fn prefix(v: &str) -> (Prefix, &str) {
    let p = match v.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("lt") => Prefix::Lt,
        Some("gt") => Prefix::Gt,
        Some("le") => Prefix::Le,
        Some("ge") => Prefix::Ge,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, v),
    };
    (p, &v[2..])
}

/// The instant range [lo, hi) a date search value denotes (`2026`, `2026-03`, `2026-03-02`, or a
/// dateTime down to the second).
pub(crate) fn date_range(v: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let day = |y: i32, m: u32, d: u32| {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    };
    match v.len() {
        4 => {
            let y: i32 = v.parse().ok()?;
            Some((day(y, 1, 1)?, day(y + 1, 1, 1)?))
        }
        7 => {
            let y: i32 = v[..4].parse().ok()?;
            let m: u32 = v[5..].parse().ok()?;
            let lo = day(y, m, 1)?;
            let hi = if m == 12 {
                day(y + 1, 1, 1)?
            } else {
                day(y, m + 1, 1)?
            };
            Some((lo, hi))
        }
        10 => {
            let d = NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?;
            let lo = day(d.year(), d.month(), d.day())?;
            Some((lo, lo + Duration::days(1)))
        }
        _ => {
            let t = DateTime::parse_from_rfc3339(v).ok()?.with_timezone(&Utc);
            Some((t, t + Duration::seconds(1)))
        }
    }
}

/// `ap`: the range widened by 10% of its distance from now (at least a day).
fn widen((lo, hi): (DateTime<Utc>, DateTime<Utc>)) -> (DateTime<Utc>, DateTime<Utc>) {
    let gap = (Utc::now() - lo).num_seconds().abs() / 10;
    let pad = Duration::seconds(gap.max(86_400));
    (lo - pad, hi + pad)
}

/// A date condition on a timestamp column (a point in time).
fn instant_condition(sql: &mut Sql, column: &str, raw: &str, name: &str) -> Result<String, Error> {
    let (p, v) = prefix(raw);
    let range = date_range(v).ok_or_else(|| bad(format!("{name}: `{raw}` is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime, with an optional prefix eq, ne, lt, gt, le, ge, sa, eb, ap)")))?;
    let (lo, hi) = if p == Prefix::Ap { widen(range) } else { range };
    let (l, h) = (sql.bind(Bind::Time(lo)), sql.bind(Bind::Time(hi)));
    Ok(match p {
        Prefix::Eq | Prefix::Ap => format!("({column} >= {l} AND {column} < {h})"),
        Prefix::Ne => format!("NOT ({column} >= {l} AND {column} < {h})"),
        Prefix::Lt | Prefix::Eb => format!("{column} < {l}"),
        Prefix::Gt | Prefix::Sa => format!("{column} >= {h}"),
        Prefix::Le => format!("{column} < {h}"),
        Prefix::Ge => format!("{column} >= {l}"),
    })
}

/// The shape of a (partial) date value, exactly as the partial index `teav_date_idx` states it
/// (migration 4): a query must carry the same predicate for the planner to use that index.
const DATE_SHAPE: &str = r"^\d{4}(-\d{2}(-\d{2})?)?$";

/// A date condition on a text column holding a (possibly partial) date: a range against a range.
fn partial_date_condition(
    sql: &mut Sql,
    column: &str,
    raw: &str,
    name: &str,
) -> Result<String, Error> {
    let (p, v) = prefix(raw);
    let range = date_range(v).ok_or_else(|| bad(format!("{name}: `{raw}` is not a date (YYYY, YYYY-MM or YYYY-MM-DD, with an optional prefix eq, ne, lt, gt, le, ge, sa, eb, ap)")))?;
    let (lo, hi) = if p == Prefix::Ap { widen(range) } else { range };
    let (l, h) = (
        sql.bind(Bind::Date(lo.date_naive())),
        sql.bind(Bind::Date(hi.date_naive())),
    );
    let (vlo, vhi) = (
        format!("kiunga_date_lo({column})"),
        format!("kiunga_date_hi({column})"),
    );
    Ok(match p {
        Prefix::Eq => format!("({vlo} >= {l} AND {vhi} <= {h})"),
        Prefix::Ne => format!("NOT ({vlo} >= {l} AND {vhi} <= {h})"),
        Prefix::Ap => format!("({vlo} < {h} AND {vhi} > {l})"),
        Prefix::Gt => format!("{vhi} > {h}"),
        Prefix::Lt => format!("{vlo} < {l}"),
        Prefix::Ge => format!("{vhi} > {l}"),
        Prefix::Le => format!("{vlo} < {h}"),
        Prefix::Sa => format!("{vlo} >= {h}"),
        Prefix::Eb => format!("{vhi} <= {l}"),
    })
}

/// Significant-figure range of a number as written (`72.5` → [72.45, 72.55)).
fn number_range(v: &str) -> Option<(f64, f64)> {
    let n: f64 = v.parse().ok()?;
    let decimals = v.split_once('.').map(|(_, d)| d.len() as i32).unwrap_or(0);
    let half = 0.5 * 10f64.powi(-decimals);
    Some((n - half, n + half))
}

fn number_condition(sql: &mut Sql, column: &str, raw: &str, name: &str) -> Result<String, Error> {
    let (p, v) = prefix(raw);
    let n: f64 = v.parse().map_err(|_| {
        bad(format!(
            "{name}: `{raw}` is not a number with an optional prefix"
        ))
    })?;
    let (lo, hi) = number_range(v).unwrap_or((n, n));
    Ok(match p {
        Prefix::Eq => format!(
            "({column} >= {} AND {column} < {})",
            sql.bind(Bind::Num(lo)),
            sql.bind(Bind::Num(hi))
        ),
        Prefix::Ne => format!(
            "NOT ({column} >= {} AND {column} < {})",
            sql.bind(Bind::Num(lo)),
            sql.bind(Bind::Num(hi))
        ),
        Prefix::Ap => format!(
            "({column} >= {} AND {column} <= {})",
            sql.bind(Bind::Num(n - n.abs() * 0.1)),
            sql.bind(Bind::Num(n + n.abs() * 0.1))
        ),
        Prefix::Lt | Prefix::Eb => format!("{column} < {}", sql.bind(Bind::Num(n))),
        Prefix::Gt | Prefix::Sa => format!("{column} > {}", sql.bind(Bind::Num(n))),
        Prefix::Le => format!("{column} <= {}", sql.bind(Bind::Num(n))),
        Prefix::Ge => format!("{column} >= {}", sql.bind(Bind::Num(n))),
    })
}

/// String search on an attribute's folded value: prefix by default, `:exact`, `:contains`.
fn attr_string(
    sql: &mut Sql,
    attribute_ids: &[i64],
    value: &str,
    modifier: Option<&str>,
    name: &str,
) -> Result<String, Error> {
    let attrs = sql.bind(Bind::Ints(attribute_ids.to_vec()));
    let cond = match modifier {
        None => format!(
            "v.search_value LIKE {}",
            sql.bind(Bind::Text(format!(
                "{}%",
                like(&crate::tracker::search_form(value))
            )))
        ),
        Some("contains") => format!(
            "v.search_value LIKE {}",
            sql.bind(Bind::Text(format!(
                "%{}%",
                like(&crate::tracker::search_form(value))
            )))
        ),
        Some("exact") => format!("v.value = {}", sql.bind(Bind::Text(value.to_string()))),
        Some(m) => {
            return Err(bad(format!(
                "{name}:{m} is not supported (use {name}, {name}:exact or {name}:contains)"
            )))
        }
    };
    Ok(format!("EXISTS (SELECT 1 FROM tracked_entity_attribute_value v WHERE v.tracked_entity_id = te.id AND v.attribute_id = ANY({attrs}) AND {cond})"))
}

fn like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn any_of(parts: Vec<String>) -> String {
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

/// The id in a reference parameter value (`abc`, `Patient/abc`, or an absolute URL).
fn ref_id<'v>(v: &'v str, resource_type: &str) -> &'v str {
    reference_id(v, resource_type).unwrap_or(v)
}

/// Common parameters that every search takes (handled outside the per-type clauses).
const COMMON: &[&str] = &[
    "_count",
    "_offset",
    "_sort",
    "_summary",
    "_elements",
    "_include",
    "_revinclude",
    "_format",
    "_pretty",
    "_total",
];

struct Plan {
    from: &'static str,
    id_column: &'static str,
    conditions: Vec<String>,
    order: Vec<String>,
    /// For program data, what the caller's ownership rule is evaluated over (the row's
    /// enrollment, or a data value's own columns): the store adds it ([`Scoped::search_where`]).
    rule: Option<RuleOn<'static>>,
}

fn scope_condition(s: &Scoped, sql: &mut Sql) -> Option<String> {
    person_condition(s, sql, "te")
}

/// The person `te` is in the caller's search scope (None: the whole tree).
fn person_condition(s: &Scoped, sql: &mut Sql, te: &str) -> Option<String> {
    let (roots, patterns) = s.ctx.search.sql_filter()?;
    if let Some(ids) = s.search_ids() {
        let i = sql.bind(Bind::Ints(ids.to_vec()));
        return Some(crate::store::person_in_ids_sql(te, &i));
    }
    let r = sql.bind(Bind::Texts(roots));
    let p = sql.bind(Bind::Texts(patterns));
    Some(crate::store::person_in_scope_sql(te, &r, &p))
}

fn patient_plan(
    s: &Scoped,
    env: &Env,
    params: &[Param],
    lenient: bool,
    sql: &mut Sql,
) -> Result<Plan, Error> {
    let m = &env.mappings.patient;
    let mut c = vec![
        "NOT te.deleted".to_string(),
        // A merged record is found through its survivor only.
        "te.merged_into_id IS NULL".to_string(),
        format!(
            "te.tracked_entity_type_id = {}",
            sql.bind(Bind::Int(m.entity_type_id))
        ),
    ];
    c.extend(scope_condition(s, sql));
    let names: Vec<i64> = m.family.into_iter().chain(m.given).collect();
    for p in params {
        let values = split(&p.value);
        let modifier = p.modifier.as_deref();
        if modifier.is_some()
            && !matches!(
                p.name.as_str(),
                "name"
                    | "family"
                    | "given"
                    | "address"
                    | "address-city"
                    | "address-state"
                    | "address-postalcode"
                    | "address-country"
            )
            && !COMMON.contains(&p.name.as_str())
        {
            if lenient {
                continue;
            }
            return Err(unsupported_modifier(&p.name, modifier));
        }
        let cond = match p.name.as_str() {
            n if COMMON.contains(&n) => continue,
            "_id" => format!("te.uid = ANY({})", sql.bind(Bind::Texts(values.iter().map(|v| v.to_string()).collect()))),
            "_lastUpdated" => any_of(values.iter().map(|v| instant_condition(sql, "te.last_updated", v, "_lastUpdated")).collect::<Result<_, _>>()?),
            "name" => any_of(values.iter().map(|v| attr_string(sql, &names, v, modifier, "name")).collect::<Result<_, _>>()?),
            "family" => any_of(values.iter().map(|v| attr_string(sql, &m.family.into_iter().collect::<Vec<_>>(), v, modifier, "family")).collect::<Result<_, _>>()?),
            "given" => any_of(values.iter().map(|v| attr_string(sql, &m.given.into_iter().collect::<Vec<_>>(), v, modifier, "given")).collect::<Result<_, _>>()?),
            // PDQm's address parameters: any mapped address part, or the one named.
            a if a == "address" || a.starts_with("address-") => {
                let part = match a {
                    "address" => None,
                    "address-city" => Some("city"),
                    "address-state" => Some("state"),
                    "address-postalcode" => Some("postalCode"),
                    "address-country" => Some("country"),
                    _ if lenient => continue,
                    other => return Err(unknown_param("Patient", other, "address, address-city, address-state, address-postalcode, address-country")),
                };
                let attrs: Vec<i64> = m.address.iter().filter(|f| part.is_none_or(|p| p == f.json)).map(|f| f.attribute_id).collect();
                if attrs.is_empty() {
                    return Err(bad(format!("{a}: mappings/patient.toml maps no {} of Patient.address, so nobody can be found by it", part.unwrap_or("part"))));
                }
                any_of(values.iter().map(|v| attr_string(sql, &attrs, v, modifier, a)).collect::<Result<_, _>>()?)
            }
            "identifier" => {
                let mut parts = Vec::new();
                for v in &values {
                    let (system, value) = match v.split_once('|') {
                        Some((s, val)) => (Some(s), val),
                        None => (None, *v),
                    };
                    // `|value` asks for identifiers without a system, which the registry never holds.
                    let attrs: Vec<i64> = m.identifiers.iter().filter(|i| system.is_none_or(|s| s == i.system)).map(|i| i.attribute_id).collect();
                    if attrs.is_empty() {
                        parts.push("false".to_string());
                        continue;
                    }
                    let a = sql.bind(Bind::Ints(attrs));
                    parts.push(if value.is_empty() {
                        format!("EXISTS (SELECT 1 FROM tracked_entity_attribute_value v WHERE v.tracked_entity_id = te.id AND v.attribute_id = ANY({a}))")
                    } else {
                        let val = sql.bind(Bind::Text(value.to_string()));
                        format!("te.id IN (SELECT v.tracked_entity_id FROM tracked_entity_attribute_value v WHERE v.attribute_id = ANY({a}) AND v.value = {val})")
                    });
                }
                any_of(parts)
            }
            "birthdate" => {
                let attr = m.birth_date.ok_or_else(|| bad("birthdate is not mapped in mappings/patient.toml"))?;
                let a = sql.bind(Bind::Int(attr));
                let conds = values.iter().map(|v| partial_date_condition(sql, "v.value", v, "birthdate")).collect::<Result<Vec<_>, _>>()?;
                format!("EXISTS (SELECT 1 FROM tracked_entity_attribute_value v WHERE v.tracked_entity_id = te.id AND v.attribute_id = {a} AND v.value ~ '{DATE_SHAPE}' AND {})", any_of(conds))
            }
            "gender" => {
                let g = m.gender.as_ref().ok_or_else(|| bad("gender is not mapped in mappings/patient.toml"))?;
                let options: Vec<String> = values.iter().filter_map(|v| g.codes.iter().find(|(f, _)| f == v).map(|(_, o)| o.clone())).collect();
                let a = sql.bind(Bind::Int(g.attribute_id));
                let o = sql.bind(Bind::Texts(options));
                format!("EXISTS (SELECT 1 FROM tracked_entity_attribute_value v WHERE v.tracked_entity_id = te.id AND v.attribute_id = {a} AND v.value = ANY({o}))")
            }
            "phone" | "telecom" => {
                let attrs: Vec<i64> = m.telecom.iter().filter(|t| p.name == "telecom" || t.system == "phone").map(|t| t.attribute_id).collect();
                let a = sql.bind(Bind::Ints(attrs));
                let digits: Vec<String> = values.iter().map(|v| v.rsplit('|').next().unwrap_or(v).chars().filter(char::is_ascii_digit).collect()).collect();
                // Phone numbers compare by their digits; a telecom value without digits (an
                // e-mail address) compares whole, ignoring case.
                let (numbers, others): (Vec<_>, Vec<_>) = values.iter().zip(digits).partition(|(_, d)| !d.is_empty());
                if p.name == "phone" {
                    if let Some((v, _)) = others.first() {
                        return Err(bad(format!("phone: `{v}` has no digits; phone numbers are compared by their digits")));
                    }
                }
                let mut any = Vec::new();
                if !numbers.is_empty() {
                    let d = sql.bind(Bind::Texts(numbers.into_iter().map(|(_, d)| d).collect()));
                    any.push(format!("(v.value ~ '\\d' AND regexp_replace(v.value, '\\D', '', 'g') = ANY({d}))"));
                }
                if !others.is_empty() {
                    let o = sql.bind(Bind::Texts(others.into_iter().map(|(v, _)| v.rsplit('|').next().unwrap_or(v).to_lowercase()).collect()));
                    any.push(format!("lower(v.value) = ANY({o})"));
                }
                format!("EXISTS (SELECT 1 FROM tracked_entity_attribute_value v WHERE v.tracked_entity_id = te.id AND v.attribute_id = ANY({a}) AND {})", any_of(any))
            }
            "organization" => {
                let uids: Vec<String> = values.iter().map(|v| ref_id(v, "Organization").to_string()).collect();
                format!("te.org_unit_id IN (SELECT id FROM org_unit WHERE uid = ANY({0}) OR code = ANY({0}))", sql.bind(Bind::Texts(uids)))
            }
            "active" => format!("te.inactive = {}", sql.bind(Bind::Flag(p.value != "true"))),
            other if lenient => {
                let _ = other;
                continue;
            }
            other => return Err(unknown_param("Patient", other, "_id, identifier, name, family, given, birthdate, gender, organization, phone, telecom, address, address-city, address-state, address-postalcode, address-country, active, _lastUpdated")),
        };
        c.push(cond);
    }
    let attr = |a: Option<i64>, col: &str| {
        a.map(|a| format!("(SELECT {col} FROM tracked_entity_attribute_value v WHERE v.tracked_entity_id = te.id AND v.attribute_id = {a})"))
    };
    let keys: Vec<(&str, String)> = [
        ("family", attr(m.family, "v.search_value")),
        ("name", attr(m.family, "v.search_value")),
        ("given", attr(m.given, "v.search_value")),
        ("birthdate", attr(m.birth_date, "kiunga_date_lo(v.value)")),
        ("_lastUpdated", Some("te.last_updated".into())),
        ("_id", Some("te.uid".into())),
    ]
    .into_iter()
    .filter_map(|(k, e)| Some((k, e?)))
    .collect();
    let order = order_by(params, lenient, "Patient", &keys, "te.id")?;
    Ok(Plan {
        from: "tracked_entity te",
        rule: None,
        id_column: "te.id",
        conditions: c,
        order,
    })
}

fn unsupported_modifier(name: &str, modifier: Option<&str>) -> Error {
    bad(format!("{name}:{} is not supported (modifiers are supported on name, family and given: :exact, :contains)", modifier.unwrap_or_default()))
}

fn unknown_param(t: &str, name: &str, known: &str) -> Error {
    bad(format!("unknown search parameter `{name}` for {t} (supported: {known}); send `Prefer: handling=lenient` to have unknown parameters ignored"))
}

/// `ORDER BY` terms for `_sort`, from the type's sortable keys (name → SQL), ending with the
/// id column so that paging is stable. An unknown key is a 400 unless lenient.
fn order_by(
    params: &[Param],
    lenient: bool,
    t: &str,
    keys: &[(&str, String)],
    tiebreak: &str,
) -> Result<Vec<String>, Error> {
    let mut order = Vec::new();
    for (desc, k) in sort_keys(params) {
        match keys.iter().find(|(name, _)| *name == k) {
            Some((_, e)) => order.push(format!(
                "{e} {} NULLS LAST",
                if desc { "DESC" } else { "ASC" }
            )),
            None if lenient => {}
            None => {
                let known: Vec<&str> = keys.iter().map(|(n, _)| *n).collect();
                return Err(bad(format!(
                    "cannot sort {t} by `{k}` ({})",
                    known.join(", ")
                )));
            }
        }
    }
    order.push(tiebreak.to_string());
    Ok(order)
}

fn sort_keys(params: &[Param]) -> Vec<(bool, String)> {
    params
        .iter()
        .filter(|p| p.name == "_sort")
        .flat_map(|p| {
            split(&p.value)
                .into_iter()
                .map(|k| match k.strip_prefix('-') {
                    Some(k) => (true, k.to_string()),
                    None => (false, k.to_string()),
                })
        })
        .collect()
}

fn encounter_plan(
    env: &Env,
    params: &[Param],
    lenient: bool,
    sql: &mut Sql,
) -> Result<Plan, Error> {
    let map = &env.mappings.encounter;
    let mut c = vec!["NOT e.deleted".to_string(), "NOT te.deleted".to_string()];
    for p in params {
        let values = split(&p.value);
        if p.modifier.is_some() && !COMMON.contains(&p.name.as_str()) {
            if lenient {
                continue;
            }
            return Err(unsupported_modifier(&p.name, p.modifier.as_deref()));
        }
        let cond = match p.name.as_str() {
            n if COMMON.contains(&n) => continue,
            "_id" => format!("e.uid = ANY({})", sql.bind(Bind::Texts(values.iter().map(|v| v.to_string()).collect()))),
            "_lastUpdated" => any_of(values.iter().map(|v| instant_condition(sql, "e.last_updated", v, "_lastUpdated")).collect::<Result<_, _>>()?),
            "patient" | "subject" => format!("te.uid = ANY({})", sql.bind(Bind::Texts(values.iter().map(|v| ref_id(v, "Patient").to_string()).collect()))),
            "date" => any_of(values.iter().map(|v| instant_condition(sql, "e.occurred_at", v, "date")).collect::<Result<_, _>>()?),
            "status" => {
                let statuses: Vec<String> = values.iter().filter_map(|v| map.event_status(v).map(str::to_string)).collect();
                format!("e.status = ANY({})", sql.bind(Bind::Texts(statuses)))
            }
            "type" | "class" => {
                let mut stages = Vec::new();
                for v in &values {
                    let (system, code) = v.split_once('|').map(|(s, c)| (Some(s), c)).unwrap_or((None, v));
                    let list = if p.name == "type" { &map.types } else { &map.classes };
                    stages.extend(list.iter().filter(|t| t.coding.code == code && system.is_none_or(|s| s.is_empty() || s == t.coding.system)).map(|t| t.stage_id));
                    if p.name == "class" && code == map.class.code && system.is_none_or(|s| s.is_empty() || s == map.class.system) {
                        stages.extend(env.md.stages.iter().map(|s| s.id));
                    }
                }
                format!("e.program_stage_id = ANY({})", sql.bind(Bind::Ints(stages)))
            }
            "service-provider" => {
                let uids: Vec<String> = values.iter().map(|v| ref_id(v, "Organization").to_string()).collect();
                format!("e.org_unit_id IN (SELECT id FROM org_unit WHERE uid = ANY({0}) OR code = ANY({0}))", sql.bind(Bind::Texts(uids)))
            }
            "episode-of-care" => format!("e.enrollment_id IN (SELECT id FROM enrollment WHERE uid = ANY({}))", sql.bind(Bind::Texts(values.iter().map(|v| ref_id(v, "EpisodeOfCare").to_string()).collect()))),
            _ if lenient => continue,
            other => return Err(unknown_param("Encounter", other, "_id, patient, subject, date, status, type, class, service-provider, episode-of-care, _lastUpdated")),
        };
        c.push(cond);
    }
    let keys = [
        ("date", "e.occurred_at".to_string()),
        ("_lastUpdated", "e.last_updated".into()),
        ("_id", "e.uid".into()),
        ("status", "e.status".into()),
    ];
    let order = order_by(params, lenient, "Encounter", &keys, "e.id")?;
    Ok(Plan {
        from: "event e JOIN tracked_entity te ON te.id = e.tracked_entity_id",
        rule: Some(RuleOn::Enrollment("e.enrollment_id")),
        id_column: "e.id",
        conditions: c,
        order,
    })
}

fn observation_plan(
    env: &Env,
    params: &[Param],
    lenient: bool,
    sql: &mut Sql,
) -> Result<Plan, Error> {
    let map = &env.mappings.observation;
    let mut c = vec!["NOT d.deleted".to_string(), "NOT te.deleted".to_string()];
    for p in params {
        let values = split(&p.value);
        if p.modifier.is_some() && !COMMON.contains(&p.name.as_str()) {
            if lenient {
                continue;
            }
            return Err(unsupported_modifier(&p.name, p.modifier.as_deref()));
        }
        let cond = match p.name.as_str() {
            n if COMMON.contains(&n) => continue,
            "_id" => format!("d.uid = ANY({})", sql.bind(Bind::Texts(values.iter().map(|v| v.to_string()).collect()))),
            "_lastUpdated" => any_of(values.iter().map(|v| instant_condition(sql, "d.last_updated", v, "_lastUpdated")).collect::<Result<_, _>>()?),
            "patient" | "subject" => format!("te.uid = ANY({})", sql.bind(Bind::Texts(values.iter().map(|v| ref_id(v, "Patient").to_string()).collect()))),
            "encounter" => format!("d.event_id IN (SELECT id FROM event WHERE uid = ANY({}))", sql.bind(Bind::Texts(values.iter().map(|v| ref_id(v, "Encounter").to_string()).collect()))),
            "date" => any_of(values.iter().map(|v| instant_condition(sql, "d.observed_at", v, "date")).collect::<Result<_, _>>()?),
            "code" => {
                let mut des = Vec::new();
                for v in &values {
                    let (system, code) = v.split_once('|').map(|(s, c)| (Some(s), c)).unwrap_or((None, v));
                    des.extend(map.codes.iter().filter(|m| (code.is_empty() || m.coding.code == code) && system.is_none_or(|s| s.is_empty() || s == m.coding.system)).map(|m| m.data_element_id));
                }
                format!("d.data_element_id = ANY({})", sql.bind(Bind::Ints(des)))
            }
            "category" => {
                let des: Vec<i64> = map
                    .codes
                    .iter()
                    .filter(|m| values.iter().any(|v| m.category.as_deref() == Some(v.rsplit('|').next().unwrap_or(v))))
                    .map(|m| m.data_element_id)
                    .collect();
                format!("d.data_element_id = ANY({})", sql.bind(Bind::Ints(des)))
            }
            "value-quantity" => {
                let mut parts = Vec::new();
                for v in &values {
                    let mut pieces = v.splitn(3, '|');
                    let number = pieces.next().unwrap_or_default();
                    let unit = pieces.nth(1).filter(|u| !u.is_empty());
                    match unit {
                        None => parts.push(number_condition(sql, "d.value_num", number, "value-quantity")?),
                        Some(unit) => {
                            // Compare in each data element's own unit.
                            let (p, n) = prefix(number);
                            let n: f64 = n.parse().map_err(|_| bad(format!("value-quantity: `{v}` is not prefix+number|system|unit")))?;
                            for de in env.md.data_elements.iter().filter(|d| d.value_type.is_numeric()) {
                                let Some(to) = &de.unit else { continue };
                                if let Ok(converted) = translate::units::convert(n, unit, to) {
                                    let raw = format!("{}{}", prefix_text(p), crate::tracker::value_type::format_number(converted));
                                    let cond = number_condition(sql, "d.value_num", &raw, "value-quantity")?;
                                    parts.push(format!("(d.data_element_id = {} AND {cond})", sql.bind(Bind::Int(de.id))));
                                }
                            }
                            if parts.is_empty() {
                                parts.push("false".into());
                            }
                        }
                    }
                }
                any_of(parts)
            }
            _ if lenient => continue,
            other => return Err(unknown_param("Observation", other, "_id, patient, subject, encounter, code, category, date, value-quantity, _lastUpdated")),
        };
        c.push(cond);
    }
    let keys = [
        ("date", "d.observed_at".to_string()),
        ("value-quantity", "d.value_num".into()),
        ("_lastUpdated", "d.last_updated".into()),
        ("_id", "d.uid".into()),
    ];
    let order = order_by(params, lenient, "Observation", &keys, "d.id")?;
    Ok(Plan {
        from: "event_data_value d JOIN tracked_entity te ON te.id = d.tracked_entity_id",
        rule: Some(RuleOn::Value("d")),
        id_column: "d.id",
        conditions: c,
        order,
    })
}

/// The related end of a relationship `r` (the RelatedPerson herself).
const RELATED_END: &str =
    "(CASE WHEN r.related_is_from THEN r.from_tracked_entity_id ELSE r.to_tracked_entity_id END)";

fn related_person_plan(
    s: &Scoped,
    env: &Env,
    params: &[Param],
    lenient: bool,
    sql: &mut Sql,
) -> Result<Plan, Error> {
    let mut c = vec!["NOT r.deleted".to_string(), "NOT te.deleted".to_string()];
    c.extend(scope_condition(s, sql));
    if let Some(other) = person_condition(s, sql, "o") {
        c.push(format!(
            "EXISTS (SELECT 1 FROM tracked_entity o WHERE o.id = {RELATED_END} AND {other})"
        ));
    }
    for p in params {
        let values = split(&p.value);
        if p.modifier.is_some() && !COMMON.contains(&p.name.as_str()) {
            if lenient {
                continue;
            }
            return Err(unsupported_modifier(&p.name, p.modifier.as_deref()));
        }
        let cond = match p.name.as_str() {
            n if COMMON.contains(&n) => continue,
            "_id" => format!(
                "r.uid = ANY({})",
                sql.bind(Bind::Texts(values.iter().map(|v| v.to_string()).collect()))
            ),
            "_lastUpdated" => any_of(
                values
                    .iter()
                    .map(|v| instant_condition(sql, "r.last_updated", v, "_lastUpdated"))
                    .collect::<Result<_, _>>()?,
            ),
            "patient" => {
                let people = sql.bind(Bind::Texts(
                    values
                        .iter()
                        .map(|v| ref_id(v, "Patient").to_string())
                        .collect(),
                ));
                format!("((r.related_is_from AND r.to_tracked_entity_id IN (SELECT id FROM tracked_entity WHERE uid = ANY({people}))) OR (NOT r.related_is_from AND r.from_tracked_entity_id IN (SELECT id FROM tracked_entity WHERE uid = ANY({people}))))")
            }
            "identifier" => {
                let mut parts = Vec::new();
                for v in &values {
                    let (system, value) = match v.split_once('|') {
                        Some((s, val)) => (Some(s), val),
                        None => (None, *v),
                    };
                    let attrs: Vec<i64> = env
                        .mappings
                        .patient
                        .identifiers
                        .iter()
                        .filter(|i| system.is_none_or(|s| s == i.system))
                        .map(|i| i.attribute_id)
                        .collect();
                    if attrs.is_empty() || value.is_empty() {
                        parts.push("false".to_string());
                        continue;
                    }
                    let a = sql.bind(Bind::Ints(attrs));
                    let val = sql.bind(Bind::Text(value.to_string()));
                    parts.push(format!("{RELATED_END} IN (SELECT v.tracked_entity_id FROM tracked_entity_attribute_value v WHERE v.attribute_id = ANY({a}) AND v.value = {val})"));
                }
                any_of(parts)
            }
            "relationship" => {
                let mut parts = Vec::new();
                for v in &values {
                    let (system, code) = v
                        .split_once('|')
                        .map(|(s, c)| (Some(s), c))
                        .unwrap_or((None, v));
                    let code = sql.bind(Bind::Text(code.to_string()));
                    parts.push(match system.filter(|s| !s.is_empty()) {
                        Some(system) => format!(
                            "(r.role_code = {code} AND r.role_system = {})",
                            sql.bind(Bind::Text(system.to_string()))
                        ),
                        None => format!("r.role_code = {code}"),
                    });
                }
                any_of(parts)
            }
            _ if lenient => continue,
            other => {
                return Err(unknown_param(
                    "RelatedPerson",
                    other,
                    "_id, patient, identifier, relationship, _lastUpdated",
                ))
            }
        };
        c.push(cond);
    }
    let keys = [
        ("_lastUpdated", "r.last_updated".to_string()),
        ("_id", "r.uid".into()),
    ];
    let order = order_by(params, lenient, "RelatedPerson", &keys, "r.id")?;
    Ok(Plan {
        from: "relationship r JOIN tracked_entity te ON te.id = (CASE WHEN r.related_is_from THEN r.to_tracked_entity_id ELSE r.from_tracked_entity_id END)",
        rule: None,
        id_column: "r.id",
        conditions: c,
        order,
    })
}

fn episode_plan(env: &Env, params: &[Param], lenient: bool, sql: &mut Sql) -> Result<Plan, Error> {
    let mut c = vec!["NOT en.deleted".to_string(), "NOT te.deleted".to_string()];
    for p in params {
        let values = split(&p.value);
        if p.modifier.is_some() && !COMMON.contains(&p.name.as_str()) {
            if lenient {
                continue;
            }
            return Err(unsupported_modifier(&p.name, p.modifier.as_deref()));
        }
        let cond = match p.name.as_str() {
            n if COMMON.contains(&n) => continue,
            "_id" => format!(
                "en.uid = ANY({})",
                sql.bind(Bind::Texts(values.iter().map(|v| v.to_string()).collect()))
            ),
            "_lastUpdated" => any_of(
                values
                    .iter()
                    .map(|v| instant_condition(sql, "en.last_updated", v, "_lastUpdated"))
                    .collect::<Result<_, _>>()?,
            ),
            "patient" => format!(
                "te.uid = ANY({})",
                sql.bind(Bind::Texts(
                    values
                        .iter()
                        .map(|v| ref_id(v, "Patient").to_string())
                        .collect()
                ))
            ),
            "status" => {
                let mut statuses = Vec::new();
                for v in &values {
                    match translate::episode::enrollment_status(v) {
                        Some(st) => statuses.push(st.to_string()),
                        None if lenient => {}
                        None => return Err(bad(format!("status: `{v}` is not an EpisodeOfCare status kept here (active, finished, cancelled)"))),
                    }
                }
                format!("en.status = ANY({})", sql.bind(Bind::Texts(statuses)))
            }
            "type" => {
                let mut programs = Vec::new();
                for v in &values {
                    let (system, code) = v
                        .split_once('|')
                        .map(|(s, c)| (Some(s), c))
                        .unwrap_or((None, v));
                    for pr in &env.md.programs {
                        if let Some(coding) = env.mappings.care.type_of_program(env.md, pr.id) {
                            if coding.code == code
                                && system.is_none_or(|s| s.is_empty() || s == coding.system)
                            {
                                programs.push(pr.id);
                            }
                        }
                    }
                }
                format!("en.program_id = ANY({})", sql.bind(Bind::Ints(programs)))
            }
            "organization" => {
                let uids: Vec<String> = values
                    .iter()
                    .map(|v| ref_id(v, "Organization").to_string())
                    .collect();
                format!("COALESCE(po.org_unit_id, en.org_unit_id) IN (SELECT id FROM org_unit WHERE uid = ANY({0}) OR code = ANY({0}))", sql.bind(Bind::Texts(uids)))
            }
            "date" => any_of(
                values
                    .iter()
                    .map(|v| instant_condition(sql, "en.enrolled_at", v, "date"))
                    .collect::<Result<_, _>>()?,
            ),
            _ if lenient => continue,
            other => {
                return Err(unknown_param(
                    "EpisodeOfCare",
                    other,
                    "_id, patient, status, type, organization, date, _lastUpdated",
                ))
            }
        };
        c.push(cond);
    }
    let keys = [
        ("date", "en.enrolled_at".to_string()),
        ("_lastUpdated", "en.last_updated".into()),
        ("_id", "en.uid".into()),
        ("status", "en.status".into()),
    ];
    let order = order_by(params, lenient, "EpisodeOfCare", &keys, "en.id")?;
    Ok(Plan {
        from: "enrollment en JOIN tracked_entity te ON te.id = en.tracked_entity_id LEFT JOIN program_ownership po ON po.tracked_entity_id = en.tracked_entity_id AND po.program_id = en.program_id",
        rule: Some(RuleOn::Enrollment("en.id")),
        id_column: "en.id",
        conditions: c,
        order,
    })
}

fn prefix_text(p: Prefix) -> &'static str {
    match p {
        Prefix::Eq => "eq",
        Prefix::Ne => "ne",
        Prefix::Lt => "lt",
        Prefix::Gt => "gt",
        Prefix::Le => "le",
        Prefix::Ge => "ge",
        Prefix::Sa => "sa",
        Prefix::Eb => "eb",
        Prefix::Ap => "ap",
    }
}

/// Loads and renders records of one type by id, in the order given (scope applied again).
/// Which records to render: ids the store checks against the caller's scope as it reads them, or
/// a page the store found under that scope.
pub enum Ids<'a> {
    Check(&'a [i64]),
    Vouched(&'a Vouched),
}

pub fn render_by_ids(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    which: Ids,
) -> Result<Vec<(i64, Value)>, Error> {
    let ids = match which {
        Ids::Check(ids) => ids,
        Ids::Vouched(v) => v.ids(),
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (md, m) = (env.md, env.mappings);
    let mut out: Vec<(i64, Value)> = match resource_type {
        "Patient" => person_store::by_ids(s, ids)?
            .into_iter()
            .map(|r| (r.id, translate::patient::to_fhir(&r, &m.patient, md)))
            .collect(),
        "Encounter" => match which {
            Ids::Vouched(v) => events::events_vouched(s, v)?,
            Ids::Check(_) => events::events_by_ids(s, ids)?,
        }
        .into_iter()
        .map(|r| (r.id, translate::encounter::to_fhir(&r, m, md)))
        .collect(),
        "RelatedPerson" => {
            let records = crate::store::relationships::by_ids(s, ids)?;
            let rendered = super::care::render_related(s, env, &records)?;
            records.iter().map(|r| r.id).zip(rendered).collect()
        }
        "EpisodeOfCare" => match which {
            Ids::Vouched(v) => crate::store::enrollments::vouched(s, v)?,
            Ids::Check(_) => crate::store::enrollments::by_ids(s, ids)?,
        }
        .into_iter()
        .map(|e| (e.id, super::care::render_episode(env, &e)))
        .collect(),
        _ => match which {
            Ids::Vouched(v) => events::values_vouched(s, v)?,
            Ids::Check(_) => events::values_by_ids(s, ids)?,
        }
        .into_iter()
        .map(|r| (r.id, translate::observation::to_fhir(&r, m, md)))
        .collect(),
    };
    out.sort_by_key(|(id, _)| ids.iter().position(|x| x == id));
    super::decorate(s, out.iter_mut().map(|(_, r)| r))?;
    Ok(out)
}

/// `_include` values per searched type, and `_revinclude` values per searched type.
pub const INCLUDES: &[(&str, &str)] = &[
    ("Observation", "Observation:subject"),
    ("Observation", "Observation:patient"),
    ("Observation", "Observation:encounter"),
    ("Encounter", "Encounter:subject"),
    ("Encounter", "Encounter:patient"),
    ("Encounter", "Encounter:episode-of-care"),
    ("RelatedPerson", "RelatedPerson:patient"),
    ("EpisodeOfCare", "EpisodeOfCare:patient"),
];
pub const REVINCLUDES: &[(&str, &str)] = &[
    ("Patient", "Observation:subject"),
    ("Patient", "Observation:patient"),
    ("Patient", "Encounter:subject"),
    ("Patient", "Encounter:patient"),
    ("Encounter", "Observation:encounter"),
    ("Patient", "RelatedPerson:patient"),
    ("Patient", "EpisodeOfCare:patient"),
    ("EpisodeOfCare", "Encounter:episode-of-care"),
];

/// The ids to add for `_include` / `_revinclude`, by resource type.
fn included(
    s: &mut Scoped,
    t: &str,
    params: &[Param],
    lenient: bool,
    matched: &[i64],
) -> Result<Vec<(&'static str, Vec<i64>)>, Error> {
    let mut out = Vec::new();
    if matched.is_empty() {
        return Ok(out);
    }
    let list = matched.to_vec();
    for p in params
        .iter()
        .filter(|p| p.name == "_include" || p.name == "_revinclude")
    {
        let rev = p.name == "_revinclude";
        let (ty, sql_text): (&'static str, &str) = match (t, rev, p.value.as_str()) {
            ("Observation", false, "Observation:subject" | "Observation:patient") => ("Patient", "SELECT DISTINCT tracked_entity_id AS id FROM event_data_value WHERE id = ANY($1)"),
            ("Observation", false, "Observation:encounter") => ("Encounter", "SELECT DISTINCT event_id AS id FROM event_data_value WHERE id = ANY($1)"),
            ("Encounter", false, "Encounter:subject" | "Encounter:patient") => ("Patient", "SELECT DISTINCT tracked_entity_id AS id FROM event WHERE id = ANY($1)"),
            ("Patient", true, "Observation:subject" | "Observation:patient") => ("Observation", "SELECT id FROM event_data_value WHERE tracked_entity_id = ANY($1) AND NOT deleted ORDER BY id"),
            ("Patient", true, "Encounter:subject" | "Encounter:patient") => ("Encounter", "SELECT id FROM event WHERE tracked_entity_id = ANY($1) AND NOT deleted ORDER BY id"),
            ("Encounter", true, "Observation:encounter") => ("Observation", "SELECT id FROM event_data_value WHERE event_id = ANY($1) AND NOT deleted ORDER BY id"),
            ("Encounter", false, "Encounter:episode-of-care") => ("EpisodeOfCare", "SELECT DISTINCT enrollment_id AS id FROM event WHERE id = ANY($1)"),
            ("RelatedPerson", false, "RelatedPerson:patient") => ("Patient", "SELECT DISTINCT CASE WHEN related_is_from THEN to_tracked_entity_id ELSE from_tracked_entity_id END AS id FROM relationship WHERE id = ANY($1)"),
            ("EpisodeOfCare", false, "EpisodeOfCare:patient") => ("Patient", "SELECT DISTINCT tracked_entity_id AS id FROM enrollment WHERE id = ANY($1)"),
            ("Patient", true, "RelatedPerson:patient") => ("RelatedPerson", "SELECT id FROM relationship WHERE NOT deleted AND ((related_is_from AND to_tracked_entity_id = ANY($1)) OR (NOT related_is_from AND from_tracked_entity_id = ANY($1))) ORDER BY id"),
            ("Patient", true, "EpisodeOfCare:patient") => ("EpisodeOfCare", "SELECT id FROM enrollment WHERE tracked_entity_id = ANY($1) AND NOT deleted ORDER BY id"),
            ("EpisodeOfCare", true, "Encounter:episode-of-care") => ("Encounter", "SELECT id FROM event WHERE enrollment_id = ANY($1) AND NOT deleted ORDER BY id"),
            _ if lenient => continue,
            (_, _, v) => return Err(bad(format!("{} `{v}` is not supported on {t} searches", p.name))),
        };
        let rows: Vec<IdRow> = diesel::sql_query(sql_text)
            .bind::<Array<BigInt>, _>(list.clone())
            .load(s.conn()?)?;
        out.push((ty, rows.into_iter().map(|r| r.id).collect()));
    }
    Ok(out)
}

/// `_elements`: keep the named top-level elements (plus the mandatory ones) and mark the subset.
fn subset(mut v: Value, elements: &[String]) -> Value {
    if let Value::Object(map) = &mut v {
        map.retain(|k, _| {
            matches!(k.as_str(), "resourceType" | "id" | "meta") || elements.iter().any(|e| e == k)
        });
        let tag = json!({ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED" });
        if let Some(meta) = map.get_mut("meta").and_then(Value::as_object_mut) {
            match meta.get_mut("tag").and_then(Value::as_array_mut) {
                Some(tags) => tags.push(tag),
                None => {
                    meta.insert("tag".into(), json!([tag]));
                }
            }
        }
    }
    v
}

pub fn search(
    s: &mut Scoped,
    env: &Env,
    t: &str,
    params: &[Param],
    lenient: bool,
    base: &str,
) -> Result<Value, Error> {
    let (count, offset) = paging(params)?;
    let mut sql = Sql::default();
    let plan = match t {
        "Patient" => patient_plan(s, env, params, lenient, &mut sql)?,
        "Encounter" => encounter_plan(env, params, lenient, &mut sql)?,
        "Observation" => observation_plan(env, params, lenient, &mut sql)?,
        "RelatedPerson" => related_person_plan(s, env, params, lenient, &mut sql)?,
        "EpisodeOfCare" => episode_plan(env, params, lenient, &mut sql)?,
        _ => return Err(Error::MethodNotAllowed(format!("{t} cannot be searched"))),
    };
    let summary = params
        .iter()
        .find(|p| p.name == "_summary")
        .map(|p| p.value.as_str());
    match summary {
        None | Some("false") | Some("count") => {}
        Some(other) if !lenient => {
            return Err(bad(format!(
                "_summary={other} is not supported (count, false)"
            )))
        }
        _ => {}
    }
    let wh = s.search_where(&mut sql, &plan.conditions, plan.rule)?;
    let count_sql = sql.clone();
    let count_all = |s: &mut Scoped| -> Result<i64, Error> {
        Ok(count_sql
            .query(format!(
                "SELECT count(*)::bigint AS n FROM {} WHERE {}",
                plan.from,
                wh.text()
            ))
            .get_result::<CountRow>(s.conn()?)?
            .n)
    };
    let self_link = format!("{base}/{t}?{}", query_with_offset(params, offset));
    if summary == Some("count") {
        return Ok(bundle::searchset(
            base,
            Vec::new(),
            Some(count_all(s)?),
            vec![("self", self_link)],
        ));
    }
    // The page and the total in one round trip; only a page past the end needs its own count.
    let (page, first_total) = s.page(
        sql,
        plan.from,
        &wh,
        plan.id_column,
        &plan.order,
        count,
        offset,
    )?;
    let total = match first_total {
        Some(n) => n,
        None if offset == 0 && count > 0 => 0,
        None => count_all(s)?,
    };
    let page_ids: Vec<i64> = page.ids().to_vec();

    let elements: Option<Vec<String>> = params
        .iter()
        .find(|p| p.name == "_elements")
        .map(|p| split(&p.value).into_iter().map(str::to_string).collect());
    let mut entries: Vec<SearchEntry> = render_by_ids(s, env, t, Ids::Vouched(&page))?
        .into_iter()
        .map(|(_, r)| SearchEntry {
            resource: match &elements {
                Some(e) => subset(r, e),
                None => r,
            },
            mode: "match",
        })
        .collect();
    let mut seen: HashSet<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                t.to_string(),
                e.resource["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (ty, inc_ids) in included(s, t, params, lenient, &page_ids)? {
        // Types the access token may not read are not included (nor read at all).
        if !s.ctx.may_read(ty) {
            continue;
        }
        for (_, r) in render_by_ids(s, env, ty, Ids::Check(&inc_ids))? {
            let key = (
                ty.to_string(),
                r["id"].as_str().unwrap_or_default().to_string(),
            );
            if seen.insert(key) {
                entries.push(SearchEntry {
                    resource: r,
                    mode: "include",
                });
            }
        }
    }

    let mut links = vec![("self", self_link)];
    links.extend(crate::fhir::search::paging_links(
        &format!("{base}/{t}"),
        params,
        offset,
        count,
        total,
    ));
    Ok(bundle::searchset(base, entries, Some(total), links))
}

/// The records a conditional interaction's query matches (ids as FHIR ids), at most `limit`.
pub fn matching_ids(
    s: &mut Scoped,
    env: &Env,
    t: &str,
    query: &str,
    limit: i64,
) -> Result<Vec<String>, Error> {
    let params = crate::fhir::search::parse_query(query);
    if params.iter().all(|p| COMMON.contains(&p.name.as_str())) {
        return Err(bad(format!("the condition `{query}` has no search parameter; say which {t} you mean (e.g. identifier=system|value)")));
    }
    let mut sql = Sql::default();
    let plan = match t {
        "Patient" => patient_plan(s, env, &params, false, &mut sql)?,
        "Encounter" => encounter_plan(env, &params, false, &mut sql)?,
        "Observation" => observation_plan(env, &params, false, &mut sql)?,
        "RelatedPerson" => related_person_plan(s, env, &params, false, &mut sql)?,
        "EpisodeOfCare" => episode_plan(env, &params, false, &mut sql)?,
        _ => return Err(Error::MethodNotAllowed(format!("{t} cannot be searched"))),
    };
    let uid_column = match t {
        "Patient" => "te.uid",
        "Encounter" => "e.uid",
        "RelatedPerson" => "r.uid",
        "EpisodeOfCare" => "en.uid",
        _ => "d.uid",
    };
    let wh = s.search_where(&mut sql, &plan.conditions, plan.rule)?;
    let l = sql.bind(Bind::Int(limit));
    #[derive(QueryableByName)]
    struct Uid {
        #[diesel(sql_type = Text)]
        uid: String,
    }
    let rows: Vec<Uid> = sql
        .query(format!(
            "SELECT {uid_column} AS uid FROM {} WHERE {} ORDER BY {} LIMIT {l}",
            plan.from,
            wh.text(),
            plan.id_column
        ))
        .load(s.conn()?)?;
    Ok(rows.into_iter().map(|r| r.uid).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_ranges() {
        let (lo, hi) = date_range("1995").expect("test input is valid");
        assert_eq!(lo.to_rfc3339(), "1995-01-01T00:00:00+00:00");
        assert_eq!(hi.to_rfc3339(), "1996-01-01T00:00:00+00:00");
        let (lo, hi) = date_range("2024-02").expect("test input is valid");
        assert_eq!((lo.day(), hi.month()), (1, 3));
        assert!(date_range("2024-13").is_none());
        assert!(date_range("tomorrow").is_none());
        assert_eq!(prefix("ge1995-01-01"), (Prefix::Ge, "1995-01-01"));
        assert_eq!(prefix("1995"), (Prefix::Eq, "1995"));
    }

    #[test]
    fn number_precision() {
        assert_eq!(number_range("72.5"), Some((72.45, 72.55)));
        assert_eq!(number_range("70"), Some((69.5, 70.5)));
    }
}
