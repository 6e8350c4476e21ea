//! FHIR R4 codec: the only crate that calls fhirbolt. Its API is deliberately non-generic so that
//! fhirbolt's (very large) serde code is monomorphised once, here, and never in the gateway crate.
//!
//! - [`parse`] reads a resource of any type from FHIR JSON or XML into FHIR JSON, refusing what
//!   is not a valid R4 resource ([`ErrorKind::Structure`]) and primitive values in the wrong
//!   format ([`ErrorKind::Primitive`]), which fhirbolt does not check.
//! - [`parse_bundle`] reads a batch/transaction Bundle so that each entry is checked on its own:
//!   a bad entry is reported against that entry, not as an error for the whole Bundle.
//! - [`serialize`] writes FHIR JSON as JSON or XML.
//! - [`negotiate`], [`content_format`], [`format_from_mime`] and [`format_from_param`] choose
//!   formats from HTTP headers and `_format`.
//!
//! Modules: `bolt` (every fhirbolt call), `json` / `xml` (each format's path), `xml_out` (compact
//! XML written without fhirbolt), `bundle` (Bundles entry by entry), `walk` (checks a
//! FHIR JSON tree), `schema` + `types_table` (element types), `primitives` (format rules),
//! `errors` (messages), `negotiate`.

use serde_json::Value;

mod bolt;
mod bundle;
mod errors;
mod json;
mod negotiate;
mod primitives;
mod schema;
mod types_table;
mod walk;
mod xml;
mod xml_out;

pub use negotiate::{content_format, format_from_mime, format_from_param, negotiate};

/// Wire formats the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    pub fn mime(self) -> &'static str {
        match self {
            Format::Json => "application/fhir+json",
            Format::Xml => "application/fhir+xml",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not well-formed JSON / XML (including XML with a DTD).
    Syntax,
    /// Well-formed but not a valid FHIR R4 resource structure (unknown element, wrong type, unknown resourceType).
    Structure,
    /// A primitive value with an invalid format (date, dateTime, instant, code, id, decimal...).
    Primitive,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CodecError {
    pub kind: ErrorKind,
    /// A message a person can act on.
    pub message: String,
    /// FHIRPath of the offending element, when known (e.g. `Patient.birthDate`).
    pub expression: Option<String>,
}

/// Parses a FHIR R4 resource from `bytes` in `format` and returns it as FHIR JSON.
///
/// JSON input is returned as written (same member order, same number literals); XML input is
/// converted by fhirbolt, which writes elements in FHIR's canonical order.
pub fn parse(bytes: &[u8], format: Format) -> Result<Value, CodecError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match format {
        Format::Json => json::parse(bytes),
        Format::Xml => xml::parse(bytes),
    }
}

/// A Bundle read so that each entry is checked on its own (see [`parse_bundle`]).
#[derive(Debug, Clone)]
pub struct ParsedBundle {
    /// The Bundle as FHIR JSON. Every entry is present, including entries whose resource is
    /// invalid (their `resource` is kept as it was sent, converted to FHIR JSON as far as
    /// possible).
    pub bundle: Value,
    /// One slot per `Bundle.entry` (same length and order): `None` when the entry is valid,
    /// `Some(error)` when the entry or its resource is not (unknown element, bad primitive, ...),
    /// with `expression` rooted at the entry, e.g. `Bundle.entry[3].resource.birthDate` (or
    /// `Bundle.entry[3]` itself when fhirbolt refuses the entry without saying where).
    pub entry_errors: Vec<Option<CodecError>>,
}

/// Parses a Bundle (typically a `batch` or `transaction`) from `bytes` in `format`, checking
/// each entry on its own, so that a bad entry is reported in its slot of
/// [`ParsedBundle::entry_errors`] and the other entries can still be processed.
///
/// `Err` is only for what belongs to no single entry: a document that is not well-formed (or
/// has a DTD), too deeply nested, not a Bundle, with an invalid Bundle-level element (`type`
/// missing or not a code, an unknown element, ...), or whose `entry` is not a non-empty array.
/// Each entry is checked like [`parse`] checks a resource (our walk, then fhirbolt Strict, run
/// on that entry alone), including its own elements (`fullUrl`, `request`, `response`, ...).
///
/// JSON: the Bundle is returned as written, and every entry error is in its slot.
///
/// XML: fhirbolt reads the whole Bundle before the entries can be told apart, so only the
/// errors it lets through (primitive values in the wrong format, which it does not check) are
/// reported per entry. What fhirbolt itself refuses anywhere in the Bundle (an unknown element
/// or a missing required element in an entry, a value it cannot store such as a boolean
/// `yes`) is an `Err` for the whole Bundle; when our checks found a bad value in an entry,
/// that located error is the one returned.
///
/// [`parse`] is unchanged: it refuses a Bundle with any bad entry.
pub fn parse_bundle(bytes: &[u8], format: Format) -> Result<ParsedBundle, CodecError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match format {
        Format::Json => bundle::parse_json(bytes),
        Format::Xml => xml::parse_bundle(bytes),
    }
}

/// Serialises a FHIR JSON resource to `format`; `pretty` indents the output.
///
/// JSON is written straight from the Value. Compact XML of the shapes the gateway renders is
/// written straight from the Value too (`xml_out`, the same bytes as fhirbolt's writer); the
/// rest (pretty XML, narratives, anything `xml_out` does not know) goes through fhirbolt, which
/// re-validates it (Strict). An element R4 does not have or a value of the wrong JSON type is an
/// [`ErrorKind::Structure`] error either way; a missing required element is not checked on the
/// direct path, as in JSON.
pub fn serialize(resource: &Value, format: Format, pretty: bool) -> Result<Vec<u8>, CodecError> {
    match format {
        Format::Json => {
            let out = if pretty {
                serde_json::to_vec_pretty(resource)
            } else {
                serde_json::to_vec(resource)
            };
            out.map_err(|e| CodecError::structure(format!("cannot write JSON: {e}"), None))
        }
        Format::Xml => xml::serialize(resource, pretty),
    }
}
