//! Block-quantized weights repacked for the **8-bit-activation** kernels:
//! `W` rows interleaved block by block ("panels", `W` = 16 for the AVX-512
//! build, 8 otherwise), four weight bytes of each row side by side, so that
//! one SIMD register holds the same four values of every row of the panel.
//! A kernel then broadcasts four activation bytes to all lanes and one
//! `vpdpbusd` (or `maddubs` + `madd`) adds four products into each row's own
//! 32-bit lane: a block's dot product ends as one exact integer per row, with
//! no horizontal sums, and one conversion, scale product and fused
//! multiply-add per block serve all `W` rows. This is the shape of a GEMM
//! micro-kernel: a panel block is unpacked once and meets up to 8
//! activation rows (one sequence's token each in a batched step).
//!
//! Layout of one panel block (rows `0..W` of the panel, block `b`):
//! - Q4_0, Q4_1: `d[W]: f16`, (Q4_1) `m[W]: f16`, then four groups `g` of
//!   `4W` bytes: row `r`'s GGUF bytes `qs[4g..4g + 4]`, whose low nibbles are
//!   values `4g..4g + 4` and high nibbles values `16 + 4g..16 + 4g + 4`.
//! - Q8_0: `d[W]: f16`, then eight groups `t` of `4W` bytes: row `r`'s
//!   values `4t..4t + 4`.
//!
//! The same bytes as the GGUF rows (a last panel of fewer than `W` rows is
//! padded with zero rows), so repacking costs no memory.
//!
//! **The arithmetic**, identical in every build and for every panel width:
//! for each block, the exact integer `Σ w_v · x_v` over the block's 32 values
//! (Q4_0's weights are `nibble − 8`; unsigned-weight builds subtract
//! `8 · Σx` or `128 · Σx` in integers), then
//! `acc = fma(Σ as f32, d_w · d_x, acc)` block after block; Q4_1 adds
//! `off = fma(m_w, s_x, off)` likewise; the result is `acc + off`. So every
//! build gives the same bits, and a row's result never depends on the rows
//! computed with it (batch invariance).

use half::f16;

use crate::kernels::block_format::BlockFormat;
use crate::kernels::block_format::{panel_block_bytes, scale_bytes, QK};
use crate::kernels::columns_out::ColumnsOut;
use crate::kernels::f32::QuantMatrix;
use crate::kernels::int8::{ActivationPasses, Int8Weights, Q8Rows};
use crate::kernels::Isa;

mod avx2;
pub(crate) mod avx512;

/// A block-quantized `[rows, cols]` matrix in panels for one kernel build.
#[derive(Debug, Clone)]
pub struct PanelMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    isa: Isa,
    data: Vec<u8>,
}

/// Where GGUF quant byte `j` of row `r` lies among a panel block's quant
/// bytes: groups of four bytes per row, `width` rows per group.
fn quant_offset(r: usize, j: usize, width: usize) -> usize {
    (j / 4) * 4 * width + r * 4 + j % 4
}

/// GGUF quant bytes per block (16 nibble pairs or 32 values).
fn quant_bytes(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q8_0 => 32,
        _ => 16,
    }
}

/// Offset of the quants within a GGUF block.
fn gguf_quant_at(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q4_1 => 4,
        _ => 2,
    }
}

impl PanelMatrix {
    /// Repacks a row-major GGUF block matrix for the process's level
    /// ([`Isa::best`]).
    pub fn from_rows(m: &QuantMatrix) -> Self {
        Self::for_isa(m, Isa::best())
    }

