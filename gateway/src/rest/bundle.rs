//! Transaction and batch Bundles (FHIR http.html#transaction).
//!
//! A transaction runs every entry in the caller's one database transaction, in the order the spec
//! gives (DELETE, POST, PUT/PATCH, GET/HEAD; POSTs of Patients before RelatedPersons and
//! EpisodesOfCare, before Encounters before Observations, so that references between new records resolve), rewrites `urn:uuid:`/`urn:oid:`
//! references to the new ids and resolves conditional references. Any failure fails the whole
//! Bundle, naming the entry. A batch runs each entry on its own (see [`batch_entry`]).

use crate::auth::scopes::Op;
use std::collections::HashMap;

use chrono::Utc;
use serde_json::{json, Value};

use super::{search, Body, Stored, STORED_TYPES};
use crate::error::Error;
use crate::fhir::instant;
use crate::fhir::outcome::{Issue, OperationOutcome};
use crate::fhir::search::parse_query;
use crate::fhir::Return;
use crate::store::pending::Seq;
use crate::store::{EntryAt, Scoped};
use crate::tracker::{identity, Env};

/// How the caller asked the Bundle to be handled.
#[derive(Debug, Clone)]
pub struct Options {
    pub lenient: bool,
    pub return_pref: Return,
    pub base: String,
}

/// One entry's `request`, parsed.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub resource_type: String,
    pub id: Option<String>,
    pub version: Option<i32>,
    pub query: Option<String>,
    pub if_none_exist: Option<String>,
    pub if_match: Option<String>,
    pub url: String,
}

/// The `response` of one entry.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: String,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub resource: Option<Value>,
    pub outcome: Option<Value>,
}

impl Answer {
    pub fn into_json(self) -> Value {
        let mut r = json!({ "status": self.status });
        if let Some(l) = self.location {
            r["location"] = Value::String(l);
        }
        if let Some(e) = self.etag {
            r["etag"] = Value::String(e);
        }
        if let Some(t) = self.last_modified {
            r["lastModified"] = Value::String(t);
        }
        if let Some(o) = self.outcome {
            r["outcome"] = o;
        }
        let mut entry = json!({ "response": r });
        if let Some(res) = self.resource {
            entry["resource"] = res;
        }
        entry
    }

    /// A failed entry of a batch: its status and OperationOutcome.
    pub fn failure(e: &Error, request_id: &str) -> Answer {
        let (status, outcome) = e.client_outcome(request_id);
        Answer {
            status: status_line(status.as_u16()),
            location: None,
            etag: None,
            last_modified: None,
            resource: None,
            outcome: Some(outcome),
        }
    }
}

