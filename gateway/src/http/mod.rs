//! HTTP: routes and thin handlers. Handlers negotiate, read the body, call the FHIR/translation
//! layer and the tracker services, and turn the result into a response; nothing else.

pub mod auth;
mod identity;
mod org;
mod outbox;
mod terminology;
mod valueset;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use kiunga_codec::Format;
use serde_json::Value;

use crate::app::{tx, AppState};
use crate::auth::scopes::Op;
use crate::context::RequestContext;
use crate::error::Error;
use crate::fhir::bundle;
use crate::fhir::capability::{Interaction, Interaction::*, ResourceCapability, SearchParam};
use crate::fhir::outcome::{Issue, OperationOutcome};
use crate::fhir::Return;
use crate::fhir::{FhirResponse, Negotiated};
use crate::rest::{self, Stored};

const AUDIT_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "entity",
        kind: "reference",
        doc: "A record the access wrote or returned (Patient/abc)",
    },
    SearchParam {
        name: "patient",
        kind: "reference",
        doc: "A person whose records the access touched",
    },
    SearchParam {
        name: "agent",
        kind: "reference",
        doc: "The API client (its client id), or anonymous (development mode)",
    },
    SearchParam {
        name: "date",
        kind: "date",
        doc: "When the access was recorded",
    },
    SearchParam {
        name: "subtype",
        kind: "token",
        doc: "The interaction (read, search-type, create...) or operation ($match...)",
    },
    SearchParam {
        name: "action",
        kind: "token",
        doc: "C, R, U, D or E",
    },
    SearchParam {
        name: "outcome",
        kind: "token",
        doc: "0 success, 4 refused or not found, 8 failure",
    },
];

const ORG_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Org unit UID",
    },
    SearchParam {
        name: "identifier",
        kind: "token",
        doc: "Org unit code (system urn:kiunga:org-unit-code)",
    },
    SearchParam {
        name: "name",
        kind: "string",
        doc: "Name: prefix, case-insensitive; :exact, :contains",
    },
    SearchParam {
        name: "partof",
        kind: "reference",
        doc: "Parent org unit",
    },
];

/// What is routed, per resource type. The CapabilityStatement is generated from this table and
/// the handlers refuse (405) any interaction it does not list, so the two cannot drift apart.
const PATIENT_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Tracked entity UID",
    },
    SearchParam {
        name: "identifier",
        kind: "token",
        doc: "system|value of any identifier system declared in mappings/patient.toml",
    },
    SearchParam {
        name: "name",
        kind: "string",
        doc: "Family or given name: prefix, case- and accent-insensitive; :exact, :contains",
    },
    SearchParam {
        name: "family",
        kind: "string",
        doc: "Family name (string semantics)",
    },
    SearchParam {
        name: "given",
        kind: "string",
        doc: "Given name (string semantics)",
    },
    SearchParam {
        name: "birthdate",
        kind: "date",
        doc: "Birth date with prefixes eq ne lt gt le ge sa eb ap; partial dates",
    },
    SearchParam {
        name: "gender",
        kind: "token",
        doc: "AdministrativeGender",
    },
    SearchParam {
        name: "organization",
        kind: "reference",
        doc: "Owning org unit",
    },
    SearchParam {
        name: "phone",
        kind: "token",
        doc: "Phone number (digits compared)",
    },
    SearchParam {
        name: "telecom",
        kind: "token",
        doc: "Any mapped contact point (digits compared)",
    },
    SearchParam {
        name: "active",
        kind: "token",
        doc: "true or false",
    },
    SearchParam {
        name: "_lastUpdated",
        kind: "date",
        doc: "Last change, with prefixes",
    },
    SearchParam {
        name: "address",
        kind: "string",
        doc: "Any mapped part of Patient.address (string semantics; :exact, :contains)",
    },
    SearchParam {
        name: "address-city",
        kind: "string",
        doc: "Patient.address.city, when mapped (string semantics; :exact, :contains)",
    },
    SearchParam {
        name: "address-state",
        kind: "string",
        doc: "Patient.address.state, when mapped",
    },
    SearchParam {
        name: "address-postalcode",
        kind: "string",
        doc: "Patient.address.postalCode, when mapped",
    },
    SearchParam {
        name: "address-country",
        kind: "string",
        doc: "Patient.address.country, when mapped",
    },
];

const ENCOUNTER_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Event UID",
    },
    SearchParam {
        name: "patient",
        kind: "reference",
        doc: "The person",
    },
    SearchParam {
        name: "subject",
        kind: "reference",
        doc: "The person",
    },
    SearchParam {
        name: "date",
        kind: "date",
        doc: "Occurred date, with prefixes",
    },
    SearchParam {
        name: "status",
        kind: "token",
        doc: "Encounter.status (through mappings/encounter.toml)",
    },
    SearchParam {
        name: "type",
        kind: "token",
        doc: "system|code of a mapped encounter type (its program stage)",
    },
    SearchParam {
        name: "class",
        kind: "token",
        doc: "Encounter class",
    },
    SearchParam {
        name: "service-provider",
        kind: "reference",
        doc: "Org unit of the event",
    },
    SearchParam {
        name: "episode-of-care",
        kind: "reference",
        doc: "The enrollment",
    },
    SearchParam {
        name: "_lastUpdated",
        kind: "date",
        doc: "Last change, with prefixes",
    },
];

