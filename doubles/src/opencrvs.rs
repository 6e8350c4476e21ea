//! The OpenCRVS double: civil registration in its three integration modes, as described in
//! `../shared/contracts/opencrvs.md`.
//!
//! One server plays both the auth service and the gateway. What a client must survive is kept on
//! purpose: credentials are read from the query string only, tokens expire, the legacy
//! `/notification` answers 500 for what is really a rejection and has no idempotency (every POST
//! is a new record), while the events API is idempotent on `transactionId` and answers 400 with a
//! list of field issues.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::faults::{Decision, Faults};
use crate::server::{Configure, Served};

const DOC_TYPES: &str = "http://opencrvs.org/doc-types";
const CLASSES: &str = "http://opencrvs.org/specs/classes";
const SECTIONS: &str = "http://opencrvs.org/specs/sections";
const TASK_TYPES: &str = "http://opencrvs.org/specs/types";
const REG_LAST_OFFICE: &str = "http://opencrvs.org/specs/extension/regLastOffice";
const IDENTIFIER_TYPE: &str = "http://opencrvs.org/specs/identifier-type";
const LOCATION_TYPE: &str = "http://opencrvs.org/specs/location-type";
const LOINC: &str = "http://loinc.org";
const BIRTH_WEIGHT: &str = "3141-9";
const BIRTH_TRACKING: &str = "http://opencrvs.org/specs/id/birth-tracking-id";
const DEATH_TRACKING: &str = "http://opencrvs.org/specs/id/death-tracking-id";

const BIRTH_SECTIONS: &[&str] = &[
    "child-details",
    "mother-details",
    "father-details",
    "informant-details",
    "birth-encounter",
];
const DEATH_SECTIONS: &[&str] = &[
    "deceased-details",
    "informant-details",
    "spouse-details",
    "death-encounter",
];
/// After the Composition and the Task (QuestionnaireResponse is accepted from 1.6.1).
const ALLOWED_AFTER: &[&str] = &[
    "Patient",
    "RelatedPerson",
    "Encounter",
    "Observation",
    "QuestionnaireResponse",
];
const EVENT_TYPES: &[&str] = &["birth", "death"];
const SEMANTIC_PREFIX: &str = "Could not process the Event Notification, ";
const INPUT_FAILED: &str = "Input validation failed";
const BAD_LOCATION: &str = "createdAtLocation is required and must be a valid office id";

/// Which OpenCRVS generation the double plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// v1.3–1.9: FHIR event notification at `POST /notification`.
    Legacy,
    /// v1.9: events API, notify at `POST /events/events/notifications`.
    EventsV19,
    /// v2.0: events API, notify at `POST /events/events/{id}/notify` and one-call
    /// `POST /events/events/notify`; `/notification` is gone.
    EventsV20,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "legacy-notification" => Some(Mode::Legacy),
            "events-v1.9" => Some(Mode::EventsV19),
            "events-v2.0" => Some(Mode::EventsV20),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Legacy => "legacy-notification",
            Mode::EventsV19 => "events-v1.9",
            Mode::EventsV20 => "events-v2.0",
        }
    }

    fn default_scopes(self) -> Vec<String> {
        let scopes: &[&str] = match self {
            Mode::Legacy => &["notification-api", "declare"],
            Mode::EventsV19 | Mode::EventsV20 => &[
                "record.create[event=birth|death]",
                "record.notify[event=birth|death]",
            ],
        };
        scopes.iter().map(|s| s.to_string()).collect()
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl: Duration,
    /// Scopes put in every token instead of the mode's defaults (empty: a client registered
    /// without scopes, which gets 403 on the events API).
    pub scopes_override: Option<Vec<String>>,
    /// ISO 3166 alpha-3 code of the country this deployment serves ("FAR" for Farajaland).
    pub country: String,
    /// Admin-area ids of the states.
    pub states: Vec<String>,
    /// Admin-area ids of the districts, with their parent state id.
    pub districts: Vec<(String, String)>,
    /// CRVS office location ids.
    pub offices: Vec<String>,
    /// Health facility location ids.
    pub facilities: Vec<String>,
    /// Declaration field ids of the birth event (events modes).
    pub birth_fields: Vec<String>,
    /// Declaration field ids of the death event (events modes).
    pub death_fields: Vec<String>,
}

impl Config {
    /// The Farajaland-like demo deployment every test and the CLI start from.
    pub fn demo(mode: Mode) -> Config {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Config {
            mode,
            client_id: "kiunga-health".into(),
            client_secret: "demo-secret".into(),
            token_ttl: Duration::from_secs(600),
            scopes_override: None,
            country: "FAR".into(),
            states: strings(&["state-central"]),
            districts: vec![("district-ibombo".into(), "state-central".into())],
            offices: strings(&["office-ibombo"]),
            facilities: strings(&["facility-ibombo-hc"]),
            birth_fields: strings(&[
                "child.name",
                "child.dob",
                "child.gender",
                "child.placeOfBirth",
                "child.birthLocation",
                "child.weightAtBirth",
                "mother.name",
                "mother.dob",
                "mother.nid",
                "informant.relation",
            ]),
            death_fields: strings(&[
                "deceased.name",
                "deceased.dob",
                "deceased.gender",
                "deceased.nid",
                "eventDetails.date",
                "eventDetails.placeOfDeath",
                "eventDetails.deathLocation",
                "eventDetails.mannerOfDeath",
                "eventDetails.causeOfDeathEstablished",
                "eventDetails.causeOfDeath",
            ]),
        }
    }

    fn scopes(&self) -> Vec<String> {
        self.scopes_override
            .clone()
            .unwrap_or_else(|| self.mode.default_scopes())
    }

    fn fields(&self, event: &str) -> &[String] {
        if event == "death" {
            &self.death_fields
        } else {
            &self.birth_fields
        }
    }

    fn is_location(&self, id: &str) -> bool {
        self.offices.iter().chain(&self.facilities).any(|l| l == id)
    }
}

/// A record OpenCRVS holds after a notification.
#[derive(Clone, Debug)]
pub struct Notified {
    /// "birth" or "death".
    pub event: String,
    pub tracking_id: String,
    /// Events modes only: the transaction id of the NOTIFY.
    pub transaction_id: Option<String>,
    /// Legacy: the saved Bundle; events: the declaration.
    pub body: Value,
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
}

struct Token {
    expires: Instant,
    scopes: Vec<String>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Token>,
    tokens_issued: usize,
    notified: Vec<Notified>,
    requests: Vec<Logged>,
    events: HashMap<String, Value>,
    /// (transactionId, type) of `POST /events/events` → event id.
    created: HashMap<(String, String), String>,
    /// transactionId of the one-call notify → event id.
    one_call: HashMap<String, String>,
    /// Keys of the births recorded through `/notification`, for the duplicate heuristic.
    births_seen: HashSet<String>,
    tracking_ids: HashSet<String>,
}

impl State {
    fn new_tracking_id(&mut self, event: &str) -> String {
        const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
        let prefix = if event == "death" { 'D' } else { 'B' };
        let mut rng = rand::thread_rng();
        loop {
            let id: String = std::iter::once(prefix)
                .chain((0..6).map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())])))
                .collect();
            if self.tracking_ids.insert(id.clone()) {
                return id;
            }
        }
    }

    fn new_event(&mut self, client_id: &str, event_type: &str, transaction_id: &str) -> Value {
        let now = now();
        let tracking_id = self.new_tracking_id(event_type);
        json!({
            "id": uuid(),
            "type": event_type,
            "trackingId": tracking_id,
            "createdAt": now,
            "updatedAt": now,
            "actions": [{
                "id": uuid(),
                "type": "CREATE",
                "status": "Accepted",
                "createdAt": now,
                "createdBy": client_id,
                "createdByRole": "HEALTH",
                "createdAtLocation": null,
                "transactionId": transaction_id,
                "declaration": {},
                "annotation": {}
            }]
        })
    }

    /// Appends a NOTIFY action unless one with this transaction id is already there, and records
    /// the notification.
    fn notify(&mut self, client_id: &str, event_id: &str, input: &Notify) -> Early<Value> {
        let Some(event) = self.events.get_mut(event_id) else {
            return Err(Box::new(message(StatusCode::NOT_FOUND, "Event not found")));
        };
        let already = event
            .get("actions")
            .and_then(Value::as_array)
            .is_some_and(|actions| {
                actions.iter().any(|a| {
                    a.get("type").and_then(Value::as_str) == Some("NOTIFY")
                        && a.get("transactionId").and_then(Value::as_str)
                            == Some(input.transaction_id.as_str())
                })
            });
        if already {
            return Ok(event.clone());
        }
        let now = now();
        let action = json!({
            "id": uuid(),
            "type": "NOTIFY",
            "status": "Accepted",
            "createdAt": now,
            "createdBy": client_id,
            "createdByRole": "HEALTH",
            "createdAtLocation": input.location,
            "transactionId": input.transaction_id,
            "declaration": input.declaration,
            "annotation": input.annotation,
        });
        if let Some(actions) = event.get_mut("actions").and_then(Value::as_array_mut) {
            actions.push(action);
        }
        event["updatedAt"] = json!(now);
        let saved = event.clone();
        self.notified.push(Notified {
            event: str_of(&saved, "type").unwrap_or_default().to_string(),
            tracking_id: str_of(&saved, "trackingId").unwrap_or_default().to_string(),
            transaction_id: Some(input.transaction_id.clone()),
            body: Value::Object(input.declaration.clone()),
        });
        Ok(saved)
    }
}

