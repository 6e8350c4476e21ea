//! Relationships between people (RelatedPerson): who the related person is, and the rules of the
//! relationship type (entity types and programs at each end, one mother per child).

use chrono::Utc;
use serde_json::Value;

use super::model::{PersonRecord, RelationshipRecord, RelationshipSnapshot, VersionOf};
use super::{new_uid, patients, Env};
use crate::error::Error;
use crate::store::logs::{self, Inbound};
use crate::store::relationships as store;
use crate::store::Scoped;
use crate::translate::related_person::RelatedWrite;

const TYPE: &str = "RelatedPerson";

impl super::Stamped for RelationshipRecord {
    fn stamp(&self) -> (&str, i32, chrono::DateTime<Utc>) {
        (&self.uid, self.version, self.last_updated)
    }
}

fn not_found(uid: &str) -> Error {
    Error::NotFound(format!("RelatedPerson/{uid} is not known to this registry"))
}

/// The current state; 404 when unknown or out of scope, 410 when deleted.
pub fn read(s: &mut Scoped, uid: &str) -> Result<RelationshipRecord, Error> {
    let r = store::find(s, uid)?.ok_or_else(|| not_found(uid))?;
    if r.deleted {
        return Err(Error::Gone(format!(
            "RelatedPerson/{uid} was deleted (version {})",
            r.version
        )));
    }
    Ok(r)
}

/// A person named by a RelatedPerson: 422 naming the element when unknown.
fn person(s: &mut Scoped, env: &Env, uid: &str, element: &str) -> Result<PersonRecord, Error> {
    super::encounters::subject(s, env, TYPE, uid).map_err(|e| match e {
        Error::Unprocessable(mut issues) => {
            for i in &mut issues {
                i.diagnostics = i.diagnostics.replace("RelatedPerson.subject", element);
                i.expression = Some(element.to_string());
            }
            Error::Unprocessable(issues)
        }
        e => e,
    })
}

/// The related person: the record named, else the one registered person holding one of her
/// identifiers (in a unique system), else a person registered now from her demographics.
fn related_person(
    s: &mut Scoped,
    env: &Env,
    w: &RelatedWrite,
    patient: &PersonRecord,
    warnings: &mut Vec<crate::fhir::outcome::Issue>,
) -> Result<PersonRecord, Error> {
    use crate::fhir::outcome::Issue;
    let named = match &w.record_uid {
        Some(uid) => Some(person(s, env, uid, "RelatedPerson.extension")?),
        None => {
            let mut found: Option<PersonRecord> = None;
            for v in &w.person.values {
                let unique = env
                    .md
                    .attribute_by_id(v.attribute_id)
                    .is_some_and(|a| a.unique);
                if !unique {
                    continue;
                }
                for p in crate::store::patients::holding(s, v.attribute_id, &v.value)? {
                    if p.deleted || p.merged_into.is_some() {
                        continue;
                    }
                    match &found {
                        Some(f) if f.id != p.id => {
                            return Err(Error::rule(
                                format!("RelatedPerson.identifier names two registered people (Patient/{} and Patient/{}); name the one meant with the {} extension", f.uid, p.uid, crate::translate::related_person::RECORD),
                                Some("RelatedPerson.identifier".into()),
                            ))
                        }
                        _ => found = Some(p),
                    }
                }
            }
            found
        }
    };
    if let Some(p) = named {
        if w.has_demographics {
            let same = w
                .person
                .values
                .iter()
                .all(|v| p.values.get(&v.attribute_id) == Some(&v.value));
            if !same {
                warnings.push(Issue::warning(
                    "informational",
                    format!("the related person is Patient/{}: her name, identifiers, contacts and birth date are kept in that record and were not changed from this RelatedPerson (update Patient/{} to change them)", p.uid, p.uid),
                    Some("RelatedPerson".into()),
                ));
            }
        }
        return Ok(p);
    }
    if !w.has_demographics {
        return Err(Error::rule(
            format!("RelatedPerson: who is the related person? Send her demographics (name, gender, birthDate, identifier...) to register her, or name her record with the {} extension", crate::translate::related_person::RECORD),
            Some("RelatedPerson".into()),
        ));
    }
    // She is registered where the patient is, unless her own record says otherwise.
    let raw = serde_json::to_vec(&w.person_resource).unwrap_or_default();
    let written = patients::create(
        s,
        env,
        &w.person,
        Some(patient.org_unit_id),
        Inbound {
            interaction: "create",
            resource_type: "Patient",
            uid: None,
            content_type: "application/fhir+json",
            body: &raw,
            mapping_version: &env.mappings.version,
        },
    )?;
    Ok(written.record)
}

/// The ends of the relationship in the type's terms: (from, to).
fn ends<'p>(
    w: &RelatedWrite,
    patient: &'p PersonRecord,
    related: &'p PersonRecord,
) -> (&'p PersonRecord, &'p PersonRecord) {
    if w.related_is_from {
        (related, patient)
    } else {
        (patient, related)
    }
}

