//! Option sets as FHIR ValueSets: read, search and `$validate-code`.

use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::Error;
use crate::fhir::bundle::{self, SearchEntry};
use crate::fhir::search::Param;
use crate::fhir::FhirResponse;
use crate::tracker::metadata::OptionSet;

/// The code system an option set's codes belong to, when a mapping says so (a coded data element's
/// `value_system` in observation.toml).
fn system_of(state: &AppState, set: &OptionSet) -> Option<String> {
    let m = state.mappings();
    m.observation.codes.iter().find_map(|c| {
        let de = state
            .metadata
            .data_elements
            .iter()
            .find(|d| d.id == c.data_element_id)?;
        (de.option_set_id == Some(set.id))
            .then(|| c.value_system.clone())
            .flatten()
    })
}

fn render(state: &AppState, set: &OptionSet) -> Value {
    let system = system_of(state, set);
    let concepts: Vec<Value> = set
        .options
        .iter()
        .map(|o| json!({ "code": o.code, "display": o.name }))
        .collect();
    let mut include = json!({ "concept": concepts });
    if let Some(s) = &system {
        include["system"] = json!(s);
    }
    let mut vs = json!({
        "resourceType": "ValueSet",
        "id": set.uid,
        "url": format!("{}/ValueSet/{}", state.base, set.uid),
        "name": set.code.clone().unwrap_or_else(|| set.name.replace(' ', "")),
        "title": set.name,
        "status": "active",
    });
    if !set.options.is_empty() {
        vs["compose"] = json!({ "include": [include] });
    }
    vs
}

fn find<'a>(state: &'a AppState, key: &str) -> Option<&'a OptionSet> {
    let id = key.rsplit('/').next().unwrap_or(key);
    state
        .metadata
        .option_sets
        .iter()
        .find(|s| s.uid == id || s.code.as_deref() == Some(id))
}

pub fn read(state: &AppState, id: &str) -> Result<FhirResponse, Error> {
    find(state, id)
        .map(|s| FhirResponse::ok(render(state, s)))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "ValueSet/{id} is not an option set of this registry"
            ))
        })
}

pub fn search(state: &AppState, params: &[Param]) -> Result<FhirResponse, Error> {
    let mut sets: Vec<&OptionSet> = state.metadata.option_sets.iter().collect();
    for p in params {
        match p.name.as_str() {
            "_count" | "_format" | "_pretty" => {}
            // A comma means "or", as in every search.
            "_id" | "url" => sets.retain(|s| {
                p.value
                    .split(',')
                    .any(|v| find(state, v).is_some_and(|f| f.id == s.id))
            }),
            "name" => sets.retain(|s| {
                let name = s.code.as_deref().unwrap_or(&s.name).to_lowercase();
                p.value
                    .split(',')
                    .any(|v| name.starts_with(&v.to_lowercase()))
            }),
            other => {
                return Err(Error::invalid(format!(
                    "unknown search parameter `{other}` for ValueSet (supported: _id, url, name)"
                )))
            }
        }
    }
    let entries: Vec<SearchEntry> = sets
        .iter()
        .map(|s| SearchEntry {
            resource: render(state, s),
            mode: "match",
        })
        .collect();
    let total = entries.len() as i64;
    Ok(FhirResponse::ok(bundle::searchset(
        &state.base,
        entries,
        Some(total),
        vec![],
    )))
}

/// `ValueSet/$validate-code` (`url` or `_id` of the option set, `code`, optional `system`): the
/// code is valid when it is an option, directly or through a crosswalk from `system`.
pub fn validate_code(
    state: &AppState,
    url: Option<&str>,
    system: Option<&str>,
    code: Option<&str>,
) -> Result<FhirResponse, Error> {
    let (Some(url), Some(code)) = (url, code) else {
        return Err(Error::invalid(
            "ValueSet/$validate-code needs `url` (the ValueSet) and `code`",
        ));
    };
    let set = find(state, url).ok_or_else(|| {
        Error::NotFound(format!(
            "`{url}` is not a ValueSet (option set) of this registry"
        ))
    })?;
    let own = system_of(state, set);
    let m = state.mappings();
    let option_code = match (system, own.as_deref()) {
        (Some(s), Some(o)) if s != o => m.terminology.translate(s, code, o).map(|c| c.code.clone()),
        _ => Some(code.to_string()),
    };
    let option = option_code.as_deref().and_then(|c| set.option(c));
    let mut params = vec![json!({ "name": "result", "valueBoolean": option.is_some() })];
    match option {
        Some(o) => params.push(json!({ "name": "display", "valueString": o.name })),
        None => params.push(json!({ "name": "message", "valueString": format!("`{code}` is not an option of {} ({})", set.name, set.code.as_deref().unwrap_or(&set.uid)) })),
    }
    Ok(FhirResponse::ok(
        json!({ "resourceType": "Parameters", "parameter": params }),
    ))
}
