//! Transaction and batch Bundles: atomicity, urn:uuid rewriting, conditional references,
//! per-entry failures in a batch, unsupported types, XML, size limits and a 10,000-entry Bundle.

mod support;

use serde_json::{json, Value};
use support::{patient, unique, TestApp, NID};

fn encounter(subject: &str) -> Value {
    json!({
        "resourceType": "Encounter", "status": "finished",
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
        "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "11429006" }] }],
        "subject": { "reference": subject },
        "period": { "start": "2026-03-02T09:30:00Z" },
    })
}

fn weight(subject: &str, encounter: &str, kg: f64) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "29463-7" }] },
        "subject": { "reference": subject }, "encounter": { "reference": encounter },
        "effectiveDateTime": "2026-03-02T09:40:00Z",
        "valueQuantity": { "value": kg, "system": "http://unitsofmeasure.org", "code": "kg" },
    })
}

fn post(resource: Value, full_url: &str) -> Value {
    let t = resource["resourceType"].as_str().unwrap().to_string();
    json!({ "fullUrl": full_url, "resource": resource, "request": { "method": "POST", "url": t } })
}

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({ "resourceType": "Bundle", "type": kind, "entry": entries })
}

fn counts(app: &TestApp) -> (i64, i64, i64, i64) {
    let db = &app.db;
    (
        db.scalar("SELECT count(*) FROM tracked_entity"),
        db.scalar("SELECT count(*) FROM event"),
        db.scalar("SELECT count(*) FROM event_data_value"),
        db.scalar("SELECT count(*) FROM enrollment")
            + db.scalar("SELECT count(*) FROM inbound_log")
            + db.scalar("SELECT count(*) FROM change_log"),
    )
}

#[test]
fn a_transaction_stores_everything_with_rewritten_references_in_request_order() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (pu, eu, ou) = (
        "urn:uuid:8f9a6c2e-1111-4a5b-9c1d-000000000001",
        "urn:uuid:8f9a6c2e-1111-4a5b-9c1d-000000000002",
        "urn:uuid:8f9a6c2e-1111-4a5b-9c1d-000000000003",
    );
    // Entries deliberately out of dependency order: the server orders POSTs itself.
    let b = bundle(
        "transaction",
        vec![
            post(weight(pu, eu, 66.0), ou),
            post(encounter(pu), eu),
            post(patient(&org, &unique("NID")), pu),
        ],
    );
    let r = app.post("", &b).expect(200);
    assert_eq!(r["type"], "transaction-response");
    let entries = r["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for (e, t) in entries.iter().zip(["Observation", "Encounter", "Patient"]) {
        assert_eq!(e["response"]["status"], "201 Created");
        assert!(
            e["response"]["location"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{t}/")),
            "{e}"
        );
        assert_eq!(e["response"]["etag"], "W/\"1\"");
        assert!(e["response"]["lastModified"].is_string());
    }
    let obs = &entries[0]["resource"];
    let pid = entries[2]["resource"]["id"].as_str().unwrap();
    let eid = entries[1]["resource"]["id"].as_str().unwrap();
    assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(obs["encounter"]["reference"], format!("Encounter/{eid}"));
    assert_eq!(
        app.get(&format!("Observation?patient={pid}")).expect(200)["total"],
        1
    );
}

#[test]
fn a_failing_last_entry_leaves_no_trace() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let before = counts(&app);
    let pu = "urn:uuid:7d2b0f6e-2222-4a5b-9c1d-000000000001";
    let eu = "urn:uuid:7d2b0f6e-2222-4a5b-9c1d-000000000002";
    let b = bundle(
        "transaction",
        vec![
            post(patient(&org, &unique("NID")), pu),
            post(encounter(pu), eu),
            post(
                weight(pu, eu, 66.0),
                "urn:uuid:7d2b0f6e-2222-4a5b-9c1d-000000000003",
            ),
            post(
                weight("Patient/DoesNotExst", eu, 1.0),
                "urn:uuid:7d2b0f6e-2222-4a5b-9c1d-000000000004",
            ),
        ],
    );
    let v = app.post("", &b).expect(422);
    let d = v["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(d.starts_with("Bundle.entry[3] (POST Observation)"), "{d}");
    assert_eq!(
        v["issue"][0]["expression"][0],
        "Bundle.entry[3].resource.subject"
    );
    assert_eq!(
        counts(&app),
        before,
        "row counts unchanged after the failed transaction"
    );
}

