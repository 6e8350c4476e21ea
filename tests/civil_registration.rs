//! Births and deaths notified to OpenCRVS in its three modes (legacy FHIR document, events API
//! v1.9 and v2.0), through the outbox, against the OpenCRVS double of `kiunga-doubles`
//! (../shared/contracts/opencrvs.md): what reaches it, once; an expired token renewed; a
//! rejection in dead letter with OpenCRVS's message, delivered after the file is fixed; and a
//! lost legacy answer handed to a person instead of a resend.

mod support;

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use kiunga_doubles::opencrvs::{Config as CrvsConfig, Mode, OpenCrvs};
use serde_json::{json, Value};
use support::{mappings_copy, TestApp, NID};

const ROLE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
const RECORD: &str = "urn:kiunga:fhir:StructureDefinition:related-person-record";

fn credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("KIUNGA_TEST_CRVS_CLIENT_ID", "kiunga-health");
        std::env::set_var("KIUNGA_TEST_CRVS_CLIENT_SECRET", "demo-secret");
    });
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Legacy => "legacy-notification",
        Mode::EventsV19 => "events-v1.9",
        Mode::EventsV20 => "events-v2.0",
    }
}

/// The shipped OpenCRVS target file pointed at the double, in `mode`, with `edit` applied.
fn target_mappings(
    crvs: &OpenCrvs,
    mode: Mode,
    timeout: f64,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let dir = mappings_copy();
    std::fs::create_dir_all(dir.join("targets")).expect("targets dir");
    let shipped = std::fs::read_to_string(support::repo().join("mappings/targets/opencrvs.toml"))
        .expect("the shipped target file");
    let text = shipped
        .replace("mode_env = \"KIUNGA_OPENCRVS_MODE\"", &format!("mode = \"{}\"", mode_name(mode)))
        .replace("url_env = \"KIUNGA_OPENCRVS_URL\"", &format!("url = \"{}\"", crvs.gateway_url()))
        .replace("auth_url_env = \"KIUNGA_OPENCRVS_AUTH_URL\"", &format!("auth_url = \"{}\"", crvs.auth_url()))
        .replace("KIUNGA_OPENCRVS_CLIENT_ID", "KIUNGA_TEST_CRVS_CLIENT_ID")
        .replace("KIUNGA_OPENCRVS_CLIENT_SECRET", "KIUNGA_TEST_CRVS_CLIENT_SECRET")
        .replace("timeout_seconds = 10", &format!("timeout_seconds = {timeout}"))
        + "\n[retry]\ninitial_ms = 50\nmax_seconds = 1\nbreaker_failures = 50\nbreaker_seconds = 1\n";
    std::fs::write(dir.join("targets/opencrvs.toml"), edit(text)).expect("write target");
    dir
}

fn start(crvs: &OpenCrvs, mode: Mode, timeout: f64, edit: impl Fn(String) -> String) -> TestApp {
    credentials();
    let dir = target_mappings(crvs, mode, timeout, edit);
    TestApp::start_with(move |c| c.mappings_dir = dir)
}

fn entry(resource: Value, n: u32) -> Value {
    let t = resource["resourceType"].as_str().expect("type").to_string();
    json!({ "fullUrl": urn(n), "resource": resource, "request": { "method": "POST", "url": t } })
}

fn urn(n: u32) -> String {
    format!("urn:uuid:9e2f4c1a-0000-4000-8000-{n:012}")
}

/// A mother, her newborn, the RelatedPerson joining them, the delivery at Mto Health Centre and
/// the birth weight (grams): one transaction.
fn birth(app: &TestApp, mother_nid: &str, weight_g: f64) -> Value {
    let mto = app.org("KD_KAS_MTO");
    let org = json!({ "reference": format!("Organization/{mto}") });
    json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            entry(json!({
                "resourceType": "Patient",
                "identifier": [{ "system": NID, "value": mother_nid }],
                "name": [{ "family": "Banda", "given": ["Mirriam"] }],
                "gender": "female", "birthDate": "1995-06-01", "managingOrganization": org
            }), 1),
            entry(json!({
                "resourceType": "Patient",
                "name": [{ "family": "Banda", "given": ["Chisomo"] }],
                "gender": "male", "birthDate": "2026-11-20", "managingOrganization": org
            }), 2),
            entry(json!({
                "resourceType": "RelatedPerson",
                "patient": { "reference": urn(2) },
                "relationship": [{ "coding": [{ "system": ROLE, "code": "MTH" }] }],
                "extension": [{ "url": RECORD, "valueReference": { "reference": urn(1) } }]
            }), 3),
            entry(json!({
                "resourceType": "Encounter", "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP" },
                "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "236973005" }] }],
                "subject": { "reference": urn(2) },
                "period": { "start": "2026-11-20T04:10:00Z" },
                "serviceProvider": org
            }), 4),
            entry(json!({
                "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": "8339-4" }] },
                "subject": { "reference": urn(2) }, "encounter": { "reference": urn(4) },
                "effectiveDateTime": "2026-11-20T04:20:00Z",
                "valueQuantity": { "value": weight_g, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g" }
            }), 5),
        ]
    })
}

