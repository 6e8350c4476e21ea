//! Encounter and Observation through the tracker model: the rows behind them, enrollments opened
//! on the fly, the day's event for Observations without an encounter, unit conversion and codes.

mod support;

use serde_json::{json, Value};
use support::{patient, unique, TestApp};

const SCT: &str = "http://snomed.info/sct";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const ICD11: &str = "http://id.who.int/icd/release/11/mms";

pub fn encounter(pid: &str, org: &str, code: &str, start: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "status": "finished",
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
        "type": [{ "coding": [{ "system": SCT, "code": code }] }],
        "subject": { "reference": format!("Patient/{pid}") },
        "period": { "start": start },
        "serviceProvider": { "reference": format!("Organization/{org}") },
    })
}

pub fn quantity(
    pid: &str,
    eid: Option<&str>,
    loinc: &str,
    value: f64,
    unit: &str,
    when: &str,
) -> Value {
    let mut o = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "coding": [{ "system": LOINC, "code": loinc }] },
        "subject": { "reference": format!("Patient/{pid}") },
        "effectiveDateTime": when,
        "valueQuantity": { "value": value, "unit": unit, "system": UCUM, "code": unit },
    });
    if let Some(e) = eid {
        o["encounter"] = json!({ "reference": format!("Encounter/{e}") });
    }
    o
}

fn new_patient(app: &TestApp, org: &str) -> String {
    app.post("Patient", &patient(org, &unique("NID")))
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn an_encounter_with_observations_is_one_event_with_data_values_in_a_new_enrollment() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let pid = new_patient(&app, &org);
    let r = app.post(
        "Encounter",
        &encounter(&pid, &org, "11429006", "2026-03-02T09:30:00+00:00"),
    );
    let e = r.expect(201);
    let eid = e["id"].as_str().unwrap().to_string();
    assert_eq!(e["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(
        e["serviceProvider"]["reference"],
        format!("Organization/{org}")
    );
    assert_eq!(e["type"][0]["coding"][0]["code"], "11429006");
    assert_eq!(e["status"], "finished");
    assert_eq!(e["period"]["start"], "2026-03-02T09:30:00.000+00:00");
    for (code, v, u) in [
        ("29463-7", 72.5, "kg"),
        ("8302-2", 170.0, "cm"),
        ("8480-6", 120.0, "mm[Hg]"),
        ("8462-4", 80.0, "mm[Hg]"),
    ] {
        let o = app
            .post(
                "Observation",
                &quantity(&pid, Some(&eid), code, v, u, "2026-03-02T09:40:00+00:00"),
            )
            .expect(201);
        assert_eq!(o["encounter"]["reference"], format!("Encounter/{eid}"));
        assert_eq!(o["valueQuantity"]["value"].as_f64().unwrap(), v);
    }
    let db = &app.db;
    assert_eq!(db.scalar("SELECT count(*) FROM event"), 1);
    assert_eq!(db.text(&format!("SELECT s.code FROM event e JOIN program_stage s ON s.id = e.program_stage_id WHERE e.uid = '{eid}'")), vec!["OPD_VISIT"]);
    assert_eq!(
        db.text(&format!("SELECT status FROM event WHERE uid = '{eid}'")),
        vec!["COMPLETED"]
    );
    assert_eq!(db.text("SELECT p.code || ':' || en.status FROM enrollment en JOIN program p ON p.id = en.program_id"), vec!["OPD:ACTIVE"]);
    assert_eq!(db.scalar("SELECT count(*) FROM program_ownership"), 1);
    let values = db.text(&format!(
        "SELECT de.code || '=' || d.value FROM event_data_value d JOIN data_element de ON de.id = d.data_element_id JOIN event e ON e.id = d.event_id WHERE e.uid = '{eid}' ORDER BY de.code"
    ));
    assert_eq!(
        values,
        vec![
            "BP_DIASTOLIC=80",
            "BP_SYSTOLIC=120",
            "HEIGHT=170",
            "WEIGHT=72.5"
        ]
    );
    // A second OPD visit goes into the same (repeatable) stage of the same enrollment.
    app.post(
        "Encounter",
        &encounter(&pid, &org, "11429006", "2026-04-02T09:30:00+00:00"),
    )
    .expect(201);
    assert_eq!(db.scalar("SELECT count(*) FROM enrollment"), 1);
    assert_eq!(db.scalar("SELECT count(*) FROM event"), 2);
}

#[test]
fn observations_without_an_encounter_land_in_the_day_event_of_the_mapped_stage() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let pid = new_patient(&app, &org);
    let a = app
        .post(
            "Observation",
            &quantity(
                &pid,
                None,
                "29463-7",
                60.0,
                "kg",
                "2026-05-01T08:00:00+00:00",
            ),
        )
        .expect(201);
    let b = app
        .post(
            "Observation",
            &quantity(
                &pid,
                None,
                "8310-5",
                37.2,
                "Cel",
                "2026-05-01T15:00:00+00:00",
            ),
        )
        .expect(201);
    let c = app
        .post(
            "Observation",
            &quantity(
                &pid,
                None,
                "29463-7",
                61.0,
                "kg",
                "2026-05-02T08:00:00+00:00",
            ),
        )
        .expect(201);
    assert_eq!(a["encounter"], b["encounter"], "same day, same event");
    assert_ne!(a["encounter"], c["encounter"], "another day, another event");
    assert_eq!(app.db.scalar("SELECT count(*) FROM event"), 2);
    let enc = app
        .get(a["encounter"]["reference"].as_str().unwrap())
        .expect(200);
    assert_eq!(enc["type"][0]["coding"][0]["code"], "11429006");
    assert_eq!(enc["status"], "in-progress");
}

