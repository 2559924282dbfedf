//! Half-precision weights kept in two bytes (GGUF F16/BF16 tensors, Hugging
//! Face f16/bf16 safetensors) and multiplied with f32 activations: half
//! the memory of widened weights, and half the bytes to read per token.
//!
//! Weight rows are widened four at a time into a small f32 buffer (exactly:
//! every f16 and bf16 value is an f32 value), then each output is the
//! fixed-order dot product of [`crate::kernels::vector`] (sixteen lanes
//! folded pairwise, no fused multiply-adds): every build gives the same
//! bits, equal to the dot product of the widened row, whatever the batch
//! (batch invariance).

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};

use crate::kernels::columns_out::ColumnsOut;
use crate::kernels::f32::LayoutError;

/// The two half-precision formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfKind {
    /// IEEE binary16.
    F16,
    /// bfloat16 (the top half of an f32).
    Bf16,
}

impl HalfKind {
    /// The name in logs (`F16`, `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            HalfKind::F16 => "F16",
            HalfKind::Bf16 => "BF16",
        }
    }
}

/// A `[rows, cols]` matrix of half-precision values, row-major.
#[derive(Debug, Clone)]
pub struct HalfMatrix {
    kind: HalfKind,
    rows: usize,
    cols: usize,
    data: Vec<u16>,
}

/// Weight rows widened together.
const ROWS: usize = 4;

impl HalfMatrix {
    /// A matrix from little-endian 2-byte values.
    pub fn from_le_bytes(
        kind: HalfKind,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, LayoutError> {
        if rows.checked_mul(cols).and_then(|n| n.checked_mul(2)) != Some(bytes.len()) || cols == 0 {
            return Err(LayoutError::new(format!(
                "{} bytes do not hold a [{rows}, {cols}] {} matrix",
                bytes.len(),
                kind.name()
            )));
        }
        let data = bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        Ok(Self {
            kind,
            rows,
            cols,
            data,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The stored format.
    pub fn kind(&self) -> HalfKind {
        self.kind
    }

    /// Row `r` widened into `out` (`cols` values, exact).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        widen(
            self.kind,
            &self.data[r * self.cols..(r + 1) * self.cols],
            out,
        );
    }

    /// `y = x · selfᵀ` for `m` rows of `x`; returns `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols);
        crate::kernels::columns_out::parallel_columns(&[self.rows], ROWS, m, |_, first, out| {
            let mut buf = vec![0.0f32; ROWS * self.cols];
            rows_times_x(self, first, x, m, &mut buf, out);
        })
        .pop()
        .unwrap_or_default()
    }
}

/// Widens `src` into `dst`, exactly.
fn widen(kind: HalfKind, src: &[u16], dst: &mut [f32]) {
    match kind {
        HalfKind::F16 => {
            let src: &[f16] = src.reinterpret_cast();
            src.convert_to_f32_slice(dst);
        }
        HalfKind::Bf16 => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = bf16::from_bits(s).to_f32();
            }
        }
    }
}

/// The kernel of one task: weight rows `first .. first + out.rows()`,
/// widened [`ROWS`] at a time into `buf`, times every row of `x`.
#[inline(always)]
fn rows_kernel(
    w: &HalfMatrix,
    first: usize,
    x: &[f32],
    m: usize,
    buf: &mut [f32],
    out: &mut ColumnsOut<'_>,
) {
    let cols = w.cols;
    let row_at: [usize; ROWS] = std::array::from_fn(|r| r * cols);
    let mut r0 = 0;
    while r0 < out.rows() {
        let n = (out.rows() - r0).min(ROWS);
        for r in 0..ROWS {
            let dst = &mut buf[r * cols..(r + 1) * cols];
            if r < n {
                w.row_f32(first + r0 + r, dst);
            } else {
                dst.fill(0.0);
            }
        }
        let mut j = 0;
        while j < m {
            if m - j >= 2 {
                let d = crate::kernels::vector::dots::<2, ROWS>(
                    x,
                    &[j * cols, (j + 1) * cols],
                    buf,
                    &row_at,
                    cols,
                );
                for (r, d) in d.iter().enumerate().take(n) {
                    out.set(r0 + r, j, d[0]);
                    out.set(r0 + r, j + 1, d[1]);
                }
                j += 2;
            } else {
                let d = crate::kernels::vector::dots::<1, ROWS>(x, &[j * cols], buf, &row_at, cols);
                for (r, d) in d.iter().enumerate().take(n) {
                    out.set(r0 + r, j, d[0]);
                }
                j += 1;
            }
        }
        r0 += ROWS;
    }
}

