//! Events (rendered as FHIR Encounter): placed in a program stage and an enrollment, which is
//! opened in the same transaction when the person has none active in the stage's program.

use chrono::{DateTime, Utc};

use super::model::{EventRecord, EventSnapshot, PersonRecord, VersionOf};
use super::{new_uid, patients, Env};
use crate::error::Error;
use crate::store::events as store;
use crate::store::logs::{self, Change, Inbound};
use crate::store::pending::{EnrollmentRow, EventRow, Seq};
use crate::store::Scoped;
use crate::translate::encounter::EncounterWrite;

const TYPE: &str = "Encounter";

/// The person a `subject` names; a missing one is a 422 naming the element, not a 404.
pub fn subject(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    uid: &str,
) -> Result<PersonRecord, Error> {
    match patients::read(s, env, uid) {
        Ok(p) if p.merged_into.is_some() => {
            super::patients::refuse_merged(s, &p, "record against").map_err(|e| match e {
                Error::Conflict { message, .. } => Error::rule(
                    format!("{resource_type}.subject: {message}"),
                    Some(format!("{resource_type}.subject")),
                ),
                e => e,
            })?;
            Ok(p)
        }
        Ok(p) => Ok(p),
        Err(Error::NotFound(_)) | Err(Error::Gone(_)) => Err(Error::rule(
            format!("{resource_type}.subject: Patient/{uid} is not a person in this registry (or not one you may see)"),
            Some(format!("{resource_type}.subject")),
        )),
        Err(e) => Err(e),
    }
}