const OBSERVATION_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Data value UID",
    },
    SearchParam {
        name: "patient",
        kind: "reference",
        doc: "The person",
    },
    SearchParam {
        name: "subject",
        kind: "reference",
        doc: "The person",
    },
    SearchParam {
        name: "encounter",
        kind: "reference",
        doc: "The event",
    },
    SearchParam {
        name: "code",
        kind: "token",
        doc: "system|code mapped in mappings/observation.toml",
    },
    SearchParam {
        name: "category",
        kind: "token",
        doc: "observation-category",
    },
    SearchParam {
        name: "date",
        kind: "date",
        doc: "effective[x], with prefixes",
    },
    SearchParam {
        name: "value-quantity",
        kind: "quantity",
        doc: "prefix+number[|system|unit], converted to the data element's unit",
    },
    SearchParam {
        name: "_lastUpdated",
        kind: "date",
        doc: "Last change, with prefixes",
    },
];

const RELATED_PERSON_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Relationship UID",
    },
    SearchParam {
        name: "patient",
        kind: "reference",
        doc: "The person this one is related to",
    },
    SearchParam {
        name: "identifier",
        kind: "token",
        doc:
            "system|value of the related person's own identifier (systems of mappings/patient.toml)",
    },
    SearchParam {
        name: "relationship",
        kind: "token",
        doc: "system|code of the role (mappings/care.toml)",
    },
    SearchParam {
        name: "_lastUpdated",
        kind: "date",
        doc: "Last change, with prefixes",
    },
];

const EPISODE_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Enrollment UID",
    },
    SearchParam {
        name: "patient",
        kind: "reference",
        doc: "The enrolled person",
    },
    SearchParam {
        name: "status",
        kind: "token",
        doc: "active, finished or cancelled",
    },
    SearchParam {
        name: "type",
        kind: "token",
        doc: "system|code of the program (mappings/care.toml, else urn:kiunga:program|<code>)",
    },
    SearchParam {
        name: "organization",
        kind: "reference",
        doc: "The org unit that owns the record in the program",
    },
    SearchParam {
        name: "date",
        kind: "date",
        doc: "Enrollment date, with prefixes",
    },
    SearchParam {
        name: "_lastUpdated",
        kind: "date",
        doc: "Last change, with prefixes",
    },
];

const CODESYSTEM_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Id",
    },
    SearchParam {
        name: "url",
        kind: "uri",
        doc: "Canonical URL (the system URI)",
    },
    SearchParam {
        name: "name",
        kind: "string",
        doc: "Name (prefix)",
    },
    SearchParam {
        name: "system",
        kind: "uri",
        doc: "The system URI",
    },
];

const VALUESET_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Option set UID or code",
    },
    SearchParam {
        name: "url",
        kind: "uri",
        doc: "Canonical URL",
    },
    SearchParam {
        name: "name",
        kind: "string",
        doc: "Option set code (prefix)",
    },
];

const CONCEPTMAP_PARAMS: &[SearchParam] = &[
    SearchParam {
        name: "_id",
        kind: "token",
        doc: "Id",
    },
    SearchParam {
        name: "url",
        kind: "uri",
        doc: "Canonical URL",
    },
    SearchParam {
        name: "name",
        kind: "string",
        doc: "Name (prefix)",
    },
    SearchParam {
        name: "source",
        kind: "uri",
        doc: "Source system",
    },
    SearchParam {
        name: "target",
        kind: "uri",
        doc: "Target system",
    },
];

const CRUD: &[Interaction] = &[
    Create,
    Read,
    Vread,
    Update,
    Delete,
    HistoryInstance,
    HistoryType,
    SearchType,
];