    /// Repacks a row-major GGUF block matrix for the panel build of level
    /// `isa` (which the CPU must support to multiply with it).
    pub fn for_isa(m: &QuantMatrix, isa: Isa) -> Self {
        let format = m.format();
        let (rows, cols) = (m.rows(), m.cols());
        let width = panel_width(isa);
        let nb = cols / QK;
        let bb = format.block_bytes();
        let pbb = panel_block_bytes(format, width);
        let sb = scale_bytes(format, width);
        let (qa, qb) = (gguf_quant_at(format), quant_bytes(format));
        let mut data = vec![0u8; rows.div_ceil(width) * nb * pbb];
        for r in 0..rows {
            let (p, i) = (r / width, r % width);
            let src = m.row_data(r);
            for b in 0..nb {
                let block = &src[b * bb..(b + 1) * bb];
                let dst = &mut data[(p * nb + b) * pbb..(p * nb + b + 1) * pbb];
                dst[2 * i..2 * i + 2].copy_from_slice(&block[..2]);
                if format == BlockFormat::Q4_1 {
                    dst[2 * width + 2 * i..2 * width + 2 * i + 2].copy_from_slice(&block[2..4]);
                }
                for j in 0..qb {
                    dst[sb + quant_offset(i, j, width)] = block[qa + j];
                }
            }
        }
        Self {
            format,
            rows,
            cols,
            isa,
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
        match QuantMatrix::new(self.format, self.rows, self.cols, data) {
            Ok(m) => m,
            Err(e) => unreachable!("a repacked matrix keeps its shape: {e}"),
        }
    }

    /// Row `r`'s block `b` in GGUF's own layout.
    fn write_block(&self, r: usize, b: usize, out: &mut [u8]) {
        let width = panel_width(self.isa);
        let (p, i) = (r / width, r % width);
        let sb = scale_bytes(self.format, width);
        let src = self.panel_block(p, b);
        out[..2].copy_from_slice(&src[2 * i..2 * i + 2]);
        if self.format == BlockFormat::Q4_1 {
            out[2..4].copy_from_slice(&src[2 * width + 2 * i..2 * width + 2 * i + 2]);
        }
        let qa = gguf_quant_at(self.format);
        for j in 0..quant_bytes(self.format) {
            out[qa + j] = src[sb + quant_offset(i, j, width)];
        }
    }

    fn panel_block(&self, p: usize, b: usize) -> &[u8] {
        let pbb = panel_block_bytes(self.format, panel_width(self.isa));
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
            crate::kernels::f32::dequantize_block(self.format, &block[..bb], out);
        }
    }

    /// `y = x · selfᵀ` for `m` rows of `x`, quantized into `scratch` first;
    /// returns `[m, rows]`.
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
}

impl Int8Weights for PanelMatrix {
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
        let bytes = self.cols / QK * panel_block_bytes(self.format, width);
        let panels = out.rows().div_ceil(width);
        let data = &self.data[first / width * bytes..(first / width + panels) * bytes];
        panels_on(self.isa, self.format, data, x, out);
    }
}

/// Rows per panel in the layout of level `isa`'s build: 16 for the VNNI
/// build, 8 otherwise (the AVX2 build serves the `avx2` and `avx512`
/// levels).
pub(crate) const fn panel_width(isa: Isa) -> usize {
    match isa {
        Isa::Avx512Vnni => 16,
        _ => 8,
    }
}

