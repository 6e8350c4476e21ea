//! Notifying OpenCRVS of births and deaths (`../shared/contracts/opencrvs.md`), in the mode the
//! target runs: the legacy FHIR `document` Bundle (v1.3–1.9), or the events API (v1.9, v2.0).
//!
//! A notification is built when it is delivered, from the registry as it is then: the child (or
//! the deceased), the mother, the delivery (or death) event and its facility, the birth weight in
//! kg (or the ICD-10 cause of death). The events API is idempotent on the item's transactionId, so
//! a lost answer is simply sent again; the legacy endpoint is not, so a lost answer goes to a
//! person ("outcome unknown") rather than risk a second birth registration.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Map, Value};

use super::http::{self, Answer};
use super::worker::Job;
use super::Outcome;
use crate::error::Error;
use crate::mapping::targets::{Crvs, CrvsMode, Facility};
use crate::store::outbox as store;

const DOC_TYPES: &str = "http://opencrvs.org/doc-types";
const SECTIONS: &str = "http://opencrvs.org/specs/sections";
const EXT: &str = "http://opencrvs.org/specs/extension/";
const ID_TYPE: &str = "http://opencrvs.org/specs/identifier-type";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const UCUM: &str = "http://unitsofmeasure.org";

/// A bearer token and when to stop using it, shared by one target's workers.
pub type TokenCache = Mutex<Option<(String, Instant)>>;

/// What a notification is built from, rendered as the FHIR API renders it.
struct Parts {
    subject: Value,
    mother: Option<Value>,
    /// The delivery or death event (its org unit is where it happened).
    event: Option<Value>,
    /// The birth weight or the cause of death.
    value: Option<Value>,
    facility: Option<Facility>,
}

pub fn deliver(job: &mut Job) -> Result<Outcome, Error> {
    let Some(crvs) = job.target.crvs.clone() else {
        return Ok(Outcome::rejected(
            "configuration",
            "the target has no OpenCRVS settings",
            None,
        ));
    };
    let mode = match crvs.mode.resolve() {
        Ok(m) => match CrvsMode::parse(&m) {
            Some(mode) => mode,
            None => {
                return Ok(Outcome::retry(
                    "configuration",
                    format!("the OpenCRVS mode `{m}` is not one of legacy-notification, events-v1.9, events-v2.0"),
                ))
            }
        },
        Err(var) => return Ok(Outcome::retry("configuration", format!("{var} is not set"))),
    };
    let event = job.item.kind.clone();
    if mode == CrvsMode::Legacy && job.item.uncertain {
        return Ok(unknown());
    }
    let parts = match gather(job, &crvs, &event)? {
        Ok(p) => p,
        Err(o) => return Ok(o),
    };
    match mode {
        CrvsMode::Legacy => {
            let bundle = match legacy_bundle(job, &crvs, &event, &parts) {
                Ok(b) => b,
                Err(o) => return Ok(o),
            };
            let url = format!("{}/notification", job.base);
            match send_authorized(job, &crvs, &url, &bundle)? {
                Ok(a) if a.status == 200 => Ok(delivered(&a)),
                Ok(a) if a.status == 500 && http::message(&a).starts_with("Could not process") => {
                    // A rejection in a 500's clothing: OpenCRVS could not use the content.
                    Ok(Outcome::rejected("rejected", http::message(&a), Some(500)))
                }
                Ok(a) => Ok(http::failure(&a, job.item.attempts)),
                // No idempotency: what may have been created must not be created twice.
                Err(Outcome::Retry {
                    uncertain: true, ..
                }) => Ok(unknown()),
                Err(o) => Ok(o),
            }
        }
        CrvsMode::EventsV19 | CrvsMode::EventsV20 => {
            let declaration = declaration(job, &crvs, &event, &parts);
            let Some(office) = parts.facility.as_ref().map(|f| f.office.clone()) else {
                return Ok(no_facility(job));
            };
            let tx = job.item.transaction_id.clone();
            let answer = if mode == CrvsMode::EventsV20 {
                let body = json!({
                    "eventType": event, "transactionId": tx, "createdAtLocation": office,
                    "declaration": declaration, "annotation": {}
                });
                send_authorized(
                    job,
                    &crvs,
                    &format!("{}/events/events/notify", job.base),
                    &body,
                )?
            } else {
                let create = json!({ "type": event, "transactionId": tx });
                let created = match send_authorized(
                    job,
                    &crvs,
                    &format!("{}/events/events", job.base),
                    &create,
                )? {
                    Ok(a) if a.status == 200 => a,
                    Ok(a) => return Ok(events_failure(&a, job.item.attempts)),
                    Err(o) => return Ok(o),
                };
                let Some(id) = created.body.get("id").and_then(Value::as_str) else {
                    return Ok(Outcome::retry(
                        "target-error",
                        "OpenCRVS created the event without an id",
                    ));
                };
                let body = json!({
                    "eventId": id, "transactionId": notify_transaction(&tx), "type": "NOTIFY",
                    "createdAtLocation": office, "declaration": declaration, "annotation": {}
                });
                send_authorized(
                    job,
                    &crvs,
                    &format!("{}/events/events/notifications", job.base),
                    &body,
                )?
            };
            match answer {
                Ok(a) if a.status == 200 => Ok(delivered(&a)),
                Ok(a) => Ok(events_failure(&a, job.item.attempts)),
                Err(o) => Ok(o),
            }
        }
    }
}

