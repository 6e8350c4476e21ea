//! Enrollments (EpisodeOfCare) and the ownership of a person's record in a program: one active
//! enrollment per program, one ever where the program says so, and explicit transfer between
//! org units with its history.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::model::{EnrollmentRecord, EnrollmentSnapshot, PersonRecord, TransferNote, VersionOf};
use super::{new_uid, patients, Env};
use crate::error::Error;
use crate::store::enrollments as store;
use crate::store::logs::{self, Inbound};
use crate::store::pending::{EnrollmentRow, Seq};
use crate::store::Scoped;
use crate::translate::episode::EpisodeWrite;

const TYPE: &str = "EpisodeOfCare";

impl super::Stamped for EnrollmentRecord {
    fn stamp(&self) -> (&str, i32, DateTime<Utc>) {
        (&self.uid, self.version, self.last_updated)
    }

    fn person(&self) -> Option<&str> {
        Some(&self.tracked_entity_uid)
    }
}

fn not_found(uid: &str) -> Error {
    Error::NotFound(format!("EpisodeOfCare/{uid} is not known to this registry"))
}

pub fn read(s: &mut Scoped, uid: &str) -> Result<EnrollmentRecord, Error> {
    let e = store::find(s, uid)?.ok_or_else(|| not_found(uid))?;
    if e.deleted {
        return Err(Error::Gone(format!(
            "EpisodeOfCare/{uid} was deleted (version {})",
            e.version
        )));
    }
    Ok(e)
}

fn org_uid(env: &Env, id: i64) -> String {
    env.md
        .org_unit_by_id(id)
        .map(|o| o.uid.clone())
        .unwrap_or_default()
}

pub fn snapshot(env: &Env, e: &EnrollmentRecord) -> Value {
    serde_json::to_value(EnrollmentSnapshot {
        program: env
            .md
            .program_by_id(e.program_id)
            .map(|p| p.uid.clone())
            .unwrap_or_default(),
        org_unit: org_uid(env, e.org_unit_id),
        owner: org_uid(env, e.owner_org_unit_id),
        status: e.status.clone(),
        enrolled_at: e.enrolled_at,
        occurred_at: e.occurred_at,
        completed_at: e.completed_at,
        transfer: e.transfer.clone(),
    })
    .unwrap_or_default()
}

fn from_snapshot(
    env: &Env,
    current: &EnrollmentRecord,
    version: i32,
    at: DateTime<Utc>,
    state: Option<Value>,
) -> Option<EnrollmentRecord> {
    // Enrollments opened before migration 10 logged their first version without a snapshot: it
    // is shown as the record is now.
    let Some(state) = state.filter(|v| !v.is_null()) else {
        return Some(EnrollmentRecord {
            version,
            last_updated: at,
            deleted: false,
            transfer: None,
            ..current.clone()
        });
    };
    let snap: EnrollmentSnapshot = serde_json::from_value(state).ok()?;
    Some(EnrollmentRecord {
        version,
        last_updated: at,
        program_id: env.md.program(&snap.program)?.id,
        org_unit_id: env.md.org_unit(&snap.org_unit)?.id,
        owner_org_unit_id: env.md.org_unit(&snap.owner)?.id,
        status: snap.status,
        enrolled_at: snap.enrolled_at,
        occurred_at: snap.occurred_at,
        completed_at: snap.completed_at,
        deleted: false,
        transfer: snap.transfer,
        ..current.clone()
    })
}

