//! The one door to patient data: a connection paired with the caller's [`RequestContext`], for one
//! unit of work (a request, a whole transaction Bundle, one entry of a batch).
//! Queries for records take their org-unit filter from here, so scope is applied in SQL. New rows
//! are queued here and written in a few statements ([`Pending`]); every other statement goes
//! through [`Scoped::conn`], which writes the queue first.

use diesel::dsl::sql;
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};

use super::cache::Cache;
use super::links::LinkPool;
use super::pending::{self, Pending, Seq};
use super::schema::org_unit;
use crate::context::{OrgScope, RequestContext};
use crate::error::Error;

pub struct Scoped<'a> {
    conn: &'a mut PgConnection,
    pub ctx: &'a RequestContext,
    pending: Pending,
    pub cache: Cache,
    /// Matching on write: locks held, candidates read, people written (see `tracker::identity`).
    pub links: LinkPool,
    /// Per sequence: ids taken and not handed out yet, and how many were taken last time (or,
    /// before the first reservation, minus how many are expected).
    reserved: Vec<(Seq, Vec<i64>, i32)>,
    /// The Bundle entry being run, if any: rows queued now are refused later (at a flush) in its
    /// name.
    pub entry: Option<EntryAt>,
    /// The caller's scope as ids, read once per unit of work (see [`ProgramScope`]).
    program_scope: Option<Option<ProgramScope>>,
    /// What this unit of work wrote, for its access record (`crate::audit`).
    pub touched: crate::audit::Touched,
    /// Whether this unit of work changed a record (births and deaths are looked for then).
    pub changed: bool,
    /// People read here whose record says nobody is linked to them (`tracked_entity.linked`,
    /// migration 21): rendering them needs no look-up of `Patient.link` while this unit of work
    /// has changed nothing ([`Scoped::known_unlinked`]).
    unlinked: std::collections::HashSet<String>,
}

/// The caller's scope as the ownership rule ([`VISIBLE`]) takes it: org-unit ids
/// of the search and capture scopes, the OPEN/AUDITED and the PROTECTED programs, and who is
/// asking (for break-the-glass grants). The one place where DHIS2's ownership rule meets a query.
#[derive(Debug, Clone)]
pub struct ProgramScope {
    pub search: Vec<i64>,
    pub capture: Vec<i64>,
    pub open: Vec<i64>,
    pub protected: Vec<i64>,
    pub actor: String,
    /// The programs the caller has access to (every program unless its registration names some).
    pub programs: Vec<i64>,
}

impl ProgramScope {
    /// The caller's scope as ids from the metadata in memory, or None when the caller may see
    /// everything (both scopes unrestricted): what [`Scoped::program_scope`] reads from the
    /// database, without a query.
    pub fn resolve(
        ctx: &RequestContext,
        md: &crate::tracker::metadata::Metadata,
    ) -> Option<ProgramScope> {
        if ctx.search == OrgScope::All && ctx.capture == OrgScope::All && ctx.programs.is_none() {
            return None;
        }
        let ids = |scope: &OrgScope| -> Vec<i64> {
            md.org_units
                .iter()
                .filter(|o| scope.contains(&o.path))
                .map(|o| o.id)
                .collect()
        };
        let of = |wanted: &[&str]| -> Vec<i64> {
            md.programs
                .iter()
                .filter(|p| wanted.contains(&p.access_level.as_str()))
                .map(|p| p.id)
                .collect()
        };
        Some(ProgramScope {
            search: ids(&ctx.search),
            capture: ids(&ctx.capture),
            open: of(&["OPEN", "AUDITED"]),
            protected: of(&["PROTECTED"]),
            actor: ctx.actor.to_string(),
            programs: md
                .programs
                .iter()
                .filter(|p| ctx.may_use_program(&p.uid))
                .map(|p| p.id)
                .collect(),
        })
    }

