//! What the attention kernels ([`crate::layers::attention`],
//! [`crate::families::deepseek::mla_attention`]) share: [`fastest!`], which
//! compiles a kernel for the widest vector units and picks the build at run
//! time from the process's level ([`crate::kernels::Isa::best`]; so a
//! generic build is fast, unlike candle's `cfg(target_feature)`), and the
//! dot product and scaled addition of latent attention.
//!
//! The dot product uses no fused multiply-adds and folds its lanes in a
//! fixed order, so every build (AVX-512, AVX2, portable) gives the same
//! bits.

/// Lanes of the dot products' partial sums: one AVX-512 register, two
/// AVX2 ones.
pub(crate) const LANES: usize = 16;

/// Defines `fn $name(args) -> ret` that calls `$kernel(args)` compiled with
/// `$avx512` or `$avx2` target features enabled, as the process's level
/// ([`crate::kernels::Isa::best`]) allows: the AVX-512 build at
/// [`crate::kernels::Isa::Avx512`] and above, the AVX2 build at
/// [`crate::kernels::Isa::Avx2`], else the portable build. `$avx512` may
/// enable only features of the `avx512` level (AVX-512F, AVX2, FMA, F16C),
/// `$avx2` only those of the `avx2` level (AVX2, FMA, F16C). `$kernel`
/// should be `#[inline(always)]` so each build inlines it; it decides the
/// arithmetic, the features only the instructions.
macro_rules! fastest {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $kernel:ident;
        avx512: $avx512:literal, avx2: $avx2:literal
    ) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::kernels::Isa;
                #[target_feature(enable = $avx512)]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $kernel($($arg),*)
                }
                #[target_feature(enable = $avx2)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $kernel($($arg),*)
                }
                let isa = Isa::best();
                if isa >= Isa::Avx512 {
                    debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
                    // SAFETY: the CPU has AVX-512F, AVX2 and FMA: the level
                    // includes them, and `Isa::best` only picks levels this
                    // CPU runs.
                    return unsafe { avx512($($arg),*) };
                }
                if isa >= Isa::Avx2 {
                    debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
                    // SAFETY: the CPU has AVX2 and FMA: the level includes
                    // them, and `Isa::best` only picks levels this CPU runs.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $kernel($($arg),*)
        }
    };
}
pub(crate) use fastest;

/// Folds [`LANES`] partial sums pairwise in a fixed order, then adds the tail.
#[inline(always)]
fn fold(mut lanes: [f32; LANES], tail: f32) -> f32 {
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            lanes[i] += lanes[i + n];
        }
    }
    lanes[0] + tail
}

/// `Σ a_i · b_i`: [`LANES`] partial sums (element `i` goes to lane `i mod
/// LANES`) halved pairwise in a fixed order, then the tail of the last
/// `len mod LANES` elements added one by one. No fused multiply-adds, so
/// every build gives the same bits. ([`dots`] computes several at once;
/// this is the tests' reference.)
#[cfg(test)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let [[d]] = dots::<1, 1>(a, &[0], b, &[0], a.len());
    d
}

/// The dot products of `K` queries with `R` rows, `[row][query]`, each
/// bit for bit [`dot`]`(query, row)`: query `k` is `q[q_at[k]..][..n]`,
/// row `r` is `rows[row_at[r]..][..n]`. The `K · R` partial sums stay in
/// registers, so each step of [`LANES`] loads `K + R` vectors for `K · R`
/// products (a plain dot product loads two for one).
#[inline(always)]
pub(crate) fn dots<const K: usize, const R: usize>(
    q: &[f32],
    q_at: &[usize; K],
    rows: &[f32],
    row_at: &[usize; R],
    n: usize,
) -> [[f32; K]; R] {
    let q: [&[f32]; K] = std::array::from_fn(|k| &q[q_at[k]..][..n]);
    let rows: [&[f32]; R] = std::array::from_fn(|r| &rows[row_at[r]..][..n]);
    let qc: [&[[f32; LANES]]; K] = std::array::from_fn(|k| q[k].as_chunks().0);
    let rc: [&[[f32; LANES]]; R] = std::array::from_fn(|r| rows[r].as_chunks().0);
    let steps = n / LANES;
    // One partial-sum vector per (row, query) pair, `r · K + k`: a flat
    // array the compiler keeps in registers.
    let mut lanes = [[0.0f32; LANES]; 8];
    assert!(K * R <= lanes.len(), "at most eight products at once");
    for c in 0..steps {
        for (p, lane) in lanes.iter_mut().enumerate().take(K * R) {
            let (x, y) = (&rc[p / K][c], &qc[p % K][c]);
            for l in 0..LANES {
                lane[l] += y[l] * x[l];
            }
        }
    }
    let lanes: [[[f32; LANES]; K]; R] =
        std::array::from_fn(|r| std::array::from_fn(|k| lanes[r * K + k]));
    std::array::from_fn(|r| {
        std::array::from_fn(|k| {
            let mut tail = 0.0f32;
            for i in steps * LANES..n {
                tail += q[k][i] * rows[r][i];
            }
            fold(lanes[r][k], tail)
        })
    })
}

