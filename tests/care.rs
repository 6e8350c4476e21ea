//! Care across time and places (#9): RelatedPerson over relationships (mother–child), EpisodeOfCare
//! over enrollments, and transfer of ownership between facilities with what it changes for a
//! facility-scoped caller.

mod support;

use kiunga::rest;
use serde_json::{json, Value};
use support::{created_id, scoped_context, unique, unit_as, weight, TestApp, NID};

const ROLE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
const RECORD: &str = "urn:kiunga:fhir:StructureDefinition:related-person-record";
const SCT: &str = "http://snomed.info/sct";

fn person(org: &str, nid: &str, family: &str, given: &str, gender: &str, born: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": NID, "value": nid }],
        "name": [{ "family": family, "given": [given] }],
        "gender": gender,
        "birthDate": born,
        "managingOrganization": { "reference": format!("Organization/{org}") },
    })
}

fn related(patient: &str, code: &str, record: Option<&str>) -> Value {
    let mut r = json!({
        "resourceType": "RelatedPerson",
        "patient": { "reference": patient },
        "relationship": [{ "coding": [{ "system": ROLE, "code": code }] }],
    });
    if let Some(rec) = record {
        r["extension"] = json!([{ "url": RECORD, "valueReference": { "reference": rec } }]);
    }
    r
}

fn post(resource: Value, full_url: &str) -> Value {
    let t = resource["resourceType"].as_str().unwrap().to_string();
    json!({ "fullUrl": full_url, "resource": resource, "request": { "method": "POST", "url": t } })
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

fn of_type(bundle: &Value, t: &str) -> Vec<Value> {
    entries(bundle)
        .into_iter()
        .filter(|r| r["resourceType"] == t)
        .collect()
}

fn new_mother_and_child(app: &TestApp, org: &str) -> (String, String) {
    let m = app
        .post(
            "Patient",
            &person(
                org,
                &unique("M"),
                "Otieno",
                "Achieng",
                "female",
                "1994-02-03",
            ),
        )
        .expect(201);
    let c = app
        .post(
            "Patient",
            &person(org, &unique("C"), "Otieno", "Baraka", "male", "2026-05-01"),
        )
        .expect(201);
    (id(&m), id(&c))
}

#[test]
fn a_mother_and_newborn_bundle_lands_atomically_and_reads_back_from_both_sides() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (mu, cu, ru) = (
        "urn:uuid:6b0c1a52-0000-4000-8000-000000000001",
        "urn:uuid:6b0c1a52-0000-4000-8000-000000000002",
        "urn:uuid:6b0c1a52-0000-4000-8000-000000000003",
    );
    // The RelatedPerson comes first: the server orders the entries itself.
    let b = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        post(related(cu, "MTH", Some(mu)), ru),
        post(person(&org, &unique("M"), "Wekesa", "Nafula", "female", "1995-07-09"), mu),
        post(person(&org, &unique("C"), "Wekesa", "Baby", "female", "2026-06-01"), cu),
    ]});
    let before = app.db.scalar("SELECT count(*) FROM tracked_entity");
    let out = app.post("", &b).expect(200);
    let statuses: Vec<&str> = out["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created"; 3], "{out}");
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM tracked_entity"),
        before + 2,
        "two people, no third one for the RelatedPerson"
    );
    let loc = |i: usize| created_id(&out["entry"][i]);
    let (rp, mother, child) = (loc(0), loc(1), loc(2));
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM relationship r JOIN relationship_type t ON t.id = r.relationship_type_id WHERE t.code = 'MOTHER_CHILD'"),
        1
    );

    // From the child's side: her RelatedPerson names the mother's record, with the mother's
    // demographics and the role sent.
    let found = app
        .get(&format!("RelatedPerson?patient=Patient/{child}"))
        .expect(200);
    let list = of_type(&found, "RelatedPerson");
    assert_eq!(list.len(), 1, "{found}");
    let r = &list[0];
    assert_eq!(id(r), rp);
    assert_eq!(r["patient"]["reference"], format!("Patient/{child}"));
    assert_eq!(r["relationship"][0]["coding"][0]["code"], "MTH");
    assert_eq!(r["extension"][0]["url"], RECORD);
    assert_eq!(
        r["extension"][0]["valueReference"]["reference"],
        format!("Patient/{mother}")
    );
    assert_eq!(r["name"][0]["given"][0], "Nafula");

    // From the mother's side: her Patient links to the RelatedPerson that represents her.
    let m = app.get(&format!("Patient/{mother}")).expect(200);
    let links: Vec<&Value> = m["link"].as_array().unwrap().iter().collect();
    assert!(
        links
            .iter()
            .any(|l| l["type"] == "seealso"
                && l["other"]["reference"] == format!("RelatedPerson/{rp}")),
        "{m}"
    );
    // _revinclude and $everything bring the RelatedPerson with the child.
    let rev = app
        .get(&format!(
            "Patient?_id={child}&_revinclude=RelatedPerson:patient"
        ))
        .expect(200);
    assert_eq!(of_type(&rev, "RelatedPerson").len(), 1, "{rev}");
    let every = app.get(&format!("Patient/{child}/$everything")).expect(200);
    assert_eq!(of_type(&every, "RelatedPerson").len(), 1, "{every}");
    // And _include goes from the RelatedPerson to the child.
    let inc = app
        .get(&format!(
            "RelatedPerson?_id={rp}&_include=RelatedPerson:patient"
        ))
        .expect(200);
    assert_eq!(id(&of_type(&inc, "Patient")[0]), child);

    // The same Bundle with one bad entry leaves nothing behind.
    let (people, rels, changes) = (
        app.db.scalar("SELECT count(*) FROM tracked_entity"),
        app.db.scalar("SELECT count(*) FROM relationship"),
        app.db.scalar("SELECT count(*) FROM change_log"),
    );
    let bad = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        post(person(&org, &unique("M"), "Wekesa", "Nekesa", "female", "1996-01-01"), mu),
        post(person(&org, &unique("C"), "Wekesa", "Baby", "male", "2026-06-02"), cu),
        post(related(cu, "MTH", Some(mu)), ru),
        post(related(cu, "NOT-A-ROLE", Some(mu)), "urn:uuid:6b0c1a52-0000-4000-8000-000000000004"),
    ]});
    let msg = app.post("", &bad).outcome(422);
    assert!(msg.contains("NOT-A-ROLE"), "{msg}");
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), people);
    assert_eq!(app.db.scalar("SELECT count(*) FROM relationship"), rels);
    assert_eq!(app.db.scalar("SELECT count(*) FROM change_log"), changes);
}