    /// The rule as a diesel filter, over the rows `on` names.
    pub fn visible<QS: 'static>(
        &self,
        on: RuleOn<'static>,
    ) -> Box<dyn diesel::BoxableExpression<QS, Pg, SqlType = Bool>> {
        Box::new(filters::OwnershipRule {
            on,
            scope: self.clone(),
        })
    }

    /// The rule as SQL text over the rows `on` names, with the binds numbered from `first`; the
    /// values to bind, in order, are search, capture, open, protected, actor, programs.
    pub fn call(on: RuleOn, first: usize) -> String {
        let n = |i: usize| format!("${}", first + i);
        Self::sql(on, [n(0), n(1), n(2), n(3), n(4), n(5)])
    }

    /// The rule over the rows `on` names, with this scope's values bound in `sql` (a run-time
    /// statement).
    pub fn bound(self, sql: &mut super::dynamic::Sql, on: RuleOn) -> String {
        use super::dynamic::Bind;
        let binds = [
            sql.bind(Bind::Ints(self.search)),
            sql.bind(Bind::Ints(self.capture)),
            sql.bind(Bind::Ints(self.open)),
            sql.bind(Bind::Ints(self.protected)),
            sql.bind(Bind::Text(self.actor)),
            sql.bind(Bind::Ints(self.programs)),
        ];
        Self::sql(on, binds)
    }

    /// The rule's text for `on`, with the placeholders of search, capture, open, protected, actor
    /// and programs put in.
    pub fn sql(on: RuleOn, binds: [String; 6]) -> String {
        let mut out = String::with_capacity(VISIBLE.len() + 64);
        for piece in on.pieces() {
            match piece {
                Piece::Sql(t) => out.push_str(t),
                Piece::Slot => out.push_str(on.sql()),
                Piece::Bind(i) => out.push_str(&binds[*i]),
            }
        }
        out
    }
}

/// What the ownership rule is evaluated over.
#[derive(Debug, Clone, Copy)]
pub enum RuleOn<'a> {
    /// A row that names its enrollment (the SQL of its id, e.g. `e.enrollment_id`): the rule
    /// finds the owner through the enrollment ([`VISIBLE`]).
    Enrollment(&'a str),
    /// A data value (its table or alias, e.g. `d`), which carries its program and owner
    /// (migration 20): the rule tests the row itself ([`VALUE_VISIBLE`]).
    Value(&'a str),
}

impl RuleOn<'_> {
    fn sql(&self) -> &str {
        match self {
            RuleOn::Enrollment(s) | RuleOn::Value(s) => s,
        }
    }

    fn pieces(&self) -> &'static [Piece] {
        static ENROLLMENT: std::sync::OnceLock<Vec<Piece>> = std::sync::OnceLock::new();
        static VALUE: std::sync::OnceLock<Vec<Piece>> = std::sync::OnceLock::new();
        match self {
            RuleOn::Enrollment(_) => ENROLLMENT.get_or_init(|| cut(VISIBLE, "en")),
            RuleOn::Value(_) => VALUE.get_or_init(|| cut(VALUE_VISIBLE, "row")),
        }
    }
}

/// DHIS2's ownership rule for one enrollment, inline in the statement (a function call per row
/// cost a PL/pgSQL call and its SPI query each; inline, the rule is part of the statement's plan,
/// which the pool keeps). `{en}` is the enrollment id; `{0}`…`{5}` are the caller's search org
/// units, capture org units, OPEN/AUDITED programs, PROTECTED programs, actor (break-the-glass
/// grants) and granted programs. A program has one access level, so the three branches are the
/// function `kiunga_enrollment_visible`'s (migration 14) in SQL: the owner (a transfer's, else the
/// enrolling org unit) in the capture scope; an open program owned in the search scope; a
/// protected program with a live grant.
pub const VISIBLE: &str =
    "EXISTS (SELECT 1 FROM enrollment vis_en LEFT JOIN program_ownership vis_po \
ON vis_po.tracked_entity_id = vis_en.tracked_entity_id AND vis_po.program_id = vis_en.program_id \
WHERE vis_en.id = {en} AND vis_en.program_id = ANY({5}) \
AND (COALESCE(vis_po.org_unit_id, vis_en.org_unit_id) = ANY({1}) \
OR (vis_en.program_id = ANY({2}) AND COALESCE(vis_po.org_unit_id, vis_en.org_unit_id) = ANY({0})) \
OR (vis_en.program_id = ANY({3}) AND EXISTS (SELECT 1 FROM ownership_override vis_o \
WHERE vis_o.actor = {4} AND vis_o.tracked_entity_id = vis_en.tracked_entity_id \
AND vis_o.program_id = vis_en.program_id AND vis_o.expires_at > now()))))";

