//! Search: every parameter and prefix of Patient, Encounter and Observation, paging through more
//! than three pages, _include/_revinclude without duplicates, _sort, _summary, _elements.

mod support;

use serde_json::{json, Value};
use support::{unique, TestApp, NID};

const LOINC: &str = "http://loinc.org";

fn ids(bundle: &Value, resource_type: &str) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["resource"]["resourceType"] == resource_type)
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn person(
    app: &TestApp,
    org: &str,
    family: &str,
    given: &str,
    gender: &str,
    birth: &str,
    phone: &str,
) -> String {
    let nid = unique("NID");
    let p = json!({
        "resourceType": "Patient",
        "identifier": [{ "system": NID, "value": nid }],
        "name": [{ "family": family, "given": [given] }],
        "gender": gender,
        "birthDate": birth,
        "telecom": [{ "system": "phone", "value": phone }],
        "address": [{ "city": "Kilima" }],
        "managingOrganization": { "reference": format!("Organization/{org}") },
    });
    app.post("Patient", &p).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn patient_search_parameters() {
    let app = TestApp::start();
    let mto = app.org("KD_KAS_MTO");
    let bon = app.org("KD_KUS_BON");
    let a = person(
        &app,
        &mto,
        "Nyambúra",
        "Ada",
        "female",
        "1980-01-01",
        "+254 700 000001",
    );
    let b = person(
        &app,
        &mto,
        "Nyambura",
        "Bola",
        "male",
        "1995-06-15",
        "0700 000 002",
    );
    let c = person(&app, &bon, "Otieno", "Chi", "female", "2010", "0700000003");
    let q = |query: &str| {
        let mut got = ids(&app.get(&format!("Patient?{query}")).expect(200), "Patient");
        got.sort();
        got
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<_>>()
    };
    // string: prefix, case- and accent-insensitive; :exact; :contains; name covers given and family
    assert_eq!(q("family=nyamb"), sorted(vec![&a, &b]));
    assert_eq!(q("family=NYAMBURA"), sorted(vec![&a, &b]));
    assert_eq!(q("family:exact=Nyambúra"), vec![a.clone()]);
    assert_eq!(q("family:exact=nyambura"), Vec::<String>::new());
    assert_eq!(q("family:contains=amb"), sorted(vec![&a, &b]));
    assert_eq!(q("given=bo"), vec![b.clone()]);
    assert_eq!(q("name=chi"), vec![c.clone()]);
    assert_eq!(q("name=otie"), vec![c.clone()]);
    // token
    assert_eq!(q("gender=female"), sorted(vec![&a, &c]));
    assert_eq!(q("gender=male,female"), sorted(vec![&a, &b, &c]));
    let nid_b = app.get(&format!("Patient/{b}")).expect(200)["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(q(&format!("identifier={NID}|{nid_b}")), vec![b.clone()]);
    assert_eq!(q(&format!("identifier={nid_b}")), vec![b.clone()]);
    assert_eq!(
        q(&format!("identifier=http://other.example/ids|{nid_b}")),
        Vec::<String>::new()
    );
    assert_eq!(q(&format!("_id={a},{c}")), sorted(vec![&a, &c]));
    assert_eq!(q("phone=0700000002"), vec![b.clone()]);
    assert_eq!(q("phone=254700000001"), vec![a.clone()]);
    assert_eq!(q("telecom=phone|0700000002"), vec![b.clone()]);
    // PDQm's address parameters; the demo mapping holds the city (village) only.
    let everyone = q("address=Kilima");
    assert_eq!(everyone.len(), 3, "every test person lives in Kilima");
    assert_eq!(q("address-city=kil"), everyone);
    assert_eq!(q("address-city:exact=kilima"), Vec::<String>::new());
    assert!(app
        .get("Patient?address-country=Kenya")
        .outcome(400)
        .contains("maps no country"));
    // A telecom value without digits (an e-mail address) compares whole, not as "no digits".
    assert_eq!(q("telecom=someone@example.org"), Vec::<String>::new());
    assert!(app
        .get("Patient?phone=none")
        .outcome(400)
        .contains("has no digits"));
    assert_eq!(
        q(&format!("organization=Organization/{bon}")),
        vec![c.clone()]
    );
    assert_eq!(q("active=true").len(), 3);
    // date prefixes, including partial dates on both sides
    assert_eq!(q("birthdate=1995"), vec![b.clone()]);
    assert_eq!(q("birthdate=1995-06"), vec![b.clone()]);
    assert_eq!(q("birthdate=eq1995-06-15"), vec![b.clone()]);
    assert_eq!(q("birthdate=ne1995-06-15"), sorted(vec![&a, &c]));
    assert_eq!(q("birthdate=lt1995-06-15"), vec![a.clone()]);
    assert_eq!(q("birthdate=le1995-06-15"), sorted(vec![&a, &b]));
    assert_eq!(q("birthdate=gt1995-06-15"), vec![c.clone()]);
    assert_eq!(q("birthdate=ge1995-01-01"), sorted(vec![&b, &c]));
    assert_eq!(q("birthdate=sa2000"), vec![c.clone()]);
    assert_eq!(q("birthdate=eb1990"), vec![a.clone()]);
    assert_eq!(
        q("birthdate=2010-07-01"),
        Vec::<String>::new(),
        "a year-only birth date is not equal to one day"
    );
    assert_eq!(q("birthdate=ap2010-07-01"), vec![c.clone()]);
    assert_eq!(q("birthdate=ge1990&birthdate=lt2000"), vec![b.clone()]);
    assert_eq!(q("_lastUpdated=gt2000-01-01").len(), 3);
    assert_eq!(q("_lastUpdated=lt2000-01-01").len(), 0);
    assert_eq!(
        q("organization=KD_KUS_BON"),
        vec![c.clone()],
        "org units by code too"
    );
    // bad values, unsupported modifiers and unknown parameters
    app.get("Patient?gender:not=female").outcome(400);
    app.get("Patient?birthdate=yesterday").outcome(400);
    app.get("Patient?shoe-size=42").outcome(400);
    let r = app.send(
        "GET",
        "Patient?shoe-size=42&family=otieno",
        &[("Prefer", "handling=lenient")],
        None,
    );
    assert_eq!(ids(&r.expect(200), "Patient"), vec![c.clone()]);
}

#[test]
fn sort_summary_elements_and_paging() {
    let app = TestApp::start();
    let org = app.org("KD_KAS_MTO");
    let fam = unique("Pager");
    let mut made = Vec::new();
    for i in 0..25 {
        made.push(person(
            &app,
            &org,
            &fam,
            &format!("G{i:02}"),
            "female",
            &format!("{}-01-01", 1950 + i),
            &format!("07000{i:05}"),
        ));
    }
    let b = app
        .get(&format!("Patient?family={fam}&_count=7&_sort=-birthdate"))
        .expect(200);
    assert_eq!(b["total"], 25);
    let mut seen = Vec::new();
    let mut page = b;
    let mut pages = 0;
    loop {
        pages += 1;
        seen.extend(ids(&page, "Patient"));
        let next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
        match next {
            Some(url) => {
                let prev = page.clone();
                page = app.get(&url).expect(200);
                assert!(
                    page["link"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|l| l["relation"] == "previous"),
                    "{prev}"
                );
            }
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 4);
    let mut want = made.clone();
    want.reverse();
    assert_eq!(
        seen, want,
        "sorted by birth date, newest first, across pages, no repeats"
    );
    let count = app
        .get(&format!("Patient?family={fam}&_summary=count"))
        .expect(200);
    assert_eq!(count["total"], 25);
    assert!(count.get("entry").is_none());
    let el = app
        .get(&format!(
            "Patient?family={fam}&_elements=birthDate&_count=1&_sort=birthdate"
        ))
        .expect(200);
    let r = &el["entry"][0]["resource"];
    assert_eq!(r["birthDate"], "1950-01-01");
    assert!(r.get("name").is_none());
    assert!(
        r["meta"]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["code"] == "SUBSETTED"),
        "{r}"
    );
    let sorted = app
        .get(&format!("Patient?family={fam}&_sort=given&_count=3"))
        .expect(200);
    assert_eq!(ids(&sorted, "Patient"), made[..3].to_vec());
}

fn visit(app: &TestApp, pid: &str, org: &str, start: &str, status: &str) -> String {
    let e = json!({
        "resourceType": "Encounter", "status": status,
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
        "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "11429006" }] }],
        "subject": { "reference": format!("Patient/{pid}") },
        "period": { "start": start },
        "serviceProvider": { "reference": format!("Organization/{org}") },
    });
    app.post("Encounter", &e).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn obs(
    app: &TestApp,
    pid: &str,
    eid: &str,
    code: &str,
    value: f64,
    unit: &str,
    when: &str,
) -> String {
    let o = json!({
        "resourceType": "Observation", "status": "final",
        "code": { "coding": [{ "system": LOINC, "code": code }] },
        "subject": { "reference": format!("Patient/{pid}") },
        "encounter": { "reference": format!("Encounter/{eid}") },
        "effectiveDateTime": when,
        "valueQuantity": { "value": value, "system": "http://unitsofmeasure.org", "code": unit },
    });
    app.post("Observation", &o).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn encounter_and_observation_search_parameters_and_includes() {
    let app = TestApp::start();
    let mto = app.org("KD_KAS_MTO");
    let pwa = app.org("KD_KUS_PWA");
    let p = person(
        &app,
        &mto,
        "Kamau",
        "Joy",
        "female",
        "1990-04-12",
        "0711000001",
    );
    let other = person(
        &app,
        &mto,
        "Kamau",
        "Tom",
        "male",
        "1991-04-12",
        "0711000002",
    );
    let e1 = visit(&app, &p, &mto, "2026-03-02T09:30:00Z", "finished");
    let e2 = visit(&app, &p, &pwa, "2026-04-02T09:30:00Z", "in-progress");
    let e3 = visit(&app, &other, &mto, "2026-03-02T11:00:00Z", "finished");
    let w1 = obs(&app, &p, &e1, "29463-7", 72.5, "kg", "2026-03-02T09:40:00Z");
    let w2 = obs(&app, &p, &e2, "29463-7", 70.0, "kg", "2026-04-02T09:40:00Z");
    let h1 = obs(&app, &p, &e1, "8302-2", 170.0, "cm", "2026-03-02T09:41:00Z");
    let w3 = obs(
        &app,
        &other,
        &e3,
        "29463-7",
        90.0,
        "kg",
        "2026-03-02T11:10:00Z",
    );

    let enc = |q: &str| {
        let mut v = ids(&app.get(&format!("Encounter?{q}")).expect(200), "Encounter");
        v.sort();
        v
    };
    let mut both = vec![e1.clone(), e2.clone()];
    both.sort();
    assert_eq!(enc(&format!("patient={p}")), both);
    assert_eq!(enc(&format!("subject=Patient/{p}")), both);
    assert_eq!(enc(&format!("patient={p}&date=2026-03")), vec![e1.clone()]);
    assert_eq!(
        enc(&format!("patient={p}&date=ge2026-04-01")),
        vec![e2.clone()]
    );
    assert_eq!(
        enc(&format!("patient={p}&status=in-progress")),
        vec![e2.clone()]
    );
    assert_eq!(
        enc(&format!("patient={p}&service-provider=Organization/{pwa}")),
        vec![e2.clone()]
    );
    assert_eq!(
        enc(&format!("patient={p}&type=http://snomed.info/sct|11429006")),
        both
    );
    assert_eq!(
        enc(&format!(
            "patient={p}&type=http://snomed.info/sct|424441002"
        )),
        Vec::<String>::new()
    );
    assert_eq!(enc(&format!("patient={p}&class=AMB")), both);
    assert_eq!(enc(&format!("_id={e3}")), vec![e3.clone()]);

    let ob = |q: &str| {
        let mut v = ids(
            &app.get(&format!("Observation?{q}")).expect(200),
            "Observation",
        );
        v.sort();
        v
    };
    let mut ws = vec![w1.clone(), w2.clone()];
    ws.sort();
    assert_eq!(ob(&format!("patient={p}&code={LOINC}|29463-7")), ws);
    assert_eq!(ob(&format!("patient={p}&code=8302-2")), vec![h1.clone()]);
    assert_eq!(
        ob(&format!("encounter=Encounter/{e1}&code=29463-7")),
        vec![w1.clone()]
    );
    assert_eq!(
        ob(&format!("patient={p}&date=2026-04-02")),
        vec![w2.clone()]
    );
    assert_eq!(ob(&format!("patient={p}&category=vital-signs")).len(), 3);
    assert_eq!(ob("value-quantity=gt80&code=29463-7"), vec![w3.clone()]);
    assert_eq!(
        ob("value-quantity=gt80").len(),
        2,
        "without a code, 170 cm is above 80 too"
    );
    assert_eq!(
        ob(&format!("patient={p}&value-quantity=72.5")),
        vec![w1.clone()]
    );
    assert_eq!(
        ob(&format!("patient={p}&value-quantity=lt71&code=29463-7")),
        vec![w2.clone()]
    );
    assert_eq!(
        ob(&format!(
            "patient={p}&value-quantity=ge70&value-quantity=le72.5&code=29463-7"
        )),
        ws
    );
    assert_eq!(
        ob(&format!("patient={p}&value-quantity=ne70&code=29463-7")),
        vec![w1.clone()]
    );
    assert_eq!(
        ob(&format!("patient={p}&value-quantity=ap78&code=29463-7")),
        vec![w1.clone()]
    );
    // a quantity in another unit is compared in the data element's unit
    assert_eq!(
        ob(&format!(
            "patient={p}&value-quantity=gt71000|http://unitsofmeasure.org|g"
        )),
        vec![w1.clone()]
    );

    // _include: the Patient once, however many Observations point at it
    let b = app
        .get(&format!(
            "Observation?patient={p}&_include=Observation:subject&_include=Observation:encounter"
        ))
        .expect(200);
    let included: Vec<&Value> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(
        included
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Patient")
            .count(),
        1
    );
    assert_eq!(
        included
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Encounter")
            .count(),
        2
    );
    assert_eq!(b["total"], 3, "total counts matches only");
    let b = app
        .get(&format!("Encounter?patient={p}&_include=Encounter:subject"))
        .expect(200);
    assert_eq!(ids(&b, "Patient"), vec![p.clone()]);
    // _revinclude
    let b = app
        .get(&format!(
            "Patient?_id={p}&_revinclude=Observation:subject&_revinclude=Encounter:subject"
        ))
        .expect(200);
    assert_eq!(ids(&b, "Observation").len(), 3);
    assert_eq!(ids(&b, "Encounter").len(), 2);
    let b = app
        .get(&format!(
            "Encounter?_id={e1}&_revinclude=Observation:encounter"
        ))
        .expect(200);
    assert_eq!(ids(&b, "Observation").len(), 2);
    app.get(&format!("Patient?_id={p}&_include=Patient:link"))
        .outcome(400);
    // sorting and POST _search
    let b = app
        .get(&format!("Observation?patient={p}&code=29463-7&_sort=-date"))
        .expect(200);
    assert_eq!(ids(&b, "Observation"), vec![w2.clone(), w1.clone()]);
    let r = app.send(
        "POST",
        "Observation/_search",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(format!("patient={p}&code=8302-2").as_bytes()),
    );
    assert_eq!(ids(&r.expect(200), "Observation"), vec![h1.clone()]);
    // $everything
    let all = app.get(&format!("Patient/{p}/$everything")).expect(200);
    assert_eq!(ids(&all, "Patient"), vec![p.clone()]);
    assert_eq!(ids(&all, "Encounter").len(), 2);
    assert_eq!(ids(&all, "Observation").len(), 3);
    // deleted records leave searches
    app.delete(&format!("Observation/{h1}")).expect(200);
    assert_eq!(
        ob(&format!("patient={p}&code=8302-2")),
        Vec::<String>::new()
    );
}