/// A handler's early answer (boxed: an `HttpResponse` is large).
type Early<T> = Result<T, Box<HttpResponse>>;

struct Shared {
    config: Config,
    faults: Faults,
    state: Mutex<State>,
}

/// A running OpenCRVS double.
pub struct OpenCrvs {
    pub faults: Faults,
    served: Served,
    shared: Arc<Shared>,
}

impl OpenCrvs {
    pub fn start(config: Config) -> std::io::Result<OpenCrvs> {
        Self::start_on(0, config)
    }

    pub fn start_on(port: u16, config: Config) -> std::io::Result<OpenCrvs> {
        let faults = Faults::default();
        let shared = Arc::new(Shared {
            config,
            faults: faults.clone(),
            state: Mutex::new(State::default()),
        });
        let data = web::Data::from(shared.clone());
        let configure: Configure = Arc::new(move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(data.clone())
                // Bundles with QuestionnaireResponses outgrow the 256 KiB default.
                .app_data(web::PayloadConfig::new(16 << 20))
                .default_service(web::to(dispatch));
        });
        let served = Served::start(port, configure)?;
        Ok(OpenCrvs {
            faults,
            served,
            shared,
        })
    }

    pub fn gateway_url(&self) -> String {
        self.served.base()
    }

    /// Where the client posts `{auth}/token`: the auth service up to v1.9, the gateway's
    /// `/auth` from v2.0.
    pub fn auth_url(&self) -> String {
        match self.shared.config.mode {
            Mode::EventsV20 => format!("{}/auth", self.served.base()),
            Mode::Legacy | Mode::EventsV19 => self.served.base(),
        }
    }

    pub fn port(&self) -> u16 {
        self.served.port
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Refuses connections until [`OpenCrvs::resume`]; records and tokens are kept.
    pub fn go_down(&mut self) {
        self.served.go_down()
    }

    pub fn resume(&mut self) -> std::io::Result<()> {
        self.served.resume()
    }

    /// Every token issued so far becomes invalid (401), as after a key rotation.
    pub fn expire_tokens(&self) {
        self.shared.lock().tokens.clear()
    }

    /// Every record created, in order (legacy: each accepted POST; events: each NOTIFY).
    pub fn notifications(&self) -> Vec<Notified> {
        self.shared.lock().notified.clone()
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.shared.lock().requests.clone()
    }

    pub fn tokens_issued(&self) -> usize {
        self.shared.lock().tokens_issued
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Token,
    Locations,
    Notification,
    EventsConfig,
    GetEvent(String),
    Create,
    NotifyV19,
    NotifyOn(String),
    NotifyOneCall,
    Missing,
}

impl Route {
    fn of(mode: Mode, method: &Method, path: &str) -> Route {
        let get = method == Method::GET;
        let post = method == Method::POST;
        let events = mode != Mode::Legacy;
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        match segments.as_slice() {
            ["token"] | ["auth", "token"] if post => Route::Token,
            ["location"] if get => Route::Locations,
            ["notification"] if post && mode != Mode::EventsV20 => Route::Notification,
            ["events", "config"] if get && events => Route::EventsConfig,
            ["events", "events"] if post && events => Route::Create,
            ["events", "events", "notifications"] if post && mode == Mode::EventsV19 => {
                Route::NotifyV19
            }
            ["events", "events", "notify"] if post && mode == Mode::EventsV20 => {
                Route::NotifyOneCall
            }
            ["events", "events", id, "notify"] if post && mode == Mode::EventsV20 => {
                Route::NotifyOn(id.to_string())
            }
            ["events", "events", id] if get && events => Route::GetEvent(id.to_string()),
            _ => Route::Missing,
        }
    }

    fn writes(&self) -> bool {
        matches!(
            self,
            Route::Notification
                | Route::Create
                | Route::NotifyV19
                | Route::NotifyOn(_)
                | Route::NotifyOneCall
        )
    }
}

async fn dispatch(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        actix_web::rt::time::sleep(latency).await;
    }
    let route = Route::of(shared.config.mode, req.method(), req.path());
    let mut hold = None;
    let response = if route.writes() {
        match shared.faults.decide_write() {
            Decision::Fail {
                status,
                retry_after,
            } => injected(status, retry_after),
            Decision::CommitThenHang(d) => {
                hold = Some(d);
                shared.handle(&route, &req, &body)
            }
            Decision::Proceed => shared.handle(&route, &req, &body),
        }
    } else {
        shared.handle(&route, &req, &body)
    };
    // Logged before hanging, so a test sees the write even while the client is timing out.
    shared.lock().requests.push(Logged {
        method: req.method().to_string(),
        path: req.path().to_string(),
        status: response.status().as_u16(),
    });
    if let Some(d) = hold {
        actix_web::rt::time::sleep(d).await;
    }
    response
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, route: &Route, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        match route {
            Route::Token => self.token(req),
            Route::Locations => self.locations(req),
            Route::Notification => self.legacy_notification(req, body),
            Route::EventsConfig => self.events_config(req),
            Route::GetEvent(id) => self.get_event(req, id),
            Route::Create => self.create_event(req, body),
            Route::NotifyV19 => self.notify(req, body, None),
            Route::NotifyOn(id) => self.notify(req, body, Some(id)),
            Route::NotifyOneCall => self.notify_one_call(req, body),
            Route::Missing => boom(StatusCode::NOT_FOUND, "Not Found"),
        }
    }

    fn token(&self, req: &HttpRequest) -> HttpResponse {
        let oauth = |status: StatusCode, error: &str| {
            HttpResponse::build(status).json(json!({ "error": error }))
        };
        // Only the query string is read: credentials in a form body are simply not seen.
        let Ok(query) = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        else {
            return oauth(StatusCode::BAD_REQUEST, "invalid_request");
        };
        let query = query.into_inner();
        match query.get("grant_type").map(String::as_str) {
            None => return oauth(StatusCode::BAD_REQUEST, "invalid_request"),
            Some("client_credentials") => {}
            Some(_) => return oauth(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        }
        let (Some(id), Some(secret)) = (query.get("client_id"), query.get("client_secret")) else {
            return oauth(StatusCode::BAD_REQUEST, "invalid_request");
        };
        if *id != self.config.client_id || *secret != self.config.client_secret {
            return oauth(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let scopes = self.config.scopes();
        let token = mint_token(&self.config, &scopes);
        let mut st = self.lock();
        st.tokens.insert(
            token.clone(),
            Token {
                expires: Instant::now() + self.config.token_ttl,
                scopes,
            },
        );
        st.tokens_issued += 1;
        HttpResponse::Ok().json(json!({ "access_token": token, "token_type": "Bearer" }))
    }

    /// The scopes of a valid bearer token, or the 401 to answer.
    fn authenticate(&self, req: &HttpRequest) -> Early<Vec<String>> {
        let unauthorized = || Box::new(boom(StatusCode::UNAUTHORIZED, "Invalid token"));
        let Some(value) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(unauthorized());
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return Err(unauthorized());
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized());
        }
        let st = self.lock();
        match st.tokens.get(token.trim()) {
            Some(t) if Instant::now() < t.expires => Ok(t.scopes.clone()),
            _ => Err(unauthorized()),
        }
    }

    fn locations(&self, req: &HttpRequest) -> HttpResponse {
        let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
        let wanted = query.get("type").map(String::as_str);
        let c = &self.config;
        let fallback_parent = c
            .districts
            .first()
            .map(|(id, _)| id.as_str())
            .or_else(|| c.states.first().map(String::as_str))
            .unwrap_or("0");
        let mut all: Vec<(&str, &str, &str)> = Vec::new();
        all.extend(
            c.states
                .iter()
                .map(|s| (s.as_str(), "ADMIN_STRUCTURE", "0")),
        );
        all.extend(
            c.districts
                .iter()
                .map(|(d, p)| (d.as_str(), "ADMIN_STRUCTURE", p.as_str())),
        );
        all.extend(
            c.facilities
                .iter()
                .map(|f| (f.as_str(), "HEALTH_FACILITY", fallback_parent)),
        );
        all.extend(
            c.offices
                .iter()
                .map(|o| (o.as_str(), "CRVS_OFFICE", fallback_parent)),
        );
        let base = format!("http://{}", req.connection_info().host());
        let entries: Vec<Value> = all
            .into_iter()
            .filter(|(_, kind, _)| wanted.is_none_or(|w| w == *kind))
            .map(|(id, kind, parent)| {
                json!({
                    "fullUrl": format!("{base}/location/{id}"),
                    "resource": {
                        "resourceType": "Location",
                        "id": id,
                        "name": id,
                        "status": "active",
                        "mode": "instance",
                        "type": {"coding": [{"system": LOCATION_TYPE, "code": kind}]},
                        "partOf": {"reference": format!("Location/{parent}")},
                        "physicalType": {"coding": [{
                            "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                            "code": if kind == "ADMIN_STRUCTURE" { "jdn" } else { "bu" }
                        }]}
                    }
                })
            })
            .collect();
        HttpResponse::Ok().json(json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": entries.len(),
            "entry": entries
        }))
    }

    fn legacy_notification(&self, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        let scopes = match self.authenticate(req) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        if !scopes.iter().any(|s| s == "notification-api") {
            return boom(StatusCode::FORBIDDEN, "Insufficient scope");
        }
        let Ok(bundle) = serde_json::from_slice::<Value>(body) else {
            return boom(
                StatusCode::BAD_REQUEST,
                "Invalid request payload JSON format",
            );
        };
        let accepted = match check_bundle(&self.config, &bundle) {
            Ok(a) => a,
            Err(Reject::Bad(m)) => return boom(StatusCode::BAD_REQUEST, &m),
            Err(Reject::Semantic(m)) => {
                return boom(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("{SEMANTIC_PREFIX}{m}"),
                )
            }
        };
        let mut st = self.lock();
        let tracking_id = st.new_tracking_id(accepted.event);
        let (saved, composition_id) = save_bundle(&bundle, accepted.event, &tracking_id);
        let duplicate = accepted
            .duplicate_key
            .is_some_and(|k| !st.births_seen.insert(k));
        st.notified.push(Notified {
            event: accepted.event.to_string(),
            tracking_id: tracking_id.clone(),
            transaction_id: None,
            body: saved.clone(),
        });
        drop(st);
        if duplicate {
            HttpResponse::Ok().json(json!({
                "compositionId": composition_id,
                "trackingId": tracking_id,
                "isPotentiallyDuplicate": true
            }))
        } else {
            HttpResponse::Ok().json(saved)
        }
    }

    fn events_config(&self, req: &HttpRequest) -> HttpResponse {
        if let Err(r) = self.authenticate(req) {
            return *r;
        }
        let configs: Vec<Value> = EVENT_TYPES
            .iter()
            .map(|t| event_config(&self.config, t))
            .collect();
        HttpResponse::Ok().json(configs)
    }

    fn get_event(&self, req: &HttpRequest, id: &str) -> HttpResponse {
        if let Err(r) = self.authenticate(req) {
            return *r;
        }
        match self.lock().events.get(id) {
            Some(e) => HttpResponse::Ok().json(e),
            None => message(StatusCode::NOT_FOUND, "Event not found"),
        }
    }

    fn create_event(&self, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        let scopes = match self.authenticate(req) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let Some(input) = parse_object(body) else {
            return message(StatusCode::BAD_REQUEST, INPUT_FAILED);
        };
        let (Some(event_type), Some(tx)) = (
            input.get("type").and_then(Value::as_str),
            non_empty(&input, "transactionId"),
        ) else {
            return message(StatusCode::BAD_REQUEST, INPUT_FAILED);
        };
        if !EVENT_TYPES.contains(&event_type) {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("Invalid event type {event_type}"),
            );
        }
        if !allows(&scopes, "record.create", event_type) {
            return missing_scope("record.create", event_type);
        }
        let mut st = self.lock();
        let key = (tx.to_string(), event_type.to_string());
        if let Some(existing) = st.created.get(&key).and_then(|id| st.events.get(id)) {
            return HttpResponse::Ok().json(existing);
        }
        let event = st.new_event(&self.config.client_id, event_type, tx);
        let id = str_of(&event, "id").unwrap_or_default().to_string();
        st.created.insert(key, id.clone());
        st.events.insert(id, event.clone());
        HttpResponse::Ok().json(event)
    }

    /// v1.9 `/events/events/notifications` (event id in the body) and v2.0
    /// `/events/events/{id}/notify` (event id in the path).
    fn notify(&self, req: &HttpRequest, body: &[u8], path_id: Option<&str>) -> HttpResponse {
        let scopes = match self.authenticate(req) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let Some(input) = parse_object(body) else {
            return message(StatusCode::BAD_REQUEST, INPUT_FAILED);
        };
        let body_id = input.get("eventId");
        let event_id = match path_id {
            Some(id) => match body_id {
                None => id.to_string(),
                Some(b) if b.as_str() == Some(id) => id.to_string(),
                Some(_) => return message(StatusCode::BAD_REQUEST, INPUT_FAILED),
            },
            None => match body_id.and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => return message(StatusCode::BAD_REQUEST, INPUT_FAILED),
            },
        };
        // v1.9 requires the action type in the body; v2.0 takes it from the path.
        let action_type = input.get("type");
        let type_ok = match path_id {
            None => action_type.and_then(Value::as_str) == Some("NOTIFY"),
            Some(_) => action_type.is_none_or(|t| t.as_str() == Some("NOTIFY")),
        };
        let Some(notify) = Notify::parse(&input).filter(|_| type_ok) else {
            return message(StatusCode::BAD_REQUEST, INPUT_FAILED);
        };
        let event_type = {
            let st = self.lock();
            match st.events.get(&event_id) {
                Some(e) => str_of(e, "type").unwrap_or_default().to_string(),
                None => return message(StatusCode::NOT_FOUND, "Event not found"),
            }
        };
        if !allows(&scopes, "record.notify", &event_type) {
            return missing_scope("record.notify", &event_type);
        }
        if let Err(r) = notify.check(&self.config, &event_type) {
            return *r;
        }
        match self
            .lock()
            .notify(&self.config.client_id, &event_id, &notify)
        {
            Ok(event) => HttpResponse::Ok().json(event),
            Err(r) => *r,
        }
    }

    /// v2.0 `POST /events/events/notify`: creates the event and notifies it in one call.
    fn notify_one_call(&self, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        let scopes = match self.authenticate(req) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let Some(input) = parse_object(body) else {
            return message(StatusCode::BAD_REQUEST, INPUT_FAILED);
        };
        let (Some(event_type), Some(notify)) = (
            input.get("eventType").and_then(Value::as_str),
            Notify::parse(&input),
        ) else {
            return message(StatusCode::BAD_REQUEST, INPUT_FAILED);
        };
        if !EVENT_TYPES.contains(&event_type) {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("Invalid event type {event_type}"),
            );
        }
        for action in ["record.create", "record.notify"] {
            if !allows(&scopes, action, event_type) {
                return missing_scope(action, event_type);
            }
        }
        if let Err(r) = notify.check(&self.config, event_type) {
            return *r;
        }
        let mut st = self.lock();
        if let Some(existing) = st
            .one_call
            .get(&notify.transaction_id)
            .and_then(|id| st.events.get(id))
        {
            return HttpResponse::Ok().json(existing);
        }
        let event = st.new_event(&self.config.client_id, event_type, &notify.transaction_id);
        let id = str_of(&event, "id").unwrap_or_default().to_string();
        st.events.insert(id.clone(), event);
        st.one_call
            .insert(notify.transaction_id.clone(), id.clone());
        match st.notify(&self.config.client_id, &id, &notify) {
            Ok(event) => HttpResponse::Ok().json(event),
            Err(r) => *r,
        }
    }
}

