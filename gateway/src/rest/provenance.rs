//! Which mapping set translated each stored version: shown on every record as a `meta.tag`, so a
//! client (and `kiunga remap`) can tell what produced the tracker values it reads.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::Error;
use crate::store::logs;
use crate::store::Scoped;

/// The tag's system; its code is the mapping version (the hash `/fhir/metadata` shows).
pub const MAPPING_TAG_SYSTEM: &str = "urn:kiunga:mapping-version";

/// Sets the mapping tag of one rendered resource.
pub fn set(resource: &mut Value, mapping_version: &str) {
    let tag = json!({ "system": MAPPING_TAG_SYSTEM, "code": mapping_version, "display": "mapping set that translated this version" });
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        match meta.get_mut("tag").and_then(Value::as_array_mut) {
            Some(tags) => {
                tags.retain(|t| t["system"] != MAPPING_TAG_SYSTEM);
                tags.push(tag);
            }
            None => {
                meta.insert("tag".into(), json!([tag]));
            }
        }
    }
}

/// Tags every resource (any mix of types) with the mapping version of its own version, looked
/// up in the change log with one query per resource type.
pub fn tag_all<'a>(
    s: &mut Scoped,
    resources: impl IntoIterator<Item = &'a mut Value>,
) -> Result<(), Error> {
    let mut by_type: HashMap<String, Vec<&'a mut Value>> = HashMap::new();
    for r in resources {
        let t = r["resourceType"].as_str().unwrap_or_default().to_string();
        by_type.entry(t).or_default().push(r);
    }
    for (t, list) in by_type {
        let uids: Vec<String> = list
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect();
        let found: HashMap<(String, i32), String> = logs::mapping_versions(s.conn()?, &t, &uids)?
            .into_iter()
            .map(|(u, v, m)| ((u, v), m))
            .collect();
        for r in list {
            let key = (
                r["id"].as_str().unwrap_or_default().to_string(),
                r.pointer("/meta/versionId")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            );
            if let Some(m) = found.get(&key) {
                set(r, m);
            }
        }
    }
    Ok(())
}
