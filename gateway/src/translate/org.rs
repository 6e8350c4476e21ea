//! Org units rendered as FHIR Organization and Location (read-only: they come from metadata).

use serde_json::{json, Value};

use crate::fhir::instant;
use crate::store::orgs::OrgRow;

/// Identifier system under which an org unit's DHIS2 code is published.
pub const ORG_CODE_SYSTEM: &str = "urn:kiunga:org-unit-code";

pub fn organization(o: &OrgRow, parent_uid: Option<&str>) -> Value {
    let mut v = json!({
        "resourceType": "Organization",
        "id": o.uid,
        "meta": { "versionId": "1", "lastUpdated": instant(&o.last_updated) },
        "active": true,
        "name": o.name,
    });
    if let Some(code) = &o.code {
        v["identifier"] = json!([{ "system": ORG_CODE_SYSTEM, "value": code }]);
    }
    if let Some(p) = parent_uid {
        v["partOf"] = json!({ "reference": format!("Organization/{p}") });
    }
    v
}

pub fn location(o: &OrgRow, parent_uid: Option<&str>) -> Value {
    let mut v = json!({
        "resourceType": "Location",
        "id": o.uid,
        "meta": { "versionId": "1", "lastUpdated": instant(&o.last_updated) },
        "status": "active",
        "name": o.name,
        "mode": "instance",
        "managingOrganization": { "reference": format!("Organization/{}", o.uid) },
    });
    if let Some(code) = &o.code {
        v["identifier"] = json!([{ "system": ORG_CODE_SYSTEM, "value": code }]);
    }
    if let Some(p) = parent_uid {
        v["partOf"] = json!({ "reference": format!("Location/{p}") });
    }
    v
}
