//! pagoda's own CPU kernels, and the one place that decides which build of
//! them runs.
//!
//! The folder holds the GGUF block layouts (`block_format`), the
//! f32-activation block and dense kernels ([`f32`](mod@f32)), the 8-bit activation
//! quantizer ([`int8`]), the 8-bit-activation panel kernels ([`panel`]),
//! the attention kernels' vector helpers (`vector`: the `fastest!` macro and
//! the fixed-order dot products), the worker team every parallel loop runs
//! on ([`team`]) and the parallel fill of a product's columns
//! (`columns_out`). Each family has a portable build (the reference the
//! others are tested against) and builds for wider vector units in its own
//! files (`avx2.rs`, `avx512.rs`).
//!
//! **Dispatch.** Every family asks [`Isa::best`] which build to run; no
//! other code looks at the CPU's features. The levels are ordered, each a
//! superset of the one before:
//!
//! | `PAGODA_KERNELS` | needs | f32 kernels, quantizer | panels | attention |
//! |---|---|---|---|---|
//! | `portable` | — | portable | portable (8 rows) | portable |
//! | `avx2` | AVX2, FMA, F16C | AVX2 | AVX2 (8 rows) | AVX2 |
//! | `avx512` | + AVX-512F | AVX2 | AVX2 (8 rows) | AVX-512 |
//! | `avx512-vnni` | + AVX-512 BW, VL, VNNI | AVX2 | VNNI (16 rows) | AVX-512 |
//!
//! The level is decided once per process: the fastest this CPU runs, unless
//! the environment variable `PAGODA_KERNELS` names another level the CPU
//! runs (a diagnostic switch: every build gives the same bits); a name it
//! cannot run is warned about and the fastest is used. Each SIMD file
//! still checks its own features (`available()`) in an assertion before
//! its unsafe entry point.

/// Runs `$body` once for each of a kernel tile's `$t` rows (a constant up to
/// 8) with `$k` bound to the row, written out rather than looped, so that
/// per-row accumulators indexed by `$k` stay in registers.
macro_rules! each_row {
    ($t:expr, $k:ident => $body:block) => {
        each_row!(@rows $t, $k, $body, 0 1 2 3 4 5 6 7)
    };
    (@rows $t:expr, $k:ident, $body:block, $($n:literal)*) => {
        $(
            if $n < $t {
                let $k: usize = $n;
                $body
            }
        )*
    };
}

pub(crate) use each_row;

pub(crate) mod block_format;
pub(crate) mod columns_out;
pub mod f32;
pub mod half_precision;
pub mod int8;
pub mod panel;
pub mod plane;
pub mod team;
pub(crate) mod vector;

pub use block_format::BlockFormat;

/// How far ahead of the block a panel kernel computes its bytes are
/// prefetched: a decode step streams the weights from memory once, and the
/// hardware prefetcher stops at page boundaries.
pub(crate) const PREFETCH: usize = 4096;

/// Requests into L2 the `len` bytes [`PREFETCH`] past `block` (L2's queue
/// holds more misses in flight than L1's fill buffers). Never faults,
/// whatever the address.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead(block: *const u8, len: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    let ahead = block.wrapping_add(PREFETCH);
    for line in (0..len).step_by(64) {
        // SAFETY: a prefetch is a hint: it never faults and changes no state.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(line).cast()) };
    }
}

/// The instruction-set levels pagoda's kernels are built for, slowest
/// first; each includes the features of the ones before (see the module
/// doc for the build each family runs at each level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust (the reference the others are tested against).
    Portable,
    /// AVX2 + FMA + F16C: every family's AVX2 build (`maddubs`/`madd`
    /// panel dot products, 8-row panels).
    Avx2,
    /// AVX-512F on top: attention's AVX-512 build; the other families
    /// keep their AVX2 builds.
    Avx512,
    /// AVX-512 BW, VL and VNNI on top: the panels' `vpdpbusd` build with
    /// 16-row panels.
    Avx512Vnni,
}

impl Isa {
    /// Every level, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    /// Whether this CPU has every feature of the level.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Portable => true,
                Isa::Avx2 => has!("avx2") && has!("fma") && has!("f16c"),
                Isa::Avx512 => Isa::Avx2.supported() && has!("avx512f"),
                Isa::Avx512Vnni => {
                    Isa::Avx512.supported()
                        && has!("avx512bw")
                        && has!("avx512vl")
                        && has!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }

    /// Every level this CPU runs, the portable one first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    /// The level the process runs: the fastest this CPU runs, unless
    /// `PAGODA_KERNELS` names another available one (`portable`, `avx2`,
    /// `avx512`, `avx512-vnni`: a diagnostic switch; every build gives the
    /// same bits). Decided once.
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let requested = std::env::var("PAGODA_KERNELS").ok();
            choose(&Isa::available(), requested.as_deref())
        })
    }

    /// The level's name in logs and in `PAGODA_KERNELS`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }

    /// The level a name in `PAGODA_KERNELS` stands for.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// The level to run among `available` (ascending, never empty in
/// practice): `requested` if it names one of them, else the fastest (with
/// a warning when a name was given).
fn choose(available: &[Isa], requested: Option<&str>) -> Isa {
    let fastest = available.last().copied().unwrap_or(Isa::Portable);
    let Some(name) = requested else {
        return fastest;
    };
    match Isa::from_name(name).filter(|i| available.contains(i)) {
        Some(chosen) => chosen,
        None => {
            tracing::warn!(
                requested = %name,
                using = fastest.name(),
                "PAGODA_KERNELS names no build this CPU runs"
            );
            fastest
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa), "{isa:?}");
        }
        assert_eq!(Isa::from_name("avx512vnni"), None);
        assert_eq!(Isa::from_name(""), None);
    }

    #[test]
    fn levels_are_ordered_and_each_includes_the_ones_before() {
        assert!(Isa::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(Isa::Portable < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        assert!(Isa::Avx512 < Isa::Avx512Vnni);
        let available = Isa::available();
        assert_eq!(available.first(), Some(&Isa::Portable));
        // A CPU runs a prefix of the levels.
        assert_eq!(available[..], Isa::ALL[..available.len()]);
        assert!(available.contains(&Isa::best()));
    }

    #[test]
    fn a_request_is_honoured_only_for_an_available_level() {
        let some = [Isa::Portable, Isa::Avx2];
        assert_eq!(choose(&some, None), Isa::Avx2);
        assert_eq!(choose(&some, Some("portable")), Isa::Portable);
        assert_eq!(choose(&some, Some("avx512-vnni")), Isa::Avx2);
        assert_eq!(choose(&some, Some("fast")), Isa::Avx2);
        assert_eq!(choose(&[Isa::Portable], Some("avx2")), Isa::Portable);
    }
}
