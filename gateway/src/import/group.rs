//! One unit of an import (a Bundle or an NDJSON line) inside its transaction.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use diesel::prelude::*;
use serde_json::Value;

use super::report::Report;
use super::Unit;
use crate::error::Error;
use crate::rest::{self, bundle::rewrite_references_lenient, Body, STORED_TYPES};
use crate::store::schema::external_ref as xr;
use crate::store::Scoped;
use crate::tracker::Env;

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn rank(t: &str) -> u8 {
    match t {
        "Patient" => 0,
        "RelatedPerson" | "EpisodeOfCare" => 1,
        "Encounter" => 2,
        "Observation" => 3,
        _ => 4,
    }
}

/// A panel Observation (e.g. blood pressure 85354-9) whose own code is not mapped but whose
/// components are becomes one Observation per mapped component, keyed `<fullUrl>#<code>`.
fn split_panel(env: &Env, full_url: &str, obs: &Value) -> Option<Vec<(String, Value)>> {
    let mapped = |c: &Value| {
        c.pointer("/code/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|x| {
                env.mappings
                    .observation
                    .for_code(
                        str_at(x, "system").unwrap_or(""),
                        str_at(x, "code").unwrap_or(""),
                    )
                    .is_some()
            })
            .cloned()
    };
    if mapped(obs).is_some() {
        return None;
    }
    let components = obs.get("component").and_then(Value::as_array)?;
    let parts: Vec<(String, Value)> = components
        .iter()
        .filter_map(|c| {
            let coding = mapped(c)?;
            let mut o = obs.clone();
            let map = o.as_object_mut()?;
            map.remove("component");
            map.remove("id");
            map.insert("code".into(), c["code"].clone());
            for (k, v) in c
                .as_object()?
                .iter()
                .filter(|(k, _)| k.starts_with("value"))
            {
                map.insert(k.clone(), v.clone());
            }
            Some((
                format!("{full_url}#{}", str_at(&coding, "code").unwrap_or_default()),
                o,
            ))
        })
        .collect();
    (!parts.is_empty()).then_some(parts)
}

/// The codes of a resource's `code`/`type`, for skip reasons.
fn codes(resource: &Value, key: &str) -> String {
    let list: Vec<String> = match resource.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .flat_map(|t| {
                t.get("coding")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect(),
        Some(v) => v
            .get("coding")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        None => Vec::new(),
    }
    .iter()
    .map(|c| {
        format!(
            "{}|{}",
            str_at(c, "system").unwrap_or(""),
            str_at(c, "code").unwrap_or("")
        )
    })
    .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Is this translation refusal "no map knows this code" (skipped) rather than bad data (rejected)?
fn unmapped_code(e: &Error) -> bool {
    matches!(e, Error::Unprocessable(issues) if issues.iter().any(|i| i.code == "code-invalid" && matches!(i.expression.as_deref(), Some("Encounter.type" | "Observation.code"))))
}

/// References that point at entries of this unit that were not stored.
fn depends_on_skipped(v: &Value, skipped: &HashSet<String>) -> Option<String> {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("reference") {
                if skipped.contains(r) {
                    return Some(r.clone());
                }
            }
            o.values().find_map(|c| depends_on_skipped(c, skipped))
        }
        Value::Array(a) => a.iter().find_map(|c| depends_on_skipped(c, skipped)),
        _ => None,
    }
}

fn external(s: &mut Scoped, source: &str, t: &str) -> Result<Option<String>, Error> {
    Ok(xr::table
        .filter(xr::source.eq(source))
        .filter(xr::resource_type.eq(t))
        .select(xr::uid)
        .first(s.conn()?)
        .optional()?)
}

