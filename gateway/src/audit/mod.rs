//! The record of every access to patient data (issue #10), kept in the append-only `audit_event`
//! table and served as FHIR `AuditEvent`.
//!
//! One row per request: a request that wrote is recorded inside its own database transaction, with
//! what it wrote ([`crate::store::Scoped::transaction`]), so a write and its record commit or vanish
//! together; any other request (a read, a search, an operation that only reads, a refusal, a
//! failure) is recorded from what it answered, when it answers ([`Access::finish`]), through the
//! [`Sink`], which writes such rows in batches off the request path.

mod render;
mod sink;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use actix_web::HttpRequest;
use serde_json::Value;

pub use render::{page, render, search};
pub use sink::Sink;

use crate::store::audit::NewAuditRow;

/// Resource types that hold or point at a person's data: requests about them are recorded.
pub const PATIENT_DATA: &[&str] = &[
    "Patient",
    "Encounter",
    "Observation",
    "RelatedPerson",
    "EpisodeOfCare",
    "Group",
    "AuditEvent",
];

/// A request about patient data, as the HTTP layer saw it: what its AuditEvent will say, whoever
/// writes it. Shared by the request's context and the handler's answer.
#[derive(Debug)]
pub struct Access {
    pub agent: String,
    pub request_id: String,
    /// AuditEvent.action: C, R, U, D or E.
    pub action: char,
    subtype: Mutex<String>,
    pub resource_type: Option<String>,
    pub query: Option<String>,
    pub source_ip: Option<String>,
    pub purpose: Option<String>,
    /// Set once a row for this request is committed (by the write's transaction).
    recorded: AtomicBool,
    /// Rows committed by the request's units of work (a batch runs one per entry).
    written: AtomicUsize,
}

/// What a unit of work wrote: `Type/id` of each record and of the people they belong to.
#[derive(Debug, Default, Clone)]
pub struct Touched {
    pub entity: BTreeSet<String>,
    pub patient: BTreeSet<String>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.entity.is_empty()
    }

    pub fn extend(&mut self, other: Touched) {
        self.entity.extend(other.entity);
        self.patient.extend(other.patient);
    }

    /// A written version: the record, and its person as the change-log snapshot names her.
    pub fn written(&mut self, resource_type: &str, uid: &str, state: Option<&Value>) {
        self.entity.insert(format!("{resource_type}/{uid}"));
        if resource_type == "Patient" {
            self.patient.insert(format!("Patient/{uid}"));
        }
        let Some(state) = state else { return };
        for key in ["trackedEntity", "tracked_entity", "from", "to"] {
            if let Some(p) = state.get(key).and_then(Value::as_str) {
                self.patient.insert(format!("Patient/{p}"));
            }
        }
    }
}

impl Access {
    /// The access a request makes, or None when it touches no patient data (metadata,
    /// terminology, org units, the token endpoint).
    pub fn of_request(req: &HttpRequest, agent: String, request_id: &str) -> Option<Access> {
        let path = req.path().strip_prefix("/fhir")?;
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method().as_str();
        let (action, subtype, resource_type) = match (method, segments.as_slice()) {
            ("POST", [""]) => ('E', "transaction".to_string(), None),
            (_, [op]) if op.starts_with("$mdm-") => ('E', op.to_string(), None),
            (_, [t, ..]) if !PATIENT_DATA.contains(t) => return None,
            (_, [t, op]) | (_, [t, _, op]) if op.starts_with('$') => {
                let action = if *op == "$everything" { 'R' } else { 'E' };
                (action, op.to_string(), Some(*t))
            }
            ("GET", [t]) | ("GET" | "POST", [t, "_search"]) => {
                ('E', "search-type".into(), Some(*t))
            }
            ("GET", [t, "_history"]) => ('R', "history-type".into(), Some(*t)),
            ("GET", [t, _]) => ('R', "read".into(), Some(*t)),
            ("GET", [t, _, "_history"]) => ('R', "history-instance".into(), Some(*t)),
            ("GET", [t, _, "_history", _]) => ('R', "vread".into(), Some(*t)),
            ("POST", [t]) => ('C', "create".into(), Some(*t)),
            ("PUT", [t, ..]) => ('U', "update".into(), Some(*t)),
            ("DELETE", [t, ..]) => ('D', "delete".into(), Some(*t)),
            (_, [t, ..]) => ('E', method.to_ascii_lowercase(), Some(*t)),
            _ => return None,
        };
        let query = Some(req.query_string())
            .filter(|q| !q.is_empty())
            .map(str::to_string);
        let purpose = req
            .headers()
            .get("x-purpose-of-use")
            .and_then(|h| h.to_str().ok())
            .map(|p| p.chars().take(64).collect());
        Some(Access {
            agent,
            request_id: request_id.to_string(),
            action,
            subtype: Mutex::new(subtype),
            resource_type: resource_type.map(str::to_string),
            query,
            source_ip: req.peer_addr().map(|a| a.ip().to_string()),
            purpose,
            recorded: AtomicBool::new(false),
            written: AtomicUsize::new(0),
        })
    }

