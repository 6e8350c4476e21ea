//! Outbound push to OpenMRS (FHIR2): the outbox written in the writing transaction, delivery in
//! order per person, the target's own codes, retries through outages, 500 bursts and lost
//! answers without duplicates, dead letter with the target's message, operator retry after the
//! mapping is fixed, loop prevention, and the admin API and metrics. The target is the OpenMRS
//! double of `kiunga-doubles` (../shared/contracts/openmrs-fhir2.md), a real HTTP server.

mod support;

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use kiunga_doubles::openmrs::{Config as OpenMrsConfig, OpenMrs};
use serde_json::{json, Value};
use support::{clients, mappings_copy, TestApp};

const NID: &str = "http://example.org/national-id";
const CIEL: &str = "https://cielterminology.org";

/// The double's demo credentials, given to the target file by variable name. Set once, before
/// any test of this binary starts a server (every test passes here first).
fn credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("KIUNGA_TEST_OPENMRS_USER", "admin");
        std::env::set_var("KIUNGA_TEST_OPENMRS_PASSWORD", "Admin123");
    });
}

/// The shipped OpenMRS target file pointed at `url`, with quick retries for tests, and `edit`
/// applied to its text.
fn target_mappings(url: &str, timeout: f64, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = mappings_copy();
    std::fs::create_dir_all(dir.join("targets")).expect("targets dir");
    let shipped = std::fs::read_to_string(support::repo().join("mappings/targets/openmrs.toml"))
        .expect("the shipped target file");
    let text = shipped
        .replace(
            "url_env = \"KIUNGA_OPENMRS_URL\"",
            &format!("url = \"{url}\""),
        )
        .replace("KIUNGA_OPENMRS_USER", "KIUNGA_TEST_OPENMRS_USER")
        .replace("KIUNGA_OPENMRS_PASSWORD", "KIUNGA_TEST_OPENMRS_PASSWORD")
        .replace("timeout_seconds = 10", &format!("timeout_seconds = {timeout}"))
        + "\n[retry]\ninitial_ms = 50\nmax_seconds = 1\nbreaker_failures = 5\nbreaker_seconds = 1\n";
    std::fs::write(dir.join("targets/openmrs.toml"), edit(text)).expect("write target");
    dir
}

fn start(openmrs: &OpenMrs, timeout: f64, edit: impl Fn(String) -> String) -> TestApp {
    credentials();
    let dir = target_mappings(&openmrs.base(), timeout, edit);
    TestApp::start_with(move |c| c.mappings_dir = dir)
}

fn openmrs() -> OpenMrs {
    OpenMrs::start(OpenMrsConfig::demo()).expect("the OpenMRS double starts")
}

/// A transaction Bundle: a Patient at Mto Health Centre, an OPD Encounter there, and
/// Observations of weight (kg), height (cm) and temperature (°F).
fn visit(app: &TestApp, nid: &str) -> Value {
    let mto = app.org("KD_KAS_MTO");
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:4a3f0b8e-0000-4000-8000-000000000001",
              "resource": {
                "resourceType": "Patient",
                "identifier": [{ "system": NID, "value": nid }],
                "name": [{ "family": "Otieno", "given": ["Achieng"] }],
                "gender": "female",
                "birthDate": "1991-03-04",
                "managingOrganization": { "reference": format!("Organization/{mto}") }
              },
              "request": { "method": "POST", "url": "Patient" } },
            { "fullUrl": "urn:uuid:4a3f0b8e-0000-4000-8000-000000000002",
              "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
                "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "11429006" }] }],
                "subject": { "reference": "urn:uuid:4a3f0b8e-0000-4000-8000-000000000001" },
                "period": { "start": "2026-11-02T09:30:00Z" },
                "serviceProvider": { "reference": format!("Organization/{mto}") }
              },
              "request": { "method": "POST", "url": "Encounter" } },
            observation("29463-7", json!({ "value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg" }), 3),
            observation("8302-2", json!({ "value": 168, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm" }), 4),
            observation("8310-5", json!({ "value": 98.6, "unit": "degF", "system": "http://unitsofmeasure.org", "code": "[degF]" }), 5),
        ]
    })
}

