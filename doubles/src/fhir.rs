//! Test double of a generic FHIR R4 server, behaving as HAPI FHIR's JPA server does with its
//! defaults plus request validation switched on (the way national shared health records run it).
//!
//! What a client trips over, kept on purpose:
//! - server-assigned numeric ids; a `PUT` to an unknown numeric id is refused (clients may only
//!   assign ids with a non-numeric character), a `PUT` to a deleted id brings it back;
//! - referential integrity: a literal reference to a resource the server does not hold is a 400
//!   naming the path; a logical reference (`identifier` only) is accepted as it is;
//! - `If-None-Exist` (conditional create): one match answers 200 with the existing resource and
//!   creates nothing, two or more are a 412;
//! - a `DELETE` of a resource others refer to is a 409;
//! - required elements and primitive formats are validated (422 / 400 with HAPI's message ids);
//! - an optional bearer token, refused with 401 and `WWW-Authenticate`.
//!
//! Deliberate simplifications: searches know `_id`, `identifier` (`system|value`, `|value`,
//! `value`), `subject` and `patient`, and return every match in one page.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::faults::{Decision, Faults};
use crate::server::{Configure, Served};

pub const BASE_PATH: &str = "/fhir";

/// Resource types the server stores (anything else is an unknown type, 404).
const TYPES: &[&str] = &[
    "Patient",
    "Encounter",
    "Observation",
    "Organization",
    "Location",
    "Practitioner",
    "EpisodeOfCare",
    "RelatedPerson",
];

#[derive(Clone, Debug)]
pub struct Config {
    /// A bearer token every request but `metadata` must carry; `None`: open.
    pub token: Option<String>,
    /// Required elements checked on writes (HAPI's RequestValidatingInterceptor).
    pub validate: bool,
}

impl Config {
    pub fn demo() -> Config {
        Config {
            token: Some("demo-shr-token".into()),
            validate: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path including the query string.
    pub path: String,
    pub status: u16,
    pub if_none_exist: Option<String>,
}

struct Record {
    ty: String,
    id: String,
    version: u32,
    deleted: bool,
    resource: Value,
}

struct Store {
    config: Config,
    records: Vec<Record>,
    next_id: u64,
    log: Vec<Logged>,
}

impl Store {
    fn find(&self, ty: &str, id: &str) -> Option<usize> {
        self.records.iter().position(|r| r.ty == ty && r.id == id)
    }

    fn live(&self, ty: &str, id: &str) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.ty == ty && r.id == id && !r.deleted)
    }
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    faults: Faults,
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct FhirServer {
    pub faults: Faults,
    served: Served,
    store: Arc<Mutex<Store>>,
}

impl FhirServer {
    pub fn start(config: Config) -> std::io::Result<FhirServer> {
        let store = Arc::new(Mutex::new(Store {
            config,
            records: Vec::new(),
            next_id: 1,
            log: Vec::new(),
        }));
        let faults = Faults::default();
        let shared = Shared {
            store: store.clone(),
            faults: faults.clone(),
        };
        let configure: Configure = Arc::new(move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(shared.clone()))
                .app_data(web::PayloadConfig::new(8 << 20))
                .default_service(web::to(handle));
        });
        let served = Served::start(0, configure)?;
        Ok(FhirServer {
            faults,
            served,
            store,
        })
    }

    pub fn base(&self) -> String {
        format!("{}{BASE_PATH}", self.served.base())
    }

    /// Refuses connections until [`FhirServer::resume`]; the stored data survives.
    pub fn go_down(&mut self) {
        self.served.go_down();
    }

    pub fn resume(&mut self) -> std::io::Result<()> {
        self.served.resume()
    }

    /// The live resources of a type, as the server would return them.
    pub fn resources(&self, ty: &str) -> Vec<Value> {
        lock(&self.store)
            .records
            .iter()
            .filter(|r| r.ty == ty && !r.deleted)
            .map(|r| r.resource.clone())
            .collect()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.store).log.clone()
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        actix_web::rt::time::sleep(latency).await;
    }
    let (resp, hang) = {
        let mut store = lock(&shared.store);
        let (resp, hang) = dispatch(&mut store, &shared.faults, &req, &body);
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
        let if_none_exist = req
            .headers()
            .get("If-None-Exist")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        store.log.push(Logged {
            method: req.method().as_str().to_owned(),
            path,
            status: resp.status().as_u16(),
            if_none_exist,
        });
        (resp, hang)
    };
    if let Some(hang) = hang {
        actix_web::rt::time::sleep(hang).await;
    }
    resp
}

