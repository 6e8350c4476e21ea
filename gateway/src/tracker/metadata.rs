//! The registry's metadata held in memory (read once from Postgres after the import): translation
//! and checks look things up here instead of querying per request.

use std::collections::HashMap;

use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::value_type::ValueType;
use crate::error::Error;
use crate::store::schema;

#[derive(Debug, Clone)]
pub struct OrgUnit {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub parent_id: Option<i64>,
    pub path: String,
    pub level: i32,
}

#[derive(Debug, Clone)]
pub struct OptionValue {
    pub uid: String,
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct OptionSet {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub options: Vec<OptionValue>,
}

impl OptionSet {
    pub fn option(&self, code: &str) -> Option<&OptionValue> {
        self.options.iter().find(|o| o.code == code)
    }

    pub fn label(&self) -> &str {
        self.code.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Attribute {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub value_type: ValueType,
    pub option_set_id: Option<i64>,
    pub unique: bool,
}

#[derive(Debug, Clone)]
pub struct DataElement {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub value_type: ValueType,
    pub option_set_id: Option<i64>,
    pub unit: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TrackedEntityType {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub attribute_ids: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct Program {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub tracked_entity_type_id: i64,
    pub access_level: String,
    pub only_enroll_once: bool,
}

#[derive(Debug, Clone)]
pub struct ProgramStage {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub program_id: i64,
    pub repeatable: bool,
    pub data_element_ids: Vec<i64>,
}

/// A relationship type (DHIS2 `relationshipTypes`): what may stand at each end. Only
/// person-to-person types (`TRACKED_ENTITY_INSTANCE` at both ends) are served as RelatedPerson.
#[derive(Debug, Clone)]
pub struct RelationshipType {
    pub id: i64,
    pub uid: String,
    pub code: Option<String>,
    pub name: String,
    pub from_to_name: Option<String>,
    pub to_from_name: Option<String>,
    pub bidirectional: bool,
    pub from_entity: String,
    pub from_entity_type_id: Option<i64>,
    pub from_program_id: Option<i64>,
    pub to_entity: String,
    pub to_entity_type_id: Option<i64>,
    pub to_program_id: Option<i64>,
}

impl RelationshipType {
    pub fn between_people(&self) -> bool {
        self.from_entity == "TRACKED_ENTITY_INSTANCE" && self.to_entity == "TRACKED_ENTITY_INSTANCE"
    }
}

/// (id, uid, code, name, parent id, path, level) as selected from `org_unit`.
type OrgTuple = (
    i64,
    String,
    Option<String>,
    String,
    Option<i64>,
    String,
    i32,
);

/// Everything is looked up by bigint id, UID or code; the `key` lookups take a UID or a code.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub org_units: Vec<OrgUnit>,
    pub option_sets: Vec<OptionSet>,
    pub attributes: Vec<Attribute>,
    pub data_elements: Vec<DataElement>,
    pub entity_types: Vec<TrackedEntityType>,
    pub programs: Vec<Program>,
    pub stages: Vec<ProgramStage>,
    pub relationship_types: Vec<RelationshipType>,
    org_index: HashMap<String, usize>,
    org_by_id: HashMap<i64, usize>,
}

fn find_key<'a, T>(
    items: &'a [T],
    key: &str,
    uid: impl Fn(&T) -> &str,
    code: impl Fn(&T) -> Option<&str>,
) -> Option<&'a T> {
    items
        .iter()
        .find(|i| uid(i) == key)
        .or_else(|| items.iter().find(|i| code(i) == Some(key)))
}

impl Metadata {
    pub fn load(conn: &mut PgConnection) -> Result<Metadata, Error> {
        use schema::*;
        let orgs: Vec<OrgTuple> = org_unit::table
            .select((
                org_unit::id,
                org_unit::uid,
                org_unit::code,
                org_unit::name,
                org_unit::parent_id,
                org_unit::path,
                org_unit::level,
            ))
            .order(org_unit::path)
            .load(conn)?;
        let org_units: Vec<OrgUnit> = orgs
            .into_iter()
            .map(|(id, uid, code, name, parent_id, path, level)| OrgUnit {
                id,
                uid,
                code,
                name,
                parent_id,
                path,
                level,
            })
            .collect();

        let sets: Vec<(i64, String, Option<String>, String)> = option_set::table
            .select((
                option_set::id,
                option_set::uid,
                option_set::code,
                option_set::name,
            ))
            .order(option_set::id)
            .load(conn)?;
        let opts: Vec<(i64, String, String, String)> = option_value::table
            .select((
                option_value::option_set_id,
                option_value::uid,
                option_value::code,
                option_value::name,
            ))
            .order((
                option_value::option_set_id,
                option_value::sort_order.asc().nulls_last(),
                option_value::id,
            ))
            .load(conn)?;
        let option_sets = sets
            .into_iter()
            .map(|(id, uid, code, name)| OptionSet {
                id,
                uid,
                code,
                name,
                options: opts
                    .iter()
                    .filter(|o| o.0 == id)
                    .map(|o| OptionValue {
                        uid: o.1.clone(),
                        code: o.2.clone(),
                        name: o.3.clone(),
                    })
                    .collect(),
            })
            .collect();

        let attributes = tracked_entity_attribute::table
            .select((
                tracked_entity_attribute::id,
                tracked_entity_attribute::uid,
                tracked_entity_attribute::code,
                tracked_entity_attribute::name,
                tracked_entity_attribute::value_type,
                tracked_entity_attribute::option_set_id,
                tracked_entity_attribute::is_unique,
            ))
            .order(tracked_entity_attribute::id)
            .load::<(
                i64,
                String,
                Option<String>,
                String,
                String,
                Option<i64>,
                bool,
            )>(conn)?
            .into_iter()
            .map(
                |(id, uid, code, name, vt, option_set_id, unique)| Attribute {
                    id,
                    uid,
                    code,
                    name,
                    value_type: ValueType::parse(&vt),
                    option_set_id,
                    unique,
                },
            )
            .collect();

        let data_elements = data_element::table
            .select((
                data_element::id,
                data_element::uid,
                data_element::code,
                data_element::name,
                data_element::value_type,
                data_element::option_set_id,
                data_element::unit,
            ))
            .order(data_element::id)
            .load::<(
                i64,
                String,
                Option<String>,
                String,
                String,
                Option<i64>,
                Option<String>,
            )>(conn)?
            .into_iter()
            .map(
                |(id, uid, code, name, vt, option_set_id, unit)| DataElement {
                    id,
                    uid,
                    code,
                    name,
                    value_type: ValueType::parse(&vt),
                    option_set_id,
                    unit,
                },
            )
            .collect();

        let tet_attrs: Vec<(i64, i64)> = tracked_entity_type_attribute::table
            .select((
                tracked_entity_type_attribute::tracked_entity_type_id,
                tracked_entity_type_attribute::attribute_id,
            ))
            .load(conn)?;
        let entity_types = tracked_entity_type::table
            .select((
                tracked_entity_type::id,
                tracked_entity_type::uid,
                tracked_entity_type::code,
                tracked_entity_type::name,
            ))
            .order(tracked_entity_type::id)
            .load::<(i64, String, Option<String>, String)>(conn)?
            .into_iter()
            .map(|(id, uid, code, name)| TrackedEntityType {
                id,
                uid,
                code,
                name,
                attribute_ids: tet_attrs
                    .iter()
                    .filter(|a| a.0 == id)
                    .map(|a| a.1)
                    .collect(),
            })
            .collect();

        let programs = program::table
            .select((
                program::id,
                program::uid,
                program::code,
                program::name,
                program::tracked_entity_type_id,
                program::access_level,
                program::only_enroll_once,
            ))
            .order(program::id)
            .load::<(i64, String, Option<String>, String, i64, String, bool)>(conn)?
            .into_iter()
            .map(
                |(id, uid, code, name, tracked_entity_type_id, access_level, only_enroll_once)| {
                    Program {
                        id,
                        uid,
                        code,
                        name,
                        tracked_entity_type_id,
                        access_level,
                        only_enroll_once,
                    }
                },
            )
            .collect();

        let stage_des: Vec<(i64, i64)> = program_stage_data_element::table
            .select((
                program_stage_data_element::program_stage_id,
                program_stage_data_element::data_element_id,
            ))
            .order((
                program_stage_data_element::program_stage_id,
                program_stage_data_element::sort_order.asc().nulls_last(),
            ))
            .load(conn)?;
        let stages = program_stage::table
            .select((
                program_stage::id,
                program_stage::uid,
                program_stage::code,
                program_stage::name,
                program_stage::program_id,
                program_stage::repeatable,
            ))
            .order((
                program_stage::program_id,
                program_stage::sort_order.asc().nulls_last(),
            ))
            .load::<(i64, String, Option<String>, String, i64, bool)>(conn)?
            .into_iter()
            .map(
                |(id, uid, code, name, program_id, repeatable)| ProgramStage {
                    id,
                    uid,
                    code,
                    name,
                    program_id,
                    repeatable,
                    data_element_ids: stage_des
                        .iter()
                        .filter(|s| s.0 == id)
                        .map(|s| s.1)
                        .collect(),
                },
            )
            .collect();

        type RelTuple = (
            i64,
            String,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
            bool,
            String,
            Option<i64>,
            Option<i64>,
            String,
            Option<i64>,
            Option<i64>,
        );
        let relationship_types = relationship_type::table
            .select((
                relationship_type::id,
                relationship_type::uid,
                relationship_type::code,
                relationship_type::name,
                relationship_type::from_to_name,
                relationship_type::to_from_name,
                relationship_type::bidirectional,
                relationship_type::from_entity,
                relationship_type::from_tracked_entity_type_id,
                relationship_type::from_program_id,
                relationship_type::to_entity,
                relationship_type::to_tracked_entity_type_id,
                relationship_type::to_program_id,
            ))
            .order(relationship_type::id)
            .load::<RelTuple>(conn)?
            .into_iter()
            .map(|r| RelationshipType {
                id: r.0,
                uid: r.1,
                code: r.2,
                name: r.3,
                from_to_name: r.4,
                to_from_name: r.5,
                bidirectional: r.6,
                from_entity: r.7,
                from_entity_type_id: r.8,
                from_program_id: r.9,
                to_entity: r.10,
                to_entity_type_id: r.11,
                to_program_id: r.12,
            })
            .collect();

        let mut md = Metadata::build(
            org_units,
            option_sets,
            attributes,
            data_elements,
            entity_types,
            programs,
            stages,
        );
        md.relationship_types = relationship_types;
        Ok(md)
    }

