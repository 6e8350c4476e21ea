//! Matching on write: a certain match links two records of one person, a possible one becomes a
//! potential duplicate for a person to decide ($mdm-query-links, $mdm-update-link), people's
//! decisions stick, and concurrent writes of one person meet.

mod support;

use serde_json::{json, Value};
use support::{created_id, TestApp};

/// A person as an EMR sends them: demographics, no identifier the registry can compare.
fn person(org: &str, family: &str, given: &str, born: &str, phone: &str) -> Value {
    let mut p = json!({
        "resourceType": "Patient",
        "name": [{ "family": family, "given": [given] }],
        "gender": "female",
        "birthDate": born,
        "telecom": [{ "system": "phone", "value": phone }],
        "address": [{ "city": "Kilima" }],
        "managingOrganization": { "reference": format!("Organization/{org}") },
    });
    if phone.is_empty() {
        p.as_object_mut().unwrap().remove("telecom");
    }
    p
}

fn links_of(v: &Value) -> Vec<String> {
    v["link"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            assert_eq!(l["type"], "seealso", "{v}");
            l["other"]["reference"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `$mdm-query-links` as (golden, source, matchResult, linkSource) per link.
fn query_links(app: &TestApp, query: &str) -> Vec<(String, String, String, String)> {
    let v = app.get(&format!("$mdm-query-links?{query}")).expect(200);
    assert_eq!(v["resourceType"], "Parameters");
    v["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "link")
        .map(|l| {
            let part = |name: &str| {
                l["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == name)
                    .and_then(|p| p["valueString"].as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            (
                part("goldenResourceId"),
                part("sourceResourceId"),
                part("matchResult"),
                part("linkSource"),
            )
        })
        .collect()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn a_certain_match_links_the_records_and_a_possible_one_waits_for_a_person() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let first = app
        .post(
            "Patient",
            &person(&org, "Mwangi", "Amina", "1990-04-12", "+254 700 123456"),
        )
        .expect(201);
    assert!(links_of(&first).is_empty(), "{first}");
    let a = id(&first);

    // The same woman from another EMR, names swapped: the answer says whom she was linked to.
    let second = app
        .post(
            "Patient",
            &person(&org, "Amina", "Mwangi", "1990-04-12", "0700 123 456"),
        )
        .expect(201);
    let b = id(&second);
    assert_ne!(a, b, "both records are kept");
    assert_eq!(links_of(&second), vec![format!("Patient/{a}")]);
    // Either side reaches the other, on read and in searches.
    let read = app.get(&format!("Patient/{a}")).expect(200);
    assert_eq!(links_of(&read), vec![format!("Patient/{b}")]);
    let found = app.get(&format!("Patient?_id={b}")).expect(200);
    assert_eq!(
        links_of(&found["entry"][0]["resource"]),
        vec![format!("Patient/{a}")]
    );
    let links = query_links(&app, &format!("resourceId=Patient/{b}"));
    assert_eq!(
        links,
        vec![(
            format!("Patient/{a}"),
            format!("Patient/{b}"),
            "MATCH".into(),
            "AUTO".into()
        )]
    );
    // The decision records the rule set, the score and each field's contribution.
    let (ruleset, explained): (String, i64) = (
        app.db
            .text("SELECT ruleset FROM person_link")
            .pop()
            .unwrap(),
        app.db
            .scalar("SELECT jsonb_array_length(explanation)::int8 FROM person_link"),
    );
    assert!(ruleset.starts_with("demo-2026-11+"), "{ruleset}");
    assert!(explained >= 4, "{explained}");

    // A typo and a year-only birth date: possible, not certain. A potential duplicate, no link.
    let third = app
        .post("Patient", &person(&org, "Mwangii", "Amina", "1990", ""))
        .expect(201);
    let c = id(&third);
    assert!(links_of(&third).is_empty(), "{third}");
    let open = query_links(&app, "matchResult=POSSIBLE_MATCH");
    assert!(!open.is_empty());
    assert!(
        open.iter()
            .all(|(_, source, r, s)| source == &format!("Patient/{c}")
                && r == "POSSIBLE_MATCH"
                && s == "AUTO"),
        "{open:?}"
    );
    // Paged, with the total.
    let page = app
        .get("$mdm-query-links?matchResult=POSSIBLE_MATCH&_count=1")
        .expect(200);
    assert_eq!(page["parameter"][0]["name"], "total");
    assert_eq!(page["parameter"][0]["valueInteger"], open.len());
    assert_eq!(
        page["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "link")
            .count(),
        1
    );

    // A person confirms: the records are linked, by a person's decision.
    let decided = app
        .post(
            "$mdm-update-link",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "goldenResourceId", "valueString": format!("Patient/{a}") },
                { "name": "resourceId", "valueString": format!("Patient/{c}") },
                { "name": "matchResult", "valueString": "MATCH" },
            ]}),
        )
        .expect(200);
    let parts = decided["parameter"][0]["part"].as_array().unwrap();
    assert!(parts.contains(&json!({ "name": "matchResult", "valueString": "MATCH" })));
    assert!(parts.contains(&json!({ "name": "linkSource", "valueString": "MANUAL" })));
    let read = app.get(&format!("Patient/{c}")).expect(200);
    assert_eq!(links_of(&read), vec![format!("Patient/{a}")]);

    // Errors a person can act on.
    let bad = app.post(
        "$mdm-update-link",
        &json!({ "resourceType": "Parameters", "parameter": [
            { "name": "goldenResourceId", "valueString": format!("Patient/{a}") },
            { "name": "resourceId", "valueString": format!("Patient/{c}") },
            { "name": "matchResult", "valueString": "POSSIBLE_MATCH" },
        ]}),
    );
    assert!(bad.outcome(400).contains("MATCH or NO_MATCH"));
    assert!(app
        .get("$mdm-query-links?matchResult=MAYBE")
        .outcome(400)
        .contains("MAYBE"));
    assert!(app
        .get("$mdm-query-links?resourceId=Patient/nobody00001")
        .outcome(404)
        .contains("nobody00001"));
}

#[test]
fn a_rejected_duplicate_is_never_proposed_again() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let a = id(&app
        .post(
            "Patient",
            &person(&org, "Otieno", "Grace", "1984-07-01", ""),
        )
        .expect(201));
    let mut later = person(&org, "Otieno", "Grace", "1984", "");
    let b = id(&app.post("Patient", &later).expect(201));
    let pair = format!("resourceId=Patient/{b}");
    let open = query_links(&app, &pair);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].2, "POSSIBLE_MATCH");

    app.post(
        "$mdm-update-link",
        &json!({ "resourceType": "Parameters", "parameter": [
            { "name": "goldenResourceId", "valueString": a },
            { "name": "resourceId", "valueString": b },
            { "name": "matchResult", "valueString": "NO_MATCH" },
        ]}),
    )
    .expect(200);

    // Updated twice, even to agree more: the engine does not propose the pair again.
    later["id"] = json!(b);
    later["birthDate"] = json!("1984-07-01");
    app.put(&format!("Patient/{b}"), &later).expect(200);
    let again = app.put(&format!("Patient/{b}"), &later).expect(200);
    assert!(links_of(&again).is_empty(), "{again}");
    let links = query_links(&app, &pair);
    assert_eq!(
        links,
        vec![(
            format!("Patient/{a}"),
            format!("Patient/{b}"),
            "NO_MATCH".into(),
            "MANUAL".into()
        )]
    );
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM person_link"),
        1,
        "one row per pair"
    );
}

