//! The access record (#10): every read, search, write, operation and refusal about patient data
//! leaves exactly one AuditEvent, a write's in its own transaction; the trail is searchable with
//! the audit scope only, and append-only.

mod support;

use serde_json::{json, Value};
use support::clients::*;
use support::{created_id, TestApp};

fn observation(patient: &str) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "29463-7" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "effectiveDateTime": "2026-03-02T09:40:00Z",
        "valueQuantity": { "value": 61.5, "system": "http://unitsofmeasure.org", "code": "kg" },
    })
}

/// The AuditEvents a search returns: (subtype, action, outcome, entity references).
fn events(app: &TestApp, token: &str, query: &str) -> Vec<(String, String, String, Vec<String>)> {
    let b = call(
        app,
        "GET",
        &format!("AuditEvent?{query}&_count=100"),
        token,
        None,
    )
    .expect(200);
    assert_eq!(
        b["total"].as_i64().unwrap() as usize,
        b["entry"].as_array().map_or(0, Vec::len),
        "{b}"
    );
    b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                r["subtype"][0]["code"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["entity"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|x| x["what"]["reference"].as_str().map(str::to_string))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn every_access_to_patient_data_leaves_exactly_one_audit_event() {
    let app = secured();
    let admin = token_for(&app, "admin", "system/*.cruds", &["KD"], &["KD"], None);
    let reader = token_for(
        &app,
        "kas-reader",
        "system/Patient.rs",
        &[],
        &["KD_KAS"],
        None,
    );
    let auditor = token_for(&app, "auditor", "system/AuditEvent.rs", &[], &[], None);
    let kas = app.org("KD_KAS_MTO");
    let kus = app.org("KD_KUS_PWA");

    let created = call(
        &app,
        "POST",
        "Patient",
        &admin,
        Some(&person(&kas, "Otieno")),
    )
    .expect(201);
    let p = created["id"].as_str().unwrap().to_string();
    let pref = format!("Patient/{p}");
    // Who wrote the version is on it.
    assert_eq!(
        created["meta"]["source"], "urn:kiunga:client:admin",
        "{created}"
    );
    let other = call(
        &app,
        "POST",
        "Patient",
        &admin,
        Some(&person(&kus, "Kamau")),
    )
    .expect(201);
    let q = other["id"].as_str().unwrap().to_string();

    let read = call(&app, "GET", &pref, &admin, None).expect(200);
    assert_eq!(read["meta"]["source"], "urn:kiunga:client:admin", "{read}");
    call(&app, "GET", "Patient?family=Otieno", &admin, None).expect(200);
    let obs = call(&app, "POST", "Observation", &admin, Some(&observation(&p))).expect(201);
    let o = obs["id"].as_str().unwrap().to_string();
    call(&app, "GET", &format!("{pref}/$everything"), &admin, None).expect(200);
    // Refusals are accesses too: outside the reader's org units (404) and outside its scopes (403).
    call(&app, "GET", &format!("Patient/{q}"), &reader, None).outcome(404);
    let m = call(
        &app,
        "POST",
        "Patient",
        &reader,
        Some(&person(&kas, "Njoroge")),
    )
    .outcome(403);
    assert!(m.contains("system/Patient.c"), "{m}");
    // A transaction that fails leaves one record of the refusal and nothing it would have written.
    let failing = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "fullUrl": "urn:uuid:8f9a6c2e-1111-4a5b-9c1d-0000000000a1", "resource": person(&kas, "Wanjiru"), "request": { "method": "POST", "url": "Patient" } },
        { "resource": observation("does-not-exist"), "request": { "method": "POST", "url": "Observation" } }
    ]});
    let status = call(&app, "POST", "", &admin, Some(&failing)).status;
    assert!((400..500).contains(&status), "{status}");

    // The audit trail is not reachable through a wildcard scope.
    call(&app, "GET", "AuditEvent", &admin, None).outcome(403);

    let mine = events(&app, &auditor, &format!("patient={pref}"));
    let kinds: Vec<(&str, &str, &str)> = mine
        .iter()
        .map(|(s, a, o, _)| (s.as_str(), a.as_str(), o.as_str()))
        .collect();
    // Newest first: $everything, the Observation's create, the search, the read, the create.
    assert_eq!(
        kinds,
        [
            ("$everything", "R", "0"),
            ("create", "C", "0"),
            ("search-type", "E", "0"),
            ("read", "R", "0"),
            ("create", "C", "0"),
        ],
        "{mine:?}"
    );
    assert!(mine[1].3.contains(&format!("Observation/{o}")) && mine[1].3.contains(&pref));
    assert!(mine[0].3.contains(&format!("Observation/{o}")), "{mine:?}");

    let refused = events(&app, &auditor, "agent=kas-reader");
    let kinds: Vec<(&str, &str, &str)> = refused
        .iter()
        .map(|(s, a, o, _)| (s.as_str(), a.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("create", "C", "4"), ("read", "R", "4")],
        "{refused:?}"
    );
    // The refused read names nothing: the record it asked for is not revealed, even to the trail.
    assert!(
        refused.iter().all(|(_, _, _, e)| e.is_empty()),
        "{refused:?}"
    );

    let bundles = events(&app, &auditor, "agent=admin&subtype=transaction");
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    assert_eq!(bundles[0].2, "4");
    assert!(bundles[0].3.is_empty(), "{bundles:?}");
    // Every request of the admin: two creates of people, the read, the search, the Observation,
    // $everything, the failed transaction and the refused look at the trail.
    assert_eq!(events(&app, &auditor, "agent=admin").len(), 8);
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM audit_event WHERE agent = 'client:admin'"),
        8
    );

    // A write's record commits in the write's own transaction.
    let same_tx = app.db.scalar(&format!(
        "SELECT count(*) FROM audit_event a JOIN change_log c ON c.request_id = a.request_id \
         WHERE c.resource_uid = '{o}' AND a.xmin::text = c.xmin::text"
    ));
    assert_eq!(same_tx, 1);

    // One event read by id, in JSON and XML; its query is kept for a search.
    let search = call(
        &app,
        "GET",
        "AuditEvent?agent=admin&subtype=search-type&outcome=0",
        &auditor,
        None,
    )
    .expect(200);
    let ev = &search["entry"][0]["resource"];
    let id = ev["id"].as_str().unwrap();
    let query = ev["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["query"].as_str())
        .unwrap();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(query)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), "family=Otieno");
    assert_eq!(ev["agent"][0]["who"]["identifier"]["value"], "admin");
    assert_eq!(ev["agent"][0]["network"]["address"], "127.0.0.1");
    call(&app, "GET", &format!("AuditEvent/{id}"), &auditor, None).expect(200);
    let bearer = format!("Bearer {auditor}");
    let xml = app.send(
        "GET",
        &format!("AuditEvent/{id}?_format=xml"),
        &[("Authorization", bearer.as_str())],
        None,
    );
    assert_eq!(xml.status, 200, "{}", xml.text);
    assert!(xml.text.contains("<AuditEvent"), "{}", xml.text);
    call(&app, "GET", "AuditEvent/999999999", &auditor, None).outcome(404);
    // Date filters.
    assert_eq!(
        events(&app, &auditor, "agent=admin&date=lt2000-01-01").len(),
        0
    );
    assert_eq!(
        events(&app, &auditor, "agent=admin&date=ge2000-01-01").len(),
        8
    );
    call(&app, "GET", "AuditEvent?date=yesterday", &auditor, None).outcome(400);

    // Append-only, even through SQL.
    let mut conn = app.db.conn();
    use diesel::RunQueryDsl;
    assert!(diesel::sql_query("UPDATE audit_event SET agent = 'x'")
        .execute(&mut conn)
        .is_err());
    assert!(diesel::sql_query("DELETE FROM audit_event")
        .execute(&mut conn)
        .is_err());
}

