//! FP8 checkpoints with block scales, as DeepSeek-V3/R1 ship them: each
//! quantized matrix is stored as `F8_E4M3` next to `{name}_scale_inv`, one
//! f32 per block of `weight_block_size` (128 × 128) values, and
//! `config.json` says so in its `quantization_config`
//! (`{"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],
//! "activation_scheme": "dynamic"}`). pagoda dequantizes such matrices to
//! f32 on load:
//!
//! ```text
//! W[i][j] = e4m3(q[i][j]) · scale_inv[i / block_rows][j / block_cols]
//! ```
//!
//! (the last blocks of a row or column may be partial). Reference:
//! DeepSeek-V3's `README_WEIGHTS.md` ("(128x128 weight block) *
//! weight_scale_inv") and `inference/kernel.py` (`weight_dequant`), and
//! vLLM's block-FP8 linear layers, which read the same tensors. The
//! activations stay in f32 (the reference quantizes them per 128 values on
//! the fly, `activation_scheme: dynamic`), so results are those of the
//! dequantized weights in f32.
//!
//! Any other `quantization_config` (GPTQ, AWQ, bitsandbytes,
//! compressed-tensors, FP8 without block scales...) is refused at load with
//! an error naming it: its tensors would otherwise load as garbage.

use crate::families::config::HfQuantizationConfig;

/// The block-scaled FP8 layout a checkpoint's `quantization_config` declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Blocks {
    /// Weight rows per scale (`weight_block_size[0]`).
    pub block_rows: usize,
    /// Weight columns per scale (`weight_block_size[1]`).
    pub block_cols: usize,
}

impl Fp8Blocks {
    /// The layout `quantization_config` declares, or an error naming what
    /// pagoda does not implement.
    pub fn from_config(q: &HfQuantizationConfig) -> Result<Self, String> {
        let method = q.quant_method.as_deref().unwrap_or("(none)");
        if method != "fp8" {
            return Err(format!(
                "quantization_config.quant_method `{method}` (supported: fp8 with block scales)"
            ));
        }
        if let Some(fmt) = q.fmt.as_deref().filter(|f| *f != "e4m3") {
            return Err(format!("quantization_config.fmt `{fmt}` (supported: e4m3)"));
        }
        if let Some(scheme) = q.activation_scheme.as_deref().filter(|s| *s != "dynamic") {
            return Err(format!(
                "quantization_config.activation_scheme `{scheme}` (supported: dynamic)"
            ));
        }
        match q.weight_block_size.as_deref() {
            Some(&[block_rows, block_cols]) if block_rows > 0 && block_cols > 0 => Ok(Self {
                block_rows,
                block_cols,
            }),
            other => Err(format!(
                "quantization_config.weight_block_size {other:?} (supported: two positive sizes, \
                 e.g. [128, 128]; FP8 without block scales is not)"
            )),
        }
    }

    /// The shape of the scales of a `[rows, cols]` matrix.
    pub fn scale_shape(&self, rows: usize, cols: usize) -> [usize; 2] {
        [
            rows.div_ceil(self.block_rows),
            cols.div_ceil(self.block_cols),
        ]
    }

    /// The `[rows, cols]` matrix of E4M3 bytes `q` (row-major) times its
    /// block scales `scale_inv` (`[rows / block_rows, cols / block_cols]`,
    /// rounded up, row-major), in f32. The caller checks the lengths.
    pub fn dequantize(&self, q: &[u8], scale_inv: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let [_, scale_cols] = self.scale_shape(rows, cols);
        debug_assert_eq!(q.len(), rows * cols);
        let mut out = Vec::with_capacity(rows * cols);
        for (i, row) in q.chunks_exact(cols.max(1)).enumerate().take(rows) {
            let scales = &scale_inv[i / self.block_rows * scale_cols..][..scale_cols];
            out.extend(
                row.iter()
                    .enumerate()
                    .map(|(j, &b)| e4m3_to_f32(b) * scales[j / self.block_cols]),
            );
        }
        out
    }
}

