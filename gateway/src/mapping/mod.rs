//! Mapping files: TOML files in `mappings/` that say how FHIR elements map to tracker metadata.
//! They are edited by people, so every problem is reported as `file:line: what is wrong`, all at
//! once, and a set with any problem is refused as a whole.

pub mod care;
pub mod encounter;
pub mod golden;
pub mod matching;
pub mod observation;
pub mod organizations;
pub mod patient;
pub mod targets;

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use encounter::EncounterMapping;
pub use observation::ObservationMapping;
pub use patient::PatientMapping;

use crate::tracker::metadata::Metadata;

/// One problem in one file, at one line (1-based; 0 when the problem concerns the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The text of one mapping file with a byte-offset → line lookup for spans.
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn line_of(&self, offset: usize) -> usize {
        self.text
            .get(..offset.min(self.text.len()))
            .map(|t| t.matches('\n').count() + 1)
            .unwrap_or(1)
    }

    pub fn problem(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Problem {
        Problem {
            file: self.name.clone(),
            line: self.line_of(span.start),
            message: message.into(),
        }
    }

    /// Parses the TOML, turning a syntax or shape error into a positioned problem.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Problem> {
        toml::from_str(&self.text).map_err(|e| Problem {
            file: self.name.clone(),
            line: e.span().map(|s| self.line_of(s.start)).unwrap_or(0),
            message: e.message().trim().to_string(),
        })
    }
}

/// Every active mapping, checked against the metadata. `version` identifies the exact file set.
#[derive(Debug, Clone)]
pub struct MappingSet {
    pub version: String,
    pub patient: PatientMapping,
    pub encounter: EncounterMapping,
    pub observation: ObservationMapping,
    pub terminology: crate::terminology::Terminology,
    pub organizations: organizations::OrganizationMapping,
    /// `matching.toml`, when present: the rules of `Patient/$match`.
    pub matching: Option<matching::MatchingRules>,
    /// `care.toml`: RelatedPerson roles, EpisodeOfCare types, transfer on PUT (defaults when absent).
    pub care: care::CareMapping,
    /// `targets/*.toml`: where changes are pushed (enabled or not).
    pub targets: Vec<targets::Target>,
}

const KNOWN_FILES: &[&str] = &[
    "patient.toml",
    "encounter.toml",
    "observation.toml",
    "terminology.toml",
    "organizations.toml",
    "matching.toml",
    "care.toml",
];

