//! API keys guard the `/v1` routes (401 in OpenAI's envelope when missing or
//! wrong), `/health` stays open, and every response carries a request id.

use pagoda_tests::Server;

#[test]
fn api_keys_and_request_ids() {
    let server = Server::start(&["--api-key", "first-key", "--api-key", "second-key"]);

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
}
