//! `GET Patient/$ihe-pix` (IHE PIXm ITI-83), `POST Patient/$match` (FHIR R4, IHE PDQm
//! ITI-119), the links matching made (`$mdm-query-links`, `$mdm-update-link`, HAPI MDM's
//! names), and `POST Patient/$merge` / `$unmerge`: thin handlers over `rest::identity` and
//! `rest::merge`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::{allowed, read_body, respond, tx_inputs};
use crate::app::AppState;
use crate::auth::scopes::Op;
use crate::error::Error;
use crate::fhir::search::parse_query;
use crate::fhir::FhirResponse;
use crate::rest::identity::{self, LinkQuery, MatchQuery, PixQuery};

pub async fn pix(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let query = req.query_string().to_owned();
    respond(&req, |n| async move {
        allowed(&n, "Patient", &[Op::Search])?;
        let mut source: Option<String> = None;
        let mut targets = Vec::new();
        for p in parse_query(&query) {
            match p.name.as_str() {
                "sourceIdentifier" if source.is_some() => {
                    return Err(Error::invalid_at(
                        "sourceIdentifier is given twice; $ihe-pix cross-references one identifier",
                        "sourceIdentifier",
                    ))
                }
                "sourceIdentifier" => source = Some(p.value),
                "targetSystem" => targets.extend(
                    p.value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                ),
                "_format" | "_pretty" => {}
                other => {
                    return Err(Error::invalid(format!(
                    "$ihe-pix takes sourceIdentifier and targetSystem (and _format), not `{other}`"
                )))
                }
            }
        }
        let source = source.ok_or_else(|| {
            Error::invalid_at(
                "sourceIdentifier is required: the identifier to cross-reference, as system|value",
                "sourceIdentifier",
            )
        })?;
        let q = PixQuery { source, targets };
        let (ctx, mappings) = tx_inputs(&state, &n);
        let base = state.base.clone();
        Ok(FhirResponse::ok(
            crate::app::read(&state, ctx, mappings, move |s, env| {
                identity::pix(s, env, &q, &base)
            })
            .await?,
        ))
    })
    .await
}

/// The request body as a resource (JSON or XML, as its Content-Type says).
pub(super) async fn resource_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Value, Error> {
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok());
    let format = kiunga_codec::content_format(content_type).map_err(Error::UnsupportedMediaType)?;
    let bytes = read_body(payload, state.config.max_body_bytes).await?;
    Ok(kiunga_codec::parse(&bytes, format)?)
}

/// `POST Patient/$match`: a `Parameters` body (`resource`, `onlyCertainMatches`, `count`) or a
/// bare Patient.
pub async fn match_patient(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = req.clone();
    respond(&req, |n| async move {
        allowed(&n, "Patient", &[Op::Search])?;
        let q = match_query(resource_body(&r, payload, &state).await?)?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        let base = state.base.clone();
        Ok(FhirResponse::ok(
            crate::app::read(&state, ctx, mappings, move |s, env| {
                identity::match_patient(s, env, &q, &base)
            })
            .await?,
        ))
    })
    .await
}

fn match_query(body: Value) -> Result<MatchQuery, Error> {
    match body.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => Ok(MatchQuery {
            patient: body,
            only_certain: false,
            count: None,
        }),
        Some("Parameters") => {
            let mut q = MatchQuery {
                patient: Value::Null,
                only_certain: false,
                count: None,
            };
            let params = body
                .get("parameter")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, p) in params.into_iter().enumerate() {
                let at = format!("Parameters.parameter[{i}]");
                match p.get("name").and_then(Value::as_str) {
                    Some("resource") => match p.get("resource") {
                        Some(r) if r["resourceType"] == "Patient" => q.patient = r.clone(),
                        _ => {
                            return Err(Error::invalid_at(
                                "the `resource` parameter must hold a Patient",
                                at,
                            ))
                        }
                    },
                    Some("onlyCertainMatches") => {
                        q.only_certain =
                            p.get("valueBoolean")
                                .and_then(Value::as_bool)
                                .ok_or_else(|| {
                                    Error::invalid_at("onlyCertainMatches is a valueBoolean", &at)
                                })?
                    }
                    Some("count") => {
                        let n = p.get("valueInteger").and_then(Value::as_i64).unwrap_or(0);
                        if n < 1 {
                            return Err(Error::invalid_at(
                                "count is a valueInteger of at least 1",
                                at,
                            ));
                        }
                        q.count = Some(n as usize);
                    }
                    other => {
                        return Err(Error::invalid_at(
                            format!(
                                "$match takes resource, onlyCertainMatches and count, not `{}`",
                                other.unwrap_or("(no name)")
                            ),
                            at,
                        ))
                    }
                }
            }
            if q.patient.is_null() {
                return Err(Error::invalid(
                    "$match needs the Patient to match: a `resource` parameter holding a Patient",
                ));
            }
            Ok(q)
        }
        _ => Err(Error::invalid(
            "$match takes a Parameters resource (resource, onlyCertainMatches, count) or a Patient",
        )),
    }
}

