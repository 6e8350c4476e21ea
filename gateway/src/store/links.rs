//! What the matching engine and people decided about pairs of person records (`person_link`),
//! the candidates the engine compares, and the locks that make two concurrent writes of one
//! person meet. The decisions themselves are made in `tracker::identity`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text};
use serde_json::Value;

use super::schema::{person_link as pl, tracked_entity as te};
use super::Scoped;
use crate::error::Error;
use crate::matching::Demographics;
use crate::tracker::model::PersonRecord;

/// What a unit of work holds for matching on write: the locks it took, the candidates it read,
/// and the people it wrote (not visible to the candidate query until the queue is written).
#[derive(Default)]
pub struct LinkPool {
    /// Advisory lock keys held by the transaction.
    pub locked: HashSet<i64>,
    /// Candidates read, by id (scope not applied: matching sees the whole registry).
    pub people: HashMap<i64, (PersonRecord, Demographics)>,
    /// The candidate ids read for a person, under the person's lock keys.
    pub found: HashMap<Vec<i64>, Vec<i64>>,
    /// People written in this unit of work (the latest version of each), by id.
    pub written: HashMap<i64, (PersonRecord, Demographics, Vec<i64>)>,
    /// Who of `written` holds each lock key (the key stands for a blocking key).
    pub written_by_key: HashMap<i64, Vec<i64>>,
    /// While a transaction Bundle's entries run: the people they wrote, to be matched once all
    /// of them are written (`tracker::identity::settle`).
    pub deferred: Option<Vec<Deferred>>,
    /// People this unit of work created before its candidates were read: never a candidate
    /// read back from the database, as `written` already holds them in the order they came.
    pub own: HashSet<i64>,
}

/// A person written by a transaction Bundle's entry, whose matching waits for the Bundle's
/// other writes.
pub struct Deferred {
    pub entry: Option<super::EntryAt>,
    pub record: PersonRecord,
    pub updated: bool,
}

impl LinkPool {
    /// Up to `max` people written here sharing a lock key with `keys`, those sharing more first.
    pub fn written_near(&self, keys: &[i64], max: usize) -> Vec<i64> {
        let mut shared: HashMap<i64, usize> = HashMap::new();
        for k in keys {
            // The latest `max` under each key: a Bundle of thousands of look-alikes stays linear.
            for id in self
                .written_by_key
                .get(k)
                .into_iter()
                .flatten()
                .rev()
                .take(max)
            {
                *shared.entry(*id).or_default() += 1;
            }
        }
        let mut ids: Vec<(i64, usize)> = shared.into_iter().collect();
        // Most keys shared first, then the latest written.
        ids.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        ids.truncate(max);
        ids.into_iter().map(|(id, _)| id).collect()
    }

    pub fn add_written(&mut self, p: PersonRecord, d: Demographics, keys: Vec<i64>) {
        if let Some((_, _, old)) = self.written.get(&p.id) {
            for k in old {
                if let Some(v) = self.written_by_key.get_mut(k) {
                    v.retain(|x| *x != p.id);
                }
            }
        }
        for k in &keys {
            self.written_by_key.entry(*k).or_default().push(p.id);
        }
        self.written.insert(p.id, (p, d, keys));
    }
}

/// Whether `ids` are all one person already: LINKED to each other, directly or through others,
/// by what is committed or by `queued` (source, target) links of this unit of work.
pub fn all_linked(
    conn: &mut PgConnection,
    ids: &[i64],
    queued: &[(i64, i64)],
) -> Result<bool, Error> {
    if ids.len() < 2 {
        return Ok(true);
    }
    let mut pairs: Vec<(i64, i64)> = pl::table
        .filter(pl::status.eq("LINKED"))
        .filter(pl::source_id.eq_any(ids).or(pl::target_id.eq_any(ids)))
        .select((pl::source_id, pl::target_id))
        .load(conn)?;
    pairs.extend_from_slice(queued);
    // Union–find over the pairs.
    let mut parent: HashMap<i64, i64> = HashMap::new();
    fn root(parent: &mut HashMap<i64, i64>, x: i64) -> i64 {
        let p = *parent.get(&x).unwrap_or(&x);
        if p == x {
            return x;
        }
        let r = root(parent, p);
        parent.insert(x, r);
        r
    }
    for (a, b) in pairs {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        if ra != rb {
            parent.insert(ra, rb);
        }
    }
    let first = root(&mut parent, ids[0]);
    Ok(ids.iter().all(|&x| root(&mut parent, x) == first))
}

