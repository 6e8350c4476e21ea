//! API clients for tests: registered through `kiunga clients add`'s code, given tokens at
//! `/auth/token` with their secret, and calling the API with them.

use base64::Engine;
use kiunga::auth::admin::{self, Registration};
use serde_json::{json, Value};

use super::{Resp, TestApp};

pub fn secured() -> TestApp {
    TestApp::start_with(|c| c.auth = kiunga::config::AuthMode::Required)
}

pub fn root(app: &TestApp) -> String {
    app.base.trim_end_matches("/fhir").to_string()
}

/// Registers a client straight through `kiunga clients add`'s code; its secret, if it has one.
pub fn register(
    app: &TestApp,
    id: &str,
    scopes: &str,
    capture: &[&str],
    search: &[&str],
    jwks: Option<Value>,
) -> Option<String> {
    register_for_programs(app, id, scopes, capture, search, None, jwks)
}

/// [`register`] with program access (UIDs or codes; None: every program).
pub fn register_for_programs(
    app: &TestApp,
    id: &str,
    scopes: &str,
    capture: &[&str],
    search: &[&str],
    programs: Option<&[&str]>,
    jwks: Option<Value>,
) -> Option<String> {
    let mut conn = app.db.conn();
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let programs = programs.map(own);
    admin::add(
        &mut conn,
        &app.state.metadata,
        &Registration {
            client_id: id,
            name: "test client",
            scopes,
            capture: &own(capture),
            search: &own(search),
            programs: programs.as_deref(),
            jwks,
        },
    )
    .expect("the test client registers")
}

/// Registers a client with a secret and returns an access token for it.
pub fn token_for(
    app: &TestApp,
    id: &str,
    scopes: &str,
    capture: &[&str],
    search: &[&str],
    programs: Option<&[&str]>,
) -> String {
    let secret = register_for_programs(app, id, scopes, capture, search, programs, None)
        .expect("a client without keys has a secret");
    token_with_secret(app, id, &secret)
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub fn token_request(app: &TestApp, basic: Option<(&str, &str)>, fields: &[(&str, &str)]) -> Resp {
    let auth = basic.map(|(id, secret)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    });
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    app.send(
        "POST",
        &format!("{}/auth/token", root(app)),
        &headers,
        Some(form(fields).as_bytes()),
    )
}

pub fn token_with_secret(app: &TestApp, id: &str, secret: &str) -> String {
    let v = token_request(
        app,
        Some((id, secret)),
        &[("grant_type", "client_credentials")],
    )
    .expect(200);
    v["access_token"].as_str().unwrap().to_string()
}

pub fn call(app: &TestApp, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
    let bearer = format!("Bearer {token}");
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    app.send(
        method,
        path,
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/fhir+json"),
            ("Accept", "application/fhir+json"),
        ],
        bytes.as_deref(),
    )
}

pub fn person(org: &str, family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "name": [{ "family": family, "given": ["Amina"] }],
        "gender": "female",
        "birthDate": "1990-04-12",
        "managingOrganization": { "reference": format!("Organization/{org}") },
    })
}
