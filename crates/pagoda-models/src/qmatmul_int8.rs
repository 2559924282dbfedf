//! Block-quantized matrix products with **8-bit activations**, as llama.cpp
//! computes them: each activation row is quantized per 32-value block
//! (`d = max|x| / 127`, `q = round(x / d)`, like ggml's Q8_1, scales rounded
//! through f16 as ggml stores them), and each weight block meets it in an
//! integer dot product; only the per-block scale products are floating
//! point. Four to eight times less arithmetic than the f32-activation
//! kernels of [`crate::qmatmul`], for logits within ~0.1 of them.
//!
//! Batch invariance holds: a row is quantized on its own, and every output
//! element is the same sequence of operations (blocks in order, one
//! accumulator folded in a fixed order) whatever the number of rows. The
//! portable build here is the reference the AVX2 build
//! ([`crate::qmatmul_int8_avx2`]) is tested against.

use half::f16;

use crate::qmatmul::BlockFormat;

/// Values per block.
pub(crate) const QK: usize = 32;

/// Activation rows quantized to 8 bits per 32-value block.
#[derive(Debug, Clone, Default)]
pub struct Q8Rows {
    rows: usize,
    cols: usize,
    /// Quantized values, row-major.
    pub(crate) qs: Vec<i8>,
    /// Per block: the scale `d` (rounded through f16).
    pub(crate) d: Vec<f32>,
    /// Per block: `d · Σq` (rounded through f16), the Q4_1 offset's factor.
    pub(crate) s: Vec<f32>,
}

fn f16_round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

impl Q8Rows {
    /// Quantizes `rows` rows of `cols` values (a multiple of 32) into `self`,
    /// reusing its buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) {
        assert!(cols.is_multiple_of(QK) && x.len() == rows * cols);
        let blocks = rows * cols / QK;
        self.rows = rows;
        self.cols = cols;
        self.qs.resize(rows * cols, 0);
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        #[cfg(target_arch = "x86_64")]
        {
            if crate::qmatmul_int8_avx2::available() {
                // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                unsafe {
                    crate::qmatmul_int8_avx2::quantize(x, &mut self.qs, &mut self.d, &mut self.s)
                };
                return;
            }
        }
        for (((xb, qb), d), s) in x
            .chunks_exact(QK)
            .zip(self.qs.chunks_exact_mut(QK))
            .zip(&mut self.d)
            .zip(&mut self.s)
        {
            (*d, *s) = quantize_block(xb, qb);
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Quantizes one block; returns its `(d, s)`. Rounds half to even, like the AVX2 build.
pub(crate) fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        *q = r;
        sum += r as i32;
    }
    (f16_round(d), f16_round(d * sum as f32))
}

/// One weight block's integer dot product with 32 quantized activations.
fn block_isum(format: BlockFormat, b: &[u8], q: &[i8]) -> i32 {
    match format {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            let (qs, offset) = match format {
                BlockFormat::Q4_0 => (&b[2..18], 8),
                _ => (&b[4..20], 0),
            };
            let mut s = 0i32;
            for j in 0..16 {
                s += ((qs[j] & 0x0F) as i32 - offset) * q[j] as i32;
                s += ((qs[j] >> 4) as i32 - offset) * q[j + 16] as i32;
            }
            s
        }
        BlockFormat::Q8_0 => b[2..34]
            .iter()
            .zip(q)
            .map(|(&w, &x)| (w as i8) as i32 * x as i32)
            .sum(),
    }
}

fn read_f16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The portable dot product of one weight row with one quantized
/// activation row (`first_block` indexes the row's scales).
pub(crate) fn dot_row_generic(
    format: BlockFormat,
    w: &[u8],
    q: &[i8],
    d: &[f32],
    s: &[f32],
) -> f32 {
    let bb = format.block_bytes();
    let mut acc = 0.0f32;
    let mut offset = 0.0f32;
    for (((b, qb), &dx), &sx) in w.chunks_exact(bb).zip(q.chunks_exact(QK)).zip(d).zip(s) {
        let dw = read_f16(b);
        acc += (dw * dx) * block_isum(format, b, qb) as f32;
        if format == BlockFormat::Q4_1 {
            offset += read_f16(&b[2..]) * sx;
        }
    }
    acc + offset
}