/// `e^x` for the scores of a softmax minus their maximum (`x ≤ 0`), to
/// about one ulp, in operations every build vectorizes and computes alike:
/// `e^x = 2^n · e^r` with `n = round(x / ln 2)`, `|r| ≤ ln 2 / 2` by
/// Cody–Waite reduction, `e^r` by its Taylor polynomial of degree 7 (error
/// below `r^8 / 8! < 7e-9`) in fused multiply-adds. Below `-87` it returns
/// `e^-87` (a normal number) rather than a subnormal: nothing a softmax
/// would notice.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const C: [f32; 8] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
    ];
    let x = x.clamp(-87.0, 0.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = C[7];
    for &c in C[..7].iter().rev() {
        p = p.mul_add(r, c);
    }
    // `n ∈ [-126, 0]`: `2^n` is a normal number.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// A softmax's numerators in place: each score becomes `e^(score − max)`;
/// returns their sum. The maximum and the sum run in [`LANES`] lanes
/// folded in a fixed order, so the loop vectorizes and a row's bits depend
/// on nothing but the row.
#[inline(always)]
pub(crate) fn softmax_numerators(row: &mut [f32]) -> f32 {
    let (chunks, tail) = row.as_chunks::<LANES>();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for l in 0..LANES {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    let max = lanes
        .into_iter()
        .chain(tail.iter().copied())
        .fold(f32::NEG_INFINITY, f32::max);
    let (chunks, tail) = row.as_chunks_mut::<LANES>();
    let mut sums = [0.0f32; LANES];
    for c in chunks {
        for l in 0..LANES {
            c[l] = exp_nonpositive(c[l] - max);
            sums[l] += c[l];
        }
    }
    let mut rest = 0.0f32;
    for v in tail {
        *v = exp_nonpositive(*v - max);
        rest += *v;
    }
    fold(sums, rest)
}

/// `acc += a · x`, element by element.
#[inline(always)]
pub(crate) fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in acc.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.731).sin()).collect()
    }

    #[test]
    fn the_softmax_exponential_is_within_two_ulp_of_exp() {
        // 200,001 points over [-87, 0], both ends included.
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            let ulp = f64::from(f32::EPSILON) * want;
            assert!((got - want).abs() <= 2.0 * ulp, "e^{x}: {got} vs {want}");
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1000.0), exp_nonpositive(-87.0));
    }

    #[test]
    fn softmax_numerators_are_the_exponentials_and_their_sum() {
        for n in [1, 15, 16, 17, 100] {
            let mut row: Vec<f32> = values(n, 0.5).iter().map(|v| v * 20.0).collect();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let want: Vec<f64> = row.iter().map(|&v| f64::from(v - max).exp()).collect();
            let sum = softmax_numerators(&mut row);
            for (got, want) in row.iter().zip(&want) {
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-6 * want.max(1e-30),
                    "{got} vs {want}"
                );
            }
            let total: f64 = want.iter().sum();
            assert!(
                (f64::from(sum) - total).abs() < 1e-5 * total,
                "n {n}: {sum} vs {total}"
            );
        }
    }

    /// The definition, element by element: lane `i mod LANES`, the lanes
    /// halved pairwise, then the tail.
    fn dot_by_index(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0.0f32; LANES];
        let whole = a.len() / LANES * LANES;
        for i in 0..whole {
            lanes[i % LANES] += a[i] * b[i];
        }
        let tail = (whole..a.len()).fold(0.0f32, |t, i| t + a[i] * b[i]);
        let mut n = LANES;
        while n > 1 {
            n /= 2;
            for i in 0..n {
                lanes[i] += lanes[i + n];
            }
        }
        lanes[0] + tail
    }

    #[test]
    fn every_product_of_a_block_is_the_single_dot_product() {
        for n in [0usize, 5, 16, 40, 576] {
            let q = values(3 * n + 7, 0.5);
            let rows = values(2 * n + 3, 9.0);
            let (q_at, row_at) = ([7, 0, n], [3, n + 3]);
            let got = dots::<3, 2>(&q, &q_at, &rows, &row_at, n);
            for (r, &ra) in row_at.iter().enumerate() {
                for (k, &qa) in q_at.iter().enumerate() {
                    let one = dot(&q[qa..][..n], &rows[ra..][..n]);
                    assert_eq!(got[r][k].to_bits(), one.to_bits(), "n {n}");
                }
            }
        }
    }

    #[test]
    fn the_dot_product_is_its_definition_in_either_order() {
        for n in [0usize, 5, 32, 40, 77, 576] {
            let (a, b) = (values(n, 1.0), values(n, 2.5));
            let d = dot(&a, &b);
            assert_eq!(d.to_bits(), dot_by_index(&a, &b).to_bits(), "n {n}");
            assert_eq!(d.to_bits(), dot(&b, &a).to_bits(), "n {n}");
            let [[two]] = dots::<1, 1>(&b, &[0], &a, &[0], n);
            assert_eq!(d.to_bits(), two.to_bits(), "n {n}");
            let exact: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(d) - exact).abs() < 1e-4, "n {n}");
        }
    }
}
