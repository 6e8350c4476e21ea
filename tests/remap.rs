//! Re-mapping: after a map edit, stored originals are re-translated; a dry run reports what
//! would change and writes nothing, `apply` changes the stored values in one transaction.

mod support;

use serde_json::json;
use support::{mappings_copy, system_unit, TestApp};

fn remap(app: &TestApp, apply: bool) -> Vec<kiunga::rest::remap::Change> {
    system_unit(app, |s, env| kiunga::rest::remap::remap(s, env, apply))
}

#[test]
fn a_crosswalk_edit_changes_stored_diagnoses_only_when_applied() {
    let dir = mappings_copy();
    let app = TestApp::start_with(|c| c.mappings_dir = dir.clone());
    let org = app.org("KD_KAS_MTO");
    let pid = app.new_patient(&org);
    let dx = json!({
        "resourceType": "Observation", "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "29308-4" }] },
        "subject": { "reference": format!("Patient/{pid}") },
        "effectiveDateTime": "2026-03-02T09:45:00Z",
        "valueCodeableConcept": { "coding": [{ "system": "http://hl7.org/fhir/sid/icd-10", "code": "I10" }] },
    });
    let oid = app.post("Observation", &dx).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        remap(&app, false).is_empty(),
        "nothing changes under the same mappings"
    );

    // The map is corrected: ICD-10 I10 now belongs to the type 2 diabetes row (a deliberate edit).
    let csv = std::fs::read_to_string(dir.join("diagnoses.csv")).unwrap();
    let edited = csv
        .replacen(
            "BA00,Essential hypertension,I10,",
            "BA00,Essential hypertension,,",
            1,
        )
        .replacen(
            "5A11,Type 2 diabetes mellitus,E11,",
            "5A11,Type 2 diabetes mellitus,I10,",
            1,
        );
    assert_ne!(edited, csv);
    std::fs::write(dir.join("diagnoses.csv"), edited).unwrap();
    app.state.reload_mappings().expect("edited set is valid");

    let planned = remap(&app, false);
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].resource, format!("Observation/{oid}"));
    assert_eq!(
        planned[0].details,
        vec!["value: `BA00` → `5A11`".to_string()]
    );
    assert_eq!(
        app.db.text(&format!(
            "SELECT value FROM event_data_value WHERE uid = '{oid}'"
        )),
        vec!["BA00"],
        "a dry run writes nothing"
    );

    let applied = remap(&app, true);
    assert_eq!(applied.len(), 1);
    assert_eq!(
        app.db.text(&format!(
            "SELECT value FROM event_data_value WHERE uid = '{oid}'"
        )),
        vec!["5A11"]
    );
    let o = app.get(&format!("Observation/{oid}")).expect(200);
    assert_eq!(o["meta"]["versionId"], "2");
    assert_eq!(o["valueCodeableConcept"]["coding"][0]["code"], "5A11");
    assert!(
        remap(&app, false).is_empty(),
        "applied: nothing left to change"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
