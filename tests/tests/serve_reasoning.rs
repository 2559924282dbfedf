//! Reasoning output end to end: `pagoda serve` on the tiny R1-distill-style
//! checkpoint (`tests/fixtures/tiny-r1-qwen2`: Qwen2 weights, R1's added
//! tokens, DeepSeek-R1's real chat template), over HTTP.
//!
//! The weights are random, so the model never closes its thinking on its
//! own within a few tokens: these tests lean on the template variant that
//! ends the prompt with `<think>\n` (the output starts inside the block) and
//! on the thinking budget, with which the server closes the block itself.

use std::path::PathBuf;

use pagoda_tests::{workspace_root, Server};
use serde_json::{json, Value};

fn fixture() -> PathBuf {
    workspace_root().join("tests/fixtures/tiny-r1-qwen2")
}

fn think_template() -> String {
    fixture()
        .join("chat_template_think.jinja")
        .to_string_lossy()
        .into_owned()
}

fn chat(server: &Server, body: Value) -> Value {
    let r = server
        .request("POST", "/v1/chat/completions", Some(&body.to_string()))
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn body(extra: Value) -> Value {
    let mut b = json!({
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "temperature": 0,
        "max_tokens": 16,
    });
    if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    b
}

/// (reasoning, content, finish_reason) of choice 0 of a plain answer.
fn parts(answer: &Value) -> (Option<String>, String, String) {
    let m = &answer["choices"][0]["message"];
    (
        m["reasoning_content"].as_str().map(str::to_string),
        m["content"].as_str().expect("content").to_string(),
        answer["choices"][0]["finish_reason"]
            .as_str()
            .expect("finish_reason")
            .to_string(),
    )
}

/// Reassembles a stream: (reasoning, content, finish_reason, usage), and
/// checks that no reasoning arrives after content.
fn streamed(server: &Server, mut b: Value) -> (String, String, String, Value) {
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    let r = server
        .request("POST", "/v1/chat/completions", Some(&b.to_string()))
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let (mut reasoning, mut content, mut finish, mut usage) =
        (String::new(), String::new(), String::new(), Value::Null);
    for line in r.body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).expect("chunk JSON");
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        if let Some(r) = delta["reasoning_content"].as_str() {
            assert!(
                content.is_empty(),
                "reasoning {r:?} after content {content:?}"
            );
            reasoning.push_str(r);
        }
        if let Some(c) = delta["content"].as_str() {
            content.push_str(c);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (reasoning, content, finish, usage)
}

fn reasoning_tokens(answer: &Value) -> u64 {
    answer["usage"]["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .expect("usage.completion_tokens_details.reasoning_tokens")
}

#[test]
fn thinking_comes_back_apart_from_the_answer_and_a_budget_closes_it() {
    let server = Server::start_model(&fixture(), &["--chat-template", &think_template()]);
    assert!(
        server
            .log()
            .contains("thinking is returned as reasoning_content"),
        "reasoning was detected from the template and tokenizer: {}",
        server.log()
    );

    // The prompt opens the block and the model never closes it: all of the
    // output is reasoning, and the choice ends by length.
    let open = chat(&server, body(json!({"max_tokens": 4})));
    let (r4, c4, f4) = parts(&open);
    let r4 = r4.expect("reasoning_content");
    assert!(!r4.is_empty());
    assert_eq!((c4.as_str(), f4.as_str()), ("", "length"));
    assert_eq!(reasoning_tokens(&open), 4);
    assert_eq!(open["usage"]["completion_tokens"], 4);

    // A budget of 4: the same 4 tokens of thinking, then the server closes
    // the block and the model answers.
    let budget = body(json!({"max_reasoning_tokens": 4}));
    let closed = chat(&server, budget.clone());
    let (r, c, f) = parts(&closed);
    assert_eq!(r.as_deref(), Some(r4.as_str()));
    assert!(!c.is_empty(), "an answer follows the closed block");
    assert!(!c.contains("think>"), "no tag in content: {c:?}");
    assert_eq!(f, "length");
    let thinking = reasoning_tokens(&closed);
    assert!(
        thinking > 4 && thinking < 16,
        "4 tokens of thinking plus the close tag: {thinking}"
    );

    // Streamed: the same parts, reasoning chunks before content chunks.
    let (sr, sc, sf, usage) = streamed(&server, budget.clone());
    assert_eq!(
        (sr.as_str(), sc.as_str(), sf.as_str()),
        (r4.as_str(), c.as_str(), "length")
    );
    assert_eq!(
        usage["completion_tokens_details"]["reasoning_tokens"],
        thinking
    );

    // With log-probabilities: one entry per token (the server's own close
    // tokens included, as certain), the block's on reasoning chunks, and no
    // content key at all before the last reasoning chunk.
    let mut with_lp = budget;
    with_lp["logprobs"] = json!(true);
    with_lp["stream"] = json!(true);
    let r = server
        .request("POST", "/v1/chat/completions", Some(&with_lp.to_string()))
        .expect("request");
    let chunks: Vec<Value> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk"))
        .collect();
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]).collect();
    let last_reasoning = deltas
        .iter()
        .rposition(|d| d["delta"].get("reasoning_content").is_some())
        .expect("reasoning chunks");
    assert!(
        deltas[..last_reasoning]
            .iter()
            .all(|d| d["delta"].get("content").is_none()),
        "a content key before the thinking ended: {}",
        r.body
    );
    let entries = |on: &str| -> usize {
        deltas
            .iter()
            .filter(|d| d["delta"].get(on).is_some())
            .map(|d| d["logprobs"]["content"].as_array().map_or(0, Vec::len))
            .sum()
    };
    assert_eq!(entries("reasoning_content") as u64, thinking);
    assert_eq!(entries("reasoning_content") + entries("content"), 16);

    // `reasoning_effort: none` closes the block at once; `low` is a budget
    // larger than this request's max_tokens: nothing is cut.
    let none = chat(&server, body(json!({"reasoning_effort": "none"})));
    let (r, c, _) = parts(&none);
    assert_eq!(r, None, "no thinking at all");
    assert!(!c.is_empty() && !c.contains("think>"), "{c:?}");
    assert_eq!(
        thinking,
        4 + reasoning_tokens(&none),
        "4 tokens of thinking, then the same close"
    );
    let low = chat(
        &server,
        body(json!({"reasoning_effort": "low", "max_tokens": 4})),
    );
    assert_eq!(parts(&low), parts(&open));

    // n choices each get their own split.
    let two = chat(
        &server,
        body(json!({"n": 2, "temperature": 1.0, "seed": 3, "max_reasoning_tokens": 2})),
    );
    let two: Vec<(Option<&str>, &str)> = two["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| {
            let m = &c["message"];
            (
                m["reasoning_content"].as_str(),
                m["content"].as_str().expect("content"),
            )
        })
        .collect();
    assert_eq!(two.len(), 2);
    for (reasoning, content) in &two {
        assert!(reasoning.is_some_and(|r| !r.is_empty()), "{two:?}");
        assert!(
            !content.is_empty() && !content.contains("think>"),
            "{two:?}"
        );
    }
    assert_ne!(two[0], two[1], "each choice samples its own: {two:?}");

    // Every finished request's thinking tokens are counted in /metrics.
    assert!(server
        .metric("pagoda_reasoning_tokens_total")
        .is_some_and(|t| t >= (4 + thinking * 3 + reasoning_tokens(&none)) as f64));

    let bad = server
        .request(
            "POST",
            "/v1/chat/completions",
            Some(&body(json!({"reasoning_effort": "max"})).to_string()),
        )
        .expect("request");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "reasoning_effort");
}

