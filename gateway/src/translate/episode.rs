//! FHIR EpisodeOfCare ↔ an enrollment in a program. The type is the program (`mappings/care.toml`
//! `[[program]]`, else the program's code in `urn:kiunga:program`); the status is active /
//! finished / cancelled ↔ ACTIVE / COMPLETED / CANCELLED; the period is enrolled .. completed;
//! managingOrganization is the org unit that owns the person's record in the program.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::encounter::parse_date_time;
use super::{reference_id, Reader};
use crate::error::Error;
use crate::fhir::outcome::Issue;
use crate::mapping::MappingSet;
use crate::tracker::metadata::Metadata;
use crate::tracker::model::EnrollmentRecord;

/// The date the enrollment's incident happened (DHIS2 `occurredAt`) when it differs from the
/// enrollment date.
pub const OCCURRED: &str = "urn:kiunga:fhir:StructureDefinition:enrollment-occurred";
/// On the version a transfer wrote: from, to, by and why.
pub const TRANSFER: &str = "urn:kiunga:fhir:StructureDefinition:ownership-transfer";

const STATUSES: &[(&str, &str)] = &[
    ("active", "ACTIVE"),
    ("finished", "COMPLETED"),
    ("cancelled", "CANCELLED"),
];

#[derive(Debug, Clone)]
pub struct EpisodeWrite {
    pub patient_uid: String,
    pub program_id: i64,
    pub status: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub org_unit_id: Option<i64>,
    pub unmapped: Vec<Issue>,
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

pub fn fhir_status(status: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|(_, e)| *e == status)
        .map(|(f, _)| *f)
        .unwrap_or("active")
}

pub fn enrollment_status(fhir: &str) -> Option<&'static str> {
    STATUSES.iter().find(|(f, _)| *f == fhir).map(|(_, e)| *e)
}

pub fn to_tracker(resource: &Value, m: &MappingSet, md: &Metadata) -> Result<EpisodeWrite, Error> {
    let mut r = Reader::new(resource, "EpisodeOfCare");
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
            problems.push(Issue::error(
                "required",
                format!(
                    "EpisodeOfCare.patient {}: an enrollment is a person's (patient: Patient/<id>)",
                    patient_ref
                        .map(|x| format!("`{x}` is not a Patient reference"))
                        .unwrap_or_else(|| "is missing".into())
                ),
                Some("EpisodeOfCare.patient".into()),
            ));
            None
        }
    };

    let mut program_id = None;
    let mut sent = Vec::new();
    for (i, cc) in resource
        .get("type")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (j, c) in cc
            .get("coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (system, code) = (
                str_at(c, "system").unwrap_or(""),
                str_at(c, "code").unwrap_or(""),
            );
            sent.push(format!("{system}|{code}"));
            if let Some(p) = m.care.program_for_type(md, system, code) {
                r.consume(format!("type[{i}].coding[{j}]"));
                if program_id.is_none() {
                    program_id = Some(p);
                }
            }
        }
        if program_id.is_some() {
            r.consume(format!("type[{i}].text"));
        }
    }
    if program_id.is_none() {
        let known: Vec<String> = md
            .programs
            .iter()
            .filter_map(|p| m.care.type_of_program(md, p.id))
            .map(|c| format!("{}|{}", c.system, c.code))
            .collect();
        problems.push(Issue::error(
            "code-invalid",
            format!(
                "EpisodeOfCare.type: {} names no program of this registry; programs: {}",
                if sent.is_empty() {
                    "nothing".to_string()
                } else {
                    sent.join(", ")
                },
                known.join(", ")
            ),
            Some("EpisodeOfCare.type".into()),
        ));
    }

    let status = match str_at(resource, "status") {
        Some(s) => match enrollment_status(s) {
            Some(e) => {
                r.consume("status");
                Some(e.to_string())
            }
            None => {
                problems.push(Issue::error(
                    "code-invalid",
                    format!("EpisodeOfCare.status `{s}` has no enrollment status here (active, finished, cancelled)"),
                    Some("EpisodeOfCare.status".into()),
                ));
                None
            }
        },
        None => {
            problems.push(Issue::error(
                "required",
                "EpisodeOfCare.status is required (active, finished or cancelled)",
                Some("EpisodeOfCare.status".into()),
            ));
            None
        }
    };

    let date = |path: &str, r: &mut Reader, problems: &mut Vec<Issue>| {
        let raw = resource.pointer(&format!("/{}", path.replace('.', "/")));
        match raw.and_then(Value::as_str) {
            None => None,
            Some(s) => match parse_date_time(s) {
                Some(t) => {
                    r.consume(path);
                    Some(t)
                }
                None => {
                    problems.push(Issue::error(
                        "value",
                        format!("EpisodeOfCare.{path} `{s}` is not a FHIR date or dateTime"),
                        Some(format!("EpisodeOfCare.{path}")),
                    ));
                    None
                }
            },
        }
    };
    let start = date("period.start", &mut r, &mut problems);
    let end = date("period.end", &mut r, &mut problems);
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            problems.push(Issue::error(
                "value",
                "EpisodeOfCare.period.end is before period.start",
                Some("EpisodeOfCare.period".into()),
            ));
        }
    }
    let mut occurred_at = None;
    for (i, ext) in resource
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if str_at(ext, "url") == Some(OCCURRED) {
            match ext
                .get("valueDateTime")
                .or_else(|| ext.get("valueDate"))
                .and_then(Value::as_str)
                .and_then(parse_date_time)
            {
                Some(t) => {
                    occurred_at = Some(t);
                    r.consume(format!("extension[{i}]"));
                }
                None => problems.push(Issue::error(
                    "value",
                    format!("EpisodeOfCare.extension[{i}] ({OCCURRED}) needs valueDateTime"),
                    Some(format!("EpisodeOfCare.extension[{i}]")),
                )),
            }
        } else if str_at(ext, "url") == Some(TRANSFER) {
            // Rendered by the server on the version a transfer wrote; not input.
            r.consume(format!("extension[{i}]"));
        }
    }

    let mut org_unit_id = None;
    if let Some(reference) = resource
        .get("managingOrganization")
        .and_then(|m| str_at(m, "reference"))
    {
        r.consume("managingOrganization.reference");
        r.consume("managingOrganization.display");
        match reference_id(reference, "Organization").and_then(|id| md.org_unit(id)) {
            Some(ou) => org_unit_id = Some(ou.id),
            None => problems.push(Issue::error(
                "business-rule",
                format!("EpisodeOfCare.managingOrganization: `{reference}` is not an org unit of this registry"),
                Some("EpisodeOfCare.managingOrganization".into()),
            )),
        }
    }

    match (patient_uid, program_id, status, problems.is_empty()) {
        (Some(patient_uid), Some(program_id), Some(status), true) => Ok(EpisodeWrite {
            patient_uid,
            program_id,
            status,
            start,
            end,
            occurred_at,
            org_unit_id,
            unmapped: r.unmapped(),
        }),
        _ => Err(Error::Unprocessable(problems)),
    }
}

