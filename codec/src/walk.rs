//! Walks a FHIR JSON resource with the type information of `schema.rs`, checking the things
//! fhirbolt does not (primitive formats, arrays written as arrays, `null`s, one type per choice
//! element) and naming the FHIRPath of whatever is wrong, which fhirbolt's errors never do. It
//! also finds most of what fhirbolt rejects (unknown elements and resource types, wrong JSON
//! types), so those errors get a location too.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::schema::{self, Child, Kind, Prim};
use crate::{primitives, CodecError, ErrorKind};

/// Checks a FHIR JSON resource; the first problem found, in document order, is returned.
pub(crate) fn check_resource(value: &Value) -> Result<(), CodecError> {
    Walker {
        path: String::new(),
        scratch: String::new(),
    }
    .resource(value)
}

/// Checks a value found at `path` (a FHIRPath such as `Bundle.entry[3]`) as an element of
/// `kind`, naming the elements inside it from that path (`Bundle.entry[3].resource.birthDate`).
pub(crate) fn check_at(value: &Value, kind: Kind, path: &str) -> Result<(), CodecError> {
    Walker {
        path: path.to_owned(),
        scratch: String::new(),
    }
    .single(value, kind)
}

struct Walker {
    /// FHIRPath of the element being checked (`Patient.name[0].period.start`).
    path: String,
    /// Reusable buffer for `schema::child`.
    scratch: String,
}

/// The pseudo-type of the `_birthDate` part of a primitive in FHIR JSON: any primitive type's
/// element list (`id`, `extension`) will do.
const PRIMITIVE_PART: &str = "string";

impl Walker {
    fn resource(&mut self, v: &Value) -> Result<(), CodecError> {
        let Value::Object(obj) = v else {
            return Err(self.structure(format!(
                "must be a resource: a JSON object with a resourceType, not {}",
                describe(v)
            )));
        };
        let key = match obj.get("resourceType") {
            Some(Value::String(rt)) => match schema::resource_type(rt) {
                Some(key) => key,
                None => {
                    return Err(self.structure(format!(
                        "has unknown resourceType `{rt}`: it is not an R4 resource type"
                    )))
                }
            },
            Some(other) => {
                return Err(self.structure(format!(
                    "has a resourceType that is {}; it must be a string such as \"Patient\"",
                    describe(other)
                )))
            }
            None => {
                return Err(self.structure(
                    "is missing `resourceType`: a resource must name its type, e.g. \"resourceType\": \"Patient\""
                        .to_owned(),
                ))
            }
        };
        if self.path.is_empty() {
            self.path.push_str(key);
        }
        self.object(obj, key)
    }

    fn object(&mut self, obj: &Map<String, Value>, key: &'static str) -> Result<(), CodecError> {
        let in_resource = schema::is_resource(key);
        // (base, element) of the choice elements seen so far, to catch `deceasedBoolean` and
        // `deceasedDateTime` together.
        let mut choices: Vec<(&str, &str)> = Vec::new();
        for (k, v) in obj {
            if in_resource && k == "resourceType" {
                continue;
            }
            let (name, is_part) = match k.strip_prefix('_') {
                Some(name) => (name, true),
                None => (k.as_str(), false),
            };
            let child = match schema::child(key, name, &mut self.scratch) {
                Some(child) if !is_part || matches!(child.kind, Kind::Primitive(_)) => child,
                _ => return Err(self.unknown_element(k, key)),
            };
            if let Some((base, _)) = child.choice {
                if let Some((_, other)) = choices.iter().find(|(b, n)| *b == base && *n != name) {
                    return Err(self.structure(format!(
                        "has both `{other}` and `{name}`: only one type of `{base}[x]` may be present"
                    )));
                }
                choices.push((base, name));
            }

            let mark = self.path.len();
            push_element(&mut self.path, name, &child);
            let result = if is_part {
                self.primitive_part(v, &child)
            } else {
                self.element(v, &child)
            };
            self.path.truncate(mark);
            result?;
        }
        Ok(())
    }