/// A person who died at Mto Health Centre, with an ICD-11 cause (carried to ICD-10 I10).
fn death(app: &TestApp, nid: &str) -> Value {
    let mto = app.org("KD_KAS_MTO");
    let org = json!({ "reference": format!("Organization/{mto}") });
    json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            entry(json!({
                "resourceType": "Patient",
                "identifier": [{ "system": NID, "value": nid }],
                "name": [{ "family": "Phiri", "given": ["Bwalya"] }],
                "gender": "male", "birthDate": "1950-02-03",
                "deceasedDateTime": "2026-11-21T18:30:00Z", "managingOrganization": org
            }), 1),
            entry(json!({
                "resourceType": "Encounter", "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP" },
                "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "308646001" }] }],
                "subject": { "reference": urn(1) },
                "period": { "start": "2026-11-21T18:30:00Z" },
                "serviceProvider": org
            }), 2),
            entry(json!({
                "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": "69453-9" }] },
                "subject": { "reference": urn(1) }, "encounter": { "reference": urn(2) },
                "effectiveDateTime": "2026-11-21T19:00:00Z",
                "valueCodeableConcept": { "coding": [{ "system": "http://id.who.int/icd/release/11/mms", "code": "BA00" }] }
            }), 3),
        ]
    })
}

fn wait_settled(app: &TestApp, within: Duration) -> Value {
    let until = Instant::now() + within;
    while app
        .db
        .scalar("SELECT count(*) FROM outbox_item WHERE status = 'pending'")
        > 0
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = json!({});
    for row in app.db.text(
        "SELECT kind || ':' || status || '=' || count(*) FROM outbox_item GROUP BY kind, status",
    ) {
        let (k, v) = row.split_once('=').expect("k=v");
        out[k] = json!(v.parse::<i64>().expect("count"));
    }
    out
}

