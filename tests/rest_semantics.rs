//! REST semantics clients rely on: conditional create/update/delete, XML in and out equal to the
//! JSON twin, format negotiation, and a CapabilityStatement that lists what is implemented.

mod support;

use serde_json::{json, Value};
use support::{patient, unique, TestApp, NID};

#[test]
fn conditional_create_update_and_delete() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let nid = unique("NID");
    let q = format!("identifier={NID}|{nid}");
    let body = patient(&org, &nid).to_string();
    let r1 = app.send(
        "POST",
        "Patient",
        &[
            ("Content-Type", "application/fhir+json"),
            ("If-None-Exist", &q),
        ],
        Some(body.as_bytes()),
    );
    let first = r1.expect(201);
    let r2 = app.send(
        "POST",
        "Patient",
        &[
            ("Content-Type", "application/fhir+json"),
            ("If-None-Exist", &q),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(
        r2.expect(200)["id"],
        first["id"],
        "the second conditional create finds the first"
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 1);

    // Conditional update: update the one match.
    let mut changed = patient(&org, &nid);
    changed["gender"] = json!("male");
    let u = app.put(&format!("Patient?{q}"), &changed).expect(200);
    assert_eq!(u["id"], first["id"]);
    assert_eq!(u["gender"], "male");
    // ...create when none matches.
    let nid2 = unique("NID");
    let c = app
        .put(
            &format!("Patient?identifier={NID}|{nid2}"),
            &patient(&org, &nid2),
        )
        .expect(201);
    assert_ne!(c["id"], first["id"]);
    // ...412 when several match (two people share the family name).
    app.put("Patient?family=Mwangi", &patient(&org, &unique("NID")))
        .outcome(412);
    let r = app.send(
        "POST",
        "Patient",
        &[
            ("Content-Type", "application/fhir+json"),
            ("If-None-Exist", "family=Mwangi"),
        ],
        Some(body.as_bytes()),
    );
    r.outcome(412);
    // A condition without a search parameter is refused.
    app.put("Patient?_count=1", &patient(&org, &unique("NID")))
        .outcome(400);

    // Conditional delete.
    app.delete(&format!("Patient?identifier={NID}|{nid2}"))
        .expect(200);
    app.get(&format!("Patient/{}", c["id"].as_str().unwrap()))
        .outcome(410);
    app.delete("Patient?family=Mwangi&gender=female")
        .expect(200); // nothing left to match: fine
    app.delete("Patient?family=Mwangi").expect(200); // one left (the updated first one)
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM tracked_entity WHERE NOT deleted"),
        0
    );
}

fn strip_meta(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("meta");
    }
    v
}

#[test]
fn xml_round_trips_equal_their_json_twins() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let pid = app.new_patient(&org);
    let enc = json!({
        "resourceType": "Encounter", "status": "finished",
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
        "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "11429006" }] }],
        "subject": { "reference": format!("Patient/{pid}") },
        "period": { "start": "2026-03-02T09:30:00Z" },
    });
    let eid = app.post("Encounter", &enc).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let obs = json!({
        "resourceType": "Observation", "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "29463-7" }] },
        "subject": { "reference": format!("Patient/{pid}") }, "encounter": { "reference": format!("Encounter/{eid}") },
        "effectiveDateTime": "2026-03-02T09:40:00Z",
        "valueQuantity": { "value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg" },
    });
    let oid = app.post("Observation", &obs).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();

    for path in [
        format!("Patient/{pid}"),
        format!("Encounter/{eid}"),
        format!("Observation/{oid}"),
    ] {
        let json_twin = app.get(&path).expect(200);
        let xml = app.send("GET", &path, &[("Accept", "application/fhir+xml")], None);
        assert_eq!(xml.status, 200, "{}", xml.text);
        assert!(xml
            .header("content-type")
            .unwrap()
            .starts_with("application/fhir+xml"));
        // Parse the XML back with the codec: it is the same resource.
        let back = kiunga_codec::parse(xml.text.as_bytes(), kiunga_codec::Format::Xml).unwrap();
        assert_eq!(back, json_twin, "{path}");
        // And an update sent as XML stores the same thing as the JSON twin.
        let r = app.send(
            "PUT",
            &path,
            &[
                ("Content-Type", "application/fhir+xml"),
                ("Accept", "application/fhir+json"),
            ],
            Some(xml.text.as_bytes()),
        );
        let updated = r.expect(200);
        assert_eq!(strip_meta(updated), strip_meta(json_twin), "{path}");
    }
    // _format chooses as well as Accept does; searches answer XML Bundles.
    for f in ["xml", "application/fhir%2Bxml", "text/xml"] {
        let r = app.get(&format!("Observation?patient={pid}&_format={f}"));
        assert_eq!(r.status, 200, "{f}: {}", r.text);
        assert!(
            r.text.contains("<Bundle xmlns=\"http://hl7.org/fhir\">"),
            "{f}: {}",
            r.text
        );
    }
    let pretty = app.get(&format!("Patient/{pid}?_pretty=true"));
    assert!(pretty.text.contains("\n  \""), "{}", pretty.text);
    // Errors come in the negotiated format too.
    let r = app.send(
        "GET",
        "Patient/NoSuchPatnt",
        &[("Accept", "application/fhir+xml")],
        None,
    );
    assert_eq!(r.status, 404);
    assert!(r.text.contains("<OperationOutcome"), "{}", r.text);
    app.get("Patient?_format=pdf").outcome(406);
}

