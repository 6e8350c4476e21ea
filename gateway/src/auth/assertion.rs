//! The client assertion of SMART Backend Services (`private_key_jwt`, RFC 7523): a JWT the client
//! signs with its private key (RS384 or ES384), whose `iss` and `sub` are its client id, `aud` the
//! token endpoint, `exp` at most five minutes ahead, and `jti` never used before. Checked against
//! the public keys registered for the client (a JWKS).

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::OAuthError;

/// Clock skew tolerated between the client and the gateway.
const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: i64,
    jti: String,
}

/// What a valid assertion establishes.
#[derive(Debug)]
pub struct Verified {
    pub jti: String,
    pub expires: DateTime<Utc>,
}

fn bad(description: impl Into<String>) -> OAuthError {
    OAuthError {
        code: "invalid_client",
        description: description.into(),
    }
}

/// The `iss` the assertion claims (unverified): which client's keys to check it with.
pub fn issuer(jwt: &str) -> Result<String, OAuthError> {
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("client_assertion is not a JWT (header.payload.signature)"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad("client_assertion's payload is not base64url"))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| bad("client_assertion's payload is not JSON"))?;
    v.get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad("client_assertion has no `iss` (the client id)"))
}

/// Checks the assertion's signature against `jwks` and its claims against the client and the
/// token endpoint.
pub fn verify(
    jwt: &str,
    jwks: &Value,
    client_id: &str,
    token_url: &str,
    now: DateTime<Utc>,
) -> Result<Verified, OAuthError> {
    let header = decode_header(jwt).map_err(|_| bad("client_assertion's header is unreadable"))?;
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(bad(format!(
            "client_assertion is signed with {:?}; SMART Backend Services takes RS384 or ES384",
            header.alg
        )));
    }
    let set: JwkSet = serde_json::from_value(jwks.clone())
        .map_err(|_| bad("the client's registered JWKS is unreadable; re-register its keys"))?;
    // The key named by `kid`, else every key of the algorithm's family in turn.
    let candidates: Vec<_> = set
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .collect();
    if candidates.is_empty() {
        return Err(bad(format!(
            "no registered key has kid `{}`",
            header.kid.unwrap_or_default()
        )));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = LEEWAY_SECONDS;
    let mut last = None;
    for key in candidates {
        let Ok(decoding) = DecodingKey::from_jwk(key) else {
            continue;
        };
        match decode::<Claims>(jwt, &decoding, &validation) {
            Ok(data) => {
                let c = data.claims;
                if c.sub != client_id || c.iss != client_id {
                    return Err(bad(
                        "client_assertion's iss and sub must both be the client id",
                    ));
                }
                if c.exp > now.timestamp() + 5 * 60 + LEEWAY_SECONDS as i64 {
                    return Err(bad(
                        "client_assertion expires more than five minutes from now; make it short-lived",
                    ));
                }
                if c.jti.trim().is_empty() {
                    return Err(bad("client_assertion has an empty jti"));
                }
                // The jti is remembered for as long as the assertion could still be accepted
                // (its exp plus the leeway): forgotten earlier, it could be replayed.
                return Ok(Verified {
                    jti: c.jti,
                    expires: Utc
                        .timestamp_opt(c.exp + LEEWAY_SECONDS as i64, 0)
                        .single()
                        .unwrap_or(now + chrono::Duration::minutes(6)),
                });
            }
            Err(e) => last = Some(e),
        }
    }
    use jsonwebtoken::errors::ErrorKind;
    Err(bad(match last.as_ref().map(|e| e.kind()) {
        Some(ErrorKind::ExpiredSignature) => "client_assertion has expired".to_string(),
        Some(ErrorKind::InvalidAudience) => {
            format!("client_assertion's aud must be the token endpoint, {token_url}")
        }
        Some(ErrorKind::InvalidIssuer) => {
            "client_assertion's iss must be the client id".to_string()
        }
        Some(ErrorKind::MissingRequiredClaim(c)) => {
            format!("client_assertion lacks the `{c}` claim")
        }
        _ => "client_assertion's signature does not verify with the client's registered keys"
            .to_string(),
    }))
}
