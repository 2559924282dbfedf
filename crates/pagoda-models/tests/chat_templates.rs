//! The real chat templates of SmolLM2, Llama 3.1, Qwen2, Qwen3, Gemma 3,
//! Mistral Nemo, Phi-3.5 and DeepSeek-R1-Distill-Qwen (kept as test data in
//! `tests/fixtures/templates`)
//! render exactly as Hugging Face transformers renders them
//! (`scripts/make_fixtures.py --templates` wrote the expectations).

mod common;

use common::fixtures;
use pagoda_models::{ChatTemplate, RenderOptions};
use serde_json::Value;

fn read_json(name: &str) -> Value {
    let path = fixtures().join("templates").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

fn check_template(name: &str) {
    let dir = fixtures().join("templates");
    let source = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).expect("template");
    let specials = &read_json("specials.json")[name];
    let template = ChatTemplate::new(
        &source,
        specials["bos_token"].as_str().expect("bos"),
        specials["eos_token"].as_str().expect("eos"),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let conversations = read_json("conversations.json");
    let expected = read_json(&format!("{name}.expected.json"));
    let mut checked = 0;
    for case in expected.as_array().expect("cases") {
        let conv_name = case["conversation"].as_str().expect("name");
        let conv = conversations
            .as_array()
            .expect("conversations")
            .iter()
            .find(|c| c["name"] == conv_name)
            .expect("conversation");
        let options = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().expect("flag"),
            extra: case["kwargs"].as_object().cloned().unwrap_or_default(),
            ..Default::default()
        };
        let got = template.render(conv["messages"].as_array().expect("messages"), &options);
        let label = format!("{name} / {conv_name} / {}", case["kwargs"]);
        match (case.get("rendered"), got) {
            (Some(want), Ok(got)) => assert_eq!(got, want.as_str().expect("text"), "{label}"),
            (None, Err(_)) => {}
            (want, got) => panic!("{label}: expected {want:?}, got {got:?}"),
        }
        checked += 1;
    }
    let conversations = read_json("conversations.json");
    assert!(
        checked >= 2 * conversations.as_array().map_or(0, Vec::len),
        "{name}: every conversation with and without the generation prompt"
    );
}

#[test]
fn smollm2_template_renders_like_transformers() {
    check_template("smollm2");
}

#[test]
fn llama31_template_renders_like_transformers() {
    check_template("llama3.1");
}

#[test]
fn qwen2_template_renders_like_transformers() {
    check_template("qwen2");
}

#[test]
fn deepseek_r1_distill_template_renders_like_transformers() {
    check_template("deepseek-r1-distill-qwen");
}

/// Qwen3's, with `enable_thinking` unset, false (the empty thinking block
/// opened and closed in the prompt) and true.
#[test]
fn qwen3_template_renders_like_transformers() {
    check_template("qwen3");
}

/// Gemma 3's (instruction-tuned): the system text joins the first user
/// turn; it refuses tool messages and roles out of turn, as transformers'
/// renderer does.
#[test]
fn gemma3_template_renders_like_transformers() {
    check_template("gemma3");
}

/// Mistral Nemo's `[INST]` template: tools before the last user turn,
/// `[TOOL_CALLS]` and `[TOOL_RESULTS]`, call ids of nine characters.
#[test]
fn mistral_template_renders_like_transformers() {
    check_template("mistral-nemo");
}

#[test]
fn phi35_template_renders_like_transformers() {
    check_template("phi3.5");
}

/// The tiny R1-style fixture: DeepSeek-R1's real template (and the variant
/// that opens the thinking block in the prompt) renders conversations with
/// earlier reasoning and tool calls exactly as transformers does, and the
/// rendered prompts tokenize to transformers' ids.
#[test]
fn the_r1_templates_render_and_tokenize_as_transformers() {
    let dir = fixtures().join("tiny-r1-qwen2");
    let (tokenizer, real) = pagoda_models::load_tokenizer(&dir).expect("tokenizer");
    let real = real.expect("the fixture ships DeepSeek-R1's template");
    let think_source =
        std::fs::read_to_string(dir.join("chat_template_think.jinja")).expect("variant");
    let think = ChatTemplate::new(
        &think_source,
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
    )
    .expect("the variant parses");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference"),
    )
    .expect("json");
    let cases = reference["chat_cases"].as_array().expect("chat_cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let template = match case["template"].as_str() {
            Some("real") => &real,
            Some("think") => &think,
            other => panic!("{name}: unknown template {other:?}"),
        };
        let options = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().expect("flag"),
            ..Default::default()
        };
        let messages = case["messages"].as_array().expect("messages");
        let rendered = template
            .render(messages, &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            rendered,
            case["rendered"].as_str().expect("rendered"),
            "{name}"
        );
        let ids = tokenizer.encode(&rendered, false).expect("encode");
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        assert_eq!(ids, expected, "{name}: token ids");
    }
}
