//! Who is calling (docs/security.md): API clients registered with `kiunga clients`, OAuth 2.0
//! client credentials at `/auth/token` (SMART Backend Services' `private_key_jwt` with RS384 or
//! ES384, or `client_secret_basic`), opaque bearer tokens that name the client and its granted
//! SMART scopes. What a token lets a request do is decided in the request context
//! ([`crate::context::RequestContext`]): scopes per interaction, org units per record.
//!
//! - `scopes`: SMART scope parsing, checks and grants.
//! - `assertion`: the signed client assertion of `private_key_jwt`.

pub mod admin;
pub mod assertion;
pub mod cache;
pub mod declared;
pub mod idp;
pub mod limits;
pub mod scopes;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::context::OrgScope;
use crate::store::clients::{self, ClientRow};
use crate::tracker::metadata::Metadata;
use scopes::Scopes;

/// Why a token request was refused: the OAuth 2.0 error code (RFC 6749 §5.2) and a sentence a
/// person can act on. Never says which part of a credential was wrong beyond what the client
/// can fix itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            code,
            description: description.into(),
        }
    }

    pub fn status(&self) -> u16 {
        if self.code == "invalid_client" {
            401
        } else {
            400
        }
    }
}

fn invalid_client() -> OAuthError {
    // One message for an unknown client, a wrong secret and a revoked client: which it was is
    // nobody's business but the operators' (they have `kiunga clients list`).
    OAuthError::new(
        "invalid_client",
        "client authentication failed: unknown or revoked client, or wrong credentials",
    )
}

/// A hash no secret matches, checked for unknown clients.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_secret(&new_secret()));

/// A secret's argon2id hash (PHC string, salt included).
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 hashes any input with default parameters")
        .to_string()
}

/// Whether `secret` matches `hash` (argon2's comparison is constant-time).
pub fn secret_matches(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// A new random secret or token: 32 bytes, base64url.
pub fn new_secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// What is stored of a token: its SHA-256 (a token is as long and random as a key, so no salt or
/// slow hash is needed; a stolen table yields nothing usable).
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The credentials a token request carried.
pub enum Credentials<'a> {
    /// `Authorization: Basic` (client_secret_basic).
    Secret { client_id: &'a str, secret: &'a str },
    /// `client_assertion` (private_key_jwt).
    Assertion { jwt: &'a str },
}

/// An issued token, as `/auth/token` answers it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// Authenticates a client and issues a token for the requested scopes (all it is registered
/// for when none are asked).
pub fn issue(
    conn: &mut PgConnection,
    credentials: Credentials,
    requested_scope: Option<&str>,
    token_url: &str,
    lifetime_seconds: u64,
    now: DateTime<Utc>,
) -> Result<Issued, Result<OAuthError, crate::error::Error>> {
    let client = match credentials {
        Credentials::Secret { client_id, secret } => {
            let c = clients::by_client_id(conn, client_id)
                .map_err(Err)?
                .filter(|c| c.revoked_at.is_none());
            // An unknown client costs the same hash as a known one: the answer's time does not
            // tell which client ids exist.
            let hash = c
                .as_ref()
                .and_then(|c| c.secret_hash.as_deref())
                .unwrap_or(&DUMMY_HASH);
            let matches = secret_matches(hash, secret);
            match c {
                Some(c) if matches && c.secret_hash.is_some() => c,
                _ => return Err(Ok(invalid_client())),
            }
        }
        Credentials::Assertion { jwt } => {
            let claimed = assertion::issuer(jwt).map_err(Ok)?;
            let c = clients::by_client_id(conn, &claimed)
                .map_err(Err)?
                .filter(|c| c.revoked_at.is_none())
                .ok_or_else(|| Ok(invalid_client()))?;
            let jwks = c.jwks.as_ref().ok_or_else(|| Ok(invalid_client()))?;
            let verified =
                assertion::verify(jwt, jwks, &c.client_id, token_url, now).map_err(Ok)?;
            if !clients::use_jti(conn, c.id, &verified.jti, verified.expires).map_err(Err)? {
                return Err(Ok(OAuthError::new(
                    "invalid_client",
                    "this client assertion was already used (its jti is spent); sign a new one for every token request",
                )));
            }
            c
        }
    };
    let registered = Scopes::parse(&client.scopes).map_err(|e| {
        Ok(OAuthError::new(
            "invalid_scope",
            format!("the client's registration is broken: {e}"),
        ))
    })?;
    let requested = match requested_scope {
        Some(s) if !s.trim().is_empty() => {
            Scopes::parse(s).map_err(|e| Ok(OAuthError::new("invalid_scope", e)))?
        }
        _ => Scopes::default(),
    };
    let granted = registered
        .grant(&requested)
        .map_err(|e| Ok(OAuthError::new("invalid_scope", e)))?;
    let token = new_secret();
    let expires = now + chrono::Duration::seconds(lifetime_seconds as i64);
    clients::insert_token(
        conn,
        &token_hash(&token),
        client.id,
        &granted.to_string(),
        expires,
    )
    .map_err(Err)?;
    Ok(Issued {
        access_token: token,
        expires_in: lifetime_seconds,
        scope: granted.to_string(),
    })
}

/// The caller a bearer token stands for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub client_id: String,
    pub scopes: Scopes,
    pub capture: OrgScope,
    pub search: OrgScope,
    /// Program UIDs it may use; None: every program.
    pub programs: Option<Vec<String>>,
}

