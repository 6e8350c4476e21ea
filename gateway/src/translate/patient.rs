//! FHIR Patient ↔ tracked entity with attribute values, as `mappings/patient.toml` says.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{reference_id, Reader};
use crate::error::Error;
use crate::fhir::outcome::Issue;
use crate::mapping::PatientMapping;
use crate::tracker::metadata::Metadata;
use crate::tracker::model::{AttributeValue, PersonRecord};

/// What a Patient becomes in the tracker, before any database work.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientWrite {
    /// The owning org unit named by `managingOrganization`, if any.
    pub org_unit_id: Option<i64>,
    pub inactive: bool,
    pub values: Vec<AttributeValue>,
    /// Elements of the input that no mapping holds.
    pub unmapped: Vec<Issue>,
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

pub fn to_tracker(
    resource: &Value,
    map: &PatientMapping,
    md: &Metadata,
) -> Result<PatientWrite, Error> {
    let mut r = Reader::new(resource, "Patient");
    let mut values: Vec<AttributeValue> = Vec::new();
    let mut problems: Vec<Issue> = Vec::new();
    r.consume_server_meta();

    let put = |r: &Reader,
               attribute_id: i64,
               raw: &str,
               path: &str,
               values: &mut Vec<AttributeValue>,
               problems: &mut Vec<Issue>| {
        let Some(attr) = md.attribute_by_id(attribute_id) else {
            return;
        };
        match attr.value_type.normalize(raw) {
            Ok(value) => values.push(AttributeValue {
                attribute_id,
                value,
                expression: r.expr(path),
            }),
            Err(why) => problems.push(Issue::error(
                "value",
                format!("{}: {} {why}", r.expr(path), attr.name),
                Some(r.expr(path)),
            )),
        }
    };

    // Identifiers: one value per declared system. A placeholder (`ignore` in the mapping) is
    // not stored and is reported; a second, different value of a single-valued system (two
    // national IDs) is refused; of a multi-valued one, the first is held and the rest reported.
    let empty = Vec::new();
    let identifiers = resource
        .get("identifier")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut first_of: Vec<(&str, &str, usize)> = Vec::new();
    let mut notes: Vec<Issue> = Vec::new();
    for (i, ident) in identifiers.iter().enumerate() {
        let (Some(system), Some(value)) = (str_at(ident, "system"), str_at(ident, "value")) else {
            continue;
        };
        let Some(m) = map.identifier(system) else {
            continue;
        };
        let name = m.type_text.as_deref().unwrap_or(system);
        if m.is_placeholder(value) {
            consume_identifier(&mut r, ident, i, m.type_text.as_deref());
            notes.push(Issue::warning(
                "informational",
                format!("{}: `{value}` is a placeholder {name} (listed under `ignore` in mappings/patient.toml); it identifies nobody and was not stored", r.expr(&format!("identifier[{i}].value"))),
                Some(r.expr(&format!("identifier[{i}].value"))),
            ));
            continue;
        }
        if let Some((_, first, j)) = first_of.iter().find(|(s, _, _)| *s == system) {
            if first.trim() == value.trim() {
                consume_identifier(&mut r, ident, i, m.type_text.as_deref());
            } else if m.single_valued {
                problems.push(Issue::error(
                    "business-rule",
                    format!("{}: a second {name}, different from identifier[{j}]; a person has one {name} (single_valued in mappings/patient.toml)", r.expr(&format!("identifier[{i}].value"))),
                    Some(r.expr(&format!("identifier[{i}].value"))),
                ));
            }
            continue;
        }
        first_of.push((system, value, i));
        consume_identifier(&mut r, ident, i, m.type_text.as_deref());
        put(
            &r,
            m.attribute_id,
            value,
            &format!("identifier[{i}].value"),
            &mut values,
            &mut problems,
        );
    }

    // The first official or usual name, else the first name.
    let names = resource
        .get("name")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let chosen = names
        .iter()
        .position(|n| matches!(str_at(n, "use"), Some("official") | Some("usual")))
        .or(if names.is_empty() { None } else { Some(0) });
    if let Some(i) = chosen {
        let n = &names[i];
        if n.get("use").is_some() {
            r.consume(format!("name[{i}].use"));
        }
        if let (Some(attr), Some(family)) = (map.family, str_at(n, "family")) {
            r.consume(format!("name[{i}].family"));
            put(
                &r,
                attr,
                family,
                &format!("name[{i}].family"),
                &mut values,
                &mut problems,
            );
        }
        if let (Some(attr), Some(given)) = (map.given, n.get("given").and_then(Value::as_array)) {
            let parts: Vec<&str> = given.iter().filter_map(Value::as_str).collect();
            if !parts.is_empty() {
                r.consume(format!("name[{i}].given"));
                put(
                    &r,
                    attr,
                    &parts.join(" "),
                    &format!("name[{i}].given"),
                    &mut values,
                    &mut problems,
                );
            }
        }
    }

    if let (Some(g), Some(code)) = (&map.gender, str_at(resource, "gender")) {
        r.consume("gender");
        match g.codes.iter().find(|(fhir, _)| fhir == code) {
            Some((_, option)) => values.push(AttributeValue {
                attribute_id: g.attribute_id,
                value: option.clone(),
                expression: r.expr("gender"),
            }),
            None => problems.push(Issue::error(
                "code-invalid",
                format!("Patient.gender: `{code}` is not one of male, female, other, unknown"),
                Some(r.expr("gender")),
            )),
        }
    }

    if let (Some(attr), Some(birth)) = (map.birth_date, str_at(resource, "birthDate")) {
        r.consume("birthDate");
        put(&r, attr, birth, "birthDate", &mut values, &mut problems);
    }

    if let Some(attr) = map.deceased {
        if let Some(when) = str_at(resource, "deceasedDateTime") {
            // Its format was checked when the resource was parsed (the codec's primitives).
            r.consume("deceasedDateTime");
            put(
                &r,
                attr,
                when,
                "deceasedDateTime",
                &mut values,
                &mut problems,
            );
        } else if let Some(dead) = resource.get("deceasedBoolean").and_then(Value::as_bool) {
            r.consume("deceasedBoolean");
            // false is the absence of a death: nothing is stored (a PUT clears an earlier one).
            if dead {
                put(
                    &r,
                    attr,
                    "true",
                    "deceasedBoolean",
                    &mut values,
                    &mut problems,
                );
            }
        }
    }

    let telecoms = resource
        .get("telecom")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut used_telecom = vec![false; telecoms.len()];
    for t in &map.telecom {
        let found = telecoms.iter().enumerate().position(|(i, cp)| {
            !used_telecom[i]
                && str_at(cp, "system") == Some(t.system.as_str())
                && t.use_
                    .as_deref()
                    .is_none_or(|u| str_at(cp, "use") == Some(u))
        });
        if let Some(i) = found {
            if let Some(value) = str_at(&telecoms[i], "value") {
                used_telecom[i] = true;
                r.consume(format!("telecom[{i}].system"));
                r.consume(format!("telecom[{i}].value"));
                if t.use_.is_some() {
                    r.consume(format!("telecom[{i}].use"));
                }
                put(
                    &r,
                    t.attribute_id,
                    value,
                    &format!("telecom[{i}].value"),
                    &mut values,
                    &mut problems,
                );
            }
        }
    }

    if let Some(address) = resource
        .get("address")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        for f in &map.address {
            let raw = match (f.json, address.get(f.json)) {
                ("line", Some(Value::Array(lines))) => lines
                    .first()
                    .and_then(Value::as_str)
                    .map(|s| (s, "line[0]".to_string())),
                (_, Some(Value::String(s))) => Some((s.as_str(), f.json.to_string())),
                _ => None,
            };
            if let Some((raw, sub)) = raw {
                let path = format!("address[0].{sub}");
                r.consume(path.clone());
                put(&r, f.attribute_id, raw, &path, &mut values, &mut problems);
            }
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
                format!("Patient.managingOrganization: `{reference}` is not an org unit of this registry; use Organization/<id> of an Organization the server lists"),
                Some(r.expr("managingOrganization")),
            )),
        }
    }

    let inactive = match resource.get("active") {
        Some(Value::Bool(active)) => {
            r.consume("active");
            !active
        }
        _ => false,
    };

    if !problems.is_empty() {
        return Err(Error::Unprocessable(problems));
    }
    let mut unmapped = r.unmapped();
    unmapped.extend(notes);
    Ok(PatientWrite {
        org_unit_id,
        inactive,
        values,
        unmapped,
    })
}

