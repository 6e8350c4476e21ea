//! The codec's public API, end to end: parse / serialize in both formats, the error kinds and
//! FHIRPaths the gateway turns into OperationOutcomes, and the regressions that guard against
//! fhirbolt's pitfalls.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use kiunga_codec::{parse, serialize, ErrorKind, Format};
use serde_json::{json, Value};

const PATIENT_JSON: &str = r#"{
  "resourceType": "Patient",
  "id": "pat-1",
  "meta": {"versionId": "3", "lastUpdated": "2024-05-06T07:08:09.123Z"},
  "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Jane Doe</p></div>"},
  "extension": [{"url": "http://example.org/fhir/StructureDefinition/weight", "valueDecimal": 61.50}],
  "identifier": [{"use": "official", "system": "http://example.org/ids", "value": "A-123"}],
  "active": true,
  "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"], "period": {"start": "2000-02-29"}}],
  "telecom": [{"system": "phone", "value": "+255 700 000 000", "use": "mobile", "rank": 1}],
  "gender": "female",
  "birthDate": "1990-02-28",
  "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1990-02-28T10:15:00+03:00"}]},
  "deceasedBoolean": false,
  "address": [{"line": ["Plot 7", "Mwenge"], "city": "Dar es Salaam", "country": "TZ"}],
  "multipleBirthInteger": 2,
  "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
               "name": {"family": "Doe", "given": ["John"]}, "gender": "male"}],
  "managingOrganization": {"reference": "Organization/org-1", "display": "Clinic"}
}"#;

/// The same Patient in FHIR XML (elements in FHIR's order, as XML requires).
const PATIENT_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <id value="pat-1"/>
  <meta>
    <versionId value="3"/>
    <lastUpdated value="2024-05-06T07:08:09.123Z"/>
  </meta>
  <text>
    <status value="generated"/>
    <div xmlns="http://www.w3.org/1999/xhtml"><p>Jane Doe</p></div>
  </text>
  <extension url="http://example.org/fhir/StructureDefinition/weight">
    <valueDecimal value="61.50"/>
  </extension>
  <identifier>
    <use value="official"/>
    <system value="http://example.org/ids"/>
    <value value="A-123"/>
  </identifier>
  <active value="true"/>
  <name>
    <use value="official"/>
    <family value="Doe"/>
    <given value="Jane"/>
    <given value="Q"/>
    <period>
      <start value="2000-02-29"/>
    </period>
  </name>
  <telecom>
    <system value="phone"/>
    <value value="+255 700 000 000"/>
    <use value="mobile"/>
    <rank value="1"/>
  </telecom>
  <gender value="female"/>
  <birthDate value="1990-02-28">
    <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
      <valueDateTime value="1990-02-28T10:15:00+03:00"/>
    </extension>
  </birthDate>
  <deceasedBoolean value="false"/>
  <address>
    <line value="Plot 7"/>
    <line value="Mwenge"/>
    <city value="Dar es Salaam"/>
    <country value="TZ"/>
  </address>
  <multipleBirthInteger value="2"/>
  <contact>
    <relationship>
      <coding>
        <system value="http://terminology.hl7.org/CodeSystem/v2-0131"/>
        <code value="N"/>
      </coding>
    </relationship>
    <name>
      <family value="Doe"/>
      <given value="John"/>
    </name>
    <gender value="male"/>
  </contact>
  <managingOrganization>
    <reference value="Organization/org-1"/>
    <display value="Clinic"/>
  </managingOrganization>
</Patient>
"#;

fn parse_json(v: &Value) -> Result<Value, kiunga_codec::CodecError> {
    parse(v.to_string().as_bytes(), Format::Json)
}

fn patient_with(field: &str, value: Value) -> Value {
    json!({"resourceType": "Patient", field: value})
}

#[test]
fn json_is_returned_as_written() {
    let parsed = parse(PATIENT_JSON.as_bytes(), Format::Json).unwrap();
    let plain: Value = serde_json::from_str(PATIENT_JSON).unwrap();
    assert_eq!(parsed, plain);
    // Member order and number literals survive (preserve_order, arbitrary_precision).
    let keys: Vec<&str> = parsed
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(&keys[..3], ["resourceType", "id", "meta"]);
    assert_eq!(parsed["extension"][0]["valueDecimal"].to_string(), "61.50");
}