#[test]
fn a_related_person_is_found_by_identifier_or_registered_from_her_demographics() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (_, first) = new_mother_and_child(&app, &org);
    let (_, second) = new_mother_and_child(&app, &org);
    let nid = unique("G");
    let grandmother = |child: &str| {
        json!({
            "resourceType": "RelatedPerson",
            "patient": { "reference": format!("Patient/{child}") },
            "relationship": [{ "coding": [{ "system": ROLE, "code": "GRMTH" }] }],
            "identifier": [{ "system": NID, "value": nid }],
            "name": [{ "family": "Chebet", "given": ["Jepkoech"] }],
            "gender": "female",
            "birthDate": "1950",
        })
    };
    let people = app.db.scalar("SELECT count(*) FROM tracked_entity");
    let a = app.post("RelatedPerson", &grandmother(&first)).expect(201);
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM tracked_entity"),
        people + 1,
        "she is registered as a person of her own"
    );
    let her = a["extension"][0]["valueReference"]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let p = app.get(&her).expect(200);
    assert_eq!(p["name"][0]["family"], "Chebet");
    assert_eq!(p["identifier"][0]["value"], nid.as_str());

    // The second grandchild's RelatedPerson carries her national ID: the same person.
    let b = app.post("RelatedPerson", &grandmother(&second)).expect(201);
    assert_eq!(
        b["extension"][0]["valueReference"]["reference"],
        her.as_str()
    );
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM tracked_entity"),
        people + 1
    );
    // Her Patient now links to both RelatedPersons.
    let p = app.get(&her).expect(200);
    assert_eq!(
        p["link"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["type"] == "seealso")
            .count(),
        2,
        "{p}"
    );
    // Search by her identifier and by the role.
    let by_id = app
        .get(&format!("RelatedPerson?identifier={NID}|{nid}"))
        .expect(200);
    assert_eq!(by_id["total"], 2);
    let by_role = app
        .get(&format!(
            "RelatedPerson?relationship={ROLE}|GRMTH&patient={second}"
        ))
        .expect(200);
    assert_eq!(by_role["total"], 1);
    assert_eq!(id(&of_type(&by_role, "RelatedPerson")[0]), id(&b));

    // A RelatedPerson that says nothing of who she is: 422 with what to send.
    let nobody = related(&format!("Patient/{first}"), "FTH", None);
    let msg = app.post("RelatedPerson", &nobody).outcome(422);
    assert!(msg.contains("who is the related person"), "{msg}");
}

#[test]
fn relationships_that_break_their_type_are_refused_with_the_rule() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (mother, child) = new_mother_and_child(&app, &org);
    let (other_mother, _) = new_mother_and_child(&app, &org);
    let first = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{child}"),
                "MTH",
                Some(&format!("Patient/{mother}")),
            ),
        )
        .expect(201);
    // A second mother: Mother - Child allows one per person.
    let msg = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{child}"),
                "NMTH",
                Some(&format!("Patient/{other_mother}")),
            ),
        )
        .outcome(422);
    assert!(msg.contains("one `Mother of` per person"), "{msg}");
    assert!(msg.contains(&id(&first)), "{msg}");
    // The same mother again, seen from her side (CHILD): already recorded.
    let msg = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{mother}"),
                "CHILD",
                Some(&format!("Patient/{child}")),
            ),
        )
        .outcome(422);
    assert!(msg.contains("one `Mother of`"), "{msg}");
    // Related to herself.
    let msg = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{child}"),
                "FTH",
                Some(&format!("Patient/{child}")),
            ),
        )
        .outcome(422);
    assert!(msg.contains("herself"), "{msg}");
    // An unmapped role, and a patient that does not exist.
    let msg = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{child}"),
                "SIS",
                Some(&format!("Patient/{mother}")),
            ),
        )
        .outcome(422);
    assert!(msg.contains("SIS") && msg.contains("MTH"), "{msg}");
    let msg = app
        .post(
            "RelatedPerson",
            &related(
                "Patient/Nobody00000",
                "MTH",
                Some(&format!("Patient/{mother}")),
            ),
        )
        .outcome(422);
    assert!(msg.contains("RelatedPerson.patient"), "{msg}");
    // A caregiver next to the mother is fine.
    app.post(
        "RelatedPerson",
        &related(
            &format!("Patient/{child}"),
            "FTH",
            Some(&format!("Patient/{other_mother}")),
        ),
    )
    .expect(201);
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM relationship WHERE NOT deleted"),
        2
    );
}

#[test]
fn a_related_person_is_updated_deleted_and_versioned() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (mother, child) = new_mother_and_child(&app, &org);
    let r = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{child}"),
                "MTH",
                Some(&format!("Patient/{mother}")),
            ),
        )
        .expect(201);
    let rid = id(&r);
    // She turns out to be the gestational mother: same relationship, another role.
    let mut changed = related(
        &format!("Patient/{child}"),
        "GESTM",
        Some(&format!("Patient/{mother}")),
    );
    changed["id"] = json!(rid);
    let v2 = app
        .put(&format!("RelatedPerson/{rid}"), &changed)
        .expect(200);
    assert_eq!(v2["meta"]["versionId"], "2");
    assert_eq!(v2["relationship"][0]["coding"][0]["code"], "GESTM");
    let v1 = app
        .get(&format!("RelatedPerson/{rid}/_history/1"))
        .expect(200);
    assert_eq!(v1["relationship"][0]["coding"][0]["code"], "MTH");
    let h = app
        .get(&format!("RelatedPerson/{rid}/_history"))
        .expect(200);
    assert_eq!(h["total"], 2);
    // A read-back resource sent back unchanged is accepted without warnings.
    let same = app.put(&format!("RelatedPerson/{rid}"), &v2).expect(200);
    assert_eq!(same["meta"]["versionId"], "3");
    app.delete(&format!("RelatedPerson/{rid}")).expect(200);
    app.get(&format!("RelatedPerson/{rid}")).outcome(410);
    // The people stay; the mother's Patient no longer links to it.
    let m = app.get(&format!("Patient/{mother}")).expect(200);
    assert!(m.get("link").is_none(), "{m}");
    assert_eq!(
        app.get(&format!("RelatedPerson?patient={child}"))
            .expect(200)["total"],
        0
    );
}

fn episode(patient: &str, status: &str, org: Option<&str>, start: &str) -> Value {
    let mut e = json!({
        "resourceType": "EpisodeOfCare",
        "status": status,
        "type": [{ "coding": [{ "system": SCT, "code": "424525001" }] }],
        "patient": { "reference": format!("Patient/{patient}") },
        "period": { "start": start },
    });
    if let Some(o) = org {
        e["managingOrganization"] = json!({ "reference": format!("Organization/{o}") });
    }
    e
}

fn anc_visit(patient: &str, org: &str, episode: Option<&str>, start: &str) -> Value {
    let mut e = json!({
        "resourceType": "Encounter", "status": "finished",
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
        "type": [{ "coding": [{ "system": SCT, "code": "424619006" }] }],
        "subject": { "reference": format!("Patient/{patient}") },
        "period": { "start": start },
        "serviceProvider": { "reference": format!("Organization/{org}") },
    });
    if let Some(ep) = episode {
        e["episodeOfCare"] = json!([{ "reference": format!("EpisodeOfCare/{ep}") }]);
    }
    e
}