/// What is routed, per resource type. The CapabilityStatement is generated from this table and
/// the handlers refuse (405) any interaction it does not list, so the two cannot drift apart.
pub static RESOURCES: &[ResourceCapability] = &[
    ResourceCapability {
        resource_type: "Patient",
        interactions: CRUD,
        search_params: PATIENT_PARAMS,
        documentation: "A tracked entity (Person) with attribute values, mapped by mappings/patient.toml. Operations $everything, $match (mappings/matching.toml), $ihe-pix (IHE PIXm ITI-83) over the identifier systems declared there, $merge (R5 semantics) and $unmerge.",
    },
    ResourceCapability {
        resource_type: "Encounter",
        interactions: CRUD,
        search_params: ENCOUNTER_PARAMS,
        documentation: "An event in a program stage, mapped by mappings/encounter.toml; the enrollment is opened when missing.",
    },
    ResourceCapability {
        resource_type: "Observation",
        interactions: CRUD,
        search_params: OBSERVATION_PARAMS,
        documentation: "A data value of an event, mapped by mappings/observation.toml; quantities converted to the data element's unit.",
    },
    ResourceCapability {
        resource_type: "RelatedPerson",
        interactions: CRUD,
        search_params: RELATED_PERSON_PARAMS,
        documentation: "A relationship between two people (mother-child, caregiver-child), typed by the registry's relationship types through mappings/care.toml. The related person is a registered person of her own (extension urn:kiunga:fhir:StructureDefinition:related-person-record), whose Patient links back (seealso).",
    },
    ResourceCapability {
        resource_type: "EpisodeOfCare",
        interactions: CRUD,
        search_params: EPISODE_PARAMS,
        documentation: "An enrollment in a program; managingOrganization is the org unit that owns the person's record in the program (Patient/{id}/$transfer moves it; each move is a new version in _history with the ownership-transfer extension).",
    },
    ResourceCapability {
        resource_type: "CodeSystem",
        interactions: &[Read, SearchType],
        search_params: CODESYSTEM_PARAMS,
        documentation: "Code systems declared in mappings/terminology.toml, with the codes the crosswalks know. Operation $lookup.",
    },
    ResourceCapability {
        resource_type: "ConceptMap",
        interactions: &[Read, SearchType],
        search_params: CONCEPTMAP_PARAMS,
        documentation: "One map per crosswalk and pair of systems, generated from the mapping files. Operation $translate.",
    },
    ResourceCapability {
        resource_type: "ValueSet",
        interactions: &[Read, SearchType],
        search_params: VALUESET_PARAMS,
        documentation: "The registry's option sets. Operation $validate-code (directly or through the crosswalks).",
    },
    ResourceCapability {
        resource_type: "AuditEvent",
        interactions: &[Read, SearchType],
        search_params: AUDIT_PARAMS,
        documentation: "The record of every access to patient data (append-only; docs/security.md). Needs the scope system/AuditEvent.rs, which system/*.rs does not include.",
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

fn capability(
    resource_type: &str,
    interaction: Interaction,
) -> Result<&'static ResourceCapability, Error> {
    let cap = RESOURCES
        .iter()
        .find(|r| r.resource_type == resource_type)
        .ok_or_else(|| {
            let known: Vec<&str> = RESOURCES.iter().map(|r| r.resource_type).collect();
            Error::NotFound(format!(
                "resource type `{resource_type}` is not served here (served: {})",
                known.join(", ")
            ))
        })?;
    if !cap.supports(interaction) {
        return Err(Error::MethodNotAllowed(format!(
            "{resource_type} does not support the {} interaction",
            interaction.code()
        )));
    }
    Ok(cap)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/auth/token", web::post().to(auth::token))
        .route("/metrics", web::get().to(outbox::metrics))
        .route("/admin/outbox", web::get().to(outbox::status))
        .route("/admin/outbox/items", web::get().to(outbox::list))
        .route("/admin/outbox/items/{id}", web::get().to(outbox::show))
        .route(
            "/admin/outbox/items/{id}/$retry",
            web::post().to(outbox::retry),
        )
        .route(
            "/admin/outbox/items/{id}/$skip",
            web::post().to(outbox::skip),
        )
        .route("/admin/outbox/$replay", web::post().to(outbox::replay))
        .route(
            "/.well-known/smart-configuration",
            web::get().to(auth::smart_configuration),
        )
        .service(
            web::scope("/fhir")
                .route(
                    "/.well-known/smart-configuration",
                    web::get().to(auth::smart_configuration),
                )
                .service(
                    web::resource("")
                        .route(web::post().to(bundle))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/metadata")
                        .route(web::get().to(metadata))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/ConceptMap/$translate")
                        .route(web::get().to(translate))
                        .route(web::post().to(translate))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/CodeSystem/$validate-code")
                        .route(web::get().to(cs_validate))
                        .route(web::post().to(cs_validate))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/ValueSet/$validate-code")
                        .route(web::get().to(vs_validate))
                        .route(web::post().to(vs_validate))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/CodeSystem/$lookup")
                        .route(web::get().to(lookup))
                        .route(web::post().to(lookup))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/Patient/$match")
                        .route(web::post().to(identity::match_patient))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/Patient/$merge")
                        .route(web::post().to(identity::merge))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/Patient/$unmerge")
                        .route(web::post().to(identity::unmerge))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/$mdm-query-links")
                        .route(web::get().to(identity::query_links))
                        .route(web::post().to(identity::query_links))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/$mdm-update-link")
                        .route(web::post().to(identity::update_link))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/$mdm-create-link")
                        .route(web::post().to(identity::create_link))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/Patient/$ihe-pix")
                        .route(web::get().to(identity::pix))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}")
                        .route(web::get().to(search))
                        .route(web::post().to(create))
                        .route(web::put().to(conditional_update))
                        .route(web::delete().to(conditional_delete))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/_search")
                        .route(web::post().to(search_post))
                        .route(web::get().to(search))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/_history")
                        .route(web::get().to(type_history))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}")
                        .route(web::get().to(read))
                        .route(web::put().to(update))
                        .route(web::delete().to(delete))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/$everything")
                        .route(web::get().to(everything))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/$transfer")
                        .route(web::post().to(transfer))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/$break-glass")
                        .route(web::post().to(break_glass))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/_history")
                        .route(web::get().to(history))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/_history/{vid}")
                        .route(web::get().to(vread))
                        .default_service(web::to(not_allowed)),
                )
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
    let result = f(n2).await;
    let pending = n.access.as_deref().filter(|a| !a.recorded());
    let record = |row| {
        if let Some(state) = req.app_data::<web::Data<AppState>>() {
            state.audit.record(row);
        }
    };
    match result {
        Ok(r) => {
            if let Some(a) = pending {
                record(a.answered_row(r.status, r.body.as_ref(), r.location.as_deref(), None));
            }
            r.into_http(&n)
        }
        Err(e) => {
            let (status, outcome) = e.client_outcome(&n.request_id);
            if let Some(a) = pending {
                let said = outcome
                    .pointer("/issue/0/diagnostics")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                record(a.answered_row(status.as_u16(), None, None, said));
            }
            n.outcome(&e, status, &outcome)
        }
    }
}