#[test]
fn earlier_reasoning_stays_out_of_the_prompt_as_the_template_wants() {
    // DeepSeek-R1's own template (the output does not start inside a block).
    let server = Server::start_model(&fixture(), &[]);
    let prompt_tokens = |assistant: Value| {
        let mut turn = json!({"role": "assistant", "content": "Four."});
        if let (Some(t), Some(a)) = (turn.as_object_mut(), assistant.as_object()) {
            for (k, v) in a {
                t.insert(k.clone(), v.clone());
            }
        }
        let answer = chat(
            &server,
            json!({
                "messages": [
                    {"role": "user", "content": "What is 2 + 2?"},
                    turn,
                    {"role": "user", "content": "And 3 + 3?"},
                ],
                "max_tokens": 1,
            }),
        );
        answer["usage"]["prompt_tokens"]
            .as_u64()
            .expect("prompt_tokens")
    };
    let plain = prompt_tokens(json!({}));
    let long = "a long chain of thought that must not be sent back to the model";
    assert_eq!(prompt_tokens(json!({"reasoning_content": long})), plain);
    assert_eq!(prompt_tokens(json!({"reasoning": long})), plain);
    // R1's template cuts an inline block from an earlier answer.
    // (transformers renders the newlines after the tag as they are).
    assert_eq!(
        prompt_tokens(json!({"content": format!("<think>\n{long}\n</think>\n\nFour.")})),
        prompt_tokens(json!({"content": "\n\nFour."})),
    );
}

#[test]
fn reasoning_off_returns_the_raw_output() {
    let server = Server::start_model(
        &fixture(),
        &["--chat-template", &think_template(), "--reasoning", "off"],
    );
    let answer = chat(&server, body(json!({"max_tokens": 4})));
    let (r, c, _) = parts(&answer);
    assert_eq!(r, None);
    assert!(!c.is_empty());
    assert!(answer["usage"].get("completion_tokens_details").is_none());
}