#[test]
fn conditional_references_and_conditional_entries() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let nid = unique("NID");
    app.post("Patient", &patient(&org, &nid)).expect(201);
    // one match
    let b = bundle(
        "transaction",
        vec![post(
            encounter(&format!("Patient?identifier={NID}|{nid}")),
            "urn:uuid:a",
        )],
    );
    let r = app.post("", &b).expect(200);
    assert!(r["entry"][0]["resource"]["subject"]["reference"]
        .as_str()
        .unwrap()
        .starts_with("Patient/"));
    // zero matches
    let b = bundle(
        "transaction",
        vec![post(
            encounter(&format!("Patient?identifier={NID}|nobody")),
            "urn:uuid:b",
        )],
    );
    assert!(app.post("", &b).outcome(422).contains("matches no Patient"));
    // several matches
    app.post("Patient", &patient(&org, &unique("NID")))
        .expect(201);
    let b = bundle(
        "transaction",
        vec![post(encounter("Patient?family=Mwangi"), "urn:uuid:c")],
    );
    assert!(app.post("", &b).outcome(422).contains("more than one"));
    // ifNoneExist finds the existing person; a conditional PUT updates it; ifMatch is checked.
    let mut p = patient(&org, &nid);
    let b = bundle(
        "transaction",
        vec![
            json!({ "resource": p, "request": { "method": "POST", "url": "Patient", "ifNoneExist": format!("identifier={NID}|{nid}") } }),
        ],
    );
    let r = app.post("", &b).expect(200);
    assert_eq!(r["entry"][0]["response"]["status"], "200 OK");
    p["gender"] = json!("male");
    let b = bundle(
        "transaction",
        vec![
            json!({ "resource": p, "request": { "method": "PUT", "url": format!("Patient?identifier={NID}|{nid}"), "ifMatch": "W/\"1\"" } }),
        ],
    );
    let r = app.post("", &b).expect(200);
    assert_eq!(r["entry"][0]["resource"]["gender"], "male");
    let b = bundle(
        "transaction",
        vec![
            json!({ "resource": p, "request": { "method": "PUT", "url": format!("Patient?identifier={NID}|{nid}"), "ifMatch": "W/\"1\"" } }),
        ],
    );
    app.post("", &b).outcome(412);
}

#[test]
fn a_batch_keeps_good_entries_and_reports_bad_ones() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let good = patient(&org, &unique("NID"));
    let mut bad_date = patient(&org, &unique("NID"));
    bad_date["birthDate"] = json!("not-a-date");
    let mut bad_org = patient(&org, &unique("NID"));
    bad_org["managingOrganization"] = json!({ "reference": "Organization/Nowhere1234" });
    let claim = json!({ "resourceType": "Claim", "status": "active", "use": "claim", "created": "2026-01-01",
        "patient": { "reference": "Patient/x" }, "provider": { "reference": "Organization/x" },
        "priority": { "coding": [{ "code": "normal" }] }, "insurance": [{ "sequence": 1, "focal": true, "coverage": { "reference": "Coverage/x" } }],
        "type": { "coding": [{ "code": "professional" }] } });
    let nid = good["identifier"][0]["value"].as_str().unwrap().to_string();
    let b = bundle(
        "batch",
        vec![
            json!({ "resource": good, "request": { "method": "POST", "url": "Patient" } }),
            json!({ "resource": bad_date, "request": { "method": "POST", "url": "Patient" } }),
            json!({ "resource": bad_org, "request": { "method": "POST", "url": "Patient" } }),
            json!({ "resource": claim, "request": { "method": "POST", "url": "Claim" } }),
            json!({ "request": { "method": "GET", "url": format!("Patient?identifier={NID}|{nid}") } }),
            json!({ "request": { "method": "GET", "url": "Patient/NoSuchPatnt" } }),
        ],
    );
    let r = app.post("", &b).expect(200);
    assert_eq!(r["type"], "batch-response");
    let st: Vec<&str> = r["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        st,
        vec![
            "201 Created",
            "400 Bad Request",
            "422 Unprocessable Entity",
            "422 Unprocessable Entity",
            "200 OK",
            "404 Not Found"
        ]
    );
    assert_eq!(
        r["entry"][1]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.birthDate"
    );
    assert!(
        r["entry"][3]["response"]["outcome"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("Claim is not stored")
    );
    assert_eq!(
        r["entry"][4]["resource"]["total"], 1,
        "the GET saw the entry created before it"
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 1);
}

