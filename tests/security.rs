//! Authentication and authorization (#10): OAuth 2.0 client credentials at `/auth/token`
//! (client_secret_basic and SMART Backend Services' private_key_jwt), bearer tokens, SMART
//! scopes per interaction and org-unit scopes per record, with authentication required.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use kiunga::auth::admin;
use serde_json::{json, Value};
use support::clients::*;
use support::{Resp, TestApp};

fn key(name: &str) -> (EncodingKey, Value) {
    let dir = support::repo().join("fixtures/test-keys");
    let pem = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
    let jwks: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.jwks.json"))).unwrap())
            .unwrap();
    let k = if name.starts_with("rs") {
        EncodingKey::from_rsa_pem(&pem).unwrap()
    } else {
        EncodingKey::from_ec_pem(&pem).unwrap()
    };
    (k, jwks)
}

fn assertion(
    app: &TestApp,
    client: &str,
    key: &EncodingKey,
    alg: Algorithm,
    kid: &str,
    exp_in: i64,
    aud: Option<&str>,
) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": client, "sub": client,
        "aud": aud.map(str::to_owned).unwrap_or_else(|| format!("{}/auth/token", root(app))),
        "exp": now + exp_in,
        "jti": support::unique("jti"),
    });
    encode(&h, &claims, key).unwrap()
}

fn with_assertion(app: &TestApp, jwt: &str) -> Resp {
    token_request(
        app,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/Patient.rs"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", jwt),
        ],
    )
}

#[test]
fn requests_without_a_valid_token_are_refused_and_discovery_is_public() {
    let app = secured();
    let r = app.get("Patient");
    assert!(r.outcome(401).contains("/auth/token"), "{}", r.text);
    assert_eq!(r.json()["issue"][0]["code"], "login");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"kiunga\"")
    );
    let r = call(&app, "GET", "Patient", "not-a-token", None);
    r.outcome(401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    // The security headers are on refusals too.
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );

    app.get("metadata").expect(200);
    for path in [
        format!("{}/.well-known/smart-configuration", root(&app)),
        format!("{}/.well-known/smart-configuration", app.base),
    ] {
        let v = app.get(&path).expect(200);
        assert_eq!(v["token_endpoint"], format!("{}/auth/token", root(&app)));
        assert_eq!(
            v["token_endpoint_auth_methods_supported"],
            json!(["private_key_jwt", "client_secret_basic"])
        );
        assert_eq!(v["grant_types_supported"], json!(["client_credentials"]));
    }
}

