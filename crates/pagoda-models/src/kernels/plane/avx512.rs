//! The AVX-512 VNNI build of the bit-plane kernels of
//! [`crate::kernels::plane`]: 16-row panels, one 32-bit lane per row. A
//! sub-block's codes come out of its planes as eight registers (values
//! `4t..4t + 4` of every row), built once and met by up to eight
//! activation rows; per row, two chains of four `vpdpbusd` give the exact
//! sums of each half, and one conversion and fused multiply-add per
//! half (or sub-block) with the row's exact f32 scale `d·sc` accumulate
//! it, as the portable reference does.

use std::arch::x86_64::*;

use crate::kernels::block_format::QK;
use crate::kernels::columns_out::ColumnsOut;
use crate::kernels::int8::Q8Rows;
use crate::kernels::panel::avx512::quad;
use crate::kernels::plane::format::{Layout, Mins, Plane, PlaneFormat, SubScales};

/// Rows per panel.
const W: usize = 16;
/// Activation rows sharing one unpacked sub-block.
const TILE: usize = 8;

/// Whether this CPU can run this build.
pub fn available() -> bool {
    crate::kernels::Isa::Avx512Vnni.supported()
}

/// `out[j, r] = w_r · x_j` for whole panels `w` and every row of `x`.
///
/// # Safety
/// The CPU must support this build ([`available`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn panels(format: PlaneFormat, w: &[u8], x: &Q8Rows, out: ColumnsOut<'_>) {
    match format {
        PlaneFormat::Q2K => run::<0>(w, x, out),
        PlaneFormat::Q3K => run::<1>(w, x, out),
        PlaneFormat::Q4K => run::<2>(w, x, out),
        PlaneFormat::Q5K => run::<3>(w, x, out),
        PlaneFormat::Q6K => run::<4>(w, x, out),
        PlaneFormat::Q5_0 => run::<5>(w, x, out),
        PlaneFormat::Q5_1 => run::<6>(w, x, out),
        PlaneFormat::IQ4NL => run::<7>(w, x, out),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn run<const F: u8>(w: &[u8], x: &Q8Rows, mut out: ColumnsOut<'_>) {
    let format = PlaneFormat::of(F);
    let layout = Layout::new(format, W);
    let panel_bytes = x.cols() / format.block_values() * layout.block_bytes;
    assert!(w.len().is_multiple_of(panel_bytes));
    let m = x.rows();
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

/// Sixteen bytes from `at` widened to 32-bit lanes, signed or not.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn bytes_at(blk: &[u8], at: usize, signed: bool) -> __m512i {
    let b = &blk[at..at + W];
    // SAFETY: `b` holds sixteen bytes.
    let v = unsafe { _mm_loadu_si128(b.as_ptr().cast()) };
    if signed {
        _mm512_cvtepi8_epi32(v)
    } else {
        _mm512_cvtepu8_epi32(v)
    }
}

/// Sixteen f16 values from `at`, widened.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn halves_at(blk: &[u8], at: usize) -> __m512 {
    let b = &blk[at..at + 2 * W];
    // SAFETY: `b` holds 32 bytes.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(b.as_ptr().cast())) }
}

/// Sub-block `s`'s codes: register `t` holds values `4t..4t + 4` of every
/// row. Inlined into each type's kernel, where its planes are constants.
///
/// # Safety
/// Only called from this build's kernels (the CPU has its features).
#[inline(always)]
unsafe fn codes<const F: u8>(layout: &Layout, blk: &[u8], s: usize) -> [__m512i; 8] {
    let planes = PlaneFormat::of(F).spec().planes;
    let mut w = [_mm512_setzero_si512(); 8];
    let mut shift = 0i32;
    for (k, &plane) in planes.iter().enumerate() {
        let at = layout.plane_at(planes, s, k);
        let bytes = &blk[at..at + plane.bytes(W)];
        let p = bytes.as_ptr();
        let mask = _mm512_set1_epi8(((1u32 << plane.bits()) - 1) as i8);
        let left = _mm_cvtsi32_si128(shift);
        // SAFETY: `bytes` holds the plane: 4, 2 or 1 vectors of 64 bytes.
        let loaded: [__m512i; 4] = std::array::from_fn(|g| {
            if g * 64 < bytes.len() {
                unsafe { _mm512_loadu_si512(p.add(g * 64).cast()) }
            } else {
                _mm512_setzero_si512()
            }
        });
        for (t, w) in w.iter_mut().enumerate() {
            let (v, right) = match plane {
                Plane::Nibble => (loaded[t % 4], 4 * (t / 4) as i32),
                Plane::Two => (loaded[t / 4], 2 * (t % 4) as i32),
                Plane::One => (loaded[0], t as i32),
            };
            let part = _mm512_and_si512(_mm512_srl_epi16(v, _mm_cvtsi32_si128(right)), mask);
            *w = _mm512_or_si512(*w, _mm512_sll_epi16(part, left));
        }
        shift += plane.bits() as i32;
    }
    if let Some(table) = PlaneFormat::of(F).spec().lookup {
        // Each index becomes its table value + 128 (unsigned for `vpdpbusd`).
        let codes: [u8; 16] = std::array::from_fn(|i| (table[i] as i32 + 128) as u8);
        // SAFETY: `codes` holds 16 bytes.
        let t = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(codes.as_ptr().cast()) });
        for w in &mut w {
            *w = _mm512_shuffle_epi8(t, *w);
        }
    }
    w
}

