//! Bad model paths fail with one clear error that names the file and the
//! problem, never a panic: missing paths, files that are not models,
//! truncated and corrupt GGUF files, unknown architectures and tensor types,
//! broken checkpoint directories.

mod common;

use std::path::Path;

use candle_core::quantized::GgmlDType;
use common::{default_model, fixtures, write_tiny_gguf};
use pagoda_models::load_model;

fn load_err(path: &Path) -> String {
    match load_model(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error {err:?} should mention {p:?}");
    }
}

#[test]
fn a_missing_path_is_named() {
    let err = load_err(Path::new("/nonexistent/model.gguf"));
    assert_mentions(&err, &["/nonexistent/model.gguf", "No such file"]);
}

#[test]
fn a_file_that_is_not_a_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "hello").expect("write");
    assert_mentions(&load_err(&path), &["notes.txt", "neither a GGUF file"]);
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").expect("write");
    assert_mentions(&load_err(&empty), &["empty.gguf"]);
}

#[test]
fn truncated_gguf_files_are_reported_as_such() {
    let model = default_model();
    assert!(model.exists(), "run scripts/fetch-model.sh first");
    let bytes = std::fs::read(&model).expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    // Cut inside the tensor data, and inside the metadata.
    for (cut, what) in [(bytes.len() / 2, "truncated"), (4096, "truncated")] {
        let path = dir.path().join(format!("cut-{cut}.gguf"));
        std::fs::write(&path, &bytes[..cut]).expect("write");
        assert_mentions(&load_err(&path), &[&format!("cut-{cut}.gguf"), what]);
    }
}

#[test]
fn corrupt_gguf_headers_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.gguf");
    write_tiny_gguf(&good, GgmlDType::Q8_0, "llama");
    let bytes = std::fs::read(&good).expect("read");

    // An absurd metadata count.
    let mut absurd = bytes.clone();
    absurd[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let path = dir.path().join("absurd.gguf");
    std::fs::write(&path, &absurd).expect("write");
    assert_mentions(&load_err(&path), &["absurd.gguf", "invalid GGUF file"]);

    // An unknown version.
    let mut version = bytes.clone();
    version[4..8].copy_from_slice(&99u32.to_le_bytes());
    let path = dir.path().join("version.gguf");
    std::fs::write(&path, &version).expect("write");
    assert_mentions(&load_err(&path), &["version.gguf"]);

    // A tensor type id that does not exist (patch the first tensor's type).
    let name = b"token_embd.weight";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("tensor info");
    // name, then n_dims (u32), two dims (u64 each), then the type (u32).
    let type_at = at + name.len() + 4 + 16;
    let mut unknown = bytes.clone();
    unknown[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
    let path = dir.path().join("unknown-type.gguf");
    std::fs::write(&path, &unknown).expect("write");
    assert_mentions(
        &load_err(&path),
        &["unknown-type.gguf", "unsupported GGUF tensor type", "77"],
    );
}

#[test]
fn an_unknown_architecture_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mamba.gguf");
    write_tiny_gguf(&path, GgmlDType::Q8_0, "mamba");
    assert_mentions(
        &load_err(&path),
        &["mamba.gguf", "unsupported architecture", "mamba"],
    );
}

