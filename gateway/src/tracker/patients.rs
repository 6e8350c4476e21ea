//! People (tracked entities rendered as FHIR Patient): create, update, delete, read and history,
//! with the registry's rules: capture scope on writes, unique attributes, optimistic versions.

use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::model::{PersonRecord, PersonSnapshot, VersionOf};
use super::{new_uid, search_form, Env};
use crate::error::Error;
use crate::store::logs::{self, Inbound};
use crate::store::patients::{self as store, ValueRow};
use crate::store::pending::{AttributeValueRow, PersonRow, Seq, UniqueClaim};
use crate::store::{EntryAt, Scoped};
use crate::translate::patient::PatientWrite;

const TYPE: &str = "Patient";

pub(super) fn snapshot(env: &Env, p: &PersonRecord) -> serde_json::Value {
    let s = PersonSnapshot {
        org_unit: env
            .md
            .org_unit_by_id(p.org_unit_id)
            .map(|o| o.uid.clone())
            .unwrap_or_default(),
        inactive: p.inactive,
        attributes: p
            .values
            .iter()
            .filter_map(|(id, v)| Some((env.md.attribute_by_id(*id)?.uid.clone(), v.clone())))
            .collect(),
    };
    serde_json::to_value(s).unwrap_or_default()
}

/// Rebuilds a record of an earlier version from its change-log snapshot.
pub fn from_snapshot(
    env: &Env,
    current: &PersonRecord,
    version: i32,
    at: chrono::DateTime<Utc>,
    state: Option<serde_json::Value>,
) -> Option<PersonRecord> {
    let s: PersonSnapshot = serde_json::from_value(state?).ok()?;
    Some(PersonRecord {
        id: current.id,
        uid: current.uid.clone(),
        version,
        last_updated: at,
        org_unit_id: env
            .md
            .org_unit(&s.org_unit)
            .map(|o| o.id)
            .unwrap_or(current.org_unit_id),
        inactive: s.inactive,
        deleted: false,
        merged_into: None,
        values: s
            .attributes
            .iter()
            .filter_map(|(uid, v)| Some((env.md.attribute(uid)?.id, v.clone())))
            .collect(),
    })
}

/// The blocking keys of `Patient/$match` for a person, when matching is on.
fn match_keys(
    env: &Env,
    p: &PersonRecord,
) -> Option<(Vec<crate::matching::keys::Key>, Vec<String>, bool)> {
    env.mappings.matching.as_ref()?;
    let pm = &env.mappings.patient;
    let d = crate::matching::Demographics::from_values(&p.values, pm);
    Some((
        crate::matching::keys::keys(&d),
        d.single_valued(pm),
        d.holds_primary(pm),
    ))
}

/// Resolves the owning org unit and checks that the caller may write there.
fn owner(
    s: &Scoped,
    env: &Env,
    input: &PatientWrite,
    default_org_unit: Option<i64>,
) -> Result<i64, Error> {
    let id = input.org_unit_id.or(default_org_unit).ok_or_else(|| {
        Error::rule(
            "Patient.managingOrganization is required: every person in the registry is owned by an org unit (reference an Organization of this server)",
            Some("Patient.managingOrganization".into()),
        )
    })?;
    let ou = env
        .md
        .org_unit_by_id(id)
        .ok_or_else(|| Error::Internal(format!("org unit id {id} missing from metadata")))?;
    if !s.ctx.capture.contains(&ou.path) {
        return Err(Error::Forbidden(format!(
            "you may not register or change people owned by {} (Organization/{})",
            ou.name, ou.uid
        )));
    }
    Ok(id)
}

fn rows<'a>(env: &Env, input: &'a PatientWrite) -> Vec<ValueRow<'a>> {
    input
        .values
        .iter()
        .map(|v| ValueRow {
            attribute_id: v.attribute_id,
            value: &v.value,
            search_value: search_form(&v.value),
            is_unique: env
                .md
                .attribute_by_id(v.attribute_id)
                .is_some_and(|a| a.unique),
        })
        .collect()
}

/// Turns the database's unique-index refusal into a message naming the attribute and element.
fn unique_conflict(env: &Env, input: &PatientWrite, e: Error) -> Error {
    let Error::Database(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)) = &e
    else {
        return e;
    };
    if info.constraint_name() != Some("teav_unique_value_idx") {
        return e;
    }
    // Detail reads `Key (attribute_id, value)=(<id>, <value>) already exists.`
    let attr_id = info
        .details()
        .and_then(|d| d.split("=(").nth(1))
        .and_then(|d| d.split(',').next())
        .and_then(|d| d.trim().parse::<i64>().ok());
    let found = attr_id.and_then(|id| {
        Some((
            env.md.attribute_by_id(id)?,
            input.values.iter().find(|v| v.attribute_id == id)?,
        ))
    });
    match found {
        Some((attr, v)) => Error::Conflict {
            message: format!("{}: this {} is already registered to another person; a {} identifies one person only", v.expression, attr.name, attr.name),
            expression: Some(v.expression.clone()),
        },
        None => Error::Conflict { message: "a value that must be unique is already registered to another person".into(), expression: None },
    }
}

