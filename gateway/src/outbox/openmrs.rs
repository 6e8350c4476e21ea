//! Pushing to OpenMRS through its FHIR2 module (`../shared/contracts/openmrs-fhir2.md`).
//!
//! OpenMRS takes one resource at a time, assigns its own ids, has no idempotency and silently
//! drops what it cannot map. So: Patients go before their Encounters and Encounters before their
//! Observations (a missing parent is sent first); every record's OpenMRS id is kept and updates
//! go to it; a Patient is looked up by identifier before it is created, and after an unknown
//! outcome an Encounter or Observation is looked up before it is sent again; our codes become
//! the target's (identifier types, locations, encounter types, concepts and units) from the
//! target file, and what the file cannot translate is a dead letter naming the missing entry,
//! never a silent drop.

use serde_json::{json, Map, Value};

use super::http::{self, enc};
use super::worker::Job;
use super::Outcome;
use crate::error::Error;
use crate::mapping::targets::Target;

const LOCATION_EXT: &str = "http://fhir.openmrs.org/ext/patient/identifier#location";
const ENCOUNTER_TYPE: &str = "http://fhir.openmrs.org/code-system/encounter-type";

/// Delivers one item. `Err` is our own failure (the database), retried like a transient one.
pub fn deliver(job: &mut Job) -> Result<Outcome, Error> {
    http::deliver_record(job, push)
}

/// Creates or updates `kind/uid` on the target, sending what it depends on first.
fn push(job: &mut Job, kind: &str, uid: &str, uncertain: bool) -> Result<Outcome, Error> {
    let rendered = match job.render(kind, uid)? {
        Some(r) => r,
        None => {
            return Ok(Outcome::Skipped {
                message: "deleted before delivery: nothing to send".into(),
            })
        }
    };
    let body = match translate(job, kind, &rendered)? {
        Ok(b) => b,
        Err(o) => return Ok(o),
    };
    let mut remote = job.remote_id(kind, uid)?;
    if remote.is_none() && (uncertain || kind == "Patient") {
        match look_up(job, kind, &body)? {
            Ok(Some(found)) => {
                job.set_remote(kind, uid, &found)?;
                remote = Some(found);
            }
            Ok(None) => {}
            Err(o) => return Ok(o),
        }
    }
    if let Some(id) = &remote {
        let mut body = body.clone();
        body["id"] = json!(id);
        let url = format!("{}/{kind}/{id}", job.base);
        let answer = match http::send(job.request(reqwest::Method::PUT, &url).json(&body), true) {
            Ok(a) => a,
            Err(o) => return Ok(o),
        };
        return match answer.status {
            200..=299 => Ok(Outcome::Delivered { remote_id: remote }),
            // Gone from the target (deleted there): it is created again below, once.
            404 => {
                job.forget_remote(kind, uid)?;
                create(job, kind, uid, &body)
            }
            410 => Ok(Outcome::rejected(
                "voided",
                format!("the target voided {kind} {id}; un-void it there or skip this item"),
                Some(410),
            )),
            _ => Ok(http::write_failure(&answer, job.item.attempts)),
        };
    }
    create(job, kind, uid, &body)
}

fn create(job: &mut Job, kind: &str, uid: &str, body: &Value) -> Result<Outcome, Error> {
    let mut body = body.clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("id");
    }
    let url = format!("{}/{kind}", job.base);
    let answer = match http::send(job.request(reqwest::Method::POST, &url).json(&body), true) {
        Ok(a) => a,
        Err(o) => return Ok(o),
    };
    if !(200..=299).contains(&answer.status) {
        return Ok(http::write_failure(&answer, job.item.attempts));
    }
    let Some(id) = http::created_id(&answer) else {
        return Ok(Outcome::rejected(
            "target-error",
            "the target answered 201 without an id (neither in the body nor in Location)",
            Some(answer.status),
        ));
    };
    job.set_remote(kind, uid, &id)?;
    Ok(Outcome::Delivered {
        remote_id: Some(id),
    })
}

