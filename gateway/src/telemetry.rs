//! Logging set-up and the request log. Conventions (docs/LOGGING.md): one line per request with
//! method, path without its query, status, latency and request id. No names, identifiers, query
//! values or bodies are ever logged: they can carry patient data.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KIUNGA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Logs go to stderr so that command output (e.g. `kiunga mappings check`) stays clean on stdout.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[derive(Clone)]
struct RequestId(String);

/// The request id of this request: the caller's `X-Request-Id` when it is a plain token, else a new one.
pub fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(crate::tracker::new_uid)
}

fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let v = req.headers().get("x-request-id")?.to_str().ok()?;
    (!v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| v.to_string())
}

/// The route pattern of the request with only the resource type filled in (`/fhir/Patient/{id}`):
/// ids and query values stay out of the log since a client may put anything there.
fn loggable_path(req: &HttpRequest) -> String {
    let Some(pattern) = req.match_pattern() else {
        return "(unrouted)".into();
    };
    match req.match_info().get("type") {
        Some(t) if crate::http::is_known_type(t) => pattern.replace("{type}", t),
        _ => pattern,
    }
}

/// Middleware: assigns the request id, echoes it in `X-Request-Id` and writes the request log line.
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = incoming_id(&req).unwrap_or_else(crate::tracker::new_uid);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().to_string();
    let mut res = next.call(req).await?;
    let path = loggable_path(res.request());
    let status = res.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, %path, status, latency_ms, "request");
    } else {
        tracing::info!(request_id = %id, %method, %path, status, latency_ms, "request");
    }
    Ok(res)
}