#[test]
fn a_secret_gets_a_token_and_revocation_and_rotation_take_effect_at_once() {
    let app = secured();
    let secret = register(&app, "emr-kd", "system/*.cruds", &["KD"], &[], None).unwrap();
    // Stored as an argon2id hash, never as given.
    let stored = app
        .db
        .text("SELECT secret_hash FROM api_client WHERE client_id = 'emr-kd'")
        .pop()
        .unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(&secret));

    let v = token_request(
        &app,
        Some(("emr-kd", &secret)),
        &[("grant_type", "client_credentials")],
    )
    .expect(200);
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 300);
    assert_eq!(v["scope"], "system/*.cruds");
    let token = v["access_token"].as_str().unwrap().to_string();
    let org = app.org("KD_KAS_MTO");
    call(
        &app,
        "POST",
        "Patient",
        &token,
        Some(&person(&org, "Mwangi")),
    )
    .expect(201);
    // Who wrote it is the client.
    assert_eq!(
        app.db.text("SELECT DISTINCT actor FROM change_log"),
        vec!["client:emr-kd"]
    );

    // Wrong secret, unknown client, wrong grant, nothing to authenticate with.
    let r = token_request(
        &app,
        Some(("emr-kd", "wrong")),
        &[("grant_type", "client_credentials")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    let r = token_request(
        &app,
        Some(("nobody", "x")),
        &[("grant_type", "client_credentials")],
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_client"))
    );
    let r = token_request(
        &app,
        Some(("emr-kd", &secret)),
        &[("grant_type", "password")],
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
    let r = token_request(&app, None, &[("grant_type", "client_credentials")]);
    assert_eq!(r.status, 401);

    // More than it is registered for: refused, naming the scope.
    register(&app, "reader", "system/Patient.rs", &[], &["KD"], None);
    let reader_secret = admin::rotate(&mut app.db.conn(), "reader").unwrap();
    let r = token_request(
        &app,
        Some(("reader", &reader_secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/Patient.cruds"),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"], "invalid_scope");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("system/Patient.cruds"));

    // Rotation: the old secret and the old token stop at once; the new secret works.
    let new_secret = admin::rotate(&mut app.db.conn(), "emr-kd").unwrap();
    call(&app, "GET", "Patient", &token, None).outcome(401);
    assert_eq!(
        token_request(
            &app,
            Some(("emr-kd", &secret)),
            &[("grant_type", "client_credentials")]
        )
        .status,
        401
    );
    let token = token_with_secret(&app, "emr-kd", &new_secret);
    call(&app, "GET", "Patient", &token, None).expect(200);

    // Revocation: the token stops at once, and no new one is given.
    admin::revoke(&mut app.db.conn(), "emr-kd").unwrap();
    call(&app, "GET", "Patient", &token, None).outcome(401);
    assert_eq!(
        token_request(
            &app,
            Some(("emr-kd", &new_secret)),
            &[("grant_type", "client_credentials")]
        )
        .status,
        401
    );
    let listed = admin::list(&mut app.db.conn()).unwrap().join("\n");
    assert!(
        listed.contains("emr-kd\trevoked\tclient_secret_basic"),
        "{listed}"
    );
    assert!(!listed.contains(&new_secret));
}

#[test]
fn signed_assertions_get_tokens_and_replayed_expired_or_forged_ones_do_not() {
    let app = secured();
    let (es, es_jwks) = key("es384");
    let (rs, rs_jwks) = key("rs384");
    let (other, _) = key("es384-other");
    assert!(register(
        &app,
        "registry-es",
        "system/Patient.rs",
        &[],
        &["KD"],
        Some(es_jwks)
    )
    .is_none());
    register(
        &app,
        "registry-rs",
        "system/Patient.rs",
        &[],
        &["KD"],
        Some(rs_jwks),
    );

    let jwt = assertion(
        &app,
        "registry-es",
        &es,
        Algorithm::ES384,
        "es384",
        240,
        None,
    );
    let v = with_assertion(&app, &jwt).expect(200);
    assert_eq!(v["scope"], "system/Patient.rs");
    call(
        &app,
        "GET",
        "Patient",
        v["access_token"].as_str().unwrap(),
        None,
    )
    .expect(200);
    // The same assertion again is a replay.
    let r = with_assertion(&app, &jwt);
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{}",
        r.text
    );

    let jwt = assertion(
        &app,
        "registry-rs",
        &rs,
        Algorithm::RS384,
        "rs384",
        240,
        None,
    );
    with_assertion(&app, &jwt).expect(200);

    let refused = |jwt: String, says: &str| {
        let r = with_assertion(&app, &jwt);
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.json()["error"], "invalid_client");
        let d = r.json()["error_description"].as_str().unwrap().to_string();
        assert!(d.contains(says), "{d} (wanted `{says}`)");
    };
    refused(
        assertion(
            &app,
            "registry-es",
            &es,
            Algorithm::ES384,
            "es384",
            -120,
            None,
        ),
        "expired",
    );
    refused(
        assertion(
            &app,
            "registry-es",
            &es,
            Algorithm::ES384,
            "es384",
            3600,
            None,
        ),
        "five minutes",
    );
    // Signed with a key the client never registered, under the registered key's id.
    refused(
        assertion(
            &app,
            "registry-es",
            &other,
            Algorithm::ES384,
            "es384",
            240,
            None,
        ),
        "signature",
    );
    refused(
        assertion(
            &app,
            "registry-es",
            &es,
            Algorithm::ES384,
            "es384",
            240,
            Some("https://elsewhere/token"),
        ),
        "aud",
    );
    // A client without keys cannot use assertions; an unknown client neither.
    register(&app, "secret-only", "system/Patient.rs", &[], &["KD"], None);
    refused(
        assertion(
            &app,
            "secret-only",
            &es,
            Algorithm::ES384,
            "es384",
            240,
            None,
        ),
        "client authentication failed",
    );
    refused(
        assertion(&app, "nobody", &es, Algorithm::ES384, "es384", 240, None),
        "client authentication failed",
    );
    // Revoked: refused even with a fresh, valid assertion.
    admin::revoke(&mut app.db.conn(), "registry-rs").unwrap();
    refused(
        assertion(
            &app,
            "registry-rs",
            &rs,
            Algorithm::RS384,
            "rs384",
            240,
            None,
        ),
        "client authentication failed",
    );
}

