//! Terminology: the code systems the registry knows and the crosswalks between them, loaded from
//! `mappings/terminology.toml` and the CSV tables it names. Pure lookups, no I/O after loading.

pub mod fhir;

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use crate::mapping::{Problem, Source};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    system: Vec<RawSystem>,
    #[serde(default)]
    crosswalk: Vec<RawCrosswalk>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    uri: Spanned<String>,
    name: String,
    title: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrosswalk {
    name: Spanned<String>,
    title: Option<String>,
    file: Spanned<String>,
    columns: IndexMap<String, Spanned<RawColumn>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    code: String,
    display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSystemDef {
    pub uri: String,
    pub name: String,
    pub title: Option<String>,
}

/// A code in a system, with its display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coded {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// One concept of a crosswalk: its equivalent codes, in the crosswalk's column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concept {
    pub crosswalk: usize,
    pub codes: Vec<Coded>,
    /// Where it was defined (`diagnoses.csv:17`, a JSON file's name), for messages.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crosswalk {
    pub name: String,
    pub title: Option<String>,
    pub systems: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Terminology {
    pub systems: Vec<CodeSystemDef>,
    pub crosswalks: Vec<Crosswalk>,
    pub concepts: Vec<Concept>,
    index: HashMap<(String, String), usize>,
}

impl Terminology {
    pub fn system(&self, uri: &str) -> Option<&CodeSystemDef> {
        self.systems.iter().find(|s| s.uri == uri)
    }

    /// The concept a code belongs to, if any crosswalk holds it.
    pub fn concept(&self, system: &str, code: &str) -> Option<&Concept> {
        self.index
            .get(&(system.to_string(), code.to_string()))
            .map(|&i| &self.concepts[i])
    }

    /// The code of the same concept in `target`.
    pub fn translate(&self, system: &str, code: &str, target: &str) -> Option<&Coded> {
        self.concept(system, code)?
            .codes
            .iter()
            .find(|c| c.system == target)
    }

    pub fn display(&self, system: &str, code: &str) -> Option<&str> {
        self.concept(system, code)?
            .codes
            .iter()
            .find(|c| c.system == system && c.code == code)?
            .display
            .as_deref()
    }

    /// Every code of `system` the crosswalks know, with displays (for CodeSystem resources).
    pub fn codes_of(&self, system: &str) -> Vec<&Coded> {
        self.concepts
            .iter()
            .flat_map(|c| c.codes.iter().filter(|x| x.system == system))
            .collect()
    }
}

/// Loads `terminology.toml` from `src`; CSV tables are read relative to `dir`. Every referenced
/// file's bytes are passed to `hash` so the mapping version covers them.
pub fn load(
    src: &Source,
    dir: &Path,
    hash: &mut dyn FnMut(&str, &[u8]),
) -> Result<Terminology, Vec<Problem>> {
    let raw: Raw = src.parse().map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let mut t = Terminology::default();
    for s in &raw.system {
        let uri = s.uri.get_ref().clone();
        if !uri.contains(':') || uri.contains(char::is_whitespace) {
            problems.push(src.problem(s.uri.span(), format!("`{uri}` is not an absolute URI")));
        }
        if t.systems.iter().any(|x| x.uri == uri) {
            problems.push(src.problem(
                s.uri.span(),
                format!("code system `{uri}` is declared twice"),
            ));
        }
        t.systems.push(CodeSystemDef {
            uri,
            name: s.name.clone(),
            title: s.title.clone(),
        });
    }
    // Where each code was first seen, across every crosswalk: a code belongs to one concept.
    let mut first_line: HashMap<(String, String), String> = HashMap::new();
    for (ci, cw) in raw.crosswalk.iter().enumerate() {
        if raw.crosswalk[..ci]
            .iter()
            .any(|o| o.name.get_ref() == cw.name.get_ref())
        {
            problems.push(src.problem(
                cw.name.span(),
                format!("crosswalk `{}` is declared twice", cw.name.get_ref()),
            ));
        }
        let mut systems = Vec::new();
        for (system, col) in &cw.columns {
            if t.system(system).is_none() {
                problems.push(src.problem(
                    col.span(),
                    format!(
                        "crosswalk {}: `{system}` is not a declared [[system]]",
                        cw.name.get_ref()
                    ),
                ));
            }
            systems.push(system.clone());
        }
        let path = dir.join(cw.file.get_ref());
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                problems.push(src.problem(
                    cw.file.span(),
                    format!(
                        "crosswalk {}: cannot read `{}`: {e}",
                        cw.name.get_ref(),
                        cw.file.get_ref()
                    ),
                ));
                continue;
            }
        };
        hash(cw.file.get_ref(), &bytes);
        let file = path.display().to_string();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(bytes.as_slice());
        let headers = match reader.headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                problems.push(Problem {
                    file: file.clone(),
                    line: 1,
                    message: format!("not a CSV table: {e}"),
                });
                continue;
            }
        };
        let column = |name: &str| headers.iter().position(|h| h == name);
        let mut cols = Vec::new();
        for (system, col) in &cw.columns {
            let c = col.get_ref();
            match column(&c.code) {
                Some(ci_code) => cols.push((
                    system.clone(),
                    ci_code,
                    c.display.as_deref().and_then(column),
                )),
                None => problems.push(src.problem(
                    col.span(),
                    format!(
                        "crosswalk {}: `{}` has no column `{}` (columns: {})",
                        cw.name.get_ref(),
                        cw.file.get_ref(),
                        c.code,
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
            if let Some(d) = &c.display {
                if column(d).is_none() {
                    problems.push(src.problem(
                        col.span(),
                        format!(
                            "crosswalk {}: `{}` has no column `{d}`",
                            cw.name.get_ref(),
                            cw.file.get_ref()
                        ),
                    ));
                }
            }
        }
        for record in reader.records() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                    problems.push(Problem {
                        file: file.clone(),
                        line,
                        message: format!("unreadable row: {e}"),
                    });
                    continue;
                }
            };
            let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
            let mut codes = Vec::new();
            for (system, ci_code, ci_display) in &cols {
                let code = record.get(*ci_code).unwrap_or_default().trim();
                if code.is_empty() {
                    continue;
                }
                let key = (system.clone(), code.to_string());
                if let Some(first) = first_line.get(&key) {
                    let name = t.system(system).map(|s| s.name.as_str()).unwrap_or(system);
                    problems.push(Problem {
                        file: file.clone(),
                        line,
                        message: format!("{name} code `{code}` is already at {first}; a code belongs to one concept (mapped twice to different targets)"),
                    });
                    continue;
                }
                let short = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                first_line.insert(key, format!("{short}:{line}"));
                let display = ci_display
                    .and_then(|d| record.get(d))
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_string);
                codes.push(Coded {
                    system: system.clone(),
                    code: code.to_string(),
                    display,
                });
            }
            // A row with one code still names a known code (for $lookup and displays).
            if !codes.is_empty() {
                let i = t.concepts.len();
                for c in &codes {
                    t.index.insert((c.system.clone(), c.code.clone()), i);
                }
                t.concepts.push(Concept {
                    crosswalk: ci,
                    codes,
                    origin: format!("{file}:{line}"),
                });
            }
        }
        t.crosswalks.push(Crosswalk {
            name: cw.name.get_ref().clone(),
            title: cw.title.clone(),
            systems,
        });
    }
    if problems.is_empty() {
        Ok(t)
    } else {
        Err(problems)
    }
}