pub fn to_fhir(e: &EnrollmentRecord, m: &MappingSet, md: &Metadata) -> Value {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("EpisodeOfCare"));
    out.insert("id".into(), json!(e.uid));
    out.insert(
        "meta".into(),
        json!({ "versionId": e.version.to_string(), "lastUpdated": crate::fhir::instant(&e.last_updated) }),
    );
    let mut extensions = Vec::new();
    if let Some(o) = e.occurred_at.filter(|o| *o != e.enrolled_at) {
        extensions.push(json!({ "url": OCCURRED, "valueDateTime": crate::fhir::instant(&o) }));
    }
    if let Some(t) = &e.transfer {
        let mut parts = Vec::new();
        if let Some(from) = &t.from {
            parts.push(json!({ "url": "from", "valueReference": { "reference": format!("Organization/{from}") } }));
        }
        parts.push(json!({ "url": "to", "valueReference": { "reference": format!("Organization/{}", t.to) } }));
        parts.push(json!({ "url": "by", "valueString": t.by }));
        if let Some(reason) = &t.reason {
            parts.push(json!({ "url": "reason", "valueString": reason }));
        }
        parts.push(json!({ "url": "at", "valueDateTime": crate::fhir::instant(&t.at) }));
        extensions.push(json!({ "url": TRANSFER, "extension": parts }));
    }
    if !extensions.is_empty() {
        out.insert("extension".into(), Value::Array(extensions));
    }
    out.insert("status".into(), json!(fhir_status(&e.status)));
    if let Some(c) = m.care.type_of_program(md, e.program_id) {
        let mut coding = Map::new();
        coding.insert("system".into(), json!(c.system));
        coding.insert("code".into(), json!(c.code));
        if let Some(d) = c.display {
            coding.insert("display".into(), json!(d));
        }
        out.insert(
            "type".into(),
            json!([{ "coding": [Value::Object(coding)] }]),
        );
    }
    out.insert(
        "patient".into(),
        json!({ "reference": format!("Patient/{}", e.tracked_entity_uid) }),
    );
    if let Some(ou) = md.org_unit_by_id(e.owner_org_unit_id) {
        out.insert(
            "managingOrganization".into(),
            json!({ "reference": format!("Organization/{}", ou.uid), "display": ou.name }),
        );
    }
    let mut period = Map::new();
    period.insert("start".into(), json!(crate::fhir::instant(&e.enrolled_at)));
    if let Some(c) = e.completed_at {
        period.insert("end".into(), json!(crate::fhir::instant(&c)));
    }
    out.insert("period".into(), Value::Object(period));
    Value::Object(out)
}
