//! `Patient/$merge` (FHIR R5's operation, served on R4) and `Patient/$unmerge`: their
//! `Parameters`, the records they name (by reference or by identifiers) and their answer
//! (`input`, `outcome`, `result`). The rules are in `tracker::merge`.

use serde_json::{json, Value};

use crate::error::Error;
use crate::fhir::outcome::{Issue, OperationOutcome};
use crate::store::{patients, Scoped};
use crate::tracker::merge::{self, MergeDone, MergeRequest};
use crate::tracker::Env;
use crate::translate;

/// A record named by a `*-patient` reference and/or `*-patient-identifier`s.
#[derive(Default)]
struct Named {
    reference: Option<String>,
    identifiers: Vec<(String, String, String)>,
}

/// What `$merge` or `$unmerge` was sent, read from its `Parameters`.
pub struct MergeParams {
    source: Named,
    target: Named,
    result: Option<Value>,
    preview: bool,
    input: Value,
}

fn param_at(i: usize) -> String {
    format!("Parameters.parameter[{i}]")
}

/// Reads the parameters; `op` names the operation in messages.
pub fn params(body: Value, op: &str) -> Result<MergeParams, Error> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(Error::invalid(format!(
            "{op} takes a Parameters resource (source-patient, target-patient, their identifiers, result-patient, preview)"
        )));
    }
    let mut p = MergeParams {
        source: Named::default(),
        target: Named::default(),
        result: None,
        preview: false,
        input: body.clone(),
    };
    let list = body
        .get("parameter")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, item) in list.into_iter().enumerate() {
        let at = param_at(i);
        let name = item.get("name").and_then(Value::as_str).unwrap_or("");
        match name {
            "source-patient" | "target-patient" => {
                let reference = item
                    .pointer("/valueReference/reference")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Error::invalid_at(
                            format!("{name} is a valueReference to a Patient (`Patient/<id>`)"),
                            &at,
                        )
                    })?;
                let id = translate::reference_id(reference, "Patient").ok_or_else(|| {
                    Error::invalid_at(
                        format!("{name} must reference a Patient (`Patient/<id>`), not `{reference}`"),
                        &at,
                    )
                })?;
                let named = if name == "source-patient" {
                    &mut p.source
                } else {
                    &mut p.target
                };
                if named.reference.is_some() {
                    return Err(Error::invalid_at(format!("{name} is given twice"), at));
                }
                named.reference = Some(id.to_owned());
            }
            "source-patient-identifier" | "target-patient-identifier" => {
                let ident = item.get("valueIdentifier");
                let part = |k: &str| {
                    ident
                        .and_then(|x| x.get(k))
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                };
                let (Some(system), Some(value)) = (part("system"), part("value")) else {
                    return Err(Error::invalid_at(
                        format!("{name} is a valueIdentifier with both system and value"),
                        at,
                    ));
                };
                let named = if name == "source-patient-identifier" {
                    &mut p.source
                } else {
                    &mut p.target
                };
                named
                    .identifiers
                    .push((system.to_owned(), value.to_owned(), at));
            }
            "result-patient" => match item.get("resource") {
                Some(r) if r["resourceType"] == "Patient" => p.result = Some(r.clone()),
                _ => {
                    return Err(Error::invalid_at(
                        "result-patient must hold a Patient resource",
                        at,
                    ))
                }
            },
            "preview" => {
                p.preview = item
                    .get("valueBoolean")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| Error::invalid_at("preview is a valueBoolean", &at))?;
            }
            other => {
                return Err(Error::invalid_at(
                    format!("{op} takes source-patient, source-patient-identifier, target-patient, target-patient-identifier, result-patient and preview, not `{other}`"),
                    at,
                ))
            }
        }
    }
    Ok(p)
}

/// The uid of the one record `named` resolves to: its reference, and every identifier, which
/// must all name the same live, unmerged person the caller may see.
fn resolve(s: &mut Scoped, env: &Env, named: &Named, param: &str) -> Result<String, Error> {
    let mut uid = named.reference.clone();
    for (system, value, at) in &named.identifiers {
        let domain = env.mappings.patient.identifier(system).ok_or_else(|| {
            Error::rule(
                format!("{param}-identifier: `{system}` is not an identifier system of this registry (the systems are declared in mappings/patient.toml)"),
                Some(at.clone()),
            )
        })?;
        let holders = patients::holding(s, domain.attribute_id, value)?;
        let found = match holders.as_slice() {
            [one] => one.uid.clone(),
            [] => {
                return Err(Error::rule(
                    format!("{param}-identifier: no person you may see holds that {system} identifier"),
                    Some(at.clone()),
                ))
            }
            _ => {
                return Err(Error::rule(
                    format!("{param}-identifier: {} people hold that {system} identifier; name the record with {param} instead", holders.len()),
                    Some(at.clone()),
                ))
            }
        };
        match &uid {
            Some(u) if *u != found => {
                return Err(Error::rule(
                    format!("{param}-identifier and {param} name different records (Patient/{found} and Patient/{u})"),
                    Some(at.clone()),
                ))
            }
            _ => uid = Some(found),
        }
    }
    uid.ok_or_else(|| {
        Error::invalid_at(
            format!("{param} (or {param}-identifier) is required: the record to merge"),
            param,
        )
    })
}

