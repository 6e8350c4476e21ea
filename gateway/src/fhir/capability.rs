//! The CapabilityStatement, generated from the table of what the HTTP layer actually routes.

use chrono::Utc;
use serde_json::{json, Value};

use super::instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Read,
    Vread,
    Update,
    Delete,
    HistoryInstance,
    HistoryType,
    Create,
    SearchType,
}

impl Interaction {
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::Create => "create",
            Interaction::SearchType => "search-type",
        }
    }
}

pub struct SearchParam {
    pub name: &'static str,
    pub kind: &'static str,
    pub doc: &'static str,
}

pub struct ResourceCapability {
    pub resource_type: &'static str,
    pub interactions: &'static [Interaction],
    pub search_params: &'static [SearchParam],
    pub documentation: &'static str,
}

impl ResourceCapability {
    pub fn supports(&self, i: Interaction) -> bool {
        self.interactions.contains(&i)
    }
}

pub fn statement(base: &str, resources: &[ResourceCapability], mapping_version: &str) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|r| {
            let mut v = json!({
                "type": r.resource_type,
                "documentation": r.documentation,
                "interaction": r.interactions.iter().map(|i| json!({ "code": i.code() })).collect::<Vec<_>>(),
            });
            if r.supports(Interaction::Update) || r.supports(Interaction::Create) {
                v["versioning"] = json!("versioned");
                v["readHistory"] = json!(r.supports(Interaction::Vread));
                v["updateCreate"] = json!(false);
            }
            if r.supports(Interaction::Create) {
                v["conditionalCreate"] = json!(true);
                v["conditionalUpdate"] = json!(true);
                v["conditionalDelete"] = json!("single");
                // FHIR forbids empty arrays, so the lists appear only when they have entries.
                let of_type = |list: &[(&str, &'static str)]| list.iter().filter(|(t, _)| *t == r.resource_type).map(|(_, i)| *i).collect::<Vec<_>>();
                let includes = of_type(crate::rest::search::INCLUDES);
                let revincludes = of_type(crate::rest::search::REVINCLUDES);
                if !includes.is_empty() {
                    v["searchInclude"] = json!(includes);
                }
                if !revincludes.is_empty() {
                    v["searchRevInclude"] = json!(revincludes);
                }
            }
            const HL7: &str = "http://hl7.org/fhir/OperationDefinition/";
            // PIXm's operation is defined by IHE, not HL7: its definition is a full URL.
            const PIXM: &str = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix";
            // Ours (docs/api.md): R5's $merge has no undo; this one puts back what a merge moved.
            const UNMERGE: &str = "urn:kiunga:fhir:OperationDefinition:Patient-unmerge";
            // Ours (docs/api.md): moves the ownership of a person's record in a program.
            const TRANSFER: &str = "urn:kiunga:fhir:OperationDefinition:Patient-transfer";
            const BREAK_GLASS: &str = "urn:kiunga:fhir:OperationDefinition:Patient-break-glass";
            let operations: &[(&str, &str)] = match r.resource_type {
                "Patient" => &[("everything", "Patient-everything"), ("match", "Patient-match"), ("ihe-pix", PIXM), ("merge", "Patient-merge"), ("unmerge", UNMERGE), ("transfer", TRANSFER), ("break-glass", BREAK_GLASS)],
                "ConceptMap" => &[("translate", "ConceptMap-translate")],
                "CodeSystem" => &[("lookup", "CodeSystem-lookup"), ("validate-code", "CodeSystem-validate-code")],
                "ValueSet" => &[("validate-code", "ValueSet-validate-code")],
                _ => &[],
            };
            if !operations.is_empty() {
                v["operation"] = operations.iter().map(|(name, def)| {
                    let definition = if def.contains(':') { (*def).to_owned() } else { format!("{HL7}{def}") };
                    json!({ "name": name, "definition": definition })
                }).collect::<Vec<_>>().into();
            }
            if !r.search_params.is_empty() {
                v["searchParam"] =
                    r.search_params.iter().map(|p| json!({ "name": p.name, "type": p.kind, "documentation": p.doc })).collect::<Vec<_>>().into();
            }
            v
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(&Utc::now()),
        "publisher": "Kiunga",
        "kind": "instance",
        "software": { "name": "Kiunga", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": format!("Kiunga FHIR gateway (mappings {mapping_version})"), "url": base },
        // The mapping set in force, so clients and operators can tell which maps translated what.
        "extension": [{ "url": "urn:kiunga:mapping-version", "valueString": mapping_version }],
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "documentation": "Resources are stored as DHIS2-style tracker records and rendered back from them.",
            "resource": resources,
            "interaction": [
                { "code": "transaction", "documentation": "POST /fhir: all entries in one database transaction" },
                { "code": "batch", "documentation": "POST /fhir: each entry on its own" },
            ],
            // HAPI MDM's operations over the links matching made (docs/identity.md).
            "operation": [
                { "name": "mdm-query-links", "definition": "http://hapifhir.io/fhir/OperationDefinition/mdm-query-links", "documentation": "links and potential duplicates: goldenResourceId, resourceId, matchResult, linkSource, _offset, _count" },
                { "name": "mdm-update-link", "definition": "http://hapifhir.io/fhir/OperationDefinition/mdm-update-link", "documentation": "a person's decision on a pair: matchResult MATCH or NO_MATCH" },
                { "name": "mdm-create-link", "definition": "http://hapifhir.io/fhir/OperationDefinition/mdm-create-link", "documentation": "a person's decision on a pair the engine proposed nothing for: matchResult MATCH (default), NO_MATCH or POSSIBLE_MATCH" },
            ],
        }],
    })
}
