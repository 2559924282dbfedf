//! FP8 checkpoints as DeepSeek-V3/R1 ship them (`F8_E4M3` matrices with
//! `*.weight_scale_inv` block scales, `quantization_config` in
//! `config.json`): the tiny DeepSeek-V3 fixture is quantized here, in blocks
//! of [16, 24] that leave partial blocks at the edges, and written as a
//! safetensors file by hand. Its logits must equal, bit for bit, those of
//! the same checkpoint in f32 with every matrix replaced by its
//! dequantized values `e4m3(q) · scale_inv[i / 16][j / 24]`; a missing or
//! misshapen scale, or FP8 without a `quantization_config`, fails naming
//! the tensor.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::{fixtures, prompt_logits};
use pagoda_models::load_model;

const BLOCK: [usize; 2] = [16, 24];

/// An E4M3 byte's value, from the format's definition (bias 7, 3 mantissa
/// bits, subnormals below 2⁻⁶).
fn e4m3(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = (i32::from((b >> 3) & 0x0f), f32::from(b & 0x07));
    if e == 0 {
        sign * m * 2f32.powi(-9)
    } else {
        sign * (8.0 + m) * 2f32.powi(e - 10)
    }
}

/// The finite E4M3 byte nearest to `x` (|x| <= 448).
fn nearest_e4m3(x: f32) -> u8 {
    let magnitude = (0u8..0x7f)
        .min_by(|&a, &b| {
            (e4m3(a) - x.abs())
                .abs()
                .total_cmp(&(e4m3(b) - x.abs()).abs())
        })
        .expect("bytes");
    if x < 0.0 {
        magnitude | 0x80
    } else {
        magnitude
    }
}

/// `w` (`[rows, cols]`) quantized per block: the bytes, the scales
/// (`[⌈rows/16⌉, ⌈cols/24⌉]`) and the dequantized matrix.
fn quantize(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let [br, bc] = BLOCK;
    let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
    let mut scales = vec![0.0f32; sr * sc];
    for i in 0..rows {
        for j in 0..cols {
            let s = &mut scales[i / br * sc + j / bc];
            *s = s.max(w[i * cols + j].abs() / 448.0);
        }
    }
    // Distinct scales per block, so a transposed or shifted lookup shows.
    for (k, s) in scales.iter_mut().enumerate() {
        *s = if *s == 0.0 {
            1.0
        } else {
            *s * (1.0 + k as f32 / 64.0)
        };
    }
    let mut q = Vec::with_capacity(rows * cols);
    let mut dequantized = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            let (s, x) = (scales[i / br * sc + j / bc], w[i * cols + j]);
            let b = nearest_e4m3(x / s);
            q.push(b);
            dequantized.push(e4m3(b) * s);
            // Rounded to 3 mantissa bits (or to a subnormal step of 2⁻⁹).
            let err = (e4m3(b) * s - x).abs();
            assert!(
                err <= x.abs() / 16.0 + s * 2f32.powi(-10) * 1.001,
                "{x} -> {b:#04x} · {s}"
            );
        }
    }
    (q, scales, dequantized)
}

/// A tensor for [`write_safetensors`]: dtype, shape, little-endian bytes.
struct Raw {
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_raw(shape: &[usize], values: &[f32]) -> Raw {
    Raw {
        dtype: "F32",
        shape: shape.to_vec(),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes a safetensors file: the JSON header's length, the header, the data.
fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Raw>) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, t) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + t.bytes.len()],
            }),
        );
        offset += t.bytes.len();
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    for t in tensors.values() {
        file.extend_from_slice(&t.bytes);
    }
    std::fs::write(path, file).expect("write safetensors");
}

fn copy_fixture(name: &str, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(fixtures().join(name)).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// Sets (or with `None` removes) `quantization_config` in `dir/config.json`.
fn set_quantization_config(dir: &Path, value: Option<serde_json::Value>) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let object = config.as_object_mut().expect("object");
    match value {
        Some(v) => object.insert("quantization_config".into(), v),
        None => object.remove("quantization_config"),
    };
    std::fs::write(&path, config.to_string()).expect("write");
}

fn deepseek_fp8_config() -> serde_json::Value {
    serde_json::json!({
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": BLOCK,
    })
}

/// Whether DeepSeek-V3's FP8 checkpoints store `name` in FP8: every
/// projection matrix (not the router, the embedding, the head, the norms).
fn is_fp8(name: &str, dims: &[usize]) -> bool {
    dims.len() == 2 && name.ends_with("_proj.weight") && !name.contains("mlp.gate.")
}