    pub fn build(
        org_units: Vec<OrgUnit>,
        option_sets: Vec<OptionSet>,
        attributes: Vec<Attribute>,
        data_elements: Vec<DataElement>,
        entity_types: Vec<TrackedEntityType>,
        programs: Vec<Program>,
        stages: Vec<ProgramStage>,
    ) -> Metadata {
        let mut org_index = HashMap::new();
        let mut org_by_id = HashMap::new();
        for (i, o) in org_units.iter().enumerate() {
            org_by_id.insert(o.id, i);
            if let Some(c) = &o.code {
                org_index.entry(c.clone()).or_insert(i);
            }
        }
        // UIDs win over codes when both could match.
        for (i, o) in org_units.iter().enumerate() {
            org_index.insert(o.uid.clone(), i);
        }
        Metadata {
            org_units,
            option_sets,
            attributes,
            data_elements,
            entity_types,
            programs,
            stages,
            relationship_types: Vec::new(),
            org_index,
            org_by_id,
        }
    }

    pub fn org_unit(&self, key: &str) -> Option<&OrgUnit> {
        self.org_index.get(key).map(|&i| &self.org_units[i])
    }

    pub fn org_unit_by_id(&self, id: i64) -> Option<&OrgUnit> {
        self.org_by_id.get(&id).map(|&i| &self.org_units[i])
    }

