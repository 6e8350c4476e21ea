//! `Patient/$merge` (FHIR R5 semantics on R4) and its undo. A merge moves the source's
//! enrollments, events, data values, relationships and identifiers to the target in the
//! caller's transaction, keeps the source (inactive, `replaced-by` the target) and writes down
//! what moved, so that an unmerge puts exactly that back: unlike DHIS2's merge, nothing is
//! deleted.
//!
//! Identifiers move where the target has none of that system; one the target holds a different
//! value of stays on the source and is reported (a person has one value per system here). With
//! `result-patient`, the target becomes that Patient (its mapped elements), and the source keeps
//! the identifiers the result leaves out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::model::PersonRecord;
use super::{encounters, observations, patients, search_form, Env};
use crate::error::Error;
use crate::fhir::outcome::Issue;
use crate::store::merge::{self as store, Holdings, Moved};
use crate::store::patients::{self as people, ValueRow};
use crate::store::{events, links, logs, match_keys, Scoped};
use crate::translate::patient::PatientWrite;

/// What `$merge` was asked, the records named by uid.
pub struct MergeRequest<'a> {
    pub source: &'a str,
    pub target: &'a str,
    /// `result-patient`, translated: what the target should hold after the merge.
    pub result: Option<&'a PatientWrite>,
    pub preview: bool,
}

/// What a merge (or unmerge) did, or with `preview` would do.
pub struct MergeDone {
    pub source: PersonRecord,
    pub target: PersonRecord,
    pub enrollments: usize,
    pub events: usize,
    pub observations: usize,
    pub relationships: usize,
    /// Attribute values that moved to the target (or back).
    pub identifiers: usize,
    /// What could not be done as asked, for the OperationOutcome.
    pub warnings: Vec<Issue>,
}

/// The source and the target, in that order.
type Pair = (PersonRecord, PersonRecord);

impl MergeDone {
    fn of(
        m: &Moved,
        (source, target): Pair,
        (events, observations): (usize, usize),
        identifiers: usize,
        warnings: Vec<Issue>,
    ) -> Self {
        MergeDone {
            source,
            target,
            enrollments: m.enrollments.len(),
            events,
            observations,
            relationships: m.relationships_from.len() + m.relationships_to.len(),
            identifiers,
            warnings,
        }
    }
}

/// `values` with `changes` applied (None removes the attribute).
fn with_changes(
    values: &BTreeMap<i64, String>,
    changes: &BTreeMap<i64, Option<String>>,
) -> BTreeMap<i64, String> {
    let mut out = values.clone();
    for (a, v) in changes {
        match v {
            Some(v) => out.insert(*a, v.clone()),
            None => out.remove(a),
        };
    }
    out
}

fn not_a_person(param: &str, uid: &str, why: &str) -> Error {
    Error::rule(
        format!("{param}: Patient/{uid} {why}"),
        Some(param.to_string()),
    )
}

/// Both records, locked in one order (uid) so two merges of one pair cannot deadlock.
fn lock_pair(
    s: &mut Scoped,
    env: &Env,
    (source_param, source): (&str, &str),
    (target_param, target): (&str, &str),
) -> Result<(PersonRecord, PersonRecord), Error> {
    let ty = env.mappings.patient.entity_type_id;
    let mut lock = |param: &str, uid: &str| -> Result<PersonRecord, Error> {
        let p = people::find_for_update(s, ty, uid)?.ok_or_else(|| {
            not_a_person(
                param,
                uid,
                "is not known to this registry (or not one you may see)",
            )
        })?;
        if p.deleted {
            return Err(not_a_person(param, uid, "was deleted"));
        }
        Ok(p)
    };
    if source <= target {
        let a = lock(source_param, source)?;
        Ok((a, lock(target_param, target)?))
    } else {
        let b = lock(target_param, target)?;
        Ok((lock(source_param, source)?, b))
    }
}

