//! Typed configuration: defaults that work, then an optional `kiunga.toml`, then `KIUNGA_*` variables.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether callers must authenticate (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every FHIR request needs a bearer token from `/auth/token` (the default).
    Required,
    /// Development only: every request is the anonymous caller with the whole tree in scope.
    /// `make run` uses it; the gateway says so in its log at start-up.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds to.
    pub listen: String,
    /// Public base URL of the FHIR endpoint, used in `Location`, `fullUrl` and paging links.
    pub base_url: Option<String>,
    pub database_url: String,
    /// Upper bound on database connections; requests wait at most `pool_timeout_ms` for one (then 503).
    pub pool_size: u32,
    pub pool_timeout_ms: u64,
    /// Pooled connections plan each prepared statement once (`plan_cache_mode =
    /// force_generic_plan`); false leaves Postgres's default (`auto`).
    pub generic_plans: bool,
    pub mappings_dir: PathBuf,
    pub metadata_dir: PathBuf,
    pub log_format: LogFormat,
    /// Reject (422) input holding elements that no mapping stores, instead of accepting with warnings.
    pub strict_mapping: bool,
    /// Largest request body accepted, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Most entries a transaction or batch Bundle may have (413 above).
    pub max_bundle_entries: usize,
    /// Org unit (UID or code) that owns a Patient sent without `managingOrganization`.
    pub default_org_unit: Option<String>,
    /// HTTP worker threads (0: one per core).
    pub http_workers: usize,
    /// Requests that only read (reads, searches, `$everything`...) whose database work runs at
    /// once; the others wait in line, first come first served, at most `pool_timeout_ms` (then
    /// 503). 0: one more than the cores. On a saturated machine more at once only lengthens the
    /// tail. Writes do not queue.
    pub active_reads: usize,
    /// How long a break-the-glass grant on a protected program lasts (`$break-glass`), in seconds.
    pub break_glass_seconds: u64,
    /// Browser origins (`https://emr.example.org`) allowed to call the API cross-origin; none by
    /// default (CORS off).
    pub cors_allowed_origins: Vec<String>,
    /// `required` (default) or `off` (development mode: no authentication, everything in scope).
    pub auth: AuthMode,
    /// How long an access token from `/auth/token` lasts, in seconds.
    pub token_seconds: u64,
    /// Requests per second each API client may make (0: no limit), and how many at once above
    /// that (the bucket): beyond, 429 with `Retry-After`.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Token requests per second per caller address at `/auth/token`, and the burst (0: no
    /// limit). A client needs one every few minutes.
    pub token_rate_per_second: u32,
    pub token_rate_burst: u32,
    /// A TOML file of API clients applied at start-up (docs/security.md); none by default.
    pub clients_file: Option<PathBuf>,
    /// PEM certificate chain and private key: with both, the gateway serves HTTPS itself
    /// (rustls); with neither, plain HTTP behind a TLS-terminating proxy.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// An external identity provider (Keycloak and the like) whose bearer JWTs are accepted: its
    /// issuer (`iss`), its keys (a JWKS file, or an http(s) URL), the audience its tokens must
    /// name (default: the FHIR base URL) and the claim naming the registered client.
    pub idp_issuer: Option<String>,
    pub idp_jwks: Option<String>,
    pub idp_audience: Option<String>,
    pub idp_client_claim: String,
    /// Deliver the outbox from this process (`KIUNGA_OUTBOX_WORKERS`, default true); false when
    /// `kiunga worker` runs the delivery apart.
    pub outbox_workers: bool,
    /// Write the outbound rules of the target files at start-up (the server and the worker);
    /// false for one-off commands. Not a setting: `kiunga` decides it per command.
    #[serde(skip)]
    pub write_outbox_rules: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            base_url: None,
            database_url: "postgres://postgres@127.0.0.1:5432/kiunga".into(),
            pool_size: 10,
            pool_timeout_ms: 5_000,
            generic_plans: true,
            mappings_dir: "mappings".into(),
            metadata_dir: "fixtures/metadata".into(),
            log_format: LogFormat::Text,
            strict_mapping: false,
            max_body_bytes: 64 * 1024 * 1024,
            max_bundle_entries: 20_000,
            default_org_unit: None,
            http_workers: 0,
            active_reads: 0,
            // DHIS2's temporary ownership lasts three hours.
            break_glass_seconds: 3 * 60 * 60,
            cors_allowed_origins: Vec::new(),
            auth: AuthMode::Required,
            tls_cert: None,
            tls_key: None,
            idp_issuer: None,
            idp_jwks: None,
            idp_audience: None,
            // Keycloak puts the client id of a client-credentials token in `azp`.
            idp_client_claim: "azp".into(),
            // SMART Backend Services recommends five minutes.
            token_seconds: 300,
            // One runaway client must not take the two cores from the others; a busy EMR's sync
            // stays far below this.
            rate_limit_per_second: 500,
            rate_limit_burst: 1000,
            token_rate_per_second: 2,
            token_rate_burst: 20,
            clients_file: None,
            outbox_workers: true,
            write_outbox_rules: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
}

