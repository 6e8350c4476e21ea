//! FHIR Encounter ↔ event, as `mappings/encounter.toml` says.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{reference_id, Reader};
use crate::error::Error;
use crate::fhir::outcome::Issue;
use crate::mapping::MappingSet;
use crate::tracker::metadata::Metadata;
use crate::tracker::model::EventRecord;

#[derive(Debug, Clone, PartialEq)]
pub struct EncounterWrite {
    pub patient_uid: String,
    pub stage_id: i64,
    pub org_unit_id: Option<i64>,
    pub status: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub enrollment_uid: Option<String>,
    pub unmapped: Vec<Issue>,
}

/// Parses a FHIR dateTime (full or partial); a date alone means its first instant in UTC.
pub fn parse_date_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    let padded = match s.len() {
        4 => format!("{s}-01-01"),
        7 => format!("{s}-01"),
        _ => s.to_string(),
    };
    chrono::NaiveDate::parse_from_str(&padded, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// The tracked-entity UID a `subject` reference names (required on Encounter and Observation).
pub fn subject_uid(r: &mut Reader, problems: &mut Vec<Issue>) -> Option<String> {
    let reference = r.root.get("subject").and_then(|s| str_at(s, "reference"));
    match reference.and_then(|x| reference_id(x, "Patient")) {
        Some(uid) => {
            r.consume("subject.reference");
            r.consume("subject.display");
            Some(uid.to_string())
        }
        None => {
            let what = reference
                .map(|x| format!("`{x}` is not a Patient reference"))
                .unwrap_or_else(|| "is missing".into());
            problems.push(Issue::error("required", format!("{}.subject {what}: every {} belongs to a Patient of this registry (subject: Patient/<id>)", r.resource_type, r.resource_type), Some(r.expr("subject"))));
            None
        }
    }
}

pub fn to_tracker(
    resource: &Value,
    m: &MappingSet,
    md: &Metadata,
) -> Result<EncounterWrite, Error> {
    let mut r = Reader::new(resource, "Encounter");
    let mut problems = Vec::new();
    r.consume_server_meta();
    let patient_uid = subject_uid(&mut r, &mut problems);
    let map = &m.encounter;

    // Stage: the first type coding a map knows, else the class.
    let mut stage_id = None;
    if let Some(types) = resource.get("type").and_then(Value::as_array) {
        'outer: for (i, t) in types.iter().enumerate() {
            for (j, c) in t
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let (Some(sys), Some(code)) = (str_at(c, "system"), str_at(c, "code")) {
                    if let Some(s) = map.stage_for_type(sys, code) {
                        stage_id = Some(s);
                        r.consume(format!("type[{i}].coding[{j}]"));
                        if types.len() == 1 {
                            r.consume(format!("type[{i}].text"));
                        }
                        break 'outer;
                    }
                }
            }
        }
    }
    if let Some(class) = resource.get("class") {
        if let (Some(sys), Some(code)) = (str_at(class, "system"), str_at(class, "code")) {
            if stage_id.is_none() {
                stage_id = map.stage_for_class(sys, code);
            }
            if map.stage_for_class(sys, code).is_some()
                || (sys == map.class.system && code == map.class.code)
            {
                r.consume("class");
            }
        }
    }
    if stage_id.is_none() {
        let codes: Vec<String> = resource
            .get("type")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|t| {
                t.get("coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .map(|c| {
                format!(
                    "{}|{}",
                    str_at(c, "system").unwrap_or(""),
                    str_at(c, "code").unwrap_or("")
                )
            })
            .collect();
        let known: Vec<String> = map
            .types
            .iter()
            .map(|t| format!("{}|{}", t.coding.system, t.coding.code))
            .collect();
        problems.push(Issue::error(
            "code-invalid",
            format!(
                "Encounter.type: no mapped program stage for {} (mapped types: {}); add the code to mappings/encounter.toml",
                if codes.is_empty() { "an encounter without type".to_string() } else { codes.join(", ") },
                known.join(", ")
            ),
            Some(r.expr("type")),
        ));
    }

    let status = match str_at(resource, "status") {
        Some(s) => match map.event_status(s) {
            Some(e) => {
                r.consume("status");
                e.to_string()
            }
            None => {
                problems.push(Issue::error(
                    "code-invalid",
                    format!(
                        "Encounter.status `{s}` has no event status in mappings/encounter.toml"
                    ),
                    Some(r.expr("status")),
                ));
                String::new()
            }
        },
        None => {
            problems.push(Issue::error(
                "required",
                "Encounter.status is required",
                Some(r.expr("status")),
            ));
            String::new()
        }
    };

    let when = |path: &str, r: &mut Reader, problems: &mut Vec<Issue>| -> Option<DateTime<Utc>> {
        let raw = resource
            .pointer(&format!("/{}", path.replace('.', "/")))
            .and_then(Value::as_str)?;
        r.consume(path);
        let parsed = parse_date_time(raw);
        if parsed.is_none() {
            problems.push(Issue::error(
                "value",
                format!("Encounter.{path} `{raw}` is not a dateTime"),
                Some(r.expr(path)),
            ));
        }
        parsed
    };
    let occurred_at = when("period.start", &mut r, &mut problems);
    let completed_at = when("period.end", &mut r, &mut problems);

    let mut org_unit_id = None;
    if let Some(reference) = resource
        .get("serviceProvider")
        .and_then(|s| str_at(s, "reference"))
    {
        r.consume("serviceProvider");
        match reference_id(reference, "Organization").and_then(|id| md.org_unit(id)) {
            Some(ou) => org_unit_id = Some(ou.id),
            None => problems.push(Issue::error(
                "business-rule",
                format!(
                    "Encounter.serviceProvider `{reference}` is not an org unit of this registry"
                ),
                Some(r.expr("serviceProvider")),
            )),
        }
    }
    if let Some(reference) = resource
        .pointer("/location/0/location/reference")
        .and_then(Value::as_str)
    {
        match reference_id(reference, "Location").and_then(|id| md.org_unit(id)) {
            Some(ou) if org_unit_id.is_none() || org_unit_id == Some(ou.id) => {
                org_unit_id = Some(ou.id);
                r.consume("location[0].location");
            }
            Some(_) => {}
            None => problems.push(Issue::error("business-rule", format!("Encounter.location[0].location `{reference}` is not an org unit of this registry"), Some(r.expr("location[0].location")))),
        }
    }

    let mut enrollment_uid = None;
    if let Some(reference) = resource
        .pointer("/episodeOfCare/0/reference")
        .and_then(Value::as_str)
    {
        match reference_id(reference, "EpisodeOfCare") {
            Some(uid) => {
                r.consume("episodeOfCare[0]");
                enrollment_uid = Some(uid.to_string());
            }
            None => problems.push(Issue::error(
                "invalid",
                format!(
                    "Encounter.episodeOfCare[0] `{reference}` is not an EpisodeOfCare reference"
                ),
                Some(r.expr("episodeOfCare[0]")),
            )),
        }
    }

    if !problems.is_empty() {
        return Err(Error::Unprocessable(problems));
    }
    Ok(EncounterWrite {
        patient_uid: patient_uid.unwrap_or_default(),
        stage_id: stage_id.unwrap_or_default(),
        org_unit_id,
        status,
        occurred_at,
        completed_at,
        enrollment_uid,
        unmapped: r.unmapped(),
    })
}

