//! Hand-written primitive types of FHIR R4 elements (FHIR R4 resource and datatype pages).
//!
//! fhirbolt-shared's hints only say which primitives are boolean / integer / decimal; this table
//! says which are date, dateTime, instant, time, code, id, uri, url, canonical... so that
//! `primitives.rs` can check their format. It covers completely the resources the gateway
//! serves (plus Bundle, Parameters, OperationOutcome, Provenance) and the general-purpose and
//! metadata datatypes; the test `table_covers_listed_types` keeps it complete. Elements of other
//! resources that are in neither table nor hints are not format-checked (see `Prim::Unknown`),
//! which is never an error. Choice elements (`value[x]`) need no entry: their type is the suffix.
//! Boolean, integer and decimal elements need none either: fhirbolt's hints cover every resource.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::schema::Prim::{self, *};

type Entries = &'static [(&'static str, Prim)];

/// `(type or resource, [(element path below it, primitive type)])`.
const TABLE: &[(&str, Entries)] = &[
    // --- Resources ---
    (
        "Patient",
        &[
            ("gender", Code),
            ("birthDate", Date),
            ("contact.gender", Code),
            ("link.type", Code),
        ],
    ),
    (
        "Encounter",
        &[
            ("status", Code),
            ("statusHistory.status", Code),
            ("location.status", Code),
        ],
    ),
    (
        "Observation",
        &[
            ("status", Code),
            ("issued", Instant),
            ("referenceRange.text", String),
        ],
    ),
    ("RelatedPerson", &[("gender", Code), ("birthDate", Date)]),
    (
        "EpisodeOfCare",
        &[("status", Code), ("statusHistory.status", Code)],
    ),
    ("Organization", &[("name", String), ("alias", String)]),
    (
        "Location",
        &[
            ("status", Code),
            ("name", String),
            ("alias", String),
            ("description", String),
            ("mode", Code),
            ("hoursOfOperation.daysOfWeek", Code),
            ("hoursOfOperation.openingTime", Time),
            ("hoursOfOperation.closingTime", Time),
            ("availabilityExceptions", String),
        ],
    ),
    (
        "Bundle",
        &[
            ("type", Code),
            ("timestamp", Instant),
            ("link.relation", String),
            ("link.url", Uri),
            ("entry.fullUrl", Uri),
            ("entry.search.mode", Code),
            ("entry.request.method", Code),
            ("entry.request.url", Uri),
            ("entry.request.ifNoneMatch", String),
            ("entry.request.ifModifiedSince", Instant),
            ("entry.request.ifMatch", String),
            ("entry.request.ifNoneExist", String),
            ("entry.response.status", String),
            ("entry.response.location", Uri),
            ("entry.response.etag", String),
            ("entry.response.lastModified", Instant),
        ],
    ),
    ("Parameters", &[("parameter.name", String)]),
    (
        "OperationOutcome",
        &[
            ("issue.severity", Code),
            ("issue.code", Code),
            ("issue.diagnostics", String),
            ("issue.location", String),
            ("issue.expression", String),
        ],
    ),
    (
        "Provenance",
        &[
            ("recorded", Instant),
            ("policy", Uri),
            ("entity.role", Code),
        ],
    ),
    ("Practitioner", &[("gender", Code), ("birthDate", Date)]),
    ("Condition", &[("recordedDate", DateTime)]),
    // --- General-purpose datatypes ---
    (
        "Identifier",
        &[("use", Code), ("system", Uri), ("value", String)],
    ),
    (
        "HumanName",
        &[
            ("use", Code),
            ("text", String),
            ("family", String),
            ("given", String),
            ("prefix", String),
            ("suffix", String),
        ],
    ),
    (
        "ContactPoint",
        &[("system", Code), ("value", String), ("use", Code)],
    ),
    (
        "Address",
        &[
            ("use", Code),
            ("type", Code),
            ("text", String),
            ("line", String),
            ("city", String),
            ("district", String),
            ("state", String),
            ("postalCode", String),
            ("country", String),
        ],
    ),
    ("Period", &[("start", DateTime), ("end", DateTime)]),
    (
        "Coding",
        &[
            ("system", Uri),
            ("version", String),
            ("code", Code),
            ("display", String),
        ],
    ),
    ("CodeableConcept", &[("text", String)]),
    ("Quantity", QUANTITY),
    ("Age", QUANTITY),
    ("Duration", QUANTITY),
    ("Count", QUANTITY),
    ("Distance", QUANTITY),
    ("Money", &[("currency", Code)]),
    (
        "Reference",
        &[("reference", String), ("type", Uri), ("display", String)],
    ),
    (
        "Meta",
        &[
            ("versionId", Id),
            ("lastUpdated", Instant),
            ("source", Uri),
            ("profile", Canonical),
        ],
    ),
    ("Narrative", &[("status", Code), ("div", Xhtml)]),
    // Extension.url is an attribute in XML and not in fhirbolt's primitive list.
    ("Extension", &[("url", Uri)]),
    ("Annotation", &[("time", DateTime), ("text", Markdown)]),
    (
        "Attachment",
        &[
            ("contentType", Code),
            ("language", Code),
            ("data", Base64Binary),
            ("url", Url),
            ("hash", Base64Binary),
            ("title", String),
            ("creation", DateTime),
        ],
    ),
    ("SampledData", &[("data", String)]),
    (
        "Timing",
        &[
            ("event", DateTime),
            ("repeat.durationUnit", Code),
            ("repeat.periodUnit", Code),
            ("repeat.dayOfWeek", Code),
            ("repeat.timeOfDay", Time),
            ("repeat.when", Code),
        ],
    ),
    (
        "Signature",
        &[
            ("when", Instant),
            ("targetFormat", Code),
            ("sigFormat", Code),
            ("data", Base64Binary),
        ],
    ),
    (
        "Dosage",
        &[("text", String), ("patientInstruction", String)],
    ),
    // --- Metadata datatypes ---
    ("ContactDetail", &[("name", String)]),
    (
        "Expression",
        &[
            ("description", String),
            ("name", Id),
            ("language", Code),
            ("expression", String),
            ("reference", Uri),
        ],
    ),
    (
        "RelatedArtifact",
        &[
            ("type", Code),
            ("label", String),
            ("display", String),
            ("citation", Markdown),
            ("url", Url),
            ("resource", Canonical),
        ],
    ),
    (
        "DataRequirement",
        &[
            ("type", Code),
            ("profile", Canonical),
            ("mustSupport", String),
            ("codeFilter.path", String),
            ("codeFilter.searchParam", String),
            ("codeFilter.valueSet", Canonical),
            ("dateFilter.path", String),
            ("dateFilter.searchParam", String),
            ("sort.path", String),
            ("sort.direction", Code),
        ],
    ),
    (
        "ParameterDefinition",
        &[
            ("name", Code),
            ("use", Code),
            ("max", String),
            ("documentation", String),
            ("type", Code),
            ("profile", Canonical),
        ],
    ),
    ("TriggerDefinition", &[("type", Code), ("name", String)]),
    ("Contributor", &[("type", Code), ("name", String)]),
];

