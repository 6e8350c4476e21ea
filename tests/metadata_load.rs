//! The DHIS2-shaped metadata fixtures load into the tracker tables, idempotently, and org units
//! are readable and searchable as Organization and Location.

mod support;

use support::{TestApp, TestDb};

#[test]
fn demo_metadata_lands_in_the_tracker_tables() {
    let db = TestDb::new();
    assert_eq!(db.scalar("SELECT count(*) FROM org_unit"), 7);
    assert_eq!(
        db.scalar("SELECT count(*) FROM org_unit WHERE level = 3"),
        4
    );
    assert_eq!(
        db.text("SELECT path FROM org_unit WHERE code = 'KD_KAS_MTO'"),
        vec!["/ZAyJ2yXBrGN/sC8mUMkyLsj/zJpd3rQ0uYs"]
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM tracked_entity_attribute"),
        15
    );
    assert_eq!(
        db.text("SELECT code FROM tracked_entity_attribute WHERE is_unique ORDER BY code"),
        vec!["NATIONAL_ID", "SOURCE_RECORD_ID", "SSN"]
    );
    assert_eq!(db.scalar("SELECT count(*) FROM option_value ov JOIN option_set os ON os.id = ov.option_set_id WHERE os.code = 'SEX'"), 4);
    assert_eq!(
        db.text("SELECT unit FROM data_element WHERE code = 'WEIGHT'"),
        vec!["kg"]
    );
    assert_eq!(
        db.text("SELECT code || ':' || access_level FROM program ORDER BY code"),
        vec!["ANC:PROTECTED", "OPD:OPEN", "VITAL:OPEN"]
    );
    assert_eq!(
        db.text("SELECT code || ':' || repeatable FROM program_stage ORDER BY code"),
        vec![
            "ANC_FIRST:false",
            "ANC_FOLLOWUP:true",
            "DEATH:false",
            "DELIVERY:true",
            "OPD_VISIT:true"
        ]
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM program_stage_data_element"),
        24
    );
    assert_eq!(
        db.text("SELECT code FROM relationship_type ORDER BY code"),
        vec!["CAREGIVER_CHILD", "MOTHER_CHILD"]
    );

    // Loading the same export again changes nothing.
    let mut conn = db.conn();
    let again = kiunga::store::metadata_import::import_dir(
        &mut conn,
        &support::repo().join("fixtures/metadata"),
    )
    .unwrap();
    assert_eq!(again.org_units, 7);
    assert_eq!(db.scalar("SELECT count(*) FROM org_unit"), 7);
    assert_eq!(db.scalar("SELECT count(*) FROM option_value"), 52);
}

#[test]
fn a_broken_export_names_the_file_and_the_reference() {
    let db = TestDb::new();
    let dir = std::env::temp_dir().join(format!("kiunga-md-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("broken.json"),
        r#"{"programStages": [{"id": "aaaaaaaaaaa", "name": "X", "program": {"id": "bbbbbbbbbbb"}}]}"#,
    )
    .unwrap();
    let err = kiunga::store::metadata_import::import_dir(&mut db.conn(), &dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.json") && err.contains("bbbbbbbbbbb"),
        "{err}"
    );
    std::fs::write(
        dir.join("broken.json"),
        "{\n  \"organisationUnits\": [\n    {\"id\": 5}\n  ]\n}",
    )
    .unwrap();
    let err = kiunga::store::metadata_import::import_dir(&mut db.conn(), &dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.json:3"), "{err}");
}

#[test]
fn org_units_are_organizations_and_locations() {
    let app = TestApp::start();
    let mto = app.org("KD_KAS_MTO");
    let kas = app.org("KD_KAS");
    let o = app.get(&format!("Organization/{mto}")).expect(200);
    assert_eq!(o["name"], "Mto Health Centre");
    assert_eq!(o["partOf"]["reference"], format!("Organization/{kas}"));
    assert_eq!(o["identifier"][0]["value"], "KD_KAS_MTO");
    let l = app.get(&format!("Location/{mto}")).expect(200);
    assert_eq!(l["resourceType"], "Location");
    assert_eq!(l["partOf"]["reference"], format!("Location/{kas}"));

    let all = app.get("Organization?_count=100").expect(200);
    assert_eq!(all["total"], 7);
    let by_parent = app
        .get(&format!("Organization?partof=Organization/{kas}"))
        .expect(200);
    let names: Vec<&str> = by_parent["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(app.get("Organization?name=mto").expect(200)["total"], 1);
    assert_eq!(
        app.get("Organization?name:contains=district").expect(200)["total"],
        3
    );
    assert_eq!(
        app.get("Organization?name:exact=mto health centre")
            .expect(200)["total"],
        0
    );
    assert_eq!(
        app.get("Organization?identifier=urn:kiunga:org-unit-code|KD_KUS")
            .expect(200)["total"],
        1
    );
    assert_eq!(
        app.get(&format!("Organization?_id={mto},{kas}"))
            .expect(200)["total"],
        2
    );
    let paged = app.get("Organization?_count=3").expect(200);
    assert_eq!(paged["entry"].as_array().unwrap().len(), 3);
    let next = paged["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get(&next).expect(200)["entry"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    app.get("Organization?colour=blue").outcome(400);
    app.get("Organization/NoSuchOrgUn").outcome(404);
}
