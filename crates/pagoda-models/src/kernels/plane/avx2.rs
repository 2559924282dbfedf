//! The AVX2 build of the bit-plane kernels of [`crate::kernels::plane`]:
//! 8-row panels, one 32-bit lane per row. A sub-block's codes come out of
//! its planes as eight registers (values `4t..4t + 4` of every row), built
//! once and met by up to four activation rows; per row, `maddubs` products
//! are summed in 16 bits as far as they cannot overflow (codes of 6 bits:
//! two at a time; fewer bits: four) and widened by `madd`, giving the exact
//! sums of each half; and one conversion and fused multiply-add per
//! half (or sub-block) with the row's exact f32 scale `d·sc` accumulate
//! it, as the portable reference does.

use std::arch::x86_64::*;

use crate::kernels::block_format::QK;
use crate::kernels::columns_out::ColumnsOut;
use crate::kernels::int8::Q8Rows;
use crate::kernels::plane::format::{Layout, Mins, Plane, PlaneFormat, SubScales};

/// Rows per panel.
const W: usize = 8;
/// Activation rows sharing one unpacked sub-block.
const TILE: usize = 4;

/// Whether this CPU can run this build.
pub fn available() -> bool {
    crate::kernels::Isa::Avx2.supported()
}

/// `out[j, r] = w_r · x_j` for whole panels `w` and every row of `x`.
///
/// # Safety
/// The CPU must support this build ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
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
#[target_feature(enable = "avx2,fma,f16c")]
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

/// Eight bytes from `at` widened to 32-bit lanes, signed or not.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bytes_at(blk: &[u8], at: usize, signed: bool) -> __m256i {
    let b = &blk[at..at + W];
    // SAFETY: `b` holds eight bytes.
    let v = unsafe { _mm_loadl_epi64(b.as_ptr().cast()) };
    if signed {
        _mm256_cvtepi8_epi32(v)
    } else {
        _mm256_cvtepu8_epi32(v)
    }
}

/// Eight f16 values from `at`, widened.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn halves_at(blk: &[u8], at: usize) -> __m256 {
    let b = &blk[at..at + 2 * W];
    // SAFETY: `b` holds 16 bytes.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().cast())) }
}

/// Sub-block `s`'s codes: register `t` holds values `4t..4t + 4` of every
/// row. Inlined into each type's kernel, where its planes are constants.
///
/// # Safety
/// Only called from this build's kernels (the CPU has its features).
#[inline(always)]
unsafe fn codes<const F: u8>(layout: &Layout, blk: &[u8], s: usize) -> [__m256i; 8] {
    let planes = PlaneFormat::of(F).spec().planes;
    let mut w = [_mm256_setzero_si256(); 8];
    let mut shift = 0i32;
    for (k, &plane) in planes.iter().enumerate() {
        let at = layout.plane_at(planes, s, k);
        let bytes = &blk[at..at + plane.bytes(W)];
        let p = bytes.as_ptr();
        let mask = _mm256_set1_epi8(((1u32 << plane.bits()) - 1) as i8);
        let left = _mm_cvtsi32_si128(shift);
        // SAFETY: `bytes` holds the plane: 4, 2 or 1 vectors of 32 bytes.
        let loaded: [__m256i; 4] = std::array::from_fn(|g| {
            if g * 32 < bytes.len() {
                unsafe { _mm256_loadu_si256(p.add(g * 32).cast()) }
            } else {
                _mm256_setzero_si256()
            }
        });
        for (t, w) in w.iter_mut().enumerate() {
            let (v, right) = match plane {
                Plane::Nibble => (loaded[t % 4], 4 * (t / 4) as i32),
                Plane::Two => (loaded[t / 4], 2 * (t % 4) as i32),
                Plane::One => (loaded[0], t as i32),
            };
            let part = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(right)), mask);
            *w = _mm256_or_si256(*w, _mm256_sll_epi16(part, left));
        }
        shift += plane.bits() as i32;
    }
    if let Some(table) = PlaneFormat::of(F).spec().lookup {
        // Each index becomes its signed table value: `maddubs` cannot take
        // the table + 128 (up to 241 overflows its pair sums), so these
        // codes go through the sign trick instead ([`half_sum_signed`]).
        let codes: [u8; 16] = std::array::from_fn(|i| table[i] as u8);
        // SAFETY: `codes` holds 16 bytes.
        let t = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(codes.as_ptr().cast()) });
        for w in &mut w {
            *w = _mm256_shuffle_epi8(t, *w);
        }
    }
    w
}

/// How many `maddubs` results may be added in 16 bits: each is at most
/// `2 · max_code · 127`.
const fn sum_group(planes: &[Plane]) -> usize {
    let mut bits = 0;
    let mut i = 0;
    while i < planes.len() {
        bits += planes[i].bits();
        i += 1;
    }
    let per = 2 * ((1usize << bits) - 1) * 127;
    let fit = i16::MAX as usize / per;
    if fit >= 4 {
        4
    } else {
        fit
    }
}