fn attribute_name(env: &Env, id: i64) -> String {
    env.md
        .attribute_by_id(id)
        .map(|a| a.name.clone())
        .unwrap_or_else(|| format!("attribute {id}"))
}

/// Decides what moves (pure): enrollments whole, unless the target has its own open enrollment
/// in the program (then the events move into it); identifiers where the target has none.
fn plan(
    env: &Env,
    source: &PersonRecord,
    target: &PersonRecord,
    sh: &Holdings,
    th: &Holdings,
    result: Option<&PatientWrite>,
    warnings: &mut Vec<Issue>,
) -> Moved {
    let target_open: HashMap<i64, i64> = th
        .enrollments
        .iter()
        .filter(|(_, _, open)| *open)
        .map(|(id, program, _)| (*program, *id))
        .collect();
    let mut m = Moved {
        source_values: source.values.clone(),
        source_inactive: source.inactive,
        relationships_from: sh.relationships_from.clone(),
        relationships_to: sh.relationships_to.clone(),
        events: sh.events.clone(),
        ..Moved::default()
    };
    let mut stays: HashMap<i64, i64> = HashMap::new();
    for (id, program, open) in &sh.enrollments {
        match target_open.get(program) {
            Some(theirs) if *open => {
                stays.insert(*id, *theirs);
            }
            _ => {
                m.enrollments.push(*id);
                if sh.owned_programs.contains(program) && !th.owned_programs.contains(program) {
                    m.ownership.push(*program);
                }
            }
        }
    }
    m.ownership.sort_unstable();
    m.ownership.dedup();
    m.rehomed = sh
        .events
        .iter()
        .filter_map(|(event, enrollment)| Some((*event, *stays.get(enrollment)?)))
        .collect();

    let pm = &env.mappings.patient;
    let identifier_attrs: BTreeSet<i64> = pm.identifiers.iter().map(|i| i.attribute_id).collect();
    let after: BTreeMap<i64, String> = match result {
        Some(r) => {
            let mapped = pm.attribute_ids();
            let mut v = target.values.clone();
            v.retain(|k, _| !mapped.contains(k));
            v.extend(r.values.iter().map(|x| (x.attribute_id, x.value.clone())));
            v
        }
        None => {
            let mut v = target.values.clone();
            for (attr, value) in &source.values {
                if identifier_attrs.contains(attr) && !v.contains_key(attr) {
                    v.insert(*attr, value.clone());
                }
            }
            v
        }
    };
    let attrs: BTreeSet<i64> = target.values.keys().chain(after.keys()).copied().collect();
    for a in attrs {
        let (before, now) = (target.values.get(&a), after.get(&a));
        if before != now {
            m.target_changes.insert(a, (before.cloned(), now.cloned()));
        }
    }
    for (attr, value) in &source.values {
        if !identifier_attrs.contains(attr) || after.get(attr) == Some(value) {
            continue;
        }
        warnings.push(Issue::warning(
            "business-rule",
            format!(
                "the source's {} stays on Patient/{} (inactive): Patient/{} holds another value of it, and a person holds one value of each identifier system here",
                attribute_name(env, *attr),
                source.uid,
                target.uid
            ),
            Some("source-patient".into()),
        ));
    }
    m
}

/// The source's identifiers the target now holds: they leave the source (a unique value can be
/// held once).
fn moved_identifiers(m: &Moved) -> Vec<i64> {
    m.source_values
        .iter()
        .filter(|(a, v)| {
            m.target_changes
                .get(a)
                .is_some_and(|(_, after)| after.as_deref() == Some(v.as_str()))
        })
        .map(|(a, _)| *a)
        .collect()
}

fn value_rows<'a>(env: &Env, values: impl Iterator<Item = (i64, &'a str)>) -> Vec<ValueRow<'a>> {
    values
        .map(|(attribute_id, value)| ValueRow {
            attribute_id,
            value,
            search_value: search_form(value),
            is_unique: env
                .md
                .attribute_by_id(attribute_id)
                .is_some_and(|a| a.unique),
        })
        .collect()
}