    fn element(&mut self, v: &Value, child: &Child) -> Result<(), CodecError> {
        if !child.array {
            if v.is_array() {
                return Err(self.structure(
                    "must not be a JSON array: the element does not repeat".to_owned(),
                ));
            }
            return self.single(v, child.kind);
        }
        let Value::Array(items) = v else {
            return Err(self.structure(format!(
                "must be a JSON array, not {}: the element can repeat, so FHIR JSON always writes it as an array",
                describe(v)
            )));
        };
        if items.is_empty() {
            // Also a guard: fhirbolt 0.4 panics on an empty array.
            return Err(self.structure(
                "is an empty array: FHIR JSON does not allow empty arrays; leave the element out instead"
                    .to_owned(),
            ));
        }
        for (i, item) in items.iter().enumerate() {
            let mark = self.path.len();
            let _ = write!(self.path, "[{i}]");
            // In a repeating primitive, `null` holds the place of a value that only has an
            // extension in the matching `_element` array.
            let result = match (item, child.kind) {
                (Value::Null, Kind::Primitive(_)) => Ok(()),
                _ => self.single(item, child.kind),
            };
            self.path.truncate(mark);
            result?;
        }
        Ok(())
    }

    fn single(&mut self, v: &Value, kind: Kind) -> Result<(), CodecError> {
        match (kind, v) {
            (_, Value::Null) => Err(self.structure(
                "is null: FHIR JSON does not allow null here; leave the element out instead"
                    .to_owned(),
            )),
            (Kind::Resource, _) => self.resource(v),
            (Kind::Complex(key), Value::Object(obj)) => self.object(obj, key),
            (Kind::Complex(key), _) => Err(self.structure(format!(
                "must be a JSON object ({}), not {}",
                type_label(key),
                describe(v)
            ))),
            (Kind::Primitive(p), Value::Object(_) | Value::Array(_)) => Err(self.structure(
                format!("must be a single {} value, not {}", p.name(), describe(v)),
            )),
            (Kind::Primitive(p), _) => {
                primitives::check(p, v).map_err(|reason| self.invalid(p, v, &reason))
            }
        }
    }

    /// The `_birthDate` part of a primitive: an object (or, for repeating primitives, an array
    /// of objects and nulls) with `id` and `extension`.
    fn primitive_part(&mut self, v: &Value, child: &Child) -> Result<(), CodecError> {
        let part = Child {
            kind: Kind::Complex(PRIMITIVE_PART),
            array: child.array,
            choice: None,
        };
        match v {
            Value::Array(items) if child.array && !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    if item.is_null() {
                        continue;
                    }
                    let mark = self.path.len();
                    let _ = write!(self.path, "[{i}]");
                    let result = self.single(item, part.kind);
                    self.path.truncate(mark);
                    result?;
                }
                Ok(())
            }
            _ => self.element(v, &part),
        }
    }

    fn expression(&self) -> Option<String> {
        (!self.path.is_empty()).then(|| self.path.clone())
    }

    /// A structure error about the current element; `what` continues the sentence "<path> ...".
    fn structure(&self, what: String) -> CodecError {
        let message = if self.path.is_empty() {
            format!("the resource {what}")
        } else {
            format!("{} {what}", self.path)
        };
        CodecError {
            kind: ErrorKind::Structure,
            message,
            expression: self.expression(),
        }
    }

    fn unknown_element(&self, key: &str, ty: &str) -> CodecError {
        unknown_element(&self.path, key, ty)
    }

    fn invalid(&self, p: Prim, v: &Value, reason: &str) -> CodecError {
        let shown = match v {
            // A string where a string belongs is shown as it is; anything else as JSON, so that
            // `"true"` for a boolean shows its quotes.
            Value::String(s) if !matches!(p, Prim::Boolean | Prim::Decimal) && !is_number(p) => {
                s.clone()
            }
            _ => v.to_string(),
        };
        invalid_value(p, &shown, &self.path, reason)
    }
}

/// "unknown element `foo` in HumanName (at Patient.name[0].foo)"; `parent_path` is the
/// FHIRPath of the object that has the element, `ty` its type.
pub(crate) fn unknown_element(parent_path: &str, key: &str, ty: &str) -> CodecError {
    let expression = format!("{parent_path}.{key}");
    let message = if parent_path.contains(['.', '[']) {
        format!(
            "unknown element `{key}` in {} (at {expression})",
            type_label(ty)
        )
    } else {
        format!("unknown element `{key}` in {}", type_label(ty))
    };
    CodecError::structure(message, Some(expression))
}