impl Terminology {
    /// A concept now also has a code in `system`: its crosswalk covers that system from now on
    /// (so the generated ConceptMaps and `$translate`'s sources include it).
    fn widen(&mut self, concept: usize, system: &str) {
        let cw = self.concepts[concept].crosswalk;
        if let Some(c) = self.crosswalks.get_mut(cw) {
            if !c.systems.iter().any(|x| x == system) {
                c.systems.push(system.to_string());
            }
        }
    }

    fn add_concept(&mut self, crosswalk: usize, codes: Vec<Coded>, origin: &str) {
        let i = self.concepts.len();
        for c in &codes {
            self.index.insert((c.system.clone(), c.code.clone()), i);
        }
        self.concepts.push(Concept {
            crosswalk,
            codes,
            origin: origin.to_string(),
        });
    }

    /// Adds a FHIR CodeSystem or ConceptMap (JSON placed in `mappings/`). Only `equivalent` and
    /// `equal` ConceptMap targets join concepts (they are what storage may translate through);
    /// the others are reported so nobody believes they are used.
    pub fn add_fhir(&mut self, file: &str, r: &serde_json::Value) -> Vec<Problem> {
        let mut problems = Vec::new();
        let problem = |message: String| Problem {
            file: file.to_string(),
            line: 0,
            message,
        };
        let s =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        match r["resourceType"].as_str() {
            Some("CodeSystem") => {
                let Some(url) = s(r, "url") else {
                    return vec![problem("CodeSystem.url is required: it is the system URI codes are sent with".into())];
                };
                if self.system(&url).is_none() {
                    self.systems.push(CodeSystemDef { uri: url.clone(), name: s(r, "name").unwrap_or_else(|| url.clone()), title: s(r, "title") });
                }
                let cw = self.crosswalks.len();
                self.crosswalks.push(Crosswalk { name: s(r, "name").unwrap_or_else(|| file.to_string()), title: s(r, "title"), systems: vec![url.clone()] });
                for (i, c) in r["concept"].as_array().into_iter().flatten().enumerate() {
                    let Some(code) = s(c, "code") else {
                        problems.push(problem(format!("CodeSystem.concept[{i}] has no code")));
                        continue;
                    };
                    if self.concept(&url, &code).is_none() {
                        self.add_concept(cw, vec![Coded { system: url.clone(), code, display: s(c, "display") }], file);
                    }
                }
            }
            Some("ConceptMap") => {
                let cw = self.crosswalks.len();
                let mut systems = Vec::new();
                for (gi, g) in r["group"].as_array().into_iter().flatten().enumerate() {
                    let (Some(source), Some(target)) = (s(g, "source"), s(g, "target")) else {
                        problems.push(problem(format!("ConceptMap.group[{gi}] needs source and target systems")));
                        continue;
                    };
                    for sys in [&source, &target] {
                        if self.system(sys).is_none() {
                            problems.push(problem(format!("ConceptMap.group[{gi}]: `{sys}` is not a [[system]] of terminology.toml nor a CodeSystem file")));
                        }
                        if !systems.contains(sys) {
                            systems.push(sys.clone());
                        }
                    }
                    for (ei, e) in g["element"].as_array().into_iter().flatten().enumerate() {
                        let Some(code) = s(e, "code") else { continue };
                        for (ti, t) in e["target"].as_array().into_iter().flatten().enumerate() {
                            let at = format!("ConceptMap.group[{gi}].element[{ei}].target[{ti}]");
                            let eq = s(t, "equivalence").unwrap_or_default();
                            if eq != "equivalent" && eq != "equal" {
                                problems.push(problem(format!("{at}: equivalence `{eq}` cannot be used to store codes; only equivalent/equal targets are (remove it or map to an equivalent code)")));
                                continue;
                            }
                            let Some(tcode) = s(t, "code") else { continue };
                            let src = self.index.get(&(source.clone(), code.clone())).copied();
                            let tgt = self.index.get(&(target.clone(), tcode.clone())).copied();
                            match (src, tgt) {
                                (Some(a), Some(b)) if a == b => {}
                                (Some(a), Some(b)) => {
                                    // A code a CodeSystem file merely declared joins the mapped concept.
                                    let (lone, into) = if self.concepts[a].codes.len() == 1 {
                                        (a, b)
                                    } else if self.concepts[b].codes.len() == 1 {
                                        (b, a)
                                    } else {
                                        problems.push(problem(format!("{at}: {source}|{code} and {target}|{tcode} already belong to different concepts")));
                                        continue;
                                    };
                                    let moved = std::mem::take(&mut self.concepts[lone].codes);
                                    for c in moved {
                                        if self.concepts[into].codes.iter().any(|x| x.system == c.system) {
                                            problems.push(problem(format!("{at}: {}|{} would give a concept two {} codes", c.system, c.code, c.system)));
                                            continue;
                                        }
                                        self.index.insert((c.system.clone(), c.code.clone()), into);
                                        let system = c.system.clone();
                                        self.concepts[into].codes.push(c);
                                        self.widen(into, &system);
                                    }
                                }
                                (Some(i), None) => {
                                    if self.concepts[i].codes.iter().any(|c| c.system == target) {
                                        problems.push(problem(format!("{at}: {source}|{code} is already mapped to another {target} code")));
                                    } else {
                                        self.concepts[i].codes.push(Coded { system: target.clone(), code: tcode.clone(), display: s(t, "display") });
                                        self.index.insert((target.clone(), tcode), i);
                                        self.widen(i, &target);
                                    }
                                }
                                (None, Some(i)) => {
                                    if self.concepts[i].codes.iter().any(|c| c.system == source) {
                                        problems.push(problem(format!("{at}: {target}|{tcode} is already mapped to another {source} code")));
                                    } else {
                                        self.concepts[i].codes.push(Coded { system: source.clone(), code: code.clone(), display: s(e, "display") });
                                        self.index.insert((source.clone(), code.clone()), i);
                                        self.widen(i, &source);
                                    }
                                }
                                (None, None) => self.add_concept(
                                    cw,
                                    vec![Coded { system: source.clone(), code: code.clone(), display: s(e, "display") }, Coded { system: target.clone(), code: tcode, display: s(t, "display") }],
                                    file,
                                ),
                            }
                        }
                    }
                }
                self.crosswalks.push(Crosswalk { name: s(r, "name").unwrap_or_else(|| file.to_string()), title: s(r, "title"), systems });
            }
            other => problems.push(problem(format!("a JSON file in the mappings directory must be a FHIR CodeSystem or ConceptMap, not {}", other.unwrap_or("something else")))),
        }
        problems
    }
}
