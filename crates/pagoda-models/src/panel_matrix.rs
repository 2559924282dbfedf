//! Block-quantized weights repacked for the **8-bit-activation** kernels:
//! four rows interleaved block by block ("panels"), so that one pass over a
//! block index feeds four output rows from one contiguous stretch of memory,
//! and the SIMD kernels ([`crate::panel_kernels_x86`]) hold two rows per
//! 256-bit register with their scales converted four at a time.
//!
//! Layout of one panel block (rows A, B, C, D of the panel, block `b`):
//! - Q4_0: `d[4]: f16`, then 64 bytes of nibbles: `A.qs B.qs C.qs D.qs`
//!   (each row's 16 bytes in ggml's order: byte `j` holds values `j` and
//!   `j + 16`).
//! - Q4_1: `d[4]: f16`, `m[4]: f16`, then the same 64 bytes of nibbles.
//! - Q8_0: `d[4]: f16`, then 128 bytes: `A[0..16] B[0..16] C[0..16]
//!   D[0..16] A[16..32] B[16..32] C[16..32] D[16..32]`.
//!
//! The same bytes as the GGUF rows (a last panel of fewer than four rows is
//! padded with zero rows), so repacking costs no memory.
//!
//! **The arithmetic**, identical in every build: an output `w_r · x_j` keeps
//! four f32 lanes; for each block, lane `l` takes the exact integer sum of
//! the eight products at positions `4l..4l+4` and `16+4l..16+4l+4`, scaled
//! by `d_w · d_x` in one fused multiply-add; the lanes fold as
//! `(l0 + l1) + (l2 + l3)`; Q4_1 adds `Σ m_w · s_x` (fused, block by block).
//! Integer sums are exact, so every build gives the same bits, and a row's
//! result never depends on the rows computed with it (batch invariance).

use half::f16;

use crate::qmatmul::{BlockFormat, LayoutError, QuantMatrix};
use crate::qmatmul_int8::{Q8Rows, QK};

/// Weight rows per panel.
pub const PANEL: usize = 4;

/// A block-quantized `[rows, cols]` matrix in panels of four rows.
#[derive(Debug, Clone)]
pub struct PanelMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

/// Bytes of one panel block's scales (`d`, and `m` for Q4_1).
pub(crate) const fn scale_bytes(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q4_1 => 16,
        _ => 8,
    }
}

/// Bytes of one panel block (four rows' block `b`).
pub(crate) const fn panel_block_bytes(format: BlockFormat) -> usize {
    PANEL * format.block_bytes()
}

/// Where value `v` (0..32) of row `i` (0..4) of a panel block lies among its
/// Q8_0 quant bytes.
fn q8_offset(i: usize, v: usize) -> usize {
    (v / 16) * 64 + i * 16 + v % 16
}

impl PanelMatrix {
    /// Repacks a row-major GGUF block matrix.
    pub fn from_rows(m: &QuantMatrix) -> Self {
        let format = m.format();
        let (rows, cols) = (m.rows(), m.cols());
        let nb = cols / QK;
        let bb = format.block_bytes();
        let pbb = panel_block_bytes(format);
        let panels = rows.div_ceil(PANEL);
        let mut data = vec![0u8; panels * nb * pbb];
        let sb = scale_bytes(format);
        for r in 0..rows {
            let (p, i) = (r / PANEL, r % PANEL);
            let src = m.row_data(r);
            for b in 0..nb {
                let block = &src[b * bb..(b + 1) * bb];
                let dst = &mut data[(p * nb + b) * pbb..(p * nb + b + 1) * pbb];
                dst[2 * i..2 * i + 2].copy_from_slice(&block[..2]);
                match format {
                    BlockFormat::Q4_0 => {
                        dst[sb + 16 * i..sb + 16 * (i + 1)].copy_from_slice(&block[2..18])
                    }
                    BlockFormat::Q4_1 => {
                        dst[8 + 2 * i..8 + 2 * i + 2].copy_from_slice(&block[2..4]);
                        dst[sb + 16 * i..sb + 16 * (i + 1)].copy_from_slice(&block[4..20]);
                    }
                    BlockFormat::Q8_0 => {
                        for v in 0..QK {
                            dst[sb + q8_offset(i, v)] = block[2 + v];
                        }
                    }
                }
            }
        }
        Self {
            format,
            rows,
            cols,
            data,
        }
    }