#[test]
fn episodes_of_care_round_trip_search_and_hold_the_right_encounters() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (mother, _) = new_mother_and_child(&app, &org);
    let e = app
        .post(
            "EpisodeOfCare",
            &episode(&mother, "active", None, "2026-01-10T08:00:00Z"),
        )
        .expect(201);
    let eid = id(&e);
    assert_eq!(e["status"], "active");
    assert_eq!(e["type"][0]["coding"][0]["code"], "424525001");
    assert_eq!(
        e["managingOrganization"]["reference"],
        format!("Organization/{org}")
    );
    assert_eq!(e["period"]["start"], "2026-01-10T08:00:00.000+00:00");
    let read = app.get(&format!("EpisodeOfCare/{eid}")).expect(200);
    assert_eq!(read["patient"]["reference"], format!("Patient/{mother}"));

    // A second active ANC enrollment: 409 naming the first.
    let msg = app
        .post(
            "EpisodeOfCare",
            &episode(&mother, "active", None, "2026-02-01T08:00:00Z"),
        )
        .outcome(409);
    assert!(msg.contains(&eid), "{msg}");

    // An Encounter without episodeOfCare lands in the active enrollment.
    let v = app
        .post(
            "Encounter",
            &anc_visit(&mother, &org, None, "2026-01-20T09:00:00Z"),
        )
        .expect(201);
    assert_eq!(
        v["episodeOfCare"][0]["reference"],
        format!("EpisodeOfCare/{eid}")
    );
    let held = app
        .get(&format!("Encounter?episode-of-care={eid}"))
        .expect(200);
    assert_eq!(held["total"], 1);

    // Search by every parameter.
    for q in [
        format!("patient={mother}"),
        "status=active".to_string(),
        format!("type={SCT}|424525001&patient={mother}"),
        format!("organization=Organization/{org}&patient={mother}"),
        format!("date=ge2026-01-01&date=lt2026-02-01&patient={mother}"),
    ] {
        let b = app.get(&format!("EpisodeOfCare?{q}")).expect(200);
        let ids: Vec<String> = of_type(&b, "EpisodeOfCare").iter().map(id).collect();
        assert!(ids.contains(&eid), "{q}: {b}");
    }
    assert_eq!(
        app.get(&format!("EpisodeOfCare?patient={mother}&status=finished"))
            .expect(200)["total"],
        0
    );
    // A deliverable with events cannot be deleted.
    let msg = app.delete(&format!("EpisodeOfCare/{eid}")).outcome(409);
    assert!(msg.contains("Encounter"), "{msg}");

    // Finishing it, then a new pregnancy: a second enrollment opens, and the next visit goes there.
    let mut done = read.clone();
    done["status"] = json!("finished");
    done["period"]["end"] = json!("2026-09-30T12:00:00Z");
    let done = app.put(&format!("EpisodeOfCare/{eid}"), &done).expect(200);
    assert_eq!(done["status"], "finished");
    assert_eq!(done["period"]["end"], "2026-09-30T12:00:00.000+00:00");
    let next = app
        .post(
            "EpisodeOfCare",
            &episode(&mother, "active", None, "2027-03-01T08:00:00Z"),
        )
        .expect(201);
    let v = app
        .post(
            "Encounter",
            &anc_visit(&mother, &org, None, "2027-03-05T09:00:00Z"),
        )
        .expect(201);
    assert_eq!(
        v["episodeOfCare"][0]["reference"],
        format!("EpisodeOfCare/{}", id(&next))
    );
    // Naming the finished one is refused.
    let msg = app
        .post(
            "Encounter",
            &anc_visit(&mother, &org, Some(&eid), "2027-03-06T09:00:00Z"),
        )
        .outcome(422);
    assert!(msg.contains("COMPLETED"), "{msg}");
    // $everything and _revinclude bring the enrollments.
    let every = app
        .get(&format!("Patient/{mother}/$everything"))
        .expect(200);
    assert_eq!(of_type(&every, "EpisodeOfCare").len(), 2);
    let rev = app
        .get(&format!(
            "Patient?_id={mother}&_revinclude=EpisodeOfCare:patient"
        ))
        .expect(200);
    assert_eq!(of_type(&rev, "EpisodeOfCare").len(), 2);

    // OPD enrolls once: a second OPD EpisodeOfCare is 409 even when the first is finished.
    let opd = |status: &str| {
        json!({
            "resourceType": "EpisodeOfCare", "status": status,
            "type": [{ "coding": [{ "system": "urn:kiunga:program", "code": "OPD" }] }],
            "patient": { "reference": format!("Patient/{mother}") },
        })
    };
    app.post("EpisodeOfCare", &opd("finished")).expect(201);
    let msg = app.post("EpisodeOfCare", &opd("active")).outcome(409);
    assert!(msg.contains("enrolls a person once"), "{msg}");
    // Unknown program and status: 422 with what is known.
    let mut bad = opd("active");
    bad["type"][0]["coding"][0]["code"] = json!("TB");
    let msg = app.post("EpisodeOfCare", &bad).outcome(422);
    assert!(
        msg.contains("urn:kiunga:program|TB") && msg.contains("424525001"),
        "{msg}"
    );
    let msg = app.post("EpisodeOfCare", &opd("onhold")).outcome(422);
    assert!(msg.contains("onhold"), "{msg}");
}

/// (Encounters, EpisodesOfCare) of a person that `ctx` finds by searching, and whether it can
/// read the Patient.
fn seen_by(app: &TestApp, ctx: &kiunga::context::RequestContext, person: &str) -> (i64, i64, bool) {
    let q = kiunga::fhir::search::parse_query(&format!("patient={person}"));
    let total = |t: &str| {
        unit_as(app, ctx, |s, env| {
            rest::search::search(s, env, t, &q, false, "http://x/fhir")
        })
        .unwrap()["total"]
            .as_i64()
            .unwrap()
    };
    let visible = unit_as(app, ctx, |s, env| rest::read(s, env, "Patient", person)).is_ok();
    (total("Encounter"), total("EpisodeOfCare"), visible)
}

/// How many of the person's Observations a caller's search finds.
fn observations_seen_by(app: &TestApp, ctx: &kiunga::context::RequestContext, person: &str) -> i64 {
    let q = kiunga::fhir::search::parse_query(&format!("patient={person}"));
    unit_as(app, ctx, |s, env| {
        rest::search::search(s, env, "Observation", &q, false, "http://x/fhir")
    })
    .unwrap()["total"]
        .as_i64()
        .unwrap()
}

fn transfer_params(program: &str, org: &str, reason: &str) -> Value {
    json!({ "resourceType": "Parameters", "parameter": [
        { "name": "program", "valueCode": program },
        { "name": "organization", "valueReference": { "reference": format!("Organization/{org}") } },
        { "name": "reason", "valueString": reason },
    ]})
}