/// The request context: the authenticated client's, or (development mode) the anonymous caller's.
/// Anything else (a public path's request reaching a data handler) may do nothing.
fn context(n: &Negotiated) -> RequestContext {
    let ctx = match &n.principal {
        Some(p) => RequestContext::client(n.request_id.clone(), p),
        None if n.development_mode => RequestContext::anonymous(n.request_id.clone()),
        None => RequestContext::nobody(n.request_id.clone()),
    };
    ctx.with_access(n.access.clone())
}

/// Refuses (403) what the access token's scopes do not allow: `ops` on `resource_type`.
pub(crate) fn allowed(n: &Negotiated, resource_type: &str, ops: &[Op]) -> Result<(), Error> {
    let ctx = context(n);
    ops.iter()
        .try_for_each(|op| ctx.require(resource_type, *op))
}

/// Reads the whole body up to the configured limit (413 beyond it, before it is all in memory).
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, Error> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| Error::invalid(format!("could not read the request body: {e}")))?;
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

async fn incoming(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    expected_type: &str,
) -> Result<Incoming, Error> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let format: Format = kiunga_codec::content_format(content_type.as_deref())
        .map_err(Error::UnsupportedMediaType)?;
    let bytes = read_body(payload, state.config.max_body_bytes).await?;
    if bytes.is_empty() {
        return Err(Error::invalid(format!(
            "the request has no body; send a {expected_type} resource"
        )));
    }
    let resource = kiunga_codec::parse(&bytes, format)?;
    let got = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if got != expected_type {
        return Err(Error::invalid_at(
            format!("the body is a {got}, but this URL takes a {expected_type}"),
            "resourceType",
        ));
    }
    Ok(Incoming {
        resource,
        bytes,
        content_type: content_type.unwrap_or_else(|| format.mime().to_string()),
    })
}

/// The context and the mapping set a request runs with.
fn tx_inputs(
    state: &AppState,
    n: &Negotiated,
) -> (RequestContext, std::sync::Arc<crate::mapping::MappingSet>) {
    (context(n), state.mappings())
}

/// The answer to a create or update, as `Prefer: return=` asks.
fn written(state: &AppState, n: &Negotiated, w: Stored) -> FhirResponse {
    let body = match n.return_pref {
        Return::Minimal => None,
        Return::Representation => Some(w.resource),
        Return::OperationOutcome => {
            let verb = if w.created { "created" } else { "updated" };
            let mut issues = vec![Issue::information(format!(
                "{}/{} {verb} (version {})",
                w.resource_type, w.id, w.version
            ))];
            issues.extend(w.warnings);
            Some(OperationOutcome::new(issues).into_json())
        }
    };
    FhirResponse {
        status: if w.created { 201 } else { 200 },
        body,
        version: Some(w.version),
        last_modified: Some(w.last_updated),
        location: Some(format!(
            "{}/{}/{}/_history/{}",
            state.base, w.resource_type, w.id, w.version
        )),
    }
}

fn current(w: Stored) -> FhirResponse {
    FhirResponse {
        status: 200,
        version: Some(w.version),
        last_modified: Some(w.last_updated),
        body: Some(w.resource),
        location: None,
    }
}

async fn create(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = path.into_inner();
    let r = req.clone();
    respond(&req, |n| async move {
        capability(&t, Create)?;
        let conditional = r.headers().contains_key("if-none-exist");
        allowed(&n, &t, if conditional { &[Op::Create, Op::Search] } else { &[Op::Create] })?;
        let input = incoming(&r, payload, &state, &t).await?;
        let condition = r.headers().get("if-none-exist").and_then(|h| h.to_str().ok()).map(|q| q.trim_start_matches('?').to_string());
        let (ctx, mappings) = tx_inputs(&state, &n);
        let outcome = tx(&state, ctx, mappings, move |s, env| {
            if let Some(q) = condition {
                let found = rest::search::matching_ids(s, env, &t, &q, 2)?;
                match found.len() {
                    0 => {}
                    1 => return Ok(Err(rest::read(s, env, &t, &found[0])?)),
                    _ => return Err(Error::PreconditionFailed(format!("If-None-Exist `{q}` matches more than one {t}; make the condition specific"))),
                }
            }
            let body = rest::Body { resource: &input.resource, raw: &input.bytes, content_type: &input.content_type };
            rest::create(s, env, &t, body).map(Ok)
        })
        .await?;
        Ok(match outcome {
            Ok(w) => written(&state, &n, w),
            // Conditional create that found its match: 200 with the existing record, nothing stored.
            Err(existing) => {
                let location = format!("{}/{}/{}/_history/{}", state.base, existing.resource_type, existing.id, existing.version);
                let mut resp = current(existing);
                resp.location = Some(location);
                if n.return_pref == Return::Minimal {
                    resp.body = None;
                }
                resp
            }
        })
    })
    .await
}