    /// The row-major GGUF block matrix again (for f32 activations).
    pub fn to_rows(&self) -> QuantMatrix {
        let bb = self.format.block_bytes();
        let nb = self.cols / QK;
        let mut data = vec![0u8; self.rows * nb * bb];
        for r in 0..self.rows {
            for b in 0..nb {
                let block = &mut data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
                self.write_block(r, b, block);
            }
        }
        QuantMatrix::new(self.format, self.rows, self.cols, data)
            .unwrap_or_else(|e: LayoutError| unreachable!("a repacked matrix keeps its shape: {e}"))
    }

    /// Row `r`'s block `b` in GGUF's own layout.
    fn write_block(&self, r: usize, b: usize, out: &mut [u8]) {
        let (p, i) = (r / PANEL, r % PANEL);
        let sb = scale_bytes(self.format);
        let src = self.panel_block(p, b);
        out[..2].copy_from_slice(&src[2 * i..2 * i + 2]);
        match self.format {
            BlockFormat::Q4_0 => out[2..18].copy_from_slice(&src[sb + 16 * i..sb + 16 * (i + 1)]),
            BlockFormat::Q4_1 => {
                out[2..4].copy_from_slice(&src[8 + 2 * i..8 + 2 * i + 2]);
                out[4..20].copy_from_slice(&src[sb + 16 * i..sb + 16 * (i + 1)]);
            }
            BlockFormat::Q8_0 => {
                for v in 0..QK {
                    out[2 + v] = src[sb + q8_offset(i, v)];
                }
            }
        }
    }

    fn panel_block(&self, p: usize, b: usize) -> &[u8] {
        let pbb = panel_block_bytes(self.format);
        let at = (p * (self.cols / QK) + b) * pbb;
        &self.data[at..at + pbb]
    }

    /// Number of rows (outputs of a linear layer).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs of a linear layer).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Row `r` dequantized into `out` (`cols` values): an embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let mut block = [0u8; 34];
        let bb = self.format.block_bytes();
        for (b, out) in out.chunks_exact_mut(QK).enumerate() {
            self.write_block(r, b, &mut block[..bb]);
            crate::qmatmul::dequantize_block(self.format, &block[..bb], out);
        }
    }

    /// `y = x · selfᵀ` for `m` rows of `x`, quantized into `scratch` first;
    /// returns `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize, scratch: &mut Q8Rows) -> Vec<f32> {
        matmul_group(&[self], x, m, scratch)
            .pop()
            .unwrap_or_default()
    }
}

/// Products of several panel matrices with the same `m` rows of `x` in one
/// parallel pass, the activations quantized once into `scratch`: returns
/// each `[m, rows]`. Every matrix must have `x`'s width.
pub fn matmul_group(
    mats: &[&PanelMatrix],
    x: &[f32],
    m: usize,
    scratch: &mut Q8Rows,
) -> Vec<Vec<f32>> {
    matmul_group_on(Isa::best(), mats, x, m, scratch)
}

fn matmul_group_on(
    isa: Isa,
    mats: &[&PanelMatrix],
    x: &[f32],
    m: usize,
    scratch: &mut Q8Rows,
) -> Vec<Vec<f32>> {
    let Some(cols) = mats.first().map(|w| w.cols) else {
        return Vec::new();
    };
    assert!(mats.iter().all(|w| w.cols == cols) && x.len() == m * cols);
    scratch.quantize(x, m, cols);
    let q: &Q8Rows = scratch;
    let parts: Vec<usize> = mats.iter().map(|w| w.rows).collect();
    crate::qmatmul::parallel_parts(&parts, PANEL, m, |p, first, rows, out| {
        let w = mats[p];
        let bytes = cols / QK * panel_block_bytes(w.format);
        let data = &w.data[first / PANEL * bytes..(first + rows) / PANEL * bytes];
        panels_on(isa, w.format, data, q, out);
    })
}

