//! Operating the outbox: the same operations for `kiunga outbox …` and `/admin/outbox`.
//! Items name records by id only; no operation shows what was sent (that is patient data).

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use serde_json::{json, Value};

use crate::error::Error;
use crate::store::outbox::{self as store, ItemRow};

const STATUSES: &[&str] = &["pending", "delivered", "dead", "unknown", "skipped"];

pub fn status(conn: &mut PgConnection) -> Result<Value, Error> {
    let rows = store::status(conn)?;
    let mut targets = serde_json::Map::new();
    for r in rows {
        let t = targets.entry(r.target.clone()).or_insert_with(|| json!({}));
        t[&r.status] = json!(r.items);
        if r.status == "pending" {
            t["oldest_pending_seconds"] = json!(r.oldest_seconds.unwrap_or(0.0).round());
        }
    }
    Ok(json!({ "targets": targets }))
}

pub fn list(
    conn: &mut PgConnection,
    target: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Value, Error> {
    if let Some(s) = status {
        if !STATUSES.contains(&s) {
            return Err(Error::Invalid {
                message: format!("status `{s}` is not one of {}", STATUSES.join(", ")),
                expression: None,
            });
        }
    }
    let rows = store::items(conn, target, status, limit.clamp(1, 1000))?;
    Ok(json!({ "items": rows.iter().map(item_json).collect::<Vec<_>>() }))
}

pub fn show(conn: &mut PgConnection, id: i64) -> Result<Value, Error> {
    store::item(conn, id)?
        .map(|r| item_json(&r))
        .ok_or_else(|| Error::NotFound(format!("outbox item {id} does not exist")))
}

pub fn item_json(r: &ItemRow) -> Value {
    let resource = match r.kind.as_str() {
        "Patient" | "Encounter" | "Observation" => format!("{}/{}", r.kind, r.resource_uid),
        other => format!("{other} notification of Patient/{}", r.person_uid),
    };
    json!({
        "id": r.id,
        "target": r.target,
        "resource": resource,
        "person": format!("Patient/{}", r.person_uid),
        "operation": r.operation,
        "version": r.version,
        "status": r.status,
        "attempts": r.attempts,
        "created_at": r.created_at,
        "next_attempt_at": r.next_attempt_at,
        "last_attempt_at": r.last_attempt_at,
        "delivered_at": r.delivered_at,
        "in_flight": r.lease_until.is_some_and(|l| l > Utc::now()),
        "outcome_uncertain": r.uncertain,
        "error_kind": r.error_kind,
        "error": r.last_error,
        "target_status": r.last_status,
        "remote_id": r.remote_id,
    })
}

pub fn retry(conn: &mut PgConnection, id: i64) -> Result<Value, Error> {
    let before = show(conn, id)?;
    if store::retry(conn, id)? {
        tracing::info!(
            item = id,
            "outbox: item put back in the queue by an operator"
        );
        show(conn, id)
    } else {
        Err(Error::Conflict {
            message: format!(
                "outbox item {id} is {}: only dead, unknown or skipped items can be retried",
                before["status"].as_str().unwrap_or("?")
            ),
            expression: None,
        })
    }
}

pub fn skip(conn: &mut PgConnection, id: i64, why: &str) -> Result<Value, Error> {
    let before = show(conn, id)?;
    if store::skip(conn, id, why)? {
        tracing::info!(item = id, "outbox: item skipped by an operator");
        show(conn, id)
    } else {
        Err(Error::Conflict {
            message: format!(
                "outbox item {id} is {}: only pending, dead or unknown items can be skipped",
                before["status"].as_str().unwrap_or("?")
            ),
            expression: None,
        })
    }
}

/// Queues again, for one target or all, every record changed since `since` (its current state;
/// targets with a remote id get an update, so a replay never duplicates).
pub fn replay(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
    target: Option<&str>,
) -> Result<Value, Error> {
    use diesel::Connection;
    let queued = conn.transaction(|c| -> Result<usize, Error> {
        let changes = store::changes_since(c, since)?;
        let mut n = 0;
        // Grouped by actor, so that a target's own changes are still not sent back to it.
        let mut by_actor: std::collections::BTreeMap<String, Vec<store::Changed>> =
            Default::default();
        for (change, actor) in changes {
            by_actor.entry(actor).or_default().push(change);
        }
        for (actor, changes) in by_actor {
            n += store::enqueue(c, &changes, &actor, target)?;
        }
        Ok(n)
    })?;
    tracing::info!(queued, %since, "outbox: replay queued");
    Ok(json!({ "queued": queued, "since": since }))
}
