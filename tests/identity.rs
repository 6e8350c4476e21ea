//! Identity across registries: the identifier systems declared in mappings/patient.toml
//! (placeholders, single-valued domains) and IHE PIXm `Patient/$ihe-pix` (ITI-83).

mod support;

use serde_json::{json, Value};
use support::{patient, system_unit, unique, TestApp, NID};

const MRN: &str = "http://hospital.smarthealthit.org";
const PASSPORT: &str = "http://standardhealthrecord.org/fhir/StructureDefinition/passportNumber";
const SSN: &str = "http://hl7.org/fhir/sid/us-ssn";

fn with_identifiers(org: &str, ids: &[(&str, &str)]) -> Value {
    let mut p = patient(org, "unused");
    p["identifier"] = Value::Array(
        ids.iter()
            .map(|(s, v)| json!({ "system": s, "value": v }))
            .collect(),
    );
    p
}

fn pix(app: &TestApp, query: &str) -> support::Resp {
    app.get(&format!("Patient/$ihe-pix?{query}"))
}

fn issue_code(v: &Value) -> &str {
    v["issue"][0]["code"].as_str().unwrap_or_default()
}

#[test]
fn pixm_cross_references_the_declared_domains_without_echoing_the_source() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (nid, mrn, passport) = (unique("NID"), unique("MRN"), unique("PP"));
    let created = app
        .post(
            "Patient",
            &with_identifiers(&org, &[(NID, &nid), (MRN, &mrn), (PASSPORT, &passport)]),
        )
        .expect(201);
    let id = created["id"].as_str().unwrap().to_string();
    let target_id = json!({ "name": "targetId", "valueReference": { "reference": format!("{}/Patient/{id}", app.base) } });

    // Every other domain the person is known in, and the person itself.
    let r = pix(&app, &format!("sourceIdentifier={NID}|{nid}"));
    let v = r.expect(200);
    assert_eq!(v["resourceType"], "Parameters");
    let params = v["parameter"].as_array().unwrap();
    let systems: Vec<&str> = params
        .iter()
        .filter(|p| p["name"] == "targetIdentifier")
        .map(|p| p["valueIdentifier"]["system"].as_str().unwrap())
        .collect();
    assert_eq!(systems, vec![MRN, PASSPORT]);
    assert!(params.contains(&target_id), "{v}");
    assert!(
        !r.text.contains(&nid),
        "the source identifier is not echoed: {}",
        r.text
    );

    // Only the domains asked for: repeated or comma-separated targetSystem.
    let v = pix(
        &app,
        &format!("sourceIdentifier={MRN}|{mrn}&targetSystem={NID}"),
    )
    .expect(200);
    assert_eq!(
        v["parameter"][0],
        json!({ "name": "targetIdentifier", "valueIdentifier": { "system": NID, "value": nid, "type": { "text": "National ID" } } })
    );
    assert_eq!(v["parameter"][1], target_id);
    assert_eq!(v["parameter"].as_array().unwrap().len(), 2);
    let v = pix(
        &app,
        &format!("sourceIdentifier={MRN}|{mrn}&targetSystem={NID},{PASSPORT}"),
    )
    .expect(200);
    assert_eq!(v["parameter"].as_array().unwrap().len(), 3);
    // A known domain the person has no identifier in: only the person.
    let v = pix(
        &app,
        &format!("sourceIdentifier={NID}|{nid}&targetSystem={SSN}"),
    )
    .expect(200);
    assert_eq!(v["parameter"], json!([target_id]));

    // IHE's status codes: unknown source domain 400, unknown identifier 404, unknown target 403.
    let v = pix(&app, "sourceIdentifier=urn:oid:1.2.3.4|123").expect(400);
    assert_eq!(issue_code(&v), "code-invalid");
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("sourceIdentifier Assigning Authority not found"));
    let r = pix(&app, &format!("sourceIdentifier={NID}|NOBODY-{nid}"));
    let v = r.expect(404);
    assert_eq!(issue_code(&v), "not-found");
    assert!(!r.text.contains("NOBODY"), "{}", r.text);
    let v = pix(
        &app,
        &format!("sourceIdentifier={NID}|{nid}&targetSystem=urn:oid:9.9.9"),
    )
    .expect(403);
    assert_eq!(issue_code(&v), "code-invalid");
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("targetSystem not found"));
    // Malformed requests.
    pix(&app, "").outcome(400);
    pix(&app, &format!("sourceIdentifier={nid}")).outcome(400);
    pix(&app, &format!("sourceIdentifier={NID}|{nid}&shoe=1")).outcome(400);
    // The placeholder of a domain identifies nobody.
    pix(&app, &format!("sourceIdentifier={NID}|0000000000")).outcome(404);
    // A deleted person is no longer cross-referenced.
    app.delete(&format!("Patient/{id}")).expect(200);
    pix(&app, &format!("sourceIdentifier={NID}|{nid}")).outcome(404);
    // Patient/$ihe-pix is an operation, not a read of a Patient with that id.
    app.send("DELETE", "Patient/$ihe-pix", &[], None)
        .outcome(405);
}

