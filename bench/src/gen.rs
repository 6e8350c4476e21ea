//! Input the write scenarios send: people, visits and vital signs, as FHIR JSON for the gateway and
//! as plain values for the raw baseline, generated from (run tag, client, sequence) so that every
//! national ID is new and both sides write the same logical records.

use serde_json::{json, Value};

use crate::population::{FAMILY, GIVEN};

pub struct Person {
    pub national_id: String,
    pub given: &'static str,
    pub family: &'static str,
    pub female: bool,
    pub birth_date: String,
    pub phone: String,
    pub village: String,
    /// Index into the facilities of the demo metadata.
    pub facility: usize,
}

/// Vital signs of one visit: (LOINC code, display, value, UCUM unit).
pub const VITALS: [(&str, &str, f64, &str); 5] = [
    ("29463-7", "Body weight", 61.5, "kg"),
    ("8302-2", "Body height", 164.0, "cm"),
    ("8310-5", "Body temperature", 37.1, "Cel"),
    ("8480-6", "Systolic blood pressure", 121.0, "mm[Hg]"),
    ("8462-4", "Diastolic blood pressure", 79.0, "mm[Hg]"),
];

pub fn person(tag: &str, client: usize, seq: u64, facilities: usize) -> Person {
    let n = seq as usize * 31 + client * 7;
    Person {
        national_id: format!("{tag}{client:02}{seq:010}"),
        given: GIVEN[n % GIVEN.len()],
        family: FAMILY[(n / 3) % FAMILY.len()],
        female: seq.is_multiple_of(2),
        birth_date: format!("{}-{:02}-{:02}", 1950 + n % 60, 1 + n % 12, 1 + n % 28),
        phone: format!("+2557{:08}", n % 100_000_000),
        village: format!("Village {}", n % 500),
        facility: n % facilities.max(1),
    }
}

pub fn patient(p: &Person, facility_uid: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": "http://example.org/national-id", "value": p.national_id }],
        "name": [{ "family": p.family, "given": [p.given] }],
        "gender": if p.female { "female" } else { "male" },
        "birthDate": p.birth_date,
        "telecom": [{ "system": "phone", "value": p.phone }],
        "address": [{ "city": p.village }],
        "managingOrganization": { "reference": format!("Organization/{facility_uid}") }
    })
}

fn encounter(patient_ref: &str, facility_uid: &str, day: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "status": "finished",
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
        "type": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation" }] }],
        "subject": { "reference": patient_ref },
        "period": { "start": format!("{day}T09:00:00Z"), "end": format!("{day}T09:30:00Z") },
        "serviceProvider": { "reference": format!("Organization/{facility_uid}") }
    })
}

fn observation(patient_ref: &str, encounter_ref: &str, day: &str, i: usize) -> Value {
    let (code, display, value, unit) = VITALS[i];
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs" }] }],
        "code": { "coding": [{ "system": "http://loinc.org", "code": code, "display": display }] },
        "subject": { "reference": patient_ref },
        "encounter": { "reference": encounter_ref },
        "effectiveDateTime": format!("{day}T09:10:00Z"),
        "valueQuantity": { "value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit }
    })
}

/// The visit day of the write scenarios (fixed: both sides write the same thing).
pub const DAY: &str = "2026-03-02";

/// A transaction Bundle of `people` new people, each with one visit and five vital signs, linked
/// by `urn:uuid:` references as an EMR's export would be.
pub fn transaction(people: &[Person], facility_uids: &[String]) -> Value {
    let urn =
        |k: usize, slot: usize| format!("urn:uuid:00000000-0000-4000-8000-{:012x}", k * 16 + slot);
    let mut entries = Vec::with_capacity(people.len() * 7);
    for (k, p) in people.iter().enumerate() {
        let fac = &facility_uids[p.facility];
        let pu = urn(k, 0);
        let eu = urn(k, 1);
        entries.push(json!({ "fullUrl": pu, "resource": patient(p, fac), "request": { "method": "POST", "url": "Patient" } }));
        entries.push(json!({ "fullUrl": eu, "resource": encounter(&pu, fac, DAY), "request": { "method": "POST", "url": "Encounter" } }));
        for i in 0..VITALS.len() {
            entries.push(json!({
                "fullUrl": urn(k, 2 + i),
                "resource": observation(&pu, &eu, DAY, i),
                "request": { "method": "POST", "url": "Observation" }
            }));
        }
    }
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}
