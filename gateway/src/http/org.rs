//! Organization and Location: org units, read and searched.

use actix_web::web;

use crate::app::AppState;
use crate::error::Error;
use crate::fhir::bundle::{self, SearchEntry};
use crate::fhir::search::{paging, query_with_offset, Param};
use crate::fhir::FhirResponse;
use crate::store::orgs::{self, NameMatch, OrgQuery, OrgRow};
use crate::translate::org::{location, organization, ORG_CODE_SYSTEM};
use crate::translate::reference_id;

fn render(t: &str, o: &OrgRow, parent: Option<&str>) -> serde_json::Value {
    if t == "Location" {
        location(o, parent)
    } else {
        organization(o, parent)
    }
}

pub async fn read(state: &web::Data<AppState>, t: &str, id: String) -> Result<FhirResponse, Error> {
    let pool = state.pool.clone();
    let t2 = t.to_string();
    let (row, parent) = web::block(move || -> Result<_, Error> {
        let mut conn = pool.get()?;
        let row = orgs::by_uid(&mut conn, &id)?.ok_or_else(|| {
            Error::NotFound(format!("{t2}/{id} is not an org unit of this registry"))
        })?;
        let parent = orgs::parent_uid(&mut conn, row.parent_id)?;
        Ok((row, parent))
    })
    .await??;
    Ok(FhirResponse {
        status: 200,
        version: Some(1),
        last_modified: Some(row.last_updated),
        body: Some(render(t, &row, parent.as_deref())),
        location: None,
    })
}

fn split(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub async fn search(
    state: &web::Data<AppState>,
    t: &str,
    params: Vec<Param>,
) -> Result<FhirResponse, Error> {
    let (count, offset) = paging(&params)?;
    let mut q = OrgQuery {
        count,
        offset,
        ..Default::default()
    };
    for p in &params {
        match (p.name.as_str(), p.modifier.as_deref()) {
            ("_count" | "_offset" | "_format" | "_pretty", _) => {}
            ("_id", None) => q.ids = Some(split(&p.value)),
            ("identifier", None) => {
                let mut codes = Vec::new();
                for v in split(&p.value) {
                    match v.split_once('|') {
                        Some((sys, code)) if sys.is_empty() || sys == ORG_CODE_SYSTEM => codes.push(code.to_string()),
                        Some(_) => {}
                        None => codes.push(v),
                    }
                }
                q.codes = Some(codes);
            }
            ("name", m) => q.names.push(match m {
                None => NameMatch::Prefix(p.value.clone()),
                Some("exact") => NameMatch::Exact(p.value.clone()),
                Some("contains") => NameMatch::Contains(p.value.clone()),
                Some(other) => return Err(Error::invalid(format!("name:{other} is not supported (use name, name:exact or name:contains)"))),
            }),
            ("partof", None) => {
                let kind = if t == "Location" { "Location" } else { "Organization" };
                q.parent_uids = Some(split(&p.value).iter().map(|r| reference_id(r, kind).unwrap_or(r).to_string()).collect());
            }
            (name, _) => return Err(Error::invalid(format!("unknown search parameter `{name}` for {t} (known: _id, identifier, name, partof, _count)"))),
        }
    }
    let pool = state.pool.clone();
    let (rows, parents, total) = web::block(move || -> Result<_, Error> {
        let mut conn = pool.get()?;
        let (rows, total) = orgs::search(&mut conn, &q)?;
        let parents = rows
            .iter()
            .map(|r| orgs::parent_uid(&mut conn, r.parent_id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, parents, total))
    })
    .await??;
    let base = format!("{}/{t}", state.base);
    let mut links = vec![(
        "self",
        format!("{base}?{}", query_with_offset(&params, offset)),
    )];
    links.extend(crate::fhir::search::paging_links(
        &base, &params, offset, count, total,
    ));
    let entries = rows
        .iter()
        .zip(&parents)
        .map(|(r, p)| SearchEntry {
            resource: render(t, r, p.as_deref()),
            mode: "match",
        })
        .collect();
    Ok(FhirResponse::ok(bundle::searchset(
        &state.base,
        entries,
        Some(total),
        links,
    )))
}