async fn read(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    respond(&req, |n| async move {
        capability(&t, Read)?;
        allowed(&n, &t, &[Op::Read])?;
        match t.as_str() {
            "Organization" | "Location" => org::read(&state, &t, id).await,
            "CodeSystem" | "ConceptMap" => terminology::read(&state, &t, &id),
            "ValueSet" => valueset::read(&state, &id),
            "AuditEvent" => audit_read(&state, id).await,
            _ => {
                let (ctx, mappings) = tx_inputs(&state, &n);
                Ok(current(
                    crate::app::read(&state, ctx, mappings, move |s, env| {
                        rest::read(s, env, &t, &id)
                    })
                    .await?,
                ))
            }
        }
    })
    .await
}

async fn vread(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id, vid) = path.into_inner();
    respond(&req, |n| async move {
        capability(&t, Vread)?;
        allowed(&n, &t, &[Op::Read])?;
        let version: i32 = vid
            .parse()
            .map_err(|_| Error::NotFound(format!("{t}/{id} has no version `{vid}`")))?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        Ok(current(
            crate::app::read(&state, ctx, mappings, move |s, env| {
                rest::vread(s, env, &t, &id, version)
            })
            .await?,
        ))
    })
    .await
}

fn check_body_id(t: &str, resource: &Value, id: &str) -> Result<(), Error> {
    match resource.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => Ok(()),
        Some(body_id) => Err(Error::invalid_at(
            format!("the body's id `{body_id}` differs from the id in the URL `{id}`"),
            format!("{t}.id"),
        )),
        None => Err(Error::invalid_at(
            format!("an update must carry the resource id (`{id}`) in the body"),
            format!("{t}.id"),
        )),
    }
}

async fn update(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    let r = req.clone();
    respond(&req, |n| async move {
        capability(&t, Update)?;
        allowed(&n, &t, &[Op::Update])?;
        let if_match = crate::fhir::if_match(&r)?;
        let input = incoming(&r, payload, &state, &t).await?;
        check_body_id(&t, &input.resource, &id)?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        let w = tx(&state, ctx, mappings, move |s, env| {
            let body = rest::Body {
                resource: &input.resource,
                raw: &input.bytes,
                content_type: &input.content_type,
            };
            rest::update(s, env, &t, &id, if_match, body)
        })
        .await?;
        Ok(written(&state, &n, w))
    })
    .await
}

/// `PUT [type]?[search]`: create when nothing matches, update the one match, 412 when several do.
async fn conditional_update(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = path.into_inner();
    let r = req.clone();
    respond(&req, |n| async move {
        capability(&t, Update)?;
        // A conditional update creates when nothing matches.
        allowed(&n, &t, &[Op::Update, Op::Create, Op::Search])?;
        let query = r.query_string().to_string();
        let if_match = crate::fhir::if_match(&r)?;
        let input = incoming(&r, payload, &state, &t).await?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        let w = tx(&state, ctx, mappings, move |s, env| {
            let found = rest::search::matching_ids(s, env, &t, &query, 2)?;
            let body = rest::Body { resource: &input.resource, raw: &input.bytes, content_type: &input.content_type };
            match found.as_slice() {
                [] => rest::create(s, env, &t, body),
                [id] => {
                    if let Some(body_id) = input.resource.get("id").and_then(Value::as_str) {
                        if body_id != id {
                            return Err(Error::invalid_at(format!("the body's id `{body_id}` is not the id of the {t} the condition matches (`{id}`)"), format!("{t}.id")));
                        }
                    }
                    rest::update(s, env, &t, id, if_match, body)
                }
                _ => Err(Error::PreconditionFailed(format!("the condition `{query}` matches more than one {t}; make it specific"))),
            }
        })
        .await?;
        Ok(written(&state, &n, w))
    })
    .await
}

fn deleted(t: &str, id: &str, version: Option<i32>) -> FhirResponse {
    let message = match version {
        Some(v) => format!("{t}/{id} deleted (version {v})"),
        None => format!("{t}/{id} was already deleted"),
    };
    FhirResponse {
        status: 200,
        body: Some(OperationOutcome::new(vec![Issue::information(message)]).into_json()),
        version,
        ..Default::default()
    }
}

async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    respond(&req, |n| async move {
        capability(&t, Delete)?;
        allowed(&n, &t, &[Op::Delete])?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        let (t2, id2) = (t.clone(), id.clone());
        let version = tx(&state, ctx, mappings, move |s, env| {
            rest::delete(s, env, &t2, &id2)
        })
        .await?;
        Ok(deleted(&t, &id, version))
    })
    .await
}