/// Finds or opens the enrollment for an event of `stage_id`, then checks the stage's repeatability.
/// Returns (enrollment id, enrollment uid).
pub fn place(
    s: &mut Scoped,
    env: &Env,
    person: &PersonRecord,
    stage_id: i64,
    org_unit_id: i64,
    enrollment_uid: Option<&str>,
    when: DateTime<Utc>,
) -> Result<(i64, String), Error> {
    let now = Utc::now();
    let stage = env
        .md
        .stages
        .iter()
        .find(|st| st.id == stage_id)
        .ok_or_else(|| Error::Internal("stage missing from metadata".into()))?;
    let program = env
        .md
        .programs
        .iter()
        .find(|p| p.id == stage.program_id)
        .ok_or_else(|| Error::Internal("program missing from metadata".into()))?;
    let (enrollment_id, uid) = match enrollment_uid {
        Some(uid) => {
            let (id, uid, te, program_id, status) = store::enrollment_by_uid(s.conn()?, uid)?
                .ok_or_else(|| {
                    Error::rule(
                        format!("EpisodeOfCare/{uid} is not an enrollment of this registry"),
                        Some("Encounter.episodeOfCare".into()),
                    )
                })?;
            if te != person.id {
                return Err(Error::rule(
                    format!("EpisodeOfCare/{uid} is another person's enrollment"),
                    Some("Encounter.episodeOfCare".into()),
                ));
            }
            if program_id != program.id {
                return Err(Error::rule(
                    format!(
                        "EpisodeOfCare/{uid} is not in program {}, where stage {} belongs",
                        program.name, stage.name
                    ),
                    Some("Encounter.episodeOfCare".into()),
                ));
            }
            if status != "ACTIVE" {
                return Err(Error::rule(
                    format!("EpisodeOfCare/{uid} is {status}; events go into active enrollments"),
                    Some("Encounter.episodeOfCare".into()),
                ));
            }
            (id, uid)
        }
        None => match active_enrollment(s, person.id, program.id)? {
            Some(found) => found,
            None => {
                if !env.mappings.care.opens_on_encounter(program.id) {
                    return Err(Error::rule(
                        format!("Patient/{} has no active enrollment in {} and mappings/care.toml says Encounters do not open one (open_on_encounter = false); create the EpisodeOfCare first, or name it in Encounter.episodeOfCare", person.uid, program.name),
                        Some("Encounter.episodeOfCare".into()),
                    ));
                }
                // A person created in this unit of work has no enrollment but those opened here.
                if program.only_enroll_once
                    && !s.cache.is_new_person(person.id)
                    && store::any_enrollment(s.conn()?, person.id, program.id)?
                {
                    return Err(Error::Conflict {
                        message: format!("the person's enrollment in {} is closed and the program allows one enrollment only; reopen it before recording more events", program.name),
                        expression: None,
                    });
                }
                // An earlier enrollment may have left an owner (after a transfer, elsewhere): the
                // new enrollment is that owner's, so the caller must be able to write there.
                let owner = if s.cache.is_new_person(person.id) {
                    None
                } else {
                    super::episodes::check_owner_capture(s, env, person, program.id)?;
                    crate::store::enrollments::owner(s.conn()?, person.id, program.id)?
                };
                let uid = new_uid();
                let id = s.next_id(Seq::Enrollment)?;
                s.defer().enrollments.push(EnrollmentRow {
                    id,
                    uid: uid.clone(),
                    tracked_entity_id: person.id,
                    program_id: program.id,
                    org_unit_id,
                    status: "ACTIVE".into(),
                    enrolled_at: when,
                    occurred_at: Some(when),
                    created: now,
                    last_updated: now,
                });
                s.cache.add_enrollment(person.id, program.id, id, &uid);
                // The snapshot of version 1 shows the owner as it is (a later transfer records its
                // own version).
                let opened = crate::tracker::model::EnrollmentRecord {
                    id,
                    uid: uid.clone(),
                    version: 1,
                    last_updated: now,
                    tracked_entity_id: person.id,
                    tracked_entity_uid: person.uid.clone(),
                    program_id: program.id,
                    org_unit_id,
                    owner_org_unit_id: owner.unwrap_or(org_unit_id),
                    status: "ACTIVE".into(),
                    enrolled_at: when,
                    occurred_at: Some(when),
                    completed_at: None,
                    deleted: false,
                    transfer: None,
                };
                logs::record_change(
                    s,
                    Change {
                        resource_type: "EpisodeOfCare",
                        uid: &uid,
                        version: 1,
                        operation: "create",
                        at: now,
                        mapping_version: &env.mappings.version,
                        state: Some(super::episodes::snapshot(env, &opened)),
                    },
                );
                (id, uid)
            }
        },
    };
    if !s.cache.is_new_enrollment(enrollment_id) {
        super::episodes::check_owner_capture(s, env, person, program.id)?;
    }
    if !stage.repeatable {
        let existing = if s.cache.is_new_enrollment(enrollment_id) {
            s.cache.events_in_stage(enrollment_id, stage_id)
        } else {
            store::events_in_stage(s.conn()?, enrollment_id, stage_id)?
        };
        if let Some(existing) = existing.first() {
            return Err(Error::Conflict {
                message: format!("stage {} happens once per enrollment and EpisodeOfCare/{uid} already has it (Encounter/{existing}); update that Encounter instead", stage.name),
                expression: Some("Encounter.type".into()),
            });
        }
    }
    Ok((enrollment_id, uid))
}

pub(super) fn snapshot(env: &Env, e: &EventRecord) -> serde_json::Value {
    let stage = env
        .md
        .stages
        .iter()
        .find(|s| s.id == e.stage_id)
        .map(|s| s.uid.clone())
        .unwrap_or_default();
    let ou = env
        .md
        .org_unit_by_id(e.org_unit_id)
        .map(|o| o.uid.clone())
        .unwrap_or_default();
    serde_json::to_value(EventSnapshot {
        stage,
        org_unit: ou,
        status: e.status.clone(),
        occurred_at: e.occurred_at,
        completed_at: e.completed_at,
        enrollment: e.enrollment_uid.clone(),
        tracked_entity: e.tracked_entity_uid.clone(),
    })
    .unwrap_or_default()
}

