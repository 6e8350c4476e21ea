//! Test support: a real Postgres database per test, cloned from a migrated template, and the
//! gateway served over real HTTP on 127.0.0.1.
//!
//! The admin URL comes from `KIUNGA_TEST_DATABASE_URL` (set by `make test`), else the local
//! default. The template database is named after a hash of the migrations and metadata fixtures, so
//! a change to either builds a fresh one; test databases are dropped when the test ends.
#![allow(dead_code)]

pub mod clients;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use diesel::prelude::*;
use diesel::{sql_query, PgConnection};
use kiunga::app::{AppState, Gateway};
use kiunga::config::Config;
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn admin_url() -> String {
    std::env::var("KIUNGA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The same server with another database name (query parameters kept).
pub fn with_db(url: &str, db: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let scheme_end = main.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

fn hash_dir(h: &mut DefaultHasher, dir: &Path) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_dir(h, &p);
        } else if let Ok(bytes) = std::fs::read(&p) {
            p.file_name().hash(h);
            bytes.hash(h);
        }
    }
}

fn template_name() -> String {
    let mut h = DefaultHasher::new();
    hash_dir(&mut h, &repo().join("gateway/migrations"));
    hash_dir(&mut h, &repo().join("fixtures/metadata"));
    format!("kiunga_tpl_{:016x}", h.finish())
}

fn admin() -> PgConnection {
    PgConnection::establish(&kiunga::store::libpq_url(&admin_url())).unwrap_or_else(|e| {
        panic!("tests need Postgres: cannot connect to {} ({e}); run `make test`, or set KIUNGA_TEST_DATABASE_URL", admin_url())
    })
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    e: bool,
}

/// Builds the migrated, metadata-loaded template once per content hash (across test processes:
/// an advisory lock serialises the builders).
fn ensure_template() -> String {
    let name = template_name();
    let mut conn = admin();
    sql_query("SELECT pg_advisory_lock(727274)")
        .execute(&mut conn)
        .expect("advisory lock");
    let exists: Exists = sql_query(format!(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}') AS e"
    ))
    .get_result(&mut conn)
    .expect("pg_database");
    if !exists.e {
        let building = format!("{name}_build");
        sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut conn)
            .expect("drop stale build");
        sql_query(format!("CREATE DATABASE {building}"))
            .execute(&mut conn)
            .expect("create template");
        {
            let mut t = PgConnection::establish(&kiunga::store::libpq_url(&with_db(
                &admin_url(),
                &building,
            )))
            .expect("connect template");
            kiunga::store::run_migrations(&mut t).expect("migrations");
            kiunga::store::metadata_import::import_dir(&mut t, &repo().join("fixtures/metadata"))
                .expect("metadata");
        }
        sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut conn)
            .expect("publish template");
    }
    sql_query("SELECT pg_advisory_unlock(727274)")
        .execute(&mut conn)
        .expect("advisory unlock");
    name
}

/// Data values whose enrollment, program or owner is not their event's (migrations 19 and 20 keep
/// the copies on the value equal to what the event, its enrollment and program_ownership say).
pub const STRAY_VALUES: &str =
    "SELECT count(*) FROM event_data_value d JOIN event e ON e.id = d.event_id \
     JOIN enrollment en ON en.id = e.enrollment_id LEFT JOIN program_ownership po \
     ON po.tracked_entity_id = en.tracked_entity_id AND po.program_id = en.program_id \
     WHERE d.enrollment_id <> e.enrollment_id OR d.program_id <> en.program_id \
     OR d.owner_org_unit_id <> COALESCE(po.org_unit_id, en.org_unit_id)";

/// A database of its own for one test, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let template = ensure_template();
        let name = format!("kiunga_test_{}", kiunga::tracker::new_uid().to_lowercase());
        let mut conn = admin();
        // CREATE DATABASE ... TEMPLATE fails while another session is connected to the template; retry briefly.
        let mut tries = 0;
        loop {
            match sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .execute(&mut conn)
            {
                Ok(_) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        let url = with_db(&admin_url(), &name);
        TestDb { name, url }
    }

    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&kiunga::store::libpq_url(&self.url))
            .expect("connect test database")
    }

    /// A single number from SQL (counts, mostly).
    pub fn scalar(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n: N = sql_query(format!("SELECT ({sql})::bigint AS n"))
            .get_result(&mut self.conn())
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        n.n
    }

    pub fn text(&self, sql: &str) -> Vec<String> {
        #[derive(QueryableByName)]
        struct T {
            #[diesel(sql_type = diesel::sql_types::Text)]
            t: String,
        }
        let rows: Vec<T> = sql_query(format!("SELECT q.t::text AS t FROM ({sql}) AS q(t)"))
            .load(&mut self.conn())
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(|r| r.t).collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&kiunga::store::libpq_url(&admin_url())) {
            let _ = sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

/// A private copy of the shipped mapping files, to change in a test.
pub fn mappings_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiunga-maps-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for f in std::fs::read_dir(repo().join("mappings")).expect("mappings") {
        let f = f.expect("entry").path();
        if f.is_file() {
            std::fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy");
        }
    }
    dir
}