/// The NOTIFY action's own transactionId (v1.9 creates the event and notifies in two calls, each
/// idempotent on its transactionId): derived from the item's, so that a resend repeats it.
fn notify_transaction(tx: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{tx}:notify").as_bytes());
    let x = hex::encode(&h[..16]);
    format!(
        "{}-{}-4{}-8{}-{}",
        &x[..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

fn unknown() -> Outcome {
    Outcome::Unknown {
        message: "the notification may have reached OpenCRVS (its answer was lost) and the legacy endpoint can neither be asked nor safely resent: look for it in OpenCRVS, then skip this item if it is there, or retry it if not".into(),
    }
}

fn no_facility(job: &Job) -> Outcome {
    Outcome::rejected(
        "mapping",
        format!("the event's org unit (nor an ancestor) has no [[facility]] (fix {}, then retry this item)", job.target.file),
        None,
    )
}

/// An events-API answer that is not 200: 400 is a rejection with the list of problems, the rest
/// as for any target.
fn events_failure(a: &Answer, attempts: i32) -> Outcome {
    if a.status == 400 {
        let said = if a.body.is_array() {
            super::brief(&a.body.to_string())
        } else {
            http::message(a)
        };
        return Outcome::rejected("rejected", said, Some(400));
    }
    http::failure(a, attempts)
}

fn delivered(a: &Answer) -> Outcome {
    let tracking = a
        .body
        .get("trackingId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            a.body
                .get("entry")?
                .as_array()?
                .iter()
                .filter_map(|e| e.get("resource"))
                .filter(|r| r["resourceType"] == "Task")
                .flat_map(|t| t["identifier"].as_array().cloned().unwrap_or_default())
                .find(|i| {
                    i["system"]
                        .as_str()
                        .is_some_and(|s| s.ends_with("tracking-id"))
                })
                .and_then(|i| i["value"].as_str().map(str::to_string))
        });
    Outcome::Delivered {
        remote_id: tracking,
    }
}

/// Sends with a bearer token, getting one first when none is cached, and once more with a fresh
/// token when OpenCRVS says the token expired (401).
fn send_authorized(
    job: &mut Job,
    crvs: &Crvs,
    url: &str,
    body: &Value,
) -> Result<Result<Answer, Outcome>, Error> {
    for fresh in [false, true] {
        let token = match token(job, crvs, fresh) {
            Ok(t) => t,
            Err(o) => return Ok(Err(o)),
        };
        let req = job
            .client
            .post(url)
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .json(body);
        match http::send(req, true) {
            Ok(a) if a.status == 401 && !fresh => continue,
            other => return Ok(other),
        }
    }
    Ok(Err(Outcome::retry(
        "unauthorized",
        "OpenCRVS refused a fresh token",
    )))
}

fn token(job: &Job, crvs: &Crvs, fresh: bool) -> Result<String, Outcome> {
    let mut cache = job.token.lock().unwrap_or_else(|p| p.into_inner());
    if !fresh {
        if let Some((t, until)) = cache.as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
    }
    let get = |s: &crate::mapping::targets::Setting| {
        s.resolve()
            .map_err(|var| Outcome::retry("configuration", format!("{var} is not set")))
    };
    let (auth, id, secret) = (
        get(&crvs.auth_url)?,
        get(&crvs.client_id)?,
        get(&crvs.client_secret)?,
    );
    // OpenCRVS reads the credentials from the query string, not from a form body.
    let url = format!("{}/token", auth.trim_end_matches('/'));
    let req = job.client.post(&url).query(&[
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
        ("grant_type", "client_credentials"),
    ]);
    let a = http::send(req, false)?;
    if a.status != 200 {
        return Err(Outcome::Retry {
            kind: "unauthorized",
            message: format!(
                "OpenCRVS refused the client credentials (HTTP {}): {}",
                a.status,
                http::message(&a)
            ),
            status: Some(a.status),
            after: None,
            uncertain: false,
        });
    }
    let Some(t) = a.body.get("access_token").and_then(Value::as_str) else {
        return Err(Outcome::retry(
            "target-error",
            "OpenCRVS answered the token request without access_token",
        ));
    };
    let until = Instant::now() + lifetime(t);
    *cache = Some((t.to_string(), until));
    Ok(t.to_string())
}

/// How long to use a token: until a minute before the `exp` of its JWT payload, else 5 minutes.
fn lifetime(token: &str) -> Duration {
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("exp").and_then(Value::as_i64));
    match exp {
        Some(exp) => {
            let left = exp - chrono::Utc::now().timestamp() - 60;
            Duration::from_secs(left.clamp(0, 24 * 3600) as u64)
        }
        None => Duration::from_secs(300),
    }
}

fn gather(job: &mut Job, crvs: &Crvs, event: &str) -> Result<Result<Parts, Outcome>, Error> {
    let person = job.item.person_uid.clone();
    let Some(subject) = job.render("Patient", &person)? else {
        return Ok(Err(Outcome::Skipped {
            message: "the person was deleted before the notification went".into(),
        }));
    };
    let (stages, elements, relationship) = match (event, &crvs.birth, &crvs.death) {
        ("birth", Some((rel, st, de)), _) => (st.clone(), de.clone(), Some(*rel)),
        ("death", _, Some((_, st, de))) => (st.clone(), de.clone(), None),
        _ => {
            return Ok(Err(Outcome::rejected(
                "configuration",
                format!("the target has no [{event}] table"),
                None,
            )))
        }
    };
    let found = store::notification_parts(job.conn, &person, relationship, &stages, &elements)?;
    let mother = match &found.mother {
        Some(m) => job.render("Patient", m)?,
        None => None,
    };
    let ev = match &found.event {
        Some(e) => job.render("Encounter", e)?,
        None => None,
    };
    let value = match &found.value {
        Some(v) => job.render("Observation", v)?,
        None => None,
    };
    let place = ev
        .as_ref()
        .and_then(|e| e.pointer("/serviceProvider/reference"))
        .or_else(|| subject.pointer("/managingOrganization/reference"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("Organization/"))
        .and_then(|uid| job.env.md.org_unit(uid))
        .map(|o| o.id);
    let facility = place
        .and_then(|id| crvs.facility_for(job.env.md, id))
        .cloned();
    Ok(Ok(Parts {
        subject,
        mother,
        event: ev,
        value,
        facility,
    }))
}

fn name_of(p: &Value) -> Value {
    let n = &p["name"][0];
    let given = n["given"].as_array().map(|g| {
        g.iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let mut out = json!({ "surname": n["family"].as_str().unwrap_or_default() });
    if let Some(g) = given.filter(|g| !g.is_empty()) {
        out["firstname"] = json!(g);
    }
    out
}

fn gender_of(p: &Value) -> &str {
    match p["gender"].as_str() {
        Some("male") => "male",
        Some("female") => "female",
        _ => "unknown",
    }
}

/// The value of the person's identifier in a system the target maps (its first).
fn national_id<'a>(job: &Job, p: &'a Value) -> Option<(&'a str, String)> {
    p["identifier"].as_array()?.iter().find_map(|i| {
        let out = job.target.identifier(i["system"].as_str()?)?;
        Some((
            i["value"].as_str()?,
            out.type_name
                .clone()
                .unwrap_or_else(|| "NATIONAL_ID".into()),
        ))
    })
}

fn kg(value: &Value) -> Option<f64> {
    let q = value.get("valueQuantity")?;
    let n = q.get("value")?.as_f64()?;
    let unit = q
        .get("code")
        .or_else(|| q.get("unit"))
        .and_then(Value::as_str)
        .unwrap_or("kg");
    crate::translate::units::convert(n, unit, "kg")
        .ok()
        .map(|v| (v * 1000.0).round() / 1000.0)
}

fn icd10(value: &Value) -> Option<&str> {
    value["valueCodeableConcept"]["coding"]
        .as_array()?
        .iter()
        .find(|c| c["system"] == ICD10)
        .and_then(|c| c["code"].as_str())
}

fn day(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .and_then(|s| s.get(..10))
        .map(str::to_string)
}

fn declaration(job: &Job, crvs: &Crvs, event: &str, parts: &Parts) -> Value {
    let mut d = Map::new();
    let mut put = |ours: &str, v: Option<Value>| {
        if let (Some(field), Some(v)) = (crvs.field(ours), v) {
            d.insert(field.to_string(), v);
        }
    };
    let s = &parts.subject;
    let facility = parts.facility.as_ref().map(|f| json!(f.facility));
    if event == "birth" {
        put("child_name", Some(name_of(s)));
        put("child_dob", s.get("birthDate").cloned());
        put("child_gender", Some(json!(gender_of(s))));
        put(
            "place_of_birth",
            facility.as_ref().map(|_| json!("HEALTH_FACILITY")),
        );
        put("birth_location", facility);
        put(
            "birth_weight",
            parts.value.as_ref().and_then(kg).map(|v| json!(v)),
        );
        if let Some(m) = &parts.mother {
            put("mother_name", Some(name_of(m)));
            put("mother_dob", m.get("birthDate").cloned());
            put("mother_nid", national_id(job, m).map(|(v, _)| json!(v)));
            put("informant", Some(json!("MOTHER")));
        }
    } else {
        put("deceased_name", Some(name_of(s)));
        put("deceased_dob", s.get("birthDate").cloned());
        put("deceased_gender", Some(json!(gender_of(s))));
        put("deceased_nid", national_id(job, s).map(|(v, _)| json!(v)));
        put(
            "death_date",
            day(s.get("deceasedDateTime")).map(|d| json!(d)),
        );
        put(
            "place_of_death",
            facility.as_ref().map(|_| json!("HEALTH_FACILITY")),
        );
        put("death_location", facility);
        let cause = parts.value.as_ref().and_then(icd10);
        put("cause_established", cause.map(|_| json!(true)));
        put("cause_of_death", cause.map(|c| json!(c)));
    }
    Value::Object(d)
}

/// The legacy `document` Bundle: Composition, draft Task, then the people, the encounter at the
/// facility and the observation linked to it with `context`.
fn legacy_bundle(job: &Job, crvs: &Crvs, event: &str, parts: &Parts) -> Result<Value, Outcome> {
    let Some(facility) = &parts.facility else {
        return Err(no_facility(job));
    };
    let birth = event == "birth";
    let urn = |n: u32| {
        format!(
            "urn:uuid:{}-{:04x}-4000-8000-{:012x}",
            &job.item.transaction_id[..8],
            n,
            n
        )
    };
    let (subject_urn, mother_urn, informant_urn, encounter_urn, obs_urn, composition_urn) =
        (urn(1), urn(2), urn(3), urn(4), urn(5), urn(6));
    let address = json!([{
        "type": "PRIMARY_ADDRESS", "country": crvs.country,
        "state": facility.state, "district": facility.district
    }]);
    let person = |p: &Value, deceased: bool| -> Value {
        let n = name_of(p);
        let mut name = json!({ "use": "en", "family": n["surname"] });
        if let Some(g) = n["firstname"].as_str() {
            name["given"] = json!(g.split(' ').collect::<Vec<_>>());
        }
        let mut out = json!({ "resourceType": "Patient", "name": [name], "address": address });
        for k in ["gender", "birthDate"] {
            if let Some(v) = p.get(k) {
                out[k] = v.clone();
            }
        }
        if let Some((value, ty)) = national_id(job, p) {
            out["identifier"] = json!([{ "value": value, "type": { "coding": [{ "system": ID_TYPE, "code": ty }] } }]);
        }
        if deceased {
            out["deceasedBoolean"] = json!(true);
            if let Some(d) = p.get("deceasedDateTime") {
                out["deceasedDateTime"] = d.clone();
            }
        }
        out
    };
    if !birth && parts.subject.get("deceasedDateTime").is_none() {
        return Err(Outcome::rejected(
            "incomplete",
            "OpenCRVS needs the date of death (Patient.deceasedDateTime); the registry only knows that the person died",
            None,
        ));
    }
    let mut sections = vec![(
        if birth {
            "child-details"
        } else {
            "deceased-details"
        },
        &subject_urn,
    )];
    let mut entries = Vec::new();
    entries.push((subject_urn.clone(), person(&parts.subject, !birth)));
    if let (true, Some(m)) = (birth, &parts.mother) {
        sections.push(("mother-details", &mother_urn));
        sections.push(("informant-details", &informant_urn));
        entries.push((mother_urn.clone(), person(m, false)));
        entries.push((
            informant_urn.clone(),
            json!({
                "resourceType": "RelatedPerson",
                "relationship": { "coding": [{ "system": "http://hl7.org/fhir/ValueSet/relatedperson-relationshiptype", "code": "MOTHER" }] },
                "patient": { "reference": mother_urn }
            }),
        ));
    }
    sections.push((
        if birth {
            "birth-encounter"
        } else {
            "death-encounter"
        },
        &encounter_urn,
    ));
    let mut encounter = json!({
        "resourceType": "Encounter", "status": "finished",
        "location": [{ "location": { "reference": format!("Location/{}", facility.facility) } }],
        "subject": { "reference": subject_urn }
    });
    if let Some(p) = parts.event.as_ref().and_then(|e| e.get("period")) {
        encounter["period"] = p.clone();
    }
    entries.push((encounter_urn.clone(), encounter));
    if let Some(v) = &parts.value {
        let obs = if birth {
            kg(v).map(|w| json!({
                "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": "3141-9", "display": "Body weight Measured" }] },
                "subject": { "reference": subject_urn },
                "context": { "reference": encounter_urn },
                "valueQuantity": { "value": w, "unit": "kg", "system": UCUM, "code": "kg" }
            }))
        } else {
            icd10(v).map(|c| json!({
                "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": "69453-9", "display": "Cause of death" }] },
                "subject": { "reference": subject_urn },
                "context": { "reference": encounter_urn },
                "valueCodeableConcept": { "coding": [{ "system": ICD10, "code": c }] }
            }))
        };
        if let Some(o) = obs {
            entries.push((obs_urn.clone(), o));
        }
    }
    let code = if birth {
        "birth-notification"
    } else {
        "death-notification"
    };
    let composition = json!({
        "resourceType": "Composition", "status": "preliminary",
        "type": { "coding": [{ "system": DOC_TYPES, "code": code }] },
        "class": { "coding": [{ "system": "http://opencrvs.org/specs/classes", "code": "crvs-document" }] },
        "subject": { "reference": subject_urn },
        "date": crate::fhir::instant(&chrono::Utc::now()),
        "author": [],
        "title": if birth { "Birth notification" } else { "Death notification" },
        "section": sections.iter().map(|(s, r)| json!({
            "title": s, "code": { "coding": [{ "system": SECTIONS, "code": s }] },
            "entry": [{ "reference": r }]
        })).collect::<Vec<_>>()
    });
    let task = json!({
        "resourceType": "Task", "status": "draft", "intent": "unknown",
        "code": { "coding": [{ "system": "http://opencrvs.org/specs/types", "code": if birth { "BIRTH" } else { "DEATH" } }] },
        "focus": { "reference": composition_urn },
        "extension": [{ "url": format!("{EXT}regLastOffice"), "valueReference": { "reference": format!("Location/{}", facility.office) } }]
    });
    let mut all = vec![
        json!({ "fullUrl": composition_urn, "resource": composition }),
        json!({ "fullUrl": urn(7), "resource": task }),
    ];
    all.extend(
        entries
            .into_iter()
            .map(|(u, r)| json!({ "fullUrl": u, "resource": r })),
    );
    Ok(json!({
        "resourceType": "Bundle", "type": "document",
        "meta": { "lastUpdated": crate::fhir::instant(&chrono::Utc::now()) },
        "entry": all
    }))
}
