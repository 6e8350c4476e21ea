//! Identity: `Patient/$match` (FHIR R4, IHE PDQm ITI-119) with the rules of
//! `mappings/matching.toml`, and cross-referencing over the identifier systems (assigning
//! authorities) declared in `mappings/patient.toml`: IHE PIXm `Patient/$ihe-pix` (ITI-83).
//!
//! A declared system is a domain the registry knows; every other system is unknown, whether as
//! the source (400) or as a target (403). A known domain with no such identifier is 404. The
//! answer never repeats the source identifier: it names the person (`targetId`) and their
//! identifiers in the other (or the requested) domains (`targetIdentifier`).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::error::Error;
use crate::fhir::outcome::Issue;
use crate::mapping::patient::IdentifierMap;
use crate::matching::score::{self, Decision, Frequencies, Grade};
use crate::matching::{compare, keys, Demographics};
use crate::store::{match_keys, patients, Scoped};
use crate::tracker::model::PersonRecord;
use crate::tracker::Env;
use crate::translate;

/// What `$ihe-pix` was asked: `sourceIdentifier` as sent (`system|value`) and every
/// `targetSystem` (repeated, or comma-separated).
pub struct PixQuery {
    pub source: String,
    pub targets: Vec<String>,
}

fn declared<'m>(env: &'m Env, system: &str) -> Option<&'m IdentifierMap> {
    env.mappings.patient.identifier(system)
}

pub fn pix(s: &mut Scoped, env: &Env, q: &PixQuery, base: &str) -> Result<Value, Error> {
    let (system, value) = q.source.split_once('|').ok_or_else(|| {
        Error::invalid_at(
            "sourceIdentifier must be `system|value`, the assigning authority and the identifier (e.g. http://example.org/national-id|1234567890)",
            "sourceIdentifier",
        )
    })?;
    if system.is_empty() || value.trim().is_empty() {
        return Err(Error::invalid_at(
            "sourceIdentifier needs both its system (the assigning authority) and its value",
            "sourceIdentifier",
        ));
    }
    let Some(domain) = declared(env, system) else {
        return Err(Error::UnknownSystem {
            message: format!("sourceIdentifier Assigning Authority not found: `{system}` is not an identifier system of this registry (the systems are declared in mappings/patient.toml)"),
            target: false,
        });
    };
    for t in &q.targets {
        if declared(env, t).is_none() {
            return Err(Error::UnknownSystem {
                message: format!("targetSystem not found: `{t}` is not an identifier system of this registry (the systems are declared in mappings/patient.toml)"),
                target: true,
            });
        }
    }
    let not_found = || {
        Error::NotFound(
            "sourceIdentifier Patient Identifier not found: no person you may see holds that identifier".into(),
        )
    };
    if domain.is_placeholder(value) {
        return Err(not_found());
    }
    let people = patients::holding(s, domain.attribute_id, value.trim())?;
    if people.is_empty() {
        return Err(not_found());
    }

    let mut parameter = Vec::new();
    for p in &people {
        let rendered = translate::patient::to_fhir(p, &env.mappings.patient, env.md);
        let identifiers = rendered
            .get("identifier")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for ident in identifiers {
            let Some(sys) = ident.get("system").and_then(Value::as_str) else {
                continue;
            };
            let wanted = if q.targets.is_empty() {
                sys != system
            } else {
                q.targets.iter().any(|t| t == sys)
            };
            if wanted {
                parameter.push(json!({ "name": "targetIdentifier", "valueIdentifier": ident }));
            }
        }
        parameter.push(json!({
            "name": "targetId",
            "valueReference": { "reference": format!("{base}/Patient/{}", p.uid) },
        }));
    }
    Ok(json!({ "resourceType": "Parameters", "parameter": parameter }))
}

/// What `Patient/$match` was asked (FHIR R4 Patient-match, IHE PDQm ITI-119).
pub struct MatchQuery {
    pub patient: Value,
    pub only_certain: bool,
    pub count: Option<usize>,
}

/// Matches returned when the request gives no `count` (the specification leaves it to the server).
pub const DEFAULT_COUNT: usize = 10;

/// The extension that grades a match (FHIR R4 core).
pub const MATCH_GRADE: &str = "http://hl7.org/fhir/StructureDefinition/match-grade";
/// Our extension that explains a score field by field (docs/identity.md).
pub const MATCH_EXPLANATION: &str = "urn:kiunga:fhir:StructureDefinition:match-explanation";

struct Shares {
    family: HashMap<String, f64>,
    given: HashMap<String, f64>,
}

impl Frequencies for Shares {
    fn family(&self, name: &str) -> Option<f64> {
        self.family.get(name).copied()
    }
    fn given(&self, name: &str) -> Option<f64> {
        self.given.get(name).copied()
    }
}

