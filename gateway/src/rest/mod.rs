//! FHIR interactions over the tracker, one function per interaction, dispatching on resource type.
//! Each runs inside the caller's transaction (a request or a whole Bundle) and composes the layers:
//! translate the input (pure), apply the tracker rules and store, render the result.

pub mod bundle;
pub mod care;
pub mod identity;
pub mod merge;
pub mod provenance;
pub mod remap;
pub mod search;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Error;
use crate::fhir::bundle::HistoryEntry;
use crate::fhir::outcome::Issue;
use crate::store::logs::Inbound;
use crate::store::{RuleOn, Scoped};
use crate::tracker::{encounters, episodes, observations, patients, relationships, Env};
use crate::translate;

/// The resource types stored in the tracker (as opposed to org units, which are read-only).
pub const STORED_TYPES: &[&str] = &[
    "Patient",
    "Encounter",
    "Observation",
    "RelatedPerson",
    "EpisodeOfCare",
];

/// An incoming resource with its original bytes (kept in the inbound log).
pub struct Body<'a> {
    pub resource: &'a Value,
    pub raw: &'a [u8],
    pub content_type: &'a str,
}

/// A record as it is after an interaction, rendered.
#[derive(Debug, Clone)]
pub struct Stored {
    pub resource_type: &'static str,
    pub id: String,
    pub version: i32,
    pub last_updated: DateTime<Utc>,
    pub resource: Value,
    pub created: bool,
    /// Input elements that no mapping holds (reported, never silently dropped).
    pub warnings: Vec<Issue>,
}

fn static_type(t: &str) -> Result<&'static str, Error> {
    STORED_TYPES
        .iter()
        .copied()
        .find(|x| *x == t)
        .ok_or_else(|| Error::MethodNotAllowed(format!("{t} is not stored by this server")))
}

/// In strict mode, input that no mapping holds is refused instead of reported.
fn strict_check(env: &Env, unmapped: &[Issue]) -> Result<(), Error> {
    if env.strict && !unmapped.is_empty() {
        let issues = unmapped
            .iter()
            .map(|w| {
                Issue::error(
                    "business-rule",
                    format!(
                        "{} (strict mapping mode refuses input it cannot store)",
                        w.diagnostics
                    ),
                    w.expression.clone(),
                )
            })
            .collect();
        return Err(Error::Unprocessable(issues));
    }
    Ok(())
}

fn inbound<'a>(
    interaction: &'a str,
    resource_type: &'a str,
    body: &Body<'a>,
    env: &'a Env,
) -> Inbound<'a> {
    Inbound {
        interaction,
        resource_type,
        uid: None,
        content_type: body.content_type,
        body: body.raw,
        mapping_version: &env.mappings.version,
    }
}

/// What every rendered record carries besides its data: the mapping tag of its version, and for a
/// Patient the records it is linked to. Any mix of types, a few queries whatever their number.
pub fn decorate<'a>(
    s: &mut Scoped,
    resources: impl IntoIterator<Item = &'a mut Value>,
) -> Result<(), Error> {
    let mut list: Vec<&'a mut Value> = resources.into_iter().collect();
    provenance::tag_all(s, list.iter_mut().map(|r| &mut **r))?;
    identity::show_links(s, list)
}

pub fn create(s: &mut Scoped, env: &Env, resource_type: &str, body: Body) -> Result<Stored, Error> {
    write(s, env, resource_type, None, None, body)
}

pub fn update(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    id: &str,
    if_match: Option<i32>,
    body: Body,
) -> Result<Stored, Error> {
    write(s, env, resource_type, Some(id), if_match, body)
}

fn write(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    id: Option<&str>,
    if_match: Option<i32>,
    body: Body,
) -> Result<Stored, Error> {
    let mut stored = write_untagged(s, env, resource_type, id, if_match, body)?;
    provenance::set(&mut stored.resource, &env.mappings.version);
    provenance::set_source(&mut stored.resource, &s.ctx.actor.to_string());
    Ok(stored)
}

