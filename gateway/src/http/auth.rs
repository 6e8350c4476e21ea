//! The HTTP side of authentication (docs/security.md): the middleware that turns a bearer token
//! into the request's principal (or answers 401), the OAuth 2.0 token endpoint, and
//! `.well-known/smart-configuration`.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::json;

use crate::app::AppState;
use crate::auth::{self, Credentials};
use crate::config::AuthMode;
use crate::error::Error;
use crate::fhir::{percent_decode, Negotiated};

/// Marks a request served in development mode (`KIUNGA_AUTH=off`).
#[derive(Debug, Clone, Copy)]
pub struct DevelopmentMode;

/// Paths anyone may call: liveness, the capability statement, SMART discovery and the token
/// endpoint itself.
fn public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/fhir/metadata"
            | "/auth/token"
            | "/.well-known/smart-configuration"
            | "/fhir/.well-known/smart-configuration"
    )
}

/// Who a bearer token stands for, from the database (and then kept in the token cache) or, for a
/// JWT, from the identity provider and the client it names. `Ok(Err(why))`: a JWT refused, with
/// the reason for the 401; `Ok(Ok(None))`: an unknown, expired or revoked token. The principal
/// comes shared: the cache keeps the same one.
fn lookup(
    s: &AppState,
    token: &str,
    jwt: bool,
) -> Result<Result<Option<Arc<auth::Principal>>, String>, Error> {
    if jwt {
        let claimed = match s.idp.as_ref().map(|i| i.verify(token)) {
            Some(Ok(c)) => c,
            Some(Err(why)) => return Ok(Err(why)),
            None => return Ok(Ok(None)),
        };
        let mut conn = s.pool.get()?;
        return Ok(
            auth::authenticate_claimed(&mut conn, &s.metadata, &claimed)?
                .map(|p| Some(Arc::new(p))),
        );
    }
    let hash = auth::token_hash(token);
    // Read before the database: a change committed meanwhile makes the entry unusable.
    let generation = s.tokens.as_ref().map(|c| c.generation());
    let mut conn = s.pool.get()?;
    let found = auth::authenticate_hash(&mut conn, &s.metadata, &hash)?
        .map(|(p, expires)| (Arc::new(p), expires));
    if let (Some(cache), Some(g), Some((p, expires))) = (&s.tokens, generation, &found) {
        cache.put(hash, p.clone(), *expires, g);
    }
    Ok(Ok(found.map(|(p, _)| p)))
}

