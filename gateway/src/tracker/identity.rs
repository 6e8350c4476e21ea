//! One person across records: the matching engine run on `Patient/$match` and on every Patient
//! create and update (when `matching.toml` says `[linking] on_write = true`).
//!
//! On a write, the record is compared with the people sharing a blocking key with it:
//! - exactly one certain match: the two records are LINKED (each Patient shows the other in
//!   `link`, type `seealso`);
//! - probable or possible matches, or several certain ones: each pair is an OPEN potential
//!   duplicate, for a person to decide (`$mdm-query-links`, `$mdm-update-link`).
//!
//! A pair a person decided (origin MANUAL) is never proposed or changed again by the engine; an
//! update re-matches the record and replaces only the engine's own decisions about it.
//!
//! Two concurrent writes of one person must meet: before its candidates are read, a write takes
//! transaction-scoped advisory locks on its blocking keys, so the second write waits for the
//! first to commit and then finds it. A transaction Bundle matches its people after its entries
//! have run and its records are written ([`defer`], [`settle`]): it locks and reads for all of
//! them in one round trip each, and holds the locks only for the matching and the commit.
//!
//! Matching compares against the whole registry (a person registered at another facility is
//! still the same person); what is shown to a caller stays within their scope.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::model::PersonRecord;
use super::Env;
use crate::error::Error;
use crate::mapping::matching::MatchingRules;
use crate::mapping::patient::IdentifierMap;
use crate::matching::score::{self, Decision, Frequencies, Grade};
use crate::matching::{compare, keys, Demographics};
use crate::store::links::{self, Deferred, KeyQuery};
use crate::store::pending::LinkRow;
use crate::store::{match_keys, patients, EntryAt, Scoped};
use crate::translate::patient::PatientWrite;

/// The rules, when writes are matched.
fn on_write<'e>(env: &Env<'e>) -> Option<&'e MatchingRules> {
    env.mappings.matching.as_ref().filter(|r| r.link_on_write)
}

/// What matching reads of a Patient as translated.
pub fn demographics(env: &Env, w: &PatientWrite) -> Demographics {
    let values: BTreeMap<i64, String> = w
        .values
        .iter()
        .map(|v| (v.attribute_id, v.value.clone()))
        .collect();
    Demographics::from_values(&values, &env.mappings.patient)
}

/// Whether there is anything to match a person on.
pub fn matchable(d: &Demographics) -> bool {
    !(d.name_tokens.is_empty()
        && d.birth_date.is_none()
        && d.phone.is_none()
        && d.identifiers.is_empty())
}

