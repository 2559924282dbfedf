//! pagoda's own matrix-times-vector kernels for GGUF block-quantized weights
//! (Q4_0, Q4_1, Q8_0) with **f32 activations**: each weight block is
//! dequantized on the fly and multiplied with the activations in f32, so the
//! result matches a dense f32 reference (Hugging Face transformers on the
//! dequantized GGUF) up to summation order. (candle's and llama.cpp's CPU
//! paths first quantize the activations to 8 bits, which moves logits by up
//! to ~0.1 and flips near-tied greedy choices.)
//!
//! Every output element is computed by the same sequence of operations
//! whatever the number of rows in the batch or the thread that runs it, so
//! results are batch-invariant. The portable build (also the reference the
//! SIMD build is tested against) keeps sums in eight independent lanes folded
//! in a fixed order; the AVX2 build is in `avx2.rs`, run at
//! the [`crate::kernels::Isa::Avx2`] level and above. Block
//! layouts follow ggml's `ggml-common.h`.

use std::sync::{Mutex, OnceLock};

use half::f16;

use crate::kernels::block_format::BlockFormat;
use crate::kernels::block_format::QK;
use crate::kernels::Isa;

mod avx2;

/// Lanes of the partial sums.
const LANES: usize = 8;

/// A `[rows, cols]` matrix in GGUF blocks, row-major (each row is `cols / 32` blocks).
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

/// Why raw bytes do not form a matrix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(String);

impl LayoutError {
    /// An error with this reason.
    pub(crate) fn new(reason: String) -> Self {
        Self(reason)
    }
}

fn read_f16(bytes: &[u8]) -> f32 {
    half(f16_table(), bytes[0], bytes[1])
}

impl QuantMatrix {
    /// Wraps raw block bytes of a `[rows, cols]` matrix.
    pub fn new(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self, LayoutError> {
        if !cols.is_multiple_of(QK) {
            return Err(LayoutError(format!(
                "{cols} columns is not a multiple of the block size {QK}"
            )));
        }
        let expected = rows * cols / QK * format.block_bytes();
        if data.len() != expected {
            return Err(LayoutError(format!(
                "{} bytes for a {rows}x{cols} {format:?} matrix, expected {expected}",
                data.len()
            )));
        }
        Ok(Self {
            format,
            rows,
            cols,
            data,
        })
    }

    /// Number of rows (outputs of a linear layer).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs of a linear layer).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    fn row_bytes(&self) -> usize {
        self.cols / QK * self.format.block_bytes()
    }

    /// Row `r`'s blocks, as stored in the GGUF file.
    pub fn row_data(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` dequantized into `out` (`cols` values): an embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let bb = self.format.block_bytes();
        for (block, out) in self
            .row_data(r)
            .chunks_exact(bb)
            .zip(out.chunks_exact_mut(QK))
        {
            dequantize_block(self.format, block, out);
        }
    }

    /// `y = x · selfᵀ` for `m` rows of `x` (each `cols` long); returns `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        matmul_group(&[self], x, m).pop().unwrap_or_default()
    }
}

/// A dense `[rows, cols]` f32 matrix (`cols` a multiple of 32) multiplied
/// with the same per-element operations as the block kernels, so that dense
/// checkpoints are batch-invariant too.
#[derive(Debug, Clone)]
pub struct DenseMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl DenseMatrix {
    /// Wraps `data`, `rows * cols` values row-major.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, LayoutError> {
        if !cols.is_multiple_of(QK) || data.len() != rows * cols {
            return Err(LayoutError(format!(
                "{} values for a {rows}x{cols} matrix whose columns must be a multiple of {QK}",
                data.len()
            )));
        }
        Ok(Self { rows, cols, data })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// All values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// `y = x · selfᵀ` for `m` rows of `x`; returns `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), m * self.cols);
        let cols = self.cols;
        parallel_rows(self.rows, m, |first, rows, out| {
            let w = &self.data[first * cols..(first + rows) * cols];
            dense_matmul_rows(w, x, cols, m, out);
        })
    }
}

