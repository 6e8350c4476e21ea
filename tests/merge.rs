//! `Patient/$merge` and `$unmerge`: every row of the source moves to the target in one
//! transaction, the source stays (inactive, `replaced-by`), searches find the survivor only,
//! a failed merge leaves no trace, and an unmerge puts back exactly what moved.

mod support;

use diesel::prelude::*;
use serde_json::{json, Value};
use support::{patient, unique, weight, TestApp, NID};

const SCT: &str = "http://snomed.info/sct";
const MRN: &str = "http://hospital.smarthealthit.org";

fn encounter(pid: &str, org: &str, code: &str, start: &str) -> Value {
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

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn reference(uid: &str) -> Value {
    json!({ "reference": format!("Patient/{uid}") })
}

fn merge_params(source: &str, target: &str, extra: &[Value]) -> Value {
    let mut parameter = vec![
        json!({ "name": "source-patient", "valueReference": reference(source) }),
        json!({ "name": "target-patient", "valueReference": reference(target) }),
    ];
    parameter.extend(extra.iter().cloned());
    json!({ "resourceType": "Parameters", "parameter": parameter })
}

fn part<'a>(out: &'a Value, name: &str) -> &'a Value {
    out["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| &p["resource"])
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

fn links(p: &Value) -> Vec<(String, String)> {
    p["link"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                l["other"]["reference"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn internal_id(app: &TestApp, uid: &str) -> i64 {
    app.db.scalar(&format!(
        "SELECT id FROM tracked_entity WHERE uid = '{uid}'"
    ))
}

/// Every row that belongs to either person, as text: what a merge moves and an unmerge restores.
fn rows(app: &TestApp, people: &[i64]) -> Vec<String> {
    let ids = people
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    app.db.text(&format!(
        "SELECT t FROM (
           SELECT 'enrollment ' || id || ' of ' || tracked_entity_id || ' ' || status AS t FROM enrollment WHERE tracked_entity_id IN ({ids})
           UNION ALL SELECT 'event ' || id || ' of ' || tracked_entity_id || ' in ' || enrollment_id FROM event WHERE tracked_entity_id IN ({ids})
           UNION ALL SELECT 'value ' || id || ' of ' || tracked_entity_id || ' in ' || event_id FROM event_data_value WHERE tracked_entity_id IN ({ids})
           UNION ALL SELECT 'relationship ' || id || ' ' || from_tracked_entity_id || '->' || to_tracked_entity_id FROM relationship WHERE from_tracked_entity_id IN ({ids}) OR to_tracked_entity_id IN ({ids})
           UNION ALL SELECT 'owner ' || tracked_entity_id || ' ' || program_id || ' ' || org_unit_id FROM program_ownership WHERE tracked_entity_id IN ({ids})
           UNION ALL SELECT 'attribute ' || tracked_entity_id || ' ' || attribute_id || '=' || value FROM tracked_entity_attribute_value WHERE tracked_entity_id IN ({ids})
           UNION ALL SELECT 'person ' || id || ' inactive=' || inactive || ' merged=' || coalesce(merged_into_id::text, '-') FROM tracked_entity WHERE id IN ({ids})
         ) r ORDER BY t"
    ))
}

struct Pair {
    source: String,
    target: String,
    third: String,
    source_nid: String,
    source_encounters: Vec<String>,
}

/// A source with a national ID, an MRN, an ANC visit, an OPD visit with two weights and a
/// relationship; a target with another MRN and its own OPD visit (so its OPD enrollment is open).
fn pair(app: &TestApp) -> Pair {
    let org = app.org("KD_KAS_MTO");
    let source_nid = unique("NID");
    let mut s = patient(&org, &source_nid);
    s["identifier"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "system": MRN, "value": unique("MRN") }));
    let source = id(&app.post("Patient", &s).expect(201));
    let mut t = patient(&org, "");
    t["identifier"] = json!([{ "system": MRN, "value": unique("MRN") }]);
    t["name"] = json!([{ "family": "Mwangi", "given": ["Amina"] }]);
    let target = id(&app.post("Patient", &t).expect(201));
    // Someone else entirely.
    let mut c = patient(&org, &unique("NID"));
    c["name"] = json!([{ "family": "Otieno", "given": ["Grace"] }]);
    c["birthDate"] = json!("1968-11-02");
    c["telecom"] = json!([{ "system": "phone", "value": "+254 711 000111" }]);
    let third = id(&app.post("Patient", &c).expect(201));

    let anc = id(&app
        .post(
            "Encounter",
            &encounter(&source, &org, "424441002", "2026-01-10T09:00:00+00:00"),
        )
        .expect(201));
    let opd = id(&app
        .post(
            "Encounter",
            &encounter(&source, &org, "11429006", "2026-02-10T09:00:00+00:00"),
        )
        .expect(201));
    for kg in [61.0, 61.5] {
        app.post(
            "Observation",
            &weight(&source, &opd, kg, "2026-02-10T09:10:00+00:00"),
        )
        .expect(201);
    }
    app.post(
        "Encounter",
        &encounter(&target, &org, "11429006", "2026-03-01T09:00:00+00:00"),
    )
    .expect(201);
    let (s_id, c_id) = (internal_id(app, &source), internal_id(app, &third));
    diesel::sql_query(format!(
        "INSERT INTO relationship (uid, relationship_type_id, from_tracked_entity_id, to_tracked_entity_id)
         SELECT 'R' || substr(md5(random()::text), 1, 10), id, {c_id}, {s_id} FROM relationship_type WHERE code = 'MOTHER_CHILD'"
    ))
    .execute(&mut app.db.conn())
    .expect("relationship");
    Pair {
        source,
        target,
        third,
        source_nid,
        source_encounters: vec![anc, opd],
    }
}

#[test]
fn merge_moves_every_row_in_one_transaction_and_unmerge_puts_them_back() {
    let app = TestApp::start();
    let p = pair(&app);
    let (s_id, t_id) = (internal_id(&app, &p.source), internal_id(&app, &p.target));
    let before = rows(&app, &[s_id, t_id]);
    let changes_before = app.db.scalar("SELECT count(*) FROM change_log");

    // A preview says what would move and changes nothing.
    let preview = app
        .post(
            "Patient/$merge",
            &merge_params(
                &p.source,
                &p.target,
                &[json!({ "name": "preview", "valueBoolean": true })],
            ),
        )
        .expect(200);
    let summary = part(&preview, "outcome")["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.starts_with("preview:"), "{summary}");
    assert!(
        summary.contains("2 Encounter(s), 2 Observation(s), 1 relationship(s)"),
        "{summary}"
    );
    assert_eq!(rows(&app, &[s_id, t_id]), before);
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM change_log"),
        changes_before
    );

    let out = app
        .post("Patient/$merge", &merge_params(&p.source, &p.target, &[]))
        .expect(200);
    assert_eq!(out["resourceType"], "Parameters");
    assert_eq!(part(&out, "input")["resourceType"], "Parameters");
    let outcome = part(&out, "outcome");
    let issues = outcome["issue"].as_array().unwrap();
    assert_eq!(issues[0]["severity"], "information");
    // The target has its own MRN: the source's stays with the source, and the answer says so.
    assert!(
        issues.iter().any(|i| i["severity"] == "warning"
            && i["diagnostics"]
                .as_str()
                .unwrap()
                .contains("Medical record number")),
        "{outcome}"
    );
    let result = part(&out, "result");
    assert_eq!(result["id"], p.target);
    assert_eq!(
        links(result),
        vec![("replaces".to_string(), format!("Patient/{}", p.source))]
    );
    assert!(
        result["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["system"] == NID && i["value"] == p.source_nid.as_str()),
        "the national ID moved to the target: {result}"
    );

    // Rows: the source holds nothing but its MRN and its emptied OPD enrollment (the target had
    // its own open one, which now holds the visit).
    let db = &app.db;
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM event WHERE tracked_entity_id = {s_id}"
        )),
        0
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM event_data_value WHERE tracked_entity_id = {s_id}"
        )),
        0
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM event e JOIN enrollment en ON en.id = e.enrollment_id WHERE e.tracked_entity_id = {t_id} AND en.tracked_entity_id <> {t_id}"
        )),
        0,
        "every event of the target sits in one of the target's enrollments"
    );
    // Values carry their event's enrollment (the ownership rule reads it there): the visit's
    // weights moved with it.
    assert_eq!(
        db.scalar(support::STRAY_VALUES),
        0,
        "values left in the old enrollment"
    );
    assert_eq!(
        db.text(&format!("SELECT p.code FROM enrollment en JOIN program p ON p.id = en.program_id WHERE en.tracked_entity_id = {s_id}")),
        vec!["OPD"]
    );
    assert_eq!(
        db.text(&format!("SELECT p.code FROM enrollment en JOIN program p ON p.id = en.program_id WHERE en.tracked_entity_id = {t_id} ORDER BY 1")),
        vec!["ANC", "OPD"]
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM relationship WHERE to_tracked_entity_id = {t_id}"
        )),
        1
    );
    assert_eq!(
        db.text(&format!(
            "SELECT a.code FROM tracked_entity_attribute_value v JOIN tracked_entity_attribute a ON a.id = v.attribute_id WHERE v.tracked_entity_id = {s_id} AND a.code IN ('NATIONAL_ID', 'MRN') ORDER BY 1"
        )),
        vec!["MRN"]
    );

    // The source answers 200, inactive, replaced by the target; the target replaces it.
    let source = app.get(&format!("Patient/{}", p.source)).expect(200);
    assert_eq!(source["active"], false);
    assert_eq!(
        links(&source),
        vec![("replaced-by".to_string(), format!("Patient/{}", p.target))]
    );
    let target = app.get(&format!("Patient/{}", p.target)).expect(200);
    assert_eq!(
        links(&target),
        vec![("replaces".to_string(), format!("Patient/{}", p.source))]
    );

    // Searches find the survivor only.
    let found = app
        .get(&format!("Patient?identifier={NID}|{}", p.source_nid))
        .expect(200);
    assert_eq!(found["total"], 1);
    assert_eq!(found["entry"][0]["resource"]["id"], p.target);
    let by_name = app.get("Patient?family=Mwangi&_count=50").expect(200);
    let ids: Vec<&str> = by_name["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&p.target.as_str()) && !ids.contains(&p.source.as_str()));

    // The moved Encounters are the target's now, in a new version.
    for e in &p.source_encounters {
        let enc = app.get(&format!("Encounter/{e}")).expect(200);
        assert_eq!(enc["subject"]["reference"], format!("Patient/{}", p.target));
        assert_eq!(enc["meta"]["versionId"], "2");
    }
    let everything = app
        .get(&format!("Patient/{}/$everything", p.target))
        .expect(200);
    let types: Vec<&str> = everything["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(types.iter().filter(|t| **t == "Encounter").count(), 3);
    assert_eq!(types.iter().filter(|t| **t == "Observation").count(), 2);

    // A merged record takes no new data, and cannot be merged twice.
    let org = app.org("KD_KAS_MTO");
    let msg = app
        .put(
            &format!("Patient/{}", p.source),
            &json!({ "resourceType": "Patient", "id": p.source, "managingOrganization": { "reference": format!("Organization/{org}") } }),
        )
        .outcome(409);
    assert!(
        msg.contains(&format!("merged into Patient/{}", p.target)),
        "{msg}"
    );
    let msg = app
        .post(
            "Encounter",
            &encounter(&p.source, &org, "11429006", "2026-04-01T09:00:00+00:00"),
        )
        .outcome(422);
    assert!(msg.contains("Encounter.subject"), "{msg}");
    let msg = app
        .post("Patient/$merge", &merge_params(&p.source, &p.third, &[]))
        .outcome(422);
    assert!(msg.contains("already merged"), "{msg}");
    let msg = app
        .post("Patient/$merge", &merge_params(&p.third, &p.source, &[]))
        .outcome(422);
    assert!(
        msg.contains(&format!("merge into Patient/{}", p.target)),
        "{msg}"
    );

    // Undo: every row is back where it was.
    let undo = app
        .post(
            "Patient/$unmerge",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "source-patient", "valueReference": reference(&p.source) },
            ]}),
        )
        .expect(200);
    assert_eq!(part(&undo, "result")["id"], p.source);
    assert_eq!(rows(&app, &[s_id, t_id]), before);
    assert_eq!(
        app.db.scalar(support::STRAY_VALUES),
        0,
        "values left in the target's enrollment"
    );
    let source = app.get(&format!("Patient/{}", p.source)).expect(200);
    assert_eq!(source["active"], true);
    assert!(links(&source).is_empty(), "{source}");
    let found = app
        .get(&format!("Patient?identifier={NID}|{}", p.source_nid))
        .expect(200);
    assert_eq!(found["entry"][0]["resource"]["id"], p.source);
    for e in &p.source_encounters {
        let enc = app.get(&format!("Encounter/{e}")).expect(200);
        assert_eq!(enc["subject"]["reference"], format!("Patient/{}", p.source));
        assert_eq!(enc["meta"]["versionId"], "3");
    }
    let msg = app
        .post(
            "Patient/$unmerge",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "source-patient", "valueReference": reference(&p.source) },
            ]}),
        )
        .outcome(422);
    assert!(msg.contains("nothing to undo"), "{msg}");
}