/// [`VISIBLE`] for a data value `{row}`, from the program and owner the value carries: no
/// look-up but a break-the-glass grant's (protected programs only). The carried owner is
/// `COALESCE(program_ownership, enrolling org unit)`, kept so by migration 20's triggers.
pub const VALUE_VISIBLE: &str = "({row}.program_id = ANY({5}) \
AND ({row}.owner_org_unit_id = ANY({1}) \
OR ({row}.program_id = ANY({2}) AND {row}.owner_org_unit_id = ANY({0})) \
OR ({row}.program_id = ANY({3}) AND EXISTS (SELECT 1 FROM enrollment vis_en \
JOIN ownership_override vis_o ON vis_o.tracked_entity_id = vis_en.tracked_entity_id \
AND vis_o.program_id = vis_en.program_id \
WHERE vis_en.id = {row}.enrollment_id AND vis_o.actor = {4} AND vis_o.expires_at > now()))))";

pub(crate) enum Piece {
    Sql(&'static str),
    /// Where [`RuleOn`]'s SQL goes.
    Slot,
    Bind(usize),
}

/// A rule's text cut at its slots (once per process: every scoped read of program data uses it).
fn cut(template: &'static str, slot: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push(Piece::Sql(&rest[..i]));
        let end = i + rest[i..].find('}').expect("the rule's slots are closed");
        let name = &rest[i + 1..end];
        out.push(if name == slot {
            Piece::Slot
        } else {
            Piece::Bind(name.parse().expect("the rule's slots are its row or 0-5"))
        });
        rest = &rest[end + 1..];
    }
    out.push(Piece::Sql(rest));
    out
}

/// A Bundle entry, as errors name it.
#[derive(Debug, Clone)]
pub struct EntryAt {
    pub index: usize,
    /// The request, e.g. `POST Patient`.
    pub what: String,
}

impl EntryAt {
    /// `Bundle.entry[3] (POST Patient)`
    pub fn label(&self) -> String {
        format!("Bundle.entry[{}] ({})", self.index, self.what)
    }

    /// An element's FHIRPath rooted at the entry: `Patient.birthDate` becomes
    /// `Bundle.entry[3].resource.birthDate`; a path already in the Bundle stays as it is.
    pub fn path(&self, expression: Option<&str>) -> String {
        let place = format!("Bundle.entry[{}]", self.index);
        match expression {
            None => place,
            Some(x) if x.starts_with("Bundle.") => x.to_owned(),
            Some(x) => match x.split_once('.') {
                Some((_, rest)) => format!("{place}.resource.{rest}"),
                None => format!("{place}.resource"),
            },
        }
    }
}

/// `SELECT id FROM org_unit WHERE <path in scope>`, for `org_unit_id = ANY(...)` filters.
pub type OrgIdQuery = org_unit::BoxedQuery<'static, Pg, diesel::sql_types::BigInt>;

/// Ids taken from a sequence by the first round trip of a unit of work: as many as it said it
/// would need ([`Scoped::expect`]), else one (a single create wastes no ids). Each further round
/// trip takes twice as many as the last, up to [`RESERVE_MAX`]. Ids unused at the end are lost,
/// as with any sequence.
const RESERVE_MAX: i32 = 1_600;