/// With authentication required, every other request must carry `Authorization: Bearer` with a
/// live token; its principal goes into the request for the request context. A missing, unknown,
/// expired or revoked token is 401 with an OperationOutcome and `WWW-Authenticate`.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    if state.config.auth == AuthMode::Off {
        // Development mode: the request context is the anonymous caller's, with everything.
        req.extensions_mut().insert(DevelopmentMode);
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    // Public paths, and CORS preflights (answered by the CORS middleware, never by a handler),
    // go on without a principal: a handler that builds a request context from such a request
    // gets one that may do nothing (`http::context`).
    let preflight = req.method() == "OPTIONS"
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if public(req.path()) || preflight {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let refusal = match bearer {
        None => Some((
            "this endpoint needs an access token: get one at /auth/token (OAuth 2.0 client credentials) and send it as `Authorization: Bearer <token>`",
            "Bearer realm=\"kiunga\"",
        )),
        Some(token) => {
            let s = state.clone();
            // The gateway's own tokens are opaque; a JWT (three dot-separated parts) can only be
            // the external identity provider's.
            let jwt = s.idp.is_some() && token.split('.').count() == 3;
            // A token seen lately needs no database round trip and no trip off this thread.
            let cached = (!jwt)
                .then(|| s.tokens.as_ref().and_then(|c| c.get(&auth::token_hash(&token))))
                .flatten();
            // The cached principal is shared as it is: no copy of its scopes per request.
            let found = if let Some(p) = cached {
                Ok(Ok(Ok(Some(p))))
            } else {
                web::block(move || lookup(&s, &token, jwt))
                .await
                .map_err(|e| Error::Internal(format!("authentication task failed: {e}")))
            };
            let found = match found {
                Ok(Ok(Err(why))) => {
                    tracing::info!(target: "kiunga::audit", path = %req.path(), "request refused: bearer JWT not accepted");
                    let n = Negotiated::from_request(req.request());
                    let mut res = n.error(Error::Unauthorized(why));
                    res.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer realm=\"kiunga\", error=\"invalid_token\""),
                    );
                    return Ok(req.into_response(res).map_into_right_body());
                }
                Ok(Ok(Ok(p))) => Ok(Ok(p)),
                Ok(Err(e)) => Ok(Err(e)),
                Err(e) => Err(e),
            };
            match found {
                Ok(Ok(Some(p))) => {
                    if let Some(wait) = state
                        .limiter
                        .as_ref()
                        .and_then(|l| l.take(&p.client_id, std::time::Instant::now()).err())
                    {
                        tracing::info!(target: "kiunga::audit", client = %p.client_id, "request refused: rate limit");
                        let n = Negotiated::from_request(req.request());
                        let seconds = wait.as_secs().max(1);
                        let mut res = n.error(Error::TooManyRequests(format!(
                            "client {} is over its limit of {} requests per second; retry in {seconds} s",
                            p.client_id, state.config.rate_limit_per_second
                        )));
                        res.headers_mut().insert(
                            header::RETRY_AFTER,
                            header::HeaderValue::from(seconds),
                        );
                        return Ok(req.into_response(res).map_into_right_body());
                    }
                    req.extensions_mut().insert(p);
                    None
                }
                Ok(Ok(None)) => Some((
                    "the access token is unknown, expired or revoked; get a new one at /auth/token",
                    "Bearer realm=\"kiunga\", error=\"invalid_token\"",
                )),
                Ok(Err(e)) | Err(e) => {
                    let n = Negotiated::from_request(req.request());
                    let res = n.error(e);
                    return Ok(req.into_response(res).map_into_right_body());
                }
            }
        }
    };
    match refusal {
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Some((message, challenge)) => {
            tracing::info!(target: "kiunga::audit", path = %req.path(), "request refused: no valid access token");
            let n = Negotiated::from_request(req.request());
            let mut res = n.error(Error::Unauthorized(message.into()));
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
            Ok(req.into_response(res).map_into_right_body())
        }
    }
}

#[derive(serde::Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    scope: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    client_id: Option<String>,
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn oauth_error(status: u16, code: &str, description: &str) -> HttpResponse {
    let mut b = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    );
    if status == 401 {
        b.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"kiunga\""));
    }
    b.insert_header((header::PRAGMA, "no-cache"))
        .json(json!({ "error": code, "error_description": description }))
}