#[test]
fn xml_patient_equals_its_json_twin_and_round_trips() {
    let from_json = parse(PATIENT_JSON.as_bytes(), Format::Json).unwrap();
    let from_xml = parse(PATIENT_XML.as_bytes(), Format::Xml).unwrap();
    assert_eq!(from_xml, from_json);
    assert_eq!(
        from_xml["extension"][0]["valueDecimal"].to_string(),
        "61.50"
    );

    for pretty in [false, true] {
        let xml = serialize(&from_json, Format::Xml, pretty).unwrap();
        let text = String::from_utf8(xml.clone()).unwrap();
        assert!(
            text.contains(r#"<Patient xmlns="http://hl7.org/fhir">"#),
            "{text}"
        );
        assert_eq!(text.contains("\n  <id"), pretty, "{text}");
        assert_eq!(
            parse(&xml, Format::Xml).unwrap(),
            from_json,
            "pretty={pretty}: {text}"
        );
    }
}

#[test]
fn json_serialisation_is_direct() {
    let v = parse(PATIENT_JSON.as_bytes(), Format::Json).unwrap();
    let compact = serialize(&v, Format::Json, false).unwrap();
    let pretty = serialize(&v, Format::Json, true).unwrap();
    assert!(!compact.contains(&b'\n'));
    assert!(String::from_utf8(pretty.clone())
        .unwrap()
        .contains("\n  \"id\": \"pat-1\""));
    assert_eq!(parse(&compact, Format::Json).unwrap(), v);
    assert_eq!(parse(&pretty, Format::Json).unwrap(), v);
}

#[test]
fn xml_serialisation_refuses_an_invalid_resource() {
    let e = serialize(
        &json!({"resourceType": "Patient", "foo": 1}),
        Format::Xml,
        false,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure);
    let e = serialize(&json!({"resourceType": "Nope"}), Format::Xml, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure);
}

fn transaction_bundle() -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": {"resourceType": "Patient", "name": [{"family": "Doe"}], "birthDate": "2000-02-29"},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
             "resource": {"resourceType": "Observation", "status": "final",
                          "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                          "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                          "effectiveDateTime": "2024-01-02T10:00:00Z",
                          "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "DELETE", "url": "Patient/old-1"}}
        ]
    })
}

#[test]
fn transaction_bundle_with_three_entries_parses_in_both_formats() {
    let bundle = transaction_bundle();
    let parsed = parse_json(&bundle).unwrap();
    assert_eq!(parsed, bundle);

    let xml = serialize(&parsed, Format::Xml, true).unwrap();
    assert_eq!(parse(&xml, Format::Xml).unwrap(), bundle);
}

#[test]
fn nested_resources_are_checked_too() {
    let mut bundle = transaction_bundle();
    bundle["entry"][1]["resource"]["effectiveDateTime"] = json!("2024-01-02T10:00:00");
    let e = parse_json(&bundle).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Primitive);
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[1].resource.effective.ofType(dateTime)")
    );

    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "resource": {"resourceType": "Patient", "birthDate": "1900-02-29"}}]});
    let e = parse_json(&params).unwrap_err();
    assert_eq!(
        e.expression.as_deref(),
        Some("Parameters.parameter[0].resource.birthDate")
    );
}

/// fhirbolt's Compatibility and Lax modes loop forever on an unknown array element. We only
/// use Strict; this fails (times out) if anyone switches modes.
#[test]
fn unknown_array_element_is_rejected_quickly() {
    let body = br#"{"resourceType": "Patient", "foo": [1, 2, 3], "active": true}"#;
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(parse(body, Format::Json));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("parse did not finish within 5 s");
    let e = result.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure);
    assert_eq!(e.message, "unknown element `foo` in Patient");
    assert_eq!(e.expression.as_deref(), Some("Patient.foo"));
    assert!(started.elapsed() < Duration::from_secs(5));

    // Also in XML, and nested.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let xml =
            br#"<Patient xmlns="http://hl7.org/fhir"><foo value="1"/><foo value="2"/></Patient>"#;
        let _ = tx.send(parse(xml, Format::Xml));
    });
    let e = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("XML parse hung")
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure);
}

