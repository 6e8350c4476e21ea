//! Registry metadata built straight from a DHIS2 metadata export file, without a database.
//!
//! The gateway itself always imports metadata into Postgres and reads it back
//! ([`Metadata::load`]), because the tracker rows refer to it by bigint id. Translation, however,
//! is pure and only needs the in-memory [`Metadata`]: benchmarks and tests of the translation path
//! build it here so that they measure translation and nothing else. The rules follow
//! `store::metadata_import` (what is kept, how references resolve) and `Metadata::load` (the
//! order of lists), so that lookups behave as they do over a database; the ids are synthetic.

use std::collections::HashMap;
use std::path::Path;

use super::metadata::{
    Attribute, DataElement, Metadata, OptionSet, OptionValue, OrgUnit, Program, ProgramStage,
    RelationshipType, TrackedEntityType,
};
use super::value_type::ValueType;
use crate::store::metadata_import::{Export, OrgUnitJson};

/// Reads one export file (e.g. `fixtures/metadata/demo.json`) and builds [`Metadata`] from it.
pub fn metadata_from_export_file(path: &Path) -> Result<Metadata, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let export: Export = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}: not a DHIS2 metadata export: {e}",
            path.display(),
            e.line()
        )
    })?;
    metadata_from_export(&export)
}