/// Runs `task(first_row, rows, out)` over chunks of `n` weight rows in
/// parallel, each writing `out[r * m + j]`, and returns the result as `[m, n]`.
fn parallel_rows(n: usize, m: usize, task: impl Fn(usize, usize, &mut [f32]) + Sync) -> Vec<f32> {
    parallel_parts(&[n], 1, m, |_, first, rows, out| task(first, rows, out))
        .pop()
        .unwrap_or_default()
}

/// [`parallel_rows`] for several matrices at once (`parts[p]` rows each) in
/// one fork-join: `task(part, first_row, rows, out)`, with `first_row` and
/// `rows` multiples of `align` (a last chunk is padded up to one: its output
/// rows past the part's end are dropped). Returns each part's result as
/// `[m, parts[p]]`.
pub(crate) fn parallel_parts(
    parts: &[usize],
    align: usize,
    m: usize,
    task: impl Fn(usize, usize, usize, &mut [f32]) + Sync,
) -> Vec<Vec<f32>> {
    let team = crate::kernels::team::Team::global();
    let padded: Vec<usize> = parts.iter().map(|&n| n.next_multiple_of(align)).collect();
    let total: usize = padded.iter().sum();
    let mut outs: Vec<Vec<f32>> = padded.iter().map(|&n| vec![0.0f32; n * m]).collect();
    let split = crate::kernels::columns_out::rows_per_task(total, m, align, team.threads());
    if let Some(rows_per_task) = split {
        let chunks: Vec<Mutex<(usize, usize, &mut [f32])>> = outs
            .iter_mut()
            .enumerate()
            .flat_map(|(p, out)| {
                out.chunks_mut(rows_per_task * m)
                    .enumerate()
                    .map(move |(i, chunk)| Mutex::new((p, i * rows_per_task, chunk)))
            })
            .collect();
        team.run(chunks.len(), &|i| {
            let mut chunk = chunks[i].lock().unwrap_or_else(|e| e.into_inner());
            let (p, first, ref mut out) = *chunk;
            let rows = out.len() / m;
            task(p, first, rows, out);
        });
    } else {
        for (p, (out, &n)) in outs.iter_mut().zip(&padded).enumerate() {
            task(p, 0, n, out);
        }
    }
    outs.into_iter()
        .zip(parts)
        .map(|(out_t, &n)| transpose(out_t, n, m))
        .collect()
}

/// The first `n` rows of `[n', m]` (`n' >= n`) as `[m, n]`.
fn transpose(mut out_t: Vec<f32>, n: usize, m: usize) -> Vec<f32> {
    if m == 1 {
        // `[n, 1]` is already `[1, n]`.
        out_t.truncate(n);
        return out_t;
    }
    let mut out = vec![0.0f32; m * n];
    for (r, col) in out_t.chunks_exact(m).take(n).enumerate() {
        for (j, &v) in col.iter().enumerate() {
            out[j * n + r] = v;
        }
    }
    out
}

/// Products of several block matrices with the same `m` activation rows in
/// one parallel pass (the activations prepared once): returns each
/// `[m, rows]`. Every matrix must have `x`'s width.
pub fn matmul_group(mats: &[&QuantMatrix], x: &[f32], m: usize) -> Vec<Vec<f32>> {
    let Some(cols) = mats.first().map(|q| q.cols) else {
        return Vec::new();
    };
    assert!(mats.iter().all(|q| q.cols == cols) && x.len() == m * cols);
    let parts: Vec<usize> = mats.iter().map(|q| q.rows).collect();
    let xsums: Vec<f32> = x.chunks_exact(QK).map(sum_block).collect();
    parallel_parts(&parts, 1, m, |p, first, rows, out| {
        let w = mats[p];
        let bytes = w.row_bytes();
        let data = &w.data[first * bytes..(first + rows) * bytes];
        matmul_rows(w.format, data, x, &xsums, cols, m, out);
    })
}