pub fn import_unit(
    s: &mut Scoped,
    env: &Env,
    unit: &Unit,
    report: &mut Report,
    interrupted: &AtomicBool,
) -> Result<(), Error> {
    let mut map: HashMap<String, String> = HashMap::new();
    let mut skipped_urls: HashSet<String> = HashSet::new();
    let mut work: Vec<(usize, String, Value)> = Vec::new();
    let default_org = env
        .default_org_unit
        .and_then(|id| env.md.org_unit_by_id(id))
        .map(|o| o.uid.clone());

    for (i, entry) in unit.entries.iter().enumerate() {
        let Some(resource) = entry.get("resource") else {
            continue;
        };
        report.read += 1;
        let t = str_at(resource, "resourceType")
            .unwrap_or_default()
            .to_string();
        let full_url = str_at(entry, "fullUrl")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/{}", t, str_at(resource, "id").unwrap_or_default()));
        match t.as_str() {
            "Organization" => {
                // Used to resolve org units, never stored as one.
                let ou = env
                    .mappings
                    .organizations
                    .resolve(resource)
                    .and_then(|id| env.md.org_unit_by_id(id))
                    .map(|o| o.uid.clone())
                    .or_else(|| default_org.clone());
                if let Some(ou) = ou {
                    map.insert(full_url.clone(), format!("Organization/{ou}"));
                }
                report.skip("Organization: used to resolve org units, not stored");
            }
            "Observation" => match split_panel(env, &full_url, resource) {
                Some(parts) => work.extend(parts.into_iter().map(|(u, o)| (i, u, o))),
                None => work.push((i, full_url, resource.clone())),
            },
            _ if STORED_TYPES.contains(&t.as_str()) => work.push((i, full_url, resource.clone())),
            // References to these stay as they are: they sit in elements no mapping holds and are
            // reported as such, never a reason to drop the record that carries them.
            _ => report.skip(format!("{t}: not stored by this gateway")),
        }
    }
    work.sort_by_key(|(_, _, r)| rank(str_at(r, "resourceType").unwrap_or_default()));

    for (i, full_url, mut resource) in work {
        if interrupted.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("interrupted".into()));
        }
        let t: &'static str = match str_at(&resource, "resourceType") {
            Some("Patient") => "Patient",
            Some("Encounter") => "Encounter",
            _ => "Observation",
        };
        if depends_on_skipped(&resource, &skipped_urls).is_some() {
            report.skip(format!(
                "{t}: refers to a record of this file that was not stored"
            ));
            skipped_urls.insert(full_url);
            continue;
        }
        let outcome = s.savepoint(|s| {
            rewrite_references_lenient(s, env, &mut resource, &map)?;
            let raw = serde_json::to_vec(&resource).unwrap_or_default();
            let existing = match t {
                "Patient" => find_patient(s, env, &resource)?,
                _ => match external(s, &full_url, t)? {
                    Some(uid) if rest::read(s, env, t, &uid).is_ok() => Some(uid),
                    _ => None,
                },
            };
            let body = Body {
                resource: &resource,
                raw: &raw,
                content_type: "application/fhir+json",
            };
            let stored = match &existing {
                Some(uid) => rest::update(s, env, t, uid, None, body)?,
                None => rest::create(s, env, t, body)?,
            };
            if t != "Patient" && existing.is_none() {
                diesel::insert_into(xr::table)
                    .values((
                        xr::source.eq(&full_url),
                        xr::resource_type.eq(t),
                        xr::uid.eq(&stored.id),
                    ))
                    .on_conflict((xr::source, xr::resource_type))
                    .do_update()
                    .set(xr::uid.eq(&stored.id))
                    .execute(s.conn()?)?;
            }
            Ok::<_, Error>(stored)
        });
        match outcome {
            Ok(stored) => {
                if stored.created {
                    report.created(t);
                } else {
                    report.updated(t);
                }
                let base = full_url.split('#').next().unwrap_or(&full_url).to_string();
                map.insert(base, format!("{t}/{}", stored.id));
            }
            Err(e @ Error::Unavailable(_)) => return Err(e),
            Err(e) if unmapped_code(&e) => {
                let key = if t == "Encounter" { "type" } else { "code" };
                report.skip(format!("{t}: {key} not mapped ({})", codes(&resource, key)));
                skipped_urls.insert(full_url);
            }
            Err(e) => {
                let (_, outcome) = e.client_outcome("import");
                let reason = outcome["issue"]
                    .as_array()
                    .map(|is| {
                        is.iter()
                            .filter_map(|i| i["diagnostics"].as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                report.reject(&unit.origin, Some(i), t, reason);
                skipped_urls.insert(full_url);
            }
        }
    }
    Ok(())
}

/// The person an incoming Patient already is, found by any mapped identifier it carries.
fn find_patient(s: &mut Scoped, env: &Env, resource: &Value) -> Result<Option<String>, Error> {
    for id in resource
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(sys), Some(val)) = (str_at(id, "system"), str_at(id, "value")) else {
            continue;
        };
        if env.mappings.patient.identifier(sys).is_none() {
            continue;
        }
        let q = format!("identifier={}|{}", enc(sys), enc(val));
        if let Some(uid) = rest::search::matching_ids(s, env, "Patient", &q, 1)?
            .into_iter()
            .next()
        {
            return Ok(Some(uid));
        }
    }
    Ok(None)
}

/// Percent-encodes a query value (the condition is parsed as a query string).
fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~:/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