    /// Names the interaction more exactly once the handler knows it (a Bundle's `batch`).
    pub fn set_subtype(&self, subtype: &str) {
        match self.subtype.lock() {
            Ok(mut s) => *s = subtype.to_string(),
            Err(poisoned) => *poisoned.into_inner() = subtype.to_string(),
        }
    }

    fn subtype(&self) -> String {
        match self.subtype.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// Called once the transaction that held this request's row has committed, or once every
    /// part of the request has its row.
    pub fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }

    /// Called when a unit of work's row has committed.
    pub fn mark_written(&self) {
        self.written.fetch_add(1, Ordering::AcqRel);
        self.mark_recorded();
    }

    pub fn written_rows(&self) -> usize {
        self.written.load(Ordering::Acquire)
    }

    /// The row of one batch entry that wrote nothing, from its entry in the batch-response.
    pub fn entry_row(&self, entry: &Value) -> NewAuditRow {
        let status = entry
            .pointer("/response/status")
            .and_then(Value::as_str)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let said = entry
            .pointer("/response/outcome/issue/0/diagnostics")
            .and_then(Value::as_str)
            .map(str::to_string);
        let body = entry.get("resource");
        self.answered_row(status, body, None, said)
    }

    /// The row a write's transaction inserts: what it wrote, committed with it.
    pub fn written_row(&self, touched: &Touched) -> NewAuditRow {
        self.row(touched, None, 0, Some("committed".into()))
    }

    /// The row of a request that wrote nothing, from its answer: the records it returned (or the
    /// `Location` it pointed at) and its status; for a refusal or failure, what the caller was told.
    pub fn answered_row(
        &self,
        status: u16,
        body: Option<&Value>,
        location: Option<&str>,
        message: Option<String>,
    ) -> NewAuditRow {
        let mut touched = Touched::default();
        if let Some(b) = body {
            collect(b, &mut touched);
        }
        if let Some(l) = location.and_then(reference_of) {
            if l.starts_with("Patient/") {
                touched.patient.insert(l.clone());
            }
            touched.entity.insert(l);
        }
        let outcome = match status {
            0..=399 => 0,
            400..=499 => 4,
            _ => 8,
        };
        self.row(&touched, Some(status as i16), outcome, message)
    }

    fn row(
        &self,
        touched: &Touched,
        status: Option<i16>,
        outcome: i16,
        desc: Option<String>,
    ) -> NewAuditRow {
        // Postgres text cannot hold NUL, which a caller can put in a query (`%00`) and an error
        // message then quotes: a row it refused would hold back the writer.
        let text = |s: &str| s.replace('\0', "");
        let opt = |s: &Option<String>| s.as_deref().map(text);
        NewAuditRow {
            recorded: chrono::Utc::now(),
            request_id: Some(text(&self.request_id)),
            agent: text(&self.agent),
            action: self.action.to_string(),
            subtype: text(&self.subtype()),
            resource_type: opt(&self.resource_type),
            query: opt(&self.query),
            entity: touched.entity.iter().map(|e| text(e)).collect(),
            patient: touched.patient.iter().map(|e| text(e)).collect(),
            http_status: status,
            outcome,
            outcome_desc: opt(&desc),
            source_ip: opt(&self.source_ip),
            purpose: opt(&self.purpose),
        }
    }
}

