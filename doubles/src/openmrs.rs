//! Test double of the OpenMRS FHIR2 module (R4), served over real HTTP on 127.0.0.1.
//!
//! It follows `shared/contracts/openmrs-fhir2.md` strictly, including the behaviour a careless
//! client trips over: a 401 that is an HTML servlet page, passwords containing `:` never
//! authenticating, identifiers and encounter locations dropped without a word, 500s for some
//! malformed Observations, no idempotency at all (`If-None-Exist` is ignored), no Bundles.
//!
//! Resources are stored as the server would return them (server-assigned uuid, `meta.lastUpdated`,
//! identifier types resolved), so tests can compare what the gateway meant to push with what a real
//! OpenMRS would have kept.
//!
//! Deliberate simplifications: searches return every match in one page (no `_count` paging), the
//! server's time zone is UTC (a date search matches the UTC day), and only the search parameters
//! the gateway's recovery needs are known (any other non-`_` parameter is a 400, as in HAPI).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use chrono::{DateTime, Months, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::faults::{Decision, Faults};
use crate::server::{Configure, Served};

pub const BASE_PATH: &str = "/openmrs/ws/fhir2/R4";

const ENCOUNTER_TYPE_SYSTEM: &str = "http://fhir.openmrs.org/code-system/encounter-type";
const VISIT_TYPE_SYSTEM: &str = "http://fhir.openmrs.org/code-system/visit-type";
const IDENTIFIER_LOCATION_EXT: &str = "http://fhir.openmrs.org/ext/patient/identifier#location";
/// The one concept-source URL FHIR2 recognises even when no source is registered under it.
const SNOMED: &str = "http://snomed.info/sct";
const LUHN_MOD30_CHARS: &str = "0123456789ACDEFGHJKLMNPRTUVWXY";
const FHIR_JSON: &str = "application/fhir+json;charset=UTF-8";
const NPE: &str = "Failed to call access method: java.lang.NullPointerException";

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct IdentifierType {
    pub name: String,
    pub uuid: String,
    /// The URL registered for this type in `fhir_patient_identifier_system`, if any.
    pub system: Option<String>,
    pub location: LocationBehaviour,
    pub unique: bool,
    /// Values must end with a Luhn mod 30 check character (the reference app's "OpenMRS ID").
    pub luhn_mod30: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationBehaviour {
    Required,
    NotUsed,
}

#[derive(Clone, Debug)]
pub enum Datatype {
    Numeric {
        units: String,
        /// Absolute bounds (OpenMRS `low_absolute` / `hi_absolute`), inclusive.
        low: Option<f64>,
        high: Option<f64>,
        allow_decimal: bool,
    },
    Coded {
        /// Answer concept uuids; empty means any concept is accepted.
        answers: Vec<String>,
    },
    Text,
    Boolean,
    Datetime,
}

#[derive(Clone, Debug)]
pub struct Concept {
    pub uuid: String,
    pub name: String,
    pub datatype: Datatype,
    /// (concept-source URL, code) pairs, the SAME-AS mappings of the concept.
    pub mappings: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// (username, password)
    pub users: Vec<(String, String)>,
    pub identifier_types: Vec<IdentifierType>,
    /// (uuid, name)
    pub locations: Vec<(String, String)>,
    /// (uuid, name)
    pub encounter_types: Vec<(String, String)>,
    /// (uuid, name)
    pub visit_types: Vec<(String, String)>,
    /// Concept-source URLs, matched character for character against `coding.system`.
    pub concept_sources: Vec<String>,
    pub concepts: Vec<Concept>,
}

/// CIEL concepts in the reference app use the CIEL number padded with `A` to 36 characters.
fn ciel_uuid(number: &str) -> String {
    format!("{number:A<36}")
}

impl Config {
    /// The configuration the gateway's demo target refers to (O3 reference-app style URLs).
    pub fn demo() -> Config {
        const CIEL: &str = "https://cielterminology.org";
        const LOINC: &str = "http://loinc.org";
        let numeric = |units: &str, low: f64, high: f64, allow_decimal: bool| Datatype::Numeric {
            units: units.to_owned(),
            low: Some(low),
            high: Some(high),
            allow_decimal,
        };
        let concept = |number: &str, name: &str, datatype: Datatype, loinc: Option<&str>| {
            let mut mappings = vec![(CIEL.to_owned(), number.to_owned())];
            if let Some(code) = loinc {
                mappings.push((LOINC.to_owned(), code.to_owned()));
            }
            Concept {
                uuid: ciel_uuid(number),
                name: name.to_owned(),
                datatype,
                mappings,
            }
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        Config {
            users: vec![pair("admin", "Admin123")],
            identifier_types: vec![
                IdentifierType {
                    name: "National ID".to_owned(),
                    uuid: "a5d38e09-efcb-4d91-a526-50ce1ba5011a".to_owned(),
                    system: Some("http://example.org/national-id".to_owned()),
                    location: LocationBehaviour::Required,
                    unique: true,
                    luhn_mod30: false,
                },
                IdentifierType {
                    name: "OpenMRS ID".to_owned(),
                    uuid: "05a29f94-c0ed-11e2-94be-8c13b969e334".to_owned(),
                    system: None,
                    location: LocationBehaviour::Required,
                    unique: true,
                    luhn_mod30: true,
                },
            ],
            locations: vec![
                pair("44c3efb0-2583-4c80-a79e-1f756a03c0a1", "Outpatient Clinic"),
                pair("aff27d58-a15c-49a6-9beb-d30dcfc0c66e", "Amani Hospital"),
                pair("8d6c993e-c2cc-11de-8d13-0010c6dffd0f", "Unknown Location"),
            ],
            encounter_types: vec![
                pair("d7151f82-c1f3-4152-a605-2f9ea7414a79", "Visit Note"),
                pair("67a71486-1a54-468f-ac3e-7091a9a79584", "Vitals"),
            ],
            visit_types: vec![pair(
                "7b0f5697-27e3-40c4-8bae-f4049abfb4ed",
                "Facility Visit",
            )],
            concept_sources: vec![
                LOINC.to_owned(),
                CIEL.to_owned(),
                "http://snomed.info/sct/".to_owned(),
            ],
            concepts: vec![
                concept(
                    "5089",
                    "Weight (kg)",
                    numeric("kg", 0.0, 250.0, true),
                    Some("29463-7"),
                ),
                concept(
                    "5090",
                    "Height (cm)",
                    numeric("cm", 10.0, 228.0, true),
                    Some("8302-2"),
                ),
                concept(
                    "5088",
                    "Temperature (c)",
                    numeric("DEG C", 25.0, 43.0, true),
                    Some("8310-5"),
                ),
                concept(
                    "5085",
                    "Systolic blood pressure",
                    numeric("mmHg", 0.0, 250.0, false),
                    Some("8480-6"),
                ),
                concept(
                    "5086",
                    "Diastolic blood pressure",
                    numeric("mmHg", 0.0, 150.0, false),
                    Some("8462-4"),
                ),
                concept(
                    "21",
                    "Hemoglobin",
                    numeric("g/dL", 0.0, 30.0, true),
                    Some("718-7"),
                ),
                concept("160220", "Chief complaint (text)", Datatype::Text, None),
                concept(
                    "5916",
                    "Birth weight",
                    numeric("kg", 0.0, 10.0, true),
                    Some("8339-4"),
                ),
            ],
        }
    }

    fn location(&self, uuid: &str) -> Option<&(String, String)> {
        self.locations.iter().find(|(u, _)| u == uuid)
    }

    fn concept(&self, uuid: &str) -> Option<&Concept> {
        self.concepts.iter().find(|c| c.uuid == uuid)
    }

    /// Resolves one coding the way FHIR2's concept translator does: no system means a concept
    /// uuid; a system must be a registered source URL (exactly), except SNOMED's fallback.
    fn resolve_coding(&self, system: Option<&str>, code: &str) -> Option<&Concept> {
        let Some(system) = system.filter(|s| !s.is_empty()) else {
            return self.concept(code);
        };
        let registered = self.concept_sources.iter().any(|s| s == system);
        let source_fits = |source: &str| {
            if registered {
                source == system
            } else {
                system == SNOMED && source.trim_end_matches('/') == SNOMED
            }
        };
        self.concepts.iter().find(|c| {
            c.mappings
                .iter()
                .any(|(source, c)| c == code && source_fits(source))
        })
    }

    fn resolve_concept(&self, codeable: Option<&Value>) -> Option<&Concept> {
        codings(codeable)
            .filter_map(|c| Some((text(c, "system"), text(c, "code")?)))
            .find_map(|(system, code)| self.resolve_coding(system, code))
    }
}

/// Appends the Luhn mod 30 check character OpenMRS expects for "OpenMRS ID" values
/// (`"10001"` → `"10001V"`); `None` when a character is outside the mod 30 alphabet.
pub fn with_luhn_mod30_check(undecorated: &str) -> Option<String> {
    luhn_mod30_check(undecorated).map(|c| format!("{undecorated}{c}"))
}

fn luhn_mod30_check(undecorated: &str) -> Option<char> {
    let alphabet: Vec<char> = LUHN_MOD30_CHARS.chars().collect();
    let n = alphabet.len();
    let mut factor = 2;
    let mut sum = 0;
    for ch in undecorated.chars().rev() {
        let point = alphabet.iter().position(|&a| a == ch)?;
        let addend = factor * point;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / n + addend % n;
    }
    alphabet.get((n - sum % n) % n).copied()
}

fn luhn_mod30_valid(identifier: &str) -> bool {
    let mut chars: Vec<char> = identifier.chars().collect();
    let Some(check) = chars.pop() else {
        return false;
    };
    let undecorated: String = chars.into_iter().collect();
    !undecorated.is_empty() && luhn_mod30_check(&undecorated) == Some(check)
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path including the query string.
    pub path: String,
    pub status: u16,
    pub authorized: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Patient,
    Encounter,
    Observation,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Patient => "Patient",
            Kind::Encounter => "Encounter",
            Kind::Observation => "Observation",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "Patient" => Some(Kind::Patient),
            "Encounter" => Some(Kind::Encounter),
            "Observation" => Some(Kind::Observation),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct KeptIdentifier {
    type_uuid: String,
    type_name: String,
    value: String,
}

/// What searches and validations need to know about a stored record, kept beside the JSON so
/// they never have to re-read the resource.
#[derive(Clone, Debug, Default)]
struct Facts {
    identifiers: Vec<KeptIdentifier>,
    given: Vec<String>,
    family: Vec<String>,
    gender: Option<String>,
    /// How FHIR2 displays a reference to this patient.
    display: String,
    patient: Option<String>,
    /// Encounter date, visit start, or obs datetime.
    when: Option<DateTime<Utc>>,
    /// `Some` for a visit: its start and optional stop.
    visit: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    type_code: Option<String>,
    concept: Option<String>,
    encounter: Option<String>,
}

struct Record {
    kind: Kind,
    /// The OpenMRS integer primary key; it only shows in validation messages.
    number: u64,
    uuid: String,
    voided: bool,
    resource: Value,
    facts: Facts,
}

struct Store {
    config: Config,
    records: Vec<Record>,
    next_number: u64,
    sessions: HashSet<String>,
    log: Vec<Logged>,
}

impl Store {
    fn find(&self, kind: Kind, uuid: &str) -> Option<usize> {
        self.records
            .iter()
            .position(|r| r.kind == kind && r.uuid == uuid)
    }

    fn live(&self, kind: Kind, uuid: &str) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.kind == kind && r.uuid == uuid && !r.voided)
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

// ---------------------------------------------------------------------------------------------
// Public handle
// ---------------------------------------------------------------------------------------------

pub struct OpenMrs {
    pub faults: Faults,
    served: Served,
    store: Arc<Mutex<Store>>,
}

impl OpenMrs {
    /// Serves on any free port.
    pub fn start(config: Config) -> std::io::Result<OpenMrs> {
        OpenMrs::start_on(0, config)
    }

    pub fn start_on(port: u16, config: Config) -> std::io::Result<OpenMrs> {
        let store = Arc::new(Mutex::new(Store {
            config,
            records: Vec::new(),
            next_number: 1,
            sessions: HashSet::new(),
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
        let served = Served::start(port, configure)?;
        Ok(OpenMrs {
            faults,
            served,
            store,
        })
    }

    pub fn base(&self) -> String {
        format!("{}{BASE_PATH}", self.served.base())
    }

    pub fn port(&self) -> u16 {
        self.served.port
    }

    /// Refuses connections until [`OpenMrs::resume`]; the stored data survives.
    pub fn go_down(&mut self) {
        self.served.go_down();
    }

    pub fn resume(&mut self) -> std::io::Result<()> {
        self.served.resume()
    }

    fn stored(&self, kind: Kind) -> Vec<Value> {
        lock(&self.store)
            .records
            .iter()
            .filter(|r| r.kind == kind && !r.voided)
            .map(|r| r.resource.clone())
            .collect()
    }

    /// Patients not voided, as the server would return them.
    pub fn patients(&self) -> Vec<Value> {
        self.stored(Kind::Patient)
    }

    /// Encounters and visits (FHIR2 exposes both as Encounter) not voided.
    pub fn encounters(&self) -> Vec<Value> {
        self.stored(Kind::Encounter)
    }

    pub fn observations(&self) -> Vec<Value> {
        self.stored(Kind::Observation)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.store).log.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP front: auth, routing, faults, logging
// ---------------------------------------------------------------------------------------------

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        actix_web::rt::time::sleep(latency).await;
    }
    let (resp, hang) = {
        let mut store = lock(&shared.store);
        let out = dispatch(&mut store, &shared.faults, &req, &body);
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
        store.log.push(Logged {
            method: req.method().as_str().to_owned(),
            path,
            status: out.resp.status().as_u16(),
            authorized: out.authorized,
        });
        (out.resp, out.hang)
    };
    // The write is committed and logged; the client only hears about it after `hang` (if ever).
    if let Some(hang) = hang {
        actix_web::rt::time::sleep(hang).await;
    }
    resp
}

struct Outcome {
    resp: HttpResponse,
    authorized: bool,
    hang: Option<Duration>,
}

impl Outcome {
    /// An answer given without checking credentials (or after they failed).
    fn anonymous(resp: HttpResponse) -> Outcome {
        Outcome {
            resp,
            authorized: false,
            hang: None,
        }
    }
}

enum Auth {
    Denied,
    /// A known `JSESSIONID`: the servlet filter does not look at credentials again.
    Session,
    Basic,
}

fn authenticate(store: &Store, req: &HttpRequest) -> Auth {
    let has_session = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("JSESSIONID="))
        .any(|id| store.sessions.contains(id));
    if has_session {
        return Auth::Session;
    }
    let Some(encoded) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return Auth::Denied;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Auth::Denied;
    };
    let decoded = String::from_utf8_lossy(&decoded);
    // OpenMRS splits the credentials on every ':' and wants exactly two parts, so a password
    // that contains ':' can never authenticate.
    let parts: Vec<&str> = decoded.split(':').collect();
    match parts.as_slice() {
        [user, password]
            if store
                .config
                .users
                .iter()
                .any(|(u, p)| u == user && p == password) =>
        {
            Auth::Basic
        }
        _ => Auth::Denied,
    }
}

fn dispatch(store: &mut Store, faults: &Faults, req: &HttpRequest, body: &[u8]) -> Outcome {
    let rest =
        match req.path().strip_prefix(BASE_PATH) {
            Some(r) if r.is_empty() || r.starts_with('/') => r.trim_matches('/'),
            _ => return Outcome::anonymous(servlet_page(
                StatusCode::NOT_FOUND,
                "The requested resource is not available.",
                "The origin server did not find a current representation for the target resource.",
            )),
        };
    let segs: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let base_url = {
        let info = req.connection_info();
        format!("{}://{}{BASE_PATH}", info.scheme(), info.host())
    };
    let method = req.method().as_str();
    if method == "GET" && segs == ["metadata"] {
        return Outcome::anonymous(fhir(StatusCode::OK, &capability(&base_url)));
    }
    let new_session = match authenticate(store, req) {
        Auth::Denied => return Outcome::anonymous(unauthorized()),
        Auth::Session => None,
        Auth::Basic => Some(random_hex(16).to_uppercase()),
    };
    if let Some(id) = &new_session {
        store.sessions.insert(id.clone());
    }
    let (mut resp, hang) = route(store, faults, req, method, &segs, body, &base_url);
    if let Some(id) = new_session {
        if let Ok(v) = HeaderValue::from_str(&format!("JSESSIONID={id}; Path=/openmrs; HttpOnly")) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Outcome {
        resp,
        authorized: true,
        hang,
    }
}

fn route(
    store: &mut Store,
    faults: &Faults,
    req: &HttpRequest,
    method: &str,
    segs: &[&str],
    body: &[u8],
    base_url: &str,
) -> (HttpResponse, Option<Duration>) {
    let unsupported = || {
        Reject::bad_request(format!(
            "Invalid request: The FHIR endpoint on this server does not know how to handle {method} operation[{}] with parameters [[{}]]",
            segs.join("/"),
            req.query_string()
        ))
        .response()
    };
    // An empty path is where transaction and batch Bundles go; FHIR2 has no provider for them.
    let Some((&ty, rest)) = segs.split_first() else {
        return (unsupported(), None);
    };
    if ty == "Location" {
        let resp = match (method, rest) {
            ("GET", [id]) => answer(read_location(store, id)),
            _ => unsupported(),
        };
        return (resp, None);
    }
    let Some(kind) = Kind::parse(ty) else {
        let reject = Reject {
            status: StatusCode::NOT_FOUND,
            diagnostics: format!(
                "Unknown resource type '{ty}' - Server knows how to handle: [Encounter, Location, Observation, Patient]"
            ),
        };
        return (reject.response(), None);
    };
    match (method, rest) {
        ("GET", []) => (answer(search(store, kind, req, base_url)), None),
        ("GET", [id]) => (answer(read(store, kind, id)), None),
        ("POST", []) => write(store, faults, |s| create(s, kind, body, base_url)),
        ("PUT", [id]) => write(store, faults, |s| update(s, kind, id, body)),
        ("DELETE", [id]) => write(store, faults, |s| delete(s, kind, id)),
        _ => (unsupported(), None),
    }
}

/// Runs a data write under the injected faults.
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
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = Reject {
                status,
                diagnostics: format!("Injected fault: HTTP {}", status.as_u16()),
            }
            .response();
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

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// A refusal, answered as an OperationOutcome.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    diagnostics: String,
}

impl Reject {
    fn bad_request(diagnostics: impl Into<String>) -> Reject {
        Reject {
            status: StatusCode::BAD_REQUEST,
            diagnostics: diagnostics.into(),
        }
    }

    fn parse(element: &str) -> Reject {
        Reject::bad_request(format!(
            "Failed to parse request body as JSON resource. Error was: Incorrect JSON type or value for element '{element}'"
        ))
    }

    /// OpenMRS validation failure; `obj` is the OpenMRS object's `toString`.
    fn invalid(obj: &str, field: &str, msg: impl std::fmt::Display) -> Reject {
        Reject {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            diagnostics: format!("'{obj}' failed to validate with reason: {field}: {msg}"),
        }
    }

    fn internal(diagnostics: impl Into<String>) -> Reject {
        Reject {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            diagnostics: diagnostics.into(),
        }
    }

    fn not_found(ty: &str, id: &str) -> Reject {
        Reject {
            status: StatusCode::NOT_FOUND,
            diagnostics: format!("Resource {ty}/{id} is not known"),
        }
    }

    fn gone(ty: &str, id: &str) -> Reject {
        Reject {
            status: StatusCode::GONE,
            diagnostics: format!("Resource {ty}/{id} has been deleted"),
        }
    }

    fn response(&self) -> HttpResponse {
        fhir(
            self.status,
            &operation_outcome("error", "processing", &self.diagnostics),
        )
    }
}

fn answer(result: Result<HttpResponse, Reject>) -> HttpResponse {
    result.unwrap_or_else(|r| r.response())
}

fn operation_outcome(severity: &str, code: &str, diagnostics: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]
    })
}

