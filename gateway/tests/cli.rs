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

fn kiunga(db: &Db) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiunga"));
    c.current_dir(repo())
        .env("DATABASE_URL", &db.url)
        .env_remove("KIUNGA_CONFIG");
    c
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

    let dir = std::env::temp_dir().join(format!("kiunga-cli-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(repo().join("mappings")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
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
    let dir = std::env::temp_dir().join(format!("kiunga-hup-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(repo().join("mappings")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
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
