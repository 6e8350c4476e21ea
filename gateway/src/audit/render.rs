//! Access records as FHIR R4 `AuditEvent` (the shape IHE BALP gives RESTful accesses), and their
//! search: `entity`, `patient`, `agent`, `date`, `subtype`, `action`, `outcome`, `_count`,
//! `_offset`.

use base64::Engine;
use serde_json::{json, Value};

use crate::error::Error;
use crate::fhir::bundle::{self, SearchEntry};
use crate::fhir::search::{paging, paging_links, query_with_offset, Param};
use crate::rest::search::{date_range, prefix, Prefix};
use crate::store::audit::{AuditRow, Filter};

/// The identifier system of API clients in `AuditEvent.agent.who`.
pub const CLIENT_SYSTEM: &str = "urn:kiunga:client";

const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const OPERATION: &str = "urn:kiunga:operation";

pub fn render(r: &AuditRow) -> Value {
    let (who, requestor) = match r.agent.strip_prefix("client:") {
        Some(id) => (
            json!({ "identifier": { "system": CLIENT_SYSTEM, "value": id }, "display": format!("API client {id}") }),
            true,
        ),
        None => (json!({ "display": r.agent }), true),
    };
    let mut agent = json!({
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient" }] },
        "who": who,
        "requestor": requestor,
    });
    if let Some(ip) = &r.source_ip {
        agent["network"] = json!({ "address": ip, "type": "2" });
    }
    let subtype = if r.subtype.starts_with('$') {
        json!({ "system": OPERATION, "code": r.subtype })
    } else {
        json!({ "system": INTERACTION, "code": r.subtype })
    };
    let mut entity: Vec<Value> = r
        .entity
        .iter()
        .map(|e| {
            let role = if e.starts_with("Patient/") {
                json!({ "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" })
            } else {
                json!({ "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource" })
            };
            json!({
                "what": { "reference": e },
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
                "role": role,
            })
        })
        .collect();
    for p in r.patient.iter().filter(|p| !r.entity.contains(p)) {
        entity.push(json!({
            "what": { "reference": p },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
        }));
    }
    if let Some(q) = &r.query {
        entity.push(json!({
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query" },
            "query": base64::engine::general_purpose::STANDARD.encode(q),
        }));
    }
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": r.id.to_string(),
        "meta": { "lastUpdated": crate::fhir::instant(&r.recorded) },
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" },
        "subtype": [subtype],
        "action": r.action,
        "recorded": crate::fhir::instant(&r.recorded),
        "outcome": r.outcome.to_string(),
        "agent": [agent],
        "source": {
            "observer": { "display": "Kiunga gateway" },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
        },
    });
    let mut desc: Vec<String> = Vec::new();
    if let Some(s) = r.http_status {
        desc.push(format!("HTTP {s}"));
    }
    if let Some(d) = &r.outcome_desc {
        desc.push(d.clone());
    }
    if let Some(t) = &r.resource_type {
        desc.push(format!("on {t}"));
    }
    if let Some(id) = &r.request_id {
        desc.push(format!("request {id}"));
    }
    ev["outcomeDesc"] = json!(desc.join("; "));
    if let Some(p) = &r.purpose {
        ev["purposeOfEvent"] = json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": p }] }]);
    }
    if !entity.is_empty() {
        ev["entity"] = Value::Array(entity);
    }
    ev
}

/// The filter, page and count an `AuditEvent` search asks for.
pub fn search(params: &[Param]) -> Result<(Filter, i64, i64), Error> {
    let (count, offset) = paging(params)?;
    let mut f = Filter::default();
    let list = |v: &str| {
        v.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for p in params {
        match (p.name.as_str(), p.modifier.as_deref()) {
            ("_count" | "_offset" | "_format" | "_pretty", _) => {}
            ("entity", None) => f.entity.extend(list(&p.value)),
            ("patient", None) => f.patient.extend(list(&p.value).into_iter().map(|v| {
                if v.contains('/') { v } else { format!("Patient/{v}") }
            })),
            ("agent", None) => f.agent.extend(list(&p.value).into_iter().map(|v| {
                let id = v.rsplit('|').next().unwrap_or(&v).to_string();
                match id.as_str() {
                    "anonymous" | "system" => id,
                    _ => format!("client:{}", id.trim_start_matches("client:")),
                }
            })),
            ("subtype", None) => f.subtype.extend(list(&p.value).into_iter().map(|v| v.rsplit('|').next().unwrap_or(&v).to_string())),
            ("action", None) => f.action.extend(list(&p.value)),
            ("outcome", None) => {
                for v in list(&p.value) {
                    f.outcome.push(v.parse().map_err(|_| Error::invalid(format!("outcome `{v}` is not an AuditEvent outcome (0, 4, 8 or 12)")))?);
                }
            }
            ("date", None) => {
                let (pre, v) = prefix(&p.value);
                let bad = || Error::invalid(format!("date `{}` is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime, with an optional prefix eq, lt, le, gt, ge)", p.value));
                let (lo, hi) = date_range(v).ok_or_else(bad)?;
                let (from, to) = match pre {
                    Prefix::Eq => (Some(lo), Some(hi)),
                    Prefix::Ge | Prefix::Sa => (Some(if pre == Prefix::Sa { hi } else { lo }), None),
                    Prefix::Gt => (Some(hi), None),
                    Prefix::Le => (None, Some(hi)),
                    Prefix::Lt | Prefix::Eb => (None, Some(lo)),
                    Prefix::Ne | Prefix::Ap => return Err(bad()),
                };
                if let Some(t) = from {
                    f.from = Some(f.from.map_or(t, |x| x.max(t)));
                }
                if let Some(t) = to {
                    f.to = Some(f.to.map_or(t, |x| x.min(t)));
                }
            }
            (name, _) => {
                return Err(Error::invalid(format!(
                    "unknown search parameter `{name}` for AuditEvent (known: entity, patient, agent, date, subtype, action, outcome, _count, _offset)"
                )))
            }
        }
    }
    Ok((f, offset, count))
}

/// A searchset of access records with paging links.
pub fn page(
    base: &str,
    params: &[Param],
    rows: &[AuditRow],
    total: i64,
    offset: i64,
    count: i64,
) -> Value {
    let url = format!("{base}/AuditEvent");
    let mut links = vec![(
        "self",
        format!("{url}?{}", query_with_offset(params, offset)),
    )];
    links.extend(paging_links(&url, params, offset, count, total));
    let entries = rows
        .iter()
        .map(|r| SearchEntry {
            resource: render(r),
            mode: "match",
        })
        .collect();
    bundle::searchset(base, entries, Some(total), links)
}
