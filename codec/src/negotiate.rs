//! Content negotiation per FHIR R4 http.html#mime: which format to answer in (`_format`, then
//! `Accept`) and which format a request body is in (`Content-Type`).

use crate::Format;

const SUPPORTED: &str = "application/fhir+json or application/fhir+xml \
     (also application/json, application/xml, text/json, text/xml)";

/// The format of a MIME type, ignoring parameters (`; charset=utf-8`, `; fhirVersion=4.0`) and
/// case. Accepts the FHIR types, their generic JSON/XML variants and the pre-R4 `+fhir` forms.
pub fn format_from_mime(mime: &str) -> Option<Format> {
    let essence = mime.split(';').next().unwrap_or_default().trim();
    match essence.to_ascii_lowercase().as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" | "text/json" => {
            Some(Format::Json)
        }
        "application/fhir+xml" | "application/xml" | "application/xml+fhir" | "text/xml" => {
            Some(Format::Xml)
        }
        _ => None,
    }
}

/// The format named by a `_format` query parameter: `json`, `xml` or one of the MIME types of
/// [`format_from_mime`].
pub fn format_from_param(p: &str) -> Option<Format> {
    let p = p.trim();
    if p.eq_ignore_ascii_case("json") {
        return Some(Format::Json);
    }
    if p.eq_ignore_ascii_case("xml") {
        return Some(Format::Xml);
    }
    // An unencoded `+` in a query string decodes to a space: `_format=application/fhir+json`
    // usually arrives as "application/fhir json".
    format_from_mime(&p.replace(' ', "+"))
}

/// Chooses the response format: a `_format` parameter wins over `Accept`. With neither (or an
/// `Accept` of `*/*`, `application/*`...) the answer is JSON. `Err` carries a message for a 406:
/// the `_format` value is not a format, or `Accept` lists only types we cannot produce.
pub fn negotiate(accept: Option<&str>, format_param: Option<&str>) -> Result<Format, String> {
    if let Some(p) = format_param.filter(|p| !p.trim().is_empty()) {
        return format_from_param(p).ok_or_else(|| {
            format!(
                "unsupported _format `{}`: use json, xml, {SUPPORTED}",
                p.trim()
            )
        });
    }
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Format::Json);
    };

    // Best match: highest q, then a named type before a wildcard, then the first listed.
    let mut best: Option<(f32, bool, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| value.trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0);
        if q.is_nan() || q <= 0.0 {
            continue;
        }
        let candidate = match media.as_str() {
            "*/*" | "application/*" | "text/*" => (q, false, Format::Json),
            _ => match format_from_mime(&media) {
                Some(format) => (q, true, format),
                None => continue,
            },
        };
        let better = match best {
            None => true,
            Some((bq, bspecific, _)) => {
                candidate.0 > bq || (candidate.0 == bq && candidate.1 && !bspecific)
            }
        };
        if better {
            best = Some(candidate);
        }
    }
    best.map(|(_, _, format)| format).ok_or_else(|| {
        format!(
            "none of the media types in Accept (`{}`) can be produced: use {SUPPORTED}",
            accept.trim()
        )
    })
}

