//! Delivery workers: threads per enabled target that claim due items, deliver them and settle
//! them, with exponential backoff and jitter, and a circuit breaker per target.
//!
//! Several processes may run workers on one database (`kiunga serve` and `kiunga worker`): an item
//! is held by one worker at a time through its lease, taken with `FOR UPDATE SKIP LOCKED`. A worker
//! that dies mid-delivery leaves its lease to expire; the next worker treats that attempt's
//! outcome as unknown and looks the record up before sending it again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::PgConnection;
use rand::Rng;
use serde_json::Value;

use super::metrics::Metrics;
use super::Outcome;
use crate::context::RequestContext;
use crate::error::Error;
use crate::mapping::targets::{Kind, Setting, Target};
use crate::mapping::MappingSet;
use crate::store::outbox::{self as store, Claimed, Settle};
use crate::store::{PgPool, Scoped};
use crate::tracker::metadata::Metadata;
use crate::tracker::Env;

/// What the workers share with the gateway: the pool, the metadata and the mapping set in force
/// (a reload changes the codes used for the next item).
#[derive(Clone)]
pub struct Shared {
    pub pool: PgPool,
    pub metadata: Arc<Metadata>,
    pub mappings: Arc<RwLock<Arc<MappingSet>>>,
    pub default_org_unit: Option<i64>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    fn mappings(&self) -> Arc<MappingSet> {
        match self.mappings.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Requests one delivery may make at most, for the length of its lease.
const MAX_REQUESTS: f64 = 8.0;

/// How long an idle worker waits before looking for due items again.
const IDLE: Duration = Duration::from_millis(100);

pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `concurrency` threads for every target enabled in the mapping set in force. A target
    /// enabled later (by a reload) starts with the next process.
    pub fn start(shared: Shared) -> std::io::Result<Workers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let process = format!("{}-{}", hostname(), std::process::id());
        for target in shared.mappings().targets.iter().filter(|t| t.enabled) {
            let breaker = Arc::new(Mutex::new(Breaker::default()));
            let token: Arc<super::opencrvs::TokenCache> = Arc::new(Mutex::new(None));
            let client = super::http::client(target.timeout).map_err(std::io::Error::other)?;
            for n in 0..target.concurrency {
                let worker = Worker {
                    shared: shared.clone(),
                    name: target.name.clone(),
                    id: format!("{process}-{}-{n}", target.name),
                    breaker: breaker.clone(),
                    token: token.clone(),
                    client: client.clone(),
                    stop: stop.clone(),
                };
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("outbox-{}-{n}", target.name))
                        .spawn(move || worker.run())?,
                );
            }
        }
        Ok(Workers { stop, threads })
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Stops after the items in hand are settled.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    /// Tells the threads to finish (without waiting: a drop may happen on an async thread).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "kiunga".into())
}

/// Stops sending to a target that keeps failing: after `breaker_failures` failures in a row it
/// opens for `breaker_seconds`, then lets one attempt through; a success closes it.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    /// Whether an attempt may go now (at most one while half-open).
    fn admit(&mut self) -> bool {
        match self.open_until {
            Some(t) if Instant::now() < t => false,
            Some(_) if self.probing => false,
            Some(_) => {
                self.probing = true;
                true
            }
            None => true,
        }
    }

    fn record(&mut self, failing: bool, retry: &crate::mapping::targets::Retry) -> bool {
        self.probing = false;
        if !failing {
            self.failures = 0;
            self.open_until = None;
            return false;
        }
        self.failures += 1;
        if self.failures >= retry.breaker_failures {
            self.open_until = Some(Instant::now() + Duration::from_secs(retry.breaker_seconds));
            return true;
        }
        false
    }
}

/// Ends a half-open breaker's probe when an attempt returns early (a database error, a missing
/// variable), so that the breaker cannot stay half-open with no probe running.
struct ProbeDone<'a>(&'a Mutex<Breaker>);

impl Drop for ProbeDone<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).probing = false;
    }
}