fn ensure(job: &mut Job, kind: &str, uid: &str) -> Result<Result<String, Outcome>, Error> {
    http::ensure(job, kind, uid, push)
}

/// Our rendering → the body OpenMRS takes. `Ok(Err(outcome))`: it cannot be translated (a
/// missing entry of the target file, or a record OpenMRS cannot hold).
fn translate(job: &mut Job, kind: &str, r: &Value) -> Result<Result<Value, Outcome>, Error> {
    Ok(match kind {
        "Patient" => patient(job.target, job, r),
        "Encounter" => encounter(job, r)?,
        "Observation" => observation(job, r)?,
        other => Err(Outcome::rejected(
            "unsupported",
            format!("{other} is not pushed to OpenMRS"),
            None,
        )),
    })
}

fn mapping_problem(target: &Target, what: String) -> Outcome {
    Outcome::rejected(
        "mapping",
        format!("{what} (fix {}, then retry this item)", target.file),
        None,
    )
}

fn org_unit_of(job: &Job, reference: Option<&str>) -> Option<i64> {
    let uid = reference?.strip_prefix("Organization/")?;
    job.env.md.org_unit(uid).map(|o| o.id)
}

fn location(job: &Job, reference: Option<&str>) -> Result<String, Outcome> {
    let ou = org_unit_of(job, reference);
    ou.and_then(|id| job.target.location_for(job.env.md, id))
        .map(str::to_string)
        .ok_or_else(|| {
            let name = ou
                .and_then(|id| job.env.md.org_unit_by_id(id))
                .map(|o| o.code.clone().unwrap_or_else(|| o.uid.clone()))
                .unwrap_or_else(|| "(none)".into());
            mapping_problem(
                job.target,
                format!("org unit {name} has no [[location]] (nor an ancestor), and there is no default_location"),
            )
        })
}

fn patient(target: &Target, job: &Job, r: &Value) -> Result<Value, Outcome> {
    if r.get("deceasedBoolean").and_then(Value::as_bool) == Some(true)
        || r.get("deceasedDateTime").is_some()
    {
        return Err(Outcome::rejected(
            "unsupported",
            "OpenMRS cannot record a death through FHIR2 (it requires a cause of death that FHIR2 cannot set): record the death in OpenMRS itself, then skip this item",
            None,
        ));
    }
    let loc = location(
        job,
        r.pointer("/managingOrganization/reference")
            .and_then(Value::as_str),
    )?;
    let mut identifiers = Vec::new();
    let mut official = false;
    for i in r
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(system), Some(value)) = (
            i.get("system").and_then(Value::as_str),
            i.get("value").and_then(Value::as_str),
        ) else {
            continue;
        };
        let Some(out) = target.identifier(system) else {
            continue;
        };
        let mut id = Map::new();
        id.insert(
            "use".into(),
            json!(if out.official { "official" } else { "usual" }),
        );
        official |= out.official;
        if let Some(s) = &out.target_system {
            id.insert("system".into(), json!(s));
        }
        if let Some(t) = &out.type_name {
            id.insert("type".into(), json!({ "text": t }));
        }
        id.insert("value".into(), json!(value));
        id.insert(
            "extension".into(),
            json!([{ "url": LOCATION_EXT, "valueReference": { "reference": format!("Location/{loc}") } }]),
        );
        identifiers.push(Value::Object(id));
    }
    if !official {
        let system = target
            .identifiers
            .iter()
            .find(|i| i.official)
            .map(|i| i.system.as_str())
            .unwrap_or("(none declared)");
        return Err(Outcome::rejected(
            "incomplete",
            format!("the Patient has no identifier of the official system {system}, which OpenMRS needs as its preferred identifier; add one, then retry this item"),
            None,
        ));
    }
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Patient"));
    out.insert("identifier".into(), Value::Array(identifiers));
    for key in [
        "active",
        "name",
        "gender",
        "birthDate",
        "address",
        "telecom",
    ] {
        if let Some(v) = r.get(key) {
            out.insert(key.into(), strip_extensions(v));
        }
    }
    Ok(Value::Object(out))
}

