//! `parse_bundle`: batch/transaction Bundles read entry by entry, so that one bad entry is
//! reported against that entry and the others can still be processed.

use kiunga_codec::{parse, parse_bundle, serialize, CodecError, ErrorKind, Format, ParsedBundle};
use serde_json::{json, Value};

fn bundle_json(v: &Value) -> Result<ParsedBundle, CodecError> {
    parse_bundle(v.to_string().as_bytes(), Format::Json)
}

/// (kind, expression) of each slot, for comparing.
fn slots(parsed: &ParsedBundle) -> Vec<Option<(ErrorKind, Option<&str>)>> {
    parsed
        .entry_errors
        .iter()
        .map(|e| e.as_ref().map(|e| (e.kind, e.expression.as_deref())))
        .collect()
}

fn post(resource: Value) -> Value {
    let rt = resource["resourceType"].as_str().unwrap().to_owned();
    json!({"resource": resource, "request": {"method": "POST", "url": rt}})
}

fn batch(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

#[test]
fn bad_entries_are_reported_in_their_slots() {
    let bundle = batch(vec![
        post(json!({"resourceType": "Patient", "birthDate": "1990-02-28"})),
        post(json!({"resourceType": "Patient", "birthDate": "1990-02-30"})),
        post(json!({"resourceType": "Patient", "nickname": "Jo"})),
    ]);
    let parsed = bundle_json(&bundle).unwrap();
    assert_eq!(
        slots(&parsed),
        [
            None,
            Some((
                ErrorKind::Primitive,
                Some("Bundle.entry[1].resource.birthDate")
            )),
            Some((
                ErrorKind::Structure,
                Some("Bundle.entry[2].resource.nickname")
            )),
        ]
    );
    let e = parsed.entry_errors[1].as_ref().unwrap();
    assert_eq!(
        e.message,
        "invalid date `1990-02-30` at Bundle.entry[1].resource.birthDate: day 30 does not exist in February 1990"
    );
    // Every entry is there, as sent.
    assert_eq!(parsed.bundle["entry"].as_array().unwrap().len(), 3);
    assert_eq!(parsed.bundle, bundle);

    // `parse` still refuses the whole Bundle.
    let e = parse(bundle.to_string().as_bytes(), Format::Json).unwrap_err();
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[1].resource.birthDate")
    );
}

#[test]
fn json_is_returned_as_written() {
    let text = r#"{"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
                      "valueQuantity": {"value": 72.50, "unit": "kg"}},
         "request": {"method": "POST", "url": "Observation"}}]}"#;
    let parsed = parse_bundle(text.as_bytes(), Format::Json).unwrap();
    assert_eq!(slots(&parsed), [None]);
    assert_eq!(
        parsed.bundle["entry"][0]["resource"]["valueQuantity"]["value"].to_string(),
        "72.50"
    );
    assert_eq!(parsed.bundle, parse(text.as_bytes(), Format::Json).unwrap());
    // With a byte order mark too.
    let bom = [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
    assert_eq!(
        parse_bundle(&bom, Format::Json).unwrap().bundle,
        parsed.bundle
    );
}

#[test]
fn entry_elements_are_checked() {
    let parsed = bundle_json(&batch(vec![
        // A GET has no resource.
        json!({"request": {"method": "GET", "url": "Patient/1"}}),
        json!({"request": {"method": "GET ", "url": "Patient/1"}}),
        json!({"request": {"method": 7, "url": "Patient/1"}}),
        json!({"request": {"url": "Patient/1"}}),
        json!({"request": {"method": "DELETE", "url": "Patient/1", "ifMatsh": "W/\"1\""}}),
        json!({"request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=x"},
               "fullUrl": "urn:uuid:not a uuid", "resource": {"resourceType": "Patient"}}),
        json!({"request": {"method": "PUT", "url": "Patient/1", "ifModifiedSince": "2020"}}),
        json!("Patient/1"),
        json!({}),
    ]))
    .unwrap();
    assert_eq!(
        slots(&parsed),
        [
            None,
            Some((ErrorKind::Primitive, Some("Bundle.entry[1].request.method"))),
            Some((ErrorKind::Primitive, Some("Bundle.entry[2].request.method"))),
            Some((ErrorKind::Structure, Some("Bundle.entry[3].request"))),
            Some((
                ErrorKind::Structure,
                Some("Bundle.entry[4].request.ifMatsh")
            )),
            Some((ErrorKind::Primitive, Some("Bundle.entry[5].fullUrl"))),
            Some((
                ErrorKind::Primitive,
                Some("Bundle.entry[6].request.ifModifiedSince")
            )),
            Some((ErrorKind::Structure, Some("Bundle.entry[7]"))),
            None,
        ]
    );
    let missing = parsed.entry_errors[3].as_ref().unwrap();
    assert_eq!(
        missing.message,
        "Bundle.entry[3].request is missing the required element `method`"
    );
}