fn births_and_deaths_reach_opencrvs_once_in(mode: Mode) {
    let crvs = OpenCrvs::start(CrvsConfig::demo(mode)).expect("the OpenCRVS double starts");
    let app = start(&crvs, mode, 5.0, |t| t);
    app.post("", &birth(&app, "6600112", 3150.0)).expect(200);
    app.post("", &death(&app, "6600113")).expect(200);
    let settled = wait_settled(&app, Duration::from_secs(30));
    assert_eq!(
        settled,
        json!({ "birth:delivered": 1, "death:delivered": 1 }),
        "one notification each, delivered"
    );

    let got = crvs.notifications();
    assert_eq!(got.len(), 2, "{got:#?}");
    let b = got.iter().find(|n| n.event == "birth").expect("the birth");
    let d = got.iter().find(|n| n.event == "death").expect("the death");
    // The tracking id OpenCRVS gave is kept as the item's remote id.
    let tracking: Vec<String> = app
        .db
        .text("SELECT remote_id FROM outbox_item WHERE kind = 'birth'");
    assert_eq!(tracking, vec![b.tracking_id.clone()]);
    if mode == Mode::Legacy {
        let entries = b.body["entry"].as_array().expect("a document Bundle");
        let find = |t: &str| {
            entries
                .iter()
                .map(|e| &e["resource"])
                .filter(|r| r["resourceType"] == t)
                .cloned()
                .collect::<Vec<_>>()
        };
        let weight = &find("Observation")[0];
        assert_eq!(weight["valueQuantity"]["value"], 3.15, "3150 g as kg");
        assert!(
            weight.get("context").is_some(),
            "linked STU3-style with context"
        );
        assert_eq!(find("Patient").len(), 2, "child and mother");
        assert_eq!(
            find("Encounter")[0]["location"][0]["location"]["reference"],
            "Location/facility-ibombo-hc"
        );
        let task = &find("Task")[0];
        assert_eq!(
            task["extension"][0]["valueReference"]["reference"],
            "Location/office-ibombo"
        );
        let dentries = d.body["entry"].as_array().expect("bundle");
        let cause = dentries
            .iter()
            .map(|e| &e["resource"])
            .find(|r| r["resourceType"] == "Observation")
            .expect("cause");
        assert_eq!(
            cause["valueCodeableConcept"]["coding"][0]["code"], "I10",
            "ICD-11 BA00 carried to ICD-10 I10"
        );
    } else {
        assert_eq!(b.body["child.weightAtBirth"], 3.15);
        assert_eq!(
            b.body["child.name"],
            json!({ "firstname": "Chisomo", "surname": "Banda" })
        );
        assert_eq!(b.body["mother.nid"], "6600112");
        assert_eq!(b.body["child.birthLocation"], "facility-ibombo-hc");
        assert_eq!(d.body["eventDetails.causeOfDeath"], "I10");
        assert_eq!(d.body["eventDetails.date"], "2026-11-21");
        // The transactionId is derived from the item's: a resend is the same request. (v2.0 sends
        // the item's own; v1.9's NOTIFY has its own, derived from it.)
        let tx = app
            .db
            .text("SELECT transaction_id FROM outbox_item WHERE kind = 'birth'");
        if mode == Mode::EventsV20 {
            assert_eq!(b.transaction_id.as_deref(), Some(tx[0].as_str()));
        } else {
            assert!(b
                .transaction_id
                .as_deref()
                .is_some_and(|t| t.len() == 36 && t != tx[0]));
        }
    }

    // Another write to the same child does not notify the birth again.
    let child = app
        .db
        .text("SELECT person_uid FROM outbox_item WHERE kind = 'birth'")[0]
        .clone();
    let mut p = app.get(&format!("Patient/{child}")).expect(200);
    p["name"][0]["given"] = json!(["Chisomo", "James"]);
    app.put(&format!("Patient/{child}"), &p).expect(200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(crvs.notifications().len(), 2);
}

#[test]
fn births_and_deaths_reach_opencrvs_legacy_once() {
    births_and_deaths_reach_opencrvs_once_in(Mode::Legacy);
}

#[test]
fn births_and_deaths_reach_opencrvs_events_v1_9_once() {
    births_and_deaths_reach_opencrvs_once_in(Mode::EventsV19);
}

#[test]
fn births_and_deaths_reach_opencrvs_events_v2_0_once() {
    births_and_deaths_reach_opencrvs_once_in(Mode::EventsV20);
}

#[test]
fn a_birth_is_notified_when_its_last_part_arrives_and_an_expired_token_is_renewed() {
    let crvs = OpenCrvs::start(CrvsConfig::demo(Mode::EventsV20)).expect("double");
    let app = start(&crvs, Mode::EventsV20, 5.0, |t| t);
    // Everything but the birth weight: no notification yet.
    let mut b = birth(&app, "6600114", 2900.0);
    let weight = b["entry"]
        .as_array_mut()
        .expect("entries")
        .pop()
        .expect("weight");
    app.post("", &b).expect(200);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM outbox_item"),
        0,
        "not a birth yet"
    );
    // The first notification gets a token; then every token expires on the registry's side.
    app.post("", &death(&app, "6600115")).expect(200);
    wait_settled(&app, Duration::from_secs(30));
    assert_eq!(crvs.tokens_issued(), 1);
    crvs.expire_tokens();
    // The weight, in its own request, completes the birth.
    let child = app.db.text("SELECT uid FROM tracked_entity te WHERE EXISTS (SELECT 1 FROM relationship r WHERE r.to_tracked_entity_id = te.id)")[0].clone();
    let delivery = app.db.text(&format!("SELECT e.uid FROM event e JOIN tracked_entity te ON te.id = e.tracked_entity_id WHERE te.uid = '{child}'"))[0].clone();
    let mut w = weight["resource"].clone();
    w["subject"]["reference"] = json!(format!("Patient/{child}"));
    w["encounter"]["reference"] = json!(format!("Encounter/{delivery}"));
    app.post("Observation", &w).expect(201);
    let settled = wait_settled(&app, Duration::from_secs(30));
    assert_eq!(settled["birth:delivered"], 1, "{settled}");
    assert_eq!(
        crvs.tokens_issued(),
        2,
        "the expired token was renewed once"
    );
    assert!(
        crvs.requests().iter().any(|r| r.status == 401),
        "OpenCRVS said the token had expired"
    );
}