impl MappingSet {
    /// Reads and checks every mapping file in `dir`. All problems are returned together.
    pub fn load(dir: &Path, md: &Metadata) -> Result<MappingSet, Problems> {
        let dir_problem = |message: String| {
            Problems(vec![Problem {
                file: dir.display().to_string(),
                line: 0,
                message,
            }])
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| dir_problem(format!("cannot read the mappings directory: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();

        let mut hasher = Sha256::new();
        let mut problems = Vec::new();
        let mut patient = None;
        let mut observation_src: Option<Source> = None;
        let mut fhir_files: Vec<Source> = Vec::new();
        let mut encounter = None;
        let mut observation = None;
        let mut terminology = None;
        // Required files that exist (their own problems are reported; "missing" is for absence).
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut orgs = organizations::OrganizationMapping::default();
        let mut matching = None;
        let mut care = care::CareMapping::default();
        for path in &files {
            let name = path.display().to_string();
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            seen.insert(file_name.to_string());
            // Tables (CSV) are read through the file that names them.
            if file_name.starts_with('.')
                || file_name.ends_with(".md")
                || file_name.ends_with(".csv")
            {
                continue;
            }
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(Problem {
                        file: name,
                        line: 0,
                        message: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            hasher.update(file_name.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            let src = Source { name, text };
            if file_name.ends_with(".json") {
                fhir_files.push(src);
                continue;
            }
            match file_name {
                "patient.toml" => match patient::load(&src, md) {
                    Ok(m) => patient = Some(m),
                    Err(mut p) => problems.append(&mut p),
                },
                "encounter.toml" => match encounter::load(&src, md) {
                    Ok(m) => encounter = Some(m),
                    Err(mut p) => problems.append(&mut p),
                },
                "observation.toml" => observation_src = Some(src),
                "matching.toml" => match matching::load(&src) {
                    Ok(m) => matching = Some(m),
                    Err(mut p) => problems.append(&mut p),
                },
                "care.toml" => match care::load(&src, md) {
                    Ok(m) => care = m,
                    Err(mut p) => problems.append(&mut p),
                },
                "organizations.toml" => match organizations::load(&src, md) {
                    Ok(m) => orgs = m,
                    Err(mut p) => problems.append(&mut p),
                },
                "terminology.toml" => {
                    let mut h = |name: &str, bytes: &[u8]| {
                        hasher.update(name.as_bytes());
                        hasher.update([0]);
                        hasher.update(bytes);
                        hasher.update([0]);
                    };
                    match crate::terminology::load(&src, dir, &mut h) {
                        Ok(t) => terminology = Some(t),
                        Err(mut p) => problems.append(&mut p),
                    }
                }
                _ => problems.push(Problem {
                    file: src.name.clone(),
                    line: 0,
                    message: format!(
                        "not a known mapping file (known: {})",
                        KNOWN_FILES.join(", ")
                    ),
                }),
            }
        }
        // FHIR CodeSystem / ConceptMap files extend the terminology; CodeSystems first, so that
        // the maps can name their systems.
        let mut parsed = Vec::new();
        for src in fhir_files {
            match kiunga_codec::parse(src.text.as_bytes(), kiunga_codec::Format::Json) {
                Err(e) => problems.push(Problem {
                    file: src.name.clone(),
                    line: 0,
                    message: format!("not a valid FHIR resource: {}", e.message),
                }),
                Ok(r) => parsed.push((src.name, r)),
            }
        }
        parsed.sort_by_key(|(_, r)| r["resourceType"] != "CodeSystem");
        if let Some(t) = terminology.as_mut() {
            for (name, r) in &parsed {
                problems.append(&mut t.add_fhir(name, r));
            }
        }
        // Observations are checked after the terminology they may rely on.
        if let Some(src) = observation_src {
            match observation::load(&src, md, terminology.as_ref()) {
                Ok(m) => observation = Some(m),
                Err(mut p) => problems.append(&mut p),
            }
        }
        for file in [
            "patient.toml",
            "encounter.toml",
            "observation.toml",
            "terminology.toml",
        ] {
            if !seen.contains(file) {
                problems.push(Problem {
                    file: dir.join(file).display().to_string(),
                    line: 0,
                    message: "missing: this mapping file is required".into(),
                });
            }
        }
        match (
            patient,
            encounter,
            observation,
            terminology,
            problems.is_empty(),
        ) {
            (Some(patient), Some(encounter), Some(observation), Some(terminology), true) => {
                let systems: Vec<&str> = patient
                    .identifiers
                    .iter()
                    .map(|i| i.system.as_str())
                    .collect();
                let codes: Vec<(&str, &str)> = observation
                    .codes
                    .iter()
                    .map(|c| (c.coding.system.as_str(), c.coding.code.as_str()))
                    .collect();
                let targets = targets::load_dir(&dir.join("targets"), md, &systems, &codes)
                    .map_err(Problems)?;
                let version = hex::encode(&hasher.finalize()[..6]);
                Ok(MappingSet {
                    version,
                    patient,
                    encounter,
                    observation,
                    terminology,
                    organizations: orgs,
                    matching,
                    care,
                    targets,
                })
            }
            _ => Err(Problems(problems)),
        }
    }
}

/// Suggests the closest known names for an unknown one, to keep error messages actionable.
pub fn known_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = names.collect();
    v.sort_unstable();
    v.dedup();
    if v.len() > 12 {
        format!("{}, … ({} in all)", v[..12].join(", "), v.len())
    } else {
        v.join(", ")
    }
}