/// OpenMRS ignores or refuses our extensions; the values they carry stay in the registry.
fn strip_extensions(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| k.as_str() != "extension" && k.as_str() != "id")
                .map(|(k, v)| (k.clone(), strip_extensions(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_extensions).collect()),
        other => other.clone(),
    }
}

fn reference_id<'a>(r: &'a Value, pointer: &str, prefix: &str) -> Option<&'a str> {
    r.pointer(pointer)?.as_str()?.strip_prefix(prefix)
}

fn encounter(job: &mut Job, r: &Value) -> Result<Result<Value, Outcome>, Error> {
    let stage = r.pointer("/type/0/coding/0").and_then(|c| {
        job.env
            .mappings
            .encounter
            .stage_for_type(c.get("system")?.as_str()?, c.get("code")?.as_str()?)
    });
    let Some(stage_id) = stage else {
        return Ok(Err(mapping_problem(
            job.target,
            "the Encounter's type maps to no program stage".into(),
        )));
    };
    let Some(encounter_type) = job.target.encounter_types.get(&stage_id).cloned() else {
        let name = job
            .env
            .md
            .stages
            .iter()
            .find(|s| s.id == stage_id)
            .map(|s| s.code.clone().unwrap_or_else(|| s.uid.clone()))
            .unwrap_or_default();
        return Ok(Err(mapping_problem(
            job.target,
            format!("stage {name} has no [[encounter_type]]"),
        )));
    };
    let loc = match location(
        job,
        r.pointer("/serviceProvider/reference")
            .and_then(Value::as_str),
    ) {
        Ok(l) => l,
        Err(o) => return Ok(Err(o)),
    };
    let Some(person) = reference_id(r, "/subject/reference", "Patient/") else {
        return Ok(Err(Outcome::rejected(
            "incomplete",
            "the Encounter has no subject",
            None,
        )));
    };
    let person = person.to_string();
    let patient = match ensure(job, "Patient", &person)? {
        Ok(p) => p,
        Err(o) => return Ok(Err(o)),
    };
    let mut out = json!({
        "resourceType": "Encounter",
        "status": r.get("status").cloned().unwrap_or(json!("finished")),
        "type": [{ "coding": [{ "system": ENCOUNTER_TYPE, "code": encounter_type }] }],
        "subject": { "reference": format!("Patient/{patient}") },
        "location": [{ "location": { "reference": format!("Location/{loc}") } }],
    });
    if let Some(p) = r.get("period") {
        out["period"] = p.clone();
    }
    Ok(Ok(out))
}