/// Creates an event for a person (used by Encounter create and by Observations without one).
#[allow(clippy::too_many_arguments)]
pub fn open_event(
    s: &mut Scoped,
    env: &Env,
    person: &PersonRecord,
    stage_id: i64,
    org_unit_id: i64,
    status: &str,
    occurred_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    enrollment_uid: Option<&str>,
) -> Result<EventRecord, Error> {
    super::check_capture_at(s, env, org_unit_id, "record an encounter")?;
    super::check_program_of_stage(s, env, stage_id)?;
    let now = Utc::now();
    let (enrollment_id, enrollment_uid) = place(
        s,
        env,
        person,
        stage_id,
        org_unit_id,
        enrollment_uid,
        occurred_at.unwrap_or(now),
    )?;
    let uid = new_uid();
    let id = s.next_id(Seq::Event)?;
    s.defer().events.push(EventRow {
        id,
        uid: uid.clone(),
        enrollment_id,
        program_stage_id: stage_id,
        org_unit_id,
        tracked_entity_id: person.id,
        status: status.to_string(),
        occurred_at,
        completed_at,
        version: 1,
        created: now,
        last_updated: now,
    });
    let record = EventRecord {
        id,
        uid,
        version: 1,
        last_updated: now,
        stage_id,
        org_unit_id,
        status: status.to_string(),
        occurred_at,
        completed_at,
        tracked_entity_id: person.id,
        tracked_entity_uid: person.uid.clone(),
        enrollment_id,
        enrollment_uid,
        deleted: false,
    };
    if let Some(ou) = env.md.org_unit_by_id(person.org_unit_id) {
        s.cache.add_event(&record, &ou.path);
    }
    Ok(record)
}

/// The person's active enrollment in a program: one opened in this unit of work, else the database's.
fn active_enrollment(
    s: &mut Scoped,
    person: i64,
    program: i64,
) -> Result<Option<(i64, String)>, Error> {
    if let Some(found) = s.cache.enrollment(person, program) {
        return Ok(Some(found.clone()));
    }
    if s.cache.is_new_person(person) {
        return Ok(None);
    }
    Ok(store::active_enrollment(s.conn()?, person, program)?.map(|(id, uid, ..)| (id, uid)))
}

pub fn create(
    s: &mut Scoped,
    env: &Env,
    w: &EncounterWrite,
    inbound: Inbound,
) -> Result<EventRecord, Error> {
    let person = subject(s, env, TYPE, &w.patient_uid)?;
    let org_unit_id = w.org_unit_id.unwrap_or(person.org_unit_id);
    let e = open_event(
        s,
        env,
        &person,
        w.stage_id,
        org_unit_id,
        &w.status,
        w.occurred_at,
        w.completed_at,
        w.enrollment_uid.as_deref(),
    )?;
    super::record_write(s, env, TYPE, &e, "create", snapshot(env, &e), inbound);
    Ok(e)
}

fn not_found(uid: &str) -> Error {
    Error::NotFound(format!("Encounter/{uid} is not known to this registry"))
}

pub fn update(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
    if_match: Option<i32>,
    w: &EncounterWrite,
    inbound: Inbound,
) -> Result<EventRecord, Error> {
    let visible = store::find_event(s, uid)?.ok_or_else(|| not_found(uid))?;
    s.cache.evict_event(uid);
    let current = store::lock_event(s.conn()?, visible.id)?;
    if let Some(v) = if_match {
        if v != current.version {
            return Err(Error::PreconditionFailed(format!(
                "Encounter/{uid} is at version {}, not {v}: read it again and reapply your change",
                current.version
            )));
        }
    }
    if w.patient_uid != current.tracked_entity_uid {
        return Err(Error::rule(
            format!(
                "Encounter/{uid} belongs to Patient/{}; an Encounter cannot move to another person",
                current.tracked_entity_uid
            ),
            Some("Encounter.subject".into()),
        ));
    }
    let program_of = |stage: i64| {
        env.md
            .stages
            .iter()
            .find(|st| st.id == stage)
            .map(|st| st.program_id)
    };
    if program_of(w.stage_id) != program_of(current.stage_id) {
        return Err(Error::rule(format!("Encounter/{uid} is in another program; its type can only change to a stage of the same program"), Some("Encounter.type".into())));
    }
    if let Some(e) = &w.enrollment_uid {
        if *e != current.enrollment_uid {
            return Err(Error::rule(format!("Encounter/{uid} is in EpisodeOfCare/{}; moving it to another enrollment is not supported", current.enrollment_uid), Some("Encounter.episodeOfCare".into())));
        }
    }
    if w.stage_id != current.stage_id {
        let stage = env.md.stages.iter().find(|st| st.id == w.stage_id);
        if let Some(stage) = stage.filter(|st| !st.repeatable) {
            if let Some(existing) =
                store::events_in_stage(s.conn()?, current.enrollment_id, w.stage_id)?.first()
            {
                return Err(Error::Conflict {
                    message: format!("stage {} happens once per enrollment and EpisodeOfCare/{} already has it (Encounter/{existing})", stage.name, current.enrollment_uid),
                    expression: Some("Encounter.type".into()),
                });
            }
        }
    }
    super::check_capture_at(
        s,
        env,
        current.org_unit_id,
        "record changes to this encounter",
    )?;
    super::episodes::check_event_owner(s, env, &current)?;
    let org_unit_id = w.org_unit_id.unwrap_or(current.org_unit_id);
    super::check_capture_at(s, env, org_unit_id, "record an encounter")?;
    super::check_program_of_stage(s, env, w.stage_id)?;
    let now = Utc::now();
    let version = current.version + 1;
    store::update_event(
        s.conn()?,
        current.id,
        w.stage_id,
        org_unit_id,
        &w.status,
        w.occurred_at,
        w.completed_at,
        version,
        now,
    )?;
    let e = EventRecord {
        version,
        last_updated: now,
        stage_id: w.stage_id,
        org_unit_id,
        status: w.status.clone(),
        occurred_at: w.occurred_at,
        completed_at: w.completed_at,
        deleted: false,
        ..current
    };
    super::record_write(s, env, TYPE, &e, "update", snapshot(env, &e), inbound);
    Ok(e)
}

