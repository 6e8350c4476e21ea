//! Patient end to end over real HTTP against a real Postgres: round trips, the tracker rows behind
//! a Patient, every error status, versions and history, and the unique national ID under a race.

mod support;

use serde_json::json;
use support::{patient, unique, TestApp, NID};

#[test]
fn create_read_update_delete_round_trip() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let nid = unique("NID");
    let r = app.post("Patient", &patient(&org, &nid));
    let created = r.expect(201);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(created["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .contains('T'));
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/Patient/{id}/_history/1", app.base)
    );
    assert_eq!(r.header("etag").unwrap(), "W/\"1\"");
    assert!(r.header("last-modified").is_some());

    let got = app.get(&format!("Patient/{id}")).expect(200);
    assert_eq!(
        got["identifier"][0],
        json!({ "system": NID, "value": nid, "type": { "text": "National ID" } })
    );
    assert_eq!(got["name"][0]["family"], "Mwangi");
    assert_eq!(got["name"][0]["given"], json!(["Amina", "Wanjiru"]));
    assert_eq!(got["gender"], "female");
    assert_eq!(got["birthDate"], "1990-04-12");
    assert_eq!(got["telecom"][0]["value"], "+254 700 123456");
    assert_eq!(got["address"][0]["city"], "Kilima");
    assert_eq!(
        got["managingOrganization"]["reference"],
        format!("Organization/{org}")
    );
    assert_eq!(got["active"], true);

    let mut changed = got.clone();
    changed["birthDate"] = json!("1990-04-13");
    changed["gender"] = json!("other");
    changed.as_object_mut().unwrap().remove("telecom");
    let r = app.put(&format!("Patient/{id}"), &changed);
    let updated = r.expect(200);
    assert_eq!(updated["meta"]["versionId"], "2");
    assert_eq!(updated["birthDate"], "1990-04-13");
    assert_eq!(updated["gender"], "other");
    assert!(
        updated.get("telecom").is_none(),
        "a PUT replaces: the phone was removed"
    );

    let r = app.delete(&format!("Patient/{id}"));
    r.expect(200);
    let gone = app.get(&format!("Patient/{id}"));
    assert!(gone.outcome(410).contains("deleted"));
    // The national ID of a deleted person can be registered again.
    app.post("Patient", &patient(&org, &nid)).expect(201);
}

#[test]
fn a_patient_is_a_tracked_entity_with_attribute_values_and_no_json_copy() {
    let app = TestApp::start();
    let org = app.org("KD_KUS_PWA");
    let nid = unique("NID");
    let id = app.post("Patient", &patient(&org, &nid)).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let db = &app.db;
    assert_eq!(db.scalar(&format!("SELECT count(*) FROM tracked_entity WHERE uid = '{id}' AND NOT deleted AND version = 1")), 1);
    assert_eq!(
        db.text(&format!("SELECT ou.code FROM tracked_entity te JOIN org_unit ou ON ou.id = te.org_unit_id WHERE te.uid = '{id}'")),
        vec!["KD_KUS_PWA"]
    );
    let values = db.text(&format!(
        "SELECT a.code || '=' || v.value FROM tracked_entity_attribute_value v JOIN tracked_entity_attribute a ON a.id = v.attribute_id \
         JOIN tracked_entity te ON te.id = v.tracked_entity_id WHERE te.uid = '{id}' ORDER BY a.code"
    ));
    assert_eq!(
        values,
        vec![
            "DOB=1990-04-12".to_string(),
            "FAMILY_NAME=Mwangi".into(),
            "GIVEN_NAME=Amina Wanjiru".into(),
            format!("NATIONAL_ID={nid}"),
            "PHONE=+254 700 123456".into(),
            "SEX=FEMALE".into(),
            "VILLAGE=Kilima".into(),
        ]
    );
    // No table holds the FHIR resource as a document: only the append-only inbound log keeps
    // the original request (for re-mapping), and reads never use it.
    let json_columns = db.text(
        "SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = 'public' AND data_type IN ('json', 'jsonb') ORDER BY 1",
    );
    assert_eq!(
        json_columns,
        vec![
            "api_client.jwks",
            "change_log.state",
            "person_link.explanation",
            "person_merge.moved"
        ],
        "only an API client's public keys, the change log's tracker snapshot, a match decision's explanation and what a merge moved (row ids and tracker values, for its undo) are JSON"
    );
    assert_eq!(db.scalar(&format!("SELECT count(*) FROM inbound_log WHERE resource_uid = '{id}' AND interaction = 'create'")), 1);
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM change_log WHERE resource_uid = '{id}'"
        )),
        1
    );
    // The inbound log cannot be rewritten.
    let mut conn = db.conn();
    use diesel::RunQueryDsl;
    assert!(diesel::sql_query("DELETE FROM inbound_log")
        .execute(&mut conn)
        .is_err());
}