fn observation(job: &mut Job, r: &Value) -> Result<Result<Value, Outcome>, Error> {
    let Some((system, code)) = r.pointer("/code/coding/0").and_then(|c| {
        Some((
            c.get("system")?.as_str()?.to_string(),
            c.get("code")?.as_str()?.to_string(),
        ))
    }) else {
        return Ok(Err(Outcome::rejected(
            "incomplete",
            "the Observation has no coded code",
            None,
        )));
    };
    let Some(concept) = job.target.concept(&system, &code).cloned() else {
        return Ok(Err(mapping_problem(
            job.target,
            format!("{system}|{code} has no [[concept]]"),
        )));
    };
    let value = match value(job.target, r, concept.unit.as_deref()) {
        Ok(v) => v,
        Err(o) => return Ok(Err(o)),
    };
    let (Some(person), Some(event)) = (
        reference_id(r, "/subject/reference", "Patient/").map(str::to_string),
        reference_id(r, "/encounter/reference", "Encounter/").map(str::to_string),
    ) else {
        return Ok(Err(Outcome::rejected(
            "incomplete",
            "the Observation has no subject or encounter",
            None,
        )));
    };
    let patient = match ensure(job, "Patient", &person)? {
        Ok(p) => p,
        Err(o) => return Ok(Err(o)),
    };
    let encounter = match ensure(job, "Encounter", &event)? {
        Ok(e) => e,
        Err(o) => return Ok(Err(o)),
    };
    // OpenMRS requires effectiveDateTime (an Observation without one is 422): the encounter's
    // start stands in, as our own rendering would place the value on its day.
    let effective = match r.get("effectiveDateTime") {
        Some(e) => e.clone(),
        None => match job.render("Encounter", &event)? {
            Some(e) => e.pointer("/period/start").cloned().unwrap_or(Value::Null),
            None => Value::Null,
        },
    };
    let mut coding = json!({ "code": concept.target_code });
    if let Some(s) = &concept.target_system {
        coding["system"] = json!(s);
    }
    let mut out = json!({
        "resourceType": "Observation",
        "status": r.get("status").cloned().unwrap_or(json!("final")),
        "code": { "coding": [coding] },
        "subject": { "reference": format!("Patient/{patient}") },
        "encounter": { "reference": format!("Encounter/{encounter}") },
    });
    if !effective.is_null() {
        out["effectiveDateTime"] = effective;
    }
    let (key, v) = value;
    out[key] = v;
    Ok(Ok(out))
}