#[test]
fn an_update_rematches_and_replaces_only_the_engines_own_decisions() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let a = id(&app
        .post(
            "Patient",
            &person(&org, "Kamau", "John", "1975-03-03", "+254 722 111222"),
        )
        .expect(201));
    let mut p = person(&org, "Kamau", "John", "1975-03-03", "+254 722 111222");
    let created = app.post("Patient", &p).expect(201);
    let b = id(&created);
    assert_eq!(links_of(&created), vec![format!("Patient/{a}")]);

    // Corrected to someone else: the automatic link goes.
    p["id"] = json!(b);
    p["name"] = json!([{ "family": "Wekesa", "given": ["Peter"] }]);
    p["birthDate"] = json!("2001-09-09");
    p["telecom"] = json!([{ "system": "phone", "value": "+254 733 999888" }]);
    let updated = app.put(&format!("Patient/{b}"), &p).expect(200);
    assert!(links_of(&updated).is_empty(), "{updated}");
    assert!(links_of(&app.get(&format!("Patient/{a}")).expect(200)).is_empty());
    assert_eq!(app.db.scalar("SELECT count(*) FROM person_link"), 0);
}

/// In a transaction Bundle, people are matched after the entries that write (and before the
/// ones that read): a search in the same Bundle shows the link its create made, and an update
/// in a Bundle re-matches as a single PUT does.
#[test]
fn a_bundle_matches_before_its_reads_and_rematches_its_updates() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let a = id(&app
        .post(
            "Patient",
            &person(&org, "Chebet", "Ruth", "1983-06-14", "+254 722 414141"),
        )
        .expect(201));
    let tx = |entries: Vec<Value>| json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries });
    let v = app
        .post(
            "",
            &tx(vec![
                json!({ "request": { "method": "GET", "url": "Patient?family=Chebet" } }),
                json!({ "resource": person(&org, "Chebet", "Ruth", "1983-06-14", "+254 722 414141"),
                        "request": { "method": "POST", "url": "Patient" } }),
            ]),
        )
        .expect(200);
    let b = created_id(&v["entry"][1]);
    assert_eq!(
        links_of(&v["entry"][1]["resource"]),
        vec![format!("Patient/{a}")],
        "{v}"
    );
    // The read ran after the create, as the spec orders them, and sees both ends of the link.
    let found = &v["entry"][0]["resource"];
    assert_eq!(found["total"], 2, "{found}");
    for e in found["entry"].as_array().unwrap() {
        let me = e["resource"]["id"].as_str().unwrap();
        let other = if me == a { &b } else { &a };
        assert_eq!(
            links_of(&e["resource"]),
            vec![format!("Patient/{other}")],
            "{found}"
        );
    }

    // Corrected to someone else in a Bundle: the automatic link goes.
    let mut p = person(&org, "Wafula", "Peter", "2001-09-09", "+254 733 999888");
    p["id"] = json!(b);
    let v = app
        .post(
            "",
            &tx(vec![json!({ "resource": p, "request": { "method": "PUT", "url": format!("Patient/{b}") } })]),
        )
        .expect(200);
    assert!(links_of(&v["entry"][0]["resource"]).is_empty(), "{v}");
    assert!(links_of(&app.get(&format!("Patient/{a}")).expect(200)).is_empty());
    assert_eq!(app.db.scalar("SELECT count(*) FROM person_link"), 0);
}

