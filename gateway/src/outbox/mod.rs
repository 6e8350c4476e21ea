//! Outbound push (docs/outbound.md): committed changes that a target's triggers select reach that
//! target once, in order per person, whatever the target does.
//!
//! - **Enqueue**: in the writing transaction, so a rolled-back request or Bundle emits nothing. A
//!   record's change is queued by a trigger on the change log (migration 18) for every rule that
//!   selects it; a completed birth or death by `store::Scoped` at the end of the unit of work.
//! - **Deliver**: workers ([`worker`]) claim due items with `FOR UPDATE SKIP LOCKED`, render the
//!   record as the FHIR API would, translate it into the target's codes ([`openmrs`]), send it,
//!   and settle the item: delivered, retried later, dead letter, or "outcome unknown".
//! - **Operate**: `kiunga outbox …` and `/admin/outbox` ([`admin`]); `/metrics` ([`metrics`]).

pub mod admin;
pub mod fhir;
pub mod http;
pub mod metrics;
pub mod opencrvs;
pub mod openmrs;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::PgConnection;

use crate::error::Error;
use crate::mapping::targets::Target;
use crate::mapping::MappingSet;
use crate::store::outbox::{self as store, RuleRow};

/// Whether a birth or death rule exists: only then does a write look for completed vital events
/// (one statement per unit of work that changed something).
static EVENTS: AtomicBool = AtomicBool::new(false);

pub fn events_active() -> bool {
    EVENTS.load(Ordering::Relaxed)
}

/// The rules of every enabled target.
pub fn rules(targets: &[Target]) -> Vec<RuleRow> {
    let mut rows = Vec::new();
    for t in targets.iter().filter(|t| t.enabled) {
        for kind in &t.trigger.resources {
            let crvs = t.crvs.as_ref();
            let event = match kind.as_str() {
                "birth" => crvs.and_then(|c| c.birth.clone()),
                "death" => crvs.and_then(|c| c.death.clone()),
                _ => None,
            };
            if let Some((key, stages, elements)) = event {
                let birth = kind == "birth";
                rows.push(RuleRow {
                    target: t.name.clone(),
                    kind: kind.clone(),
                    org_path: t.trigger.org_path.clone(),
                    stage_ids: Some(stages),
                    skip_actors: (!t.skip_actors.is_empty()).then(|| t.skip_actors.clone()),
                    relationship_type_ids: birth.then(|| vec![key]),
                    data_element_ids: Some(elements),
                    attribute_ids: (!birth).then(|| vec![key]),
                });
                continue;
            }
            rows.push(RuleRow {
                target: t.name.clone(),
                kind: kind.clone(),
                org_path: t.trigger.org_path.clone(),
                stage_ids: (!t.trigger.stage_ids.is_empty()).then(|| t.trigger.stage_ids.clone()),
                skip_actors: (!t.skip_actors.is_empty()).then(|| t.skip_actors.clone()),
                relationship_type_ids: None,
                data_element_ids: None,
                attribute_ids: None,
            });
        }
    }
    rows
}

/// Writes the rules of the mapping set in force (`write`: the server and the worker), so that
/// every process writing to this database enqueues for the same targets; then switches this
/// process's look for births and deaths on when such a rule exists. One-off commands (`import`, `outbox status`…)
/// do not write: an operator's shell without the URL variables must not switch a target off.
pub fn sync(conn: &mut PgConnection, mappings: &MappingSet, write: bool) -> Result<(), Error> {
    if write {
        store::replace_rules(conn, &rules(&mappings.targets))?;
        for t in &mappings.targets {
            if t.enabled {
                tracing::info!(target_name = %t.name, kind = t.kind.as_str(), "outbound target enabled");
            } else {
                tracing::info!(target_name = %t.name, file = %t.file, "outbound target disabled (its URL variable is not set, or enabled = false)");
            }
        }
    }
    // Only ever switched on: several gateways may share one process (the tests), and a write
    // that looks for births in vain costs one statement, while one that does not look loses them.
    let kinds = store::rule_kinds(conn)?;
    if kinds.iter().any(|k| k == "birth" || k == "death") {
        EVENTS.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// On the target; its id for the record, when it has one.
    Delivered { remote_id: Option<String> },
    /// Not now: the target is unreachable, busy or failing. `uncertain` when the request may
    /// have reached it (a timeout or reset after sending): the next attempt looks first.
    Retry {
        kind: &'static str,
        message: String,
        status: Option<u16>,
        after: Option<Duration>,
        uncertain: bool,
    },
    /// The target refused the record for good (or cannot take it): dead letter with its message.
    Rejected {
        kind: &'static str,
        message: String,
        status: Option<u16>,
    },
    /// The target may hold the record and offers no way to find out: a person decides.
    Unknown { message: String },
    /// Nothing to send (the record was deleted before it was ever sent).
    Skipped { message: String },
}

impl Outcome {
    pub fn retry(kind: &'static str, message: impl Into<String>) -> Outcome {
        Outcome::Retry {
            kind,
            message: message.into(),
            status: None,
            after: None,
            uncertain: false,
        }
    }

    pub fn rejected(
        kind: &'static str,
        message: impl Into<String>,
        status: Option<u16>,
    ) -> Outcome {
        Outcome::Rejected {
            kind,
            message: message.into(),
            status,
        }
    }

    /// Whether the target itself is in trouble (what the circuit breaker counts).
    pub fn target_failing(&self) -> bool {
        matches!(self, Outcome::Retry { .. })
    }
}

/// Cuts a target's message to a size fit for the outbox and logs. Targets echo what they were
/// sent in some messages; the outbox keeps what the operator needs to act, not the record.
pub fn brief(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}
