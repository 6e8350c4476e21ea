//! `care.toml`: RelatedPerson and EpisodeOfCare over the tracker's relationships and enrollments,
//! and what a change of `Patient.managingOrganization` does to ownership.
//!
//! The file is optional. Without it no RelatedPerson role is mapped (a RelatedPerson is refused,
//! saying so), EpisodeOfCare.type is the program in the registry's own code system, an Encounter
//! opens the enrollment it needs, and PUT never transfers.

use serde::Deserialize;
use toml::Spanned;

use super::encounter::Coding;
use super::{known_list, Problem, Source};
use crate::tracker::metadata::Metadata;

/// EpisodeOfCare.type of a program no `[[program]]` entry names: the program's code (or UID).
pub const PROGRAM_SYSTEM: &str = "urn:kiunga:program";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    relationship: Vec<RawRole>,
    #[serde(default)]
    relationship_type: Vec<RawRule>,
    #[serde(default)]
    program: Vec<RawProgram>,
    #[serde(default)]
    transfer: RawTransfer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    system: Spanned<String>,
    code: Spanned<String>,
    display: Option<String>,
    #[serde(rename = "type")]
    relationship_type: Spanned<String>,
    related_person: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "type")]
    relationship_type: Spanned<String>,
    #[serde(default)]
    one_from_per_to: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    program: Spanned<String>,
    system: Spanned<String>,
    code: Spanned<String>,
    display: Option<String>,
    #[serde(default = "yes")]
    open_on_encounter: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfer {
    #[serde(default)]
    on_managing_organization: bool,
}

/// One `RelatedPerson.relationship` code and the relationship it stands for.
#[derive(Debug, Clone)]
pub struct Role {
    pub coding: Coding,
    pub type_id: i64,
    /// The RelatedPerson is the `from` end (the mother of the patient) rather than the `to` end.
    pub related_is_from: bool,
}

#[derive(Debug, Clone)]
pub struct ProgramType {
    pub program_id: i64,
    pub coding: Coding,
    pub open_on_encounter: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CareMapping {
    pub roles: Vec<Role>,
    /// Relationship types of which a person may stand at the `to` end once (one mother).
    pub one_from_per_to: Vec<i64>,
    pub programs: Vec<ProgramType>,
    pub transfer_on_managing_organization: bool,
}

impl CareMapping {
    pub fn role(&self, system: &str, code: &str) -> Option<&Role> {
        self.roles
            .iter()
            .find(|r| r.coding.system == system && r.coding.code == code)
    }

    /// The coding a relationship is rendered with when it was stored without one: the first role
    /// of its type and direction.
    pub fn role_of(&self, type_id: i64, related_is_from: bool) -> Option<&Role> {
        self.roles
            .iter()
            .find(|r| r.type_id == type_id && r.related_is_from == related_is_from)
    }

    pub fn program_for_type(&self, md: &Metadata, system: &str, code: &str) -> Option<i64> {
        if let Some(p) = self
            .programs
            .iter()
            .find(|p| p.coding.system == system && p.coding.code == code)
        {
            return Some(p.program_id);
        }
        (system == PROGRAM_SYSTEM)
            .then(|| md.program(code).map(|p| p.id))
            .flatten()
    }

    pub fn type_of_program(&self, md: &Metadata, program_id: i64) -> Option<Coding> {
        if let Some(p) = self.programs.iter().find(|p| p.program_id == program_id) {
            return Some(p.coding.clone());
        }
        md.program_by_id(program_id).map(|p| Coding {
            system: PROGRAM_SYSTEM.into(),
            code: p.code.clone().unwrap_or_else(|| p.uid.clone()),
            display: Some(p.name.clone()),
        })
    }