#[test]
fn one_person_twice_in_a_bundle_is_linked_atomically() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let entry =
        |p: Value| json!({ "resource": p, "request": { "method": "POST", "url": "Patient" } });
    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        entry(person(&org, "Njeri", "Wanjiku", "2002-02-02", "+254 711 222333")),
        entry(person(&org, "Wanjiku", "Njeri", "2002-02-02", "+254 711 222333")),
    ]});
    let v = app.post("", &bundle).expect(200);
    let ids: Vec<String> = v["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(created_id)
        .collect();
    let second = app.get(&format!("Patient/{}", ids[1])).expect(200);
    assert_eq!(links_of(&second), vec![format!("Patient/{}", ids[0])]);
    // The Bundle's answer shows the link it made, as a single create's would.
    assert_eq!(
        links_of(&v["entry"][1]["resource"]),
        vec![format!("Patient/{}", ids[0])],
        "{v}"
    );

    // A failed Bundle leaves no decision behind.
    let before = app.db.scalar("SELECT count(*) FROM person_link");
    let failing = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        entry(person(&org, "Njeri", "Wanjiku", "2002-02-02", "+254 711 222333")),
        { "resource": { "resourceType": "Observation", "status": "final", "code": { "text": "?" } },
          "request": { "method": "POST", "url": "Observation" } },
    ]});
    assert!(app.post("", &failing).status >= 400);
    assert_eq!(app.db.scalar("SELECT count(*) FROM person_link"), before);
}