fn write_untagged(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    id: Option<&str>,
    if_match: Option<i32>,
    body: Body,
) -> Result<Stored, Error> {
    let t = static_type(resource_type)?;
    let interaction = if id.is_some() { "update" } else { "create" };
    let (md, m) = (env.md, env.mappings);
    match t {
        "Patient" => {
            let w = translate::patient::to_tracker(body.resource, &m.patient, md)?;
            strict_check(env, &w.unmapped)?;
            let written = match id {
                None => patients::create(
                    s,
                    env,
                    &w,
                    env.default_org_unit,
                    inbound(interaction, t, &body, env),
                )?,
                Some(id) => {
                    let before = patients::read(s, env, id).map(|p| p.org_unit_id).ok();
                    let written = patients::update(
                        s,
                        env,
                        id,
                        if_match,
                        &w,
                        env.default_org_unit,
                        inbound(interaction, t, &body, env),
                    )?;
                    // A new managingOrganization moves the person's programs, as care.toml says.
                    if env.mappings.care.transfer_on_managing_organization
                        && w.org_unit_id.is_some()
                        && before != Some(written.record.org_unit_id)
                    {
                        episodes::transfer_all(
                            s,
                            env,
                            &written.record,
                            written.record.org_unit_id,
                        )?;
                    }
                    written
                }
            };
            let r = written.record;
            let mut resource = translate::patient::to_fhir(&r, &m.patient, md);
            identity::set_links(s, env, &mut resource, &written.linked);
            Ok(Stored {
                resource_type: t,
                id: r.uid.clone(),
                version: r.version,
                last_updated: r.last_updated,
                resource,
                created: written.created,
                warnings: w.unmapped,
            })
        }
        "Encounter" => {
            let w = translate::encounter::to_tracker(body.resource, m, md)?;
            strict_check(env, &w.unmapped)?;
            let e = match id {
                None => encounters::create(s, env, &w, inbound(interaction, t, &body, env))?,
                Some(id) => encounters::update(
                    s,
                    env,
                    id,
                    if_match,
                    &w,
                    inbound(interaction, t, &body, env),
                )?,
            };
            Ok(Stored {
                resource_type: t,
                id: e.uid.clone(),
                version: e.version,
                last_updated: e.last_updated,
                resource: translate::encounter::to_fhir(&e, m, md),
                created: id.is_none(),
                warnings: w.unmapped,
            })
        }
        "RelatedPerson" => {
            let w = translate::related_person::to_tracker(body.resource, m, md)?;
            strict_check(env, &w.unmapped)?;
            let written = match id {
                None => relationships::create(s, env, &w, inbound(interaction, t, &body, env))?,
                Some(id) => relationships::update(
                    s,
                    env,
                    id,
                    if_match,
                    &w,
                    inbound(interaction, t, &body, env),
                )?,
            };
            let r = written.record;
            let mut warnings = w.unmapped;
            warnings.extend(written.warnings);
            Ok(Stored {
                resource_type: t,
                id: r.uid.clone(),
                version: r.version,
                last_updated: r.last_updated,
                resource: translate::related_person::to_fhir(&r, Some(&written.related), m, md),
                created: id.is_none(),
                warnings,
            })
        }
        "EpisodeOfCare" => {
            let w = translate::episode::to_tracker(body.resource, m, md)?;
            strict_check(env, &w.unmapped)?;
            let e = match id {
                None => episodes::create(s, env, &w, inbound(interaction, t, &body, env))?,
                Some(id) => episodes::update(
                    s,
                    env,
                    id,
                    if_match,
                    &w,
                    inbound(interaction, t, &body, env),
                )?,
            };
            Ok(Stored {
                resource_type: t,
                id: e.uid.clone(),
                version: e.version,
                last_updated: e.last_updated,
                resource: care::render_episode(env, &e),
                created: id.is_none(),
                warnings: w.unmapped,
            })
        }
        _ => {
            let w = translate::observation::to_tracker(body.resource, m, md)?;
            strict_check(env, &w.unmapped)?;
            let d = match id {
                None => observations::create(s, env, &w, inbound(interaction, t, &body, env))?,
                Some(id) => observations::update(
                    s,
                    env,
                    id,
                    if_match,
                    &w,
                    inbound(interaction, t, &body, env),
                )?,
            };
            Ok(Stored {
                resource_type: t,
                id: d.uid.clone(),
                version: d.version,
                last_updated: d.last_updated,
                resource: translate::observation::to_fhir(&d, m, md),
                created: id.is_none(),
                warnings: w.unmapped,
            })
        }
    }
}