impl Config {
    /// Loads `KIUNGA_CONFIG` (or `./kiunga.toml` when present), then applies environment overrides.
    pub fn load() -> Result<Config, ConfigError> {
        let explicit = std::env::var("KIUNGA_CONFIG").ok();
        let path = explicit.clone().unwrap_or_else(|| "kiunga.toml".into());
        let mut config = if explicit.is_some() || Path::new(&path).exists() {
            Self::from_file(Path::new(&path))?
        } else {
            Config::default()
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::File {
                path: format!("{}:{line}", path.display()),
                message: e.message().to_string(),
            }
        })
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &'static str, v: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                message: e.to_string(),
            })
        }
        if let Some(v) = get("KIUNGA_OUTBOX_WORKERS") {
            self.outbox_workers = parse("KIUNGA_OUTBOX_WORKERS", v)?;
        }
        if let Some(v) = get("KIUNGA_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("KIUNGA_BASE_URL") {
            self.base_url = Some(v);
        }
        if let Some(v) = get("KIUNGA_DATABASE_URL").or_else(|| get("DATABASE_URL")) {
            self.database_url = v;
        }
        if let Some(v) = get("KIUNGA_POOL_SIZE") {
            self.pool_size = parse("KIUNGA_POOL_SIZE", v)?;
        }
        if let Some(v) = get("KIUNGA_GENERIC_PLANS") {
            self.generic_plans = parse("KIUNGA_GENERIC_PLANS", v)?;
        }
        if let Some(v) = get("KIUNGA_POOL_TIMEOUT_MS") {
            self.pool_timeout_ms = parse("KIUNGA_POOL_TIMEOUT_MS", v)?;
        }
        if let Some(v) = get("KIUNGA_MAPPINGS_DIR") {
            self.mappings_dir = v.into();
        }
        if let Some(v) = get("KIUNGA_METADATA_DIR") {
            self.metadata_dir = v.into();
        }
        if let Some(v) = get("KIUNGA_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::Env {
                        name: "KIUNGA_LOG_FORMAT",
                        message: format!("`{other}` is neither `text` nor `json`"),
                    })
                }
            };
        }
        if let Some(v) = get("KIUNGA_STRICT_MAPPING") {
            self.strict_mapping = parse("KIUNGA_STRICT_MAPPING", v)?;
        }
        if let Some(v) = get("KIUNGA_MAX_BODY_BYTES") {
            self.max_body_bytes = parse("KIUNGA_MAX_BODY_BYTES", v)?;
        }
        if let Some(v) = get("KIUNGA_MAX_BUNDLE_ENTRIES") {
            self.max_bundle_entries = parse("KIUNGA_MAX_BUNDLE_ENTRIES", v)?;
        }
        if let Some(v) = get("KIUNGA_DEFAULT_ORG_UNIT") {
            self.default_org_unit = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = get("KIUNGA_HTTP_WORKERS") {
            self.http_workers = parse("KIUNGA_HTTP_WORKERS", v)?;
        }
        if let Some(v) = get("KIUNGA_ACTIVE_READS") {
            self.active_reads = parse("KIUNGA_ACTIVE_READS", v)?;
        }
        if let Some(v) = get("KIUNGA_CORS_ORIGINS") {
            self.cors_allowed_origins = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
        }
        // An origin actix-cors cannot parse stops the workers with a vague error, and one written
        // otherwise than browsers send it (upper case, a path, a query) never matches: refuse
        // both here, with the setting's name.
        for o in &self.cors_allowed_origins {
            let uri: Option<actix_web::http::Uri> = o.parse().ok();
            let ok = uri.is_some_and(|u| {
                u.scheme().is_some()
                    && u.authority().is_some()
                    && u.path_and_query()
                        .is_none_or(|p| matches!(p.as_str(), "" | "/"))
            }) && *o == o.to_ascii_lowercase()
                && !o.ends_with('/');
            if !ok {
                return Err(ConfigError::Env {
                    name: "KIUNGA_CORS_ORIGINS",
                    message: format!(
                        "`{o}` is not an origin as browsers send it (scheme://host[:port] in lower case, no path or query)"
                    ),
                });
            }
        }
        if let Some(v) = get("KIUNGA_AUTH") {
            self.auth = match v.trim() {
                "required" => AuthMode::Required,
                "off" => AuthMode::Off,
                other => {
                    return Err(ConfigError::Env {
                        name: "KIUNGA_AUTH",
                        message: format!("`{other}` is neither `required` nor `off`"),
                    })
                }
            };
        }
        if let Some(v) = get("KIUNGA_RATE_LIMIT") {
            self.rate_limit_per_second = parse("KIUNGA_RATE_LIMIT", v)?;
        }
        if let Some(v) = get("KIUNGA_RATE_LIMIT_BURST") {
            self.rate_limit_burst = parse("KIUNGA_RATE_LIMIT_BURST", v)?;
        }
        if let Some(v) = get("KIUNGA_TOKEN_RATE_LIMIT") {
            self.token_rate_per_second = parse("KIUNGA_TOKEN_RATE_LIMIT", v)?;
        }
        if let Some(v) = get("KIUNGA_TOKEN_RATE_BURST") {
            self.token_rate_burst = parse("KIUNGA_TOKEN_RATE_BURST", v)?;
        }
        if let Some(v) = get("KIUNGA_CLIENTS_FILE") {
            self.clients_file = (!v.is_empty()).then(|| v.into());
        }
        let path = |v: String| (!v.is_empty()).then(|| PathBuf::from(v));
        let text = |v: String| (!v.trim().is_empty()).then(|| v.trim().to_string());
        if let Some(v) = get("KIUNGA_TLS_CERT") {
            self.tls_cert = path(v);
        }
        if let Some(v) = get("KIUNGA_TLS_KEY") {
            self.tls_key = path(v);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Env {
                name: if self.tls_cert.is_some() { "KIUNGA_TLS_KEY" } else { "KIUNGA_TLS_CERT" },
                message: "HTTPS needs both KIUNGA_TLS_CERT (PEM certificate chain) and KIUNGA_TLS_KEY (PEM private key)".into(),
            });
        }
        if let Some(v) = get("KIUNGA_IDP_ISSUER") {
            self.idp_issuer = text(v);
        }
        if let Some(v) = get("KIUNGA_IDP_JWKS") {
            self.idp_jwks = text(v);
        }
        if let Some(v) = get("KIUNGA_IDP_AUDIENCE") {
            self.idp_audience = text(v);
        }
        if let Some(v) = get("KIUNGA_IDP_CLIENT_CLAIM") {
            if let Some(c) = text(v) {
                self.idp_client_claim = c;
            }
        }
        if self.idp_issuer.is_some() != self.idp_jwks.is_some() {
            return Err(ConfigError::Env {
                name: if self.idp_issuer.is_some() { "KIUNGA_IDP_JWKS" } else { "KIUNGA_IDP_ISSUER" },
                message: "an external identity provider needs both KIUNGA_IDP_ISSUER (its `iss`) and KIUNGA_IDP_JWKS (a JWKS file or URL)".into(),
            });
        }
        if let Some(v) = get("KIUNGA_TOKEN_SECONDS") {
            self.token_seconds = parse("KIUNGA_TOKEN_SECONDS", v)?;
        }
        if !(30..=3600).contains(&self.token_seconds) {
            return Err(ConfigError::Env {
                name: "KIUNGA_TOKEN_SECONDS",
                message: format!(
                    "{} is not between 30 and 3600 seconds (tokens are meant to be short-lived)",
                    self.token_seconds
                ),
            });
        }
        if let Some(v) = get("KIUNGA_BREAK_GLASS_SECONDS") {
            self.break_glass_seconds = parse("KIUNGA_BREAK_GLASS_SECONDS", v)?;
        }
        // A grant is meant to be short; a year at most keeps the arithmetic far from overflow.
        if self.break_glass_seconds == 0 || self.break_glass_seconds > 366 * 24 * 60 * 60 {
            return Err(ConfigError::Env {
                name: "KIUNGA_BREAK_GLASS_SECONDS",
                message: format!(
                    "{} is not between 1 second and 366 days",
                    self.break_glass_seconds
                ),
            });
        }
        Ok(())
    }

    /// The token endpoint's public URL: the `aud` a client assertion must name.
    pub fn token_url(&self) -> String {
        let base = self.fhir_base();
        format!("{}/auth/token", base.strip_suffix("/fhir").unwrap_or(&base))
    }

    /// The public base of the FHIR endpoint, without a trailing slash.
    pub fn fhir_base(&self) -> String {
        match &self.base_url {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}/fhir", self.listen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_defaults() {
        let mut c = Config::default();
        c.apply_env(|n| match n {
            "DATABASE_URL" => Some("postgres://x/y".into()),
            "KIUNGA_POOL_SIZE" => Some("3".into()),
            "KIUNGA_STRICT_MAPPING" => Some("true".into()),
            _ => None,
        })
        .expect("test input is valid");
        assert_eq!(c.database_url, "postgres://x/y");
        assert_eq!(c.pool_size, 3);
        assert!(c.strict_mapping);
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let mut c = Config::default();
        let err = c
            .apply_env(|n| (n == "KIUNGA_POOL_SIZE").then(|| "many".into()))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable KIUNGA_POOL_SIZE"),
            "{err}"
        );
    }

    #[test]
    fn cors_origins_and_grant_length_are_checked() {
        let mut c = Config::default();
        c.apply_env(|n| {
            (n == "KIUNGA_CORS_ORIGINS").then(|| "https://a.example, http://b.example:8080".into())
        })
        .unwrap();
        assert_eq!(
            c.cors_allowed_origins,
            ["https://a.example", "http://b.example:8080"]
        );
        for bad in [
            "a.example",
            "https://a.example/",
            "https://a.example/path",
            "*",
        ] {
            let err = Config::default()
                .apply_env(|n| (n == "KIUNGA_CORS_ORIGINS").then(|| bad.into()))
                .unwrap_err();
            assert!(
                err.to_string().contains("KIUNGA_CORS_ORIGINS"),
                "{bad}: {err}"
            );
        }
        let err = Config::default()
            .apply_env(|n| (n == "KIUNGA_BREAK_GLASS_SECONDS").then(|| "0".into()))
            .unwrap_err();
        assert!(
            err.to_string().contains("KIUNGA_BREAK_GLASS_SECONDS"),
            "{err}"
        );
    }

    #[test]
    fn https_and_the_identity_provider_need_both_of_their_settings() {
        let err = Config::default()
            .apply_env(|n| (n == "KIUNGA_TLS_CERT").then(|| "cert.pem".into()))
            .expect_err("a certificate without a key");
        assert!(err.to_string().contains("KIUNGA_TLS_KEY"), "{err}");
        let err = Config::default()
            .apply_env(|n| (n == "KIUNGA_IDP_JWKS").then(|| "keys.json".into()))
            .expect_err("keys without an issuer");
        assert!(err.to_string().contains("KIUNGA_IDP_ISSUER"), "{err}");
        let mut c = Config::default();
        c.apply_env(|n| match n {
            "KIUNGA_TLS_CERT" => Some("cert.pem".into()),
            "KIUNGA_TLS_KEY" => Some("key.pem".into()),
            _ => None,
        })
        .expect("both given");
        assert_eq!(c.fhir_base(), "https://127.0.0.1:8080/fhir");
        assert_eq!(c.idp_client_claim, "azp");
    }

    #[test]
    fn file_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("kiunga-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test input is valid");
        let p = dir.join("kiunga.toml");
        std::fs::write(&p, "listen = \"0.0.0.0:80\"\npool_sise = 4\n")
            .expect("test input is valid");
        let err = Config::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("kiunga.toml:2:"), "{err}");
        assert!(err.contains("pool_sise"), "{err}");
    }
}