pub struct Written {
    pub record: PersonRecord,
    pub created: bool,
    /// The records matching linked this one to (uid, owning org unit).
    pub linked: Vec<super::identity::Linked>,
}

pub fn create(
    s: &mut Scoped,
    env: &Env,
    input: &PatientWrite,
    default_org_unit: Option<i64>,
    inbound: Inbound,
) -> Result<Written, Error> {
    let org_unit_id = owner(s, env, input, default_org_unit)?;
    let now = Utc::now();
    let uid = new_uid();
    // Queued, not inserted: a Bundle's people go in one COPY. A unique value someone else holds
    // is refused at the flush, in this entry's name (see `UniqueClaim`).
    let id = s.next_id(Seq::Person)?;
    let entry = s.entry.clone();
    for v in &input.values {
        let attribute = env.md.attribute_by_id(v.attribute_id);
        let is_unique = attribute.is_some_and(|a| a.unique);
        if let (true, Some(a)) = (is_unique, attribute) {
            s.defer().unique_claims.push(UniqueClaim {
                attribute_id: v.attribute_id,
                value: v.value.clone(),
                entry: entry.as_ref().map(EntryAt::label),
                expression: match &entry {
                    Some(e) => e.path(Some(&v.expression)),
                    None => v.expression.clone(),
                },
                element: v.expression.clone(),
                attribute: a.name.clone(),
            });
        }
        s.defer().person_values.push(AttributeValueRow {
            tracked_entity_id: id,
            attribute_id: v.attribute_id,
            value: v.value.clone(),
            search_value: search_form(&v.value),
            is_unique,
            created: now,
            last_updated: now,
        });
    }
    s.defer().persons.push(PersonRow {
        id,
        uid: uid.clone(),
        tracked_entity_type_id: env.mappings.patient.entity_type_id,
        org_unit_id,
        inactive: input.inactive,
        version: 1,
        created: now,
        last_updated: now,
    });
    let record = PersonRecord {
        id,
        uid: uid.clone(),
        version: 1,
        last_updated: now,
        org_unit_id,
        inactive: input.inactive,
        deleted: false,
        merged_into: None,
        values: input
            .values
            .iter()
            .map(|v| (v.attribute_id, v.value.clone()))
            .collect(),
    };
    if let Some((keys, sv, hard)) = match_keys(env, &record) {
        s.defer()
            .match_keys
            .extend(crate::store::match_keys::rows(id, keys, &sv, hard));
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
    if let Some(ou) = env.md.org_unit_by_id(org_unit_id) {
        s.cache.add_person(&record, &ou.path);
    }
    let linked = super::identity::link(s, env, &record, false)?;
    Ok(Written {
        record,
        created: true,
        linked,
    })
}

/// Replaces the mapped attributes of the person `uid`. `if_match` is the version the client saw.
pub fn update(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
    if_match: Option<i32>,
    input: &PatientWrite,
    default_org_unit: Option<i64>,
    inbound: Inbound,
) -> Result<Written, Error> {
    let current = store::find_for_update(s, env.mappings.patient.entity_type_id, uid)?
        .ok_or_else(|| not_found(uid))?;
    refuse_merged(s, &current, "change")?;
    if let Some(expected) = if_match {
        if expected != current.version {
            return Err(Error::PreconditionFailed(format!("Patient/{uid} is at version {}, not {expected}: read it again and reapply your change", current.version)));
        }
    }
    check_capture(s, env, &current, "change")?;
    let org_unit_id = owner(
        s,
        env,
        input,
        Some(current.org_unit_id).or(default_org_unit),
    )?;
    let now = Utc::now();
    let version = current.version + 1;
    store::update(
        s.conn()?,
        current.id,
        org_unit_id,
        input.inactive,
        version,
        now,
    )?;
    let mapped = env.mappings.patient.attribute_ids();
    store::replace_values(s.conn()?, current.id, &mapped, &rows(env, input), now)
        .map_err(|e| unique_conflict(env, input, e))?;
    let mut values = current.values.clone();
    values.retain(|k, _| !mapped.contains(k));
    values.extend(
        input
            .values
            .iter()
            .map(|v| (v.attribute_id, v.value.clone())),
    );
    let record = PersonRecord {
        id: current.id,
        uid: current.uid,
        version,
        last_updated: now,
        org_unit_id,
        inactive: input.inactive,
        deleted: false,
        merged_into: None,
        values,
    };
    if let Some((keys, sv, hard)) = match_keys(env, &record) {
        crate::store::match_keys::replace(s, record.id, keys, &sv, hard)?;
    }
    let linked = super::identity::link(s, env, &record, true)?;
    super::record_write(
        s,
        env,
        TYPE,
        &record,
        "update",
        snapshot(env, &record),
        inbound,
    );
    Ok(Written {
        record,
        created: false,
        linked,
    })
}

/// Soft-deletes the person. Returns the new version, or None when it was already deleted.
pub fn delete(s: &mut Scoped, env: &Env, uid: &str) -> Result<Option<i32>, Error> {
    let current = store::find_for_update(s, env.mappings.patient.entity_type_id, uid)?
        .ok_or_else(|| not_found(uid))?;
    if current.deleted {
        return Ok(None);
    }
    refuse_merged(s, &current, "delete")?;
    check_capture(s, env, &current, "delete")?;
    let live = crate::store::events::live_events_of_person(s.conn()?, current.id)?;
    if live > 0 {
        return Err(Error::Conflict { message: format!("Patient/{uid} still has {live} Encounter(s); delete their Observations and Encounters first"), expression: None });
    }
    let related = crate::store::relationships::live_of_person(s.conn()?, current.id)?;
    if related > 0 {
        return Err(Error::Conflict { message: format!("Patient/{uid} is in {related} relationship(s) (RelatedPerson?patient={uid}, and the RelatedPersons her Patient.link names); delete them first"), expression: None });
    }
    let now = Utc::now();
    let version = current.version + 1;
    store::mark_deleted(s.conn()?, current.id, version, now)?;
    logs::record_deletion(s, TYPE, uid, version, now, &env.mappings.version);
    Ok(Some(version))
}

/// 403 unless the caller may write where `p` is owned (their capture scope); `what` they tried,
/// as a verb ("change", "delete", "merge").
pub fn check_capture(s: &Scoped, env: &Env, p: &PersonRecord, what: &str) -> Result<(), Error> {
    let path = env
        .md
        .org_unit_by_id(p.org_unit_id)
        .map(|o| o.path.as_str())
        .unwrap_or_default();
    if !s.ctx.capture.contains(path) {
        return Err(Error::Forbidden(format!(
            "you may read Patient/{} but not {what} it: it is owned outside your org units",
            p.uid
        )));
    }
    Ok(())
}

/// A merged record keeps its history but takes no new data: that goes to the survivor.
pub fn refuse_merged(s: &mut Scoped, p: &PersonRecord, what: &str) -> Result<(), Error> {
    let Some(survivor) = p.merged_into else {
        return Ok(());
    };
    let survivor = crate::store::merge::uid_of(s.conn()?, survivor)?;
    Err(Error::Conflict {
        message: format!(
            "Patient/{} was merged into Patient/{survivor}: {what} Patient/{survivor} instead, or undo the merge first (Patient/$unmerge)",
            p.uid
        ),
        expression: None,
    })
}

fn not_found(uid: &str) -> Error {
    Error::NotFound(format!("Patient/{uid} is not known to this registry"))
}

/// The current state; 404 when unknown or out of scope, 410 when deleted.
pub fn read(s: &mut Scoped, env: &Env, uid: &str) -> Result<PersonRecord, Error> {
    let p =
        store::find(s, env.mappings.patient.entity_type_id, uid)?.ok_or_else(|| not_found(uid))?;
    if p.deleted {
        return Err(Error::Gone(format!(
            "Patient/{uid} was deleted (version {})",
            p.version
        )));
    }
    Ok(p)
}

/// One version, rebuilt from the change log. 410 for the version that records a deletion.
pub fn vread(s: &mut Scoped, env: &Env, uid: &str, version: i32) -> Result<PersonRecord, Error> {
    let current =
        store::find(s, env.mappings.patient.entity_type_id, uid)?.ok_or_else(|| not_found(uid))?;
    super::version_of(s, TYPE, uid, version, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}

/// Every version, newest first: (record or None for a deletion, operation).
pub fn history(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
) -> Result<Vec<VersionOf<PersonRecord>>, Error> {
    let current =
        store::find(s, env.mappings.patient.entity_type_id, uid)?.ok_or_else(|| not_found(uid))?;
    super::versions_of(s, TYPE, uid, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}
