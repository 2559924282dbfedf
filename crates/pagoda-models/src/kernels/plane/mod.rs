//! pagoda's kernels for the GGUF types beyond Q4_0/Q4_1/Q8_0 — the
//! K-quants (Q2_K … Q6_K, what most downloaded GGUFs are), Q5_0/Q5_1 and
//! IQ4_NL — with weights repacked at load into **bit-plane panels**.
//!
//! Every such type is, per 32-value sub-block, unsigned integer codes of 2
//! to 6 bits with integer sub-scales and minimums under f16 block scales
//! ([`format`], [`decode`]). At load, each GGUF block of `W` rows (16 for
//! the AVX-512 VNNI build, 8 otherwise, as [`crate::kernels::panel`]) is
//! rewritten as one panel block: the f16 scales of the `W` rows side by
//! side, their sub-scales and minimums as bytes, then each sub-block's codes
//! split into planes of 4, 2 and 1 bits, four values of a row side by side.
//! One vector load and a shift and mask per plane give, for all `W` rows at
//! once, four codes each in one 32-bit lane: what `vpdpbusd` (or `maddubs`)
//! multiplies with four broadcast activation bytes. The panel blocks take
//! the GGUF block's bytes plus at most one byte per 16 values per row.
//!
//! **The arithmetic** (activations quantized to 8 bits per 32 values by
//! [`crate::kernels::int8`]), identical in every build: per sub-block and
//! half `h` (values 0..16 and 16..32), the exact integer
//! `I_h = Σ_h u·q − bias · Σ_h q`; the row's exact f32 scale `d·sc_h`
//! (`d` alone without sub-scales) times the activations' `d_x`; then
//! `acc = fma(I as f32, d·sc·d_x, acc)` with `I = I_lo + I_hi` for one
//! sub-scale per sub-block, or one such step per half for a sub-scale per
//! 16 values. Integer minimums add `mo = fma(dmin·m_h, (Σ_h q as f32)·d_x,
//! mo)` likewise and the result is `acc − mo`; Q5_1's f16 minimum adds
//! `fma(m, s_x, mo)` and the result is `acc + mo`. So every build gives the
//! same bits, and a row's result never depends on the rows computed with it
//! (batch invariance).
//!
//! With f32 activations ([`PlaneMatrix::matmul_f32`]) each weight row is
//! dequantized (as ggml does) and multiplied in f32 with a fixed summation
//! order: the dense reference up to summation order.

pub(crate) mod decode;
pub mod format;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use rayon::prelude::*;

use crate::kernels::block_format::QK;
use crate::kernels::columns_out::ColumnsOut;
use crate::kernels::int8::{ActivationPasses, Int8Weights, Q8Rows};
use crate::kernels::panel::panel_width;
use crate::kernels::Isa;
use decode::{Decoded, Sub};
pub use format::PlaneFormat;
use format::{Layout, Mins, Plane, SubScales};

/// Why GGUF bytes do not form a matrix of a type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlaneLayoutError(String);

/// A `[rows, cols]` matrix of a bit-plane type, in panels for one kernel build.
#[derive(Debug, Clone)]
pub struct PlaneMatrix {
    format: PlaneFormat,
    rows: usize,
    cols: usize,
    isa: Isa,
    data: Vec<u8>,
}

impl PlaneMatrix {
    /// Repacks a row-major GGUF `[rows, cols]` matrix of `format` for the
    /// process's level ([`Isa::best`]).
    pub fn from_gguf(
        format: PlaneFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, PlaneLayoutError> {
        Self::for_isa(format, rows, cols, bytes, Isa::best())
    }

    /// Repacks for the panel build of level `isa` (which the CPU must
    /// support to multiply with it).
    pub fn for_isa(
        format: PlaneFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        isa: Isa,
    ) -> Result<Self, PlaneLayoutError> {
        let per = format.block_values();
        if cols == 0 || !cols.is_multiple_of(per) {
            return Err(PlaneLayoutError(format!(
                "rows of {cols} values are not whole {format:?} blocks of {per}"
            )));
        }
        let nb = cols / per;
        let gguf = format.block_bytes();
        if rows.checked_mul(nb * gguf) != Some(bytes.len()) {
            return Err(PlaneLayoutError(format!(
                "{} bytes do not hold a [{rows}, {cols}] {format:?} matrix",
                bytes.len()
            )));
        }
        let width = panel_width(isa);
        let layout = Layout::new(format, width);
        let mut data = vec![0u8; rows.div_ceil(width) * nb * layout.block_bytes];
        // Panels are independent: repacked in parallel (a 1B model's weights
        // take seconds on one core).
        data.par_chunks_mut(nb * layout.block_bytes)
            .enumerate()
            .for_each(|(p, panel)| {
                for i in 0..width.min(rows - p * width) {
                    let r = p * width + i;
                    for (b, dst) in panel.chunks_exact_mut(layout.block_bytes).enumerate() {
                        let src = &bytes[(r * nb + b) * gguf..][..gguf];
                        write_row(format, &layout, i, &Decoded::new(format, src), dst);
                    }
                }
            });
        Ok(Self {
            format,
            rows,
            cols,
            isa,
            data,
        })
    }

    /// Number of rows (outputs of a linear layer).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs of a linear layer).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The GGUF type.
    pub fn format(&self) -> PlaneFormat {
        self.format
    }

    /// Bytes held (the panels).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn layout(&self) -> Layout {
        Layout::new(self.format, panel_width(self.isa))
    }

