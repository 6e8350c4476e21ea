//! `kiunga clients add|list|revoke|rotate`: registering the API clients that may call the gateway.
//! Secrets are shown once, at `add` or `rotate`, and stored only as argon2id hashes.

use diesel::PgConnection;
use serde_json::Value;

use super::scopes::Scopes;
use super::{hash_secret, new_secret};
use crate::error::Error;
use crate::store::clients::{self, NewClient};
use crate::tracker::metadata::Metadata;

/// A client to register.
pub struct Registration<'a> {
    pub client_id: &'a str,
    pub name: &'a str,
    pub scopes: &'a str,
    /// Org units (UID or code) whose subtrees it may write, and find.
    pub capture: &'a [String],
    pub search: &'a [String],
    /// Programs (UID or code) whose data it may see and write; None: every program.
    pub programs: Option<&'a [String]>,
    /// Public keys (a JWKS) for private_key_jwt; without them a secret is made.
    pub jwks: Option<Value>,
}

/// Program UIDs for program references given as UID or code; an unknown one is refused.
pub fn program_uids(md: &Metadata, list: &[String]) -> Result<Vec<String>, String> {
    list.iter()
        .map(|p| {
            md.programs
                .iter()
                .find(|x| x.uid == *p || x.code.as_deref() == Some(p.as_str()))
                .map(|x| x.uid.clone())
                .ok_or_else(|| format!("program `{p}` is not in the metadata (give a UID or code)"))
        })
        .collect()
}

/// Registers a client; returns its secret when it authenticates with one (shown once).
pub fn add(
    conn: &mut PgConnection,
    md: &Metadata,
    r: &Registration,
) -> Result<Option<String>, Error> {
    Scopes::parse(r.scopes).map_err(Error::invalid)?;
    let uids = |list: &[String], what: &str| -> Result<Vec<String>, Error> {
        list.iter()
            .map(|o| {
                md.org_unit(o).map(|u| u.uid.clone()).ok_or_else(|| {
                    Error::invalid(format!(
                        "{what} org unit `{o}` is not in the metadata (give a UID or code)"
                    ))
                })
            })
            .collect()
    };
    let capture = uids(r.capture, "capture")?;
    let programs = r
        .programs
        .map(|p| program_uids(md, p))
        .transpose()
        .map_err(Error::invalid)?;
    // Whoever may write a record may find it.
    let mut search = uids(r.search, "search")?;
    for c in &capture {
        if !search.contains(c) {
            search.push(c.clone());
        }
    }
    if let Some(jwks) = &r.jwks {
        let keys = jwks.get("keys").and_then(Value::as_array);
        if keys.is_none_or(|k| k.is_empty()) {
            return Err(Error::invalid(
                "the JWKS has no keys: give the client's public keys as {\"keys\": [...]}",
            ));
        }
        serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(jwks.clone())
            .map_err(|e| Error::invalid(format!("the JWKS is not valid: {e}")))?;
    }
    if clients::by_client_id(conn, r.client_id)?.is_some() {
        return Err(Error::Conflict {
            message: format!(
                "client `{}` already exists (revoked ones keep their id); choose another id",
                r.client_id
            ),
            expression: None,
        });
    }
    let secret = r.jwks.is_none().then(new_secret);
    let hash = secret.as_deref().map(hash_secret);
    clients::insert(
        conn,
        &NewClient {
            client_id: r.client_id,
            name: r.name,
            secret_hash: hash.as_deref(),
            jwks: r.jwks.as_ref(),
            scopes: r.scopes,
            capture_org_units: &capture,
            search_org_units: &search,
            programs: programs.as_deref(),
        },
    )?;
    Ok(secret)
}

/// A new secret for a client that has one; its tokens stop working at once.
pub fn rotate(conn: &mut PgConnection, client_id: &str) -> Result<String, Error> {
    let c = clients::by_client_id(conn, client_id)?
        .filter(|c| c.revoked_at.is_none())
        .ok_or_else(|| Error::NotFound(format!("no live client `{client_id}`")))?;
    if c.secret_hash.is_none() {
        return Err(Error::invalid(format!(
            "client `{client_id}` signs with its keys (private_key_jwt) and has no secret to rotate; register new keys instead"
        )));
    }
    let secret = new_secret();
    clients::set_secret(conn, client_id, &hash_secret(&secret))?;
    Ok(secret)
}

pub fn revoke(conn: &mut PgConnection, client_id: &str) -> Result<(), Error> {
    if clients::revoke(conn, client_id)? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("no live client `{client_id}`")))
    }
}

/// One line per client: id, state, authentication, scopes, org units. No secret.
pub fn list(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    Ok(clients::list(conn)?
        .into_iter()
        .map(|c| {
            format!(
                "{}\t{}\t{}\t{}\tcapture={}\tsearch={}\tprograms={}\t{}",
                c.client_id,
                if c.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                },
                if c.jwks.is_some() {
                    "private_key_jwt"
                } else {
                    "client_secret_basic"
                },
                c.scopes,
                c.capture_org_units.join(","),
                c.search_org_units.join(","),
                c.programs
                    .as_ref()
                    .map_or("all".to_string(), |p| p.join(",")),
                c.name
            )
        })
        .collect())
}
