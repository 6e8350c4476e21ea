//! Hardening that every answer carries: security headers, and CORS only for configured origins.

mod support;

use support::TestApp;

#[test]
fn every_answer_carries_the_security_headers() {
    let app = TestApp::start();
    for path in [
        "metadata",
        "Patient?name=x",
        "Patient/NoSuchOne01",
        "Nothing",
    ] {
        let r = app.get(path);
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'",
            ),
        ] {
            assert_eq!(
                r.header(name).as_deref(),
                Some(value),
                "{path} ({}): {name}",
                r.status
            );
        }
    }
}

#[test]
fn cors_is_off_unless_origins_are_configured() {
    let origin = "https://emr.example.org";
    let off = TestApp::start();
    let r = off.send("GET", "metadata", &[("Origin", origin)], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);

    let on = TestApp::start_with(|c| c.cors_allowed_origins = vec![origin.to_string()]);
    let r = on.send("GET", "metadata", &[("Origin", origin)], None);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let pre = on.send(
        "OPTIONS",
        "Patient",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type,prefer"),
        ],
        None,
    );
    assert!(pre.status < 300, "preflight: {}", pre.status);
    assert_eq!(
        pre.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    // Another site gets no permission.
    let r = on.send(
        "GET",
        "metadata",
        &[("Origin", "https://evil.example")],
        None,
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}
