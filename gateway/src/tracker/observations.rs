//! Data values (rendered as FHIR Observation). Each has its own id and version although it lives
//! inside an event; without an encounter it lands in the person's event of the mapped stage on the
//! same day, which is opened when missing.

use chrono::{DateTime, Utc};

use super::encounters::{open_event, subject};
use super::model::{DataValueRecord, DataValueSnapshot, EventRecord, PersonRecord, VersionOf};
use super::{new_uid, Env};
use crate::error::Error;
use crate::store::events::{self as store, NewValue};
use crate::store::logs::{self, Inbound};
use crate::store::pending::{Seq, ValueRow};
use crate::store::Scoped;
use crate::translate::observation::ObservationWrite;

const TYPE: &str = "Observation";

fn not_found(uid: &str) -> Error {
    Error::NotFound(format!("Observation/{uid} is not known to this registry"))
}

/// The event that takes the value: the named Encounter, or the person's event of the day.
fn target_event(
    s: &mut Scoped,
    env: &Env,
    person: &PersonRecord,
    w: &ObservationWrite,
) -> Result<EventRecord, Error> {
    let event = match &w.encounter_uid {
        Some(uid) => {
            let e = store::find_event(s, uid)?
                .filter(|e| !e.deleted)
                .ok_or_else(|| {
                    Error::rule(
                        format!(
                            "Observation.encounter: Encounter/{uid} is not known to this registry"
                        ),
                        Some("Observation.encounter".into()),
                    )
                })?;
            if e.tracked_entity_id != person.id {
                return Err(Error::rule(
                    format!("Observation.encounter: Encounter/{uid} is another person's encounter"),
                    Some("Observation.encounter".into()),
                ));
            }
            e
        }
        None => {
            let when = w.observed_at.unwrap_or_else(Utc::now);
            match store::event_on_day(s.conn()?, person.id, w.stage_id, when.date_naive())? {
                Some(id) => store::lock_event(s.conn()?, id)?,
                None => open_event(
                    s,
                    env,
                    person,
                    w.stage_id,
                    person.org_unit_id,
                    "ACTIVE",
                    Some(when),
                    None,
                    None,
                )?,
            }
        }
    };
    let stage = env.md.stages.iter().find(|st| st.id == event.stage_id);
    if let Some(stage) = stage {
        if !stage.data_element_ids.contains(&w.data_element_id) {
            let de = env
                .md
                .data_elements
                .iter()
                .find(|d| d.id == w.data_element_id)
                .map(|d| d.name.as_str())
                .unwrap_or("?");
            return Err(Error::rule(format!("{de} is not recorded in stage {} (Encounter/{}); send it with an encounter whose stage records it", stage.name, event.uid), Some("Observation.code".into())));
        }
    }
    super::check_capture_at(s, env, event.org_unit_id, "record observations")?;
    super::episodes::check_event_owner(s, env, &event)?;
    Ok(event)
}

pub(super) fn snapshot(env: &Env, d: &DataValueRecord) -> serde_json::Value {
    serde_json::to_value(DataValueSnapshot {
        event: d.event_uid.clone(),
        data_element: env
            .md
            .data_elements
            .iter()
            .find(|x| x.id == d.data_element_id)
            .map(|x| x.uid.clone())
            .unwrap_or_default(),
        value: d.value.clone(),
        observed_at: d.observed_at,
        tracked_entity: d.tracked_entity_uid.clone(),
    })
    .unwrap_or_default()
}

pub fn create(
    s: &mut Scoped,
    env: &Env,
    w: &ObservationWrite,
    inbound: Inbound,
) -> Result<DataValueRecord, Error> {
    let person = subject(s, env, TYPE, &w.patient_uid)?;
    let event = target_event(s, env, &person, w)?;
    super::check_program_of_stage(s, env, event.stage_id)?;
    let now = Utc::now();
    let uid = new_uid();
    let observed_at = w.observed_at.or(event.occurred_at);
    let id = s.next_id(Seq::DataValue)?;
    s.defer().values.push(ValueRow {
        id,
        uid: uid.clone(),
        event_id: event.id,
        data_element_id: w.data_element_id,
        tracked_entity_id: person.id,
        value: w.value.clone(),
        value_num: w.value_num,
        observed_at,
        version: 1,
        created: now,
        last_updated: now,
        enrollment_id: event.enrollment_id,
    });
    let d = DataValueRecord {
        id,
        uid,
        version: 1,
        last_updated: now,
        event_id: event.id,
        event_uid: event.uid,
        data_element_id: w.data_element_id,
        tracked_entity_id: person.id,
        tracked_entity_uid: person.uid,
        value: w.value.clone(),
        observed_at,
        deleted: false,
    };
    super::record_write(s, env, TYPE, &d, "create", snapshot(env, &d), inbound);
    Ok(d)
}