/// The exact sums `Σ code · x` over four registers (values `at..at + 16` of
/// `x`), each 32-bit lane one row's.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_sum(w: &[__m256i], x: &[i8], at: usize, group: usize) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let mut total = _mm256_setzero_si256();
    for (g, regs) in w.chunks(group).enumerate() {
        let mut s16 = _mm256_setzero_si256();
        for (t, reg) in regs.iter().enumerate() {
            let p = _mm256_maddubs_epi16(*reg, quad(x, at + 4 * (g * group + t)));
            s16 = _mm256_add_epi16(s16, p);
        }
        total = _mm256_add_epi32(total, _mm256_madd_epi16(s16, ones));
    }
    total
}

/// The exact sums `Σ w · x` over four registers of signed codes (a table
/// type's values), each 32-bit lane one row's: `maddubs(|w|, sign(x, w))`,
/// whose pairs stay below 2^15.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_sum_signed(w: &[__m256i], x: &[i8], at: usize) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let mut total = _mm256_setzero_si256();
    for (t, reg) in w.iter().enumerate() {
        let xs = _mm256_sign_epi8(quad(x, at + 4 * t), *reg);
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(*reg, *reg), xs);
        total = _mm256_add_epi32(total, _mm256_madd_epi16(p, ones));
    }
    total
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
    let format = PlaneFormat::of(F);
    let spec = format.spec();
    let layout = Layout::new(format, W);
    assert_eq!(panel.len() / layout.block_bytes * spec.subs, x.cols() / QK);
    let xt = x.tile::<T>(j0);
    let fzero = _mm256_setzero_ps();
    let group = sum_group(spec.planes);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut mo = [_mm256_setzero_ps(); T];
    // Each sub-block requests its share of a block ahead: a whole block's
    // lines at once would stall on the fill buffers.
    let share = layout.block_bytes.div_ceil(spec.subs).next_multiple_of(64);
    for (b, blk) in panel.chunks_exact(layout.block_bytes).enumerate() {
        let d = halves_at(blk, 0);
        let second = if spec.mins == Mins::None {
            _mm256_setzero_ps()
        } else {
            halves_at(blk, layout.second_at)
        };
        for s in 0..spec.subs {
            // The rows' exact f32 scales of each half: d · sc and dmin · m.
            let sc = |h: usize| {
                let h = h.min(layout.scales_per_sub.max(1) - 1);
                let at = layout.scales_at + (s * layout.scales_per_sub + h) * W;
                _mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_at(blk, at, true)))
            };
            let mn = |h: usize| {
                let h = h.min(layout.mins_per_sub.max(1) - 1);
                let at = layout.mins_at + (s * layout.mins_per_sub + h) * W;
                _mm256_mul_ps(second, _mm256_cvtepi32_ps(bytes_at(blk, at, false)))
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
                let (lo, hi) = if spec.lookup.is_some() {
                    (
                        half_sum_signed(&w[..4], xq, 0),
                        half_sum_signed(&w[4..], xq, 16),
                    )
                } else {
                    (
                        half_sum(&w[..4], xq, 0, group),
                        half_sum(&w[4..], xq, 16, group),
                    )
                };
                let q_hi = q_all - q_lo;
                // Signed table codes are their values already: no bias.
                let bias = if spec.lookup.is_some() { 0 } else { spec.bias };
                let vdx = _mm256_set1_ps(dx);
                if spec.scales == SubScales::Per16 {
                    let i_lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(bias * q_lo));
                    let i_hi = _mm256_sub_epi32(hi, _mm256_set1_epi32(bias * q_hi));
                    acc[k] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(i_lo), _mm256_mul_ps(dsc0, vdx), acc[k]);
                    acc[k] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(i_hi), _mm256_mul_ps(dsc1, vdx), acc[k]);
                } else {
                    // `I_lo + I_hi = Σ u·q − bias · Σq`, exactly.
                    let i_sum = _mm256_sub_epi32(
                        _mm256_add_epi32(lo, hi),
                        _mm256_set1_epi32(bias * q_all),
                    );
                    acc[k] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(i_sum),
                        _mm256_mul_ps(dsc0, vdx),
                        acc[k],
                    );
                }
                match (spec.mins, spec.scales) {
                    (Mins::Int, SubScales::Per16) => {
                        mo[k] = _mm256_fmadd_ps(dm0, _mm256_set1_ps(qd[1]), mo[k]);
                        mo[k] = _mm256_fmadd_ps(dm1, _mm256_set1_ps(qd[2]), mo[k]);
                    }
                    (Mins::Int, _) => {
                        mo[k] = _mm256_fmadd_ps(dm0, _mm256_set1_ps(qd[0]), mo[k]);
                    }
                    (Mins::Float, _) => {
                        mo[k] = _mm256_fmadd_ps(second, _mm256_set1_ps(sx), mo[k]);
                    }
                    (Mins::None, _) => {}
                }
            });
        }
    }
    each_row!(T, k => {
        let v = match spec.mins {
            Mins::Int => _mm256_sub_ps(acc[k], mo[k]),
            Mins::Float => _mm256_add_ps(acc[k], mo[k]),
            Mins::None => acc[k],
        };
        let mut lanes = [0.0f32; W];
        // SAFETY: `lanes` holds eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        for (i, v) in lanes.into_iter().enumerate() {
            o.set(r0 + i, j0 + k, v);
        }
    });
}