pub fn vread(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
    version: i32,
) -> Result<EnrollmentRecord, Error> {
    let current = store::find(s, uid)?.ok_or_else(|| not_found(uid))?;
    super::version_of(s, TYPE, uid, version, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}

pub fn history(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
) -> Result<Vec<VersionOf<EnrollmentRecord>>, Error> {
    let current = store::find(s, uid)?.ok_or_else(|| not_found(uid))?;
    super::versions_of(s, TYPE, uid, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}

fn program_name(env: &Env, id: i64) -> String {
    env.md
        .program_by_id(id)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "?".into())
}

/// 409 when the person may not have another active enrollment in the program (or any other one,
/// when the program enrolls once), naming the enrollment in the way.
pub fn check_can_enroll(
    s: &mut Scoped,
    env: &Env,
    person: &PersonRecord,
    program_id: i64,
    status: &str,
    except: i64,
) -> Result<(), Error> {
    let program = env
        .md
        .program_by_id(program_id)
        .ok_or_else(|| Error::Internal("program missing from metadata".into()))?;
    // The rule is about the registry, so it reads every enrollment; one the caller may not see is
    // not named.
    let others: Vec<EnrollmentRecord> = store::of_person_unscoped(s, person.id)?
        .into_iter()
        .filter(|e| e.program_id == program_id && e.id != except)
        .collect();
    let blocking = if status == "ACTIVE" {
        others.iter().find(|e| e.status == "ACTIVE")
    } else {
        None
    };
    let blocking = blocking.or(if program.only_enroll_once {
        others.first()
    } else {
        None
    });
    let Some(e) = blocking else {
        return Ok(());
    };
    let visible = store::find(s, &e.uid)?.is_some();
    let which = if visible {
        format!("EpisodeOfCare/{}", e.uid)
    } else {
        "an enrollment you may not see".to_string()
    };
    Err(if e.status == "ACTIVE" && status == "ACTIVE" {
        Error::Conflict {
            message: format!("Patient/{} already has an active enrollment in {}: {which}; finish or cancel it before opening another (a person has one active enrollment per program)", person.uid, program.name),
            expression: Some("EpisodeOfCare.status".into()),
        }
    } else {
        Error::Conflict {
            message: format!(
                "{} enrolls a person once and Patient/{} has {which} ({}); update that one instead",
                program.name,
                person.uid,
                crate::translate::episode::fhir_status(&e.status)
            ),
            expression: Some("EpisodeOfCare.type".into()),
        }
    })
}

/// 403 unless the caller may write where the person's record in the program is owned (an
/// enrollment's events and data go to its owner, as DHIS2's ownership says). Free for callers
/// whose capture scope is the whole tree.
pub fn check_owner_capture(
    s: &mut Scoped,
    env: &Env,
    person: &PersonRecord,
    program_id: i64,
) -> Result<(), Error> {
    check_owner(s, env, person.id, &person.uid, program_id)
}

/// [`check_owner_capture`] for an existing event (changing or deleting it, or adding a value).
pub fn check_event_owner(
    s: &mut Scoped,
    env: &Env,
    e: &crate::tracker::model::EventRecord,
) -> Result<(), Error> {
    if s.ctx.capture == crate::context::OrgScope::All {
        return Ok(());
    }
    let program = env
        .md
        .stages
        .iter()
        .find(|st| st.id == e.stage_id)
        .map(|st| st.program_id)
        .ok_or_else(|| Error::Internal("stage missing from metadata".into()))?;
    check_owner(s, env, e.tracked_entity_id, &e.tracked_entity_uid, program)
}

fn check_owner(
    s: &mut Scoped,
    env: &Env,
    person_id: i64,
    person_uid: &str,
    program_id: i64,
) -> Result<(), Error> {
    if s.ctx.capture == crate::context::OrgScope::All {
        return Ok(());
    }
    let Some(owner) = store::owner(s.conn()?, person_id, program_id)? else {
        return Ok(());
    };
    let ou = env
        .md
        .org_unit_by_id(owner)
        .ok_or_else(|| Error::Internal("org unit missing from metadata".into()))?;
    if !s.ctx.capture.contains(&ou.path) {
        return Err(Error::Forbidden(format!(
            "Patient/{person_uid}'s record in {} is owned by {} (Organization/{}), outside the org units you may write to; it must be transferred to you first (Patient/{person_uid}/$transfer)",
            program_name(env, program_id),
            ou.name,
            ou.uid,
        )));
    }
    Ok(())
}

fn completed_at(
    status: &str,
    end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match status {
        "ACTIVE" => None,
        _ => Some(end.unwrap_or(now)),
    }
}

pub fn create(
    s: &mut Scoped,
    env: &Env,
    w: &EpisodeWrite,
    inbound: Inbound,
) -> Result<EnrollmentRecord, Error> {
    let person = super::encounters::subject(s, env, TYPE, &w.patient_uid).map_err(|e| match e {
        Error::Unprocessable(mut issues) => {
            for i in &mut issues {
                i.diagnostics = i
                    .diagnostics
                    .replace("EpisodeOfCare.subject", "EpisodeOfCare.patient");
                i.expression = Some("EpisodeOfCare.patient".into());
            }
            Error::Unprocessable(issues)
        }
        e => e,
    })?;
    let org_unit_id = w.org_unit_id.unwrap_or(person.org_unit_id);
    super::check_capture_at(s, env, org_unit_id, "enroll people")?;
    super::check_program(s, env, w.program_id)?;
    // Serialises enrollments of one person (the one-active rule reads, then writes).
    crate::store::patients::find_for_update(s, env.mappings.patient.entity_type_id, &person.uid)?;
    check_can_enroll(s, env, &person, w.program_id, &w.status, 0)?;
    // An owner left by an earlier enrollment stays: the caller must be able to write there.
    check_owner_capture(s, env, &person, w.program_id)?;
    let now = Utc::now();
    let enrolled_at = w.start.unwrap_or(now);
    let id = s.next_id(Seq::Enrollment)?;
    let uid = new_uid();
    s.defer().enrollments.push(EnrollmentRow {
        id,
        uid: uid.clone(),
        tracked_entity_id: person.id,
        program_id: w.program_id,
        org_unit_id,
        status: w.status.clone(),
        enrolled_at,
        occurred_at: w.occurred_at.or(Some(enrolled_at)),
        created: now,
        last_updated: now,
    });
    s.cache.add_enrollment(person.id, w.program_id, id, &uid);
    let mut record = EnrollmentRecord {
        id,
        uid,
        version: 1,
        last_updated: now,
        tracked_entity_id: person.id,
        tracked_entity_uid: person.uid.clone(),
        program_id: w.program_id,
        org_unit_id,
        owner_org_unit_id: org_unit_id,
        status: w.status.clone(),
        enrolled_at,
        occurred_at: w.occurred_at.or(Some(enrolled_at)),
        completed_at: completed_at(&w.status, w.end, now),
        deleted: false,
        transfer: None,
    };
    if record.completed_at.is_some() {
        // The queued row has no completion column; write it once the row exists.
        store::update(
            s.conn()?,
            id,
            &store::Change {
                status: record.status.clone(),
                enrolled_at,
                occurred_at: record.occurred_at,
                completed_at: record.completed_at,
                version: 1,
                at: now,
            },
        )?;
    }
    // An earlier enrollment in the program may have left an owner: it stays (transfer is
    // explicit), and this enrollment shows it.
    if let Some(owner) = store::owner_for_update(s.conn()?, person.id, w.program_id)? {
        record.owner_org_unit_id = owner;
    }
    super::record_write(
        s,
        env,
        TYPE,
        &record,
        "create",
        snapshot(env, &record),
        inbound,
    );
    Ok(record)
}

pub fn update(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
    if_match: Option<i32>,
    w: &EpisodeWrite,
    inbound: Inbound,
) -> Result<EnrollmentRecord, Error> {
    let current = read(s, uid)?;
    store::lock(s.conn()?, current.id)?;
    let current = read(s, uid)?;
    if let Some(v) = if_match {
        if v != current.version {
            return Err(Error::PreconditionFailed(format!(
                "EpisodeOfCare/{uid} is at version {}, not {v}",
                current.version
            )));
        }
    }
    if w.patient_uid != current.tracked_entity_uid {
        return Err(Error::rule(
            format!("EpisodeOfCare.patient cannot change (EpisodeOfCare/{uid} is Patient/{}'s); to move records between people, merge them (Patient/$merge)", current.tracked_entity_uid),
            Some("EpisodeOfCare.patient".into()),
        ));
    }
    if w.program_id != current.program_id {
        return Err(Error::rule(
            format!("EpisodeOfCare.type cannot change (EpisodeOfCare/{uid} is an enrollment in {}); open a new EpisodeOfCare for another program", program_name(env, current.program_id)),
            Some("EpisodeOfCare.type".into()),
        ));
    }
    super::check_capture_at(s, env, current.owner_org_unit_id, "change enrollments")?;
    let person = patients::read(s, env, &current.tracked_entity_uid)?;
    patients::refuse_merged(s, &person, "change the enrollments of")?;
    if w.status != current.status {
        check_can_enroll(s, env, &person, current.program_id, &w.status, current.id)?;
    }
    let now = Utc::now();
    let version = current.version + 1;
    let enrolled_at = w.start.unwrap_or(current.enrolled_at);
    let completed = match (w.status.as_str(), current.status.as_str()) {
        ("ACTIVE", _) => None,
        (a, b) if a == b => w.end.or(current.completed_at),
        _ => Some(w.end.unwrap_or(now)),
    };
    let occurred_at = w.occurred_at.or(current.occurred_at);
    store::update(
        s.conn()?,
        current.id,
        &store::Change {
            status: w.status.clone(),
            enrolled_at,
            occurred_at,
            completed_at: completed,
            version,
            at: now,
        },
    )?;
    let mut record = EnrollmentRecord {
        version,
        last_updated: now,
        status: w.status.clone(),
        enrolled_at,
        occurred_at,
        completed_at: completed,
        transfer: None,
        ..current.clone()
    };
    // A new managingOrganization is a transfer of the person's record in the program.
    if let Some(to) = w.org_unit_id.filter(|to| *to != current.owner_org_unit_id) {
        super::check_capture_at(s, env, to, "transfer records")?;
        let note = move_owner(
            s,
            env,
            &person,
            current.program_id,
            to,
            Some("EpisodeOfCare.managingOrganization changed"),
            now,
        )?;
        record.owner_org_unit_id = to;
        record.transfer = Some(note);
        bump_others(
            s,
            env,
            &person,
            current.program_id,
            current.id,
            &record,
            now,
        )?;
    }
    super::record_write(
        s,
        env,
        TYPE,
        &record,
        "update",
        snapshot(env, &record),
        inbound,
    );
    Ok(record)
}

/// Deletes an enrollment without live events (those must go first, or be moved).
pub fn delete(s: &mut Scoped, env: &Env, uid: &str) -> Result<Option<i32>, Error> {
    let current = store::find(s, uid)?.ok_or_else(|| not_found(uid))?;
    if current.deleted {
        return Ok(None);
    }
    super::check_capture_at(s, env, current.owner_org_unit_id, "change enrollments")?;
    store::lock(s.conn()?, current.id)?;
    let events = store::live_events(s.conn()?, current.id)?;
    if events > 0 {
        return Err(Error::Conflict {
            message: format!("EpisodeOfCare/{uid} holds {events} Encounter(s) (search Encounter?episode-of-care={uid}); delete them first, or finish or cancel the enrollment instead"),
            expression: None,
        });
    }
    let now = Utc::now();
    let version = current.version + 1;
    store::mark_deleted(s.conn()?, current.id, version, now)?;
    logs::record_deletion(s, TYPE, uid, version, now, &env.mappings.version);
    Ok(Some(version))
}

/// Moves ownership (the history row included) and says what moved.
fn move_owner(
    s: &mut Scoped,
    env: &Env,
    person: &PersonRecord,
    program_id: i64,
    to: i64,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<TransferNote, Error> {
    let from = store::owner_for_update(s.conn()?, person.id, program_id)?;
    if let Some(from) = from {
        super::check_capture_at(s, env, from, "transfer records owned")?;
    }
    let actor = s.ctx.actor.to_string();
    store::transfer(
        s.conn()?,
        person.id,
        program_id,
        from,
        to,
        &actor,
        reason,
        at,
    )?;
    Ok(TransferNote {
        from: from.map(|f| org_uid(env, f)),
        to: org_uid(env, to),
        by: actor,
        reason: reason.map(str::to_string),
        at,
    })
}

/// Gives the person's other live enrollments in the program a new version showing the new owner.
fn bump_others(
    s: &mut Scoped,
    env: &Env,
    person: &PersonRecord,
    program_id: i64,
    except: i64,
    changed: &EnrollmentRecord,
    at: DateTime<Utc>,
) -> Result<Vec<EnrollmentRecord>, Error> {
    let ids: Vec<i64> = store::in_program(s.conn()?, person.id, program_id)?
        .into_iter()
        .filter(|id| *id != except)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    store::bump(s.conn()?, &ids, at)?;
    let mut out = Vec::new();
    // Every bumped version gets its snapshot, visible to the caller or not.
    for mut e in store::by_ids_unscoped(s, &ids)? {
        e.transfer = changed.transfer.clone();
        e.owner_org_unit_id = changed.owner_org_unit_id;
        logs::record_change(
            s,
            logs::Change {
                resource_type: TYPE,
                uid: &e.uid,
                version: e.version,
                operation: "update",
                at,
                mapping_version: &env.mappings.version,
                state: Some(snapshot(env, &e)),
            },
        );
        out.push(e);
    }
    Ok(out)
}

/// `Patient/{id}/$transfer`: the person's record in `program_id` is owned by `to` from now on.
/// Returns the enrollments as they are after the move (each with a new version).
pub fn transfer(
    s: &mut Scoped,
    env: &Env,
    person_uid: &str,
    program_id: i64,
    to: i64,
    reason: Option<&str>,
) -> Result<(Option<i64>, Vec<EnrollmentRecord>), Error> {
    let person = patients::read(s, env, person_uid)?;
    // Before anything about the enrollment is looked at: whether one exists is not told either.
    super::check_program(s, env, program_id)?;
    patients::refuse_merged(s, &person, "transfer")?;
    crate::store::patients::find_for_update(s, env.mappings.patient.entity_type_id, person_uid)?;
    let from = store::owner_for_update(s.conn()?, person.id, program_id)?;
    if !crate::store::events::any_enrollment(s.conn()?, person.id, program_id)? {
        return Err(Error::rule(
            format!(
                "Patient/{person_uid} is not enrolled in {}; there is nothing to transfer",
                program_name(env, program_id)
            ),
            Some("Parameters.parameter[program]".into()),
        ));
    }
    if from == Some(to) {
        return Err(Error::rule(
            format!(
                "Patient/{person_uid}'s record in {} is owned by {} already",
                program_name(env, program_id),
                env.md
                    .org_unit_by_id(to)
                    .map(|o| o.name.as_str())
                    .unwrap_or("?")
            ),
            Some("Parameters.parameter[organization]".into()),
        ));
    }
    super::check_capture_at(s, env, to, "transfer records")?;
    let now = Utc::now();
    let note = move_owner(s, env, &person, program_id, to, reason, now)?;
    let carrier = EnrollmentRecord {
        id: 0,
        uid: String::new(),
        version: 0,
        last_updated: now,
        tracked_entity_id: person.id,
        tracked_entity_uid: person.uid.clone(),
        program_id,
        org_unit_id: to,
        owner_org_unit_id: to,
        status: String::new(),
        enrolled_at: now,
        occurred_at: None,
        completed_at: None,
        deleted: false,
        transfer: Some(note),
    };
    let moved = bump_others(s, env, &person, program_id, 0, &carrier, now)?;
    Ok((from, moved))
}

/// `Patient/{id}/$break-glass`: the caller may read the person's record in a protected program
/// for `duration`, for the reason given, whoever owns it (DHIS2's temporary ownership). Returns
/// when the grant ends. Open programs need none (their data is visible in the search scope);
/// closed programs allow none.
pub fn break_glass(
    s: &mut Scoped,
    env: &Env,
    person_uid: &str,
    program_id: i64,
    reason: &str,
    duration: chrono::Duration,
) -> Result<DateTime<Utc>, Error> {
    let program = env
        .md
        .program_by_id(program_id)
        .ok_or_else(|| Error::Internal("program missing from metadata".into()))?;
    match program.access_level.as_str() {
        "PROTECTED" => {}
        "CLOSED" => {
            return Err(Error::Forbidden(format!(
                "{} is a closed program: its records are seen by the owning org unit only, and the glass cannot be broken",
                program.name
            )))
        }
        _ => {
            return Err(Error::rule(
                format!("{} is an open program: its records are visible wherever the person is in your search scope, without breaking the glass", program.name),
                Some("Parameters.parameter[program]".into()),
            ))
        }
    }
    super::check_program(s, env, program_id)?;
    if reason.trim().is_empty() {
        return Err(Error::invalid(
            "$break-glass needs a `reason`: why you must see this record (it is kept with the grant)",
        ));
    }
    // The person must be someone the caller may find (404 otherwise, revealing nothing).
    let person = patients::read(s, env, person_uid)?;
    let expires = Utc::now() + duration;
    let actor = s.ctx.actor.to_string();
    let request_id = s.ctx.request_id.clone();
    store::grant_override(
        s.conn()?,
        person.id,
        program_id,
        &actor,
        reason.trim(),
        expires,
        &request_id,
    )?;
    Ok(expires)
}

/// A change of `Patient.managingOrganization` through PUT, where care.toml asks for it: every
/// program the person is enrolled in moves to the new org unit.
pub fn transfer_all(
    s: &mut Scoped,
    env: &Env,
    person: &PersonRecord,
    to: i64,
) -> Result<(), Error> {
    for program in store::programs_of(s.conn()?, person.id)? {
        // Programs the caller has no access to stay where they are: it may not move what it may
        // not see.
        if super::check_program(s, env, program).is_err() {
            continue;
        }
        let from = store::owner_for_update(s.conn()?, person.id, program)?;
        if from == Some(to) {
            continue;
        }
        let now = Utc::now();
        let note = move_owner(
            s,
            env,
            person,
            program,
            to,
            Some("Patient.managingOrganization changed"),
            now,
        )?;
        let carrier = EnrollmentRecord {
            id: 0,
            uid: String::new(),
            version: 0,
            last_updated: now,
            tracked_entity_id: person.id,
            tracked_entity_uid: person.uid.clone(),
            program_id: program,
            org_unit_id: to,
            owner_org_unit_id: to,
            status: String::new(),
            enrolled_at: now,
            occurred_at: None,
            completed_at: None,
            deleted: false,
            transfer: Some(note),
        };
        bump_others(s, env, person, program, 0, &carrier, now)?;
    }
    Ok(())
}
