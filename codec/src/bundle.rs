//! Bundles read entry by entry ([`crate::parse_bundle`]): the Bundle's own elements decide
//! whether it can be read at all, and each entry is then checked on its own (our walk, then
//! fhirbolt), so that one bad entry of a batch is reported against that entry only.
//!
//! fhirbolt reads each entry wrapped in a one-entry Bundle, as the `Resource` enum (see
//! `bolt.rs`): that checks the entry's own elements (a `request` without `method`...) as well as
//! its resource. Only that entry is written out again for it, so the work stays linear in the
//! size of the Bundle.

use serde_json::{Map, Value};

use crate::schema::{self, Kind};
use crate::{bolt, errors, json, walk, CodecError, ParsedBundle};

/// The element list (`ELEMENT_MAP` key) of a Bundle entry.
const ENTRY: Kind = Kind::Complex("Bundle.entry");

/// What fhirbolt reads for one entry: the entry inside a one-entry Bundle. The type does not
/// matter to fhirbolt (it checks no invariants), only that the Bundle is complete.
const WRAPPER_START: &[u8] = br#"{"resourceType":"Bundle","type":"batch","entry":["#;
const WRAPPER_END: &[u8] = b"]}";

/// Reads a JSON Bundle: depth limit, syntax, then [`check`].
pub(crate) fn parse_json(bytes: &[u8]) -> Result<ParsedBundle, CodecError> {
    json::check_depth(bytes)?;
    let value: Value = serde_json::from_slice(bytes).map_err(json::syntax_error)?;
    check(value, true)
}

/// Checks a Bundle read as FHIR JSON: its own elements (an error there is `Err`), then every
/// entry. With `fhirbolt` (JSON input), fhirbolt validates the Bundle's own elements and each
/// entry after our walk; without (XML input), fhirbolt has already read the whole Bundle.
pub(crate) fn check(bundle: Value, fhirbolt: bool) -> Result<ParsedBundle, CodecError> {
    let obj = as_bundle(&bundle)?;

    // The Bundle without its entries: small, so a copy costs nothing, and our walk and fhirbolt
    // check it with their usual messages (`Bundle.type`, "Bundle is missing ... `type`").
    let shell: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| *k != "entry")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let shell = Value::Object(shell);
    walk::check_resource(&shell)?;

    let entries: &[Value] = match obj.get("entry") {
        None => &[],
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(CodecError::structure(
                "Bundle.entry is an empty array: FHIR JSON does not allow empty arrays; leave the element out instead"
                    .to_owned(),
                Some("Bundle.entry".to_owned()),
            ))
        }
        Some(other) => {
            return Err(CodecError::structure(
                format!(
                    "Bundle.entry must be a JSON array of entries, not {}",
                    walk::describe(other)
                ),
                Some("Bundle.entry".to_owned()),
            ))
        }
    };

    if fhirbolt {
        let shell_bytes = serde_json::to_vec(&shell).unwrap_or_default();
        bolt::validate_json(&shell_bytes).map_err(|m| errors::from_fhirbolt(&m, Some(&shell)))?;
    }

    let mut wrapper = Vec::new();
    let mut entry_errors = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("Bundle.entry[{i}]");
        let mut result = walk::check_at(entry, ENTRY, &path);
        if fhirbolt && result.is_ok() {
            wrapper.clear();
            wrapper.extend_from_slice(WRAPPER_START);
            if serde_json::to_writer(&mut wrapper, entry).is_err() {
                wrapper.truncate(WRAPPER_START.len());
            }
            wrapper.extend_from_slice(WRAPPER_END);
            result = bolt::validate_json(&wrapper).map_err(|m| entry_error(&m, entry, &path));
        }
        entry_errors.push(result.err());
    }
    Ok(ParsedBundle {
        bundle,
        entry_errors,
    })
}

/// The Bundle's members, or why the document is not a Bundle.
fn as_bundle(v: &Value) -> Result<&Map<String, Value>, CodecError> {
    let not_a_bundle = |what: String| {
        CodecError::structure(
            format!("expected a Bundle (\"resourceType\": \"Bundle\"), but {what}"),
            None,
        )
    };
    let Value::Object(obj) = v else {
        return Err(not_a_bundle(format!(
            "the document is {}, not a JSON object",
            walk::describe(v)
        )));
    };
    match obj.get("resourceType") {
        Some(Value::String(rt)) if rt == "Bundle" => Ok(obj),
        Some(Value::String(rt)) if schema::resource_type(rt).is_some() => {
            Err(not_a_bundle(format!("the resource is a {rt}")))
        }
        Some(Value::String(rt)) => Err(not_a_bundle(format!(
            "the resource has resourceType `{rt}`, which is not an R4 resource type"
        ))),
        Some(other) => Err(not_a_bundle(format!(
            "the resourceType is {}",
            walk::describe(other)
        ))),
        None => Err(not_a_bundle("the document has no resourceType".to_owned())),
    }
}

/// A fhirbolt refusal of one entry, located in that entry.
fn entry_error(message: &str, entry: &Value, path: &str) -> CodecError {
    let e = errors::from_fhirbolt_at(message, Some((entry, ENTRY, path)));
    match e.expression {
        Some(_) => e,
        None => CodecError {
            message: format!("{path}: {}", e.message),
            expression: Some(path.to_owned()),
            ..e
        },
    }
}

/// Whether a FHIRPath made by our walks lies in an entry (`Bundle.entry[3].resource.id` -> 3).
pub(crate) fn entry_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("Bundle.entry[")?;
    let (digits, after) = rest.split_once(']')?;
    if !(after.is_empty() || after.starts_with('.') || after.starts_with('[')) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert_eq!(entry_index("Bundle.entry[3].resource.birthDate"), Some(3));
        assert_eq!(entry_index("Bundle.entry[12]"), Some(12));
        assert_eq!(entry_index("Bundle.entry"), None);
        assert_eq!(entry_index("Bundle.type"), None);
        assert_eq!(entry_index("Patient.contained[0]"), None);
    }
}
