//! `encounter.toml`: how an Encounter maps to an event (stage, status, class).

use indexmap::IndexMap;

use serde::Deserialize;
use toml::Spanned;

use super::{known_list, Problem, Source};
use crate::tracker::metadata::Metadata;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    class: RawCoding,
    status: Spanned<IndexMap<String, Spanned<String>>>,
    #[serde(default, rename = "type")]
    types: Vec<RawTypeMap>,
    #[serde(default)]
    class_map: Vec<RawTypeMap>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoding {
    system: String,
    code: String,
    display: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTypeMap {
    system: Spanned<String>,
    code: Spanned<String>,
    display: Option<String>,
    stage: Spanned<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CodeToStage {
    pub coding: Coding,
    pub stage_id: i64,
}

#[derive(Debug, Clone)]
pub struct EncounterMapping {
    pub class: Coding,
    /// FHIR Encounter.status → event status, in file order.
    pub status: Vec<(String, String)>,
    pub types: Vec<CodeToStage>,
    pub classes: Vec<CodeToStage>,
}

impl EncounterMapping {
    pub fn stage_for_type(&self, system: &str, code: &str) -> Option<i64> {
        self.types
            .iter()
            .find(|t| t.coding.system == system && t.coding.code == code)
            .map(|t| t.stage_id)
    }

    pub fn stage_for_class(&self, system: &str, code: &str) -> Option<i64> {
        self.classes
            .iter()
            .find(|t| t.coding.system == system && t.coding.code == code)
            .map(|t| t.stage_id)
    }

    /// The coding a stage is rendered with: its first [[type]] entry.
    pub fn type_of_stage(&self, stage_id: i64) -> Option<&Coding> {
        self.types
            .iter()
            .find(|t| t.stage_id == stage_id)
            .map(|t| &t.coding)
    }

    pub fn event_status(&self, fhir: &str) -> Option<&str> {
        self.status
            .iter()
            .find(|(f, _)| f == fhir)
            .map(|(_, e)| e.as_str())
    }

    pub fn fhir_status(&self, event: &str) -> &str {
        self.status
            .iter()
            .find(|(_, e)| e == event)
            .map(|(f, _)| f.as_str())
            .unwrap_or("unknown")
    }
}

const FHIR_STATUSES: &[&str] = &[
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
];
const EVENT_STATUSES: &[&str] = &[
    "ACTIVE",
    "COMPLETED",
    "VISITED",
    "SCHEDULE",
    "OVERDUE",
    "SKIPPED",
];

pub fn load(src: &Source, md: &Metadata) -> Result<EncounterMapping, Vec<Problem>> {
    let raw: Raw = src.parse().map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let mut status = Vec::new();
    for (fhir, event) in raw.status.get_ref() {
        if !FHIR_STATUSES.contains(&fhir.as_str()) {
            problems.push(src.problem(
                event.span(),
                format!(
                    "status: `{fhir}` is not an Encounter.status ({})",
                    FHIR_STATUSES.join(", ")
                ),
            ));
        }
        if !EVENT_STATUSES.contains(&event.get_ref().as_str()) {
            problems.push(src.problem(
                event.span(),
                format!(
                    "status.{fhir}: `{}` is not an event status ({})",
                    event.get_ref(),
                    EVENT_STATUSES.join(", ")
                ),
            ));
        }
        status.push((fhir.clone(), event.get_ref().clone()));
    }
    let entries = |list: &[RawTypeMap],
                   what: &str,
                   problems: &mut Vec<Problem>|
     -> Vec<CodeToStage> {
        let mut out: Vec<CodeToStage> = Vec::new();
        for t in list {
            let coding = Coding {
                system: t.system.get_ref().clone(),
                code: t.code.get_ref().clone(),
                display: t.display.clone(),
            };
            if let Some(first) = out
                .iter()
                .find(|o| o.coding.system == coding.system && o.coding.code == coding.code)
            {
                let other = md
                    .stages
                    .iter()
                    .find(|s| s.id == first.stage_id)
                    .map(|s| s.name.as_str())
                    .unwrap_or("?");
                problems.push(src.problem(t.code.span(), format!("{what}: {}|{} is already mapped (to stage {other}); a code maps to one stage", coding.system, coding.code)));
                continue;
            }
            match md.stage(t.stage.get_ref()) {
                Some(stage) => out.push(CodeToStage {
                    coding,
                    stage_id: stage.id,
                }),
                None => {
                    let known = known_list(md.stages.iter().filter_map(|s| s.code.as_deref()));
                    problems.push(src.problem(
                        t.stage.span(),
                        format!(
                            "{what}: unknown program stage `{}` (known: {known})",
                            t.stage.get_ref()
                        ),
                    ));
                }
            }
        }
        out
    };
    let types = entries(&raw.types, "type", &mut problems);
    let classes = entries(&raw.class_map, "class_map", &mut problems);
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(problems);
    }
    Ok(EncounterMapping {
        class: Coding {
            system: raw.class.system,
            code: raw.class.code,
            display: raw.class.display,
        },
        status,
        types,
        classes,
    })
}