/// The instruction sets the panel kernels are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust (the reference the others are tested against).
    Portable,
    /// AVX2 + FMA + F16C: `maddubs`/`madd` integer dot products.
    Avx2,
    /// AVX-512 VNNI: `vpdpbusd` dot products, a whole panel per 512-bit register.
    Avx512Vnni,
}

impl Isa {
    /// Every build this CPU can run, the portable one first.
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::panel_kernels_x86::avx2::available() {
                out.push(Isa::Avx2);
            }
            if crate::panel_kernels_avx512::available() {
                out.push(Isa::Avx512Vnni);
            }
        }
        out
    }

    /// The fastest build this CPU can run (detected once).
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| *Isa::available().last().unwrap_or(&Isa::Portable))
    }
}

/// `out[r * m + j] = w_r · x_j` for whole panels `w` (padding rows
/// included) and every row of `x`, on `isa` (which the CPU must support).
fn panels_on(isa: Isa, format: BlockFormat, w: &[u8], x: &Q8Rows, out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            assert!(crate::panel_kernels_x86::avx2::available());
            // SAFETY: the CPU supports the build's features, asserted above.
            unsafe { crate::panel_kernels_x86::avx2::panels(format, w, x, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            assert!(crate::panel_kernels_avx512::available());
            // SAFETY: the CPU supports the build's features, asserted above.
            unsafe { crate::panel_kernels_avx512::panels(format, w, x, out) }
        }
        _ => panels_portable(format, w, x, out),
    }
}

fn panels_portable(format: BlockFormat, w: &[u8], x: &Q8Rows, out: &mut [f32]) {
    let (m, cols) = (x.rows(), x.cols());
    let nb = cols / QK;
    let panel_bytes = nb * panel_block_bytes(format);
    assert!(w.len().is_multiple_of(panel_bytes) && out.len() == w.len() / panel_bytes * PANEL * m);
    for (panel, o) in w
        .chunks_exact(panel_bytes)
        .zip(out.chunks_exact_mut(PANEL * m))
    {
        for j in 0..m {
            let y = panel_dot(
                format,
                panel,
                &x.qs[j * cols..(j + 1) * cols],
                &x.d[j * nb..(j + 1) * nb],
                &x.s[j * nb..(j + 1) * nb],
            );
            for (i, y) in y.into_iter().enumerate() {
                o[i * m + j] = y;
            }
        }
    }
}