pub fn status_line(code: u16) -> String {
    let reason = actix_web::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{code} {reason}")
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// Parses `entry.request`. `base` lets absolute URLs of this server through.
pub fn request_of(entry: &Value, base: &str) -> Result<Request, Error> {
    let req = entry
        .get("request")
        .ok_or_else(|| Error::invalid("the entry has no request (method and url)"))?;
    let method = str_at(req, "method")
        .ok_or_else(|| Error::invalid("request.method is missing"))?
        .to_ascii_uppercase();
    let raw_url = str_at(req, "url").ok_or_else(|| Error::invalid("request.url is missing"))?;
    let url = raw_url
        .strip_prefix(base)
        .unwrap_or(raw_url)
        .trim_start_matches('/')
        .to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (url.clone(), None),
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (resource_type, id, version) = match parts.as_slice() {
        [t] => (t.to_string(), None, None),
        [t, id] => (t.to_string(), Some(id.to_string()), None),
        [t, id, "_history", v] => (t.to_string(), Some(id.to_string()), Some(v.parse().map_err(|_| Error::invalid(format!("request.url `{raw_url}`: `{v}` is not a version")))?)),
        _ => return Err(Error::invalid(format!("request.url `{raw_url}` is not [type], [type]/[id], [type]/[id]/_history/[vid] or [type]?[search]"))),
    };
    Ok(Request {
        method,
        resource_type,
        id,
        version,
        query,
        if_none_exist: str_at(req, "ifNoneExist").map(|s| s.trim_start_matches('?').to_string()),
        if_match: str_at(req, "ifMatch").map(str::to_string),
        url,
    })
}

fn if_match_version(raw: Option<&str>) -> Result<Option<i32>, Error> {
    match raw {
        None => Ok(None),
        Some(r) => {
            let inner = r
                .trim()
                .strip_prefix("W/")
                .unwrap_or(r.trim())
                .trim_matches('"');
            inner.parse().map(Some).map_err(|_| {
                Error::invalid(format!(
                    "ifMatch `{r}` is not a version ETag such as W/\"3\""
                ))
            })
        }
    }
}

fn written(s: Stored, opts: &Options) -> Answer {
    let outcome =
        (!s.warnings.is_empty()).then(|| OperationOutcome::new(s.warnings.clone()).into_json());
    let resource = match opts.return_pref {
        Return::Representation => Some(s.resource),
        Return::Minimal => None,
        Return::OperationOutcome => None,
    };
    Answer {
        status: status_line(if s.created { 201 } else { 200 }),
        location: Some(format!(
            "{}/{}/_history/{}",
            s.resource_type, s.id, s.version
        )),
        etag: Some(format!("W/\"{}\"", s.version)),
        last_modified: Some(instant(&s.last_updated)),
        resource,
        outcome,
    }
}

/// Runs one entry whose references are already resolved. Shared by transaction and batch.
/// Refuses (403) an entry the access token's scopes do not allow (a conditional write also
/// searches). Checked for every entry before any entry runs or any reference is resolved.
pub fn check_scopes(s: &Scoped, req: &Request) -> Result<(), Error> {
    let conditional = req.if_none_exist.is_some() || (req.id.is_none() && req.query.is_some());
    let ops: &[Op] = match (req.method.as_str(), req.id.is_some(), conditional) {
        ("POST", _, false) => &[Op::Create],
        ("POST", _, true) => &[Op::Create, Op::Search],
        ("PUT", _, false) => &[Op::Update],
        ("PUT", _, true) => &[Op::Update, Op::Create, Op::Search],
        ("DELETE", _, false) => &[Op::Delete],
        ("DELETE", _, true) => &[Op::Delete, Op::Search],
        ("GET" | "HEAD", true, _) => &[Op::Read],
        ("GET" | "HEAD", false, _) => &[Op::Search],
        _ => &[],
    };
    ops.iter()
        .try_for_each(|op| s.ctx.require(&req.resource_type, *op))
}

pub fn run_entry(
    s: &mut Scoped,
    env: &Env,
    entry: &Value,
    req: &Request,
    opts: &Options,
) -> Result<Answer, Error> {
    let t = req.resource_type.as_str();
    let stored = STORED_TYPES.contains(&t);
    let raw_resource = || {
        entry
            .get("resource")
            .map(|r| serde_json::to_vec(r).unwrap_or_default())
            .unwrap_or_default()
    };
    match req.method.as_str() {
        "POST" | "PUT" => {
            let resource = entry.get("resource").ok_or_else(|| {
                Error::invalid(format!("{} {} needs a resource", req.method, req.url))
            })?;
            let rt = str_at(resource, "resourceType").unwrap_or_default();
            if rt != t {
                return Err(Error::invalid(format!(
                    "the resource is a {rt} but request.url names {t}"
                )));
            }
            if !stored {
                return Err(not_stored(t));
            }
            let raw = raw_resource();
            let body = Body {
                resource,
                raw: &raw,
                content_type: "application/fhir+json",
            };
            if req.method == "POST" {
                if let Some(q) = &req.if_none_exist {
                    let found = search::matching_ids(s, env, t, q, 2)?;
                    match found.len() {
                        0 => {}
                        1 => {
                            let existing = super::read(s, env, t, &found[0])?;
                            let mut a = written(existing, opts);
                            a.status = status_line(200);
                            return Ok(a);
                        }
                        _ => {
                            return Err(Error::PreconditionFailed(format!(
                                "ifNoneExist `{q}` matches more than one {t}"
                            )))
                        }
                    }
                }
                return Ok(written(super::create(s, env, t, body)?, opts));
            }
            let if_match = if_match_version(req.if_match.as_deref())?;
            let id = match (&req.id, &req.query) {
                (Some(id), _) => id.clone(),
                (None, Some(q)) => {
                    let found = search::matching_ids(s, env, t, q, 2)?;
                    match found.as_slice() {
                        [] => return Ok(written(super::create(s, env, t, body)?, opts)),
                        [id] => id.clone(),
                        _ => {
                            return Err(Error::PreconditionFailed(format!(
                                "the condition `{q}` matches more than one {t}"
                            )))
                        }
                    }
                }
                (None, None) => {
                    return Err(Error::invalid(
                        "PUT needs [type]/[id] or [type]?[search] in request.url",
                    ))
                }
            };
            if let Some(body_id) = str_at(resource, "id") {
                if body_id != id {
                    return Err(Error::invalid(format!(
                        "the resource id `{body_id}` differs from `{id}` in request.url"
                    )));
                }
            }
            Ok(written(
                super::update(s, env, t, &id, if_match, body)?,
                opts,
            ))
        }
        "DELETE" => {
            if !stored {
                return Err(not_stored(t));
            }
            let id = match (&req.id, &req.query) {
                (Some(id), _) => Some(id.clone()),
                (None, Some(q)) => {
                    let found = search::matching_ids(s, env, t, q, 2)?;
                    match found.as_slice() {
                        [] => None,
                        [id] => Some(id.clone()),
                        _ => {
                            return Err(Error::PreconditionFailed(format!(
                                "the condition `{q}` matches more than one {t}"
                            )))
                        }
                    }
                }
                (None, None) => {
                    return Err(Error::invalid(
                        "DELETE needs [type]/[id] or [type]?[search] in request.url",
                    ))
                }
            };
            let version = match &id {
                Some(id) => super::delete(s, env, t, id)?,
                None => None,
            };
            Ok(Answer {
                status: status_line(204),
                location: None,
                etag: version.map(|v| format!("W/\"{v}\"")),
                last_modified: None,
                resource: None,
                outcome: None,
            })
        }
        "GET" | "HEAD" => {
            if !stored {
                return Err(not_stored(t));
            }
            let resource = match (&req.id, req.version) {
                (Some(id), None) => {
                    let r = super::read(s, env, t, id)?;
                    return Ok(Answer {
                        status: status_line(200),
                        location: None,
                        etag: Some(format!("W/\"{}\"", r.version)),
                        last_modified: Some(instant(&r.last_updated)),
                        resource: Some(r.resource),
                        outcome: None,
                    });
                }
                (Some(id), Some(v)) => super::vread(s, env, t, id, v)?.resource,
                (None, _) => search::search(
                    s,
                    env,
                    t,
                    &parse_query(req.query.as_deref().unwrap_or("")),
                    opts.lenient,
                    &opts.base,
                )?,
            };
            Ok(Answer {
                status: status_line(200),
                location: None,
                etag: None,
                last_modified: None,
                resource: Some(resource),
                outcome: None,
            })
        }
        "PATCH" => Err(Error::MethodNotAllowed(
            "PATCH is not supported; send the whole resource with PUT".into(),
        )),
        other => Err(Error::invalid(format!(
            "request.method `{other}` is not GET, HEAD, POST, PUT, DELETE or PATCH"
        ))),
    }
}

pub fn not_stored(t: &str) -> Error {
    Error::Unprocessable(vec![Issue::error(
        "not-supported",
        format!("{t} is not stored by this gateway (it stores {}; Organization and Location are read-only org units)", STORED_TYPES.join(", ")),
        None,
    )])
}

/// Prefixes an entry's error with where it happened, keeping its status. An error that already
/// names its entry (a unique value refused when the queue was written, see `store::pending`) is
/// left as it is: it may surface while a later entry runs.
pub fn at_entry(e: Error, index: usize, what: &str) -> Error {
    if let Error::Conflict {
        expression: Some(x),
        ..
    } = &e
    {
        if x.starts_with("Bundle.entry[") {
            return e;
        }
    }
    let at = EntryAt {
        index,
        what: what.to_owned(),
    };
    let say = |m: String| format!("{}: {m}", at.label());
    let path = |x: Option<String>| Some(at.path(x.as_deref()));
    match e {
        Error::Invalid {
            message,
            expression,
        } => Error::Invalid {
            message: say(message),
            expression: path(expression),
        },
        Error::Conflict {
            message,
            expression,
        } => Error::Conflict {
            message: say(message),
            expression: path(expression),
        },
        Error::Unprocessable(issues) => Error::Unprocessable(
            issues
                .into_iter()
                .map(|i| Issue {
                    diagnostics: say(i.diagnostics),
                    expression: path(i.expression),
                    ..i
                })
                .collect(),
        ),
        Error::Codec(mut c) => {
            c.message = say(c.message);
            c.expression = path(c.expression);
            Error::Codec(c)
        }
        Error::Forbidden(m) => Error::Forbidden(say(m)),
        Error::NotFound(m) => Error::NotFound(say(m)),
        Error::Gone(m) => Error::Gone(say(m)),
        Error::PreconditionFailed(m) => Error::PreconditionFailed(say(m)),
        Error::MethodNotAllowed(m) => Error::MethodNotAllowed(say(m)),
        other => other,
    }
}

/// Replaces every `reference` found in `map` (`urn:uuid:…` → `Patient/abc`) and resolves
/// conditional references (`Patient?identifier=…`) to exactly one record (422 otherwise).
pub fn rewrite_references(
    s: &mut Scoped,
    env: &Env,
    v: &mut Value,
    map: &HashMap<String, String>,
) -> Result<(), Error> {
    rewrite(s, env, v, map, true)
}

/// Like [`rewrite_references`], but leaves `urn:` references to unknown entries as they are (an
/// import keeps going; an element that needs the reference is then refused by translation).
pub fn rewrite_references_lenient(
    s: &mut Scoped,
    env: &Env,
    v: &mut Value,
    map: &HashMap<String, String>,
) -> Result<(), Error> {
    rewrite(s, env, v, map, false)
}

fn rewrite(
    s: &mut Scoped,
    env: &Env,
    v: &mut Value,
    map: &HashMap<String, String>,
    strict: bool,
) -> Result<(), Error> {
    match v {
        Value::Object(obj) => {
            for (k, child) in obj.iter_mut() {
                if k == "reference" {
                    if let Value::String(r) = child {
                        if let Some(new) = map.get(r.as_str()) {
                            *r = new.clone();
                        } else if let Some((t, q)) = r.split_once('?') {
                            if STORED_TYPES.contains(&t) {
                                // Resolving it is a search: the token must allow one.
                                s.ctx.require(t, Op::Search)?;
                                let found = search::matching_ids(s, env, t, q, 2)?;
                                match found.as_slice() {
                                    [id] => *r = format!("{t}/{id}"),
                                    [] => return Err(Error::rule(format!("the conditional reference `{r}` matches no {t}"), None)),
                                    _ => return Err(Error::rule(format!("the conditional reference `{r}` matches more than one {t}"), None)),
                                }
                            }
                        } else if strict
                            && (r.starts_with("urn:uuid:") || r.starts_with("urn:oid:"))
                        {
                            return Err(Error::rule(format!("the reference `{r}` names no entry of this Bundle (no entry has that fullUrl)"), None));
                        }
                    }
                } else {
                    rewrite(s, env, child, map, strict)?;
                }
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|i| rewrite(s, env, i, map, strict)),
        _ => Ok(()),
    }
}

fn rank(req: &Request) -> (u8, u8) {
    let method = match req.method.as_str() {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    };
    let ty = match req.resource_type.as_str() {
        "Patient" => 0,
        "RelatedPerson" => 1,
        "EpisodeOfCare" => 1,
        "Encounter" => 2,
        "Observation" => 3,
        _ => 4,
    };
    (method, ty)
}

/// Runs a transaction Bundle inside the caller's transaction. `entry_errors` are the per-entry
/// problems found while parsing; any of them fails the whole transaction.
pub fn transaction(
    s: &mut Scoped,
    env: &Env,
    mut bundle: Value,
    entry_errors: &[Option<kiunga_codec::CodecError>],
    opts: &Options,
) -> Result<Value, Error> {
    // Taken, not copied: a Bundle of thousands of entries is not cloned on its way through.
    let mut entries = match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    let mut requests = Vec::with_capacity(entries.len());
    let mut skipped = vec![false; entries.len()];
    let mut warnings: Vec<Vec<Issue>> = vec![Vec::new(); entries.len()];
    for (i, entry) in entries.iter().enumerate() {
        if let Some(Some(e)) = entry_errors.get(i) {
            return Err(Error::Codec(e.clone()));
        }
        let req = request_of(entry, &opts.base).map_err(|e| at_entry(e, i, "request"))?;
        if !STORED_TYPES.contains(&req.resource_type.as_str())
            && req.method != "GET"
            && req.method != "HEAD"
        {
            if opts.lenient {
                skipped[i] = true;
                warnings[i].push(Issue::warning("not-supported", format!("Bundle.entry[{i}]: {} is not stored by this gateway; skipped (Prefer: handling=lenient)", req.resource_type), Some(format!("Bundle.entry[{i}]"))));
            } else {
                return Err(Error::Unprocessable(vec![Issue::error(
                    "not-supported",
                    format!("Bundle.entry[{i}]: {} is not stored by this gateway (it stores {}); send `Prefer: handling=lenient` to skip such entries", req.resource_type, STORED_TYPES.join(", ")),
                    Some(format!("Bundle.entry[{i}]")),
                )]));
            }
        }
        requests.push(req);
    }
    // Every entry's scopes before anything is read or written for any of them.
    for (i, req) in requests.iter().enumerate() {
        if !skipped[i] {
            check_scopes(s, req)
                .map_err(|e| at_entry(e, i, &format!("{} {}", req.method, req.url)))?;
        }
    }
    // New records' ids are reserved per table in one round trip each.
    let posts = |t: &str| {
        requests
            .iter()
            .filter(|r| r.method == "POST" && r.resource_type == t)
            .count()
    };
    let (people, visits, values) = (posts("Patient"), posts("Encounter"), posts("Observation"));
    s.expect(Seq::Person, people);
    s.expect(Seq::Event, visits);
    s.expect(Seq::Enrollment, visits.min(people.max(1)));
    s.expect(Seq::DataValue, values);
    // Matching on write waits until the entries that write have run (see `identity::settle`).
    identity::defer(s, env);
    let mut order: Vec<usize> = (0..entries.len()).filter(|i| !skipped[*i]).collect();
    order.sort_by_key(|i| rank(&requests[*i]));

    let mut map: HashMap<String, String> = HashMap::new();
    let mut answers: Vec<Option<Answer>> = vec![None; entries.len()];
    for i in order {
        let req = &requests[i];
        // Reads come last; they see the people written with their links.
        if matches!(req.method.as_str(), "GET" | "HEAD") {
            settle_links(s, env, &mut answers)?;
        }
        let what = format!("{} {}", req.method, req.url);
        s.entry = Some(EntryAt {
            index: i,
            what: what.clone(),
        });
        let entry = &mut entries[i];
        if let Some(resource) = entry.get_mut("resource") {
            rewrite_references(s, env, resource, &map).map_err(|e| at_entry(e, i, &what))?;
        }
        let answer = run_entry(s, env, entry, req, opts).map_err(|e| at_entry(e, i, &what))?;
        // What a read entry returns is named in the transaction's access record with what the
        // others write.
        if let Some(r) = answer.resource.as_ref().filter(|_| req.method == "GET") {
            s.touched.extend(crate::audit::returned(r));
        }
        if let (Some(full_url), Some(location)) = (str_at(&entries[i], "fullUrl"), &answer.location)
        {
            // `Patient/abc/_history/1` → `Patient/abc`
            let target: Vec<&str> = location.split('/').take(2).collect();
            map.insert(full_url.to_string(), target.join("/"));
        }
        answers[i] = Some(answer);
    }
    settle_links(s, env, &mut answers)?;
    let response_entries: Vec<Value> = answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| match a {
            Some(a) => a.into_json(),
            None => Answer {
                status: status_line(200),
                location: None,
                etag: None,
                last_modified: None,
                resource: None,
                outcome: Some(OperationOutcome::new(warnings[i].clone()).into_json()),
            }
            .into_json(),
        })
        .collect();
    Ok(response_bundle("transaction-response", response_entries))
}

/// Matches the people the Bundle wrote so far ([`identity::settle`]) and shows their links in
/// the entries' answers, as a single write of each would have.
fn settle_links(s: &mut Scoped, env: &Env, answers: &mut [Option<Answer>]) -> Result<(), Error> {
    // A refusal while the queue is written names its entry itself (`UniqueClaim`); one while a
    // person is matched is named after that person's entry.
    s.entry = None;
    let settled = identity::settle(s, env).map_err(|e| match &s.entry {
        Some(at) => at_entry(e, at.index, &at.what),
        None => e,
    })?;
    for (at, linked) in settled {
        let resource = at
            .and_then(|at| answers.get_mut(at.index))
            .and_then(Option::as_mut)
            .and_then(|a| a.resource.as_mut());
        if let (Some(resource), false) = (resource, linked.is_empty()) {
            super::identity::set_links(s, env, resource, &linked);
        }
    }
    Ok(())
}

pub fn response_bundle(kind: &str, entries: Vec<Value>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "id": crate::tracker::new_uid(),
        "meta": { "lastUpdated": instant(&Utc::now()) },
        "type": kind,
    });
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    b
}

/// One entry of a batch, in its own transaction (the caller's): failures stay in the entry.
pub fn batch_entry(
    s: &mut Scoped,
    env: &Env,
    entry: &Value,
    index: usize,
    entry_error: Option<&kiunga_codec::CodecError>,
    opts: &Options,
) -> Result<Answer, Error> {
    if let Some(e) = entry_error {
        return Err(Error::Codec(e.clone()));
    }
    let req = request_of(entry, &opts.base).map_err(|e| at_entry(e, index, "request"))?;
    let what = format!("{} {}", req.method, req.url);
    check_scopes(s, &req).map_err(|e| at_entry(e, index, &what))?;
    s.entry = Some(EntryAt {
        index,
        what: what.clone(),
    });
    let mut entry = entry.clone();
    if let Some(resource) = entry.get_mut("resource") {
        rewrite_references(s, env, resource, &HashMap::new())
            .map_err(|e| at_entry(e, index, &what))?;
    }
    run_entry(s, env, &entry, &req, opts).map_err(|e| at_entry(e, index, &what))
}
