//! `/admin/outbox…`: the outbox operations over HTTP (`crate::outbox::admin`), and `/metrics`.
//! Reading needs `system/Outbox.rs`, changing `system/Outbox.u`; a `system/*` scope reaches
//! neither (the outbox is granted by name, like the audit trail).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{allowed, respond};
use crate::app::AppState;
use crate::auth::scopes::Op;
use crate::error::Error;
use crate::fhir::FhirResponse;
use crate::outbox::admin;

async fn blocking<T: Send + 'static>(
    state: &web::Data<AppState>,
    f: impl FnOnce(&mut diesel::PgConnection) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let pool = state.pool.clone();
    web::block(move || {
        let mut c = pool.get()?;
        f(&mut c)
    })
    .await
    .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

pub async fn status(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    respond(&req, |n| async move {
        allowed(&n, "Outbox", &[Op::Read])?;
        Ok(FhirResponse::ok(blocking(&state, admin::status).await?))
    })
    .await
}

#[derive(Deserialize)]
pub struct ListQuery {
    target: Option<String>,
    status: Option<String>,
    #[serde(rename = "_count")]
    count: Option<i64>,
}

pub async fn list(
    req: HttpRequest,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let q = q.into_inner();
    respond(&req, |n| async move {
        allowed(&n, "Outbox", &[Op::Search])?;
        let v = blocking(&state, move |c| {
            admin::list(
                c,
                q.target.as_deref(),
                q.status.as_deref(),
                q.count.unwrap_or(100),
            )
        })
        .await?;
        Ok(FhirResponse::ok(v))
    })
    .await
}

fn item_id(raw: &str) -> Result<i64, Error> {
    raw.parse()
        .map_err(|_| Error::invalid(format!("`{raw}` is not an outbox item id (a number)")))
}

/// One item, by the id in the path, under `op`'s scope letter.
async fn on_item(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    op: Op,
    f: fn(&mut diesel::PgConnection, i64) -> Result<serde_json::Value, Error>,
) -> HttpResponse {
    let raw = path.into_inner();
    respond(&req, |n| async move {
        allowed(&n, "Outbox", &[op])?;
        let id = item_id(&raw)?;
        Ok(FhirResponse::ok(blocking(&state, move |c| f(c, id)).await?))
    })
    .await
}

pub async fn show(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    on_item(req, path, state, Op::Read, admin::show).await
}

pub async fn retry(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    on_item(req, path, state, Op::Update, admin::retry).await
}

#[derive(Deserialize)]
pub struct SkipQuery {
    reason: Option<String>,
}

pub async fn skip(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<SkipQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let raw = path.into_inner();
    let reason = q.into_inner().reason;
    respond(&req, |n| async move {
        allowed(&n, "Outbox", &[Op::Update])?;
        let id = item_id(&raw)?;
        let why = reason.ok_or_else(|| {
            Error::invalid("say why the item is skipped: ?reason=… (it is kept with the item)")
        })?;
        Ok(FhirResponse::ok(
            blocking(&state, move |c| admin::skip(c, id, &why)).await?,
        ))
    })
    .await
}

#[derive(Deserialize)]
pub struct ReplayQuery {
    since: Option<String>,
    target: Option<String>,
}

pub async fn replay(
    req: HttpRequest,
    q: web::Query<ReplayQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let q = q.into_inner();
    respond(&req, |n| async move {
        allowed(&n, "Outbox", &[Op::Update])?;
        let since = q
            .since
            .as_deref()
            .ok_or_else(|| Error::invalid("give ?since=<instant> (e.g. 2026-11-20T00:00:00Z)"))
            .and_then(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|d| d.with_timezone(&chrono::Utc))
                    .map_err(|e| Error::invalid(format!("since `{s}` is not an instant: {e}")))
            })?;
        let v = blocking(&state, move |c| {
            admin::replay(c, since, q.target.as_deref())
        })
        .await?;
        Ok(FhirResponse::ok(v))
    })
    .await
}

/// Prometheus exposition. Counts only: nothing here names a record.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    match blocking(&st, crate::store::outbox::status).await {
        Ok(rows) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(state.outbox_metrics.render(&rows)),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the outbox");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("database unreachable\n")
        }
    }
}