struct Worker {
    shared: Shared,
    name: String,
    id: String,
    breaker: Arc<Mutex<Breaker>>,
    /// The target's bearer token (OpenCRVS), shared by its workers.
    token: Arc<super::opencrvs::TokenCache>,
    client: reqwest::blocking::Client,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            match self.once() {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(IDLE),
                Err(e) => {
                    tracing::warn!(target_name = %self.name, error = %e, "outbox worker: database error; retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Claims and delivers one item; false when there was nothing to do.
    fn once(&self) -> Result<bool, Error> {
        let mappings = self.shared.mappings();
        let Some(target) = mappings
            .targets
            .iter()
            .find(|t| t.name == self.name && t.enabled)
        else {
            return Ok(false);
        };
        let admitted = {
            let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
            b.admit()
        };
        if !admitted {
            return Ok(false);
        }
        // Whatever happens below, a half-open breaker's probe is over when this returns.
        let _probe = ProbeDone(&self.breaker);
        let mut conn = self.shared.pool.get()?;
        // One delivery may make several requests (a dependency's look-up and create, the
        // record's look-up, a re-authentication), each allowed the full timeout.
        let lease = target.timeout.as_secs_f64() * MAX_REQUESTS + 5.0;
        let Some(item) = store::claim(&mut conn, &self.name, 1, &self.id, lease)?
            .into_iter()
            .next()
        else {
            // Nothing was attempted: a half-open breaker admits the next attempt instead.
            self.breaker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .probing = false;
            return Ok(false);
        };
        let started = Instant::now();
        let outcome = {
            let env = Env {
                md: &self.shared.metadata,
                mappings: &mappings,
                strict: false,
                default_org_unit: self.shared.default_org_unit,
            };
            let base = match target.url.resolve() {
                Ok(u) => u.trim_end_matches('/').to_string(),
                Err(var) => {
                    let o = Outcome::retry("configuration", format!("{var} is not set"));
                    self.settle(&mut conn, target, &item, &o)?;
                    return Ok(true);
                }
            };
            let mut job = Job {
                target,
                env,
                conn: &mut conn,
                client: &self.client,
                token: &self.token,
                base,
                item: &item,
            };
            let delivered = match target.kind {
                Kind::OpenMrsFhir2 => super::openmrs::deliver(&mut job),
                Kind::OpenCrvs => super::opencrvs::deliver(&mut job),
                Kind::FhirR4 => super::fhir::deliver(&mut job),
            };
            delivered.map(|o| scrub(&mut job, o))
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(target_name = %self.name, item = item.id, error = %e, "outbox delivery failed on our side");
                // It may have failed after the target took the record (recording its id).
                Outcome::Retry {
                    kind: "internal",
                    message:
                        "the gateway failed while preparing or recording the delivery (see its log)"
                            .into(),
                    status: None,
                    after: None,
                    uncertain: true,
                }
            }
        };
        self.shared
            .metrics
            .observe(&self.name, &outcome, started.elapsed());
        let tripped = {
            let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
            b.record(outcome.target_failing(), &target.retry)
        };
        if tripped {
            tracing::warn!(target_name = %self.name, seconds = target.retry.breaker_seconds, "outbox: the target keeps failing; pausing deliveries to it");
        }
        self.settle(&mut conn, target, &item, &outcome)?;
        Ok(true)
    }

    fn settle(
        &self,
        conn: &mut PgConnection,
        target: &Target,
        item: &Claimed,
        outcome: &Outcome,
    ) -> Result<(), Error> {
        let how = match outcome {
            Outcome::Delivered { remote_id } => Settle::Delivered {
                remote_id: remote_id.as_deref(),
            },
            Outcome::Retry {
                kind,
                message,
                status,
                after,
                uncertain,
            } => {
                let wait = after.unwrap_or_else(|| backoff(target, item.attempts));
                let at = Utc::now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60));
                tracing::info!(target_name = %self.name, item = item.id, kind, status = ?status, attempt = item.attempts, retry_in_ms = wait.as_millis() as u64, "outbox: delivery will be retried");
                // Once an attempt may have reached the target, every later one looks first,
                // until the item is delivered.
                Settle::Retry {
                    at,
                    kind,
                    message,
                    status: status.map(i32::from),
                    uncertain: *uncertain || item.uncertain,
                }
            }
            Outcome::Rejected {
                kind,
                message,
                status,
            } => {
                tracing::warn!(target_name = %self.name, item = item.id, kind, status = ?status, "outbox: item moved to dead letter");
                Settle::Stop {
                    status_to: "dead",
                    kind,
                    message,
                    status: status.map(i32::from),
                }
            }
            Outcome::Unknown { message } => {
                tracing::warn!(target_name = %self.name, item = item.id, "outbox: outcome unknown; a person must decide");
                Settle::Stop {
                    status_to: "unknown",
                    kind: "unknown-outcome",
                    message,
                    status: None,
                }
            }
            Outcome::Skipped { message } => Settle::Stop {
                status_to: "skipped",
                kind: "nothing-to-send",
                message,
                status: None,
            },
        };
        if !store::settle(conn, item.id, &self.id, how)? {
            // Our lease ran out and another worker took the item: its result stands.
            tracing::warn!(target_name = %self.name, item = item.id, "outbox: the item's lease expired during delivery; this attempt's result was dropped");
        }
        Ok(())
    }
}

