//! API clients declared in a file (`KIUNGA_CLIENTS_FILE`), for deployments rebuilt from their
//! configuration: applied at every start-up, so the file is the truth for the clients it names.
//! Secrets are never in the file: a client names the environment variable that holds its secret,
//! or the JWKS file of its public keys. Clients registered with `kiunga clients` and not named in
//! the file are left as they are.
//!
//! ```toml
//! [[client]]
//! id = "emr-kasarani"
//! name = "Kasarani OpenMRS"
//! scopes = "system/Patient.cruds system/Encounter.cruds system/Observation.cruds"
//! capture = ["KD_KAS"]
//! secret_env = "KIUNGA_SECRET_EMR_KASARANI"
//!
//! [[client]]
//! id = "national-registry"
//! name = "Civil registration"
//! scopes = "system/Patient.rs"
//! search = ["KD"]
//! jwks_file = "keys/registry.jwks.json"   # relative to the clients file
//! revoked = false
//! ```

use std::path::Path;

use diesel::PgConnection;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::admin::{self, Registration};
use super::{hash_secret, secret_matches};
use crate::store::clients;
use crate::tracker::metadata::Metadata;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    client: Vec<Declared>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    id: Spanned<String>,
    name: String,
    scopes: Spanned<String>,
    #[serde(default)]
    capture: Vec<String>,
    #[serde(default)]
    search: Vec<String>,
    /// Programs (UID or code) it may use; absent: every program.
    programs: Option<Spanned<Vec<String>>>,
    secret_env: Option<Spanned<String>>,
    jwks_file: Option<Spanned<String>>,
    #[serde(default)]
    revoked: bool,
}

/// What applying the file did, for the start-up log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub updated: usize,
    pub revoked: usize,
}

/// Reads `path` and makes the clients it declares exist as declared. Every problem comes back
/// as `file:line: message`, all at once; nothing is written unless the whole file is sound.
pub fn apply(
    conn: &mut PgConnection,
    md: &Metadata,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Applied, Vec<String>> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{shown}: {e}")])?;
    let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let file: File = toml::from_str(&text).map_err(|e| {
        vec![format!(
            "{shown}:{}: {}",
            e.span().map(|s| line(s.start)).unwrap_or(0),
            e.message().trim()
        )]
    })?;
    let mut problems = Vec::new();
    let mut ready = Vec::new();
    for c in &file.client {
        let at = |s: &std::ops::Range<usize>| format!("{shown}:{}", line(s.start));
        if let Err(e) = super::scopes::Scopes::parse(c.scopes.get_ref()) {
            problems.push(format!("{}: {e}", at(&c.scopes.span())));
        }
        let jwks: Option<Value> = match &c.jwks_file {
            None => None,
            Some(f) => {
                let p = path.parent().unwrap_or(Path::new(".")).join(f.get_ref());
                match std::fs::read_to_string(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                {
                    Ok(v) => Some(v),
                    Err(e) => {
                        problems.push(format!("{}: jwks_file {}: {e}", at(&f.span()), p.display()));
                        None
                    }
                }
            }
        };
        let secret = match (&c.secret_env, &c.jwks_file) {
            (Some(_), Some(_)) | (None, None) => {
                problems.push(format!(
                    "{}: client `{}`: give exactly one of secret_env (client_secret_basic) and jwks_file (private_key_jwt)",
                    at(&c.id.span()),
                    c.id.get_ref()
                ));
                None
            }
            (Some(var), None) => match env(var.get_ref()).filter(|s| !s.trim().is_empty()) {
                Some(s) if s.len() >= 16 => Some(s),
                Some(_) => {
                    problems.push(format!(
                        "{}: the secret in {} is shorter than 16 characters",
                        at(&var.span()),
                        var.get_ref()
                    ));
                    None
                }
                None => {
                    problems.push(format!(
                        "{}: environment variable {} (the secret of `{}`) is not set",
                        at(&var.span()),
                        var.get_ref(),
                        c.id.get_ref()
                    ));
                    None
                }
            },
            (None, Some(_)) => None,
        };
        if let Some(p) = &c.programs {
            if let Err(e) = admin::program_uids(md, p.get_ref()) {
                problems.push(format!(
                    "{}: client `{}`: {e}",
                    at(&p.span()),
                    c.id.get_ref()
                ));
            }
        }
        for ou in c.capture.iter().chain(&c.search) {
            if md.org_unit(ou).is_none() {
                problems.push(format!(
                    "{}: client `{}`: org unit `{ou}` is not in the metadata (give a UID or code)",
                    at(&c.id.span()),
                    c.id.get_ref()
                ));
            }
        }
        ready.push((c, jwks, secret));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut applied = Applied::default();
    let db = |e: crate::error::Error| vec![format!("{shown}: {e}")];
    for (c, jwks, secret) in ready {
        let id = c.id.get_ref();
        match clients::by_client_id(conn, id).map_err(db)? {
            None => {
                admin::add(
                    conn,
                    md,
                    &Registration {
                        client_id: id,
                        name: &c.name,
                        scopes: c.scopes.get_ref(),
                        capture: &c.capture,
                        search: &c.search,
                        programs: c.programs.as_ref().map(|p| p.get_ref().as_slice()),
                        jwks: jwks.clone(),
                    },
                )
                .map_err(db)?;
                if let Some(s) = &secret {
                    clients::set_secret(conn, id, &hash_secret(s)).map_err(db)?;
                }
                applied.added += 1;
            }
            Some(row) => {
                let uids = |list: &[String]| -> Vec<String> {
                    list.iter()
                        .filter_map(|o| md.org_unit(o).map(|u| u.uid.clone()))
                        .collect()
                };
                let capture = uids(&c.capture);
                let mut search = uids(&c.search);
                for u in &capture {
                    if !search.contains(u) {
                        search.push(u.clone());
                    }
                }
                let programs = c
                    .programs
                    .as_ref()
                    .map(|p| admin::program_uids(md, p.get_ref()).unwrap_or_default());
                clients::update(
                    conn,
                    &row,
                    &c.name,
                    c.scopes.get_ref(),
                    &capture,
                    &search,
                    programs.as_deref(),
                    jwks.as_ref(),
                )
                .map_err(db)?;
                // A new secret in the environment replaces the old one (and its tokens).
                if let Some(s) = &secret {
                    if !row
                        .secret_hash
                        .as_deref()
                        .is_some_and(|h| secret_matches(h, s))
                    {
                        clients::set_secret(conn, id, &hash_secret(s)).map_err(db)?;
                    }
                }
                applied.updated += 1;
            }
        }
        if c.revoked && clients::revoke(conn, id).map_err(db)? {
            applied.revoked += 1;
        }
    }
    Ok(applied)
}