pub fn delete(s: &mut Scoped, env: &Env, uid: &str) -> Result<Option<i32>, Error> {
    let visible = store::find_event(s, uid)?.ok_or_else(|| not_found(uid))?;
    s.cache.evict_event(uid);
    let current = store::lock_event(s.conn()?, visible.id)?;
    if current.deleted {
        return Ok(None);
    }
    super::check_capture_at(
        s,
        env,
        current.org_unit_id,
        "record changes to this encounter",
    )?;
    super::episodes::check_event_owner(s, env, &current)?;
    let live = store::live_values_of_event(s.conn()?, current.id)?;
    if live > 0 {
        return Err(Error::Conflict {
            message: format!("Encounter/{uid} still has {live} Observation(s); delete them first"),
            expression: None,
        });
    }
    let now = Utc::now();
    let version = current.version + 1;
    store::mark_event_deleted(s.conn()?, current.id, version, now)?;
    logs::record_deletion(s, TYPE, uid, version, now, &env.mappings.version);
    Ok(Some(version))
}

pub fn read(s: &mut Scoped, uid: &str) -> Result<EventRecord, Error> {
    let e = store::find_event(s, uid)?.ok_or_else(|| not_found(uid))?;
    if e.deleted {
        return Err(Error::Gone(format!(
            "Encounter/{uid} was deleted (version {})",
            e.version
        )));
    }
    Ok(e)
}

fn from_snapshot(
    env: &Env,
    current: &EventRecord,
    version: i32,
    at: DateTime<Utc>,
    state: Option<serde_json::Value>,
) -> Option<EventRecord> {
    let snap: EventSnapshot = serde_json::from_value(state?).ok()?;
    Some(EventRecord {
        version,
        last_updated: at,
        stage_id: env.md.stage(&snap.stage).map(|s| s.id)?,
        org_unit_id: env.md.org_unit(&snap.org_unit).map(|o| o.id)?,
        status: snap.status,
        occurred_at: snap.occurred_at,
        completed_at: snap.completed_at,
        enrollment_uid: snap.enrollment,
        deleted: false,
        ..current.clone()
    })
}

pub fn vread(s: &mut Scoped, env: &Env, uid: &str, version: i32) -> Result<EventRecord, Error> {
    let current = store::find_event(s, uid)?.ok_or_else(|| not_found(uid))?;
    super::version_of(s, TYPE, uid, version, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}

pub fn history(s: &mut Scoped, env: &Env, uid: &str) -> Result<Vec<VersionOf<EventRecord>>, Error> {
    let current = store::find_event(s, uid)?.ok_or_else(|| not_found(uid))?;
    super::versions_of(s, TYPE, uid, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}