/// The value in the target's terms: a quantity in the concept's unit, a coded answer through the
/// target's concepts, anything else as it is.
fn value(target: &Target, r: &Value, unit: Option<&str>) -> Result<(&'static str, Value), Outcome> {
    if let Some(q) = r.get("valueQuantity") {
        let n = q.get("value").and_then(Value::as_f64).unwrap_or_default();
        let from = q
            .get("code")
            .or_else(|| q.get("unit"))
            .and_then(Value::as_str);
        let (n, u) = match (unit, from) {
            (Some(to), Some(from)) => match crate::translate::units::convert(n, from, to) {
                Ok(v) => (v, to.to_string()),
                Err(e) => {
                    return Err(mapping_problem(
                        target,
                        format!("the value cannot be given in the concept's unit: {e}"),
                    ))
                }
            },
            (Some(to), None) => (n, to.to_string()),
            (None, Some(from)) => (n, from.to_string()),
            (None, None) => (n, String::new()),
        };
        let n = (n * 1e6).round() / 1e6;
        let mut out = json!({ "value": n });
        if !u.is_empty() {
            out["unit"] = json!(u);
        }
        return Ok(("valueQuantity", out));
    }
    if let Some(cc) = r.get("valueCodeableConcept") {
        for c in cc
            .get("coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(s), Some(k)) = (
                c.get("system").and_then(Value::as_str),
                c.get("code").and_then(Value::as_str),
            ) else {
                continue;
            };
            if let Some(answer) = target.concept(s, k) {
                let mut coding = json!({ "code": answer.target_code });
                if let Some(ts) = &answer.target_system {
                    coding["system"] = json!(ts);
                }
                return Ok(("valueCodeableConcept", json!({ "coding": [coding] })));
            }
        }
        let first = cc
            .pointer("/coding/0")
            .map(|c| {
                format!(
                    "{}|{}",
                    c["system"].as_str().unwrap_or(""),
                    c["code"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        return Err(mapping_problem(
            target,
            format!("the coded answer {first} has no [[concept]]"),
        ));
    }
    for key in [
        "valueString",
        "valueBoolean",
        "valueDateTime",
        "valueInteger",
    ] {
        if let Some(v) = r.get(key) {
            let key: &'static str = match key {
                "valueString" => "valueString",
                "valueBoolean" => "valueBoolean",
                "valueDateTime" => "valueDateTime",
                _ => "valueInteger",
            };
            return Ok((key, v.clone()));
        }
    }
    Err(Outcome::rejected(
        "incomplete",
        "the Observation has no value",
        None,
    ))
}

/// The target's record that an earlier attempt may have created. `Err`: the look-up itself
/// failed (the item is retried, still uncertain).
fn look_up(
    job: &mut Job,
    kind: &str,
    body: &Value,
) -> Result<Result<Option<String>, Outcome>, Error> {
    let query = match kind {
        "Patient" => {
            let Some(v) = body
                .get("identifier")
                .and_then(Value::as_array)
                .and_then(|ids| ids.iter().find(|i| i["use"] == "official"))
                .and_then(|i| i.get("value"))
                .and_then(Value::as_str)
            else {
                return Ok(Ok(None));
            };
            format!("identifier={}", enc(v))
        }
        "Encounter" => {
            let subject = body
                .pointer("/subject/reference")
                .and_then(Value::as_str)
                .unwrap_or("");
            let day = body
                .pointer("/period/start")
                .and_then(Value::as_str)
                .and_then(|s| s.get(..10))
                .unwrap_or("");
            format!("subject={}&date={}", enc(subject), enc(day))
        }
        _ => {
            let subject = body
                .pointer("/subject/reference")
                .and_then(Value::as_str)
                .unwrap_or("");
            let code = body.pointer("/code/coding/0").map(|c| {
                match c.get("system").and_then(Value::as_str) {
                    Some(s) => format!("{s}|{}", c["code"].as_str().unwrap_or("")),
                    None => c["code"].as_str().unwrap_or("").to_string(),
                }
            });
            let mut q = format!(
                "subject={}&code={}",
                enc(subject),
                enc(&code.unwrap_or_default())
            );
            if let Some(day) = body
                .get("effectiveDateTime")
                .and_then(Value::as_str)
                .and_then(|s| s.get(..10))
            {
                q.push_str(&format!("&date={}", enc(day)));
            }
            q
        }
    };
    let url = format!("{}/{kind}?{query}", job.base);
    let answer = match http::look(job, &url) {
        Ok(a) => a,
        Err(o) => return Ok(Err(o)),
    };
    for e in answer
        .body
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(res) = e.get("resource") else {
            continue;
        };
        let Some(id) = res.get("id").and_then(Value::as_str) else {
            continue;
        };
        if !same_record(kind, body, res) || job.remote_taken(kind, id)? {
            continue;
        }
        return Ok(Ok(Some(id.to_string())));
    }
    Ok(Ok(None))
}

/// Whether a found record is the one we sent (beyond what the search already matched).
fn same_record(kind: &str, sent: &Value, found: &Value) -> bool {
    match kind {
        "Encounter" => {
            let ty = |v: &Value| v.pointer("/type/0/coding/0/code").cloned();
            let start = |v: &Value| {
                v.pointer("/period/start")
                    .and_then(Value::as_str)
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            };
            ty(sent) == ty(found) && (start(sent).is_none() || start(sent) == start(found))
        }
        "Observation" => {
            let when = |v: &Value| {
                v.get("effectiveDateTime")
                    .and_then(Value::as_str)
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            };
            let num = |v: &Value| v.pointer("/valueQuantity/value").and_then(Value::as_f64);
            when(sent) == when(found)
                && match (num(sent), num(found)) {
                    (Some(a), Some(b)) => (a - b).abs() < 1e-6,
                    _ => true,
                }
        }
        // OpenMRS matches `identifier=<value>` across every identifier type: the found Patient
        // is ours only if the value is held under our official identifier's type.
        "Patient" => {
            let official = sent["identifier"]
                .as_array()
                .and_then(|ids| ids.iter().find(|i| i["use"] == "official"));
            let Some(o) = official else { return false };
            found["identifier"].as_array().is_some_and(|ids| {
                ids.iter().any(|i| {
                    i["value"] == o["value"]
                        && ((o.get("system").is_some() && i.get("system") == o.get("system"))
                            || (o.pointer("/type/text").is_some()
                                && i.pointer("/type/text") == o.pointer("/type/text")))
                })
            })
        }
        _ => true,
    }
}