impl<'a> Scoped<'a> {
    /// Runs `f` as one unit of work in a database transaction (a savepoint when `conn` is already
    /// in one): the queue is written before the transaction commits, and dropped with it on error.
    ///
    /// A unit of work that wrote inserts the request's access record (`crate::audit`) before it
    /// commits, naming what it wrote: the write and its record commit together or not at all.
    pub fn transaction<T>(
        conn: &mut PgConnection,
        ctx: &RequestContext,
        f: impl FnOnce(&mut Scoped) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut audited = false;
        let out = Self::transaction_at(conn, ctx, None, |s| {
            let out = f(s)?;
            audited = s.record_access()?;
            Ok(out)
        })?;
        if audited {
            if let Some(a) = &ctx.access {
                a.mark_written();
            }
        }
        Ok(out)
    }

    /// Inserts the access record of what this unit wrote, if it wrote anything for a request.
    fn record_access(&mut self) -> Result<bool, Error> {
        let Some(access) = self.ctx.access.as_deref() else {
            return Ok(false);
        };
        if self.touched.is_empty() {
            return Ok(false);
        }
        let row = access.written_row(&self.touched);
        super::audit::insert(self.conn()?, std::slice::from_ref(&row))?;
        Ok(true)
    }

    fn new(conn: &'a mut PgConnection, ctx: &'a RequestContext, entry: Option<EntryAt>) -> Self {
        Scoped {
            conn,
            ctx,
            pending: Pending::default(),
            cache: Cache::default(),
            links: LinkPool::default(),
            reserved: Vec::new(),
            entry,
            program_scope: ctx.program_scope.clone(),
            touched: crate::audit::Touched::default(),
            changed: false,
            unlinked: std::collections::HashSet::new(),
        }
    }

    /// Notes that the person `uid`, as read from the database, has no link or relationship.
    pub fn note_unlinked(&mut self, uid: &str) {
        self.unlinked.insert(uid.to_owned());
    }

    /// Whether every one of `uids` was read here with no link, and this unit of work has written
    /// nothing since (a write may have linked them: the flag is only trusted in a read).
    pub fn known_unlinked(&self, uids: &[String]) -> bool {
        !self.changed && uids.iter().all(|u| self.unlinked.contains(u))
    }

    fn transaction_at<T>(
        conn: &mut PgConnection,
        ctx: &RequestContext,
        entry: Option<EntryAt>,
        f: impl FnOnce(&mut Scoped) -> Result<T, Error>,
    ) -> Result<T, Error> {
        conn.transaction(|c| {
            let mut s = Scoped::new(c, ctx, entry);
            let out = f(&mut s)?;
            s.flush()?;
            s.enqueue_outbox()?;
            Ok(out)
        })
    }

    /// Runs `f` outside a transaction: for units of work that only read. Anything queued is
    /// still written at the end.
    pub fn autocommit<T>(
        conn: &mut PgConnection,
        ctx: &RequestContext,
        f: impl FnOnce(&mut Scoped) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut s = Scoped::new(conn, ctx, None);
        let out = f(&mut s)?;
        s.flush()?;
        s.enqueue_outbox()?;
        Ok(out)
    }

