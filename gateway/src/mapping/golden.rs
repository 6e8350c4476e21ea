//! Golden cases kept next to the mappings (`mappings/tests/*.toml`): FHIR input → expected tracker
//! values → expected FHIR output, run by `kiunga mappings test` through the same (pure)
//! translation functions as the API, so an engineer can pin behaviour before changing a map.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::MappingSet;
use crate::tracker::metadata::Metadata;
use crate::tracker::model::{DataValueRecord, EventRecord, PersonRecord};
use crate::translate;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    description: String,
    input: String,
    /// Expected tracker values: attribute or data element code → value, plus `org_unit`,
    /// `stage` and `status` where they apply.
    #[serde(default)]
    tracker: BTreeMap<String, String>,
    /// Expected output elements: JSON pointer → value.
    #[serde(default)]
    fhir: BTreeMap<String, toml::Value>,
    /// Input elements expected to be reported as not stored (FHIRPath).
    #[serde(default)]
    unmapped: Vec<String>,
    /// When the input must be refused: a text the error must contain.
    error: Option<String>,
}

/// What a case's input became: tracker values by code, the rendered output, unmapped elements.
type Translated = (BTreeMap<String, String>, Value, Vec<String>);

/// The outcome of one case: its name and the problems found (empty when it passed).
pub struct Outcome {
    pub name: String,
    pub problems: Vec<String>,
}

fn json_of(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        other => Value::String(other.to_string()),
    }
}

/// Runs every case in `dir/tests`. An unreadable case is a failed case, not an abort.
pub fn run(dir: &Path, md: &Metadata, m: &MappingSet) -> Vec<Outcome> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("tests"))
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|f| {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let problems = match std::fs::read_to_string(f)
                .map_err(|e| e.to_string())
                .and_then(|t| toml::from_str::<Case>(&t).map_err(|e| e.to_string()))
            {
                Ok(case) => check(&case, md, m),
                Err(e) => vec![format!("{}: {e}", f.display())],
            };
            Outcome { name, problems }
        })
        .collect()
}