/// The common part of a NOTIFY request body.
struct Notify {
    transaction_id: String,
    location: Option<Value>,
    declaration: Map<String, Value>,
    annotation: Value,
}

impl Notify {
    /// `None` when the body does not have the shape of a notify input.
    fn parse(input: &Map<String, Value>) -> Option<Notify> {
        let transaction_id = non_empty(input, "transactionId")?.to_string();
        let declaration = input.get("declaration")?.as_object()?.clone();
        let annotation = match input.get("annotation") {
            None | Some(Value::Null) => json!({}),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(_) => return None,
        };
        Some(Notify {
            transaction_id,
            location: input.get("createdAtLocation").cloned(),
            declaration,
            annotation,
        })
    }

    /// Location, then declaration field ids and shapes against the country configuration.
    fn check(&self, config: &Config, event_type: &str) -> Early<()> {
        let location_ok = self
            .location
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|l| config.is_location(l));
        if !location_ok {
            return Err(Box::new(message(StatusCode::BAD_REQUEST, BAD_LOCATION)));
        }
        let fields = config.fields(event_type);
        let issues: Vec<Value> = self
            .declaration
            .iter()
            .filter_map(|(key, value)| {
                if !fields.iter().any(|f| f == key) {
                    Some(json!({"message": "Unexpected field", "id": key}))
                } else if !field_ok(config, key, value) {
                    Some(json!({"message": "Invalid input", "id": key}))
                } else {
                    None
                }
            })
            .collect();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(Box::new(HttpResponse::BadRequest().json(issues)))
        }
    }
}