#[test]
fn fhirbolt_refusals_are_attributed_to_their_entry() {
    // Only fhirbolt checks required elements.
    let text = r#"{"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Observation", "code": {"text": "x"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "final",
                      "category": [{"coding": [{"system": "http://example.org/c"}]}]},
         "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": "Patient/1"}}]}"#;
    let parsed = parse_bundle(text.as_bytes(), Format::Json).unwrap();
    assert_eq!(
        slots(&parsed),
        [
            Some((ErrorKind::Structure, Some("Bundle.entry[0].resource"))),
            Some((ErrorKind::Structure, Some("Bundle.entry[1]"))),
            None,
        ]
    );
    assert_eq!(
        parsed.entry_errors[0].as_ref().unwrap().message,
        "Bundle.entry[0].resource is missing the required element `status`"
    );
    // `code` could be missing from the Observation or from its Coding: only the entry is known.
    assert_eq!(
        parsed.entry_errors[1].as_ref().unwrap().message,
        "Bundle.entry[1]: not a valid FHIR R4 resource: a required element `code` is missing"
    );
}

#[test]
fn bundle_level_problems_fail_the_whole_bundle() {
    let entry = || post(json!({"resourceType": "Patient"}));
    let cases = [
        (
            json!({"resourceType": "Bundle", "entry": [entry()]}),
            ErrorKind::Structure,
            Some("Bundle"),
            "Bundle is missing the required element `type`",
        ),
        (
            json!({"resourceType": "Bundle", "type": "batch ", "entry": [entry()]}),
            ErrorKind::Primitive,
            Some("Bundle.type"),
            "invalid code",
        ),
        (
            json!({"resourceType": "Bundle", "type": "batch", "entries": [entry()]}),
            ErrorKind::Structure,
            Some("Bundle.entries"),
            "unknown element `entries` in Bundle",
        ),
        (
            json!({"resourceType": "Bundle", "type": "batch", "entry": entry()}),
            ErrorKind::Structure,
            Some("Bundle.entry"),
            "must be a JSON array",
        ),
        (
            json!({"resourceType": "Bundle", "type": "batch", "entry": []}),
            ErrorKind::Structure,
            Some("Bundle.entry"),
            "empty array",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": "2000"}),
            ErrorKind::Structure,
            None,
            "expected a Bundle",
        ),
        (
            json!({"resourceType": "Bundel", "type": "batch"}),
            ErrorKind::Structure,
            None,
            "expected a Bundle",
        ),
        (
            json!({"type": "batch"}),
            ErrorKind::Structure,
            None,
            "expected a Bundle",
        ),
        (
            json!([entry()]),
            ErrorKind::Structure,
            None,
            "expected a Bundle",
        ),
    ];
    for (doc, kind, expression, needle) in cases {
        let e = bundle_json(&doc).unwrap_err();
        assert_eq!(e.kind, kind, "{doc}: {}", e.message);
        assert_eq!(e.expression.as_deref(), expression, "{doc}");
        assert!(e.message.contains(needle), "{doc}: {}", e.message);
    }
    let e = bundle_json(&json!({"resourceType": "Patient"})).unwrap_err();
    assert_eq!(
        e.message,
        r#"expected a Bundle ("resourceType": "Bundle"), but the resource is a Patient"#
    );

    // A Bundle without entries is fine.
    let parsed = bundle_json(&json!({"resourceType": "Bundle", "type": "batch"})).unwrap();
    assert!(parsed.entry_errors.is_empty());
}