fn sum_block(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for c in x.chunks_exact(LANES) {
        for k in 0..LANES {
            lanes[k] += c[k];
        }
    }
    fold(lanes)
}

fn fold(lanes: [f32; LANES]) -> f32 {
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

pub(crate) fn dequantize_block(format: BlockFormat, b: &[u8], out: &mut [f32]) {
    let d = read_f16(b);
    match format {
        BlockFormat::Q4_0 => {
            for j in 0..16 {
                out[j] = d * ((b[2 + j] & 0x0F) as f32 - 8.0);
                out[j + 16] = d * ((b[2 + j] >> 4) as f32 - 8.0);
            }
        }
        BlockFormat::Q4_1 => {
            let m = read_f16(&b[2..]);
            for j in 0..16 {
                out[j] = d * (b[4 + j] & 0x0F) as f32 + m;
                out[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
            }
        }
        BlockFormat::Q8_0 => {
            for j in 0..QK {
                out[j] = d * (b[2 + j] as i8) as f32;
            }
        }
    }
}

/// Exact f16 → f32 conversions of every bit pattern (256 KiB, built once).
pub(crate) type F16Table = [f32; 1 << 16];

pub(crate) fn f16_table() -> &'static F16Table {
    static TABLE: OnceLock<Box<F16Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0.0f32; 1 << 16]);
        for (bits, v) in t.iter_mut().enumerate() {
            *v = f16::from_bits(bits as u16).to_f32();
        }
        t
    })
}

#[inline(always)]
fn half(t: &F16Table, lo: u8, hi: u8) -> f32 {
    t[u16::from_le_bytes([lo, hi]) as usize]
}

/// Q4_0 / Q4_1 lanes: element `j` of a block is the low nibble of `qs[j]`
/// and element `j + 16` its high nibble; lane `k` sums elements
/// `k, k+8, k+16, k+24` in that order.
#[inline(always)]
fn nibble_lanes(qs: &[u8; 16], x: &[f32; QK]) -> [f32; LANES] {
    let mut p = [0.0f32; LANES];
    for k in 0..LANES {
        let (a, b) = (qs[k], qs[k + 8]);
        p[k] = x[k] * (a & 0x0F) as f32
            + x[k + 8] * (b & 0x0F) as f32
            + x[k + 16] * (a >> 4) as f32
            + x[k + 24] * (b >> 4) as f32;
    }
    p
}

#[inline(always)]
fn dot_q4_0(t: &F16Table, w: &[[u8; 18]], x: &[[f32; QK]], xsums: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut offset = 0.0f32;
    for ((b, xb), &xs) in w.iter().zip(x).zip(xsums) {
        let [d0, d1, qs @ ..] = b;
        let d = half(t, *d0, *d1);
        offset += -8.0 * d * xs;
        let p = nibble_lanes(qs, xb);
        for k in 0..LANES {
            acc[k] += d * p[k];
        }
    }
    fold(acc) + offset
}

#[inline(always)]
fn dot_q4_1(t: &F16Table, w: &[[u8; 20]], x: &[[f32; QK]], xsums: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut offset = 0.0f32;
    for ((b, xb), &xs) in w.iter().zip(x).zip(xsums) {
        let [d0, d1, m0, m1, qs @ ..] = b;
        let d = half(t, *d0, *d1);
        offset += half(t, *m0, *m1) * xs;
        let p = nibble_lanes(qs, xb);
        for k in 0..LANES {
            acc[k] += d * p[k];
        }
    }
    fold(acc) + offset
}

#[inline(always)]
fn dot_q8_0(t: &F16Table, w: &[[u8; 34]], x: &[[f32; QK]]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (b, xb) in w.iter().zip(x) {
        let [d0, d1, qs @ ..] = b;
        let d = half(t, *d0, *d1);
        let mut p = [0.0f32; LANES];
        for k in 0..LANES {
            p[k] = xb[k] * (qs[k] as i8) as f32
                + xb[k + 8] * (qs[k + 8] as i8) as f32
                + xb[k + 16] * (qs[k + 16] as i8) as f32
                + xb[k + 24] * (qs[k + 24] as i8) as f32;
        }
        for k in 0..LANES {
            acc[k] += d * p[k];
        }
    }
    fold(acc)
}