/// The records of patient data in an answer and the people they belong to (a read entry of a
/// transaction Bundle, recorded with what the Bundle wrote).
pub fn returned(answer: &Value) -> Touched {
    let mut t = Touched::default();
    collect(answer, &mut t);
    t
}

/// `Patient/abc` from a reference or a location (`http://h/fhir/Patient/abc/_history/2`), when it
/// names a record of patient data.
fn reference_of(r: &str) -> Option<String> {
    let parts: Vec<&str> = r.split('/').collect();
    let at = parts.iter().rposition(|p| PATIENT_DATA.contains(p))?;
    let id = parts
        .get(at + 1)
        .filter(|id| !id.is_empty() && !id.starts_with('$'))?;
    Some(format!("{}/{id}", parts[at]))
}

/// Every record of patient data in an answer (a resource, the entries of a Bundle, the resources
/// of a Parameters), and every person referred to in it.
fn collect(v: &Value, out: &mut Touched) {
    match v {
        Value::Object(map) => {
            if let (Some(t), Some(id)) = (
                map.get("resourceType").and_then(Value::as_str),
                map.get("id").and_then(Value::as_str),
            ) {
                if PATIENT_DATA.contains(&t) && t != "AuditEvent" && t != "Group" {
                    out.entity.insert(format!("{t}/{id}"));
                    if t == "Patient" {
                        out.patient.insert(format!("Patient/{id}"));
                    }
                }
                if t == "AuditEvent" {
                    // The trail itself: its entities are other accesses, not this one's.
                    return;
                }
            }
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("reference", Value::String(r)) => {
                        if let Some(p) = reference_of(r).filter(|p| p.starts_with("Patient/")) {
                            out.patient.insert(p);
                        }
                    }
                    ("location", Value::String(l)) => {
                        if let Some(e) = reference_of(l) {
                            out.entity.insert(e);
                        }
                    }
                    _ => collect(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| collect(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_names_its_records_and_their_people() {
        let bundle = json!({
            "resourceType": "Bundle", "type": "searchset",
            "entry": [
                {"resource": {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}},
                {"resource": {"resourceType": "Patient", "id": "p2"}},
                {"response": {"status": "201 Created", "location": "Encounter/e1/_history/1"}},
                {"resource": {"resourceType": "Organization", "id": "org", "partOf": {"reference": "Organization/x"}}}
            ]
        });
        let mut t = Touched::default();
        collect(&bundle, &mut t);
        let entity: Vec<&str> = t.entity.iter().map(String::as_str).collect();
        assert_eq!(entity, ["Encounter/e1", "Observation/o1", "Patient/p2"]);
        let patient: Vec<&str> = t.patient.iter().map(String::as_str).collect();
        assert_eq!(patient, ["Patient/p1", "Patient/p2"]);
    }

    #[test]
    fn references_and_locations_are_read_to_type_and_id() {
        assert_eq!(
            reference_of("http://h/fhir/Patient/abc/_history/2").as_deref(),
            Some("Patient/abc")
        );
        assert_eq!(reference_of("Organization/x"), None);
        assert_eq!(reference_of("Patient/$match"), None);
        assert_eq!(reference_of("urn:uuid:1234"), None);
    }

    #[test]
    fn a_write_names_the_person_of_what_it_wrote() {
        let mut t = Touched::default();
        t.written(
            "Observation",
            "o1",
            Some(&json!({"trackedEntity": "p1", "value": "12"})),
        );
        t.written(
            "RelatedPerson",
            "r1",
            Some(&json!({"from": "m1", "to": "c1"})),
        );
        assert!(t.patient.contains("Patient/p1"));
        assert!(t.patient.contains("Patient/m1") && t.patient.contains("Patient/c1"));
        assert_eq!(t.entity.len(), 2);
    }
}