/// Marks the parts of a held identifier as read: system, value, a `use` the server renders, and
/// the type when it is the text the mapping renders.
fn consume_identifier(r: &mut Reader, ident: &Value, i: usize, type_text: Option<&str>) {
    r.consume(format!("identifier[{i}].system"));
    r.consume(format!("identifier[{i}].value"));
    if ident
        .get("use")
        .is_some_and(|u| u == "official" || u == "usual")
    {
        r.consume(format!("identifier[{i}].use"));
    }
    if let (Some(t), Some(text)) = (ident.get("type"), type_text) {
        if t.as_object().is_some_and(|o| o.len() == 1)
            && t.get("text").and_then(Value::as_str) == Some(text)
        {
            r.consume(format!("identifier[{i}].type"));
        }
    }
}

/// Renders a Patient from tracker state. Only elements the mapping holds appear.
pub fn to_fhir(p: &PersonRecord, map: &PatientMapping, md: &Metadata) -> Value {
    let v: HashMap<i64, &str> = p.values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Patient"));
    out.insert("id".into(), json!(p.uid));
    out.insert("meta".into(), json!({ "versionId": p.version.to_string(), "lastUpdated": crate::fhir::instant(&p.last_updated) }));

    let identifiers: Vec<Value> = map
        .identifiers
        .iter()
        .filter_map(|m| {
            let value = v.get(&m.attribute_id)?;
            let mut i = json!({ "system": m.system, "value": value });
            if let Some(t) = &m.type_text {
                i["type"] = json!({ "text": t });
            }
            Some(i)
        })
        .collect();
    if !identifiers.is_empty() {
        out.insert("identifier".into(), Value::Array(identifiers));
    }
    out.insert("active".into(), json!(!p.inactive));

    let family = map.family.and_then(|a| v.get(&a));
    let given = map.given.and_then(|a| v.get(&a));
    if family.is_some() || given.is_some() {
        let mut n = json!({ "use": "official" });
        if let Some(f) = family {
            n["family"] = json!(f);
        }
        if let Some(g) = given {
            n["given"] = json!(g.split_whitespace().collect::<Vec<_>>());
        }
        out.insert("name".into(), json!([n]));
    }

    let telecom: Vec<Value> = map
        .telecom
        .iter()
        .filter_map(|t| {
            let value = v.get(&t.attribute_id)?;
            let mut cp = json!({ "system": t.system, "value": value });
            if let Some(u) = &t.use_ {
                cp["use"] = json!(u);
            }
            Some(cp)
        })
        .collect();
    if !telecom.is_empty() {
        out.insert("telecom".into(), Value::Array(telecom));
    }

    if let Some(g) = &map.gender {
        if let Some(option) = v.get(&g.attribute_id) {
            if let Some((fhir, _)) = g.codes.iter().find(|(_, o)| o == option) {
                out.insert("gender".into(), json!(fhir));
            }
        }
    }
    if let Some(b) = map.birth_date.and_then(|a| v.get(&a)) {
        out.insert("birthDate".into(), json!(b));
    }
    if let Some(d) = map.deceased.and_then(|a| v.get(&a)) {
        if *d == "true" {
            out.insert("deceasedBoolean".into(), json!(true));
        } else {
            out.insert("deceasedDateTime".into(), json!(d));
        }
    }

    let mut address = Map::new();
    for f in &map.address {
        if let Some(value) = v.get(&f.attribute_id) {
            let value = if f.json == "line" {
                json!([value])
            } else {
                json!(value)
            };
            address.insert(f.json.into(), value);
        }
    }
    if !address.is_empty() {
        out.insert("address".into(), json!([address]));
    }

    if let Some(ou) = md.org_unit_by_id(p.org_unit_id) {
        out.insert(
            "managingOrganization".into(),
            json!({ "reference": format!("Organization/{}", ou.uid), "display": ou.name }),
        );
    }
    Value::Object(out)
}