fn fhir(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .body(body.to_string())
}

/// What Tomcat answers before the FHIR servlet is reached: HTML, never an OperationOutcome.
fn servlet_page(status: StatusCode, message: &str, description: &str) -> HttpResponse {
    let title = format!(
        "HTTP Status {} – {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><title>{title}</title></head><body>\
         <h1>{title}</h1><hr class=\"line\" /><p><b>Type</b> Status Report</p>\
         <p><b>Message</b> {message}</p><p><b>Description</b> {description}</p>\
         <hr class=\"line\" /><h3>Apache Tomcat</h3></body></html>"
    );
    HttpResponse::build(status)
        .content_type("text/html;charset=utf-8")
        .body(page)
}

fn unauthorized() -> HttpResponse {
    let mut resp = servlet_page(
        StatusCode::UNAUTHORIZED,
        "User is not logged in",
        "The request has not been applied to the target resource because it lacks valid authentication credentials for that resource.",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"OpenMRS\""),
    );
    resp
}

fn capability(base_url: &str) -> Value {
    let resource = |ty: &str, interactions: &[&str], params: &[(&str, &str)]| {
        json!({
            "type": ty,
            "interaction": interactions.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
            "searchParam": params.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        })
    };
    let crud = ["read", "update", "delete", "create", "search-type"];
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now_text(),
        "publisher": "Not provided",
        "kind": "instance",
        "software": {"name": "OpenMRS FHIR Server", "version": "2.x (Kiunga test double)"},
        "implementation": {"description": "OpenMRS FHIR2 module", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+xml", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "resource": [
                resource("Encounter", &crud, &[("_id", "token"), ("subject", "reference"), ("patient", "reference"), ("date", "date"), ("type", "token")]),
                resource("Location", &["read"], &[]),
                resource("Observation", &crud, &[("_id", "token"), ("subject", "reference"), ("patient", "reference"), ("code", "token"), ("date", "date"), ("encounter", "reference")]),
                resource("Patient", &crud, &[("_id", "token"), ("identifier", "token"), ("name", "string"), ("given", "string"), ("family", "string"), ("gender", "token")]),
            ]
        }]
    })
}

