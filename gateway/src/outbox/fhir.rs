//! Pushing to a generic FHIR R4 server (HAPI FHIR, a national shared health record…).
//!
//! A standard server takes our codes as they are, so the record goes out as the FHIR API renders
//! it, with three changes: every record carries our id as an identifier of the target file's
//! `record_system` (the key that makes a create conditional and a resend find the record);
//! references to records the target holds become its ids, and references to anything else become
//! logical references (type + identifier), which a server with referential integrity accepts; and
//! `[[concept]]`/`[[identifier]]` entries add the target's codings and rename identifier systems.
//! Creates are conditional (`If-None-Exist`), so a resend after a lost answer finds the record on
//! a server that honours it; after an unknown outcome the record is also looked up first, for
//! servers that do not.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::http::{self, enc};
use super::worker::Job;
use super::Outcome;
use crate::error::Error;

/// The types this kind sends, and so the references it can turn into the target's ids.
const SENT: &[&str] = &["Patient", "Encounter", "Observation"];

pub fn deliver(job: &mut Job) -> Result<Outcome, Error> {
    http::deliver_record(job, push)
}

fn record_system(job: &Job) -> String {
    // The checker refuses a fhir-r4 target without one.
    job.target
        .record_system
        .clone()
        .unwrap_or_else(|| "urn:kiunga:record".into())
}

fn push(job: &mut Job, kind: &str, uid: &str, uncertain: bool) -> Result<Outcome, Error> {
    let Some(rendered) = job.render(kind, uid)? else {
        return Ok(Outcome::Skipped {
            message: "deleted before delivery: nothing to send".into(),
        });
    };
    let body = match translate(job, kind, uid, &rendered)? {
        Ok(b) => b,
        Err(o) => return Ok(o),
    };
    let mut remote = job.remote_id(kind, uid)?;
    if remote.is_none() && uncertain {
        match look_up(job, kind, uid)? {
            Ok(Some(found)) => {
                job.set_remote(kind, uid, &found)?;
                remote = Some(found);
            }
            Ok(None) => {}
            Err(o) => return Ok(o),
        }
    }
    match remote {
        Some(id) => update(job, kind, uid, &id, body),
        None => create(job, kind, uid, body),
    }
}

fn update(
    job: &mut Job,
    kind: &str,
    uid: &str,
    id: &str,
    mut body: Value,
) -> Result<Outcome, Error> {
    body["id"] = json!(id);
    let url = format!("{}/{kind}/{id}", job.base);
    let answer = match http::send(job.request(reqwest::Method::PUT, &url).json(&body), true) {
        Ok(a) => a,
        Err(o) => return Ok(o),
    };
    match answer.status {
        200..=299 => Ok(Outcome::Delivered {
            remote_id: Some(id.to_string()),
        }),
        // Deleted there: created again (a conditional create, so once).
        404 | 410 => {
            job.forget_remote(kind, uid)?;
            create(job, kind, uid, body)
        }
        _ => Ok(http::write_failure(&answer, job.item.attempts)),
    }
}

/// The search that names this record on the target: a Patient by the official identifier when
/// the file declares one and the Patient has it (the target may know the person already), every
/// record else by our own id.
fn match_query(job: &Job, kind: &str, uid: &str, body: &Value) -> String {
    if kind == "Patient" {
        if let Some(official) = job.target.identifiers.iter().find(|i| i.official) {
            let system = official
                .target_system
                .as_deref()
                .unwrap_or(&official.system);
            let value = body
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|i| i["system"] == system)
                .and_then(|i| i["value"].as_str());
            if let Some(v) = value {
                return format!("identifier={}", enc(&format!("{system}|{v}")));
            }
        }
    }
    format!(
        "identifier={}",
        enc(&format!("{}|{uid}", record_system(job)))
    )
}

fn create(job: &mut Job, kind: &str, uid: &str, mut body: Value) -> Result<Outcome, Error> {
    if let Some(o) = body.as_object_mut() {
        o.remove("id");
    }
    let query = match_query(job, kind, uid, &body);
    let url = format!("{}/{kind}", job.base);
    let req = job
        .request(reqwest::Method::POST, &url)
        .header("If-None-Exist", query.as_str())
        .json(&body);
    let answer = match http::send(req, true) {
        Ok(a) => a,
        Err(o) => return Ok(o),
    };
    if answer.status == 412 {
        return Ok(Outcome::rejected(
            "ambiguous",
            format!(
                "the target holds several {kind}s matching {query}: merge them there, then retry this item ({})",
                http::message(&answer)
            ),
            Some(412),
        ));
    }
    if !(200..=299).contains(&answer.status) {
        return Ok(http::write_failure(&answer, job.item.attempts));
    }
    let Some(id) = http::created_id(&answer) else {
        return Ok(Outcome::rejected(
            "target-error",
            format!(
                "the target answered {} without an id (neither in the body nor in Location)",
                answer.status
            ),
            Some(answer.status),
        ));
    };
    if answer.status == 201 {
        job.set_remote(kind, uid, &id)?;
        return Ok(Outcome::Delivered {
            remote_id: Some(id),
        });
    }
    // 200: the condition matched a record the target already had; nothing was written. It is
    // ours unless another of our records already stands for it; then it gets our version.
    if job.remote_taken(kind, &id)? {
        return Ok(Outcome::rejected(
            "ambiguous",
            format!("the target's {kind}/{id} matches {query} but already stands for another record of ours: resolve the duplicate here, then retry this item"),
            Some(200),
        ));
    }
    job.set_remote(kind, uid, &id)?;
    update(job, kind, uid, &id, body)
}

