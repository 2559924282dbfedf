//! AVX2 build of the activation quantizer of [`crate::kernels::int8`]:
//! the same scales and bytes as the portable one, bit for bit.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use half::f16;

use crate::kernels::block_format::QK;

/// Whether this CPU can run these kernels.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Quantizes `x` block by block into `qs`, with per-block `d` and `s`
/// exactly as the portable build computes them.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    (sums, sums_lo): (&mut [i32], &mut [i32]),
) {
    assert!(
        x.len() == qs.len()
            && x.len() == d.len() * QK
            && d.len() == s.len()
            && d.len() == sums.len()
            && d.len() == sums_lo.len()
    );
    let sign = _mm256_set1_ps(-0.0);
    for (((((xb, qb), d), s), block_sum), block_sum_lo) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK))
        .zip(d.iter_mut())
        .zip(s.iter_mut())
        .zip(sums.iter_mut())
        .zip(sums_lo.iter_mut())
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
            // `max_ps` returns its second operand when either is NaN: with
            // the running maximum second, NaNs are skipped like `f32::max`.
            let mut amax = _mm256_setzero_ps();
            for vk in &v {
                amax = _mm256_max_ps(_mm256_andnot_ps(sign, *vk), amax);
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m1 = _mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1));
            let max = _mm_cvtss_f32(m1);
            let dv = max / 127.0;
            let id = _mm256_set1_ps(if dv > 0.0 { 1.0 / dv } else { 0.0 });
            let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
            let i = v.map(|vk| {
                let r = _mm256_round_ps(
                    _mm256_mul_ps(vk, id),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                );
                // As the portable build: NaN becomes 0, anything else is
                // clamped to ±127 (so sums stay within ±4064).
                let r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
                _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
            });
            let lo = _mm256_add_epi32(i[0], i[1]);
            let sum_lo = horizontal_sum(lo);
            let sum = horizontal_sum(_mm256_add_epi32(lo, _mm256_add_epi32(i[2], i[3])));
            // Pack 32 × i32 into 32 × i8 in order (packs work per 128-bit lane).
            let w01 = _mm256_packs_epi32(i[0], i[1]);
            let w23 = _mm256_packs_epi32(i[2], i[3]);
            let b = _mm256_packs_epi16(w01, w23);
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(qb.as_mut_ptr().cast(), b);
            *d = f16::from_f32(dv).to_f32();
            *s = f16::from_f32(dv * sum as f32).to_f32();
            *block_sum = sum;
            *block_sum_lo = sum_lo;
        }
    }
}

/// The sum of eight 32-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn horizontal_sum(v: __m256i) -> i32 {
    let t4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let t2 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0b01_00_11_10));
    let t1 = _mm_add_epi32(t2, _mm_shuffle_epi32(t2, 0b10_11_00_01));
    _mm_cvtsi128_si32(t1)
}