#[test]
fn unsupported_types_in_a_transaction_fail_it_unless_lenient() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let med = json!({ "resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": { "reference": "Patient/x" },
        "medicationCodeableConcept": { "text": "paracetamol" } });
    let entries = vec![
        post(patient(&org, &unique("NID")), "urn:uuid:p1"),
        post(med, "urn:uuid:m1"),
    ];
    let v = app
        .post("", &bundle("transaction", entries.clone()))
        .expect(422);
    assert!(
        v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("MedicationRequest is not stored"),
        "{v}"
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 0);
    let body = bundle("transaction", entries).to_string();
    let r = app.send(
        "POST",
        "",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "handling=lenient"),
        ],
        Some(body.as_bytes()),
    );
    let v = r.expect(200);
    assert_eq!(v["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(
        v["entry"][1]["response"]["outcome"]["issue"][0]["severity"],
        "warning"
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 1);
}

#[test]
fn xml_bundles_and_size_limits() {
    let app = TestApp::start_with(|c| c.max_bundle_entries = 5);
    let org = app.org("KD_KAS_MTO");
    let nid = unique("NID");
    let xml = format!(
        "<Bundle xmlns=\"http://hl7.org/fhir\"><type value=\"transaction\"/><entry><fullUrl value=\"urn:uuid:x1\"/><resource>\
         <Patient><identifier><system value=\"{NID}\"/><value value=\"{nid}\"/></identifier><name><family value=\"Xml\"/></name>\
         <managingOrganization><reference value=\"Organization/{org}\"/></managingOrganization></Patient></resource>\
         <request><method value=\"POST\"/><url value=\"Patient\"/></request></entry></Bundle>"
    );
    let r = app.send(
        "POST",
        "",
        &[
            ("Content-Type", "application/fhir+xml"),
            ("Accept", "application/fhir+xml"),
        ],
        Some(xml.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("transaction-response") && r.text.contains("201 Created"),
        "{}",
        r.text
    );
    let many: Vec<Value> = (0..6)
        .map(|i| post(patient(&org, &unique("NID")), &format!("urn:uuid:n{i}")))
        .collect();
    let v = app.post("", &bundle("transaction", many)).expect(413);
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("at most 5"));
    app.post("", &bundle("collection", vec![])).outcome(400);
    app.post("", &patient(&org, &unique("NID"))).outcome(400);
}

#[test]
fn a_ten_thousand_entry_transaction() {
    let app = TestApp::start_with(|c| c.pool_size = 2);
    let org = app.org("KD_KUS_PWA");
    let entries: Vec<Value> = (0..10_000)
        .map(|i| {
            post(
                patient(&org, &format!("BULK-{i:05}-{}", unique(""))),
                &format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
            )
        })
        .collect();
    let body = bundle("transaction", entries).to_string();
    let r = app.send(
        "POST",
        "",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=minimal"),
        ],
        Some(body.as_bytes()),
    );
    let v = r.expect(200);
    assert_eq!(v["entry"].as_array().unwrap().len(), 10_000);
    assert!(v["entry"][9999].get("resource").is_none());
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 10_000);
}