    /// Panel `p`'s block `b`.
    fn panel_block(&self, p: usize, b: usize) -> &[u8] {
        let layout = self.layout();
        let nb = self.cols / self.format.block_values();
        let at = (p * nb + b) * layout.block_bytes;
        &self.data[at..at + layout.block_bytes]
    }

    /// Row `r` dequantized into `out` (`cols` values), as ggml dequantizes
    /// the GGUF row: an embedding lookup, and the f32-activation product.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let width = panel_width(self.isa);
        let layout = self.layout();
        for (b, out) in out.chunks_exact_mut(self.format.block_values()).enumerate() {
            let block = read_row(
                self.format,
                &layout,
                r % width,
                self.panel_block(r / width, b),
            );
            block.values(self.format, out);
        }
    }

    /// `y = x · selfᵀ` for `m` rows of `x` with 8-bit activations (quantized
    /// into `scratch` first); returns `[m, rows]`.
    pub fn matmul(
        &self,
        x: &[f32],
        m: usize,
        scratch: &mut Q8Rows,
        passes: ActivationPasses,
    ) -> Vec<f32> {
        crate::kernels::int8::matmul_group(&[self], x, m, scratch, passes)
            .pop()
            .unwrap_or_default()
    }

    /// `y = x · selfᵀ` for `m` rows of `x` kept in f32: each weight row is
    /// dequantized once and its dot product with every row of `x` summed in
    /// a fixed order ([`crate::kernels::vector`]). Returns `[m, rows]`.
    pub fn matmul_f32(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols);
        let width = panel_width(self.isa);
        crate::kernels::columns_out::parallel_columns(
            &[self.rows],
            width,
            m,
            |_, first, mut out| {
                let mut row = vec![0.0f32; self.cols];
                for r in 0..out.rows() {
                    self.dequantize_row(first + r, &mut row);
                    for j in 0..m {
                        out.set(r, j, f32_dot(&row, &x[j * self.cols..][..self.cols]));
                    }
                }
            },
        )
        .pop()
        .unwrap_or_default()
    }
}

/// The fixed-order f32 dot product of [`crate::kernels::vector`], in the
/// widest build the process runs.
#[inline(always)]
fn dot_kernel(a: &[f32], b: &[f32]) -> f32 {
    let [[d]] = crate::kernels::vector::dots::<1, 1>(a, &[0], b, &[0], a.len());
    d
}

crate::kernels::vector::fastest! {
    fn f32_dot(a: &[f32], b: &[f32]) -> f32 = dot_kernel;
    avx512: "avx512f,avx2,fma,f16c", avx2: "avx2,fma,f16c"
}

impl Int8Weights for PlaneMatrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn isa(&self) -> Isa {
        self.isa
    }

    fn panels(&self, first: usize, x: &Q8Rows, out: ColumnsOut<'_>) {
        let width = panel_width(self.isa);
        let bytes = self.cols / self.format.block_values() * self.layout().block_bytes;
        let panels = out.rows().div_ceil(width);
        let data = &self.data[first / width * bytes..(first / width + panels) * bytes];
        panels_on(self.isa, self.format, data, x, out);
    }
}