// ---------------------------------------------------------------------------------------------
// Interactions
// ---------------------------------------------------------------------------------------------

fn parse_body(body: &[u8], kind: Kind) -> Result<Value, Reject> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Reject::bad_request(format!(
            "Failed to parse request body as JSON resource. Error was: {e}"
        ))
    })?;
    let found = text(&value, "resourceType").unwrap_or("");
    if !value.is_object() || found != kind.name() {
        return Err(Reject::bad_request(format!(
            "Incorrect resource type found, expected \"{}\" but found \"{found}\"",
            kind.name()
        )));
    }
    Ok(value)
}

struct Prepared {
    /// The resource's fields after `resourceType`, `id` and `meta`.
    fields: Map<String, Value>,
    facts: Facts,
}

fn prepare(
    store: &Store,
    kind: Kind,
    res: &Value,
    existing: Option<usize>,
) -> Result<Prepared, Reject> {
    match kind {
        Kind::Patient => prepare_patient(store, res, existing),
        Kind::Encounter => prepare_encounter(store, res, existing),
        Kind::Observation => prepare_observation(store, res, existing),
    }
}

fn assemble(kind: Kind, uuid: &str, fields: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("resourceType".into(), kind.name().into());
    m.insert("id".into(), uuid.into());
    m.insert("meta".into(), json!({ "lastUpdated": now_text() }));
    m.extend(fields);
    Value::Object(m)
}

fn create(
    store: &mut Store,
    kind: Kind,
    body: &[u8],
    base_url: &str,
) -> Result<HttpResponse, Reject> {
    let res = parse_body(body, kind)?;
    // A client id is ignored; so is If-None-Exist: every accepted POST is a new record.
    let prepared = prepare(store, kind, &res, None)?;
    let uuid = new_uuid();
    let resource = assemble(kind, &uuid, prepared.fields);
    let number = store.next_number;
    store.next_number += 1;
    store.records.push(Record {
        kind,
        number,
        uuid: uuid.clone(),
        voided: false,
        resource: resource.clone(),
        facts: prepared.facts,
    });
    Ok(HttpResponse::Created()
        .content_type(FHIR_JSON)
        .insert_header((
            header::LOCATION,
            format!("{base_url}/{}/{uuid}", kind.name()),
        ))
        .body(resource.to_string()))
}

fn update(store: &mut Store, kind: Kind, id: &str, body: &[u8]) -> Result<HttpResponse, Reject> {
    let res = parse_body(body, kind)?;
    match text(&res, "id") {
        None => {
            return Err(Reject::bad_request(
                "Can not update resource, resource body must contain an ID element for update (PUT) operation",
            ))
        }
        Some(body_id) if body_id != id => {
            return Err(Reject::bad_request(format!(
                "Can not update resource, resource body ID of {body_id} does not match URL ID of {id}"
            )))
        }
        Some(_) => {}
    }
    // No upsert: PUT only replaces what exists.
    let idx = store
        .find(kind, id)
        .ok_or_else(|| Reject::not_found(kind.name(), id))?;
    if store.records[idx].voided {
        return Err(Reject::gone(kind.name(), id));
    }
    let prepared = prepare(store, kind, &res, Some(idx))?;
    let resource = assemble(kind, id, prepared.fields);
    let record = &mut store.records[idx];
    record.resource = resource.clone();
    record.facts = prepared.facts;
    Ok(fhir(StatusCode::OK, &resource))
}

fn delete(store: &mut Store, kind: Kind, id: &str) -> Result<HttpResponse, Reject> {
    let idx = store
        .find(kind, id)
        .ok_or_else(|| Reject::not_found(kind.name(), id))?;
    if store.records[idx].voided {
        return Err(Reject::gone(kind.name(), id));
    }
    store.records[idx].voided = true;
    // Voiding an encounter voids its observations too.
    if kind == Kind::Encounter {
        for r in store.records.iter_mut() {
            if r.kind == Kind::Observation && r.facts.encounter.as_deref() == Some(id) {
                r.voided = true;
            }
        }
    }
    Ok(fhir(
        StatusCode::OK,
        &operation_outcome(
            "information",
            "informational",
            &format!("Successfully deleted {}/{id}", kind.name()),
        ),
    ))
}

fn read(store: &Store, kind: Kind, id: &str) -> Result<HttpResponse, Reject> {
    let idx = store
        .find(kind, id)
        .ok_or_else(|| Reject::not_found(kind.name(), id))?;
    let record = &store.records[idx];
    if record.voided {
        return Err(Reject::gone(kind.name(), id));
    }
    Ok(fhir(StatusCode::OK, &record.resource))
}