fn observation(loinc: &str, quantity: Value, n: u32) -> Value {
    json!({
        "fullUrl": format!("urn:uuid:4a3f0b8e-0000-4000-8000-00000000000{n}"),
        "resource": {
            "resourceType": "Observation",
            "status": "final",
            "code": { "coding": [{ "system": "http://loinc.org", "code": loinc }] },
            "subject": { "reference": "urn:uuid:4a3f0b8e-0000-4000-8000-000000000001" },
            "encounter": { "reference": "urn:uuid:4a3f0b8e-0000-4000-8000-000000000002" },
            "effectiveDateTime": "2026-11-02T09:45:00Z",
            "valueQuantity": quantity
        },
        "request": { "method": "POST", "url": "Observation" }
    })
}

fn settle(app: &TestApp, within: Duration) -> Value {
    support::outbox_settled(app, within)
}

fn identifier_values(patients: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = patients
        .iter()
        .flat_map(|p| p["identifier"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["value"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn a_visit_arrives_in_openmrs_with_its_identifier_type_location_encounter_type_and_ciel_concepts() {
    let target = openmrs();
    let app = start(&target, 5.0, |t| t);
    let nid = format!("{}", 1_000_000 + (rand::random::<u32>() % 8_000_000));
    app.post("", &visit(&app, &nid)).expect(200);

    let settled = settle(&app, Duration::from_secs(30));
    assert_eq!(
        settled,
        json!({ "delivered": 5 }),
        "one item per record, all delivered"
    );

    let patients = target.patients();
    assert_eq!(patients.len(), 1, "{patients:#?}");
    let p = &patients[0];
    let id = &p["identifier"][0];
    assert_eq!(id["value"], nid.as_str());
    assert_eq!(id["use"], "official");
    assert_eq!(
        id["type"]["text"], "National ID",
        "the identifier type OpenMRS resolved from the system URL"
    );
    let location = id["extension"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|x| x["url"] == "http://fhir.openmrs.org/ext/patient/identifier#location")
        })
        .map(|x| x["valueReference"]["reference"].clone());
    assert_eq!(
        location,
        Some(json!("Location/44c3efb0-2583-4c80-a79e-1f756a03c0a1")),
        "Mto Health Centre's location"
    );
    let remote_patient = p["id"].as_str().expect("id").to_string();

    let encounters = target.encounters();
    assert_eq!(encounters.len(), 1, "{encounters:#?}");
    let e = &encounters[0];
    assert_eq!(
        e["subject"]["reference"],
        format!("Patient/{remote_patient}")
    );
    assert_eq!(
        e["type"][0]["coding"][0]["code"],
        "d7151f82-c1f3-4152-a605-2f9ea7414a79"
    );
    assert_eq!(
        e["location"][0]["location"]["reference"],
        "Location/44c3efb0-2583-4c80-a79e-1f756a03c0a1"
    );
    let remote_encounter = e["id"].as_str().expect("id").to_string();

    let observations = target.observations();
    assert_eq!(observations.len(), 3, "{observations:#?}");
    let by_concept = |ciel: &str| {
        observations
            .iter()
            .find(|o| {
                o["code"]["coding"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["system"] == CIEL && c["code"] == ciel))
            })
            .unwrap_or_else(|| panic!("no Observation of CIEL {ciel}: {observations:#?}"))
    };
    let weight = by_concept("5089");
    assert_eq!(weight["valueQuantity"]["value"], 72.5);
    assert_eq!(
        weight["subject"]["reference"],
        format!("Patient/{remote_patient}")
    );
    assert_eq!(
        weight["encounter"]["reference"],
        format!("Encounter/{remote_encounter}")
    );
    let temperature = by_concept("5088")["valueQuantity"]["value"]
        .as_f64()
        .expect("°C");
    assert!(
        (temperature - 37.0).abs() < 1e-6,
        "98.6 °F sent as the concept's 37 °C, not {temperature}"
    );
    assert_eq!(by_concept("5090")["valueQuantity"]["value"], 168.0);

    // The local → remote map, and updates going to the remote id.
    let local = app.db.text(&format!(
        "SELECT resource_uid FROM outbox_remote WHERE resource_type = 'Patient' AND remote_id = '{remote_patient}'"
    ));
    assert_eq!(local.len(), 1);
    let mut current = app.get(&format!("Patient/{}", local[0])).expect(200);
    current["name"][0]["family"] = json!("Otieno-Were");
    app.put(&format!("Patient/{}", local[0]), &current)
        .expect(200);
    settle(&app, Duration::from_secs(30));
    let patients = target.patients();
    assert_eq!(patients.len(), 1, "an update is not a second Patient");
    assert_eq!(patients[0]["name"][0]["family"], "Otieno-Were");
    assert!(
        target
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains(&format!("/Patient/{remote_patient}"))),
        "the update went to OpenMRS's id"
    );
}

