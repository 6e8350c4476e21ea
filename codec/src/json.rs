//! FHIR JSON input: nesting limit, syntax, our walk, then fhirbolt's verdict.

use serde_json::Value;

use crate::{bolt, errors, walk, CodecError};

/// Deeper documents are refused before any recursive parser sees them. FHIR resources nest far
/// less (a Bundle of Questionnaires with nested items stays well under this).
pub(crate) const MAX_DEPTH: usize = 64;

pub(crate) fn parse(bytes: &[u8]) -> Result<Value, CodecError> {
    check_depth(bytes)?;
    let value: Value = serde_json::from_slice(bytes).map_err(syntax_error)?;
    // Our walk goes first: it names the element at fault, and a document it rejects is one
    // fhirbolt need not parse.
    walk::check_resource(&value)?;
    // fhirbolt re-reads the bytes rather than a clone of `value`: it builds its own tree either
    // way, and reading bytes is cheaper than cloning a Value.
    bolt::validate_json(bytes).map_err(|m| errors::from_fhirbolt(&m, Some(&value)))?;
    Ok(value)
}

/// Rejects JSON nested deeper than [`MAX_DEPTH`] without building anything, so that neither
/// serde_json's nor fhirbolt's recursion is exposed to hostile input.
pub(crate) fn check_depth(bytes: &[u8]) -> Result<(), CodecError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(CodecError::structure(
                        format!("JSON is nested deeper than {MAX_DEPTH} levels, which no FHIR resource needs"),
                        None,
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn syntax_error(e: serde_json::Error) -> CodecError {
    // serde_json's message ends with " at line L column C"; put the position first instead.
    let full = e.to_string();
    let reason = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    CodecError::syntax(format!(
        "invalid JSON at line {} column {}: {reason}",
        e.line(),
        e.column()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn depth_limit() {
        let nested = |n: usize| {
            let inner = format!("{}1{}", "[".repeat(n), "]".repeat(n));
            format!(r#"{{"resourceType": "Patient", "x": {inner}}}"#)
        };
        // 1 level for the resource object + n arrays.
        assert!(check_depth(nested(MAX_DEPTH - 1).as_bytes()).is_ok());
        let e = check_depth(nested(MAX_DEPTH).as_bytes()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Structure);
        assert!(e.message.contains("deeper than 64"), "{}", e.message);
        // Brackets inside strings do not count.
        let in_string = format!(
            r#"{{"resourceType": "Patient", "id": "{}\"{}"}}"#,
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(check_depth(in_string.as_bytes()).is_ok());
        // A very deep document is refused quickly, without recursion.
        let huge = "[".repeat(1_000_000);
        assert_eq!(
            parse(huge.as_bytes()).unwrap_err().kind,
            ErrorKind::Structure
        );
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let e = parse(b"{\n  \"resourceType\": \"Patient\",\n  \"id\": }").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Syntax);
        assert!(
            e.message.starts_with("invalid JSON at line 3 column 9: "),
            "{}",
            e.message
        );
        assert_eq!(parse(b"").unwrap_err().kind, ErrorKind::Syntax);
        assert_eq!(
            parse(b"{\"resourceType\": \"Patient\"} x")
                .unwrap_err()
                .kind,
            ErrorKind::Syntax
        );
    }
}