fn read_location(store: &Store, id: &str) -> Result<HttpResponse, Reject> {
    let (uuid, name) = store
        .config
        .location(id)
        .ok_or_else(|| Reject::not_found("Location", id))?;
    Ok(fhir(
        StatusCode::OK,
        &json!({"resourceType": "Location", "id": uuid, "status": "active", "name": name}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Patient
// ---------------------------------------------------------------------------------------------

struct Incoming {
    ty: IdentifierType,
    value: String,
    official: bool,
    location: Option<(String, String)>,
}

fn prepare_patient(
    store: &Store,
    res: &Value,
    existing: Option<usize>,
) -> Result<Prepared, Reject> {
    let cfg = &store.config;
    let obj = object_label("Patient", store, existing);

    // What HAPI's parser refuses (400) before OpenMRS sees anything.
    let gender = match field(res, "gender") {
        None => None,
        Some(Value::String(g)) if ["male", "female", "other", "unknown"].contains(&g.as_str()) => {
            Some(g.clone())
        }
        Some(Value::String(g)) => {
            return Err(Reject::bad_request(format!(
                "Failed to parse request body as JSON resource. Error was: Unknown AdministrativeGender code '{g}'"
            )))
        }
        Some(_) => return Err(Reject::parse("gender")),
    };
    let birth = match field(res, "birthDate") {
        None => None,
        Some(Value::String(s)) => Some((
            s.clone(),
            parse_birth_date(s).ok_or_else(|| Reject::parse("birthDate"))?,
        )),
        Some(_) => return Err(Reject::parse("birthDate")),
    };
    let names = list(res, "name")?;
    let mut parsed_names = Vec::new();
    for name in names {
        parsed_names.push((text(name, "family"), strings(name, "given")?));
    }

    // Translation: an identifier whose type cannot be mapped is dropped without a word.
    let mut kept: Vec<Incoming> = Vec::new();
    for ident in list(res, "identifier")? {
        let ty = match text(ident, "system") {
            Some(system) => cfg
                .identifier_types
                .iter()
                .find(|t| t.system.as_deref() == Some(system)),
            None => ident
                .get("type")
                .and_then(|t| text(t, "text"))
                .and_then(|name| cfg.identifier_types.iter().find(|t| t.name == name)),
        };
        let Some(ty) = ty else { continue };
        let location = list(ident, "extension")?
            .iter()
            .find(|e| text(e, "url") == Some(IDENTIFIER_LOCATION_EXT))
            .and_then(|e| match reference(e.get("valueReference"), "Location") {
                Ref::Id(id) => cfg.location(&id).cloned(),
                _ => None,
            });
        kept.push(Incoming {
            ty: ty.clone(),
            value: text(ident, "value").unwrap_or("").to_owned(),
            official: text(ident, "use") == Some("official"),
            location,
        });
    }

    // Validation, in the order OpenMRS's person then patient validators run.
    if gender.is_none() {
        return Err(Reject::invalid(&obj, "gender", "Gender is required"));
    }
    if let Some((_, date)) = &birth {
        let today = Utc::now().date_naive();
        if *date > today {
            return Err(Reject::invalid(
                &obj,
                "birthdate",
                "Birthdate cannot be in the future",
            ));
        }
        if today
            .checked_sub_months(Months::new(140 * 12))
            .is_some_and(|limit| *date < limit)
        {
            return Err(Reject::invalid(
                &obj,
                "birthdate",
                "Birthdate cannot be more than 140 years ago",
            ));
        }
    }
    let deceased = res.get("deceasedBoolean") == Some(&Value::Bool(true))
        || field(res, "deceasedDateTime").is_some();
    if deceased {
        // FHIR2 cannot set a cause of death, which OpenMRS requires of a dead person.
        return Err(Reject::invalid(
            &obj,
            "causeOfDeath",
            "Cause of death is required for a dead person",
        ));
    }
    if parsed_names.is_empty() {
        return Err(Reject::invalid(
            &obj,
            "names",
            "Patient must have at least one name",
        ));
    }
    if parsed_names
        .iter()
        .any(|(_, given)| given.first().is_none_or(|g| g.trim().is_empty()))
    {
        return Err(Reject::invalid(
            &obj,
            "names[0].givenName",
            "Given name is required",
        ));
    }
    if kept.is_empty() {
        return Err(Reject::invalid(
            &obj,
            "identifiers",
            "Select a preferred identifier",
        ));
    }
    if kept.len() > 1 {
        match kept.iter().filter(|k| k.official).count() {
            1 => {}
            0 => {
                return Err(Reject::invalid(
                    &obj,
                    "identifiers",
                    "Select a preferred identifier",
                ))
            }
            _ => {
                return Err(Reject::invalid(
                    &obj,
                    "identifiers",
                    "Only one identifier can be preferred",
                ))
            }
        }
    }
    for (i, k) in kept.iter().enumerate() {
        let field_name = format!("identifiers[{i}]");
        if k.value.trim().is_empty() {
            return Err(Reject::invalid(
                &obj,
                &format!("{field_name}.identifier"),
                "Identifier cannot be null or blank",
            ));
        }
        if k.ty.luhn_mod30 && !luhn_mod30_valid(&k.value) {
            return Err(Reject::invalid(
                &obj,
                &format!("{field_name}.identifier"),
                format!(
                    "Invalid check digit for identifier {} of type {} (LuhnMod30IdentifierValidator)",
                    k.value, k.ty.name
                ),
            ));
        }
        if k.ty.location == LocationBehaviour::Required && k.location.is_none() {
            return Err(Reject::invalid(
                &obj,
                &format!("{field_name}.location"),
                format!(
                    "Identifier Location cannot be null for {} ({})",
                    k.value, k.ty.name
                ),
            ));
        }
        if kept[..i]
            .iter()
            .any(|o| o.ty.uuid == k.ty.uuid && o.value == k.value)
        {
            return Err(Reject::invalid(
                &obj,
                &format!("{field_name}.identifier"),
                format!("Duplicate identifier {} of type {}", k.value, k.ty.name),
            ));
        }
        let self_uuid = existing.map(|at| store.records[at].uuid.as_str());
        let taken = k.ty.unique
            && store.records.iter().any(|r| {
                r.kind == Kind::Patient
                    && !r.voided
                    && Some(r.uuid.as_str()) != self_uuid
                    && r.facts
                        .identifiers
                        .iter()
                        .any(|o| o.type_uuid == k.ty.uuid && o.value == k.value)
            });
        if taken {
            return Err(Reject::invalid(
                &obj,
                &format!("{field_name}.identifier"),
                format!("Identifier {} already in use by another patient", k.value),
            ));
        }
    }

    // The resource as FHIR2 would return it.
    let single = kept.len() == 1;
    let identifiers: Vec<Value> = kept
        .iter()
        .map(|k| {
            let mut m = Map::new();
            m.insert("id".into(), new_uuid().into());
            if let Some((uuid, name)) = &k.location {
                m.insert(
                    "extension".into(),
                    json!([{
                        "url": IDENTIFIER_LOCATION_EXT,
                        "valueReference": {"reference": format!("Location/{uuid}"), "type": "Location", "display": name}
                    }]),
                );
            }
            let preferred = single || k.official;
            m.insert("use".into(), if preferred { "official" } else { "usual" }.into());
            m.insert("type".into(), json!({ "text": k.ty.name }));
            if let Some(system) = &k.ty.system {
                m.insert("system".into(), system.clone().into());
            }
            m.insert("value".into(), k.value.clone().into());
            Value::Object(m)
        })
        .collect();
    let out_names: Vec<Value> = parsed_names
        .iter()
        .map(|(family, given)| {
            let mut m = Map::new();
            m.insert("id".into(), new_uuid().into());
            if let Some(family) = family {
                m.insert("family".into(), (*family).into());
            }
            // OpenMRS keeps a given and a middle name; anything further is lost.
            let given: Vec<&str> = given.iter().take(2).copied().collect();
            m.insert("given".into(), given.into());
            Value::Object(m)
        })
        .collect();

    let mut fields = Map::new();
    fields.insert("identifier".into(), identifiers.into());
    fields.insert("active".into(), true.into());
    fields.insert("name".into(), out_names.into());
    if let Some(g) = &gender {
        fields.insert("gender".into(), g.clone().into());
    }
    if let Some((raw, _)) = &birth {
        fields.insert("birthDate".into(), raw.clone().into());
    }
    fields.insert("deceasedBoolean".into(), false.into());
    let addresses: Vec<Value> = list(res, "address")?
        .iter()
        .filter_map(Value::as_object)
        .map(|a| {
            let keep = [
                "use",
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
            ];
            Value::Object(
                a.iter()
                    .filter(|(k, _)| keep.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        })
        .collect();
    if !addresses.is_empty() {
        fields.insert("address".into(), addresses.into());
    }

    let preferred = kept
        .iter()
        .find(|k| single || k.official)
        .map(|k| format!(" ({}: {})", k.ty.name, k.value))
        .unwrap_or_default();
    let (family0, given0) = &parsed_names[0];
    let display = format!(
        "{}{}{preferred}",
        given0.first().copied().unwrap_or(""),
        family0.map(|f| format!(" {f}")).unwrap_or_default()
    );
    let lower = |v: Vec<&str>| v.into_iter().map(str::to_lowercase).collect::<Vec<_>>();
    let facts = Facts {
        identifiers: kept
            .iter()
            .map(|k| KeptIdentifier {
                type_uuid: k.ty.uuid.clone(),
                type_name: k.ty.name.clone(),
                value: k.value.clone(),
            })
            .collect(),
        given: lower(
            parsed_names
                .iter()
                .flat_map(|(_, g)| g.iter().copied())
                .collect(),
        ),
        family: lower(parsed_names.iter().filter_map(|(f, _)| *f).collect()),
        gender,
        display,
        ..Facts::default()
    };
    Ok(Prepared { fields, facts })
}

fn parse_birth_date(s: &str) -> Option<NaiveDate> {
    if ![4, 7, 10].contains(&s.len()) {
        return None;
    }
    fhir_period(s).map(|(start, _)| start.date_naive())
}

// ---------------------------------------------------------------------------------------------
// Encounter (and visit)
// ---------------------------------------------------------------------------------------------

fn prepare_encounter(
    store: &Store,
    res: &Value,
    existing: Option<usize>,
) -> Result<Prepared, Reject> {
    let cfg = &store.config;
    let type_codings: Vec<&Value> = list(res, "type")?
        .iter()
        .flat_map(|t| codings(Some(t)))
        .collect();
    let code_in = |system: &str| {
        type_codings
            .iter()
            .find(|c| text(c, "system") == Some(system))
            .map(|c| text(c, "code").unwrap_or(""))
    };
    let (is_visit, type_code) = match (code_in(ENCOUNTER_TYPE_SYSTEM), code_in(VISIT_TYPE_SYSTEM)) {
        (Some(code), None) => (false, code),
        (None, Some(code)) => (true, code),
        _ => return Err(Reject::bad_request("Invalid type of request")),
    };
    let obj = object_label(
        if is_visit { "Visit" } else { "Encounter" },
        store,
        existing,
    );

    // Translation.
    let subject = match reference(res.get("subject"), "Patient") {
        Ref::Urn => return Err(Reject::internal(NPE)),
        Ref::Id(id) => Some(id),
        Ref::Missing | Ref::Other => None,
    };
    let period = res.get("period");
    let start = datetime_at(period, "start", "Encounter.period.start")?;
    let end = datetime_at(period, "end", "Encounter.period.end")?;
    // An unknown location is dropped, not refused.
    let location = list(res, "location")?.first().and_then(|l| {
        match reference(l.get("location"), "Location") {
            Ref::Id(id) => cfg.location(&id).cloned(),
            _ => None,
        }
    });
    let visit = if is_visit {
        None
    } else {
        match reference(res.get("partOf"), "Encounter") {
            Ref::Id(id) => store
                .live(Kind::Encounter, &id)
                .and_then(|r| r.facts.visit.map(|period| (r.uuid.clone(), period))),
            _ => None,
        }
    };

    // Validation.
    let type_name = if is_visit {
        cfg.visit_types.iter().find(|(u, _)| u == type_code)
    } else {
        cfg.encounter_types.iter().find(|(u, _)| u == type_code)
    };
    let Some((_, type_name)) = type_name else {
        return Err(if is_visit {
            Reject::invalid(
                &obj,
                "visitType",
                format!("Visit type is required (unknown visit type {type_code})"),
            )
        } else {
            Reject::invalid(
                &obj,
                "encounterType",
                format!("Encounter type is required (unknown encounter type {type_code})"),
            )
        });
    };
    let Some(patient) = subject
        .as_deref()
        .and_then(|id| store.live(Kind::Patient, id))
    else {
        return Err(Reject::invalid(&obj, "patient", "Patient is required"));
    };
    let now = Utc::now();
    let when = start.or(end).unwrap_or(now);
    if is_visit {
        if when > now {
            return Err(Reject::invalid(
                &obj,
                "startDatetime",
                "Visit start date cannot be in the future",
            ));
        }
        if end.is_some_and(|e| e < when) {
            return Err(Reject::invalid(
                &obj,
                "stopDatetime",
                "Visit stop date must be after the start date",
            ));
        }
    } else {
        if when > now {
            return Err(Reject::invalid(
                &obj,
                "encounterDatetime",
                "Encounter date cannot be in the future",
            ));
        }
        if let Some((_, (visit_start, visit_stop))) = &visit {
            if when < *visit_start || visit_stop.is_some_and(|stop| when > stop) {
                return Err(Reject::invalid(
                    &obj,
                    "encounterDatetime",
                    "Encounter date must be between the visit's start and stop dates",
                ));
            }
        }
    }

    let system = if is_visit {
        VISIT_TYPE_SYSTEM
    } else {
        ENCOUNTER_TYPE_SYSTEM
    };
    let mut fields = Map::new();
    let status = match (is_visit, end) {
        (true, Some(_)) => "finished",
        (true, None) => "in-progress",
        (false, _) => "unknown",
    };
    fields.insert("status".into(), status.into());
    fields.insert(
        "class".into(),
        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}),
    );
    fields.insert(
        "type".into(),
        json!([{"coding": [{"system": system, "code": type_code, "display": type_name}]}]),
    );
    fields.insert("subject".into(), patient_reference(patient));
    let mut period_out = Map::new();
    period_out.insert("start".into(), datetime_text(when).into());
    if is_visit {
        if let Some(e) = end {
            period_out.insert("end".into(), datetime_text(e).into());
        }
    }
    fields.insert("period".into(), Value::Object(period_out));
    if let Some((uuid, name)) = &location {
        fields.insert(
            "location".into(),
            json!([{"location": {"reference": format!("Location/{uuid}"), "type": "Location", "display": name}}]),
        );
    }
    if let Some((visit_uuid, _)) = &visit {
        fields.insert(
            "partOf".into(),
            json!({"reference": format!("Encounter/{visit_uuid}"), "type": "Encounter"}),
        );
    }
    let facts = Facts {
        patient: Some(patient.uuid.clone()),
        when: Some(when),
        visit: is_visit.then_some((when, end)),
        type_code: Some(type_code.to_owned()),
        ..Facts::default()
    };
    Ok(Prepared { fields, facts })
}

// ---------------------------------------------------------------------------------------------
// Observation
// ---------------------------------------------------------------------------------------------

fn prepare_observation(
    store: &Store,
    res: &Value,
    existing: Option<usize>,
) -> Result<Prepared, Reject> {
    let cfg = &store.config;
    let obj = object_label("Obs", store, existing);

    // Translation; several malformed inputs blow up here as 500s rather than validation errors.
    let status = match field(res, "status") {
        None => return Err(Reject::internal(NPE)),
        Some(Value::String(s)) => match s.as_str() {
            "preliminary" => "preliminary",
            "amended" | "corrected" => "amended",
            "registered" | "final" | "cancelled" | "entered-in-error" | "unknown" => "final",
            other => {
                return Err(Reject::bad_request(format!(
                    "Failed to parse request body as JSON resource. Error was: Unknown ObservationStatus code '{other}'"
                )))
            }
        },
        Some(_) => return Err(Reject::parse("status")),
    };
    for (element, class) in [
        ("effectivePeriod", "Period"),
        ("effectiveInstant", "InstantType"),
    ] {
        if field(res, element).is_some() {
            return Err(Reject::internal(format!(
                "Failed to call access method: java.lang.ClassCastException: class org.hl7.fhir.r4.model.{class} cannot be cast to class org.hl7.fhir.r4.model.DateTimeType"
            )));
        }
    }
    let effective = datetime_at(
        Some(res),
        "effectiveDateTime",
        "Observation.effectiveDateTime",
    )?;
    let subject = match reference(res.get("subject"), "Patient") {
        Ref::Urn => return Err(Reject::internal(NPE)),
        Ref::Id(id) => Some(id),
        Ref::Missing | Ref::Other => None,
    };
    let concept = cfg.resolve_concept(res.get("code"));
    // An encounter the server does not know is dropped, like other unresolvable references.
    let encounter = match reference(res.get("encounter"), "Encounter") {
        Ref::Id(id) => store
            .live(Kind::Encounter, &id)
            .filter(|r| r.facts.visit.is_none())
            .map(|r| r.uuid.clone()),
        _ => None,
    };

    // Validation.
    let Some(concept) = concept else {
        let tried: Vec<String> = codings(res.get("code"))
            .map(|c| {
                format!(
                    "{}|{}",
                    text(c, "system").unwrap_or(""),
                    text(c, "code").unwrap_or("")
                )
            })
            .collect();
        return Err(Reject::invalid(
            &obj,
            "concept",
            format!(
                "Concept is required (no registered concept source and mapping matches [{}])",
                tried.join(", ")
            ),
        ));
    };
    let Some(patient) = subject
        .as_deref()
        .and_then(|id| store.live(Kind::Patient, id))
    else {
        return Err(Reject::invalid(&obj, "person", "Person is required"));
    };
    let Some(effective) = effective else {
        return Err(Reject::invalid(
            &obj,
            "obsDatetime",
            "Obs datetime is required",
        ));
    };
    let (value_key, value) =
        observation_value(cfg, concept, res).map_err(|(f, m)| Reject::invalid(&obj, f, m))?;

    let mut fields = Map::new();
    fields.insert("status".into(), status.into());
    fields.insert("code".into(), concept_codeable(concept));
    fields.insert("subject".into(), patient_reference(patient));
    if let Some(e) = &encounter {
        fields.insert(
            "encounter".into(),
            json!({"reference": format!("Encounter/{e}"), "type": "Encounter"}),
        );
    }
    fields.insert("effectiveDateTime".into(), datetime_text(effective).into());
    fields.insert("issued".into(), now_text().into());
    fields.insert(value_key.into(), value);
    let facts = Facts {
        patient: Some(patient.uuid.clone()),
        when: Some(effective),
        concept: Some(concept.uuid.clone()),
        encounter,
        ..Facts::default()
    };
    Ok(Prepared { fields, facts })
}

/// Checks the value against the concept's datatype; on failure, the OpenMRS field and message.
fn observation_value(
    cfg: &Config,
    concept: &Concept,
    res: &Value,
) -> Result<(&'static str, Value), (&'static str, String)> {
    let present: Vec<&str> = res
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| k.starts_with("value") && !v.is_null())
                .map(|(k, _)| k.as_str())
                .collect()
        })
        .unwrap_or_default();
    let Some(&key) = present.first() else {
        return Err(("value", "Obs value is required".to_owned()));
    };
    let mismatch = || {
        let datatype = match &concept.datatype {
            Datatype::Numeric { .. } => "Numeric",
            Datatype::Coded { .. } => "Coded",
            Datatype::Text => "Text",
            Datatype::Boolean => "Boolean",
            Datatype::Datetime => "Datetime",
        };
        (
            "value",
            format!(
                "{key} does not fit concept {} of datatype {datatype}",
                concept.name
            ),
        )
    };
    let v = &res[key];
    match &concept.datatype {
        Datatype::Numeric {
            units,
            low,
            high,
            allow_decimal,
        } => {
            if key != "valueQuantity" {
                return Err(mismatch());
            }
            let Some(number) = v.get("value").and_then(Value::as_f64) else {
                return Err(("valueNumeric", "Obs value is required".to_owned()));
            };
            if !allow_decimal && number.fract() != 0.0 {
                return Err((
                    "valueNumeric",
                    format!(
                        "Concept {} does not allow decimal values: {number}",
                        concept.name
                    ),
                ));
            }
            let below = low.is_some_and(|l| number < l);
            let above = high.is_some_and(|h| number > h);
            if below || above {
                let bound = |b: &Option<f64>| b.map_or_else(|| "-".to_owned(), |b| b.to_string());
                return Err((
                    "valueNumeric",
                    format!(
                        "Value {number} is outside the range {}..{} {units} of concept {}",
                        bound(low),
                        bound(high),
                        concept.name
                    ),
                ));
            }
            // Units are not converted (nor even checked): the number is stored in the concept's unit.
            let mut q = Map::new();
            q.insert("value".into(), v["value"].clone());
            q.insert("unit".into(), units.clone().into());
            Ok(("valueQuantity", Value::Object(q)))
        }
        Datatype::Coded { answers } => {
            if key != "valueCodeableConcept" {
                return Err(mismatch());
            }
            let answer = cfg
                .resolve_concept(Some(v))
                .map(|c| c.uuid.clone())
                .or_else(|| {
                    // An answer uuid may not be among the configured concepts; a bare uuid still names it.
                    codings(Some(v))
                        .filter(|c| text(c, "system").is_none())
                        .filter_map(|c| text(c, "code"))
                        .find(|code| answers.iter().any(|a| a == code))
                        .map(str::to_owned)
                });
            let Some(answer) = answer else {
                return Err((
                    "valueCoded",
                    "Obs value is required (answer concept not found)".to_owned(),
                ));
            };
            if !answers.is_empty() && !answers.contains(&answer) {
                return Err((
                    "valueCoded",
                    format!(
                        "Concept {answer} is not an answer of concept {}",
                        concept.name
                    ),
                ));
            }
            let out = cfg
                .concept(&answer)
                .map(concept_codeable)
                .unwrap_or_else(|| json!({"coding": [{"code": answer}]}));
            Ok(("valueCodeableConcept", out))
        }
        Datatype::Text => match (key, v) {
            ("valueString", Value::String(_)) => Ok(("valueString", v.clone())),
            _ => Err(mismatch()),
        },
        Datatype::Boolean => match (key, v) {
            ("valueBoolean", Value::Bool(_)) => Ok(("valueBoolean", v.clone())),
            _ => Err(mismatch()),
        },
        Datatype::Datetime => match (key, v.as_str().and_then(fhir_period)) {
            ("valueDateTime", Some((t, _))) => Ok(("valueDateTime", datetime_text(t).into())),
            _ => Err(mismatch()),
        },
    }
}

fn concept_codeable(concept: &Concept) -> Value {
    let mut coding = vec![json!({"code": concept.uuid, "display": concept.name})];
    for (system, code) in &concept.mappings {
        coding.push(json!({"system": system, "code": code, "display": concept.name}));
    }
    json!({"coding": coding, "text": concept.name})
}

fn patient_reference(patient: &Record) -> Value {
    json!({
        "reference": format!("Patient/{}", patient.uuid),
        "type": "Patient",
        "display": patient.facts.display,
    })
}

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------

fn search(
    store: &Store,
    kind: Kind,
    req: &HttpRequest,
    base_url: &str,
) -> Result<HttpResponse, Reject> {
    let params = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| Reject::bad_request(format!("Invalid request: {e}")))?
        .into_inner();
    let known: &[&str] = match kind {
        Kind::Patient => &["_id", "identifier", "name", "given", "family", "gender"],
        Kind::Encounter => &["_id", "subject", "patient", "date", "type"],
        Kind::Observation => &["_id", "subject", "patient", "code", "date", "encounter"],
    };
    let mut criteria: Vec<(&str, &str)> = Vec::new();
    for (key, value) in &params {
        let name = key.split(':').next().unwrap_or(key);
        if known.contains(&name) {
            if name == "date" && value.split(',').any(|v| DateParam::parse(v).is_none()) {
                return Err(Reject::bad_request(format!(
                    "Invalid date/time format: \"{value}\""
                )));
            }
            criteria.push((name, value));
        } else if !name.starts_with('_') {
            return Err(Reject::bad_request(format!(
                "Invalid request: The FHIR endpoint on this server does not know how to handle GET operation[{}] with parameters [[{key}]]",
                kind.name()
            )));
        }
        // Other `_` parameters (_count, _format, _summary…) change nothing here.
    }
    let hits: Vec<&Record> = store
        .records
        .iter()
        .filter(|r| r.kind == kind && !r.voided)
        .filter(|r| {
            criteria.iter().all(|(name, value)| {
                value
                    .split(',')
                    .any(|alt| matches(&store.config, r, name, alt))
            })
        })
        .collect();
    let query = req.query_string();
    let self_url = if query.is_empty() {
        format!("{base_url}/{}", kind.name())
    } else {
        format!("{base_url}/{}?{query}", kind.name())
    };
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), "Bundle".into());
    bundle.insert("id".into(), new_uuid().into());
    bundle.insert("meta".into(), json!({ "lastUpdated": now_text() }));
    bundle.insert("type".into(), "searchset".into());
    bundle.insert("total".into(), hits.len().into());
    bundle.insert(
        "link".into(),
        json!([{"relation": "self", "url": self_url}]),
    );
    if !hits.is_empty() {
        let entries: Vec<Value> = hits
            .iter()
            .map(|r| {
                json!({
                    "fullUrl": format!("{base_url}/{}/{}", kind.name(), r.uuid),
                    "resource": r.resource,
                })
            })
            .collect();
        bundle.insert("entry".into(), entries.into());
    }
    Ok(fhir(StatusCode::OK, &Value::Object(bundle)))
}

