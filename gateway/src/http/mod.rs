//! HTTP: routes and thin handlers. Handlers negotiate, read the body, call the FHIR/translation
//! layer and the tracker services, and turn the result into a response; nothing else.

mod org;
mod patient;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use kiunga_codec::Format;
use serde_json::Value;

use crate::app::AppState;
use crate::context::RequestContext;
use crate::error::Error;
use crate::fhir::capability::{Interaction, Interaction::*, ResourceCapability, SearchParam};
use crate::fhir::{FhirResponse, Negotiated};

const ORG_PARAMS: &[SearchParam] = &[
    SearchParam { name: "_id", kind: "token", doc: "Org unit UID" },
    SearchParam { name: "identifier", kind: "token", doc: "Org unit code (system urn:kiunga:org-unit-code)" },
    SearchParam { name: "name", kind: "string", doc: "Name: prefix, case-insensitive; :exact, :contains" },
    SearchParam { name: "partof", kind: "reference", doc: "Parent org unit" },
];

/// What is routed, per resource type. The CapabilityStatement is generated from this table and
/// the handlers refuse (405) any interaction it does not list, so the two cannot drift apart.
pub static RESOURCES: &[ResourceCapability] = &[
    ResourceCapability {
        resource_type: "Patient",
        interactions: &[Create, Read, Vread, Update, Delete, HistoryInstance],
        search_params: &[],
        documentation: "A tracked entity (Person) with attribute values, mapped by mappings/patient.toml.",
    },
    ResourceCapability {
        resource_type: "Organization",
        interactions: &[Read, SearchType],
        search_params: ORG_PARAMS,
        documentation: "An org unit of the registry's hierarchy (read-only; loaded from metadata).",
    },
    ResourceCapability {
        resource_type: "Location",
        interactions: &[Read, SearchType],
        search_params: ORG_PARAMS,
        documentation: "The same org units, seen as places.",
    },
];

pub fn is_known_type(t: &str) -> bool {
    RESOURCES.iter().any(|r| r.resource_type == t)
}

fn capability(resource_type: &str, interaction: Interaction) -> Result<&'static ResourceCapability, Error> {
    let cap = RESOURCES.iter().find(|r| r.resource_type == resource_type).ok_or_else(|| {
        let known: Vec<&str> = RESOURCES.iter().map(|r| r.resource_type).collect();
        Error::NotFound(format!("resource type `{resource_type}` is not served here (served: {})", known.join(", ")))
    })?;
    if !cap.supports(interaction) {
        return Err(Error::MethodNotAllowed(format!("{resource_type} does not support the {} interaction", interaction.code())));
    }
    Ok(cap)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz)).route("/readyz", web::get().to(readyz)).service(
        web::scope("/fhir")
            .service(web::resource("/metadata").route(web::get().to(metadata)).default_service(web::to(not_allowed)))
            .service(web::resource("/{type}").route(web::get().to(search)).route(web::post().to(create)).default_service(web::to(not_allowed)))
            .service(
                web::resource("/{type}/{id}")
                    .route(web::get().to(read))
                    .route(web::put().to(update))
                    .route(web::delete().to(delete))
                    .default_service(web::to(not_allowed)),
            )
            .service(web::resource("/{type}/{id}/_history").route(web::get().to(history)).default_service(web::to(not_allowed)))
            .service(web::resource("/{type}/{id}/_history/{vid}").route(web::get().to(vread)).default_service(web::to(not_allowed)))
            .default_service(web::to(not_found)),
    );
    cfg.default_service(web::to(not_found));
}

/// Runs a handler body and renders its result or error in the negotiated format.
async fn respond<F>(req: &HttpRequest, f: impl FnOnce(Negotiated) -> F) -> HttpResponse
where
    F: std::future::Future<Output = Result<FhirResponse, Error>>,
{
    let n = Negotiated::from_request(req);
    if let Err(e) = n.check() {
        return n.error(e);
    }
    let n2 = n.clone();
    match f(n2).await {
        Ok(r) => r.into_http(&n),
        Err(e) => n.error(e),
    }
}

fn context(n: &Negotiated) -> RequestContext {
    RequestContext::anonymous(n.request_id.clone())
}

/// Reads the whole body up to the configured limit (413 beyond it, before it is all in memory).
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, Error> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::invalid(format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A parsed request body: the resource as FHIR JSON plus the original bytes and content type.
pub struct Incoming {
    pub resource: Value,
    pub bytes: web::Bytes,
    pub content_type: String,
}

async fn incoming(req: &HttpRequest, payload: web::Payload, state: &AppState, expected_type: &str) -> Result<Incoming, Error> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).map(str::to_string);
    let format: Format = kiunga_codec::content_format(content_type.as_deref()).map_err(Error::UnsupportedMediaType)?;
    let bytes = read_body(payload, state.config.max_body_bytes).await?;
    if bytes.is_empty() {
        return Err(Error::invalid(format!("the request has no body; send a {expected_type} resource")));
    }
    let resource = kiunga_codec::parse(&bytes, format)?;
    let got = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default();
    if got != expected_type {
        return Err(Error::invalid_at(format!("the body is a {got}, but this URL takes a {expected_type}"), "resourceType"));
    }
    Ok(Incoming { resource, bytes, content_type: content_type.unwrap_or_else(|| format.mime().to_string()) })
}

