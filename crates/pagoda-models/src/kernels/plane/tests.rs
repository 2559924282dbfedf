use candle_core::quantized::{QStorage, QTensor};
use candle_core::Device;
use half::f16;

use super::*;
use crate::kernels::int8::test_data::{activations, Rng};

/// Where each type keeps its f16 scales in a GGUF block.
fn f16_fields(format: PlaneFormat) -> &'static [usize] {
    match format {
        PlaneFormat::Q2K => &[80, 82],
        PlaneFormat::Q3K => &[108],
        PlaneFormat::Q4K | PlaneFormat::Q5K | PlaneFormat::Q5_1 => &[0, 2],
        PlaneFormat::Q6K => &[208],
        PlaneFormat::Q5_0 | PlaneFormat::IQ4NL => &[0],
    }
}

/// `rows × cols` random GGUF blocks of `format` with sane f16 scales.
fn random_gguf(format: PlaneFormat, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let bb = format.block_bytes();
    let mut data = vec![0u8; rows * cols / format.block_values() * bb];
    for block in data.chunks_exact_mut(bb) {
        for b in block.iter_mut() {
            *b = rng.next() as u8;
        }
        for &at in f16_fields(format) {
            let v = f16::from_f32(0.0005 + (rng.next() % 1000) as f32 * 2e-5);
            block[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    data
}

/// candle's dequantization of the same bytes: the independent reference
/// (IQ4_NL, which candle lacks: ggml's formula, `d · T[nibble]`).
fn candle_values(format: PlaneFormat, rows: usize, cols: usize, bytes: &[u8]) -> Vec<f32> {
    let Some(dtype) = format.ggml() else {
        assert_eq!(format, PlaneFormat::IQ4NL);
        return bytes
            .chunks_exact(18)
            .flat_map(|b| {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let t = |n: u8| d * super::format::IQ4_NL_VALUES[n as usize] as f32;
                let low: Vec<f32> = b[2..].iter().map(|&q| t(q & 15)).collect();
                let high: Vec<f32> = b[2..].iter().map(|&q| t(q >> 4)).collect();
                [low, high].concat()
            })
            .collect();
    };
    let storage = QStorage::from_data(std::borrow::Cow::Borrowed(bytes), &Device::Cpu, dtype)
        .expect("storage");
    let q = QTensor::new(storage, (rows, cols)).expect("tensor");
    q.dequantize(&Device::Cpu)
        .expect("dequantize")
        .flatten_all()
        .expect("flatten")
        .to_vec1::<f32>()
        .expect("values")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

fn dequantized(w: &PlaneMatrix) -> Vec<f32> {
    let mut out = vec![0.0; w.rows() * w.cols()];
    for (r, row) in out.chunks_exact_mut(w.cols()).enumerate() {
        w.dequantize_row(r, row);
    }
    out
}

#[test]
fn decoded_blocks_dequantize_to_candles_values_in_every_panel_layout() {
    let mut rng = Rng(5);
    for format in PlaneFormat::ALL {
        for rows in [1, 3, 9, 17] {
            let cols = 2 * format.block_values();
            let bytes = random_gguf(format, rows, cols, &mut rng);
            let reference = candle_values(format, rows, cols, &bytes);
            for isa in Isa::ALL {
                let w = PlaneMatrix::for_isa(format, rows, cols, &bytes, isa).expect("matrix");
                let got = dequantized(&w);
                for (k, (a, b)) in got.iter().zip(&reference).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                        "{format:?} {isa:?} rows={rows} value {k}: {a} vs candle's {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_block_dequantizes_value_by_value_as_all_at_once() {
    let mut rng = Rng(41);
    for format in PlaneFormat::ALL {
        let bytes = random_gguf(format, 1, format.block_values(), &mut rng);
        let block = decode::Decoded::new(format, &bytes);
        let mut all = vec![0.0f32; format.block_values()];
        block.values(format, &mut all);
        for (v, a) in all.iter().enumerate() {
            assert_eq!(
                a.to_bits(),
                block.value(format, v).to_bits(),
                "{format:?} {v}"
            );
        }
    }
}

#[test]
fn wrong_shapes_are_errors() {
    let bytes = vec![0u8; 144];
    assert!(PlaneMatrix::from_gguf(PlaneFormat::Q4K, 1, 256, &bytes).is_ok());
    assert!(PlaneMatrix::from_gguf(PlaneFormat::Q4K, 1, 128, &bytes[..72]).is_err());
    assert!(PlaneMatrix::from_gguf(PlaneFormat::Q4K, 2, 256, &bytes).is_err());
    assert!(PlaneMatrix::from_gguf(PlaneFormat::Q4K, 1, 0, &[]).is_err());
}

#[test]
fn every_build_gives_the_reference_bits_and_rows_are_batch_invariant() {
    let mut rng = Rng(17);
    for format in PlaneFormat::ALL {
        let per = format.block_values();
        for (rows, blocks, m) in [
            (1, 1, 1),
            (7, 2, 3),
            (17, 1, 9),
            (33, 3, 5),
            (257, 1, 2),
            (5, 1, 15),
            (9, 2, 14),
            (16, 1, 12),
        ] {
            let cols = blocks * per;
            let bytes = random_gguf(format, rows, cols, &mut rng);
            let x = activations(m, cols, &mut rng);
            let mut scratch = Q8Rows::default();
            for passes in [ActivationPasses::One, ActivationPasses::Two] {
                let reference = PlaneMatrix::for_isa(format, rows, cols, &bytes, Isa::Portable)
                    .expect("matrix")
                    .matmul(&x, m, &mut scratch, passes);
                for isa in Isa::available() {
                    let w = PlaneMatrix::for_isa(format, rows, cols, &bytes, isa).expect("matrix");
                    let got = w.matmul(&x, m, &mut scratch, passes);
                    assert_eq!(
                        bits(&got),
                        bits(&reference),
                        "{isa:?} {format:?} {rows}x{cols} m={m} {passes:?}"
                    );
                    for j in 0..m {
                        let xj = &x[j * cols..(j + 1) * cols];
                        let alone = w.matmul(xj, 1, &mut scratch, passes);
                        assert_eq!(
                            bits(&alone),
                            bits(&reference[j * rows..(j + 1) * rows]),
                            "{isa:?} {format:?} {passes:?}: row {j} alone = row {j} of {m}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn products_match_dequantize_then_f32_within_the_int8_bound() {
    let mut rng = Rng(29);
    for format in PlaneFormat::ALL {
        let (rows, cols, m) = (19, 2 * format.block_values().max(64), 4);
        let bytes = random_gguf(format, rows, cols, &mut rng);
        let w = PlaneMatrix::from_gguf(format, rows, cols, &bytes).expect("matrix");
        let deq = candle_values(format, rows, cols, &bytes);
        let x = activations(m, cols, &mut rng);
        let exact = w.matmul_f32(&x, m);
        let fast = w.matmul(&x, m, &mut Q8Rows::default(), ActivationPasses::One);
        let fine = w.matmul(&x, m, &mut Q8Rows::default(), ActivationPasses::Two);
        for r in 0..rows {
            let wr = &deq[r * cols..(r + 1) * cols];
            for j in 0..m {
                let xr = &x[j * cols..(j + 1) * cols];
                let dense: f64 = wr.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum();
                let scale: f64 = wr
                    .iter()
                    .zip(xr)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                let e = exact[j * rows + r] as f64;
                assert!(
                    (e - dense).abs() <= 1e-5 * scale + 1e-6,
                    "{format:?} [{j},{r}] f32 path {e} vs dense {dense}"
                );
                // 8-bit activations: at most half a step per value.
                let bound: f64 = wr
                    .chunks_exact(QK)
                    .zip(xr.chunks_exact(QK))
                    .map(|(wb, xb)| {
                        let d = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64 / 127.0;
                        wb.iter().map(|w| w.abs() as f64).sum::<f64>() * d * 0.5
                    })
                    .sum::<f64>()
                    * 1.05
                    + 1e-4 * scale
                    + 1e-5;
                let f = fast[j * rows + r] as f64;
                assert!(
                    (f - dense).abs() <= bound,
                    "{format:?} [{j},{r}]: int8 {f} vs dense {dense} (bound {bound})"
                );
                // Two passes: half a step of the residual, whose step is at
                // most ~1/222 of the first one's.
                let fine = fine[j * rows + r] as f64;
                assert!(
                    (fine - dense).abs() <= bound / 200.0 + 1e-4 * scale + 1e-5,
                    "{format:?} [{j},{r}]: int8x2 {fine} vs dense {dense} (bound {bound})"
                );
            }
        }
    }
}