#[test]
fn a_rolled_back_bundle_emits_nothing() {
    let target = openmrs();
    let app = start(&target, 5.0, |t| t);
    let mut bundle = visit(&app, "2223334");
    // The last entry refers to a Patient that does not exist: the whole Bundle is refused.
    bundle["entry"][4]["resource"]["subject"]["reference"] = json!("Patient/nobody-here");
    let r = app.post("", &bundle);
    assert!(r.status >= 400, "refused: {}", r.text);
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM outbox_item"),
        0,
        "a rolled-back Bundle leaves no outbox item"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        target.requests().iter().all(|r| r.method == "GET"),
        "nothing was sent"
    );
    assert!(target.patients().is_empty());
}

#[test]
fn outages_500_bursts_slow_answers_and_lost_answers_leave_every_record_there_exactly_once() {
    let mut target = openmrs();
    // A 1 s client timeout; the double holds lost answers for 3 s.
    let app = start(&target, 1.0, |t| t);
    let people: Vec<String> = (0..4)
        .map(|i| format!("{}", 3_100_000 + i * 7 + (rand::random::<u32>() % 5)))
        .collect();

    // Down: connections refused while the first two visits are recorded.
    target.go_down();
    app.post("", &visit(&app, &people[0])).expect(200);
    app.post("", &visit(&app, &people[1])).expect(200);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(target.patients().is_empty());
    target.resume().expect("the double comes back on its port");

    // Then a burst of 500s, a slow target, and writes committed whose answers never come.
    target.faults.fail_next(4, 500);
    app.post("", &visit(&app, &people[2])).expect(200);
    std::thread::sleep(Duration::from_millis(800));
    // The fourth person is known to OpenMRS first; then her visit's first two writes (the
    // Encounter, then its update after the look-up found it) are committed and never answered.
    let mto = app.org("KD_KAS_MTO");
    app.post("Patient", &support::patient(&mto, &people[3]))
        .expect(201);
    settle(&app, Duration::from_secs(60));
    target.faults.commit_then_hang(2, Duration::from_secs(3));
    target.faults.set_latency(Duration::from_millis(150));
    let mut fourth = visit(&app, &people[3]);
    fourth["entry"][0]["request"]["ifNoneExist"] = json!(format!("identifier={NID}|{}", people[3]));
    app.post("", &fourth).expect(200);

    let settled = settle(&app, Duration::from_secs(90));
    assert_eq!(
        settled,
        json!({ "delivered": 20 }),
        "every item delivered in the end"
    );
    assert_eq!(
        identifier_values(&target.patients()),
        {
            let mut p = people.clone();
            p.sort();
            p
        },
        "each Patient exactly once"
    );
    assert_eq!(
        target.encounters().len(),
        4,
        "each Encounter exactly once: {:#?}",
        target.encounters()
    );
    assert_eq!(
        target.observations().len(),
        12,
        "each Observation exactly once"
    );
    let log = target.requests();
    assert!(log.iter().any(|r| r.status == 500), "the burst was met");
    // Only an attempt whose outcome was unknown looks an Encounter or Observation up.
    assert!(
        log.iter().any(|r| r.method == "GET"
            && (r.path.contains("/Encounter?") || r.path.contains("/Observation?"))),
        "a lost answer was followed by a look-up, not a blind resend"
    );
    assert!(
        app.db
            .scalar("SELECT count(*) FROM outbox_item WHERE attempts > 1")
            > 0,
        "some items needed more than one attempt"
    );
    // Every Observation points at an Encounter of its own person.
    for o in target.observations() {
        let enc = o["encounter"]["reference"]
            .as_str()
            .expect("encounter")
            .trim_start_matches("Encounter/")
            .to_string();
        let e = target
            .encounters()
            .into_iter()
            .find(|e| e["id"] == enc.as_str())
            .expect("its encounter exists");
        assert_eq!(e["subject"], o["subject"]);
    }
}

