//! Activations quantized to **8 bits** per 32-value block, as llama.cpp
//! does before its integer dot products: `d = max|x| / 127`,
//! `q = round(x / d)` (ties to even), plus `s = d · Σq` for Q4_1's offset
//! (like ggml's Q8_1), scales rounded through f16 as ggml stores them. The
//! products themselves are [`crate::kernels::panel`]'s. A row is quantized on
//! its own, so batch invariance holds. The portable quantizer here is the
//! reference the AVX2 one (`avx2.rs`, run at the [`crate::kernels::Isa::Avx2`]
//! level and above) is tested against.

use half::f16;

use crate::kernels::block_format::QK;
use crate::kernels::columns_out::ColumnsOut;
use crate::kernels::Isa;

mod avx2;

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
    /// Per block: `Σq`, exact (the correction of unsigned-weight products).
    pub(crate) sums: Vec<i32>,
    /// Per block: `Σq` over its first 16 values, exact (for weights with a
    /// scale per 16 values).
    pub(crate) sums_lo: Vec<i32>,
    /// Per block: `(Σq as f32) · d`, and the same over each half (the
    /// factors of integer minimums, computed once instead of per weight
    /// row).
    pub(crate) qd: Vec<[f32; 3]>,
    /// The rows and their residuals, interleaved, before
    /// [`Q8Rows::quantize_with_residuals`] quantizes them.
    split: Vec<f32>,
}

/// How many 8-bit rows stand for one activation row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActivationPasses {
    /// One, as llama.cpp: a relative error of up to 1/254 of the block's
    /// largest value per element.
    #[default]
    One,
    /// Two: the row, then what its quantization left out, quantized again
    /// (about 15 bits: an error of up to 1/64,516 of the block's largest
    /// value), and the two products added. Twice the integer arithmetic;
    /// the weights are still read once.
    Two,
}

/// `T` consecutive rows of a [`Q8Rows`] for a kernel tile: every field of
/// the `T` rows as one slice, read by [`Q8Tile::block`] without a bounds
/// check per field.
pub(crate) struct Q8Tile<'a, const T: usize> {
    cols: usize,
    qs: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
    sums: &'a [i32],
    sums_lo: &'a [i32],
    qd: &'a [[f32; 3]],
}

/// One 32-value block of one activation row, as a kernel reads it.
pub(crate) struct Q8Block<'a> {
    /// The 32 quantized values.
    pub(crate) qs: &'a [i8],
    /// The scale `d`.
    pub(crate) d: f32,
    /// `d · Σq` rounded through f16 (Q4_1's and Q5_1's offset factor).
    pub(crate) s: f32,
    /// `Σq`, exact.
    pub(crate) sum: i32,
    /// `Σq` over the first 16 values, exact.
    pub(crate) sum_lo: i32,
    /// `(Σq as f32) · d`, and over each half.
    pub(crate) qd: [f32; 3],
}