#[test]
fn scopes_decide_each_interaction_and_org_units_each_record() {
    let app = secured();
    let admin_secret = register(&app, "admin", "system/*.cruds", &["KD"], &[], None).unwrap();
    let admin = token_with_secret(&app, "admin", &admin_secret);
    let kas = app.org("KD_KAS_MTO");
    let kus = app.org("KD_KUS_PWA");
    let in_kas = call(
        &app,
        "POST",
        "Patient",
        &admin,
        Some(&person(&kas, "Otieno")),
    )
    .expect(201);
    let in_kus = call(
        &app,
        "POST",
        "Patient",
        &admin,
        Some(&person(&kus, "Kamau")),
    )
    .expect(201);
    let (kas_id, kus_id) = (
        in_kas["id"].as_str().unwrap(),
        in_kus["id"].as_str().unwrap(),
    );

    // Reads and searches of Patient, in one district only.
    let secret = register(
        &app,
        "kas-reader",
        "system/Patient.rs",
        &[],
        &["KD_KAS"],
        None,
    )
    .unwrap();
    let reader = token_with_secret(&app, "kas-reader", &secret);
    call(&app, "GET", &format!("Patient/{kas_id}"), &reader, None).expect(200);
    // Outside its org units: not found, as if it did not exist.
    call(&app, "GET", &format!("Patient/{kus_id}"), &reader, None).outcome(404);
    let found = call(&app, "GET", "Patient?_total=accurate", &reader, None).expect(200);
    assert_eq!(found["total"], 1, "{found}");
    // Not allowed by its scopes: 403 naming the scope it lacks.
    let m = call(
        &app,
        "POST",
        "Patient",
        &reader,
        Some(&person(&kas, "Njoroge")),
    )
    .outcome(403);
    assert!(m.contains("system/Patient.c"), "{m}");
    let m = call(&app, "GET", "Encounter", &reader, None).outcome(403);
    assert!(m.contains("system/Encounter.s"), "{m}");
    call(&app, "DELETE", &format!("Patient/{kas_id}"), &reader, None).outcome(403);
    call(
        &app,
        "POST",
        "Patient/$merge",
        &reader,
        Some(&json!({"resourceType": "Parameters"})),
    )
    .outcome(403);
    // $everything answers with what it may read: the Patient alone.
    let all = call(
        &app,
        "GET",
        &format!("Patient/{kas_id}/$everything"),
        &reader,
        None,
    )
    .expect(200);
    assert!(all["entry"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["resource"]["resourceType"] == "Patient"));
    // $match searches.
    call(
        &app,
        "POST",
        "Patient/$match",
        &reader,
        Some(&person(&kas, "Otieno")),
    )
    .expect(200);

    // A transaction entry the scopes refuse fails the whole Bundle: nothing is written.
    let before = app.db.scalar("SELECT count(*) FROM tracked_entity");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": person(&kas, "Wanjiru"), "request": {"method": "POST", "url": "Patient"}}]});
    call(&app, "POST", "", &reader, Some(&bundle)).outcome(403);
    assert_eq!(app.db.scalar("SELECT count(*) FROM tracked_entity"), before);

    // A conditional reference in a Bundle is a search: without Patient.s it is refused before it
    // is resolved, so the answer cannot tell whether such a person exists.
    let secret = register(
        &app,
        "rp-writer",
        "system/RelatedPerson.c",
        &["KD_KAS"],
        &[],
        None,
    )
    .unwrap();
    let rp_writer = token_with_secret(&app, "rp-writer", &secret);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "RelatedPerson",
                      "patient": {"reference": "Patient?identifier=http://example.org/national-id|NO-SUCH-ID"},
                      "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH"}]}],
                      "name": [{"family": "Otieno", "given": ["Mary"]}]},
         "request": {"method": "POST", "url": "RelatedPerson"}}]});
    let m = call(&app, "POST", "", &rp_writer, Some(&bundle)).outcome(403);
    assert!(m.contains("system/Patient.s"), "{m}");

    // A writer in one district may not write in another.
    let secret = register(&app, "kas-emr", "system/*.cruds", &["KD_KAS"], &[], None).unwrap();
    let writer = token_with_secret(&app, "kas-emr", &secret);
    call(
        &app,
        "POST",
        "Patient",
        &writer,
        Some(&person(&kas, "Achieng")),
    )
    .expect(201);
    call(
        &app,
        "POST",
        "Patient",
        &writer,
        Some(&person(&kus, "Mutua")),
    )
    .outcome(403);
}