/// `POST /auth/token`: OAuth 2.0 client credentials, with `client_secret_basic` (HTTP Basic) or
/// `private_key_jwt` (`client_assertion`). Answers are OAuth's JSON, not FHIR resources.
pub async fn token(
    req: HttpRequest,
    form: Result<web::Form<TokenForm>, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Ok(web::Form(form)) = form else {
        return oauth_error(
            400,
            "invalid_request",
            "send application/x-www-form-urlencoded with grant_type=client_credentials",
        );
    };
    // Token requests are limited per caller address too: each secret check costs an argon2
    // hash, and guessing secrets must stay slow.
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    if let Some(wait) = state.limiter.as_ref().and_then(|l| {
        l.take(&format!("token:{peer}"), std::time::Instant::now())
            .err()
    }) {
        return HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, wait.as_secs().max(1)))
            .json(json!({ "error": "slow_down", "error_description": "too many token requests from this address; retry later" }));
    }
    if form.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported (SMART Backend Services)",
        );
    }
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .map(str::trim)
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b));
    let basic: Option<(String, String)> = match basic {
        None => None,
        Some(Ok(bytes)) => match String::from_utf8(bytes)
            .ok()
            .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
        {
            // client_secret_basic form-encodes both before base64 (RFC 6749 §2.3.1).
            Some((id, secret)) => Some((percent_decode(&id), percent_decode(&secret))),
            None => {
                return oauth_error(
                    400,
                    "invalid_request",
                    "the Basic credentials are not client_id:client_secret",
                )
            }
        },
        Some(Err(_)) => {
            return oauth_error(
                400,
                "invalid_request",
                "the Basic credentials are not base64",
            )
        }
    };
    let assertion = match (&form.client_assertion_type, &form.client_assertion) {
        (Some(t), Some(a)) if t == JWT_BEARER => Some(a.clone()),
        (Some(_), _) => {
            return oauth_error(
                400,
                "invalid_request",
                &format!("client_assertion_type must be {JWT_BEARER}"),
            )
        }
        (None, Some(_)) => {
            return oauth_error(
                400,
                "invalid_request",
                &format!("client_assertion needs client_assertion_type={JWT_BEARER}"),
            )
        }
        (None, None) => None,
    };
    if basic.is_some() && assertion.is_some() {
        return oauth_error(
            400,
            "invalid_request",
            "authenticate the client one way: HTTP Basic or client_assertion, not both",
        );
    }
    if basic.is_none() && assertion.is_none() {
        return oauth_error(
            401,
            "invalid_client",
            "no client authentication: use HTTP Basic (client_secret_basic) or a client_assertion (private_key_jwt)",
        );
    }
    // A client_id sent alongside (RFC 6749 allows it) must name the client that authenticates.
    if let Some(named) = &form.client_id {
        let authenticating = match (&basic, &assertion) {
            (Some((id, _)), _) => Some(id.clone()),
            (None, Some(jwt)) => auth::assertion::issuer(jwt).ok(),
            (None, None) => None,
        };
        if authenticating.as_deref() != Some(named.as_str()) {
            return oauth_error(
                400,
                "invalid_request",
                "client_id differs from the client that authenticates",
            );
        }
    }
    let token_url = state.config.token_url();
    let lifetime = state.config.token_seconds;
    let scope = form.scope.clone();
    let s = state.clone();
    let result = web::block(move || {
        let mut conn = s.pool.get().map_err(Error::from).map_err(Err)?;
        // One of the two is there (checked above); without either, the assertion is empty
        // and refused as unreadable.
        let credentials = match (&basic, &assertion) {
            (Some((id, secret)), _) => Credentials::Secret {
                client_id: id,
                secret,
            },
            (None, jwt) => Credentials::Assertion {
                jwt: jwt.as_deref().unwrap_or_default(),
            },
        };
        auth::issue(
            &mut conn,
            credentials,
            scope.as_deref(),
            &token_url,
            lifetime,
            chrono::Utc::now(),
        )
    })
    .await;
    match result {
        Ok(Ok(issued)) => {
            tracing::info!(target: "kiunga::audit", scope = %issued.scope, "access token issued");
            HttpResponse::Ok()
                .insert_header((header::PRAGMA, "no-cache"))
                .json(json!({
                    "access_token": issued.access_token,
                    "token_type": "bearer",
                    "expires_in": issued.expires_in,
                    "scope": issued.scope,
                }))
        }
        Ok(Err(Ok(e))) => {
            tracing::info!(target: "kiunga::audit", error = e.code, "token request refused");
            oauth_error(e.status(), e.code, &e.description)
        }
        Ok(Err(Err(e))) => {
            let n = Negotiated::from_request(&req);
            n.error(e)
        }
        Err(e) => {
            let n = Negotiated::from_request(&req);
            n.error(Error::Internal(format!("token task failed: {e}")))
        }
    }
}

/// `GET [base]/.well-known/smart-configuration`: what SMART Backend Services clients need to
/// find the token endpoint and what it takes.
pub async fn smart_configuration(state: web::Data<AppState>) -> HttpResponse {
    let mut auth_methods = vec!["private_key_jwt", "client_secret_basic"];
    if state.config.auth == AuthMode::Off {
        auth_methods.clear();
    }
    HttpResponse::Ok().json(json!({
        "token_endpoint": state.config.token_url(),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/Patient.cruds", "system/Patient.rs", "system/Encounter.cruds", "system/Observation.cruds", "system/RelatedPerson.cruds", "system/EpisodeOfCare.cruds"],
        "capabilities": ["client-confidential-asymmetric", "client-confidential-symmetric", "permission-v1", "permission-v2"],
    }))
}