/// `out[j, r] = w_r · x_j` for whole panels `w` and every row of `x`, on
/// `isa` (which the CPU must support).
fn panels_on(isa: Isa, format: PlaneFormat, w: &[u8], x: &Q8Rows, out: ColumnsOut<'_>) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => {
            assert!(avx2::available());
            // SAFETY: the CPU supports the build's features, asserted above.
            unsafe { avx2::panels(format, w, x, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            assert!(avx512::available());
            // SAFETY: the CPU supports the build's features, asserted above.
            unsafe { avx512::panels(format, w, x, out) }
        }
        _ => panels_portable(format, panel_width(isa), w, x, out),
    }
}

/// Where code part `v` (of 32) of row `i` lies in a plane of `width` rows:
/// the byte and the bit it starts at.
fn plane_position(plane: Plane, width: usize, i: usize, v: usize) -> (usize, u32) {
    let (t, q) = (v / 4, v % 4);
    match plane {
        // Register t < 4 is the low nibbles of group t, t ≥ 4 the high ones of group t − 4.
        Plane::Nibble => ((t % 4) * 4 * width + 4 * i + q, 4 * (t / 4) as u32),
        Plane::Two => ((t / 4) * 4 * width + 4 * i + q, 2 * (t % 4) as u32),
        Plane::One => (4 * i + q, t as u32),
    }
}

/// Writes row `i`'s decoded block into its panel block `dst`.
fn write_row(format: PlaneFormat, layout: &Layout, i: usize, block: &Decoded, dst: &mut [u8]) {
    let spec = format.spec();
    let width = layout.width;
    dst[2 * i..2 * i + 2].copy_from_slice(&block.d.to_le_bytes());
    if spec.mins != Mins::None {
        let at = layout.second_at + 2 * i;
        dst[at..at + 2].copy_from_slice(&block.second.to_le_bytes());
    }
    for (s, sub) in block.subs[..spec.subs].iter().enumerate() {
        for h in 0..layout.scales_per_sub {
            dst[layout.scales_at + (s * layout.scales_per_sub + h) * width + i] = sub.sc[h] as u8;
        }
        for h in 0..layout.mins_per_sub {
            dst[layout.mins_at + (s * layout.mins_per_sub + h) * width + i] = sub.m[h];
        }
        let mut shift = 0;
        for (k, &plane) in spec.planes.iter().enumerate() {
            let base = layout.plane_at(spec.planes, s, k);
            let mask = (1u8 << plane.bits()) - 1;
            for (v, &code) in sub.codes.iter().enumerate() {
                let (byte, bit) = plane_position(plane, width, i, v);
                dst[base + byte] |= ((code >> shift) & mask) << bit;
            }
            shift += plane.bits();
        }
    }
}

/// Row `i`'s block read back from its panel block `src`.
fn read_row(format: PlaneFormat, layout: &Layout, i: usize, src: &[u8]) -> Decoded {
    let spec = format.spec();
    let width = layout.width;
    let mut block = Decoded {
        d: u16::from_le_bytes([src[2 * i], src[2 * i + 1]]),
        ..Decoded::default()
    };
    if spec.mins != Mins::None {
        let at = layout.second_at + 2 * i;
        block.second = u16::from_le_bytes([src[at], src[at + 1]]);
    }
    for (s, sub) in block.subs[..spec.subs].iter_mut().enumerate() {
        *sub = Sub {
            sc: [1, 1],
            ..Sub::default()
        };
        for h in 0..2 {
            if layout.scales_per_sub > 0 {
                let hh = h.min(layout.scales_per_sub - 1);
                sub.sc[h] =
                    src[layout.scales_at + (s * layout.scales_per_sub + hh) * width + i] as i8;
            }
            if layout.mins_per_sub > 0 {
                let hh = h.min(layout.mins_per_sub - 1);
                sub.m[h] = src[layout.mins_at + (s * layout.mins_per_sub + hh) * width + i];
            }
        }
        let mut shift = 0;
        for (k, &plane) in spec.planes.iter().enumerate() {
            let base = layout.plane_at(spec.planes, s, k);
            // Row `i`'s four bytes of each group (see `plane_position`).
            let group = |g: usize| -> [u8; 4] {
                let at = base + g * 4 * width + 4 * i;
                [src[at], src[at + 1], src[at + 2], src[at + 3]]
            };
            let codes = &mut sub.codes;
            match plane {
                Plane::Nibble => {
                    for g in 0..4 {
                        for (q, b) in group(g).into_iter().enumerate() {
                            codes[4 * g + q] |= (b & 0x0F) << shift;
                            codes[16 + 4 * g + q] |= (b >> 4) << shift;
                        }
                    }
                }
                Plane::Two => {
                    for p in 0..2 {
                        for (q, b) in group(p).into_iter().enumerate() {
                            for k in 0..4 {
                                codes[4 * (4 * p + k) + q] |= ((b >> (2 * k)) & 3) << shift;
                            }
                        }
                    }
                }
                Plane::One => {
                    for (q, b) in group(0).into_iter().enumerate() {
                        for t in 0..8 {
                            codes[4 * t + q] |= ((b >> t) & 1) << shift;
                        }
                    }
                }
            }
            shift += plane.bits();
        }
    }
    block
}

