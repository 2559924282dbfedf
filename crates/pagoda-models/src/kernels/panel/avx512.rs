//! The AVX-512 VNNI build of the panel kernels of [`crate::kernels::panel`]:
//! 16-row panels, one 32-bit lane per row. For each group of four values,
//! the four activation bytes are broadcast to every lane and one
//! `vpdpbusd` adds the four products into each row's lane: eight
//! instructions give a block's 16 dot products, then one conversion, one
//! scale product and one fused multiply-add per activation row. Weights go
//! in unsigned (Q4 nibbles; Q8_0 with 128 added), and `8 · Σx` or
//! `128 · Σx` is subtracted in integers. The sums are exact, so the result
//! has the portable reference's bits.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::kernels::block_format::{format_of, panel_block_bytes, scale_bytes, BlockFormat, QK};
use crate::kernels::columns_out::ColumnsOut;
use crate::kernels::int8::Q8Rows;

/// Rows per panel.
const W: usize = 16;
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

/// `out[j, r] = w_r · x_j` for whole panels `w` and every row of `x`.
///
/// # Safety
/// The CPU must support this build ([`available`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn panels(format: BlockFormat, w: &[u8], x: &Q8Rows, out: ColumnsOut<'_>) {
    match format {
        BlockFormat::Q4_0 => run::<0>(w, x, out),
        BlockFormat::Q4_1 => run::<1>(w, x, out),
        BlockFormat::Q8_0 => run::<2>(w, x, out),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
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
                4 => tile::<F, 4>(panel, x, j, p * W, o),
                5 => tile::<F, 5>(panel, x, j, p * W, o),
                6 => tile::<F, 6>(panel, x, j, p * W, o),
                7 => tile::<F, 7>(panel, x, j, p * W, o),
                _ => tile::<F, TILE>(panel, x, j, p * W, o),
            }
            j += t;
        }
    }
}

/// Four activation bytes from `at`, broadcast to every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) fn quad(x: &[i8], at: usize) -> __m512i {
    let b = &x[at..at + 4];
    _mm512_set1_epi32(i32::from_le_bytes(
        [b[0], b[1], b[2], b[3]].map(|v| v as u8),
    ))
}

/// One panel against activation rows `j0 .. j0 + T`, each row's steps
/// written out ([`each_row!`]) so that its accumulators stay in registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
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
    let mut acc = [_mm512_setzero_ps(); T];
    let mut off = [_mm512_setzero_ps(); T];
    let nibble = _mm512_set1_epi8(0x0F);
    let bias = _mm512_set1_epi8(-128);
    let zero = _mm512_setzero_si512();
    // Weight register t meets activation values 4t..4t + 4: Q8_0's groups
    // in order, and for Q4 the low nibbles of groups 0..4 (values 0..16),
    // then their high nibbles (values 16..32).
    for (b, blk) in panel.chunks_exact(pbb).enumerate() {
        crate::kernels::prefetch_ahead(blk.as_ptr(), pbb);
        // SAFETY: `blk` holds `pbb` bytes: 32 (or 64) bytes of scales, then
        // 256 (Q4) or 512 (Q8_0) bytes of quants.
        let (d16, m16, w) = unsafe {
            let p = blk.as_ptr();
            let d16 = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
            let m16 = if F == 1 {
                _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32).cast()))
            } else {
                _mm512_setzero_ps()
            };
            let q = p.add(sb);
            let mut w = [zero; 8];
            if F == 2 {
                for (t, w) in w.iter_mut().enumerate() {
                    *w = _mm512_xor_si512(_mm512_loadu_si512(q.add(64 * t).cast()), bias);
                }
            } else {
                for g in 0..4 {
                    let v = _mm512_loadu_si512(q.add(64 * g).cast());
                    w[g] = _mm512_and_si512(v, nibble);
                    w[g + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
                }
            }
            (d16, m16, w)
        };
        each_row!(T, k => {
            let x = xt.block(k, b);
            let (xq, dx, sx, q_all) = (x.qs, x.d, x.s, x.sum);
            // One chain: the sum over the block's 32 values, exactly.
            let mut isum = zero;
            for (t, w) in w.iter().enumerate() {
                isum = _mm512_dpbusd_epi32(isum, *w, quad(xq, 4 * t));
            }
            match F {
                0 => isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(8 * q_all)),
                2 => isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(128 * q_all)),
                _ => {}
            }
            let scale = _mm512_mul_ps(d16, _mm512_set1_ps(dx));
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[k]);
            if F == 1 {
                off[k] = _mm512_fmadd_ps(m16, _mm512_set1_ps(sx), off[k]);
            }
        });
    }
    each_row!(T, k => {
        let mut v = [0.0f32; W];
        // SAFETY: `v` holds sixteen floats.
        unsafe { _mm512_storeu_ps(v.as_mut_ptr(), _mm512_add_ps(acc[k], off[k])) };
        for (i, v) in v.into_iter().enumerate() {
            o.set(r0 + i, j0 + k, v);
        }
    });
}