#[test]
fn syntax_and_depth_fail_the_whole_bundle() {
    let e = parse_bundle(
        br#"{"resourceType": "Bundle", "type": "batch", "entry": [{]}"#,
        Format::Json,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert!(
        e.message.starts_with("invalid JSON at line 1"),
        "{}",
        e.message
    );
    assert_eq!(
        parse_bundle(b"", Format::Json).unwrap_err().kind,
        ErrorKind::Syntax
    );

    let deep = format!(
        r#"{{"resourceType": "Bundle", "type": "batch", "entry": [{{"resource": {{"resourceType": "Patient", "extension": {}{}}}}}]}}"#,
        r#"[{"url": "http://e", "extension": "#.repeat(40),
        "[]}]".repeat(40)
    );
    let e = parse_bundle(deep.as_bytes(), Format::Json).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure);
    assert!(e.message.contains("64"), "{}", e.message);

    for xml in [
        &br#"<Bundle xmlns="http://hl7.org/fhir"><type value="batch"/>"#[..],
        br#"<Bundle xmlns="http://hl7.org/fhir"><type value="batch"></Bundle>"#,
        br#"<?xml version="1.0"?><!DOCTYPE Bundle [<!ENTITY a "b">]><Bundle xmlns="http://hl7.org/fhir"><type value="&a;"/></Bundle>"#,
        b"",
    ] {
        let e = parse_bundle(xml, Format::Xml).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Syntax, "{}", e.message);
    }
}

const XML_ENTRY_OK: &str = r#"<entry><resource><Patient><birthDate value="1990-02-28"/></Patient></resource><request><method value="POST"/><url value="Patient"/></request></entry>"#;

fn xml_batch(entries: &[&str]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Bundle xmlns="http://hl7.org/fhir"><type value="batch"/>{}</Bundle>"#,
        entries.concat()
    )
}

#[test]
fn xml_primitive_errors_are_reported_in_their_slots() {
    let xml = xml_batch(&[
        XML_ENTRY_OK,
        r#"<entry><resource><Patient><birthDate value="1990-02-30"/></Patient></resource><request><method value="POST"/><url value="Patient"/></request></entry>"#,
        r#"<entry><request><method value="GET"/><url value="Patient/1"/></request></entry>"#,
        r#"<entry><resource><Patient><telecom><rank value="0"/></telecom></Patient></resource><request><method value="POST"/><url value="Patient"/></request></entry>"#,
    ]);
    let parsed = parse_bundle(xml.as_bytes(), Format::Xml).unwrap();
    assert_eq!(
        slots(&parsed),
        [
            None,
            Some((
                ErrorKind::Primitive,
                Some("Bundle.entry[1].resource.birthDate")
            )),
            None,
            Some((
                ErrorKind::Primitive,
                Some("Bundle.entry[3].resource.telecom[0].rank")
            )),
        ]
    );
    let entries = parsed.bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[1]["resource"]["birthDate"], "1990-02-30");
    assert_eq!(entries[2]["request"]["url"], "Patient/1");

    // The same Bundle in JSON gives the same slots; `parse` refuses it.
    let as_json = parse_bundle(
        &serialize(&parsed.bundle, Format::Json, false).unwrap(),
        Format::Json,
    )
    .unwrap();
    assert_eq!(slots(&as_json), slots(&parsed));
    assert!(parse(xml.as_bytes(), Format::Xml).is_err());
}