/// The reference: every build must give these bits.
fn panels_portable(
    format: PlaneFormat,
    width: usize,
    w: &[u8],
    x: &Q8Rows,
    mut out: ColumnsOut<'_>,
) {
    let spec = format.spec();
    let layout = Layout::new(format, width);
    let (m, cols) = (x.rows(), x.cols());
    let nb = cols / format.block_values();
    let panel_bytes = nb * layout.block_bytes;
    assert!(w.len().is_multiple_of(panel_bytes));
    let mut acc = vec![0.0f32; m];
    let mut mo = vec![0.0f32; m];
    for (p, panel) in w.chunks_exact(panel_bytes).enumerate() {
        for i in 0..width {
            acc.fill(0.0);
            mo.fill(0.0);
            for (b, src) in panel.chunks_exact(layout.block_bytes).enumerate() {
                let block = read_row(format, &layout, i, src);
                let (d, second) = (decode::f32_of(block.d), decode::f32_of(block.second));
                for (s, sub) in block.subs[..spec.subs].iter().enumerate() {
                    // The row's exact f32 scales of each half: d · sc, dmin · m.
                    let dsc = sub.sc.map(|sc| match spec.scales {
                        SubScales::None => d,
                        _ => d * sc as f32,
                    });
                    let dm = sub.m.map(|m| second * m as f32);
                    for j in 0..m {
                        let at = j * (cols / QK) + b * spec.subs + s;
                        let (i_lo, i_hi) = half_sums(format, sub, x, at);
                        let dx = x.d[at];
                        let (q_all, q_lo) = (x.sums[at], x.sums_lo[at]);
                        let q_hi = q_all - q_lo;
                        if spec.scales == SubScales::Per16 {
                            acc[j] = (i_lo as f32).mul_add(dsc[0] * dx, acc[j]);
                            acc[j] = (i_hi as f32).mul_add(dsc[1] * dx, acc[j]);
                        } else {
                            acc[j] = ((i_lo + i_hi) as f32).mul_add(dsc[0] * dx, acc[j]);
                        }
                        match (spec.mins, spec.scales) {
                            (Mins::Int, SubScales::Per16) => {
                                mo[j] = dm[0].mul_add(q_lo as f32 * dx, mo[j]);
                                mo[j] = dm[1].mul_add(q_hi as f32 * dx, mo[j]);
                            }
                            (Mins::Int, _) => mo[j] = dm[0].mul_add(q_all as f32 * dx, mo[j]),
                            (Mins::Float, _) => mo[j] = second.mul_add(x.s[at], mo[j]),
                            (Mins::None, _) => {}
                        }
                    }
                }
            }
            for j in 0..m {
                let v = match spec.mins {
                    Mins::Int => acc[j] - mo[j],
                    Mins::Float => acc[j] + mo[j],
                    Mins::None => acc[j],
                };
                out.set(p * width + i, j, v);
            }
        }
    }
}

/// The exact integers `Σ_h u·q − bias · Σ_h q` of the two halves of one
/// sub-block against activation block `at`.
fn half_sums(format: PlaneFormat, sub: &Sub, x: &Q8Rows, at: usize) -> (i32, i32) {
    let spec = format.spec();
    let bias = spec.bias;
    let q = &x.qs[at * QK..(at + 1) * QK];
    let dot = |range: std::ops::Range<usize>| -> i32 {
        range
            .map(|v| spec.code(sub.codes[v]) * q[v] as i32)
            .sum::<i32>()
    };
    let q_lo = x.sums_lo[at];
    let q_hi = x.sums[at] - q_lo;
    (dot(0..16) - bias * q_lo, dot(16..32) - bias * q_hi)
}

#[cfg(test)]
mod tests;
