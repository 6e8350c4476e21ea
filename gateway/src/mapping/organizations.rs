//! `organizations.toml`: organisations of other systems (EMR exports) → org units.

use serde::Deserialize;
use toml::Spanned;

use super::{known_list, Problem, Source};
use crate::tracker::metadata::Metadata;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    organization: Vec<RawOrg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrg {
    identifier: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    org_unit: Spanned<String>,
}

#[derive(Debug, Clone, Default)]
pub struct OrganizationMapping {
    /// (system, value) → org unit id
    pub by_identifier: Vec<(String, String, i64)>,
    /// lower-case name → org unit id
    pub by_name: Vec<(String, i64)>,
}

impl OrganizationMapping {
    /// The org unit an external Organization resource stands for, if an entry matches it.
    pub fn resolve(&self, organization: &serde_json::Value) -> Option<i64> {
        for id in organization
            .get("identifier")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let (sys, val) = (
                id["system"].as_str().unwrap_or_default(),
                id["value"].as_str().unwrap_or_default(),
            );
            if let Some((_, _, ou)) = self
                .by_identifier
                .iter()
                .find(|(s, v, _)| s == sys && v == val)
            {
                return Some(*ou);
            }
        }
        let name = organization
            .get("name")
            .and_then(|n| n.as_str())?
            .to_lowercase();
        self.by_name
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, ou)| *ou)
    }
}

pub fn load(src: &Source, md: &Metadata) -> Result<OrganizationMapping, Vec<Problem>> {
    let raw: Raw = src.parse().map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let mut m = OrganizationMapping::default();
    for o in &raw.organization {
        let Some(ou) = md.org_unit(o.org_unit.get_ref()) else {
            let known = known_list(md.org_units.iter().filter_map(|o| o.code.as_deref()));
            problems.push(src.problem(
                o.org_unit.span(),
                format!(
                    "unknown org unit `{}` (known: {known})",
                    o.org_unit.get_ref()
                ),
            ));
            continue;
        };
        match (&o.identifier, &o.name) {
            (Some(id), _) => match id.get_ref().split_once('|') {
                Some((s, v)) if !s.is_empty() && !v.is_empty() => {
                    m.by_identifier.push((s.to_string(), v.to_string(), ou.id))
                }
                _ => problems.push(src.problem(
                    id.span(),
                    format!("identifier `{}` is not system|value", id.get_ref()),
                )),
            },
            (None, Some(n)) => m.by_name.push((n.get_ref().to_lowercase(), ou.id)),
            (None, None) => problems.push(src.problem(
                o.org_unit.span(),
                "an [[organization]] entry needs an identifier or a name to match",
            )),
        }
    }
    if problems.is_empty() {
        Ok(m)
    } else {
        Err(problems)
    }
}