/// The parameters of the query string and, for POST, of the `Parameters` body (read as the
/// terminology operations read them), each value as text.
async fn operation_params(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Vec<(String, String)>, Error> {
    let body = super::terminology::body_params(req, payload, state).await?;
    super::terminology::op_params(&parse_query(req.query_string()), body.as_ref())
        .into_iter()
        .map(|(name, value)| match value {
            Value::String(s) => Ok((name, s)),
            Value::Number(n) => Ok((name, n.to_string())),
            _ => Err(Error::invalid_at(
                format!("parameter `{name}` needs a valueString (or valueCode, valueInteger)"),
                name,
            )),
        })
        .collect()
}

fn number(name: &str, v: &str) -> Result<i64, Error> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::invalid_at(format!("{name} is a whole number, not `{v}`"), name))
}

/// `GET|POST $mdm-query-links`: the links and potential duplicates (HAPI MDM's parameters).
pub async fn query_links(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = req.clone();
    respond(&req, |n| async move {
        allowed(&n, "Patient", &[Op::Read])?;
        let mut q = LinkQuery::default();
        for (name, value) in operation_params(&r, payload, &state).await? {
            match name.as_str() {
                "goldenResourceId" => q.golden = Some(value),
                "resourceId" => q.resource = Some(value),
                "matchResult" => q.match_result = Some(value),
                "linkSource" => q.link_source = Some(value),
                "_offset" => q.offset = number("_offset", &value)?,
                "_count" => q.count = Some(number("_count", &value)?),
                "_format" | "_pretty" => {}
                other => return Err(Error::invalid(format!(
                    "$mdm-query-links takes goldenResourceId, resourceId, matchResult, linkSource, _offset and _count, not `{other}`"
                ))),
            }
        }
        let (ctx, mappings) = tx_inputs(&state, &n);
        Ok(FhirResponse::ok(
            crate::app::read(&state, ctx, mappings, move |s, env| {
                identity::query_links(s, env, &q)
            })
            .await?,
        ))
    })
    .await
}

/// `POST $mdm-update-link` and `$mdm-create-link`: goldenResourceId, resourceId, matchResult.
async fn decide_link(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    create: bool,
) -> HttpResponse {
    let r = req.clone();
    let op = if create {
        "$mdm-create-link"
    } else {
        "$mdm-update-link"
    };
    respond(&req, |n| async move {
        allowed(&n, "Patient", &[Op::Update])?;
        let (mut golden, mut resource, mut result) = (None, None, None);
        for (name, value) in operation_params(&r, payload, &state).await? {
            match name.as_str() {
                "goldenResourceId" => golden = Some(value),
                "resourceId" => resource = Some(value),
                "matchResult" => result = Some(value),
                "_format" | "_pretty" => {}
                other => {
                    return Err(Error::invalid(format!(
                        "{op} takes goldenResourceId, resourceId and matchResult, not `{other}`"
                    )))
                }
            }
        }
        let need = |v: Option<String>, name: &str| {
            v.ok_or_else(|| Error::invalid_at(format!("{op} needs {name}"), name))
        };
        let golden = need(golden, "goldenResourceId")?;
        let resource = need(resource, "resourceId")?;
        // HAPI MDM: a created link is a MATCH unless said otherwise.
        let result = match (create, result) {
            (true, None) => "MATCH".to_string(),
            (_, r) => need(r, "matchResult")?,
        };
        let (ctx, mappings) = tx_inputs(&state, &n);
        Ok(FhirResponse::ok(
            crate::app::tx(&state, ctx, mappings, move |s, env| {
                if create {
                    identity::create_link(s, env, &golden, &resource, &result)
                } else {
                    identity::update_link(s, env, &golden, &resource, &result)
                }
            })
            .await?,
        ))
    })
    .await
}

pub async fn update_link(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    decide_link(req, payload, state, false).await
}

pub async fn create_link(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    decide_link(req, payload, state, true).await
}

/// `POST Patient/$merge` (R5's parameters) and `POST Patient/$unmerge`.
async fn merge_op(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    undo: bool,
) -> HttpResponse {
    let r = req.clone();
    respond(&req, |n| async move {
        allowed(&n, "Patient", &[Op::Update])?;
        let op = if undo { "$unmerge" } else { "$merge" };
        let p = crate::rest::merge::params(resource_body(&r, payload, &state).await?, op)?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        Ok(FhirResponse::ok(
            crate::app::tx(&state, ctx, mappings, move |s, env| {
                if undo {
                    crate::rest::merge::unmerge(s, env, &p)
                } else {
                    crate::rest::merge::merge(s, env, &p)
                }
            })
            .await?,
        ))
    })
    .await
}

pub async fn merge(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    merge_op(req, payload, state, false).await
}

pub async fn unmerge(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    merge_op(req, payload, state, true).await
}
