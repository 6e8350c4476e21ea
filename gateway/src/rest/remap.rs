//! `kiunga remap`: re-translates the stored originals (the inbound log) under the mappings in
//! force, reports what would change in the tracker, and applies it in one transaction when asked.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::{Binary, Text};
use serde::Serialize;
use serde_json::Value;

use super::{Body, STORED_TYPES};
use crate::error::Error;
use crate::store::Scoped;
use crate::tracker::{encounters, observations, patients, Env};
use crate::translate;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub resource: String,
    /// `what: old → new` lines, or the reason the original no longer translates.
    pub details: Vec<String>,
    pub refused: bool,
}

#[derive(QueryableByName)]
struct Original {
    #[diesel(sql_type = Text)]
    resource_type: String,
    #[diesel(sql_type = Text)]
    resource_uid: String,
    #[diesel(sql_type = Text)]
    content_type: String,
    #[diesel(sql_type = Binary)]
    body: Vec<u8>,
}

/// The latest original of every live record, oldest record first.
fn originals(s: &mut Scoped) -> Result<Vec<Original>, Error> {
    Ok(diesel::sql_query(
        "SELECT DISTINCT ON (resource_type, resource_uid) resource_type, resource_uid::text AS resource_uid, content_type, body \
         FROM inbound_log WHERE resource_uid IS NOT NULL ORDER BY resource_type, resource_uid, id DESC",
    )
    .load(s.conn()?)?)
}

fn diff(out: &mut Vec<String>, what: &str, old: Option<&str>, new: Option<&str>) {
    if old != new {
        out.push(format!(
            "{what}: `{}` → `{}`",
            old.unwrap_or("(none)"),
            new.unwrap_or("(none)")
        ));
    }
}

/// What re-translating `o` would change (empty when nothing).
fn compare(
    s: &mut Scoped,
    env: &Env,
    o: &Original,
    resource: &Value,
) -> Result<Vec<String>, Error> {
    let (md, m) = (env.md, env.mappings);
    let mut out = Vec::new();
    match o.resource_type.as_str() {
        "Patient" => {
            let w = translate::patient::to_tracker(resource, &m.patient, md)?;
            let cur = patients::read(s, env, &o.resource_uid)?;
            let new: BTreeMap<i64, &str> = w
                .values
                .iter()
                .map(|v| (v.attribute_id, v.value.as_str()))
                .collect();
            for a in m.patient.attribute_ids() {
                let name = md
                    .attribute_by_id(a)
                    .and_then(|x| x.code.clone())
                    .unwrap_or_default();
                diff(
                    &mut out,
                    &name,
                    cur.values.get(&a).map(String::as_str),
                    new.get(&a).copied(),
                );
            }
        }
        "Encounter" => {
            let w = translate::encounter::to_tracker(resource, m, md)?;
            let cur = encounters::read(s, &o.resource_uid)?;
            let stage = |id: i64| {
                md.stages
                    .iter()
                    .find(|st| st.id == id)
                    .and_then(|st| st.code.clone())
            };
            diff(
                &mut out,
                "stage",
                stage(cur.stage_id).as_deref(),
                stage(w.stage_id).as_deref(),
            );
            diff(&mut out, "status", Some(&cur.status), Some(&w.status));
        }
        "RelatedPerson" => {
            let w = translate::related_person::to_tracker(resource, m, md)?;
            let cur = crate::tracker::relationships::read(s, &o.resource_uid)?;
            let role = |c: Option<&crate::mapping::encounter::Coding>| {
                c.map(|c| format!("{}|{}", c.system, c.code))
            };
            let kind = |id: i64, from: bool| {
                md.relationship_type_by_id(id).map(|t| {
                    format!(
                        "{} ({} end)",
                        t.code.as_deref().unwrap_or(&t.uid),
                        if from { "from" } else { "to" }
                    )
                })
            };
            diff(
                &mut out,
                "relationship",
                kind(cur.type_id, cur.related_is_from).as_deref(),
                kind(w.type_id, w.related_is_from).as_deref(),
            );
            diff(
                &mut out,
                "role",
                role(cur.role.as_ref()).as_deref(),
                role(Some(&w.role)).as_deref(),
            );
        }
        "EpisodeOfCare" => {
            let w = translate::episode::to_tracker(resource, m, md)?;
            let cur = crate::tracker::episodes::read(s, &o.resource_uid)?;
            let program = |id: i64| md.program_by_id(id).and_then(|p| p.code.clone());
            diff(
                &mut out,
                "program",
                program(cur.program_id).as_deref(),
                program(w.program_id).as_deref(),
            );
            diff(&mut out, "status", Some(&cur.status), Some(&w.status));
        }
        _ => {
            let w = translate::observation::to_tracker(resource, m, md)?;
            let cur = observations::read(s, &o.resource_uid)?;
            let de = |id: i64| {
                md.data_elements
                    .iter()
                    .find(|d| d.id == id)
                    .and_then(|d| d.code.clone())
            };
            diff(
                &mut out,
                "data element",
                de(cur.data_element_id).as_deref(),
                de(w.data_element_id).as_deref(),
            );
            diff(&mut out, "value", Some(&cur.value), Some(&w.value));
        }
    }
    Ok(out)
}

/// Plans (and with `apply`, performs) the re-mapping of every stored record.
pub fn remap(s: &mut Scoped, env: &Env, apply: bool) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::new();
    for o in originals(s)? {
        if !STORED_TYPES.contains(&o.resource_type.as_str()) {
            continue;
        }
        let format = kiunga_codec::content_format(Some(&o.content_type))
            .unwrap_or(kiunga_codec::Format::Json);
        let label = format!("{}/{}", o.resource_type, o.resource_uid);
        let resource = match kiunga_codec::parse(&o.body, format) {
            Ok(r) => r,
            Err(e) => {
                changes.push(Change {
                    resource: label,
                    details: vec![format!("the original no longer parses: {}", e.message)],
                    refused: true,
                });
                continue;
            }
        };
        let planned = s.savepoint(|inner| compare(inner, env, &o, &resource));
        match planned {
            // Deleted records are not re-mapped.
            Err(Error::Gone(_)) => {}
            Err(e) => {
                let (_, outcome) = e.client_outcome("remap");
                let reason = outcome["issue"]
                    .as_array()
                    .map(|i| {
                        i.iter()
                            .filter_map(|x| x["diagnostics"].as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                changes.push(Change {
                    resource: label,
                    details: vec![format!(
                        "no longer translates under the current mappings: {reason}"
                    )],
                    refused: true,
                });
            }
            Ok(details) if details.is_empty() => {}
            Ok(details) => {
                if apply {
                    // Ownership moves by transfer only: re-mapping an enrollment's original must
                    // not send it back to the org unit it was first created at.
                    let mut resource = resource;
                    if o.resource_type == "EpisodeOfCare" {
                        if let Some(obj) = resource.as_object_mut() {
                            obj.remove("managingOrganization");
                        }
                    }
                    let body = Body {
                        resource: &resource,
                        raw: &o.body,
                        content_type: &o.content_type,
                    };
                    super::update(s, env, &o.resource_type, &o.resource_uid, None, body)?;
                }
                changes.push(Change {
                    resource: label,
                    details,
                    refused: false,
                });
            }
        }
    }
    Ok(changes)
}