/// The value of an FP8 E4M3 byte (OCP "E4M3FN", `torch.float8_e4m3fn`: 4
/// exponent bits of bias 7, 3 mantissa bits, no infinities, `S.1111.111`
/// NaN; largest finite ±448, smallest subnormal ±2⁻⁹). Exact in f32.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exponent = i32::from((b >> 3) & 0x0f);
    let mantissa = f32::from(b & 0x07);
    let magnitude = match (exponent, b & 0x07) {
        (0x0f, 0x07) => return f32::NAN,
        // Subnormal: 0.m · 2^(1 − 7).
        (0, _) => mantissa / 8.0 * (2.0f32).powi(-6),
        _ => (1.0 + mantissa / 8.0) * (2.0f32).powi(exponent - 7),
    };
    sign * magnitude
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(method: &str, block: Option<Vec<usize>>) -> HfQuantizationConfig {
        HfQuantizationConfig {
            quant_method: Some(method.to_string()),
            fmt: Some("e4m3".into()),
            activation_scheme: Some("dynamic".into()),
            weight_block_size: block,
        }
    }

    #[test]
    fn e4m3_bytes_decode_to_their_values() {
        for (byte, value) in [
            (0x00u8, 0.0f32),
            (0x38, 1.0),
            (0xb8, -1.0),
            (0x40, 2.0),
            (0xc4, -3.0),
            (0x30, 0.5),
            (0x7e, 448.0),
            (0xfe, -448.0),
            (0x08, 2f32.powi(-6)),
            (0x01, 2f32.powi(-9)),
            (0x07, 7.0 * 2f32.powi(-9)),
            (0x3f, 1.875),
        ] {
            assert_eq!(e4m3_to_f32(byte), value, "{byte:#04x}");
        }
        assert!(e4m3_to_f32(0x7f).is_nan() && e4m3_to_f32(0xff).is_nan());
        assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn e4m3_agrees_with_candle_on_every_finite_byte() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let t = candle_core::Tensor::from_raw_buffer(
            &bytes,
            candle_core::DType::F8E4M3,
            &[256],
            &candle_core::Device::Cpu,
        )
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .expect("candle's F8E4M3");
        for (b, c) in bytes.iter().zip(t) {
            let ours = e4m3_to_f32(*b);
            assert!(
                ours.to_bits() == c.to_bits() || (ours.is_nan() && c.is_nan()),
                "{b:#04x}: {ours} vs candle's {c}"
            );
        }
    }

    #[test]
    fn each_block_takes_its_own_scale_partial_blocks_included() {
        // A [3, 5] matrix in blocks of [2, 2]: scales [2, 3].
        let blocks = Fp8Blocks {
            block_rows: 2,
            block_cols: 2,
        };
        assert_eq!(blocks.scale_shape(3, 5), [2, 3]);
        let q = [0x38u8; 15]; // every value 1.0
        let scales = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = blocks.dequantize(&q, &scales, 3, 5);
        assert_eq!(
            w,
            [
                1.0, 1.0, 2.0, 2.0, 3.0, //
                1.0, 1.0, 2.0, 2.0, 3.0, //
                4.0, 4.0, 5.0, 5.0, 6.0,
            ]
        );
    }

    #[test]
    fn only_block_scaled_e4m3_is_accepted() {
        let deepseek = config("fp8", Some(vec![128, 128]));
        assert_eq!(
            Fp8Blocks::from_config(&deepseek),
            Ok(Fp8Blocks {
                block_rows: 128,
                block_cols: 128
            })
        );
        for (bad, named) in [
            (config("gptq", None), "gptq"),
            (config("fp8", None), "weight_block_size"),
            (config("fp8", Some(vec![128])), "weight_block_size"),
            (config("fp8", Some(vec![0, 128])), "weight_block_size"),
            (
                HfQuantizationConfig {
                    fmt: Some("e5m2".into()),
                    ..deepseek.clone()
                },
                "e5m2",
            ),
            (
                HfQuantizationConfig {
                    activation_scheme: Some("static".into()),
                    ..deepseek.clone()
                },
                "static",
            ),
            (
                HfQuantizationConfig {
                    quant_method: None,
                    ..deepseek.clone()
                },
                "quant_method",
            ),
        ] {
            let err = Fp8Blocks::from_config(&bad).unwrap_err();
            assert!(err.contains(named), "{err}");
        }
    }
}
