//! AVX2 + FMA build of the f32-activation block kernels of [`crate::qmatmul`].
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

use crate::qmatmul::BlockFormat;

/// Whether this CPU can run these kernels.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Computes `out[j] = Σ w · x_j` for one quantized weight row `w` and the
/// `out.len()` activation rows in `x` (`cols` values each).
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_rows(
    format: BlockFormat,
    table: &[f32; 1 << 16],
    w: &[u8],
    x: &[f32],
    cols: usize,
    out: &mut [f32],
) {
    let blocks = cols / 32;
    assert!(
        cols.is_multiple_of(32)
            && w.len() == blocks * format.block_bytes()
            && x.len() == out.len() * cols
    );
    match format {
        BlockFormat::Q4_0 => rows::<18>(format, table, w, x, cols, out),
        BlockFormat::Q4_1 => rows::<20>(format, table, w, x, cols, out),
        BlockFormat::Q8_0 => rows::<34>(format, table, w, x, cols, out),
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

/// Two activation rows per pass over the weight row (the dequantization is
/// shared), then a last single row; both paths run the same operations per
/// output element.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn rows<const BB: usize>(
    format: BlockFormat,
    table: &[f32; 1 << 16],
    w: &[u8],
    x: &[f32],
    cols: usize,
    out: &mut [f32],
) {
    let (blocks, _) = w.as_chunks::<BB>();
    let m = out.len();
    let mut j = 0;
    while j + 2 <= m {
        let (xa, xb) = (x[j * cols..].as_ptr(), x[(j + 1) * cols..].as_ptr());
        let mut a = [_mm256_setzero_ps(); 4];
        let mut b = [_mm256_setzero_ps(); 4];
        for (i, block) in blocks.iter().enumerate() {
            let wv = dequantize(format, table, block);
            // SAFETY: rows j and j+1 of `x` each hold `cols` = 32 · blocks values.
            unsafe {
                block_fma(&wv, xa.add(i * 32), &mut a);
                block_fma(&wv, xb.add(i * 32), &mut b);
            }
        }
        out[j] = fold4(a);
        out[j + 1] = fold4(b);
        j += 2;
    }
    if j < m {
        let xa = x[j * cols..].as_ptr();
        let mut a = [_mm256_setzero_ps(); 4];
        for (i, block) in blocks.iter().enumerate() {
            let wv = dequantize(format, table, block);
            // SAFETY: row j of `x` holds `cols` = 32 · blocks values.
            unsafe { block_fma(&wv, xa.add(i * 32), &mut a) };
        }
        out[j] = fold4(a);
    }
}

/// Sums the eight lanes in a fixed order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fold(v: __m256) -> f32 {
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