#[test]
fn concurrent_creates_of_one_person_link_once() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    for round in 0..3 {
        let family = format!("Achieng{}", ["", "o", "i"][round]);
        let phone = format!("+254 700 55500{round}");
        let ids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let p = person(&org, &family, "Mercy", "1999-12-01", &phone);
                    let app = &app;
                    scope.spawn(move || id(&app.post("Patient", &p).expect(201)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let linked = app.db.scalar(&format!(
            "SELECT count(*) FROM person_link l
             JOIN tracked_entity a ON a.id = l.source_id JOIN tracked_entity b ON b.id = l.target_id
             WHERE l.status = 'LINKED' AND a.uid IN ('{0}', '{1}') AND b.uid IN ('{0}', '{1}')",
            ids[0], ids[1]
        ));
        assert_eq!(linked, 1, "round {round}: {ids:?}");
    }
}

/// Two transaction Bundles carrying one person, sent at once: the second to take the matching
/// locks reads its candidates after the first committed, so the two records are LINKED once,
/// whichever wins. Each Bundle also carries people of its own sharing blocking keys with the
/// other's, which are written before the locks are taken and must not be compared with
/// themselves or meet as candidates read back from the database.
#[test]
fn concurrent_bundles_of_one_person_link_once() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let entry =
        |p: Value| json!({ "resource": p, "request": { "method": "POST", "url": "Patient" } });
    for round in 0..3 {
        // Rounds apart: other names, birth dates and phones, so that no round meets another.
        let family = ["Atieno", "Kiprono", "Mutua"][round];
        let given = ["Grace", "Brian", "Esther"][round];
        let born = ["1988-04-09", "1954-07-21", "2011-01-15"][round];
        let phone = format!("+254 700 66600{round}");
        let answers: Vec<Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|side| {
                    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
                        entry(person(&org, family, given, born, &phone)),
                        entry(person(&org, family, ["Faith", "Joy"][side], &format!("19{}-10-30", 60 + round * 5 + side), &format!("+254 722 00{round}00{side}"))),
                    ]});
                    let app = &app;
                    scope.spawn(move || app.post("", &bundle).expect(200))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let grace: Vec<String> = answers.iter().map(|v| created_id(&v["entry"][0])).collect();
        let linked = app.db.scalar(&format!(
            "SELECT count(*) FROM person_link l
             JOIN tracked_entity a ON a.id = l.source_id JOIN tracked_entity b ON b.id = l.target_id
             WHERE l.status = 'LINKED' AND a.uid IN ('{0}', '{1}') AND b.uid IN ('{0}', '{1}')",
            grace[0], grace[1]
        ));
        assert_eq!(linked, 1, "round {round}: {grace:?}");
        // The later Bundle's answer shows the link; the earlier one's cannot have known of it.
        let shown: Vec<Vec<String>> = answers
            .iter()
            .map(|v| links_of(&v["entry"][0]["resource"]))
            .collect();
        assert_eq!(
            shown.iter().filter(|l| !l.is_empty()).count(),
            1,
            "round {round}: {shown:?}"
        );
        // No record was compared with itself or its own Bundle's other person.
        let stray = app
            .db
            .scalar("SELECT count(*) FROM person_link WHERE source_id = target_id");
        assert_eq!(stray, 0);
    }
}

/// `$mdm-create-link`: a person records a decision the engine never proposed; it sticks.
#[test]
fn a_person_links_two_records_the_engine_never_compared() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    // Two records of one woman the engine cannot see as one: a new surname after marriage and
    // no shared phone.
    let a = id(&app
        .post(
            "Patient",
            &person(&org, "Wanjiku", "Grace", "1985-02-20", "+254 722 000001"),
        )
        .expect(201));
    let b = id(&app
        .post(
            "Patient",
            &person(&org, "Kamau", "Grace", "1986", "+254 733 000002"),
        )
        .expect(201));
    assert!(query_links(&app, &format!("resourceId=Patient/{b}")).is_empty());
    let create = |golden: &str, resource: &str, result: Option<&str>| {
        let mut parameter = vec![
            json!({ "name": "goldenResourceId", "valueString": format!("Patient/{golden}") }),
            json!({ "name": "resourceId", "valueString": format!("Patient/{resource}") }),
        ];
        if let Some(r) = result {
            parameter.push(json!({ "name": "matchResult", "valueString": r }));
        }
        app.post(
            "$mdm-create-link",
            &json!({ "resourceType": "Parameters", "parameter": parameter }),
        )
    };
    let made = create(&a, &b, None).expect(200);
    let parts = made["parameter"][0]["part"].as_array().unwrap();
    assert!(parts.contains(&json!({ "name": "matchResult", "valueString": "MATCH" })));
    assert!(parts.contains(&json!({ "name": "linkSource", "valueString": "MANUAL" })));
    assert!(parts.contains(&json!({ "name": "eidMatch", "valueBoolean": false })));
    let read = app.get(&format!("Patient/{a}")).expect(200);
    assert_eq!(links_of(&read), vec![format!("Patient/{b}")]);
    // An update re-matches b, and a person's link stays.
    let current = app.get(&format!("Patient/{b}")).expect(200);
    app.put(&format!("Patient/{b}"), &current).expect(200);
    assert_eq!(
        query_links(&app, &format!("resourceId=Patient/{b}")),
        vec![(
            format!("Patient/{a}"),
            format!("Patient/{b}"),
            "MATCH".into(),
            "MANUAL".into()
        )]
    );
    // A second decision about the pair is an update, not a creation.
    assert!(create(&a, &b, Some("NO_MATCH"))
        .outcome(409)
        .contains("$mdm-update-link"));
    assert!(create(&a, &a, None).outcome(422).contains("same record"));
    assert!(create(&a, &b, Some("MERGED"))
        .outcome(400)
        .contains("MERGED"));
    assert!(create(&a, "nobody00001", None)
        .outcome(404)
        .contains("nobody00001"));
}