    /// A nested unit of work in a savepoint: what it does is undone alone if it fails.
    pub fn savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Scoped) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.flush()?;
        // The nested unit may change what this one cached; forget it rather than risk a stale read.
        self.cache.clear();
        self.links = LinkPool {
            locked: std::mem::take(&mut self.links.locked),
            ..LinkPool::default()
        };
        let ctx = self.ctx;
        let mut touched = crate::audit::Touched::default();
        let out = Scoped::transaction_at(self.conn, ctx, self.entry.clone(), |s| {
            let out = f(s)?;
            touched = std::mem::take(&mut s.touched);
            Ok(out)
        })?;
        self.touched.extend(touched);
        Ok(out)
    }

    /// The connection without writing the queue first: only for reads that need nothing queued
    /// (what other units of work committed), so that a Bundle's rows still go in one COPY.
    pub fn conn_unflushed(&mut self) -> &mut PgConnection {
        self.conn
    }

    /// The connection, with every queued insert written first.
    pub fn conn(&mut self) -> Result<&mut PgConnection, Error> {
        self.flush()?;
        Ok(self.conn)
    }

    /// Queues the birth and death notifications this unit completed, in its own transaction (a
    /// unit that rolls back emits nothing). Runs after the flush, so that the rules see every row
    /// it wrote. Records themselves are queued by the change log's trigger (migration 18).
    fn enqueue_outbox(&mut self) -> Result<(), Error> {
        if !self.changed || !crate::outbox::events_active() {
            return Ok(());
        }
        self.changed = false;
        let actor = self.ctx.actor.to_string();
        let people: Vec<&str> = self
            .touched
            .patient
            .iter()
            .filter_map(|p| p.strip_prefix("Patient/"))
            .collect();
        super::outbox::enqueue_events(self.conn, &people, &actor)?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        if !self.pending.is_empty() {
            self.pending.flush(self.conn)?;
        }
        Ok(())
    }

    /// Queues inserts to be written before the next statement or at commit.
    pub fn defer(&mut self) -> &mut Pending {
        &mut self.pending
    }

    /// A fresh id of `seq`'s table for a deferred insert.
    pub fn next_id(&mut self, seq: Seq) -> Result<i64, Error> {
        let at = match self.reserved.iter().position(|(s, _, _)| *s == seq) {
            Some(i) => i,
            None => {
                self.reserved.push((seq, Vec::new(), 0));
                self.reserved.len() - 1
            }
        };
        let (_, ids, last) = &mut self.reserved[at];
        if ids.is_empty() {
            let n = match *last {
                0 => 1,
                expected if expected < 0 => (-expected).min(RESERVE_MAX),
                taken => (taken * 2).min(RESERVE_MAX),
            };
            // A sequence call reads nothing that is queued, so it need not flush.
            let mut taken = pending::reserve(self.conn, seq, n)?;
            taken.reverse();
            *ids = taken;
            *last = n;
        }
        ids.pop()
            .ok_or_else(|| Error::Internal("the id reservation came back empty".into()))
    }

    /// Says that about `n` ids of `seq` will be needed (a Bundle's new records), so that they are
    /// reserved in one round trip.
    pub fn expect(&mut self, seq: Seq, n: usize) {
        if n == 0 {
            return;
        }
        let n = i32::try_from(n).unwrap_or(RESERVE_MAX).min(RESERVE_MAX);
        match self.reserved.iter_mut().find(|(s, _, _)| *s == seq) {
            Some((_, ids, last)) if ids.is_empty() && *last <= 0 => *last = -n,
            Some(_) => {}
            None => self.reserved.push((seq, Vec::new(), -n)),
        }
    }

    /// The people the caller may find and read, as a diesel filter on `tracked_entity`, or None
    /// when that is everyone. See [`person_in_scope_sql`].
    pub fn visible_people<QS: 'static>(
        &self,
    ) -> Option<Box<dyn diesel::BoxableExpression<QS, Pg, SqlType = Bool>>> {
        Some(self.people_scope()?.filter())
    }

    /// The caller's search scope over `tracked_entity`, or None for the whole tree.
    pub fn people_scope(&self) -> Option<PeopleScope> {
        let (roots, patterns) = self.ctx.search.sql_filter()?;
        // With the scope's org units resolved in memory the filter is a fixed statement that
        // Postgres keeps prepared; the path form is parsed and planned on every call.
        Some(match self.search_ids() {
            Some(ids) => PeopleScope::Ids(ids.to_vec()),
            None => PeopleScope::Paths(roots, patterns),
        })
    }

    /// The org units of the caller's search scope as ids, when resolved from the metadata in memory
    /// (`RequestContext::resolved`) and the scope is restricted.
    pub fn search_ids(&self) -> Option<&[i64]> {
        if self.ctx.search == OrgScope::All {
            return None;
        }
        match &self.program_scope {
            Some(Some(ps)) => Some(&ps.search),
            _ => None,
        }
    }

    /// The caller's scope for program data (enrollments, events, data values), or None when the
    /// caller may see everything (both scopes unrestricted).
    pub fn program_scope(&mut self) -> Result<Option<ProgramScope>, Error> {
        if let Some(p) = &self.program_scope {
            return Ok(p.clone());
        }
        let scope = if self.ctx.search == OrgScope::All
            && self.ctx.capture == OrgScope::All
            && self.ctx.programs.is_none()
        {
            None
        } else {
            let ids = |conn: &mut PgConnection, scope: &OrgScope| -> Result<Vec<i64>, Error> {
                Ok(match org_ids_in(scope) {
                    Some(q) => q.load(conn)?,
                    None => org_unit::table.select(org_unit::id).load(conn)?,
                })
            };
            let search = ids(self.conn, &self.ctx.search)?;
            let capture = ids(self.conn, &self.ctx.capture)?;
            use super::schema::program;
            let levels: Vec<(i64, String, String)> = program::table
                .select((program::id, program::access_level, program::uid))
                .load(self.conn)?;
            let of = |wanted: &[&str]| {
                levels
                    .iter()
                    .filter(|(_, l, _)| wanted.contains(&l.as_str()))
                    .map(|(id, _, _)| *id)
                    .collect::<Vec<i64>>()
            };
            Some(ProgramScope {
                search,
                capture,
                open: of(&["OPEN", "AUDITED"]),
                protected: of(&["PROTECTED"]),
                actor: self.ctx.actor.to_string(),
                programs: levels
                    .iter()
                    .filter(|(_, _, uid)| self.ctx.may_use_program(uid))
                    .map(|(id, _, _)| *id)
                    .collect(),
            })
        };
        self.program_scope = Some(scope.clone());
        Ok(scope)
    }
}

