//! The AVX2 build of the panel kernels of [`crate::kernels::panel`]: 8-row
//! panels, one 32-bit lane per row. For each group of four values, the
//! four activation bytes are broadcast to every lane and `maddubs` + `madd`
//! add the four products into each row's lane. Q4 weights are unsigned
//! nibbles (Q4_0 subtracts `8 · Σx` afterwards, in integers); Q8_0 uses the
//! sign trick (`|w|` times `x` with `w`'s sign). The integer sums are exact,
//! so the result has the portable reference's bits.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::kernels::block_format::{format_of, panel_block_bytes, scale_bytes, BlockFormat, QK};
use crate::kernels::columns_out::ColumnsOut;
use crate::kernels::int8::Q8Rows;

/// Rows per panel.
const W: usize = 8;
/// Activation rows sharing one unpacked panel block.
const TILE: usize = 4;

/// Whether this CPU can run this build.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// `out[j, r] = w_r · x_j` for whole panels `w` and every row of `x`.
///
/// # Safety
/// The CPU must support this build ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn panels(format: BlockFormat, w: &[u8], x: &Q8Rows, out: ColumnsOut<'_>) {
    match format {
        BlockFormat::Q4_0 => run::<0>(w, x, out),
        BlockFormat::Q4_1 => run::<1>(w, x, out),
        BlockFormat::Q8_0 => run::<2>(w, x, out),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn run<const F: u8>(w: &[u8], x: &Q8Rows, mut out: ColumnsOut<'_>) {
    let format = format_of(F);
    let (m, cols) = (x.rows(), x.cols());
    let panel_bytes = cols / QK * panel_block_bytes(format, W);
    assert!(w.len().is_multiple_of(panel_bytes));
    for (p, panel) in w.chunks_exact(panel_bytes).enumerate() {
        let o = &mut out;
        let mut j = 0;
        while j < m {
            let t = (m - j).min(TILE);
            match t {
                1 => tile::<F, 1>(panel, x, j, p * W, o),
                2 => tile::<F, 2>(panel, x, j, p * W, o),
                3 => tile::<F, 3>(panel, x, j, p * W, o),
                _ => tile::<F, TILE>(panel, x, j, p * W, o),
            }
            j += t;
        }
    }
}

/// Four activation bytes from `at`, broadcast to every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quad(x: &[i8], at: usize) -> __m256i {
    let b = [x[at], x[at + 1], x[at + 2], x[at + 3]];
    _mm256_set1_epi32(i32::from_le_bytes(b.map(|v| v as u8)))
}

/// One panel against activation rows `j0 .. j0 + T`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile<const F: u8, const T: usize>(
    panel: &[u8],
    x: &Q8Rows,
    j0: usize,
    r0: usize,
    o: &mut ColumnsOut<'_>,
) {
    let format = format_of(F);
    let (m, cols) = (x.rows(), x.cols());
    let nb = cols / QK;
    let pbb = panel_block_bytes(format, W);
    let sb = scale_bytes(format, W);
    assert!(panel.len() == nb * pbb && j0 + T <= m);
    let xt = x.tile::<T>(j0);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut off = [_mm256_setzero_ps(); T];
    let nibble = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for (b, blk) in panel.chunks_exact(pbb).enumerate() {
        crate::kernels::prefetch_ahead(blk.as_ptr(), pbb);
        // SAFETY: `blk` holds `pbb` bytes: 16 (or 32) bytes of scales, then
        // 128 (Q4) or 256 (Q8_0) bytes of quants.
        let (d8, m8, w) = unsafe {
            let p = blk.as_ptr();
            let d8 = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
            let m8 = if F == 1 {
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast()))
            } else {
                _mm256_setzero_ps()
            };
            let q = p.add(sb);
            let mut w = [_mm256_setzero_si256(); 8];
            if F == 2 {
                for (t, w) in w.iter_mut().enumerate() {
                    *w = _mm256_loadu_si256(q.add(32 * t).cast());
                }
            } else {
                for g in 0..4 {
                    let v = _mm256_loadu_si256(q.add(32 * g).cast());
                    w[g] = _mm256_and_si256(v, nibble);
                    w[g + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
                }
            }
            (d8, m8, w)
        };
        let mut aw = w;
        if F == 2 {
            for a in &mut aw {
                *a = _mm256_sign_epi8(*a, *a);
            }
        }
        each_row!(T, k => {
            let x = xt.block(k, b);
            let (xq, dx, sx, q_all) = (x.qs, x.d, x.s, x.sum);
            let isum = if F == 2 {
                let mut s = _mm256_setzero_si256();
                for t in 0..8 {
                    let xs = _mm256_sign_epi8(quad(xq, 4 * t), w[t]);
                    s = _mm256_add_epi32(
                        s,
                        _mm256_madd_epi16(_mm256_maddubs_epi16(aw[t], xs), ones),
                    );
                }
                s
            } else {
                // Eight products of nibbles (≤ 15) and bytes (|x| ≤ 127) per
                // 16-bit lane stay below 2^15: summed exactly before widening.
                let mut s16 = _mm256_maddubs_epi16(w[0], quad(xq, 0));
                for (t, wt) in w.iter().enumerate().skip(1) {
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(*wt, quad(xq, 4 * t)));
                }
                let s = _mm256_madd_epi16(s16, ones);
                if F == 0 {
                    _mm256_sub_epi32(s, _mm256_set1_epi32(8 * q_all))
                } else {
                    s
                }
            };
            let scale = _mm256_mul_ps(d8, _mm256_set1_ps(dx));
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[k]);
            if F == 1 {
                off[k] = _mm256_fmadd_ps(m8, _mm256_set1_ps(sx), off[k]);
            }
        });
    }
    each_row!(T, k => {
        let mut v = [0.0f32; W];
        // SAFETY: `v` holds eight floats.
        unsafe { _mm256_storeu_ps(v.as_mut_ptr(), _mm256_add_ps(acc[k], off[k])) };
        for (i, v) in v.into_iter().enumerate() {
            o.set(r0 + i, j0 + k, v);
        }
    });
}
