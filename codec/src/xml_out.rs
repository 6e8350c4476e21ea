//! FHIR JSON written as compact FHIR XML in one pass: the very bytes that fhirbolt's writer gives
//! once `xml::compact` has taken out its indentation, without building fhirbolt's model of the
//! resource first (which, with the indentation and its removal, was a third of the CPU of an XML
//! `$everything`).
//!
//! It writes the shapes the gateway renders. On anything else it gives up (`None`) and the caller
//! takes fhirbolt's path, which writes it or says what is wrong: a narrative (fhirbolt's path
//! puts back its whitespace), an element R4 does not have, a value of the wrong JSON type, a
//! `_element` of a shape it does not know. What it does not check, like fhirbolt's path does,
//! is cardinality: a required element missing from the gateway's own rendering is written
//! without it, as JSON answers are.
//!
//! The rules are fhirbolt 0.4's (`fhirbolt-serde/src/xml/write.rs`): the declaration, the FHIR
//! namespace on the root element only, attributes `id`, `url`, `value` in that order with `<`,
//! `>`, `&` and `"` written as numeric references, an element without children closed as
//! `<name .../>`. `writes_what_fhirbolt_writes` (below) and
//! `compact_xml_is_fhirbolts_without_the_indentation` (tests/codec.rs) hold the two paths to the
//! same bytes.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::schema::{self, Kind, Prim};

/// The compact XML of a FHIR JSON resource, or `None` for fhirbolt's path to write.
pub(crate) fn write(resource: &Value) -> Option<Vec<u8>> {
    let mut w = Writer {
        out: Vec::with_capacity(8192),
        scratch: String::new(),
    };
    w.out
        .extend_from_slice(br#"<?xml version="1.0" encoding="UTF-8"?>"#);
    w.resource(resource, true)?;
    Some(w.out)
}

struct Writer {
    out: Vec<u8>,
    scratch: String,
}

/// One member of a JSON object in the order XML writes it: the element's place in its type, its
/// value and its `_element` companion.
struct Member<'a> {
    at: usize,
    name: &'a str,
    value: Option<&'a Value>,
    extra: Option<&'a Value>,
}

impl Writer {
    fn resource(&mut self, v: &Value, root: bool) -> Option<()> {
        let map = v.as_object()?;
        let t = map.get("resourceType")?.as_str()?;
        let key = schema::resource_type(t)?;
        self.out.push(b'<');
        self.out.extend_from_slice(t.as_bytes());
        if root {
            self.out
                .extend_from_slice(br#" xmlns="http://hl7.org/fhir""#);
        }
        self.out.push(b'>');
        self.members(key, map, true)?;
        self.close(t);
        Some(())
    }

    /// Writes the members of `map` (an object of type `key`) as child elements, in the order of
    /// the type's definition.
    fn members(
        &mut self,
        key: &'static str,
        map: &Map<String, Value>,
        resource: bool,
    ) -> Option<()> {
        let set = schema::elements(key)?;
        let mut members: Vec<Member> = Vec::with_capacity(map.len());
        for (k, v) in map {
            let (name, companion) = match k.strip_prefix('_') {
                Some(base) => (base, true),
                None => (k.as_str(), false),
            };
            if resource && name == "resourceType" && !companion {
                continue;
            }
            // An element's id is an attribute of it (a resource's id is an element), and so is
            // an extension's url: the caller wrote them.
            if !resource && (name == "id" || (key == "Extension" && name == "url")) {
                if companion {
                    return None;
                }
                continue;
            }
            let at = set.get_index(name)?;
            match members.iter_mut().find(|m| m.name == name) {
                Some(m) if companion => m.extra = Some(v),
                Some(m) => m.value = Some(v),
                None => members.push(Member {
                    at,
                    name,
                    value: (!companion).then_some(v),
                    extra: companion.then_some(v),
                }),
            }
        }
        members.sort_by_key(|m| m.at);
        for m in members {
            let kind = schema::child(key, m.name, &mut self.scratch)?.kind;
            match kind {
                Kind::Resource => {
                    for item in items(m.value?) {
                        self.open(m.name, None, None);
                        self.resource(item, false)?;
                        self.close(m.name);
                    }
                }
                Kind::Complex("Narrative") => return None,
                Kind::Complex(ty) => {
                    if m.extra.is_some() {
                        return None;
                    }
                    for item in items(m.value?) {
                        self.complex(m.name, ty, item.as_object()?)?;
                    }
                }
                Kind::Primitive(p) => self.primitives(m.name, p, m.value, m.extra)?,
            }
        }
        Some(())
    }

    fn complex(&mut self, name: &str, ty: &'static str, map: &Map<String, Value>) -> Option<()> {
        let id = attribute(map.get("id"))?;
        let url = match ty {
            "Extension" => attribute(map.get("url"))?,
            _ => None,
        };
        self.open(name, id, url);
        let before = self.out.len();
        self.members(ty, map, false)?;
        self.end(name, before);
        Some(())
    }

    /// A primitive element, or each of a repeating one, with its `_element` (id and extensions).
    fn primitives(
        &mut self,
        name: &str,
        p: Prim,
        value: Option<&Value>,
        extra: Option<&Value>,
    ) -> Option<()> {
        match (value, extra) {
            (Some(Value::Array(values)), extra) => {
                let extras = match extra {
                    None => None,
                    Some(Value::Array(e)) if e.len() == values.len() => Some(e),
                    Some(_) => return None,
                };
                for (i, v) in values.iter().enumerate() {
                    let e = extras.and_then(|e| e.get(i)).filter(|e| !e.is_null());
                    let v = Some(v).filter(|v| !v.is_null());
                    self.primitive(name, p, v, e)?;
                }
                Some(())
            }
            (_, Some(Value::Array(_) | Value::Null)) => None,
            (value, extra) => self.primitive(name, p, value, extra),
        }
    }

    fn primitive(
        &mut self,
        name: &str,
        p: Prim,
        value: Option<&Value>,
        extra: Option<&Value>,
    ) -> Option<()> {
        let text = match value {
            Some(v) => Some(primitive_text(p, v)?),
            None => None,
        };
        let (id, extensions) = match extra {
            None => (None, None),
            Some(Value::Object(e)) => {
                if e.keys().any(|k| k != "id" && k != "extension") {
                    return None;
                }
                (attribute(e.get("id"))?, e.get("extension"))
            }
            Some(_) => return None,
        };
        if text.is_none() && extensions.is_none() && id.is_none() {
            return None;
        }
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        if let Some(id) = id {
            self.attr("id", id);
        }
        if let Some(t) = text.as_deref() {
            self.attr("value", t);
        }
        match extensions {
            None => self.out.extend_from_slice(b"/>"),
            Some(list) => {
                self.out.push(b'>');
                let before = self.out.len();
                for x in list.as_array()? {
                    self.complex("extension", "Extension", x.as_object()?)?;
                }
                self.end(name, before);
            }
        }
        Some(())
    }

    fn open(&mut self, name: &str, id: Option<&str>, url: Option<&str>) {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        if let Some(id) = id {
            self.attr("id", id);
        }
        if let Some(url) = url {
            self.attr("url", url);
        }
        self.out.push(b'>');
    }

    /// Closes `name`, opened just before `before`: as `<name .../>` when nothing was written
    /// inside.
    fn end(&mut self, name: &str, before: usize) {
        if self.out.len() == before {
            self.out.pop();
            self.out.extend_from_slice(b"/>");
        } else {
            self.close(name);
        }
    }

    fn close(&mut self, name: &str) {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'>');
    }