/// The principal of a live bearer token, or None (unknown, expired, or its client revoked).
/// Org units are the client's registered UIDs as materialised paths; one that no longer exists
/// counts for nothing.
pub fn authenticate(
    conn: &mut PgConnection,
    md: &Metadata,
    token: &str,
) -> Result<Option<Principal>, crate::error::Error> {
    Ok(authenticate_hash(conn, md, &token_hash(token))?.map(|(p, _)| p))
}

/// [`authenticate`] by the token's hash, with the token's expiry (for the cache).
pub fn authenticate_hash(
    conn: &mut PgConnection,
    md: &Metadata,
    hash: &[u8],
) -> Result<Option<(Principal, chrono::DateTime<chrono::Utc>)>, crate::error::Error> {
    let Some((client, scopes, expires)) = clients::token(conn, hash)? else {
        return Ok(None);
    };
    Ok(Some((principal(md, &client, &scopes), expires)))
}

/// The principal of a valid external-provider token (`idp::Idp::verify`): the registered client
/// it names, with its registered scopes narrowed to the token's. The refusal says why, for the 401.
pub fn authenticate_claimed(
    conn: &mut PgConnection,
    md: &Metadata,
    claimed: &idp::Claimed,
) -> Result<Result<Principal, String>, crate::error::Error> {
    let client = match clients::by_client_id(conn, &claimed.client_id)? {
        Some(c) if c.revoked_at.is_none() => c,
        _ => {
            return Ok(Err(
                "the bearer JWT names a client that is not registered here, or was revoked (kiunga clients add)".into(),
            ))
        }
    };
    let registered = Scopes::parse(&client.scopes).unwrap_or_default();
    let granted = match &claimed.scopes {
        None => registered,
        Some(asked) => match registered.grant(asked) {
            Ok(g) => g,
            Err(e) => {
                return Ok(Err(format!(
                    "the bearer JWT's scopes exceed the client's registration: {e}"
                )))
            }
        },
    };
    Ok(Ok(principal(md, &client, &granted.to_string())))
}

fn principal(md: &Metadata, client: &ClientRow, scopes: &str) -> Principal {
    let paths = |uids: &[String]| {
        OrgScope::Subtrees(
            uids.iter()
                .filter_map(|u| md.org_unit(u).map(|o| o.path.clone()))
                .collect(),
        )
    };
    Principal {
        client_id: client.client_id.clone(),
        // Stored from a grant we made: it parses.
        scopes: Scopes::parse(scopes).unwrap_or_default(),
        capture: paths(&client.capture_org_units),
        search: paths(&client.search_org_units),
        programs: client.programs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hashed_with_salt_and_verified() {
        let s = new_secret();
        let (a, b) = (hash_secret(&s), hash_secret(&s));
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(secret_matches(&a, &s));
        assert!(!secret_matches(&a, "wrong"));
        assert!(!secret_matches("not a hash", &s));
        assert_eq!(token_hash("x").len(), 32);
    }
}