/// One panel against activation rows `j0 .. j0 + T`. Each row's steps are
/// written out once per row ([`each_row!`]), so its accumulators stay in
/// registers, and its activation data is read through one pointer per field
/// with the rows' stride.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile<const F: u8, const T: usize>(
    panel: &[u8],
    x: &Q8Rows,
    j0: usize,
    r0: usize,
    o: &mut ColumnsOut<'_>,
) {
    let format = PlaneFormat::of(F);
    let spec = format.spec();
    let layout = Layout::new(format, W);
    assert_eq!(panel.len() / layout.block_bytes * spec.subs, x.cols() / QK);
    let xt = x.tile::<T>(j0);
    let fzero = _mm512_setzero_ps();
    let mut acc = [fzero; T];
    let mut mo = [fzero; T];
    // Each sub-block requests its share of a block ahead: a whole block's
    // lines at once (up to 37) would stall on the fill buffers.
    let share = layout.block_bytes.div_ceil(spec.subs).next_multiple_of(64);
    for (b, blk) in panel.chunks_exact(layout.block_bytes).enumerate() {
        let d = halves_at(blk, 0);
        let second = if spec.mins == Mins::None {
            fzero
        } else {
            halves_at(blk, layout.second_at)
        };
        for s in 0..spec.subs {
            // The rows' exact f32 scales of each half: d · sc and dmin · m.
            let sc = |h: usize| {
                let h = h.min(layout.scales_per_sub.max(1) - 1);
                let at = layout.scales_at + (s * layout.scales_per_sub + h) * W;
                _mm512_mul_ps(d, _mm512_cvtepi32_ps(bytes_at(blk, at, true)))
            };
            let mn = |h: usize| {
                let h = h.min(layout.mins_per_sub.max(1) - 1);
                let at = layout.mins_at + (s * layout.mins_per_sub + h) * W;
                _mm512_mul_ps(second, _mm512_cvtepi32_ps(bytes_at(blk, at, false)))
            };
            let (dsc0, dsc1) = match spec.scales {
                SubScales::None => (d, d),
                SubScales::Per32 => {
                    let v = sc(0);
                    (v, v)
                }
                SubScales::Per16 => (sc(0), sc(1)),
            };
            let (dm0, dm1) = match (spec.mins, spec.scales) {
                (Mins::Int, SubScales::Per16) => (mn(0), mn(1)),
                (Mins::Int, _) => {
                    let v = mn(0);
                    (v, v)
                }
                _ => (fzero, fzero),
            };
            crate::kernels::prefetch_ahead(blk.as_ptr().wrapping_add(s * share), share);
            // SAFETY: this build's kernel: the CPU has its features.
            let w = unsafe { codes::<F>(&layout, blk, s) };
            let sb = b * spec.subs + s;
            each_row!(T, k => {
                let x = xt.block(k, sb);
                let (xq, dx, sx, q_all, q_lo, qd) = (x.qs, x.d, x.s, x.sum, x.sum_lo, x.qd);
                let vdx = _mm512_set1_ps(dx);
                if spec.scales == SubScales::Per16 {
                    let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                    for t in 0..4 {
                        lo = _mm512_dpbusd_epi32(lo, w[t], quad(xq, 4 * t));
                        hi = _mm512_dpbusd_epi32(hi, w[t + 4], quad(xq, 16 + 4 * t));
                    }
                    let q_hi = q_all - q_lo;
                    let i_lo = _mm512_sub_epi32(lo, _mm512_set1_epi32(spec.bias * q_lo));
                    let i_hi = _mm512_sub_epi32(hi, _mm512_set1_epi32(spec.bias * q_hi));
                    acc[k] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(i_lo), _mm512_mul_ps(dsc0, vdx), acc[k]);
                    acc[k] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(i_hi), _mm512_mul_ps(dsc1, vdx), acc[k]);
                } else {
                    // One chain: `I_lo + I_hi = Σ u·q − bias · Σq`, exactly.
                    let mut sum = _mm512_setzero_si512();
                    for (t, w) in w.iter().enumerate() {
                        sum = _mm512_dpbusd_epi32(sum, *w, quad(xq, 4 * t));
                    }
                    let i_sum = _mm512_sub_epi32(sum, _mm512_set1_epi32(spec.bias * q_all));
                    acc[k] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(i_sum),
                        _mm512_mul_ps(dsc0, vdx),
                        acc[k],
                    );
                }
                match (spec.mins, spec.scales) {
                    (Mins::Int, SubScales::Per16) => {
                        mo[k] = _mm512_fmadd_ps(dm0, _mm512_set1_ps(qd[1]), mo[k]);
                        mo[k] = _mm512_fmadd_ps(dm1, _mm512_set1_ps(qd[2]), mo[k]);
                    }
                    (Mins::Int, _) => {
                        mo[k] = _mm512_fmadd_ps(dm0, _mm512_set1_ps(qd[0]), mo[k]);
                    }
                    (Mins::Float, _) => {
                        mo[k] = _mm512_fmadd_ps(second, _mm512_set1_ps(sx), mo[k]);
                    }
                    (Mins::None, _) => {}
                }
            });
        }
    }
    each_row!(T, k => {
        let v = match spec.mins {
            Mins::Int => _mm512_sub_ps(acc[k], mo[k]),
            Mins::Float => _mm512_add_ps(acc[k], mo[k]),
            Mins::None => acc[k],
        };
        let mut lanes = [0.0f32; W];
        // SAFETY: `lanes` holds sixteen floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
        for (i, v) in lanes.into_iter().enumerate() {
            o.set(r0 + i, j0 + k, v);
        }
    });
}
