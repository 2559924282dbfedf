//! The AVX2 build of the panel kernels of [`crate::panel_matrix`]
//! (`maddubs` + `madd`; the AVX-512 VNNI build is
//! [`crate::panel_kernels_avx512`]). The body is written once as a macro so
//! that another 256-bit dot product can reuse it.
//!
//! Per block, a panel's four rows unpack into four registers, two rows per
//! register (`[A lo | B lo]`, `[A hi | B hi]`, the same for C, D), and meet
//! up to four activation rows, each broadcast to both halves; the scales of
//! the four rows convert in one `vcvtph2ps`. Signed weights (Q4_0, Q8_0)
//! use the sign trick: `|w|` times `x` with `w`'s sign. The integer lane
//! sums are exact, so the build gives the portable reference's bits.

#![cfg(target_arch = "x86_64")]

macro_rules! panel_kernels {
    ($(#[$doc:meta])* $name:ident, $features:literal, detect: $detect:expr,
     dot: |$acc:ident, $u:ident, $s:ident| $dot:expr) => {
        $(#[$doc])*
        pub mod $name {
            use std::arch::x86_64::*;

            use crate::panel_matrix::{panel_block_bytes, scale_bytes, PANEL};
            use crate::qmatmul::BlockFormat;
            use crate::qmatmul_int8::{Q8Rows, QK};

            /// Activation rows sharing one unpacked panel block.
            const TILE: usize = 4;

            /// Whether this CPU can run this build.
            pub fn available() -> bool {
                $detect
            }

            /// `lane sums += u8 × i8 products`, four adjacent bytes per lane.
            #[inline]
            #[target_feature(enable = $features)]
            fn dot($acc: __m256i, $u: __m256i, $s: __m256i) -> __m256i {
                $dot
            }

            /// `out[r * m + j] = w_r · x_j` for whole panels `w` (padding
            /// rows included) and every row of `x`.
            ///
            /// # Safety
            /// The CPU must support this build ([`available`]).
            #[target_feature(enable = $features)]
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
            #[target_feature(enable = $features)]
            fn run<const F: u8>(w: &[u8], x: &Q8Rows, out: &mut [f32]) {
                let format = format_of(F);
                let (m, cols) = (x.rows(), x.cols());
                let panel_bytes = cols / QK * panel_block_bytes(format);
                assert!(
                    w.len().is_multiple_of(panel_bytes)
                        && out.len() == w.len() / panel_bytes * PANEL * m
                );
                for (panel, o) in w.chunks_exact(panel_bytes).zip(out.chunks_exact_mut(PANEL * m)) {
                    let mut j = 0;
                    while j < m {
                        let t = (m - j).min(TILE);
                        match t {
                            1 => tile::<F, 1>(panel, x, j, o),
                            2 => tile::<F, 2>(panel, x, j, o),
                            3 => tile::<F, 3>(panel, x, j, o),
                            _ => tile::<F, TILE>(panel, x, j, o),
                        }
                        j += t;
                    }
                }
            }

            /// One panel against activation rows `j0 .. j0 + T`.
            #[inline]
            #[target_feature(enable = $features)]
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
                let mut acc0 = [_mm256_setzero_ps(); T];
                let mut acc1 = [_mm256_setzero_ps(); T];
                let mut off = [_mm_setzero_ps(); T];
                let idx_ab = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
                let idx_cd = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
                let nibble = _mm256_set1_epi8(0x0F);
                for (b, blk) in panel.chunks_exact(pbb).enumerate() {
                    // SAFETY: `blk` holds `pbb` bytes: the scales (8 or 16
                    // bytes) and 64 (Q4) or 128 (Q8_0) bytes of quants.
                    let (d4, m4, w) = unsafe {
                        let p = blk.as_ptr();
                        let d4 = _mm_cvtph_ps(_mm_loadl_epi64(p.cast()));
                        let m4 = if F == 1 {
                            _mm_cvtph_ps(_mm_loadl_epi64(p.add(8).cast()))
                        } else {
                            _mm_setzero_ps()
                        };
                        let q = p.add(sb);
                        let w = if F == 2 {
                            [
                                _mm256_loadu_si256(q.cast()),
                                _mm256_loadu_si256(q.add(64).cast()),
                                _mm256_loadu_si256(q.add(32).cast()),
                                _mm256_loadu_si256(q.add(96).cast()),
                            ]
                        } else {
                            let v0 = _mm256_loadu_si256(q.cast());
                            let v1 = _mm256_loadu_si256(q.add(32).cast());
                            [
                                _mm256_and_si256(v0, nibble),
                                _mm256_and_si256(_mm256_srli_epi16(v0, 4), nibble),
                                _mm256_and_si256(v1, nibble),
                                _mm256_and_si256(_mm256_srli_epi16(v1, 4), nibble),
                            ]
                        };
                        (d4, m4, w)
                    };
                    let w = if F == 0 { w.map(|v| _mm256_sub_epi8(v, _mm256_set1_epi8(8))) } else { w };
                    let signed = F != 1;
                    let a = if signed { w.map(|v| _mm256_sign_epi8(v, v)) } else { w };
                    let d8 = _mm256_castps128_ps256(d4);
                    let d_ab = _mm256_permutevar8x32_ps(d8, idx_ab);
                    let d_cd = _mm256_permutevar8x32_ps(d8, idx_cd);
                    for k in 0..T {
                        let xq = &qs[k][b * QK..(b + 1) * QK];
                        // SAFETY: `xq` holds 32 bytes.
                        let (xl, xh) = unsafe {
                            (
                                _mm256_broadcastsi128_si256(_mm_loadu_si128(xq.as_ptr().cast())),
                                _mm256_broadcastsi128_si256(_mm_loadu_si128(xq.as_ptr().add(16).cast())),
                            )
                        };
                        let xs = if signed {
                            [
                                _mm256_sign_epi8(xl, w[0]),
                                _mm256_sign_epi8(xh, w[1]),
                                _mm256_sign_epi8(xl, w[2]),
                                _mm256_sign_epi8(xh, w[3]),
                            ]
                        } else {
                            [xl, xh, xl, xh]
                        };
                        let z = _mm256_setzero_si256();
                        let i0 = dot(dot(z, a[0], xs[0]), a[1], xs[1]);
                        let i1 = dot(dot(z, a[2], xs[2]), a[3], xs[3]);
                        let dx = _mm256_set1_ps(ds[k][b]);
                        acc0[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(d_ab, dx), acc0[k]);
                        acc1[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(d_cd, dx), acc1[k]);
                        if F == 1 {
                            off[k] = _mm_fmadd_ps(m4, _mm_set1_ps(ss[k][b]), off[k]);
                        }
                    }
                }
                for k in 0..T {
                    // [A0+A1, A2+A3, C0+C1, C2+C3 | B.., D..], then [A, C, A, C | B, D, B, D].
                    let h1 = _mm256_hadd_ps(acc0[k], acc1[k]);
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
        }
    };
}

panel_kernels! {
    /// AVX2 + FMA + F16C.
    avx2, "avx2,fma,f16c",
    detect: std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c"),
    dot: |acc, u, s| _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
}
