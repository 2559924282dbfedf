//! API keys guard the `/v1` routes (401 in OpenAI's envelope when missing or
//! wrong), `/health` stays open, every response carries a request id, CORS
//! answers preflights for the configured origin only, and an oversized body
//! gets a 413 in the envelope.

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
    let e = missing.json();
    assert_eq!(e["error"]["type"], "authentication_error");
    assert_eq!(e["error"]["code"], "invalid_api_key");

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
    for good in ["Bearer first-key", "Bearer second-key"] {
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