/// The relationship type's rules: the people's entity type and programs at each end, no
/// relationship with oneself, one `from` per `to` where care.toml says so, no duplicate.
fn check_rules(
    s: &mut Scoped,
    env: &Env,
    w: &RelatedWrite,
    from: &PersonRecord,
    to: &PersonRecord,
    except: i64,
) -> Result<(), Error> {
    let t = env
        .md
        .relationship_type_by_id(w.type_id)
        .ok_or_else(|| Error::Internal("relationship type missing from metadata".into()))?;
    let rule = |m: String| Error::rule(m, Some("RelatedPerson.relationship".into()));
    if from.id == to.id {
        return Err(rule(format!(
            "relationship {}: Patient/{} cannot be related to herself",
            t.name, from.uid
        )));
    }
    let person_type = env.mappings.patient.entity_type_id;
    for (end, p, entity_type, program) in [
        ("from", from, t.from_entity_type_id, t.from_program_id),
        ("to", to, t.to_entity_type_id, t.to_program_id),
    ] {
        if let Some(et) = entity_type.filter(|et| *et != person_type) {
            let name = env
                .md
                .entity_types
                .iter()
                .find(|x| x.id == et)
                .map(|x| x.name.as_str())
                .unwrap_or("?");
            return Err(rule(format!(
                "relationship type {} wants a {name} at its `{end}` end; Patient/{} is not one",
                t.name, p.uid
            )));
        }
        if let Some(program) = program {
            if !crate::store::events::any_enrollment(s.conn()?, p.id, program)? {
                let name = env
                    .md
                    .program_by_id(program)
                    .map(|x| x.name.as_str())
                    .unwrap_or("?");
                return Err(rule(format!(
                    "relationship type {} wants its `{end}` end enrolled in {name}; Patient/{} is not",
                    t.name, p.uid
                )));
            }
        }
    }
    if env.mappings.care.one_from_per_to.contains(&t.id) {
        store::lock_end(s.conn()?, t.id, to.id)?;
        if let Some(other) = store::other_to(s.conn()?, t.id, to.id, except)? {
            let role = t.from_to_name.as_deref().unwrap_or(&t.name);
            return Err(rule(format!(
                "relationship type {} allows one `{role}` per person (mappings/care.toml: one_from_per_to) and Patient/{} already has one: RelatedPerson/{other}",
                t.name, to.uid
            )));
        }
    }
    if let Some(other) = store::same(s.conn()?, t.id, from.id, to.id, except)? {
        return Err(Error::Conflict {
            message: format!(
                "this relationship ({} between Patient/{} and Patient/{}) is recorded already as RelatedPerson/{other}",
                t.name, from.uid, to.uid
            ),
            expression: None,
        });
    }
    Ok(())
}

pub fn snapshot(env: &Env, r: &RelationshipRecord) -> Value {
    serde_json::to_value(RelationshipSnapshot {
        relationship_type: env
            .md
            .relationship_type_by_id(r.type_id)
            .map(|t| t.uid.clone())
            .unwrap_or_default(),
        from: r.from_uid.clone(),
        to: r.to_uid.clone(),
        related_is_from: r.related_is_from,
        role_system: r.role.as_ref().map(|c| c.system.clone()),
        role_code: r.role.as_ref().map(|c| c.code.clone()),
        role_display: r.role.as_ref().and_then(|c| c.display.clone()),
    })
    .unwrap_or_default()
}

/// What was written, with the related person's record (rendered into the RelatedPerson).
pub struct Written {
    pub record: RelationshipRecord,
    pub related: PersonRecord,
    pub warnings: Vec<crate::fhir::outcome::Issue>,
}

pub fn create(
    s: &mut Scoped,
    env: &Env,
    w: &RelatedWrite,
    inbound: Inbound,
) -> Result<Written, Error> {
    let patient = person(s, env, &w.patient_uid, "RelatedPerson.patient")?;
    patients::check_capture(s, env, &patient, "record a relation of")?;
    let mut warnings = Vec::new();
    let related = related_person(s, env, w, &patient, &mut warnings)?;
    let (from, to) = ends(w, &patient, &related);
    check_rules(s, env, w, from, to, 0)?;
    let now = Utc::now();
    let uid = new_uid();
    let id = store::insert(
        s.conn()?,
        &uid,
        &store::Values {
            type_id: w.type_id,
            from: from.id,
            to: to.id,
            related_is_from: w.related_is_from,
            role: &w.role,
            at: now,
        },
    )?;
    let record = RelationshipRecord {
        id,
        uid,
        version: 1,
        last_updated: now,
        type_id: w.type_id,
        from_id: from.id,
        from_uid: from.uid.clone(),
        to_id: to.id,
        to_uid: to.uid.clone(),
        related_is_from: w.related_is_from,
        role: Some(w.role.clone()),
        deleted: false,
    };
    super::record_write(
        s,
        env,
        TYPE,
        &record,
        "create",
        snapshot(env, &record),
        inbound,
    );
    Ok(Written {
        record,
        related,
        warnings,
    })
}

