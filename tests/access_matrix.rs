//! The access matrix (#10): several clients, each with its own org units, programs and scopes,
//! try every interaction; no answer (body, total, link, included resource, error message) may
//! reveal a record outside the client's scope, a record it may not see answers exactly as a record
//! that does not exist, and writes outside its scope or programs are refused.

mod support;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use support::clients::*;
use support::{weight, Resp};

const SCT: &str = "http://snomed.info/sct";
/// When the matrix's weights are taken.
const AT: &str = "2026-03-02T09:40:00Z";
const ROLE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
const RECORD: &str = "urn:kiunga:fhir:StructureDefinition:related-person-record";

fn encounter(patient: &str, org: &str, code: &str) -> Value {
    json!({
        "resourceType": "Encounter", "status": "finished",
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
        "type": [{ "coding": [{ "system": SCT, "code": code }] }],
        "subject": { "reference": format!("Patient/{patient}") },
        "serviceProvider": { "reference": format!("Organization/{org}") },
        "period": { "start": "2026-03-02T09:30:00Z" },
    })
}

fn antenatal(patient: &str) -> Value {
    json!({
        "resourceType": "EpisodeOfCare", "status": "active",
        "type": [{ "coding": [{ "system": SCT, "code": "424525001" }] }],
        "patient": { "reference": format!("Patient/{patient}") },
        "period": { "start": "2026-01-10T08:00:00Z" },
    })
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// One client's view: its token and the ids it must never see.
struct Caller {
    name: &'static str,
    token: String,
    hidden: Vec<String>,
}

fn clean(c: &Caller, what: &str, r: &Resp) {
    // A search's own links echo its query: an id the caller put there is not revealed to it.
    let without_links = serde_json::from_str::<Value>(&r.text)
        .ok()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("link");
            }
            v.to_string()
        })
        .unwrap_or_else(|| r.text.clone());
    for h in &c.hidden {
        let text = if what.contains(h.as_str()) {
            &without_links
        } else {
            &r.text
        };
        assert!(
            !text.contains(h.as_str()),
            "{} ({what}) sees {h}: {} {}",
            c.name,
            r.status,
            r.text
        );
    }
}

