//! Identity: `Patient/$match` (FHIR R4, IHE PDQm ITI-119) with the rules of
//! `mappings/matching.toml`, and cross-referencing over the identifier systems (assigning
//! authorities) declared in `mappings/patient.toml`: IHE PIXm `Patient/$ihe-pix` (ITI-83).
//!
//! A declared system is a domain the registry knows; every other system is unknown, whether as
//! the source (400) or as a target (403). A known domain with no such identifier is 404. The
//! answer never repeats the source identifier: it names the person (`targetId`) and their
//! identifiers in the other (or the requested) domains (`targetIdentifier`).

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::Error;
use crate::fhir::outcome::Issue;
use crate::mapping::patient::IdentifierMap;
use crate::matching::score::Grade;
use crate::matching::{keys, Demographics};
use crate::store::{links, match_keys, patients, Scoped};
use crate::tracker::model::PersonRecord;
use crate::tracker::{identity, Env};
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
    let query = identity::demographics(env, &w);
    if !identity::matchable(&query) {
        return Err(Error::invalid_at(
            "the Patient to match has nothing to match on: give at least a name, a birth date, a phone number or an identifier of a system this registry knows",
            "resource",
        ));
    }

    let mut found = identity::find(s, env, rules, &query)?;
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
    super::decorate(s, resources.iter_mut())?;
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
                        { "url": MATCH_EXPLANATION, "extension": identity::explanation(d) },
                    ],
                    "mode": "match",
                    "score": identity::round(d.score),
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
    let mut after = 0;
    let mut done = 0;
    while let Some((last, n)) = rebuild_keys_after(s, env, after, 1000)? {
        after = last;
        done += n;
    }
    s.flush()?;
    Ok(done)
}

/// The demographics of every live person, as matching reads them (`kiunga calibrate`).
pub fn registry(s: &mut Scoped, env: &Env) -> Result<Vec<Demographics>, Error> {
    let pm = &env.mappings.patient;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let ids = match_keys::people_after(s, after, 2000)?;
        let Some(&last) = ids.last() else {
            return Ok(out);
        };
        out.extend(
            patients::by_ids(s, &ids)?
                .iter()
                .map(|p| Demographics::from_values(&p.values, pm)),
        );
        after = last;
    }
}

/// [`rebuild_keys`] for up to `limit` people with an id above `after`: the last id read and how
/// many people got keys, or None when there are no more.
pub fn rebuild_keys_after(
    s: &mut Scoped,
    env: &Env,
    after: i64,
    limit: i64,
) -> Result<Option<(i64, usize)>, Error> {
    if env.mappings.matching.is_none() {
        return Ok(None);
    }
    let ids = match_keys::people_after(s, after, limit)?;
    let Some(&last) = ids.last() else {
        return Ok(None);
    };
    match_keys::forget(s, &ids)?;
    let mut done = 0;
    for p in patients::by_ids(s, &ids)? {
        let pm = &env.mappings.patient;
        let d = Demographics::from_values(&p.values, pm);
        let rows = match_keys::rows(
            p.id,
            keys::keys(&d),
            &d.single_valued(pm),
            d.holds_primary(pm),
        );
        s.defer().match_keys.extend(rows);
        done += 1;
    }
    Ok(Some((last, done)))
}

/// `kiunga rematch`, one batch: the people with an id above `after` (up to `limit`) matched
/// again under the current rules, as an update matches them: the engine's own links are made
/// again, people's decisions (MANUAL, and merges) stand. Run after [`rebuild_keys`], so that
/// every person is found under the new rules' keys. Returns the last id read and how many
/// people were matched, or None when there are no more.
pub fn rematch_after(
    s: &mut Scoped,
    env: &Env,
    after: i64,
    limit: i64,
) -> Result<Option<(i64, usize)>, Error> {
    let rules = env.mappings.matching.as_ref().ok_or_else(|| {
        Error::invalid("matching is off (no mappings/matching.toml); nothing to re-match")
    })?;
    let ids = match_keys::people_after(s, after, limit)?;
    let Some(&last) = ids.last() else {
        return Ok(None);
    };
    let people = patients::by_ids(s, &ids)?;
    let pm = &env.mappings.patient;
    let all: Vec<Demographics> = people
        .iter()
        .map(|p| Demographics::from_values(&p.values, pm))
        .collect();
    identity::prepare_with(s, env, rules, &all)?;
    for p in &people {
        identity::link_with(s, env, rules, p, true)?;
    }
    Ok(Some((last, people.len())))
}