/// Writes `changes` (attribute → new value, None to remove) to `person`.
fn write_values(
    s: &mut Scoped,
    env: &Env,
    person: i64,
    changes: &BTreeMap<i64, Option<String>>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let attrs: Vec<i64> = changes.keys().copied().collect();
    let rows = value_rows(
        env,
        changes
            .iter()
            .filter_map(|(a, v)| Some((*a, v.as_deref()?))),
    );
    people::replace_values(s.conn()?, person, &attrs, &rows, now).map_err(|e| {
        match &e {
            Error::Database(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Error::Conflict {
                message: "an identifier the merged record would hold is registered to another person; a unique identifier identifies one person only".into(),
                expression: None,
            },
            _ => e,
        }
    })
}

/// The new state of a person after a merge or unmerge: values, version, and its change-log row.
fn new_version(
    s: &mut Scoped,
    env: &Env,
    mut p: PersonRecord,
    values: BTreeMap<i64, String>,
    now: DateTime<Utc>,
) -> Result<PersonRecord, Error> {
    p.values = values;
    p.version += 1;
    p.last_updated = now;
    if env.mappings.matching.is_some() {
        let pm = &env.mappings.patient;
        let d = crate::matching::Demographics::from_values(&p.values, pm);
        if p.merged_into.is_some() {
            // A merged record is never a candidate: the survivor stands for it.
            match_keys::forget(s, &[p.id])?;
        } else {
            match_keys::replace(
                s,
                p.id,
                crate::matching::keys::keys(&d),
                &d.single_valued(pm),
                d.holds_primary(pm),
            )?;
        }
    }
    logs::record_change(
        s,
        logs::Change {
            resource_type: "Patient",
            uid: &p.uid,
            version: p.version,
            operation: "update",
            at: now,
            mapping_version: &env.mappings.version,
            state: Some(patients::snapshot(env, &p)),
        },
    );
    Ok(p)
}

/// A new version in the change log for every live Encounter and Observation whose subject
/// changed.
fn log_moved(
    s: &mut Scoped,
    env: &Env,
    (event_ids, value_ids): (Vec<i64>, Vec<i64>),
    now: DateTime<Utc>,
) -> Result<(usize, usize), Error> {
    let evs = events::events_by_ids(s, &event_ids)?;
    let vals = events::values_by_ids(s, &value_ids)?;
    for e in &evs {
        let state = encounters::snapshot(env, e);
        logs::record_change(
            s,
            logs::Change {
                resource_type: "Encounter",
                uid: &e.uid,
                version: e.version,
                operation: "update",
                at: now,
                mapping_version: &env.mappings.version,
                state: Some(state),
            },
        );
    }
    for v in &vals {
        let state = observations::snapshot(env, v);
        logs::record_change(
            s,
            logs::Change {
                resource_type: "Observation",
                uid: &v.uid,
                version: v.version,
                operation: "update",
                at: now,
                mapping_version: &env.mappings.version,
                state: Some(state),
            },
        );
    }
    Ok((evs.len(), vals.len()))
}

/// The new versions of both records (with these values) and of every moved Encounter and
/// Observation: the records, and how many Encounters and Observations moved.
fn finish(
    s: &mut Scoped,
    env: &Env,
    (source, source_values): (PersonRecord, BTreeMap<i64, String>),
    (target, target_values): (PersonRecord, BTreeMap<i64, String>),
    rows: (Vec<i64>, Vec<i64>),
    now: DateTime<Utc>,
) -> Result<(Pair, (usize, usize)), Error> {
    let (source_uid, target_uid) = (source.uid.clone(), target.uid.clone());
    let source = new_version(s, env, source, source_values, now)?;
    let target = new_version(s, env, target, target_values, now)?;
    let moved = log_moved(s, env, rows, now)?;
    s.cache.evict_person(&source_uid);
    s.cache.evict_person(&target_uid);
    Ok(((source, target), moved))
}

pub fn merge(s: &mut Scoped, env: &Env, req: &MergeRequest) -> Result<MergeDone, Error> {
    if req.source == req.target {
        return Err(Error::rule(
            format!(
                "source-patient and target-patient are the same record (Patient/{}): a merge needs two",
                req.source
            ),
            Some("target-patient".into()),
        ));
    }
    let (source, target) = lock_pair(
        s,
        env,
        ("source-patient", req.source),
        ("target-patient", req.target),
    )?;
    if let Some(into) = source.merged_into {
        let into = store::uid_of(s.conn()?, into)?;
        return Err(not_a_person(
            "source-patient",
            &source.uid,
            &format!("was already merged into Patient/{into}; undo that merge first (Patient/$unmerge) to merge it elsewhere"),
        ));
    }
    if let Some(into) = target.merged_into {
        let into = store::uid_of(s.conn()?, into)?;
        return Err(not_a_person(
            "target-patient",
            &target.uid,
            &format!("was merged into Patient/{into}: merge into Patient/{into} instead"),
        ));
    }
    patients::check_capture(s, env, &source, "merge")?;
    patients::check_capture(s, env, &target, "merge")?;

    let sh = store::holdings(s.conn()?, source.id, target.id)?;
    let th = store::holdings(s.conn()?, target.id, source.id)?;
    let mut warnings = Vec::new();
    let m = plan(env, &source, &target, &sh, &th, req.result, &mut warnings);
    let moved_ids = moved_identifiers(&m);

    let leaving: BTreeMap<i64, Option<String>> = moved_ids.iter().map(|a| (*a, None)).collect();
    let changes: BTreeMap<i64, Option<String>> = m
        .target_changes
        .iter()
        .map(|(a, (_, after))| (*a, after.clone()))
        .collect();
    let source_after = with_changes(&source.values, &leaving);
    let target_after = with_changes(&target.values, &changes);
    let mut merged = source.clone();
    merged.inactive = true;
    merged.merged_into = Some(target.id);
    if req.preview {
        let events = events::events_of_person(s, source.id)?.len();
        let observations = events::values_of_person(s, source.id)?.len();
        merged.values = source_after;
        let mut t_rec = target.clone();
        t_rec.values = target_after;
        return Ok(MergeDone::of(
            &m,
            (merged, t_rec),
            (events, observations),
            moved_ids.len(),
            warnings,
        ));
    }

    let now = Utc::now();
    // The source lets go of what moves before the target takes it (unique values).
    write_values(s, env, source.id, &leaving, now)?;
    write_values(s, env, target.id, &changes, now)?;
    let rows = store::move_rows(s.conn()?, source.id, target.id, &m, now)?;
    let moved_relationships: Vec<i64> = m
        .relationships_from
        .iter()
        .chain(&m.relationships_to)
        .copied()
        .collect();
    super::relationships::log_moved(s, env, &moved_relationships, now)?;
    store::set_merged_into(
        s.conn()?,
        source.id,
        Some(target.id),
        true,
        source.version + 1,
        now,
    )?;
    store::bump(s.conn()?, target.id, target.version + 1, now)?;
    let actor = s.ctx.actor.to_string();
    links::set_merged(s.conn()?, source.id, target.id, &actor, now)?;
    store::record(s.conn()?, source.id, target.id, &actor, &m, now)?;

    let (records, moved) = finish(
        s,
        env,
        (merged, source_after),
        (target, target_after),
        rows,
        now,
    )?;
    Ok(MergeDone::of(&m, records, moved, moved_ids.len(), warnings))
}

/// Undoes the standing merge of `source` (into `target`, when given, which must be the one).
pub fn unmerge(
    s: &mut Scoped,
    env: &Env,
    source: &str,
    target: Option<&str>,
) -> Result<MergeDone, Error> {
    let ty = env.mappings.patient.entity_type_id;
    let found = people::find(s, ty, source)?
        .filter(|p| !p.deleted)
        .ok_or_else(|| {
            not_a_person(
                "source-patient",
                source,
                "is not known to this registry (or not one you may see)",
            )
        })?;
    let Some(into) = found.merged_into else {
        return Err(not_a_person(
            "source-patient",
            source,
            "is not merged into another record: there is nothing to undo",
        ));
    };
    let survivor = store::uid_of(s.conn()?, into)?;
    if let Some(t) = target {
        if t != survivor {
            return Err(not_a_person(
                "target-patient",
                t,
                &format!("is not the record Patient/{source} was merged into (that is Patient/{survivor})"),
            ));
        }
    }
    let (src, tgt) = lock_pair(
        s,
        env,
        ("source-patient", source),
        ("target-patient", &survivor),
    )?;
    patients::check_capture(s, env, &src, "unmerge")?;
    patients::check_capture(s, env, &tgt, "unmerge")?;
    let (merge_id, m) = store::standing_for_update(s.conn()?, src.id)?
        .ok_or_else(|| Error::Internal("a merged record has no standing merge".into()))?;

    let mut warnings = Vec::new();
    let mut target_back: BTreeMap<i64, Option<String>> = BTreeMap::new();
    for (a, (before, after)) in &m.target_changes {
        if tgt.values.get(a) == after.as_ref() {
            target_back.insert(*a, before.clone());
        } else {
            warnings.push(Issue::warning(
                "business-rule",
                format!(
                    "Patient/{}'s {} changed after the merge; it keeps the new value",
                    tgt.uid,
                    attribute_name(env, *a)
                ),
                Some("target-patient".into()),
            ));
        }
    }
    let now = Utc::now();
    write_values(s, env, tgt.id, &target_back, now)?;
    let source_back: BTreeMap<i64, Option<String>> = src
        .values
        .keys()
        .map(|a| (*a, None))
        .chain(m.source_values.iter().map(|(a, v)| (*a, Some(v.clone()))))
        .collect();
    write_values(s, env, src.id, &source_back, now)?;
    let rows = store::restore_rows(s.conn()?, src.id, tgt.id, &m, now)?;
    // Only those that came back: one re-pointed since the merge stayed where it was.
    let listed: Vec<i64> = m
        .relationships_from
        .iter()
        .chain(&m.relationships_to)
        .copied()
        .collect();
    let moved_relationships =
        crate::store::relationships::of_person_among(s.conn()?, &listed, src.id)?;
    super::relationships::log_moved(s, env, &moved_relationships, now)?;
    store::set_merged_into(
        s.conn()?,
        src.id,
        None,
        m.source_inactive,
        src.version + 1,
        now,
    )?;
    store::bump(s.conn()?, tgt.id, tgt.version + 1, now)?;
    let actor = s.ctx.actor.to_string();
    store::mark_undone(s.conn()?, merge_id, &actor, now)?;
    // Undoing a merge says the two are different people: never proposed again.
    if let Some(l) = links::pair_for_update(s.conn()?, src.id, tgt.id)? {
        links::decide(s.conn()?, l.id, "INVALID", &actor, now)?;
    }

    let target_after = with_changes(&tgt.values, &target_back);
    let identifiers = m
        .source_values
        .keys()
        .filter(|a| target_back.contains_key(a))
        .count();
    let mut restored = src;
    restored.inactive = m.source_inactive;
    restored.merged_into = None;
    let (records, moved) = finish(
        s,
        env,
        (restored, m.source_values.clone()),
        (tgt, target_after),
        rows,
        now,
    )?;
    Ok(MergeDone::of(&m, records, moved, identifiers, warnings))
}