#[test]
fn a_rejection_lands_in_dead_letter_with_the_targets_message_and_goes_after_the_mapping_is_fixed() {
    let target = openmrs();
    // A weight concept mapped under a concept-source URL this OpenMRS does not register.
    let wrong = "https://openconceptlab.org/orgs/CIEL/sources/CIEL";
    let app = start(&target, 5.0, |t| {
        t.replacen(
            "target_system = \"https://cielterminology.org\"\ntarget_code = \"5089\"",
            &format!("target_system = \"{wrong}\"\ntarget_code = \"5089\""),
            1,
        )
    });
    let nid = "4445556";
    app.post("", &visit(&app, nid)).expect(200);
    // The weight goes to dead letter; the person's records after it wait behind it.
    let until = Instant::now() + Duration::from_secs(30);
    while app
        .db
        .scalar("SELECT count(*) FROM outbox_item WHERE status = 'dead'")
        == 0
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM outbox_item WHERE status = 'dead'"),
        1
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM outbox_item WHERE status = 'delivered'"),
        2,
        "Patient and Encounter"
    );
    let dead_id = app
        .db
        .scalar("SELECT id FROM outbox_item WHERE status = 'dead'");
    let shown = app
        .get(&format!(
            "{}/admin/outbox/items/{dead_id}",
            clients::root(&app)
        ))
        .expect(200);
    assert_eq!(shown["target_status"], 422);
    let said = shown["error"].as_str().expect("the target's message");
    assert!(
        said.contains("failed to validate"),
        "OpenMRS's own words: {said}"
    );
    assert!(shown["resource"]
        .as_str()
        .expect("resource")
        .starts_with("Observation/"));
    assert!(target.observations().is_empty());

    // A later record of the same person waits too; other people's records do not.
    let patient = app
        .db
        .text("SELECT resource_uid FROM outbox_remote WHERE resource_type = 'Patient'")[0]
        .clone();
    let encounter = app
        .db
        .text("SELECT resource_uid FROM outbox_remote WHERE resource_type = 'Encounter'")[0]
        .clone();
    app.post(
        "Observation",
        &json!({
            "resourceType": "Observation", "status": "final",
            "code": { "coding": [{ "system": "http://loinc.org", "code": "8480-6" }] },
            "subject": { "reference": format!("Patient/{patient}") },
            "encounter": { "reference": format!("Encounter/{encounter}") },
            "effectiveDateTime": "2026-11-02T09:50:00Z",
            "valueQuantity": { "value": 118, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]" }
        }),
    )
    .expect(201);
    let mto = app.org("KD_KAS_MTO");
    app.post("Patient", &support::patient(&mto, "4445557"))
        .expect(201);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM outbox_item WHERE status = 'pending'"),
        3,
        "held back, in order"
    );
    assert_eq!(target.patients().len(), 2, "the other person went");
    assert!(target.observations().is_empty());

    // The interoperability engineer fixes the file; the gateway reloads it; the operator retries.
    let file = app.state.config.mappings_dir.join("targets/openmrs.toml");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, text.replace(wrong, CIEL)).expect("fix");
    app.state
        .reload_mappings()
        .expect("the fixed mappings load");
    let retried = app
        .send(
            "POST",
            &format!(
                "{}/admin/outbox/items/{dead_id}/$retry",
                clients::root(&app)
            ),
            &[],
            None,
        )
        .expect(200);
    assert_eq!(retried["status"], "pending");
    let settled = settle(&app, Duration::from_secs(30));
    assert_eq!(settled, json!({ "delivered": 7 }), "{settled}");
    assert_eq!(target.observations().len(), 4);
}

