//! `pagoda serve` over real HTTP on a loopback port with the real default
//! model: the chat endpoint (plain and streamed, in OpenAI's exact SSE
//! framing), models, health, and the error envelope.

use pagoda_tests::Server;
use serde_json::{json, Value};

fn chat_body(extra: Value) -> String {
    let mut body = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 24});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body.to_string()
}

/// The `data:` payloads of an SSE body, checking the framing on the way.
fn sse_payloads(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "every event ends with a blank line: {body:?}"
    );
    body.trim_end()
        .split("\n\n")
        .map(|event| {
            let payload = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data line: {event:?}"));
            assert!(!payload.contains('\n'), "one line per event");
            payload.to_string()
        })
        .collect()
}

#[test]
fn chat_models_health_and_errors() {
    // f32 activations: greedy text is transformers' exactly, so it can be
    // asserted word for word.
    let server = Server::start(&["--served-model-name", "smollm2", "--activations", "f32"]);

    let health = server.request("GET", "/health", None).expect("health");
    assert_eq!(health.status, 200);

    let models = server
        .request("GET", "/v1/models", None)
        .expect("models")
        .json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "smollm2");
    assert_eq!(
        server
            .request("GET", "/v1/models/smollm2", None)
            .expect("model")
            .status,
        200
    );
    let missing = server
        .request("GET", "/v1/models/gpt-4", None)
        .expect("model");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");

    // A plain chat completion.
    let r = server
        .request(
            "POST",
            "/v1/chat/completions",
            Some(&chat_body(json!({"model": "smollm2"}))),
        )
        .expect("chat");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().is_some_and(|s| s.starts_with("chatcmpl-")));
    assert_eq!(v["model"], "smollm2");
    assert!(v["system_fingerprint"].is_string() && v["created"].is_u64());
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );
    // OpenAI's schema requires the key, null unless the model refused.
    assert!(v["choices"][0]["message"]
        .as_object()
        .is_some_and(|m| m.get("refusal") == Some(&Value::Null)));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 37, "completion_tokens": 8, "total_tokens": 45})
    );

    // The same, streamed, with usage.
    let r = server
        .request(
            "POST",
            "/v1/chat/completions",
            Some(&chat_body(
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            )),
        )
        .expect("stream");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream")));
    let payloads = sse_payloads(&r.body);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("chunk JSON"))
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "The capital of France is Paris.");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 8);

    // Without include_usage there is no usage chunk.
    let r = server
        .request(
            "POST",
            "/v1/chat/completions",
            Some(&chat_body(json!({"stream": true}))),
        )
        .expect("stream");
    let payloads = sse_payloads(&r.body);
    assert!(payloads.iter().all(|p| !p.contains("\"usage\"")));

    // A stop string across tokens is honoured and never leaks.
    let r = server
        .request(
            "POST",
            "/v1/chat/completions",
            Some(&chat_body(json!({"stop": ["Paris"]}))),
        )
        .expect("chat")
        .json();
    assert_eq!(
        r["choices"][0]["message"]["content"],
        "The capital of France is "
    );
    assert_eq!(r["choices"][0]["finish_reason"], "stop");

    // n choices with a seed, and logprobs.
    let r = server
        .request("POST", "/v1/chat/completions", Some(&chat_body(json!({"n": 2, "temperature": 1.0, "seed": 5, "logprobs": true, "top_logprobs": 2, "max_tokens": 4}))))
        .expect("chat")
        .json();
    assert_eq!(r["choices"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["choices"][1]["index"], 1);
    let lp = &r["choices"][0]["logprobs"]["content"];
    assert!(lp.as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(lp[0]["top_logprobs"].as_array().map(Vec::len), Some(2));

    // Errors, in the envelope, with the right status and param.
    for (body, status, param, code) in [
        (
            chat_body(json!({"temperature": 5})),
            400,
            json!("temperature"),
            Value::Null,
        ),
        (
            chat_body(json!({"messages": []})),
            400,
            json!("messages"),
            Value::Null,
        ),
        (
            chat_body(json!({"messages": [{"role": "robot", "content": "x"}]})),
            400,
            json!("messages[0].role"),
            Value::Null,
        ),
        (
            chat_body(json!({"messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": null, "tool_calls": [{"function": "f"}]},
            ]})),
            400,
            json!("messages[1].tool_calls[0].function"),
            Value::Null,
        ),
        ("{not json".to_string(), 400, json!("body"), Value::Null),
        (
            chat_body(json!({"max_tokens": 100000})),
            400,
            json!("max_tokens"),
            json!("context_length_exceeded"),
        ),
        (
            chat_body(json!({"model": "gpt-4"})),
            404,
            json!("model"),
            json!("model_not_found"),
        ),
    ] {
        let r = server
            .request("POST", "/v1/chat/completions", Some(&body))
            .expect("request");
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let e = r.json();
        assert_eq!(e["error"]["param"], param, "{body}");
        assert_eq!(e["error"]["code"], code, "{body}");
        assert!(e["error"]["message"].is_string() && e["error"]["type"].is_string());
    }
    let r = server.request("GET", "/v2/nothing", None).expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");

    // Text completions: a string, token ids, several prompts, echo, logprobs, streaming.
    let r = server
        .request("POST", "/v1/completions", Some(r#"{"prompt":"The capital of France is","max_tokens":6,"temperature":0,"echo":true,"logprobs":2}"#))
        .expect("completion");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().expect("text");
    assert!(text.starts_with("The capital of France is"), "{text}");
    assert_eq!(
        v["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .map(Vec::len),
        Some(6)
    );
    assert_eq!(
        v["choices"][0]["logprobs"]["top_logprobs"][0]
            .as_object()
            .map(|o| o.len()),
        Some(2)
    );
    assert_eq!(v["usage"]["completion_tokens"], 6);
    let plain = server
        .request(
            "POST",
            "/v1/completions",
            Some(r#"{"prompt":"The capital of France is","max_tokens":6,"temperature":0}"#),
        )
        .expect("completion")
        .json();
    assert_eq!(
        format!(
            "The capital of France is{}",
            plain["choices"][0]["text"].as_str().unwrap_or("")
        ),
        text
    );
    let ids = server
        .request("POST", "/v1/completions", Some(r#"{"prompt":[[504, 3575, 282, 4649, 314], [1]],"max_tokens":3,"temperature":0,"n":2}"#))
        .expect("completion")
        .json();
    let indices: Vec<u64> = ids["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .filter_map(|c| c["index"].as_u64())
        .collect();
    assert_eq!(indices, vec![0, 1, 2, 3]);
    let r = server
        .request("POST", "/v1/completions", Some(r#"{"prompt":"The capital of France is","max_tokens":6,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}"#))
        .expect("stream");
    let payloads = sse_payloads(&r.body);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = payloads[..payloads.len() - 1]
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|c| c["choices"].get(0)?["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, plain["choices"][0]["text"].as_str().unwrap_or(""));
    let bad = server
        .request("POST", "/v1/completions", Some(r#"{"prompt":[99999999]}"#))
        .expect("request");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "prompt");

    // The server is still healthy after all of that.
    assert_eq!(
        server
            .request("GET", "/health", None)
            .expect("health")
            .status,
        200
    );
}

/// The README's first request, as written (no `max_tokens`, no
/// `--activations`): the default server answers it right and stops.
#[test]
fn the_readmes_first_request_gets_the_models_real_answer() {
    let server = Server::start(&[]);
    let readme =
        std::fs::read_to_string(pagoda_tests::workspace_root().join("README.md")).expect("README");
    let body = readme
        .split("-d '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the README's first curl has a body");
    assert!(body.contains("What is the capital of France?"), "{body}");
    let r = server
        .request("POST", "/v1/chat/completions", Some(body))
        .expect("answer");
    assert_eq!(r.status, 200, "{}", r.body);
    let choice = &r.json()["choices"][0];
    assert_eq!(
        choice["message"]["content"], "The capital of France is Paris.",
        "{choice}"
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert!(
        server.log().contains("int8x2 activations (auto"),
        "{}",
        server.log()
    );
}