pub fn test_config(db: &TestDb) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        database_url: db.url.clone(),
        pool_size: 4,
        mappings_dir: repo().join("mappings"),
        metadata_dir: repo().join("fixtures/metadata"),
        http_workers: 1,
        // Most tests are about other things than authentication: tests/security.rs turns it on.
        auth: kiunga::config::AuthMode::Off,
        ..Config::default()
    }
}

/// The gateway running on 127.0.0.1 against its own database.
pub struct TestApp {
    pub base: String,
    pub db: TestDb,
    /// The running gateway's state (to reload mappings, read metadata...).
    pub state: actix_web::web::Data<AppState>,
    handle: Option<actix_web::dev::ServerHandle>,
    pub http: reqwest::blocking::Client,
}

impl TestApp {
    pub fn start() -> TestApp {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDb::new();
        let mut config = test_config(&db);
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        config.base_url = Some(format!("http://127.0.0.1:{port}/fhir"));
        let state =
            AppState::start(config).unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        let (tx, rx) = mpsc::channel();
        let gateway = Gateway::new(state);
        let data = gateway.state.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = gateway.serve(listener).expect("serve");
                let _ = tx.send(server.handle());
                let _ = server.await;
            })
        });
        let handle = rx.recv().expect("server handle");
        TestApp {
            base: format!("http://127.0.0.1:{port}/fhir"),
            db,
            state: data,
            handle: Some(handle),
            http: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        Resp::from(self.http.get(self.url(path)).send().expect("GET"))
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        Resp::from(
            self.http
                .post(self.url(path))
                .header("Content-Type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .expect("POST"),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> Resp {
        Resp::from(
            self.http
                .put(self.url(path))
                .header("Content-Type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .expect("PUT"),
        )
    }

    pub fn delete(&self, path: &str) -> Resp {
        Resp::from(self.http.delete(self.url(path)).send().expect("DELETE"))
    }

    /// Any request, with headers and a raw body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut r = self
            .http
            .request(method.parse().expect("method"), self.url(path));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b.to_vec());
        }
        Resp::from(r.send().expect("request"))
    }

    /// The UID of an org unit by its code.
    pub fn org(&self, code: &str) -> String {
        self.db
            .text(&format!("SELECT uid FROM org_unit WHERE code = '{code}'"))
            .pop()
            .unwrap_or_else(|| panic!("no org unit {code}"))
    }

    /// Creates a Patient with a fresh national ID in `org` (201 expected) and gives its id.
    pub fn new_patient(&self, org: &str) -> String {
        self.post("Patient", &patient(org, &unique("NID")))
            .expect(201)["id"]
            .as_str()
            .expect("the created Patient's id")
            .to_string()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            // Stopping is async; a short-lived runtime drives it so the database can be dropped after.
            let _ =
                std::thread::spawn(move || actix_web::rt::System::new().block_on(h.stop(false)))
                    .join();
        }
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl From<reqwest::blocking::Response> for Resp {
    fn from(r: reqwest::blocking::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().unwrap_or_default();
        Resp {
            status,
            headers,
            text,
        }
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an OperationOutcome with this status and returns its first diagnostics text.
    pub fn outcome(&self, status: u16) -> String {
        let v = self.expect(status);
        assert_eq!(v["resourceType"], "OperationOutcome", "{}", self.text);
        assert_eq!(v["issue"][0]["severity"], "error", "{}", self.text);
        v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Runs `f` as one unit of work of the system actor on the app's database, with its current
/// mappings: what the `kiunga remap` and `kiunga match-keys` commands do.
pub fn system_unit<T>(
    app: &TestApp,
    f: impl FnOnce(&mut kiunga::store::Scoped, &kiunga::tracker::Env) -> Result<T, kiunga::Error>,
) -> T {
    let mappings = app.state.mappings();
    let env = kiunga::tracker::Env {
        md: &app.state.metadata,
        mappings: &mappings,
        strict: false,
        default_org_unit: None,
    };
    let ctx = kiunga::context::RequestContext::system();
    let mut conn = app.db.conn();
    kiunga::store::Scoped::transaction(&mut conn, &ctx, |s| f(s, &env)).expect("unit of work")
}

pub const NID: &str = "http://example.org/national-id";

/// The id a Bundle entry's answer gives its record: `Patient/abc/_history/1` gives `abc`.
pub fn created_id(entry: &Value) -> String {
    let location = entry["response"]["location"].as_str().unwrap_or_default();
    location.split('/').nth(1).unwrap_or_default().to_string()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", kiunga::tracker::new_uid())
}

/// A body weight Observation of `kg` for a patient's encounter (UIDs), taken `when`.
pub fn weight(patient: &str, encounter: &str, kg: f64, when: &str) -> Value {
    serde_json::json!({
        "resourceType": "Observation", "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "29463-7" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "encounter": { "reference": format!("Encounter/{encounter}") },
        "effectiveDateTime": when,
        "valueQuantity": { "value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg" },
    })
}

/// A demo Patient owned by the facility with `org` UID.
pub fn patient(org: &str, nid: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{ "system": NID, "value": nid }],
        "name": [{ "use": "official", "family": "Mwangi", "given": ["Amina", "Wanjiru"] }],
        "gender": "female",
        "birthDate": "1990-04-12",
        "telecom": [{ "system": "phone", "value": "+254 700 123456" }],
        "address": [{ "city": "Kilima" }],
        "managingOrganization": { "reference": format!("Organization/{org}") },
    })
}

