//! Talking to a target over HTTP: one blocking client per target, and the one place an answer
//! (or its absence) is classified into delivered / retry / rejected.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use super::worker::Job;
use super::{brief, Outcome};
use crate::error::Error;

/// The attempt of an item at which a 500 is given up on (the item's earlier attempts count,
/// whatever ended them): OpenMRS answers some malformed input with a 500 (a bug's stack trace,
/// not a busy server), which no number of retries fixes.
pub const MAX_500: i32 = 6;

pub fn client(timeout: Duration) -> Result<Client, String> {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// An answer with a status the caller handles itself.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Sends; a transport failure becomes the Outcome to settle with. `writes` says whether the
/// request changes the target: then a timeout or reset leaves its outcome unknown.
pub fn send(req: RequestBuilder, writes: bool) -> Result<Answer, Outcome> {
    match req.send() {
        Ok(resp) => Ok(read(resp)),
        Err(e) if e.is_connect() => Err(Outcome::retry(
            "unreachable",
            format!("cannot connect to the target: {}", root_cause(&e)),
        )),
        Err(e) if e.is_timeout() => Err(Outcome::Retry {
            kind: "timeout",
            message: "the target did not answer in time".into(),
            status: None,
            after: None,
            uncertain: writes,
        }),
        Err(e) => Err(Outcome::Retry {
            kind: "transport",
            message: format!("the connection failed: {}", root_cause(&e)),
            status: None,
            after: None,
            uncertain: writes,
        }),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn read(resp: Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// What the target said, for a person: an OperationOutcome's diagnostics, a JSON `message`,
/// else the start of the body with markup removed.
pub fn message(a: &Answer) -> String {
    if let Some(issues) = a.body.get("issue").and_then(Value::as_array) {
        let said: Vec<&str> = issues
            .iter()
            .filter_map(|i| {
                i.get("diagnostics")
                    .or_else(|| i.pointer("/details/text"))
                    .and_then(Value::as_str)
            })
            .collect();
        if !said.is_empty() {
            return brief(&said.join("; "));
        }
    }
    if let Some(m) = a.body.get("message").and_then(Value::as_str) {
        return brief(m);
    }
    let mut plain = String::new();
    let mut in_tag = false;
    for c in a.text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                plain.push(' ');
            }
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    brief(&plain)
}

/// The Outcome of an answer that is not a success the caller handles: what to retry, what is
/// final. `attempts` counts this one.
pub fn failure(a: &Answer, attempts: i32) -> Outcome {
    failure_of(a, attempts, false)
}

/// [`failure`] of a request that writes: a 502 or 504 comes from a proxy that may have passed
/// the request on before giving up, so the record may exist (as after a timeout).
pub fn write_failure(a: &Answer, attempts: i32) -> Outcome {
    failure_of(a, attempts, true)
}

fn failure_of(a: &Answer, attempts: i32, writes: bool) -> Outcome {
    let said = message(a);
    let status = Some(a.status);
    match a.status {
        401 | 403 => Outcome::Retry {
            kind: "unauthorized",
            message: format!(
                "the target refused our credentials (HTTP {}): check the credential variables of the target file; {said}",
                a.status
            ),
            status,
            after: None,
            uncertain: false,
        },
        429 => Outcome::Retry {
            kind: "busy",
            message: format!("the target asked us to slow down (429): {said}"),
            status,
            after: retry_after(&a.headers),
            uncertain: false,
        },
        502..=504 => Outcome::Retry {
            kind: "unavailable",
            message: format!("the target is unavailable (HTTP {}): {said}", a.status),
            status,
            after: retry_after(&a.headers),
            uncertain: writes && a.status != 503,
        },
        500 if attempts >= MAX_500 => Outcome::rejected(
            "target-error",
            format!("the target failed on this record (HTTP 500) at its attempt {attempts}, the last one a 500 gets: {said}"),
            status,
        ),
        500..=599 => Outcome::Retry {
            kind: "target-error",
            message: format!("the target failed (HTTP {}): {said}", a.status),
            status,
            after: None,
            uncertain: false,
        },
        _ => Outcome::rejected("rejected", said, status),
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// Deletes the target's copy of `kind/uid` (a FHIR DELETE of its id); nothing when it was never
/// sent.
pub fn delete(job: &mut Job, kind: &str, uid: &str) -> Result<Outcome, Error> {
    let Some(remote) = job.remote_id(kind, uid)? else {
        return Ok(Outcome::Skipped {
            message: "deleted before it was ever sent: nothing to delete on the target".into(),
        });
    };
    let url = format!("{}/{kind}/{remote}", job.base);
    let answer = match send(job.request(reqwest::Method::DELETE, &url), true) {
        Ok(a) => a,
        Err(o) => return Ok(o),
    };
    match answer.status {
        200..=299 | 404 | 410 => {
            job.forget_remote(kind, uid)?;
            Ok(Outcome::Delivered {
                remote_id: Some(remote),
            })
        }
        _ => Ok(write_failure(&answer, job.item.attempts)),
    }
}

/// The id a FHIR create answered with: the body's `id`, else the `Location` header's.
pub fn created_id(a: &Answer) -> Option<String> {
    if let Some(id) = a.body.get("id").and_then(Value::as_str) {
        return Some(id.to_string());
    }
    let loc = a
        .headers
        .get(reqwest::header::LOCATION)
        .or_else(|| a.headers.get(reqwest::header::CONTENT_LOCATION))?
        .to_str()
        .ok()?;
    let path = loc.split("/_history").next()?;
    path.rsplit('/').next().map(str::to_string)
}

/// A search made to find what an earlier attempt may have created. Any failure is a retry that
/// stays uncertain: a look-up refused is not the record refused.
pub fn look(job: &Job, url: &str) -> Result<Answer, Outcome> {
    let uncertain = |o: Outcome| match o {
        Outcome::Rejected {
            message, status, ..
        } => Outcome::Retry {
            kind: "lookup-failed",
            message: format!("cannot look the record up on the target: {message}"),
            status,
            after: None,
            uncertain: true,
        },
        Outcome::Retry {
            kind,
            message,
            status,
            after,
            ..
        } => Outcome::Retry {
            kind,
            message,
            status,
            after,
            uncertain: true,
        },
        other => other,
    };
    match send(job.request(reqwest::Method::GET, url), false) {
        Ok(a) if a.status == 200 => Ok(a),
        Ok(a) => Err(uncertain(failure(&a, 0))),
        Err(o) => Err(uncertain(o)),
    }
}

/// Percent-encodes a search parameter value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// How a FHIR kind creates or updates `kind/uid` on its target (`uncertain`: look first).
pub type Push = fn(&mut Job, &str, &str, bool) -> Result<Outcome, Error>;

/// Delivers a record item of a FHIR kind: a delete is a FHIR DELETE, anything else `push`.
/// `Err` is our own failure (the database), retried like a transient one.
pub fn deliver_record(job: &mut Job, push: Push) -> Result<Outcome, Error> {
    let kind = job.item.kind.clone();
    let uid = job.item.resource_uid.clone();
    if job.item.operation == "delete" {
        return delete(job, &kind, &uid);
    }
    let uncertain = job.item.uncertain;
    push(job, &kind, &uid, uncertain)
}

/// The target's id of a record our item depends on, sent first (by `push`) when the target has
/// never had it. `Err(outcome)`: the dependency could not be sent; the item settles with that.
pub fn ensure(
    job: &mut Job,
    kind: &str,
    uid: &str,
    push: Push,
) -> Result<Result<String, Outcome>, Error> {
    if let Some(id) = job.remote_id(kind, uid)? {
        return Ok(Ok(id));
    }
    // A dependency never sent by us may still have been sent by an attempt whose answer was
    // lost: it is pushed as uncertain (looked up first).
    match push(job, kind, uid, true)? {
        Outcome::Delivered {
            remote_id: Some(id),
        } => Ok(Ok(id)),
        Outcome::Delivered { remote_id: None } | Outcome::Skipped { .. } => {
            Ok(Err(Outcome::rejected(
                "dependency",
                format!(
                    "{kind} {uid}, which this record refers to, could not be sent (it was deleted)"
                ),
                None,
            )))
        }
        Outcome::Rejected {
            kind: k,
            message,
            status,
        } => Ok(Err(Outcome::Rejected {
            kind: k,
            message: format!("{kind} {uid}, which this record refers to, was refused: {message}"),
            status,
        })),
        other => Ok(Err(other)),
    }
}
