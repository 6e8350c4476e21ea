//! CodeSystem and ConceptMap (generated from the mapping files) and the terminology operations.

use actix_web::web;
use serde_json::Value;

use crate::app::AppState;
use crate::error::Error;
use crate::fhir::bundle::{self, SearchEntry};
use crate::fhir::search::Param;
use crate::fhir::FhirResponse;
use crate::terminology::fhir as tx;

fn generated(state: &AppState, t: &str) -> Vec<Value> {
    let m = state.mappings();
    match t {
        "ConceptMap" => tx::concept_maps(&m.terminology, &state.base),
        _ => tx::code_systems(&m.terminology),
    }
}

pub fn read(state: &AppState, t: &str, id: &str) -> Result<FhirResponse, Error> {
    generated(state, t)
        .into_iter()
        .find(|r| r["id"] == id)
        .map(FhirResponse::ok)
        .ok_or_else(|| Error::NotFound(format!("{t}/{id} is not defined by the mapping files")))
}

pub fn search(state: &AppState, t: &str, params: &[Param]) -> Result<FhirResponse, Error> {
    let mut found = generated(state, t);
    for p in params {
        let field: &[&str] = match (t, p.name.as_str()) {
            (_, "_count" | "_format" | "_pretty") => continue,
            (_, "_id") => &["id"],
            (_, "url") => &["url"],
            (_, "name") => &["name"],
            ("CodeSystem", "system") => &["url"],
            ("ConceptMap", "source" | "source-uri") => &["sourceUri"],
            ("ConceptMap", "target" | "target-uri") => &["targetUri"],
            (_, other) => {
                return Err(Error::invalid(format!(
                    "unknown search parameter `{other}` for {t} (supported: _id, url, name, {})",
                    if t == "ConceptMap" {
                        "source, target"
                    } else {
                        "system"
                    }
                )))
            }
        };
        let wanted: Vec<&str> = p.value.split(',').collect();
        found.retain(|r| {
            field.iter().any(|f| {
                let v = r[*f].as_str().unwrap_or_default();
                if p.name == "name" {
                    wanted
                        .iter()
                        .any(|w| v.to_lowercase().starts_with(&w.to_lowercase()))
                } else {
                    wanted.contains(&v)
                }
            })
        });
    }
    let total = found.len() as i64;
    let entries = found
        .into_iter()
        .map(|r| SearchEntry {
            resource: r,
            mode: "match",
        })
        .collect();
    Ok(FhirResponse::ok(bundle::searchset(
        &state.base,
        entries,
        Some(total),
        vec![],
    )))
}

/// Operation parameters from the query string and, for POST, a `Parameters` body.
pub fn op_params(query: &[Param], body: Option<&Value>) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = query
        .iter()
        .map(|p| (p.name.clone(), Value::String(p.value.clone())))
        .collect();
    if let Some(params) = body
        .and_then(|b| b.get("parameter"))
        .and_then(Value::as_array)
    {
        for p in params {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let value = p
                .as_object()
                .and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.starts_with("value"))
                        .map(|(_, v)| v.clone())
                })
                .unwrap_or(Value::Null);
            out.push((name, value));
        }
    }
    out
}

fn param<'a>(params: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn text(params: &[(String, Value)], name: &str) -> Option<String> {
    param(params, name)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `ConceptMap/$translate` (system + code, or coding; targetsystem optional).
pub fn translate(state: &AppState, params: &[(String, Value)]) -> Result<FhirResponse, Error> {
    let (system, code) = match param(params, "coding") {
        Some(c) if c.is_object() => (
            c["system"].as_str().map(str::to_string),
            c["code"].as_str().map(str::to_string),
        ),
        _ => (text(params, "system"), text(params, "code")),
    };
    let (Some(system), Some(code)) = (system, code) else {
        return Err(Error::invalid(
            "$translate needs `system` and `code` (or a `coding`)",
        ));
    };
    // R4's `target` is a value set, not a system: only `targetsystem` chooses the system.
    let target = text(params, "targetsystem");
    let m = state.mappings();
    Ok(FhirResponse::ok(tx::translate(
        &m.terminology,
        &state.base,
        &system,
        &code,
        target.as_deref(),
    )))
}

/// `CodeSystem/$lookup` (system + code).
pub fn lookup(state: &AppState, params: &[(String, Value)]) -> Result<FhirResponse, Error> {
    let (Some(system), Some(code)) = (text(params, "system"), text(params, "code")) else {
        return Err(Error::invalid("$lookup needs `system` and `code`"));
    };
    let m = state.mappings();
    tx::lookup(&m.terminology, &system, &code)
        .map(FhirResponse::ok)
        .ok_or_else(|| {
            Error::NotFound(format!("{system}|{code} is not a code this registry knows"))
        })
}

pub async fn body_params(
    req: &actix_web::HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Option<Value>, Error> {
    if req.method() != actix_web::http::Method::POST {
        return Ok(None);
    }
    let input = super::incoming(req, payload, state, "Parameters").await?;
    Ok(Some(input.resource))
}

/// `CodeSystem/$validate-code` (`url` or `system`, `code`, optional `display`).
pub fn validate_code(state: &AppState, params: &[(String, Value)]) -> Result<FhirResponse, Error> {
    let system = text(params, "url").or_else(|| text(params, "system"));
    let (Some(system), Some(code)) = (system, text(params, "code")) else {
        return Err(Error::invalid(
            "CodeSystem/$validate-code needs `url` (the system) and `code`",
        ));
    };
    let m = state.mappings();
    Ok(FhirResponse::ok(tx::validate_code(
        &m.terminology,
        &system,
        &code,
        text(params, "display").as_deref(),
    )))
}

/// `ValueSet/$validate-code`, see [`super::valueset::validate_code`].
pub fn validate_value_set(
    state: &AppState,
    params: &[(String, Value)],
) -> Result<FhirResponse, Error> {
    super::valueset::validate_code(
        state,
        text(params, "url").as_deref(),
        text(params, "system").as_deref(),
        text(params, "code").as_deref(),
    )
}