/// Builds [`Metadata`] from one export. Each collection is numbered 1, 2, … in file order (the
/// ids only need to be unique and stable within this value). A reference that does not resolve
/// inside the export is an error, as it is for an import into an empty database.
pub fn metadata_from_export(x: &Export) -> Result<Metadata, String> {
    // Synthetic ids: the position in the collection, from 1, like a fresh table's serial.
    fn ids<'a>(uids: impl Iterator<Item = &'a str>) -> HashMap<&'a str, i64> {
        uids.zip(1..).collect()
    }
    fn resolve(ids: &HashMap<&str, i64>, uid: &str, what: &str, from: &str) -> Result<i64, String> {
        ids.get(uid)
            .copied()
            .ok_or_else(|| format!("{from} refers to {what} `{uid}`, which is not in the export"))
    }

    // Option sets; options listed by reference take code and name from the top-level `options`.
    let set_ids = ids(x.option_sets.iter().map(|s| s.id.as_str()));
    let options_by_id: HashMap<&str, _> = x.options.iter().map(|o| (o.id.as_str(), o)).collect();
    let mut option_sets = Vec::with_capacity(x.option_sets.len());
    for (set, id) in x.option_sets.iter().zip(1..) {
        let mut options = Vec::with_capacity(set.options.len());
        for (i, r) in set.options.iter().enumerate() {
            let (code, name, order) = match (&r.code, &r.name, options_by_id.get(r.id.as_str())) {
                (Some(c), Some(n), _) => (c.clone(), n.clone(), r.sort_order),
                (_, _, Some(o)) => (o.code.clone(), o.name.clone(), o.sort_order),
                _ => {
                    return Err(format!(
                        "optionSet {} lists option `{}`, which is not in `options`",
                        set.id, r.id
                    ))
                }
            };
            // The import stores the list position when no sortOrder is given; lists are read back
            // in sortOrder.
            options.push((order.unwrap_or(i as i32 + 1), r.id.clone(), code, name));
        }
        options.sort_by_key(|o| o.0);
        option_sets.push(OptionSet {
            id,
            uid: set.id.clone(),
            code: set.code.clone(),
            name: set.name.clone(),
            options: options
                .into_iter()
                .map(|(_, uid, code, name)| OptionValue { uid, code, name })
                .collect(),
        });
    }

    // Org units: path and level come from the parent chain (never trusted from the file).
    let org_ids = ids(x.organisation_units.iter().map(|o| o.id.as_str()));
    let by_uid: HashMap<&str, &OrgUnitJson> = x
        .organisation_units
        .iter()
        .map(|o| (o.id.as_str(), o))
        .collect();
    let mut org_units = Vec::with_capacity(x.organisation_units.len());
    for (ou, id) in x.organisation_units.iter().zip(1..) {
        let mut chain = vec![ou.id.as_str()];
        let mut at = ou;
        while let Some(p) = &at.parent {
            at = by_uid.get(p.id.as_str()).ok_or_else(|| {
                format!(
                    "organisationUnit {} has parent `{}`, which is not in the export",
                    at.id, p.id
                )
            })?;
            if chain.contains(&at.id.as_str()) {
                return Err(format!("organisationUnit {} is its own ancestor", ou.id));
            }
            chain.push(at.id.as_str());
        }
        chain.reverse();
        org_units.push(OrgUnit {
            id,
            uid: ou.id.clone(),
            code: ou.code.clone(),
            name: ou.name.clone(),
            parent_id: ou
                .parent
                .as_ref()
                .and_then(|p| org_ids.get(p.id.as_str()).copied()),
            path: format!("/{}", chain.join("/")),
            level: chain.len() as i32,
        });
    }
    // `Metadata::load` reads org units in path order.
    org_units.sort_by(|a, b| a.path.cmp(&b.path));

    let attr_ids = ids(x.tracked_entity_attributes.iter().map(|a| a.id.as_str()));
    let mut attributes = Vec::with_capacity(x.tracked_entity_attributes.len());
    for (a, id) in x.tracked_entity_attributes.iter().zip(1..) {
        let from = format!("trackedEntityAttribute {}", a.id);
        attributes.push(Attribute {
            id,
            uid: a.id.clone(),
            code: a.code.clone(),
            name: a.name.clone(),
            value_type: ValueType::parse(&a.value_type),
            option_set_id: a
                .option_set
                .as_ref()
                .map(|r| resolve(&set_ids, &r.id, "optionSet", &from))
                .transpose()?,
            unique: a.unique,
        });
    }

    let mut entity_types = Vec::with_capacity(x.tracked_entity_types.len());
    let tet_ids = ids(x.tracked_entity_types.iter().map(|t| t.id.as_str()));
    for (t, id) in x.tracked_entity_types.iter().zip(1..) {
        let from = format!("trackedEntityType {}", t.id);
        entity_types.push(TrackedEntityType {
            id,
            uid: t.id.clone(),
            code: t.code.clone(),
            name: t.name.clone(),
            attribute_ids: t
                .tracked_entity_type_attributes
                .iter()
                .map(|r| {
                    resolve(
                        &attr_ids,
                        &r.tracked_entity_attribute.id,
                        "trackedEntityAttribute",
                        &from,
                    )
                })
                .collect::<Result<_, _>>()?,
        });
    }

    // The unit of a data element is the value of the metadata attribute coded `UNIT`.
    let unit_attributes: Vec<&str> = x
        .attributes
        .iter()
        .filter(|a| a.code.as_deref() == Some("UNIT"))
        .map(|a| a.id.as_str())
        .collect();
    let de_ids = ids(x.data_elements.iter().map(|d| d.id.as_str()));
    let mut data_elements = Vec::with_capacity(x.data_elements.len());
    for (d, id) in x.data_elements.iter().zip(1..) {
        let from = format!("dataElement {}", d.id);
        data_elements.push(DataElement {
            id,
            uid: d.id.clone(),
            code: d.code.clone(),
            name: d.name.clone(),
            value_type: ValueType::parse(&d.value_type),
            option_set_id: d
                .option_set
                .as_ref()
                .map(|r| resolve(&set_ids, &r.id, "optionSet", &from))
                .transpose()?,
            unit: d
                .attribute_values
                .iter()
                .find(|v| unit_attributes.contains(&v.attribute.id.as_str()))
                .map(|v| v.value.clone()),
        });
    }

    // Only tracker programs are kept (event programs have no tracked entity type), and their
    // stages only; the import skips the others the same way.
    let tracker_programs: Vec<_> = x
        .programs
        .iter()
        .filter_map(|p| p.tracked_entity_type.as_ref().map(|t| (p, t)))
        .collect();
    let program_ids = ids(tracker_programs.iter().map(|(p, _)| p.id.as_str()));
    let mut programs = Vec::with_capacity(tracker_programs.len());
    for ((p, tet), id) in tracker_programs.iter().zip(1..) {
        programs.push(Program {
            id,
            uid: p.id.clone(),
            code: p.code.clone(),
            name: p.name.clone(),
            tracked_entity_type_id: resolve(
                &tet_ids,
                &tet.id,
                "trackedEntityType",
                &format!("program {}", p.id),
            )?,
            access_level: p.access_level.clone().unwrap_or_else(|| "OPEN".into()),
            only_enroll_once: p.only_enroll_once,
        });
    }

    let event_programs: Vec<&str> = x
        .programs
        .iter()
        .filter(|p| p.tracked_entity_type.is_none())
        .map(|p| p.id.as_str())
        .collect();
    let mut stages = Vec::new();
    for (st, id) in x
        .program_stages
        .iter()
        .filter(|st| !event_programs.contains(&st.program.id.as_str()))
        .zip(1..)
    {
        let from = format!("programStage {}", st.id);
        let mut des = Vec::with_capacity(st.program_stage_data_elements.len());
        for d in &st.program_stage_data_elements {
            let de = resolve(&de_ids, &d.data_element.id, "dataElement", &from)?;
            des.push((d.sort_order.unwrap_or(i32::MAX), de));
        }
        // Data elements and stages are read in sortOrder, those without one last.
        des.sort_by_key(|d| d.0);
        stages.push((
            st.sort_order.unwrap_or(i32::MAX),
            ProgramStage {
                id,
                uid: st.id.clone(),
                code: st.code.clone(),
                name: st.name.clone(),
                program_id: resolve(&program_ids, &st.program.id, "program", &from)?,
                repeatable: st.repeatable,
                data_element_ids: des.into_iter().map(|d| d.1).collect(),
            },
        ));
    }
    stages.sort_by_key(|(order, s)| (s.program_id, *order));

    let mut relationship_types = Vec::with_capacity(x.relationship_types.len());
    for (r, id) in x.relationship_types.iter().zip(1..) {
        let from = format!("relationshipType {}", r.id);
        let tet = |c: &crate::store::metadata_import::ConstraintJson| {
            c.tracked_entity_type
                .as_ref()
                .map(|t| resolve(&tet_ids, &t.id, "trackedEntityType", &from))
                .transpose()
        };
        let program = |c: &crate::store::metadata_import::ConstraintJson| {
            c.program
                .as_ref()
                .map(|p| resolve(&program_ids, &p.id, "program", &from))
                .transpose()
        };
        relationship_types.push(RelationshipType {
            id,
            uid: r.id.clone(),
            code: r.code.clone(),
            name: r.name.clone(),
            from_to_name: r.from_to_name.clone(),
            to_from_name: r.to_from_name.clone(),
            bidirectional: r.bidirectional,
            from_entity: r.from_constraint.relationship_entity.clone(),
            from_entity_type_id: tet(&r.from_constraint)?,
            from_program_id: program(&r.from_constraint)?,
            to_entity: r.to_constraint.relationship_entity.clone(),
            to_entity_type_id: tet(&r.to_constraint)?,
            to_program_id: program(&r.to_constraint)?,
        });
    }

    let mut md = Metadata::build(
        org_units,
        option_sets,
        attributes,
        data_elements,
        entity_types,
        programs,
        stages.into_iter().map(|(_, s)| s).collect(),
    );
    md.relationship_types = relationship_types;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::MappingSet;

    fn repo_path(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    #[test]
    fn demo_export_builds_metadata_that_the_mappings_load_against() {
        let md = metadata_from_export_file(&repo_path("fixtures/metadata/demo.json"))
            .expect("demo.json builds metadata");
        let opd = md.program("OPD").expect("the OPD program");
        assert_eq!(opd.uid, "GNcR6EXJfvM");
        let visit = md.stage("OPD_VISIT").expect("the OPD visit stage");
        assert_eq!(visit.program_id, opd.id);
        assert_eq!(visit.data_element_ids.len(), 8);
        let nid = md
            .attribute("NATIONAL_ID")
            .expect("the NATIONAL_ID attribute");
        assert!(nid.unique);
        let sex = md.attribute("SEX").expect("the SEX attribute");
        let sexes = md
            .option_set_by_id(sex.option_set_id.expect("SEX has an option set"))
            .expect("the SEX option set");
        assert_eq!(sexes.options[0].code, "FEMALE");
        assert_eq!(
            md.data_element("WEIGHT").and_then(|d| d.unit.as_deref()),
            Some("kg")
        );
        let mto = md
            .org_unit("KD_KAS_MTO")
            .expect("Mto Health Centre by code");
        assert_eq!(mto.path, "/ZAyJ2yXBrGN/sC8mUMkyLsj/zJpd3rQ0uYs");
        assert_eq!(mto.level, 3);
        assert_eq!(
            md.org_unit_by_id(mto.id).map(|o| o.uid.as_str()),
            Some("zJpd3rQ0uYs")
        );

        let dir = repo_path("mappings");
        let mappings = MappingSet::load(&dir, &md)
            .unwrap_or_else(|p| panic!("the mappings do not load against demo.json: {p}"));
        // The golden cases pass over this metadata as they do over the imported one.
        let cases = crate::mapping::golden::run(&dir, &md, &mappings);
        assert!(!cases.is_empty(), "mappings/tests holds golden cases");
        for case in cases {
            assert!(
                case.problems.is_empty(),
                "{}: {:?}",
                case.name,
                case.problems
            );
        }
    }

    #[test]
    fn an_unresolved_reference_is_an_error() {
        let x: Export = serde_json::from_str(
            r#"{"organisationUnits": [{"id": "aaaaaaaaaa1", "name": "A", "parent": {"id": "nowhere0001"}}]}"#,
        )
        .expect("a small export");
        let err = metadata_from_export(&x).expect_err("the parent is missing");
        assert!(err.contains("nowhere0001"), "{err}");
    }
}