/// A refusal, answered as an OperationOutcome.
struct Reject {
    status: StatusCode,
    diagnostics: String,
}

impl Reject {
    fn new(status: u16, diagnostics: impl Into<String>) -> Reject {
        Reject {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            diagnostics: diagnostics.into(),
        }
    }

    fn response(&self) -> HttpResponse {
        let code = match self.status.as_u16() {
            401 => "login",
            404 | 410 => "not-found",
            409 => "conflict",
            412 => "duplicate",
            422 => "processing",
            _ => "invalid",
        };
        fhir(
            self.status,
            &json!({
                "resourceType": "OperationOutcome",
                "issue": [{ "severity": "error", "code": code, "diagnostics": self.diagnostics }],
            }),
        )
    }
}

fn fhir(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/fhir+json;charset=utf-8")
        .body(body.to_string())
}

fn answer(r: Result<HttpResponse, Reject>) -> HttpResponse {
    r.unwrap_or_else(|e| e.response())
}

fn dispatch(
    store: &mut Store,
    faults: &Faults,
    req: &HttpRequest,
    body: &[u8],
) -> (HttpResponse, Option<Duration>) {
    let Some(rest) = req.path().strip_prefix(BASE_PATH) else {
        return (Reject::new(404, "Not found").response(), None);
    };
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let method = req.method().as_str();
    let base_url = {
        let info = req.connection_info();
        format!("{}://{}{BASE_PATH}", info.scheme(), info.host())
    };
    if method == "GET" && segs == ["metadata"] {
        return (fhir(StatusCode::OK, &capability()), None);
    }
    if let Some(token) = &store.config.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            let mut resp =
                Reject::new(401, "HAPI-0644: Missing or invalid bearer token").response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fhir\""),
            );
            return (resp, None);
        }
    }
    let ty = segs[0];
    if !TYPES.contains(&ty) {
        let r = Reject::new(
            404,
            format!(
                "HAPI-0302: Unknown resource type '{ty}' - Server knows how to handle: {TYPES:?}"
            ),
        );
        return (r.response(), None);
    }
    let if_none_exist = req
        .headers()
        .get("If-None-Exist")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match (method, &segs[1..]) {
        ("GET", []) => (answer(search(store, ty, req.query_string(), &base_url)), None),
        ("GET", [id]) => (answer(read(store, ty, id)), None),
        ("POST", []) => write(store, faults, |s| {
            create(s, ty, body, if_none_exist.as_deref(), &base_url)
        }),
        ("PUT", [id]) => write(store, faults, |s| update(s, ty, id, body, &base_url)),
        ("DELETE", [id]) => write(store, faults, |s| delete(s, ty, id)),
        _ => (
            Reject::new(
                400,
                format!("HAPI-0389: Invalid request: The FHIR endpoint on this server does not know how to handle {method} operation[{}]", segs.join("/")),
            )
            .response(),
            None,
        ),
    }
}

fn write(
    store: &mut Store,
    faults: &Faults,
    op: impl FnOnce(&mut Store) -> Result<HttpResponse, Reject>,
) -> (HttpResponse, Option<Duration>) {
    match faults.decide_write() {
        Decision::Fail {
            status,
            retry_after,
        } => {
            let mut resp = Reject::new(status, format!("Injected fault: HTTP {status}")).response();
            if let Some(seconds) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            (resp, None)
        }
        Decision::CommitThenHang(hold) => (answer(op(store)), Some(hold)),
        Decision::Proceed => (answer(op(store)), None),
    }
}