/// Dot product of one quantized row with one activation row.
#[inline(always)]
fn dot_row_generic(format: BlockFormat, w: &[u8], x: &[f32], xsums: &[f32]) -> f32 {
    let t = f16_table();
    let (x, _) = x.as_chunks::<QK>();
    match format {
        BlockFormat::Q4_0 => dot_q4_0(t, w.as_chunks::<18>().0, x, xsums),
        BlockFormat::Q4_1 => dot_q4_1(t, w.as_chunks::<20>().0, x, xsums),
        BlockFormat::Q8_0 => dot_q8_0(t, w.as_chunks::<34>().0, x),
    }
}

/// The portable build of [`DenseMatrix`]'s product: four accumulators of
/// eight lanes per output, folded in the AVX2 build's order.
fn dense_dot_generic(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [[0.0f32; LANES]; 4];
    for (wb, xb) in w.chunks_exact(QK).zip(x.chunks_exact(QK)) {
        for (k, a) in acc.iter_mut().enumerate() {
            for l in 0..LANES {
                a[l] += wb[k * LANES + l] * xb[k * LANES + l];
            }
        }
    }
    let mut v = [0.0f32; LANES];
    for l in 0..LANES {
        v[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
    let s = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let s = [s[0] + s[2], s[1] + s[3]];
    s[0] + s[1]
}

fn dense_matmul_rows(w: &[f32], x: &[f32], cols: usize, m: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if Isa::best() >= Isa::Avx2 {
            debug_assert!(avx2::available());
            let x = avx2::Activations {
                data: x,
                rows: m,
                cols,
            };
            // SAFETY: the CPU supports AVX2 and FMA: the level includes
            // them, and `Isa::best` only picks levels this CPU runs.
            unsafe { avx2::dense_matmul_rows(w, x, out) };
            return;
        }
    }
    for (wr, o) in w.chunks_exact(cols).zip(out.chunks_exact_mut(m)) {
        for (j, o) in o.iter_mut().enumerate() {
            *o = dense_dot_generic(wr, &x[j * cols..(j + 1) * cols]);
        }
    }
}

/// `out[r * m + j] = w_r · x_j` for a run of whole weight rows `w`, on the
/// widest build the CPU supports.
fn matmul_rows(
    format: BlockFormat,
    w: &[u8],
    x: &[f32],
    xsums: &[f32],
    cols: usize,
    m: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if Isa::best() >= Isa::Avx2 {
            debug_assert!(avx2::available());
            let mut scratch = Vec::new();
            let x = avx2::Activations {
                data: x,
                rows: m,
                cols,
            };
            // SAFETY: the CPU supports AVX2 and FMA: the level includes
            // them, and `Isa::best` only picks levels this CPU runs.
            unsafe { avx2::matmul_rows(format, f16_table(), w, x, out, &mut scratch) };
            return;
        }
    }
    let blocks = cols / QK;
    let row_bytes = blocks * format.block_bytes();
    for (wr, o) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
        for (j, o) in o.iter_mut().enumerate() {
            let xr = &x[j * cols..(j + 1) * cols];
            *o = dot_row_generic(format, wr, xr, &xsums[j * blocks..(j + 1) * blocks]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Quantizes with candle (ggml's reference quantizers) and returns our
    /// matrix plus candle's own dequantization.
    fn quantized(
        format: BlockFormat,
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
    ) -> (QuantMatrix, Vec<f32>) {
        let w =
            Tensor::from_vec(values(rows * cols, 7), (rows, cols), &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&w, dtype).expect("quantize");
        let deq = q
            .dequantize(&Device::Cpu)
            .expect("dequantize")
            .flatten_all()
            .expect("flat")
            .to_vec1()
            .expect("vec");
        let m = QuantMatrix::new(format, rows, cols, q.data().expect("bytes").into_owned())
            .expect("layout");
        (m, deq)
    }

    const CASES: [(BlockFormat, GgmlDType); 3] = [
        (BlockFormat::Q4_0, GgmlDType::Q4_0),
        (BlockFormat::Q4_1, GgmlDType::Q4_1),
        (BlockFormat::Q8_0, GgmlDType::Q8_0),
    ];

    #[test]
    fn dequantization_matches_candle() {
        for (format, dtype) in CASES {
            let (m, deq) = quantized(format, dtype, 3, 64);
            let mut row = vec![0.0; 64];
            for r in 0..3 {
                m.dequantize_row(r, &mut row);
                assert_eq!(row, deq[r * 64..(r + 1) * 64], "{format:?} row {r}");
            }
        }
    }

    #[test]
    fn matmul_matches_f64_reference_on_dequantized_weights() {
        let (rows, cols, batch) = (37, 96, 5);
        for (format, dtype) in CASES {
            let (m, deq) = quantized(format, dtype, rows, cols);
            let x = values(batch * cols, 3);
            let y = m.matmul(&x, batch);
            for j in 0..batch {
                for r in 0..rows {
                    let want: f64 = (0..cols)
                        .map(|c| x[j * cols + c] as f64 * deq[r * cols + c] as f64)
                        .sum();
                    let got = y[j * rows + r] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{format:?} [{j},{r}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_build_matches_the_portable_reference_and_rows_are_batch_invariant() {
        let (rows, cols) = (19, 128);
        for (format, dtype) in CASES {
            let (m, _) = quantized(format, dtype, rows, cols);
            // 11 rows: a full tile of eight and a partial one.
            let x = values(11 * cols, 11);
            let batched = m.matmul(&x, 11);
            for j in 0..11 {
                let xr = &x[j * cols..(j + 1) * cols];
                let alone = m.matmul(xr, 1);
                assert_eq!(
                    alone,
                    batched[j * rows..(j + 1) * rows],
                    "{format:?}: batch row {j}"
                );
                let xs: Vec<f32> = xr.chunks_exact(QK).map(sum_block).collect();
                for (r, value) in alone.iter().enumerate() {
                    let portable = dot_row_generic(format, m.row_data(r), xr, &xs);
                    let tol = 1e-5 * (1.0 + portable.abs());
                    assert!(
                        (portable - value).abs() <= tol,
                        "{format:?} row {r}: {portable} vs {value}"
                    );
                }
            }
        }
    }

    #[test]
    fn dense_matmul_matches_the_reference_and_is_batch_invariant() {
        let (rows, cols) = (21, 64);
        let w = values(rows * cols, 5);
        let d = DenseMatrix::new(rows, cols, w.clone()).expect("layout");
        let x = values(11 * cols, 9);
        let batched = d.matmul(&x, 11);
        for j in 0..11 {
            let xr = &x[j * cols..(j + 1) * cols];
            let alone = d.matmul(xr, 1);
            assert_eq!(alone, batched[j * rows..(j + 1) * rows], "batch row {j}");
            for (r, v) in alone.iter().enumerate() {
                let want: f64 = (0..cols)
                    .map(|c| xr[c] as f64 * w[r * cols + c] as f64)
                    .sum();
                assert!(
                    (*v as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "[{j},{r}]"
                );
                let portable = dense_dot_generic(&w[r * cols..(r + 1) * cols], xr);
                assert!((portable - v).abs() <= 1e-5 * (1.0 + v.abs()));
            }
        }
        assert!(DenseMatrix::new(2, 30, vec![0.0; 60]).is_err());
    }

    #[test]
    fn bad_layouts_are_rejected() {
        assert!(QuantMatrix::new(BlockFormat::Q8_0, 2, 30, vec![0; 68]).is_err());
        assert!(QuantMatrix::new(BlockFormat::Q8_0, 2, 32, vec![0; 67]).is_err());
    }
}
