//! API keys guard the `/v1` routes and `/metrics` (401 in OpenAI's envelope
//! when missing or wrong, with `WWW-Authenticate`; the scheme in any case),
//! `/health` stays open, every response carries a request id (a client's
//! only when it is plain), CORS answers preflights for the configured origin
//! only, an oversized body gets a 413 in the envelope, a body not declared
//! JSON a 415 and a wrong method a 405.

use pagoda_tests::Server;

#[test]
fn api_keys_and_request_ids() {
    let server = Server::start(&[
        "--api-key",
        "first-key",
        "--api-key",
        "second-key",
        "--cors-origin",
        "http://app.example",
    ]);

    let health = server.request("GET", "/health", None).expect("health");
    assert_eq!(health.status, 200, "health needs no key");
    assert!(health
        .header("x-request-id")
        .is_some_and(|id| !id.is_empty()));

    let missing = server.request("GET", "/v1/models", None).expect("request");
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let e = missing.json();
    assert_eq!(e["error"]["type"], "authentication_error");
    assert_eq!(e["error"]["code"], "invalid_api_key");

    // `/metrics` asks for a key too (no `--metrics-public`).
    let metrics = server.request("GET", "/metrics", None).expect("metrics");
    assert_eq!(metrics.status, 401);
    let metrics = server
        .request_with(
            "GET",
            "/metrics",
            None,
            &[("Authorization", "Bearer first-key")],
        )
        .expect("metrics");
    assert_eq!(metrics.status, 200);

    for bad in [
        "Bearer wrong",
        "Bearer first-ke",
        "Bearer first-keyy",
        "Basic Zmlyc3Qta2V5",
        "first-key",
    ] {
        let r = server
            .request_with("GET", "/v1/models", None, &[("Authorization", bad)])
            .expect("request");
        assert_eq!(r.status, 401, "{bad}");
    }
    for good in ["Bearer first-key", "bearer second-key", "BEARER first-key"] {
        let r = server
            .request_with(
                "GET",
                "/v1/models",
                None,
                &[("Authorization", good), ("x-request-id", "trace-42")],
            )
            .expect("request");
        assert_eq!(r.status, 200, "{good}");
        assert_eq!(
            r.header("x-request-id"),
            Some("trace-42"),
            "the client's id is echoed"
        );
    }
    // An id that could forge a log line or carry markup is replaced.
    for forged in ["x\" status=200 injected=\"1", "<script>", &"a".repeat(129)] {
        let r = server
            .request_with("GET", "/health", None, &[("x-request-id", forged)])
            .expect("request");
        let id = r.header("x-request-id").unwrap_or("");
        assert!(id.starts_with("req-"), "{forged:?} came back as {id:?}");
        assert!(!server.log().contains(forged), "{forged:?} reached the log");
    }

    // A body not declared JSON is refused before it is read (no CORS
    // preflight protects a "simple" cross-origin request); a wrong method
    // gets the envelope too.
    let body = r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let header = content_type.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
        let r = server
            .raw(&format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Authorization: Bearer first-key\r\n{header}Content-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            ))
            .expect("request");
        assert_eq!(r.status, 415, "{content_type:?}: {}", r.body);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    let r = server
        .request_with(
            "GET",
            "/v1/chat/completions",
            None,
            &[("Authorization", "Bearer first-key")],
        )
        .expect("request");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let chat = server
        .request_with(
            "POST",
            "/v1/chat/completions",
            Some(r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}"#),
            &[("Authorization", "Bearer second-key")],
        )
        .expect("chat");
    assert_eq!(chat.status, 200, "{}", chat.body);

    // CORS: the configured origin's preflight succeeds without a key; others get no grant.
    let preflight = |origin: &str| {
        server
            .request_with(
                "OPTIONS",
                "/v1/chat/completions",
                None,
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", "POST"),
                    (
                        "Access-Control-Request-Headers",
                        "authorization,content-type",
                    ),
                ],
            )
            .expect("preflight")
    };
    let ok = preflight("http://app.example");
    assert!(ok.status < 300, "{}", ok.status);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert!(preflight("http://evil.example")
        .header("access-control-allow-origin")
        .is_none());

    // A body one byte over the 8 MiB limit: 413 in the envelope. (Exactly one
    // byte over, so that the server has read everything when it answers and
    // closes the connection cleanly.)
    let frame = r#"{"messages":[{"role":"user","content":""}]}"#;
    let filler = 8 * 1024 * 1024 + 1 - frame.len();
    let huge = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(filler)
    );
    assert_eq!(huge.len(), 8 * 1024 * 1024 + 1);
    let r = server
        .request_with(
            "POST",
            "/v1/chat/completions",
            Some(&huge),
            &[("Authorization", "Bearer first-key")],
        )
        .expect("request");
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["param"], "body");
}