fn capability() -> Value {
    let resources: Vec<Value> = TYPES
        .iter()
        .map(|t| {
            json!({
                "type": t,
                "interaction": [{"code": "read"}, {"code": "update"}, {"code": "delete"}, {"code": "create"}, {"code": "search-type"}],
                "conditionalCreate": true,
                "updateCreate": true,
                "searchParam": [{"name": "identifier", "type": "token"}, {"name": "_id", "type": "token"}],
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{ "mode": "server", "resource": resources }],
    })
}

fn location(base_url: &str, r: &Record) -> String {
    format!("{base_url}/{}/{}/_history/{}", r.ty, r.id, r.version)
}

fn stored(status: StatusCode, r: &Record, base_url: &str) -> HttpResponse {
    let mut resp = fhir(status, &r.resource);
    if let Ok(v) = HeaderValue::from_str(&location(base_url, r)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", r.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn read(store: &Store, ty: &str, id: &str) -> Result<HttpResponse, Reject> {
    match store.find(ty, id).map(|i| &store.records[i]) {
        Some(r) if r.deleted => Err(Reject::new(
            410,
            format!(
                "HAPI-2244: Resource was deleted at {}",
                r.resource["meta"]["lastUpdated"].as_str().unwrap_or("")
            ),
        )),
        Some(r) => Ok(fhir(StatusCode::OK, &r.resource)),
        None => Err(Reject::new(
            404,
            format!("HAPI-2001: Resource {ty}/{id} is not known"),
        )),
    }
}

/// Parses and checks a body for `ty`: JSON, the right resource type, primitive formats, required
/// elements, and that every literal reference resolves.
fn check(store: &Store, ty: &str, body: &[u8]) -> Result<Value, Reject> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Reject::new(
            400,
            format!("HAPI-0450: Failed to parse request body as JSON resource. Error was: {e}"),
        )
    })?;
    let found = v.get("resourceType").and_then(Value::as_str).unwrap_or("");
    if found != ty {
        return Err(Reject::new(
            400,
            format!(
                "HAPI-0451: Incorrect resource type found, expected \"{ty}\" but found \"{found}\""
            ),
        ));
    }
    for (path, value) in [
        ("birthDate", v.get("birthDate")),
        ("period.start", v.pointer("/period/start")),
        ("period.end", v.pointer("/period/end")),
        ("effectiveDateTime", v.get("effectiveDateTime")),
    ] {
        if let Some(s) = value {
            if !s.as_str().is_some_and(valid_date_time) {
                return Err(Reject::new(
                    400,
                    format!("HAPI-1821: [element=\"{path}\"] Invalid attribute value \"{s}\": Invalid date/time format"),
                ));
            }
        }
    }
    if store.config.validate {
        let required: &[&str] = match ty {
            "Encounter" => &["status", "class"],
            "Observation" => &["status", "code"],
            _ => &[],
        };
        for field in required {
            if v.get(*field).is_none() {
                return Err(Reject::new(
                    422,
                    format!("{ty}.{field}: minimum required = 1, but only found 0 (from http://hl7.org/fhir/StructureDefinition/{ty}|4.0.1)"),
                ));
            }
        }
        if ty == "Patient" {
            if let Some(g) = v.get("gender") {
                if !matches!(g.as_str(), Some("male" | "female" | "other" | "unknown")) {
                    return Err(Reject::new(
                        422,
                        format!("The value provided ('{g}') was not found in the value set 'AdministrativeGender'"),
                    ));
                }
            }
        }
    }
    let mut refs = Vec::new();
    references(&v, ty, &mut refs);
    for (path, reference) in refs {
        let mut parts = reference.splitn(2, '/');
        let (Some(rty), Some(rid)) = (parts.next(), parts.next()) else {
            return Err(Reject::new(
                400,
                format!("HAPI-0507: Invalid resource reference found at path[{path}] - Does not contain resource type - {reference}"),
            ));
        };
        if store.live(rty, rid).is_none() {
            return Err(Reject::new(
                400,
                format!("HAPI-1094: Resource {rty}/{rid} not found, specified in path: {path}"),
            ));
        }
    }
    Ok(v)
}