fn lock_key(parts: &[&str]) -> i64 {
    let mut h = Sha256::new();
    h.update(b"kiunga:person:");
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The advisory locks a write of this person takes, sorted: one per blocking key, and per name
/// code one for each birth year of the window, so that two records within the window share one.
/// Two records of one person share at least one of these, and so do two records that share a
/// blocking key (the converse is not needed: scoring decides).
pub fn lock_keys(d: &Demographics, window: i32) -> Vec<i64> {
    let mut out = Vec::new();
    for k in keys::keys(d) {
        match (k.kind, k.year) {
            ("n", Some(y)) => {
                for year in y - window..=y + window {
                    out.push(lock_key(&["n", &k.code, &year.to_string()]));
                }
            }
            _ => out.push(lock_key(&[k.kind, &k.code])),
        }
    }
    for (system, value) in &d.identifiers {
        out.push(lock_key(&["i", system, value]));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A deferred entry, and the records its person is now LINKED to.
pub type Settled = (Option<EntryAt>, Vec<Linked>);

/// Defers the matching of the people a transaction Bundle writes until its entries have run
/// ([`settle`]): the locks are then taken after the Bundle's records are written and held only
/// while its people are matched and committed. Taken before the first entry, they were held
/// for the whole Bundle, and two Bundles of people sharing any blocking key (most do: the pair
/// of name codes is a coarse key) ran one after the other.
pub fn defer(s: &mut Scoped, env: &Env) {
    if on_write(env).is_some() {
        s.links.deferred = Some(Vec::new());
        s.defer().hold_match_keys = true;
    }
}

/// Matches the people written since [`defer`], in the order they were written, as each entry
/// would have on its own: writes everything queued but the blocking keys, locks the keys of
/// them all, reads their candidates in one round trip, decides, and queues the keys with the
/// decisions. Returns, for each deferred entry, the records it is now LINKED to.
///
/// Two Bundles writing one person still meet: the second to lock reads its candidates after
/// the first committed, keys included. A candidate read is never one of this Bundle's own
/// people (their keys are not written yet, and those found by an identifier are set aside):
/// they meet each other in order, through [`LinkPool::written`](links::LinkPool).
pub fn settle(s: &mut Scoped, env: &Env) -> Result<Vec<Settled>, Error> {
    let Some(later) = s.links.deferred.take() else {
        return Ok(Vec::new());
    };
    let rules = on_write(env).filter(|_| !later.is_empty());
    if rules.is_some() {
        // Everything but the blocking keys, which [`defer`] holds back.
        s.flush()?;
    }
    s.defer().hold_match_keys = false;
    let Some(rules) = rules else {
        return Ok(Vec::new());
    };
    let pm = &env.mappings.patient;
    let people: Vec<Demographics> = later
        .iter()
        .map(|d| Demographics::from_values(&d.record.values, pm))
        .collect();
    prepare_with(s, env, rules, &people)?;
    let mut out = Vec::with_capacity(later.len());
    for d in later {
        s.entry.clone_from(&d.entry);
        let linked = link_with(s, env, rules, &d.record, d.updated)?;
        out.push((d.entry, linked));
    }
    Ok(out)
}

/// Locks the blocking keys of `people` and reads their candidates, for the matching that
/// follows in this unit of work, whether matching on write is on or not (`kiunga rematch`).
pub fn prepare_with(
    s: &mut Scoped,
    env: &Env,
    rules: &MatchingRules,
    people: &[Demographics],
) -> Result<(), Error> {
    let pm = &env.mappings.patient;
    let wanted: Vec<(Vec<i64>, &Demographics)> = people
        .iter()
        .filter(|d| matchable(d))
        .map(|d| (lock_keys(d, rules.birth_year_window), d))
        .filter(|(k, _)| !s.links.found.contains_key(k))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let all: Vec<i64> = wanted.iter().flat_map(|(k, _)| k.iter().copied()).collect();
    links::lock(s, &all)?;

    let mut key_queries = Vec::new();
    let mut identifiers = Vec::new();
    let mut single_valued = Vec::new();
    let per_query: Vec<(Vec<keys::Key>, &Demographics)> =
        wanted.iter().map(|(_, d)| (keys::keys(d), *d)).collect();
    for (q, (ks, d)) in per_query.iter().enumerate() {
        single_valued.extend(d.single_valued(pm).into_iter().map(|v| (q as i32, v)));
        for k in ks {
            key_queries.push(KeyQuery {
                query: q as i32,
                kind: k.kind,
                code: &k.code,
                year: k.year,
            });
        }
        for (system, value) in &d.identifiers {
            if let Some(m) = pm.identifier(system) {
                identifiers.push((q as i32, m.attribute_id, value.clone()));
            }
        }
    }
    let people: Vec<links::QueryPerson> = wanted
        .iter()
        .map(|(_, d)| links::QueryPerson {
            id: 0,
            holds_primary: d.holds_primary(pm),
        })
        .collect();
    let hits = links::candidates(
        s,
        &key_queries,
        &identifiers,
        &single_valued,
        &people,
        rules.birth_year_window,
        rules.max_candidates,
    )?;
    let mut found: Vec<Vec<i64>> = vec![Vec::new(); wanted.len()];
    for (q, id) in hits.into_iter().filter(|(_, id)| !s.links.own.contains(id)) {
        if let Some(f) = found.get_mut(q) {
            f.push(id);
        }
    }
    let missing: Vec<i64> = found
        .iter()
        .flatten()
        .copied()
        .filter(|id| !s.links.people.contains_key(id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        for p in patients::by_ids_for_matching(s, &missing)? {
            let d = Demographics::from_values(&p.values, pm);
            s.links.people.insert(p.id, (p, d));
        }
    }
    for ((keys, _), ids) in wanted.into_iter().zip(found) {
        s.links.found.insert(keys, ids);
    }
    Ok(())
}

/// Term frequencies looked up for the names that agree.
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

/// Scores `query` against every candidate; the ones at least possible, best first.
fn decide_all<'p>(
    s: &mut Scoped,
    env: &Env,
    rules: &MatchingRules,
    query: &Demographics,
    people: &[(&'p PersonRecord, &Demographics)],
) -> Result<Vec<(Decision, &'p PersonRecord)>, Error> {
    let pm = &env.mappings.patient;
    // Term frequencies are only needed for the names that agree: count those alone.
    let agreeing: Vec<&Demographics> = match &rules.name {
        Some(r) if r.term_frequency => people
            .iter()
            .map(|(_, d)| *d)
            .filter(|d| {
                compare::names(r, &query.name_tokens, &d.name_tokens).is_some_and(|s| s >= r.agree)
            })
            .collect(),
        _ => Vec::new(),
    };
    let distinct = |f: &dyn Fn(&Demographics) -> Option<&String>| {
        let mut v: Vec<String> = agreeing.iter().filter_map(|d| f(d).cloned()).collect();
        v.sort();
        v.dedup();
        v
    };
    // Counting reads only what other units committed: the queue need not be written for it.
    let registry = if agreeing.is_empty() {
        0
    } else {
        match_keys::people(s.conn_unflushed())?
    };
    let mut count = |attribute: Option<i64>, names: Vec<String>| match attribute {
        Some(a) => match_keys::shares(s.conn_unflushed(), registry, a, &names),
        None => Ok(HashMap::new()),
    };
    let shares = Shares {
        family: count(pm.family, distinct(&|d| d.family.as_ref()))?,
        given: count(pm.given, distinct(&|d| d.given.as_ref()))?,
    };
    let mut found: Vec<(Decision, &PersonRecord)> = people
        .iter()
        .map(|(p, d)| (score::decide(rules, &pm.identifiers, query, d, &shares), *p))
        .filter(|(d, _)| d.grade >= Grade::Possible)
        .collect();
    found.sort_by(|(a, pa), (b, pb)| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| pa.uid.cmp(&pb.uid))
    });
    Ok(found)
}

/// `Patient/$match`: the people the caller may see who may be `query`, best first.
pub fn find(
    s: &mut Scoped,
    env: &Env,
    rules: &MatchingRules,
    query: &Demographics,
) -> Result<Vec<(Decision, PersonRecord)>, Error> {
    let pm = &env.mappings.patient;
    let key_list = keys::keys(query);
    let key_queries: Vec<KeyQuery> = key_list
        .iter()
        .map(|k| KeyQuery {
            query: 0,
            kind: k.kind,
            code: &k.code,
            year: k.year,
        })
        .collect();
    let declared: Vec<(&IdentifierMap, &String)> = query
        .identifiers
        .iter()
        .filter_map(|(sys, v)| Some((pm.identifier(sys)?, v)))
        .collect();
    let identifiers: Vec<(i32, i64, String)> = declared
        .iter()
        .map(|(m, v)| (0, m.attribute_id, (*v).clone()))
        .collect();
    // Certainly-not matches are never answered: those with another national ID are not read.
    let single_valued: Vec<(i32, String)> = query
        .single_valued(pm)
        .into_iter()
        .map(|v| (0, v))
        .collect();
    let mut ids: Vec<i64> = links::candidates(
        s,
        &key_queries,
        &identifiers,
        &single_valued,
        &[links::QueryPerson {
            id: 0,
            holds_primary: query.holds_primary(pm),
        }],
        rules.birth_year_window,
        rules.max_candidates,
    )?
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    ids.sort_unstable();
    ids.dedup();
    let people = patients::by_ids(s, &ids)?;
    let demographics: Vec<Demographics> = people
        .iter()
        .map(|p| Demographics::from_values(&p.values, pm))
        .collect();
    let refs: Vec<(&PersonRecord, &Demographics)> = people.iter().zip(&demographics).collect();
    Ok(decide_all(s, env, rules, query, &refs)?
        .into_iter()
        .map(|(d, p)| (d, p.clone()))
        .collect())
}

/// The explanation extension's content, as stored with each decision.
pub fn explanation(d: &Decision) -> Value {
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
    json!(parts)
}

pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A record LINKED to another (or merged with it): its uid, owning org unit (for the caller's
/// scope) and how it is shown in `Patient.link`.
pub type Linked = (String, i64, links::Shown);

/// Matches a person just written (created, or updated when `updated`) and queues the decisions.
/// Returns the records it is now LINKED to.
pub fn link(
    s: &mut Scoped,
    env: &Env,
    record: &PersonRecord,
    updated: bool,
) -> Result<Vec<Linked>, Error> {
    let Some(rules) = on_write(env) else {
        return Ok(Vec::new());
    };
    if let Some(later) = s.links.deferred.as_mut() {
        later.push(Deferred {
            entry: s.entry.clone(),
            record: record.clone(),
            updated,
        });
        if !updated {
            s.links.own.insert(record.id);
        }
        return Ok(Vec::new());
    }
    link_with(s, env, rules, record, updated)
}

/// [`link`] under `rules` whether matching on write is on or not (`kiunga rematch`).
pub fn link_with(
    s: &mut Scoped,
    env: &Env,
    rules: &MatchingRules,
    record: &PersonRecord,
    updated: bool,
) -> Result<Vec<Linked>, Error> {
    let pm = &env.mappings.patient;
    let d = Demographics::from_values(&record.values, pm);
    let lock = lock_keys(&d, rules.birth_year_window);
    if !matchable(&d) {
        return Ok(Vec::new());
    }
    prepare_with(s, env, rules, std::slice::from_ref(&d))?;

    // People's decisions about this record stand; the engine's own are made again.
    let mut decided: HashSet<i64> = HashSet::new();
    let mut linked_by_people: Vec<i64> = Vec::new();
    if updated {
        let conn = s.conn()?;
        links::forget_automatic(conn, record.id)?;
        for l in links::of_person(conn, record.id)? {
            let other = if l.source_id == record.id {
                l.target_id
            } else {
                l.source_id
            };
            decided.insert(other);
            if l.status == "LINKED" {
                linked_by_people.push(other);
            }
        }
    }
    // Candidates: those read for these keys, and the people this unit wrote sharing a key, as
    // they are now. Two values of a single-valued system (two national IDs) rule one out at once.
    let max = usize::try_from(rules.max_candidates).unwrap_or(usize::MAX);
    let mut pool: BTreeMap<i64, (&PersonRecord, &Demographics)> = BTreeMap::new();
    for id in s.links.found.get(&lock).into_iter().flatten() {
        if let Some((p, pd)) = s.links.people.get(id) {
            pool.insert(*id, (p, pd));
        }
    }
    for id in s.links.written_near(&lock, max) {
        if let Some((p, pd, _)) = s.links.written.get(&id) {
            pool.insert(id, (p, pd));
        }
    }
    pool.remove(&record.id);
    pool.retain(|id, (p, pd)| {
        !decided.contains(id) && !p.deleted && score::two_people(&pm.identifiers, &d, pd).is_none()
    });
    let people: Vec<(PersonRecord, Demographics)> = pool
        .into_values()
        .map(|(p, pd)| (p.clone(), pd.clone()))
        .collect();
    let refs: Vec<(&PersonRecord, &Demographics)> = people.iter().map(|(p, d)| (p, d)).collect();
    let found = decide_all(s, env, rules, &d, &refs)?;

    // Several certain matches link only when they are one person already (a third EMR sending
    // someone two others sent); otherwise that is no certain answer, and a person decides.
    let certain: Vec<i64> = found
        .iter()
        .filter(|(d, _)| d.grade == Grade::Certain)
        .map(|(_, p)| p.id)
        .collect();
    let queued: Vec<(i64, i64)> = s
        .defer()
        .links
        .iter()
        .filter(|l| l.status == "LINKED")
        .map(|l| (l.source_id, l.target_id))
        .collect();
    let link_certain =
        !certain.is_empty() && links::all_linked(s.conn_unflushed(), &certain, &queued)?;
    let now = Utc::now();
    let rows: Vec<LinkRow> = found
        .iter()
        .map(|(decision, p)| LinkRow {
            source_id: record.id,
            target_id: p.id,
            status: if decision.grade == Grade::Certain && link_certain {
                "LINKED"
            } else {
                "OPEN"
            }
            .to_string(),
            origin: "AUTO".into(),
            score: decision.score,
            grade: decision.grade.code().into(),
            ruleset: decision.version.clone(),
            explanation: explanation(decision),
            created: now,
            last_updated: now,
            decided_by: None,
        })
        .collect();
    let mut linked: Vec<Linked> = found
        .iter()
        .zip(&rows)
        .filter(|(_, r)| r.status == "LINKED")
        .map(|((_, p), _)| (p.uid.clone(), p.org_unit_id, links::Shown::SeeAlso))
        .collect();
    if !linked_by_people.is_empty() {
        for p in patients::by_ids_for_matching(s, &linked_by_people)? {
            linked.push((p.uid, p.org_unit_id, links::Shown::SeeAlso));
        }
    }
    s.defer().links.extend(rows);
    s.links.add_written(record.clone(), d, lock);
    Ok(linked)
}