/// `out[j, r] = w_r · x_j` for whole panels `w` and every row of `x`, on
/// `isa` (which the CPU must support).
fn panels_on(isa: Isa, format: BlockFormat, w: &[u8], x: &Q8Rows, out: ColumnsOut<'_>) {
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

fn panels_portable(
    format: BlockFormat,
    width: usize,
    w: &[u8],
    x: &Q8Rows,
    mut out: ColumnsOut<'_>,
) {
    let (m, cols) = (x.rows(), x.cols());
    let nb = cols / QK;
    let pbb = panel_block_bytes(format, width);
    let panel_bytes = nb * pbb;
    assert!(w.len().is_multiple_of(panel_bytes));
    let sb = scale_bytes(format, width);
    let (qa, qb) = (gguf_quant_at(format), quant_bytes(format));
    let mut block = [0u8; 34];
    let mut acc = vec![0.0f32; m];
    let mut offset = vec![0.0f32; m];
    for (p, panel) in w.chunks_exact(panel_bytes).enumerate() {
        for i in 0..width {
            acc.fill(0.0);
            offset.fill(0.0);
            for b in 0..nb {
                // Row `i`'s block `b` in GGUF's layout, once for every activation row.
                let src = &panel[b * pbb..(b + 1) * pbb];
                block[..2].copy_from_slice(&src[2 * i..2 * i + 2]);
                if format == BlockFormat::Q4_1 {
                    block[2..4].copy_from_slice(&src[2 * width + 2 * i..2 * width + 2 * i + 2]);
                }
                for t in 0..qb {
                    block[qa + t] = src[sb + quant_offset(i, t, width)];
                }
                let dw = f16_at(&block, 0);
                let mw = f16_at(&block, 2);
                for j in 0..m {
                    let at = j * nb + b;
                    let isum = block_isum(format, &block, &x.qs[at * QK..(at + 1) * QK]);
                    acc[j] = (isum as f32).mul_add(dw * x.d[at], acc[j]);
                    if format == BlockFormat::Q4_1 {
                        offset[j] = mw.mul_add(x.s[at], offset[j]);
                    }
                }
            }
            for j in 0..m {
                out.set(p * width + i, j, acc[j] + offset[j]);
            }
        }
    }
}

/// The exact integer dot product of one GGUF weight block with 32 quantized
/// activations (weights as their true signed values).
fn block_isum(format: BlockFormat, block: &[u8], x: &[i8]) -> i32 {
    (0..QK)
        .map(|v| {
            let w = match format {
                BlockFormat::Q8_0 => block[2 + v] as i8 as i32,
                _ => {
                    let byte = block[gguf_quant_at(format) + v % 16];
                    let nibble = if v < 16 { byte & 0x0F } else { byte >> 4 } as i32;
                    if format == BlockFormat::Q4_0 {
                        nibble - 8
                    } else {
                        nibble
                    }
                }
            };
            w * x[v] as i32
        })
        .sum()
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::int8::test_data::{activations, random_blocks, Rng};

    const FORMATS: [BlockFormat; 3] = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0];

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn repacking_keeps_every_row_and_round_trips() {
        let mut rng = Rng(3);
        for format in FORMATS {
            for rows in [1, 3, 8, 9, 17] {
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
                (33, 96, 17),
                (4, 64, 15),
                (6, 32, 12),
                (5, 96, 10),
            ] {
                let bytes = random_blocks(format, rows, cols, &mut rng);
                let rowwise = QuantMatrix::new(format, rows, cols, bytes).expect("matrix");
                let x = activations(m, cols, &mut rng);
                let mut scratch = Q8Rows::default();
                for passes in [ActivationPasses::One, ActivationPasses::Two] {
                    let reference = PanelMatrix::for_isa(&rowwise, Isa::Portable).matmul(
                        &x,
                        m,
                        &mut scratch,
                        passes,
                    );
                    for isa in Isa::available() {
                        let w = PanelMatrix::for_isa(&rowwise, isa);
                        let got = w.matmul(&x, m, &mut scratch, passes);
                        assert_eq!(
                            bits(&got),
                            bits(&reference),
                            "{isa:?} {format:?} {rows}x{cols} m={m} {passes:?}"
                        );
                        for j in 0..m {
                            let xj = &x[j * cols..(j + 1) * cols];
                            let alone = w.matmul(xj, 1, &mut scratch, passes);
                            assert_eq!(
                                bits(&alone),
                                bits(&reference[j * rows..(j + 1) * rows]),
                                "{isa:?} {format:?} {passes:?}: row {j} alone = row {j} of {m}"
                            );
                        }
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
            let fast = panels.matmul(&x, m, &mut Q8Rows::default(), ActivationPasses::One);
            let fine = panels.matmul(&x, m, &mut Q8Rows::default(), ActivationPasses::Two);
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
                    // Two passes: half a step of the residual, whose step is
                    // at most ~1/222 of the first one's.
                    let fine = fine[j * rows + r];
                    assert!(
                        (e - fine).abs() <= bound / 200.0 + 1e-4,
                        "{format:?} [{j},{r}] two passes: {fine} vs {e} (bound {bound})"
                    );
                }
            }
        }
    }
}
