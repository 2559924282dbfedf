//! The AVX-512 VNNI build of the panel kernels of [`crate::panel_matrix`]:
//! a whole panel block per 512-bit register (`[A lo | B lo | C lo | D lo]`
//! and the same for the high halves), `vpdpbusd` for the dot products, one
//! conversion, one scale product and one fused multiply-add per block and
//! activation row for all four weight rows. Signed weights (Q4_0, Q8_0):
//! `|w|` times `x` negated where `w < 0` (a zero weight contributes zero
//! either way). The integer lane sums are exact and the float operations
//! per lane are the reference's, so the result has the portable bits.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::panel_matrix::{panel_block_bytes, scale_bytes, PANEL};
use crate::qmatmul::BlockFormat;
use crate::qmatmul_int8::{Q8Rows, QK};

/// Activation rows sharing one unpacked panel block.
const TILE: usize = 8;

/// Whether this CPU can run this build.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// `out[r * m + j] = w_r · x_j` for whole panels `w` (padding rows
/// included) and every row of `x`.
///
/// # Safety
/// The CPU must support this build ([`available`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn panels(format: BlockFormat, w: &[u8], x: &Q8Rows, out: &mut [f32]) {
    match format {
        BlockFormat::Q4_0 => run::<0>(w, x, out),
        BlockFormat::Q4_1 => run::<1>(w, x, out),
        BlockFormat::Q8_0 => run::<2>(w, x, out),
    }
}

const fn format_of(f: u8) -> BlockFormat {
    match f {
        0 => BlockFormat::Q4_0,
        1 => BlockFormat::Q4_1,
        _ => BlockFormat::Q8_0,
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn run<const F: u8>(w: &[u8], x: &Q8Rows, out: &mut [f32]) {
    let format = format_of(F);
    let (m, cols) = (x.rows(), x.cols());
    let panel_bytes = cols / QK * panel_block_bytes(format);
    assert!(w.len().is_multiple_of(panel_bytes) && out.len() == w.len() / panel_bytes * PANEL * m);
    for (panel, o) in w
        .chunks_exact(panel_bytes)
        .zip(out.chunks_exact_mut(PANEL * m))
    {
        let mut j = 0;
        while j < m {
            let t = (m - j).min(TILE);
            match t {
                1 => tile::<F, 1>(panel, x, j, o),
                2 => tile::<F, 2>(panel, x, j, o),
                3 => tile::<F, 3>(panel, x, j, o),
                4 => tile::<F, 4>(panel, x, j, o),
                5 => tile::<F, 5>(panel, x, j, o),
                6 => tile::<F, 6>(panel, x, j, o),
                7 => tile::<F, 7>(panel, x, j, o),
                _ => tile::<F, TILE>(panel, x, j, o),
            }
            j += t;
        }
    }
}

/// One panel against activation rows `j0 .. j0 + T`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile<const F: u8, const T: usize>(panel: &[u8], x: &Q8Rows, j0: usize, o: &mut [f32]) {
    let format = format_of(F);
    let (m, cols) = (x.rows(), x.cols());
    let nb = cols / QK;
    let pbb = panel_block_bytes(format);
    let sb = scale_bytes(format);
    assert!(panel.len() == nb * pbb && j0 + T <= m && o.len() == PANEL * m);
    assert!(x.qs.len() >= m * cols && x.d.len() >= m * nb && x.s.len() >= m * nb);
    let qs: [&[i8]; T] = std::array::from_fn(|k| &x.qs[(j0 + k) * cols..][..cols]);
    let ds: [&[f32]; T] = std::array::from_fn(|k| &x.d[(j0 + k) * nb..][..nb]);
    let ss: [&[f32]; T] = std::array::from_fn(|k| &x.s[(j0 + k) * nb..][..nb]);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut off = [_mm_setzero_ps(); T];
    let idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let nibble = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    for (b, blk) in panel.chunks_exact(pbb).enumerate() {
        // SAFETY: `blk` holds `pbb` bytes: the scales (8 or 16 bytes) and
        // 64 (Q4) or 128 (Q8_0) bytes of quants.
        let (d4, m4, lo, hi) = unsafe {
            let p = blk.as_ptr();
            let d4 = _mm_cvtph_ps(_mm_loadl_epi64(p.cast()));
            let m4 = if F == 1 {
                _mm_cvtph_ps(_mm_loadl_epi64(p.add(8).cast()))
            } else {
                _mm_setzero_ps()
            };
            let q = p.add(sb);
            let (lo, hi) = if F == 2 {
                (
                    _mm512_loadu_si512(q.cast()),
                    _mm512_loadu_si512(q.add(64).cast()),
                )
            } else {
                let v = _mm512_loadu_si512(q.cast());
                (
                    _mm512_and_si512(v, nibble),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble),
                )
            };
            (d4, m4, lo, hi)
        };
        let (lo, hi) = if F == 0 {
            let eight = _mm512_set1_epi8(8);
            (_mm512_sub_epi8(lo, eight), _mm512_sub_epi8(hi, eight))
        } else {
            (lo, hi)
        };
        let signed = F != 1;
        let (alo, ahi) = if signed {
            (_mm512_abs_epi8(lo), _mm512_abs_epi8(hi))
        } else {
            (lo, hi)
        };
        let (neg_lo, neg_hi) = (_mm512_movepi8_mask(lo), _mm512_movepi8_mask(hi));
        let d16 = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d4));
        for k in 0..T {
            let xq = &qs[k][b * QK..(b + 1) * QK];
            // SAFETY: `xq` holds 32 bytes.
            let (xl, xh) = unsafe {
                (
                    _mm512_broadcast_i32x4(_mm_loadu_si128(xq.as_ptr().cast())),
                    _mm512_broadcast_i32x4(_mm_loadu_si128(xq.as_ptr().add(16).cast())),
                )
            };
            let (xl, xh) = if signed {
                (
                    _mm512_mask_sub_epi8(xl, neg_lo, zero, xl),
                    _mm512_mask_sub_epi8(xh, neg_hi, zero, xh),
                )
            } else {
                (xl, xh)
            };
            let i = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, alo, xl), ahi, xh);
            let scale = _mm512_mul_ps(d16, _mm512_set1_ps(ds[k][b]));
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), scale, acc[k]);
            if F == 1 {
                off[k] = _mm_fmadd_ps(m4, _mm_set1_ps(ss[k][b]), off[k]);
            }
        }
    }
    for k in 0..T {
        // [A | B] and [C | D], then [A0+A1, A2+A3, C0+C1, C2+C3 | B.., D..],
        // then [A, C, A, C | B, D, B, D].
        let ab = _mm512_castps512_ps256(acc[k]);
        let cd = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[k])));
        let h1 = _mm256_hadd_ps(ab, cd);
        let h2 = _mm256_hadd_ps(h1, h1);
        let r = _mm_unpacklo_ps(_mm256_castps256_ps128(h2), _mm256_extractf128_ps(h2, 1));
        let r = _mm_add_ps(r, off[k]);
        let mut v = [0.0f32; PANEL];
        // SAFETY: `v` holds four floats.
        unsafe { _mm_storeu_ps(v.as_mut_ptr(), r) };
        for (i, v) in v.into_iter().enumerate() {
            o[i * m + j0 + k] = v;
        }
    }
}