#[test]
fn primitive_formats() {
    let ok = [
        ("birthDate", json!("2000-02-29")),
        ("birthDate", json!("1990")),
        ("birthDate", json!("1990-02")),
        ("deceasedDateTime", json!("2020-05-06T07:08:09.5-05:00")),
        ("deceasedDateTime", json!("2020-05-06")),
        ("gender", json!("other")),
        ("id", json!("a.B-9")),
        ("active", json!(false)),
        ("multipleBirthInteger", json!(-3)),
    ];
    for (field, value) in ok {
        parse_json(&patient_with(field, value.clone()))
            .unwrap_or_else(|e| panic!("{field}={value}: {e}"));
    }

    let bad = [
        ("birthDate", json!("1990-02-30"), "Patient.birthDate"),
        ("birthDate", json!("1900-02-29"), "Patient.birthDate"),
        ("birthDate", json!("1990-2-3"), "Patient.birthDate"),
        (
            "deceasedDateTime",
            json!("2020-05-06T07:08:09"),
            "Patient.deceased.ofType(dateTime)",
        ),
        ("gender", json!(" female"), "Patient.gender"),
        ("gender", json!(""), "Patient.gender"),
        ("id", json!("has space"), "Patient.id"),
        ("active", json!("yes"), "Patient.active"),
        (
            "multipleBirthInteger",
            json!(1.5),
            "Patient.multipleBirth.ofType(integer)",
        ),
    ];
    for (field, value, path) in bad {
        let e = parse_json(&patient_with(field, value.clone())).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Primitive,
            "{field}={value}: {}",
            e.message
        );
        assert_eq!(e.expression.as_deref(), Some(path), "{field}={value}");
    }

    let e = parse_json(&patient_with("birthDate", json!("1990-02-30"))).unwrap_err();
    assert_eq!(
        e.message,
        "invalid date `1990-02-30` at Patient.birthDate: day 30 does not exist in February 1990"
    );

    let more_bad = [
        (
            json!({"resourceType": "Patient", "meta": {"lastUpdated": "2024-05-06"}}),
            "Patient.meta.lastUpdated",
        ),
        (
            json!({"resourceType": "Patient", "meta": {"versionId": "v 1"}}),
            "Patient.meta.versionId",
        ),
        (
            json!({"resourceType": "Patient", "telecom": [{"rank": 0}]}),
            "Patient.telecom[0].rank",
        ),
        (
            json!({"resourceType": "Patient", "name": [{"period": {"end": "2020-01-01T00:00:00"}}]}),
            "Patient.name[0].period.end",
        ),
        (
            json!({"resourceType": "Patient", "extension": [{"url": "", "valueString": "x"}]}),
            "Patient.extension[0].url",
        ),
        (
            json!({"resourceType": "Observation", "status": "final", "code": {},
                "valueQuantity": {"value": "72.5"}}),
            "Observation.value.ofType(Quantity).value",
        ),
        (
            json!({"resourceType": "Location", "hoursOfOperation": [{"openingTime": "8:00"}]}),
            "Location.hoursOfOperation[0].openingTime",
        ),
        (
            json!({"resourceType": "Bundle", "type": "searchset", "total": -1}),
            "Bundle.total",
        ),
        (
            json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
            {"response": {"status": "200", "lastModified": "2020"}}]}),
            "Bundle.entry[0].response.lastModified",
        ),
        (
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error ", "code": "invalid"}]}),
            "OperationOutcome.issue[0].severity",
        ),
        (
            json!({"resourceType": "Provenance", "target": [{"reference": "Patient/1"}], "recorded": "2020-01-01",
                "agent": [{"who": {"reference": "Practitioner/1"}}]}),
            "Provenance.recorded",
        ),
        (
            json!({"resourceType": "Encounter", "status": "in  progress", "class": {"code": "AMB"}}),
            "Encounter.status",
        ),
        (
            json!({"resourceType": "EpisodeOfCare", "status": "active", "period": {"start": "2020-02-30"}}),
            "EpisodeOfCare.period.start",
        ),
        (
            json!({"resourceType": "RelatedPerson", "patient": {"reference": "Patient/1"}, "birthDate": "2021-02-29"}),
            "RelatedPerson.birthDate",
        ),
        (
            json!({"resourceType": "Organization", "identifier": [{"system": "urn:oid:1 2"}]}),
            "Organization.identifier[0].system",
        ),
    ];
    for (resource, path) in more_bad {
        let e = parse_json(&resource).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Primitive, "{resource}: {}", e.message);
        assert_eq!(e.expression.as_deref(), Some(path), "{resource}");
    }
}