/// `yyyy`, `yyyy-mm`, `yyyy-mm-dd` or a dateTime with seconds and zone.
fn valid_date_time(s: &str) -> bool {
    let d = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    match s.len() {
        4 => d(s),
        7 => d(&s[..4]) && &s[4..5] == "-" && d(&s[5..]),
        10 => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        _ => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
    }
}

/// Every literal reference (`Type/id`) with its FHIRPath-ish path.
fn references(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("reference").and_then(Value::as_str) {
                if !r.starts_with('#') && !r.starts_with("urn:") && !r.contains("://") {
                    out.push((path.to_string(), r.to_string()));
                }
            }
            for (k, child) in o {
                if k != "reference" {
                    references(child, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| references(c, path, out)),
        _ => {}
    }
}

fn stamp(resource: &mut Value, id: &str, version: u32) {
    resource["id"] = json!(id);
    resource["meta"] = json!({
        "versionId": version.to_string(),
        "lastUpdated": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    });
}

fn create(
    store: &mut Store,
    ty: &str,
    body: &[u8],
    if_none_exist: Option<&str>,
    base_url: &str,
) -> Result<HttpResponse, Reject> {
    let mut resource = check(store, ty, body)?;
    if let Some(query) = if_none_exist {
        let query = query.split_once('?').map_or(query, |(_, q)| q);
        let matches = matching(store, ty, query)?;
        match matches.as_slice() {
            [] => {}
            [i] => return Ok(stored(StatusCode::OK, &store.records[*i], base_url)),
            more => {
                return Err(Reject::new(
                    412,
                    format!("HAPI-0958: Failed to CREATE resource with match URL \"{query}\" because this search matched {} resources", more.len()),
                ))
            }
        }
    }
    let id = store.next_id.to_string();
    store.next_id += 1;
    stamp(&mut resource, &id, 1);
    store.records.push(Record {
        ty: ty.into(),
        id,
        version: 1,
        deleted: false,
        resource,
    });
    let r = store.records.last().expect("just pushed");
    Ok(stored(StatusCode::CREATED, r, base_url))
}

fn update(
    store: &mut Store,
    ty: &str,
    id: &str,
    body: &[u8],
    base_url: &str,
) -> Result<HttpResponse, Reject> {
    let mut resource = check(store, ty, body)?;
    match resource.get("id").and_then(Value::as_str) {
        Some(b) if b == id => {}
        Some(b) => return Err(Reject::new(400, format!("HAPI-0420: Can not update resource, resource body must contain an ID element which matches the request URL for update (PUT) operation - Resource body ID of \"{b}\" does not match URL ID of \"{id}\""))),
        None => return Err(Reject::new(400, "HAPI-0419: Can not update resource, resource body must contain an ID element for update (PUT) operation")),
    }
    match store.find(ty, id) {
        Some(i) => {
            let r = &mut store.records[i];
            let status = if r.deleted {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            r.version += 1;
            r.deleted = false;
            stamp(&mut resource, id, r.version);
            r.resource = resource;
            Ok(stored(status, &store.records[i], base_url))
        }
        None if id.chars().all(|c| c.is_ascii_digit()) => Err(Reject::new(
            400,
            format!("HAPI-0960: Can not create resource with ID[{id}], no resource with this ID exists and clients may only assign IDs which contain at least one non-numeric character"),
        )),
        None => {
            stamp(&mut resource, id, 1);
            store.records.push(Record {
                ty: ty.into(),
                id: id.into(),
                version: 1,
                deleted: false,
                resource,
            });
            let r = store.records.last().expect("just pushed");
            Ok(stored(StatusCode::CREATED, r, base_url))
        }
    }
}

fn delete(store: &mut Store, ty: &str, id: &str) -> Result<HttpResponse, Reject> {
    let Some(i) = store.find(ty, id).filter(|i| !store.records[*i].deleted) else {
        return Err(Reject::new(
            404,
            format!("HAPI-2001: Resource {ty}/{id} is not known"),
        ));
    };
    let target = format!("{ty}/{id}");
    for r in store.records.iter().filter(|r| !r.deleted) {
        let mut refs = Vec::new();
        references(&r.resource, &r.ty, &mut refs);
        if let Some((path, _)) = refs.iter().find(|(_, reference)| *reference == target) {
            return Err(Reject::new(
                409,
                format!("HAPI-0550: Unable to delete {target} because at least one resource has a reference to this resource. First reference found was resource {}/{} in path {path}", r.ty, r.id),
            ));
        }
    }
    let r = &mut store.records[i];
    r.deleted = true;
    r.version += 1;
    Ok(fhir(
        StatusCode::OK,
        &json!({
            "resourceType": "OperationOutcome",
            "issue": [{ "severity": "information", "code": "informational", "diagnostics": format!("Successfully deleted 1 resource(s) in 1ms") }],
        }),
    ))
}

/// Indexes of live records of `ty` matching a search query.
fn matching(store: &Store, ty: &str, query: &str) -> Result<Vec<usize>, Reject> {
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((decode(k), decode(v)));
    }
    let mut out = Vec::new();
    'records: for (i, r) in store.records.iter().enumerate() {
        if r.ty != ty || r.deleted {
            continue;
        }
        for (k, v) in &params {
            let ok = match k.as_str() {
                "_id" => v.split(',').any(|id| id == r.id),
                "identifier" => has_identifier(&r.resource, v),
                "subject" | "patient" => {
                    let want = if v.contains('/') {
                        v.clone()
                    } else {
                        format!("Patient/{v}")
                    };
                    r.resource.pointer("/subject/reference").and_then(Value::as_str)
                        == Some(want.as_str())
                }
                "_count" | "_format" => true,
                other => {
                    return Err(Reject::new(
                        400,
                        format!("HAPI-0524: Unknown search parameter \"{other}\" for resource type \"{ty}\""),
                    ))
                }
            };
            if !ok {
                continue 'records;
            }
        }
        out.push(i);
    }
    Ok(out)
}