#[test]
fn reads_come_from_the_tracker_rows_not_the_request() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let id = app.new_patient(&org);
    // Change the tracker row directly: the FHIR read must show it.
    use diesel::RunQueryDsl;
    let changed = diesel::sql_query(format!(
        "UPDATE tracked_entity_attribute_value SET value = 'Achieng', search_value = 'achieng' \
         WHERE attribute_id = (SELECT id FROM tracked_entity_attribute WHERE code = 'FAMILY_NAME') \
         AND tracked_entity_id = (SELECT id FROM tracked_entity WHERE uid = '{id}')"
    ))
    .execute(&mut app.db.conn())
    .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(
        app.get(&format!("Patient/{id}")).expect(200)["name"][0]["family"],
        "Achieng"
    );
}

#[test]
fn unmapped_elements_are_reported_and_strict_mode_rejects_them() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let mut p = patient(&org, &unique("NID"));
    p["maritalStatus"] = json!({ "text": "Married" });
    p["identifier"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "system": "http://hospital.example/mrn", "value": "MRN-1" }));
    let r = app.send(
        "POST",
        "Patient",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=OperationOutcome"),
        ],
        Some(p.to_string().as_bytes()),
    );
    let oo = r.expect(201);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let warned: Vec<&str> = oo["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "warning")
        .filter_map(|i| i["expression"][0].as_str())
        .collect();
    assert_eq!(
        warned,
        vec!["Patient.identifier[1]", "Patient.maritalStatus"]
    );
    // The original request is kept for re-mapping.
    assert_eq!(app.db.scalar("SELECT count(*) FROM inbound_log WHERE position('MRN-1' in convert_from(body, 'UTF8')) > 0"), 1);

    let strict = TestApp::start_with(|c| c.strict_mapping = true);
    let org = strict.org("KD_KAS_MTO");
    let mut p = patient(&org, &unique("NID"));
    p["maritalStatus"] = json!({ "text": "Married" });
    let r = strict.post("Patient", &p);
    let v = r.expect(422);
    assert_eq!(v["issue"][0]["expression"][0], "Patient.maritalStatus");
    assert_eq!(strict.db.scalar("SELECT count(*) FROM tracked_entity"), 0);
}

#[test]
fn return_minimal_and_representation() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let body = patient(&org, &unique("NID")).to_string();
    let r = app.send(
        "POST",
        "Patient",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=minimal"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 201);
    assert!(r.text.is_empty());
    assert!(r.header("location").is_some());
}

