//! Operating `pagoda serve`: `/health` while loading, `/metrics`,
//! `/openapi.json`, clients that go away, the request timeout, JSON logs,
//! and graceful shutdown on SIGTERM. Real binary, real default model.

use std::io::Read;
use std::time::{Duration, Instant};

use pagoda_tests::{HttpResponse, Server};
use serde_json::Value;

const LONG_STREAM: &str = r#"{"messages":[{"role":"user","content":"Tell me a long story."}],"max_tokens":3000,"ignore_eos":true,"stream":true}"#;

/// Polls `cond` every 50 ms for at most `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Reads from `stream` until `needle` has arrived (at most 60 s).
fn read_until(stream: &mut std::net::TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).contains(needle) {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn health_is_503_while_the_model_loads_then_200() {
    let server = Server::spawn(&["--debug-load-delay-ms", "3000"], &[]);
    let mut first = None;
    assert!(eventually(Duration::from_secs(30), || {
        first = server.request("GET", "/health", None).ok();
        first.is_some()
    }));
    let first = first.expect("an answer");
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(first.json()["status"], "loading");
    let early = server.request("GET", "/v1/models", None).expect("request");
    assert_eq!(early.status, 503);
    assert_eq!(early.json()["error"]["code"], "model_loading");
    assert_eq!(early.header("retry-after"), Some("1"));
    assert_eq!(server.metric("pagoda_model_loaded"), Some(0.0));
    server.wait_healthy();
    assert_eq!(server.metric("pagoda_model_loaded"), Some(1.0));
}

#[test]
fn metrics_count_requests_tokens_and_latencies_and_a_gone_client_is_aborted() {
    let server = Server::start(&["--log-format", "json"]);
    let body = r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"temperature":0,"ignore_eos":true}"#;
    for _ in 0..2 {
        let r = server
            .request_with(
                "POST",
                "/v1/chat/completions",
                Some(body),
                &[("x-request-id", "metrics-test")],
            )
            .expect("chat");
        assert_eq!(r.status, 200);
    }
    let bad = server
        .request("POST", "/v1/chat/completions", Some(r#"{"messages":[]}"#))
        .expect("chat");
    assert_eq!(bad.status, 400);
    // Routes are labelled with the router's own patterns (the wildcard
    // included); a path no route matches is `unmatched`.
    let models = server.request("GET", "/v1/models", None).expect("models");
    let name = models.json()["data"][0]["id"]
        .as_str()
        .expect("model id")
        .to_string();
    let one = server
        .request("GET", &format!("/v1/models/{name}"), None)
        .expect("model");
    assert_eq!(one.status, 200);
    let nowhere = server.request("GET", "/v1/nowhere", None).expect("404");
    assert_eq!(nowhere.status, 404);
    let m = |s: &str| server.metric(s);
    assert_eq!(
        m(r#"pagoda_http_requests_total{route="/v1/models",status="200"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"pagoda_http_requests_total{route="/v1/models/{*id}",status="200"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"pagoda_http_requests_total{route="unmatched",status="404"}"#),
        Some(1.0)
    );
    // The engine publishes its counters after each step, and a response may
    // reach the client just before that: wait (bounded) for the last step.
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while m("pagoda_generation_tokens_total") != Some(10.0) && std::time::Instant::now() < settled {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        m(r#"pagoda_http_requests_total{route="/v1/chat/completions",status="200"}"#),
        Some(2.0)
    );
    assert_eq!(
        m(r#"pagoda_http_requests_total{route="/v1/chat/completions",status="400"}"#),
        Some(1.0)
    );
    assert_eq!(m("pagoda_generation_tokens_total"), Some(10.0));
    assert!(m("pagoda_prompt_tokens_total").is_some_and(|t| t > 10.0));
    assert_eq!(m("pagoda_time_to_first_token_seconds_count"), Some(2.0));
    assert_eq!(
        m("pagoda_inter_token_latency_seconds_count"),
        Some(8.0),
        "4 gaps per 5-token answer"
    );
    assert_eq!(m("pagoda_e2e_request_latency_seconds_count"), Some(2.0));
    assert_eq!(
        m(r#"pagoda_requests_finished_total{outcome="completed"}"#),
        Some(2.0)
    );
    assert!(m("pagoda_kv_blocks_total").is_some_and(|b| b > 0.0));
    // SmolLM2: 30 layers × 3 kv heads × 64 × (K + V) × 2 bytes (the
    // default f16 cache), no compression.
    assert_eq!(m("pagoda_kv_cache_bytes_per_token"), Some(23040.0));
    assert_eq!(
        m("pagoda_kv_cache_multi_head_bytes_per_token"),
        Some(23040.0)
    );
    assert_eq!(m("pagoda_kv_blocks_used"), Some(0.0));
    assert_eq!(m("pagoda_num_requests_waiting"), Some(0.0));
    assert_eq!(m("pagoda_num_requests_running"), Some(0.0));
    // The same prompt twice: the second found its full blocks cached.
    assert!(m("pagoda_prefix_cache_hits_total").is_some_and(|h| h > 0.0));
    assert!(m("pagoda_prefix_cache_hit_rate").is_some_and(|r| r > 0.0 && r < 1.0));
    assert!(m(r#"pagoda_build_info{version="0.1.0"}"#).is_some());
    // Some of the steps' time is the engine's own, most of it the model's.
    assert!(m("pagoda_engine_overhead_ratio").is_some_and(|r| r > 0.0 && r < 0.5));

    // JSON logs: one line per finished generation, with the request id.
    let log = server.log();
    let finished: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "generation finished")
        .collect();
    assert_eq!(finished.len(), 2, "{log}");
    for line in &finished {
        assert_eq!(line["request_id"], "metrics-test");
        assert_eq!(line["completion_tokens"], 5);
        assert!(line["prompt_tokens"].as_u64().is_some_and(|p| p > 0));
        assert!(line["ttft_ms"].as_u64().is_some());
        assert!(line["total_ms"].as_u64().is_some());
    }

    // A client that goes away mid-stream: its request is aborted and its
    // KV blocks freed within an engine step or two.
    let mut stream = server
        .open("POST", "/v1/chat/completions", LONG_STREAM)
        .expect("open");
    let seen = read_until(&mut stream, "\"content\":\"");
    assert!(seen.contains("200 OK"), "{seen}");
    assert!(eventually(Duration::from_secs(10), || {
        m("pagoda_num_requests_running") == Some(1.0)
    }));
    drop(stream);
    assert!(
        eventually(Duration::from_secs(10), || {
            m("pagoda_num_requests_running") == Some(0.0) && m("pagoda_kv_blocks_used") == Some(0.0)
        }),
        "the abandoned request still runs"
    );
    assert_eq!(
        m(r#"pagoda_requests_finished_total{outcome="aborted"}"#),
        Some(1.0)
    );
    let generated = m("pagoda_generation_tokens_total").unwrap_or(0.0);
    assert!(
        generated < 10.0 + 200.0,
        "generation stopped early ({generated} tokens)"
    );
}

#[test]
fn a_request_past_its_timeout_ends_with_length_and_keeps_its_text() {
    let server = Server::start(&["--request-timeout-secs", "2"]);
    let started = Instant::now();
    let r = server
        .request(
            "POST",
            "/v1/chat/completions",
            Some(r#"{"messages":[{"role":"user","content":"Tell me a long story."}],"max_tokens":3000,"ignore_eos":true,"n":2}"#),
        )
        .expect("chat");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let v = r.json();
    for c in v["choices"].as_array().expect("choices") {
        assert_eq!(c["finish_reason"], "length");
        assert!(!c["message"]["content"].as_str().unwrap_or("").is_empty());
    }
    let tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    assert!(tokens > 0 && tokens < 6000, "{tokens}");
    // Streamed: every choice gets its finish chunk, then [DONE].
    let r = server
        .request("POST", "/v1/chat/completions", Some(LONG_STREAM))
        .expect("stream");
    assert!(r.body.trim_end().ends_with("data: [DONE]"), "{}", r.body);
    assert!(r.body.contains(r#""finish_reason":"length""#));
    assert!(eventually(Duration::from_secs(10), || {
        server.metric("pagoda_kv_blocks_used") == Some(0.0)
    }));
    assert_eq!(
        server.metric(r#"pagoda_requests_finished_total{outcome="timeout"}"#),
        Some(2.0)
    );
}

#[test]
fn openapi_json_describes_every_route() {
    let server = Server::start(&[]);
    let doc = server
        .request("GET", "/openapi.json", None)
        .expect("openapi")
        .json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    for route in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{id}",
        "/health",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(route), "{route} is missing");
    }
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["CommonFields"]["properties"]["temperature"]["maximum"] == 2);
    assert!(schemas["ChatCompletion"].is_object());
    assert!(schemas["ErrorEnvelope"].is_object());
    // Every reference resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("a schema reference");
        assert!(schemas[name].is_object(), "{r} does not resolve");
    }
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let mut server = Server::start(&[]);
    let body = r#"{"messages":[{"role":"user","content":"Count to ten."}],"max_tokens":40,"ignore_eos":true,"stream":true}"#;
    let mut stream = server
        .open("POST", "/v1/chat/completions", body)
        .expect("open");
    let mut seen = read_until(&mut stream, "\"content\":\"");
    server.terminate();
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    seen.push_str(&rest);
    let answer = HttpResponse::parse(seen.as_bytes()).expect("a response");
    assert!(
        answer.body.trim_end().ends_with("data: [DONE]"),
        "the in-flight stream finished: {}",
        answer.body
    );
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
    assert!(
        server.request("GET", "/health", None).is_err(),
        "no longer listening"
    );
}

#[test]
fn sigterm_ends_requests_still_running_after_the_grace_period_cleanly() {
    let mut server = Server::start(&["--shutdown-grace-secs", "1"]);
    let mut stream = server
        .open("POST", "/v1/chat/completions", LONG_STREAM)
        .expect("open");
    read_until(&mut stream, "\"content\":\"");
    let signalled = Instant::now();
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(15));
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    // Cut cleanly: a final chunk with its finish reason, `[DONE]`, and the
    // chunked body's terminating chunk — not a stream broken mid-chunk.
    assert!(
        rest.contains("\"finish_reason\":\"length\""),
        "no final chunk: {rest}"
    );
    assert!(rest.contains("data: [DONE]"), "no [DONE]: {rest}");
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "the body was not ended: {rest:?}"
    );
    let log = server.log();
    assert!(log.contains("grace period"), "{log}");
    assert!(log.contains("server shutting down"), "{log}");
}

#[test]
fn a_pool_smaller_than_the_context_window_limits_requests_with_a_400() {
    // 8 MiB of the default f16 cache holds 352 of the default model's 8,192
    // positions: the served context is clamped to the pool, the log says
    // so, and admission is checked before anything reaches the engine thread.
    let server = Server::start(&["--kv-cache-mib", "8"]);
    assert!(
        server.log().contains("requests are limited to 352 tokens"),
        "{}",
        server.log()
    );
    // No max_tokens: the default is what fits, so the answer comes back.
    let fits = server
        .request(
            "POST",
            "/v1/chat/completions",
            Some(r#"{"messages":[{"role":"user","content":"Hi"}],"temperature":0,"ignore_eos":true}"#),
        )
        .expect("chat");
    assert_eq!(fits.status, 200, "{}", fits.body);
    let usage = &fits.json()["usage"];
    assert_eq!(usage["total_tokens"], 352, "{usage}");
    assert_eq!(fits.json()["choices"][0]["finish_reason"], "length");
    // Past the pool: 400 context_length_exceeded naming the numbers.
    let past = server
        .request(
            "POST",
            "/v1/completions",
            Some(r#"{"prompt":"Hi","max_tokens":400}"#),
        )
        .expect("completion");
    assert_eq!(past.status, 400, "{}", past.body);
    let e = &past.json()["error"];
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "max_tokens");
    let message = e["message"].as_str().expect("message");
    assert!(
        message.contains("400") && message.contains("352"),
        "{message}"
    );
    // A prompt that alone fills the pool names the prompt.
    let long_prompt = "word ".repeat(400);
    let body = serde_json::json!({"prompt": long_prompt}).to_string();
    let too_long = server
        .request("POST", "/v1/completions", Some(&body))
        .expect("completion");
    assert_eq!(too_long.status, 400, "{}", too_long.body);
    assert_eq!(too_long.json()["error"]["param"], "prompt");
    assert_eq!(
        server.metric(r#"pagoda_http_requests_total{route="/v1/completions",status="500"}"#),
        None
    );
}

#[test]
fn a_request_that_could_never_be_queued_whole_is_a_400_not_a_429() {
    let server = Server::start(&["--max-waiting", "4", "--max-num-seqs", "3", "--max-n", "2"]);
    // Six prompts can never wait together in a queue of four sequences: on
    // an idle server, retrying would never succeed.
    let six = r#"{"prompt":["a","b","c","d","e","f"],"max_tokens":2}"#;
    let r = server
        .request("POST", "/v1/completions", Some(six))
        .expect("request");
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.json();
    assert_eq!(e["error"]["param"], "prompt");
    let message = e["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("--max-waiting") && message.contains("6 sequences"),
        "{message}"
    );
    // `n` past `--max-n`: refused, naming `n` and the flag. (Past
    // `--max-num-seqs` likewise: `admission`'s unit tests.)
    let chat = r#"{"messages":[{"role":"user","content":"Hi"}],"n":3,"max_tokens":2}"#;
    let r = server
        .request("POST", "/v1/chat/completions", Some(chat))
        .expect("request");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], "n");
    assert!(r.body.contains("--max-n"), "{}", r.body);
    // What fits is served whole: two prompts × n = 2 fill the queue exactly.
    let fits = r#"{"prompt":["a","b"],"n":2,"max_tokens":2}"#;
    let r = server
        .request("POST", "/v1/completions", Some(fits))
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"].as_array().map(Vec::len), Some(4));
}