#[test]
fn a_transfer_moves_the_owner_keeps_history_and_changes_what_each_facility_sees() {
    let app = TestApp::start();
    let (mto, pwani) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));
    let (mother, _) = new_mother_and_child(&app, &mto);
    let e = app
        .post(
            "EpisodeOfCare",
            &episode(&mother, "active", None, "2026-01-10T08:00:00Z"),
        )
        .expect(201);
    let eid = id(&e);
    let visit = id(&app
        .post(
            "Encounter",
            &anc_visit(&mother, &mto, None, "2026-01-20T09:00:00Z"),
        )
        .expect(201));
    app.post(
        "Observation",
        &weight(&mother, &visit, 64.5, "2026-01-20T09:10:00Z"),
    )
    .expect(201);
    let at_mto = scoped_context(&app, "nurse-mto", &["KD_KAS_MTO"], &["KD_KAS_MTO"]);
    let at_pwani = scoped_context(&app, "nurse-pwani", &["KD_KUS_PWA"], &["KD_KUS_PWA"]);
    assert_eq!(seen_by(&app, &at_mto, &mother), (1, 1, true));
    assert_eq!(seen_by(&app, &at_pwani, &mother), (0, 0, false));
    assert_eq!(observations_seen_by(&app, &at_mto, &mother), 1);
    assert_eq!(observations_seen_by(&app, &at_pwani, &mother), 0);

    // Pwani may not move a record it does not own; Mto may.
    let denied = unit_as(&app, &at_pwani, |s, env| {
        rest::care::transfer(
            s,
            env,
            &mother,
            &rest::care::transfer_params(transfer_params("ANC", &pwani, "moved"))?,
        )
    });
    assert!(denied.is_err());
    let out = app
        .post(
            &format!("Patient/{mother}/$transfer"),
            &transfer_params("ANC", &pwani, "moved to Pwani for delivery"),
        )
        .expect(200);
    let part = |name: &str| {
        out["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {out}"))
    };
    assert_eq!(
        part("from")["valueReference"]["reference"],
        format!("Organization/{mto}")
    );
    assert_eq!(
        part("to")["valueReference"]["reference"],
        format!("Organization/{pwani}")
    );
    assert_eq!(part("episodeOfCare")["resource"]["meta"]["versionId"], "2");

    // The owner changed, with its history: who, when, from, to, why.
    let now = app.get(&format!("EpisodeOfCare/{eid}")).expect(200);
    assert_eq!(
        now["managingOrganization"]["reference"],
        format!("Organization/{pwani}")
    );
    let h = app
        .get(&format!("EpisodeOfCare/{eid}/_history"))
        .expect(200);
    assert_eq!(h["total"], 2);
    let v2 = &h["entry"][0]["resource"];
    let ext = v2["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["url"] == "urn:kiunga:fhir:StructureDefinition:ownership-transfer")
        .unwrap_or_else(|| panic!("{v2}"));
    let sub = |u: &str| {
        ext["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["url"] == u)
            .cloned()
            .unwrap()
    };
    assert_eq!(sub("reason")["valueString"], "moved to Pwani for delivery");
    assert_eq!(sub("by")["valueString"], "anonymous");
    assert_eq!(
        sub("from")["valueReference"]["reference"],
        format!("Organization/{mto}")
    );
    let v1 = app
        .get(&format!("EpisodeOfCare/{eid}/_history/1"))
        .expect(200);
    assert_eq!(
        v1["managingOrganization"]["reference"],
        format!("Organization/{mto}")
    );
    assert_eq!(
        app.db.scalar(&format!(
            "SELECT count(*) FROM program_ownership_history h JOIN org_unit f ON f.id = h.from_org_unit_id \
             JOIN org_unit t ON t.id = h.to_org_unit_id WHERE f.uid = '{mto}' AND t.uid = '{pwani}' \
             AND h.reason = 'moved to Pwani for delivery'"
        )),
        1
    );
    // The history cannot be rewritten.
    let mut conn = app.db.conn();
    use diesel::RunQueryDsl;
    assert!(diesel::sql_query("DELETE FROM program_ownership_history")
        .execute(&mut conn)
        .is_err());

    // Pwani now finds her and her ANC record; Mto still finds her (registered there) but no
    // longer her ANC record (a protected program, owned elsewhere) and may not add to it.
    assert_eq!(seen_by(&app, &at_pwani, &mother), (1, 1, true));
    assert_eq!(seen_by(&app, &at_mto, &mother), (0, 0, true));
    // Her values carry their owner (migration 20): the transfer moved it.
    assert_eq!(observations_seen_by(&app, &at_pwani, &mother), 1);
    assert_eq!(observations_seen_by(&app, &at_mto, &mother), 0);
    assert_eq!(app.db.scalar(support::STRAY_VALUES), 0);
    let visit = anc_visit(&mother, &mto, None, "2026-02-20T09:00:00Z");
    let refused = unit_as(&app, &at_mto, |s, env| {
        let raw = visit.to_string();
        rest::create(
            s,
            env,
            "Encounter",
            rest::Body {
                resource: &visit,
                raw: raw.as_bytes(),
                content_type: "application/fhir+json",
            },
        )
    });
    match refused {
        Err(kiunga::Error::Forbidden(m)) => assert!(m.contains("$transfer"), "{m}"),
        other => panic!("expected 403, got {:?}", other.map(|s| s.id)),
    }
    // A transfer to where it is already, of a program she is not in, or to nowhere: 422.
    app.post(
        &format!("Patient/{mother}/$transfer"),
        &transfer_params("ANC", &pwani, "again"),
    )
    .outcome(422);
    app.post(
        &format!("Patient/{mother}/$transfer"),
        &transfer_params("OPD", &mto, "x"),
    )
    .outcome(422);
    app.post(
        &format!("Patient/{mother}/$transfer"),
        &transfer_params("ANC", "Nowhere0000", "x"),
    )
    .outcome(422);
}

/// A mother registered at `org` with an ANC visit there and a weight taken at it: (mother,
/// visit, weight).
fn mother_with_a_weight(app: &TestApp, org: &str) -> (String, String, String) {
    let (mother, _) = new_mother_and_child(app, org);
    let visit = id(&app
        .post(
            "Encounter",
            &anc_visit(&mother, org, None, "2026-01-20T09:00:00Z"),
        )
        .expect(201));
    let obs = id(&app
        .post(
            "Observation",
            &weight(&mother, &visit, 64.5, "2026-01-20T09:10:00Z"),
        )
        .expect(201));
    (mother, visit, obs)
}

/// The program and owner each data value carries (migration 20) follow every change of owner,
/// including those made outside the gateway's write path: an owner row removed or added, an
/// enrollment moved, a value inserted or moved by SQL.
#[test]
fn the_owner_a_value_carries_follows_every_change_of_owner() {
    let app = TestApp::start();
    let (mto, pwani) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));
    let (mother, _, obs) = mother_with_a_weight(&app, &mto);
    let second = id(&app
        .post(
            "Encounter",
            &anc_visit(&mother, &mto, None, "2026-01-27T09:00:00Z"),
        )
        .expect(201));
    let at_mto = scoped_context(&app, "nurse-mto", &["KD_KAS_MTO"], &["KD_KAS_MTO"]);
    let at_pwani = scoped_context(&app, "nurse-pwani", &["KD_KUS_PWA"], &["KD_KUS_PWA"]);
    let owner = |app: &TestApp| {
        app.db.text(&format!(
            "SELECT ou.uid FROM event_data_value d JOIN org_unit ou ON ou.id = d.owner_org_unit_id \
             WHERE d.uid = '{obs}'"
        ))
    };
    let sql = |q: &str| {
        use diesel::RunQueryDsl;
        diesel::sql_query(q)
            .execute(&mut app.db.conn())
            .unwrap_or_else(|e| panic!("{q}: {e}"));
    };
    let person = format!("(SELECT id FROM tracked_entity WHERE uid = '{mother}')");
    let anc = "(SELECT id FROM program WHERE code = 'ANC')";
    assert_eq!(owner(&app), vec![mto.clone()]);
    assert_eq!(app.db.scalar(support::STRAY_VALUES), 0);

    // An enrollment from before owner rows: the enrolling org unit owns it.
    sql(&format!(
        "DELETE FROM program_ownership WHERE tracked_entity_id = {person} AND program_id = {anc}"
    ));
    assert_eq!(owner(&app), vec![mto.clone()]);
    // Enrolled elsewhere (an edit by SQL): the value follows the enrolling org unit.
    sql(&format!(
        "UPDATE enrollment SET org_unit_id = (SELECT id FROM org_unit WHERE uid = '{pwani}') \
         WHERE tracked_entity_id = {person} AND program_id = {anc}"
    ));
    assert_eq!(owner(&app), vec![pwani.clone()]);
    assert_eq!(observations_seen_by(&app, &at_pwani, &mother), 1);
    assert_eq!(observations_seen_by(&app, &at_mto, &mother), 0);
    // An owner row made by a transfer back (an insert, as there is none now).
    app.post(
        &format!("Patient/{mother}/$transfer"),
        &transfer_params("ANC", &mto, "back home"),
    )
    .expect(200);
    assert_eq!(owner(&app), vec![mto.clone()]);
    assert_eq!(observations_seen_by(&app, &at_mto, &mother), 1);
    assert_eq!(observations_seen_by(&app, &at_pwani, &mother), 0);
    assert_eq!(app.db.scalar(support::STRAY_VALUES), 0);

    // A value written by SQL without its copies gets them from its enrollment.
    sql(&format!(
        "INSERT INTO event_data_value (uid, event_id, data_element_id, tracked_entity_id, value, value_num, enrollment_id) \
         SELECT 'Vsql0000001', e.id, d.data_element_id, d.tracked_entity_id, '65', 65, e.enrollment_id \
         FROM event e, event_data_value d WHERE e.uid = '{second}' AND d.uid = '{obs}'"
    ));
    assert_eq!(app.db.scalar(support::STRAY_VALUES), 0);
    assert_eq!(observations_seen_by(&app, &at_mto, &mother), 2);
    // Moved to another enrollment (its event's enrollment changed): the copies follow.
    sql(&format!(
        "INSERT INTO enrollment (uid, tracked_entity_id, program_id, org_unit_id, status, enrolled_at) \
         SELECT 'Nsql0000001', {person}, id, (SELECT id FROM org_unit WHERE uid = '{pwani}'), 'COMPLETED', now() \
         FROM program WHERE code = 'OPD'"
    ));
    sql(&format!(
        "UPDATE event SET enrollment_id = (SELECT id FROM enrollment WHERE uid = 'Nsql0000001') WHERE uid = '{second}'"
    ));
    assert_eq!(app.db.scalar(support::STRAY_VALUES), 0);
    assert_eq!(
        app.db.text(
            "SELECT p.code FROM event_data_value d JOIN program p ON p.id = d.program_id \
             WHERE d.uid = 'Vsql0000001'"
        ),
        vec!["OPD"]
    );
}