#[test]
fn a_failed_merge_leaves_no_trace() {
    let app = TestApp::start();
    let p = pair(&app);
    let (s_id, t_id) = (internal_id(&app, &p.source), internal_id(&app, &p.target));
    let before = rows(&app, &[s_id, t_id]);
    let changes = app.db.scalar("SELECT count(*) FROM change_log");
    let links_before = app
        .db
        .text("SELECT id || status FROM person_link ORDER BY id");

    // The result asks the target to hold the third person's national ID: refused when the target
    // takes it, and what the merge had done by then is rolled back with it.
    let third = app.get(&format!("Patient/{}", p.third)).expect(200);
    let mut result = app.get(&format!("Patient/{}", p.target)).expect(200);
    result["identifier"] = third["identifier"].clone();
    let msg = app
        .post(
            "Patient/$merge",
            &merge_params(
                &p.source,
                &p.target,
                &[json!({ "name": "result-patient", "resource": result })],
            ),
        )
        .outcome(409);
    assert!(msg.contains("registered to another person"), "{msg}");
    assert_eq!(rows(&app, &[s_id, t_id]), before);
    assert_eq!(app.db.scalar("SELECT count(*) FROM change_log"), changes);
    assert_eq!(app.db.scalar("SELECT count(*) FROM person_merge"), 0);
    assert_eq!(
        app.db
            .text("SELECT id || status FROM person_link ORDER BY id"),
        links_before
    );

    // Requests that name no pair.
    let msg = app
        .post("Patient/$merge", &merge_params(&p.source, &p.source, &[]))
        .outcome(422);
    assert!(msg.contains("same record"), "{msg}");
    let msg = app
        .post(
            "Patient/$merge",
            &merge_params(&p.source, "Xunknown000", &[]),
        )
        .outcome(422);
    assert!(msg.contains("target-patient"), "{msg}");
    let msg = app
        .post(
            "Patient/$merge",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "source-patient", "valueReference": reference(&p.source) },
            ]}),
        )
        .outcome(400);
    assert!(msg.contains("target-patient"), "{msg}");
}