fn copy_fixture(name: &str, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(fixtures().join(name)).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn broken_checkpoint_directories_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");

    let no_config = dir.path().join("no-config");
    copy_fixture("tiny-llama", &no_config);
    std::fs::remove_file(no_config.join("config.json")).expect("rm");
    assert_mentions(
        &load_err(&no_config),
        &["no-config/config.json", "No such file"],
    );

    let unknown = dir.path().join("unknown-arch");
    copy_fixture("tiny-llama", &unknown);
    let config = std::fs::read_to_string(unknown.join("config.json")).expect("read");
    std::fs::write(
        unknown.join("config.json"),
        config
            .replace("\"llama\"", "\"falcon\"")
            .replace("LlamaForCausalLM", "FalconForCausalLM"),
    )
    .expect("write");
    assert_mentions(
        &load_err(&unknown),
        &["config.json", "unsupported architecture", "falcon"],
    );

    let truncated = dir.path().join("truncated");
    copy_fixture("tiny-llama", &truncated);
    let weights = std::fs::read(truncated.join("model.safetensors")).expect("read");
    std::fs::write(
        truncated.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .expect("write");
    assert_mentions(
        &load_err(&truncated),
        &["truncated", "invalid safetensors file"],
    );

    let missing_shard = dir.path().join("missing-shard");
    copy_fixture("tiny-llama-f16-sharded", &missing_shard);
    std::fs::remove_file(missing_shard.join("model-00002-of-00005.safetensors")).expect("rm");
    assert_mentions(
        &load_err(&missing_shard),
        &["model-00002-of-00005.safetensors"],
    );

    let no_tokenizer = dir.path().join("no-tokenizer");
    copy_fixture("tiny-qwen2", &no_tokenizer);
    std::fs::remove_file(no_tokenizer.join("tokenizer.json")).expect("rm");
    assert_mentions(&load_err(&no_tokenizer), &["tokenizer.json"]);

    let bad_shape = dir.path().join("bad-shape");
    copy_fixture("tiny-qwen2", &bad_shape);
    let config = std::fs::read_to_string(bad_shape.join("config.json")).expect("read");
    std::fs::write(
        bad_shape.join("config.json"),
        config.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .expect("write");
    assert_mentions(&load_err(&bad_shape), &["mlp.gate_proj.weight", "shape"]);
}

#[test]
fn broken_deepseek_checkpoints_name_the_field_or_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");

    // A config without the latent's width.
    let no_rank = dir.path().join("no-kv-lora-rank");
    copy_fixture("tiny-deepseek-v3", &no_rank);
    let config = std::fs::read_to_string(no_rank.join("config.json")).expect("read");
    std::fs::write(
        no_rank.join("config.json"),
        config.replace("\"kv_lora_rank\": 32,", ""),
    )
    .expect("write");
    assert_mentions(&load_err(&no_rank), &["config.json", "kv_lora_rank"]);

    // Inconsistent routing.
    let bad_groups = dir.path().join("bad-groups");
    copy_fixture("tiny-deepseek-v3", &bad_groups);
    std::fs::write(
        bad_groups.join("config.json"),
        config.replace("\"n_group\": 4,", "\"n_group\": 3,"),
    )
    .expect("write");
    assert_mentions(&load_err(&bad_groups), &["config.json", "n_group"]);

    // V3 without its selection bias.
    let no_bias = dir.path().join("no-bias");
    copy_fixture("tiny-deepseek-v3", &no_bias);
    let weights = no_bias.join("model.safetensors");
    let mut tensors =
        candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).expect("load");
    tensors.remove("model.layers.1.mlp.gate.e_score_correction_bias");
    candle_core::safetensors::save(&tensors, &weights).expect("save");
    assert_mentions(
        &load_err(&no_bias),
        &[
            "model.layers.1.mlp.gate.e_score_correction_bias",
            "missing from the checkpoint",
        ],
    );
}

#[test]
fn unsupported_quantization_configs_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, quantization, named) in [
        (
            "gptq",
            r#"{"quant_method": "gptq", "bits": 4, "group_size": 128}"#,
            "gptq",
        ),
        (
            "fp8-per-tensor",
            r#"{"quant_method": "fp8", "activation_scheme": "dynamic"}"#,
            "weight_block_size",
        ),
        (
            "compressed",
            r#"{"quant_method": "compressed-tensors", "format": "float-quantized"}"#,
            "compressed-tensors",
        ),
    ] {
        let ckpt = dir.path().join(name);
        copy_fixture("tiny-deepseek-v3", &ckpt);
        let path = ckpt.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        config["quantization_config"] = serde_json::from_str(quantization).expect("json");
        std::fs::write(&path, config.to_string()).expect("write");
        assert_mentions(
            &load_err(&ckpt),
            &["config.json", "unsupported quantization", named],
        );
    }
}