/// The caller's search scope over `tracked_entity`: org-unit ids resolved in memory, or the
/// subtree paths and patterns (when nothing resolved them).
#[derive(Debug, Clone)]
pub enum PeopleScope {
    Ids(Vec<i64>),
    Paths(Vec<String>, Vec<String>),
}

impl PeopleScope {
    pub fn filter<QS: 'static>(self) -> Box<dyn diesel::BoxableExpression<QS, Pg, SqlType = Bool>> {
        match self {
            PeopleScope::Ids(ids) => Box::new(filters::PeopleInScope { ids }),
            PeopleScope::Paths(roots, patterns) => people_filter(roots, patterns),
        }
    }
}

/// [`person_in_scope_sql`] for `tracked_entity` as a diesel filter, from
/// [`OrgScope::sql_filter`]'s values.
pub fn people_filter<QS: 'static>(
    roots: Vec<String>,
    patterns: Vec<String>,
) -> Box<dyn diesel::BoxableExpression<QS, Pg, SqlType = Bool>> {
    people_filter_as("tracked_entity", roots, patterns)
}

/// [`people_filter`] for `tracked_entity` under another name (a diesel alias).
pub fn people_filter_as<QS: 'static>(
    te: &str,
    roots: Vec<String>,
    patterns: Vec<String>,
) -> Box<dyn diesel::BoxableExpression<QS, Pg, SqlType = Bool>> {
    Box::new(
        sql::<Bool>(&format!(
            "({te}.org_unit_id IN (SELECT ou.id FROM org_unit ou WHERE ou.path = ANY("
        ))
        .bind::<Array<Text>, _>(roots.clone())
        .sql(") OR ou.path LIKE ANY(")
        .bind::<Array<Text>, _>(patterns.clone())
        .sql(&format!(")) OR EXISTS (SELECT 1 FROM program_ownership po JOIN org_unit ou ON ou.id = po.org_unit_id WHERE po.tracked_entity_id = {te}.id AND (ou.path = ANY("))
        .bind::<Array<Text>, _>(roots)
        .sql(") OR ou.path LIKE ANY(")
        .bind::<Array<Text>, _>(patterns)
        .sql("))))"),
    )
}

/// SQL: the person `te` (an alias of `tracked_entity`) is in the caller's search scope, i.e.
/// registered at an org unit of it or owned there in some program (after a transfer the new
/// facility finds the person). `roots` and `patterns` are the placeholders bound to
/// [`OrgScope::sql_filter`]'s values.
pub fn person_in_scope_sql(te: &str, roots: &str, patterns: &str) -> String {
    format!(
        "({te}.org_unit_id IN (SELECT ou.id FROM org_unit ou WHERE ou.path = ANY({roots}) OR ou.path LIKE ANY({patterns})) \
         OR EXISTS (SELECT 1 FROM program_ownership po JOIN org_unit ou ON ou.id = po.org_unit_id \
         WHERE po.tracked_entity_id = {te}.id AND (ou.path = ANY({roots}) OR ou.path LIKE ANY({patterns}))))"
    )
}

