//! Outbound push to a generic FHIR R4 server (`kind = "fhir-r4"`): our records go out with our
//! codes and our record id as an identifier, references become the target's ids or logical
//! references, creates are conditional, lost answers and outages end with one copy of each
//! record, a Patient the target already holds is adopted, and an ambiguous match is a dead letter
//! a person resolves. The target is the HAPI-like double of `kiunga-doubles`, a real HTTP server
//! with referential integrity and validation.

mod support;

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use kiunga_doubles::fhir::{Config as FhirConfig, FhirServer};
use serde_json::{json, Value};
use support::{clients, mappings_copy, TestApp};

const NID: &str = "http://example.org/national-id";
const RECORD: &str = "https://kiunga.example.org/fhir/sid/record";

fn token() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var("KIUNGA_TEST_SHR_TOKEN", "demo-shr-token"));
}

/// The shipped `shr.toml` pointed at `url`, with quick retries, and `edit` applied.
fn target_mappings(url: &str, timeout: f64, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = mappings_copy();
    let shipped = std::fs::read_to_string(support::repo().join("mappings/targets/shr.toml"))
        .expect("the shipped target file");
    let text = shipped
        .replace("url_env = \"KIUNGA_SHR_URL\"", &format!("url = \"{url}\""))
        .replace("KIUNGA_SHR_TOKEN", "KIUNGA_TEST_SHR_TOKEN")
        .replace("timeout_seconds = 10", &format!("timeout_seconds = {timeout}"))
        + "\n[retry]\ninitial_ms = 50\nmax_seconds = 1\nbreaker_failures = 5\nbreaker_seconds = 1\n";
    std::fs::create_dir_all(dir.join("targets")).expect("targets dir");
    std::fs::write(dir.join("targets/shr.toml"), edit(text)).expect("write target");
    dir
}

fn start(shr: &FhirServer, timeout: f64, edit: impl Fn(String) -> String) -> TestApp {
    token();
    let dir = target_mappings(&shr.base(), timeout, edit);
    TestApp::start_with(move |c| c.mappings_dir = dir)
}

fn shr() -> FhirServer {
    FhirServer::start(FhirConfig::demo()).expect("the FHIR double starts")
}

fn visit(app: &TestApp, nid: &str) -> Value {
    let mto = app.org("KD_KAS_MTO");
    let obs = |code: &str, q: Value, n: u32| {
        json!({
            "fullUrl": format!("urn:uuid:6b1e0c2a-0000-4000-8000-00000000000{n}"),
            "resource": {
                "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": code }] },
                "subject": { "reference": "urn:uuid:6b1e0c2a-0000-4000-8000-000000000001" },
                "encounter": { "reference": "urn:uuid:6b1e0c2a-0000-4000-8000-000000000002" },
                "effectiveDateTime": "2026-11-02T09:45:00Z",
                "valueQuantity": q
            },
            "request": { "method": "POST", "url": "Observation" }
        })
    };
    json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:6b1e0c2a-0000-4000-8000-000000000001",
              "resource": {
                "resourceType": "Patient",
                "identifier": [{ "system": NID, "value": nid }],
                "name": [{ "family": "Wanjiru", "given": ["Njeri"] }],
                "gender": "female", "birthDate": "1988-07-14",
                "managingOrganization": { "reference": format!("Organization/{mto}") }
              },
              "request": { "method": "POST", "url": "Patient" } },
            { "fullUrl": "urn:uuid:6b1e0c2a-0000-4000-8000-000000000002",
              "resource": {
                "resourceType": "Encounter", "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
                "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "11429006" }] }],
                "subject": { "reference": "urn:uuid:6b1e0c2a-0000-4000-8000-000000000001" },
                "period": { "start": "2026-11-02T09:30:00Z" },
                "serviceProvider": { "reference": format!("Organization/{mto}") }
              },
              "request": { "method": "POST", "url": "Encounter" } },
            obs("29463-7", json!({ "value": 61.0, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg" }), 3),
            obs("8310-5", json!({ "value": 100.4, "unit": "degF", "system": "http://unitsofmeasure.org", "code": "[degF]" }), 4),
        ]
    })
}

fn settle(app: &TestApp, within: Duration) -> Value {
    support::outbox_settled(app, within)
}

fn with_system<'a>(r: &'a Value, system: &str) -> Option<&'a str> {
    r["identifier"]
        .as_array()?
        .iter()
        .find(|i| i["system"] == system)?["value"]
        .as_str()
}