/// The target's record that an earlier attempt may have created, found by our id.
fn look_up(job: &mut Job, kind: &str, uid: &str) -> Result<Result<Option<String>, Outcome>, Error> {
    let query = format!(
        "identifier={}",
        enc(&format!("{}|{uid}", record_system(job)))
    );
    let url = format!("{}/{kind}?{query}", job.base);
    let answer = match http::look(job, &url) {
        Ok(a) => a,
        Err(o) => return Ok(Err(o)),
    };
    let mut found = Vec::new();
    for e in answer
        .body
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(id) = e.pointer("/resource/id").and_then(Value::as_str) {
            if !job.remote_taken(kind, id)? {
                found.push(id.to_string());
            }
        }
    }
    Ok(match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        more => Err(Outcome::rejected(
            "ambiguous",
            format!(
                "the target holds {} {kind}s with our id ({}): delete all but one there, then retry this item",
                more.len(),
                more.join(", ")
            ),
            None,
        )),
    })
}

fn ensure(job: &mut Job, kind: &str, uid: &str) -> Result<Result<String, Outcome>, Error> {
    http::ensure(job, kind, uid, push)
}

/// Our rendering → what the target gets.
fn translate(
    job: &mut Job,
    kind: &str,
    uid: &str,
    rendered: &Value,
) -> Result<Result<Value, Outcome>, Error> {
    let system = record_system(job);
    let mut body = rendered.clone();
    let Some(o) = body.as_object_mut() else {
        return Ok(Err(Outcome::rejected(
            "internal",
            "the rendering is not an object",
            None,
        )));
    };
    o.remove("id");
    o.remove("meta");
    o.remove("text");
    let mut identifiers: Vec<Value> = match o.remove("identifier") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    identifiers.retain(|i| i["system"] != system.as_str());
    for i in &mut identifiers {
        let renamed = i["system"]
            .as_str()
            .and_then(|s| job.target.identifier(s))
            .and_then(|out| out.target_system.clone());
        if let Some(s) = renamed {
            i["system"] = json!(s);
        }
    }
    identifiers.push(json!({ "system": system, "value": uid }));
    o.insert("identifier".into(), Value::Array(identifiers));

    // The records this one needs on the target first (the subject, the encounter).
    let mut resolved: BTreeMap<String, Value> = BTreeMap::new();
    for pointer in ["/subject/reference", "/encounter/reference"] {
        let Some((ty, id)) = body
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(|r| r.split_once('/'))
            .map(|(t, i)| (t.to_string(), i.to_string()))
        else {
            continue;
        };
        if !SENT.contains(&ty.as_str()) || (ty == kind && id == uid) {
            continue;
        }
        match ensure(job, &ty, &id)? {
            Ok(remote) => {
                resolved.insert(format!("{ty}/{id}"), json!(format!("{ty}/{remote}")));
            }
            Err(o) => return Ok(Err(o)),
        }
    }
    // Every other reference: the target's id when it has the record, else a logical reference.
    let mut others = Vec::new();
    collect_references(&body, &mut others);
    for r in others {
        if resolved.contains_key(&r) {
            continue;
        }
        let Some((ty, id)) = r.split_once('/') else {
            continue;
        };
        let literal = if ty == "Organization" {
            job.env
                .md
                .org_unit(id)
                .and_then(|ou| job.target.organizations.get(&ou.id).cloned())
        } else if SENT.contains(&ty) {
            job.remote_id(ty, id)?
                .map(|remote| format!("{ty}/{remote}"))
        } else {
            None
        };
        let replacement = match literal {
            Some(l) => json!(l),
            None => json!({ "type": ty, "identifier": { "system": system, "value": id } }),
        };
        resolved.insert(r, replacement);
    }
    rewrite_references(&mut body, &resolved);
    if kind == "Observation" {
        if let Err(o) = concepts(job, &mut body) {
            return Ok(Err(o));
        }
    }
    Ok(Ok(body))
}

fn collect_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("reference").and_then(Value::as_str) {
                if r.contains('/') && !r.contains("://") && !r.starts_with("urn:") {
                    out.push(r.to_string());
                }
            }
            o.values().for_each(|c| collect_references(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_references(c, out)),
        _ => {}
    }
}

