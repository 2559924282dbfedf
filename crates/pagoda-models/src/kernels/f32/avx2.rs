//! AVX2 + FMA build of the f32-activation block kernels of [`crate::kernels::f32`].
//!
//! One weight row is multiplied with two activation rows at a time: each
//! 32-value block is dequantized once into four vectors (`d·q + m`) and
//! fused-multiply-added into four independent accumulators per activation
//! row (so that consecutive blocks do not wait on one FMA chain). Every
//! output element is the same sequence of operations (blocks in order, the
//! four accumulators folded in a fixed order) whatever the number of rows,
//! which keeps the kernel batch-invariant.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::kernels::block_format::BlockFormat;

/// Whether this CPU can run these kernels.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `rows` activation rows of `cols` values each, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Activations<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
}

/// Activation rows per tile of the batched path: 8 rows of a few thousand
/// values stay in L1 while the weight rows stream past them.
const X_TILE: usize = 8;

/// Computes `out[r * m + j] = w_r · x_j` for the weight rows in `w` (whole
/// rows, `cols` values each) and the `m` activation rows in `x`.
///
/// With one or two activation rows each block is dequantized in registers
/// and used at once. With more, the task's weight rows are dequantized once
/// into `scratch` and multiplied tile by tile of activation rows. Both paths
/// perform the same operations per output element, so results are
/// bit-identical whatever `m` is (batch invariance).
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matmul_rows(
    format: BlockFormat,
    table: &[f32; 1 << 16],
    w: &[u8],
    x: Activations<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let Activations {
        data: x,
        rows: m,
        cols,
    } = x;
    let row_bytes = cols / 32 * format.block_bytes();
    assert!(cols.is_multiple_of(32) && w.len().is_multiple_of(row_bytes) && x.len() == m * cols);
    let rows = w.len() / row_bytes;
    assert_eq!(out.len(), rows * m);
    if m <= 2 {
        for (wr, o) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
            match format {
                BlockFormat::Q4_0 => fused_rows::<18>(format, table, wr, x, cols, o),
                BlockFormat::Q4_1 => fused_rows::<20>(format, table, wr, x, cols, o),
                BlockFormat::Q8_0 => fused_rows::<34>(format, table, wr, x, cols, o),
            }
        }
        return;
    }
    scratch.resize(rows * cols, 0.0);
    for (wr, dst) in w
        .chunks_exact(row_bytes)
        .zip(scratch.chunks_exact_mut(cols))
    {
        match format {
            BlockFormat::Q4_0 => dequantize_row::<18>(format, table, wr, dst),
            BlockFormat::Q4_1 => dequantize_row::<20>(format, table, wr, dst),
            BlockFormat::Q8_0 => dequantize_row::<34>(format, table, wr, dst),
        }
    }
    for j0 in (0..m).step_by(X_TILE) {
        let j1 = (j0 + X_TILE).min(m);
        let xt = &x[j0 * cols..j1 * cols];
        for (r, wr) in scratch.chunks_exact(cols).enumerate() {
            dense_rows(wr, xt, cols, &mut out[r * m + j0..r * m + j1]);
        }
    }
}

/// Computes `out[r * m + j] = w_r · x_j` for dense f32 weight rows `w`
/// (`cols` values each), with the same per-element operations as the block
/// kernels (four accumulators per 32-value block, a fixed fold).
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dense_matmul_rows(w: &[f32], x: Activations<'_>, out: &mut [f32]) {
    let Activations {
        data: x,
        rows: m,
        cols,
    } = x;
    assert!(cols.is_multiple_of(32) && w.len().is_multiple_of(cols) && x.len() == m * cols);
    assert_eq!(out.len(), w.len() / cols * m);
    for j0 in (0..m).step_by(X_TILE) {
        let j1 = (j0 + X_TILE).min(m);
        let xt = &x[j0 * cols..j1 * cols];
        for (r, wr) in w.chunks_exact(cols).enumerate() {
            dense_rows(wr, xt, cols, &mut out[r * m + j0..r * m + j1]);
        }
    }
}

/// The whole weight row dequantized into `out`, with exactly the operations
/// of the fused path, so that both paths give bit-identical results.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dequantize_row<const BB: usize>(
    format: BlockFormat,
    table: &[f32; 1 << 16],
    w: &[u8],
    out: &mut [f32],
) {
    let (blocks, _) = w.as_chunks::<BB>();
    for (block, dst) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let wv = dequantize(format, table, block);
        // SAFETY: `dst` holds exactly 32 values.
        unsafe {
            _mm256_storeu_ps(dst.as_mut_ptr(), wv[0]);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), wv[1]);
            _mm256_storeu_ps(dst.as_mut_ptr().add(16), wv[2]);
            _mm256_storeu_ps(dst.as_mut_ptr().add(24), wv[3]);
        }
    }
}

/// Dot products of one dequantized weight row with every activation row:
/// the same accumulators and order as the fused path.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dense_rows(w: &[f32], x: &[f32], cols: usize, out: &mut [f32]) {
    let blocks = w.len() / 32;
    let wp = w.as_ptr();
    // SAFETY: `w` holds `cols` = 32 · blocks values, so block `i` has 32 at `wp + 32i`.
    pairwise(blocks, x, cols, out, |i| unsafe { load4(wp.add(i * 32)) });
}