crate::kernels::vector::fastest! {
    fn rows_times_x(
        w: &HalfMatrix,
        first: usize,
        x: &[f32],
        m: usize,
        buf: &mut [f32],
        out: ColumnsOut<'_>,
    ) = rows_kernel_owned;
    avx512: "avx512f,avx2,fma,f16c", avx2: "avx2,fma,f16c"
}

#[inline(always)]
fn rows_kernel_owned(
    w: &HalfMatrix,
    first: usize,
    x: &[f32],
    m: usize,
    buf: &mut [f32],
    mut out: ColumnsOut<'_>,
) {
    rows_kernel(w, first, x, m, buf, &mut out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    fn matrix(kind: HalfKind, rows: usize, cols: usize) -> (HalfMatrix, Vec<f32>) {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.377).sin() * 0.5)
            .collect();
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|&v| match kind {
                HalfKind::F16 => f16::from_f32(v).to_le_bytes(),
                HalfKind::Bf16 => bf16::from_f32(v).to_le_bytes(),
            })
            .collect();
        let m = HalfMatrix::from_le_bytes(kind, rows, cols, &bytes).expect("matrix");
        let widened = (0..rows)
            .flat_map(|r| {
                let mut row = vec![0.0; cols];
                m.row_f32(r, &mut row);
                row
            })
            .collect();
        (m, widened)
    }

    #[test]
    fn products_are_the_fixed_order_dot_products_of_the_widened_rows_in_any_batch() {
        for kind in [HalfKind::F16, HalfKind::Bf16] {
            for (rows, cols, m) in [
                (1, 32, 1),
                (5, 48, 3),
                (9, 256, 4),
                (257, 64, 2),
                (6, 17, 5),
            ] {
                let (w, widened) = matrix(kind, rows, cols);
                let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.11).cos()).collect();
                let got = w.matmul(&x, m);
                for j in 0..m {
                    let alone = w.matmul(&x[j * cols..(j + 1) * cols], 1);
                    for r in 0..rows {
                        let want = crate::kernels::vector::dot(
                            &widened[r * cols..(r + 1) * cols],
                            &x[j * cols..(j + 1) * cols],
                        );
                        let at = j * rows + r;
                        assert_eq!(got[at].to_bits(), want.to_bits(), "{kind:?} [{j},{r}]");
                        assert_eq!(
                            alone[r].to_bits(),
                            want.to_bits(),
                            "{kind:?} [{j},{r}] alone"
                        );
                    }
                }
            }
        }
        assert!(Isa::available().contains(&Isa::best()));
    }

    #[test]
    fn widening_is_exact_and_wrong_sizes_are_errors() {
        let (w, widened) = matrix(HalfKind::Bf16, 2, 8);
        assert_eq!(
            widened[3],
            bf16::from_f32((3.0f32 * 0.377).sin() * 0.5).to_f32()
        );
        assert_eq!(w.kind(), HalfKind::Bf16);
        assert!(HalfMatrix::from_le_bytes(HalfKind::F16, 2, 3, &[0; 10]).is_err());
        assert!(HalfMatrix::from_le_bytes(HalfKind::F16, 2, 0, &[]).is_err());
    }
}