/// Writes the FP8 checkpoint into `fp8_dir` and its dequantized f32 twin
/// into `f32_dir`; returns the names of the FP8 matrices.
fn make_checkpoints(fp8_dir: &Path, f32_dir: &Path) -> Vec<String> {
    copy_fixture("tiny-deepseek-v3", fp8_dir);
    copy_fixture("tiny-deepseek-v3", f32_dir);
    let tensors = candle_core::safetensors::load(
        fixtures().join("tiny-deepseek-v3/model.safetensors"),
        &Device::Cpu,
    )
    .expect("fixture weights");
    let mut raw = BTreeMap::new();
    let mut twin = std::collections::HashMap::new();
    let mut quantized = Vec::new();
    for (name, t) in &tensors {
        let dims = t.dims().to_vec();
        let values = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("f32");
        if is_fp8(name, &dims) {
            let (q, scales, dequantized) = quantize(&values, dims[0], dims[1]);
            let scale_shape = [dims[0].div_ceil(BLOCK[0]), dims[1].div_ceil(BLOCK[1])];
            raw.insert(
                name.clone(),
                Raw {
                    dtype: "F8_E4M3",
                    shape: dims.clone(),
                    bytes: q,
                },
            );
            raw.insert(format!("{name}_scale_inv"), f32_raw(&scale_shape, &scales));
            twin.insert(
                name.clone(),
                Tensor::from_vec(dequantized, dims.as_slice(), &Device::Cpu).expect("tensor"),
            );
            quantized.push(name.clone());
        } else {
            raw.insert(name.clone(), f32_raw(&dims, &values));
            twin.insert(name.clone(), t.clone());
        }
    }
    write_safetensors(&fp8_dir.join("model.safetensors"), &raw);
    set_quantization_config(fp8_dir, Some(deepseek_fp8_config()));
    candle_core::safetensors::save(&twin, f32_dir.join("model.safetensors")).expect("save");
    quantized.sort();
    quantized
}

fn logits(dir: &Path, prompt: &[u32]) -> Vec<f32> {
    let loaded = load_model(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    prompt_logits(loaded.model.as_ref(), prompt)
}

fn load_err(dir: &Path) -> String {
    match load_model(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn block_scaled_fp8_gives_the_logits_of_its_dequantized_weights() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (fp8, twin) = (tmp.path().join("fp8"), tmp.path().join("f32"));
    let quantized = make_checkpoints(&fp8, &twin);
    assert!(quantized.len() > 40, "{quantized:?}");
    let loaded = load_model(&fp8).expect("fp8 checkpoint");
    assert!(
        loaded.precision.contains("FP8") && loaded.precision.contains("[16, 24]"),
        "{}",
        loaded.precision
    );
    let prompt: Vec<u32> = (1..40).map(|i| (i * 37) % 384).collect();
    let got = logits(&fp8, &prompt);
    let want = logits(&twin, &prompt);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}

#[test]
fn fp8_without_its_scales_or_its_config_names_the_tensor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (fp8, twin) = (tmp.path().join("fp8"), tmp.path().join("f32"));
    let quantized = make_checkpoints(&fp8, &twin);
    let first = &quantized[0];
    let weights = std::fs::read(fp8.join("model.safetensors")).expect("read");

    // No quantization_config: FP8 bytes must not load as plain values.
    set_quantization_config(&fp8, None);
    let err = load_err(&fp8);
    assert!(
        err.contains("F8_E4M3") && err.contains("quantization_config") && err.contains(".weight"),
        "{err}"
    );
    set_quantization_config(&fp8, Some(deepseek_fp8_config()));

    // A block size that does not match the scales.
    let mut other = deepseek_fp8_config();
    other["weight_block_size"] = serde_json::json!([128, 128]);
    set_quantization_config(&fp8, Some(other));
    let err = load_err(&fp8);
    assert!(
        err.contains("_scale_inv") && err.contains("shape") && err.contains("[128, 128]"),
        "{err}"
    );
    set_quantization_config(&fp8, Some(deepseek_fp8_config()));

    // A matrix whose scales are missing.
    let mut tensors: BTreeMap<String, Raw> = BTreeMap::new();
    let n = u64::from_le_bytes(weights[..8].try_into().expect("len")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&weights[8..8 + n]).expect("header");
    let data = &weights[8 + n..];
    for (name, info) in header.as_object().expect("header") {
        let [start, end] =
            [0, 1].map(|k| info["data_offsets"][k].as_u64().expect("offset") as usize);
        let dtype = match info["dtype"].as_str().expect("dtype") {
            "F8_E4M3" => "F8_E4M3",
            _ => "F32",
        };
        let shape = info["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        tensors.insert(
            name.clone(),
            Raw {
                dtype,
                shape,
                bytes: data[start..end].to_vec(),
            },
        );
    }
    let scale = format!("{first}_scale_inv");
    assert!(tensors.remove(&scale).is_some());
    write_safetensors(&fp8.join("model.safetensors"), &tensors);
    let err = load_err(&fp8);
    assert!(
        err.contains(first.as_str()) && err.contains(&scale),
        "{err}"
    );
}