/// Four vectors of eight values from 32 consecutive ones.
///
/// # Safety
/// `p` must point to 32 readable f32 values.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load4(p: *const f32) -> [__m256; 4] {
    // SAFETY: the caller guarantees 32 readable values.
    unsafe {
        [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ]
    }
}

/// Runs `out[j] = Σ_i block(i) · x_j[32i..32i+32]` two activation rows at a
/// time (each block's weights fetched once per pair) with four accumulators
/// per row folded in a fixed order: every output element is the same
/// sequence of operations whether it is computed in a pair or alone.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pairwise(
    blocks: usize,
    x: &[f32],
    cols: usize,
    out: &mut [f32],
    mut block: impl FnMut(usize) -> [__m256; 4],
) {
    let m = out.len();
    let mut j = 0;
    while j < m {
        let pair = j + 1 < m;
        let xa = x[j * cols..].as_ptr();
        let xb = if pair {
            x[(j + 1) * cols..].as_ptr()
        } else {
            xa
        };
        let mut a = [_mm256_setzero_ps(); 4];
        let mut b = [_mm256_setzero_ps(); 4];
        for i in 0..blocks {
            let wv = block(i);
            // SAFETY: rows j (and j+1) of `x` hold `cols` = 32 · blocks values.
            unsafe {
                block_fma(&wv, xa.add(i * 32), &mut a);
                if pair {
                    block_fma(&wv, xb.add(i * 32), &mut b);
                }
            }
        }
        out[j] = fold4(a);
        if pair {
            out[j + 1] = fold4(b);
        }
        j += if pair { 2 } else { 1 };
    }
}

/// The four product vectors of one block against 32 activations at `x`.
///
/// # Safety
/// `x` must point to 32 readable f32 values.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_fma(wv: &[__m256; 4], x: *const f32, acc: &mut [__m256; 4]) {
    // SAFETY: the caller guarantees 32 readable values at `x`.
    unsafe {
        acc[0] = _mm256_fmadd_ps(wv[0], _mm256_loadu_ps(x), acc[0]);
        acc[1] = _mm256_fmadd_ps(wv[1], _mm256_loadu_ps(x.add(8)), acc[1]);
        acc[2] = _mm256_fmadd_ps(wv[2], _mm256_loadu_ps(x.add(16)), acc[2]);
        acc[3] = _mm256_fmadd_ps(wv[3], _mm256_loadu_ps(x.add(24)), acc[3]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn fold4(a: [__m256; 4]) -> f32 {
    fold(_mm256_add_ps(
        _mm256_add_ps(a[0], a[1]),
        _mm256_add_ps(a[2], a[3]),
    ))
}

/// One weight row against one or two activation rows, each block
/// dequantized in registers once per pass.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fused_rows<const BB: usize>(
    format: BlockFormat,
    table: &[f32; 1 << 16],
    w: &[u8],
    x: &[f32],
    cols: usize,
    out: &mut [f32],
) {
    let (blocks, _) = w.as_chunks::<BB>();
    pairwise(blocks.len(), x, cols, out, |i| {
        dequantize(format, table, &blocks[i])
    });
}

/// Sums the eight lanes in a fixed order.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn fold(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Widens eight bytes (the low half of `v`) to f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn u8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// Widens eight signed bytes (the low half of `v`) to f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn i8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// The 32 values of one block as four vectors of eight, in order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dequantize(format: BlockFormat, table: &[f32; 1 << 16], b: &[u8]) -> [__m256; 4] {
    let d = _mm256_set1_ps(table[u16::from_le_bytes([b[0], b[1]]) as usize]);
    match format {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            let (qs_at, min) = match format {
                BlockFormat::Q4_1 => (
                    4,
                    _mm256_set1_ps(table[u16::from_le_bytes([b[2], b[3]]) as usize]),
                ),
                // Q4_0: d · (q − 8) = d·q + (−8d)
                _ => (2, _mm256_mul_ps(d, _mm256_set1_ps(-8.0))),
            };
            let qs = &b[qs_at..qs_at + 16];
            // SAFETY: `qs` holds exactly 16 bytes.
            let q = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(q, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
            [
                _mm256_fmadd_ps(u8x8_to_f32(lo), d, min),
                _mm256_fmadd_ps(u8x8_to_f32(_mm_srli_si128(lo, 8)), d, min),
                _mm256_fmadd_ps(u8x8_to_f32(hi), d, min),
                _mm256_fmadd_ps(u8x8_to_f32(_mm_srli_si128(hi, 8)), d, min),
            ]
        }
        BlockFormat::Q8_0 => {
            let qs = &b[2..34];
            // SAFETY: `qs` holds exactly 32 bytes.
            let (q0, q1) = unsafe {
                (
                    _mm_loadu_si128(qs.as_ptr().cast()),
                    _mm_loadu_si128(qs.as_ptr().add(16).cast()),
                )
            };
            [
                _mm256_mul_ps(i8x8_to_f32(q0), d),
                _mm256_mul_ps(i8x8_to_f32(_mm_srli_si128(q0, 8)), d),
                _mm256_mul_ps(i8x8_to_f32(q1), d),
                _mm256_mul_ps(i8x8_to_f32(_mm_srli_si128(q1, 8)), d),
            ]
        }
    }
}