fn has_identifier(resource: &Value, token: &str) -> bool {
    let (system, value) = match token.split_once('|') {
        Some((s, v)) => (Some(s), v),
        None => (None, token),
    };
    resource
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|i| {
            i.get("value").and_then(Value::as_str) == Some(value)
                && match system {
                    None => true,
                    Some("") => i.get("system").is_none(),
                    Some(s) => i.get("system").and_then(Value::as_str) == Some(s),
                }
        })
}

fn search(store: &Store, ty: &str, query: &str, base_url: &str) -> Result<HttpResponse, Reject> {
    let found = matching(store, ty, query)?;
    let entries: Vec<Value> = found
        .iter()
        .map(|i| {
            let r = &store.records[*i];
            json!({
                "fullUrl": format!("{base_url}/{}/{}", r.ty, r.id),
                "resource": r.resource,
                "search": { "mode": "match" },
            })
        })
        .collect();
    Ok(fhir(
        StatusCode::OK,
        &json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": entries.len(),
            "entry": entries,
        }),
    ))
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::blocking::Client;

    fn call(
        s: &FhirServer,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_none_exist: Option<&str>,
    ) -> (u16, Value) {
        let mut req = Client::new()
            .request(method, format!("{}/{path}", s.base()))
            .bearer_auth("demo-shr-token");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/fhir+json")
                .body(b.to_string());
        }
        if let Some(q) = if_none_exist {
            req = req.header("If-None-Exist", q);
        }
        let resp = req.send().expect("the double answers");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn patient(value: &str) -> Value {
        json!({ "resourceType": "Patient", "identifier": [{ "system": "urn:test", "value": value }], "gender": "female", "birthDate": "1990-02-03" })
    }

    #[test]
    fn conditional_create_creates_once_and_a_second_match_is_a_412() {
        let s = FhirServer::start(Config::demo()).expect("starts");
        let (st, first) = call(
            &s,
            reqwest::Method::POST,
            "Patient",
            Some(patient("A1")),
            Some("identifier=urn%3Atest%7CA1"),
        );
        assert_eq!(st, 201);
        let (st, again) = call(
            &s,
            reqwest::Method::POST,
            "Patient",
            Some(patient("A1")),
            Some("identifier=urn%3Atest%7CA1"),
        );
        assert_eq!((st, &again["id"]), (200, &first["id"]));
        assert_eq!(s.resources("Patient").len(), 1);
        call(
            &s,
            reqwest::Method::POST,
            "Patient",
            Some(patient("A1")),
            None,
        );
        let (st, oo) = call(
            &s,
            reqwest::Method::POST,
            "Patient",
            Some(patient("A1")),
            Some("identifier=urn:test|A1"),
        );
        assert_eq!(st, 412, "{oo}");
    }

    #[test]
    fn references_must_resolve_and_required_elements_are_checked() {
        let s = FhirServer::start(Config::demo()).expect("starts");
        let enc = json!({ "resourceType": "Encounter", "status": "finished", "class": { "code": "AMB" }, "subject": { "reference": "Patient/99" } });
        let (st, oo) = call(&s, reqwest::Method::POST, "Encounter", Some(enc), None);
        assert_eq!(st, 400);
        assert!(oo.to_string().contains("Patient/99 not found"), "{oo}");
        let (_, p) = call(
            &s,
            reqwest::Method::POST,
            "Patient",
            Some(patient("B")),
            None,
        );
        let pid = p["id"].as_str().expect("an id").to_string();
        let enc = json!({ "resourceType": "Encounter", "status": "finished", "subject": { "reference": format!("Patient/{pid}") } });
        let (st, oo) = call(&s, reqwest::Method::POST, "Encounter", Some(enc), None);
        assert_eq!(st, 422);
        assert!(oo.to_string().contains("Encounter.class"), "{oo}");
        let logical = json!({ "resourceType": "Encounter", "status": "finished", "class": { "code": "AMB" }, "subject": { "reference": format!("Patient/{pid}") }, "serviceProvider": { "type": "Organization", "identifier": { "system": "urn:x", "value": "y" } } });
        let (st, e) = call(&s, reqwest::Method::POST, "Encounter", Some(logical), None);
        assert_eq!(st, 201, "{e}");
        let (st, _) = call(
            &s,
            reqwest::Method::DELETE,
            &format!("Patient/{pid}"),
            None,
            None,
        );
        assert_eq!(st, 409);
        let (st, _) = call(&s, reqwest::Method::GET, "Patient/12345", None, None);
        assert_eq!(st, 404);
        let mut bad = patient("C");
        bad["birthDate"] = json!("03/02/1990");
        let (st, _) = call(&s, reqwest::Method::POST, "Patient", Some(bad), None);
        assert_eq!(st, 400);
    }

    #[test]
    fn put_updates_and_refuses_client_numeric_ids_and_tokens_are_required() {
        let s = FhirServer::start(Config::demo()).expect("starts");
        let (_, p) = call(
            &s,
            reqwest::Method::POST,
            "Patient",
            Some(patient("D")),
            None,
        );
        let id = p["id"].as_str().expect("an id").to_string();
        let mut changed = patient("D");
        changed["id"] = json!(id);
        changed["gender"] = json!("other");
        let (st, v) = call(
            &s,
            reqwest::Method::PUT,
            &format!("Patient/{id}"),
            Some(changed.clone()),
            None,
        );
        assert_eq!((st, v["meta"]["versionId"].as_str()), (200, Some("2")));
        changed["id"] = json!("777");
        let (st, _) = call(&s, reqwest::Method::PUT, "Patient/777", Some(changed), None);
        assert_eq!(st, 400);
        let st = Client::new()
            .get(format!("{}/Patient/{id}", s.base()))
            .send()
            .expect("answers")
            .status()
            .as_u16();
        assert_eq!(st, 401);
    }
}