/// Takes the transaction-scoped advisory locks `keys` (those not held yet), in order, so that
/// two units of work locking overlapping sets cannot wait on each other in a cycle.
pub fn lock(s: &mut Scoped, keys: &[i64]) -> Result<(), Error> {
    let mut wanted: Vec<i64> = keys
        .iter()
        .copied()
        .filter(|k| !s.links.locked.contains(k))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    wanted.sort_unstable();
    wanted.dedup();
    let mut sql = super::dynamic::Sql::default();
    let keys = sql.bind(super::dynamic::Bind::Ints(wanted.clone()));
    sql.query(format!(
        "SELECT count(pg_advisory_xact_lock(k)) AS n FROM unnest({keys}::int8[]) AS k"
    ))
    .execute(s.conn()?)?;
    s.links.locked.extend(wanted);
    Ok(())
}

/// One blocking look-up: person `query` (an index into the caller's list) under a key.
pub struct KeyQuery<'a> {
    pub query: i32,
    pub kind: &'a str,
    pub code: &'a str,
    pub year: Option<i32>,
}

#[derive(QueryableByName)]
struct Hit {
    #[diesel(sql_type = Integer)]
    q: i32,
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// For every query person, the ids of the people sharing a blocking key with it (name codes
/// within `window` years of birth, or the name pair, or the phone: at most `max`, those sharing
/// more keys first) or holding one of its identifier values. One round trip for any number of
/// query people (a whole Bundle), through `kiunga_match_candidates` (migration 7).
/// `people[q]` says who query person `q` is. Scope is not applied: callers decide what they may
/// show.
///
/// `single_valued` are the query people's values in single-valued systems (`system|value`): a
/// person holding another value there is two people with the query person (a hard rule of the
/// engine), so they are left out while the keys are read rather than loaded and compared.
/// A query person holding a value of the primary system never reads the keys of people holding
/// one (migration 9).
pub fn candidates(
    s: &mut Scoped,
    keys: &[KeyQuery],
    identifiers: &[(i32, i64, String)],
    single_valued: &[(i32, String)],
    people: &[QueryPerson],
    window: i32,
    max: i64,
) -> Result<Vec<(usize, i64)>, Error> {
    use super::dynamic::{Bind, Sql};
    let ints = |v: Vec<i32>| Bind::Ints(v.into_iter().map(i64::from).collect());
    let texts = |v: Vec<&str>| Bind::Texts(v.into_iter().map(str::to_owned).collect());
    let mut kq = Vec::new();
    let mut kk = Vec::new();
    let mut kc = Vec::new();
    let mut ky = Vec::new();
    for k in keys {
        kq.push(k.query);
        kk.push(k.kind);
        kc.push(k.code);
        // -1 for "no year": unnest cannot carry a NULL element through an array bind.
        ky.push(k.year.unwrap_or(-1));
    }
    let mut iq = Vec::new();
    let mut ia = Vec::new();
    let mut iv = Vec::new();
    for (q, attribute, value) in identifiers {
        iq.push(*q);
        ia.push(*attribute);
        iv.push(value.as_str());
    }
    let (sq, sv): (Vec<i32>, Vec<&str>) =
        single_valued.iter().map(|(q, v)| (*q, v.as_str())).unzip();
    // Built with `dynamic::Sql`, whose statements stay prepared: as a `sql_query` it was parsed
    // on every create.
    let mut sql = Sql::default();
    let args = [
        format!("{}::int4[]", sql.bind(ints(kq))),
        sql.bind(texts(kk)),
        sql.bind(texts(kc)),
        format!("{}::int4[]", sql.bind(ints(ky))),
        format!("{}::int4", sql.bind(Bind::Int(i64::from(window)))),
        sql.bind(Bind::Int(max)),
        format!("{}::int4[]", sql.bind(ints(iq))),
        sql.bind(Bind::Ints(ia)),
        sql.bind(texts(iv)),
        sql.bind(Bind::Ints(people.iter().map(|p| p.id).collect())),
        format!("{}::int4[]", sql.bind(ints(sq))),
        sql.bind(texts(sv)),
        sql.bind(Bind::Flags(
            people.iter().map(|p| p.holds_primary).collect(),
        )),
    ];
    let hits: Vec<Hit> = sql
        .query(format!(
            "SELECT q, id FROM kiunga_match_candidates({})",
            args.join(", ")
        ))
        .load(s.conn()?)?;
    Ok(hits.into_iter().map(|h| (h.q as usize, h.id)).collect())
}

/// A query person of [`candidates`]: their own id (0 when not stored yet), never a candidate of
/// theirs, and whether they hold a value of the primary single-valued system.
pub struct QueryPerson {
    pub id: i64,
    pub holds_primary: bool,
}

/// One stored decision about a pair.
#[derive(Debug, Clone, Queryable)]
pub struct Link {
    pub id: i64,
    pub source_id: i64,
    pub target_id: i64,
    pub status: String,
    pub origin: String,
    pub score: f64,
    pub grade: String,
    pub ruleset: String,
    pub explanation: Value,
    pub created: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
    pub decided_by: Option<String>,
}

/// The decisions that involve `person`.
pub fn of_person(conn: &mut PgConnection, person: i64) -> Result<Vec<Link>, Error> {
    Ok(pl::table
        .filter(pl::source_id.eq(person).or(pl::target_id.eq(person)))
        .load(conn)?)
}

/// Drops the engine's own decisions about `person` (before it is matched again after an update);
/// people's decisions and merges stay.
pub fn forget_automatic(conn: &mut PgConnection, person: i64) -> Result<(), Error> {
    diesel::delete(
        pl::table
            .filter(pl::source_id.eq(person).or(pl::target_id.eq(person)))
            .filter(pl::origin.eq("AUTO"))
            .filter(pl::status.eq_any(["LINKED", "OPEN"])),
    )
    .execute(conn)?;
    Ok(())
}

/// How a record shows another in `Patient.link`, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shown {
    /// This record was merged into the other (`replaced-by`).
    ReplacedBy,
    /// The other record was merged into this one (`replaces`).
    Replaces,
    /// LINKED: two records of one person (`seealso`).
    SeeAlso,
    /// A RelatedPerson that stands for this person in someone else's record (`seealso`, to a
    /// RelatedPerson).
    Related,
}