#[test]
fn a_visit_arrives_with_our_codes_record_ids_and_resolved_references_and_an_update_goes_to_the_same_record(
) {
    let target = shr();
    let app = start(&target, 5.0, |t| t);
    let nid = "5550101";
    app.post("", &visit(&app, nid)).expect(200);
    assert_eq!(
        settle(&app, Duration::from_secs(30)),
        json!({ "delivered": 4 })
    );

    let patients = target.resources("Patient");
    assert_eq!(patients.len(), 1, "{patients:#?}");
    let p = &patients[0];
    let uid = app
        .db
        .text("SELECT resource_uid FROM outbox_remote WHERE resource_type = 'Patient'")[0]
        .clone();
    assert_eq!(with_system(p, NID), Some(nid));
    assert_eq!(with_system(p, RECORD), Some(uid.as_str()), "our record id");
    assert_eq!(p["name"][0]["family"], "Wanjiru");
    assert_eq!(
        p["managingOrganization"]["identifier"]["system"], RECORD,
        "an org unit the file does not map is a logical reference: {p}"
    );
    assert_eq!(p["managingOrganization"]["display"], "Mto Health Centre");
    assert!(p["managingOrganization"].get("reference").is_none());
    let remote_patient = p["id"].as_str().expect("id").to_string();

    let encounters = target.resources("Encounter");
    assert_eq!(encounters.len(), 1);
    let e = &encounters[0];
    assert_eq!(
        e["subject"]["reference"],
        format!("Patient/{remote_patient}")
    );
    assert_eq!(e["type"][0]["coding"][0]["code"], "11429006", "our codes");
    assert_eq!(e["class"]["code"], "AMB");
    assert_eq!(e["episodeOfCare"][0]["type"], "EpisodeOfCare");
    let remote_encounter = e["id"].as_str().expect("id").to_string();

    let observations = target.resources("Observation");
    assert_eq!(observations.len(), 2);
    for o in &observations {
        assert_eq!(
            o["subject"]["reference"],
            format!("Patient/{remote_patient}")
        );
        assert_eq!(
            o["encounter"]["reference"],
            format!("Encounter/{remote_encounter}")
        );
        assert!(with_system(o, RECORD).is_some());
    }
    let temperature = observations
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "8310-5")
        .expect("the temperature");
    assert_eq!(
        temperature["code"]["coding"][1],
        json!({ "system": "http://snomed.info/sct", "code": "386725007" }),
        "the [[concept]]'s coding beside ours"
    );
    assert_eq!(temperature["valueQuantity"]["value"], json!(38.0));
    assert_eq!(temperature["valueQuantity"]["code"], "Cel");
    let weight = observations
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "29463-7")
        .expect("the weight");
    assert_eq!(weight["code"]["coding"].as_array().map(Vec::len), Some(1));
    assert_eq!(weight["valueQuantity"]["value"], json!(61.0));

    // Every create was conditional on our record id (the Patient on the national ID).
    let posts: Vec<_> = target
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 4);
    assert!(posts[0]
        .if_none_exist
        .as_deref()
        .is_some_and(|q| q.contains("national-id")));
    assert!(posts[1..].iter().all(|r| r
        .if_none_exist
        .as_deref()
        .is_some_and(|q| q.contains("kiunga.example.org"))));

    // An update goes to the same record.
    let mut changed = app.get(&format!("Patient/{uid}")).expect(200);
    changed["name"][0]["family"] = json!("Wanjiru-Kamau");
    app.put(&format!("Patient/{uid}"), &changed).expect(200);
    assert_eq!(
        settle(&app, Duration::from_secs(30)),
        json!({ "delivered": 5 })
    );
    let patients = target.resources("Patient");
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0]["id"], remote_patient.as_str());
    assert_eq!(patients[0]["name"][0]["family"], "Wanjiru-Kamau");
    assert_eq!(patients[0]["meta"]["versionId"], "2");
}

