//! Start-up (database, migrations, metadata, mappings) and the state shared by every request.

use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::{dev::Server, middleware, web, App, HttpServer};
use diesel::Connection;

use crate::config::Config;
use crate::context::RequestContext;
use crate::error::Error;
use crate::mapping::{MappingSet, Problems};
use crate::store::{self, metadata_import, PgPool, Scoped};
use crate::tracker::metadata::Metadata;
use crate::tracker::Env;

pub struct AppState {
    pub config: Config,
    pub pool: PgPool,
    pub metadata: Arc<Metadata>,
    mappings: Arc<RwLock<Arc<MappingSet>>>,
    /// The org unit that owns Patients sent without managingOrganization, when configured.
    pub default_org_unit: Option<i64>,
    /// Public base URL of the FHIR endpoint.
    pub base: String,
    /// Requests per second per API client (`rate_limit_per_second`), when limited.
    pub limiter: Option<crate::auth::limits::RateLimiter>,
    /// Token requests per caller address: few, since each checks a secret with argon2.
    pub token_limiter: Option<crate::auth::limits::RateLimiter>,
    /// Writes the access records of requests that wrote nothing (`crate::audit`).
    pub audit: crate::audit::Sink,
    /// The external identity provider whose bearer JWTs are accepted, when configured.
    pub idp: Option<crate::auth::idp::Idp>,
    /// Principals of recently seen access tokens (authentication required only).
    pub tokens: Option<Arc<crate::auth::cache::TokenCache>>,
    /// Outbound delivery counters (`/metrics`).
    pub outbox_metrics: Arc<crate::outbox::metrics::Metrics>,
    /// The delivery workers of this process, when it runs them.
    pub outbox: Option<crate::outbox::worker::Workers>,
    /// Turns to run a read (`Config::active_reads`), given in arrival order.
    reads: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the database at {url}: {message}. Set DATABASE_URL to a Postgres database you can create tables in, or start the gateway with `make run`, which finds or starts one.")]
    Database { url: String, message: String },
    #[error("{0}")]
    Metadata(#[from] metadata_import::MetadataError),
    #[error("the mapping files have problems:\n{0}")]
    Mappings(Problems),
    #[error("configuration: {0}")]
    Config(String),
}

/// The database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl AppState {
    /// Connects, migrates, imports the metadata files and checks the mappings.
    pub fn start(config: Config) -> Result<AppState, StartError> {
        let db_err = |message: String| StartError::Database {
            url: redact_url(&config.database_url),
            message,
        };
        let mut conn = diesel::PgConnection::establish(&store::libpq_url(&config.database_url))
            .map_err(|e| db_err(e.to_string()))?;
        let applied = store::run_migrations(&mut conn).map_err(|e| db_err(e.to_string()))?;
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        let summary = metadata_import::import_dir(&mut conn, &config.metadata_dir)?;
        tracing::info!(
            files = summary.files,
            org_units = summary.org_units,
            programs = summary.programs,
            "metadata loaded"
        );
        let metadata = Metadata::load(&mut conn).map_err(|e| db_err(e.to_string()))?;
        let mappings =
            MappingSet::load(&config.mappings_dir, &metadata).map_err(StartError::Mappings)?;
        tracing::info!(version = %mappings.version, "mappings loaded");
        let default_org_unit = match &config.default_org_unit {
            None => None,
            Some(key) => Some(metadata.org_unit(key).map(|o| o.id).ok_or_else(|| {
                StartError::Config(format!(
                    "default_org_unit `{key}` is not an org unit (give a UID or code)"
                ))
            })?),
        };
        if let Some(file) = &config.clients_file {
            let applied =
                crate::auth::declared::apply(&mut conn, &metadata, file, |v| std::env::var(v).ok())
                    .map_err(|p| {
                        StartError::Config(format!(
                            "the clients file has problems:\n{}",
                            p.join("\n")
                        ))
                    })?;
            tracing::info!(
                added = applied.added,
                updated = applied.updated,
                revoked = applied.revoked,
                "clients file applied"
            );
        }
        let pool = store::pool(
            &config.database_url,
            config.pool_size,
            Duration::from_millis(config.pool_timeout_ms),
            config.generic_plans,
        )
        .map_err(|e| db_err(e.to_string()))?;
        let base = config.fhir_base();
        let limiter = crate::auth::limits::RateLimiter::new(
            config.rate_limit_per_second,
            config.rate_limit_burst,
        );
        let token_limiter = crate::auth::limits::RateLimiter::new(
            config.token_rate_per_second,
            config.token_rate_burst,
        );
        let idp = crate::auth::idp::Idp::from_config(&config).map_err(StartError::Config)?;
        let tokens = match config.auth {
            crate::config::AuthMode::Required => Some(
                crate::auth::cache::TokenCache::start(config.database_url.clone()).map_err(
                    |e| StartError::Config(format!("cannot start the token listener: {e}")),
                )?,
            ),
            crate::config::AuthMode::Off => None,
        };
        let audit = crate::audit::Sink::start(pool.clone())
            .map_err(|e| StartError::Config(format!("cannot start the audit writer: {e}")))?;
        crate::outbox::sync(&mut conn, &mappings, config.write_outbox_rules)
            .map_err(|e| db_err(e.to_string()))?;
        let metadata = Arc::new(metadata);
        let mappings = Arc::new(RwLock::new(Arc::new(mappings)));
        let outbox_metrics = Arc::new(crate::outbox::metrics::Metrics::default());
        let outbox = if config.outbox_workers {
            let workers = crate::outbox::worker::Workers::start(crate::outbox::worker::Shared {
                pool: pool.clone(),
                metadata: metadata.clone(),
                mappings: mappings.clone(),
                default_org_unit,
                metrics: outbox_metrics.clone(),
            })
            .map_err(|e| StartError::Config(format!("cannot start the outbox workers: {e}")))?;
            (!workers.is_empty()).then_some(workers)
        } else {
            None
        };
        let active = match config.active_reads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
            n => n,
        };
        Ok(AppState {
            reads: Arc::new(tokio::sync::Semaphore::new(active)),
            outbox_metrics,
            outbox,
            tokens,
            idp,
            audit,
            limiter,
            token_limiter,
            config,
            pool,
            metadata,
            mappings,
            default_org_unit,
            base,
        })
    }

    /// Waits for a turn to run a read, in arrival order, at most `pool_timeout_ms`.
    ///
    /// With every read running at once, a saturated 2-core machine served `$everything` with a
    /// p99 of 16 to 24 ms, against 9 ms with three at a time (and a fifth fewer short reads): the
    /// scheduler shares the cores among a dozen threads and as many Postgres backends, and a
    /// request woken a dozen times (each statement, each answer) waits at every wake. In a line
    /// it waits once (docs/performance.md, "One line for reads"). Writes do not queue: a write
    /// waits on the log flush at its commit, and creates in a line of three ran at 0.39 × raw
    /// against 0.55 without it.
    async fn take_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        let wait = Duration::from_millis(self.config.pool_timeout_ms);
        match tokio::time::timeout(wait, self.reads.clone().acquire_owned()).await {
            Ok(Ok(turn)) => Ok(turn),
            Ok(Err(_)) => Err(Error::Unavailable("the server is shutting down".into())),
            Err(_) => Err(Error::Unavailable(
                "the server is at capacity: this request waited its turn too long; retry shortly"
                    .into(),
            )),
        }
    }

    /// The mapping set in force. A request takes it once and uses it throughout.
    pub fn mappings(&self) -> Arc<MappingSet> {
        match self.mappings.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the mapping files. A set with any problem is refused (each problem logged as
    /// `file:line: message`) and the old set stays in force; a good set replaces it in one swap,
    /// so a request sees either the old set or the new one, never a mix.
    pub fn reload_mappings(&self) -> Result<String, Problems> {
        match MappingSet::load(&self.config.mappings_dir, &self.metadata) {
            Ok(set) => {
                let version = set.version.clone();
                let old = self.mappings().version.clone();
                match self.mappings.write() {
                    Ok(mut m) => *m = Arc::new(set),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
                }
                tracing::info!(%old, new = %version, "mappings reloaded");
                let synced = self.pool.get().map_err(Error::from).and_then(|mut c| {
                    crate::outbox::sync(&mut c, &self.mappings(), self.config.write_outbox_rules)
                });
                if let Err(e) = synced {
                    tracing::error!(error = %e, "the outbound targets of the new mappings could not be written; the previous triggers stay in force");
                }
                Ok(version)
            }
            Err(problems) => {
                for p in &problems.0 {
                    tracing::warn!(problem = %p, "mapping reload refused");
                }
                tracing::warn!(version = %self.mappings().version, count = problems.0.len(), "mapping reload refused; the previous mappings stay active");
                Err(problems)
            }
        }
    }
}

/// Reloads the mappings whenever the process receives SIGHUP (a background thread).
pub fn reload_on_sighup(state: web::Data<AppState>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("kiunga-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                let _ = state.reload_mappings();
            }
        })?;
    Ok(())
}

