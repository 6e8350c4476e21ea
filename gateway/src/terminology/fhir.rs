//! Terminology as FHIR: `ConceptMap/$translate` answered from the crosswalks, and the generated
//! CodeSystem and ConceptMap resources.

use serde_json::{json, Value};

use super::{Coded, Terminology};

fn coding(c: &Coded) -> Value {
    let mut v = json!({ "system": c.system, "code": c.code });
    if let Some(d) = &c.display {
        v["display"] = json!(d);
    }
    v
}

/// The id of the ConceptMap from `source` to `target` within crosswalk `name`.
pub fn concept_map_id(t: &Terminology, crosswalk: &str, source: &str, target: &str) -> String {
    let short = |uri: &str| {
        t.system(uri)
            .map(|s| s.name.to_lowercase())
            .unwrap_or_else(|| "x".into())
    };
    format!(
        "{}-{}-to-{}",
        crosswalk.to_lowercase(),
        short(source),
        short(target)
    )
}

/// `$translate`: the equivalents of `system|code`, in `target` when given, else in every other system.
pub fn translate(
    t: &Terminology,
    base: &str,
    system: &str,
    code: &str,
    target: Option<&str>,
) -> Value {
    let mut params = Vec::new();
    let matches: Vec<(&Coded, String)> = match t.concept(system, code) {
        None => Vec::new(),
        Some(concept) => {
            let cw = &t.crosswalks[concept.crosswalk].name;
            concept
                .codes
                .iter()
                .filter(|c| c.system != system && target.is_none_or(|tg| tg == c.system))
                .map(|c| {
                    (
                        c,
                        format!(
                            "{base}/ConceptMap/{}",
                            concept_map_id(t, cw, system, &c.system)
                        ),
                    )
                })
                .collect()
        }
    };
    params.push(json!({ "name": "result", "valueBoolean": !matches.is_empty() }));
    if matches.is_empty() {
        let why = match (t.concept(system, code), t.system(system)) {
            (_, None) => format!("`{system}` is not a code system this registry knows"),
            (None, Some(_)) => format!("no crosswalk holds {system}|{code}"),
            (Some(_), Some(_)) => format!(
                "{system}|{code} has no equivalent in {}",
                target.unwrap_or("another system")
            ),
        };
        params.push(json!({ "name": "message", "valueString": why }));
    }
    for (c, source) in matches {
        params.push(json!({
            "name": "match",
            "part": [
                { "name": "equivalence", "valueCode": "equivalent" },
                { "name": "concept", "valueCoding": coding(c) },
                { "name": "source", "valueUri": source },
            ],
        }));
    }
    json!({ "resourceType": "Parameters", "parameter": params })
}

/// Every ConceptMap the crosswalks define: one per crosswalk and ordered pair of its systems.
pub fn concept_maps(t: &Terminology, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (ci, cw) in t.crosswalks.iter().enumerate() {
        for source in &cw.systems {
            for target in cw.systems.iter().filter(|s| *s != source) {
                let elements: Vec<Value> = t
                    .concepts
                    .iter()
                    .filter(|c| c.crosswalk == ci)
                    .filter_map(|c| {
                        let s = c.codes.iter().find(|x| &x.system == source)?;
                        let tg = c.codes.iter().find(|x| &x.system == target)?;
                        let mut e = json!({ "code": s.code, "target": [{ "code": tg.code, "equivalence": "equivalent" }] });
                        if let Some(d) = &s.display {
                            e["display"] = json!(d);
                        }
                        if let Some(d) = &tg.display {
                            e["target"][0]["display"] = json!(d);
                        }
                        Some(e)
                    })
                    .collect();
                let id = concept_map_id(t, &cw.name, source, target);
                let mut map = json!({
                    "resourceType": "ConceptMap",
                    "id": id,
                    "url": format!("{base}/ConceptMap/{id}"),
                    "name": format!("{}{}To{}", cw.name, t.system(source).map(|s| s.name.as_str()).unwrap_or("Source"), t.system(target).map(|s| s.name.as_str()).unwrap_or("Target")),
                    "status": "active",
                    "sourceUri": source,
                    "targetUri": target,
                });
                if let Some(title) = &cw.title {
                    map["title"] = json!(title);
                }
                if !elements.is_empty() {
                    map["group"] =
                        json!([{ "source": source, "target": target, "element": elements }]);
                }
                out.push(map);
            }
        }
    }
    out
}

/// Every declared code system, with the codes the crosswalks know (content `fragment`).
pub fn code_systems(t: &Terminology) -> Vec<Value> {
    t.systems
        .iter()
        .map(|s| {
            let concepts: Vec<Value> = t
                .codes_of(&s.uri)
                .into_iter()
                .map(|c| {
                    let mut v = json!({ "code": c.code });
                    if let Some(d) = &c.display {
                        v["display"] = json!(d);
                    }
                    v
                })
                .collect();
            let mut cs = json!({
                "resourceType": "CodeSystem",
                "id": s.name.to_lowercase(),
                "url": s.uri,
                "name": s.name,
                "status": "active",
                "content": "fragment",
                "count": concepts.len(),
            });
            if let Some(title) = &s.title {
                cs["title"] = json!(title);
            }
            if !concepts.is_empty() {
                cs["concept"] = Value::Array(concepts);
            }
            cs
        })
        .collect()
}

/// `CodeSystem/$lookup`: the display of a known code, or None.
pub fn lookup(t: &Terminology, system: &str, code: &str) -> Option<Value> {
    let cs = t.system(system)?;
    let concept = t.concept(system, code)?;
    let c = concept
        .codes
        .iter()
        .find(|c| c.system == system && c.code == code)?;
    let mut params = vec![json!({ "name": "name", "valueString": cs.name })];
    if let Some(d) = &c.display {
        params.push(json!({ "name": "display", "valueString": d }));
    }
    for other in concept.codes.iter().filter(|o| o.system != system) {
        // Equivalent codes of other systems, as designations without a use.
        params.push(json!({ "name": "designation", "part": [
            { "name": "value", "valueString": format!("{}|{}{}", other.system, other.code, other.display.as_deref().map(|d| format!(" {d}")).unwrap_or_default()) },
        ]}));
    }
    Some(json!({ "resourceType": "Parameters", "parameter": params }))
}

/// `CodeSystem/$validate-code`: is `code` a code of `system` that the registry knows?
pub fn validate_code(t: &Terminology, system: &str, code: &str, display: Option<&str>) -> Value {
    let known = t.concept(system, code).and_then(|c| {
        c.codes
            .iter()
            .find(|x| x.system == system && x.code == code)
    });
    let mut params = vec![
        json!({ "name": "result", "valueBoolean": known.is_some() && display_ok(known, display) }),
    ];
    match known {
        Some(c) => {
            if let Some(d) = &c.display {
                params.push(json!({ "name": "display", "valueString": d }));
            }
            if !display_ok(known, display) {
                params.push(json!({ "name": "message", "valueString": format!("the display `{}` is not the display of {system}|{code}", display.unwrap_or_default()) }));
            }
        }
        None => params.push(
            json!({ "name": "message", "valueString": match t.system(system) {
            None => format!("`{system}` is not a code system this registry knows"),
            Some(_) => format!("`{code}` is not a known code of {system}"),
        } }),
        ),
    }
    json!({ "resourceType": "Parameters", "parameter": params })
}

fn display_ok(known: Option<&Coded>, display: Option<&str>) -> bool {
    match (known.and_then(|c| c.display.as_deref()), display) {
        (Some(k), Some(d)) => k.eq_ignore_ascii_case(d),
        _ => true,
    }
}