    pub fn attribute(&self, key: &str) -> Option<&Attribute> {
        find_key(&self.attributes, key, |a| &a.uid, |a| a.code.as_deref())
    }

    pub fn attribute_by_id(&self, id: i64) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.id == id)
    }

    pub fn option_set_by_id(&self, id: i64) -> Option<&OptionSet> {
        self.option_sets.iter().find(|s| s.id == id)
    }

    pub fn data_element(&self, key: &str) -> Option<&DataElement> {
        find_key(&self.data_elements, key, |d| &d.uid, |d| d.code.as_deref())
    }

    pub fn entity_type(&self, key: &str) -> Option<&TrackedEntityType> {
        find_key(&self.entity_types, key, |t| &t.uid, |t| t.code.as_deref())
            .or_else(|| self.entity_types.iter().find(|t| t.name == key))
    }

    pub fn program(&self, key: &str) -> Option<&Program> {
        find_key(&self.programs, key, |p| &p.uid, |p| p.code.as_deref())
    }

    pub fn relationship_type(&self, key: &str) -> Option<&RelationshipType> {
        find_key(
            &self.relationship_types,
            key,
            |t| &t.uid,
            |t| t.code.as_deref(),
        )
    }

    pub fn relationship_type_by_id(&self, id: i64) -> Option<&RelationshipType> {
        self.relationship_types.iter().find(|t| t.id == id)
    }

    pub fn program_by_id(&self, id: i64) -> Option<&Program> {
        self.programs.iter().find(|p| p.id == id)
    }

    pub fn stage(&self, key: &str) -> Option<&ProgramStage> {
        find_key(&self.stages, key, |s| &s.uid, |s| s.code.as_deref())
    }
}