#[test]
fn a_legacy_rejection_in_a_500_lands_in_dead_letter_and_goes_after_the_fix() {
    let crvs = OpenCrvs::start(CrvsConfig::demo(Mode::Legacy)).expect("double");
    // An office OpenCRVS does not know: it answers 500 "Could not process…", a rejection.
    let app = start(&crvs, Mode::Legacy, 5.0, |t| {
        t.replace("office = \"office-ibombo\"", "office = \"office-nowhere\"")
    });
    app.post("", &birth(&app, "6600116", 3300.0)).expect(200);
    let settled = wait_settled(&app, Duration::from_secs(30));
    assert_eq!(
        settled,
        json!({ "birth:dead": 1 }),
        "not retried: {settled}"
    );
    let (status, said) = {
        let r = app
            .db
            .text("SELECT last_status || ' ' || last_error FROM outbox_item")[0]
            .clone();
        let (s, m) = r.split_once(' ').expect("status message");
        (s.to_string(), m.to_string())
    };
    assert_eq!(status, "500");
    assert!(
        said.starts_with("Could not process the Event Notification"),
        "OpenCRVS's message: {said}"
    );
    assert_eq!(
        crvs.requests()
            .iter()
            .filter(|r| r.path == "/notification")
            .count(),
        1,
        "sent once, not hammered"
    );

    let file = app.state.config.mappings_dir.join("targets/opencrvs.toml");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, text.replace("office-nowhere", "office-ibombo")).expect("fix");
    app.state.reload_mappings().expect("reload");
    let id = app.db.scalar("SELECT id FROM outbox_item");
    let root = support::clients::root(&app);
    app.send(
        "POST",
        &format!("{root}/admin/outbox/items/{id}/$retry"),
        &[],
        None,
    )
    .expect(200);
    assert_eq!(
        wait_settled(&app, Duration::from_secs(30)),
        json!({ "birth:delivered": 1 })
    );
    assert_eq!(crvs.notifications().len(), 1);
}

#[test]
fn an_events_api_rejection_keeps_the_country_s_field_list() {
    let crvs = OpenCrvs::start(CrvsConfig::demo(Mode::EventsV19)).expect("double");
    let app = start(&crvs, Mode::EventsV19, 5.0, |t| {
        t.replace(
            "# [fields]\n# birth_weight = \"child.weightAtBirth\"",
            "[fields]\nbirth_weight = \"child.weight\"",
        )
    });
    app.post("", &birth(&app, "6600117", 3000.0)).expect(200);
    assert_eq!(
        wait_settled(&app, Duration::from_secs(30)),
        json!({ "birth:dead": 1 })
    );
    let said = app.db.text("SELECT last_error FROM outbox_item")[0].clone();
    assert!(
        said.contains("Unexpected field") && said.contains("child.weight"),
        "{said}"
    );
}

#[test]
fn a_lost_legacy_answer_goes_to_a_person_not_to_a_second_registration() {
    let crvs = OpenCrvs::start(CrvsConfig::demo(Mode::Legacy)).expect("double");
    let app = start(&crvs, Mode::Legacy, 1.0, |t| t);
    crvs.faults.commit_then_hang(1, Duration::from_secs(3));
    app.post("", &birth(&app, "6600118", 3100.0)).expect(200);
    let settled = wait_settled(&app, Duration::from_secs(30));
    assert_eq!(settled, json!({ "birth:unknown": 1 }), "{settled}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        crvs.notifications().len(),
        1,
        "OpenCRVS has it once, and nothing was resent"
    );
    let said = app.db.text("SELECT last_error FROM outbox_item")[0].clone();
    assert!(said.contains("look for it in OpenCRVS"), "{said}");
    // The person who checked OpenCRVS settles it.
    let id = app.db.scalar("SELECT id FROM outbox_item");
    let root = support::clients::root(&app);
    let skipped = app
        .send(
            "POST",
            &format!("{root}/admin/outbox/items/{id}/$skip?reason=found%20B123%20in%20OpenCRVS"),
            &[],
            None,
        )
        .expect(200);
    assert_eq!(skipped["status"], "skipped");
}