#[test]
fn a_tool_call_inside_the_thinking_is_not_swallowed() {
    let server = Server::start_model(&fixture(), &["--chat-template", &think_template()]);
    // Force DeepSeek's tool-call opening as the first token of the output,
    // which starts inside the block: the call is the answer's.
    let marker = "<｜tool▁calls▁begin｜>";
    let marker_id = 366; // tests/fixtures/tiny-r1-qwen2/reference.json, "specials"
    let answer = chat(
        &server,
        body(json!({"max_tokens": 3, "max_reasoning_tokens": 1,
                    "logit_bias": {marker_id.to_string(): 100}})),
    );
    let (r, c, f) = parts(&answer);
    assert_eq!(r, None);
    assert_eq!(
        c,
        marker.repeat(3),
        "the call stays in content; no close is forced"
    );
    assert_eq!(f, "length");
    assert_eq!(reasoning_tokens(&answer), 0);
}

/// The DeepSeek call markup the server forces and parses back (issue [7]):
/// a named `tool_choice` on the R1-style checkpoint thinks first (the
/// budget closes the block), then writes exactly one call in
/// `<｜tool▁calls▁begin｜>` markup with arguments valid against the
/// function's schema; the stream carries the same call, and the call and
/// its result render back into the next turn's prompt.
#[test]
fn a_forced_call_follows_the_thinking_in_deepseeks_markup() {
    let server = Server::start_model(&fixture(), &["--chat-template", &think_template()]);
    assert!(
        server.log().contains("deepseek"),
        "the call format comes from R1's template: {}",
        server.log()
    );
    // R1's template has no `tools`: the definition is described in the
    // system message.
    let tools = json!([{"type": "function", "function": {
        "name": "w",
        "parameters": {"type": "object",
                       "properties": {"u": {"enum": ["C", "F"]}, "d": {"type": "integer", "minimum": 1, "maximum": 9}},
                       "required": ["u", "d"]}}}]);
    let forced = body(json!({
        "max_tokens": 160, "max_reasoning_tokens": 3, "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "w"}},
    }));
    let answer = chat(&server, forced.clone());
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let message = &choice["message"];
    assert!(
        message["reasoning_content"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{answer}"
    );
    assert!(
        message["content"].as_str().unwrap_or_default().is_empty(),
        "{answer}"
    );
    let calls = message["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1, "{answer}");
    let call = &calls[0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(call["function"]["name"], "w");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
        .expect("arguments are JSON");
    assert!(matches!(args["u"].as_str(), Some("C" | "F")), "{args}");
    assert!(
        args["d"].as_u64().is_some_and(|d| (1..=9).contains(&d)),
        "{args}"
    );

    // Streamed: the same call (ids aside), index 0, name before arguments.
    let mut stream = forced.clone();
    stream["stream"] = json!(true);
    let r = server
        .request("POST", "/v1/chat/completions", Some(&stream.to_string()))
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let (mut name, mut arguments, mut finish) = (String::new(), String::new(), String::new());
    for data in r.body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).expect("chunk JSON");
        let c = &chunk["choices"][0];
        for d in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(d["index"], 0);
            if let Some(n) = d["function"]["name"].as_str() {
                assert!(arguments.is_empty(), "the name comes first");
                name.push_str(n);
            }
            arguments.push_str(d["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    assert_eq!(
        (name.as_str(), arguments.as_str(), finish.as_str()),
        (
            "w",
            call["function"]["arguments"].as_str().expect("string"),
            "tool_calls"
        )
    );

    // The next turn: the call and its result go back through the template.
    let mut next = body(json!({"max_tokens": 2, "tools": tools}));
    next["messages"] = json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18 C"},
    ]);
    let turn = chat(&server, next);
    assert!(
        turn["usage"]["prompt_tokens"]
            .as_u64()
            .is_some_and(|n| n > 20),
        "{turn}"
    );
}

/// With a grammar on the answer, a choice may not end its thinking with a
/// tool-call marker nor stop inside it (issue [7]): pushed hard towards
/// both, it thinks until the budget closes the block, then writes JSON
/// valid against the schema.
#[test]
fn a_schema_answer_always_comes_after_the_thinking() {
    let server = Server::start_model(&fixture(), &["--chat-template", &think_template()]);
    let (marker_id, eos_id) = (366, 360); // reference.json: "specials", config.json
    let answer = chat(
        &server,
        body(json!({
            "max_tokens": 80, "max_reasoning_tokens": 4,
            "logit_bias": {marker_id.to_string(): 100, eos_id.to_string(): 100},
            "response_format": {"type": "json_schema", "json_schema": {"name": "u", "strict": true, "schema": {
                "type": "object", "properties": {"u": {"enum": ["C", "F"]}}, "required": ["u"]}}},
        })),
    );
    let (r, c, f) = parts(&answer);
    let r = r.expect("reasoning_content");
    assert!(!r.contains("tool▁calls"), "{answer}");
    assert!(
        reasoning_tokens(&answer) > 4,
        "4 thought, then the appended close: {answer}"
    );
    let v: Value = serde_json::from_str(&c).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert!(matches!(v["u"].as_str(), Some("C" | "F")), "{answer}");
    assert_eq!(f, "stop", "{answer}");
}
