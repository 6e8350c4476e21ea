//! RelatedPerson and EpisodeOfCare rendering (a few queries whatever their number),
//! `Patient/{id}/$transfer` and `Patient/{id}/$break-glass`. The links a related person's own
//! Patient carries to the RelatedPersons that represent her come with the identity links
//! (`store::links::linked`, one statement).

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::Error;
use crate::store::Scoped;
use crate::tracker::metadata::Program;
use crate::tracker::model::{EnrollmentRecord, PersonRecord, RelationshipRecord};
use crate::tracker::{episodes, Env};
use crate::translate;

/// RelatedPersons with their related person's demographics, in the order given.
pub fn render_related(
    s: &mut Scoped,
    env: &Env,
    records: &[RelationshipRecord],
) -> Result<Vec<Value>, Error> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = records.iter().map(|r| r.ends().1).collect();
    let people: HashMap<i64, PersonRecord> = crate::store::patients::by_ids(s, &ids)?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    Ok(records
        .iter()
        .map(|r| {
            translate::related_person::to_fhir(r, people.get(&r.ends().1), env.mappings, env.md)
        })
        .collect())
}

/// One RelatedPerson version (its related person as she is now, found by uid).
pub fn render_related_version(
    s: &mut Scoped,
    env: &Env,
    r: &RelationshipRecord,
) -> Result<Value, Error> {
    let uid = if r.related_is_from {
        &r.from_uid
    } else {
        &r.to_uid
    };
    let person = crate::store::patients::find(s, env.mappings.patient.entity_type_id, uid)?;
    Ok(translate::related_person::to_fhir(
        r,
        person.as_ref(),
        env.mappings,
        env.md,
    ))
}

pub fn render_episode(env: &Env, e: &EnrollmentRecord) -> Value {
    translate::episode::to_fhir(e, env.mappings, env.md)
}

/// What `$transfer` was asked.
pub struct TransferRequest {
    pub program: String,
    pub organization: String,
    pub reason: Option<String>,
}

fn param_str(p: &Value) -> Option<&str> {
    ["valueCode", "valueString", "valueId"]
        .iter()
        .find_map(|k| p.get(*k).and_then(Value::as_str))
        .or_else(|| {
            p.pointer("/valueCoding/code")
                .or_else(|| p.pointer("/valueCodeableConcept/coding/0/code"))
                .and_then(Value::as_str)
        })
}

/// Reads `$transfer`'s Parameters: `program` (a code, UID or EpisodeOfCare.type coding),
/// `organization` (valueReference to an Organization, or its code/UID) and `reason`.
pub fn transfer_params(body: Value) -> Result<TransferRequest, Error> {
    if body["resourceType"] != "Parameters" {
        return Err(Error::invalid(
            "$transfer takes a Parameters resource (program, organization, reason)",
        ));
    }
    let (mut program, mut organization, mut reason) = (None, None, None);
    for p in body["parameter"].as_array().into_iter().flatten() {
        match p["name"].as_str().unwrap_or_default() {
            "program" => program = param_str(p).map(str::to_string),
            "organization" => {
                organization = p
                    .pointer("/valueReference/reference")
                    .and_then(Value::as_str)
                    .map(|r| {
                        translate::reference_id(r, "Organization")
                            .unwrap_or(r)
                            .to_string()
                    })
                    .or_else(|| param_str(p).map(str::to_string))
            }
            "reason" => reason = param_str(p).map(str::to_string),
            other => {
                return Err(Error::invalid(format!(
                    "$transfer takes program, organization and reason, not `{other}`"
                )))
            }
        }
    }
    Ok(TransferRequest {
        program: program.ok_or_else(|| {
            Error::invalid("$transfer needs `program`: the program's code or UID (e.g. ANC)")
        })?,
        organization: organization.ok_or_else(|| {
            Error::invalid(
                "$transfer needs `organization`: valueReference Organization/<id> of the new owner",
            )
        })?,
        reason,
    })
}

/// `POST Patient/{id}/$break-glass` (`program`, `reason`): answers Parameters with the program
/// and when the grant expires.
pub fn break_glass(
    s: &mut Scoped,
    env: &Env,
    person_uid: &str,
    body: Value,
    duration: chrono::Duration,
) -> Result<Value, Error> {
    if body["resourceType"] != "Parameters" {
        return Err(Error::invalid(
            "$break-glass takes a Parameters resource (program, reason)",
        ));
    }
    let (mut program, mut reason) = (None, None);
    for p in body["parameter"].as_array().into_iter().flatten() {
        match p["name"].as_str().unwrap_or_default() {
            "program" => program = param_str(p).map(str::to_string),
            "reason" => reason = param_str(p).map(str::to_string),
            other => {
                return Err(Error::invalid(format!(
                    "$break-glass takes program and reason, not `{other}`"
                )))
            }
        }
    }
    let program = program.ok_or_else(|| {
        Error::invalid("$break-glass needs `program`: the protected program's code or UID")
    })?;
    let p = find_program(env, &program)?;
    let expires = episodes::break_glass(
        s,
        env,
        person_uid,
        p.id,
        reason.as_deref().unwrap_or_default(),
        duration,
    )?;
    Ok(json!({ "resourceType": "Parameters", "parameter": [
        { "name": "program", "valueCode": p.code.clone().unwrap_or_else(|| p.uid.clone()) },
        { "name": "expires", "valueInstant": crate::fhir::instant(&expires) },
    ]}))
}

fn find_program<'m>(env: &'m Env, key: &str) -> Result<&'m Program, Error> {
    env.md
        .program(key)
        .or_else(|| {
            env.mappings
                .care
                .programs
                .iter()
                .find(|p| p.coding.code == key)
                .and_then(|p| env.md.program_by_id(p.program_id))
        })
        .ok_or_else(|| {
            Error::rule(
                format!(
                    "`{key}` is not a program of this registry (programs: {})",
                    crate::mapping::known_list(
                        env.md
                            .programs
                            .iter()
                            .map(|p| p.code.as_deref().unwrap_or(&p.uid))
                    )
                ),
                Some("Parameters.parameter[program]".into()),
            )
        })
}

/// `POST Patient/{id}/$transfer`: answers Parameters naming the previous and new owner and the
/// EpisodeOfCare versions the transfer wrote.
pub fn transfer(
    s: &mut Scoped,
    env: &Env,
    person_uid: &str,
    req: &TransferRequest,
) -> Result<Value, Error> {
    let program = find_program(env, &req.program)?;
    let to = env.md.org_unit(&req.organization).ok_or_else(|| {
        Error::rule(
            format!(
                "$transfer: `{}` is not an org unit of this registry",
                req.organization
            ),
            Some("Parameters.parameter[organization]".into()),
        )
    })?;
    let (from, moved) =
        episodes::transfer(s, env, person_uid, program.id, to.id, req.reason.as_deref())?;
    let mut parameter = vec![
        json!({ "name": "program", "valueCode": program.code.clone().unwrap_or_else(|| program.uid.clone()) }),
    ];
    if let Some(f) = from.and_then(|f| env.md.org_unit_by_id(f)) {
        parameter.push(json!({ "name": "from", "valueReference": { "reference": format!("Organization/{}", f.uid), "display": f.name } }));
    }
    parameter.push(json!({ "name": "to", "valueReference": { "reference": format!("Organization/{}", to.uid), "display": to.name } }));
    for e in &moved {
        parameter.push(json!({ "name": "episodeOfCare", "resource": render_episode(env, e) }));
    }
    Ok(json!({ "resourceType": "Parameters", "parameter": parameter }))
}