#[test]
fn placeholders_are_reported_not_stored_and_never_collide() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let send = |p: &Value| {
        app.send(
            "POST",
            "Patient",
            &[
                ("Content-Type", "application/fhir+json"),
                ("Prefer", "return=OperationOutcome"),
            ],
            Some(p.to_string().as_bytes()),
        )
    };
    // Two people whose EMR sent the placeholder national ID: both register, neither holds it.
    for _ in 0..2 {
        let oo = send(&patient(&org, "0000000000")).expect(201);
        let warning = oo["issue"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["severity"] == "warning")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            warning["expression"][0], "Patient.identifier[0].value",
            "{oo}"
        );
        assert!(
            warning["diagnostics"]
                .as_str()
                .unwrap()
                .contains("placeholder National ID"),
            "{oo}"
        );
    }
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 2);
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM tracked_entity_attribute_value v JOIN tracked_entity_attribute a ON a.id = v.attribute_id WHERE a.code = 'NATIONAL_ID'"),
        0
    );
    let v = app
        .get(&format!("Patient?identifier={NID}|0000000000"))
        .expect(200);
    assert_eq!(v["total"], 0);
    // Placeholders compare without case: `unknown` is `UNKNOWN`.
    send(&patient(&org, "unknown")).expect(201);
    // Strict mode refuses what it cannot store, placeholders included, naming them.
    let strict = TestApp::start_with(|c| c.strict_mapping = true);
    let sorg = strict.org("KD_KAS_MTO");
    let text = strict.post("Patient", &patient(&sorg, "N/A")).outcome(422);
    assert!(text.contains("placeholder"), "{text}");
}

#[test]
fn a_single_valued_domain_takes_one_value_per_person() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (a, b) = (unique("NID"), unique("NID"));
    // Two different national IDs for one person: refused, naming the second.
    let v = app
        .post(
            "Patient",
            &with_identifiers(&org, &[(NID, &a), (MRN, "M-1"), (NID, &b)]),
        )
        .expect(422);
    assert_eq!(
        v["issue"][0]["expression"][0],
        "Patient.identifier[2].value"
    );
    assert!(v["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("a second National ID, different from identifier[0]"));
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), 0);
    // The same value twice is one identifier.
    let created = app
        .post("Patient", &with_identifiers(&org, &[(NID, &a), (NID, &a)]))
        .expect(201);
    assert_eq!(created["identifier"].as_array().unwrap().len(), 1);
}

fn person(
    family: &str,
    given: &str,
    gender: &str,
    born: &str,
    phone: &str,
    nid: Option<&str>,
) -> Value {
    let mut p = json!({
        "resourceType": "Patient",
        "name": [{ "family": family, "given": [given] }],
        "gender": gender,
        "birthDate": born,
        "telecom": [{ "system": "phone", "value": phone }],
        "address": [{ "city": "Kilima" }],
    });
    if phone.is_empty() {
        p.as_object_mut().unwrap().remove("telecom");
    }
    if let Some(n) = nid {
        p["identifier"] = json!([{ "system": NID, "value": n }]);
    }
    p
}