#[test]
fn merge_by_identifiers_with_a_result_patient_and_an_undone_pair_is_never_proposed_again() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let nid_a = unique("NID");
    let a = id(&app.post("Patient", &patient(&org, &nid_a)).expect(201));
    let mut second = patient(&org, "");
    second["identifier"] = json!([{ "system": MRN, "value": unique("MRN") }]);
    second["name"] = json!([{ "family": "Mwangi", "given": ["Amina"] }]);
    let b = id(&app.post("Patient", &second).expect(201));

    // Target by identifier (the MRN), source by national ID; result-patient renames the target.
    let mrn = second["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let mut result = app.get(&format!("Patient/{b}")).expect(200);
    result["name"] = json!([{ "family": "Mwangi", "given": ["Amina", "Wanjiru"] }]);
    result["identifier"] = json!([
        { "system": MRN, "value": mrn },
        { "system": NID, "value": nid_a },
    ]);
    let out = app
        .post(
            "Patient/$merge",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "source-patient-identifier", "valueIdentifier": { "system": NID, "value": nid_a } },
                { "name": "target-patient-identifier", "valueIdentifier": { "system": MRN, "value": mrn } },
                { "name": "result-patient", "resource": result },
            ]}),
        )
        .expect(200);
    let r = part(&out, "result");
    assert_eq!(r["id"], b);
    assert_eq!(r["name"][0]["given"], json!(["Amina", "Wanjiru"]));
    let links_of_pair = || {
        app.get(&format!("$mdm-query-links?resourceId=Patient/{a}"))
            .expect(200)["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "link")
            .map(|l| {
                l["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == "matchResult")
                    .unwrap()["valueString"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(links_of_pair(), vec!["MERGED"]);

    app.post(
        "Patient/$unmerge",
        &json!({ "resourceType": "Parameters", "parameter": [
            { "name": "source-patient", "valueReference": reference(&a) },
            { "name": "target-patient", "valueReference": reference(&b) },
        ]}),
    )
    .expect(200);
    // The target's name is back too (it had not changed since the merge).
    let back = app.get(&format!("Patient/{b}")).expect(200);
    assert_eq!(back["name"][0]["given"], json!(["Amina"]));
    assert_eq!(links_of_pair(), vec!["NO_MATCH"]);
    // Writing either record again does not propose the pair again.
    let current = app.get(&format!("Patient/{a}")).expect(200);
    app.put(&format!("Patient/{a}"), &current).expect(200);
    assert_eq!(links_of_pair(), vec!["NO_MATCH"]);
}