/// Deletes; returns the new version, or None when the record was already deleted.
pub fn delete(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    id: &str,
) -> Result<Option<i32>, Error> {
    match static_type(resource_type)? {
        "Patient" => patients::delete(s, env, id),
        "Encounter" => encounters::delete(s, env, id),
        "RelatedPerson" => relationships::delete(s, env, id),
        "EpisodeOfCare" => episodes::delete(s, env, id),
        _ => observations::delete(s, env, id),
    }
}

pub fn read(s: &mut Scoped, env: &Env, resource_type: &str, id: &str) -> Result<Stored, Error> {
    version_or_current(s, env, resource_type, id, None)
}

pub fn vread(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    id: &str,
    version: i32,
) -> Result<Stored, Error> {
    version_or_current(s, env, resource_type, id, Some(version))
}

fn version_or_current(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    id: &str,
    version: Option<i32>,
) -> Result<Stored, Error> {
    let t = static_type(resource_type)?;
    let (md, m) = (env.md, env.mappings);
    let (version, last_updated, resource) = match t {
        "Patient" => {
            let r = match version {
                None => patients::read(s, env, id)?,
                Some(v) => patients::vread(s, env, id, v)?,
            };
            (
                r.version,
                r.last_updated,
                translate::patient::to_fhir(&r, &m.patient, md),
            )
        }
        "Encounter" => {
            let e = match version {
                None => encounters::read(s, id)?,
                Some(v) => encounters::vread(s, env, id, v)?,
            };
            (
                e.version,
                e.last_updated,
                translate::encounter::to_fhir(&e, m, md),
            )
        }
        "RelatedPerson" => {
            let r = match version {
                None => relationships::read(s, id)?,
                Some(v) => relationships::vread(s, env, id, v)?,
            };
            (
                r.version,
                r.last_updated,
                care::render_related_version(s, env, &r)?,
            )
        }
        "EpisodeOfCare" => {
            let e = match version {
                None => episodes::read(s, id)?,
                Some(v) => episodes::vread(s, env, id, v)?,
            };
            (e.version, e.last_updated, care::render_episode(env, &e))
        }
        _ => {
            let d = match version {
                None => observations::read(s, id)?,
                Some(v) => observations::vread(s, env, id, v)?,
            };
            (
                d.version,
                d.last_updated,
                translate::observation::to_fhir(&d, m, md),
            )
        }
    };
    let mut resource = resource;
    decorate(s, std::iter::once(&mut resource))?;
    Ok(Stored {
        resource_type: t,
        id: id.to_string(),
        version,
        last_updated,
        resource,
        created: false,
        warnings: Vec::new(),
    })
}

pub fn history(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    id: &str,
) -> Result<Vec<HistoryEntry>, Error> {
    let mut entries = history_untagged(s, env, resource_type, id)?;
    provenance::tag_all(s, entries.iter_mut().filter_map(|e| e.resource.as_mut()))?;
    Ok(entries)
}