fn matches(cfg: &Config, r: &Record, name: &str, value: &str) -> bool {
    let f = &r.facts;
    let last_segment = |v: &str| v.rsplit('/').next().unwrap_or(v).to_owned();
    let starts = |words: &[String]| {
        let v = value.to_lowercase();
        words.iter().any(|w| w.starts_with(&v))
    };
    match name {
        "_id" => r.uuid == value,
        // OpenMRS compares the token's system with the identifier type *name*, never a URL.
        "identifier" => match value.split_once('|') {
            Some((ty, v)) => f
                .identifiers
                .iter()
                .any(|i| i.type_name == ty && i.value == v),
            None => f.identifiers.iter().any(|i| i.value == value),
        },
        "name" => starts(&f.given) || starts(&f.family),
        "given" => starts(&f.given),
        "family" => starts(&f.family),
        "gender" => f.gender.as_deref() == Some(value),
        "subject" | "patient" => f.patient.as_deref() == Some(last_segment(value).as_str()),
        "encounter" => f.encounter.as_deref() == Some(last_segment(value).as_str()),
        "type" => f.type_code.as_deref() == value.rsplit('|').next(),
        "date" => DateParam::parse(value).is_some_and(|d| f.when.is_some_and(|t| d.contains(t))),
        "code" => {
            let Some(concept) = f.concept.as_deref().and_then(|u| cfg.concept(u)) else {
                return false;
            };
            match value.split_once('|') {
                Some((system, code)) if !system.is_empty() => cfg
                    .resolve_coding(Some(system), code)
                    .is_some_and(|c| c.uuid == concept.uuid),
                Some((_, code)) => {
                    concept.uuid == code || concept.mappings.iter().any(|(_, c)| c == code)
                }
                None => concept.uuid == value || concept.mappings.iter().any(|(_, c)| c == value),
            }
        }
        _ => false,
    }
}

