//! FHIR RelatedPerson ↔ a tracker relationship between two people, as `mappings/care.toml` says.
//!
//! `RelatedPerson.patient` is one end; the related person is the other, a tracked entity of her
//! own: the record the extension [`RECORD`] names, else the registered person who holds one of
//! the RelatedPerson's identifiers, else a person registered from the RelatedPerson's
//! demographics (read through `mappings/patient.toml`, as a Patient would be).

use serde_json::{json, Map, Value};

use super::patient::PatientWrite;
use super::{reference_id, Reader};
use crate::error::Error;
use crate::fhir::outcome::Issue;
use crate::mapping::encounter::Coding;
use crate::mapping::MappingSet;
use crate::tracker::metadata::Metadata;
use crate::tracker::model::{PersonRecord, RelationshipRecord};

/// The registered person a RelatedPerson is (`valueReference` to a Patient).
pub const RECORD: &str = "urn:kiunga:fhir:StructureDefinition:related-person-record";

/// The elements a RelatedPerson shares with a Patient: the related person's own demographics.
const DEMOGRAPHICS: &[&str] = &[
    "identifier",
    "name",
    "telecom",
    "gender",
    "birthDate",
    "address",
];

#[derive(Debug, Clone)]
pub struct RelatedWrite {
    pub patient_uid: String,
    pub role: Coding,
    pub type_id: i64,
    pub related_is_from: bool,
    /// The related person's record, when the RelatedPerson names it.
    pub record_uid: Option<String>,
    /// Her demographics as a Patient write (used to find or register her).
    pub person: PatientWrite,
    /// Whether any demographic element was sent.
    pub has_demographics: bool,
    /// Her demographics as a Patient resource (kept in the inbound log when she is registered).
    pub person_resource: Value,
    pub unmapped: Vec<Issue>,
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// What the related person is called at her end of the type ("Mother of"), else the type's name.
fn end_name(md: &Metadata, type_id: i64, related_is_from: bool) -> String {
    md.relationship_type_by_id(type_id)
        .map(|t| {
            let name = if related_is_from {
                t.from_to_name.as_deref()
            } else {
                t.to_from_name.as_deref()
            };
            name.unwrap_or(&t.name).to_string()
        })
        .unwrap_or_default()
}

/// Renames `Patient.x` to `RelatedPerson.x` in issues found reading the demographics.
fn as_related(mut i: Issue) -> Issue {
    i.diagnostics = i
        .diagnostics
        .replace("Patient.", "RelatedPerson.")
        .replace("Patient ", "RelatedPerson ");
    i.expression = i
        .expression
        .map(|e| e.replacen("Patient", "RelatedPerson", 1));
    i
}

pub fn to_tracker(resource: &Value, m: &MappingSet, md: &Metadata) -> Result<RelatedWrite, Error> {
    let mut r = Reader::new(resource, "RelatedPerson");
    r.consume_server_meta();
    let mut problems = Vec::new();

    let patient_ref = resource.get("patient").and_then(|p| str_at(p, "reference"));
    let patient_uid = match patient_ref.and_then(|x| reference_id(x, "Patient")) {
        Some(uid) => {
            r.consume("patient.reference");
            r.consume("patient.display");
            Some(uid.to_string())
        }
        None => {
            let what = patient_ref
                .map(|x| format!("`{x}` is not a Patient reference"))
                .unwrap_or_else(|| "is missing".into());
            problems.push(Issue::error(
                "required",
                format!("RelatedPerson.patient {what}: a RelatedPerson is someone's relation (patient: Patient/<id>)"),
                Some("RelatedPerson.patient".into()),
            ));
            None
        }
    };

    // The first coding a role of care.toml knows decides the relationship.
    let mut role = None;
    let codings: Vec<(usize, usize, &Value)> = resource
        .get("relationship")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .flat_map(|(i, cc)| {
            cc.get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .map(move |(j, c)| (i, j, c))
        })
        .collect();
    for (i, j, c) in &codings {
        let (Some(system), Some(code)) = (str_at(c, "system"), str_at(c, "code")) else {
            continue;
        };
        if let Some(found) = m.care.role(system, code) {
            r.consume(format!("relationship[{i}].coding[{j}]"));
            // The text the server renders (the type's name for that end) is not data.
            let text = resource.pointer(&format!("/relationship/{i}/text"));
            if text.and_then(Value::as_str)
                == Some(end_name(md, found.type_id, found.related_is_from).as_str())
            {
                r.consume(format!("relationship[{i}].text"));
            }
            if role.is_none() {
                role = Some((found.clone(), str_at(c, "display").map(str::to_string)));
            }
        }
    }
    if role.is_none() {
        let known: Vec<String> = m
            .care
            .roles
            .iter()
            .map(|r| format!("{}|{}", r.coding.system, r.coding.code))
            .collect();
        let sent: Vec<String> = codings
            .iter()
            .map(|(_, _, c)| {
                format!(
                    "{}|{}",
                    str_at(c, "system").unwrap_or(""),
                    str_at(c, "code").unwrap_or("")
                )
            })
            .collect();
        problems.push(Issue::error(
            "code-invalid",
            format!(
                "RelatedPerson.relationship: {} names no relationship this registry keeps; mapped roles (mappings/care.toml): {}",
                if sent.is_empty() { "nothing".to_string() } else { sent.join(", ") },
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ),
            Some("RelatedPerson.relationship".into()),
        ));
    }

    let mut record_uid = None;
    for (i, ext) in resource
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if str_at(ext, "url") != Some(RECORD) {
            continue;
        }
        let reference = ext
            .get("valueReference")
            .and_then(|v| str_at(v, "reference"));
        match reference.and_then(|x| reference_id(x, "Patient")) {
            Some(uid) => {
                r.consume(format!("extension[{i}]"));
                record_uid = Some(uid.to_string());
            }
            None => problems.push(Issue::error(
                "value",
                format!(
                    "RelatedPerson.extension[{i}] ({RECORD}) needs valueReference to a Patient"
                ),
                Some(format!("RelatedPerson.extension[{i}]")),
            )),
        }
    }
    if resource.get("active") == Some(&Value::Bool(true)) {
        r.consume("active");
    }

