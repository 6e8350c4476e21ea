//! The `kiunga` binary itself: `mappings check` output and exit status, and the request log of a
//! running server, which must never carry a name, an identifier or a query value.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh empty database for one test (the binary migrates and loads it itself).
struct Db {
    name: String,
    admin: String,
    url: String,
}

impl Db {
    fn new() -> Db {
        let admin = std::env::var("KIUNGA_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("kiunga_cli_{}", kiunga::tracker::new_uid().to_lowercase());
        let mut conn =
            PgConnection::establish(&admin).expect("tests need Postgres (run `make test`)");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("create database");
        let base = admin.split('?').next().unwrap_or(&admin);
        let url = format!(
            "{}/{name}",
            &base[..base.rfind('/').expect("database URL with a database name")]
        );
        Db { name, admin, url }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.admin) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

/// Starts `kiunga serve` on a free port with `envs`, waits until it is ready, and returns it with
/// its base URL.
fn serve(db: &Db, envs: &[(&str, &std::ffi::OsStr)]) -> (std::process::Child, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = kiunga(db);
    cmd.arg("serve")
        .env("KIUNGA_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    let started = Instant::now();
    while http
        .get(format!("{base}/readyz"))
        .send()
        .map(|r| r.status().as_u16() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the gateway did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, base)
}

/// A private copy of the shipped mapping files (files only), to change in a test.
fn mappings_copy(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiunga-{tag}-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(repo().join("mappings")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn kiunga(db: &Db) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiunga"));
    c.current_dir(repo())
        .env("DATABASE_URL", &db.url)
        // These tests are about the commands and the log; authentication has tests/security.rs.
        .env("KIUNGA_AUTH", "off")
        .env_remove("KIUNGA_CONFIG");
    c
}

/// `kiunga outbox status` run with `cmd`'s settings: its JSON, once it has exited 0 (else the exit
/// status, a signal included, and its stderr, labelled `what`).
fn outbox_status(mut cmd: Command, what: &str) -> serde_json::Value {
    let out = cmd.args(["outbox", "status"]).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A one-off command returns while the pool tops up its idle connection and the token listener
/// connects, both in the background. Ending the process ran OpenSSL's `atexit` teardown under
/// those TLS handshakes: about one run in ten died with SIGSEGV after printing its answer (CI).
/// Thirty runs find that with a probability above 95%.
#[test]
fn one_off_commands_exit_cleanly_while_background_threads_connect() {
    let db = Db::new();
    for run in 0..30 {
        // With authentication on, as deployed: the token listener is one of those threads.
        let mut cmd = kiunga(&db);
        cmd.env_remove("KIUNGA_AUTH");
        let status = outbox_status(cmd, &format!("run {run}"));
        assert!(status["targets"].is_object(), "{status}");
    }
}

#[test]
fn mappings_check_prints_file_line_problems_and_exits_1() {
    let db = Db::new();
    let ok = kiunga(&db).args(["mappings", "check"]).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK (mappings version "));

    let dir = mappings_copy("cli");
    let broken = std::fs::read_to_string(dir.join("observation.toml"))
        .unwrap()
        .replace("data_element = \"HEIGHT\"", "data_element = \"HIEGHT\"");
    std::fs::write(dir.join("observation.toml"), &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("HIEGHT")).unwrap() + 1;
    let out = kiunga(&db)
        .args(["mappings", "check"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "observation.toml:{line}: unknown data element `HIEGHT` (known: "
        )),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_request_log_carries_no_patient_data() {
    let db = Db::new();
    let (mut child, base) = serve(&db, &[("KIUNGA_LOG", std::ffi::OsStr::new("debug"))]);
    let http = reqwest::blocking::Client::new();
    let org: serde_json::Value = http
        .get(format!("{base}/fhir/Organization?identifier=KD_KAS_MTO"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let org = org["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let patient = serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{ "system": "http://example.org/national-id", "value": "SECRETNID4242" }],
        "name": [{ "family": "Wanjikuhidden", "given": ["Privatename"] }],
        "birthDate": "1977-07-07",
        "managingOrganization": { "reference": format!("Organization/{org}") },
    });
    let r = http
        .post(format!("{base}/fhir/Patient"))
        .header("Content-Type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let again = http
        .post(format!("{base}/fhir/Patient"))
        .header("Content-Type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);
    http.get(format!(
        "{base}/fhir/Patient?identifier=SECRETNID4242&family=Wanjikuhidden"
    ))
    .send()
    .unwrap();
    http.get(format!("{base}/fhir/Patient/Wanjikuhidden"))
        .send()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(logs.contains("request"), "no request log lines: {logs}");
    assert!(
        logs.contains("status=201") || logs.contains("status: 201") || logs.contains("201"),
        "{logs}"
    );
    for secret in [
        "SECRETNID4242",
        "Wanjikuhidden",
        "Privatename",
        "1977-07-07",
    ] {
        assert!(
            !logs.contains(secret),
            "`{secret}` leaked into the logs:\n{logs}"
        );
    }
}

#[test]
fn import_prints_a_summary_and_writes_the_report() {
    let db = Db::new();
    let dir =
        std::env::temp_dir().join(format!("kiunga-cli-import-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    let line = |nid: &str, birth: &str| {
        serde_json::json!({ "resourceType": "Patient", "identifier": [{ "system": "http://example.org/national-id", "value": nid }],
                            "name": [{ "family": "Cli" }], "birthDate": birth })
        .to_string()
    };
    std::fs::write(
        dir.join("p.ndjson"),
        [line("CLI-1", "1980"), line("CLI-2", "1980-13")].join("\n"),
    )
    .unwrap();
    let report = dir.join("report.json");
    let out = kiunga(&db)
        .args(["import", "--default-org-unit", "KD_KAS_KIL", "--report"])
        .arg(&report)
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("read 2 resources: stored 1, skipped 0, rejected 1"),
        "{stdout}"
    );
    assert!(stdout.contains("p.ndjson:2"), "{stdout}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(written["rejected"].as_array().unwrap().len(), 1);
    assert_eq!(written["stored"]["Patient"]["created"], 1);
    let bad = kiunga(&db)
        .args(["import", "--default-org-unit", "NOWHERE"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_mappings_and_refuses_a_broken_set() {
    let db = Db::new();
    let dir = mappings_copy("hup");
    let (mut child, base) = serve(&db, &[("KIUNGA_MAPPINGS_DIR", dir.as_os_str())]);
    let http = reqwest::blocking::Client::new();
    let version = || -> String {
        let cs: serde_json::Value = http
            .get(format!("{base}/fhir/metadata"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        cs["extension"][0]["valueString"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let hup = || {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let wait_for = |want: &dyn Fn(&str) -> bool| {
        let t = Instant::now();
        loop {
            let v = version();
            if want(&v) {
                return v;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "version stayed {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let v1 = version();
    let enc = std::fs::read_to_string(dir.join("encounter.toml")).unwrap();
    std::fs::write(
        dir.join("encounter.toml"),
        enc.replace(
            "display = \"Consultation\"",
            "display = \"Consultation v2\"",
        ),
    )
    .unwrap();
    hup();
    let v2 = wait_for(&|v| v != v1);
    std::fs::write(
        dir.join("encounter.toml"),
        enc.replace("stage = \"OPD_VISIT\"", "stage = \"NOPE\""),
    )
    .unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(version(), v2, "a broken set must not replace the good one");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.contains("mapping reload refused") && logs.contains("unknown program stage `NOPE`"),
        "{logs}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mappings_test_runs_the_golden_cases_and_fails_when_a_map_changes() {
    let db = Db::new();
    let out = kiunga(&db).args(["mappings", "test"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS observation-diagnosis-icd10"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("6 passed, 0 failed"),
        "{stdout}"
    );

    // Change a map: the pinned behaviour no longer holds, and the case says how.
    let dir = std::env::temp_dir().join(format!("kiunga-golden-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    for sub in ["", "tests"] {
        for f in std::fs::read_dir(repo().join("mappings").join(sub)).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, dir.join(sub).join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    let obs = std::fs::read_to_string(dir.join("observation.toml")).unwrap();
    std::fs::write(
        dir.join("observation.toml"),
        obs.replace(
            "code = \"29463-7\"\ndisplay = \"Body weight\"\ndata_element = \"WEIGHT\"",
            "code = \"29463-7\"\ndisplay = \"Body weight\"\ndata_element = \"HEIGHT\"",
        ),
    )
    .unwrap();
    let out = kiunga(&db)
        .args(["mappings", "test"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL observation-weight-grams: input refused:")
            && stdout.contains("cannot be converted to `cm`"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("5 passed, 1 failed"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kiunga rematch` after the rules changed: the engine's own decisions are made again under the
/// new rules; a person's decision is left exactly as it was.
#[test]
fn rematch_redecides_the_engines_links_and_keeps_peoples_decisions() {
    let db = Db::new();
    let dir = mappings_copy("rematch");
    let envs = [("KIUNGA_MAPPINGS_DIR", dir.as_os_str())];
    let (mut child, base) = serve(&db, &envs);
    let http = reqwest::blocking::Client::new();
    let mut conn = PgConnection::establish(&db.url).unwrap();
    let org: String = {
        #[derive(diesel::QueryableByName)]
        struct U {
            #[diesel(sql_type = diesel::sql_types::Text)]
            uid: String,
        }
        let u: U = diesel::sql_query("SELECT uid FROM org_unit WHERE code = 'KD_KAS_MTO'")
            .get_result(&mut conn)
            .unwrap();
        u.uid
    };
    let create = |family: &str, given: &str, born: &str, phone: Option<&str>| -> String {
        let mut p = serde_json::json!({
            "resourceType": "Patient",
            "name": [{ "family": family, "given": [given] }],
            "gender": "female",
            "birthDate": born,
            "address": [{ "city": "Kilima" }],
            "managingOrganization": { "reference": format!("Organization/{org}") },
        });
        if let Some(phone) = phone {
            p["telecom"] = serde_json::json!([{ "system": "phone", "value": phone }]);
        }
        let r: serde_json::Value = http
            .post(format!("{base}/fhir/Patient"))
            .header("Content-Type", "application/fhir+json")
            .body(p.to_string())
            .send()
            .unwrap()
            .json()
            .unwrap();
        r["id"].as_str().unwrap().to_string()
    };
    // a and b: one woman, certain (LINKED by the engine); c: a possible duplicate of both, which a
    // person rejects for a.
    let a = create("Mwangi", "Amina", "1990-04-12", Some("+254 700 123456"));
    let b = create("Amina", "Mwangi", "1990-04-12", Some("0700 123 456"));
    let c = create("Mwangii", "Amina", "1990", None);
    let decided = http
        .post(format!("{base}/fhir/$mdm-update-link"))
        .header("Content-Type", "application/fhir+json")
        .body(
            serde_json::json!({ "resourceType": "Parameters", "parameter": [
                { "name": "goldenResourceId", "valueString": format!("Patient/{a}") },
                { "name": "resourceId", "valueString": format!("Patient/{c}") },
                { "name": "matchResult", "valueString": "NO_MATCH" },
            ]})
            .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(decided.status().as_u16(), 200);
    child.kill().unwrap();
    let _ = child.wait();

    let pair = |conn: &mut PgConnection, x: &str, y: &str| -> String {
        #[derive(diesel::QueryableByName)]
        struct L {
            #[diesel(sql_type = diesel::sql_types::Text)]
            l: String,
        }
        diesel::sql_query(format!(
            "SELECT l.status || ' ' || l.origin || ' ' || split_part(l.ruleset, '+', 1) || ' ' || l.last_updated AS l
             FROM person_link l JOIN tracked_entity s ON s.id = l.source_id JOIN tracked_entity t ON t.id = l.target_id
             WHERE (s.uid = '{x}' AND t.uid = '{y}') OR (s.uid = '{y}' AND t.uid = '{x}')"
        ))
        .load::<L>(conn)
        .unwrap()
        .pop()
        .map(|l| l.l)
        .unwrap_or_default()
    };
    let ab = pair(&mut conn, &a, &b);
    assert!(ab.starts_with("LINKED AUTO demo-2026-11 "), "{ab}");
    let ac = pair(&mut conn, &a, &c);
    assert!(ac.starts_with("INVALID MANUAL "), "{ac}");

    // Stricter rules: what was certain is now only probable, so a person should confirm it.
    let rules = dir.join("matching.toml");
    let text = std::fs::read_to_string(&rules)
        .unwrap()
        .replace("version = \"demo-2026-11\"", "version = \"stricter\"")
        .replace("certain = 0.9995 ", "certain = 0.99999999 ");
    assert!(
        text.contains("certain = 0.99999999 "),
        "the test edits the rules it expects"
    );
    std::fs::write(&rules, text).unwrap();

    let out = kiunga(&db)
        .args(["rematch", "--batch", "2"])
        .env("KIUNGA_MAPPINGS_DIR", &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 people matched again under rules stricter"),
        "{stdout}"
    );
    assert!(stdout.contains("INVALID  MANUAL        1 -> 1"), "{stdout}");
    let ab = pair(&mut conn, &a, &b);
    assert!(ab.starts_with("OPEN AUTO stricter "), "{ab}");
    assert_eq!(
        pair(&mut conn, &a, &c),
        ac,
        "a person's decision is untouched"
    );
    let bc = pair(&mut conn, &b, &c);
    assert!(bc.starts_with("OPEN AUTO stricter "), "{bc}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kiunga serve` requires a token unless told otherwise, and `kiunga clients` registers, lists and
/// revokes the clients that get one (a revoked client's token stops working at once).
#[test]
fn clients_registered_on_the_command_line_get_tokens_and_lose_them_when_revoked() {
    let db = Db::new();
    let added = kiunga(&db)
        .args(["clients", "add", "emr-cli", "--name", "Test EMR"])
        .args(["--scopes", "system/Patient.rs", "--search", "KD"])
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let out = String::from_utf8(added.stdout).unwrap();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("the secret is printed once")
        .to_string();
    // A bad registration is refused with a reason.
    let bad = kiunga(&db)
        .args([
            "clients",
            "add",
            "emr-bad",
            "--name",
            "x",
            "--scopes",
            "patient/*.r",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("only system scopes"));

    // The production default: authentication required.
    let (mut child, base) = serve(&db, &[("KIUNGA_AUTH", std::ffi::OsStr::new("required"))]);
    let http = reqwest::blocking::Client::new();
    let status = |token: Option<&str>| {
        let mut r = http.get(format!("{base}/fhir/Patient"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(status(None), 401);
    let token: serde_json::Value = http
        .post(format!("{base}/auth/token"))
        .basic_auth("emr-cli", Some(&secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = token["access_token"].as_str().expect("a token").to_string();
    assert_eq!(status(Some(&token)), 200);

    let listed = kiunga(&db).args(["clients", "list"]).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("emr-cli\tactive\tclient_secret_basic\tsystem/Patient.rs"),
        "{listed}"
    );
    assert!(!listed.contains(&secret));
    let revoked = kiunga(&db)
        .args(["clients", "revoke", "emr-cli"])
        .output()
        .unwrap();
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert_eq!(status(Some(&token)), 401);
    let _ = child.kill();
    let _ = child.wait();
}

/// A visit as a transaction Bundle: a Patient at `org`, an OPD Encounter, a weight and a height.
fn visit(org: &str, nid: &str) -> serde_json::Value {
    let patient = format!("urn:uuid:5b1c0d9e-0000-4000-8000-{:012}", nid.len());
    let encounter = "urn:uuid:5b1c0d9e-0000-4000-8000-00000000e000";
    let obs = |code: &str, value: f64, unit: &str| {
        serde_json::json!({
            "resource": {
                "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": code }] },
                "subject": { "reference": patient }, "encounter": { "reference": encounter },
                "effectiveDateTime": "2026-11-03T10:00:00Z",
                "valueQuantity": { "value": value, "system": "http://unitsofmeasure.org", "code": unit }
            },
            "request": { "method": "POST", "url": "Observation" }
        })
    };
    serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "fullUrl": patient, "resource": {
                "resourceType": "Patient",
                "identifier": [{ "system": "http://example.org/national-id", "value": nid }],
                "name": [{ "family": "Kamau", "given": ["Wairimu"] }], "gender": "female",
                "birthDate": "1988-01-02",
                "managingOrganization": { "reference": format!("Organization/{org}") } },
              "request": { "method": "POST", "url": "Patient" } },
            { "fullUrl": encounter, "resource": {
                "resourceType": "Encounter", "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
                "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "11429006" }] }],
                "subject": { "reference": patient },
                "period": { "start": "2026-11-03T09:30:00Z" },
                "serviceProvider": { "reference": format!("Organization/{org}") } },
              "request": { "method": "POST", "url": "Encounter" } },
            obs("29463-7", 61.0, "kg"),
            obs("8302-2", 158.0, "cm"),
        ]
    })
}

#[test]
fn a_worker_killed_mid_delivery_and_a_new_one_leave_each_record_on_the_target_once() {
    use kiunga_doubles::openmrs::{Config, OpenMrs};
    let target = OpenMrs::start(Config::demo()).unwrap();
    let maps = mappings_copy("outbound");
    std::fs::create_dir_all(maps.join("targets")).unwrap();
    let file = std::fs::read_to_string(repo().join("mappings/targets/openmrs.toml"))
        .unwrap()
        .replace(
            "url_env = \"KIUNGA_OPENMRS_URL\"",
            &format!("url = \"{}\"", target.base()),
        )
        .replace("timeout_seconds = 10", "timeout_seconds = 1")
        + "\n[retry]\ninitial_ms = 50\nmax_seconds = 1\n";
    std::fs::write(maps.join("targets/openmrs.toml"), file).unwrap();
    let db = Db::new();
    let maps_env = maps.clone().into_os_string();
    let creds = [
        ("KIUNGA_MAPPINGS_DIR", maps_env.as_os_str()),
        ("KIUNGA_OPENMRS_USER", std::ffi::OsStr::new("admin")),
        ("KIUNGA_OPENMRS_PASSWORD", std::ffi::OsStr::new("Admin123")),
    ];
    // The server takes the writes; delivery runs apart, in `kiunga worker`.
    let mut serve_envs = creds.to_vec();
    serve_envs.push(("KIUNGA_OUTBOX_WORKERS", std::ffi::OsStr::new("false")));
    let (mut server, base) = serve(&db, &serve_envs);
    let http = reqwest::blocking::Client::new();
    let org: serde_json::Value = http
        .get(format!("{base}/fhir/Organization?identifier=KD_KAS_MTO"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let org = org["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let people: Vec<String> = (0..5).map(|i| format!("77001{i}{}", i * 3)).collect();
    for nid in &people {
        let r = http
            .post(format!("{base}/fhir"))
            .header("Content-Type", "application/fhir+json")
            .body(visit(&org, nid).to_string())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let mut conn = PgConnection::establish(&db.url).unwrap();
    let count = |conn: &mut PgConnection, status: &str| -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!(
            "SELECT count(*) AS n FROM outbox_item WHERE status = '{status}'"
        ))
        .get_result::<N>(conn)
        .unwrap()
        .n
    };
    assert_eq!(count(&mut conn, "pending"), 20, "written with the visits");

    // Writes are committed by the target and then never answered; the worker is killed while
    // it waits for those answers.
    target.faults.commit_then_hang(3, Duration::from_secs(30));
    let worker = |conn_envs: &[(&str, &std::ffi::OsStr)]| {
        let mut cmd = kiunga(&db);
        cmd.arg("worker")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in conn_envs {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let mut first = worker(&creds);
    let started = Instant::now();
    while target
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count()
        < 3
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker never sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    target.faults.clear();

    let mut second = worker(&creds);
    let started = Instant::now();
    while count(&mut conn, "delivered") < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not all delivered: {} of 20",
            count(&mut conn, "delivered")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut ids: Vec<String> = target
        .patients()
        .iter()
        .filter_map(|p| p["identifier"][0]["value"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    let mut want = people.clone();
    want.sort();
    assert_eq!(ids, want, "each Patient exactly once");
    assert_eq!(target.encounters().len(), 5, "each Encounter exactly once");
    assert_eq!(
        target.observations().len(),
        10,
        "each Observation exactly once"
    );
    // `kiunga outbox status` says the same.
    let mut cmd = kiunga(&db);
    cmd.env("KIUNGA_MAPPINGS_DIR", &maps);
    let status = outbox_status(cmd, "after the second worker");
    assert_eq!(status["targets"]["openmrs"]["delivered"], 20, "{status}");
    second.kill().unwrap();
    let _ = second.wait();
    server.kill().unwrap();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&maps);
}