/// The target's message without the person's own data: some targets echo what they refused
/// ("identifier 123 already in use"), and the outbox and its admin views hold no patient data.
fn scrub(job: &mut Job, outcome: Outcome) -> Outcome {
    let person = job.item.person_uid.clone();
    let mut words: Vec<String> = Vec::new();
    if let Ok(Some(p)) = job.render("Patient", &person) {
        let mut collect = |v: Option<&Value>| {
            if let Some(s) = v.and_then(Value::as_str) {
                words.push(s.to_string());
            }
        };
        for i in p["identifier"].as_array().into_iter().flatten() {
            collect(i.get("value"));
        }
        for n in p["name"].as_array().into_iter().flatten() {
            collect(n.get("family"));
            for g in n["given"].as_array().into_iter().flatten() {
                collect(Some(g));
            }
        }
        for t in p["telecom"].as_array().into_iter().flatten() {
            collect(t.get("value"));
        }
        collect(p.get("birthDate"));
        collect(p.get("deceasedDateTime"));
    }
    words.retain(|w| w.chars().count() >= 3);
    // Longest first, so that a name inside another is not left half-hidden.
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    let clean = |m: String| words.iter().fold(m, |m, w| m.replace(w.as_str(), "***"));
    match outcome {
        Outcome::Retry {
            kind,
            message,
            status,
            after,
            uncertain,
        } => Outcome::Retry {
            kind,
            message: clean(message),
            status,
            after,
            uncertain,
        },
        Outcome::Rejected {
            kind,
            message,
            status,
        } => Outcome::Rejected {
            kind,
            message: clean(message),
            status,
        },
        other => other,
    }
}

/// Exponential backoff with jitter: initial × 2^(attempt−1), capped, then a random 50–100 % of it
/// so that items failed together do not come back together.
pub fn backoff(target: &Target, attempts: i32) -> Duration {
    let exp = (attempts.max(1) - 1).min(30) as u32;
    let base_ms = (target.retry.initial_ms as f64) * 2f64.powi(exp as i32);
    let capped = base_ms.min(target.retry.max_seconds as f64 * 1000.0);
    let jitter = rand::thread_rng().gen_range(0.5..=1.0);
    Duration::from_millis((capped * jitter) as u64)
}

/// One delivery in progress: what a target module needs to render, translate and send a record.
pub struct Job<'a> {
    pub target: &'a Target,
    pub env: Env<'a>,
    pub conn: &'a mut PgConnection,
    pub client: &'a reqwest::blocking::Client,
    pub token: &'a super::opencrvs::TokenCache,
    /// The target's base URL, resolved now.
    pub base: String,
    pub item: &'a Claimed,
}

impl Job<'_> {
    /// The record as the FHIR API renders it now; None when it is deleted or gone.
    pub fn render(&mut self, resource_type: &str, uid: &str) -> Result<Option<Value>, Error> {
        let ctx = RequestContext::system();
        let env = &self.env;
        match Scoped::autocommit(self.conn, &ctx, |s| {
            crate::rest::read(s, env, resource_type, uid)
        }) {
            Ok(stored) => Ok(Some(stored.resource)),
            Err(Error::Gone(_) | Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remote_id(&mut self, kind: &str, uid: &str) -> Result<Option<String>, Error> {
        store::remote_id(self.conn, &self.target.name, kind, uid)
    }

    pub fn set_remote(&mut self, kind: &str, uid: &str, remote: &str) -> Result<(), Error> {
        store::set_remote_id(self.conn, &self.target.name, kind, uid, remote)
    }

    pub fn forget_remote(&mut self, kind: &str, uid: &str) -> Result<(), Error> {
        store::forget_remote(self.conn, &self.target.name, kind, uid)
    }

    pub fn remote_taken(&mut self, kind: &str, remote: &str) -> Result<bool, Error> {
        store::remote_taken(self.conn, &self.target.name, kind, remote)
    }

    /// A request to the target with its credentials.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
        let mut req = self
            .client
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/fhir+json")
            .header(reqwest::header::CONTENT_TYPE, "application/fhir+json");
        if let (Some(user), Some(password)) = (&self.target.user, &self.target.password) {
            if let (Ok(u), Ok(p)) = (user.resolve(), password.resolve()) {
                req = req.basic_auth(u, Some(p));
            }
        }
        if let Some(Ok(token)) = self.target.token.as_ref().map(Setting::resolve) {
            req = req.bearer_auth(token);
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::targets::Retry;

    fn retry() -> Retry {
        Retry {
            initial_ms: 100,
            max_seconds: 1,
            breaker_failures: 3,
            breaker_seconds: 60,
        }
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_a_success_closes_it() {
        let mut b = Breaker::default();
        let r = retry();
        assert!(b.admit());
        assert!(!b.record(true, &r));
        assert!(!b.record(true, &r));
        assert!(!b.record(false, &r), "a success resets the count");
        assert!(!b.record(true, &r));
        assert!(!b.record(true, &r));
        assert!(b.record(true, &r), "the third failure in a row opens it");
        assert!(!b.admit(), "open: nothing goes");
        b.open_until = Some(Instant::now() - Duration::from_millis(1));
        assert!(b.admit(), "half-open: one probe goes");
        assert!(!b.admit(), "only one at a time");
        assert!(!b.record(false, &r));
        assert!(b.admit(), "closed again");
    }
}