fn render(
    s: &mut Scoped,
    env: &Env,
    p: &crate::tracker::model::PersonRecord,
) -> Result<Value, Error> {
    let mut r = translate::patient::to_fhir(p, &env.mappings.patient, env.md);
    super::decorate(s, std::iter::once(&mut r))?;
    Ok(r)
}

fn outcome(summary: String, done: &MergeDone) -> Value {
    let mut issues = vec![Issue::information(summary)];
    issues.extend(done.warnings.iter().cloned());
    OperationOutcome::new(issues).into_json()
}

fn counts(d: &MergeDone) -> String {
    format!(
        "{} enrollment(s), {} Encounter(s), {} Observation(s), {} relationship(s) and {} identifier(s)",
        d.enrollments, d.events, d.observations, d.relationships, d.identifiers
    )
}

pub fn merge(s: &mut Scoped, env: &Env, p: &MergeParams) -> Result<Value, Error> {
    let source = resolve(s, env, &p.source, "source-patient")?;
    let target = resolve(s, env, &p.target, "target-patient")?;
    let result = match &p.result {
        Some(r) => {
            if let Some(id) = r.get("id").and_then(Value::as_str) {
                if id != target {
                    return Err(Error::rule(
                        format!("result-patient has id {id}, but the target is Patient/{target}: result-patient is the target as it should be after the merge"),
                        Some("result-patient".into()),
                    ));
                }
            }
            Some(translate::patient::to_tracker(
                r,
                &env.mappings.patient,
                env.md,
            )?)
        }
        None => None,
    };
    let done = merge::merge(
        s,
        env,
        &MergeRequest {
            source: &source,
            target: &target,
            result: result.as_ref(),
            preview: p.preview,
        },
    )?;
    let summary = if p.preview {
        format!(
            "preview: merging Patient/{source} into Patient/{target} would move {}; nothing was changed",
            counts(&done)
        )
    } else {
        format!(
            "Patient/{source} was merged into Patient/{target}: moved {}. Patient/{source} is kept, inactive, and Patient/$unmerge undoes this",
            counts(&done)
        )
    };
    let mut result_patient = render(s, env, &done.target)?;
    if p.preview {
        // Not stored: no version of it exists yet.
        if let Some(o) = result_patient.as_object_mut() {
            o.remove("meta");
        }
    }
    Ok(json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "input", "resource": p.input },
            { "name": "outcome", "resource": outcome(summary, &done) },
            { "name": "result", "resource": result_patient },
        ],
    }))
}

pub fn unmerge(s: &mut Scoped, env: &Env, p: &MergeParams) -> Result<Value, Error> {
    if p.result.is_some() || p.preview {
        return Err(Error::invalid(
            "$unmerge takes source-patient (and optionally target-patient) only",
        ));
    }
    // A merged record is not found by identifier (its identifiers moved): name it by reference.
    let source = p.source.reference.clone().ok_or_else(|| {
        Error::invalid_at(
            "$unmerge needs source-patient: a reference to the record that was merged away",
            "source-patient",
        )
    })?;
    let target = match (&p.target.reference, p.target.identifiers.is_empty()) {
        (None, true) => None,
        _ => Some(resolve(s, env, &p.target, "target-patient")?),
    };
    let done = merge::unmerge(s, env, &source, target.as_deref())?;
    let summary = format!(
        "the merge of Patient/{source} into Patient/{} was undone: moved back {}. The pair is recorded as two people (never proposed again)",
        done.target.uid,
        counts(&done)
    );
    let restored = render(s, env, &done.source)?;
    let survivor = render(s, env, &done.target)?;
    Ok(json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "input", "resource": p.input },
            { "name": "outcome", "resource": outcome(summary, &done) },
            { "name": "result", "resource": restored },
            { "name": "target", "resource": survivor },
        ],
    }))
}
