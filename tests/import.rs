//! Bulk import through the same translation path as the API: the shared Synthea sample with exact
//! counts, re-import idempotence, NDJSON, and a unit rolled back as a whole when interrupted.

mod support;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use kiunga::app::AppState;
use kiunga::import::{self, Options, Report};
use serde_json::json;
use support::{test_config, TestDb};

fn synthea() -> Option<PathBuf> {
    let dir = support::repo().join("../shared/data/synthea");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: ../shared/data/synthea is not present (it comes with the shared/ folder beside the repo)");
        None
    }
}

fn run(state: &AppState, paths: &[PathBuf], default_org: &str) -> Report {
    let opts = Options {
        default_org_unit: state.metadata.org_unit(default_org).map(|o| o.id),
        interrupted: Arc::new(AtomicBool::new(false)),
        progress: Box::new(|_, _| {}),
    };
    import::run(state, paths, opts).expect("import")
}

#[test]
fn the_synthea_sample_imports_with_exact_counts_and_reimports_without_duplicates() {
    let Some(dir) = synthea() else { return };
    let db = TestDb::new();
    let state = AppState::start(test_config(&db)).expect("start");
    let r = run(&state, std::slice::from_ref(&dir), "KD_KAS_MTO");
    println!("{}", r.summary(20));
    assert_eq!(r.read, 4593);
    assert_eq!(r.stored["Patient"].created, 20);
    assert_eq!(r.stored["Encounter"].created, 310);
    assert_eq!(
        r.stored["Observation"].created, 823,
        "weight, height, temperature, haemoglobin and both blood-pressure components"
    );
    // One second ANC first visit, and three causes of death coded in SNOMED CT: the registry keeps
    // causes of death in ICD-10 and no crosswalk of terminology.toml carries these codes there, so
    // they are reported, not stored under a code nobody chose.
    assert_eq!(r.rejected.len(), 4, "{:?}", r.rejected);
    assert_eq!(
        r.rejected
            .iter()
            .filter(|x| x.reason.contains("ANC first visit"))
            .count(),
        1,
        "{:?}",
        r.rejected
    );
    assert_eq!(
        r.rejected
            .iter()
            .filter(|x| x.resource_type == "Observation"
                && x.reason.contains("Underlying cause of death (ICD-10) takes a http://hl7.org/fhir/sid/icd-10 code"))
            .count(),
        3,
        "{:?}",
        r.rejected
    );
    assert_eq!(r.skipped["Claim: not stored by this gateway"], 409);
    assert_eq!(
        r.skipped["Organization: used to resolve org units, not stored"],
        46
    );
    assert_eq!(
        r.skipped
            .iter()
            .filter(|(k, _)| k.starts_with("Encounter: type not mapped"))
            .map(|(_, n)| n)
            .sum::<usize>(),
        12
    );
    assert_eq!(db.scalar("SELECT count(*) FROM tracked_entity"), 20);
    assert_eq!(db.scalar("SELECT count(*) FROM event"), 310);
    assert_eq!(db.scalar("SELECT count(*) FROM event_data_value"), 823);

    // Every person can be found again by identifier, name and birth date.
    let people = db.text("SELECT uid FROM tracked_entity ORDER BY id");
    let mut conn = db.conn();
    let ctx = kiunga::context::RequestContext::system();
    let mappings = state.mappings();
    let env = kiunga::tracker::Env {
        md: &state.metadata,
        mappings: &mappings,
        strict: false,
        default_org_unit: None,
    };
    kiunga::store::Scoped::transaction(&mut conn, &ctx, |s| {
    for uid in &people {
        let p = kiunga::rest::read(s, &env, "Patient", uid)
            .expect("read")
            .resource;
        let ident = p["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["system"] == "https://github.com/synthetichealth/synthea")
            .expect("record id");
        let family = p["name"][0]["family"].as_str().unwrap();
        let birth = p["birthDate"].as_str().unwrap();
        let q = format!("identifier=https://github.com/synthetichealth/synthea|{}&family={family}&birthdate={birth}", ident["value"].as_str().unwrap());
        assert_eq!(
            kiunga::rest::search::matching_ids(s, &env, "Patient", &q, 5).unwrap(),
            vec![uid.clone()],
            "{q}"
        );
    }
        Ok(())
    })
    .expect("read back");

    // Re-running the same import stores nothing twice.
    let again = run(&state, &[dir], "KD_KAS_MTO");
    assert_eq!(again.stored["Patient"].updated, 20);
    assert_eq!(again.stored["Patient"].created, 0);
    assert_eq!(again.stored["Encounter"].created, 0);
    assert_eq!(again.stored["Observation"].created, 0);
    assert_eq!(db.scalar("SELECT count(*) FROM tracked_entity"), 20);
    assert_eq!(db.scalar("SELECT count(*) FROM event"), 310);
    assert_eq!(db.scalar("SELECT count(*) FROM event_data_value"), 823);
}

#[test]
fn ndjson_lines_are_units_and_bad_lines_are_reported() {
    let db = TestDb::new();
    let state = AppState::start(test_config(&db)).expect("start");
    let dir = std::env::temp_dir().join(format!("kiunga-ndjson-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    let org = state.metadata.org_unit("KD_KUS_BON").unwrap().uid.clone();
    let p = |nid: &str, birth: &str| {
        json!({ "resourceType": "Patient", "identifier": [{ "system": support::NID, "value": nid }], "name": [{ "family": "Line" }], "birthDate": birth,
                "managingOrganization": { "reference": format!("Organization/{org}") } })
        .to_string()
    };
    let lines = [
        p("ND-1", "1990"),
        p("ND-2", "1990-02-30"),
        "{not json".to_string(),
        p("ND-3", "2001-01-01"),
        json!({ "resourceType": "Claim" }).to_string(),
    ];
    std::fs::write(dir.join("people.ndjson"), lines.join("\n")).unwrap();
    let r = run(&state, std::slice::from_ref(&dir), "KD_KAS_MTO");
    assert_eq!(r.read, 5);
    assert_eq!(r.stored["Patient"].created, 2);
    assert_eq!(r.rejected.len(), 3, "{:?}", r.rejected);
    assert!(
        r.rejected
            .iter()
            .any(|x| x.origin.ends_with("people.ndjson:2") && x.reason.contains("1990-02-30")),
        "{:?}",
        r.rejected
    );
    let again = run(&state, std::slice::from_ref(&dir), "KD_KAS_MTO");
    assert_eq!(again.stored["Patient"].updated, 2);
    assert_eq!(db.scalar("SELECT count(*) FROM tracked_entity"), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_import_leaves_no_half_written_patient() {
    let Some(dir) = synthea() else { return };
    let db = TestDb::new();
    let state = AppState::start(test_config(&db)).expect("start");
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    // Interrupt while the third file is in progress: its transaction is rolled back.
    let progress = Box::new(move |done: u64, _total: u64| {
        if done == 2 {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let opts = Options {
        default_org_unit: state.metadata.org_unit("KD_KAS_MTO").map(|o| o.id),
        interrupted,
        progress,
    };
    let r = import::run(&state, &[dir], opts).unwrap();
    assert!(r.interrupted);
    assert_eq!(db.scalar("SELECT count(*) FROM tracked_entity"), 2);
    // Every stored person is complete: their encounters are all there.
    assert_eq!(
        db.scalar("SELECT count(*) FROM event"),
        r.stored["Encounter"].created as i64
    );
}

#[test]
fn export_organisations_resolve_to_org_units_by_mapping_else_the_default() {
    let db = TestDb::new();
    let maps = std::env::temp_dir().join(format!("kiunga-orgmap-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&maps).unwrap();
    for f in std::fs::read_dir(support::repo().join("mappings")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, maps.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(maps.join("organizations.toml"), "[[organization]]\nname = \"Pwani General Hospital\"\norg_unit = \"KD_KUS_PWA\"\n\n[[organization]]\nidentifier = \"http://emr.example/org|ORG-7\"\norg_unit = \"KD_KUS_BON\"\n").unwrap();
    let mut config = test_config(&db);
    config.mappings_dir = maps.clone();
    let state = AppState::start(config).expect("start");
    let enc = |pu: &str, org: &str| {
        json!({ "resourceType": "Encounter", "status": "finished",
                "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
                "subject": { "reference": pu }, "period": { "start": "2025-01-01T10:00:00Z" },
                "serviceProvider": { "reference": org } })
    };
    let bundle = json!({ "resourceType": "Bundle", "type": "collection", "entry": [
        { "fullUrl": "urn:uuid:org-a", "resource": { "resourceType": "Organization", "name": "Pwani General Hospital" } },
        { "fullUrl": "urn:uuid:org-b", "resource": { "resourceType": "Organization", "name": "Elsewhere", "identifier": [{ "system": "http://emr.example/org", "value": "ORG-7" }] } },
        { "fullUrl": "urn:uuid:org-c", "resource": { "resourceType": "Organization", "name": "Unknown clinic" } },
        { "fullUrl": "urn:uuid:pat", "resource": { "resourceType": "Patient", "identifier": [{ "system": support::NID, "value": "ORG-TEST-1" }], "name": [{ "family": "Org" }] } },
        { "fullUrl": "urn:uuid:e1", "resource": enc("urn:uuid:pat", "urn:uuid:org-a") },
        { "fullUrl": "urn:uuid:e2", "resource": enc("urn:uuid:pat", "urn:uuid:org-b") },
        { "fullUrl": "urn:uuid:e3", "resource": enc("urn:uuid:pat", "urn:uuid:org-c") },
    ]});
    let file = maps.join("export.json");
    std::fs::write(&file, bundle.to_string()).unwrap();
    let r = run(&state, std::slice::from_ref(&file), "KD_KAS_MTO");
    assert_eq!(r.stored["Encounter"].created, 3, "{}", r.summary(10));
    assert_eq!(
        r.skipped["Organization: used to resolve org units, not stored"],
        3
    );
    assert_eq!(
        db.text(
            "SELECT ou.code FROM event e JOIN org_unit ou ON ou.id = e.org_unit_id ORDER BY e.id"
        ),
        vec!["KD_KUS_PWA", "KD_KUS_BON", "KD_KAS_MTO"]
    );
    assert_eq!(
        db.text("SELECT ou.code FROM tracked_entity te JOIN org_unit ou ON ou.id = te.org_unit_id"),
        vec!["KD_KAS_MTO"],
        "no managingOrganization: the default"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM org_unit"),
        7,
        "export organisations are never stored as org units"
    );
    let _ = std::fs::remove_dir_all(&maps);
}

#[test]
fn ndjson_records_without_ids_are_keyed_by_line_and_reimport_updates_them() {
    let db = TestDb::new();
    let state = AppState::start(test_config(&db)).expect("start");
    let dir =
        std::env::temp_dir().join(format!("kiunga-ndjson-ids-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    let who = format!("Patient?identifier={}|ND-OBS-1", support::NID);
    let weight = |kg: f64, day: &str| {
        json!({ "resourceType": "Observation", "status": "final", "code": { "coding": [{ "system": "http://loinc.org", "code": "29463-7" }] },
                "subject": { "reference": who }, "effectiveDateTime": day,
                "valueQuantity": { "value": kg, "system": "http://unitsofmeasure.org", "code": "kg" } })
        .to_string()
    };
    let lines = [
        json!({ "resourceType": "Patient", "identifier": [{ "system": support::NID, "value": "ND-OBS-1" }], "name": [{ "family": "Lines" }] }).to_string(),
        weight(60.0, "2026-01-01"),
        weight(61.0, "2026-02-01"),
    ];
    std::fs::write(dir.join("obs.ndjson"), lines.join("\n")).unwrap();
    let r = run(&state, std::slice::from_ref(&dir), "KD_KAS_MTO");
    assert_eq!(r.stored["Observation"].created, 2, "{}", r.summary(5));
    let again = run(&state, std::slice::from_ref(&dir), "KD_KAS_MTO");
    assert_eq!(
        again.stored["Observation"].updated,
        2,
        "{}",
        again.summary(5)
    );
    assert_eq!(db.scalar("SELECT count(*) FROM event_data_value"), 2);
    // A file named on the command line that is not JSON/NDJSON is a mistake, not silence.
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    let opts = Options {
        default_org_unit: None,
        interrupted: Arc::new(AtomicBool::new(false)),
        progress: Box::new(|_, _| {}),
    };
    assert!(import::run(&state, &[dir.join("notes.txt")], opts).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