/// "invalid date `1990-02-30` at Patient.birthDate: day 30 does not exist in February 1990".
pub(crate) fn invalid_value(p: Prim, shown: &str, path: &str, reason: &str) -> CodecError {
    CodecError::primitive(
        format!(
            "invalid {} `{}` at {path}: {reason}",
            p.name(),
            truncate(shown)
        ),
        Some(path.to_owned()),
    )
}

/// Appends an element to a FHIRPath: `.name`, or `.value.ofType(dateTime)` for a choice.
pub(crate) fn push_element(path: &mut String, name: &str, child: &Child) {
    path.push('.');
    match child.choice {
        Some((base, ty)) => {
            let _ = write!(path, "{base}.ofType({ty})");
        }
        None => path.push_str(name),
    }
}

fn is_number(p: Prim) -> bool {
    matches!(
        p,
        Prim::Integer | Prim::Integer64 | Prim::PositiveInt | Prim::UnsignedInt
    )
}

/// How a type is named in messages: the primitive-part pseudo type is not a real one.
fn type_label(key: &str) -> &str {
    if key == PRIMITIVE_PART {
        "the extension part of a primitive (only `id` and `extension` are allowed)"
    } else {
        key
    }
}

pub(crate) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keeps messages readable when a value is huge.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> CodecError {
        check_resource(&v).expect_err("should be rejected")
    }

    #[test]
    fn accepts_a_typical_patient() {
        let patient = json!({
            "resourceType": "Patient",
            "id": "p-1",
            "meta": {"versionId": "1", "lastUpdated": "2024-01-02T03:04:05.678Z",
                     "profile": ["http://example.org/StructureDefinition/p"]},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "extension": [{"url": "http://example.org/ext", "valueDate": "2000-02-29"}],
            "identifier": [{"system": "http://example.org/ids", "value": "123", "use": "official"}],
            "active": true,
            "name": [{"family": "Doe", "given": ["Jane", null], "_given": [null, {"extension": [
                {"url": "http://example.org/e", "valueString": "x"}]}],
                "period": {"start": "2001-01-01", "end": "2002-02-02T10:00:00+02:00"}}],
            "telecom": [{"system": "phone", "value": "+1 555", "rank": 1}],
            "gender": "female",
            "birthDate": "1990-02-28",
            "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                          "valueDateTime": "1990-02-28T10:00:00Z"}]},
            "deceasedBoolean": false,
            "address": [{"line": ["1 Main  St"], "postalCode": "AB  12"}],
            "multipleBirthInteger": 2,
            "contact": [{"gender": "male", "period": {"start": "2020"}}],
            "contained": [{"resourceType": "Organization", "id": "o1", "name": "Org"}],
            "managingOrganization": {"reference": "#o1"}
        });
        check_resource(&patient).unwrap();
    }

    #[test]
    fn reports_primitive_errors_with_fhirpath() {
        let e = err(json!({"resourceType": "Patient", "birthDate": "1990-02-30"}));
        assert_eq!(e.kind, ErrorKind::Primitive);
        assert_eq!(
            e.message,
            "invalid date `1990-02-30` at Patient.birthDate: day 30 does not exist in February 1990"
        );
        assert_eq!(e.expression.as_deref(), Some("Patient.birthDate"));

        let e = err(json!({"resourceType": "Patient", "name": [{"family": "x"},
            {"period": {"start": "2020-01-01T10:00:00"}}]}));
        assert_eq!(e.kind, ErrorKind::Primitive);
        assert_eq!(
            e.expression.as_deref(),
            Some("Patient.name[1].period.start")
        );

        let e = err(
            json!({"resourceType": "Observation", "status": "final", "code": {},
            "effectiveDateTime": "2020-02-30"}),
        );
        assert_eq!(
            e.expression.as_deref(),
            Some("Observation.effective.ofType(dateTime)")
        );

        let e = err(
            json!({"resourceType": "Patient", "_birthDate": {"extension": [
            {"url": "http://e", "valueInstant": "2020-01-01"}]}}),
        );
        assert_eq!(
            e.expression.as_deref(),
            Some("Patient.birthDate.extension[0].value.ofType(instant)")
        );

        let e = err(json!({"resourceType": "Patient", "active": "true"}));
        assert_eq!(e.kind, ErrorKind::Primitive);
        assert!(e.message.contains("`\"true\"`"), "{}", e.message);

        let e = err(json!({"resourceType": "Patient", "id": "a_b"}));
        assert_eq!(e.expression.as_deref(), Some("Patient.id"));
        let e = err(json!({"resourceType": "Patient", "meta": {"lastUpdated": "2020-01-01"}}));
        assert_eq!(e.expression.as_deref(), Some("Patient.meta.lastUpdated"));
        let e = err(json!({"resourceType": "Patient", "gender": "ma  le"}));
        assert_eq!(e.expression.as_deref(), Some("Patient.gender"));
        let e = err(json!({"resourceType": "Patient", "extension": [{"url": "a b"}]}));
        assert_eq!(e.expression.as_deref(), Some("Patient.extension[0].url"));
        let e = err(
            json!({"resourceType": "Observation", "status": "final", "code": {},
            "valueQuantity": {"value": "5"}}),
        );
        assert_eq!(
            e.expression.as_deref(),
            Some("Observation.value.ofType(Quantity).value")
        );
    }

    #[test]
    fn checks_nested_resources() {
        let e = err(
            json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Patient"}},
            {"resource": {"resourceType": "Patient", "birthDate": "2001-13"}}]}),
        );
        assert_eq!(
            e.expression.as_deref(),
            Some("Bundle.entry[1].resource.birthDate")
        );

        let e = err(
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Patient", "ifModifiedSince": "2020"}}]}),
        );
        assert_eq!(
            e.expression.as_deref(),
            Some("Bundle.entry[0].request.ifModifiedSince")
        );

        let e = err(
            json!({"resourceType": "Parameters", "parameter": [{"name": "a", "part": [
            {"name": "b", "valueDate": "2020-02-30"}]}]}),
        );
        assert_eq!(
            e.expression.as_deref(),
            Some("Parameters.parameter[0].part[0].value.ofType(date)")
        );

        let e = err(json!({"resourceType": "Patient", "contained": [{"resourceType": "Foo"}]}));
        assert_eq!(e.kind, ErrorKind::Structure);
        assert_eq!(e.expression.as_deref(), Some("Patient.contained[0]"));
    }

    #[test]
    fn reports_structure_errors() {
        let e = err(json!({"resourceType": "Patient", "foo": [1, 2, 3]}));
        assert_eq!(e.kind, ErrorKind::Structure);
        assert_eq!(e.message, "unknown element `foo` in Patient");
        assert_eq!(e.expression.as_deref(), Some("Patient.foo"));

        let e = err(json!({"resourceType": "Patient", "name": [{"nickname": "x"}]}));
        assert_eq!(
            e.message,
            "unknown element `nickname` in HumanName (at Patient.name[0].nickname)"
        );

        let e = err(json!({"resourceType": "Patient", "_name": {}}));
        assert_eq!(e.expression.as_deref(), Some("Patient._name"));

        let e = err(json!({"resourceType": "Patient", "name": {"family": "x"}}));
        assert!(e.message.contains("must be a JSON array"), "{}", e.message);

        let e = err(json!({"resourceType": "Patient", "gender": ["male"]}));
        assert!(
            e.message.contains("must not be a JSON array"),
            "{}",
            e.message
        );

        let e = err(json!({"resourceType": "Patient", "gender": null}));
        assert!(e.message.contains("null"), "{}", e.message);

        let e = err(json!({"resourceType": "Patient", "deceasedBoolean": true,
            "deceasedDateTime": "2020"}));
        assert!(
            e.message.contains("only one type of `deceased[x]`"),
            "{}",
            e.message
        );

        let e = err(json!({"resourceType": "Patient", "name": ["Jane"]}));
        assert_eq!(e.expression.as_deref(), Some("Patient.name[0]"));

        let e = err(json!({"resourceType": "Nope"}));
        assert_eq!(
            e.message,
            "the resource has unknown resourceType `Nope`: it is not an R4 resource type"
        );
        assert_eq!(e.expression, None);
        let e = err(json!({"id": "x"}));
        assert!(
            e.message.contains("missing `resourceType`"),
            "{}",
            e.message
        );
        let e = err(json!([1]));
        assert_eq!(e.kind, ErrorKind::Structure);
    }
}
