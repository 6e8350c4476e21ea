//! Mapping files reload while the gateway serves: a good set replaces the old one at once, a broken
//! set is refused with its problems and the old one stays; no request fails or sees a mix.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};
use support::{mappings_copy, TestApp};

fn displays(e: &Value) -> (String, String) {
    (
        e["type"][0]["coding"][0]["display"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        e["class"]["display"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn reload_under_concurrent_requests() {
    let dir = mappings_copy();
    let app = TestApp::start_with(|c| {
        c.mappings_dir = dir.clone();
        c.http_workers = 2;
    });
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
    let v1_text = std::fs::read_to_string(dir.join("encounter.toml")).unwrap();
    let v2_text = v1_text
        .replace(
            "display = \"Consultation\"",
            "display = \"Consultation v2\"",
        )
        .replace("display = \"ambulatory\"", "display = \"ambulatory v2\"");
    let old = ("Consultation".to_string(), "ambulatory".to_string());
    let new = ("Consultation v2".to_string(), "ambulatory v2".to_string());
    let v1 = app.state.mappings().version.clone();

    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let r = app.get(&format!("Encounter/{eid}"));
                        assert_eq!(r.status, 200, "a request failed during reload: {}", r.text);
                        let d = displays(&r.json());
                        assert!(
                            d == old || d == new,
                            "a response mixed two mapping sets: {d:?}"
                        );
                        seen.push(d);
                    }
                    seen
                })
            })
            .collect();
        for round in 0..10 {
            std::fs::write(dir.join("encounter.toml"), &v2_text).unwrap();
            let v2 = app.state.reload_mappings().expect("good set");
            assert_ne!(v2, v1);
            // A broken set is refused and the good one stays.
            std::fs::write(
                dir.join("encounter.toml"),
                v2_text.replace("stage = \"OPD_VISIT\"", "stage = \"OPD_VISITT\""),
            )
            .unwrap();
            let problems = app
                .state
                .reload_mappings()
                .expect_err("broken set")
                .to_string();
            assert!(
                problems.contains("encounter.toml:")
                    && problems.contains("unknown program stage `OPD_VISITT`"),
                "{problems}"
            );
            assert_eq!(app.state.mappings().version, v2, "round {round}");
            let cs = app.get("metadata").expect(200);
            assert_eq!(cs["extension"][0]["valueString"], v2.as_str());
            std::fs::write(dir.join("encounter.toml"), &v1_text).unwrap();
            assert_eq!(app.state.reload_mappings().expect("good set"), v1);
        }
        stop.store(true, Ordering::SeqCst);
        readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(seen.len() > 10, "the readers ran ({} requests)", seen.len());
    let _ = std::fs::remove_dir_all(&dir);
}
