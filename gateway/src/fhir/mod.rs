//! The FHIR layer: format negotiation, `Prefer`, response building, OperationOutcome, Bundles and
//! the CapabilityStatement. Parsing and serialising go through the `kiunga-codec` crate.

pub mod bundle;
pub mod capability;
pub mod outcome;
pub mod search;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use kiunga_codec::Format;
use serde_json::Value;

use crate::error::Error;

/// FHIR `instant` text of a timestamp, with milliseconds and an explicit offset.
pub fn instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// `Prefer: return=...` (FHIR http.html#ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

/// What a request asked for: response format, pretty printing, `Prefer` and its request id.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub format: Format,
    pub pretty: bool,
    pub return_pref: Return,
    pub lenient: bool,
    pub request_id: String,
    /// The authenticated caller, when a bearer token was presented (`crate::http::auth`).
    pub principal: Option<std::sync::Arc<crate::auth::Principal>>,
    /// Served in development mode (`KIUNGA_AUTH=off`): no principal, every scope.
    pub development_mode: bool,
    /// Set when negotiation itself failed: answered as 406 (in JSON) before anything else runs.
    pub error: Option<String>,
    /// The request's access to patient data, when it makes one (`crate::audit`).
    pub access: Option<std::sync::Arc<crate::audit::Access>>,
}

fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    req.query_string().split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` and `+` in a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Negotiated {
    pub fn from_request(req: &HttpRequest) -> Self {
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|h| h.to_str().ok());
        let format_param = query_param(req, "_format");
        let (format, error) = match kiunga_codec::negotiate(accept, format_param.as_deref()) {
            Ok(f) => (f, None),
            Err(e) => (Format::Json, Some(e)),
        };
        let pretty = query_param(req, "_pretty").is_some_and(|v| v == "true");
        let prefer: Vec<String> = req
            .headers()
            .get_all("prefer")
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split([',', ';']).map(|p| p.trim().to_ascii_lowercase()))
            .collect();
        let return_pref = if prefer.iter().any(|p| p == "return=minimal") {
            Return::Minimal
        } else if prefer.iter().any(|p| p == "return=operationoutcome") {
            Return::OperationOutcome
        } else {
            Return::Representation
        };
        let lenient = prefer.iter().any(|p| p == "handling=lenient");
        let request_id = crate::telemetry::request_id(req);
        let principal = req
            .extensions()
            .get::<std::sync::Arc<crate::auth::Principal>>()
            .cloned();
        let development_mode = req
            .extensions()
            .get::<crate::http::auth::DevelopmentMode>()
            .is_some();
        let agent = match &principal {
            Some(p) => format!("client:{}", p.client_id),
            None => "anonymous".to_string(),
        };
        let access =
            crate::audit::Access::of_request(req, agent, &request_id).map(std::sync::Arc::new);
        Negotiated {
            access,
            format,
            pretty,
            return_pref,
            lenient,
            request_id,
            principal,
            development_mode,
            error,
        }
    }

    /// Serialises a FHIR JSON value in the negotiated format.
    pub fn body(&self, status: StatusCode, value: &Value) -> HttpResponse {
        match kiunga_codec::serialize(value, self.format, self.pretty) {
            Ok(bytes) => HttpResponse::build(status)
                .insert_header((header::CONTENT_TYPE, content_type(self.format)))
                .body(bytes),
            // The codec's message may quote element values: only its kind is logged.
            Err(e) => self.error(Error::Internal(format!(
                "cannot serialise the response ({:?} error)",
                e.kind
            ))),
        }
    }

    pub fn error(&self, e: Error) -> HttpResponse {
        let (status, outcome) = e.client_outcome(&self.request_id);
        self.outcome(&e, status, &outcome)
    }

    /// The answer carrying an error's OperationOutcome (from [`Error::client_outcome`]).
    pub fn outcome(&self, e: &Error, status: StatusCode, outcome: &Value) -> HttpResponse {
        let format = if matches!(e, Error::NotAcceptable(_)) {
            Format::Json
        } else {
            self.format
        };
        let bytes = kiunga_codec::serialize(outcome, format, self.pretty)
            .unwrap_or_else(|_| outcome.to_string().into_bytes());
        HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, content_type(format)))
            .body(bytes)
    }

    /// The 406 to answer when negotiation failed.
    pub fn check(&self) -> Result<(), Error> {
        match &self.error {
            Some(e) => Err(Error::NotAcceptable(e.clone())),
            None => Ok(()),
        }
    }
}

fn content_type(f: Format) -> HeaderValue {
    HeaderValue::from_str(&format!("{}; charset=utf-8", f.mime()))
        .unwrap_or(HeaderValue::from_static("application/fhir+json"))
}

/// A successful FHIR answer before serialisation.
#[derive(Debug, Default)]
pub struct FhirResponse {
    pub status: u16,
    pub body: Option<Value>,
    pub version: Option<i32>,
    pub last_modified: Option<DateTime<Utc>>,
    pub location: Option<String>,
}

impl FhirResponse {
    pub fn ok(body: Value) -> Self {
        FhirResponse {
            status: 200,
            body: Some(body),
            ..Default::default()
        }
    }

    pub fn into_http(self, n: &Negotiated) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut resp = match &self.body {
            Some(v) => n.body(status, v),
            None => HttpResponse::build(status).finish(),
        };
        let h = resp.headers_mut();
        if let Some(v) = self.version {
            if let Ok(val) = HeaderValue::from_str(&format!("W/\"{v}\"")) {
                h.insert(header::ETAG, val);
            }
        }
        if let Some(t) = self.last_modified {
            if let Ok(val) =
                HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
            {
                h.insert(header::LAST_MODIFIED, val);
            }
        }
        if let Some(l) = &self.location {
            if let Ok(val) = HeaderValue::from_str(l) {
                h.insert(header::LOCATION, val.clone());
                h.insert(header::CONTENT_LOCATION, val);
            }
        }
        resp
    }
}

/// The version in an `If-Match` header (`W/"3"` or `"3"`), or a 400 when it is not one.
pub fn if_match(req: &HttpRequest) -> Result<Option<i32>, Error> {
    let Some(h) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = h.to_str().unwrap_or_default().trim();
    let inner = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    inner.parse::<i32>().map(Some).map_err(|_| {
        Error::invalid(format!(
            "If-Match `{raw}` is not a version ETag such as W/\"3\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("http%3A%2F%2Fx%7C12"), "http://x|12");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