/// `DELETE [type]?[search]`: deletes the one match; nothing to do when none; 412 when several.
async fn conditional_delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = path.into_inner();
    let query = req.query_string().to_string();
    respond(&req, |n| async move {
        capability(&t, Delete)?;
        allowed(&n, &t, &[Op::Delete, Op::Search])?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        let t2 = t.clone();
        let result = tx(&state, ctx, mappings, move |s, env| {
            let found = rest::search::matching_ids(s, env, &t2, &query, 2)?;
            match found.as_slice() {
                [] => Ok(None),
                [id] => Ok(Some((id.clone(), rest::delete(s, env, &t2, id)?))),
                _ => Err(Error::PreconditionFailed(format!(
                    "the condition `{query}` matches more than one {t2}; make it specific"
                ))),
            }
        })
        .await?;
        Ok(match result {
            None => FhirResponse {
                status: 200,
                body: Some(
                    OperationOutcome::new(vec![Issue::information(format!(
                        "no {t} matched; nothing was deleted"
                    ))])
                    .into_json(),
                ),
                ..Default::default()
            },
            Some((id, version)) => deleted(&t, &id, version),
        })
    })
    .await
}

async fn history(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    respond(&req, |n| async move {
        capability(&t, HistoryInstance)?;
        allowed(&n, &t, &[Op::Read])?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        let (t2, id2) = (t.clone(), id.clone());
        let entries = crate::app::read(&state, ctx, mappings, move |s, env| {
            rest::history(s, env, &t2, &id2)
        })
        .await?;
        Ok(FhirResponse::ok(bundle::history(
            &state.base,
            entries,
            format!("{}/{t}/{id}/_history", state.base),
        )))
    })
    .await
}

async fn type_history(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = path.into_inner();
    let params = crate::fhir::search::parse_query(req.query_string());
    respond(&req, |n| async move {
        capability(&t, HistoryType)?;
        allowed(&n, &t, &[Op::Search])?;
        let (count, offset) = crate::fhir::search::paging(&params)?;
        let mut since = None;
        for p in &params {
            match p.name.as_str() {
                "_count" | "_offset" | "_format" | "_pretty" => {}
                "_since" => {
                    let t = chrono::DateTime::parse_from_rfc3339(&p.value).map_err(|_| {
                        Error::invalid(format!(
                            "_since `{}` is not an instant (e.g. 2026-01-01T00:00:00Z)",
                            p.value
                        ))
                    })?;
                    since = Some(t.with_timezone(&chrono::Utc));
                }
                other => {
                    return Err(Error::invalid(format!(
                        "`{other}` is not supported on _history (use _count, _since)"
                    )))
                }
            }
        }
        let (ctx, mappings) = tx_inputs(&state, &n);
        let t2 = t.clone();
        let entries = crate::app::read(&state, ctx, mappings, move |s, env| {
            rest::type_history(s, env, &t2, since, count, offset)
        })
        .await?;
        let self_link = format!(
            "{}/{t}/_history?{}",
            state.base,
            crate::fhir::search::query_with_offset(&params, offset)
        );
        let next = (count > 0 && entries.len() as i64 == count).then(|| {
            format!(
                "{}/{t}/_history?{}",
                state.base,
                crate::fhir::search::query_with_offset(&params, offset + count)
            )
        });
        let mut b = bundle::history(&state.base, entries, self_link);
        // No total: counting would scan the whole log. A full page may have a next one.
        if let Some(o) = b.as_object_mut() {
            o.remove("total");
        }
        if let Some(next) = next {
            if let Some(links) = b["link"].as_array_mut() {
                links.push(serde_json::json!({ "relation": "next", "url": next }));
            }
        }
        Ok(FhirResponse::ok(b))
    })
    .await
}

async fn search(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = path.into_inner();
    let params = crate::fhir::search::parse_query(req.query_string());
    run_search(&req, t, params, state).await
}

/// `POST [type]/_search`: parameters in an `application/x-www-form-urlencoded` body (and the URL).
async fn search_post(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = path.into_inner();
    let mut params = crate::fhir::search::parse_query(req.query_string());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_string();
    let body = read_body(payload, state.config.max_body_bytes).await;
    match body {
        Ok(bytes) if content_type.starts_with("application/x-www-form-urlencoded") => params.extend(crate::fhir::search::parse_query(&String::from_utf8_lossy(&bytes))),
        Ok(_) => {
            return respond(&req, |_n| async move { Err(Error::UnsupportedMediaType(format!("POST _search takes application/x-www-form-urlencoded parameters, not {content_type}"))) }).await
        }
        Err(e) => return respond(&req, |_n| async move { Err(e) }).await,
    }
    run_search(&req, t, params, state).await
}

async fn run_search(
    req: &HttpRequest,
    t: String,
    params: Vec<crate::fhir::search::Param>,
    state: web::Data<AppState>,
) -> HttpResponse {
    respond(req, |n| async move {
        capability(&t, SearchType)?;
        allowed(&n, &t, &[Op::Search])?;
        match t.as_str() {
            "Organization" | "Location" => org::search(&state, &t, params).await,
            "CodeSystem" | "ConceptMap" => terminology::search(&state, &t, &params),
            "ValueSet" => valueset::search(&state, &params),
            "AuditEvent" => audit_search(&state, params).await,
            _ => {
                let (ctx, mappings) = tx_inputs(&state, &n);
                let lenient = n.lenient;
                let base = state.base.clone();
                Ok(FhirResponse::ok(
                    crate::app::read(&state, ctx, mappings, move |s, env| {
                        rest::search::search(s, env, &t, &params, lenient, &base)
                    })
                    .await?,
                ))
            }
        }
    })
    .await
}