/// A panel's four weight values of block `b`'s row `i`, in order, as
/// integers.
fn weight_values(format: BlockFormat, block: &[u8], i: usize) -> [i32; QK] {
    let sb = scale_bytes(format);
    std::array::from_fn(|v| match format {
        BlockFormat::Q8_0 => block[sb + q8_offset(i, v)] as i8 as i32,
        _ => {
            let byte = block[sb + 16 * i + v % 16];
            let nibble = if v < 16 { byte & 0x0F } else { byte >> 4 } as i32;
            if format == BlockFormat::Q4_0 {
                nibble - 8
            } else {
                nibble
            }
        }
    })
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The four rows of one panel against one quantized activation row: the
/// reference arithmetic of the module documentation.
fn panel_dot(format: BlockFormat, panel: &[u8], q: &[i8], d: &[f32], s: &[f32]) -> [f32; PANEL] {
    let pbb = panel_block_bytes(format);
    let mut acc = [[0.0f32; 4]; PANEL];
    let mut offset = [0.0f32; PANEL];
    for (((block, qb), &dx), &sx) in panel
        .chunks_exact(pbb)
        .zip(q.chunks_exact(QK))
        .zip(d)
        .zip(s)
    {
        for i in 0..PANEL {
            let w = weight_values(format, block, i);
            let scale = f16_at(block, 2 * i) * dx;
            for (l, acc) in acc[i].iter_mut().enumerate() {
                let isum: i32 = (0..4)
                    .map(|t| {
                        w[4 * l + t] * qb[4 * l + t] as i32
                            + w[16 + 4 * l + t] * qb[16 + 4 * l + t] as i32
                    })
                    .sum();
                *acc = (isum as f32).mul_add(scale, *acc);
            }
            if format == BlockFormat::Q4_1 {
                offset[i] = f16_at(block, 8 + 2 * i).mul_add(sx, offset[i]);
            }
        }
    }
    std::array::from_fn(|i| ((acc[i][0] + acc[i][1]) + (acc[i][2] + acc[i][3])) + offset[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmatmul_int8::test_data::{activations, random_blocks, Rng};

    const FORMATS: [BlockFormat; 3] = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0];

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn repacking_keeps_every_row_and_round_trips() {
        let mut rng = Rng(3);
        for format in FORMATS {
            for rows in [1, 3, 4, 5, 9] {
                let cols = 96;
                let bytes = random_blocks(format, rows, cols, &mut rng);
                let rowwise = QuantMatrix::new(format, rows, cols, bytes.clone()).expect("matrix");
                let panels = PanelMatrix::from_rows(&rowwise);
                assert_eq!(
                    panels.to_rows().row_data(rows - 1),
                    rowwise.row_data(rows - 1)
                );
                let (mut a, mut b) = (vec![0.0; cols], vec![0.0; cols]);
                for r in 0..rows {
                    rowwise.dequantize_row(r, &mut a);
                    panels.dequantize_row(r, &mut b);
                    assert_eq!(bits(&a), bits(&b), "{format:?} row {r} of {rows}");
                }
            }
        }
    }

    #[test]
    fn every_build_gives_the_reference_bits_and_rows_are_batch_invariant() {
        let mut rng = Rng(11);
        for format in FORMATS {
            for (rows, cols, m) in [
                (3, 32, 1),
                (5, 96, 3),
                (7, 160, 5),
                (2, 64, 8),
                (9, 576, 6),
                (64, 64, 9),
            ] {
                let bytes = random_blocks(format, rows, cols, &mut rng);
                let w = PanelMatrix::from_rows(
                    &QuantMatrix::new(format, rows, cols, bytes).expect("matrix"),
                );
                let x = activations(m, cols, &mut rng);
                let mut scratch = Q8Rows::default();
                let reference = matmul_group_on(Isa::Portable, &[&w], &x, m, &mut scratch)
                    .pop()
                    .expect("one result");
                for isa in Isa::available() {
                    let got = matmul_group_on(isa, &[&w], &x, m, &mut scratch)
                        .pop()
                        .expect("one result");
                    assert_eq!(
                        bits(&got),
                        bits(&reference),
                        "{isa:?} {format:?} {rows}x{cols} m={m}"
                    );
                    for j in 0..m {
                        let xj = &x[j * cols..(j + 1) * cols];
                        let alone = matmul_group_on(isa, &[&w], xj, 1, &mut scratch)
                            .pop()
                            .expect("one result");
                        assert_eq!(
                            bits(&alone),
                            bits(&reference[j * rows..(j + 1) * rows]),
                            "{isa:?} {format:?}: row {j} alone = row {j} of {m}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn int8_products_stay_within_the_quantization_bound_of_f32_ones() {
        let mut rng = Rng(23);
        let (rows, cols, m) = (37, 320, 7);
        for format in FORMATS {
            let bytes = random_blocks(format, rows, cols, &mut rng);
            let rowwise = QuantMatrix::new(format, rows, cols, bytes).expect("matrix");
            let panels = PanelMatrix::from_rows(&rowwise);
            let x = activations(m, cols, &mut rng);
            let exact = rowwise.matmul(&x, m);
            let fast = panels.matmul(&x, m, &mut Q8Rows::default());
            let mut deq = vec![0.0f32; cols];
            for r in 0..rows {
                rowwise.dequantize_row(r, &mut deq);
                for j in 0..m {
                    // The error of 8-bit activations: at most half a step per value.
                    let xr = &x[j * cols..(j + 1) * cols];
                    let bound: f32 = deq
                        .chunks_exact(QK)
                        .zip(xr.chunks_exact(QK))
                        .map(|(wb, xb)| {
                            let d = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
                            wb.iter().map(|w| w.abs()).sum::<f32>() * d * 0.5
                        })
                        .sum::<f32>()
                        * 1.05
                        + 1e-3;
                    let (e, f) = (exact[j * rows + r], fast[j * rows + r]);
                    assert!(
                        (e - f).abs() <= bound,
                        "{format:?} [{j},{r}]: {f} vs {e} (bound {bound})"
                    );
                }
            }
        }
    }
}
