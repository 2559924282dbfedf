//! Every GGUF tensor type pagoda loads runs the llama forward pass: a
//! synthetic one-layer model is written in each type, loaded through the
//! normal GGUF path, and its logits are compared with the same model run
//! on dense f32 copies of the very same (dequantized) weights.
//!
//! Every block type runs on pagoda's own kernels (Q4_0, Q4_1, Q8_0 on the
//! block and panel kernels, the K-quants, Q5_0 and Q5_1 on the bit-plane
//! kernels): with f32 activations they must match the dense reference to
//! f32 rounding (1e-3 of the logit range); with the default 8-bit
//! activations they are held to 5% of the logit range and the same argmax.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use common::{argmax, prompt_logits, write_tiny_gguf, TINY_VOCAB};
use pagoda_models::families::llama::Llama;
use pagoda_models::formats::gguf::config::gguf_model_config;
use pagoda_models::formats::gguf::file::{gguf_name, GgufFile};
use pagoda_models::formats::tensor_source::TensorSource;
use pagoda_models::formats::weight::Weight;
use pagoda_models::{load_model_with, Activations, LoadOptions};

/// The GGUF file's weights, dequantized to dense f32 tensors.
struct Dequantized {
    path: PathBuf,
    tensors: HashMap<String, Weight>,
}

impl TensorSource for Dequantized {
    fn path(&self) -> &Path {
        &self.path
    }

    fn get(&self, name: &str) -> pagoda_models::Result<Option<Weight>> {
        Ok(gguf_name(name).and_then(|g| self.tensors.get(&g).cloned()))
    }
}

fn dequantized(file: &GgufFile, names: &[&str]) -> Dequantized {
    let mut tensors = HashMap::new();
    for name in names {
        let w = file.tensor(name).expect("read").expect("present");
        let dims = w.dims();
        let t = Tensor::from_vec(w.to_f32_vec().expect("dequantize"), dims, &Device::Cpu)
            .expect("tensor");
        tensors.insert(name.to_string(), Weight::Dense(t));
    }
    Dequantized {
        path: file.path().to_path_buf(),
        tensors,
    }
}

const NAMES: [&str; 11] = [
    "token_embd.weight",
    "blk.0.attn_norm.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_v.weight",
    "blk.0.attn_output.weight",
    "blk.0.ffn_norm.weight",
    "blk.0.ffn_gate.weight",
    "blk.0.ffn_up.weight",
    "blk.0.ffn_down.weight",
    "output_norm.weight",
];

#[test]
fn every_supported_gguf_type_runs_the_forward_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = [3u32, 17, 42, 9, 60, 1, 33];
    let types = [
        (GgmlDType::F32, 1e-3),
        (GgmlDType::F16, 1e-3),
        (GgmlDType::Q4_0, 1e-3),
        (GgmlDType::Q4_1, 1e-3),
        (GgmlDType::Q8_0, 1e-3),
        (GgmlDType::Q5_0, 1e-3),
        (GgmlDType::Q5_1, 1e-3),
        (GgmlDType::Q2K, 1e-3),
        (GgmlDType::Q3K, 1e-3),
        (GgmlDType::Q4K, 1e-3),
        (GgmlDType::Q5K, 1e-3),
        (GgmlDType::Q6K, 1e-3),
    ];
    for (dtype, rel_tol) in types {
        let path = dir.path().join(format!("tiny-{dtype:?}.gguf"));
        write_tiny_gguf(&path, dtype, "llama");
        let file = GgufFile::open(&path).expect("open");
        let config = gguf_model_config(&file).expect("config");
        let reference = Llama::load(config, &dequantized(&file, &NAMES)).expect("dense model");
        let want = prompt_logits(&reference, &tokens);
        // Block types run with f32 and int8x2 activations (the reference's
        // tolerance) and with one 8-bit pass (5%); F32 and F16 have one path.
        let blocks = !matches!(dtype, GgmlDType::F32 | GgmlDType::F16);
        let modes: &[(Activations, f32)] = if blocks {
            &[
                (Activations::F32, rel_tol),
                (Activations::Int8x2, rel_tol),
                (Activations::Int8, 0.05),
            ]
        } else {
            &[(Activations::Int8x2, rel_tol)]
        };
        for &(activations, rel_tol) in modes {
            let options = LoadOptions {
                activations: activations.into(),
                ..LoadOptions::default()
            };
            let loaded =
                load_model_with(&path, &options).unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
            assert_eq!(loaded.config().vocab_size, TINY_VOCAB);
            let got = prompt_logits(loaded.model.as_ref(), &tokens);
            assert_close(&format!("{dtype:?} {activations:?}"), &got, &want, rel_tol);
        }
    }
}