fn history_untagged(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    id: &str,
) -> Result<Vec<HistoryEntry>, Error> {
    let t = static_type(resource_type)?;
    let (md, m) = (env.md, env.mappings);
    let entry = |version, operation, at, resource| HistoryEntry {
        resource_type: t,
        id: id.to_string(),
        version,
        at,
        operation,
        resource,
    };
    Ok(match t {
        "Patient" => patients::history(s, env, id)?
            .into_iter()
            .map(|(v, op, at, r)| {
                entry(
                    v,
                    op,
                    at,
                    r.map(|r| translate::patient::to_fhir(&r, &m.patient, md)),
                )
            })
            .collect(),
        "Encounter" => encounters::history(s, env, id)?
            .into_iter()
            .map(|(v, op, at, r)| {
                entry(
                    v,
                    op,
                    at,
                    r.map(|r| translate::encounter::to_fhir(&r, m, md)),
                )
            })
            .collect(),
        "RelatedPerson" => {
            let mut out = Vec::new();
            for (v, op, at, r) in relationships::history(s, env, id)? {
                let resource = match r {
                    Some(r) => Some(care::render_related_version(s, env, &r)?),
                    None => None,
                };
                out.push(entry(v, op, at, resource));
            }
            out
        }
        "EpisodeOfCare" => episodes::history(s, env, id)?
            .into_iter()
            .map(|(v, op, at, r)| entry(v, op, at, r.map(|r| care::render_episode(env, &r))))
            .collect(),
        _ => observations::history(s, env, id)?
            .into_iter()
            .map(|(v, op, at, r)| {
                entry(
                    v,
                    op,
                    at,
                    r.map(|r| translate::observation::to_fhir(&r, m, md)),
                )
            })
            .collect(),
    })
}

/// `Patient/{id}/$everything`: the patient with every live Encounter and Observation.
pub fn everything(s: &mut Scoped, env: &Env, id: &str, base: &str) -> Result<Value, Error> {
    use crate::fhir::bundle::{searchset, SearchEntry};
    use crate::store::events;

    let person = patients::read(s, env, id)?;
    let (md, m) = (env.md, env.mappings);
    let mut resources = vec![translate::patient::to_fhir(&person, &m.patient, md)];
    // The person's records in two queries and their mapping tags in one, whatever their number.
    resources.extend(
        events::events_of_person(s, person.id)?
            .iter()
            .map(|e| translate::encounter::to_fhir(e, m, md)),
    );
    resources.extend(
        events::values_of_person(s, person.id)?
            .iter()
            .map(|d| translate::observation::to_fhir(d, m, md)),
    );
    resources.extend(
        crate::store::enrollments::of_person(s, person.id)?
            .iter()
            .map(|e| care::render_episode(env, e)),
    );
    // Someone whose record says nobody is linked to her is in no relationship either (the flag
    // of migration 21 covers both): most people, whose answer then costs one statement less.
    if !s.known_unlinked(std::slice::from_ref(&person.uid)) {
        let related = crate::store::relationships::of_patients(s, &[person.id])?;
        resources.extend(care::render_related(s, env, &related)?);
    }
    // What the access token may not read is left out (its existence is not told either).
    resources.retain(|r| {
        r["resourceType"]
            .as_str()
            .is_some_and(|t| s.ctx.may_read(t))
    });
    decorate(s, resources.iter_mut())?;
    let total = resources.len() as i64;
    let entries = resources
        .into_iter()
        .map(|resource| SearchEntry {
            resource,
            mode: "match",
        })
        .collect();
    Ok(searchset(
        base,
        entries,
        Some(total),
        vec![("self", format!("{base}/Patient/{id}/$everything"))],
    ))
}