#[test]
fn a_batch_records_each_entry_that_wrote_and_development_mode_records_anonymous_access() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let batch = json!({ "resourceType": "Bundle", "type": "batch", "entry": [
        { "resource": person(&org, "Achieng"), "request": { "method": "POST", "url": "Patient" } },
        { "resource": observation("does-not-exist"), "request": { "method": "POST", "url": "Observation" } },
        { "resource": person(&org, "Mwangi"), "request": { "method": "POST", "url": "Patient" } }
    ]});
    let r = app
        .send(
            "POST",
            "",
            &[("Content-Type", "application/fhir+json")],
            Some(&serde_json::to_vec(&batch).unwrap()),
        )
        .expect(200);
    let ok: Vec<&str> = r["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert!(
        ok[0].starts_with("201") && ok[2].starts_with("201") && !ok[1].starts_with("2"),
        "{ok:?}"
    );
    let rows = app.db.scalar(
        "SELECT count(*) FROM audit_event WHERE subtype = 'batch' AND action = 'E' \
         AND agent = 'anonymous' AND cardinality(entity) = 1",
    );
    assert_eq!(rows, 2);
    // Reads in a batch are entries of their own too, a hidden or missing one naming nothing.
    let created = r["entry"][0]["response"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = created.split('/').nth(1).unwrap().to_string();
    let reads = json!({ "resourceType": "Bundle", "type": "batch", "entry": [
        { "request": { "method": "GET", "url": format!("Patient/{pid}") } },
        { "request": { "method": "GET", "url": "Patient/Nx0000000A" } }
    ]});
    app.send(
        "POST",
        "",
        &[("Content-Type", "application/fhir+json")],
        Some(&serde_json::to_vec(&reads).unwrap()),
    )
    .expect(200);
    // A transaction's one row names what it wrote and what its read entries returned.
    let tx = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "resource": person(&org, "Njeri"), "request": { "method": "POST", "url": "Patient" } },
        { "request": { "method": "GET", "url": format!("Patient/{pid}") } }
    ]});
    let done = app
        .send(
            "POST",
            "",
            &[("Content-Type", "application/fhir+json")],
            Some(&serde_json::to_vec(&tx).unwrap()),
        )
        .expect(200);
    let new_id = created_id(&done["entry"][0]);
    assert_eq!(
        app.db.scalar(&format!(
            "SELECT count(*) FROM audit_event WHERE subtype = 'transaction' \
             AND entity @> ARRAY['Patient/{pid}', 'Patient/{new_id}']"
        )),
        1
    );
    // A query with a NUL byte (which Postgres text cannot hold) does not stop the writer.
    app.get("Patient?%00a=1").outcome(400);
    app.state.audit.flush();
    let read_rows = app.db.scalar(&format!(
        "SELECT count(*) FROM audit_event WHERE subtype = 'batch' AND entity = ARRAY['Patient/{pid}'] AND http_status = 200"
    ));
    assert_eq!(read_rows, 1);
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM audit_event WHERE subtype = 'batch' AND http_status = 404 AND cardinality(entity) = 0"),
        1
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM audit_event WHERE http_status = 400 AND outcome = 4"),
        1
    );
    // Development mode: the anonymous caller may search the trail, and its own reads are on it.
    app.get("Patient?family=Achieng").expect(200);
    let b = app
        .get("AuditEvent?agent=anonymous&subtype=search-type&outcome=0")
        .expect(200);
    assert_eq!(b["total"], 1, "{b}");
    let ev = &b["entry"][0]["resource"];
    assert_eq!(ev["agent"][0]["who"]["display"], "anonymous");
}
