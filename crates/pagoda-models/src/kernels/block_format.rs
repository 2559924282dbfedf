//! The GGUF block formats pagoda's own kernels implement (Q4_0, Q4_1,
//! Q8_0): 32 values per block, an f16 scale (and Q4_1's f16 offset)
//! followed by the quantized values, as ggml's `ggml-common.h` lays them
//! out; and the sizes of a panel block (`width` rows' blocks side by side,
//! [`crate::kernels::panel`]). Every kernel family ([`crate::kernels::f32`],
//! [`crate::kernels::int8`], [`crate::kernels::panel`] and their SIMD builds)
//! reads blocks through these facts.

/// Values per block, in every format.
pub(crate) const QK: usize = 32;

/// The block formats these kernels implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// `d: f16, qs: [u8; 16]`: value = d · (nibble − 8).
    Q4_0,
    /// `d: f16, m: f16, qs: [u8; 16]`: value = d · nibble + m.
    Q4_1,
    /// `d: f16, qs: [i8; 32]`: value = d · q.
    Q8_0,
}

impl BlockFormat {
    /// Bytes per block of 32 values.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }

    /// The format of a candle GGUF type, if these kernels implement it.
    pub fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType;
        match dtype {
            GgmlDType::Q4_0 => Some(BlockFormat::Q4_0),
            GgmlDType::Q4_1 => Some(BlockFormat::Q4_1),
            GgmlDType::Q8_0 => Some(BlockFormat::Q8_0),
            _ => None,
        }
    }
}

/// The block format a kernel's const parameter names (0: Q4_0, 1: Q4_1,
/// otherwise Q8_0).
pub(crate) const fn format_of(f: u8) -> BlockFormat {
    match f {
        0 => BlockFormat::Q4_0,
        1 => BlockFormat::Q4_1,
        _ => BlockFormat::Q8_0,
    }
}

/// Bytes of one panel block's scales (`d`, and `m` for Q4_1) for `width` rows.
pub(crate) const fn scale_bytes(format: BlockFormat, width: usize) -> usize {
    match format {
        BlockFormat::Q4_1 => 4 * width,
        _ => 2 * width,
    }
}

/// Bytes of one panel block (`width` rows' block `b`).
pub(crate) const fn panel_block_bytes(format: BlockFormat, width: usize) -> usize {
    width * format.block_bytes()
}
