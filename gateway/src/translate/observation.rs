//! FHIR Observation ↔ data value of an event, as `mappings/observation.toml` says.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::encounter::{parse_date_time, subject_uid};
use super::{reference_id, units, Reader};
use crate::error::Error;
use crate::fhir::outcome::Issue;
use crate::mapping::MappingSet;
use crate::tracker::metadata::Metadata;
use crate::tracker::model::DataValueRecord;
use crate::tracker::value_type::{format_number, ValueType};

pub const UCUM: &str = "http://unitsofmeasure.org";
pub const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

#[derive(Debug, Clone, PartialEq)]
pub struct ObservationWrite {
    pub patient_uid: String,
    pub encounter_uid: Option<String>,
    pub data_element_id: i64,
    /// The stage whose event takes the value when there is no encounter.
    pub stage_id: i64,
    pub value: String,
    pub value_num: Option<f64>,
    pub observed_at: Option<DateTime<Utc>>,
    pub unmapped: Vec<Issue>,
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

pub fn to_tracker(
    resource: &Value,
    m: &MappingSet,
    md: &Metadata,
) -> Result<ObservationWrite, Error> {
    let mut r = Reader::new(resource, "Observation");
    let mut problems = Vec::new();
    r.consume_server_meta();
    let patient_uid = subject_uid(&mut r, &mut problems);

    match str_at(resource, "status") {
        Some("final" | "amended" | "corrected") => r.consume("status"),
        Some(s @ ("cancelled" | "entered-in-error")) => problems.push(Issue::error(
            "business-rule",
            format!("Observation.status `{s}`: the registry keeps final values only; to withdraw a value, DELETE the Observation"),
            Some(r.expr("status")),
        )),
        _ => {}
    }

    let mut entry = None;
    for (j, c) in resource
        .pointer("/code/coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let (Some(sys), Some(code)) = (str_at(c, "system"), str_at(c, "code")) {
            if let Some(e) = m.observation.for_code(sys, code) {
                entry = Some(e);
                r.consume(format!("code.coding[{j}]"));
                r.consume("code.text");
                break;
            }
        }
    }
    let Some(entry) = entry else {
        let codes: Vec<String> = resource
            .pointer("/code/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{}|{}",
                    str_at(c, "system").unwrap_or(""),
                    str_at(c, "code").unwrap_or("")
                )
            })
            .collect();
        problems.push(Issue::error(
            "code-invalid",
            format!("Observation.code {} is not mapped to a data element; add it to mappings/observation.toml", if codes.is_empty() { "(no coding)".into() } else { codes.join(", ") }),
            Some(r.expr("code")),
        ));
        return Err(Error::Unprocessable(problems));
    };
    let Some(de) = md
        .data_elements
        .iter()
        .find(|d| d.id == entry.data_element_id)
    else {
        return Err(Error::Internal(
            "mapped data element missing from metadata".into(),
        ));
    };

    // The category is rendered from the mapping; an input category that says the same is held.
    if let Some(cats) = resource.get("category").and_then(Value::as_array) {
        if cats.len() == 1 {
            let codes: Vec<&str> = cats[0]
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| str_at(c, "code"))
                .collect();
            if codes.len() == 1 && entry.category.as_deref() == Some(codes[0]) {
                r.consume("category");
            }
        }
    }

    let mut encounter_uid = None;
    if let Some(reference) = resource
        .pointer("/encounter/reference")
        .and_then(Value::as_str)
    {
        match reference_id(reference, "Encounter") {
            Some(uid) => {
                r.consume("encounter");
                encounter_uid = Some(uid.to_string());
            }
            None => problems.push(Issue::error(
                "invalid",
                format!("Observation.encounter `{reference}` is not an Encounter reference"),
                Some(r.expr("encounter")),
            )),
        }
    }

    let mut observed_at = None;
    for key in ["effectiveDateTime", "effectiveInstant"] {
        if let Some(raw) = str_at(resource, key) {
            r.consume(key);
            observed_at = parse_date_time(raw);
            if observed_at.is_none() {
                problems.push(Issue::error(
                    "value",
                    format!("Observation.{key} `{raw}` is not a dateTime"),
                    Some(r.expr(key)),
                ));
            }
        }
    }
    if observed_at.is_none() {
        if let Some(raw) = resource
            .pointer("/effectivePeriod/start")
            .and_then(Value::as_str)
        {
            r.consume("effectivePeriod.start");
            observed_at = parse_date_time(raw);
            if observed_at.is_none() {
                problems.push(Issue::error(
                    "value",
                    format!("Observation.effectivePeriod.start `{raw}` is not a dateTime"),
                    Some(r.expr("effectivePeriod.start")),
                ));
            }
        }
    }

    let expr_value = |k: &str| format!("Observation.{k}");
    let mut value = None;
    let mut value_num = None;
    if let Some(set_id) = de.option_set_id {
        let set = md.option_set_by_id(set_id);
        let system = entry.value_system.as_deref().unwrap_or_default();
        let codings = resource
            .pointer("/valueCodeableConcept/coding")
            .and_then(Value::as_array);
        match codings {
            None => problems.push(Issue::error(
                "required",
                format!(
                    "{} holds coded values: send valueCodeableConcept with a {system} coding",
                    de.name
                ),
                Some(expr_value("value[x]")),
            )),
            Some(codings) => {
                // The first coding that is an option, directly or through a crosswalk.
                let option_of = |c: &Value| -> Option<String> {
                    let (sys, code) = (str_at(c, "system")?, str_at(c, "code")?);
                    let target = if sys == system {
                        code.to_string()
                    } else {
                        m.terminology.translate(sys, code, system)?.code.clone()
                    };
                    set.is_some_and(|s| s.option(&target).is_some())
                        .then_some(target)
                };
                let hit = codings.iter().find_map(&option_of);
                match hit {
                    Some(code) => {
                        // Every coding that says the same thing is held too (it is read back).
                        for (j, c) in codings.iter().enumerate() {
                            if option_of(c).as_deref() == Some(code.as_str()) {
                                r.consume(format!("valueCodeableConcept.coding[{j}]"));
                            }
                        }
                        r.consume("valueCodeableConcept.text");
                        value = Some(code);
                    }
                    None => {
                        let sent: Vec<String> = codings
                            .iter()
                            .map(|c| {
                                format!(
                                    "{}|{}",
                                    str_at(c, "system").unwrap_or(""),
                                    str_at(c, "code").unwrap_or("")
                                )
                            })
                            .collect();
                        problems.push(Issue::error(
                            "code-invalid",
                            format!("Observation.valueCodeableConcept: no coding is a known {} code ({system}); sent: {}", de.name, sent.join(", ")),
                            Some(expr_value("valueCodeableConcept")),
                        ));
                    }
                }
            }
        }
    } else if entry.free_codes {
        // Any code of the system is taken as sent (the data element accepts free codes); a code
        // of another system is carried to it through a crosswalk when one knows it.
        let system = entry.value_system.as_deref().unwrap_or_default();
        let codings = resource
            .pointer("/valueCodeableConcept/coding")
            .and_then(Value::as_array);
        let direct = codings
            .into_iter()
            .flatten()
            .enumerate()
            .find(|(_, c)| str_at(c, "system") == Some(system) && str_at(c, "code").is_some())
            .map(|(j, c)| (j, str_at(c, "code").map(str::to_string)));
        let crossed = || {
            codings
                .into_iter()
                .flatten()
                .enumerate()
                .find_map(|(j, c)| {
                    let (sys, code) = (str_at(c, "system")?, str_at(c, "code")?);
                    let t = m.terminology.translate(sys, code, system)?;
                    Some((j, Some(t.code.clone())))
                })
        };
        match direct.or_else(crossed) {
            Some((j, code)) => {
                r.consume(format!("valueCodeableConcept.coding[{j}]"));
                value = code;
            }
            None => problems.push(Issue::error(
                "code-invalid",
                format!("{} takes a {system} code in valueCodeableConcept (or one a crosswalk of terminology.toml carries to it)", de.name),
                Some(expr_value("valueCodeableConcept")),
            )),
        }
    } else if de.value_type.is_numeric() {
        let q = resource.get("valueQuantity");
        let raw = q
            .and_then(|q| q.get("value"))
            .and_then(Value::as_f64)
            .or_else(|| resource.get("valueInteger").and_then(Value::as_f64));
        match raw {
            None => problems.push(Issue::error(
                "required",
                format!(
                    "{} is a number: send valueQuantity (in {})",
                    de.name,
                    de.unit.as_deref().unwrap_or("its unit")
                ),
                Some(expr_value("value[x]")),
            )),
            Some(n) => {
                let from = q.and_then(|q| match str_at(q, "system") {
                    Some(UCUM) | None => str_at(q, "code").or_else(|| str_at(q, "unit")),
                    Some(_) => None,
                });
                let converted = match (&de.unit, from) {
                    (Some(to), Some(from)) => units::convert(n, from, to)
                        .map_err(|why| format!("Observation.valueQuantity: {why}")),
                    (Some(to), None) if q.is_some() => Err(format!(
                        "Observation.valueQuantity has no UCUM unit; {} is recorded in {to}",
                        de.name
                    )),
                    _ => Ok(n),
                };
                match converted.and_then(|v| {
                    de.value_type
                        .normalize(&format_number(v))
                        .map_err(|why| format!("Observation.valueQuantity: {} {why}", de.name))
                }) {
                    Ok(v) => {
                        r.consume(if q.is_some() {
                            "valueQuantity"
                        } else {
                            "valueInteger"
                        });
                        value_num = v.parse::<f64>().ok();
                        value = Some(v);
                    }
                    Err(message) => problems.push(Issue::error(
                        "value",
                        message,
                        Some(expr_value("valueQuantity")),
                    )),
                }
            }
        }
    } else {
        let (key, raw) = match de.value_type {
            ValueType::Boolean | ValueType::TrueOnly => (
                "valueBoolean",
                resource
                    .get("valueBoolean")
                    .and_then(Value::as_bool)
                    .map(|b| b.to_string()),
            ),
            ValueType::Date | ValueType::DateTime => (
                "valueDateTime",
                str_at(resource, "valueDateTime").map(str::to_string),
            ),
            _ => (
                "valueString",
                str_at(resource, "valueString").map(str::to_string),
            ),
        };
        match raw.map(|v| de.value_type.normalize(&v)) {
            Some(Ok(v)) => {
                r.consume(key);
                value = Some(v);
            }
            Some(Err(why)) => problems.push(Issue::error(
                "value",
                format!("Observation.{key}: {} {why}", de.name),
                Some(expr_value(key)),
            )),
            None => problems.push(Issue::error(
                "required",
                format!("{} takes {key}", de.name),
                Some(expr_value("value[x]")),
            )),
        }
    }

    if !problems.is_empty() {
        return Err(Error::Unprocessable(problems));
    }
    Ok(ObservationWrite {
        patient_uid: patient_uid.unwrap_or_default(),
        encounter_uid,
        data_element_id: de.id,
        stage_id: entry.stage_id,
        value: value.unwrap_or_default(),
        value_num,
        observed_at,
        unmapped: r.unmapped(),
    })
}

