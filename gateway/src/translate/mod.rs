//! Translation between FHIR JSON and tracker records, driven by the mapping files. Pure functions:
//! no I/O, everything they need (metadata, mappings) is passed in.
//!
//! Reading input goes through a [`Reader`], which records which elements were used, so that
//! everything else can be reported back as "not stored" instead of being dropped silently.

pub mod encounter;
pub mod episode;
pub mod observation;
pub mod org;
pub mod patient;
pub mod related_person;
pub mod units;

use serde_json::Value;

use crate::fhir::outcome::Issue;

/// A FHIR resource being read, with the paths of the elements consumed so far.
pub struct Reader<'a> {
    pub root: &'a Value,
    pub resource_type: &'static str,
    consumed: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(root: &'a Value, resource_type: &'static str) -> Self {
        Reader {
            root,
            resource_type,
            consumed: Vec::new(),
        }
    }

    /// Marks the server-managed `meta` elements as used: the version, the time, and the mapping
    /// tag the server itself adds (a client sending a read resource back loses nothing).
    pub fn consume_server_meta(&mut self) {
        self.consume("meta.versionId");
        self.consume("meta.lastUpdated");
        // The gateway's own `meta.source` (who wrote the version) comes back with a read-back
        // resource; any other source is the sender's and is reported as not kept.
        if self
            .root
            .pointer("/meta/source")
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with(crate::rest::provenance::SOURCE_PREFIX))
        {
            self.consume("meta.source");
        }
        let tags = self
            .root
            .pointer("/meta/tag")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, t) in tags.iter().enumerate() {
            if t["system"] == crate::rest::provenance::MAPPING_TAG_SYSTEM {
                self.consume(format!("meta.tag[{i}]"));
            }
        }
    }

    /// Marks `path` (e.g. `name[0].family`) and everything below it as used.
    pub fn consume(&mut self, path: impl Into<String>) {
        self.consumed.push(path.into());
    }

    /// The FHIRPath expression of a path, for error messages.
    pub fn expr(&self, path: &str) -> String {
        if path.is_empty() {
            self.resource_type.to_string()
        } else {
            format!("{}.{path}", self.resource_type)
        }
    }

    /// The input's elements that nothing consumed, as one warning each (the largest unconsumed
    /// subtree is named, not each of its leaves).
    pub fn unmapped(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        if let Value::Object(map) = self.root {
            for (k, v) in map {
                if matches!(k.as_str(), "resourceType" | "id") {
                    continue;
                }
                self.walk(k.clone(), v, &mut out);
            }
        }
        out
    }

    fn covered(&self, path: &str) -> bool {
        self.consumed.iter().any(|c| c == path || is_below(path, c))
    }

    fn has_consumed_below(&self, path: &str) -> bool {
        self.consumed.iter().any(|c| is_below(c, path))
    }

    fn walk(&self, path: String, v: &Value, out: &mut Vec<Issue>) {
        if self.covered(&path) {
            return;
        }
        if !self.has_consumed_below(&path) {
            out.push(Issue::warning(
                "informational",
                format!(
                    "{} is not held by any mapping and was not stored",
                    self.expr(&path)
                ),
                Some(self.expr(&path)),
            ));
            return;
        }
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    self.walk(format!("{path}.{k}"), child, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    self.walk(format!("{path}[{i}]"), child, out);
                }
            }
            _ => {}
        }
    }
}

/// True when `path` lies strictly below `ancestor` (`name[0].family` below `name[0]` and `name`).
fn is_below(path: &str, ancestor: &str) -> bool {
    path.len() > ancestor.len()
        && path.starts_with(ancestor)
        && matches!(path.as_bytes()[ancestor.len()], b'.' | b'[')
}

/// The id in a relative or absolute reference to `resource_type` (`Organization/abc`,
/// `http://host/fhir/Organization/abc`), or None when it is something else.
pub fn reference_id<'v>(reference: &'v str, resource_type: &str) -> Option<&'v str> {
    let (prefix, id) = reference.rsplit_once('/')?;
    let ty = prefix.rsplit('/').next()?;
    (ty == resource_type && !id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unmapped_reports_largest_unused_subtrees() {
        let v = json!({"resourceType": "Patient", "id": "x", "name": [{"family": "A", "prefix": ["Dr"]}, {"family": "B"}], "gender": "female", "photo": [{}]});
        let mut r = Reader::new(&v, "Patient");
        r.consume("name[0].family");
        r.consume("gender");
        let got: Vec<String> = r
            .unmapped()
            .into_iter()
            .map(|i| i.expression.expect("test input is valid"))
            .collect();
        assert_eq!(
            got,
            vec!["Patient.name[0].prefix", "Patient.name[1]", "Patient.photo"]
        );
    }

    #[test]
    fn references_are_parsed() {
        assert_eq!(
            reference_id("Organization/abc", "Organization"),
            Some("abc")
        );
        assert_eq!(
            reference_id("http://h/fhir/Organization/abc", "Organization"),
            Some("abc")
        );
        assert_eq!(reference_id("Location/abc", "Organization"), None);
        assert_eq!(reference_id("abc", "Organization"), None);
    }
}