fn registered(app: &TestApp, org: &str, mut p: Value) -> String {
    p["managingOrganization"] = json!({ "reference": format!("Organization/{org}") });
    app.post("Patient", &p).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn matches(app: &TestApp, body: &Value) -> Vec<(String, String, f64)> {
    let v = app.post("Patient/$match", body).expect(200);
    assert_eq!(v["type"], "searchset");
    v["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let search = &e["search"];
            assert_eq!(search["mode"], "match");
            let grade = search["extension"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["url"] == "http://hl7.org/fhir/StructureDefinition/match-grade")
                .unwrap()["valueCode"]
                .as_str()
                .unwrap()
                .to_string();
            (
                e["resource"]["id"].as_str().unwrap().to_string(),
                grade,
                search["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn params(patient: Value, only_certain: bool, count: Option<i64>) -> Value {
    let mut p = vec![
        json!({ "name": "resource", "resource": patient }),
        json!({ "name": "onlyCertainMatches", "valueBoolean": only_certain }),
    ];
    if let Some(n) = count {
        p.push(json!({ "name": "count", "valueInteger": n }));
    }
    json!({ "resourceType": "Parameters", "parameter": p })
}

#[test]
fn match_grades_and_orders_hand_made_cases() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let nid_a = unique("NID");
    let a = registered(
        &app,
        &org,
        person(
            "Mwangi",
            "Amina",
            "female",
            "1990-04-12",
            "+254 700 123456",
            Some(&nid_a),
        ),
    );
    // Her twin: same family, birth date, phone and village; another given name.
    let twin = registered(
        &app,
        &org,
        person(
            "Mwangi",
            "Akinyi",
            "female",
            "1990-04-12",
            "+254 700 123456",
            Some(&unique("NID")),
        ),
    );
    registered(
        &app,
        &org,
        person(
            "Otieno",
            "Brian",
            "male",
            "1985-01-01",
            "+254 711 000000",
            None,
        ),
    );

    // Names swapped, no identifier: Amina is certain and first; her twin is not certain.
    let swapped = person(
        "Amina",
        "Mwangi",
        "female",
        "1990-04-12",
        "0700 123 456",
        None,
    );
    let found = matches(&app, &swapped);
    assert_eq!(found[0].0, a, "{found:?}");
    assert_eq!(found[0].1, "certain");
    let twin_grade = found.iter().find(|f| f.0 == twin).map(|f| f.1.as_str());
    assert!(
        matches!(twin_grade, Some("probable") | Some("possible") | None),
        "{found:?}"
    );
    assert!(
        found.windows(2).all(|w| w[0].2 >= w[1].2),
        "ordered by score: {found:?}"
    );
    assert!(found.iter().all(|f| (0.0..=1.0).contains(&f.2)));

    // A typo and a year-only birth date: still Amina, but no longer certain.
    let found = matches(
        &app,
        &params(
            person("Mwangii", "Amina", "female", "1990", "", None),
            false,
            None,
        ),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, a);
    assert!(
        found[0].1 == "possible" || found[0].1 == "probable",
        "{found:?}"
    );

    // A different national ID: certainly not her (and not her twin), whatever else agrees.
    let found = matches(
        &app,
        &person(
            "Mwangi",
            "Amina",
            "female",
            "1990-04-12",
            "+254 700 123456",
            Some(&unique("NID")),
        ),
    );
    assert!(found.iter().all(|f| f.0 != a && f.0 != twin), "{found:?}");

    // Her national ID: certain even with a name the registry spells otherwise...
    let found = matches(
        &app,
        &person(
            "Mwangy",
            "Aminata",
            "female",
            "1990-04-12",
            "",
            Some(&nid_a),
        ),
    );
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str(), found[0].2),
        (a.as_str(), "certain", 1.0)
    );
    // ...but not when sex contradicts it (a number typed into the wrong record).
    let found = matches(
        &app,
        &person("Ochieng", "Peter", "male", "1990-04-12", "", Some(&nid_a)),
    );
    assert!(found.iter().all(|f| f.1 != "certain"), "{found:?}");

    // Nobody like this: an empty searchset.
    let v = app
        .post(
            "Patient/$match",
            &person("Zhang", "Wei", "male", "2001-02-03", "", None),
        )
        .expect(200);
    assert_eq!(v["total"], 0);
    assert!(v.get("entry").is_none());

    // onlyCertainMatches keeps the certain one; count keeps the best.
    let found = matches(&app, &params(swapped.clone(), true, None));
    assert_eq!(
        found.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        vec![a.as_str()]
    );
    assert_eq!(matches(&app, &params(swapped, false, Some(1))).len(), 1);
}

#[test]
fn match_explains_each_score_and_refuses_what_it_cannot_read() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    // Two registrations of one person: onlyCertainMatches must not pick one of them.
    for _ in 0..2 {
        registered(
            &app,
            &org,
            person(
                "Kamau",
                "Joseph",
                "male",
                "1978-06-30",
                "+254 722 333444",
                None,
            ),
        );
    }
    let query = person(
        "Kamau",
        "Joseph",
        "male",
        "1978-06-30",
        "+254 722 333444",
        None,
    );
    let found = matches(&app, &params(query.clone(), false, None));
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|f| f.1 == "certain"));
    assert!(
        matches(&app, &params(query.clone(), true, None)).is_empty(),
        "ambiguous: no certain answer"
    );

    let v = app.post("Patient/$match", &query).expect(200);
    let ext = v["entry"][0]["search"]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["url"] == "urn:kiunga:fhir:StructureDefinition:match-explanation")
        .cloned()
        .expect("an explanation");
    let parts = ext["extension"].as_array().unwrap();
    assert!(
        parts[0]["valueString"]
            .as_str()
            .unwrap()
            .starts_with("demo-2026-11+"),
        "{ext}"
    );
    let fields: Vec<&str> = parts
        .iter()
        .filter(|p| p["url"] == "field")
        .map(|p| p["extension"][0]["valueString"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![
            "name",
            "birth_date",
            "gender",
            "phone",
            "village",
            "address",
            "postal_code"
        ]
    );

    app.post(
        "Patient/$match",
        &json!({ "resourceType": "Parameters", "parameter": [] }),
    )
    .outcome(400);
    app.post(
        "Patient/$match",
        &json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" } }),
    )
    .outcome(400);
    app.post("Patient/$match", &params(query.clone(), false, Some(0)))
        .outcome(400);
    app.post("Patient/$match", &json!({ "resourceType": "Patient" }))
        .outcome(400);
    app.get("Patient/$match").outcome(405);
}