/// `out[r * m + j] = w_r · x_j` for whole weight rows `w` and all rows of
/// `x`, on the widest build the CPU supports.
pub(crate) fn matmul_rows(format: BlockFormat, w: &[u8], x: &Q8Rows, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::qmatmul_int8_avx2::available() {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            unsafe { crate::qmatmul_int8_avx2::matmul_rows(format, w, x, out) };
            return;
        }
    }
    let (m, cols) = (x.rows, x.cols);
    let blocks = cols / QK;
    let row_bytes = blocks * format.block_bytes();
    for (wr, o) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
        for (j, o) in o.iter_mut().enumerate() {
            let bs = j * blocks..(j + 1) * blocks;
            *o = dot_row_generic(
                format,
                wr,
                &x.qs[j * cols..(j + 1) * cols],
                &x.d[bs.clone()],
                &x.s[bs],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmatmul::QuantMatrix;

    /// A small xorshift generator: tests need no external randomness.
    struct Rng(u32);

    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }

        fn f32(&mut self) -> f32 {
            (self.next() % 20_001) as f32 / 10_000.0 - 1.0
        }
    }

    fn random_blocks(format: BlockFormat, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
        let bb = format.block_bytes();
        let mut data = vec![0u8; rows * cols / QK * bb];
        for block in data.chunks_exact_mut(bb) {
            for b in block.iter_mut() {
                *b = rng.next() as u8;
            }
            let d = f16::from_f32(0.001 + (rng.next() % 1000) as f32 * 5e-5);
            block[..2].copy_from_slice(&d.to_le_bytes());
            if format == BlockFormat::Q4_1 {
                let m = f16::from_f32(rng.f32() * 0.1);
                block[2..4].copy_from_slice(&m.to_le_bytes());
            }
        }
        data
    }

    fn activations(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
        let mut x: Vec<f32> = (0..rows * cols).map(|_| rng.f32() * 3.0).collect();
        // An all-zero block and a block with one outlier.
        x[..QK].fill(0.0);
        if x.len() > 2 * QK {
            x[QK + 5] = 40.0;
        }
        x
    }

    const FORMATS: [BlockFormat; 3] = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0];

    #[test]
    fn quantization_matches_the_portable_reference_bit_for_bit() {
        let mut rng = Rng(7);
        let x = activations(5, 96, &mut rng);
        let mut fast = Q8Rows::default();
        fast.quantize(&x, 5, 96);
        for (b, xb) in x.chunks_exact(QK).enumerate() {
            let mut q = [0i8; QK];
            let (d, s) = quantize_block(xb, &mut q);
            assert_eq!(&fast.qs[b * QK..(b + 1) * QK], &q, "block {b}");
            assert_eq!((fast.d[b], fast.s[b]), (d, s), "block {b}");
            let err = xb
                .iter()
                .zip(q)
                .map(|(v, q)| (v - d * q as f32).abs())
                .fold(0.0f32, f32::max);
            // Half a step, plus the scale's rounding through f16 (2^-11 relative) at 127.
            assert!(
                err <= d * (0.5 + 127.0 / 2048.0) + 1e-6,
                "block {b}: error {err} for d {d}"
            );
        }
    }

    #[test]
    fn the_fast_build_matches_the_portable_dot_products() {
        let mut rng = Rng(11);
        for format in FORMATS {
            for (rows, cols, m) in [(3, 32, 1), (5, 96, 3), (7, 160, 5), (2, 64, 8), (9, 576, 6)] {
                let w = random_blocks(format, rows, cols, &mut rng);
                let x = activations(m, cols, &mut rng);
                let mut q = Q8Rows::default();
                q.quantize(&x, m, cols);
                let mut out = vec![0.0f32; rows * m];
                matmul_rows(format, &w, &q, &mut out);
                let row_bytes = cols / QK * format.block_bytes();
                let blocks = cols / QK;
                for r in 0..rows {
                    for j in 0..m {
                        let bs = j * blocks..(j + 1) * blocks;
                        let want = dot_row_generic(
                            format,
                            &w[r * row_bytes..(r + 1) * row_bytes],
                            &q.qs[j * cols..(j + 1) * cols],
                            &q.d[bs.clone()],
                            &q.s[bs],
                        );
                        let got = out[r * m + j];
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{format:?} {rows}x{cols} m={m} [{r},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn int8_products_stay_close_to_f32_ones_and_are_batch_invariant() {
        let mut rng = Rng(23);
        let (rows, cols, m) = (37, 320, 7);
        for format in FORMATS {
            let w = random_blocks(format, rows, cols, &mut rng);
            let matrix = QuantMatrix::new(format, rows, cols, w).expect("matrix");
            let x = activations(m, cols, &mut rng);
            let exact = matrix.matmul(&x, m);
            let mut scratch = Q8Rows::default();
            let fast = matrix.matmul_int8(&x, m, &mut scratch);
            let mut deq = vec![0.0f32; cols];
            for r in 0..rows {
                matrix.dequantize_row(r, &mut deq);
                for j in 0..m {
                    // The error of 8-bit activations: at most half a step per value.
                    let xr = &x[j * cols..(j + 1) * cols];
                    let bound: f32 = deq
                        .chunks_exact(QK)
                        .zip(xr.chunks_exact(QK))
                        .map(|(wb, xb)| {
                            let d = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
                            wb.iter().map(|w| w.abs()).sum::<f32>() * d * 0.5
                        })
                        .sum::<f32>()
                        * 1.05
                        + 1e-3;
                    let (e, f) = (exact[j * rows + r], fast[j * rows + r]);
                    assert!(
                        (e - f).abs() <= bound,
                        "{format:?} [{j},{r}]: {f} vs {e} (bound {bound})"
                    );
                }
            }
            for j in 0..m {
                let alone = matrix.matmul_int8(&x[j * cols..(j + 1) * cols], 1, &mut scratch);
                assert_eq!(
                    alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    fast[j * rows..(j + 1) * rows]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    "{format:?}: row {j} alone equals row {j} in a batch of {m}, bit for bit"
                );
            }
        }
    }
}