/// Runs `f` in one database transaction off the async executor, with the caller's context and
/// the mapping set the request started with (a reload in between never mixes two sets).
pub async fn tx<T, F>(
    state: &web::Data<AppState>,
    ctx: RequestContext,
    mappings: Arc<MappingSet>,
    f: F,
) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut Scoped, &Env) -> Result<T, Error> + Send + 'static,
{
    unit(state, ctx, mappings, true, f).await
}

/// Like [`tx`] for interactions that only read: no BEGIN and COMMIT around them, two round trips
/// fewer. Under READ COMMITTED each statement sees its own snapshot either way, so a transaction
/// would not make the reads more consistent.
pub async fn read<T, F>(
    state: &web::Data<AppState>,
    ctx: RequestContext,
    mappings: Arc<MappingSet>,
    f: F,
) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut Scoped, &Env) -> Result<T, Error> + Send + 'static,
{
    unit(state, ctx, mappings, false, f).await
}

async fn unit<T, F>(
    state: &web::Data<AppState>,
    ctx: RequestContext,
    mappings: Arc<MappingSet>,
    in_transaction: bool,
    f: F,
) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut Scoped, &Env) -> Result<T, Error> + Send + 'static,
{
    let state = state.clone();
    let ctx = ctx.resolved(&state.metadata);
    // Writes wait on the log flush at commit and need company for group commit: only reads queue.
    let turn = if in_transaction {
        None
    } else {
        Some(state.take_turn().await?)
    };
    web::block(move || {
        let _turn = turn;
        let mut conn = state.pool.get()?;
        let env = Env {
            md: &state.metadata,
            mappings: &mappings,
            strict: state.config.strict_mapping,
            default_org_unit: state.default_org_unit,
        };
        if in_transaction {
            Scoped::transaction(&mut conn, &ctx, |s| f(s, &env))
        } else {
            Scoped::autocommit(&mut conn, &ctx, |s| f(s, &env))
        }
    })
    .await?
}