fn check(case: &Case, md: &Metadata, m: &MappingSet) -> Vec<String> {
    let _ = &case.description;
    let mut problems = Vec::new();
    let input = match kiunga_codec::parse(case.input.as_bytes(), kiunga_codec::Format::Json) {
        Ok(v) => v,
        Err(e) => return vec![format!("input is not valid FHIR: {}", e.message)],
    };
    let at = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let rt = input["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let result: Result<Translated, crate::error::Error> = match rt.as_str() {
        "Patient" => translate::patient::to_tracker(&input, &m.patient, md).map(|w| {
            let mut got = BTreeMap::new();
            for v in &w.values {
                let code = md
                    .attribute_by_id(v.attribute_id)
                    .and_then(|a| a.code.clone())
                    .unwrap_or_default();
                got.insert(code, v.value.clone());
            }
            if let Some(ou) = w.org_unit_id.and_then(|id| md.org_unit_by_id(id)) {
                got.insert(
                    "org_unit".into(),
                    ou.code.clone().unwrap_or_else(|| ou.uid.clone()),
                );
            }
            let rec = PersonRecord {
                id: 0,
                uid: "goldenCase1".into(),
                version: 1,
                last_updated: at,
                org_unit_id: w.org_unit_id.unwrap_or_default(),
                inactive: w.inactive,
                deleted: false,
                merged_into: None,
                values: w
                    .values
                    .iter()
                    .map(|v| (v.attribute_id, v.value.clone()))
                    .collect(),
            };
            let unmapped = w
                .unmapped
                .iter()
                .filter_map(|i| i.expression.clone())
                .collect();
            (
                got,
                translate::patient::to_fhir(&rec, &m.patient, md),
                unmapped,
            )
        }),
        "Encounter" => translate::encounter::to_tracker(&input, m, md).map(|w| {
            let mut got = BTreeMap::new();
            if let Some(st) = md.stages.iter().find(|s| s.id == w.stage_id) {
                got.insert(
                    "stage".into(),
                    st.code.clone().unwrap_or_else(|| st.uid.clone()),
                );
            }
            got.insert("status".into(), w.status.clone());
            if let Some(ou) = w.org_unit_id.and_then(|id| md.org_unit_by_id(id)) {
                got.insert(
                    "org_unit".into(),
                    ou.code.clone().unwrap_or_else(|| ou.uid.clone()),
                );
            }
            let rec = EventRecord {
                id: 0,
                uid: "goldenCase1".into(),
                version: 1,
                last_updated: at,
                stage_id: w.stage_id,
                org_unit_id: w.org_unit_id.unwrap_or_default(),
                status: w.status.clone(),
                occurred_at: w.occurred_at,
                completed_at: w.completed_at,
                tracked_entity_id: 0,
                tracked_entity_uid: w.patient_uid.clone(),
                enrollment_id: 0,
                enrollment_uid: w
                    .enrollment_uid
                    .clone()
                    .unwrap_or_else(|| "goldenEnrol".into()),
                deleted: false,
            };
            let unmapped = w
                .unmapped
                .iter()
                .filter_map(|i| i.expression.clone())
                .collect();
            (got, translate::encounter::to_fhir(&rec, m, md), unmapped)
        }),
        "Observation" => translate::observation::to_tracker(&input, m, md).map(|w| {
            let mut got = BTreeMap::new();
            let de = md.data_elements.iter().find(|d| d.id == w.data_element_id);
            got.insert(
                "data_element".into(),
                de.and_then(|d| d.code.clone()).unwrap_or_default(),
            );
            got.insert("value".into(), w.value.clone());
            let rec = DataValueRecord {
                id: 0,
                uid: "goldenCase1".into(),
                version: 1,
                last_updated: at,
                event_id: 0,
                event_uid: w
                    .encounter_uid
                    .clone()
                    .unwrap_or_else(|| "goldenEvent".into()),
                data_element_id: w.data_element_id,
                tracked_entity_id: 0,
                tracked_entity_uid: w.patient_uid.clone(),
                value: w.value.clone(),
                observed_at: w.observed_at,
                deleted: false,
            };
            let unmapped = w
                .unmapped
                .iter()
                .filter_map(|i| i.expression.clone())
                .collect();
            (got, translate::observation::to_fhir(&rec, m, md), unmapped)
        }),
        other => return vec![format!("resource type `{other}` has no mapping")],
    };
    match (result, &case.error) {
        (Err(e), Some(want)) => {
            let (_, outcome) = e.client_outcome("golden");
            if !outcome.to_string().contains(want.as_str()) {
                problems.push(format!(
                    "refused as expected, but the error does not say `{want}`: {outcome}"
                ));
            }
        }
        (Err(e), None) => problems.push(format!("input refused: {}", e.client_outcome("golden").1)),
        (Ok(_), Some(want)) => problems.push(format!(
            "input accepted, but it should be refused with `{want}`"
        )),
        (Ok((got, output, unmapped)), None) => {
            for (k, want) in &case.tracker {
                match got.get(k) {
                    Some(v) if v == want => {}
                    Some(v) => problems.push(format!("tracker {k}: expected `{want}`, got `{v}`")),
                    None => problems.push(format!("tracker {k}: expected `{want}`, got nothing")),
                }
            }
            for k in got.keys().filter(|k| {
                !case.tracker.contains_key(*k) && !matches!(k.as_str(), "org_unit" | "status")
            }) {
                problems.push(format!(
                    "tracker {k} = `{}` is not in the case (add it to [tracker])",
                    got[k]
                ));
            }
            for (pointer, want) in &case.fhir {
                let want = json_of(want);
                match output.pointer(pointer) {
                    Some(v)
                        if *v == want || v.as_f64().is_some_and(|f| want.as_f64() == Some(f)) => {}
                    Some(v) => problems.push(format!("output {pointer}: expected {want}, got {v}")),
                    None => {
                        problems.push(format!("output {pointer}: expected {want}, got nothing"))
                    }
                }
            }
            if !case.unmapped.is_empty() || !unmapped.is_empty() {
                let mut a = case.unmapped.clone();
                let mut b = unmapped;
                a.sort();
                b.sort();
                if a != b {
                    problems.push(format!("not stored: expected {a:?}, got {b:?}"));
                }
            }
        }
    }
    problems
}
