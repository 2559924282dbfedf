//! `pagoda serve` on a DeepSeek-V3-architecture checkpoint (the tiny
//! random-weight fixture: multi-head latent attention, mixture of experts,
//! YaRN): it serves, and its startup log and `/metrics` state the bytes a
//! token takes in the latent KV cache beside what plain multi-head K/V would
//! take for the same model.

use pagoda_tests::{workspace_root, Server};
use serde_json::json;

#[test]
fn a_deepseek_v3_checkpoint_serves_with_a_latent_kv_cache() {
    let model = workspace_root().join("tests/fixtures/tiny-deepseek-v3");
    let server = Server::start_model(&model, &[]);
    // 3 layers × (kv_lora_rank 32 + qk_rope_head_dim 8) × 2 bytes (the
    // default f16 cache), against 3 layers × 4 heads × (16 + 8 nope/rope
    // key + 16 value) × 2 bytes.
    let (latent, multi_head) = (3 * (32 + 8) * 2, 3 * 4 * (16 + 8 + 16) * 2);
    assert_eq!(
        server.metric("pagoda_kv_cache_bytes_per_token"),
        Some(latent as f64)
    );
    assert_eq!(
        server.metric("pagoda_kv_cache_multi_head_bytes_per_token"),
        Some(multi_head as f64)
    );
    let log = server.log();
    assert!(
        log.contains(&format!("bytes_per_token={latent}"))
            && log.contains(&format!("multi_head_bytes_per_token={multi_head}")),
        "the startup log states both: {log}"
    );

    let body = json!({
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "max_tokens": 12, "temperature": 0, "ignore_eos": true,
    });
    let r = server
        .request("POST", "/v1/chat/completions", Some(&body.to_string()))
        .expect("chat");
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = r.json();
    assert_eq!(answer["usage"]["completion_tokens"], 12);
    // Token-id prompts, several at once, batched by the engine.
    let body = json!({"prompt": [[5], [17, 42, 99, 7, 250, 31]], "max_tokens": 12,
                      "temperature": 0, "ignore_eos": true});
    let r = server
        .request("POST", "/v1/completions", Some(&body.to_string()))
        .expect("completions");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["usage"]["completion_tokens"], 24);
}