#[test]
fn capability_statement_lists_interactions_and_search_parameters() {
    let app = TestApp::start();
    let cs = app.get("metadata").expect(200);
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    for (t, params) in [
        (
            "Patient",
            vec![
                "identifier",
                "name",
                "family",
                "given",
                "birthdate",
                "gender",
                "organization",
                "phone",
                "_lastUpdated",
            ],
        ),
        (
            "Encounter",
            vec![
                "patient",
                "subject",
                "date",
                "status",
                "type",
                "class",
                "service-provider",
            ],
        ),
        (
            "Observation",
            vec![
                "patient",
                "subject",
                "encounter",
                "code",
                "date",
                "value-quantity",
                "category",
            ],
        ),
    ] {
        let r = resources
            .iter()
            .find(|r| r["type"] == t)
            .unwrap_or_else(|| panic!("{t} missing"));
        let names: Vec<&str> = r["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in params {
            assert!(names.contains(&p), "{t} lacks {p}: {names:?}");
        }
        let codes: Vec<&str> = r["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        for c in [
            "read",
            "vread",
            "update",
            "delete",
            "history-instance",
            "history-type",
            "create",
            "search-type",
        ] {
            assert!(codes.contains(&c), "{t} lacks {c}");
        }
        assert_eq!(r["conditionalCreate"], true);
    }
    let xml = app.send(
        "GET",
        "metadata",
        &[("Accept", "application/fhir+xml")],
        None,
    );
    assert_eq!(xml.status, 200, "{}", xml.text);
}

#[test]
fn every_record_shows_the_mapping_version_that_translated_it() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let version = app.get("metadata").expect(200)["extension"][0]["valueString"]
        .as_str()
        .unwrap()
        .to_string();
    let created = app
        .post("Patient", &patient(&org, &unique("NID")))
        .expect(201);
    let tag = |r: &Value| {
        r["meta"]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["system"] == "urn:kiunga:mapping-version")
            .map(|t| t["code"].as_str().unwrap().to_string())
    };
    assert_eq!(tag(&created), Some(version.clone()));
    let id = created["id"].as_str().unwrap();
    let read = app.get(&format!("Patient/{id}")).expect(200);
    assert_eq!(tag(&read), Some(version.clone()));
    let found = app.get(&format!("Patient?_id={id}")).expect(200);
    assert_eq!(tag(&found["entry"][0]["resource"]), Some(version.clone()));
    let hist = app.get(&format!("Patient/{id}/_history")).expect(200);
    assert_eq!(tag(&hist["entry"][0]["resource"]), Some(version.clone()));
    // Sending the read resource back loses nothing: the tag is the server's own.
    let r = app.send(
        "PUT",
        &format!("Patient/{id}"),
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=OperationOutcome"),
        ],
        Some(read.to_string().as_bytes()),
    );
    let oo = r.expect(200);
    assert!(
        oo["issue"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["severity"] != "warning"),
        "{oo}"
    );
}