/// The shape a declaration value must have, read from the field id's Farajaland naming.
fn field_ok(config: &Config, id: &str, value: &Value) -> bool {
    if id.ends_with(".name") {
        is_name(value)
    } else if id.ends_with(".dob") || id == "eventDetails.date" {
        value.as_str().is_some_and(is_date)
    } else if id.ends_with(".weightAtBirth") {
        value.as_f64().is_some_and(|w| w > 0.0)
    } else if id.ends_with(".gender") {
        matches!(value.as_str(), Some("male" | "female" | "unknown"))
    } else if id.ends_with(".birthLocation") || id.ends_with(".deathLocation") {
        value
            .as_str()
            .is_some_and(|f| config.facilities.iter().any(|x| x == f))
    } else if id == "eventDetails.causeOfDeathEstablished" {
        // A checkbox in Farajaland; its string form is accepted as well.
        value.is_boolean() || value.is_string()
    } else {
        value.is_string()
    }
}

/// `{firstname, surname}` (middlename allowed); firstname may be missing, as for a newborn not
/// yet named.
fn is_name(value: &Value) -> bool {
    let Some(o) = value.as_object() else {
        return false;
    };
    o.contains_key("surname")
        && o.iter().all(|(k, v)| {
            matches!(k.as_str(), "firstname" | "surname" | "middlename") && v.is_string()
        })
}

fn field_type(id: &str) -> &'static str {
    if id.ends_with(".name") {
        "NAME"
    } else if id.ends_with(".dob") || id == "eventDetails.date" {
        "DATE"
    } else if id.ends_with(".weightAtBirth") {
        "NUMBER"
    } else if id.ends_with(".gender") {
        "RADIO_GROUP"
    } else if id.ends_with(".birthLocation") || id.ends_with(".deathLocation") {
        "FACILITY"
    } else if id == "eventDetails.causeOfDeathEstablished" {
        "CHECKBOX"
    } else {
        "TEXT"
    }
}

/// An event configuration shaped like v1.9's: fields grouped in pages by their id's prefix.
fn event_config(config: &Config, event_type: &str) -> Value {
    let mut pages: Vec<(String, Vec<Value>)> = Vec::new();
    for id in config.fields(event_type) {
        let page = id.split('.').next().unwrap_or(id).to_string();
        let mut field = json!({"id": id, "type": field_type(id), "required": false});
        if field_type(id) == "RADIO_GROUP" {
            field["options"] = json!([
                {"value": "male"}, {"value": "female"}, {"value": "unknown"}
            ]);
        }
        match pages.iter_mut().find(|(p, _)| *p == page) {
            Some((_, fields)) => fields.push(field),
            None => pages.push((page, vec![field])),
        }
    }
    let pages: Vec<Value> = pages
        .into_iter()
        .map(|(id, fields)| json!({"id": id, "type": "FORM", "fields": fields}))
        .collect();
    json!({
        "id": event_type,
        "label": {"id": format!("event.{event_type}.label"), "defaultMessage": event_type},
        "declaration": {"pages": pages}
    })
}

// ---- legacy FHIR event notification ----

enum Reject {
    /// Shape errors: 400 Boom.
    Bad(String),
    /// Content OpenCRVS cannot process: 500 "Could not process the Event Notification, …".
    Semantic(String),
}

type Checked<T> = Result<T, Reject>;

fn bad<T>(m: impl Into<String>) -> Checked<T> {
    Err(Reject::Bad(m.into()))
}

fn semantic<T>(m: impl Into<String>) -> Checked<T> {
    Err(Reject::Semantic(m.into()))
}

struct Accepted {
    event: &'static str,
    /// Births only: child name, birth date and mother, for the duplicate heuristic.
    duplicate_key: Option<String>,
}

struct Entry<'a> {
    url: &'a str,
    kind: &'a str,
    resource: &'a Map<String, Value>,
}