/// Replaces each resolved reference: a string is the target's `Type/id`; an object is a logical
/// reference that takes the place of `reference` (the display is kept).
fn rewrite_references(v: &mut Value, resolved: &BTreeMap<String, Value>) {
    match v {
        Value::Object(o) => {
            let hit = o
                .get("reference")
                .and_then(Value::as_str)
                .and_then(|r| resolved.get(r))
                .cloned();
            match hit {
                Some(Value::String(s)) => {
                    o.insert("reference".into(), json!(s));
                }
                Some(Value::Object(logical)) => {
                    o.remove("reference");
                    o.extend(logical);
                }
                _ => {}
            }
            o.values_mut().for_each(|c| rewrite_references(c, resolved));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_references(c, resolved)),
        _ => {}
    }
}

/// `[[concept]]` entries: the target's coding is added beside ours (code and coded answers), and
/// a quantity is given in the concept's unit.
fn concepts(job: &Job, body: &mut Value) -> Result<(), Outcome> {
    let target = job.target;
    let concept = body
        .pointer("/code/coding")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter().find_map(|c| {
                target
                    .concept(c["system"].as_str()?, c["code"].as_str()?)
                    .cloned()
            })
        });
    let Some(concept) = concept else {
        return Ok(());
    };
    add_coding(
        body.pointer_mut("/code/coding"),
        &concept.target_system,
        &concept.target_code,
    );
    if let (Some(unit), Some(q)) = (&concept.unit, body.get_mut("valueQuantity")) {
        let n = q.get("value").and_then(Value::as_f64);
        let from = q
            .get("code")
            .or_else(|| q.get("unit"))
            .and_then(Value::as_str);
        if let (Some(n), Some(from)) = (n, from) {
            let v = crate::translate::units::convert(n, from, unit).map_err(|e| {
                Outcome::rejected(
                    "mapping",
                    format!(
                        "the value cannot be given in the unit of [[concept]] {}: {e} (fix {}, then retry this item)",
                        concept.target_code, target.file
                    ),
                    None,
                )
            })?;
            *q = json!({
                "value": (v * 1e6).round() / 1e6,
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            });
        }
    }
    let answers: Vec<(Option<String>, String)> = body
        .pointer("/valueCodeableConcept/coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| target.concept(c["system"].as_str()?, c["code"].as_str()?))
        .map(|a| (a.target_system.clone(), a.target_code.clone()))
        .collect();
    for (system, code) in answers {
        add_coding(
            body.pointer_mut("/valueCodeableConcept/coding"),
            &system,
            &code,
        );
    }
    Ok(())
}

fn add_coding(codings: Option<&mut Value>, system: &Option<String>, code: &str) {
    let Some(Value::Array(list)) = codings else {
        return;
    };
    let mut c = Map::new();
    if let Some(s) = system {
        c.insert("system".into(), json!(s));
    }
    c.insert("code".into(), json!(code));
    let c = Value::Object(c);
    if !list.contains(&c) {
        list.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_become_target_ids_or_logical_references_keeping_the_display() {
        let mut v = json!({
            "subject": { "reference": "Patient/p1" },
            "serviceProvider": { "reference": "Organization/o1", "display": "Mto clinic" },
            "episodeOfCare": [{ "reference": "EpisodeOfCare/e1" }],
            "extension": [{ "url": "x", "valueReference": { "reference": "https://elsewhere/Patient/9" } }],
        });
        let mut found = Vec::new();
        collect_references(&v, &mut found);
        found.sort();
        assert_eq!(found, ["EpisodeOfCare/e1", "Organization/o1", "Patient/p1"]);
        let resolved = BTreeMap::from([
            ("Patient/p1".to_string(), json!("Patient/17")),
            (
                "Organization/o1".to_string(),
                json!({ "type": "Organization", "identifier": { "system": "urn:r", "value": "o1" } }),
            ),
        ]);
        rewrite_references(&mut v, &resolved);
        assert_eq!(v["subject"], json!({ "reference": "Patient/17" }));
        assert_eq!(
            v["serviceProvider"],
            json!({ "type": "Organization", "identifier": { "system": "urn:r", "value": "o1" }, "display": "Mto clinic" })
        );
        assert_eq!(v["episodeOfCare"][0]["reference"], "EpisodeOfCare/e1");
        assert_eq!(
            v["extension"][0]["valueReference"]["reference"],
            "https://elsewhere/Patient/9"
        );
    }

    #[test]
    fn a_coding_is_added_once() {
        let mut v = json!({ "coding": [{ "system": "http://loinc.org", "code": "29463-7" }] });
        for _ in 0..2 {
            add_coding(v.get_mut("coding"), &Some("urn:ciel".into()), "5089");
        }
        assert_eq!(v["coding"].as_array().map(Vec::len), Some(2));
    }
}