/// `[type]/_history`: every version of every record of the type the caller may see, newest first.
pub fn type_history(
    s: &mut Scoped,
    env: &Env,
    resource_type: &str,
    since: Option<DateTime<Utc>>,
    count: i64,
    offset: i64,
) -> Result<Vec<HistoryEntry>, Error> {
    use diesel::prelude::*;
    use diesel::sql_types::{Array, BigInt, Int4, Text, Timestamptz};

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        uid: String,
        #[diesel(sql_type = Int4)]
        version: i32,
        #[diesel(sql_type = Text)]
        operation: String,
        #[diesel(sql_type = Timestamptz)]
        changed_at: DateTime<Utc>,
    }
    let t = static_type(resource_type)?;
    // The person a version belongs to (te), and for program data its enrollment (en_id).
    let (join, enrollment) = match t {
        "Patient" => ("JOIN tracked_entity te ON te.uid = cl.resource_uid", None),
        "Encounter" => ("JOIN event x ON x.uid = cl.resource_uid JOIN tracked_entity te ON te.id = x.tracked_entity_id", Some(RuleOn::Enrollment("x.enrollment_id"))),
        "EpisodeOfCare" => ("JOIN enrollment x ON x.uid = cl.resource_uid JOIN tracked_entity te ON te.id = x.tracked_entity_id", Some(RuleOn::Enrollment("x.id"))),
        "RelatedPerson" => ("JOIN relationship x ON x.uid = cl.resource_uid JOIN tracked_entity te ON te.id = CASE WHEN x.related_is_from THEN x.to_tracked_entity_id ELSE x.from_tracked_entity_id END", None),
        _ => ("JOIN event_data_value x ON x.uid = cl.resource_uid JOIN tracked_entity te ON te.id = x.tracked_entity_id", Some(RuleOn::Value("x"))),
    };
    let (roots, patterns) = s
        .ctx
        .search
        .sql_filter()
        .unwrap_or((Vec::new(), Vec::new()));
    let scoped = s.ctx.search.sql_filter().is_some();
    let program = s.program_scope()?;
    // Program data follows the ownership rule; people (and their relations) the search scope.
    let mut visible = match (enrollment, &program) {
        (Some(on), Some(_)) => crate::store::ProgramScope::call(on, 8),
        _ => format!(
            "(NOT $2 OR {})",
            crate::store::person_in_scope_sql("te", "$3", "$4")
        ),
    };
    // A relationship is seen when both of its people are.
    if t == "RelatedPerson" {
        visible.push_str(&format!(
            " AND (NOT $2 OR EXISTS (SELECT 1 FROM tracked_entity o WHERE o.id = CASE WHEN x.related_is_from \
             THEN x.from_tracked_entity_id ELSE x.to_tracked_entity_id END AND {}))",
            crate::store::person_in_scope_sql("o", "$3", "$4")
        ));
    }
    let mut q = diesel::sql_query(format!(
        "SELECT cl.resource_uid AS uid, cl.version, cl.operation, cl.changed_at FROM change_log cl {join} \
         WHERE cl.resource_type = $1 AND {visible} \
         AND ($7::timestamptz IS NULL OR cl.changed_at >= $7) ORDER BY cl.id DESC LIMIT $5 OFFSET $6"
    ))
    .into_boxed()
    .bind::<Text, _>(t)
    .bind::<diesel::sql_types::Bool, _>(scoped)
    .bind::<Array<Text>, _>(roots)
    .bind::<Array<Text>, _>(patterns)
    .bind::<BigInt, _>(count)
    .bind::<BigInt, _>(offset)
    .bind::<diesel::sql_types::Nullable<Timestamptz>, _>(since);
    if let (Some(_), Some(p)) = (enrollment, program) {
        q = q
            .bind::<Array<BigInt>, _>(p.search)
            .bind::<Array<BigInt>, _>(p.capture)
            .bind::<Array<BigInt>, _>(p.open)
            .bind::<Array<BigInt>, _>(p.protected)
            .bind::<Text, _>(p.actor)
            .bind::<Array<BigInt>, _>(p.programs);
    }
    let rows: Vec<Row> = q.load(s.conn()?)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let resource = if r.operation == "delete" {
            None
        } else {
            Some(vread(s, env, t, &r.uid, r.version)?.resource)
        };
        out.push(HistoryEntry {
            resource_type: t,
            id: r.uid,
            version: r.version,
            at: r.changed_at,
            operation: r.operation,
            resource,
        });
    }
    Ok(out)
}