/// Shapes and codes first (400), then what needs the configuration or cross references (500,
/// except the Task focus and the deceased's dates, which OpenCRVS rejects with 400).
fn check_bundle(config: &Config, bundle: &Value) -> Checked<Accepted> {
    let Some(b) = bundle.as_object() else {
        return bad("\"value\" must be of type object");
    };
    if b.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return bad("\"resourceType\" must be [Bundle]");
    }
    if b.get("type").and_then(Value::as_str) != Some("document") {
        return bad("\"type\" must be [document]");
    }
    let last_updated = b
        .get("meta")
        .and_then(|m| m.get("lastUpdated"))
        .and_then(Value::as_str);
    if last_updated.is_none_or(|s| chrono::DateTime::parse_from_rfc3339(s).is_err()) {
        return bad("\"meta.lastUpdated\" is required and must be an instant");
    }
    let Some(raw_entries) = b.get("entry").and_then(Value::as_array) else {
        return bad("\"entry\" is required");
    };
    if raw_entries.len() < 2 {
        return bad("\"entry\" must hold a Composition and a Task");
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(raw_entries.len());
    let mut by_url: HashMap<&str, usize> = HashMap::new();
    for (i, e) in raw_entries.iter().enumerate() {
        let Some(url) = e
            .get("fullUrl")
            .and_then(Value::as_str)
            .filter(|u| is_urn_uuid(u))
        else {
            return bad(format!("\"entry[{i}].fullUrl\" must be a urn:uuid"));
        };
        let Some(resource) = e.get("resource").and_then(Value::as_object) else {
            return bad(format!("\"entry[{i}].resource\" is required"));
        };
        let Some(kind) = resource.get("resourceType").and_then(Value::as_str) else {
            return bad(format!("\"entry[{i}].resource.resourceType\" is required"));
        };
        let allowed = match i {
            0 => kind == "Composition",
            1 => kind == "Task",
            _ => ALLOWED_AFTER.contains(&kind),
        };
        if !allowed {
            return bad(match i {
                0 => "\"entry[0]\" must be a Composition".to_string(),
                1 => "\"entry[1]\" must be a Task".to_string(),
                _ => format!("\"entry[{i}]\": a {kind} is not allowed in an event notification"),
            });
        }
        if by_url.insert(url, i).is_some() {
            return bad(format!("\"entry[{i}].fullUrl\" is a duplicate"));
        }
        entries.push(Entry {
            url,
            kind,
            resource,
        });
    }
    let composition = &entries[0];
    let comp = composition.resource;
    let task = entries[1].resource;

    let event = match code_in(comp.get("type"), DOC_TYPES) {
        Some("birth-notification") => "birth",
        Some("death-notification") => "death",
        _ => {
            return bad(format!(
                "\"Composition.type\" must be {DOC_TYPES} birth-notification or death-notification"
            ))
        }
    };
    if !has_code(comp.get("class"), CLASSES, "crvs-document") {
        return bad(format!(
            "\"Composition.class\" must be {CLASSES}|crvs-document"
        ));
    }
    let Some(subject) = reference(comp.get("subject")) else {
        return bad("\"Composition.subject\" is required");
    };
    let allowed_sections = if event == "birth" {
        BIRTH_SECTIONS
    } else {
        DEATH_SECTIONS
    };
    let Some(raw_sections) = comp.get("section").and_then(Value::as_array) else {
        return bad("\"Composition.section\" is required");
    };
    let mut sections: Vec<(&str, Vec<&str>)> = Vec::new();
    for s in raw_sections {
        let Some(code) = code_in(s.get("code"), SECTIONS).filter(|c| allowed_sections.contains(c))
        else {
            return bad(format!(
                "\"Composition.section.code\" must be one of {SECTIONS} {}",
                allowed_sections.join(", ")
            ));
        };
        let refs = match s.get("entry") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let refs: Option<Vec<&str>> = items.iter().map(|r| reference(Some(r))).collect();
                match refs {
                    Some(r) => r,
                    None => return bad(format!("\"section {code}.entry\" must hold references")),
                }
            }
            Some(_) => return bad(format!("\"section {code}.entry\" must be an array")),
        };
        sections.push((code, refs));
    }

    if task.get("status").and_then(Value::as_str) != Some("draft") {
        return bad("\"Task.status\" must be [draft]");
    }
    if task.get("intent").and_then(Value::as_str) != Some("unknown") {
        return bad("\"Task.intent\" must be [unknown]");
    }
    let task_code = if event == "birth" { "BIRTH" } else { "DEATH" };
    if !has_code(task.get("code"), TASK_TYPES, task_code) {
        return bad(format!("\"Task.code\" must be {TASK_TYPES}|{task_code}"));
    }
    if reference(task.get("focus")) != Some(composition.url) {
        return bad("\"Task.focus\" must refer to the Composition");
    }
    let extensions: &[Value] = match task.get("extension") {
        None => &[],
        Some(Value::Array(a)) => a,
        Some(_) => return bad("\"Task.extension\" must be an array"),
    };
    if extensions
        .iter()
        .any(|e| e.get("url").and_then(Value::as_str).is_none())
    {
        return bad("\"Task.extension.url\" is required");
    }

    for e in &entries[2..] {
        match e.kind {
            "Patient" => check_person(e.resource, "Patient")?,
            "RelatedPerson" => check_related_person(e.resource)?,
            "Encounter" if e.resource.get("status").and_then(Value::as_str) != Some("finished") => {
                return bad("\"Encounter.status\" must be [finished]");
            }
            "Observation" if reference(e.resource.get("context")).is_none() => {
                return bad(
                    "\"Observation.context\" is required (observations are linked with \
                     context, not encounter)",
                );
            }
            _ => {}
        }
    }

    // Everything below needs the configuration or the links between entries.
    let resolve = |r: &str| by_url.get(r).map(|&i| &entries[i]);

    let office = extensions
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(REG_LAST_OFFICE))
        .and_then(|e| reference(e.get("valueReference")));
    match office.map(|r| r.strip_prefix("Location/").unwrap_or(r)) {
        None => return semantic("no registration office (regLastOffice) was given"),
        Some(id) if !config.offices.iter().any(|o| o == id) => {
            return semantic(format!("unknown CRVS office {id}"))
        }
        Some(_) => {}
    }

    if !entries.iter().any(|e| e.kind == "Patient") {
        return semantic("the bundle has no Patient");
    }
    let Some(subject_entry) = resolve(subject).filter(|e| e.kind == "Patient") else {
        return semantic(format!(
            "the Composition's subject {subject} is not a Patient of the bundle"
        ));
    };
    for (code, refs) in &sections {
        if let Some(missing) = refs.iter().find(|r| resolve(r).is_none()) {
            return semantic(format!(
                "section {code} refers to {missing}, which is not in the bundle"
            ));
        }
    }
    let subject_section = if event == "birth" {
        "child-details"
    } else {
        "deceased-details"
    };
    if let Some((_, refs)) = sections.iter().find(|(c, _)| *c == subject_section) {
        if refs.first() != Some(&subject) {
            return bad(format!(
                "\"{subject_section}\" must refer to the Composition's subject"
            ));
        }
    }
    if event == "death" {
        let s = subject_entry.resource;
        let deceased = s.get("deceasedBoolean").and_then(Value::as_bool) == Some(true);
        let when = s.get("deceasedDateTime").and_then(Value::as_str);
        if !deceased || !when.is_some_and(is_date_or_instant) {
            return bad("the deceased needs \"deceasedBoolean\": true and \"deceasedDateTime\"");
        }
    }
    for e in entries.iter().filter(|e| e.kind == "RelatedPerson") {
        let target = reference(e.resource.get("patient")).and_then(resolve);
        if target.is_none() {
            return semantic("the RelatedPerson's patient is not in the bundle");
        }
    }
    for e in entries
        .iter()
        .filter(|e| e.kind == "Patient" || e.kind == "RelatedPerson")
    {
        for address in e
            .resource
            .get("address")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            check_address(config, address)?;
        }
    }
    let encounters: Vec<&Entry> = entries.iter().filter(|e| e.kind == "Encounter").collect();
    if encounters.is_empty() {
        return semantic("the bundle has no Encounter");
    }
    for enc in encounters {
        let facility = enc
            .resource
            .get("location")
            .and_then(Value::as_array)
            .and_then(|l| l.first())
            .and_then(|l| reference(l.get("location")));
        match facility.map(|r| r.strip_prefix("Location/").unwrap_or(r)) {
            None => return semantic("the Encounter has no health facility"),
            Some(id) if !config.facilities.iter().any(|f| f == id) => {
                return semantic(format!("unknown health facility {id}"))
            }
            Some(_) => {}
        }
    }
    for obs in entries.iter().filter(|e| e.kind == "Observation") {
        let o = obs.resource;
        let context = reference(o.get("context")).unwrap_or_default();
        if resolve(context).is_none_or(|e| e.kind != "Encounter") {
            return semantic(format!(
                "the Observation's context {context} is not an Encounter of the bundle"
            ));
        }
        if has_code(o.get("code"), LOINC, BIRTH_WEIGHT) {
            let q = o.get("valueQuantity");
            let has_value = q
                .and_then(|q| q.get("value"))
                .and_then(Value::as_f64)
                .is_some();
            let in_kg = ["unit", "code"]
                .iter()
                .any(|k| q.and_then(|q| q.get(*k)).and_then(Value::as_str) == Some("kg"));
            if !has_value || !in_kg {
                return semantic("the birth weight (LOINC 3141-9) must be a valueQuantity in kg");
            }
        }
    }

    let duplicate_key = (event == "birth")
        .then(|| {
            let child = subject_entry.resource;
            let name = name_key(child)?;
            let dob = child.get("birthDate").and_then(Value::as_str)?;
            let mother = sections
                .iter()
                .find(|(c, _)| *c == "mother-details")
                .and_then(|(_, refs)| refs.first())
                .and_then(|r| resolve(r))
                .and_then(|m| name_key(m.resource))
                .unwrap_or_default();
            Some(format!("{name}|{dob}|{mother}"))
        })
        .flatten();
    Ok(Accepted {
        event,
        duplicate_key,
    })
}

fn check_person(p: &Map<String, Value>, kind: &str) -> Checked<()> {
    match p.get("name") {
        None => {}
        Some(Value::Array(names)) => {
            for n in names {
                if !n.is_object() {
                    return bad(format!("\"{kind}.name\" must hold HumanNames"));
                }
                if n.get("family").is_some_and(|f| !f.is_string()) {
                    return bad(format!("\"{kind}.name.family\" must be a string"));
                }
                let given_ok = n
                    .get("given")
                    .is_none_or(|g| g.as_array().is_some_and(|g| g.iter().all(Value::is_string)));
                if !given_ok {
                    return bad(format!("\"{kind}.name.given\" must be an array of strings"));
                }
            }
        }
        Some(_) => return bad(format!("\"{kind}.name\" must be an array")),
    }
    match p.get("address") {
        None => {}
        Some(Value::Array(addresses)) => {
            for a in addresses {
                if a.get("type").and_then(Value::as_str) != Some("PRIMARY_ADDRESS") {
                    return bad(format!("\"{kind}.address.type\" must be [PRIMARY_ADDRESS]"));
                }
            }
        }
        Some(_) => return bad(format!("\"{kind}.address\" must be an array")),
    }
    match p.get("identifier") {
        None => {}
        Some(Value::Array(ids)) => {
            for id in ids {
                let typed = id
                    .get("type")
                    .and_then(|t| t.get("coding"))
                    .and_then(Value::as_array)
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.get("system").and_then(Value::as_str) == Some(IDENTIFIER_TYPE)
                                && c.get("code").and_then(Value::as_str).is_some()
                        })
                    });
                if !typed || id.get("value").and_then(Value::as_str).is_none() {
                    return bad(format!(
                        "\"{kind}.identifier\" needs a value and a type coded in {IDENTIFIER_TYPE}"
                    ));
                }
            }
        }
        Some(_) => return bad(format!("\"{kind}.identifier\" must be an array")),
    }
    Ok(())
}

