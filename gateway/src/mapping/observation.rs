//! `observation.toml`: how an Observation maps to a data value (data element, stage, unit, codes).

use serde::Deserialize;
use toml::Spanned;

use super::encounter::Coding;
use super::{known_list, Problem, Source};
use crate::tracker::metadata::Metadata;
use crate::tracker::value_type::ValueType;
use crate::translate::units;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    default_stage: Spanned<String>,
    #[serde(default)]
    code: Vec<RawCode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCode {
    system: Spanned<String>,
    code: Spanned<String>,
    display: Option<String>,
    data_element: Spanned<String>,
    category: Option<Spanned<String>>,
    stage: Option<Spanned<String>>,
    value_system: Option<Spanned<String>>,
    #[serde(default)]
    free_codes: bool,
}

#[derive(Debug, Clone)]
pub struct CodeMap {
    pub coding: Coding,
    pub data_element_id: i64,
    pub category: Option<String>,
    pub stage_id: i64,
    /// For coded data elements: the code system of the option codes.
    pub value_system: Option<String>,
    /// The data element (text, no option set) takes any code of `value_system`.
    pub free_codes: bool,
}

#[derive(Debug, Clone)]
pub struct ObservationMapping {
    pub codes: Vec<CodeMap>,
}

impl ObservationMapping {
    pub fn for_code(&self, system: &str, code: &str) -> Option<&CodeMap> {
        self.codes
            .iter()
            .find(|c| c.coding.system == system && c.coding.code == code)
    }

    /// The entry a data element is rendered with (its first).
    pub fn for_data_element(&self, data_element_id: i64) -> Option<&CodeMap> {
        self.codes
            .iter()
            .find(|c| c.data_element_id == data_element_id)
    }
}

const CATEGORIES: &[&str] = &[
    "social-history",
    "vital-signs",
    "imaging",
    "laboratory",
    "procedure",
    "survey",
    "exam",
    "therapy",
    "activity",
];

pub fn load(
    src: &Source,
    md: &Metadata,
    terminology: Option<&crate::terminology::Terminology>,
) -> Result<ObservationMapping, Vec<Problem>> {
    let raw: Raw = src.parse().map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let known_stages = || known_list(md.stages.iter().filter_map(|s| s.code.as_deref()));
    let default_stage = md.stage(raw.default_stage.get_ref()).map(|s| s.id);
    if default_stage.is_none() {
        problems.push(src.problem(
            raw.default_stage.span(),
            format!(
                "default_stage: unknown program stage `{}` (known: {})",
                raw.default_stage.get_ref(),
                known_stages()
            ),
        ));
    }
    let mut codes: Vec<CodeMap> = Vec::new();
    for c in &raw.code {
        let coding = Coding {
            system: c.system.get_ref().clone(),
            code: c.code.get_ref().clone(),
            display: c.display.clone(),
        };
        if codes
            .iter()
            .any(|o| o.coding.system == coding.system && o.coding.code == coding.code)
        {
            problems.push(src.problem(
                c.code.span(),
                format!("code {}|{} is mapped twice", coding.system, coding.code),
            ));
            continue;
        }
        let Some(de) = md.data_element(c.data_element.get_ref()) else {
            let known = known_list(md.data_elements.iter().filter_map(|d| d.code.as_deref()));
            problems.push(src.problem(
                c.data_element.span(),
                format!(
                    "unknown data element `{}` (known: {known})",
                    c.data_element.get_ref()
                ),
            ));
            continue;
        };
        let stage_id = match &c.stage {
            Some(s) => match md.stage(s.get_ref()) {
                Some(st) => Some(st.id),
                None => {
                    problems.push(src.problem(
                        s.span(),
                        format!(
                            "unknown program stage `{}` (known: {})",
                            s.get_ref(),
                            known_stages()
                        ),
                    ));
                    None
                }
            },
            None => default_stage,
        };
        if let Some(sid) = stage_id {
            if let Some(st) = md.stages.iter().find(|s| s.id == sid) {
                if !st.data_element_ids.contains(&de.id) {
                    let span = c
                        .stage
                        .as_ref()
                        .map(|s| s.span())
                        .unwrap_or(c.data_element.span());
                    problems.push(src.problem(span, format!("data element `{}` is not in stage {}; Observations without an encounter could not be stored", c.data_element.get_ref(), st.name)));
                }
            }
        }
        if let Some(cat) = &c.category {
            if !CATEGORIES.contains(&cat.get_ref().as_str()) {
                problems.push(src.problem(
                    cat.span(),
                    format!(
                        "category `{}` is not an observation-category code ({})",
                        cat.get_ref(),
                        CATEGORIES.join(", ")
                    ),
                ));
            }
        }
        if de.option_set_id.is_some() && c.value_system.is_none() {
            problems.push(src.problem(c.data_element.span(), format!("data element `{}` holds options: say which code system its option codes are in with value_system", c.data_element.get_ref())));
        }
        if let Some(unit) = &de.unit {
            if de.value_type.is_numeric() && !units::is_known(unit) {
                problems.push(src.problem(
                    c.data_element.span(),
                    format!(
                        "data element `{}` has unit `{unit}`, which has no UCUM conversion here",
                        c.data_element.get_ref()
                    ),
                ));
            }
        }
        if let (Some(vs), Some(t)) = (&c.value_system, terminology) {
            if t.system(vs.get_ref()).is_none() {
                problems.push(src.problem(
                    vs.span(),
                    format!(
                        "value_system `{}` is not a [[system]] of terminology.toml",
                        vs.get_ref()
                    ),
                ));
            }
        }
        // Every code a crosswalk gives in the option set's system must be an option of it, or
        // storing that concept would fail at run time.
        if let (Some(vs), Some(t), Some(set)) = (
            &c.value_system,
            terminology,
            de.option_set_id.and_then(|id| md.option_set_by_id(id)),
        ) {
            for concept in &t.concepts {
                for code in concept.codes.iter().filter(|x| &x.system == vs.get_ref()) {
                    if set.option(&code.code).is_none() {
                        let (file, line) = match concept.origin.rsplit_once(':') {
                            Some((f, l)) if l.chars().all(|ch| ch.is_ascii_digit()) => {
                                (f.to_string(), l.parse().unwrap_or(0))
                            }
                            _ => (concept.origin.clone(), 0),
                        };
                        problems.push(Problem {
                            file,
                            line,
                            message: format!("{} code `{}` is not an option of option set {} (data element {}); add the option to the metadata or fix the table", t.system(vs.get_ref()).map(|s| s.name.as_str()).unwrap_or(vs.get_ref()), code.code, set.label(), c.data_element.get_ref()),
                        });
                    }
                }
            }
        }
        if c.free_codes
            && (de.option_set_id.is_some()
                || c.value_system.is_none()
                || de.value_type != ValueType::Text)
        {
            problems.push(src.problem(
                c.data_element.span(),
                format!("free_codes needs a TEXT data element without option set and a value_system (`{}` is not one)", c.data_element.get_ref()),
            ));
        }
        if de.option_set_id.is_none()
            && c.value_system.is_some()
            && de.value_type != ValueType::Text
        {
            problems.push(src.problem(
                c.data_element.span(),
                "value_system is only for data elements with an option set".to_string(),
            ));
        }
        codes.push(CodeMap {
            coding,
            data_element_id: de.id,
            category: c.category.as_ref().map(|c| c.get_ref().clone()),
            stage_id: stage_id.unwrap_or_default(),
            value_system: c.value_system.as_ref().map(|v| v.get_ref().clone()),
            free_codes: c.free_codes,
        });
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(problems);
    }
    Ok(ObservationMapping { codes })
}