#[test]
fn outages_and_lost_answers_leave_one_copy_of_each_record() {
    let mut target = shr();
    let app = start(&target, 1.0, |t| t);
    // Down first: connections refused.
    target.go_down();
    app.post("", &visit(&app, "5550202")).expect(200);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        app.db
            .scalar("SELECT count(*) FROM outbox_item WHERE status = 'pending' AND attempts > 0")
            > 0,
        "tried while down"
    );
    // Back, but it commits writes and never answers in time; then 503s.
    target.faults.commit_then_hang(3, Duration::from_secs(3));
    target.resume().expect("resumes");
    app.post("", &visit(&app, "5550203")).expect(200);
    let settled = settle(&app, Duration::from_secs(60));
    assert_eq!(settled, json!({ "delivered": 8 }), "{settled}");
    target.faults.fail_next(2, 503);
    app.post("", &visit(&app, "5550204")).expect(200);
    let settled = settle(&app, Duration::from_secs(60));
    assert_eq!(settled, json!({ "delivered": 12 }), "{settled}");

    assert_eq!(target.resources("Patient").len(), 3);
    assert_eq!(target.resources("Encounter").len(), 3);
    assert_eq!(target.resources("Observation").len(), 6);
    let mut ours: Vec<String> = ["Patient", "Encounter", "Observation"]
        .iter()
        .flat_map(|t| target.resources(t))
        .filter_map(|r| with_system(&r, RECORD).map(str::to_string))
        .collect();
    let all = ours.len();
    ours.sort();
    ours.dedup();
    assert_eq!(ours.len(), all, "no record of ours twice");
    let requests = target.requests();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method == "POST" && r.status == 201)
            .count(),
        12,
        "one create per record, although three creates were never answered"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("identifier=")),
        "after a lost answer the record was looked up before anything was sent again"
    );
}

#[test]
fn a_patient_the_target_holds_is_adopted_and_an_ambiguous_one_waits_for_a_person() {
    let target = shr();
    let app = start(&target, 5.0, |t| t);
    let http = reqwest::blocking::Client::new();
    let put_there = |nid: &str| {
        let resp = http
            .post(format!("{}/Patient", target.base()))
            .bearer_auth("demo-shr-token")
            .header("Content-Type", "application/fhir+json")
            .body(json!({ "resourceType": "Patient", "identifier": [{ "system": NID, "value": nid }], "name": [{ "family": "Held" }] }).to_string())
            .send()
            .expect("the double answers");
        assert_eq!(resp.status().as_u16(), 201);
        resp.json::<Value>().expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    // Already there once: adopted and updated with our version.
    let held = put_there("5550301");
    let mto = app.org("KD_KAS_MTO");
    app.post("Patient", &support::patient(&mto, "5550301"))
        .expect(201);
    assert_eq!(
        settle(&app, Duration::from_secs(30)),
        json!({ "delivered": 1 })
    );
    let patients = target.resources("Patient");
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0]["id"], held.as_str());
    assert!(with_system(&patients[0], RECORD).is_some(), "now ours");

    // There twice: no guess. Dead letter with the target's message; a person merges them there
    // and retries.
    let first = put_there("5550302");
    let second = put_there("5550302");
    app.post("Patient", &support::patient(&mto, "5550302"))
        .expect(201);
    let settled = settle(&app, Duration::from_secs(30));
    assert_eq!(settled, json!({ "delivered": 1, "dead": 1 }), "{settled}");
    let dead = app
        .db
        .scalar("SELECT id FROM outbox_item WHERE status = 'dead'");
    let shown = app
        .get(&format!(
            "{}/admin/outbox/items/{dead}",
            clients::root(&app)
        ))
        .expect(200);
    assert_eq!(shown["target_status"], 412);
    let said = shown["error"].as_str().expect("message");
    assert!(said.contains("merge them there"), "{said}");
    assert!(said.contains("matched 2 resources"), "HAPI's words: {said}");
    assert!(
        !said.contains("5550302"),
        "no identifier value kept: {said}"
    );
    let gone = http
        .delete(format!("{}/Patient/{second}", target.base()))
        .bearer_auth("demo-shr-token")
        .send()
        .expect("answers");
    assert_eq!(gone.status().as_u16(), 200);
    app.send(
        "POST",
        &format!("{}/admin/outbox/items/{dead}/$retry", clients::root(&app)),
        &[],
        None,
    )
    .expect(200);
    assert_eq!(
        settle(&app, Duration::from_secs(30)),
        json!({ "delivered": 2 })
    );
    let kept: Vec<Value> = target
        .resources("Patient")
        .into_iter()
        .filter(|p| p["id"] == first.as_str())
        .collect();
    assert!(with_system(&kept[0], RECORD).is_some());
}

#[test]
fn a_fhir_r4_target_file_is_checked_with_file_and_line() {
    support::assert_target_file_refused(
        "shr2.toml",
        "kind = \"fhir-r4\"\nurl = \"http://127.0.0.1:9/fhir\"\ntoken_env = \"KIUNGA_X\"\nuser_env = \"KIUNGA_U\"\npassword_env = \"KIUNGA_P\"\ndefault_location = \"x\"\n\n[trigger]\nresources = [\"Patient\"]\n\n[[organization]]\norg_unit = \"KD_KAS_MTO\"\nreference = \"Location/1\"\n",
        &[
            (1, "needs `record_system`"),
            (3, "not both"),
            (6, "belongs to an openmrs-fhir2 target"),
            (13, "is not `Organization/<id>`"),
        ],
    );
}