#[test]
fn anc_stages_open_an_anc_enrollment_and_the_first_visit_happens_once() {
    let app = TestApp::start();
    let org = app.org("KD_KUS_BON");
    let pid = new_patient(&app, &org);
    app.post(
        "Encounter",
        &encounter(&pid, &org, "424441002", "2026-01-10T10:00:00Z"),
    )
    .expect(201);
    app.post(
        "Encounter",
        &encounter(&pid, &org, "424619006", "2026-02-10T10:00:00Z"),
    )
    .expect(201);
    app.post(
        "Encounter",
        &encounter(&pid, &org, "424619006", "2026-03-10T10:00:00Z"),
    )
    .expect(201);
    let v = app
        .post(
            "Encounter",
            &encounter(&pid, &org, "424441002", "2026-04-10T10:00:00Z"),
        )
        .expect(409);
    assert!(
        v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("ANC first visit"),
        "{v}"
    );
    assert_eq!(
        app.db
            .text("SELECT p.code FROM enrollment en JOIN program p ON p.id = en.program_id"),
        vec!["ANC"]
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM event"), 3);
    // Haemoglobin goes into the ANC follow-up event by its encounter.
    let e = app
        .post(
            "Encounter",
            &encounter(&pid, &org, "424619006", "2026-05-10T10:00:00Z"),
        )
        .expect(201);
    let hb = quantity(
        &pid,
        Some(e["id"].as_str().unwrap()),
        "718-7",
        110.0,
        "g/L",
        "2026-05-10T10:05:00Z",
    );
    assert_eq!(
        app.post("Observation", &hb).expect(201)["valueQuantity"]["value"],
        11.0
    );
}

#[test]
fn quantities_are_converted_to_the_data_element_unit() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let pid = new_patient(&app, &org);
    let eid = app
        .post(
            "Encounter",
            &encounter(&pid, &org, "11429006", "2026-03-02T09:30:00Z"),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cases = [
        ("29463-7", 72500.0, "g", 72.5, "kg"),
        ("29463-7", 160.0, "[lb_av]", 72.574779, "kg"),
        ("8310-5", 98.6, "[degF]", 37.0, "Cel"),
        ("8302-2", 68.0, "[in_i]", 172.72, "cm"),
        ("8302-2", 1.7, "m", 170.0, "cm"),
    ];
    for (code, v, unit, want, want_unit) in cases {
        let o = app
            .post(
                "Observation",
                &quantity(&pid, Some(&eid), code, v, unit, "2026-03-02T09:40:00Z"),
            )
            .expect(201);
        let id = o["id"].as_str().unwrap();
        let got = app.get(&format!("Observation/{id}")).expect(200);
        let q = &got["valueQuantity"];
        assert!(
            (q["value"].as_f64().unwrap() - want).abs() < 1e-6,
            "{v} {unit} read back as {q}"
        );
        assert_eq!(q["code"], want_unit);
        assert_eq!(q["system"], UCUM);
    }
    let v = app
        .post(
            "Observation",
            &quantity(
                &pid,
                Some(&eid),
                "29463-7",
                10.0,
                "cm",
                "2026-03-02T09:40:00Z",
            ),
        )
        .expect(422);
    assert_eq!(v["issue"][0]["expression"][0], "Observation.valueQuantity");
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("cannot be converted"));
    let v = app
        .post(
            "Observation",
            &quantity(
                &pid,
                Some(&eid),
                "29463-7",
                10.0,
                "stone",
                "2026-03-02T09:40:00Z",
            ),
        )
        .expect(422);
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("stone"));
}