/// `GET AuditEvent/{id}`: one access record. Records written in batches are written first.
async fn audit_read(state: &web::Data<AppState>, id: String) -> Result<FhirResponse, Error> {
    let missing = || Error::NotFound(format!("AuditEvent/{id} is not known to this server"));
    let key: i64 = id.parse().map_err(|_| missing())?;
    let st = state.clone();
    let row = web::block(move || -> Result<_, Error> {
        st.audit.flush();
        let mut conn = st.pool.get()?;
        crate::store::audit::by_id(&mut conn, key)
    })
    .await??
    .ok_or_else(missing)?;
    Ok(FhirResponse::ok(crate::audit::render(&row)))
}

/// `GET AuditEvent?...`: the access records, newest first. Records written in batches are written
/// first, so a search sees every access that was answered before it.
async fn audit_search(
    state: &web::Data<AppState>,
    params: Vec<crate::fhir::search::Param>,
) -> Result<FhirResponse, Error> {
    let (filter, offset, count) = crate::audit::search(&params)?;
    let st = state.clone();
    let (rows, total) = web::block(move || -> Result<_, Error> {
        st.audit.flush();
        let mut conn = st.pool.get()?;
        crate::store::audit::search(&mut conn, &filter, offset, count)
    })
    .await??;
    Ok(FhirResponse::ok(crate::audit::page(
        &state.base,
        &params,
        &rows,
        total,
        offset,
        count,
    )))
}

/// `POST /fhir`: a transaction (all or nothing, one database transaction) or a batch (each entry
/// on its own) Bundle, answered with a transaction-response / batch-response in request order.
async fn bundle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = req.clone();
    respond(&req, |n| async move {
        let content_type = r.headers().get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).map(str::to_string);
        let format = kiunga_codec::content_format(content_type.as_deref()).map_err(Error::UnsupportedMediaType)?;
        let bytes = read_body(payload, state.config.max_body_bytes).await?;
        // Checking a large Bundle takes tens of milliseconds of CPU: off the worker that serves
        // other requests.
        let parsed = web::block(move || kiunga_codec::parse_bundle(&bytes, format)).await??;
        let kind = parsed.bundle.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let count = parsed.bundle.get("entry").and_then(Value::as_array).map_or(0, Vec::len);
        if count > state.config.max_bundle_entries {
            return Err(Error::PayloadTooLarge(state.config.max_bundle_entries).with_message(format!(
                "the Bundle has {count} entries; this server takes at most {} per Bundle (KIUNGA_MAX_BUNDLE_ENTRIES); split it",
                state.config.max_bundle_entries
            )));
        }
        let opts = rest::bundle::Options { lenient: n.lenient, return_pref: n.return_pref, base: state.base.clone() };
        let (ctx, mappings) = tx_inputs(&state, &n);
        let result = match kind.as_str() {
            "transaction" => tx(&state, ctx, mappings, move |s, env| rest::bundle::transaction(s, env, parsed.bundle, &parsed.entry_errors, &opts)).await?,
            "batch" => {
                if let Some(a) = &n.access {
                    a.set_subtype("batch");
                }
                let (answer, reads) = crate::app::with_conn(&state, ctx, mappings, move |conn, ctx, env| {
                    let entries = parsed.bundle.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
                    let mut out = Vec::with_capacity(entries.len());
                    // Each entry is an interaction of its own: one that wrote is recorded in its
                    // transaction, any other from its answer, here.
                    let mut reads = Vec::new();
                    for (i, entry) in entries.iter().enumerate() {
                        let error = parsed.entry_errors.get(i).and_then(Option::as_ref);
                        let before = ctx.access.as_ref().map(|a| a.written_rows());
                        let answer = crate::store::Scoped::transaction(conn, ctx, |s| {
                            rest::bundle::batch_entry(s, env, entry, i, error, &opts)
                        });
                        let json = match answer {
                            Ok(a) => a.into_json(),
                            Err(e @ Error::Unavailable(_)) => return Err(e),
                            Err(e) => rest::bundle::Answer::failure(&e, &ctx.request_id).into_json(),
                        };
                        if let Some(a) = ctx.access.as_ref().filter(|a| Some(a.written_rows()) == before) {
                            reads.push(a.entry_row(&json));
                        }
                        out.push(json);
                    }
                    Ok((rest::bundle::response_bundle("batch-response", out), reads))
                })
                .await?;
                if let Some(a) = &n.access {
                    for row in reads {
                        state.audit.record(row);
                    }
                    a.mark_recorded();
                }
                answer
            }
            other => {
                return Err(Error::invalid_at(
                    format!("Bundle.type `{other}` cannot be processed here: POST /fhir takes transaction or batch Bundles"),
                    "Bundle.type",
                ))
            }
        };
        Ok(FhirResponse::ok(result))
    })
    .await
}

type TerminologyOp = fn(&AppState, &[(String, Value)]) -> Result<FhirResponse, Error>;

/// A terminology operation: parameters from the query string and, for POST, a Parameters body.
async fn terminology_op(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    resource_type: &'static str,
    op: TerminologyOp,
) -> HttpResponse {
    let r = req.clone();
    respond(&req, |n| async move {
        allowed(&n, resource_type, &[Op::Read])?;
        let body = terminology::body_params(&r, payload, &state).await?;
        let params = terminology::op_params(
            &crate::fhir::search::parse_query(r.query_string()),
            body.as_ref(),
        );
        op(&state, &params)
    })
    .await
}