    pub fn opens_on_encounter(&self, program_id: i64) -> bool {
        self.programs
            .iter()
            .find(|p| p.program_id == program_id)
            .is_none_or(|p| p.open_on_encounter)
    }
}

pub fn load(src: &Source, md: &Metadata) -> Result<CareMapping, Vec<Problem>> {
    let raw: Raw = src.parse().map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let known_types = || {
        known_list(
            md.relationship_types
                .iter()
                .filter(|t| t.between_people())
                .map(|t| t.code.as_deref().unwrap_or(&t.uid)),
        )
    };
    let person_type = |name: &Spanned<String>, problems: &mut Vec<Problem>| match md
        .relationship_type(name.get_ref())
    {
        Some(t) if t.between_people() => Some(t.id),
        Some(_) => {
            problems.push(src.problem(
                name.span(),
                format!(
                    "relationship type `{}` does not join two tracked entities; RelatedPerson needs one that does (known: {})",
                    name.get_ref(),
                    known_types()
                ),
            ));
            None
        }
        None => {
            problems.push(src.problem(
                name.span(),
                format!(
                    "unknown relationship type `{}` (known: {})",
                    name.get_ref(),
                    known_types()
                ),
            ));
            None
        }
    };
    let mut roles: Vec<Role> = Vec::new();
    for r in &raw.relationship {
        let related_is_from = match r.related_person.get_ref().as_str() {
            "from" => true,
            "to" => false,
            other => {
                problems.push(src.problem(
                    r.related_person.span(),
                    format!("related_person: `{other}` is neither `from` nor `to` (which end of the relationship the RelatedPerson is)"),
                ));
                continue;
            }
        };
        let Some(type_id) = person_type(&r.relationship_type, &mut problems) else {
            continue;
        };
        if roles
            .iter()
            .any(|x| x.coding.system == *r.system.get_ref() && x.coding.code == *r.code.get_ref())
        {
            problems.push(src.problem(
                r.code.span(),
                format!(
                    "relationship {}|{} is already mapped; a role code maps to one relationship type",
                    r.system.get_ref(),
                    r.code.get_ref()
                ),
            ));
            continue;
        }
        roles.push(Role {
            coding: Coding {
                system: r.system.get_ref().clone(),
                code: r.code.get_ref().clone(),
                display: r.display.clone(),
            },
            type_id,
            related_is_from,
        });
    }
    let mut one_from_per_to = Vec::new();
    for r in &raw.relationship_type {
        if let Some(id) = person_type(&r.relationship_type, &mut problems) {
            if r.one_from_per_to {
                one_from_per_to.push(id);
            }
        }
    }
    let mut programs: Vec<ProgramType> = Vec::new();
    for p in &raw.program {
        let Some(program) = md.program(p.program.get_ref()) else {
            problems.push(src.problem(
                p.program.span(),
                format!(
                    "unknown program `{}` (known: {})",
                    p.program.get_ref(),
                    known_list(
                        md.programs
                            .iter()
                            .map(|p| p.code.as_deref().unwrap_or(&p.uid))
                    )
                ),
            ));
            continue;
        };
        if programs.iter().any(|x| x.program_id == program.id) {
            problems.push(src.problem(
                p.program.span(),
                format!(
                    "program `{}` is already mapped; EpisodeOfCare.type has one coding per program",
                    p.program.get_ref()
                ),
            ));
            continue;
        }
        if programs
            .iter()
            .any(|x| x.coding.system == *p.system.get_ref() && x.coding.code == *p.code.get_ref())
        {
            problems.push(src.problem(
                p.code.span(),
                format!(
                    "{}|{} already stands for another program",
                    p.system.get_ref(),
                    p.code.get_ref()
                ),
            ));
            continue;
        }
        programs.push(ProgramType {
            program_id: program.id,
            coding: Coding {
                system: p.system.get_ref().clone(),
                code: p.code.get_ref().clone(),
                display: p.display.clone(),
            },
            open_on_encounter: p.open_on_encounter,
        });
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(problems);
    }
    Ok(CareMapping {
        roles,
        one_from_per_to,
        programs,
        transfer_on_managing_organization: raw.transfer.on_managing_organization,
    })
}