/// Enough records of each kind that the queued rows go by COPY (32 rows and more), then read back
/// through every path that must see them; and the same Bundle failing at its last entry leaves none.
#[test]
fn a_large_transaction_goes_by_copy_and_reads_back() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_KIL");
    let mut entries = Vec::new();
    for k in 0..34 {
        let (pu, eu) = (
            format!("urn:uuid:5a1c0de0-0000-4000-8000-{:012}", k * 100),
            format!("urn:uuid:5a1c0de0-0000-4000-8000-{:012}", k * 100 + 1),
        );
        entries.push(post(patient(&org, &unique("COPY")), &pu));
        entries.push(post(encounter(&pu), &eu));
        // The first person gets 40 weights, the others one each.
        for i in 0..if k == 0 { 40 } else { 1 } {
            entries.push(post(
                weight(&pu, &eu, 50.0 + i as f64),
                &format!("urn:uuid:5a1c0de0-0000-4000-8000-{:012}", k * 100 + 2 + i),
            ));
        }
    }
    let before = counts(&app);
    let mut failing = entries.clone();
    failing.push(post(
        weight("Patient/nobody-here", "Encounter/nor-here", 1.0),
        "urn:uuid:5a1c0de0-0000-4000-8000-999999999999",
    ));
    app.post("", &bundle("transaction", failing)).expect(422);
    assert_eq!(
        counts(&app),
        before,
        "a failed transaction leaves no queued row behind"
    );

    let v = app.post("", &bundle("transaction", entries)).expect(200);
    let answers = v["entry"].as_array().unwrap();
    assert_eq!(answers.len(), 34 * 2 + 40 + 33);
    assert!(answers
        .iter()
        .all(|a| a["response"]["status"] == "201 Created"));
    let location = |i: usize| {
        answers[i]["response"]["location"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let person = location(0).split('/').nth(1).unwrap().to_string();
    let visit = location(1).split('/').nth(1).unwrap().to_string();

    let db = &app.db;
    assert_eq!(db.scalar("SELECT count(*) FROM enrollment"), 34);
    assert_eq!(db.scalar("SELECT count(*) FROM program_ownership"), 34);
    assert_eq!(db.scalar("SELECT count(*) FROM event"), 34);
    assert_eq!(db.scalar("SELECT count(*) FROM event_data_value"), 73);
    // 34 people, 34 enrollments, 34 visits, 73 values: one change-log version each.
    assert_eq!(db.scalar("SELECT count(*) FROM change_log"), 34 * 3 + 73);
    assert_eq!(db.scalar("SELECT count(*) FROM inbound_log"), 34 * 2 + 73);

    let s = app
        .get(&format!(
            "Observation?patient={person}&code=http://loinc.org|29463-7&_count=5"
        ))
        .expect(200);
    assert_eq!(s["total"], 40);
    assert_eq!(s["entry"].as_array().unwrap().len(), 5);
    let e = app
        .get(&format!("Patient/{person}/$everything"))
        .expect(200);
    // The person, the visit, 40 values and the enrollment (EpisodeOfCare) the visit opened.
    assert_eq!(e["total"], 1 + 1 + 40 + 1);
    let h = app
        .get(&format!("Encounter/{visit}/_history/1"))
        .expect(200);
    assert_eq!(h["id"], visit.as_str());
    assert_eq!(h["subject"]["reference"], format!("Patient/{person}"));
}

/// People are queued and written together at the end (or before the next query), so a national ID
/// that is already registered, or carried by two new people, is refused when that happens, which
/// can be while a later entry runs. The refusal still names the entry and element that carried it,
/// and leaves nothing behind. Small Bundles (one INSERT) and large ones (COPY) alike.
#[test]
fn a_taken_national_id_is_refused_in_the_name_of_its_entry() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let taken = unique("NID");
    app.post("Patient", &patient(&org, &taken)).expect(201);
    let before = counts(&app);
    for people in [3usize, 40] {
        // Already registered: entry 1 carries it; the visits after it run before the flush.
        let mut entries: Vec<Value> = (0..people)
            .map(|k| {
                let nid = if k == 1 { taken.clone() } else { unique("NID") };
                post(
                    patient(&org, &nid),
                    &format!("urn:uuid:dead0000-0000-4000-8000-{k:012}"),
                )
            })
            .collect();
        entries.push(post(
            encounter("urn:uuid:dead0000-0000-4000-8000-000000000000"),
            "urn:uuid:dead0000-0000-4000-8000-999999999999",
        ));
        let v = app.post("", &bundle("transaction", entries)).expect(409);
        let issue = &v["issue"][0];
        assert_eq!(
            issue["expression"][0], "Bundle.entry[1].resource.identifier[0].value",
            "{v}"
        );
        let text = issue["diagnostics"].as_str().unwrap();
        assert!(
            text.starts_with("Bundle.entry[1] (POST Patient): Patient.identifier[0].value: this National ID is already registered to another person"),
            "{text}"
        );
        assert_eq!(counts(&app), before, "nothing of the failed Bundle stays");

        // Two new people with one national ID: the later entry is refused, naming the earlier.
        let twin = unique("NID");
        let entries: Vec<Value> = (0..people)
            .map(|k| {
                let nid = if k == 0 || k == people - 1 {
                    twin.clone()
                } else {
                    unique("NID")
                };
                post(
                    patient(&org, &nid),
                    &format!("urn:uuid:beef0000-0000-4000-8000-{k:012}"),
                )
            })
            .collect();
        let v = app.post("", &bundle("transaction", entries)).expect(409);
        let last = people - 1;
        assert_eq!(
            v["issue"][0]["expression"][0],
            format!("Bundle.entry[{last}].resource.identifier[0].value")
        );
        let text = v["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            text.contains(&format!("Bundle.entry[{last}] (POST Patient): Patient.identifier[0].value: this National ID is also carried by Bundle.entry[0] (POST Patient)")),
            "{text}"
        );
        assert_eq!(counts(&app), before);
    }

    // A batch: the entry with the taken value fails alone, in its own slot.
    let entries = vec![
        post(patient(&org, &unique("NID")), "urn:uuid:b0"),
        post(patient(&org, &taken), "urn:uuid:b1"),
    ];
    let v = app.post("", &bundle("batch", entries)).expect(200);
    assert_eq!(v["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(v["entry"][1]["response"]["status"], "409 Conflict");
    let issue = &v["entry"][1]["response"]["outcome"]["issue"][0];
    assert_eq!(
        issue["expression"][0],
        "Bundle.entry[1].resource.identifier[0].value"
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 2);
}
