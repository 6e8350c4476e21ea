//! A broken mapping file stops start-up with `file:line: what is wrong`, every problem at once.

mod support;

use kiunga::app::{AppState, StartError};
use support::{test_config, TestDb};

fn start_with_patient_mapping(text: &str) -> Result<(), String> {
    let db = TestDb::new();
    let dir = std::env::temp_dir().join(format!("kiunga-map-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("patient.toml"), text).unwrap();
    for other in std::fs::read_dir(support::repo().join("mappings")).unwrap() {
        let other = other.unwrap().path();
        if other.file_name().unwrap() != "patient.toml" && other.is_file() {
            std::fs::copy(&other, dir.join(other.file_name().unwrap())).unwrap();
        }
    }
    let mut config = test_config(&db);
    config.mappings_dir = dir.clone();
    let result = match AppState::start(config) {
        Ok(_) => Ok(()),
        Err(StartError::Mappings(p)) => Err(p.to_string()),
        Err(e) => panic!("unexpected start-up error: {e}"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result.map_err(|e| e.replace(&format!("{}/", dir.display()), ""))
}

#[test]
fn the_shipped_mappings_are_valid() {
    let shipped = std::fs::read_to_string(support::repo().join("mappings/patient.toml")).unwrap();
    start_with_patient_mapping(&shipped).unwrap();
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"tracked_entity_type = "PERSON"

[[identifier]]
system = "http://example.org/national-id"
attribute = "NATIONL_ID"

[[identifier]]
system = "http://example.org/national-id"
attribute = "FAMILY_NAME"

[name]
family = "FAMILY_NAME"

[gender]
attribute = "SEX"
codes = { female = "FEM", male = "MALE", other = "OTHER", unknown = "UNKNOWN" }

[birth_date]
attribute = "PHONE"
"#;
    let err = start_with_patient_mapping(text).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with(
            "patient.toml:5: identifier: unknown tracked entity attribute `NATIONL_ID` (known: "
        ),
        "{err}"
    );
    assert!(lines.iter().any(|l| l.starts_with("patient.toml:8: identifier system `http://example.org/national-id` is already mapped at line 4")), "{err}");
    assert!(lines.contains(&"patient.toml:12: name.family: attribute `FAMILY_NAME` is already mapped at line 9; one attribute holds one element"), "{err}");
    assert!(
        lines.iter().any(|l| l.starts_with(
            "patient.toml:16: gender.codes.female: `FEM` is not an option of option set SEX"
        )),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "patient.toml:19: birth_date: attribute `PHONE` has value type PHONE_NUMBER"
        )),
        "{err}"
    );
}

#[test]
fn syntax_and_unknown_keys_are_positioned() {
    let err = start_with_patient_mapping(
        "tracked_entity_type = \"PERSON\"\n[name]\nfamly = \"FAMILY_NAME\"\n",
    )
    .unwrap_err();
    assert!(
        err.starts_with("patient.toml:3: unknown field `famly`"),
        "{err}"
    );
    let err = start_with_patient_mapping("tracked_entity_type = \"PERSON\n").unwrap_err();
    assert!(err.starts_with("patient.toml:1: "), "{err}");
    let err = start_with_patient_mapping("tracked_entity_type = \"ANIMAL\"\n").unwrap_err();
    assert!(
        err.starts_with("patient.toml:1: unknown tracked entity type `ANIMAL` (known: PERSON)"),
        "{err}"
    );
}

#[test]
fn crosswalk_table_problems_name_the_csv_line() {
    let db = TestDb::new();
    let dir = std::env::temp_dir().join(format!("kiunga-csv-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(support::repo().join("mappings")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    let csv = std::fs::read_to_string(dir.join("diagnoses.csv")).unwrap();
    // A second row claiming ICD-10 I10 for another concept.
    let broken = format!("{csv}ZZ99,Something else,I10,Essential (primary) hypertension,,,test\n");
    std::fs::write(dir.join("diagnoses.csv"), &broken).unwrap();
    let line = broken.lines().count();
    let mut config = test_config(&db);
    config.mappings_dir = dir.clone();
    let err = match AppState::start(config) {
        Err(StartError::Mappings(p)) => p.to_string(),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a duplicate code was accepted"),
    };
    let err = err.replace(&format!("{}/", dir.display()), "");
    assert!(
        err.starts_with(&format!(
            "diagnoses.csv:{line}: ICD10 code `I10` is already at diagnoses.csv:2;"
        )),
        "{err}"
    );
    assert!(!err.contains("missing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fhir_concept_maps_and_code_systems_in_the_mappings_directory_are_used() {
    let dir = support::mappings_copy();
    let local = "http://example.org/fhir/CodeSystem/local-dx";
    std::fs::write(
        dir.join("local-dx.codesystem.json"),
        serde_json::json!({ "resourceType": "CodeSystem", "url": local, "name": "LocalDx", "status": "active", "content": "complete",
            "concept": [{ "code": "HTN", "display": "High blood pressure" }, { "code": "DM2", "display": "Sugar disease" }] })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("local-dx-to-icd11.conceptmap.json"),
        serde_json::json!({ "resourceType": "ConceptMap", "name": "LocalDxToIcd11", "status": "active", "group": [{
            "source": local, "target": "http://id.who.int/icd/release/11/mms",
            "element": [{ "code": "HTN", "target": [{ "code": "BA00", "equivalence": "equivalent" }] },
                        { "code": "DM2", "target": [{ "code": "5A11", "equivalence": "equivalent" }] }] }] })
        .to_string(),
    )
    .unwrap();
    let app = support::TestApp::start_with(|c| c.mappings_dir = dir.clone());
    let p = app.get(&format!("ConceptMap/$translate?system={local}&code=HTN&targetsystem=http://hl7.org/fhir/sid/icd-10")).expect(200);
    assert_eq!(
        p["parameter"][1]["part"][1]["valueCoding"]["code"], "I10",
        "the local code joins the crosswalk concept: {p}"
    );
    let l = app
        .get(&format!("CodeSystem/$lookup?system={local}&code=DM2"))
        .expect(200);
    assert_eq!(l["parameter"][1]["valueString"], "Sugar disease");

    // A non-equivalent target is named, with the file, and the set is refused.
    std::fs::write(
        dir.join("wider.conceptmap.json"),
        serde_json::json!({ "resourceType": "ConceptMap", "status": "active", "group": [{
            "source": local, "target": "http://id.who.int/icd/release/11/mms",
            "element": [{ "code": "HTN", "target": [{ "code": "BA00", "equivalence": "wider" }] }] }] })
        .to_string(),
    )
    .unwrap();
    let err = app.state.reload_mappings().unwrap_err().to_string();
    assert!(
        err.contains(
            "wider.conceptmap.json: ConceptMap.group[0].element[0].target[0]: equivalence `wider`"
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts with a copy of the shipped mappings changed by `edit`, and returns the problems.
fn problems_after(edit: impl FnOnce(&std::path::Path)) -> String {
    let db = TestDb::new();
    let dir = support::mappings_copy();
    edit(&dir);
    let mut config = test_config(&db);
    config.mappings_dir = dir.clone();
    let out = match AppState::start(config) {
        Err(StartError::Mappings(p)) => p.to_string().replace(&format!("{}/", dir.display()), ""),
        Err(e) => panic!("{e}"),
        Ok(_) => String::from("(accepted)"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn replace_in(dir: &std::path::Path, file: &str, from: &str, to: &str) {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(dir.join(file), text.replacen(from, to, 1)).unwrap();
}

fn line_of(dir: &std::path::Path, file: &str, needle: &str) -> usize {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1
}

#[test]
fn every_checker_message_names_file_and_line() {
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );
    // (file, replace, with, line marker in the edited file, expected message after `file:line: `)
    let cases: &[Case] = &[
        (
            "observation.toml",
            "data_element = \"HEIGHT\"",
            "data_element = \"HEIGTH\"",
            "HEIGTH",
            "unknown data element `HEIGTH` (known: ",
        ),
        (
            "observation.toml",
            "code = \"8302-2\"",
            "code = \"29463-7\"",
            "display = \"Body height\"",
            "",
        ),
        (
            "observation.toml",
            "default_stage = \"OPD_VISIT\"",
            "default_stage = \"OPD\"",
            "default_stage",
            "default_stage: unknown program stage `OPD` (known: ",
        ),
        (
            "observation.toml",
            "category = \"laboratory\"",
            "category = \"labs\"",
            "\"labs\"",
            "category `labs` is not an observation-category code",
        ),
        (
            "observation.toml",
            "value_system = \"http://id.who.int/icd/release/11/mms\"",
            "value_system = \"http://example.org/unknown\"",
            "example.org/unknown",
            "value_system `http://example.org/unknown` is not a [[system]] of terminology.toml",
        ),
        (
            "encounter.toml",
            "stage = \"ANC_FIRST\"",
            "stage = \"ANC_1\"",
            "ANC_1",
            "type: unknown program stage `ANC_1` (known: ",
        ),
        (
            "encounter.toml",
            "in-progress = \"ACTIVE\"",
            "in-progress = \"RUNNING\"",
            "RUNNING",
            "status.in-progress: `RUNNING` is not an event status",
        ),
        (
            "encounter.toml",
            "code = \"424619006\"",
            "code = \"424441002\"",
            "display = \"Prenatal visit\"",
            "",
        ),
        (
            "terminology.toml",
            "code = \"icd10\"",
            "code = \"icd_10\"",
            "icd_10",
            "crosswalk PrimaryCareDiagnoses: `diagnoses.csv` has no column `icd_10`",
        ),
        (
            "terminology.toml",
            "file = \"diagnoses.csv\"",
            "file = \"dx.csv\"",
            "dx.csv",
            "crosswalk PrimaryCareDiagnoses: cannot read `dx.csv`",
        ),
        (
            "organizations.toml",
            "# [[organization]]\n# name",
            "[[organization]]\nname = \"X\"\norg_unit = \"KD_NOPE\"\n# name",
            "KD_NOPE",
            "unknown org unit `KD_NOPE` (known: ",
        ),
    ];
    for (file, from, to, marker, expected) in cases {
        let mut line = 0;
        let out = problems_after(|dir| {
            replace_in(dir, file, from, to);
            line = line_of(dir, file, marker);
        });
        if expected.is_empty() {
            // a code mapped twice: the second entry's code line
            assert!(
                out.contains(&format!("{file}:")) && out.contains("mapped"),
                "{file}: {out}"
            );
            continue;
        }
        let want = format!("{file}:{line}: {expected}");
        assert!(
            out.lines().any(|l| l.starts_with(&want)),
            "wanted `{want}`, got:\n{out}"
        );
    }
    // A table row whose ICD-11 code is not an option of the diagnosis option set.
    let out = problems_after(|dir| {
        let csv = std::fs::read_to_string(dir.join("diagnoses.csv")).unwrap();
        std::fs::write(
            dir.join("diagnoses.csv"),
            format!("{csv}ZZ98,Not an option,,,,,test\n"),
        )
        .unwrap();
    });
    assert!(out.contains(": ICD11MMS code `ZZ98` is not an option of option set DIAGNOSIS_ICD11 (data element DIAGNOSIS)"), "{out}");
    assert!(out.contains("diagnoses.csv:50:"), "{out}");
    assert!(!out.contains("missing"), "the files are all there: {out}");
    // Files the gateway does not know, and JSON that is neither a CodeSystem nor a ConceptMap.
    let out = problems_after(|dir| std::fs::write(dir.join("patients.toml"), "x = 1\n").unwrap());
    assert!(
        out.contains("patients.toml: not a known mapping file (known: patient.toml"),
        "{out}"
    );
    let out = problems_after(|dir| {
        std::fs::write(
            dir.join("x.json"),
            r#"{"resourceType": "Basic", "code": {"text": "x"}}"#,
        )
        .unwrap()
    });
    assert!(out.contains("x.json: a JSON file in the mappings directory must be a FHIR CodeSystem or ConceptMap, not Basic"), "{out}");
}

#[test]
fn a_unit_without_ucum_conversion_and_an_attribute_outside_the_entity_type_are_named() {
    let db = TestDb::new();
    // Metadata with two extra pieces: a data element in shoe sizes, and an attribute that the
    // Person type does not carry.
    let md = std::env::temp_dir().join(format!("kiunga-md-extra-{}", kiunga::tracker::new_uid()));
    std::fs::create_dir_all(&md).unwrap();
    std::fs::copy(
        support::repo().join("fixtures/metadata/demo.json"),
        md.join("demo.json"),
    )
    .unwrap();
    std::fs::write(
        md.join("extra.json"),
        r#"{"attributes": [{"id": "RboIAIAdAEj", "code": "UNIT"}],
            "dataElements": [{"id": "ShoeSize001", "code": "SHOE_SIZE", "name": "Shoe size", "valueType": "NUMBER",
              "attributeValues": [{"attribute": {"id": "RboIAIAdAEj"}, "value": "[shoe]"}]}],
            "trackedEntityAttributes": [{"id": "Loose000001", "code": "LOOSE_ATTR", "name": "Loose", "valueType": "TEXT"}],
            "programStages": [{"id": "j5zt5PePKl8", "code": "OPD_VISIT", "name": "OPD visit", "program": {"id": "GNcR6EXJfvM"}, "repeatable": true,
              "programStageDataElements": [{"dataElement": {"id": "ShoeSize001"}}]}]}"#,
    )
    .unwrap();
    let dir = support::mappings_copy();
    let obs = std::fs::read_to_string(dir.join("observation.toml")).unwrap();
    std::fs::write(dir.join("observation.toml"), format!("{obs}\n[[code]]\nsystem = \"http://example.org/codes\"\ncode = \"shoe\"\ndata_element = \"SHOE_SIZE\"\n")).unwrap();
    let pat = std::fs::read_to_string(dir.join("patient.toml")).unwrap();
    std::fs::write(
        dir.join("patient.toml"),
        pat.replace(
            "city = \"VILLAGE\"\n",
            "city = \"VILLAGE\"\ndistrict = \"LOOSE_ATTR\"\n",
        ),
    )
    .unwrap();
    let mut config = test_config(&db);
    config.metadata_dir = md.clone();
    config.mappings_dir = dir.clone();
    let err = match AppState::start(config) {
        Err(StartError::Mappings(p)) => p.to_string().replace(&format!("{}/", dir.display()), ""),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    };
    let obs_line = line_of(&dir, "observation.toml", "data_element = \"SHOE_SIZE\"");
    assert!(err.contains(&format!("observation.toml:{obs_line}: data element `SHOE_SIZE` has unit `[shoe]`, which has no UCUM conversion here")), "{err}");
    assert!(err.contains("address.district: attribute `LOOSE_ATTR` is not an attribute of the tracked entity type"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&md);
}

#[test]
fn identifier_domain_declarations_are_checked() {
    let text = r#"tracked_entity_type = "PERSON"

[[identifier]]
system = "http://example.org/national-id"
attribute = "NATIONAL_ID"
unique = false
ignore = ["0000000000", "", "0000000000"]

[[identifier]]
system = "http://hospital.smarthealthit.org"
attribute = "MRN"
unique = true
single_valued = false
"#;
    let err = start_with_patient_mapping(text).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("patient.toml:6: identifier system `http://example.org/national-id`: unique = false but attribute `NATIONAL_ID` is unique in the metadata")), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("patient.toml:7: identifier system `http://example.org/national-id`: an empty `ignore` value")), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("patient.toml:7: identifier system `http://example.org/national-id`: `0000000000` is listed twice in `ignore`")), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("patient.toml:12: identifier system `http://hospital.smarthealthit.org`: unique = true but attribute `MRN` is not unique in the metadata")), "{err}");
    assert_eq!(lines.len(), 4, "{err}");
}

/// The matching rules are checked like every mapping file: each problem with its line.
#[test]
fn matching_rule_problems_name_their_line() {
    type Case = (&'static str, &'static str, &'static str, &'static str);
    // (replace, with, line marker in the edited file, expected message after `matching.toml:N: `)
    let cases: &[Case] = &[
        ("m = 0.97", "m = 1.5", "m = 1.5", "fields.name.m = 1.5: must be a probability strictly between 0 and 1"),
        ("u = 0.001", "u = 0.99", "m = 0.97", "fields.name: m = 0.97 is not above u = 0.99"),
        ("comparator = \"jaro_winkler\"", "comparator = \"jaro\"", "comparator = \"jaro\"", "fields.name.comparator: unknown comparator `jaro` (known: jaro_winkler, damerau_levenshtein, exact)"),
        ("phonetic = \"double_metaphone\"", "phonetic = \"nysiis\"", "phonetic = \"nysiis\"", "fields.name.phonetic: unknown phonetic code `nysiis`"),
        ("possible = 0.5 ", "possible = 0.9999 ", "certain = 0.9995", "thresholds: need possible < probable < certain"),
        ("birth_year_window = 1", "birth_year_window = 40", "birth_year_window = 40", "blocking.birth_year_window = 40: use 0 to 10 years"),
        ("year_tolerance = 1", "year_tolerance = 9", "year_tolerance = 9", "fields.birth_date.year_tolerance = 9: use 0 to 5 years"),
        ("[fields.gender]", "[fields.sex]", "[fields.sex]", "unknown field `sex`"),
    ];
    for (from, to, marker, expected) in cases {
        let mut line = 0;
        let out = problems_after(|dir| {
            replace_in(dir, "matching.toml", from, to);
            line = line_of(dir, "matching.toml", marker);
        });
        let prefix = format!("matching.toml:{line}: {expected}");
        assert!(
            out.lines().any(|l| l.starts_with(&prefix)),
            "expected `{prefix}`, got:\n{out}"
        );
    }
    // A trusted identifier system must be unique.
    let out = problems_after(|dir| {
        replace_in(
            dir,
            "patient.toml",
            "type_text = \"Medical record number\"",
            "type_text = \"Medical record number\"\ntrusted = true",
        );
    });
    assert!(
        out.contains("trusted = true needs a unique attribute; `MRN` is not unique"),
        "{out}"
    );
}

#[test]
fn care_mapping_problems_name_their_line() {
    type Case = (&'static str, &'static str, &'static str, &'static str);
    // (replace, with, line marker in the edited file, expected message after `care.toml:N: `)
    let cases: &[Case] = &[
        (
            "type = \"CAREGIVER_CHILD\"",
            "type = \"AUNT_CHILD\"",
            "AUNT_CHILD",
            "unknown relationship type `AUNT_CHILD` (known: CAREGIVER_CHILD, MOTHER_CHILD)",
        ),
        (
            "related_person = \"to\"",
            "related_person = \"child\"",
            "related_person = \"child\"",
            "related_person: `child` is neither `from` nor `to`",
        ),
        (
            "code = \"NMTH\"",
            "code = \"MTH\"",
            "code = \"MTH\"\ndisplay = \"natural mother\"",
            "relationship http://terminology.hl7.org/CodeSystem/v3-RoleCode|MTH is already mapped",
        ),
        (
            "program = \"ANC\"",
            "program = \"TB\"",
            "program = \"TB\"",
            "unknown program `TB` (known: ANC, OPD, VITAL)",
        ),
        (
            "one_from_per_to = true",
            "one_from_per_to = \"yes\"",
            "one_from_per_to = \"yes\"",
            "invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (from, to, marker, expected) in cases {
        let mut line = 0;
        let out = problems_after(|dir| {
            replace_in(dir, "care.toml", from, to);
            let text = std::fs::read_to_string(dir.join("care.toml")).unwrap();
            // A marker spanning two lines points at its first line.
            let first = marker.lines().next().unwrap();
            line = match marker.lines().count() {
                1 => line_of(dir, "care.toml", first),
                _ => {
                    let at = text.find(marker).unwrap();
                    text[..at].matches('\n').count() + 1
                }
            };
        });
        let prefix = format!("care.toml:{line}: {expected}");
        assert!(
            out.lines().any(|l| l.starts_with(&prefix)),
            "expected `{prefix}`, got:\n{out}"
        );
    }
}
