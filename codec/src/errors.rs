//! Building [`CodecError`]s, and turning fhirbolt's terse serde messages into ones a person can
//! act on.

use std::fmt::Write as _;

use serde_json::Value;

use crate::schema::{self, Kind};
use crate::{walk, CodecError, ErrorKind};

impl CodecError {
    pub(crate) fn syntax(message: String) -> Self {
        CodecError {
            kind: ErrorKind::Syntax,
            message,
            expression: None,
        }
    }

    pub(crate) fn structure(message: String, expression: Option<String>) -> Self {
        CodecError {
            kind: ErrorKind::Structure,
            message,
            expression,
        }
    }

    pub(crate) fn primitive(message: String, expression: Option<String>) -> Self {
        CodecError {
            kind: ErrorKind::Primitive,
            message,
            expression,
        }
    }
}

/// A structure error from a fhirbolt deserialisation message. fhirbolt never says where the
/// problem is (and the line/column serde_json appends points at the end of the resource, since
/// fhirbolt re-reads its own tree), so the position is dropped; when `value` is given, a
/// missing required element is looked for in it.
pub(crate) fn from_fhirbolt(message: &str, value: Option<&Value>) -> CodecError {
    from_fhirbolt_at(message, value.map(|v| (v, Kind::Resource, "")))
}

/// [`from_fhirbolt`] for a part of a resource: `at` is the value fhirbolt read, its kind and
/// its FHIRPath (`Bundle.entry[3]`, of kind `Bundle.entry`), where a missing required element is
/// looked for.
pub(crate) fn from_fhirbolt_at(message: &str, at: Option<(&Value, Kind, &str)>) -> CodecError {
    let mut core = message;
    if let Some(i) = core.rfind(" at line ") {
        core = &core[..i];
    }
    // The list of every element the type has is noise in a message.
    for tail in [", expected one of", ", there are no fields"] {
        if let Some(i) = core.find(tail) {
            core = &core[..i];
        }
    }

    if let Some(field) = quoted_after(core, "missing field `") {
        let mut found = Vec::new();
        if let Some((value, kind, path)) = at {
            objects_lacking(value, kind, &mut path.to_owned(), field, &mut found);
        }
        return match found.as_slice() {
            [only] => CodecError::structure(
                format!("{only} is missing the required element `{field}`"),
                Some(only.clone()),
            ),
            _ => CodecError::structure(
                format!("not a valid FHIR R4 resource: a required element `{field}` is missing"),
                None,
            ),
        };
    }
    let explained = if let Some(field) = quoted_after(core, "unknown field `") {
        format!("unknown element `{field}`")
    } else if let Some(field) = quoted_after(core, "duplicate field `") {
        format!("element `{field}` appears more than once")
    } else {
        core.to_owned()
    };
    CodecError::structure(format!("not a valid FHIR R4 resource: {explained}"), None)
}

/// The text between `prefix` and the next backquote.
fn quoted_after<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let start = s.find(prefix)? + prefix.len();
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

/// FHIRPaths of the objects that could hold `field` but do not.
fn objects_lacking(v: &Value, kind: Kind, path: &mut String, field: &str, found: &mut Vec<String>) {
    let Value::Object(obj) = v else { return };
    let key = match kind {
        Kind::Resource => {
            let Some(key) = obj
                .get("resourceType")
                .and_then(Value::as_str)
                .and_then(schema::resource_type)
            else {
                return;
            };
            if path.is_empty() {
                path.push_str(key);
            }
            key
        }
        Kind::Complex(key) => key,
        Kind::Primitive(_) => return,
    };
    let mut scratch = String::new();
    if schema::child(key, field, &mut scratch).is_some()
        && !obj.contains_key(field)
        && !obj.contains_key(&format!("_{field}"))
    {
        found.push(path.clone());
    }
    for (k, child_value) in obj {
        let Some(child) = schema::child(key, k, &mut scratch) else {
            continue;
        };
        if matches!(child.kind, Kind::Primitive(_)) {
            continue;
        }
        let mark = path.len();
        walk::push_element(path, k, &child);
        match child_value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let inner = path.len();
                    let _ = write!(path, "[{i}]");
                    objects_lacking(item, child.kind, path, field, found);
                    path.truncate(inner);
                }
            }
            _ => objects_lacking(child_value, child.kind, path, field, found),
        }
        path.truncate(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cleans_fhirbolt_messages() {
        let e = from_fhirbolt(
            "unknown field `foo`, expected one of `id`, `meta` at line 1 column 30",
            None,
        );
        assert_eq!(e.kind, ErrorKind::Structure);
        assert_eq!(
            e.message,
            "not a valid FHIR R4 resource: unknown element `foo`"
        );
        let e = from_fhirbolt("duplicate field `gender` at line 1 column 3", None);
        assert_eq!(
            e.message,
            "not a valid FHIR R4 resource: element `gender` appears more than once"
        );
    }

    #[test]
    fn locates_a_missing_required_element_when_unambiguous() {
        let obs = json!({"resourceType": "Observation", "code": {"text": "x"}});
        let e = from_fhirbolt("missing field `status` at line 1 column 60", Some(&obs));
        assert_eq!(
            e.message,
            "Observation is missing the required element `status`"
        );
        assert_eq!(e.expression.as_deref(), Some("Observation"));

        let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {}}},
            {"resource": {"resourceType": "Observation", "code": {}}}]});
        let e = from_fhirbolt("missing field `status`", Some(&bundle));
        assert_eq!(e.expression.as_deref(), Some("Bundle.entry[1].resource"));

        // `code` could be missing from the Observation or from any Coding: no guess.
        let obs = json!({"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://x"}]}]});
        let e = from_fhirbolt("missing field `code`", Some(&obs));
        assert_eq!(e.expression, None);
        assert!(e.message.contains("`code`"), "{}", e.message);
    }
}