#[test]
fn xml_bundle_level_problems_and_fhirbolt_refusals() {
    let not_bundle = br#"<Patient xmlns="http://hl7.org/fhir"><birthDate value="2000"/></Patient>"#;
    let e = parse_bundle(not_bundle, Format::Xml).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure);
    assert!(e.message.contains("expected a Bundle"), "{}", e.message);
    assert!(e.message.contains("Patient"), "{}", e.message);

    let e = parse_bundle(
        br#"<Bundle xmlns="http://hl7.org/fhir"><type value=" batch"/></Bundle>"#,
        Format::Xml,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Primitive);
    assert_eq!(e.expression.as_deref(), Some("Bundle.type"));

    let e = parse_bundle(
        xml_batch(&[XML_ENTRY_OK])
            .replace("<type value=\"batch\"/>", "")
            .as_bytes(),
        Format::Xml,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure, "{}", e.message);

    // A value fhirbolt cannot store fails the whole Bundle, with our located error; one it can
    // store but is spelled wrong (`007`) is the entry's error.
    let with_patient = |inner: &str| {
        xml_batch(&[
            XML_ENTRY_OK,
            &format!("<entry><resource><Patient>{inner}</Patient></resource></entry>"),
        ])
    };
    let e = parse_bundle(
        with_patient(r#"<active value="yes"/>"#).as_bytes(),
        Format::Xml,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Primitive);
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[1].resource.active")
    );
    let parsed = parse_bundle(
        with_patient(r#"<telecom><rank value="007"/></telecom>"#).as_bytes(),
        Format::Xml,
    )
    .unwrap();
    assert_eq!(
        slots(&parsed),
        [
            None,
            Some((
                ErrorKind::Primitive,
                Some("Bundle.entry[1].resource.telecom[0].rank")
            ))
        ]
    );

    // An unknown element in an entry: fhirbolt cannot read the Bundle, so the whole Bundle fails.
    let xml = xml_batch(&[
        XML_ENTRY_OK,
        r#"<entry><resource><Patient><nickname value="Jo"/></Patient></resource></entry>"#,
    ]);
    let e = parse_bundle(xml.as_bytes(), Format::Xml).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Structure);
    assert_eq!(
        e.expression.as_deref(),
        Some("Bundle.entry[1].resource.nickname")
    );
}

#[test]
fn ten_thousand_entries() {
    let mut entries: Vec<Value> = (0..10_000)
        .map(|i| {
            json!({"fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
                   "resource": {"resourceType": "Patient", "identifier": [{"system": "http://example.org/ids", "value": format!("id-{i}")}],
                                "name": [{"family": "Doe", "given": ["Jane"]}], "gender": "female", "birthDate": "1990-02-28"},
                   "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=id-{i}")}})
        })
        .collect();
    entries[5_000]["resource"]["birthDate"] = json!("1990-02-30");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let bytes = bundle.to_string().into_bytes();

    let started = std::time::Instant::now();
    let parsed = parse_bundle(&bytes, Format::Json).unwrap();
    eprintln!("10,000 entries (JSON): {:?}", started.elapsed());
    assert_eq!(parsed.entry_errors.len(), 10_000);
    assert_eq!(parsed.bundle["entry"].as_array().unwrap().len(), 10_000);
    let bad: Vec<usize> = (0..10_000)
        .filter(|&i| parsed.entry_errors[i].is_some())
        .collect();
    assert_eq!(bad, [5_000]);
    assert_eq!(
        parsed.entry_errors[5_000]
            .as_ref()
            .unwrap()
            .expression
            .as_deref(),
        Some("Bundle.entry[5000].resource.birthDate")
    );

    // XML: the valid Bundle through fhirbolt's writer, then back.
    let mut valid = parsed.bundle;
    valid["entry"][5_000]["resource"]["birthDate"] = json!("1990-02-28");
    let xml = serialize(&valid, Format::Xml, false).unwrap();
    let started = std::time::Instant::now();
    let parsed = parse_bundle(&xml, Format::Xml).unwrap();
    eprintln!("10,000 entries (XML): {:?}", started.elapsed());
    assert_eq!(parsed.entry_errors.len(), 10_000);
    assert!(parsed.entry_errors.iter().all(Option::is_none));
    assert_eq!(parsed.bundle, valid);
}
