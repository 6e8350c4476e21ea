//! `mappings/targets/*.toml`: the systems changes are pushed to (docs/outbound.md).
//!
//! One file per target, checked like every mapping file (`file:line` problems, all at once). A
//! file names its kind, where the target is and which environment variables hold its secrets
//! (never a secret itself), what triggers a push, and the target's own codes for our org units,
//! identifier systems, stages and concepts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{known_list, Problem, Source};
use crate::tracker::metadata::Metadata;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    kind: Spanned<String>,
    /// `opencrvs` only: legacy-notification | events-v1.9 | events-v2.0, or the variable that
    /// holds it.
    mode: Option<Spanned<String>>,
    mode_env: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    auth_url: Option<Spanned<String>>,
    auth_url_env: Option<Spanned<String>>,
    user_env: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    /// fhir-r4: a bearer token, by the variable that holds it.
    token_env: Option<Spanned<String>>,
    /// fhir-r4: the identifier system our record ids are sent under (conditional create and
    /// look-up key on the target).
    record_system: Option<Spanned<String>>,
    /// fhir-r4: org unit → the target's Organization reference.
    #[serde(default)]
    organization: Vec<RawOrganization>,
    client_id_env: Option<Spanned<String>>,
    client_secret_env: Option<Spanned<String>>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_timeout")]
    timeout_seconds: Spanned<f64>,
    #[serde(default = "default_concurrency")]
    concurrency: Spanned<i64>,
    #[serde(default)]
    ignore_changes_from: Vec<Spanned<String>>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    trigger: RawTrigger,
    default_location: Option<Spanned<String>>,
    #[serde(default)]
    location: Vec<RawLocation>,
    #[serde(default)]
    identifier: Vec<RawIdentifier>,
    #[serde(default)]
    encounter_type: Vec<RawEncounterType>,
    #[serde(default)]
    concept: Vec<RawConcept>,
    /// opencrvs: the ISO 3166 alpha-3 code of the country (domestic addresses).
    country: Option<Spanned<String>>,
    #[serde(default)]
    facility: Vec<RawFacility>,
    birth: Option<RawBirth>,
    death: Option<RawDeath>,
    #[serde(default)]
    fields: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFacility {
    org_unit: Spanned<String>,
    /// OpenCRVS ids: the health facility, the CRVS office that registers its events, and the
    /// admin areas the facility lies in.
    facility: String,
    office: String,
    district: String,
    state: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBirth {
    relationship_type: Spanned<String>,
    stages: Vec<Spanned<String>>,
    weight: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeath {
    attribute: Spanned<String>,
    stages: Vec<Spanned<String>>,
    cause: Vec<Spanned<String>>,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

fn default_concurrency() -> Spanned<i64> {
    Spanned::new(0..0, 4)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default = "default_initial_ms")]
    initial_ms: u64,
    #[serde(default = "default_max_seconds")]
    max_seconds: u64,
    #[serde(default = "default_breaker_failures")]
    breaker_failures: u32,
    #[serde(default = "default_breaker_seconds")]
    breaker_seconds: u64,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            initial_ms: default_initial_ms(),
            max_seconds: default_max_seconds(),
            breaker_failures: default_breaker_failures(),
            breaker_seconds: default_breaker_seconds(),
        }
    }
}