/// Shows in `Patient.link` the records this one is LINKED to (type `seealso`, as R4 allows
/// between two Patients of one person) and merged with (`replaced-by` on the record merged away,
/// `replaces` on the survivor), those the caller may see.
pub fn set_links(s: &Scoped, env: &Env, resource: &mut Value, linked: &[identity::Linked]) {
    let visible: Vec<(links::Shown, &str)> = linked
        .iter()
        .filter(|(_, org, _)| {
            env.md
                .org_unit_by_id(*org)
                .is_some_and(|o| s.ctx.search.contains(&o.path))
        })
        .map(|(uid, _, shown)| (*shown, uid.as_str()))
        .collect();
    render_links(resource, visible);
}

/// Writes `Patient.link` from the records the caller may see.
fn render_links(resource: &mut Value, mut others: Vec<(links::Shown, &str)>) {
    // The survivor first: a reader follows `replaced-by` before anything else.
    others.sort_unstable();
    others.dedup();
    if others.is_empty() {
        return;
    }
    let links: Vec<Value> = others
        .into_iter()
        .map(|(shown, uid)| {
            let t = if shown == links::Shown::Related {
                "RelatedPerson"
            } else {
                "Patient"
            };
            json!({ "other": { "reference": format!("{t}/{uid}") }, "type": shown.code() })
        })
        .collect();
    if let Some(o) = resource.as_object_mut() {
        o.insert("link".into(), Value::Array(links));
    }
}

/// [`set_links`] for rendered resources of any mix of types, in one query.
pub fn show_links<'a>(
    s: &mut Scoped,
    resources: impl IntoIterator<Item = &'a mut Value>,
) -> Result<(), Error> {
    let patients: Vec<&'a mut Value> = resources
        .into_iter()
        .filter(|r| r["resourceType"] == "Patient")
        .collect();
    // Merges show whether matching is on or not.
    if patients.is_empty() {
        return Ok(());
    }
    let uids: Vec<String> = patients
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    // A read of someone nobody is linked to (most people) needs no look-up.
    if s.known_unlinked(&uids) {
        return Ok(());
    }
    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    // The database says whom the caller may see (registered or owned in the search scope).
    let mut by_uid: HashMap<String, Vec<(links::Shown, String)>> = HashMap::new();
    let scope = s.ctx.search.sql_filter();
    for (uid, other, _, shown, visible) in links::linked(s.conn()?, &refs, scope)? {
        if visible {
            by_uid.entry(uid).or_default().push((shown, other));
        }
    }
    for r in patients {
        let uid = r["id"].as_str().unwrap_or_default().to_owned();
        if let Some(l) = by_uid.get(&uid) {
            render_links(r, l.iter().map(|(shown, o)| (*shown, o.as_str())).collect());
        }
    }
    Ok(())
}

/// `$mdm-query-links` (HAPI MDM's names): which decisions to list.
#[derive(Default)]
pub struct LinkQuery {
    /// `Patient/<uid>` or `<uid>`: the record matched (the earlier one).
    pub golden: Option<String>,
    /// Either record of the pair.
    pub resource: Option<String>,
    /// MATCH, POSSIBLE_MATCH, NO_MATCH (HAPI) or LINKED, OPEN, INVALID, MERGED (DHIS2-style).
    pub match_result: Option<String>,
    /// AUTO or MANUAL.
    pub link_source: Option<String>,
    pub offset: i64,
    pub count: Option<i64>,
}

/// Decisions listed per page when `_count` is not given, and at most.
pub const LINKS_PAGE: i64 = 20;
pub const LINKS_PAGE_MAX: i64 = 1000;

/// HAPI MDM's matchResult for each of our statuses.
fn match_result(status: &str) -> &'static str {
    match status {
        "LINKED" => "MATCH",
        "OPEN" => "POSSIBLE_MATCH",
        "INVALID" => "NO_MATCH",
        _ => "MERGED",
    }
}

fn statuses(result: &str) -> Result<Vec<&'static str>, Error> {
    Ok(match result {
        "MATCH" | "LINKED" => vec!["LINKED"],
        "POSSIBLE_MATCH" | "POSSIBLE_DUPLICATE" | "OPEN" => vec!["OPEN"],
        "NO_MATCH" | "INVALID" => vec!["INVALID"],
        "MERGED" => vec!["MERGED"],
        other => return Err(Error::invalid_at(
            format!("matchResult `{other}` is not known: use MATCH, POSSIBLE_MATCH or NO_MATCH (or the potential-duplicate statuses LINKED, OPEN, INVALID, MERGED)"),
            "matchResult",
        )),
    })
}