async fn translate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    terminology_op(req, payload, state, "ConceptMap", terminology::translate).await
}

async fn cs_validate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    terminology_op(
        req,
        payload,
        state,
        "CodeSystem",
        terminology::validate_code,
    )
    .await
}

async fn vs_validate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    terminology_op(
        req,
        payload,
        state,
        "ValueSet",
        terminology::validate_value_set,
    )
    .await
}

async fn lookup(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    terminology_op(req, payload, state, "CodeSystem", terminology::lookup).await
}

/// `Patient/{id}/$everything`: the patient, their Encounters and Observations.
async fn everything(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    respond(&req, |n| async move {
        if t != "Patient" {
            return Err(Error::NotFound(format!(
                "$everything is defined on Patient, not {t}"
            )));
        }
        // Resources of types the token may not read are left out of the answer.
        allowed(&n, "Patient", &[Op::Read])?;
        let (ctx, mappings) = tx_inputs(&state, &n);
        let base = state.base.clone();
        Ok(FhirResponse::ok(
            crate::app::read(&state, ctx, mappings, move |s, env| {
                rest::everything(s, env, &id, &base)
            })
            .await?,
        ))
    })
    .await
}

/// `POST Patient/{id}/$op` with a body, run in one transaction by `f` (given the id and the
/// body); the answer and who asked.
#[allow(clippy::too_many_arguments)]
async fn patient_instance_op<F>(
    req: &HttpRequest,
    n: &Negotiated,
    t: &str,
    id: String,
    op: &str,
    payload: web::Payload,
    state: &web::Data<AppState>,
    f: F,
) -> Result<(Value, String), Error>
where
    F: FnOnce(&mut crate::store::Scoped, &crate::tracker::Env, &str, Value) -> Result<Value, Error>
        + Send
        + 'static,
{
    if t != "Patient" {
        return Err(Error::NotFound(format!(
            "{op} is defined on Patient, not {t}"
        )));
    }
    let body = identity::resource_body(req, payload, state).await?;
    let (ctx, mappings) = tx_inputs(state, n);
    let actor = ctx.actor.to_string();
    let answer = crate::app::tx(state, ctx, mappings, move |s, env| f(s, env, &id, body)).await?;
    Ok((answer, actor))
}

/// `POST Patient/{id}/$transfer`: moves the ownership of the person's record in a program.
async fn transfer(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    let r = req.clone();
    respond(&req, |n| async move {
        // Ownership moves with the person's enrollments (EpisodeOfCare).
        allowed(&n, "Patient", &[Op::Update])?;
        allowed(&n, "EpisodeOfCare", &[Op::Update])?;
        let (answer, _) = patient_instance_op(
            &r,
            &n,
            &t,
            id,
            "$transfer",
            payload,
            &state,
            |s, env, id, body| {
                rest::care::transfer(s, env, id, &rest::care::transfer_params(body)?)
            },
        )
        .await?;
        Ok(FhirResponse::ok(answer))
    })
    .await
}

/// `POST Patient/{id}/$break-glass`: time-limited, reasoned access to a protected program's record.
async fn break_glass(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    let r = req.clone();
    respond(&req, |n| async move {
        // It writes a grant (and opens protected records): a write, not a read.
        allowed(&n, "Patient", &[Op::Update])?;
        let duration = chrono::Duration::seconds(
            i64::try_from(state.config.break_glass_seconds).unwrap_or(i64::MAX / 1000),
        );
        let person = id.clone();
        let (granted, actor) = patient_instance_op(
            &r,
            &n,
            &t,
            id,
            "$break-glass",
            payload,
            &state,
            move |s, env, id, body| rest::care::break_glass(s, env, id, body, duration),
        )
        .await?;
        // Logged once committed: the line never tells of a grant that did not happen. UIDs and
        // the actor only (docs/LOGGING.md); the reason stays in the database.
        tracing::info!(
            target: "kiunga::audit",
            person = %person,
            program = %granted["parameter"][0]["valueCode"].as_str().unwrap_or_default(),
            actor = %actor,
            expires = %granted["parameter"][1]["valueInstant"].as_str().unwrap_or_default(),
            "break-the-glass access granted"
        );
        Ok(FhirResponse::ok(granted))
    })
    .await
}

async fn metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    respond(&req, |_n| async move {
        Ok(FhirResponse::ok(crate::fhir::capability::statement(
            &state.base,
            RESOURCES,
            &state.mappings().version,
        )))
    })
    .await
}

async fn not_allowed(req: HttpRequest) -> HttpResponse {
    let method = req.method().to_string();
    respond(&req, |_n| async move {
        Err(Error::MethodNotAllowed(format!(
            "{method} is not allowed on this URL"
        )))
    })
    .await
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    respond(&req, |_n| async move {
        Err(Error::NotFound(
            "no such endpoint; the FHIR API is under /fhir (see /fhir/metadata)".into(),
        ))
    })
    .await
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
        Ok(Ok(true)) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Ok(Ok(false)) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("migrations pending\n"),
        _ => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("database unreachable\n"),
    }
}
