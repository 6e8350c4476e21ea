//! Bearer JWTs issued by an external identity provider (Keycloak and the like), accepted beside
//! the gateway's own tokens: signed by one of the provider's keys (its JWKS), issued by it
//! (`iss`), for this gateway (`aud`), not expired. The claim that names the client (`azp` by
//! default) must be a client registered here and not revoked: its registered scopes and org
//! units are its rights, narrowed to the token's own `system/` scopes when it carries some.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::scopes::Scopes;
use crate::config::Config;

/// Clock skew tolerated between the provider and the gateway.
const LEEWAY_SECONDS: u64 = 30;
/// The keys are read again when a token names a key not seen yet (the provider rotated), at
/// most this often, so that tokens with made-up key ids cannot make the gateway fetch at will.
const REFRESH_EVERY: Duration = Duration::from_secs(30);

const ALGORITHMS: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::ES256,
    Algorithm::ES384,
];

enum Source {
    File(PathBuf),
    Url(String),
}

pub struct Idp {
    issuer: String,
    audience: String,
    claim: String,
    source: Source,
    keys: RwLock<(JwkSet, Instant)>,
}

/// What a valid token says: which registered client, and the `system/` scopes it carries.
#[derive(Debug)]
pub struct Claimed {
    pub client_id: String,
    pub scopes: Option<Scopes>,
}

impl Idp {
    /// The provider configured (`KIUNGA_IDP_*`), with its keys read once now; a provider whose
    /// keys cannot be read stops start-up, naming the setting.
    pub fn from_config(config: &Config) -> Result<Option<Idp>, String> {
        let (Some(issuer), Some(jwks)) = (&config.idp_issuer, &config.idp_jwks) else {
            return Ok(None);
        };
        let source = if jwks.starts_with("http://") || jwks.starts_with("https://") {
            Source::Url(jwks.clone())
        } else {
            Source::File(PathBuf::from(jwks))
        };
        let set = fetch(&source)?;
        Ok(Some(Idp {
            issuer: issuer.clone(),
            audience: config
                .idp_audience
                .clone()
                .unwrap_or_else(|| config.fhir_base()),
            claim: config.idp_client_claim.clone(),
            source,
            keys: RwLock::new((set, Instant::now())),
        }))
    }

    /// Checks a bearer JWT. The error says why it was refused, for the 401 (no token content).
    pub fn verify(&self, jwt: &str) -> Result<Claimed, String> {
        let header =
            decode_header(jwt).map_err(|_| "the bearer JWT's header is unreadable".to_string())?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!(
                "the bearer JWT is signed with {:?}; accepted: RS256/384/512, PS256/384, ES256/384",
                header.alg
            ));
        }
        let mut keys = self.candidates(&header);
        if keys.is_empty() {
            self.refresh();
            keys = self.candidates(&header);
        }
        if keys.is_empty() {
            return Err(format!(
                "no key of the identity provider has kid `{}`",
                header.kid.unwrap_or_default()
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let mut last = None;
        for key in keys {
            match decode::<Value>(jwt, &key, &validation) {
                Ok(data) => return self.claimed(&data.claims),
                Err(e) => last = Some(e),
            }
        }
        use jsonwebtoken::errors::ErrorKind;
        Err(match last.as_ref().map(|e| e.kind()) {
            Some(ErrorKind::ExpiredSignature) => "the bearer JWT has expired".to_string(),
            Some(ErrorKind::ImmatureSignature) => "the bearer JWT is not valid yet (nbf)".into(),
            Some(ErrorKind::InvalidIssuer) => {
                format!("the bearer JWT's iss is not {}", self.issuer)
            }
            Some(ErrorKind::InvalidAudience) => {
                format!("the bearer JWT's aud does not name {}", self.audience)
            }
            Some(ErrorKind::MissingRequiredClaim(c)) => {
                format!("the bearer JWT lacks the `{c}` claim")
            }
            _ => "the bearer JWT's signature does not verify with the identity provider's keys"
                .to_string(),
        })
    }

    fn claimed(&self, claims: &Value) -> Result<Claimed, String> {
        let client_id = claims
            .get(&self.claim)
            .or_else(|| claims.get("client_id"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                format!(
                    "the bearer JWT has no `{}` claim naming the client",
                    self.claim
                )
            })?
            .to_string();
        // Providers add scopes of their own (openid, profile): only SMART scopes count. A token
        // narrowed to patient/ or user/ scopes is not taken for one without any.
        let smart: Vec<&str> = claims
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split_whitespace()
            .filter(|s| {
                ["system/", "user/", "patient/"]
                    .iter()
                    .any(|p| s.starts_with(p))
            })
            .collect();
        let scopes = if smart.is_empty() {
            None
        } else {
            Some(
                Scopes::parse(&smart.join(" "))
                    .map_err(|e| format!("the bearer JWT's scopes: {e}"))?,
            )
        };
        Ok(Claimed { client_id, scopes })
    }

    fn candidates(&self, header: &jsonwebtoken::Header) -> Vec<DecodingKey> {
        let guard = match self.keys.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard
            .0
            .keys
            .iter()
            .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
            .filter_map(|k| DecodingKey::from_jwk(k).ok())
            .collect()
    }

    fn refresh(&self) {
        // The first caller past the interval claims the fetch (under the write lock); the others
        // go on with the keys there are instead of fetching too.
        {
            let mut guard = match self.keys.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if guard.1.elapsed() < REFRESH_EVERY {
                return;
            }
            guard.1 = Instant::now();
        }
        match fetch(&self.source) {
            Ok(set) => {
                let mut guard = match self.keys.write() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *guard = (set, Instant::now());
            }
            Err(e) => {
                tracing::warn!(target: "kiunga::audit", error = %e, "the identity provider's keys could not be read again; the old ones stay");
            }
        }
    }
}

fn fetch(source: &Source) -> Result<JwkSet, String> {
    let text = match source {
        Source::File(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("KIUNGA_IDP_JWKS: cannot read {}: {e}", p.display()))?,
        Source::Url(u) => reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .and_then(|c| c.get(u).send())
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .map_err(|e| format!("KIUNGA_IDP_JWKS: cannot fetch {u}: {e}"))?,
    };
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("KIUNGA_IDP_JWKS: not a JWKS ({{\"keys\": [...]}}): {e}"))?;
    if set.keys.is_empty() {
        return Err("KIUNGA_IDP_JWKS: the key set is empty".into());
    }
    Ok(set)
}