    // Her demographics, read as a Patient would be.
    let mut person_resource = Map::new();
    person_resource.insert("resourceType".into(), json!("Patient"));
    for k in DEMOGRAPHICS {
        if let Some(v) = resource.get(*k) {
            person_resource.insert((*k).into(), v.clone());
            r.consume(*k);
        }
    }
    let has_demographics = person_resource.len() > 1;
    let person_resource = Value::Object(person_resource);
    let person = match super::patient::to_tracker(&person_resource, &m.patient, md) {
        Ok(p) => Some(p),
        Err(Error::Unprocessable(issues)) => {
            problems.extend(issues.into_iter().map(as_related));
            None
        }
        Err(e) => return Err(e),
    };

    match (patient_uid, role, person, problems.is_empty()) {
        (Some(patient_uid), Some((role, display)), Some(mut person), true) => {
            let mut unmapped = r.unmapped();
            unmapped.extend(person.unmapped.drain(..).map(as_related));
            Ok(RelatedWrite {
                patient_uid,
                role: Coding {
                    display: display.or(role.coding.display.clone()),
                    ..role.coding.clone()
                },
                type_id: role.type_id,
                related_is_from: role.related_is_from,
                record_uid,
                person,
                has_demographics,
                person_resource,
                unmapped,
            })
        }
        _ => Err(Error::Unprocessable(problems)),
    }
}

/// Renders a RelatedPerson: the relationship, and the related person's demographics from her
/// record.
pub fn to_fhir(
    rel: &RelationshipRecord,
    related: Option<&PersonRecord>,
    m: &MappingSet,
    md: &Metadata,
) -> Value {
    let (patient_uid, related_uid) = if rel.related_is_from {
        (&rel.to_uid, &rel.from_uid)
    } else {
        (&rel.from_uid, &rel.to_uid)
    };
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("RelatedPerson"));
    out.insert("id".into(), json!(rel.uid));
    out.insert(
        "meta".into(),
        json!({ "versionId": rel.version.to_string(), "lastUpdated": crate::fhir::instant(&rel.last_updated) }),
    );
    out.insert(
        "extension".into(),
        json!([{ "url": RECORD, "valueReference": { "reference": format!("Patient/{related_uid}") } }]),
    );
    out.insert("active".into(), json!(true));
    out.insert(
        "patient".into(),
        json!({ "reference": format!("Patient/{patient_uid}") }),
    );
    let coding = match &rel.role {
        Some(c) => Some(c.clone()),
        None => m
            .care
            .role_of(rel.type_id, rel.related_is_from)
            .map(|r| r.coding.clone()),
    };
    let mut concept = Map::new();
    if let Some(c) = coding {
        let mut cm = Map::new();
        cm.insert("system".into(), json!(c.system));
        cm.insert("code".into(), json!(c.code));
        if let Some(d) = c.display {
            cm.insert("display".into(), json!(d));
        }
        concept.insert("coding".into(), json!([Value::Object(cm)]));
    }
    if md.relationship_type_by_id(rel.type_id).is_some() {
        concept.insert(
            "text".into(),
            json!(end_name(md, rel.type_id, rel.related_is_from)),
        );
    }
    out.insert("relationship".into(), json!([Value::Object(concept)]));
    if let Some(p) = related {
        let patient = super::patient::to_fhir(p, &m.patient, md);
        for k in DEMOGRAPHICS {
            if let Some(v) = patient.get(*k) {
                out.insert((*k).into(), v.clone());
            }
        }
    }
    Value::Object(out)
}