/// A caller of narrower scope than the demo user (until authentication exists, contexts are made
/// here): capture and search scopes as org-unit codes, each the root of a subtree.
pub fn scoped_context(
    app: &TestApp,
    actor: &str,
    capture: &[&str],
    search: &[&str],
) -> kiunga::context::RequestContext {
    use kiunga::context::{Actor, OrgScope, RequestContext};
    let paths = |codes: &[&str]| {
        OrgScope::Subtrees(
            codes
                .iter()
                .map(|c| {
                    app.db
                        .text(&format!("SELECT path FROM org_unit WHERE code = '{c}'"))
                        .pop()
                        .unwrap_or_else(|| panic!("no org unit {c}"))
                })
                .collect(),
        )
    };
    let mut ctx =
        RequestContext::anonymous(unique("req")).with_scope(paths(capture), paths(search));
    ctx.actor = Actor::User(actor.to_string());
    ctx
}

/// Runs `f` as one unit of work of `ctx` on the app's database (what a request of that caller
/// does), returning its result, errors included.
pub fn unit_as<T>(
    app: &TestApp,
    ctx: &kiunga::context::RequestContext,
    f: impl FnOnce(&mut kiunga::store::Scoped, &kiunga::tracker::Env) -> Result<T, kiunga::Error>,
) -> Result<T, kiunga::Error> {
    let mappings = app.state.mappings();
    let env = kiunga::tracker::Env {
        md: &app.state.metadata,
        mappings: &mappings,
        strict: false,
        default_org_unit: None,
    };
    let mut conn = app.db.conn();
    kiunga::store::Scoped::transaction(&mut conn, ctx, |s| f(s, &env))
}

/// Waits until no outbox item is pending (or `within` passes), and returns the count of items
/// per status (`{"delivered": 5, "dead": 1}`).
pub fn outbox_settled(app: &TestApp, within: std::time::Duration) -> Value {
    let until = std::time::Instant::now() + within;
    while app
        .db
        .scalar("SELECT count(*) FROM outbox_item WHERE status = 'pending'")
        > 0
        && std::time::Instant::now() < until
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut out = serde_json::json!({});
    for row in app
        .db
        .text("SELECT status || '=' || count(*) FROM outbox_item GROUP BY status")
    {
        let (k, v) = row.split_once('=').expect("status=count");
        out[k] = serde_json::json!(v.parse::<i64>().expect("count"));
    }
    out
}

/// Writes `text` as `targets/<name>` in a copy of the shipped mappings, loads the set, and asserts
/// that it is refused with each `(line, words)` reported as `<file>:<line>: …words…`.
pub fn assert_target_file_refused(name: &str, text: &str, expected: &[(usize, &str)]) {
    let dir = mappings_copy();
    std::fs::create_dir_all(dir.join("targets")).expect("targets dir");
    let path = dir.join("targets").join(name);
    std::fs::write(&path, text).expect("write the target file");
    let db = TestDb::new();
    let mut conn = db.conn();
    let md = kiunga::tracker::metadata::Metadata::load(&mut conn).expect("metadata");
    let problems = kiunga::mapping::MappingSet::load(&dir, &md)
        .expect_err("refused")
        .to_string();
    let file = path.display().to_string();
    for (line, what) in expected {
        assert!(
            problems.contains(&format!("{file}:{line}: ")) && problems.contains(what),
            "{what} at line {line}:\n{problems}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
