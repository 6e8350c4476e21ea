//! Micro-benchmarks of the translation path alone: no database, no HTTP.
//!
//! For each stored resource type (Patient, Encounter, Observation):
//!
//! - `round_trip/<type>`: FHIR JSON bytes → `kiunga_codec::parse` → `translate::<type>::to_tracker`
//!   → the tracker record the store would hold → `translate::<type>::to_fhir` →
//!   `kiunga_codec::serialize` (compact JSON), i.e. what a create costs outside the database;
//! - `translate/<type>/to_tracker` and `translate/<type>/to_fhir`: each direction on its own,
//!   from an already parsed resource and an already built record;
//!
//! and `xml/patient/parse_serialize`: the Patient as FHIR XML through `kiunga_codec::parse` and
//! back through `kiunga_codec::serialize`.
//!
//! The metadata comes from `fixtures/metadata/demo.json` (built in memory by
//! `kiunga::tracker::offline`) and the mappings from `mappings/`, as the gateway would load them.
//! The inputs are in `benches/data/`; each is checked before it is measured (it translates with
//! no error and nothing left unmapped, and the answer is valid FHIR), so a broken input fails the
//! run instead of measuring an error path.
//!
//! Run: `cargo bench -p kiunga --bench translate` (results under target/criterion/).

use std::hint::black_box;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiunga::mapping::MappingSet;
use kiunga::tracker::metadata::Metadata;
use kiunga::tracker::model::{DataValueRecord, EventRecord, PersonRecord};
use kiunga::tracker::offline::metadata_from_export_file;
use kiunga::translate::encounter::EncounterWrite;
use kiunga::translate::observation::ObservationWrite;
use kiunga::translate::patient::PatientWrite;
use kiunga::translate::{encounter, observation, patient};
use kiunga_codec::Format;
use serde_json::Value;

// Fixed identities and times of the records, as the tracker services would assign them.
const PERSON_ID: i64 = 1;
const PERSON_UID: &str = "hT5kQ2mWx9L";
const EVENT_ID: i64 = 1;
const EVENT_UID: &str = "Rb8nVf3cZ1q";
const ENROLLMENT_ID: i64 = 1;
const ENROLLMENT_UID: &str = "Kp4sD7gHj2M";
const VALUE_UID: &str = "Wq9eT6yUi3O";

