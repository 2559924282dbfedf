//! AVX2 build of the 8-bit-activation kernels of [`crate::qmatmul_int8`].
//!
//! A weight block is unpacked once into 32 bytes and meets up to four
//! activation rows: `maddubs` multiplies unsigned by signed bytes into 16-bit
//! pairs (signed weights go through the sign trick: |w| times x with w's
//! sign), `madd` widens to eight 32-bit sums, and one FMA per row scales
//! them by `d_w · d_x` into the row's accumulator. Each output element is
//! the same sequence of operations whatever the tile it is computed in, so
//! results are batch-invariant.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use half::f16;

use crate::qmatmul::{f16_table, BlockFormat};
use crate::qmatmul_avx2::fold;
use crate::qmatmul_int8::{Q8Rows, QK};

/// Whether this CPU can run these kernels.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Activation rows sharing one unpacked weight block.
const TILE: usize = 4;

/// Quantizes `x` block by block into `qs`, with per-block `d` and `s`
/// exactly as the portable build computes them.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    assert!(x.len() == qs.len() && x.len() == d.len() * QK && d.len() == s.len());
    let sign = _mm256_set1_ps(-0.0);
    for (((xb, qb), d), s) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK))
        .zip(d.iter_mut())
        .zip(s.iter_mut())
    {
        // SAFETY: `xb` holds 32 values and `qb` 32 bytes.
        unsafe {
            let p = xb.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let mut amax = _mm256_andnot_ps(sign, v[0]);
            for vk in &v[1..] {
                amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, *vk));
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m1 = _mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1));
            let max = _mm_cvtss_f32(m1);
            let dv = max / 127.0;
            let id = _mm256_set1_ps(if dv > 0.0 { 1.0 / dv } else { 0.0 });
            let i = v.map(|vk| {
                _mm256_cvtps_epi32(_mm256_round_ps(
                    _mm256_mul_ps(vk, id),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                ))
            });
            let total =
                _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
            let t4 = _mm_add_epi32(
                _mm256_castsi256_si128(total),
                _mm256_extracti128_si256(total, 1),
            );
            let t2 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0b01_00_11_10));
            let t1 = _mm_add_epi32(t2, _mm_shuffle_epi32(t2, 0b10_11_00_01));
            let sum = _mm_cvtsi128_si32(t1);
            // Pack 32 × i32 into 32 × i8 in order (packs work per 128-bit lane).
            let w01 = _mm256_packs_epi32(i[0], i[1]);
            let w23 = _mm256_packs_epi32(i[2], i[3]);
            let b = _mm256_packs_epi16(w01, w23);
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(qb.as_mut_ptr().cast(), b);
            *d = f16::from_f32(dv).to_f32();
            *s = f16::from_f32(dv * sum as f32).to_f32();
        }
    }
}

/// `out[r * m + j] = w_r · x_j` for whole weight rows `w` and the `m`
/// rows of `x`.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matmul_rows(format: BlockFormat, w: &[u8], x: &Q8Rows, out: &mut [f32]) {
    match format {
        BlockFormat::Q4_0 => rows::<18>(format, w, x, out),
        BlockFormat::Q4_1 => rows::<20>(format, w, x, out),
        BlockFormat::Q8_0 => rows::<34>(format, w, x, out),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn rows<const BB: usize>(format: BlockFormat, w: &[u8], x: &Q8Rows, out: &mut [f32]) {
    let (m, cols) = (x.rows(), x.cols());
    let row_bytes = cols / QK * BB;
    assert!(w.len().is_multiple_of(row_bytes) && out.len() == w.len() / row_bytes * m);
    assert!(x.qs.len() == m * cols && x.d.len() == m * cols / QK && x.s.len() == x.d.len());
    for (wr, o) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
        let (blocks, _) = wr.as_chunks::<BB>();
        let mut j = 0;
        while j < m {
            let t = (m - j).min(TILE);
            let o = &mut o[j..j + t];
            match t {
                1 => tile::<BB, 1>(format, blocks, x, j, o),
                2 => tile::<BB, 2>(format, blocks, x, j, o),
                3 => tile::<BB, 3>(format, blocks, x, j, o),
                _ => tile::<BB, 4>(format, blocks, x, j, o),
            }
            j += t;
        }
    }
}

/// One weight row against activation rows `j0 .. j0 + T`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tile<const BB: usize, const T: usize>(
    format: BlockFormat,
    blocks: &[[u8; BB]],
    x: &Q8Rows,
    j0: usize,
    out: &mut [f32],
) {
    let cols = x.cols();
    let nb = cols / QK;
    assert_eq!(blocks.len(), nb);
    let table = f16_table();
    let half = |lo: u8, hi: u8| table[u16::from_le_bytes([lo, hi]) as usize];
    let mut acc = [_mm256_setzero_ps(); T];
    let mut offset = [0.0f32; T];
    let ones = _mm256_set1_epi16(1);
    // Each row's quantized values and scales.
    let qs: [&[i8]; T] = std::array::from_fn(|k| &x.qs[(j0 + k) * cols..][..cols]);
    let ds: [&[f32]; T] = std::array::from_fn(|k| &x.d[(j0 + k) * nb..][..nb]);
    let ss: [&[f32]; T] = std::array::from_fn(|k| &x.s[(j0 + k) * nb..][..nb]);
    for (i, b) in blocks.iter().enumerate() {
        let dw = half(b[0], b[1]);
        let mw = if format == BlockFormat::Q4_1 {
            half(b[2], b[3])
        } else {
            0.0
        };
        let (wv, signed) = unpack(format, b);
        let aw = if signed { _mm256_sign_epi8(wv, wv) } else { wv };
        for k in 0..T {
            let q = &qs[k][i * QK..(i + 1) * QK];
            // SAFETY: `q` holds exactly 32 bytes.
            let xv = unsafe { _mm256_loadu_si256(q.as_ptr().cast()) };
            let xv = if signed { _mm256_sign_epi8(xv, wv) } else { xv };
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xv), ones);
            let dd = _mm256_set1_ps(dw * ds[k][i]);
            acc[k] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[k]);
            if format == BlockFormat::Q4_1 {
                offset[k] += mw * ss[k][i];
            }
        }
    }
    for k in 0..T {
        out[k] = fold(acc[k]) + offset[k];
    }
}

/// The block's 32 weights as bytes, in order, and whether they are signed.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn unpack(format: BlockFormat, b: &[u8]) -> (__m256i, bool) {
    match format {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            let at = if format == BlockFormat::Q4_0 { 2 } else { 4 };
            let qs = &b[at..at + 16];
            // SAFETY: `qs` holds exactly 16 bytes.
            let q = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(q, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
            let v = _mm256_set_m128i(hi, lo);
            if format == BlockFormat::Q4_0 {
                (_mm256_sub_epi8(v, _mm256_set1_epi8(8)), true)
            } else {
                (v, false)
            }
        }
        BlockFormat::Q8_0 => {
            let qs = &b[2..34];
            // SAFETY: `qs` holds exactly 32 bytes.
            (unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }, true)
        }
    }
}