fn default_initial_ms() -> u64 {
    1_000
}
fn default_max_seconds() -> u64 {
    600
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_seconds() -> u64 {
    30
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    #[serde(default)]
    resources: Vec<Spanned<String>>,
    /// opencrvs: birth and/or death notifications.
    #[serde(default)]
    events: Vec<Spanned<String>>,
    #[serde(default)]
    programs: Vec<Spanned<String>>,
    #[serde(default)]
    stages: Vec<Spanned<String>>,
    org_unit: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    org_unit: Spanned<String>,
    uuid: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganization {
    org_unit: Spanned<String>,
    /// A literal reference on the target, `Organization/<id>`.
    reference: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentifier {
    system: Spanned<String>,
    /// OpenMRS ≥ 2.0 matches the identifier-system URL registered for the type.
    target_system: Option<String>,
    /// Without a system, OpenMRS matches `type.text` against the identifier type's name.
    type_name: Option<String>,
    #[serde(default)]
    official: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncounterType {
    stage: Spanned<String>,
    uuid: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcept {
    system: Spanned<String>,
    code: Spanned<String>,
    target_system: Option<String>,
    target_code: Spanned<String>,
    /// The unit of the target's concept (UCUM); values are converted to it.
    unit: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenMrsFhir2,
    OpenCrvs,
    FhirR4,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OpenMrsFhir2 => "openmrs-fhir2",
            Kind::OpenCrvs => "opencrvs",
            Kind::FhirR4 => "fhir-r4",
        }
    }
}

/// Where a value comes from: written in the file (URLs, never secrets) or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Literal(String),
    Env(String),
}

impl Setting {
    /// The value now, or the name of the variable that is not set.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Setting::Literal(v) => Ok(v.clone()),
            Setting::Env(name) => std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| name.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub initial_ms: u64,
    pub max_seconds: u64,
    pub breaker_failures: u32,
    pub breaker_seconds: u64,
}

/// OpenCRVS's three ways in (`../shared/contracts/opencrvs.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrvsMode {
    Legacy,
    EventsV19,
    EventsV20,
}

impl CrvsMode {
    pub fn parse(s: &str) -> Option<CrvsMode> {
        match s {
            "legacy-notification" => Some(CrvsMode::Legacy),
            "events-v1.9" => Some(CrvsMode::EventsV19),
            "events-v2.0" => Some(CrvsMode::EventsV20),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Facility {
    pub facility: String,
    pub office: String,
    pub district: String,
    pub state: String,
}

/// What an opencrvs target needs beyond the common settings.
#[derive(Debug, Clone)]
pub struct Crvs {
    /// The mode, or the variable that holds it (resolved at delivery).
    pub mode: Setting,
    pub auth_url: Setting,
    pub client_id: Setting,
    pub client_secret: Setting,
    pub country: String,
    /// Org unit id → its facility (the nearest mapped ancestor applies).
    pub facilities: BTreeMap<i64, Facility>,
    /// Birth: the mother relationship, the delivery stages, the birth-weight data elements.
    pub birth: Option<(i64, Vec<i64>, Vec<i64>)>,
    /// Death: the attribute that marks it, the death stages, the cause-of-death data elements.
    pub death: Option<(i64, Vec<i64>, Vec<i64>)>,
    /// Our item (`child_name`…) → the country's declaration field id (events API).
    pub fields: BTreeMap<String, String>,
}

impl Crvs {
    pub fn facility_for(&self, md: &Metadata, org_unit_id: i64) -> Option<&Facility> {
        let mut at = md.org_unit_by_id(org_unit_id);
        while let Some(ou) = at {
            if let Some(f) = self.facilities.get(&ou.id) {
                return Some(f);
            }
            at = ou.parent_id.and_then(|p| md.org_unit_by_id(p));
        }
        None
    }

    pub fn field(&self, ours: &str) -> Option<&str> {
        self.fields.get(ours).map(String::as_str)
    }
}

/// The declaration items a notification can fill, with Farajaland's field ids as defaults.
pub const FIELDS: &[(&str, &str)] = &[
    ("child_name", "child.name"),
    ("child_dob", "child.dob"),
    ("child_gender", "child.gender"),
    ("place_of_birth", "child.placeOfBirth"),
    ("birth_location", "child.birthLocation"),
    ("birth_weight", "child.weightAtBirth"),
    ("mother_name", "mother.name"),
    ("mother_dob", "mother.dob"),
    ("mother_nid", "mother.nid"),
    ("informant", "informant.relation"),
    ("deceased_name", "deceased.name"),
    ("deceased_dob", "deceased.dob"),
    ("deceased_gender", "deceased.gender"),
    ("deceased_nid", "deceased.nid"),
    ("death_date", "eventDetails.date"),
    ("place_of_death", "eventDetails.placeOfDeath"),
    ("death_location", "eventDetails.deathLocation"),
    ("cause_established", "eventDetails.causeOfDeathEstablished"),
    ("cause_of_death", "eventDetails.causeOfDeath"),
];

#[derive(Debug, Clone, Default)]
pub struct Trigger {
    /// Patient, Encounter, Observation (openmrs-fhir2), or birth, death (opencrvs).
    pub resources: Vec<String>,
    /// Stages whose events (and their values) are pushed; empty: every stage.
    pub stage_ids: Vec<i64>,
    /// The org-unit subtree (materialised path) records must lie in; None: everywhere.
    pub org_path: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IdentifierOut {
    pub system: String,
    pub target_system: Option<String>,
    pub type_name: Option<String>,
    pub official: bool,
}

#[derive(Debug, Clone)]
pub struct ConceptOut {
    pub system: String,
    pub code: String,
    pub target_system: Option<String>,
    pub target_code: String,
    pub unit: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Target {
    /// The file's stem: `openmrs` for `targets/openmrs.toml`.
    pub name: String,
    pub file: String,
    pub kind: Kind,
    pub url: Setting,
    pub user: Option<Setting>,
    pub password: Option<Setting>,
    /// A bearer token (fhir-r4).
    pub token: Option<Setting>,
    /// fhir-r4: the identifier system of our record ids on the target.
    pub record_system: Option<String>,
    /// fhir-r4: org unit id → the target's `Organization/<id>`.
    pub organizations: BTreeMap<i64, String>,
    pub timeout: std::time::Duration,
    pub concurrency: usize,
    /// Change-log actors (`client:<id>`) whose changes came from this target: not sent back.
    pub skip_actors: Vec<String>,
    pub retry: Retry,
    pub trigger: Trigger,
    /// Org unit id → the target's location id (the nearest mapped ancestor applies).
    pub locations: BTreeMap<i64, String>,
    pub default_location: Option<String>,
    pub identifiers: Vec<IdentifierOut>,
    /// Stage id → the target's encounter type.
    pub encounter_types: BTreeMap<i64, String>,
    pub concepts: Vec<ConceptOut>,
    /// opencrvs only.
    pub crvs: Option<Crvs>,
    /// Off when the file says so, or when its URL comes from a variable that is not set (the
    /// demo targets are switched on by setting it).
    pub enabled: bool,
}

impl Target {
    /// The target's location for an org unit: its own, else its nearest mapped ancestor's,
    /// else the default.
    pub fn location_for(&self, md: &Metadata, org_unit_id: i64) -> Option<&str> {
        let mut at = md.org_unit_by_id(org_unit_id);
        while let Some(ou) = at {
            if let Some(l) = self.locations.get(&ou.id) {
                return Some(l);
            }
            at = ou.parent_id.and_then(|p| md.org_unit_by_id(p));
        }
        self.default_location.as_deref()
    }

    pub fn concept(&self, system: &str, code: &str) -> Option<&ConceptOut> {
        self.concepts
            .iter()
            .find(|c| c.system == system && c.code == code)
    }

    pub fn identifier(&self, system: &str) -> Option<&IdentifierOut> {
        self.identifiers.iter().find(|i| i.system == system)
    }
}

const RESOURCES: &[&str] = &["Patient", "Encounter", "Observation"];

/// Reads every `*.toml` in `dir` (absent: no targets). `identifier_systems` and `codes` are what
/// the other mapping files declare, so that a target cannot name what the registry never holds.
pub fn load_dir(
    dir: &Path,
    md: &Metadata,
    identifier_systems: &[&str],
    codes: &[(&str, &str)],
) -> Result<Vec<Target>, Vec<Problem>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
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
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let src = Source { name, text };
        match load(&src, &stem, md, identifier_systems, codes) {
            Ok(t) => targets.push(t),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(targets)
    } else {
        Err(problems)
    }
}

fn env_name(src: &Source, v: &Spanned<String>, problems: &mut Vec<Problem>) -> String {
    let name = v.get_ref();
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        problems.push(src.problem(
            v.span(),
            format!("`{name}` is not an environment variable name (A-Z, 0-9 and _): secrets are given by the variable that holds them, never written here"),
        ));
    }
    name.clone()
}

pub fn load(
    src: &Source,
    stem: &str,
    md: &Metadata,
    identifier_systems: &[&str],
    codes: &[(&str, &str)],
) -> Result<Target, Vec<Problem>> {
    let raw: Raw = src.parse().map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let kind = match raw.kind.get_ref().as_str() {
        "openmrs-fhir2" => Kind::OpenMrsFhir2,
        "opencrvs" => Kind::OpenCrvs,
        "fhir-r4" => Kind::FhirR4,
        other => {
            problems.push(src.problem(
                raw.kind.span(),
                format!("unknown kind `{other}` (known: openmrs-fhir2, opencrvs, fhir-r4)"),
            ));
            Kind::FhirR4
        }
    };
    let record_system = fhir_r4_keys(src, &raw, kind, &mut problems);
    for (field, v) in [("mode", &raw.mode), ("mode_env", &raw.mode_env)] {
        if let (Some(v), false) = (v, kind == Kind::OpenCrvs) {
            problems.push(src.problem(
                v.span(),
                format!("{field}: only an opencrvs target has a mode"),
            ));
        }
    }
    let url = match (&raw.url, &raw.url_env) {
        (Some(u), None) => {
            if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) {
                problems.push(src.problem(
                    u.span(),
                    format!("url `{}` is not an http(s) URL", u.get_ref()),
                ));
            }
            Setting::Literal(u.get_ref().trim_end_matches('/').to_string())
        }
        (None, Some(e)) => Setting::Env(env_name(src, e, &mut problems)),
        (Some(u), Some(_)) => {
            problems.push(src.problem(u.span(), "give `url` or `url_env`, not both"));
            Setting::Literal(String::new())
        }
        (None, None) => {
            problems.push(src.problem(
                0..0,
                "missing `url` (or `url_env`, the variable that holds it)",
            ));
            Setting::Literal(String::new())
        }
    };
    let mut secret = |v: &Option<Spanned<String>>| {
        v.as_ref()
            .map(|v| Setting::Env(env_name(src, v, &mut problems)))
    };
    let user = secret(&raw.user_env);
    let password = secret(&raw.password_env);
    let token = secret(&raw.token_env);
    if user.is_some() != password.is_some() {
        problems.push(src.problem(
            0..0,
            "give both `user_env` and `password_env` (HTTP Basic), or neither",
        ));
    }
    if let (Some(t), true) = (&raw.token_env, user.is_some()) {
        problems.push(src.problem(
            t.span(),
            "give `token_env` (a bearer token) or `user_env`/`password_env` (HTTP Basic), not both",
        ));
    }
    if let Some(v) = raw
        .auth_url_env
        .as_ref()
        .or(raw.client_id_env.as_ref())
        .or(raw.client_secret_env.as_ref())
    {
        if kind != Kind::OpenCrvs {
            problems.push(src.problem(
                v.span(),
                "auth_url_env, client_id_env and client_secret_env belong to an opencrvs target",
            ));
        }
    }
    let crvs = if kind == Kind::OpenCrvs {
        crvs(src, &raw, md, &mut problems)
    } else {
        None
    };
    if kind == Kind::OpenMrsFhir2 && (user.is_none() || password.is_none()) {
        problems.push(src.problem(
            raw.kind.span(),
            "an openmrs-fhir2 target needs `user_env` and `password_env` (OpenMRS FHIR2 takes HTTP Basic only)",
        ));
    }
    let timeout = *raw.timeout_seconds.get_ref();
    if !(0.05..=600.0).contains(&timeout) {
        problems.push(src.problem(
            raw.timeout_seconds.span(),
            "timeout_seconds must be between 0.05 and 600",
        ));
    }
    let concurrency = *raw.concurrency.get_ref();
    if !(1..=64).contains(&concurrency) {
        problems.push(src.problem(
            raw.concurrency.span(),
            "concurrency must be between 1 and 64",
        ));
    }
    let mut trigger = Trigger::default();
    for e in &raw.trigger.events {
        match (kind, e.get_ref().as_str()) {
            (Kind::OpenCrvs, "birth" | "death") => trigger.resources.push(e.get_ref().clone()),
            (Kind::OpenCrvs, other) => problems.push(src.problem(
                e.span(),
                format!("trigger.events: `{other}` is not a notification (birth, death)"),
            )),
            _ => problems.push(src.problem(
                e.span(),
                "trigger.events belongs to an opencrvs target; this kind pushes trigger.resources",
            )),
        }
    }
    for r in raw
        .trigger
        .resources
        .iter()
        .filter(|_| kind == Kind::OpenCrvs)
    {
        problems.push(src.problem(
            r.span(),
            "an opencrvs target is triggered by trigger.events (birth, death), not resources",
        ));
    }
    for r in raw
        .trigger
        .resources
        .iter()
        .filter(|_| kind != Kind::OpenCrvs)
    {
        if RESOURCES.contains(&r.get_ref().as_str()) {
            trigger.resources.push(r.get_ref().clone());
        } else {
            problems.push(src.problem(
                r.span(),
                format!(
                    "trigger.resources: `{}` is not pushed (known: {})",
                    r.get_ref(),
                    RESOURCES.join(", ")
                ),
            ));
        }
    }
    if trigger.resources.is_empty() {
        problems.push(src.problem(0..0, "the trigger is empty: name what is pushed (trigger.resources: Patient, Encounter, Observation; or, for opencrvs, trigger.events: birth, death)"));
    }
    if let Some(c) = &crvs {
        for (event, declared) in [("birth", c.birth.is_some()), ("death", c.death.is_some())] {
            if trigger.resources.iter().any(|r| r == event) && !declared {
                problems.push(src.problem(0..0, format!("trigger.events has `{event}` but there is no [{event}] table saying what a {event} is")));
            }
        }
    }
    for p in &raw.trigger.programs {
        match md.program(p.get_ref()) {
            Some(prog) => trigger.stage_ids.extend(
                md.stages
                    .iter()
                    .filter(|s| s.program_id == prog.id)
                    .map(|s| s.id),
            ),
            None => problems.push(src.problem(
                p.span(),
                format!(
                    "unknown program `{}` (known: {})",
                    p.get_ref(),
                    known_list(md.programs.iter().map(|x| x.code.as_deref().unwrap_or(&x.uid)))
                ),
            )),
        }
    }
    let stage = |s: &Spanned<String>, problems: &mut Vec<Problem>| match md.stage(s.get_ref()) {
        Some(st) => Some(st.id),
        None => {
            problems.push(src.problem(
                s.span(),
                format!(
                    "unknown program stage `{}` (known: {})",
                    s.get_ref(),
                    known_list(md.stages.iter().map(|x| x.code.as_deref().unwrap_or(&x.uid)))
                ),
            ));
            None
        }
    };
    for s in &raw.trigger.stages {
        if let Some(id) = stage(s, &mut problems) {
            trigger.stage_ids.push(id);
        }
    }
    trigger.stage_ids.sort_unstable();
    trigger.stage_ids.dedup();
    let org_unit = |o: &Spanned<String>, problems: &mut Vec<Problem>| match md.org_unit(o.get_ref())
    {
        Some(ou) => Some(ou),
        None => {
            problems.push(src.problem(
                o.span(),
                format!("unknown org unit `{}` (give its UID or code)", o.get_ref()),
            ));
            None
        }
    };
    if let Some(o) = &raw.trigger.org_unit {
        trigger.org_path = org_unit(o, &mut problems).map(|ou| ou.path.clone());
    }
    let mut locations = BTreeMap::new();
    for l in &raw.location {
        if let Some(ou) = org_unit(&l.org_unit, &mut problems) {
            if locations.insert(ou.id, l.uuid.get_ref().clone()).is_some() {
                problems.push(src.problem(
                    l.org_unit.span(),
                    format!("org unit `{}` is mapped twice", l.org_unit.get_ref()),
                ));
            }
        }
    }
    let mut identifiers: Vec<IdentifierOut> = Vec::new();
    for i in &raw.identifier {
        if !identifier_systems.contains(&i.system.get_ref().as_str()) {
            problems.push(src.problem(
                i.system.span(),
                format!(
                    "identifier system `{}` is not declared in patient.toml (declared: {})",
                    i.system.get_ref(),
                    identifier_systems.join(", ")
                ),
            ));
        }
        if i.target_system.is_none() && i.type_name.is_none() && kind == Kind::OpenMrsFhir2 {
            problems.push(src.problem(
                i.system.span(),
                "give `target_system` (the URL registered for the OpenMRS identifier type) or `type_name` (its name)",
            ));
        }
        identifiers.push(IdentifierOut {
            system: i.system.get_ref().clone(),
            target_system: i.target_system.clone(),
            type_name: i.type_name.clone(),
            official: i.official,
        });
    }
    if kind == Kind::FhirR4 && identifiers.iter().filter(|i| i.official).count() > 1 {
        problems.push(src.problem(
            0..0,
            "at most one [[identifier]] may be `official = true` (the one a Patient is matched on before it is created)",
        ));
    }
    let mut organizations = BTreeMap::new();
    for o in &raw.organization {
        if !o.reference.get_ref().starts_with("Organization/") {
            problems.push(src.problem(
                o.reference.span(),
                format!(
                    "reference `{}` is not `Organization/<id>`",
                    o.reference.get_ref()
                ),
            ));
        }
        if let Some(ou) = org_unit(&o.org_unit, &mut problems) {
            if organizations
                .insert(ou.id, o.reference.get_ref().clone())
                .is_some()
            {
                problems.push(src.problem(
                    o.org_unit.span(),
                    format!("org unit `{}` is mapped twice", o.org_unit.get_ref()),
                ));
            }
        }
    }
    if kind == Kind::OpenMrsFhir2 && trigger.resources.iter().any(|r| r == "Patient") {
        let official = identifiers.iter().filter(|i| i.official).count();
        if official != 1 {
            problems.push(src.problem(
                0..0,
                format!("exactly one [[identifier]] must be `official = true` (OpenMRS needs one preferred identifier); {official} are"),
            ));
        }
    }
    let mut encounter_types = BTreeMap::new();
    for e in &raw.encounter_type {
        if let Some(id) = stage(&e.stage, &mut problems) {
            encounter_types.insert(id, e.uuid.get_ref().clone());
        }
    }
    let mut concepts = Vec::new();
    for c in &raw.concept {
        if !codes.contains(&(c.system.get_ref().as_str(), c.code.get_ref().as_str())) {
            problems.push(src.problem(
                c.code.span(),
                format!(
                    "`{}|{}` is not an Observation code of observation.toml: nothing the registry holds has it",
                    c.system.get_ref(),
                    c.code.get_ref()
                ),
            ));
        }
        if let Some(u) = &c.unit {
            if !crate::translate::units::is_known(u.get_ref()) {
                problems.push(src.problem(
                    u.span(),
                    format!("`{}` is not a UCUM unit this gateway converts", u.get_ref()),
                ));
            }
        }
        concepts.push(ConceptOut {
            system: c.system.get_ref().clone(),
            code: c.code.get_ref().clone(),
            target_system: c.target_system.clone(),
            target_code: c.target_code.get_ref().clone(),
            unit: c.unit.as_ref().map(|u| u.get_ref().clone()),
        });
    }
    if raw.retry.initial_ms == 0 || raw.retry.max_seconds == 0 || raw.retry.breaker_failures == 0 {
        problems.push(src.problem(
            0..0,
            "retry: initial_ms, max_seconds and breaker_failures must be above 0",
        ));
    }
    let enabled = raw.enabled && url.resolve().is_ok();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Target {
        name: stem.to_string(),
        file: src.name.clone(),
        kind,
        url,
        user,
        password,
        token,
        record_system,
        organizations,
        timeout: std::time::Duration::from_secs_f64(timeout),
        concurrency: concurrency as usize,
        skip_actors: raw
            .ignore_changes_from
            .iter()
            .map(|c| format!("client:{}", c.get_ref()))
            .collect(),
        retry: Retry {
            initial_ms: raw.retry.initial_ms,
            max_seconds: raw.retry.max_seconds,
            breaker_failures: raw.retry.breaker_failures,
            breaker_seconds: raw.retry.breaker_seconds,
        },
        trigger,
        locations,
        default_location: raw.default_location.map(|d| d.into_inner()),
        identifiers,
        encounter_types,
        concepts,
        crvs,
        enabled,
    })
}

/// The keys only a `fhir-r4` target has, and the OpenMRS-only keys it must not have. Returns the
/// record system.
fn fhir_r4_keys(
    src: &Source,
    raw: &Raw,
    kind: Kind,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    if kind != Kind::FhirR4 {
        for (key, v) in [
            ("token_env", raw.token_env.as_ref()),
            ("record_system", raw.record_system.as_ref()),
            (
                "[[organization]]",
                raw.organization.first().map(|o| &o.org_unit),
            ),
        ] {
            if let Some(v) = v {
                problems.push(src.problem(v.span(), format!("{key} belongs to a fhir-r4 target")));
            }
        }
        return None;
    }
    for (key, v) in [
        ("default_location", raw.default_location.as_ref()),
        ("[[location]]", raw.location.first().map(|l| &l.org_unit)),
        (
            "[[encounter_type]]",
            raw.encounter_type.first().map(|e| &e.stage),
        ),
    ] {
        if let Some(v) = v {
            problems.push(src.problem(
                v.span(),
                format!("{key} belongs to an openmrs-fhir2 target (a fhir-r4 target keeps our codes; map org units with [[organization]])"),
            ));
        }
    }
    for i in &raw.identifier {
        if let Some(t) = &i.type_name {
            problems.push(src.problem(
                i.system.span(),
                format!("type_name `{t}`: a fhir-r4 target takes identifier systems (target_system), not OpenMRS type names"),
            ));
        }
    }
    match &raw.record_system {
        Some(s) if is_uri(s.get_ref()) => Some(s.get_ref().clone()),
        Some(s) => {
            problems.push(src.problem(
                s.span(),
                format!(
                    "record_system `{}` is not an absolute URI (http(s):// or urn:)",
                    s.get_ref()
                ),
            ));
            None
        }
        None => {
            problems.push(src.problem(
                raw.kind.span(),
                "a fhir-r4 target needs `record_system`: the identifier system our record ids are sent under, so that a resend finds the record instead of duplicating it",
            ));
            None
        }
    }
}

fn is_uri(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("urn:"))
        && !s.contains(char::is_whitespace)
        && !s.contains('|')
}

fn crvs(src: &Source, raw: &Raw, md: &Metadata, problems: &mut Vec<Problem>) -> Option<Crvs> {
    let mut need = |v: &Option<Spanned<String>>, what: &str| match v {
        Some(v) => Some(Setting::Env(env_name(src, v, problems))),
        None => {
            problems.push(src.problem(0..0, format!("an opencrvs target needs `{what}`")));
            None
        }
    };
    let auth_url = match &raw.auth_url {
        Some(u) => Some(Setting::Literal(
            u.get_ref().trim_end_matches('/').to_string(),
        )),
        None => need(&raw.auth_url_env, "auth_url_env (or auth_url)"),
    };
    let client_id = need(&raw.client_id_env, "client_id_env");
    let client_secret = need(&raw.client_secret_env, "client_secret_env");
    let mode = match (&raw.mode, &raw.mode_env) {
        (Some(m), None) => match CrvsMode::parse(m.get_ref()) {
            Some(_) => Some(Setting::Literal(m.get_ref().clone())),
            None => {
                problems.push(src.problem(
                    m.span(),
                    format!(
                        "mode `{}` is not one of legacy-notification, events-v1.9, events-v2.0",
                        m.get_ref()
                    ),
                ));
                None
            }
        },
        (None, Some(e)) => Some(Setting::Env(env_name(src, e, problems))),
        _ => {
            problems.push(src.problem(0..0, "an opencrvs target needs `mode` or `mode_env` (legacy-notification, events-v1.9 or events-v2.0)"));
            None
        }
    };
    let country = match &raw.country {
        Some(c)
            if c.get_ref().len() == 3 && c.get_ref().bytes().all(|b| b.is_ascii_uppercase()) =>
        {
            c.get_ref().clone()
        }
        Some(c) => {
            problems.push(src.problem(
                c.span(),
                format!(
                    "country `{}` is not an ISO 3166 alpha-3 code (e.g. FAR, KEN)",
                    c.get_ref()
                ),
            ));
            String::new()
        }
        None => {
            problems.push(src.problem(0..0, "an opencrvs target needs `country` (ISO 3166 alpha-3): OpenCRVS refuses an address without one"));
            String::new()
        }
    };
    let mut facilities = BTreeMap::new();
    for f in &raw.facility {
        match md.org_unit(f.org_unit.get_ref()) {
            Some(ou) => {
                facilities.insert(
                    ou.id,
                    Facility {
                        facility: f.facility.clone(),
                        office: f.office.clone(),
                        district: f.district.clone(),
                        state: f.state.clone(),
                    },
                );
            }
            None => problems.push(src.problem(
                f.org_unit.span(),
                format!(
                    "unknown org unit `{}` (give its UID or code)",
                    f.org_unit.get_ref()
                ),
            )),
        }
    }
    let stages = |list: &[Spanned<String>], problems: &mut Vec<Problem>| -> Vec<i64> {
        list.iter()
            .filter_map(|s| match md.stage(s.get_ref()) {
                Some(st) => Some(st.id),
                None => {
                    problems.push(
                        src.problem(s.span(), format!("unknown program stage `{}`", s.get_ref())),
                    );
                    None
                }
            })
            .collect()
    };
    let elements = |list: &[Spanned<String>], problems: &mut Vec<Problem>| -> Vec<i64> {
        list.iter()
            .filter_map(|s| match md.data_element(s.get_ref()) {
                Some(de) => Some(de.id),
                None => {
                    problems.push(
                        src.problem(s.span(), format!("unknown data element `{}`", s.get_ref())),
                    );
                    None
                }
            })
            .collect()
    };
    let birth = raw.birth.as_ref().and_then(|b| {
        let rel = match md.relationship_type(b.relationship_type.get_ref()) {
            Some(t) => Some(t.id),
            None => {
                problems.push(src.problem(
                    b.relationship_type.span(),
                    format!(
                        "unknown relationship type `{}`",
                        b.relationship_type.get_ref()
                    ),
                ));
                None
            }
        };
        let st = stages(&b.stages, problems);
        let w = elements(&b.weight, problems);
        Some((rel?, st, w))
    });
    let death = raw.death.as_ref().and_then(|d| {
        let attr = match md.attribute(d.attribute.get_ref()) {
            Some(a) => Some(a.id),
            None => {
                problems.push(src.problem(
                    d.attribute.span(),
                    format!("unknown attribute `{}`", d.attribute.get_ref()),
                ));
                None
            }
        };
        let st = stages(&d.stages, problems);
        let c = elements(&d.cause, problems);
        Some((attr?, st, c))
    });
    let mut fields: BTreeMap<String, String> = FIELDS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &raw.fields {
        if !fields.contains_key(k) {
            problems.push(src.problem(
                v.span(),
                format!(
                        "fields: `{k}` is not an item a notification fills (known: {})",
                        FIELDS
                            .iter()
                            .map(|(k, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
            ));
        } else if v.get_ref().is_empty() {
            fields.remove(k);
        } else {
            fields.insert(k.clone(), v.get_ref().clone());
        }
    }
    Some(Crvs {
        mode: mode?,
        auth_url: auth_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        country,
        facilities,
        birth,
        death,
        fields,
    })
}
