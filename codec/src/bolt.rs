//! Every call into fhirbolt lives here, in non-generic functions, so that fhirbolt's (very
//! large) generic serde code is instantiated once, in this crate, and nowhere else.
//!
//! Two fhirbolt rules hold throughout:
//! - deserialisation is always `DeserializationMode::Strict`: the Compatibility and Lax modes do
//!   not consume the value of an unknown element, and on an unknown *array* element they loop
//!   forever (a denial of service with one request);
//! - the top-level type is always the `Resource` enum, never a concrete resource type: fhirbolt
//!   0.4 fails to deserialise a Bundle with several entries as the concrete `Bundle` type.

use std::panic::{catch_unwind, AssertUnwindSafe};

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};
use serde_json::Value;

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

/// fhirbolt 0.4 has `unwrap()`s that input can reach (an empty JSON array panics in its
/// element deserializer). Our walk refuses the inputs we know of first; this turns any other
/// panic into an error instead of a crashed request.
fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| "fhirbolt failed on this input (internal error); please report it".to_owned())
}

/// Whether fhirbolt accepts the JSON as an R4 resource; the error is fhirbolt's message.
pub(crate) fn validate_json(bytes: &[u8]) -> Result<(), String> {
    no_panic(|| fhirbolt::json::from_slice::<Resource>(bytes, strict()))?
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Why fhirbolt could not turn XML into FHIR JSON.
pub(crate) enum XmlFailure {
    /// Not well-formed XML (or not UTF-8).
    Syntax(String),
    /// Well-formed, but not an R4 resource (unknown element, wrong namespace, ...).
    Structure(String),
    /// A decimal that is not a number: fhirbolt keeps XML decimals as text and only finds out
    /// when it writes them as JSON numbers, without saying which one.
    Decimal,
}

/// Parses an R4 resource from XML and returns it as FHIR JSON.
pub(crate) fn xml_to_json(bytes: &[u8]) -> Result<Value, XmlFailure> {
    use fhirbolt::xml::Error as E;

    let parsed = no_panic(|| fhirbolt::xml::from_slice::<Resource>(bytes, strict()))
        .map_err(XmlFailure::Structure)?;
    let resource = parsed.map_err(|e| match e {
        E::InvalidXml(_)
        | E::InvalidXmlAttribute(_)
        | E::InvalidXmlVersion(_)
        | E::InvalidXmlEncoding(_)
        | E::InvalidXmlStandalone(_)
        | E::Utf8Error(_) => XmlFailure::Syntax(e.to_string()),
        _ => XmlFailure::Structure(e.to_string()),
    })?;
    let converted = no_panic(|| fhirbolt::json::to_json_value(resource, None))
        .map_err(XmlFailure::Structure)?;
    converted.map_err(|e| {
        let message = e.to_string();
        if message.contains("decimal") {
            XmlFailure::Decimal
        } else {
            XmlFailure::Structure(message)
        }
    })
}

/// Writes a FHIR JSON resource as FHIR XML (always indented: fhirbolt's writer cannot do
/// otherwise). The error is fhirbolt's message.
pub(crate) fn json_to_xml(value: &Value) -> Result<Vec<u8>, String> {
    let resource: Resource = no_panic(|| fhirbolt::json::from_json_value(value.clone(), strict()))?
        .map_err(|e| e.to_string())?;
    no_panic(|| fhirbolt::xml::to_vec(&resource, None))?.map_err(|e| e.to_string())
}

/// Regression probe for the fhirbolt bug documented above: parses JSON as the *concrete*
/// Bundle type. Only the tests call it.
#[cfg(test)]
pub(crate) fn parse_concrete_bundle(bytes: &[u8]) -> Result<(), String> {
    fhirbolt::json::from_slice::<fhirbolt::model::r4::resources::Bundle>(bytes, strict())
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the fhirbolt 0.4 bug that is the reason `Resource` is the only top-level type we
    /// deserialise: a Bundle with several entries fails as the concrete `Bundle` type, while the
    /// same bytes parse as `Resource`. If a fhirbolt upgrade fixes it, this test says so.
    #[test]
    fn concrete_bundle_type_fails_on_several_entries() {
        let bundle = br#"{"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "a"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "id": "b"}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "DELETE", "url": "Patient/c"}}]}"#;
        assert_eq!(validate_json(bundle), Ok(()));
        let concrete = parse_concrete_bundle(bundle);
        assert!(
            concrete.is_err(),
            "fhirbolt now parses a multi-entry Bundle as the concrete type"
        );
    }

    /// Pins why only Strict is used: in Lax mode fhirbolt 0.4 never returns on an unknown array
    /// element. The spinning thread cannot be stopped; it ends with this (short) test process.
    #[test]
    fn lax_mode_spins_on_unknown_array_element() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let body = br#"{"resourceType": "Patient", "foo": [1, 2, 3]}"#;
            let config = DeserializationConfig {
                mode: DeserializationMode::Lax,
            };
            let _ = tx.send(fhirbolt::json::from_slice::<Resource>(body, Some(config)).is_ok());
        });
        let outcome = rx.recv_timeout(std::time::Duration::from_secs(2));
        assert!(
            outcome.is_err(),
            "Lax mode returned ({outcome:?}): the fhirbolt bug may be fixed"
        );
    }
}
