//! Bundles the server builds: searchset and history.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::instant;

/// One searchset entry: the resource and whether it matched or was included.
pub struct SearchEntry {
    pub resource: Value,
    pub mode: &'static str,
}

fn full_url(base: &str, resource: &Value) -> String {
    format!(
        "{base}/{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    )
}

pub fn searchset(
    base: &str,
    entries: Vec<SearchEntry>,
    total: Option<i64>,
    links: Vec<(&str, String)>,
) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "id": crate::tracker::new_uid(),
        "meta": { "lastUpdated": instant(&Utc::now()) },
        "type": "searchset",
    });
    if let Some(t) = total {
        b["total"] = json!(t);
    }
    if !links.is_empty() {
        b["link"] = Value::Array(
            links
                .into_iter()
                .map(|(rel, url)| json!({ "relation": rel, "url": url }))
                .collect(),
        );
    }
    if !entries.is_empty() {
        b["entry"] = Value::Array(
            entries
                .into_iter()
                .map(|e| {
                    // Built by hand: `json!` would copy the resource through serde (a tenth of
                    // `$everything`'s CPU), where this moves it.
                    let mut entry = serde_json::Map::with_capacity(3);
                    entry.insert("fullUrl".into(), Value::String(full_url(base, &e.resource)));
                    entry.insert("resource".into(), e.resource);
                    entry.insert("search".into(), json!({ "mode": e.mode }));
                    Value::Object(entry)
                })
                .collect(),
        );
    }
    b
}

pub struct HistoryEntry {
    pub resource_type: &'static str,
    pub id: String,
    pub version: i32,
    pub at: DateTime<Utc>,
    pub operation: String,
    pub resource: Option<Value>,
}

pub fn history(base: &str, entries: Vec<HistoryEntry>, self_link: String) -> Value {
    let total = entries.len();
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let (method, status) = match e.operation.as_str() {
                "create" => ("POST", "201 Created"),
                "delete" => ("DELETE", "200 OK"),
                _ => ("PUT", "200 OK"),
            };
            let url = if method == "POST" {
                e.resource_type.to_string()
            } else {
                format!("{}/{}", e.resource_type, e.id)
            };
            let mut entry = json!({
                "fullUrl": format!("{base}/{}/{}", e.resource_type, e.id),
                "request": { "method": method, "url": url },
                "response": {
                    "status": status,
                    "etag": format!("W/\"{}\"", e.version),
                    "lastModified": instant(&e.at),
                },
            });
            if let Some(r) = e.resource {
                entry["resource"] = r;
            }
            entry
        })
        .collect();
    let mut b = json!({
        "resourceType": "Bundle",
        "id": crate::tracker::new_uid(),
        "meta": { "lastUpdated": instant(&Utc::now()) },
        "type": "history",
        "total": total,
        "link": [{ "relation": "self", "url": self_link }],
    });
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    b
}