/// People stored before the blocking keys existed are found by `$match` once `kiunga match-keys`
/// has written their keys.
#[test]
fn match_keys_are_rebuilt_for_people_stored_without_them() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let id = registered(
        &app,
        &org,
        person(
            "Chebet",
            "Faith",
            "female",
            "1995-02-14",
            "+254 733 555666",
            None,
        ),
    );
    let keyed = app.db.scalar("SELECT count(*) FROM person_match_key");
    assert!(keyed >= 3, "name codes and the phone: {keyed}");
    diesel::RunQueryDsl::execute(
        diesel::sql_query("DELETE FROM person_match_key"),
        &mut app.db.conn(),
    )
    .unwrap();
    let query = person("Chebet", "Faith", "female", "1995-02-14", "", None);
    assert!(matches(&app, &query).is_empty(), "no keys, no candidates");

    let n = system_unit(&app, kiunga::rest::identity::rebuild_keys);
    assert_eq!(n, 1);
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM person_match_key"),
        keyed
    );
    let found = matches(&app, &query);
    assert_eq!(found[0].0, id);
}

/// The answers of both operations are valid FHIR in XML too (fhirbolt re-checks them on output).
#[test]
fn identity_answers_in_xml() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (nid, mrn) = (unique("NID"), unique("MRN"));
    app.post(
        "Patient",
        &with_identifiers(&org, &[(NID, &nid), (MRN, &mrn)]),
    )
    .expect(201);
    let r = app.send(
        "GET",
        &format!("Patient/$ihe-pix?sourceIdentifier={NID}|{nid}&_format=xml"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("<Parameters") && r.text.contains(&mrn),
        "{}",
        r.text
    );
    let body = patient(&org, &nid).to_string();
    let r = app.send(
        "POST",
        "Patient/$match",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Accept", "application/fhir+xml"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("match-grade") && r.text.contains("<score value=\"1.0\"/>"),
        "{}",
        r.text
    );
}