#[test]
fn error_statuses_are_operation_outcomes() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let before = app.db.scalar("SELECT count(*) FROM tracked_entity");

    // Malformed JSON, wrong resourceType, unknown element: 400.
    let r = app.send(
        "POST",
        "Patient",
        &[("Content-Type", "application/fhir+json")],
        Some(b"{not json"),
    );
    r.outcome(400);
    let mut wrong = patient(&org, &unique("NID"));
    wrong["resourceType"] = json!("Observation");
    let msg = app.post("Patient", &wrong).outcome(400);
    assert!(msg.contains("Observation"), "{msg}");
    let mut unknown = patient(&org, &unique("NID"));
    unknown["favouriteColour"] = json!("blue");
    app.post("Patient", &unknown).outcome(400);
    // Impossible date: 400 naming the element.
    let mut bad_date = patient(&org, &unique("NID"));
    bad_date["birthDate"] = json!("1990-02-30");
    let v = app.post("Patient", &bad_date).expect(400);
    assert_eq!(v["issue"][0]["expression"][0], "Patient.birthDate");
    // Unknown id: 404. Unsupported media type: 415. Not acceptable: 406.
    app.get("Patient/NoSuchIdXYZ").outcome(404);
    app.send(
        "POST",
        "Patient",
        &[("Content-Type", "text/plain")],
        Some(b"hello"),
    )
    .outcome(415);
    let r = app.send(
        "GET",
        "Patient/NoSuchIdXYZ",
        &[("Accept", "image/png")],
        None,
    );
    assert_eq!(r.status, 406, "{}", r.text);
    // Method not allowed: 405.
    app.send("PATCH", "Patient/abc", &[], None).outcome(405);
    app.send("DELETE", "Organization", &[], None).outcome(405);
    app.send("DELETE", &format!("Organization/{org}"), &[], None)
        .outcome(405);
    // Unknown resource type: 404.
    app.get("Claim/abc").outcome(404);
    // Business rules: unknown org unit 422, bad gender 422, bad phone 422.
    let mut no_org = patient(&org, &unique("NID"));
    no_org["managingOrganization"] = json!({ "reference": "Organization/NotAnOrgUnit" });
    let v = app.post("Patient", &no_org).expect(422);
    assert_eq!(
        v["issue"][0]["expression"][0],
        "Patient.managingOrganization"
    );
    let mut missing_org = patient(&org, &unique("NID"));
    missing_org
        .as_object_mut()
        .unwrap()
        .remove("managingOrganization");
    assert!(app
        .post("Patient", &missing_org)
        .outcome(422)
        .contains("managingOrganization"));
    let mut bad_phone = patient(&org, &unique("NID"));
    bad_phone["telecom"][0]["value"] = json!("call me maybe");
    let v = app.post("Patient", &bad_phone).expect(422);
    assert_eq!(v["issue"][0]["expression"][0], "Patient.telecom[0].value");
    // Update without id / with another id: 400.
    let id = app.new_patient(&org);
    let created = 1;
    app.put(&format!("Patient/{id}"), &patient(&org, &unique("NID")))
        .outcome(400);
    let mut other = patient(&org, &unique("NID"));
    other["id"] = json!("SomeOtherId");
    app.put(&format!("Patient/{id}"), &other).outcome(400);
    // Nothing partial was stored by any of the failures.
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM tracked_entity"),
        before + created
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM inbound_log"), created);
    // 5xx never happened, and unknown endpoints are OperationOutcomes too.
    app.send("GET", "/nope", &[], None);
    let r = app
        .http
        .get(app.base.replace("/fhir", "/nowhere"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn national_id_is_unique() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let nid = unique("NID");
    app.post("Patient", &patient(&org, &nid)).expect(201);
    let v = app.post("Patient", &patient(&org, &nid)).expect(409);
    assert_eq!(
        v["issue"][0]["expression"][0],
        "Patient.identifier[0].value"
    );
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("National ID"));
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 1);
}

#[test]
fn concurrent_creates_with_one_national_id_exactly_one_wins() {
    let app = TestApp::start_with(|c| c.http_workers = 2);
    let org = app.org("KD_KAS_MTO");
    let nid = unique("NID");
    let body = patient(&org, &nid);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| app.post("Patient", &body).status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 1);
    assert_eq!(app.db.scalar("SELECT count(*) FROM inbound_log"), 1);
}

#[test]
fn versions_vread_history_and_if_match() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let v1 = app
        .post("Patient", &patient(&org, &unique("NID")))
        .expect(201);
    let id = v1["id"].as_str().unwrap().to_string();
    let mut body = v1.clone();
    body["birthDate"] = json!("1985");
    let r = app.send(
        "PUT",
        &format!("Patient/{id}"),
        &[
            ("Content-Type", "application/fhir+json"),
            ("If-Match", "W/\"1\""),
        ],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.expect(200)["birthDate"], "1985");
    let r = app.send(
        "PUT",
        &format!("Patient/{id}"),
        &[
            ("Content-Type", "application/fhir+json"),
            ("If-Match", "W/\"1\""),
        ],
        Some(body.to_string().as_bytes()),
    );
    assert!(r.outcome(412).contains("version 2"));
    assert_eq!(
        app.get(&format!("Patient/{id}/_history/1")).expect(200)["birthDate"],
        "1990-04-12"
    );
    assert_eq!(
        app.get(&format!("Patient/{id}/_history/2")).expect(200)["birthDate"],
        "1985"
    );
    app.get(&format!("Patient/{id}/_history/3")).outcome(404);
    app.delete(&format!("Patient/{id}")).expect(200);
    let h = app.get(&format!("Patient/{id}/_history")).expect(200);
    assert_eq!(h["type"], "history");
    let methods: Vec<&str> = h["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, vec!["DELETE", "PUT", "POST"]);
    app.get(&format!("Patient/{id}/_history/3")).outcome(410);
}

