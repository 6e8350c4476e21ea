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

/// [`transaction`] as JSON text, written directly: the same document, at a fiftieth of the
/// load generator's CPU (building the `Value` tree and serialising it took 7.1 ms a Bundle of
/// 700 resources, against 0.13 ms, on the two cores the gateway and Postgres share, and inside
/// each request's measured time).
pub fn transaction_body(people: &[Person], facility_uids: &[String]) -> String {
    use std::fmt::Write;
    // Every value written here is ASCII without quotes or backslashes (generated above, or a
    // DHIS2 uid); `text` checks it rather than escaping.
    fn text(s: &str) -> &str {
        debug_assert!(s
            .bytes()
            .all(|b| b.is_ascii() && b != b'"' && b != b'\\' && b >= 0x20));
        s
    }
    let mut out = String::with_capacity(people.len() * 7 * 700);
    out.push_str(r#"{"resourceType":"Bundle","type":"transaction","entry":["#);
    for (k, p) in people.iter().enumerate() {
        let fac = text(&facility_uids[p.facility]);
        let pu = format!("urn:uuid:00000000-0000-4000-8000-{:012x}", k * 16);
        let eu = format!("urn:uuid:00000000-0000-4000-8000-{:012x}", k * 16 + 1);
        if k > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"fullUrl":"{pu}","resource":{{"resourceType":"Patient","identifier":[{{"system":"http://example.org/national-id","value":"{}"}}],"name":[{{"family":"{}","given":["{}"]}}],"gender":"{}","birthDate":"{}","telecom":[{{"system":"phone","value":"{}"}}],"address":[{{"city":"{}"}}],"managingOrganization":{{"reference":"Organization/{fac}"}}}},"request":{{"method":"POST","url":"Patient"}}}}"#,
            text(&p.national_id),
            text(p.family),
            text(p.given),
            if p.female { "female" } else { "male" },
            text(&p.birth_date),
            text(&p.phone),
            text(&p.village),
        );
        let _ = write!(
            out,
            r#",{{"fullUrl":"{eu}","resource":{{"resourceType":"Encounter","status":"finished","class":{{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"}},"type":[{{"coding":[{{"system":"http://snomed.info/sct","code":"11429006","display":"Consultation"}}]}}],"subject":{{"reference":"{pu}"}},"period":{{"start":"{DAY}T09:00:00Z","end":"{DAY}T09:30:00Z"}},"serviceProvider":{{"reference":"Organization/{fac}"}}}},"request":{{"method":"POST","url":"Encounter"}}}}"#,
        );
        for (i, (code, display, value, unit)) in VITALS.iter().enumerate() {
            let _ = write!(
                out,
                r#",{{"fullUrl":"urn:uuid:00000000-0000-4000-8000-{:012x}","resource":{{"resourceType":"Observation","status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}}]}}],"code":{{"coding":[{{"system":"http://loinc.org","code":"{code}","display":"{display}"}}]}},"subject":{{"reference":"{pu}"}},"encounter":{{"reference":"{eu}"}},"effectiveDateTime":"{DAY}T09:10:00Z","valueQuantity":{{"value":{},"unit":"{unit}","system":"http://unitsofmeasure.org","code":"{unit}"}}}},"request":{{"method":"POST","url":"Observation"}}}}"#,
                k * 16 + 2 + i,
                serde_json::Value::from(*value),
            );
        }
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_bundle_is_the_built_one() {
        let uids: Vec<String> = vec!["DiszpKrYNg8".into(), "Rp268JB6Ne4".into()];
        let people: Vec<Person> = (0..3).map(|k| person("T1", 1, k, uids.len())).collect();
        let written: Value = serde_json::from_str(&transaction_body(&people, &uids)).unwrap();
        assert_eq!(written, transaction(&people, &uids));
        // Text for text, too: the gateway sees the bytes the tree would have serialised to.
        assert_eq!(
            transaction_body(&people, &uids),
            transaction(&people, &uids).to_string()
        );
    }
}