#[test]
fn a_client_over_its_rate_limit_gets_429_with_retry_after_and_others_do_not() {
    let app = TestApp::start_with(|c| {
        c.auth = kiunga::config::AuthMode::Required;
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 2;
        c.token_rate_per_second = 1;
        c.token_rate_burst = 2;
    });
    let busy = register(&app, "busy", "system/Patient.rs", &[], &["KD"], None).unwrap();
    let calm = register(&app, "calm", "system/Patient.rs", &[], &["KD"], None).unwrap();
    let (busy, calm) = (
        token_with_secret(&app, "busy", &busy),
        token_with_secret(&app, "calm", &calm),
    );
    call(&app, "GET", "Patient", &busy, None).expect(200);
    call(&app, "GET", "Patient", &busy, None).expect(200);
    let r = call(&app, "GET", "Patient", &busy, None);
    assert!(
        r.outcome(429).contains("busy is over its limit"),
        "{}",
        r.text
    );
    assert_eq!(r.json()["issue"][0]["code"], "throttled");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    call(&app, "GET", "Patient", &calm, None).expect(200);
    // Token requests from one address are limited too (each secret check is an argon2 hash):
    // quick ones (refused before any hash) empty the bucket.
    // Five quick requests against a bucket of two: at least three are refused, and every one
    // before the first refusal was served.
    let statuses: Vec<u16> = (0..5)
        .map(|_| token_request(&app, Some(("calm", "guess")), &[("grant_type", "password")]).status)
        .collect();
    let first = statuses.iter().position(|s| *s == 429).expect("a 429");
    assert!(statuses[..first].iter().all(|s| *s == 400), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 3,
        "{statuses:?}"
    );
    let r = token_request(&app, Some(("calm", "guess")), &[("grant_type", "password")]);
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json()["error"], "slow_down");
    assert!(r.header("retry-after").is_some());
}