#[test]
fn changes_from_the_target_itself_are_not_sent_back_and_the_outbox_has_an_admin_api_and_metrics() {
    let target = openmrs();
    credentials();
    let dir = target_mappings(&target.base(), 5.0, |t| t);
    let app = TestApp::start_with(move |c| {
        c.mappings_dir = dir;
        c.auth = kiunga::config::AuthMode::Required;
    });
    let mto = app.org("KD_KAS_MTO");
    // The OpenMRS itself syncing into the registry (its client id is in ignore_changes_from)…
    let from_openmrs = clients::token_for(&app, "openmrs", "system/*.cruds", &["KD"], &[], None);
    let mut p = support::patient(&mto, "5556667");
    clients::call(&app, "POST", "Patient", &from_openmrs, Some(&p)).expect(201);
    // …and another EMR.
    let other = clients::token_for(&app, "bahmni-pwani", "system/*.cruds", &["KD"], &[], None);
    p["identifier"][0]["value"] = json!("5556668");
    clients::call(&app, "POST", "Patient", &other, Some(&p)).expect(201);
    settle(&app, Duration::from_secs(30));
    assert_eq!(
        identifier_values(&target.patients()),
        vec!["5556668".to_string()],
        "only the other EMR's Patient went to OpenMRS"
    );

    // The admin API needs the outbox scope by name.
    let root = clients::root(&app);
    let wide = clients::token_for(&app, "wide", "system/*.cruds", &["KD"], &[], None);
    let r = clients::call(&app, "GET", &format!("{root}/admin/outbox"), &wide, None);
    assert_eq!(
        r.status, 403,
        "system/* does not reach the outbox: {}",
        r.text
    );
    let ops = clients::token_for(&app, "ops", "system/Outbox.rus", &["KD"], &[], None);
    let status =
        clients::call(&app, "GET", &format!("{root}/admin/outbox"), &ops, None).expect(200);
    assert_eq!(status["targets"]["openmrs"]["delivered"], 1, "{status}");
    let listed = clients::call(
        &app,
        "GET",
        &format!("{root}/admin/outbox/items?status=delivered"),
        &ops,
        None,
    )
    .expect(200);
    let item = &listed["items"][0];
    assert_eq!(item["target"], "openmrs");
    assert!(item["remote_id"].is_string());
    assert!(
        !listed.to_string().contains("5556668"),
        "no patient data in the outbox view"
    );
    let metrics = app
        .http
        .get(format!("{root}/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("kiunga_outbox_items{target=\"openmrs\",status=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "kiunga_outbox_attempts_total{target=\"openmrs\",result=\"delivered\",kind=\"ok\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("kiunga_outbox_attempt_seconds_count{target=\"openmrs\"}"));
}

#[test]
fn a_broken_target_file_is_refused_with_file_and_line() {
    support::assert_target_file_refused(
        "emr.toml",
        "kind = \"openmrs-fhir2\"\nurl = \"http://127.0.0.1:9/openmrs/ws/fhir2/R4\"\nuser_env = \"KIUNGA_X_USER\"\npassword_env = \"hunter2\"\n\n[trigger]\nresources = [\"Patient\", \"Condition\"]\nprograms = [\"NOPE\"]\n\n[[identifier]]\nsystem = \"http://example.org/unknown\"\ntarget_system = \"x\"\nofficial = true\n\n[[concept]]\nsystem = \"http://loinc.org\"\ncode = \"29463-7\"\ntarget_code = \"5089\"\nunit = \"stone\"\n",
        &[
            (4, "not an environment variable name"),
            (7, "`Condition` is not pushed"),
            (8, "unknown program `NOPE`"),
            (11, "is not declared in patient.toml"),
            (19, "`stone` is not a UCUM unit"),
        ],
    );
}

#[test]
fn a_deceased_patient_is_not_retried_and_a_429_retry_after_is_honoured() {
    let target = openmrs();
    let app = start(&target, 5.0, |t| t);
    let mto = app.org("KD_KAS_MTO");
    // OpenMRS asks for a pause: the next attempt waits for its Retry-After (2 s), not the 50 ms
    // backoff of this target file.
    target.faults.fail_next_retry_after(1, 429, 2);
    app.post("Patient", &support::patient(&mto, "8880001"))
        .expect(201);
    let until = Instant::now() + Duration::from_secs(10);
    while app
        .db
        .scalar("SELECT count(*) FROM outbox_item WHERE error_kind = 'busy'")
        == 0
    {
        assert!(Instant::now() < until, "the 429 was never met");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM outbox_item WHERE next_attempt_at - last_attempt_at >= interval '1900 milliseconds'"),
        1,
        "the retry waits for Retry-After"
    );
    assert_eq!(
        settle(&app, Duration::from_secs(30)),
        json!({ "delivered": 1 })
    );

    // A death: OpenMRS cannot take it through FHIR2; the item says so and is not retried.
    let mut dead = support::patient(&mto, "8880002");
    dead["deceasedDateTime"] = json!("2026-11-24T08:00:00Z");
    app.post("Patient", &dead).expect(201);
    let settled = settle(&app, Duration::from_secs(30));
    assert_eq!(settled, json!({ "delivered": 1, "dead": 1 }), "{settled}");
    let said = app
        .db
        .text("SELECT last_error FROM outbox_item WHERE status = 'dead'")[0]
        .clone();
    assert!(
        said.contains("OpenMRS cannot record a death through FHIR2"),
        "{said}"
    );
    assert_eq!(
        app.db
            .scalar("SELECT attempts FROM outbox_item WHERE status = 'dead'"),
        1
    );
    assert_eq!(
        identifier_values(&target.patients()),
        vec!["8880001".to_string()]
    );
}