#[test]
fn coded_values_go_through_the_option_set() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let pid = new_patient(&app, &org);
    let eid = app
        .post(
            "Encounter",
            &encounter(&pid, &org, "11429006", "2026-03-02T09:30:00Z"),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dx = |system: &str, code: &str| {
        json!({
            "resourceType": "Observation", "status": "final",
            "code": { "coding": [{ "system": LOINC, "code": "29308-4" }] },
            "subject": { "reference": format!("Patient/{pid}") }, "encounter": { "reference": format!("Encounter/{eid}") },
            "valueCodeableConcept": { "coding": [{ "system": system, "code": code }] },
        })
    };
    let o = app.post("Observation", &dx(ICD11, "BA00")).expect(201);
    assert_eq!(
        o["valueCodeableConcept"]["coding"][0],
        json!({ "system": ICD11, "code": "BA00", "display": "Essential hypertension" })
    );
    assert_eq!(
        app.db.text("SELECT value FROM event_data_value"),
        vec!["BA00"]
    );
    let v = app.post("Observation", &dx(ICD11, "XX99")).expect(422);
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("XX99"));
    let v = app
        .post(
            "Observation",
            &quantity(
                &pid,
                Some(&eid),
                "9999-9",
                1.0,
                "kg",
                "2026-03-02T09:40:00Z",
            ),
        )
        .expect(422);
    assert_eq!(v["issue"][0]["expression"][0], "Observation.code");
}

#[test]
fn references_must_point_at_the_right_records() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let a = new_patient(&app, &org);
    let b = new_patient(&app, &org);
    let ea = app
        .post(
            "Encounter",
            &encounter(&a, &org, "11429006", "2026-03-02T09:30:00Z"),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    // B's observation cannot go into A's encounter.
    let v = app
        .post(
            "Observation",
            &quantity(&b, Some(&ea), "29463-7", 60.0, "kg", "2026-03-02T09:40:00Z"),
        )
        .expect(422);
    assert_eq!(v["issue"][0]["expression"][0], "Observation.encounter");
    let v = app
        .post(
            "Encounter",
            &encounter("NoSuchPatnt", &org, "11429006", "2026-03-02T09:30:00Z"),
        )
        .expect(422);
    assert_eq!(v["issue"][0]["expression"][0], "Encounter.subject");
    // An unknown type falls back to the class map (AMB → OPD visit) and is reported as not stored...
    let mut unknown_type = encounter(&a, &org, "99999999", "2026-03-02T09:30:00Z");
    let r = app.send(
        "POST",
        "Encounter",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=OperationOutcome"),
        ],
        Some(unknown_type.to_string().as_bytes()),
    );
    let oo = r.expect(201);
    assert_eq!(oo["issue"][1]["expression"][0], "Encounter.type", "{oo}");
    // ...and with a class that no map knows, nothing picks a stage: 422 naming the code.
    unknown_type["class"]["code"] = json!("EMER");
    let v = app.post("Encounter", &unknown_type).expect(422);
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("99999999"));
    // An Encounter with Observations cannot be deleted; without, it can.
    app.post(
        "Observation",
        &quantity(&a, Some(&ea), "29463-7", 60.0, "kg", "2026-03-02T09:40:00Z"),
    )
    .expect(201);
    app.delete(&format!("Encounter/{ea}")).outcome(409);
    let eb = app
        .post(
            "Encounter",
            &encounter(&b, &org, "11429006", "2026-03-02T09:30:00Z"),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.delete(&format!("Encounter/{eb}")).expect(200);
    app.get(&format!("Encounter/{eb}")).outcome(410);
}