/// Clients declared in a file are applied as declared (secrets from the environment, keys from a
/// JWKS file), again at every start-up; a broken file names each problem with its line and stops
/// start-up.
#[test]
fn clients_declared_in_a_file_are_applied_and_a_broken_file_names_its_lines() {
    use kiunga::auth::declared;
    let app = secured();
    let dir = std::env::temp_dir().join(support::unique("kiunga-clients-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        support::repo().join("fixtures/test-keys/es384.jwks.json"),
        dir.join("registry.jwks.json"),
    )
    .unwrap();
    let file = dir.join("clients.toml");
    let write = |scopes: &str| {
        std::fs::write(
            &file,
            format!(
                "[[client]]\nid = \"emr-file\"\nname = \"EMR\"\nscopes = \"{scopes}\"\ncapture = [\"KD_KAS\"]\nsecret_env = \"EMR_SECRET\"\n\n[[client]]\nid = \"registry-file\"\nname = \"Registry\"\nscopes = \"system/Patient.rs\"\nsearch = [\"KD\"]\njwks_file = \"registry.jwks.json\"\n"
            ),
        )
        .unwrap();
    };
    let secret = "a-secret-of-thirty-two-characters!!";
    let env = |v: &str| (v == "EMR_SECRET").then(|| secret.to_string());
    write("system/*.cruds");
    let md = app.state.metadata.clone();
    let applied = declared::apply(&mut app.db.conn(), &md, &file, env).unwrap();
    assert_eq!((applied.added, applied.updated), (2, 0));
    let token = token_with_secret(&app, "emr-file", secret);
    call(&app, "GET", "Patient", &token, None).expect(200);
    let (es, _) = key("es384");
    let jwt = assertion(
        &app,
        "registry-file",
        &es,
        Algorithm::ES384,
        "es384",
        240,
        None,
    );
    with_assertion(&app, &jwt).expect(200);

    // Applied again (a restart) with narrower scopes: updated, and the old token no longer works.
    write("system/Patient.rs");
    let applied = declared::apply(&mut app.db.conn(), &md, &file, env).unwrap();
    assert_eq!((applied.added, applied.updated), (0, 2));
    call(&app, "GET", "Patient", &token, None).outcome(401);
    let token = token_with_secret(&app, "emr-file", secret);
    call(
        &app,
        "POST",
        "Patient",
        &token,
        Some(&person(&app.org("KD_KAS_MTO"), "Barasa")),
    )
    .outcome(403);

    // Every problem, with its line; nothing applied.
    std::fs::write(
        &file,
        "[[client]]\nid = \"broken\"\nname = \"x\"\nscopes = \"user/*.r\"\ncapture = [\"NOWHERE\"]\nsecret_env = \"UNSET_SECRET\"\n\n[[client]]\nid = \"both\"\nname = \"y\"\nscopes = \"system/*.r\"\nsecret_env = \"EMR_SECRET\"\njwks_file = \"registry.jwks.json\"\n",
    )
    .unwrap();
    let problems = declared::apply(&mut app.db.conn(), &md, &file, env).unwrap_err();
    let shown = file.display().to_string();
    for want in [
        format!("{shown}:4: scope `user/*.r`"),
        format!("{shown}:6: environment variable UNSET_SECRET"),
        format!("{shown}:2: client `broken`: org unit `NOWHERE`"),
        format!("{shown}:9: client `both`: give exactly one of secret_env"),
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(&want)),
            "{want} not in {problems:#?}"
        );
    }
    assert!(admin::list(&mut app.db.conn())
        .unwrap()
        .iter()
        .all(|l| !l.starts_with("broken")));

    // At start-up, the same file stops the gateway with those lines.
    let mut config = support::test_config(&app.db);
    config.clients_file = Some(file.clone());
    match kiunga::app::AppState::start(config) {
        Err(e) => assert!(e.to_string().contains(&format!("{shown}:4:")), "{e}"),
        Ok(_) => panic!("a broken clients file was accepted"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_revocation_made_by_another_process_reaches_every_gateway_at_once() {
    let app = secured();
    let secret = register(&app, "emr-x", "system/Patient.rs", &[], &["KD"], None).unwrap();
    let token = token_with_secret(&app, "emr-x", &secret);
    // Seen twice: the second answer comes from the cache of token principals.
    call(&app, "GET", "Patient", &token, None).expect(200);
    call(&app, "GET", "Patient", &token, None).expect(200);
    // Revoked by plain SQL, as another gateway process or an operator would: the trigger's
    // notification empties this gateway's cache when the change commits.
    let mut conn = app.db.conn();
    use diesel::RunQueryDsl;
    diesel::sql_query("UPDATE api_client SET revoked_at = now() WHERE client_id = 'emr-x'")
        .execute(&mut conn)
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let r = call(&app, "GET", "Patient", &token, None);
        if r.status == 401 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "the revoked token still works after {:?}",
            start.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Within the listener's poll interval, not "eventually".
    assert!(
        start.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}