/// IQ4_NL, which candle's reader does not know: a Q4_0 file whose layer
/// matrices are relabelled IQ4_NL (the same block geometry; the nibbles now
/// index IQ4_NL's table) loads, names the type in its log line, and runs as
/// the same model on dense copies of its (IQ4_NL-dequantized) weights.
#[test]
fn iq4_nl_tensors_load_and_run_on_pagodas_kernels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q4 = dir.path().join("tiny-q4_0.gguf");
    write_tiny_gguf(&q4, GgmlDType::Q4_0, "llama");
    let mut bytes = std::fs::read(&q4).expect("read");
    let matrices = [
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.attn_v.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_gate.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",
    ];
    for name in matrices {
        let at = bytes
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .expect("tensor info");
        // name, then n_dims (u32), two dims (u64 each), then the type (u32).
        let type_at = at + name.len() + 4 + 16;
        assert_eq!(
            bytes[type_at..type_at + 4],
            2u32.to_le_bytes(),
            "{name} is Q4_0"
        );
        bytes[type_at..type_at + 4].copy_from_slice(&20u32.to_le_bytes());
    }
    let path = dir.path().join("tiny-iq4_nl.gguf");
    std::fs::write(&path, &bytes).expect("write");

    let file = GgufFile::open(&path).expect("open");
    for name in matrices {
        assert!(file.is_iq4_nl(name), "{name}");
        let w = file.tensor(name).expect("read").expect("present");
        assert_eq!(w.type_name(), "IQ4NL", "{name}");
    }
    assert!(!file.is_iq4_nl("token_embd.weight"));
    assert!(file
        .tensor_types()
        .iter()
        .any(|(t, n)| t == "IQ4_NL" && *n == matrices.len()));
    let config = gguf_model_config(&file).expect("config");
    let reference = Llama::load(config, &dequantized(&file, &NAMES)).expect("dense model");
    let tokens = [3u32, 17, 42, 9, 60, 1, 33];
    let want = prompt_logits(&reference, &tokens);
    for (activations, rel_tol) in [
        (Activations::F32, 1e-3),
        (Activations::Int8x2, 1e-3),
        (Activations::Int8, 0.05),
    ] {
        let options = LoadOptions {
            activations: activations.into(),
            ..LoadOptions::default()
        };
        let loaded = load_model_with(&path, &options).expect("load");
        assert!(loaded.precision.contains("IQ4_NL"), "{}", loaded.precision);
        let got = prompt_logits(loaded.model.as_ref(), &tokens);
        assert_close(&format!("IQ4_NL {activations:?}"), &got, &want, rel_tol);
    }
}

/// `got` is within `rel_tol` of the logit range of `want`, and every
/// position's greedy token is the same.
fn assert_close(label: &str, got: &[f32], want: &[f32], rel_tol: f32) {
    let range = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff <= rel_tol * range,
        "{label}: max |Δ| {diff} over a logit range of {range}"
    );
    for (g, w) in got.chunks(TINY_VOCAB).zip(want.chunks(TINY_VOCAB)) {
        assert_eq!(argmax(g), argmax(w), "{label}: argmax");
    }
}