#[test]
fn encounter_and_observation_versions_and_history() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let pid = new_patient(&app, &org);
    let e = app
        .post(
            "Encounter",
            &encounter(&pid, &org, "11429006", "2026-03-02T09:30:00Z"),
        )
        .expect(201);
    let eid = e["id"].as_str().unwrap().to_string();
    let mut e2 = e.clone();
    e2["status"] = json!("in-progress");
    assert_eq!(
        app.put(&format!("Encounter/{eid}"), &e2).expect(200)["meta"]["versionId"],
        "2"
    );
    assert_eq!(
        app.get(&format!("Encounter/{eid}/_history/1")).expect(200)["status"],
        "finished"
    );
    let o = app
        .post(
            "Observation",
            &quantity(
                &pid,
                Some(&eid),
                "29463-7",
                60.0,
                "kg",
                "2026-03-02T09:40:00Z",
            ),
        )
        .expect(201);
    let oid = o["id"].as_str().unwrap().to_string();
    let mut o2 = o.clone();
    o2["valueQuantity"]["value"] = json!(61.5);
    let r = app.send(
        "PUT",
        &format!("Observation/{oid}"),
        &[
            ("Content-Type", "application/fhir+json"),
            ("If-Match", "W/\"1\""),
        ],
        Some(o2.to_string().as_bytes()),
    );
    assert_eq!(r.expect(200)["valueQuantity"]["value"], 61.5);
    assert_eq!(
        app.get(&format!("Observation/{oid}/_history/1"))
            .expect(200)["valueQuantity"]["value"],
        60.0
    );
    let h = app.get(&format!("Observation/{oid}/_history")).expect(200);
    assert_eq!(h["entry"].as_array().unwrap().len(), 2);
    let th = app.get("Encounter/_history").expect(200);
    assert_eq!(th["entry"].as_array().unwrap().len(), 2);
    let later = app
        .get("Encounter/_history?_since=2999-01-01T00:00:00Z")
        .expect(200);
    assert!(later.get("entry").is_none());
    let paged = app.get("Encounter/_history?_count=1").expect(200);
    assert!(paged["link"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["relation"] == "next"));
    app.get("Encounter/_history?_at=2020").outcome(400);
    app.delete(&format!("Observation/{oid}")).expect(200);
    app.get(&format!("Observation/{oid}")).outcome(410);
    assert_eq!(
        app.get(&format!("Observation/{oid}/_history")).expect(200)["entry"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn diagnoses_cross_icd10_icd11_and_snomed() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let pid = new_patient(&app, &org);
    let eid = app
        .post(
            "Encounter",
            &encounter(&pid, &org, "11429006", "2026-03-02T09:30:00Z"),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dx = |codings: Value| {
        json!({
            "resourceType": "Observation", "status": "final",
            "code": { "coding": [{ "system": LOINC, "code": "29308-4" }] },
            "subject": { "reference": format!("Patient/{pid}") }, "encounter": { "reference": format!("Encounter/{eid}") },
            "valueCodeableConcept": { "coding": codings },
        })
    };
    // ICD-10 in: stored as the ICD-11 option, read back with every equivalent coding.
    let o = app
        .post(
            "Observation",
            &dx(json!([{ "system": "http://hl7.org/fhir/sid/icd-10", "code": "I10" }])),
        )
        .expect(201);
    let id = o["id"].as_str().unwrap();
    assert_eq!(
        app.db.text(&format!(
            "SELECT value FROM event_data_value WHERE uid = '{id}'"
        )),
        vec!["BA00"]
    );
    let got = app.get(&format!("Observation/{id}")).expect(200);
    let codings = got["valueCodeableConcept"]["coding"].as_array().unwrap();
    let systems: Vec<&str> = codings
        .iter()
        .map(|c| c["system"].as_str().unwrap())
        .collect();
    assert_eq!(systems[0], ICD11);
    assert!(systems.contains(&"http://hl7.org/fhir/sid/icd-10"));
    assert!(
        codings.iter().all(|c| c["display"].is_string()),
        "{codings:?}"
    );
    // The first coding a map knows wins; codings that say the same are not reported as lost.
    let r = app.send(
        "POST",
        "Observation",
        &[("Content-Type", "application/fhir+json"), ("Prefer", "return=OperationOutcome")],
        Some(dx(json!([{ "system": "http://example.org/local", "code": "HTN" }, { "system": "http://hl7.org/fhir/sid/icd-10", "code": "E11" }, { "system": ICD11, "code": "5A11" }])).to_string().as_bytes()),
    );
    let oo = r.expect(201);
    let warned: Vec<&str> = oo["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "warning")
        .filter_map(|i| i["expression"][0].as_str())
        .collect();
    assert_eq!(warned, vec!["Observation.valueCodeableConcept.coding[0]"]);
}

#[test]
fn translate_and_lookup_answer_from_the_crosswalks() {
    let app = TestApp::start();
    let p = app.get("ConceptMap/$translate?system=http://hl7.org/fhir/sid/icd-10&code=E11&targetsystem=http://id.who.int/icd/release/11/mms").expect(200);
    assert_eq!(p["resourceType"], "Parameters");
    assert_eq!(
        p["parameter"][0],
        json!({ "name": "result", "valueBoolean": true })
    );
    assert_eq!(p["parameter"][1]["part"][1]["valueCoding"]["code"], "5A11");
    let back = app.get("ConceptMap/$translate?system=http://id.who.int/icd/release/11/mms&code=5A11&targetsystem=http://hl7.org/fhir/sid/icd-10").expect(200);
    assert_eq!(
        back["parameter"][1]["part"][1]["valueCoding"]["code"],
        "E11"
    );
    let none = app
        .get("ConceptMap/$translate?system=http://hl7.org/fhir/sid/icd-10&code=Z99.99")
        .expect(200);
    assert_eq!(none["parameter"][0]["valueBoolean"], false);
    let body = json!({ "resourceType": "Parameters", "parameter": [
        { "name": "coding", "valueCoding": { "system": "http://hl7.org/fhir/sid/icd-10", "code": "I10" } },
        { "name": "targetsystem", "valueUri": ICD11 } ] });
    let post = app.post("ConceptMap/$translate", &body).expect(200);
    assert_eq!(
        post["parameter"][1]["part"][1]["valueCoding"]["code"],
        "BA00"
    );
    let l = app
        .get(&format!("CodeSystem/$lookup?system={ICD11}&code=BA00"))
        .expect(200);
    assert_eq!(l["parameter"][1]["valueString"], "Essential hypertension");
    app.get(&format!("CodeSystem/$lookup?system={ICD11}&code=NOPE"))
        .outcome(404);
    let maps = app.get("ConceptMap?source=http://hl7.org/fhir/sid/icd-10&target=http://id.who.int/icd/release/11/mms").expect(200);
    assert_eq!(maps["total"], 1);
    let id = maps["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get(&format!("ConceptMap/{id}")).expect(200)["group"][0]["target"],
        ICD11
    );
    let cs = app.get(&format!("CodeSystem?system={ICD11}")).expect(200);
    assert!(cs["entry"][0]["resource"]["count"].as_i64().unwrap() >= 2);
}

#[test]
fn validate_code_for_code_systems_and_option_sets() {
    let app = TestApp::start();
    let ok = app
        .get(&format!("CodeSystem/$validate-code?url={ICD11}&code=BA00"))
        .expect(200);
    assert_eq!(ok["parameter"][0]["valueBoolean"], true);
    assert_eq!(ok["parameter"][1]["valueString"], "Essential hypertension");
    let bad = app
        .get(&format!("CodeSystem/$validate-code?url={ICD11}&code=XX99"))
        .expect(200);
    assert_eq!(bad["parameter"][0]["valueBoolean"], false);
    let wrong_display = app
        .get(&format!(
            "CodeSystem/$validate-code?url={ICD11}&code=BA00&display=Diabetes"
        ))
        .expect(200);
    assert_eq!(wrong_display["parameter"][0]["valueBoolean"], false);
    // Option sets are ValueSets; codes of another system count when a crosswalk carries them.
    let vs = app.get("ValueSet?name=DIAGNOSIS").expect(200);
    let url = vs["entry"][0]["resource"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        vs["entry"][0]["resource"]["compose"]["include"][0]["system"],
        ICD11
    );
    let v = |q: &str| {
        app.get(&format!("ValueSet/$validate-code?url={url}&{q}"))
            .expect(200)["parameter"][0]["valueBoolean"]
            .as_bool()
            .unwrap()
    };
    assert!(v("code=5A11"));
    assert!(v("system=http://hl7.org/fhir/sid/icd-10&code=E11"));
    assert!(!v("system=http://hl7.org/fhir/sid/icd-10&code=Z00"));
    assert!(!v("code=E11"));
    let sex = app.get("ValueSet?name=SEX").expect(200);
    let sex_url = sex["entry"][0]["resource"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get(&format!(
            "ValueSet/$validate-code?url={sex_url}&code=FEMALE"
        ))
        .expect(200)["parameter"][1]["valueString"],
        "Female"
    );
    app.get("ValueSet/$validate-code?url=nope&code=x")
        .outcome(404);
}

#[test]
fn translate_works_both_ways_for_every_crosswalk_row() {
    let app = TestApp::start();
    let csv = std::fs::read_to_string(support::repo().join("mappings/diagnoses.csv")).unwrap();
    let systems = [
        (0, ICD11),
        (2, "http://hl7.org/fhir/sid/icd-10"),
        (4, "http://snomed.info/sct"),
    ];
    let mut checked = 0;
    let mut reader_lines = csv.lines().skip(1);
    for line in &mut reader_lines {
        // Split on commas outside quotes (the source column is quoted).
        let mut cells = Vec::new();
        let (mut cur, mut quoted) = (String::new(), false);
        for ch in line.chars() {
            match ch {
                '"' => quoted = !quoted,
                ',' if !quoted => cells.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        cells.push(cur);
        for (i, from) in systems {
            for (j, to) in systems {
                if i == j || cells[i].is_empty() || cells[j].is_empty() {
                    continue;
                }
                let p = app
                    .get(&format!(
                        "ConceptMap/$translate?system={from}&code={}&targetsystem={to}",
                        cells[i]
                    ))
                    .expect(200);
                assert_eq!(
                    p["parameter"][0]["valueBoolean"], true,
                    "{from}|{} → {to}: {p}",
                    cells[i]
                );
                assert_eq!(
                    p["parameter"][1]["part"][1]["valueCoding"]["code"],
                    cells[j].as_str(),
                    "{from}|{} → {to}",
                    cells[i]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 250, "{checked} translations checked");
}