impl<'a, const T: usize> Q8Tile<'a, T> {
    /// Row `k`'s block `b`.
    #[inline(always)]
    pub(crate) fn block(&self, k: usize, b: usize) -> Q8Block<'a> {
        let nb = self.cols / QK;
        assert!(k < T && b < nb);
        let at = k * nb + b;
        // SAFETY: every field holds `T` rows of `nb` blocks (of `QK` values
        // for `qs`), and `k < T`, `b < nb` are asserted just above.
        unsafe {
            Q8Block {
                qs: self
                    .qs
                    .get_unchecked(k * self.cols + b * QK..k * self.cols + (b + 1) * QK),
                d: *self.d.get_unchecked(at),
                s: *self.s.get_unchecked(at),
                sum: *self.sums.get_unchecked(at),
                sum_lo: *self.sums_lo.get_unchecked(at),
                qd: *self.qd.get_unchecked(at),
            }
        }
    }
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
        self.sums.resize(blocks, 0);
        self.sums_lo.resize(blocks, 0);
        self.qd.resize(blocks, [0.0; 3]);
        #[cfg(target_arch = "x86_64")]
        {
            if Isa::best() >= Isa::Avx2 {
                debug_assert!(avx2::available());
                // SAFETY: the CPU supports AVX2 and FMA: the level includes
                // them, and `Isa::best` only picks levels this CPU runs.
                unsafe {
                    avx2::quantize(
                        x,
                        &mut self.qs,
                        &mut self.d,
                        &mut self.s,
                        (&mut self.sums, &mut self.sums_lo),
                    )
                };
                self.derive_sum_products();
                return;
            }
        }
        for (((((xb, qb), d), s), sum), sum_lo) in x
            .chunks_exact(QK)
            .zip(self.qs.chunks_exact_mut(QK))
            .zip(&mut self.d)
            .zip(&mut self.s)
            .zip(&mut self.sums)
            .zip(&mut self.sums_lo)
        {
            (*d, *s, *sum) = quantize_block(xb, qb);
            *sum_lo = qb[..QK / 2].iter().map(|&v| v as i32).sum();
        }
        self.derive_sum_products();
    }

    /// Quantizes `rows` rows of `cols` values into `2 · rows` rows: row
    /// `2j` is row `j` quantized as [`Q8Rows::quantize`] does, row `2j + 1`
    /// its residual `x − q·d` quantized the same way, so that the two
    /// products summed are the product with the row to about 15 bits. The
    /// residual row's `s` also carries what rounding `d · Σq` through f16
    /// left out of row `2j`'s, so the offsets of Q4_1 and Q5_1 sum exactly
    /// too.
    pub fn quantize_with_residuals(&mut self, x: &[f32], rows: usize, cols: usize) {
        self.quantize(x, rows, cols);
        let mut split = std::mem::take(&mut self.split);
        split.clear();
        split.reserve(2 * rows * cols);
        for (j, row) in x.chunks_exact(cols).enumerate() {
            split.extend_from_slice(row);
            let q = &self.qs[j * cols..(j + 1) * cols];
            let d = &self.d[j * cols / QK..(j + 1) * cols / QK];
            split.extend(
                row.iter()
                    .zip(q)
                    .enumerate()
                    .map(|(i, (&v, &q))| v - q as f32 * d[i / QK]),
            );
        }
        self.quantize(&split, 2 * rows, cols);
        // Row `2j` is row `j` quantized again, the same bits: what rounding
        // its `d · Σq` through f16 left out goes into row `2j + 1`'s `s`.
        let nb = cols / QK;
        for j in 0..rows {
            let (row, residual) = ((2 * j) * nb, (2 * j + 1) * nb);
            for b in 0..nb {
                let lost = self.d[row + b] * self.sums[row + b] as f32 - self.s[row + b];
                self.s[residual + b] = self.d[residual + b] * self.sums[residual + b] as f32 + lost;
            }
        }
        self.split = split;
    }

    /// Fills [`Self::qd`] from the sums and scales.
    fn derive_sum_products(&mut self) {
        for (((qd, &d), &all), &lo) in self
            .qd
            .iter_mut()
            .zip(&self.d)
            .zip(&self.sums)
            .zip(&self.sums_lo)
        {
            *qd = [all as f32 * d, lo as f32 * d, (all - lo) as f32 * d];
        }
    }

    /// Rows `j0 .. j0 + T`: what a kernel tile reads.
    #[inline(always)]
    pub(crate) fn tile<const T: usize>(&self, j0: usize) -> Q8Tile<'_, T> {
        let (cols, nb) = (self.cols, self.cols / QK);
        assert!(j0 + T <= self.rows);
        let rows = j0 * nb..(j0 + T) * nb;
        Q8Tile {
            cols,
            qs: &self.qs[j0 * cols..(j0 + T) * cols],
            d: &self.d[rows.clone()],
            s: &self.s[rows.clone()],
            sums: &self.sums[rows.clone()],
            sums_lo: &self.sums_lo[rows.clone()],
            qd: &self.qd[rows],
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

/// A weight matrix multiplied with 8-bit activations: stored in panels of
/// [`crate::kernels::panel::panel_width`] rows for one build ([`Isa`]).
/// [`crate::kernels::panel::PanelMatrix`] (Q4_0, Q4_1, Q8_0) and
/// [`crate::kernels::plane::PlaneMatrix`] (K-quants, Q5_0, Q5_1) are such
/// matrices; products of several with the same input run in one pass
/// ([`matmul_group`]).
pub trait Int8Weights: Sync {
    /// Number of rows (outputs).
    fn rows(&self) -> usize;
    /// Number of columns (inputs).
    fn cols(&self) -> usize;
    /// The build the panels are laid out for.
    fn isa(&self) -> Isa;
    /// `out[j, r] = w_{first + r} · x_j` for the `out.rows()` weight rows
    /// from `first` (a multiple of the panel width) and every row of `x`.
    #[doc(hidden)]
    fn panels(&self, first: usize, x: &Q8Rows, out: ColumnsOut<'_>);
}

/// Products of several 8-bit-activation matrices with the same `m` rows of
/// `x` in one parallel pass, the activations quantized once into `scratch`
/// (in one or two passes): returns each `[m, rows]`. Every matrix must have `x`'s width and one
/// build.
pub fn matmul_group(
    mats: &[&dyn Int8Weights],
    x: &[f32],
    m: usize,
    scratch: &mut Q8Rows,
    passes: ActivationPasses,
) -> Vec<Vec<f32>> {
    let Some((cols, isa)) = mats.first().map(|w| (w.cols(), w.isa())) else {
        return Vec::new();
    };
    assert!(mats.iter().all(|w| w.cols() == cols && w.isa() == isa) && x.len() == m * cols);
    let quantized_rows = match passes {
        ActivationPasses::One => {
            scratch.quantize(x, m, cols);
            m
        }
        ActivationPasses::Two => {
            scratch.quantize_with_residuals(x, m, cols);
            2 * m
        }
    };
    let q: &Q8Rows = scratch;
    let parts: Vec<usize> = mats.iter().map(|w| w.rows()).collect();
    let width = crate::kernels::panel::panel_width(isa);
    let outs = crate::kernels::columns_out::parallel_columns(
        &parts,
        width,
        quantized_rows,
        |p, first, out| {
            mats[p].panels(first, q, out);
        },
    );
    match passes {
        ActivationPasses::One => outs,
        ActivationPasses::Two => outs
            .into_iter()
            .zip(&parts)
            .map(|(mut out, &n)| {
                // Row `j` of the result is rows `2j` and `2j + 1` added, written
                // in place: for `j ≥ 1` they lie past row `j`.
                for j in 0..m {
                    for i in 0..n {
                        out[j * n + i] = out[2 * j * n + i] + out[(2 * j + 1) * n + i];
                    }
                }
                out.truncate(m * n);
                out
            })
            .collect(),
    }
}

/// Quantizes one block; returns its `(d, s, Σq)`. Rounds half to even,
/// like the AVX2 build.
pub(crate) fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32, i32) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        *q = r;
        sum += r as i32;
    }
    (f16_round(d), f16_round(d * sum as f32), sum)
}