pub fn update(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
    if_match: Option<i32>,
    w: &ObservationWrite,
    inbound: Inbound,
) -> Result<DataValueRecord, Error> {
    let visible = store::find_value(s, uid)?.ok_or_else(|| not_found(uid))?;
    let current = store::lock_value(s.conn()?, visible.id)?;
    if let Some(v) = if_match {
        if v != current.version {
            return Err(Error::PreconditionFailed(format!("Observation/{uid} is at version {}, not {v}: read it again and reapply your change", current.version)));
        }
    }
    if w.patient_uid != current.tracked_entity_uid {
        return Err(Error::rule(
            format!(
                "Observation/{uid} belongs to Patient/{}; it cannot move to another person",
                current.tracked_entity_uid
            ),
            Some("Observation.subject".into()),
        ));
    }
    let person = subject(s, env, TYPE, &w.patient_uid)?;
    // Where it is now must be the caller's to change, as well as where it goes.
    let was = store::lock_event(s.conn()?, current.event_id)?;
    super::episodes::check_event_owner(s, env, &was)?;
    let mut w = w.clone();
    if w.encounter_uid.is_none() {
        w.encounter_uid = Some(current.event_uid.clone());
    }
    let event = target_event(s, env, &person, &w)?;
    let now = Utc::now();
    let version = current.version + 1;
    let observed_at = w.observed_at.or(event.occurred_at);
    let nv = NewValue {
        uid,
        event_id: event.id,
        enrollment_id: event.enrollment_id,
        data_element_id: w.data_element_id,
        tracked_entity_id: person.id,
        value: &w.value,
        value_num: w.value_num,
        observed_at,
        now,
    };
    store::update_value(s.conn()?, current.id, &nv, version)?;
    let d = DataValueRecord {
        version,
        last_updated: now,
        event_id: event.id,
        event_uid: event.uid,
        data_element_id: w.data_element_id,
        value: w.value.clone(),
        observed_at,
        deleted: false,
        ..current
    };
    super::record_write(s, env, TYPE, &d, "update", snapshot(env, &d), inbound);
    Ok(d)
}

pub fn delete(s: &mut Scoped, env: &Env, uid: &str) -> Result<Option<i32>, Error> {
    let visible = store::find_value(s, uid)?.ok_or_else(|| not_found(uid))?;
    let current = store::lock_value(s.conn()?, visible.id)?;
    if current.deleted {
        return Ok(None);
    }
    let event = store::lock_event(s.conn()?, current.event_id)?;
    super::check_capture_at(s, env, event.org_unit_id, "delete observations recorded")?;
    super::episodes::check_event_owner(s, env, &event)?;
    let now = Utc::now();
    let version = current.version + 1;
    store::mark_value_deleted(s.conn()?, current.id, version, now)?;
    logs::record_deletion(s, TYPE, uid, version, now, &env.mappings.version);
    Ok(Some(version))
}

pub fn read(s: &mut Scoped, uid: &str) -> Result<DataValueRecord, Error> {
    let d = store::find_value(s, uid)?.ok_or_else(|| not_found(uid))?;
    if d.deleted {
        return Err(Error::Gone(format!(
            "Observation/{uid} was deleted (version {})",
            d.version
        )));
    }
    Ok(d)
}

fn from_snapshot(
    env: &Env,
    current: &DataValueRecord,
    version: i32,
    at: DateTime<Utc>,
    state: Option<serde_json::Value>,
) -> Option<DataValueRecord> {
    let snap: DataValueSnapshot = serde_json::from_value(state?).ok()?;
    Some(DataValueRecord {
        version,
        last_updated: at,
        event_uid: snap.event,
        data_element_id: env.md.data_element(&snap.data_element).map(|d| d.id)?,
        value: snap.value,
        observed_at: snap.observed_at,
        deleted: false,
        ..current.clone()
    })
}

pub fn vread(s: &mut Scoped, env: &Env, uid: &str, version: i32) -> Result<DataValueRecord, Error> {
    let current = store::find_value(s, uid)?.ok_or_else(|| not_found(uid))?;
    super::version_of(s, TYPE, uid, version, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}

pub fn history(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
) -> Result<Vec<VersionOf<DataValueRecord>>, Error> {
    let current = store::find_value(s, uid)?.ok_or_else(|| not_found(uid))?;
    super::versions_of(s, TYPE, uid, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}