impl Shown {
    pub fn code(self) -> &'static str {
        match self {
            Shown::SeeAlso | Shown::Related => "seealso",
            Shown::ReplacedBy => "replaced-by",
            Shown::Replaces => "replaces",
        }
    }
}

/// One entry of `Patient.link` before scope: (the person's uid, the other record's uid, its org
/// unit, how it is shown, whether the caller may see it).
pub type PersonLink = (String, String, i64, Shown, bool);

/// For each of `uids` (people): the uid and org unit of every live record LINKED to it or merged
/// with it, and how; and every live RelatedPerson that stands for it in someone else's record,
/// with the org unit of that someone, and whether the caller (search `scope`, None for the whole
/// tree) may see them: registered or owned in scope. One round trip to `kiunga_person_links` (migration 10),
/// whose plan is kept per connection. A MERGED pair's source is the record merged away.
pub fn linked(
    conn: &mut PgConnection,
    uids: &[&str],
    scope: Option<(Vec<String>, Vec<String>)>,
) -> Result<Vec<PersonLink>, Error> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        person: String,
        #[diesel(sql_type = Text)]
        other: String,
        #[diesel(sql_type = BigInt)]
        other_org_unit_id: i64,
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = BigInt)]
        person_id: i64,
        #[diesel(sql_type = BigInt)]
        source_id: i64,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        visible: bool,
    }
    let (roots, patterns) = match scope {
        Some((r, p)) => (Some(r), Some(p)),
        None => (None, None),
    };
    let rows: Vec<Row> = diesel::sql_query("SELECT * FROM kiunga_person_links($1, $2, $3)")
        .bind::<Array<Text>, _>(uids)
        .bind::<diesel::sql_types::Nullable<Array<Text>>, _>(roots)
        .bind::<diesel::sql_types::Nullable<Array<Text>>, _>(patterns)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let shown = match (r.kind.as_str(), r.person_id == r.source_id) {
                ("RELATED", _) => Shown::Related,
                ("MERGED", true) => Shown::ReplacedBy,
                ("MERGED", false) => Shown::Replaces,
                _ => Shown::SeeAlso,
            };
            (r.person, r.other, r.other_org_unit_id, shown, r.visible)
        })
        .collect())
}

/// The rule set named by decisions a person made without the engine (`$mdm-create-link`, a
/// merge of a pair the engine never compared).
pub const MANUAL_RULESET: &str = "manual";

/// Records that `source` was merged into `target`: the pair's decision becomes MERGED, a
/// person's, turned so that its source is the record merged away. A pair the engine never
/// compared gets a decision of its own, saying a person made it.
pub fn set_merged(
    conn: &mut PgConnection,
    source: i64,
    target: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    match pair_for_update(conn, source, target)? {
        Some(l) => {
            diesel::update(pl::table.find(l.id))
                .set((
                    pl::source_id.eq(source),
                    pl::target_id.eq(target),
                    pl::status.eq("MERGED"),
                    pl::origin.eq("MANUAL"),
                    pl::decided_by.eq(actor),
                    pl::last_updated.eq(now),
                ))
                .execute(conn)?;
            Ok(())
        }
        None => insert_manual(
            conn,
            (source, target),
            "MERGED",
            actor,
            now,
            "merged by a person (Patient/$merge)",
        ),
    }
}