/// Migration 20 on a registry that already holds values: its backfill gives each value the owner
/// a transfer left, and its down.sql takes the columns and triggers away again.
#[test]
fn migration_20_backfills_the_owner_of_stored_values_and_reverts() {
    use diesel::RunQueryDsl;
    use diesel_migrations::MigrationHarness;
    let app = TestApp::start();
    let (mto, pwani) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));
    let (mother, _, obs) = mother_with_a_weight(&app, &mto);
    app.post(
        &format!("Patient/{mother}/$transfer"),
        &transfer_params("ANC", &pwani, "moved"),
    )
    .expect(200);
    let columns =
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'event_data_value' \
                   AND column_name IN ('program_id', 'owner_org_unit_id')";
    assert_eq!(app.db.scalar(columns), 2);

    // Back to before migration 20 (and whatever came after it).
    let mut conn = app.db.conn();
    loop {
        let reverted = conn
            .revert_last_migration(kiunga::store::MIGRATIONS)
            .expect("revert a migration")
            .to_string();
        if reverted.starts_with("00000000000020") {
            break;
        }
    }
    assert_eq!(app.db.scalar(columns), 0);
    assert_eq!(
        app.db.scalar(
            "SELECT count(*) FROM pg_trigger WHERE tgname IN ('event_data_value_owner_on_insert', \
             'event_data_value_owner_on_move', 'program_ownership_reown', 'program_ownership_added', 'enrollment_reown')"
        ),
        0
    );
    // A value stored meanwhile by the older schema.
    diesel::sql_query(format!(
        "INSERT INTO event_data_value (uid, event_id, data_element_id, tracked_entity_id, value, value_num, enrollment_id) \
         SELECT 'Vold0000001', event_id, data_element_id, tracked_entity_id, '65', 65, enrollment_id \
         FROM event_data_value WHERE uid = '{obs}'"
    ))
    .execute(&mut conn)
    .expect("a value in the older schema");

    conn.run_pending_migrations(kiunga::store::MIGRATIONS)
        .expect("migrate again");
    assert_eq!(app.db.scalar(support::STRAY_VALUES), 0);
    assert_eq!(
        app.db.text(&format!(
            "SELECT ou.uid FROM event_data_value d JOIN org_unit ou ON ou.id = d.owner_org_unit_id \
             WHERE d.uid IN ('{obs}', 'Vold0000001')"
        )),
        vec![pwani.clone(), pwani]
    );
}

#[test]
fn a_new_managing_organization_through_put_transfers_as_the_mapping_says() {
    let app = TestApp::start();
    let (mto, bonde) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_BON"));
    let (mother, _) = new_mother_and_child(&app, &mto);
    let e = app
        .post(
            "EpisodeOfCare",
            &episode(&mother, "active", None, "2026-01-10T08:00:00Z"),
        )
        .expect(201);
    let mut p = app.get(&format!("Patient/{mother}")).expect(200);
    p["managingOrganization"] = json!({ "reference": format!("Organization/{bonde}") });
    app.put(&format!("Patient/{mother}"), &p).expect(200);
    let now = app.get(&format!("EpisodeOfCare/{}", id(&e))).expect(200);
    assert_eq!(
        now["managingOrganization"]["reference"],
        format!("Organization/{bonde}")
    );
    assert_eq!(now["meta"]["versionId"], "2");
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM program_ownership_history WHERE reason = 'Patient.managingOrganization changed'"),
        1
    );
}