/// A `date` search value: an optional comparator prefix and the period its precision covers.
struct DateParam {
    prefix: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl DateParam {
    fn parse(v: &str) -> Option<DateParam> {
        let (prefix, rest) = match v.get(..2) {
            Some(p) if p.chars().all(|c| c.is_ascii_alphabetic()) => (p, &v[2..]),
            _ => ("eq", v),
        };
        if !["eq", "ne", "gt", "ge", "lt", "le"].contains(&prefix) {
            return None;
        }
        let (start, end) = fhir_period(rest)?;
        Some(DateParam {
            prefix: prefix.to_owned(),
            start,
            end,
        })
    }

    fn contains(&self, t: DateTime<Utc>) -> bool {
        match self.prefix.as_str() {
            "ne" => t < self.start || t >= self.end,
            "gt" => t >= self.end,
            "ge" => t >= self.start,
            "lt" => t < self.start,
            "le" => t < self.end,
            _ => t >= self.start && t < self.end,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// How OpenMRS objects print themselves in validation messages.
fn object_label(class: &str, store: &Store, existing: Option<usize>) -> String {
    match existing.and_then(|i| store.records.get(i)) {
        Some(r) => format!("{class}#{}", r.number),
        None => format!("{class}#null"),
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], Reject> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(Reject::parse(key)),
    }
}

fn strings<'a>(v: &'a Value, key: &str) -> Result<Vec<&'a str>, Reject> {
    list(v, key)?
        .iter()
        .map(|s| s.as_str().ok_or_else(|| Reject::parse(key)))
        .collect()
}

fn codings(codeable: Option<&Value>) -> impl Iterator<Item = &Value> {
    codeable
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

enum Ref {
    Missing,
    /// `urn:uuid:` and other URNs, which FHIR2 cannot resolve (and crashes on).
    Urn,
    Id(String),
    Other,
}

/// Reads `Type/id` (relative or absolute, `_history` ignored) from a Reference.
fn reference(v: Option<&Value>, ty: &str) -> Ref {
    let Some(r) = v.and_then(|v| text(v, "reference")) else {
        return Ref::Missing;
    };
    if r.starts_with("urn:") {
        return Ref::Urn;
    }
    let r = r.split("/_history/").next().unwrap_or(r);
    let parts: Vec<&str> = r.split('/').collect();
    match parts.as_slice() {
        [.., t, id] if *t == ty && !id.is_empty() => Ref::Id((*id).to_owned()),
        _ => Ref::Other,
    }
}

fn datetime_at(
    v: Option<&Value>,
    key: &str,
    element: &str,
) -> Result<Option<DateTime<Utc>>, Reject> {
    match v.and_then(|v| field(v, key)) {
        None => Ok(None),
        Some(Value::String(s)) => fhir_period(s)
            .map(|(t, _)| Some(t))
            .ok_or_else(|| Reject::parse(element)),
        Some(_) => Err(Reject::parse(element)),
    }
}

/// The period a FHIR date or dateTime covers at its precision (the server's zone is UTC).
fn fhir_period(s: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    let (start, end) = match s.len() {
        4 if digits(s) => {
            let year: i32 = s.parse().ok()?;
            (
                NaiveDate::from_ymd_opt(year, 1, 1)?,
                NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
            )
        }
        7 if s.is_ascii() && digits(&s[..4]) && s.as_bytes()[4] == b'-' && digits(&s[5..]) => {
            let start = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok()?;
            (start, start.checked_add_months(Months::new(1))?)
        }
        10 if s.is_ascii() && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' => {
            let start = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            (start, start.succ_opt()?)
        }
        _ => {
            if !s.contains('T') {
                return None;
            }
            let t = DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                        .ok()
                        .map(|n| n.and_utc())
                })?;
            return Some((t, t + TimeDelta::seconds(1)));
        }
    };
    Some((midnight(start)?, midnight(end)?))
}

fn datetime_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, false)
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let _ = write!(out, "{:02x}", rng.gen::<u8>());
    }
    out
}

fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut h = String::with_capacity(32);
    for x in b {
        let _ = write!(h, "{x:02x}");
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::blocking::Client;
    use reqwest::Method;

    const NATIONAL: &str = "http://example.org/national-id";
    const CLINIC: &str = "44c3efb0-2583-4c80-a79e-1f756a03c0a1";
    const VISIT_NOTE: &str = "d7151f82-c1f3-4152-a605-2f9ea7414a79";
    const FACILITY_VISIT: &str = "7b0f5697-27e3-40c4-8bae-f4049abfb4ed";

    struct Reply {
        status: u16,
        json: Value,
        text: String,
        headers: reqwest::header::HeaderMap,
    }

    struct Api {
        http: Client,
        base: String,
    }

    impl Api {
        fn new(om: &OpenMrs) -> Api {
            Api::with_timeout(om, Duration::from_secs(10))
        }

        fn with_timeout(om: &OpenMrs, timeout: Duration) -> Api {
            Api {
                http: Client::builder().timeout(timeout).build().unwrap(),
                base: om.base(),
            }
        }

        fn try_send(
            &self,
            method: Method,
            path: &str,
            body: Option<&Value>,
        ) -> reqwest::Result<Reply> {
            let mut rb = self
                .http
                .request(method, format!("{}/{path}", self.base))
                .basic_auth("admin", Some("Admin123"));
            if let Some(b) = body {
                rb = rb
                    .header("Content-Type", "application/fhir+json")
                    .body(b.to_string());
            }
            let resp = rb.send()?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text()?;
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            Ok(Reply {
                status,
                json,
                text,
                headers,
            })
        }

        fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
            self.try_send(method, path, body).unwrap()
        }

        fn post(&self, path: &str, body: &Value) -> Reply {
            self.send(Method::POST, path, Some(body))
        }

        fn get(&self, path: &str) -> Reply {
            self.send(Method::GET, path, None)
        }

        /// Creates a patient and returns its server uuid.
        fn patient(&self, national_id: &str) -> String {
            let r = self.post("Patient", &patient(national_id));
            assert_eq!(r.status, 201, "{}", r.text);
            r.json["id"].as_str().unwrap().to_owned()
        }
    }

    fn location_ext(uuid: &str) -> Value {
        json!([{"url": IDENTIFIER_LOCATION_EXT, "valueReference": {"reference": format!("Location/{uuid}")}}])
    }

    fn patient(national_id: &str) -> Value {
        json!({
            "resourceType": "Patient",
            "id": "client-chosen-id",
            "identifier": [{"use": "official", "system": NATIONAL, "value": national_id, "extension": location_ext(CLINIC)}],
            "name": [{"family": "Otieno", "given": ["Amina"]}],
            "gender": "female",
            "birthDate": "1990-04-12"
        })
    }

    fn encounter(patient: &str) -> Value {
        json!({
            "resourceType": "Encounter",
            "status": "finished",
            "type": [{"coding": [{"system": ENCOUNTER_TYPE_SYSTEM, "code": VISIT_NOTE}]}],
            "subject": {"reference": format!("Patient/{patient}")},
            "period": {"start": "2024-03-01T09:30:00+03:00"},
            "location": [{"location": {"reference": format!("Location/{CLINIC}")}}]
        })
    }

    fn observation(patient: &str, system: Option<&str>, code: &str, value: Value) -> Value {
        let mut coding = json!({"code": code});
        if let Some(s) = system {
            coding["system"] = s.into();
        }
        json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [coding]},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": "2024-03-01T09:45:00+03:00",
            "valueQuantity": value
        })
    }

    fn weight(kg: f64) -> Value {
        json!({"value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"})
    }

    #[test]
    fn auth_is_basic_with_an_html_401_and_a_reusable_session() {
        let mut config = Config::demo();
        config.users.push(("clerk".into(), "pa:ss".into()));
        let om = OpenMrs::start(config).unwrap();
        let http = Client::new();
        let url = format!("{}/Patient", om.base());

        let r = http.get(&url).send().unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"OpenMRS\"");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(r.text().unwrap().contains("<html"));

        // The password is right, but OpenMRS splits "clerk:pa:ss" into three parts.
        let r = http
            .get(&url)
            .basic_auth("clerk", Some("pa:ss"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = http
            .get(&url)
            .basic_auth("admin", Some("wrong"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);

        let r = http.get(format!("{}/metadata", om.base())).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.json::<Value>().unwrap()["resourceType"],
            "CapabilityStatement"
        );

        let r = http
            .get(&url)
            .basic_auth("admin", Some("Admin123"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.starts_with("JSESSIONID=") && cookie.contains("Path=/openmrs"));
        let session = cookie.split(';').next().unwrap().to_owned();
        let r = http.get(&url).header("Cookie", &session).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let r = http
            .get(&url)
            .header("Cookie", "JSESSIONID=made-up")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);

        let log = om.requests();
        assert_eq!(log.len(), 7);
        assert!(!log[0].authorized && log[0].status == 401 && log[0].path.ends_with("/Patient"));
        assert!(log[5].authorized && log[5].status == 200);
    }

    #[test]
    fn patient_create_then_duplicate_identifier_and_search_by_type_name() {
        let om = OpenMrs::start(Config::demo()).unwrap();
        let api = Api::new(&om);
        let r = api.post("Patient", &patient("NAT-1001"));
        assert_eq!(r.status, 201, "{}", r.text);
        let id = r.json["id"].as_str().unwrap().to_owned();
        assert_ne!(id, "client-chosen-id");
        assert_eq!(id.len(), 36);
        let location = r.headers["location"].to_str().unwrap();
        assert_eq!(location, format!("{}/Patient/{id}", om.base()));
        let ident = &r.json["identifier"][0];
        assert_eq!(ident["type"]["text"], "National ID");
        assert_eq!(ident["extension"][0]["url"], IDENTIFIER_LOCATION_EXT);
        assert_eq!(
            ident["extension"][0]["valueReference"]["reference"],
            format!("Location/{CLINIC}")
        );
        assert!(r.json["meta"]["lastUpdated"].is_string());
        assert_eq!(om.patients(), vec![r.json.clone()]);

        let r = api.post("Patient", &patient("NAT-1001"));
        assert_eq!(r.status, 422);
        let diag = r.json["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            diag.starts_with("'Patient#null' failed to validate with reason: "),
            "{diag}"
        );
        assert!(diag.contains("already in use"), "{diag}");
        assert_eq!(om.patients().len(), 1);

        let total = |q: &str| {
            api.get(&format!("Patient?{q}")).json["total"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(total("identifier=NAT-1001"), 1);
        assert_eq!(total("identifier=National%20ID%7CNAT-1001"), 1);
        assert_eq!(total(&format!("identifier={NATIONAL}%7CNAT-1001")), 0);
        assert_eq!(total("identifier=NAT-9999"), 0);
        let found = api.get("Patient?identifier=NAT-1001");
        assert_eq!(found.json["type"], "searchset");
        assert_eq!(found.json["entry"][0]["resource"]["id"], id.as_str());
        assert_eq!(api.get("Patient?unknownParam=1").status, 400);
    }

    #[test]
    fn unmapped_identifiers_are_dropped_silently() {
        let om = OpenMrs::start(Config::demo()).unwrap();
        let api = Api::new(&om);
        let mut p = patient("NAT-2001");
        p["identifier"].as_array_mut().unwrap().push(json!({
            "system": "http://example.org/unregistered", "value": "X-1", "extension": location_ext(CLINIC)
        }));
        // Several identifiers are sent but only one survives, so no second `official` is needed.
        let r = api.post("Patient", &p);
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["identifier"].as_array().unwrap().len(), 1);

        let mut p = patient("NAT-2002");
        p["identifier"][0]["system"] = "https://example.org/national-id".into();
        let r = api.post("Patient", &p);
        assert_eq!(r.status, 422);
        assert!(
            r.text.contains("Select a preferred identifier"),
            "{}",
            r.text
        );

        // Two mapped identifiers and none marked official.
        let mut p = patient("NAT-2003");
        p["identifier"][0]["use"] = "usual".into();
        p["identifier"].as_array_mut().unwrap().push(json!({
            "type": {"text": "OpenMRS ID"}, "value": "10001V", "extension": location_ext(CLINIC)
        }));
        assert_eq!(api.post("Patient", &p).status, 422);

        let mut p = patient("NAT-2004");
        p["identifier"][0]["extension"] = json!([]);
        let r = api.post("Patient", &p);
        assert_eq!(r.status, 422);
        assert!(
            r.text.contains("Identifier Location cannot be null"),
            "{}",
            r.text
        );
        assert_eq!(om.patients().len(), 1);
    }

    #[test]
    fn openmrs_id_needs_a_luhn_mod30_check_character() {
        assert_eq!(with_luhn_mod30_check("10000").as_deref(), Some("10000X"));
        assert_eq!(with_luhn_mod30_check("10001").as_deref(), Some("10001V"));
        assert!(luhn_mod30_valid("10001V"));
        assert!(!luhn_mod30_valid("10001W"));
        assert!(!luhn_mod30_valid("V"));

        let om = OpenMrs::start(Config::demo()).unwrap();
        let api = Api::new(&om);
        let with_openmrs_id = |value: &str| {
            let mut p = patient("unused");
            p["identifier"] = json!([{"type": {"text": "OpenMRS ID"}, "value": value, "extension": location_ext(CLINIC)}]);
            p
        };
        let r = api.post("Patient", &with_openmrs_id("10001W"));
        assert_eq!(r.status, 422);
        assert!(r.text.contains("check digit"), "{}", r.text);
        let r = api.post("Patient", &with_openmrs_id("10001V"));
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["identifier"][0]["type"]["text"], "OpenMRS ID");
        let r = api.get("Patient?identifier=OpenMRS%20ID%7C10001V");
        assert_eq!(r.json["total"], 1);
    }

    #[test]
    fn patient_demographics_are_validated() {
        let om = OpenMrs::start(Config::demo()).unwrap();
        let api = Api::new(&om);
        let cases: Vec<(&str, Value)> = vec![
            ("gender", Value::Null),
            ("birthDate", "2999-01-01".into()),
            ("birthDate", "1850-01-01".into()),
            ("deceasedBoolean", true.into()),
            ("name", json!([{"family": "Otieno"}])),
        ];
        for (i, (key, value)) in cases.into_iter().enumerate() {
            let mut p = patient(&format!("NAT-3{i}"));
            if value.is_null() {
                p.as_object_mut().unwrap().remove(key);
            } else {
                p[key] = value;
            }
            let r = api.post("Patient", &p);
            assert_eq!(r.status, 422, "{key}: {}", r.text);
        }
        let mut p = patient("NAT-39");
        p["birthDate"] = "1990-13-45".into();
        assert_eq!(api.post("Patient", &p).status, 400);
        assert!(om.patients().is_empty());
    }

    #[test]
    fn encounter_type_rules_and_silent_location_drop() {
        let om = OpenMrs::start(Config::demo()).unwrap();
        let api = Api::new(&om);
        let pid = api.patient("NAT-4001");

        let mut e = encounter(&pid);
        e["type"] =
            json!([{"coding": [{"system": "http://example.org/other", "code": VISIT_NOTE}]}]);
        let r = api.post("Encounter", &e);
        assert_eq!(r.status, 400);
        assert!(r.text.contains("Invalid type of request"));

        e["type"] = json!([
            {"coding": [{"system": ENCOUNTER_TYPE_SYSTEM, "code": VISIT_NOTE}]},
            {"coding": [{"system": VISIT_TYPE_SYSTEM, "code": FACILITY_VISIT}]}
        ]);
        assert_eq!(api.post("Encounter", &e).status, 400);

        e["type"] =
            json!([{"coding": [{"system": ENCOUNTER_TYPE_SYSTEM, "code": "no-such-type"}]}]);
        assert_eq!(api.post("Encounter", &e).status, 422);

        let mut e = encounter("00000000-0000-4000-8000-000000000000");
        assert_eq!(api.post("Encounter", &e).status, 422);
        e["subject"]["reference"] = "urn:uuid:5f0c6a9e-0000-4000-8000-000000000001".into();
        assert_eq!(api.post("Encounter", &e).status, 500);

        let mut e = encounter(&pid);
        e["period"]["start"] = "2999-01-01T00:00:00Z".into();
        assert_eq!(api.post("Encounter", &e).status, 422);

        let mut e = encounter(&pid);
        e["location"][0]["location"]["reference"] = "Location/not-a-known-location".into();
        let r = api.post("Encounter", &e);
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(r.json.get("location").is_none());
        assert_eq!(r.json["subject"]["reference"], format!("Patient/{pid}"));
        assert!(om.encounters()[0].get("location").is_none());

        let r = api.post("Encounter", &encounter(&pid));
        assert_eq!(r.status, 201);
        assert_eq!(
            r.json["location"][0]["location"]["reference"],
            format!("Location/{CLINIC}")
        );

        let mut v = encounter(&pid);
        v["type"] = json!([{"coding": [{"system": VISIT_TYPE_SYSTEM, "code": FACILITY_VISIT}]}]);
        let r = api.post("Encounter", &v);
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["type"][0]["coding"][0]["system"], VISIT_TYPE_SYSTEM);
        assert_eq!(om.encounters().len(), 3);

        // Recovery searches: by subject and by the encounter's (UTC) day.
        let total = |q: &str| {
            api.get(&format!("Encounter?{q}")).json["total"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(total(&format!("subject=Patient/{pid}")), 3);
        assert_eq!(total(&format!("patient={pid}&date=2024-03-01")), 3);
        assert_eq!(total(&format!("patient={pid}&date=2024-03-02")), 0);
        assert_eq!(
            total(&format!("patient={pid}&date=ge2024-02-01&date=lt2024-04")),
            3
        );
        assert_eq!(api.get("Encounter?date=2024-99").status, 400);
    }

    #[test]
    fn observation_concepts_resolve_only_through_registered_sources() {
        let om = OpenMrs::start(Config::demo()).unwrap();
        let api = Api::new(&om);
        let pid = api.patient("NAT-5001");
        let eid = api.post("Encounter", &encounter(&pid)).json["id"]
            .as_str()
            .unwrap()
            .to_owned();

        let mut o = observation(&pid, Some("http://loinc.org"), "29463-7", weight(72.5));
        o["encounter"] = json!({"reference": format!("Encounter/{eid}")});
        let r = api.post("Observation", &o);
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["code"]["coding"][0]["code"], ciel_uuid("5089"));
        assert_eq!(r.json["encounter"]["reference"], format!("Encounter/{eid}"));
        assert_eq!(r.json["valueQuantity"]["unit"], "kg");

        let r = api.post(
            "Observation",
            &observation(
                &pid,
                Some("https://cielterminology.org"),
                "5089",
                weight(70.0),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        let r = api.post(
            "Observation",
            &observation(&pid, None, &ciel_uuid("5089"), weight(71.0)),
        );
        assert_eq!(r.status, 201, "{}", r.text);

        // The module's default CIEL URL is not registered on the demo server.
        let ocl = "https://openconceptlab.org/orgs/CIEL/sources/CIEL";
        let r = api.post(
            "Observation",
            &observation(&pid, Some(ocl), "5089", weight(70.0)),
        );
        assert_eq!(r.status, 422);
        assert!(
            r.text.contains("failed to validate with reason: concept"),
            "{}",
            r.text
        );
        let r = api.post(
            "Observation",
            &observation(&pid, Some("http://loinc.org/"), "29463-7", weight(70.0)),
        );
        assert_eq!(r.status, 422);

        // Units are not converted: 72 500 g is simply out of range.
        let r = api.post(
            "Observation",
            &observation(
                &pid,
                Some("http://loinc.org"),
                "29463-7",
                json!({"value": 72500, "unit": "g"}),
            ),
        );
        assert_eq!(r.status, 422);
        let r = api.post(
            "Observation",
            &observation(
                &pid,
                Some("http://loinc.org"),
                "8480-6",
                json!({"value": 120.5, "unit": "mmHg"}),
            ),
        );
        assert_eq!(r.status, 422);
        assert!(r.text.contains("decimal"), "{}", r.text);
        let mut text_obs = observation(
            &pid,
            Some("https://cielterminology.org"),
            "160220",
            Value::Null,
        );
        text_obs.as_object_mut().unwrap().remove("valueQuantity");
        assert_eq!(api.post("Observation", &text_obs).status, 422);
        text_obs["valueString"] = "Headache".into();
        assert_eq!(api.post("Observation", &text_obs).status, 201);

        let mut o = observation(&pid, Some("http://loinc.org"), "29463-7", weight(70.0));
        o.as_object_mut().unwrap().remove("status");
        assert_eq!(api.post("Observation", &o).status, 500);
        let mut o = observation(&pid, Some("http://loinc.org"), "29463-7", weight(70.0));
        o.as_object_mut().unwrap().remove("effectiveDateTime");
        assert_eq!(api.post("Observation", &o).status, 422);
        o["effectivePeriod"] = json!({"start": "2024-03-01T09:45:00Z"});
        assert_eq!(api.post("Observation", &o).status, 500);
        let mut o = observation(&pid, Some("http://loinc.org"), "29463-7", weight(70.0));
        o["subject"]["reference"] = "urn:uuid:5f0c6a9e-0000-4000-8000-000000000001".into();
        assert_eq!(api.post("Observation", &o).status, 500);

        assert_eq!(om.observations().len(), 4);
        let total = |q: &str| {
            api.get(&format!("Observation?{q}")).json["total"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(total(&format!("subject=Patient/{pid}")), 4);
        assert_eq!(
            total(&format!("patient={pid}&code=http://loinc.org%7C29463-7")),
            3
        );
        assert_eq!(
            total(&format!("patient={pid}&code=160220&date=2024-03-01")),
            1
        );
        assert_eq!(total(&format!("encounter=Encounter/{eid}")), 1);
    }

    #[test]
    fn no_idempotency_bundles_and_crud() {
        let om = OpenMrs::start(Config::demo()).unwrap();
        let api = Api::new(&om);
        let pid = api.patient("NAT-6001");

        let e = encounter(&pid);
        let first = api.send(Method::POST, "Encounter", Some(&e));
        let second = api
            .http
            .post(format!("{}/Encounter", api.base))
            .basic_auth("admin", Some("Admin123"))
            .header("If-None-Exist", format!("patient={pid}"))
            .body(e.to_string())
            .send()
            .unwrap();
        assert_eq!(first.status, 201);
        assert_eq!(second.status().as_u16(), 201);
        assert_eq!(om.encounters().len(), 2);
        let o = observation(&pid, Some("http://loinc.org"), "29463-7", weight(70.0));
        assert_eq!(api.post("Observation", &o).status, 201);
        assert_eq!(api.post("Observation", &o).status, 201);
        assert_eq!(om.observations().len(), 2);

        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
        assert_eq!(api.post("", &bundle).status, 400);

        let mut p = patient("NAT-6001");
        p["id"] = "00000000-0000-4000-8000-000000000000".into();
        assert_eq!(
            api.send(
                Method::PUT,
                "Patient/00000000-0000-4000-8000-000000000000",
                Some(&p)
            )
            .status,
            404
        );
        p["id"] = pid.clone().into();
        p["name"][0]["given"] = json!(["Halima"]);
        let r = api.send(Method::PUT, &format!("Patient/{pid}"), Some(&p));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            api.get(&format!("Patient/{pid}")).json["name"][0]["given"][0],
            "Halima"
        );
        p["birthDate"] = "2999-01-01".into();
        assert_eq!(
            api.send(Method::PUT, &format!("Patient/{pid}"), Some(&p))
                .status,
            422
        );

        let eid = first.json["id"].as_str().unwrap();
        assert_eq!(
            api.send(Method::DELETE, &format!("Encounter/{eid}"), None)
                .status,
            200
        );
        assert_eq!(api.get(&format!("Encounter/{eid}")).status, 410);
        assert_eq!(api.get("Encounter/unknown-id").status, 404);
        assert_eq!(om.encounters().len(), 1);
        assert_eq!(
            api.get("Location/44c3efb0-2583-4c80-a79e-1f756a03c0a1")
                .json["name"],
            "Outpatient Clinic"
        );
        assert_eq!(api.get("Practitioner").status, 404);
    }

    #[test]
    fn injected_failures_commit_nothing_and_hangs_commit_anyway() {
        let om = OpenMrs::start(Config::demo()).unwrap();
        let api = Api::new(&om);
        let pid = api.patient("NAT-7001");
        let o = observation(&pid, Some("http://loinc.org"), "29463-7", weight(70.0));

        om.faults.fail_next(1, 500);
        assert_eq!(api.post("Observation", &o).status, 500);
        om.faults.fail_next_retry_after(1, 503, 7);
        let r = api.post("Observation", &o);
        assert_eq!(r.status, 503);
        assert_eq!(r.headers["retry-after"], "7");
        assert!(om.observations().is_empty());
        // Reads are never failed.
        om.faults.fail_next(1, 500);
        assert_eq!(api.get(&format!("Patient/{pid}")).status, 200);
        om.faults.clear();

        om.faults.commit_then_hang(1, Duration::from_secs(3));
        let impatient = Api::with_timeout(&om, Duration::from_millis(400));
        let err = impatient
            .try_send(Method::POST, "Observation", Some(&o))
            .err()
            .unwrap();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(om.observations().len(), 1);
        // A search finds what the timed-out POST created.
        let r = api.get(&format!("Observation?subject=Patient/{pid}"));
        assert_eq!(r.json["total"], 1);
        assert_eq!(api.post("Observation", &o).status, 201);
    }

    #[test]
    fn going_down_refuses_connections_and_resume_keeps_the_data() {
        let mut om = OpenMrs::start(Config::demo()).unwrap();
        let port = om.port();
        let api = Api::new(&om);
        let pid = api.patient("NAT-8001");
        om.go_down();
        let fresh = Api::new(&om);
        let err = fresh.try_send(Method::GET, "metadata", None).err().unwrap();
        assert!(err.is_connect(), "{err}");
        om.resume().unwrap();
        assert_eq!(om.port(), port);
        let fresh = Api::new(&om);
        assert_eq!(fresh.get(&format!("Patient/{pid}")).status, 200);
        assert!(om.base().ends_with(&format!(":{port}{BASE_PATH}")));
    }
}