/// A person's decision about a pair the engine has no decision about: LINKED (score 1, certain),
/// INVALID (score 0, certainly not), OPEN or MERGED. `why` is kept as the explanation's rule.
pub fn insert_manual(
    conn: &mut PgConnection,
    (source, target): (i64, i64),
    status: &str,
    actor: &str,
    now: DateTime<Utc>,
    why: &str,
) -> Result<(), Error> {
    let (score, grade) = match status {
        "INVALID" => (0.0, "certainly-not"),
        "OPEN" => (0.5, "possible"),
        _ => (1.0, "certain"),
    };
    diesel::insert_into(pl::table)
        .values((
            pl::source_id.eq(source),
            pl::target_id.eq(target),
            pl::status.eq(status),
            pl::origin.eq("MANUAL"),
            pl::score.eq(score),
            pl::grade.eq(grade),
            pl::ruleset.eq(MANUAL_RULESET),
            pl::explanation.eq(serde_json::json!([{ "url": "rule", "valueString": why }])),
            pl::created.eq(now),
            pl::last_updated.eq(now),
            pl::decided_by.eq(actor),
        ))
        .execute(conn)?;
    Ok(())
}

/// A filter over decisions, as `$mdm-query-links` takes it (ids are tracked-entity ids).
#[derive(Default)]
pub struct LinkFilter {
    pub golden: Option<i64>,
    pub resource: Option<i64>,
    pub statuses: Vec<&'static str>,
    pub origin: Option<&'static str>,
    pub offset: i64,
    pub count: i64,
}

/// Decisions matching `f`, oldest first, with both records' uids, whose records the caller may
/// see (`visible` org units; None for all), and how many there are in all.
/// A decision with the uids of its source and target records.
pub type LinkOf = (Link, String, String);

pub fn query(s: &mut Scoped, f: &LinkFilter) -> Result<(Vec<LinkOf>, i64), Error> {
    let (a, b) = diesel::alias!(te as a, te as b);
    let mut q = pl::table
        .inner_join(a.on(a.field(te::id).eq(pl::source_id)))
        .inner_join(b.on(b.field(te::id).eq(pl::target_id)))
        .into_boxed();
    // Both records' people must be ones the caller may find: registered or owned in scope.
    if let Some((roots, patterns)) = s.ctx.search.sql_filter() {
        q = q
            .filter(super::scoped::people_filter_as(
                "a",
                roots.clone(),
                patterns.clone(),
            ))
            .filter(super::scoped::people_filter_as("b", roots, patterns));
    }
    if let Some(g) = f.golden {
        q = q.filter(pl::target_id.eq(g));
    }
    if let Some(r) = f.resource {
        q = q.filter(pl::source_id.eq(r).or(pl::target_id.eq(r)));
    }
    if !f.statuses.is_empty() {
        q = q.filter(pl::status.eq_any(f.statuses.clone()));
    }
    if let Some(o) = f.origin {
        q = q.filter(pl::origin.eq(o));
    }
    let rows: Vec<(Link, String, String, i64)> = q
        .select((
            pl::all_columns,
            a.field(te::uid),
            b.field(te::uid),
            diesel::dsl::sql::<BigInt>("count(*) OVER ()"),
        ))
        .order((pl::created, pl::id))
        .offset(f.offset)
        .limit(f.count)
        .load(s.conn()?)?;
    let total = rows.first().map_or(0, |r| r.3);
    Ok((
        rows.into_iter().map(|(l, s, t, _)| (l, s, t)).collect(),
        total,
    ))
}

/// The decision about the pair (either order), locked until the transaction ends.
pub fn pair_for_update(conn: &mut PgConnection, x: i64, y: i64) -> Result<Option<Link>, Error> {
    Ok(pl::table
        .filter(
            pl::source_id
                .eq(x)
                .and(pl::target_id.eq(y))
                .or(pl::source_id.eq(y).and(pl::target_id.eq(x))),
        )
        .for_update()
        .first(conn)
        .optional()?)
}

/// Records a person's decision on an existing pair.
pub fn decide(
    conn: &mut PgConnection,
    id: i64,
    status: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(pl::table.find(id))
        .set((
            pl::status.eq(status),
            pl::origin.eq("MANUAL"),
            pl::decided_by.eq(actor),
            pl::last_updated.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// How many decisions there are per (status, origin), for `kiunga rematch`'s report.
pub fn counts(conn: &mut PgConnection) -> Result<Vec<(String, String, i64)>, Error> {
    Ok(pl::table
        .group_by((pl::status, pl::origin))
        .select((pl::status, pl::origin, diesel::dsl::count_star()))
        .order((pl::status, pl::origin))
        .load(conn)?)
}