#[test]
fn structure_errors() {
    let e = parse(b"{\"resourceType\": \"Patient\",", Format::Json).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert!(
        e.message.starts_with("invalid JSON at line 1 column"),
        "{}",
        e.message
    );

    for (doc, needle) in [
        (json!({"id": "x"}), "resourceType"),
        (json!({"resourceType": "Patients"}), "Patients"),
        (
            json!({"resourceType": "Patient", "name": "Jane"}),
            "JSON array",
        ),
        (
            json!({"resourceType": "Patient", "gender": {"value": "x"}}),
            "gender",
        ),
        (
            json!({"resourceType": "Observation", "status": "final"}),
            "code",
        ),
        (json!([{"resourceType": "Patient"}]), "resource"),
    ] {
        let e = parse_json(&doc).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Structure, "{doc}: {}", e.message);
        assert!(e.message.contains(needle), "{doc}: {}", e.message);
    }

    let e = parse_json(&json!({"resourceType": "Observation", "status": "final"})).unwrap_err();
    assert_eq!(
        e.message,
        "Observation is missing the required element `code`"
    );
    assert_eq!(e.expression.as_deref(), Some("Observation"));
}

#[test]
fn depth_limit_and_dtds() {
    let deep = format!(
        r#"{{"resourceType": "Patient", "extension": {}{}}}"#,
        r#"[{"url": "http://e", "extension": "#.repeat(40),
        "[]}]".repeat(40)
    );
    let e = parse(deep.as_bytes(), Format::Json).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure);
    assert!(e.message.contains("64"), "{}", e.message);

    let xxe = br#"<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><id value="&xxe;"/></Patient>"#;
    let e = parse(xxe, Format::Xml).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Syntax);

    let laughs = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><Patient xmlns="http://hl7.org/fhir"><id value="&lol2;"/></Patient>"#;
    assert_eq!(
        parse(laughs, Format::Xml).unwrap_err().kind,
        ErrorKind::Syntax
    );
}

/// Compact XML is written straight from the JSON (`xml_out`), pretty XML by fhirbolt: apart from
/// the indentation, the same bytes, with and without narratives, nested resources included.
/// Resources that are not R4 are refused either way.
#[test]
fn compact_xml_is_fhirbolts_without_the_indentation() {
    let mut patient: Value = serde_json::from_str(PATIENT_JSON).unwrap();
    // Whitespace fhirbolt's writer trims and the narrative keeps.
    patient["text"]["div"] =
        json!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Hello <b>you</b> there</p></div>");
    let mut plain = patient.clone();
    plain.as_object_mut().unwrap().remove("text");
    let mut nested = transaction_bundle();
    nested["entry"][0]["resource"]["text"] = patient["text"].clone();
    for v in [patient, plain, transaction_bundle(), nested] {
        let compact = String::from_utf8(serialize(&v, Format::Xml, false).unwrap()).unwrap();
        let pretty = String::from_utf8(serialize(&v, Format::Xml, true).unwrap()).unwrap();
        assert_eq!(compact, without_indentation(&pretty), "{v}");
    }
    for bad in [
        json!({"resourceType": "Patient", "foo": 1}),
        json!({"resourceType": "Nope"}),
        json!({"resourceType": "Patient", "active": "yes"}),
    ] {
        for pretty in [false, true] {
            let e = serialize(&bad, Format::Xml, pretty).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Structure);
        }
    }
}

/// Runs of whitespace between `>` and `<`, which is all the indentation fhirbolt adds (its text
/// is in attributes; a narrative's text nodes keep theirs, being between `>` and a letter).
fn without_indentation(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find('>') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let ws = rest.len() - rest.trim_start().len();
        if rest[ws..].starts_with('<') {
            rest = &rest[ws..];
        }
    }
    out.push_str(rest);
    out
}