#[test]
fn breaking_the_glass_opens_a_protected_record_for_a_while_and_is_kept() {
    let app = TestApp::start_with(|c| c.break_glass_seconds = 2);
    let mto = app.org("KD_KAS_MTO");
    let (mother, _) = new_mother_and_child(&app, &mto);
    app.post(
        "Encounter",
        &anc_visit(&mother, &mto, None, "2026-01-20T09:00:00Z"),
    )
    .expect(201);
    app.post(
        "Encounter",
        &json!({
            "resourceType": "Encounter", "status": "finished",
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
            "type": [{ "coding": [{ "system": SCT, "code": "11429006" }] }],
            "subject": { "reference": format!("Patient/{mother}") },
            "period": { "start": "2026-01-21T09:00:00Z" },
            "serviceProvider": { "reference": format!("Organization/{mto}") },
        }),
    )
    .expect(201);
    // A nurse at Pwani who may search the whole country: she finds the woman and her open (OPD)
    // record, not her protected ANC record.
    let nurse = scoped_context(&app, "nurse-pwani", &["KD_KUS_PWA"], &["KD"]);
    let other = scoped_context(&app, "nurse-bonde", &["KD_KUS_BON"], &["KD"]);
    assert_eq!(seen_by(&app, &nurse, &mother), (1, 1, true));

    let glass = |reason: &str, program: &str| {
        json!({ "resourceType": "Parameters", "parameter": [
            { "name": "program", "valueCode": program },
            { "name": "reason", "valueString": reason },
        ]})
    };
    let run = |ctx: &kiunga::context::RequestContext, body: Value| {
        unit_as(&app, ctx, |s, env| {
            rest::care::break_glass(s, env, &mother, body, chrono::Duration::seconds(2))
        })
    };
    assert!(matches!(
        run(&nurse, glass(" ", "ANC")),
        Err(kiunga::Error::Invalid { .. })
    ));
    assert!(
        run(&nurse, glass("emergency delivery", "OPD")).is_err(),
        "open programs need no glass"
    );
    let out = run(&nurse, glass("emergency delivery, bleeding", "ANC")).unwrap();
    assert!(out["parameter"][1]["valueInstant"].is_string(), "{out}");
    assert_eq!(seen_by(&app, &nurse, &mother), (2, 2, true));
    // The grant is hers alone, and it is on record.
    assert_eq!(seen_by(&app, &other, &mother), (1, 1, true));
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM ownership_override WHERE actor = 'user:nurse-pwani' AND reason = 'emergency delivery, bleeding'"),
        1
    );
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert_eq!(
        seen_by(&app, &nurse, &mother),
        (1, 1, true),
        "the grant expired"
    );
    // Over HTTP, the operation answers with the expiry.
    let out = app
        .post(
            &format!("Patient/{mother}/$break-glass"),
            &glass("audit check", "ANC"),
        )
        .expect(200);
    assert_eq!(out["parameter"][0]["valueCode"], "ANC");
    app.post(&format!("Patient/{mother}/$break-glass"), &glass("", "ANC"))
        .outcome(400);
}

/// A metadata directory like the demo's, changed by `edit`.
fn metadata_copy(edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiunga-md-{}", unique("d")));
    std::fs::create_dir_all(&dir).unwrap();
    let text =
        std::fs::read_to_string(support::repo().join("fixtures/metadata/demo.json")).unwrap();
    let mut md: Value = serde_json::from_str(&text).unwrap();
    edit(&mut md);
    std::fs::write(dir.join("demo.json"), md.to_string()).unwrap();
    dir
}