#[test]
fn concurrent_if_match_updates_exactly_one_wins() {
    let app = TestApp::start_with(|c| c.http_workers = 2);
    let org = app.org("KD_KAS_MTO");
    let v1 = app
        .post("Patient", &patient(&org, &unique("NID")))
        .expect(201);
    let id = v1["id"].as_str().unwrap().to_string();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = ["male", "other", "unknown", "male"]
            .into_iter()
            .map(|g| {
                let mut b = v1.clone();
                b["gender"] = json!(g);
                let app = &app;
                let id = &id;
                s.spawn(move || {
                    app.send(
                        "PUT",
                        &format!("Patient/{id}"),
                        &[
                            ("Content-Type", "application/fhir+json"),
                            ("If-Match", "W/\"1\""),
                        ],
                        Some(b.to_string().as_bytes()),
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, vec![200, 412, 412, 412], "{statuses:?}");
}

#[test]
fn xml_read_and_create() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let id = app.new_patient(&org);
    let r = app.send(
        "GET",
        &format!("Patient/{id}"),
        &[("Accept", "application/fhir+xml")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+xml"));
    assert!(
        r.text.contains("<Patient xmlns=\"http://hl7.org/fhir\">"),
        "{}",
        r.text
    );
    let nid = unique("NIDX");
    let xml = format!(
        "<Patient xmlns=\"http://hl7.org/fhir\"><identifier><system value=\"{NID}\"/><value value=\"{nid}\"/></identifier>\
         <name><family value=\"Otieno\"/><given value=\"Zawadi\"/></name><gender value=\"female\"/><birthDate value=\"1988-08-08\"/>\
         <managingOrganization><reference value=\"Organization/{org}\"/></managingOrganization></Patient>"
    );
    let r = app.send(
        "POST",
        "Patient?_format=json",
        &[("Content-Type", "application/fhir+xml")],
        Some(xml.as_bytes()),
    );
    let created = r.expect(201);
    assert_eq!(created["name"][0]["family"], "Otieno");
    assert_eq!(created["birthDate"], "1988-08-08");
}

#[test]
fn capability_statement_health_and_readiness() {
    let app = TestApp::start();
    let cs = app.get("metadata").expect(200);
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let patient = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    let codes: Vec<&str> = patient["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    for c in [
        "create",
        "read",
        "vread",
        "update",
        "delete",
        "history-instance",
    ] {
        assert!(codes.contains(&c), "{codes:?}");
    }
    let root = app.base.trim_end_matches("/fhir").to_string();
    assert_eq!(
        app.http
            .get(format!("{root}/healthz"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        app.http
            .get(format!("{root}/readyz"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn responses_carry_a_request_id() {
    let app = TestApp::start();
    let r = app.send("GET", "metadata", &[("X-Request-Id", "trace-123")], None);
    assert_eq!(r.header("x-request-id").as_deref(), Some("trace-123"));
    let r = app.get("metadata");
    assert_eq!(r.header("x-request-id").map(|v| v.len()), Some(11));
}

/// `active_reads` reads run their database work at once; the next read waits its turn, and past
/// `pool_timeout_ms` gets a 503 saying so, while a write does not queue. A `$everything` held up
/// by a lock on the events holds the one turn here.
#[test]
fn reads_past_active_reads_wait_their_turn_then_get_503_and_writes_do_not() {
    use diesel::connection::SimpleConnection;
    let app = TestApp::start_with(|c| {
        c.http_workers = 2;
        c.active_reads = 1;
        c.pool_timeout_ms = 400;
    });
    let org = app.org("KD_KAS_MTO");
    let id = app.new_patient(&org);
    let mut locker = app.db.conn();
    // `$everything` reads the events; creating a Patient does not touch them.
    locker
        .batch_execute("BEGIN; LOCK TABLE event IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    std::thread::scope(|s| {
        let held = s.spawn(|| app.get(&format!("Patient/{id}/$everything")));
        std::thread::sleep(std::time::Duration::from_millis(300));
        app.post("Patient", &patient(&org, &unique("NID")))
            .expect(201);
        let waited = app.get("Patient?_count=1");
        assert_eq!(waited.status, 503, "{}", waited.text);
        assert!(waited.text.contains("waited its turn"), "{}", waited.text);
        locker.batch_execute("COMMIT").unwrap();
        assert_eq!(held.join().unwrap().status, 200);
    });
    assert_eq!(app.get("Patient?_count=1").status, 200);
}