/// [`person_in_scope_sql`] with the scope's org units as ids (the placeholder `ids`): a plain
/// comparison instead of path patterns matched against the org-unit table on every call.
pub fn person_in_ids_sql(te: &str, ids: &str) -> String {
    format!(
        "({te}.org_unit_id = ANY({ids}) OR EXISTS (SELECT 1 FROM program_ownership po \
         WHERE po.tracked_entity_id = {te}.id AND po.org_unit_id = ANY({ids})))"
    )
}

pub fn org_ids_in(scope: &OrgScope) -> Option<OrgIdQuery> {
    let (roots, patterns) = scope.sql_filter()?;
    Some(
        org_unit::table
            .select(org_unit::id)
            .filter(
                org_unit::path
                    .eq_any(roots)
                    .or(sql::<Bool>("org_unit.path LIKE ANY(")
                        .bind::<Array<Text>, _>(patterns)
                        .sql(")")),
            )
            .into_boxed(),
    )
}

/// Scope filters as query fragments of fixed SQL text, so that diesel keeps the statements that
/// carry them prepared (a `sql()` literal marks a statement unsafe to cache: parsed and planned on
/// every execution, which cost a read of a Patient 0.4 ms of planning).
mod filters {
    use diesel::expression::{
        is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
    };
    use diesel::pg::Pg;
    use diesel::query_builder::{AstPass, QueryFragment, QueryId};
    use diesel::sql_types::{Array, BigInt, Bool, Text};
    use diesel::QueryResult;

    use super::ProgramScope;

    /// `tracked_entity` registered at, or owned in some program by, one of `ids` (org units).
    #[derive(Debug, Clone)]
    pub struct PeopleInScope {
        pub ids: Vec<i64>,
    }

    /// [`ProgramScope`]'s rule over the rows `on` names.
    #[derive(Debug, Clone)]
    pub struct OwnershipRule {
        pub on: super::RuleOn<'static>,
        pub scope: ProgramScope,
    }

    macro_rules! boolean_fragment {
        ($t:ty) => {
            impl Expression for $t {
                type SqlType = Bool;
            }
            impl<QS> AppearsOnTable<QS> for $t {}
            impl<QS> SelectableExpression<QS> for $t {}
            impl<GB> ValidGrouping<GB> for $t {
                type IsAggregate = is_aggregate::Never;
            }
            impl QueryId for $t {
                type QueryId = ();
                const HAS_STATIC_QUERY_ID: bool = false;
            }
        };
    }
    boolean_fragment!(PeopleInScope);
    boolean_fragment!(OwnershipRule);

    impl QueryFragment<Pg> for PeopleInScope {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.push_sql("(tracked_entity.org_unit_id = ANY(");
            out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
            out.push_sql(") OR EXISTS (SELECT 1 FROM program_ownership po WHERE po.tracked_entity_id = tracked_entity.id AND po.org_unit_id = ANY(");
            out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
            out.push_sql(")))");
            Ok(())
        }
    }

    impl QueryFragment<Pg> for OwnershipRule {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            let s = &self.scope;
            for piece in self.on.pieces() {
                match piece {
                    super::Piece::Sql(t) => out.push_sql(t),
                    super::Piece::Slot => out.push_sql(self.on.sql()),
                    super::Piece::Bind(4) => out.push_bind_param::<Text, _>(&s.actor)?,
                    super::Piece::Bind(i) => {
                        let ids = match *i {
                            0 => &s.search,
                            1 => &s.capture,
                            2 => &s.open,
                            3 => &s.protected,
                            _ => &s.programs,
                        };
                        out.push_bind_param::<Array<BigInt>, _>(ids)?
                    }
                }
            }
            Ok(())
        }
    }
}
