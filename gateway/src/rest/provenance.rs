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

/// `meta.source` of a version written by `actor` (`client:emr-a`, `anonymous`, `system`): who
/// wrote it, as a URI (`urn:kiunga:client:emr-a`).
pub fn source_of(actor: &str) -> String {
    format!("{SOURCE_PREFIX}{actor}")
}

/// What every `meta.source` the gateway sets starts with; one sent back is not data to keep.
pub const SOURCE_PREFIX: &str = "urn:kiunga:";

/// Sets `meta.source` of one rendered version to who wrote it.
pub fn set_source(resource: &mut Value, actor: &str) {
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        meta.insert("source".into(), Value::String(source_of(actor)));
    }
}

/// Tags every resource (any mix of types) with the mapping version of its own version and sets
/// its `meta.source` to who wrote that version, looked up in the change log with one query.
pub fn tag_all<'a>(
    s: &mut Scoped,
    resources: impl IntoIterator<Item = &'a mut Value>,
) -> Result<(), Error> {
    let list: Vec<&'a mut Value> = resources.into_iter().collect();
    if list.is_empty() {
        return Ok(());
    }
    let key = |r: &Value| {
        (
            r["resourceType"].as_str().unwrap_or_default().to_string(),
            r["id"].as_str().unwrap_or_default().to_string(),
        )
    };
    let keys: Vec<(String, String)> = list.iter().map(|r| key(r)).collect();
    let found: HashMap<(String, String, i32), (Option<String>, String)> =
        logs::mapping_versions(s.conn()?, &keys)?
            .into_iter()
            .map(|(t, u, v, m, a)| ((t, u, v), (m, a)))
            .collect();
    for r in list {
        let (t, u) = key(r);
        let version = r
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if let Some((m, actor)) = found.get(&(t, u, version)) {
            if let Some(m) = m {
                set(r, m);
            }
            set_source(r, actor);
        }
    }
    Ok(())
}