fn check_related_person(r: &Map<String, Value>) -> Checked<()> {
    // OpenCRVS writes relationship STU3-style as one CodeableConcept; R4 has a list.
    let coded = |c: &Value| {
        c.get("coding").and_then(Value::as_array).is_some_and(|c| {
            c.iter()
                .any(|c| c.get("code").and_then(Value::as_str).is_some())
        })
    };
    let relationship_ok = match r.get("relationship") {
        Some(Value::Array(list)) => list.iter().any(coded),
        Some(c @ Value::Object(_)) => coded(c),
        _ => false,
    };
    if !relationship_ok {
        return bad("\"RelatedPerson.relationship\" needs a code such as MOTHER");
    }
    if reference(r.get("patient")).is_none() {
        return bad("\"RelatedPerson.patient\" is required");
    }
    check_person(r, "RelatedPerson")
}

fn check_address(config: &Config, address: &Value) -> Checked<()> {
    let Some(country) = address
        .get("country")
        .and_then(Value::as_str)
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
    else {
        return semantic("an address has no valid ISO 3166 alpha-3 country");
    };
    if country != config.country {
        return Ok(());
    }
    let field = |k: &str| address.get(k).and_then(Value::as_str);
    let (Some(state), Some(district)) = (field("state"), field("district")) else {
        return semantic("a domestic address needs a state and a district");
    };
    if !config.states.iter().any(|s| s == state) {
        return semantic(format!("unknown state {state}"));
    }
    let Some((_, parent)) = config.districts.iter().find(|(id, _)| id == district) else {
        return semantic(format!("unknown district {district}"));
    };
    if parent != state {
        return semantic(format!(
            "inconsistent location hierarchy: {district} is not in {state}"
        ));
    }
    Ok(())
}

/// The Bundle as OpenCRVS saves it: ids assigned, the tracking id on the Task and Composition.
fn save_bundle(bundle: &Value, event: &str, tracking_id: &str) -> (Value, String) {
    let mut saved = bundle.clone();
    saved["id"] = json!(uuid());
    let mut composition_id = String::new();
    let system = if event == "death" {
        DEATH_TRACKING
    } else {
        BIRTH_TRACKING
    };
    if let Some(entries) = saved.get_mut("entry").and_then(Value::as_array_mut) {
        for (i, e) in entries.iter_mut().enumerate() {
            let Some(res) = e.get_mut("resource").and_then(Value::as_object_mut) else {
                continue;
            };
            let id = uuid();
            res.insert("id".into(), json!(id));
            match i {
                0 => {
                    composition_id = id;
                    res.insert(
                        "identifier".into(),
                        json!({"system": "urn:ietf:rfc:3986", "value": tracking_id}),
                    );
                }
                1 => {
                    let tracking = json!({"system": system, "value": tracking_id});
                    match res.get_mut("identifier").and_then(Value::as_array_mut) {
                        Some(ids) => ids.push(tracking),
                        None => {
                            res.insert("identifier".into(), json!([tracking]));
                        }
                    }
                    res.insert("lastModified".into(), json!(now()));
                }
                _ => {}
            }
        }
    }
    (saved, composition_id)
}

fn name_key(person: &Map<String, Value>) -> Option<String> {
    let name = person.get("name")?.as_array()?.first()?;
    let given: Vec<&str> = name
        .get("given")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let family = name.get("family").and_then(Value::as_str).unwrap_or("");
    let key = format!("{} {}", given.join(" "), family)
        .trim()
        .to_lowercase();
    (!key.is_empty()).then_some(key)
}

// ---- small helpers ----

fn boom(status: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "statusCode": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": msg
    }))
}

fn message(status: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "message": msg }))
}

fn missing_scope(action: &str, event_type: &str) -> HttpResponse {
    message(
        StatusCode::FORBIDDEN,
        &format!("Missing scope {action}[event={event_type}]"),
    )
}

fn injected(status: u16, retry_after: Option<u32>) -> HttpResponse {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = boom(code, "injected fault");
    if let Some(s) = retry_after {
        if let Ok(v) = header::HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// `record.notify[event=birth|death]` grants notify on both; a bare `record.notify` on all.
fn allows(scopes: &[String], action: &str, event_type: &str) -> bool {
    scopes.iter().any(|s| {
        s == action
            || s.strip_prefix(action)
                .and_then(|r| r.strip_prefix("[event="))
                .and_then(|r| r.strip_suffix(']'))
                .is_some_and(|list| list.split('|').any(|e| e == event_type))
    })
}

fn mint_token(config: &Config, scopes: &[String]) -> String {
    let now = chrono::Utc::now().timestamp();
    let ttl = config.token_ttl.as_secs_f64().ceil() as i64;
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let payload = json!({
        "scope": scopes,
        "iat": now,
        "exp": now + ttl,
        "aud": ["opencrvs:auth-user", "opencrvs:gateway-user", "opencrvs:events-user"],
        "iss": "opencrvs:auth-service",
        "sub": config.client_id,
        "jti": uuid()
    });
    let signature: [u8; 32] = rand::random();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn parse_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body).ok()? {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

fn non_empty<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn reference(v: Option<&Value>) -> Option<&str> {
    v?.get("reference")?.as_str()
}

fn codings(concept: Option<&Value>) -> impl Iterator<Item = (&str, &str)> {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("system")?.as_str()?, c.get("code")?.as_str()?)))
}

fn code_in<'a>(concept: Option<&'a Value>, system: &str) -> Option<&'a str> {
    codings(concept).find(|(s, _)| *s == system).map(|(_, c)| c)
}

fn has_code(concept: Option<&Value>, system: &str, code: &str) -> bool {
    codings(concept).any(|(s, c)| s == system && c == code)
}