/// A record with a national ID is matched against the people without one (they may be the same
/// person), never against holders of another national ID (certainly two people); a record
/// without one is matched against both (migration 9 keeps the two apart).
#[test]
fn national_id_holders_are_matched_with_those_without_one() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let with_nid = |nid: &str| {
        let mut p = person(&org, "Mwangi", "Amina", "1990-04-12", "+254 700 123456");
        p["identifier"] = json!([{ "system": support::NID, "value": nid }]);
        p
    };
    let first = id(&app
        .post("Patient", &with_nid(&support::unique("NID")))
        .expect(201));
    // No national ID: compared with the holder, and linked to her.
    let second = app
        .post(
            "Patient",
            &person(&org, "Mwangi", "Amina", "1990-04-12", "+254 700 123456"),
        )
        .expect(201);
    assert_eq!(links_of(&second), vec![format!("Patient/{first}")]);
    let second = id(&second);
    // Another national ID: linked to the record without one, not to the other holder.
    let third = app
        .post("Patient", &with_nid(&support::unique("NID")))
        .expect(201);
    assert_eq!(links_of(&third), vec![format!("Patient/{second}")]);
    let third = id(&third);
    let pairs: Vec<(String, String)> = query_links(&app, "")
        .into_iter()
        .map(|(g, s, _, _)| (g, s))
        .collect();
    assert!(!pairs.contains(&(format!("Patient/{first}"), format!("Patient/{third}"))));
    assert_eq!(pairs.len(), 2, "{pairs:?}");
}

/// `kiunga calibrate`: the registry's people are read through the one scoped store, their
/// candidate pairs found by the blocking keys, and the estimate says how many of those pairs are
/// one person; the rules file it writes loads, with the new values and its comments.
#[test]
fn calibration_estimates_the_rules_from_the_registry_and_writes_a_file_that_loads() {
    use kiunga::matching::calibrate;
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let families = [
        "Mwangi", "Otieno", "Kamau", "Njoroge", "Wanjiru", "Achieng", "Mutua", "Kiprop",
    ];
    let givens = [
        "Amina", "Brian", "Cynthia", "Daniel", "Esther", "Faith", "George", "Hellen", "Isaac",
        "Joyce",
    ];
    let mut entries = Vec::new();
    for (i, f) in families.iter().enumerate() {
        for (j, g) in givens.iter().enumerate() {
            // Born within three years of each other: a family's people share its name's blocks.
            let born = format!(
                "{}-{:02}-{:02}",
                1985 + (i + j) % 3,
                1 + (i * 5 + j * 7) % 12,
                1 + (i * 13 + j * 3) % 28
            );
            entries.push(person(&org, f, g, &born, ""));
            if j % 3 == 0 {
                // Registered again at another facility, the given name misspelt.
                entries.push(person(&org, f, &format!("{g}h"), &born, ""));
            }
        }
    }
    let bundle = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": entries.iter().map(|p| json!({"resource": p, "request": {"method": "POST", "url": "Patient"}})).collect::<Vec<_>>(),
    });
    app.post("", &bundle).expect(200);

    let people = support::system_unit(&app, kiunga::rest::identity::registry);
    assert_eq!(people.len(), 80 + 8 * 4);
    let mappings = app.state.mappings();
    let rules = mappings.matching.as_ref().unwrap();
    let queries: Vec<usize> = (0..people.len()).collect();
    let candidates = calibrate::candidate_pairs(rules, &people, &queries);
    let random = calibrate::random_pairs(people.len(), 5000, 1);
    let e = calibrate::estimate(rules, &people, &candidates, &random).unwrap();
    // 32 duplicates, each pair found from both ends.
    assert!((e.expected_matches - 64.0).abs() < 12.0, "{e:?}");
    let birth = e.fields.iter().find(|f| f.field == "birth_date").unwrap();
    assert!(birth.m > 0.9, "{e:?}");

    let text = std::fs::read_to_string("mappings/matching.toml").unwrap();
    let written = kiunga::mapping::matching::with_estimate(&text, &e, "test-calibrated").unwrap();
    assert!(
        written.contains("# How Patient/$match decides"),
        "comments kept"
    );
    let src = kiunga::mapping::Source {
        name: "matching.toml".into(),
        text: written,
    };
    let loaded = kiunga::mapping::matching::load(&src).unwrap();
    assert!(loaded.version.starts_with("test-calibrated+"));
    assert!((loaded.prior_log2_odds - e.prior_log2_odds).abs() < 0.01);
}
