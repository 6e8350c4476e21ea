//! Loads registry metadata from files in DHIS2's own metadata JSON shape (`GET /api/metadata`):
//! `organisationUnits`, `trackedEntityTypes`, `trackedEntityAttributes`, `optionSets`/`options`,
//! `dataElements`, `programs`, `programStages`, `relationshipTypes`. Upserts by UID, so loading the
//! same export twice changes nothing and a newer export updates names and flags in place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::upsert::excluded;
use serde::Deserialize;

use super::schema::*;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct MetadataError {
    pub file: String,
    pub message: String,
}

impl From<diesel::result::Error> for MetadataError {
    fn from(e: diesel::result::Error) -> Self {
        MetadataError {
            file: "database".into(),
            message: e.to_string(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
pub struct Ref {
    pub id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Export {
    pub attributes: Vec<MetaAttribute>,
    pub organisation_units: Vec<OrgUnitJson>,
    pub tracked_entity_types: Vec<TrackedEntityTypeJson>,
    pub option_sets: Vec<OptionSetJson>,
    pub options: Vec<OptionJson>,
    pub tracked_entity_attributes: Vec<AttributeJson>,
    pub data_elements: Vec<DataElementJson>,
    pub programs: Vec<ProgramJson>,
    pub program_stages: Vec<ProgramStageJson>,
    pub relationship_types: Vec<RelationshipTypeJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaAttribute {
    pub id: String,
    pub code: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrgUnitJson {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub opening_date: Option<String>,
    pub parent: Option<Ref>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackedEntityTypeJson {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    #[serde(default)]
    pub tracked_entity_type_attributes: Vec<TetAttributeJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TetAttributeJson {
    pub tracked_entity_attribute: Ref,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionSetJson {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub value_type: String,
    #[serde(default)]
    pub options: Vec<OptionRefJson>,
}

/// An option set lists its options either by reference (exports) or in full (hand-written files).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionRefJson {
    pub id: String,
    pub code: Option<String>,
    pub name: Option<String>,
    pub sort_order: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionJson {
    pub id: String,
    pub code: String,
    pub name: String,
    pub sort_order: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeValueJson {
    pub attribute: Ref,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeJson {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub value_type: String,
    #[serde(default)]
    pub unique: bool,
    pub option_set: Option<Ref>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataElementJson {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub value_type: String,
    pub option_set: Option<Ref>,
    #[serde(default)]
    pub attribute_values: Vec<AttributeValueJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramAttributeJson {
    pub tracked_entity_attribute: Ref,
    #[serde(default)]
    pub mandatory: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramJson {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub short_name: Option<String>,
    pub tracked_entity_type: Option<Ref>,
    pub access_level: Option<String>,
    #[serde(default)]
    pub only_enroll_once: bool,
    #[serde(default)]
    pub program_tracked_entity_attributes: Vec<ProgramAttributeJson>,
    #[serde(default)]
    pub organisation_units: Vec<Ref>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageDataElementJson {
    pub data_element: Ref,
    #[serde(default)]
    pub compulsory: bool,
    pub sort_order: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramStageJson {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub program: Ref,
    #[serde(default)]
    pub repeatable: bool,
    pub sort_order: Option<i32>,
    #[serde(default)]
    pub program_stage_data_elements: Vec<StageDataElementJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConstraintJson {
    pub relationship_entity: String,
    pub tracked_entity_type: Option<Ref>,
    pub program: Option<Ref>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelationshipTypeJson {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub from_to_name: Option<String>,
    pub to_from_name: Option<String>,
    #[serde(default)]
    pub bidirectional: bool,
    pub from_constraint: ConstraintJson,
    pub to_constraint: ConstraintJson,
}

/// Counts of what one import touched, for the start-up log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub files: usize,
    pub org_units: usize,
    pub attributes: usize,
    pub option_sets: usize,
    pub data_elements: usize,
    pub programs: usize,
    pub stages: usize,
    pub relationship_types: usize,
}

/// The `*.json` files of `dir` in name order.
pub fn metadata_files(dir: &Path) -> Result<Vec<PathBuf>, MetadataError> {
    let err = |message: String| MetadataError {
        file: dir.display().to_string(),
        message,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(format!("cannot read the metadata directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Imports every metadata file of `dir` in one transaction.
pub fn import_dir(conn: &mut PgConnection, dir: &Path) -> Result<ImportSummary, MetadataError> {
    let files = metadata_files(dir)?;
    conn.transaction(|conn| {
        let mut total = ImportSummary::default();
        for f in &files {
            let name = f.display().to_string();
            let text = std::fs::read_to_string(f).map_err(|e| MetadataError {
                file: name.clone(),
                message: e.to_string(),
            })?;
            let export: Export = serde_json::from_str(&text).map_err(|e| MetadataError {
                file: format!("{name}:{}", e.line()),
                message: format!("not a DHIS2 metadata export: {e}"),
            })?;
            let s = import(conn, &export).map_err(|message| MetadataError {
                file: name,
                message,
            })?;
            total.files += 1;
            total.org_units += s.org_units;
            total.attributes += s.attributes;
            total.option_sets += s.option_sets;
            total.data_elements += s.data_elements;
            total.programs += s.programs;
            total.stages += s.stages;
            total.relationship_types += s.relationship_types;
        }
        Ok(total)
    })
}

fn db(what: &'static str, id: &str) -> impl Fn(diesel::result::Error) -> String {
    let id = id.to_string();
    move |e| format!("{what} {id}: {e}")
}

/// Looks a UID up among the rows already imported (this file or earlier loads).
fn resolve(conn: &mut PgConnection, table: &str, uid: &str, from: &str) -> Result<i64, String> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Int8)]
        id: i64,
    }
    let rows: Vec<Id> = diesel::sql_query(format!("SELECT id FROM {table} WHERE uid = $1"))
        .bind::<diesel::sql_types::Text, _>(uid)
        .load(conn)
        .map_err(|e| e.to_string())?;
    rows.first().map(|r| r.id).ok_or_else(|| {
        format!("{from} refers to {table} `{uid}`, which is neither in this file nor loaded")
    })
}

pub fn import(conn: &mut PgConnection, x: &Export) -> Result<ImportSummary, String> {
    let mut s = ImportSummary::default();
    let unit_attribute: Vec<&str> = x
        .attributes
        .iter()
        .filter(|a| a.code.as_deref() == Some("UNIT"))
        .map(|a| a.id.as_str())
        .collect();

    // Option sets and their options.
    let options_by_id: HashMap<&str, &OptionJson> =
        x.options.iter().map(|o| (o.id.as_str(), o)).collect();
    for set in &x.option_sets {
        let set_id: i64 = diesel::insert_into(option_set::table)
            .values((
                option_set::uid.eq(&set.id),
                option_set::code.eq(&set.code),
                option_set::name.eq(&set.name),
                option_set::value_type.eq(&set.value_type),
            ))
            .on_conflict(option_set::uid)
            .do_update()
            .set((
                option_set::code.eq(excluded(option_set::code)),
                option_set::name.eq(excluded(option_set::name)),
                option_set::value_type.eq(excluded(option_set::value_type)),
            ))
            .returning(option_set::id)
            .get_result(conn)
            .map_err(db("optionSet", &set.id))?;
        for (i, r) in set.options.iter().enumerate() {
            let (code, name, order) = match (&r.code, &r.name, options_by_id.get(r.id.as_str())) {
                (Some(c), Some(n), _) => (c.as_str(), n.as_str(), r.sort_order),
                (_, _, Some(o)) => (o.code.as_str(), o.name.as_str(), o.sort_order),
                _ => {
                    return Err(format!(
                        "optionSet {} lists option `{}`, which is not in `options`",
                        set.id, r.id
                    ))
                }
            };
            diesel::insert_into(option_value::table)
                .values((
                    option_value::uid.eq(&r.id),
                    option_value::option_set_id.eq(set_id),
                    option_value::code.eq(code),
                    option_value::name.eq(name),
                    option_value::sort_order.eq(order.or(Some(i as i32 + 1))),
                ))
                .on_conflict(option_value::uid)
                .do_update()
                .set((
                    option_value::code.eq(excluded(option_value::code)),
                    option_value::name.eq(excluded(option_value::name)),
                    option_value::sort_order.eq(excluded(option_value::sort_order)),
                ))
                .execute(conn)
                .map_err(db("option", &r.id))?;
        }
        s.option_sets += 1;
    }

    // Org units, parents first; the path and level are recomputed from the parent, never trusted.
    let mut pending: Vec<&OrgUnitJson> = x.organisation_units.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for ou in pending {
            let parent = match &ou.parent {
                None => None,
                Some(p) => {
                    let row: Option<(i64, String, i32)> = org_unit::table
                        .filter(org_unit::uid.eq(&p.id))
                        .select((org_unit::id, org_unit::path, org_unit::level))
                        .first(conn)
                        .optional()
                        .map_err(db("organisationUnit", &ou.id))?;
                    match row {
                        Some(r) => Some(r),
                        None => {
                            rest.push(ou);
                            continue;
                        }
                    }
                }
            };
            let (parent_id, path, level) = match parent {
                None => (None, format!("/{}", ou.id), 1),
                Some((pid, ppath, plevel)) => (Some(pid), format!("{ppath}/{}", ou.id), plevel + 1),
            };
            let opening = ou
                .opening_date
                .as_deref()
                .and_then(|d| NaiveDate::parse_from_str(d.get(..10).unwrap_or(d), "%Y-%m-%d").ok());
            diesel::insert_into(org_unit::table)
                .values((
                    org_unit::uid.eq(&ou.id),
                    org_unit::code.eq(&ou.code),
                    org_unit::name.eq(&ou.name),
                    org_unit::short_name.eq(&ou.short_name),
                    org_unit::parent_id.eq(parent_id),
                    org_unit::path.eq(&path),
                    org_unit::level.eq(level),
                    org_unit::opening_date.eq(opening),
                ))
                .on_conflict(org_unit::uid)
                .do_update()
                .set((
                    org_unit::code.eq(excluded(org_unit::code)),
                    org_unit::name.eq(excluded(org_unit::name)),
                    org_unit::short_name.eq(excluded(org_unit::short_name)),
                    org_unit::parent_id.eq(excluded(org_unit::parent_id)),
                    org_unit::path.eq(excluded(org_unit::path)),
                    org_unit::level.eq(excluded(org_unit::level)),
                    org_unit::opening_date.eq(excluded(org_unit::opening_date)),
                    org_unit::last_updated.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .map_err(db("organisationUnit", &ou.id))?;
            s.org_units += 1;
        }
        if rest.len() == before {
            let ids: Vec<&str> = rest.iter().map(|o| o.id.as_str()).collect();
            return Err(format!(
                "organisationUnits {ids:?} have a parent that is neither in this file nor loaded"
            ));
        }
        pending = rest;
    }

    for a in &x.tracked_entity_attributes {
        let set = a
            .option_set
            .as_ref()
            .map(|r| {
                resolve(
                    conn,
                    "option_set",
                    &r.id,
                    &format!("trackedEntityAttribute {}", a.id),
                )
            })
            .transpose()?;
        diesel::insert_into(tracked_entity_attribute::table)
            .values((
                tracked_entity_attribute::uid.eq(&a.id),
                tracked_entity_attribute::code.eq(&a.code),
                tracked_entity_attribute::name.eq(&a.name),
                tracked_entity_attribute::short_name.eq(&a.short_name),
                tracked_entity_attribute::value_type.eq(&a.value_type),
                tracked_entity_attribute::option_set_id.eq(set),
                tracked_entity_attribute::is_unique.eq(a.unique),
            ))
            .on_conflict(tracked_entity_attribute::uid)
            .do_update()
            .set((
                tracked_entity_attribute::code.eq(excluded(tracked_entity_attribute::code)),
                tracked_entity_attribute::name.eq(excluded(tracked_entity_attribute::name)),
                tracked_entity_attribute::short_name
                    .eq(excluded(tracked_entity_attribute::short_name)),
                tracked_entity_attribute::value_type
                    .eq(excluded(tracked_entity_attribute::value_type)),
                tracked_entity_attribute::option_set_id
                    .eq(excluded(tracked_entity_attribute::option_set_id)),
                tracked_entity_attribute::is_unique
                    .eq(excluded(tracked_entity_attribute::is_unique)),
            ))
            .execute(conn)
            .map_err(db("trackedEntityAttribute", &a.id))?;
        s.attributes += 1;
    }

    for t in &x.tracked_entity_types {
        let tid: i64 = diesel::insert_into(tracked_entity_type::table)
            .values((
                tracked_entity_type::uid.eq(&t.id),
                tracked_entity_type::code.eq(&t.code),
                tracked_entity_type::name.eq(&t.name),
            ))
            .on_conflict(tracked_entity_type::uid)
            .do_update()
            .set((
                tracked_entity_type::code.eq(excluded(tracked_entity_type::code)),
                tracked_entity_type::name.eq(excluded(tracked_entity_type::name)),
            ))
            .returning(tracked_entity_type::id)
            .get_result(conn)
            .map_err(db("trackedEntityType", &t.id))?;
        for r in &t.tracked_entity_type_attributes {
            let aid = resolve(
                conn,
                "tracked_entity_attribute",
                &r.tracked_entity_attribute.id,
                &format!("trackedEntityType {}", t.id),
            )?;
            diesel::insert_into(tracked_entity_type_attribute::table)
                .values((
                    tracked_entity_type_attribute::tracked_entity_type_id.eq(tid),
                    tracked_entity_type_attribute::attribute_id.eq(aid),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .map_err(db("trackedEntityType", &t.id))?;
        }
    }

    for d in &x.data_elements {
        let set = d
            .option_set
            .as_ref()
            .map(|r| resolve(conn, "option_set", &r.id, &format!("dataElement {}", d.id)))
            .transpose()?;
        let unit = d
            .attribute_values
            .iter()
            .find(|v| unit_attribute.contains(&v.attribute.id.as_str()))
            .map(|v| v.value.clone());
        diesel::insert_into(data_element::table)
            .values((
                data_element::uid.eq(&d.id),
                data_element::code.eq(&d.code),
                data_element::name.eq(&d.name),
                data_element::short_name.eq(&d.short_name),
                data_element::value_type.eq(&d.value_type),
                data_element::option_set_id.eq(set),
                data_element::unit.eq(&unit),
            ))
            .on_conflict(data_element::uid)
            .do_update()
            .set((
                data_element::code.eq(excluded(data_element::code)),
                data_element::name.eq(excluded(data_element::name)),
                data_element::short_name.eq(excluded(data_element::short_name)),
                data_element::value_type.eq(excluded(data_element::value_type)),
                data_element::option_set_id.eq(excluded(data_element::option_set_id)),
                data_element::unit.eq(excluded(data_element::unit)),
            ))
            .execute(conn)
            .map_err(db("dataElement", &d.id))?;
        s.data_elements += 1;
    }

    let event_programs: Vec<&str> = x
        .programs
        .iter()
        .filter(|p| p.tracked_entity_type.is_none())
        .map(|p| p.id.as_str())
        .collect();
    for p in &x.programs {
        let what = format!("program {}", p.id);
        let Some(tet) = p.tracked_entity_type.as_ref() else {
            // Event programs (WITHOUT_REGISTRATION) hold no people; a real export may carry them.
            tracing::warn!(program = %p.id, "skipping an event program: only tracker programs (WITH_REGISTRATION) are loaded");
            continue;
        };
        let tet_id = resolve(conn, "tracked_entity_type", &tet.id, &what)?;
        let pid: i64 = diesel::insert_into(program::table)
            .values((
                program::uid.eq(&p.id),
                program::code.eq(&p.code),
                program::name.eq(&p.name),
                program::short_name.eq(&p.short_name),
                program::tracked_entity_type_id.eq(tet_id),
                program::access_level.eq(p.access_level.as_deref().unwrap_or("OPEN")),
                program::only_enroll_once.eq(p.only_enroll_once),
            ))
            .on_conflict(program::uid)
            .do_update()
            .set((
                program::code.eq(excluded(program::code)),
                program::name.eq(excluded(program::name)),
                program::short_name.eq(excluded(program::short_name)),
                program::tracked_entity_type_id.eq(excluded(program::tracked_entity_type_id)),
                program::access_level.eq(excluded(program::access_level)),
                program::only_enroll_once.eq(excluded(program::only_enroll_once)),
            ))
            .returning(program::id)
            .get_result(conn)
            .map_err(db("program", &p.id))?;
        for a in &p.program_tracked_entity_attributes {
            let aid = resolve(
                conn,
                "tracked_entity_attribute",
                &a.tracked_entity_attribute.id,
                &what,
            )?;
            diesel::insert_into(program_attribute::table)
                .values((
                    program_attribute::program_id.eq(pid),
                    program_attribute::attribute_id.eq(aid),
                    program_attribute::mandatory.eq(a.mandatory),
                ))
                .on_conflict((
                    program_attribute::program_id,
                    program_attribute::attribute_id,
                ))
                .do_update()
                .set(program_attribute::mandatory.eq(excluded(program_attribute::mandatory)))
                .execute(conn)
                .map_err(db("program", &p.id))?;
        }
        for o in &p.organisation_units {
            let oid = resolve(conn, "org_unit", &o.id, &what)?;
            diesel::insert_into(program_org_unit::table)
                .values((
                    program_org_unit::program_id.eq(pid),
                    program_org_unit::org_unit_id.eq(oid),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .map_err(db("program", &p.id))?;
        }
        s.programs += 1;
    }

    for st in x
        .program_stages
        .iter()
        .filter(|st| !event_programs.contains(&st.program.id.as_str()))
    {
        let what = format!("programStage {}", st.id);
        let pid = resolve(conn, "program", &st.program.id, &what)?;
        let sid: i64 = diesel::insert_into(program_stage::table)
            .values((
                program_stage::uid.eq(&st.id),
                program_stage::code.eq(&st.code),
                program_stage::name.eq(&st.name),
                program_stage::program_id.eq(pid),
                program_stage::repeatable.eq(st.repeatable),
                program_stage::sort_order.eq(st.sort_order),
            ))
            .on_conflict(program_stage::uid)
            .do_update()
            .set((
                program_stage::code.eq(excluded(program_stage::code)),
                program_stage::name.eq(excluded(program_stage::name)),
                program_stage::program_id.eq(excluded(program_stage::program_id)),
                program_stage::repeatable.eq(excluded(program_stage::repeatable)),
                program_stage::sort_order.eq(excluded(program_stage::sort_order)),
            ))
            .returning(program_stage::id)
            .get_result(conn)
            .map_err(db("programStage", &st.id))?;
        for d in &st.program_stage_data_elements {
            let did = resolve(conn, "data_element", &d.data_element.id, &what)?;
            diesel::insert_into(program_stage_data_element::table)
                .values((
                    program_stage_data_element::program_stage_id.eq(sid),
                    program_stage_data_element::data_element_id.eq(did),
                    program_stage_data_element::compulsory.eq(d.compulsory),
                    program_stage_data_element::sort_order.eq(d.sort_order),
                ))
                .on_conflict((
                    program_stage_data_element::program_stage_id,
                    program_stage_data_element::data_element_id,
                ))
                .do_update()
                .set((
                    program_stage_data_element::compulsory
                        .eq(excluded(program_stage_data_element::compulsory)),
                    program_stage_data_element::sort_order
                        .eq(excluded(program_stage_data_element::sort_order)),
                ))
                .execute(conn)
                .map_err(db("programStage", &st.id))?;
        }
        s.stages += 1;
    }

    for r in &x.relationship_types {
        let what = format!("relationshipType {}", r.id);
        let side = |conn: &mut PgConnection,
                    c: &ConstraintJson|
         -> Result<(Option<i64>, Option<i64>), String> {
            let t = c
                .tracked_entity_type
                .as_ref()
                .map(|t| resolve(conn, "tracked_entity_type", &t.id, &what))
                .transpose()?;
            let p = c
                .program
                .as_ref()
                .map(|p| resolve(conn, "program", &p.id, &what))
                .transpose()?;
            Ok((t, p))
        };
        let (ft, fp) = side(conn, &r.from_constraint)?;
        let (tt, tp) = side(conn, &r.to_constraint)?;
        diesel::insert_into(relationship_type::table)
            .values((
                relationship_type::uid.eq(&r.id),
                relationship_type::code.eq(&r.code),
                relationship_type::name.eq(&r.name),
                relationship_type::from_to_name.eq(&r.from_to_name),
                relationship_type::to_from_name.eq(&r.to_from_name),
                relationship_type::bidirectional.eq(r.bidirectional),
                relationship_type::from_entity.eq(&r.from_constraint.relationship_entity),
                relationship_type::from_tracked_entity_type_id.eq(ft),
                relationship_type::from_program_id.eq(fp),
                relationship_type::to_entity.eq(&r.to_constraint.relationship_entity),
                relationship_type::to_tracked_entity_type_id.eq(tt),
                relationship_type::to_program_id.eq(tp),
            ))
            .on_conflict(relationship_type::uid)
            .do_update()
            .set((
                relationship_type::code.eq(excluded(relationship_type::code)),
                relationship_type::name.eq(excluded(relationship_type::name)),
                relationship_type::from_to_name.eq(excluded(relationship_type::from_to_name)),
                relationship_type::to_from_name.eq(excluded(relationship_type::to_from_name)),
                relationship_type::bidirectional.eq(excluded(relationship_type::bidirectional)),
                relationship_type::from_entity.eq(excluded(relationship_type::from_entity)),
                relationship_type::from_tracked_entity_type_id
                    .eq(excluded(relationship_type::from_tracked_entity_type_id)),
                relationship_type::from_program_id.eq(excluded(relationship_type::from_program_id)),
                relationship_type::to_entity.eq(excluded(relationship_type::to_entity)),
                relationship_type::to_tracked_entity_type_id
                    .eq(excluded(relationship_type::to_tracked_entity_type_id)),
                relationship_type::to_program_id.eq(excluded(relationship_type::to_program_id)),
            ))
            .execute(conn)
            .map_err(db("relationshipType", &r.id))?;
        s.relationship_types += 1;
    }
    Ok(s)
}