pub fn update(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
    if_match: Option<i32>,
    w: &RelatedWrite,
    inbound: Inbound,
) -> Result<Written, Error> {
    let current = read(s, uid)?;
    store::lock(s.conn()?, current.id)?;
    let current = read(s, uid)?;
    if let Some(v) = if_match {
        if v != current.version {
            return Err(Error::PreconditionFailed(format!(
                "RelatedPerson/{uid} is at version {}, not {v}",
                current.version
            )));
        }
    }
    let patient = person(s, env, &w.patient_uid, "RelatedPerson.patient")?;
    patients::check_capture(s, env, &patient, "record a relation of")?;
    let (was_patient, _) = current.ends();
    if was_patient != patient.id {
        let before = crate::store::patients::by_ids(s, &[was_patient])?
            .pop()
            .ok_or_else(|| not_found(uid))?;
        patients::check_capture(s, env, &before, "remove a relation of")?;
    }
    let mut warnings = Vec::new();
    // The related person stays who she was unless the RelatedPerson names someone else.
    let (_, was_related) = current.ends();
    let related = match &w.record_uid {
        Some(_) => related_person(s, env, w, &patient, &mut warnings)?,
        None => {
            let who = if current.related_is_from {
                &current.from_uid
            } else {
                &current.to_uid
            };
            let p = patients::read(s, env, who)?;
            debug_assert_eq!(p.id, was_related);
            let mut w2 = w.clone();
            w2.record_uid = Some(p.uid.clone());
            related_person(s, env, &w2, &patient, &mut warnings)?
        }
    };
    let (from, to) = ends(w, &patient, &related);
    check_rules(s, env, w, from, to, current.id)?;
    let now = Utc::now();
    let version = current.version + 1;
    store::update(
        s.conn()?,
        current.id,
        version,
        &store::Values {
            type_id: w.type_id,
            from: from.id,
            to: to.id,
            related_is_from: w.related_is_from,
            role: &w.role,
            at: now,
        },
    )?;
    let record = RelationshipRecord {
        version,
        last_updated: now,
        type_id: w.type_id,
        from_id: from.id,
        from_uid: from.uid.clone(),
        to_id: to.id,
        to_uid: to.uid.clone(),
        related_is_from: w.related_is_from,
        role: Some(w.role.clone()),
        ..current
    };
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
        related,
        warnings,
    })
}

/// Deletes the relationship (the people stay). None when it was deleted already.
pub fn delete(s: &mut Scoped, env: &Env, uid: &str) -> Result<Option<i32>, Error> {
    let current = store::find(s, uid)?.ok_or_else(|| not_found(uid))?;
    if current.deleted {
        return Ok(None);
    }
    let (patient, _) = current.ends();
    let patient = crate::store::patients::by_ids(s, &[patient])?
        .pop()
        .ok_or_else(|| not_found(uid))?;
    patients::check_capture(s, env, &patient, "remove a relation of")?;
    store::lock(s.conn()?, current.id)?;
    let now = Utc::now();
    let version = current.version + 1;
    store::mark_deleted(s.conn()?, current.id, version, now)?;
    logs::record_deletion(s, TYPE, uid, version, now, &env.mappings.version);
    Ok(Some(version))
}

/// New versions of the relationships a merge or an unmerge moved (their people changed).
pub fn log_moved(
    s: &mut Scoped,
    env: &Env,
    ids: &[i64],
    at: chrono::DateTime<Utc>,
) -> Result<(), Error> {
    for r in store::bump(s, ids, at)? {
        logs::record_change(
            s,
            logs::Change {
                resource_type: TYPE,
                uid: &r.uid,
                version: r.version,
                operation: "update",
                at,
                mapping_version: &env.mappings.version,
                state: Some(snapshot(env, &r)),
            },
        );
    }
    Ok(())
}

fn from_snapshot(
    env: &Env,
    current: &RelationshipRecord,
    version: i32,
    at: chrono::DateTime<Utc>,
    state: Option<Value>,
) -> Option<RelationshipRecord> {
    let snap: RelationshipSnapshot = serde_json::from_value(state?).ok()?;
    let t = env.md.relationship_type(&snap.relationship_type)?;
    Some(RelationshipRecord {
        version,
        last_updated: at,
        type_id: t.id,
        from_uid: snap.from,
        to_uid: snap.to,
        related_is_from: snap.related_is_from,
        role: match (snap.role_system, snap.role_code) {
            (Some(system), Some(code)) => Some(crate::mapping::encounter::Coding {
                system,
                code,
                display: snap.role_display,
            }),
            _ => None,
        },
        deleted: false,
        ..current.clone()
    })
}

pub fn vread(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
    version: i32,
) -> Result<RelationshipRecord, Error> {
    let current = store::find(s, uid)?.ok_or_else(|| not_found(uid))?;
    super::version_of(s, TYPE, uid, version, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}

pub fn history(
    s: &mut Scoped,
    env: &Env,
    uid: &str,
) -> Result<Vec<VersionOf<RelationshipRecord>>, Error> {
    let current = store::find(s, uid)?.ok_or_else(|| not_found(uid))?;
    super::versions_of(s, TYPE, uid, &current, &|c, v, at, st| {
        from_snapshot(env, c, v, at, st)
    })
}