    fn attr(&mut self, key: &str, value: &str) {
        self.out.push(b' ');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"=\"");
        for b in value.bytes() {
            match b {
                b'<' => self.out.extend_from_slice(b"&#60;"),
                b'>' => self.out.extend_from_slice(b"&#62;"),
                b'&' => self.out.extend_from_slice(b"&#38;"),
                b'"' => self.out.extend_from_slice(b"&#34;"),
                _ => self.out.push(b),
            }
        }
        self.out.push(b'"');
    }
}

/// The items of an element: each of an array, or the one value.
fn items(v: &Value) -> std::slice::Iter<'_, Value> {
    match v {
        Value::Array(a) => a.iter(),
        one => std::slice::from_ref(one).iter(),
    }
}

/// An attribute's value: absent, or a string (anything else is for fhirbolt's path to refuse).
fn attribute(v: Option<&Value>) -> Option<Option<&str>> {
    match v {
        None => Some(None),
        Some(Value::String(s)) => Some(Some(s)),
        Some(_) => None,
    }
}

/// A primitive's `value` attribute as fhirbolt writes it, when the JSON value has the type the
/// element wants.
fn primitive_text(p: Prim, v: &Value) -> Option<Cow<'_, str>> {
    match (p, v) {
        (Prim::Boolean, Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        (
            Prim::Integer | Prim::Integer64 | Prim::PositiveInt | Prim::UnsignedInt,
            Value::Number(n),
        ) if n.is_i64() || n.is_u64() => Some(Cow::Owned(n.to_string())),
        (Prim::Decimal, Value::Number(n)) => Some(Cow::Owned(n.to_string())),
        (Prim::Xhtml, _) => None,
        (
            Prim::Boolean
            | Prim::Integer
            | Prim::Integer64
            | Prim::PositiveInt
            | Prim::UnsignedInt
            | Prim::Decimal,
            _,
        ) => None,
        (_, Value::String(s)) => Some(Cow::Borrowed(s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    /// Shapes the writer takes: each written as fhirbolt's path writes it.
    fn taken() -> Vec<Value> {
        vec![
            json!({"resourceType": "Patient", "id": "p1",
                "meta": {"versionId": "2", "lastUpdated": "2024-05-06T07:08:09.123Z",
                         "tag": [{"system": "http://x/tags", "code": "v1", "display": "a <b> & \"c\" 'd'"}]},
                "extension": [{"url": "http://x/ext", "valueDecimal": 61.50},
                              {"url": "http://x/nested", "extension": [{"url": "a", "valueInteger": -3}, {"url": "b", "valueBoolean": false}]}],
                "identifier": [{"id": "i1", "use": "official", "system": "http://x/ids", "value": "A-1"}],
                "active": true,
                "name": [{"family": "Ndege", "given": ["Asha", "Q", "Zawadi"],
                          "_given": [null, {"id": "g2", "extension": [{"url": "http://x/why", "valueString": "nickname"}]}, null]}],
                "gender": "female",
                "birthDate": "1990-02-28",
                "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1990-02-28T10:15:00+03:00"}]},
                "deceasedBoolean": false,
                "address": [{"line": ["Plot 7", "Mwenge\nBlock B"], "city": "Dar es Salaam", "country": "TZ"}],
                "multipleBirthInteger": 2,
                "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
                             "name": {"family": "Ndege", "given": ["Juma"]}, "gender": "male"}],
                "managingOrganization": {"reference": "Organization/o1", "display": "Kliniki ya Mwenge — ülk"},
                "link": [{"other": {"reference": "Patient/p2"}, "type": "seealso"}]}),
            json!({"resourceType": "Observation", "id": "o1", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}], "text": "Weight"},
                "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"},
                "effectiveDateTime": "2024-01-02T03:04:05Z",
                "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
                "component": [{"code": {"text": "x"}, "valueQuantity": {"value": 0.000125}},
                              {"code": {"text": "y"}, "valueCodeableConcept": {"coding": [{"code": "z"}]}}]}),
            json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": "Patient/p1"},
                "period": {"start": "2024-01-02T03:04:05Z", "end": "2024-01-02T04:00:00Z"},
                "contained": [{"resourceType": "Location", "id": "l1", "name": "Ward 3"}],
                "location": [{"location": {"reference": "#l1"}, "status": "completed"}],
                "serviceProvider": {"id": "sp", "extension": [{"url": "http://x/y", "valueCode": "c"}]},
                "diagnosis": [{"condition": {"reference": "Condition/c1"}, "rank": 1}]}),
            json!({"resourceType": "Bundle", "id": "b1", "type": "searchset", "total": 2,
                "link": [{"relation": "self", "url": "http://h/fhir/Patient?x=1&y=<2>"}],
                "entry": [
                    {"fullUrl": "http://h/fhir/Patient/p1", "resource": {"resourceType": "Patient", "id": "p1", "active": true}, "search": {"mode": "match"}},
                    {"fullUrl": "http://h/fhir/Observation/o1", "resource": {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "t"}, "valueString": "ok"}, "search": {"mode": "include", "score": 0.5}},
                    {"response": {"status": "201 Created", "location": "Patient/p3/_history/1", "etag": "W/\"1\"",
                                  "outcome": {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "informational", "diagnostics": "kept <as> is", "expression": ["Patient.x"]}]}}}]}),
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "result", "valueBoolean": true},
                {"name": "match", "part": [{"name": "concept", "valueCoding": {"system": "http://x", "code": "1"}}, {"name": "score", "valueDecimal": 1.0}]},
                {"name": "resource", "resource": {"resourceType": "Patient", "id": "p9"}}]}),
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "details": {"text": "ünïcode ✓ & <tags>"}}]}),
            json!({"resourceType": "Patient", "name": [{"id": "only-id"}]}),
        ]
    }

    #[test]
    fn writes_what_fhirbolt_writes() {
        for v in taken() {
            let direct = super::write(&v).unwrap_or_else(|| panic!("not taken: {v}"));
            let bolt = crate::xml::through_fhirbolt(&v, false).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(bolt).unwrap(),
                "{v}"
            );
        }
    }

    /// What the writer leaves to fhirbolt's path: to be written there or refused.
    #[test]
    fn leaves_the_rest_to_fhirbolt() {
        for v in [
            json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}),
            json!({"resourceType": "Patient", "foo": 1}),
            json!({"resourceType": "Nope"}),
            json!({"resourceType": "Patient", "active": "true"}),
            json!({"resourceType": "Patient", "multipleBirthInteger": 1.5}),
            json!({"resourceType": "Patient", "gender": 1}),
            json!({"resourceType": "Patient", "name": {"family": 7}}),
            json!({"resourceType": "Patient", "name": [{"_id": {"extension": []}}]}),
            json!({"resourceType": "Patient", "birthDate": "2000-01-01", "_birthDate": [{}]}),
            json!({"resourceType": "Patient", "_birthDate": {"foo": 1}}),
            json!({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [null, null]}]}),
            json!({"resourceType": "Patient", "name": [{"given": [null]}]}),
            json!([1]),
        ] {
            assert!(super::write(&v).is_none(), "{v}");
        }
    }
}
