//! Bearer JWTs from an external identity provider (#10): accepted when signed by one of its keys,
//! issued by it, for this gateway, unexpired, and naming a registered, live client; that client's
//! rights apply, narrowed to the token's `system/` scopes.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::clients::*;
use support::TestApp;

const ISSUER: &str = "https://idp.example.org/realms/moh";
const AUDIENCE: &str = "kiunga-test";

fn with_idp() -> TestApp {
    TestApp::start_with(|c| {
        c.auth = kiunga::config::AuthMode::Required;
        c.idp_issuer = Some(ISSUER.into());
        c.idp_jwks = Some(
            support::repo()
                .join("fixtures/test-keys/rs384.jwks.json")
                .display()
                .to_string(),
        );
        c.idp_audience = Some(AUDIENCE.into());
    })
}

fn signing_key(name: &str) -> (EncodingKey, String) {
    let dir = support::repo().join("fixtures/test-keys");
    let pem = std::fs::read(dir.join(format!("{name}.pem"))).expect("test key");
    let jwks: Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{name}.jwks.json"))).expect("jwks"),
    )
    .expect("jwks json");
    let kid = jwks["keys"][0]["kid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = if name.starts_with("rs") {
        EncodingKey::from_rsa_pem(&pem).expect("rsa key")
    } else {
        EncodingKey::from_ec_pem(&pem).expect("ec key")
    };
    (key, kid)
}

/// A token as Keycloak issues one for client credentials, with `claims` merged over the defaults.
fn token(key: &str, alg: Algorithm, claims: Value) -> String {
    let (k, kid) = signing_key(key);
    let mut h = Header::new(alg);
    h.kid = Some(kid);
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "iss": ISSUER, "aud": AUDIENCE, "azp": "emr-kc", "exp": now + 300, "iat": now,
        "scope": "openid profile system/Patient.rs",
    });
    for (name, value) in claims.as_object().expect("claims object") {
        if value.is_null() {
            c.as_object_mut().expect("object").remove(name);
        } else {
            c[name] = value.clone();
        }
    }
    encode(&h, &c, &k).expect("sign")
}

#[test]
fn an_identity_providers_tokens_are_checked_and_carry_the_registered_clients_rights() {
    let app = with_idp();
    register(
        &app,
        "emr-kc",
        "system/Patient.rs system/Observation.rs",
        &[],
        &["KD"],
        None,
    )
    .expect("secret");
    let admin = token_for(&app, "admin", "system/*.cruds", &["KD"], &["KD"], None);
    let kas = app.org("KD_KAS_MTO");
    let p = call(
        &app,
        "POST",
        "Patient",
        &admin,
        Some(&person(&kas, "Otieno")),
    )
    .expect(201);
    let pid = p["id"].as_str().expect("id");

    // A good token: the client's rights, narrowed to the token's system scope (Patient only).
    let good = token("rs384", Algorithm::RS384, json!({}));
    call(&app, "GET", &format!("Patient/{pid}"), &good, None).expect(200);
    let m = call(&app, "GET", "Observation", &good, None).outcome(403);
    assert!(m.contains("system/Observation.s"), "{m}");
    // Without system scopes in the token, the registration decides.
    let plain = token(
        "rs384",
        Algorithm::RS384,
        json!({ "scope": "openid profile" }),
    );
    call(&app, "GET", "Observation", &plain, None).expect(200);
    // Org units still apply: outside KD nothing is found.
    let found = call(&app, "GET", "Patient?_total=accurate", &good, None).expect(200);
    assert_eq!(found["total"], 1, "{found}");

    let refused = |jwt: &str, why: &str| {
        let r = call(&app, "GET", &format!("Patient/{pid}"), jwt, None);
        assert_eq!(r.status, 401, "{}", r.text);
        assert!(r.text.contains(why), "expected `{why}` in {}", r.text);
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.contains("invalid_token")),
            "{:?}",
            r.header("www-authenticate")
        );
    };
    let now = chrono::Utc::now().timestamp();
    refused(
        &token("rs384", Algorithm::RS384, json!({ "exp": now - 120 })),
        "expired",
    );
    refused(
        &token(
            "rs384",
            Algorithm::RS384,
            json!({ "iss": "https://evil.example.org" }),
        ),
        "iss",
    );
    refused(
        &token("rs384", Algorithm::RS384, json!({ "aud": "someone-else" })),
        "aud",
    );
    refused(
        &token("rs384", Algorithm::RS384, json!({ "azp": "nobody" })),
        "not registered",
    );
    refused(
        &token(
            "rs384",
            Algorithm::RS384,
            json!({ "scope": "system/Patient.cruds" }),
        ),
        "exceed",
    );
    // Narrowed to a patient's or a user's scopes: not taken for a token without any.
    refused(
        &token(
            "rs384",
            Algorithm::RS384,
            json!({ "scope": "openid patient/Patient.rs" }),
        ),
        "only system scopes",
    );
    refused(
        &token("rs384", Algorithm::RS384, json!({ "nbf": now + 600 })),
        "not valid yet",
    );
    // Signed by a key the provider does not have (under its own kid, then under the provider's).
    refused(&token("es384-other", Algorithm::ES384, json!({})), "kid");
    let (other, _) = signing_key("es384-other");
    let (_, kid) = signing_key("rs384");
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some(kid);
    let claims = json!({ "iss": ISSUER, "aud": AUDIENCE, "azp": "emr-kc", "exp": now + 300 });
    refused(&encode(&h, &claims, &other).expect("sign"), "signature");
    // A payload changed after signing.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value =
        serde_json::from_slice(&engine.decode(&parts[1]).expect("b64")).expect("json");
    payload["scope"] = json!("system/*.cruds");
    parts[1] = engine.encode(serde_json::to_vec(&payload).expect("json"));
    refused(&parts.join("."), "signature");

    // Revocation takes effect at once for the provider's tokens too.
    kiunga::auth::admin::revoke(&mut app.db.conn(), "emr-kc").expect("revoke");
    refused(&good, "not registered");
    // Every access above was recorded under the client the token named.
    app.state.audit.flush();
    let audited = app
        .db
        .scalar("SELECT count(*) FROM audit_event WHERE agent = 'client:emr-kc'");
    assert_eq!(audited, 4, "read, refused search, search, search");
}