/// Quantity and its profiles (Age, Duration, Count, Distance) share these.
const QUANTITY: Entries = &[
    ("comparator", Code),
    ("unit", String),
    ("system", Uri),
    ("code", Code),
];

fn table() -> &'static HashMap<std::string::String, Prim> {
    static TABLE_MAP: OnceLock<HashMap<std::string::String, Prim>> = OnceLock::new();
    TABLE_MAP.get_or_init(|| {
        TABLE
            .iter()
            .flat_map(|(ty, entries)| {
                entries
                    .iter()
                    .map(move |(element, prim)| (format!("{ty}.{element}"), *prim))
            })
            .collect()
    })
}

/// The primitive type of the element at `path` (`Patient.birthDate`), if the table has it.
pub(crate) fn lookup(path: &str) -> Option<Prim> {
    table().get(path).copied()
}

/// The types this table claims to cover completely.
#[cfg(test)]
pub(crate) fn covered_types() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(ty, _)| *ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{self, Kind};

    /// Every primitive element that fhirbolt knows for a covered type resolves to a real type
    /// (hints, table or choice suffix), and every table entry names an element that exists.
    #[test]
    fn table_covers_listed_types() {
        let covered: Vec<&str> = covered_types().collect();
        let mut missing = Vec::new();
        for path in schema::all_primitive_paths() {
            let root = path.split('.').next().unwrap_or_default();
            if !covered.contains(&root) {
                continue;
            }
            let (parent, name) = path.rsplit_once('.').unwrap();
            match schema::child(parent, name, &mut std::string::String::new()).map(|c| c.kind) {
                Some(Kind::Primitive(p)) if p != Prim::Unknown => {}
                other => missing.push(format!("{path}: {other:?}")),
            }
        }
        assert!(
            missing.is_empty(),
            "untyped primitive elements: {missing:#?}"
        );

        let known: Vec<&str> = schema::all_primitive_paths().collect();
        for path in table().keys() {
            assert!(
                known.contains(&path.as_str()) || path == "Extension.url",
                "table entry `{path}` is not an R4 primitive element"
            );
        }
    }
}