#[test]
fn relationship_type_constraints_on_entity_type_and_program_are_enforced() {
    const ANC: &str = "w6Pog4K7zK2";
    let dir = metadata_copy(|md| {
        md["trackedEntityTypes"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "id": "Hh0useHold1", "code": "HOUSEHOLD", "name": "Household" }));
        for t in md["relationshipTypes"].as_array_mut().unwrap() {
            match t["code"].as_str().unwrap() {
                // A mother must be enrolled in ANC; a caregiver cares for a household.
                "MOTHER_CHILD" => t["fromConstraint"]["program"] = json!({ "id": ANC }),
                _ => t["toConstraint"]["trackedEntityType"] = json!({ "id": "Hh0useHold1" }),
            }
        }
    });
    let app = TestApp::start_with(|c| c.metadata_dir = dir.clone());
    let org = app.org("KD_KAS_MTO");
    let (mother, child) = new_mother_and_child(&app, &org);
    let mth = related(
        &format!("Patient/{child}"),
        "MTH",
        Some(&format!("Patient/{mother}")),
    );
    let msg = app.post("RelatedPerson", &mth).outcome(422);
    assert!(
        msg.contains("wants its `from` end enrolled in Antenatal care") && msg.contains(&mother),
        "{msg}"
    );
    app.post(
        "EpisodeOfCare",
        &episode(&mother, "active", None, "2026-01-10T08:00:00Z"),
    )
    .expect(201);
    app.post("RelatedPerson", &mth).expect(201);
    let fth = related(
        &format!("Patient/{child}"),
        "FTH",
        Some(&format!("Patient/{mother}")),
    );
    let msg = app.post("RelatedPerson", &fth).outcome(422);
    assert!(msg.contains("wants a Household at its `to` end"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn where_the_mapping_says_so_an_encounter_needs_an_open_enrollment() {
    let dir = support::mappings_copy();
    let care = std::fs::read_to_string(dir.join("care.toml")).unwrap();
    std::fs::write(
        dir.join("care.toml"),
        care.replace("open_on_encounter = true", "open_on_encounter = false"),
    )
    .unwrap();
    let app = TestApp::start_with(|c| c.mappings_dir = dir.clone());
    let org = app.org("KD_KAS_MTO");
    let (mother, _) = new_mother_and_child(&app, &org);
    let before = app.db.scalar("SELECT count(*) FROM enrollment");
    let msg = app
        .post(
            "Encounter",
            &anc_visit(&mother, &org, None, "2026-01-20T09:00:00Z"),
        )
        .outcome(422);
    assert!(msg.contains("create the EpisodeOfCare first"), "{msg}");
    assert_eq!(app.db.scalar("SELECT count(*) FROM enrollment"), before);
    let e = app
        .post(
            "EpisodeOfCare",
            &episode(&mother, "active", None, "2026-01-10T08:00:00Z"),
        )
        .expect(201);
    let v = app
        .post(
            "Encounter",
            &anc_visit(&mother, &org, None, "2026-01-20T09:00:00Z"),
        )
        .expect(201);
    assert_eq!(
        v["episodeOfCare"][0]["reference"],
        format!("EpisodeOfCare/{}", id(&e))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_old_owner_may_read_an_open_record_but_not_change_it_and_moves_need_both_ends() {
    let app = TestApp::start();
    let (mto, pwani) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));
    let (mother, child) = new_mother_and_child(&app, &mto);
    let opd = app
        .post(
            "Encounter",
            &json!({
                "resourceType": "Encounter", "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
                "type": [{ "coding": [{ "system": SCT, "code": "11429006" }] }],
                "subject": { "reference": format!("Patient/{mother}") },
                "period": { "start": "2026-01-21T09:00:00Z" },
                "serviceProvider": { "reference": format!("Organization/{mto}") },
            }),
        )
        .expect(201);
    let episode_id = opd["episodeOfCare"][0]["reference"]
        .as_str()
        .unwrap()
        .trim_start_matches("EpisodeOfCare/")
        .to_string();
    // Mto staff may not send the record somewhere they cannot write, through EpisodeOfCare either.
    let mto_only = scoped_context(&app, "nurse-mto", &["KD_KAS_MTO"], &["KD"]);
    let mut moved = app.get(&format!("EpisodeOfCare/{episode_id}")).expect(200);
    moved["managingOrganization"] = json!({ "reference": format!("Organization/{pwani}") });
    let raw = moved.to_string();
    let refused = unit_as(&app, &mto_only, |s, env| {
        rest::update(
            s,
            env,
            "EpisodeOfCare",
            &episode_id,
            None,
            rest::Body {
                resource: &moved,
                raw: raw.as_bytes(),
                content_type: "application/fhir+json",
            },
        )
    });
    assert!(
        matches!(refused, Err(kiunga::Error::Forbidden(_))),
        "{:?}",
        refused.map(|s| s.id)
    );
    assert_eq!(
        app.get(&format!("EpisodeOfCare/{episode_id}")).expect(200)["meta"]["versionId"],
        "1"
    );
    // The demo user moves it; Mto still reads the open record but may no longer change it.
    app.post(
        &format!("Patient/{mother}/$transfer"),
        &transfer_params("OPD", &pwani, "moved"),
    )
    .expect(200);
    let eid = id(&opd);
    let read = unit_as(&app, &mto_only, |s, env| {
        rest::read(s, env, "Encounter", &eid)
    });
    assert!(
        read.is_ok(),
        "an open program's record is read in the search scope"
    );
    let refused = unit_as(&app, &mto_only, |s, env| {
        rest::delete(s, env, "Encounter", &eid)
    });
    assert!(matches!(refused, Err(kiunga::Error::Forbidden(_))));
    // A person in a relationship cannot be deleted from under it.
    app.post(
        "RelatedPerson",
        &related(
            &format!("Patient/{child}"),
            "MTH",
            Some(&format!("Patient/{mother}")),
        ),
    )
    .expect(201);
    let msg = app.delete(&format!("Patient/{child}")).outcome(409);
    assert!(msg.contains("relationship"), "{msg}");
}

#[test]
fn a_relationship_with_someone_out_of_scope_is_not_revealed_by_history_or_search() {
    let app = TestApp::start();
    let (mto, pwani) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));
    let (_, child) = new_mother_and_child(&app, &mto);
    let (grandmother, _) = new_mother_and_child(&app, &pwani);
    app.post(
        "RelatedPerson",
        &related(
            &format!("Patient/{child}"),
            "GRMTH",
            Some(&format!("Patient/{grandmother}")),
        ),
    )
    .expect(201);
    let at_mto = scoped_context(&app, "nurse-mto", &["KD_KAS_MTO"], &["KD_KAS_MTO"]);
    let history = unit_as(&app, &at_mto, |s, env| {
        rest::type_history(s, env, "RelatedPerson", None, 50, 0)
    })
    .unwrap();
    assert!(history.is_empty());
    let q = kiunga::fhir::search::parse_query(&format!("patient={child}"));
    let found = unit_as(&app, &at_mto, |s, env| {
        rest::search::search(s, env, "RelatedPerson", &q, false, "http://x/fhir")
    })
    .unwrap();
    assert_eq!(found["total"], 0);
    // The demo user sees it.
    assert_eq!(
        app.get(&format!("RelatedPerson?patient={child}"))
            .expect(200)["total"],
        1
    );
}

#[test]
fn a_merge_moves_relationships_with_a_new_version_and_an_unmerge_moves_them_back() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (mother, child) = new_mother_and_child(&app, &org);
    let (duplicate, _) = new_mother_and_child(&app, &org);
    let r = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{child}"),
                "MTH",
                Some(&format!("Patient/{mother}")),
            ),
        )
        .expect(201);
    let rid = id(&r);
    let params = |op: &str| {
        let mut p = vec![
            json!({ "name": "source-patient", "valueReference": { "reference": format!("Patient/{mother}") } }),
        ];
        if op == "$merge" {
            p.push(json!({ "name": "target-patient", "valueReference": { "reference": format!("Patient/{duplicate}") } }));
        }
        json!({ "resourceType": "Parameters", "parameter": p })
    };
    app.post("Patient/$merge", &params("$merge")).expect(200);
    let now = app.get(&format!("RelatedPerson/{rid}")).expect(200);
    assert_eq!(now["meta"]["versionId"], "2");
    assert_eq!(
        now["extension"][0]["valueReference"]["reference"],
        format!("Patient/{duplicate}")
    );
    app.post("Patient/$unmerge", &params("$unmerge"))
        .expect(200);
    let back = app.get(&format!("RelatedPerson/{rid}")).expect(200);
    assert_eq!(back["meta"]["versionId"], "3");
    assert_eq!(
        back["extension"][0]["valueReference"]["reference"],
        format!("Patient/{mother}")
    );
    let v2 = app
        .get(&format!("RelatedPerson/{rid}/_history/2"))
        .expect(200);
    assert_eq!(
        v2["extension"][0]["valueReference"]["reference"],
        format!("Patient/{duplicate}")
    );
}

#[test]
fn remap_reads_relatedperson_and_episodeofcare_originals() {
    let app = TestApp::start();
    let (mto, pwani) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));
    let (mother, child) = new_mother_and_child(&app, &mto);
    app.post(
        "RelatedPerson",
        &related(
            &format!("Patient/{child}"),
            "MTH",
            Some(&format!("Patient/{mother}")),
        ),
    )
    .expect(201);
    let e = app
        .post(
            "EpisodeOfCare",
            &episode(&mother, "active", None, "2026-01-10T08:00:00Z"),
        )
        .expect(201);
    app.post(
        &format!("Patient/{mother}/$transfer"),
        &transfer_params("ANC", &pwani, "moved"),
    )
    .expect(200);
    let changes = support::system_unit(&app, |s, env| rest::remap::remap(s, env, false));
    let ours: Vec<_> = changes
        .iter()
        .filter(|c| {
            c.resource.starts_with("RelatedPerson/") || c.resource.starts_with("EpisodeOfCare/")
        })
        .collect();
    assert!(
        ours.is_empty(),
        "{:?}",
        ours.iter()
            .map(|c| (&c.resource, &c.details))
            .collect::<Vec<_>>()
    );
    // Unchanged mappings change nothing, and the transfer stands.
    let _ = support::system_unit(&app, |s, env| rest::remap::remap(s, env, true));
    let now = app.get(&format!("EpisodeOfCare/{}", id(&e))).expect(200);
    assert_eq!(
        now["managingOrganization"]["reference"],
        format!("Organization/{pwani}")
    );
}

