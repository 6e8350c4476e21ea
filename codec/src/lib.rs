//! FHIR R4 codec: the only crate that calls fhirbolt. Its API is deliberately non-generic so that
//! fhirbolt's (very large) serde code is monomorphised once, here, and never in the gateway crate.
//!
//! - [`parse`] reads a resource of any type from FHIR JSON or XML into FHIR JSON, refusing what
//!   is not a valid R4 resource ([`ErrorKind::Structure`]) and primitive values in the wrong
//!   format ([`ErrorKind::Primitive`]), which fhirbolt does not check.
//! - [`serialize`] writes FHIR JSON as JSON or XML.
//! - [`negotiate`], [`content_format`], [`format_from_mime`] and [`format_from_param`] choose
//!   formats from HTTP headers and `_format`.
//!
//! Modules: `bolt` (every fhirbolt call), `json` / `xml` (each format's path), `walk` (checks a
//! FHIR JSON tree), `schema` + `types_table` (element types), `primitives` (format rules),
//! `errors` (messages), `negotiate`.

use serde_json::Value;

mod bolt;
mod errors;
mod json;
mod negotiate;
mod primitives;
mod schema;
mod types_table;
mod walk;
mod xml;

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

/// Serialises a FHIR JSON resource to `format`; `pretty` indents the output.
///
/// JSON is written straight from the Value. XML goes through fhirbolt (which re-validates the
/// resource, Strict), so an invalid resource is an [`ErrorKind::Structure`] error there.
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