fn written_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 7, 5, 0)
        .single()
        .expect("a valid fixed time")
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn input(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn refused(e: kiunga::Error) -> String {
    e.client_outcome("bench").1.to_string()
}

/// The metadata and mappings every translation is given.
struct Env {
    md: Metadata,
    mappings: MappingSet,
}

fn env() -> Env {
    let md = metadata_from_export_file(&repo_path("fixtures/metadata/demo.json"))
        .unwrap_or_else(|e| panic!("demo metadata: {e}"));
    let mappings = MappingSet::load(&repo_path("mappings"), &md)
        .unwrap_or_else(|p| panic!("mappings/ do not load against the demo metadata: {p}"));
    Env { md, mappings }
}

// The records the store would hold after a create, built as tracker::{patients, encounters,
// observations}::create build them, with fixed ids instead of database ones.

/// The person's org unit: `managingOrganization` (every benchmark Patient has one).
fn person_record(w: &PatientWrite) -> PersonRecord {
    PersonRecord {
        id: PERSON_ID,
        uid: PERSON_UID.into(),
        version: 1,
        last_updated: written_at(),
        org_unit_id: w
            .org_unit_id
            .expect("the benchmark Patient names its managingOrganization"),
        inactive: w.inactive,
        deleted: false,
        merged_into: None,
        values: w
            .values
            .iter()
            .map(|v| (v.attribute_id, v.value.clone()))
            .collect(),
    }
}

/// The event's org unit: `serviceProvider`, else the person's (here the same facility).
fn event_record(w: &EncounterWrite, person_org_unit: i64) -> EventRecord {
    EventRecord {
        id: EVENT_ID,
        uid: EVENT_UID.into(),
        version: 1,
        last_updated: written_at(),
        stage_id: w.stage_id,
        org_unit_id: w.org_unit_id.unwrap_or(person_org_unit),
        status: w.status.clone(),
        occurred_at: w.occurred_at,
        completed_at: w.completed_at,
        tracked_entity_id: PERSON_ID,
        tracked_entity_uid: w.patient_uid.clone(),
        enrollment_id: ENROLLMENT_ID,
        enrollment_uid: w
            .enrollment_uid
            .clone()
            .unwrap_or_else(|| ENROLLMENT_UID.into()),
        deleted: false,
    }
}

/// The value's time: `effective[x]`, else the event's date.
fn data_value_record(
    w: &ObservationWrite,
    event_occurred_at: Option<DateTime<Utc>>,
) -> DataValueRecord {
    DataValueRecord {
        id: 1,
        uid: VALUE_UID.into(),
        version: 1,
        last_updated: written_at(),
        event_id: EVENT_ID,
        event_uid: w.encounter_uid.clone().unwrap_or_else(|| EVENT_UID.into()),
        data_element_id: w.data_element_id,
        tracked_entity_id: PERSON_ID,
        tracked_entity_uid: w.patient_uid.clone(),
        value: w.value.clone(),
        observed_at: w.observed_at.or(event_occurred_at),
        deleted: false,
    }
}

/// What the round trips and checks share: the person's org unit and the event's time stand for
/// the records the store would look up (the subject, the encounter).
struct Context {
    person_org_unit: i64,
    event_occurred_at: Option<DateTime<Utc>>,
}

fn patient_round_trip(env: &Env, bytes: &[u8]) -> Vec<u8> {
    let resource = kiunga_codec::parse(bytes, Format::Json).expect("valid FHIR JSON");
    let w = patient::to_tracker(&resource, &env.mappings.patient, &env.md)
        .unwrap_or_else(|e| panic!("{}", refused(e)));
    let record = person_record(&w);
    let out = patient::to_fhir(&record, &env.mappings.patient, &env.md);
    kiunga_codec::serialize(&out, Format::Json, false).expect("serialisable")
}

fn encounter_round_trip(env: &Env, cx: &Context, bytes: &[u8]) -> Vec<u8> {
    let resource = kiunga_codec::parse(bytes, Format::Json).expect("valid FHIR JSON");
    let w = encounter::to_tracker(&resource, &env.mappings, &env.md)
        .unwrap_or_else(|e| panic!("{}", refused(e)));
    let record = event_record(&w, cx.person_org_unit);
    let out = encounter::to_fhir(&record, &env.mappings, &env.md);
    kiunga_codec::serialize(&out, Format::Json, false).expect("serialisable")
}

fn observation_round_trip(env: &Env, cx: &Context, bytes: &[u8]) -> Vec<u8> {
    let resource = kiunga_codec::parse(bytes, Format::Json).expect("valid FHIR JSON");
    let w = observation::to_tracker(&resource, &env.mappings, &env.md)
        .unwrap_or_else(|e| panic!("{}", refused(e)));
    let record = data_value_record(&w, cx.event_occurred_at);
    let out = observation::to_fhir(&record, &env.mappings, &env.md);
    kiunga_codec::serialize(&out, Format::Json, false).expect("serialisable")
}

/// Panics unless `unmapped` is empty: a benchmark input must be held whole by the mappings.
fn assert_all_mapped(what: &str, unmapped: &[kiunga::fhir::outcome::Issue]) {
    let left: Vec<_> = unmapped.iter().map(|i| i.diagnostics.as_str()).collect();
    assert!(
        left.is_empty(),
        "{what}: the benchmark input has elements no mapping holds: {left:?}"
    );
}

/// Panics unless `bytes` parse back as a FHIR resource of `resource_type`.
fn assert_valid_output(resource_type: &str, bytes: &[u8]) -> Value {
    let v = kiunga_codec::parse(bytes, Format::Json).unwrap_or_else(|e| {
        panic!("{resource_type}: the rendered resource is not valid FHIR: {e}")
    });
    assert_eq!(v["resourceType"], resource_type);
    v
}

/// Everything the benchmarks measure, checked once: inputs, their writes and their records.
struct Prepared {
    env: Env,
    cx: Context,
    patient_json: Vec<u8>,
    encounter_json: Vec<u8>,
    observation_json: Vec<u8>,
    patient_xml: Vec<u8>,
    patient_in: Value,
    encounter_in: Value,
    observation_in: Value,
    person: PersonRecord,
    event: EventRecord,
    data_value: DataValueRecord,
}

fn prepare() -> Prepared {
    let env = env();
    let md = &env.md;

    let patient_json = input("patient.json");
    let patient_in = kiunga_codec::parse(&patient_json, Format::Json).expect("patient.json parses");
    let pw = patient::to_tracker(&patient_in, &env.mappings.patient, md)
        .unwrap_or_else(|e| panic!("patient.json: {}", refused(e)));
    assert_all_mapped("patient.json", &pw.unmapped);
    // National ID, family and given names, sex, birth date, phone and village.
    assert_eq!(pw.values.len(), 7, "patient.json: {:?}", pw.values);
    let person = person_record(&pw);
    assert_eq!(
        md.org_unit_by_id(person.org_unit_id)
            .map(|o| o.uid.as_str()),
        Some("zJpd3rQ0uYs")
    );

    let encounter_json = input("encounter.json");
    let encounter_in =
        kiunga_codec::parse(&encounter_json, Format::Json).expect("encounter.json parses");
    let ew = encounter::to_tracker(&encounter_in, &env.mappings, md)
        .unwrap_or_else(|e| panic!("encounter.json: {}", refused(e)));
    assert_all_mapped("encounter.json", &ew.unmapped);
    assert_eq!(
        md.stages
            .iter()
            .find(|s| s.id == ew.stage_id)
            .and_then(|s| s.code.as_deref()),
        Some("OPD_VISIT")
    );
    assert_eq!(ew.patient_uid, PERSON_UID);
    let event = event_record(&ew, person.org_unit_id);

    let observation_json = input("observation.json");
    let observation_in =
        kiunga_codec::parse(&observation_json, Format::Json).expect("observation.json parses");
    let ow = observation::to_tracker(&observation_in, &env.mappings, md)
        .unwrap_or_else(|e| panic!("observation.json: {}", refused(e)));
    assert_all_mapped("observation.json", &ow.unmapped);
    assert_eq!(
        md.data_elements
            .iter()
            .find(|d| d.id == ow.data_element_id)
            .and_then(|d| d.code.as_deref()),
        Some("WEIGHT")
    );
    assert_eq!(ow.value, "64.5");
    assert_eq!(ow.encounter_uid.as_deref(), Some(EVENT_UID));
    let data_value = data_value_record(&ow, event.occurred_at);

    let cx = Context {
        person_org_unit: person.org_unit_id,
        event_occurred_at: event.occurred_at,
    };

    // The round trips give valid FHIR that says what came in.
    let p = assert_valid_output("Patient", &patient_round_trip(&env, &patient_json));
    assert_eq!(p["identifier"][0]["value"], "19900412-0001");
    assert_eq!(p["birthDate"], "1990-04-12");
    let e = assert_valid_output(
        "Encounter",
        &encounter_round_trip(&env, &cx, &encounter_json),
    );
    assert_eq!(e["status"], "finished");
    let o = assert_valid_output(
        "Observation",
        &observation_round_trip(&env, &cx, &observation_json),
    );
    assert_eq!(o["valueQuantity"]["value"].as_f64(), Some(64.5));

    // The XML form of the same Patient, written by the codec itself.
    let patient_xml =
        kiunga_codec::serialize(&patient_in, Format::Xml, false).expect("the Patient as XML");
    let back = kiunga_codec::parse(&patient_xml, Format::Xml).expect("the XML Patient parses");
    assert_eq!(back["identifier"][0]["value"], "19900412-0001");

    Prepared {
        env,
        cx,
        patient_json,
        encounter_json,
        observation_json,
        patient_xml,
        patient_in,
        encounter_in,
        observation_in,
        person,
        event,
        data_value,
    }
}

fn benches(c: &mut Criterion) {
    let p = prepare();
    let (env, cx) = (&p.env, &p.cx);

    let mut g = c.benchmark_group("round_trip");
    g.throughput(Throughput::Bytes(p.patient_json.len() as u64));
    g.bench_function("patient", |b| {
        b.iter(|| patient_round_trip(env, black_box(&p.patient_json)))
    });
    g.throughput(Throughput::Bytes(p.encounter_json.len() as u64));
    g.bench_function("encounter", |b| {
        b.iter(|| encounter_round_trip(env, cx, black_box(&p.encounter_json)))
    });
    g.throughput(Throughput::Bytes(p.observation_json.len() as u64));
    g.bench_function("observation", |b| {
        b.iter(|| observation_round_trip(env, cx, black_box(&p.observation_json)))
    });
    g.finish();

    // Each direction alone; a failed translation here would be measured as an error path, but
    // prepare() has checked every input, so the results are only kept from being optimised away.
    let mut g = c.benchmark_group("translate");
    g.bench_function("patient/to_tracker", |b| {
        b.iter(|| patient::to_tracker(black_box(&p.patient_in), &env.mappings.patient, &env.md))
    });
    g.bench_function("patient/to_fhir", |b| {
        b.iter(|| patient::to_fhir(black_box(&p.person), &env.mappings.patient, &env.md))
    });
    g.bench_function("encounter/to_tracker", |b| {
        b.iter(|| encounter::to_tracker(black_box(&p.encounter_in), &env.mappings, &env.md))
    });
    g.bench_function("encounter/to_fhir", |b| {
        b.iter(|| encounter::to_fhir(black_box(&p.event), &env.mappings, &env.md))
    });
    g.bench_function("observation/to_tracker", |b| {
        b.iter(|| observation::to_tracker(black_box(&p.observation_in), &env.mappings, &env.md))
    });
    g.bench_function("observation/to_fhir", |b| {
        b.iter(|| observation::to_fhir(black_box(&p.data_value), &env.mappings, &env.md))
    });
    g.finish();

    let mut g = c.benchmark_group("xml");
    g.throughput(Throughput::Bytes(p.patient_xml.len() as u64));
    g.bench_function("patient/parse_serialize", |b| {
        b.iter(|| {
            let v = kiunga_codec::parse(black_box(&p.patient_xml), Format::Xml)
                .expect("valid FHIR XML");
            kiunga_codec::serialize(&v, Format::Xml, false).expect("serialisable")
        })
    });
    g.finish();
}

criterion_group!(translate, benches);
criterion_main!(translate);