/// The person `Patient/<uid>` (or `<uid>`) names, if the caller may see it.
fn person_named(
    s: &mut Scoped,
    env: &Env,
    param: &str,
    value: &str,
) -> Result<PersonRecord, Error> {
    let uid = value.strip_prefix("Patient/").unwrap_or(value);
    if uid.is_empty() || uid.contains('/') {
        return Err(Error::invalid_at(
            format!("{param} names a Patient, as Patient/<id> or <id>; `{value}` is neither"),
            param,
        ));
    }
    match patients::find(s, env.mappings.patient.entity_type_id, uid)? {
        Some(p) if !p.deleted => Ok(p),
        _ => Err(Error::NotFound(format!(
            "{param}: Patient/{uid} is not known to this registry"
        ))),
    }
}

/// The stored explanation (extension-shaped) as Parameters parts.
fn as_parts(explanation: &Value) -> Vec<Value> {
    explanation
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|e| {
                    let mut p = serde_json::Map::new();
                    p.insert("name".into(), e["url"].clone());
                    for (k, v) in e.as_object().into_iter().flatten() {
                        if k.starts_with("value") {
                            p.insert(k.clone(), v.clone());
                        }
                    }
                    if e.get("extension").is_some() {
                        p.insert("part".into(), Value::Array(as_parts(&e["extension"])));
                    }
                    Value::Object(p)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn link_parameter(l: &links::Link, source_uid: &str, target_uid: &str) -> Value {
    json!({
        "name": "link",
        "part": [
            { "name": "goldenResourceId", "valueString": format!("Patient/{target_uid}") },
            { "name": "sourceResourceId", "valueString": format!("Patient/{source_uid}") },
            { "name": "matchResult", "valueString": match_result(&l.status) },
            { "name": "linkSource", "valueString": l.origin },
            // A hard identifier rule decided (HAPI: matched on an enterprise identifier); a rule
            // overruled by sex or birth date leaves the score to the fields.
            { "name": "eidMatch", "valueBoolean": l.ruleset != links::MANUAL_RULESET && (l.score >= 1.0 || l.score <= 0.0) && l.explanation.as_array().is_some_and(|parts| parts.iter().any(|p| p["url"] == "rule")) },
            { "name": "hadToCreateNewResource", "valueBoolean": false },
            { "name": "score", "valueDecimal": identity::round(l.score) },
            { "name": "linkCreated", "valueDecimal": l.created.timestamp_millis() },
            { "name": "linkUpdated", "valueDecimal": l.last_updated.timestamp_millis() },
            { "name": "status", "valueCode": l.status },
            { "name": "grade", "valueCode": l.grade },
            { "name": "ruleset", "valueString": l.ruleset },
            { "name": "explanation", "part": as_parts(&l.explanation) },
        ],
    })
}

/// `$mdm-query-links`: the decisions about records the caller may see, oldest first, paged.
pub fn query_links(s: &mut Scoped, env: &Env, q: &LinkQuery) -> Result<Value, Error> {
    let mut f = links::LinkFilter {
        offset: q.offset.max(0),
        count: q.count.unwrap_or(LINKS_PAGE).clamp(1, LINKS_PAGE_MAX),
        ..Default::default()
    };
    if let Some(g) = &q.golden {
        f.golden = Some(person_named(s, env, "goldenResourceId", g)?.id);
    }
    if let Some(r) = &q.resource {
        f.resource = Some(person_named(s, env, "resourceId", r)?.id);
    }
    if let Some(m) = &q.match_result {
        f.statuses = statuses(m)?;
    }
    f.origin = match q.link_source.as_deref() {
        None => None,
        Some("AUTO") => Some("AUTO"),
        Some("MANUAL") => Some("MANUAL"),
        Some(other) => {
            return Err(Error::invalid_at(
                format!("linkSource `{other}` is not known: use AUTO or MANUAL"),
                "linkSource",
            ))
        }
    };
    let (rows, total) = links::query(s, &f)?;
    let mut parameter = vec![json!({ "name": "total", "valueInteger": total })];
    parameter.extend(rows.iter().map(|(l, su, tu)| link_parameter(l, su, tu)));
    Ok(json!({ "resourceType": "Parameters", "parameter": parameter }))
}

/// The two records a person decides about, both of which the caller must be able to write.
fn pair_to_decide(
    s: &mut Scoped,
    env: &Env,
    golden: &str,
    resource: &str,
) -> Result<(PersonRecord, PersonRecord), Error> {
    let g = person_named(s, env, "goldenResourceId", golden)?;
    let r = person_named(s, env, "resourceId", resource)?;
    for p in [&g, &r] {
        crate::tracker::patients::check_capture(s, env, p, "decide about")?;
    }
    Ok((g, r))
}

/// The pair's decision as `$mdm-update-link` and `$mdm-create-link` answer it.
fn decided(s: &mut Scoped, g: &PersonRecord, r: &PersonRecord) -> Result<Value, Error> {
    let decided = links::pair_for_update(s.conn()?, g.id, r.id)?
        .ok_or_else(|| Error::Internal("a decided link vanished".into()))?;
    let uid = |id: i64| {
        if id == g.id {
            g.uid.as_str()
        } else {
            r.uid.as_str()
        }
    };
    Ok(json!({
        "resourceType": "Parameters",
        "parameter": [link_parameter(&decided, uid(decided.source_id), uid(decided.target_id))],
    }))
}

/// `$mdm-update-link`: a person's decision on a pair the engine proposed or linked: MATCH (one
/// person) or NO_MATCH (two people, never proposed again). Sticky: the engine does not change it.
pub fn update_link(
    s: &mut Scoped,
    env: &Env,
    golden: &str,
    resource: &str,
    result: &str,
) -> Result<Value, Error> {
    let status = match result {
        "MATCH" => "LINKED",
        "NO_MATCH" => "INVALID",
        other => {
            return Err(Error::invalid_at(
                format!("matchResult `{other}` cannot be set: a person decides MATCH or NO_MATCH"),
                "matchResult",
            ))
        }
    };
    let (g, r) = pair_to_decide(s, env, golden, resource)?;
    let link = links::pair_for_update(s.conn()?, g.id, r.id)?.ok_or_else(|| {
        Error::NotFound(format!(
            "no link between Patient/{} and Patient/{}: the matching engine proposed nothing for this pair (a person can record one with $mdm-create-link)",
            g.uid, r.uid
        ))
    })?;
    if link.status == "MERGED" {
        return Err(Error::Conflict {
            message: format!(
                "Patient/{} and Patient/{} were merged; undo the merge instead",
                g.uid, r.uid
            ),
            expression: None,
        });
    }
    let actor = s.ctx.actor.to_string();
    links::decide(s.conn()?, link.id, status, &actor, chrono::Utc::now())?;
    decided(s, &g, &r)
}

/// `$mdm-create-link`: a person's decision about a pair the engine proposed nothing for (HAPI
/// MDM's name): MATCH (linked), NO_MATCH (two people, never proposed) or POSSIBLE_MATCH (a
/// potential duplicate for someone to look at). Sticky like every person's decision.
pub fn create_link(
    s: &mut Scoped,
    env: &Env,
    golden: &str,
    resource: &str,
    result: &str,
) -> Result<Value, Error> {
    let status = match result {
        "MATCH" => "LINKED",
        "NO_MATCH" => "INVALID",
        "POSSIBLE_MATCH" => "OPEN",
        other => {
            return Err(Error::invalid_at(
                format!(
                "matchResult `{other}` cannot be created: use MATCH, NO_MATCH or POSSIBLE_MATCH"
            ),
                "matchResult",
            ))
        }
    };
    let (g, r) = pair_to_decide(s, env, golden, resource)?;
    if g.id == r.id {
        return Err(Error::rule(
            format!("goldenResourceId and resourceId are the same record (Patient/{}): a link joins two", g.uid),
            Some("resourceId".into()),
        ));
    }
    for (p, param) in [(&g, "goldenResourceId"), (&r, "resourceId")] {
        if p.merged_into.is_some() {
            return Err(Error::rule(
                format!(
                    "{param}: Patient/{} was merged into another record; link the survivor instead",
                    p.uid
                ),
                Some(param.into()),
            ));
        }
    }
    if let Some(existing) = links::pair_for_update(s.conn()?, g.id, r.id)? {
        return Err(Error::Conflict {
            message: format!(
                "Patient/{} and Patient/{} already have a decision ({}): change it with $mdm-update-link",
                g.uid,
                r.uid,
                match_result(&existing.status)
            ),
            expression: None,
        });
    }
    let actor = s.ctx.actor.to_string();
    links::insert_manual(
        s.conn()?,
        (r.id, g.id),
        status,
        &actor,
        chrono::Utc::now(),
        "decided by a person ($mdm-create-link)",
    )?;
    decided(s, &g, &r)
}
