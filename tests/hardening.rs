//! Hardening that every answer carries: security headers, CORS only for configured origins, and
//! HTTPS served by the gateway itself when it is given a certificate.

mod support;

use std::io::{Read, Write};
use std::sync::Arc;

use support::TestApp;

/// One HTTPS GET with a client that trusts only the test CA: (status, whole response).
fn https_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(support::repo().join("fixtures/test-keys/tls-ca.crt"))
        .map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    // A server may close without close_notify once the answer is out: what was read counts.
    if let Err(e) = tls.read_to_end(&mut out) {
        if out.is_empty() {
            return Err(e.to_string());
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text}"))?;
    Ok((status, text))
}

#[test]
fn with_a_certificate_the_gateway_speaks_https_and_only_https() {
    let keys = support::repo().join("fixtures/test-keys");
    let app = TestApp::start_with(|c| {
        c.tls_cert = Some(keys.join("tls-localhost.crt"));
        c.tls_key = Some(keys.join("tls-localhost.key"));
    });
    let port: u16 = app
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port");
    let (status, text) = https_get(port, "/healthz").expect("HTTPS");
    assert_eq!(status, 200, "{text}");
    let (status, text) = https_get(port, "/fhir/metadata").expect("HTTPS");
    assert_eq!(status, 200);
    assert!(text.contains("CapabilityStatement"), "{text}");
    assert!(text
        .to_ascii_lowercase()
        .contains("x-content-type-options: nosniff"));
    // Plain HTTP on the same port gets no answer.
    let plain = app
        .http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send();
    assert!(plain.is_err() || !plain.is_ok_and(|r| r.status().is_success()));
}

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