#[test]
fn no_answer_reveals_a_record_outside_the_callers_org_units_or_programs() {
    let app = secured();
    let admin = token_for(&app, "admin", "system/*.cruds", &["KD"], &["KD"], None);
    let (mto, pwa) = (app.org("KD_KAS_MTO"), app.org("KD_KUS_PWA"));

    // Kasarani: a child with an OPD visit and weight, and an antenatal (protected) enrollment of
    // her own; Kusini: the mother, with an OPD visit and weight, related to the child.
    let child = id(&call(
        &app,
        "POST",
        "Patient",
        &admin,
        Some(&person(&mto, "Otieno")),
    )
    .expect(201));
    let mother = id(&call(
        &app,
        "POST",
        "Patient",
        &admin,
        Some(&person(&pwa, "Kamau")),
    )
    .expect(201));
    let mut records: BTreeMap<&str, String> = BTreeMap::new();
    let e1 = id(&call(
        &app,
        "POST",
        "Encounter",
        &admin,
        Some(&encounter(&child, &mto, "11429006")),
    )
    .expect(201));
    let o1 = id(&call(
        &app,
        "POST",
        "Observation",
        &admin,
        Some(&weight(&child, &e1, 61.5, AT)),
    )
    .expect(201));
    let anc = id(&call(
        &app,
        "POST",
        "EpisodeOfCare",
        &admin,
        Some(&antenatal(&child)),
    )
    .expect(201));
    let e2 = id(&call(
        &app,
        "POST",
        "Encounter",
        &admin,
        Some(&encounter(&mother, &pwa, "11429006")),
    )
    .expect(201));
    let o2 = id(&call(
        &app,
        "POST",
        "Observation",
        &admin,
        Some(&weight(&mother, &e2, 61.5, AT)),
    )
    .expect(201));
    let rel = json!({
        "resourceType": "RelatedPerson",
        "patient": { "reference": format!("Patient/{child}") },
        "relationship": [{ "coding": [{ "system": ROLE, "code": "MTH" }] }],
        "extension": [{ "url": RECORD, "valueReference": { "reference": format!("Patient/{mother}") } }],
    });
    let rp = id(&call(&app, "POST", "RelatedPerson", &admin, Some(&rel)).expect(201));
    for (k, v) in [
        ("child", &child),
        ("mother", &mother),
        ("e1", &e1),
        ("o1", &o1),
        ("anc", &anc),
        ("e2", &e2),
        ("o2", &o2),
        ("rp", &rp),
    ] {
        records.insert(k, v.clone());
    }
    let hide = |keys: &[&str]| keys.iter().map(|k| records[k].clone()).collect::<Vec<_>>();

    // Kasarani's EMR: writes in Kasarani, every program. Kusini's EMR: writes in Kusini, OPD
    // only. A district reader: finds people in the district, antenatal care only, no writes.
    let kas = token_for(&app, "kas-emr", "system/*.cruds", &["KD_KAS"], &[], None);
    let kus = token_for(
        &app,
        "kus-opd",
        "system/*.cruds",
        &["KD_KUS"],
        &[],
        Some(&["OPD"]),
    );
    // Antenatal care by UID, as a registration may name it.
    let reader = token_for(
        &app,
        "kd-reader",
        "system/*.rs",
        &[],
        &["KD"],
        Some(&["w6Pog4K7zK2"]),
    );
    let callers = [
        Caller {
            name: "kas-emr",
            token: kas,
            hidden: hide(&["mother", "e2", "o2", "rp"]),
        },
        Caller {
            name: "kus-opd",
            token: kus,
            hidden: hide(&["child", "e1", "o1", "anc", "rp"]),
        },
        Caller {
            name: "kd-reader",
            token: reader,
            // Antenatal data is protected (owned in Kasarani, no grant), and OPD is not its program.
            hidden: hide(&["anc", "e1", "o1", "e2", "o2"]),
        },
    ];

    let types = [
        "Patient",
        "Encounter",
        "Observation",
        "EpisodeOfCare",
        "RelatedPerson",
    ];
    for c in &callers {
        let get = |path: &str| {
            let r = call(&app, "GET", path, &c.token, None);
            assert!(
                r.status < 500,
                "{} GET {path}: {} {}",
                c.name,
                r.status,
                r.text
            );
            clean(c, &format!("GET {path}"), &r);
            r
        };
        // Searches, totals, includes, histories of every type.
        for t in types {
            let r = get(&format!("{t}?_total=accurate&_count=50"));
            assert_eq!(r.status, 200, "{} {t}: {}", c.name, r.text);
            let body: Value = serde_json::from_str(&r.text).expect("json");
            let entries = body["entry"].as_array().map_or(0, Vec::len) as i64;
            assert_eq!(
                body["total"].as_i64(),
                Some(entries),
                "{} {t}: total and entries",
                c.name
            );
            get(&format!("{t}/_history"));
        }
        get("Patient?_revinclude=Observation:patient&_revinclude=Encounter:patient&_revinclude=RelatedPerson:patient&_revinclude=EpisodeOfCare:patient");
        get("Observation?_include=Observation:patient&_include=Observation:encounter");
        get("RelatedPerson?_include=RelatedPerson:patient");
        for who in [&child, &mother] {
            get(&format!("Observation?patient={who}"));
            get(&format!("Encounter?subject=Patient/{who}"));
            get(&format!("EpisodeOfCare?patient={who}"));
            get(&format!("RelatedPerson?patient={who}"));
        }
        // Everything of the people it may see.
        for who in [&child, &mother] {
            if !c.hidden.contains(who) {
                let r = get(&format!("Patient/{who}/$everything"));
                assert_eq!(r.status, 200, "{}", r.text);
            }
        }
        // $match with the demographics of both people.
        for family in ["Otieno", "Kamau"] {
            let r = call(
                &app,
                "POST",
                "Patient/$match",
                &c.token,
                Some(&json!({
                    "resourceType": "Parameters",
                    "parameter": [{ "name": "resource", "resource": person(&mto, family) }]
                })),
            );
            clean(c, "$match", &r);
        }
        // A batch of reads.
        let reads: Vec<Value> = records
            .iter()
            .map(|(k, v)| {
                let t = match *k {
                    "child" | "mother" => "Patient",
                    "e1" | "e2" => "Encounter",
                    "o1" | "o2" => "Observation",
                    "anc" => "EpisodeOfCare",
                    _ => "RelatedPerson",
                };
                json!({ "request": { "method": "GET", "url": format!("{t}/{v}") } })
            })
            .collect();
        let r = call(
            &app,
            "POST",
            "",
            &c.token,
            Some(&json!({ "resourceType": "Bundle", "type": "batch", "entry": reads })),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        // The batch answers 404 for a hidden record; only the id it was asked for may appear,
        // as the entry's own request does not come back.
        let body: Value = serde_json::from_str(&r.text).expect("json");
        for e in body["entry"].as_array().expect("entries") {
            let text = e.to_string();
            if e["response"]["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("404"))
            {
                continue;
            }
            for h in &c.hidden {
                assert!(!text.contains(h.as_str()), "{} batch: {text}", c.name);
            }
        }
        // Direct reads, vreads and histories of a hidden record answer as if it did not exist.
        for (k, v) in &records {
            if !c.hidden.contains(v) {
                continue;
            }
            let t = match *k {
                "child" | "mother" => "Patient",
                "e1" | "e2" => "Encounter",
                "o1" | "o2" => "Observation",
                "anc" => "EpisodeOfCare",
                _ => "RelatedPerson",
            };
            for suffix in ["", "/_history", "/_history/1"] {
                let hidden = call(&app, "GET", &format!("{t}/{v}{suffix}"), &c.token, None);
                let absent = call(
                    &app,
                    "GET",
                    &format!("{t}/Nx0000000A{suffix}"),
                    &c.token,
                    None,
                );
                assert_eq!(
                    hidden.status, 404,
                    "{} {t}/{v}{suffix}: {}",
                    c.name, hidden.text
                );
                assert_eq!(absent.status, 404);
                let shape = |r: &Resp, id: &str| r.text.replace(id, "ID");
                let a = serde_json::from_str::<Value>(&shape(&hidden, v)).expect("json");
                let b = serde_json::from_str::<Value>(&shape(&absent, "Nx0000000A")).expect("json");
                assert_eq!(
                    a["issue"][0]["code"], b["issue"][0]["code"],
                    "{} {t}{suffix}",
                    c.name
                );
                assert_eq!(
                    a["issue"][0]["diagnostics"], b["issue"][0]["diagnostics"],
                    "{} {t}{suffix}",
                    c.name
                );
            }
        }
    }

    // Writes: outside the capture scope 403 (or 404 where the record itself is hidden); outside
    // the programs 403; a reader may not write at all.
    let [kas_c, kus_c, reader_c] = &callers;
    call(
        &app,
        "POST",
        "Patient",
        &kas_c.token,
        Some(&person(&pwa, "Wanjiru")),
    )
    .outcome(403);
    // A reference to a hidden person is refused exactly as one to nobody.
    let hidden = call(
        &app,
        "POST",
        "Encounter",
        &kas_c.token,
        Some(&encounter(&mother, &mto, "11429006")),
    )
    .outcome(422);
    let nobody = call(
        &app,
        "POST",
        "Encounter",
        &kas_c.token,
        Some(&encounter("Nx0000000A", &mto, "11429006")),
    )
    .outcome(422);
    assert_eq!(
        hidden.replace(&mother, "ID"),
        nobody.replace("Nx0000000A", "ID")
    );
    let m = call(
        &app,
        "POST",
        "EpisodeOfCare",
        &kus_c.token,
        Some(&antenatal(&mother)),
    )
    .outcome(403);
    assert!(m.contains("program"), "{m}");
    let m = call(
        &app,
        "POST",
        "Encounter",
        &kus_c.token,
        Some(&encounter(&mother, &pwa, "424441002")),
    )
    .outcome(403);
    assert!(m.contains("program"), "{m}");
    call(
        &app,
        "POST",
        "Encounter",
        &kus_c.token,
        Some(&encounter(&mother, &pwa, "11429006")),
    )
    .expect(201);
    // Moving or breaking the glass on a program it has no access to: 403, before anything about
    // the person's enrollment in it is looked at.
    let bon = app.org("KD_KUS_BON");
    for op in ["$transfer", "$break-glass"] {
        let mut params = json!({ "resourceType": "Parameters", "parameter": [
            { "name": "program", "valueCode": "ANC" },
            { "name": "reason", "valueString": "test" },
        ]});
        if op == "$transfer" {
            params["parameter"].as_array_mut().expect("list").push(
                json!({ "name": "organization", "valueReference": { "reference": format!("Organization/{bon}") } }),
            );
        }
        let m = call(
            &app,
            "POST",
            &format!("Patient/{mother}/{op}"),
            &kus_c.token,
            Some(&params),
        )
        .outcome(403);
        assert!(m.contains("program"), "{op}: {m}");
    }
    call(
        &app,
        "POST",
        "Observation",
        &reader_c.token,
        Some(&weight(&child, &e1, 61.5, AT)),
    )
    .outcome(403);
    call(
        &app,
        "DELETE",
        &format!("Observation/{o1}"),
        &kus_c.token,
        None,
    )
    .outcome(404);
    // A transaction touching a hidden record writes nothing.
    let before = app.db.scalar("SELECT count(*) FROM event");
    let tx = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "resource": encounter(&mother, &pwa, "11429006"), "request": { "method": "POST", "url": "Encounter" } },
        { "resource": weight(&child, &e1, 61.5, AT), "request": { "method": "POST", "url": "Observation" } }
    ]});
    let r = call(&app, "POST", "", &kus_c.token, Some(&tx));
    assert!((400..500).contains(&r.status), "{}", r.text);
    // It names only the reference the caller sent, as it would name a reference to nobody.
    assert!(
        r.text
            .contains("is not a person in this registry (or not one you may see)"),
        "{}",
        r.text
    );
    assert_eq!(app.db.scalar("SELECT count(*) FROM event"), before);
    // None of them may read the trail.
    for c in &callers {
        call(&app, "GET", "AuditEvent", &c.token, None).outcome(403);
    }
}