fn is_urn_uuid(s: &str) -> bool {
    let Some(u) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    u.len() == 36
        && u.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_date(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

fn is_date_or_instant(s: &str) -> bool {
    is_date(s) || chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::blocking::{Client, Response};

    const COMP: &str = "urn:uuid:00000000-0000-4000-8000-000000000001";
    const TASK: &str = "urn:uuid:00000000-0000-4000-8000-000000000002";
    const CHILD: &str = "urn:uuid:00000000-0000-4000-8000-000000000003";
    const MOTHER: &str = "urn:uuid:00000000-0000-4000-8000-000000000004";
    const ENC: &str = "urn:uuid:00000000-0000-4000-8000-000000000005";
    const OBS: &str = "urn:uuid:00000000-0000-4000-8000-000000000006";
    const INFORMANT: &str = "urn:uuid:00000000-0000-4000-8000-000000000007";

    fn client() -> Client {
        Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn token_url(crvs: &OpenCrvs, id: &str, secret: &str) -> String {
        format!(
            "{}/token?client_id={id}&client_secret={secret}&grant_type=client_credentials",
            crvs.auth_url()
        )
    }

    fn token(crvs: &OpenCrvs) -> String {
        let r = client()
            .post(token_url(crvs, "kiunga-health", "demo-secret"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().unwrap();
        assert_eq!(body["token_type"], "Bearer");
        body["access_token"].as_str().unwrap().to_string()
    }

    fn post(crvs: &OpenCrvs, path: &str, token: &str, body: &Value) -> Response {
        client()
            .post(format!("{}{path}", crvs.gateway_url()))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap()
    }

    fn birth_bundle() -> Value {
        json!({
            "resourceType": "Bundle",
            "type": "document",
            "meta": {"lastUpdated": "2024-05-01T10:00:00.000Z"},
            "entry": [
                {"fullUrl": COMP, "resource": {
                    "resourceType": "Composition",
                    "status": "preliminary",
                    "type": {"coding": [{"system": DOC_TYPES, "code": "birth-notification"}]},
                    "class": {"coding": [{"system": CLASSES, "code": "crvs-document"}]},
                    "title": "Birth notification",
                    "subject": {"reference": CHILD},
                    "date": "2024-05-01T10:00:00.000Z",
                    "author": [],
                    "section": [
                        {"title": "Child", "code": {"coding": [{"system": SECTIONS, "code": "child-details"}]},
                         "entry": [{"reference": CHILD}]},
                        {"title": "Mother", "code": {"coding": [{"system": SECTIONS, "code": "mother-details"}]},
                         "entry": [{"reference": MOTHER}]},
                        {"title": "Informant", "code": {"coding": [{"system": SECTIONS, "code": "informant-details"}]},
                         "entry": [{"reference": INFORMANT}]},
                        {"title": "Birth encounter", "code": {"coding": [{"system": SECTIONS, "code": "birth-encounter"}]},
                         "entry": [{"reference": ENC}]}
                    ]
                }},
                {"fullUrl": TASK, "resource": {
                    "resourceType": "Task",
                    "status": "draft",
                    "intent": "unknown",
                    "code": {"coding": [{"system": TASK_TYPES, "code": "BIRTH"}]},
                    "focus": {"reference": COMP},
                    "extension": [
                        {"url": "http://opencrvs.org/specs/extension/contact-person", "valueString": "MOTHER"},
                        {"url": REG_LAST_OFFICE, "valueReference": {"reference": "Location/office-ibombo"}}
                    ]
                }},
                {"fullUrl": CHILD, "resource": {
                    "resourceType": "Patient",
                    "name": [{"use": "en", "given": ["Chanda"], "family": "Mwale"}],
                    "gender": "female",
                    "birthDate": "2024-04-30"
                }},
                {"fullUrl": MOTHER, "resource": {
                    "resourceType": "Patient",
                    "name": [{"use": "en", "given": ["Mutale"], "family": "Mwale"}],
                    "birthDate": "1995-02-01",
                    "identifier": [{"value": "1234567890", "type": {"coding": [
                        {"system": IDENTIFIER_TYPE, "code": "NATIONAL_ID"}]}}],
                    "address": [{"type": "PRIMARY_ADDRESS", "country": "FAR",
                                 "state": "state-central", "district": "district-ibombo"}]
                }},
                {"fullUrl": INFORMANT, "resource": {
                    "resourceType": "RelatedPerson",
                    "relationship": {"coding": [{"system": "http://hl7.org/fhir/ValueSet/relatedperson-relationshiptype", "code": "MOTHER"}]},
                    "patient": {"reference": MOTHER}
                }},
                {"fullUrl": ENC, "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "location": [{"location": {"reference": "Location/facility-ibombo-hc"}}]
                }},
                {"fullUrl": OBS, "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "context": {"reference": ENC},
                    "code": {"coding": [{"system": LOINC, "code": BIRTH_WEIGHT}]},
                    "valueQuantity": {"value": 3.2, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}
                }}
            ]
        })
    }

    fn task_tracking_id(bundle: &Value) -> String {
        bundle["entry"][1]["resource"]["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["system"] == BIRTH_TRACKING)
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn token_needs_query_credentials_and_expires() {
        let crvs = OpenCrvs::start(Config::demo(Mode::Legacy)).unwrap();
        let t = token(&crvs);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["scope"], json!(["notification-api", "declare"]));
        assert!(payload["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 500);

        let form = client()
            .post(format!("{}/token", crvs.auth_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("client_id=kiunga-health&client_secret=demo-secret&grant_type=client_credentials")
            .send()
            .unwrap();
        assert_eq!(form.status(), 400);
        assert_eq!(
            form.json::<Value>().unwrap(),
            json!({"error": "invalid_request"})
        );

        let wrong = client()
            .post(token_url(&crvs, "kiunga-health", "nope"))
            .send()
            .unwrap();
        assert_eq!(wrong.status(), 401);
        assert_eq!(
            wrong.json::<Value>().unwrap(),
            json!({"error": "invalid_client"})
        );

        let grant = client()
            .post(format!(
                "{}/token?client_id=kiunga-health&client_secret=demo-secret&grant_type=password",
                crvs.auth_url()
            ))
            .send()
            .unwrap();
        assert_eq!(grant.status(), 400);
        assert_eq!(
            grant.json::<Value>().unwrap()["error"],
            "unsupported_grant_type"
        );

        assert_eq!(
            post(&crvs, "/notification", &t, &birth_bundle()).status(),
            200
        );
        crvs.expire_tokens();
        let r = post(&crvs, "/notification", &t, &birth_bundle());
        assert_eq!(r.status(), 401);
        assert_eq!(crvs.notifications().len(), 1);
        assert_eq!(crvs.tokens_issued(), 1);
    }

    #[test]
    fn tokens_expire_after_their_ttl() {
        let mut config = Config::demo(Mode::EventsV19);
        config.token_ttl = Duration::from_millis(300);
        let crvs = OpenCrvs::start(config).unwrap();
        let t = token(&crvs);
        let config_url = format!("{}/events/config", crvs.gateway_url());
        let ok = client().get(&config_url).bearer_auth(&t).send().unwrap();
        assert_eq!(ok.status(), 200);
        let configs: Value = ok.json().unwrap();
        assert_eq!(configs[0]["id"], "birth");
        assert_eq!(
            configs[0]["declaration"]["pages"][0]["fields"][0]["id"],
            "child.name"
        );
        std::thread::sleep(Duration::from_millis(400));
        let late = client().get(&config_url).bearer_auth(&t).send().unwrap();
        assert_eq!(late.status(), 401);
    }

    #[test]
    fn legacy_birth_is_recorded_every_time_it_is_posted() {
        let crvs = OpenCrvs::start(Config::demo(Mode::Legacy)).unwrap();
        let t = token(&crvs);
        let first = post(&crvs, "/notification", &t, &birth_bundle());
        assert_eq!(first.status(), 200);
        let saved: Value = first.json().unwrap();
        let tracking = task_tracking_id(&saved);
        assert!(
            tracking.starts_with('B') && tracking.len() == 7,
            "{tracking}"
        );

        // No idempotency: the same POST is a second record (flagged as a likely duplicate).
        let second = post(&crvs, "/notification", &t, &birth_bundle());
        assert_eq!(second.status(), 200);
        let dup: Value = second.json().unwrap();
        assert_eq!(dup["isPotentiallyDuplicate"], true);
        assert_ne!(dup["trackingId"], json!(tracking));
        assert!(dup["compositionId"].is_string());

        let records = crvs.notifications();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].event, "birth");
        assert_eq!(records[0].tracking_id, tracking);
        assert_eq!(records[0].transaction_id, None);
        assert_eq!(records[1].tracking_id, dup["trackingId"].as_str().unwrap());
    }

    #[test]
    fn legacy_shape_errors_are_400_and_content_errors_500() {
        let crvs = OpenCrvs::start(Config::demo(Mode::Legacy)).unwrap();
        let t = token(&crvs);
        let expect = |body: Value, status: u16, needle: &str| {
            let r = post(&crvs, "/notification", &t, &body);
            assert_eq!(r.status(), status, "{needle}");
            let b: Value = r.json().unwrap();
            assert_eq!(b["statusCode"], status);
            let msg = b["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{msg}");
        };

        let mut b = birth_bundle();
        b["entry"][1]["resource"]["status"] = json!("requested");
        expect(b, 400, "Task.status");
        let mut b = birth_bundle();
        b["entry"][1]["resource"]["focus"]["reference"] = json!(CHILD);
        expect(b, 400, "Task.focus");
        let mut b = birth_bundle();
        b["type"] = json!("transaction");
        expect(b, 400, "document");
        let mut b = birth_bundle();
        b["entry"][2]["resource"]["name"][0]["family"] = json!(["Mwale"]);
        expect(b, 400, "family");
        let mut b = birth_bundle();
        b["entry"][2]["fullUrl"] = json!("Patient/1");
        expect(b, 400, "urn:uuid");
        let mut b = birth_bundle();
        b["entry"][6]["resource"]
            .as_object_mut()
            .unwrap()
            .remove("context");
        b["entry"][6]["resource"]["encounter"] = json!({"reference": ENC});
        expect(b, 400, "context");

        let mut b = birth_bundle();
        b["entry"][1]["resource"]["extension"][1]["valueReference"]["reference"] =
            json!("Location/office-nowhere");
        expect(
            b,
            500,
            "Could not process the Event Notification, unknown CRVS office",
        );
        let mut b = birth_bundle();
        b["entry"][3]["resource"]["address"][0]
            .as_object_mut()
            .unwrap()
            .remove("country");
        expect(
            b,
            500,
            "Could not process the Event Notification, an address",
        );
        let mut b = birth_bundle();
        b["entry"][3]["resource"]["address"][0]["state"] = json!("state-other");
        expect(b, 500, "state");
        let mut b = birth_bundle();
        b["entry"][5]["resource"]["location"][0]["location"]["reference"] =
            json!("Location/facility-nowhere");
        expect(b, 500, "unknown health facility");
        let mut b = birth_bundle();
        b["entry"][6]["resource"]["valueQuantity"] =
            json!({"value": 3200, "unit": "g", "code": "g"});
        expect(b, 500, "kg");
        let mut b = birth_bundle();
        b["entry"]
            .as_array_mut()
            .unwrap()
            .retain(|e| e["resource"]["resourceType"] != "Patient");
        expect(b, 500, "no Patient");

        // A foreign address needs no admin areas.
        let mut b = birth_bundle();
        b["entry"][3]["resource"]["address"] =
            json!([{"type": "PRIMARY_ADDRESS", "country": "KEN", "city": "Nairobi"}]);
        assert_eq!(post(&crvs, "/notification", &t, &b).status(), 200);
        assert_eq!(crvs.notifications().len(), 1);
    }

    #[test]
    fn events_v19_create_and_notify_are_idempotent() {
        let crvs = OpenCrvs::start(Config::demo(Mode::EventsV19)).unwrap();
        let t = token(&crvs);
        let create = json!({"type": "birth", "transactionId": "tx-create-1"});
        let a: Value = post(&crvs, "/events/events", &t, &create).json().unwrap();
        let b: Value = post(&crvs, "/events/events", &t, &create).json().unwrap();
        assert_eq!(a["id"], b["id"]);
        assert_eq!(a["actions"][0]["type"], "CREATE");
        let event_id = a["id"].as_str().unwrap();

        let notify = json!({
            "eventId": event_id,
            "transactionId": "tx-notify-1",
            "type": "NOTIFY",
            "createdAtLocation": "facility-ibombo-hc",
            "declaration": {
                "child.name": {"firstname": "Chanda", "surname": "Mwale"},
                "child.dob": "2024-04-30",
                "child.weightAtBirth": 3.2,
                "child.birthLocation": "facility-ibombo-hc"
            },
            "annotation": {}
        });
        let path = "/events/events/notifications";
        let r1 = post(&crvs, path, &t, &notify);
        assert_eq!(r1.status(), 200);
        let e1: Value = r1.json().unwrap();
        assert_eq!(e1["actions"].as_array().unwrap().len(), 2);
        assert_eq!(e1["actions"][1]["type"], "NOTIFY");
        let e2: Value = post(&crvs, path, &t, &notify).json().unwrap();
        assert_eq!(e2["actions"].as_array().unwrap().len(), 2);
        let records = crvs.notifications();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].transaction_id.as_deref(), Some("tx-notify-1"));
        assert_eq!(records[0].tracking_id, a["trackingId"].as_str().unwrap());
        assert_eq!(records[0].body["child.dob"], "2024-04-30");

        let mut unexpected = notify.clone();
        unexpected["transactionId"] = json!("tx-notify-2");
        unexpected["declaration"]["child.favouriteColour"] = json!("blue");
        unexpected["declaration"]["child.dob"] = json!("30/04/2024");
        let r = post(&crvs, path, &t, &unexpected);
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().unwrap(),
            json!([
                {"message": "Invalid input", "id": "child.dob"},
                {"message": "Unexpected field", "id": "child.favouriteColour"}
            ])
        );

        let mut name = notify.clone();
        name["transactionId"] = json!("tx-notify-3");
        name["declaration"] = json!({"child.name": "Chanda Mwale"});
        let r = post(&crvs, path, &t, &name);
        assert_eq!(
            r.json::<Value>().unwrap(),
            json!([{"message": "Invalid input", "id": "child.name"}])
        );

        let mut location = notify.clone();
        location["createdAtLocation"] = json!("somewhere");
        let r = post(&crvs, path, &t, &location);
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().unwrap()["message"], BAD_LOCATION);

        let mut unknown = notify.clone();
        unknown["eventId"] = json!("no-such-event");
        assert_eq!(post(&crvs, path, &t, &unknown).status(), 404);

        let r = post(&crvs, path, &t, &json!({"eventId": event_id}));
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().unwrap(), json!({"message": INPUT_FAILED}));

        assert_eq!(
            post(&crvs, "/events/events/notify", &t, &notify).status(),
            404
        );
        assert_eq!(crvs.notifications().len(), 1);
    }

    #[test]
    fn events_need_scopes() {
        let mut config = Config::demo(Mode::EventsV19);
        config.scopes_override = Some(Vec::new());
        let crvs = OpenCrvs::start(config).unwrap();
        let t = token(&crvs);
        let r = post(
            &crvs,
            "/events/events",
            &t,
            &json!({"type": "death", "transactionId": "tx-1"}),
        );
        assert_eq!(r.status(), 403);
    }

    #[test]
    fn events_v20_one_call_notify() {
        let crvs = OpenCrvs::start(Config::demo(Mode::EventsV20)).unwrap();
        assert!(crvs.auth_url().ends_with("/auth"));
        let t = token(&crvs);
        let notify = json!({
            "eventType": "death",
            "transactionId": "tx-death-1",
            "createdAtLocation": "office-ibombo",
            "declaration": {
                "deceased.name": {"firstname": "Bwalya", "surname": "Phiri"},
                "deceased.gender": "male",
                "eventDetails.date": "2024-05-02",
                "eventDetails.deathLocation": "facility-ibombo-hc"
            },
            "annotation": {}
        });
        let a: Value = post(&crvs, "/events/events/notify", &t, &notify)
            .json()
            .unwrap();
        let b: Value = post(&crvs, "/events/events/notify", &t, &notify)
            .json()
            .unwrap();
        assert_eq!(a["id"], b["id"]);
        assert_eq!(b["actions"].as_array().unwrap().len(), 2);
        assert!(a["trackingId"].as_str().unwrap().starts_with('D'));
        assert_eq!(crvs.notifications().len(), 1);
        assert_eq!(crvs.notifications()[0].event, "death");

        let mut unknown = notify.clone();
        unknown["eventType"] = json!("marriage");
        unknown["transactionId"] = json!("tx-2");
        assert_eq!(
            post(&crvs, "/events/events/notify", &t, &unknown).status(),
            400
        );

        // Two-step in v2.0: the notify path carries the event id.
        let created: Value = post(
            &crvs,
            "/events/events",
            &t,
            &json!({"type": "birth", "transactionId": "tx-3"}),
        )
        .json()
        .unwrap();
        let path = format!("/events/events/{}/notify", created["id"].as_str().unwrap());
        let step = json!({
            "transactionId": "tx-4",
            "createdAtLocation": "office-ibombo",
            "declaration": {"child.gender": "female"}
        });
        assert_eq!(post(&crvs, &path, &t, &step).status(), 200);
        assert_eq!(crvs.notifications().len(), 2);
        let v19_path = "/events/events/notifications";
        assert_eq!(post(&crvs, v19_path, &t, &step).status(), 404);

        assert_eq!(
            post(&crvs, "/notification", &t, &birth_bundle()).status(),
            404
        );
        let locations: Value = client()
            .get(format!("{}/location?type=CRVS_OFFICE", crvs.gateway_url()))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(locations["entry"][0]["resource"]["id"], "office-ibombo");
        assert_eq!(locations["total"], 1);
    }

    #[test]
    fn legacy_has_no_events_api() {
        let crvs = OpenCrvs::start(Config::demo(Mode::Legacy)).unwrap();
        let t = token(&crvs);
        let r = post(
            &crvs,
            "/events/events",
            &t,
            &json!({"type": "birth", "transactionId": "tx"}),
        );
        assert_eq!(r.status(), 404);
    }

    #[test]
    fn injected_failures_commit_nothing_and_hangs_commit() {
        let crvs = OpenCrvs::start(Config::demo(Mode::Legacy)).unwrap();
        let t = token(&crvs);
        crvs.faults.fail_next_retry_after(1, 503, 7);
        let r = post(&crvs, "/notification", &t, &birth_bundle());
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "7");
        assert!(crvs.notifications().is_empty());

        crvs.faults.fail_next(1, 500);
        assert_eq!(
            post(&crvs, "/notification", &t, &birth_bundle()).status(),
            500
        );
        assert!(crvs.notifications().is_empty());

        crvs.faults.commit_then_hang(1, Duration::from_secs(3));
        let hung = Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap()
            .post(format!("{}/notification", crvs.gateway_url()))
            .bearer_auth(&t)
            .json(&birth_bundle())
            .send();
        assert!(hung.unwrap_err().is_timeout());
        assert_eq!(crvs.notifications().len(), 1);

        let statuses: Vec<u16> = crvs
            .requests()
            .iter()
            .filter(|l| l.path == "/notification")
            .map(|l| l.status)
            .collect();
        assert_eq!(statuses, vec![503, 500, 200]);
    }

    #[test]
    fn goes_down_and_comes_back_with_its_records() {
        let mut crvs = OpenCrvs::start(Config::demo(Mode::Legacy)).unwrap();
        let t = token(&crvs);
        assert_eq!(
            post(&crvs, "/notification", &t, &birth_bundle()).status(),
            200
        );
        crvs.go_down();
        let down = client()
            .post(format!("{}/notification", crvs.gateway_url()))
            .send();
        assert!(down.unwrap_err().is_connect());
        crvs.resume().unwrap();
        assert_eq!(
            post(&crvs, "/notification", &t, &birth_bundle()).status(),
            200
        );
        assert_eq!(crvs.notifications().len(), 2);
    }

    #[test]
    fn modes_parse() {
        for m in [Mode::Legacy, Mode::EventsV19, Mode::EventsV20] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
        assert_eq!(Mode::parse("v3"), None);
    }
}