#[test]
fn a_read_back_relatedperson_or_episodeofcare_sent_back_loses_nothing() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (mother, child) = new_mother_and_child(&app, &org);
    let r = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{child}"),
                "MTH",
                Some(&format!("Patient/{mother}")),
            ),
        )
        .expect(201);
    let e = app
        .post(
            "EpisodeOfCare",
            &episode(&mother, "active", None, "2026-01-10T08:00:00Z"),
        )
        .expect(201);
    for (t, rid) in [("RelatedPerson", id(&r)), ("EpisodeOfCare", id(&e))] {
        let back = app.get(&format!("{t}/{rid}")).expect(200);
        let out = app.send(
            "PUT",
            &format!("{t}/{rid}"),
            &[
                ("Content-Type", "application/fhir+json"),
                ("Prefer", "return=OperationOutcome"),
            ],
            Some(back.to_string().as_bytes()),
        );
        let oo = out.expect(200);
        let warnings: Vec<&Value> = oo["issue"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["severity"] == "warning")
            .collect();
        assert!(warnings.is_empty(), "{t}: {oo}");
    }
}

#[test]
fn a_mother_known_only_by_her_relatedperson_is_registered_inside_the_bundle() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let (cu, ru) = (
        "urn:uuid:7c1d2b63-0000-4000-8000-000000000001",
        "urn:uuid:7c1d2b63-0000-4000-8000-000000000002",
    );
    let mother = json!({
        "resourceType": "RelatedPerson",
        "patient": { "reference": cu },
        "relationship": [{ "coding": [{ "system": ROLE, "code": "MTH" }] }],
        "identifier": [{ "system": NID, "value": unique("N") }],
        "name": [{ "family": "Njeri", "given": ["Wambui"] }],
        "gender": "female",
        "birthDate": "1998-03-04",
    });
    let people = app.db.scalar("SELECT count(*) FROM tracked_entity");
    let b = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        post(mother.clone(), ru),
        post(person(&org, &unique("C"), "Njeri", "Baby", "female", "2026-07-01"), cu),
    ]});
    let out = app.post("", &b).expect(200);
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM tracked_entity"),
        people + 2,
        "{out}"
    );
    let rp = created_id(&out["entry"][0]);
    let r = app.get(&format!("RelatedPerson/{rp}")).expect(200);
    let her = r["extension"][0]["valueReference"]["reference"]
        .as_str()
        .unwrap();
    let p = app.get(her).expect(200);
    assert_eq!(p["name"][0]["given"][0], "Wambui");
    assert_eq!(
        p["managingOrganization"]["reference"],
        format!("Organization/{org}")
    );
    // The same Bundle in a batch: each entry on its own, the RelatedPerson naming the child by id.
    let child = created_id(&out["entry"][1]);
    let mut again = mother;
    again["patient"] = json!({ "reference": format!("Patient/{child}") });
    again["relationship"][0]["coding"][0]["code"] = json!("GRMTH");
    again["identifier"][0]["value"] = json!(unique("N"));
    let batch = json!({ "resourceType": "Bundle", "type": "batch", "entry": [post(again, ru)] });
    let out = app.post("", &batch).expect(200);
    assert_eq!(
        out["entry"][0]["response"]["status"], "201 Created",
        "{out}"
    );
}

#[test]
fn a_facility_that_owns_both_people_sees_the_link_between_them() {
    let app = TestApp::start();
    let (mto, pwani) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));
    let (mother, child) = new_mother_and_child(&app, &mto);
    let r = app
        .post(
            "RelatedPerson",
            &related(
                &format!("Patient/{child}"),
                "MTH",
                Some(&format!("Patient/{mother}")),
            ),
        )
        .expect(201);
    // Both are enrolled at Mto, then both records move to Pwani.
    for p in [&mother, &child] {
        app.post(
            "EpisodeOfCare",
            &json!({
                "resourceType": "EpisodeOfCare", "status": "active",
                "type": [{ "coding": [{ "system": "urn:kiunga:program", "code": "OPD" }] }],
                "patient": { "reference": format!("Patient/{p}") },
            }),
        )
        .expect(201);
        app.post(
            &format!("Patient/{p}/$transfer"),
            &transfer_params("OPD", &pwani, "moved"),
        )
        .expect(200);
    }
    let at_pwani = scoped_context(&app, "nurse-pwani", &["KD_KUS_PWA"], &["KD_KUS_PWA"]);
    let m = unit_as(&app, &at_pwani, |s, env| {
        rest::read(s, env, "Patient", &mother)
    })
    .expect("owned at Pwani, so found there")
    .resource;
    assert!(
        m["link"].as_array().is_some_and(|l| l
            .iter()
            .any(|x| x["other"]["reference"] == format!("RelatedPerson/{}", id(&r)))),
        "{m}"
    );
    let seen = unit_as(&app, &at_pwani, |s, env| {
        rest::read(s, env, "RelatedPerson", &id(&r))
    });
    assert!(seen.is_ok());
    // Somewhere else sees neither.
    let at_bonde = scoped_context(&app, "nurse-bonde", &["KD_KUS_BON"], &["KD_KUS_BON"]);
    assert!(unit_as(&app, &at_bonde, |s, env| rest::read(
        s, env, "Patient", &mother
    ))
    .is_err());
}

#[test]
fn a_facility_that_owns_both_records_sees_the_decision_about_them() {
    let app = TestApp::start();
    let (mto, pwani) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));
    let (a, _) = new_mother_and_child(&app, &mto);
    let (b, _) = new_mother_and_child(&app, &mto);
    app.post(
        "$mdm-create-link",
        &json!({ "resourceType": "Parameters", "parameter": [
            { "name": "goldenResourceId", "valueString": format!("Patient/{a}") },
            { "name": "resourceId", "valueString": format!("Patient/{b}") },
            { "name": "matchResult", "valueString": "POSSIBLE_MATCH" },
        ]}),
    )
    .expect(200);
    let query = rest::identity::LinkQuery {
        golden: None,
        resource: Some(format!("Patient/{b}")),
        match_result: None,
        link_source: None,
        offset: 0,
        count: None,
    };
    let at_pwani = scoped_context(&app, "nurse-pwani", &["KD_KUS_PWA"], &["KD_KUS_PWA"]);
    let seen = |app: &TestApp| {
        unit_as(app, &at_pwani, |s, env| {
            rest::identity::query_links(s, env, &query)
        })
        .map(|v| {
            v["parameter"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|x| x["name"] == "link").count())
        })
    };
    // Pwani cannot find either record yet.
    assert!(seen(&app).is_err());
    for p in [&a, &b] {
        app.post(
            "EpisodeOfCare",
            &json!({
                "resourceType": "EpisodeOfCare", "status": "active",
                "type": [{ "coding": [{ "system": "urn:kiunga:program", "code": "OPD" }] }],
                "patient": { "reference": format!("Patient/{p}") },
            }),
        )
        .expect(201);
        app.post(
            &format!("Patient/{p}/$transfer"),
            &transfer_params("OPD", &pwani, "moved"),
        )
        .expect(200);
    }
    assert_eq!(seen(&app).unwrap(), 1);
}