/// Random weights and activations for the kernels' tests.
#[cfg(test)]
pub(crate) mod test_data {
    use half::f16;

    use super::QK;
    use crate::kernels::block_format::BlockFormat;
    /// A small xorshift generator: tests need no external randomness.
    pub(crate) struct Rng(pub(crate) u32);

    impl Rng {
        pub(crate) fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }

        pub(crate) fn f32(&mut self) -> f32 {
            (self.next() % 20_001) as f32 / 10_000.0 - 1.0
        }
    }

    /// `rows × cols` random weights in `format`'s GGUF blocks, with sane scales.
    pub(crate) fn random_blocks(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        rng: &mut Rng,
    ) -> Vec<u8> {
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

    /// Random activations with an all-zero block and a block with one outlier.
    pub(crate) fn activations(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
        let mut x: Vec<f32> = (0..rows * cols).map(|_| rng.f32() * 3.0).collect();
        x[..QK].fill(0.0);
        if x.len() > 2 * QK {
            x[QK + 5] = 40.0;
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::test_data::{activations, Rng};
    use super::*;

    #[test]
    fn odd_values_quantize_alike_in_every_build_and_stay_in_range() {
        let mut x = vec![0.5f32; 6 * QK];
        x[3] = f32::NAN;
        x[QK + 1] = f32::INFINITY;
        x[2 * QK + 7] = f32::NEG_INFINITY;
        x[3 * QK..4 * QK].fill(1e-40); // subnormal: 1/d overflows
        x[4 * QK + 2] = f32::MAX;
        x[5 * QK..].fill(f32::NAN);
        let mut fast = Q8Rows::default();
        fast.quantize(&x, 1, 6 * QK);
        for (b, xb) in x.chunks_exact(QK).enumerate() {
            let mut q = [0i8; QK];
            let (d, s, sum) = quantize_block(xb, &mut q);
            assert_eq!(&fast.qs[b * QK..(b + 1) * QK], &q, "block {b}");
            assert_eq!(fast.d[b].to_bits(), d.to_bits(), "block {b}");
            assert_eq!(fast.s[b].to_bits(), s.to_bits(), "block {b}");
            assert_eq!(fast.sums[b], sum, "block {b}");
            let lo: i32 = q[..QK / 2].iter().map(|&v| v as i32).sum();
            assert_eq!(fast.sums_lo[b], lo, "block {b}");
            assert!(q.iter().all(|&v| v != i8::MIN), "block {b}: {q:?}");
        }
    }

    #[test]
    fn quantization_matches_the_portable_reference_bit_for_bit() {
        let mut rng = Rng(7);
        let x = activations(5, 96, &mut rng);
        let mut fast = Q8Rows::default();
        fast.quantize(&x, 5, 96);
        for (b, xb) in x.chunks_exact(QK).enumerate() {
            let mut q = [0i8; QK];
            let (d, s, sum) = quantize_block(xb, &mut q);
            assert_eq!(&fast.qs[b * QK..(b + 1) * QK], &q, "block {b}");
            assert_eq!(
                (fast.d[b], fast.s[b], fast.sums[b]),
                (d, s, sum),
                "block {b}"
            );
            assert_eq!(sum, q.iter().map(|&v| v as i32).sum::<i32>(), "block {b}");
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
}
