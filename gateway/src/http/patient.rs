//! Patient: create, read, vread, update, delete, history.

use actix_web::web;

use super::{context, Incoming};
use crate::app::{tx, AppState};
use crate::error::Error;
use crate::fhir::bundle::{self, HistoryEntry};
use crate::fhir::outcome::{Issue, OperationOutcome};
use crate::fhir::{FhirResponse, Negotiated, Return};
use crate::store::logs::Inbound;
use crate::tracker::model::PersonRecord;
use crate::tracker::patients::{self, Written};
use crate::translate::patient::{to_fhir, to_tracker, PatientWrite};

/// Translates the body; in strict mode, elements no mapping holds are a 422 instead of warnings.
fn translate(state: &AppState, mappings: &crate::mapping::MappingSet, input: &Incoming) -> Result<PatientWrite, Error> {
    let write = to_tracker(&input.resource, &mappings.patient, &state.metadata)?;
    if state.config.strict_mapping && !write.unmapped.is_empty() {
        let issues = write
            .unmapped
            .iter()
            .map(|w| Issue::error("business-rule", format!("{} (strict mapping mode refuses input it cannot store)", w.diagnostics), w.expression.clone()))
            .collect();
        return Err(Error::Unprocessable(issues));
    }
    Ok(write)
}

fn written_response(state: &AppState, n: &Negotiated, w: &Written, warnings: Vec<Issue>) -> FhirResponse {
    let mappings = state.mappings();
    let r = &w.record;
    let body = match n.return_pref {
        Return::Minimal => None,
        Return::Representation => Some(to_fhir(r, &mappings.patient, &state.metadata)),
        Return::OperationOutcome => {
            let verb = if w.created { "created" } else { "updated" };
            let mut issues = vec![Issue::information(format!("Patient/{} {verb} (version {})", r.uid, r.version))];
            issues.extend(warnings);
            Some(OperationOutcome::new(issues).into_json())
        }
    };
    FhirResponse {
        status: if w.created { 201 } else { 200 },
        body,
        version: Some(r.version),
        last_modified: Some(r.last_updated),
        location: Some(format!("{}/Patient/{}/_history/{}", state.base, r.uid, r.version)),
    }
}

fn record_response(state: &AppState, r: &PersonRecord) -> FhirResponse {
    let mappings = state.mappings();
    FhirResponse { status: 200, body: Some(to_fhir(r, &mappings.patient, &state.metadata)), version: Some(r.version), last_modified: Some(r.last_updated), location: None }
}

pub async fn create(state: &web::Data<AppState>, n: &Negotiated, input: Incoming) -> Result<FhirResponse, Error> {
    let mappings = state.mappings();
    let write = translate(state, &mappings, &input)?;
    let default_org = state.default_org_unit;
    let warnings = write.unmapped.clone();
    let version = mappings.version.clone();
    let w = tx(
            state,context(n), mappings, move |s, env| {
            let inbound = Inbound { interaction: "create", resource_type: "Patient", uid: None, content_type: &input.content_type, body: &input.bytes, mapping_version: &version };
            patients::create(s, env, &write, default_org, inbound)
        })
        .await?;
    Ok(written_response(state, n, &w, warnings))
}

pub async fn update(state: &web::Data<AppState>, n: &Negotiated, id: String, if_match: Option<i32>, input: Incoming) -> Result<FhirResponse, Error> {
    let mappings = state.mappings();
    let write = translate(state, &mappings, &input)?;
    let default_org = state.default_org_unit;
    let warnings = write.unmapped.clone();
    let version = mappings.version.clone();
    let w = tx(
            state,context(n), mappings, move |s, env| {
            let inbound = Inbound { interaction: "update", resource_type: "Patient", uid: None, content_type: &input.content_type, body: &input.bytes, mapping_version: &version };
            patients::update(s, env, &id, if_match, &write, default_org, inbound)
        })
        .await?;
    Ok(written_response(state, n, &w, warnings))
}

pub async fn read(state: &web::Data<AppState>, n: &Negotiated, id: String) -> Result<FhirResponse, Error> {
    let r = tx(state, context(n), state.mappings(), move |s, env| patients::read(s, env, &id)).await?;
    Ok(record_response(state, &r))
}

pub async fn vread(state: &web::Data<AppState>, n: &Negotiated, id: String, version: i32) -> Result<FhirResponse, Error> {
    let r = tx(state, context(n), state.mappings(), move |s, env| patients::vread(s, env, &id, version)).await?;
    Ok(record_response(state, &r))
}

pub async fn delete(state: &web::Data<AppState>, n: &Negotiated, id: String) -> Result<FhirResponse, Error> {
    let id2 = id.clone();
    let version = tx(state, context(n), state.mappings(), move |s, env| patients::delete(s, env, &id2)).await?;
    let message = match version {
        Some(v) => format!("Patient/{id} deleted (version {v})"),
        None => format!("Patient/{id} was already deleted"),
    };
    Ok(FhirResponse { status: 200, body: Some(OperationOutcome::new(vec![Issue::information(message)]).into_json()), version, ..Default::default() })
}

pub async fn history(state: &web::Data<AppState>, n: &Negotiated, id: String) -> Result<FhirResponse, Error> {
    let id2 = id.clone();
    let versions = tx(state, context(n), state.mappings(), move |s, env| patients::history(s, env, &id2)).await?;
    let mappings = state.mappings();
    let entries = versions
        .into_iter()
        .map(|(version, operation, at, rec)| HistoryEntry {
            resource_type: "Patient",
            id: id.clone(),
            version,
            at,
            operation,
            resource: rec.map(|r| to_fhir(&r, &mappings.patient, &state.metadata)),
        })
        .collect();
    let self_link = format!("{}/Patient/{id}/_history", state.base);
    Ok(FhirResponse::ok(bundle::history(&state.base, entries, self_link)))
}