/// The format of a request body from its `Content-Type`; none means JSON. `Err` carries a
/// message for a 415.
pub fn content_format(content_type: Option<&str>) -> Result<Format, String> {
    match content_type.map(str::trim).filter(|ct| !ct.is_empty()) {
        None => Ok(Format::Json),
        Some(ct) => format_from_mime(ct)
            .ok_or_else(|| format!("unsupported Content-Type `{ct}`: send {SUPPORTED}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format::{Json, Xml};

    #[test]
    fn mime_types() {
        let table = [
            ("application/fhir+json", Some(Json)),
            ("application/json", Some(Json)),
            ("application/json+fhir", Some(Json)),
            ("text/json", Some(Json)),
            ("application/fhir+xml", Some(Xml)),
            ("application/xml", Some(Xml)),
            ("application/xml+fhir", Some(Xml)),
            ("text/xml", Some(Xml)),
            ("application/fhir+json; charset=utf-8", Some(Json)),
            ("application/fhir+json;fhirVersion=4.0", Some(Json)),
            ("Application/FHIR+XML; charset=UTF-8", Some(Xml)),
            ("  text/xml  ", Some(Xml)),
            ("text/plain", None),
            ("text/html", None),
            ("application/octet-stream", None),
            ("", None),
            ("json", None),
        ];
        for (mime, expected) in table {
            assert_eq!(format_from_mime(mime), expected, "{mime:?}");
        }
    }

    #[test]
    fn format_params() {
        let table = [
            ("json", Some(Json)),
            ("JSON", Some(Json)),
            ("xml", Some(Xml)),
            ("application/fhir+json", Some(Json)),
            ("application/fhir json", Some(Json)),
            ("application/fhir+xml", Some(Xml)),
            ("application/xml+fhir", Some(Xml)),
            ("text/xml", Some(Xml)),
            ("html", None),
            ("turtle", None),
            ("text/html", None),
        ];
        for (p, expected) in table {
            assert_eq!(format_from_param(p), expected, "{p:?}");
        }
    }

    #[test]
    fn negotiation_table() {
        let table: &[(Option<&str>, Option<&str>, Option<Format>)] = &[
            (None, None, Some(Json)),
            (Some(""), None, Some(Json)),
            (Some("*/*"), None, Some(Json)),
            (Some("application/*"), None, Some(Json)),
            (Some("application/fhir+json"), None, Some(Json)),
            (Some("application/fhir+xml"), None, Some(Xml)),
            (Some("application/xml"), None, Some(Xml)),
            (Some("text/xml"), None, Some(Xml)),
            (
                Some("application/fhir+xml;q=0.9, application/fhir+json"),
                None,
                Some(Json),
            ),
            (
                Some("application/fhir+json;q=0.5, application/fhir+xml;q=0.8"),
                None,
                Some(Xml),
            ),
            (Some("application/fhir+xml, */*;q=0.8"), None, Some(Xml)),
            (Some("*/*, application/fhir+xml"), None, Some(Xml)),
            (
                Some("application/fhir+xml, application/fhir+json"),
                None,
                Some(Xml),
            ),
            (Some("text/html, */*;q=0.1"), None, Some(Json)),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                None,
                Some(Xml),
            ),
            (
                Some("application/fhir+xml;q=0, application/json"),
                None,
                Some(Json),
            ),
            (
                Some("application/fhir+json; fhirVersion=4.0; q=1"),
                None,
                Some(Json),
            ),
            (Some("text/html"), None, None),
            (Some("image/png"), None, None),
            (Some("text/html, image/png"), None, None),
            (Some("application/fhir+json;q=0"), None, None),
            // _format wins over Accept, in both directions.
            (Some("application/fhir+json"), Some("xml"), Some(Xml)),
            (Some("application/fhir+xml"), Some("json"), Some(Json)),
            (Some("text/html"), Some("json"), Some(Json)),
            (None, Some("application/fhir+xml"), Some(Xml)),
            (None, Some("application/fhir xml"), Some(Xml)),
            (None, Some(""), Some(Json)),
            (Some("application/fhir+xml"), Some(""), Some(Xml)),
            (None, Some("html"), None),
            (Some("application/fhir+json"), Some("text/html"), None),
        ];
        for (accept, param, expected) in table {
            let got = negotiate(*accept, *param);
            match expected {
                Some(format) => {
                    assert_eq!(got, Ok(*format), "Accept {accept:?}, _format {param:?}")
                }
                None => {
                    let message = got.expect_err(&format!("Accept {accept:?}, _format {param:?}"));
                    assert!(message.contains("application/fhir+json"), "{message}");
                }
            }
        }
    }

    #[test]
    fn request_content_types() {
        assert_eq!(content_format(None), Ok(Json));
        assert_eq!(content_format(Some("")), Ok(Json));
        assert_eq!(
            content_format(Some("application/fhir+json; charset=utf-8")),
            Ok(Json)
        );
        assert_eq!(content_format(Some("application/json")), Ok(Json));
        assert_eq!(content_format(Some("application/fhir+xml")), Ok(Xml));
        assert_eq!(content_format(Some("text/xml;charset=UTF-8")), Ok(Xml));
        let e = content_format(Some("text/plain")).unwrap_err();
        assert!(
            e.contains("text/plain") && e.contains("application/fhir+json"),
            "{e}"
        );
        assert!(content_format(Some("application/x-www-form-urlencoded")).is_err());
    }
}