async fn create(req: HttpRequest, path: web::Path<String>, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let t = path.into_inner();
    let r = req.clone();
    respond(&req, |n| async move {
        capability(&t, Create)?;
        let input = incoming(&r, payload, &state, &t).await?;
        match t.as_str() {
            "Patient" => patient::create(&state, &n, input).await,
            _ => Err(Error::MethodNotAllowed(format!("{t} cannot be created"))),
        }
    })
    .await
}

async fn read(req: HttpRequest, path: web::Path<(String, String)>, state: web::Data<AppState>) -> HttpResponse {
    let (t, id) = path.into_inner();
    respond(&req, |n| async move {
        capability(&t, Read)?;
        match t.as_str() {
            "Patient" => patient::read(&state, &n, id).await,
            "Organization" | "Location" => org::read(&state, &t, id).await,
            _ => Err(Error::MethodNotAllowed(format!("{t} cannot be read"))),
        }
    })
    .await
}

async fn vread(req: HttpRequest, path: web::Path<(String, String, String)>, state: web::Data<AppState>) -> HttpResponse {
    let (t, id, vid) = path.into_inner();
    respond(&req, |n| async move {
        capability(&t, Vread)?;
        let version: i32 = vid.parse().map_err(|_| Error::NotFound(format!("{t}/{id} has no version `{vid}`")))?;
        match t.as_str() {
            "Patient" => patient::vread(&state, &n, id, version).await,
            _ => Err(Error::MethodNotAllowed(format!("{t} has no versions"))),
        }
    })
    .await
}

async fn update(req: HttpRequest, path: web::Path<(String, String)>, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let (t, id) = path.into_inner();
    let r = req.clone();
    respond(&req, |n| async move {
        capability(&t, Update)?;
        let if_match = crate::fhir::if_match(&r)?;
        let input = incoming(&r, payload, &state, &t).await?;
        match input.resource.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id == id => {}
            Some(body_id) => return Err(Error::invalid_at(format!("the body's id `{body_id}` differs from the id in the URL `{id}`"), format!("{t}.id"))),
            None => return Err(Error::invalid_at(format!("an update must carry the resource id (`{id}`) in the body"), format!("{t}.id"))),
        }
        match t.as_str() {
            "Patient" => patient::update(&state, &n, id, if_match, input).await,
            _ => Err(Error::MethodNotAllowed(format!("{t} cannot be updated"))),
        }
    })
    .await
}

async fn delete(req: HttpRequest, path: web::Path<(String, String)>, state: web::Data<AppState>) -> HttpResponse {
    let (t, id) = path.into_inner();
    respond(&req, |n| async move {
        capability(&t, Delete)?;
        match t.as_str() {
            "Patient" => patient::delete(&state, &n, id).await,
            _ => Err(Error::MethodNotAllowed(format!("{t} cannot be deleted"))),
        }
    })
    .await
}

async fn history(req: HttpRequest, path: web::Path<(String, String)>, state: web::Data<AppState>) -> HttpResponse {
    let (t, id) = path.into_inner();
    respond(&req, |n| async move {
        capability(&t, HistoryInstance)?;
        match t.as_str() {
            "Patient" => patient::history(&state, &n, id).await,
            _ => Err(Error::MethodNotAllowed(format!("{t} has no history"))),
        }
    })
    .await
}

async fn search(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let t = path.into_inner();
    let params = crate::fhir::search::parse_query(req.query_string());
    respond(&req, |_n| async move {
        capability(&t, SearchType)?;
        match t.as_str() {
            "Organization" | "Location" => org::search(&state, &t, params).await,
            _ => Err(Error::MethodNotAllowed(format!("{t} cannot be searched"))),
        }
    })
    .await
}

async fn metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    respond(&req, |_n| async move {
        Ok(FhirResponse::ok(crate::fhir::capability::statement(&state.base, RESOURCES, &state.mappings().version)))
    })
    .await
}

async fn not_allowed(req: HttpRequest) -> HttpResponse {
    let method = req.method().to_string();
    respond(&req, |_n| async move { Err(Error::MethodNotAllowed(format!("{method} is not allowed on this URL"))) }).await
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    respond(&req, |_n| async move { Err(Error::NotFound("no such endpoint; the FHIR API is under /fhir (see /fhir/metadata)".into())) }).await
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready when the database answers and every migration is applied.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let pool = state.pool.clone();
    let result = web::block(move || -> Result<bool, Error> {
        let mut conn = pool.get()?;
        crate::store::migrations_current(&mut conn)
    })
    .await;
    match result {
        Ok(Ok(true)) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Ok(Ok(false)) => HttpResponse::ServiceUnavailable().content_type("text/plain").body("migrations pending\n"),
        _ => HttpResponse::ServiceUnavailable().content_type("text/plain").body("database unreachable\n"),
    }
}