fn explanation(d: &Decision) -> Value {
    let mut parts = vec![json!({ "url": "ruleset", "valueString": d.version })];
    if let Some(rule) = &d.rule {
        parts.push(json!({ "url": "rule", "valueString": rule }));
    }
    parts.push(json!({ "url": "weight", "valueDecimal": round(d.weight) }));
    for c in &d.contributions {
        parts.push(json!({
            "url": "field",
            "extension": [
                { "url": "name", "valueString": c.field },
                { "url": "weight", "valueDecimal": round(c.weight) },
                { "url": "detail", "valueString": c.detail },
            ],
        }));
    }
    json!({ "url": MATCH_EXPLANATION, "extension": parts })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Finds the registered people who may be the person described, best first.
pub fn match_patient(
    s: &mut Scoped,
    env: &Env,
    q: &MatchQuery,
    base: &str,
) -> Result<Value, Error> {
    let rules = env.mappings.matching.as_ref().ok_or_else(|| {
        Error::Unprocessable(vec![Issue::error(
            "not-supported",
            "matching is off: this server has no mappings/matching.toml",
            None,
        )])
    })?;
    let pm = &env.mappings.patient;
    let w = translate::patient::to_tracker(&q.patient, pm, env.md)?;
    let values: BTreeMap<i64, String> = w
        .values
        .iter()
        .map(|v| (v.attribute_id, v.value.clone()))
        .collect();
    let query = Demographics::from_values(&values, pm);
    if query.name_tokens.is_empty()
        && query.birth_date.is_none()
        && query.phone.is_none()
        && query.identifiers.is_empty()
    {
        return Err(Error::invalid_at(
            "the Patient to match has nothing to match on: give at least a name, a birth date, a phone number or an identifier of a system this registry knows",
            "resource",
        ));
    }

    // Candidates: blocking keys and identifier values, both on indexes.
    let mut ids = match_keys::candidates(
        s,
        &keys::name_codes(&query),
        query.birth_year(),
        rules.birth_year_window,
        query.phone.as_deref(),
        &keys::pair_codes(&query),
        rules.max_candidates,
    )?;
    let pairs: Vec<(i64, String)> = query
        .identifiers
        .iter()
        .filter_map(|(sys, v)| Some((pm.identifier(sys)?.attribute_id, v.clone())))
        .collect();
    ids.extend(match_keys::holding_any(s, &pairs)?);
    ids.sort_unstable();
    ids.dedup();
    let people = patients::by_ids(s, &ids)?;
    let demographics: Vec<Demographics> = people
        .iter()
        .map(|p| Demographics::from_values(&p.values, pm))
        .collect();

    // Term frequencies are only needed for the names that agree: count those alone.
    let agreeing: Vec<&Demographics> = match &rules.name {
        Some(r) if r.term_frequency => demographics
            .iter()
            .filter(|d| {
                compare::names(r, &query.name_tokens, &d.name_tokens).is_some_and(|s| s >= r.agree)
            })
            .collect(),
        _ => Vec::new(),
    };
    let tf = !agreeing.is_empty();
    let distinct = |f: &dyn Fn(&Demographics) -> Option<&String>| {
        let mut v: Vec<String> = agreeing.iter().filter_map(|d| f(d).cloned()).collect();
        v.sort();
        v.dedup();
        v
    };
    let shares = Shares {
        family: match (tf, pm.family) {
            (true, Some(a)) => match_keys::shares(s, a, &distinct(&|d| d.family.as_ref()))?,
            _ => HashMap::new(),
        },
        given: match (tf, pm.given) {
            (true, Some(a)) => match_keys::shares(s, a, &distinct(&|d| d.given.as_ref()))?,
            _ => HashMap::new(),
        },
    };

    let mut found: Vec<(Decision, &PersonRecord)> = people
        .iter()
        .zip(&demographics)
        .map(|(p, d)| (score::decide(rules, &pm.identifiers, &query, d, &shares), p))
        .filter(|(d, _)| d.grade >= Grade::Possible)
        .collect();
    found.sort_by(|(a, pa), (b, pb)| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| pa.uid.cmp(&pb.uid))
    });
    if q.only_certain {
        found.retain(|(d, _)| d.grade == Grade::Certain);
        // Several "certain" people is no certain answer: say nothing rather than guess.
        if found.len() > 1 {
            found.clear();
        }
    }
    found.truncate(q.count.unwrap_or(DEFAULT_COUNT));

    let mut resources: Vec<Value> = found
        .iter()
        .map(|(_, p)| translate::patient::to_fhir(p, pm, env.md))
        .collect();
    super::provenance::tag_all(s, resources.iter_mut())?;
    let entries: Vec<Value> = found
        .iter()
        .zip(resources)
        .map(|((d, p), resource)| {
            json!({
                "fullUrl": format!("{base}/Patient/{}", p.uid),
                "resource": resource,
                "search": {
                    "extension": [
                        { "url": MATCH_GRADE, "valueCode": d.grade.code() },
                        explanation(d),
                    ],
                    "mode": "match",
                    "score": round(d.score),
                },
            })
        })
        .collect();
    let mut bundle = super::bundle::response_bundle("searchset", entries);
    bundle["total"] = json!(found.len());
    Ok(bundle)
}

/// Writes the blocking keys of every person again (`kiunga match-keys`): after the upgrade that
/// introduced them, or an import that bypassed the gateway. Returns how many people were keyed.
pub fn rebuild_keys(s: &mut Scoped, env: &Env) -> Result<usize, Error> {
    if env.mappings.matching.is_none() {
        return Ok(0);
    }
    let mut after = 0;
    let mut done = 0;
    loop {
        let ids = match_keys::people_after(s, after, 1000)?;
        let Some(&last) = ids.last() else { break };
        match_keys::forget(s, &ids)?;
        for p in patients::by_ids(s, &ids)? {
            let d = Demographics::from_values(&p.values, &env.mappings.patient);
            let rows = match_keys::rows(p.id, keys::keys(&d));
            s.defer().match_keys.extend(rows);
            done += 1;
        }
        after = last;
    }
    s.flush()?;
    Ok(done)
}