pub fn to_fhir(d: &DataValueRecord, m: &MappingSet, md: &Metadata) -> Value {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Observation"));
    out.insert("id".into(), json!(d.uid));
    out.insert("meta".into(), json!({ "versionId": d.version.to_string(), "lastUpdated": crate::fhir::instant(&d.last_updated) }));
    out.insert("status".into(), json!("final"));
    let entry = m.observation.for_data_element(d.data_element_id);
    let de = md.data_elements.iter().find(|x| x.id == d.data_element_id);
    if let Some(cat) = entry.and_then(|e| e.category.as_deref()) {
        out.insert(
            "category".into(),
            json!([{ "coding": [{ "system": CATEGORY_SYSTEM, "code": cat }] }]),
        );
    }
    let code = match entry {
        Some(e) => {
            let mut c = json!({ "system": e.coding.system, "code": e.coding.code });
            if let Some(disp) = &e.coding.display {
                c["display"] = json!(disp);
            }
            json!({ "coding": [c], "text": de.map(|x| x.name.as_str()).unwrap_or_default() })
        }
        None => json!({ "text": de.map(|x| x.name.as_str()).unwrap_or("unmapped data element") }),
    };
    out.insert("code".into(), code);
    out.insert(
        "subject".into(),
        json!({ "reference": format!("Patient/{}", d.tracked_entity_uid) }),
    );
    out.insert(
        "encounter".into(),
        json!({ "reference": format!("Encounter/{}", d.event_uid) }),
    );
    if let Some(t) = &d.observed_at {
        out.insert("effectiveDateTime".into(), json!(crate::fhir::instant(t)));
    }
    if let Some(de) = de {
        if let Some(set) = de.option_set_id.and_then(|id| md.option_set_by_id(id)) {
            let mut coding = json!({ "code": d.value });
            let system = entry.and_then(|e| e.value_system.as_deref());
            if let Some(sys) = system {
                coding["system"] = json!(sys);
            }
            if let Some(o) = set.option(&d.value) {
                coding["display"] = json!(o.name);
            }
            // Then every equivalent coding the crosswalks know, each with its display.
            let mut codings = vec![coding];
            if let Some(concept) = system.and_then(|sys| m.terminology.concept(sys, &d.value)) {
                for c in concept
                    .codes
                    .iter()
                    .filter(|c| Some(c.system.as_str()) != system)
                {
                    let mut x = json!({ "system": c.system, "code": c.code });
                    if let Some(disp) = &c.display {
                        x["display"] = json!(disp);
                    }
                    codings.push(x);
                }
            }
            let mut cc = json!({ "coding": codings });
            if let Some(o) = set.option(&d.value) {
                cc["text"] = json!(o.name);
            }
            out.insert("valueCodeableConcept".into(), cc);
        } else if let Some(system) = entry
            .filter(|e| e.free_codes)
            .and_then(|e| e.value_system.as_deref())
        {
            let mut coding = json!({ "system": system, "code": d.value });
            if let Some(disp) = m.terminology.display(system, &d.value) {
                coding["display"] = json!(disp);
            }
            let mut codings = vec![coding];
            // Then every equivalent coding the crosswalks know (ICD-11 beside ICD-10).
            if let Some(concept) = m.terminology.concept(system, &d.value) {
                for c in concept.codes.iter().filter(|c| c.system != system) {
                    let mut x = json!({ "system": c.system, "code": c.code });
                    if let Some(disp) = &c.display {
                        x["display"] = json!(disp);
                    }
                    codings.push(x);
                }
            }
            out.insert("valueCodeableConcept".into(), json!({ "coding": codings }));
        } else if de.value_type.is_numeric() {
            let n: f64 = d.value.parse().unwrap_or_default();
            let mut q = json!({ "value": n });
            if let Some(u) = &de.unit {
                q["unit"] = json!(u);
                q["system"] = json!(UCUM);
                q["code"] = json!(u);
            }
            out.insert("valueQuantity".into(), q);
        } else {
            match de.value_type {
                ValueType::Boolean | ValueType::TrueOnly => {
                    out.insert("valueBoolean".into(), json!(d.value == "true"))
                }
                ValueType::Date | ValueType::DateTime => {
                    out.insert("valueDateTime".into(), json!(d.value))
                }
                _ => out.insert("valueString".into(), json!(d.value)),
            };
        }
    }
    Value::Object(out)
}