pub fn to_fhir(e: &EventRecord, m: &MappingSet, md: &Metadata) -> Value {
    let map = &m.encounter;
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Encounter"));
    out.insert("id".into(), json!(e.uid));
    out.insert("meta".into(), json!({ "versionId": e.version.to_string(), "lastUpdated": crate::fhir::instant(&e.last_updated) }));
    out.insert("status".into(), json!(map.fhir_status(&e.status)));
    let mut class = json!({ "system": map.class.system, "code": map.class.code });
    if let Some(d) = &map.class.display {
        class["display"] = json!(d);
    }
    out.insert("class".into(), class);
    let stage = md.stages.iter().find(|s| s.id == e.stage_id);
    if let Some(t) = map.type_of_stage(e.stage_id) {
        let mut coding = json!({ "system": t.system, "code": t.code });
        if let Some(d) = &t.display {
            coding["display"] = json!(d);
        }
        let mut ty = json!({ "coding": [coding] });
        if let Some(s) = stage {
            ty["text"] = json!(s.name);
        }
        out.insert("type".into(), json!([ty]));
    }
    out.insert(
        "subject".into(),
        json!({ "reference": format!("Patient/{}", e.tracked_entity_uid) }),
    );
    out.insert(
        "episodeOfCare".into(),
        json!([{ "reference": format!("EpisodeOfCare/{}", e.enrollment_uid) }]),
    );
    let mut period = Map::new();
    if let Some(t) = &e.occurred_at {
        period.insert("start".into(), json!(crate::fhir::instant(t)));
    }
    if let Some(t) = &e.completed_at {
        period.insert("end".into(), json!(crate::fhir::instant(t)));
    }
    if !period.is_empty() {
        out.insert("period".into(), Value::Object(period));
    }
    if let Some(ou) = md.org_unit_by_id(e.org_unit_id) {
        out.insert(
            "serviceProvider".into(),
            json!({ "reference": format!("Organization/{}", ou.uid), "display": ou.name }),
        );
    }
    Value::Object(out)
}