/// Runs `f` on one pooled connection without an enclosing transaction (a batch Bundle opens one
/// per entry), off the async executor.
pub async fn with_conn<T, F>(
    state: &web::Data<AppState>,
    ctx: RequestContext,
    mappings: Arc<MappingSet>,
    f: F,
) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut diesel::PgConnection, &RequestContext, &Env) -> Result<T, Error>
        + Send
        + 'static,
{
    let state = state.clone();
    let ctx = ctx.resolved(&state.metadata);
    web::block(move || {
        let mut conn = state.pool.get()?;
        let env = Env {
            md: &state.metadata,
            mappings: &mappings,
            strict: state.config.strict_mapping,
            default_org_unit: state.default_org_unit,
        };
        f(&mut conn, &ctx, &env)
    })
    .await?
}

/// The HTTP server around a started [`AppState`].
pub struct Gateway {
    pub state: web::Data<AppState>,
}

impl Gateway {
    pub fn new(state: AppState) -> Self {
        Gateway {
            state: web::Data::new(state),
        }
    }

    pub fn listen(self) -> std::io::Result<Server> {
        let listener = TcpListener::bind(&self.state.config.listen)?;
        self.serve(listener)
    }

    pub fn serve(self, listener: TcpListener) -> std::io::Result<Server> {
        let state = self.state.clone();
        let workers = match state.config.http_workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        // Every database call runs on a blocking thread and holds a pooled connection, so threads
        // beyond the pool only wait; each idle one would still keep its own malloc arena (memory).
        let blocking = (state.config.pool_size as usize).div_ceil(workers) + 1;
        let tls = tls_config(&state.config)?;
        let server = HttpServer::new(move || {
            let origins = &state.config.cors_allowed_origins;
            App::new()
                .app_data(state.clone())
                // Innermost: CORS and the security headers apply to its 401s too.
                .wrap(middleware::from_fn(crate::http::auth::authenticate))
                .wrap(middleware::Condition::new(
                    !origins.is_empty(),
                    cors(origins),
                ))
                .wrap(security_headers())
                .wrap(middleware::from_fn(crate::telemetry::log_requests))
                .configure(crate::http::routes)
        })
        .workers(workers)
        .worker_max_blocking_threads(blocking);
        Ok(match tls {
            Some(cfg) => server.listen_rustls_0_23(listener, cfg)?.run(),
            None => server.listen(listener)?.run(),
        })
    }
}

/// The HTTPS settings when `tls_cert` and `tls_key` are configured: TLS 1.2 and 1.3 with rustls'
/// safe defaults (ring), HTTP/1.1. A file that cannot be read or holds no usable certificate or
/// key stops the start, naming it.
fn tls_config(config: &Config) -> std::io::Result<Option<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: {e}", what.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            bad(
                cert,
                &format!("KIUNGA_TLS_CERT is not a PEM certificate chain ({e})"),
            )
        })?;
    if chain.is_empty() {
        return Err(bad(cert, &"KIUNGA_TLS_CERT holds no certificate"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(
            key,
            &format!("KIUNGA_TLS_KEY is not a PEM private key ({e})"),
        )
    })?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| bad(key, &format!("the key does not fit the certificate ({e})")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(cfg))
}

/// Headers on every answer: no content sniffing, no framing, no referrer, no caching of what may
/// be patient data by browsers or proxies, and a content policy that lets an answer run nothing
/// (the API serves data, never pages). Headers a handler set itself are kept.
fn security_headers() -> middleware::DefaultHeaders {
    middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
        .add((
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add(("Cache-Control", "no-store"))
}

/// Cross-origin access for the configured browser origins only (`cors_allowed_origins`); with
/// none configured the middleware is not installed and browsers refuse cross-origin calls.
fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header;
    let mut c = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE"])
        .allowed_headers([
            header::ACCEPT,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::HeaderName::from_static("if-none-exist"),
            header::HeaderName::from_static("prefer"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LAST_MODIFIED,
            header::CONTENT_LOCATION,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(3600);
    for o in origins {
        c = c.allowed_origin(o);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
