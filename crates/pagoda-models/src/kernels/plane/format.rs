//! The GGUF types the bit-plane kernels compute, and what each one is made
//! of once its GGUF blocks are decoded: per 32-value sub-block, unsigned
//! integer codes of a few bits, a code offset, integer sub-scales (one per
//! sub-block or one per 16 values) and integer or f16 minimums, under an
//! f16 scale per block (`d`, and `dmin` for the K-types with minimums).
//!
//! | type | values / block | code bits (planes) | value |
//! |---|---|---|---|
//! | Q2_K | 256 | 2 | `d·sc₁₆·u − dmin·m₁₆` |
//! | Q3_K | 256 | 2 + 1 | `d·sc₁₆·(u − 4)` (`sc` signed) |
//! | Q4_K | 256 | 4 | `d·sc₃₂·u − dmin·m₃₂` |
//! | Q5_K | 256 | 4 + 1 | `d·sc₃₂·u − dmin·m₃₂` |
//! | Q6_K | 256 | 4 + 2 | `d·sc₁₆·(u − 32)` (`sc` signed) |
//! | Q5_0 | 32 | 4 + 1 | `d·(u − 16)` |
//! | Q5_1 | 32 | 4 + 1 | `d·u + m` (`m` an f16) |
//! | IQ4_NL | 32 | 4 | `d·T[u]` (`T` a fixed table of 16 signed values) |

use candle_core::quantized::GgmlDType;

/// The GGUF block types computed by the bit-plane kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaneFormat {
    /// 2-bit codes, 16-value 4-bit scales and minimums (84 bytes / 256).
    Q2K,
    /// 3-bit codes, 16-value 6-bit signed scales (110 bytes / 256).
    Q3K,
    /// 4-bit codes, 32-value 6-bit scales and minimums (144 bytes / 256).
    Q4K,
    /// 5-bit codes, 32-value 6-bit scales and minimums (176 bytes / 256).
    Q5K,
    /// 6-bit codes, 16-value 8-bit signed scales (210 bytes / 256).
    Q6K,
    /// 5-bit codes offset by 16, one f16 scale (22 bytes / 32).
    Q5_0,
    /// 5-bit codes, an f16 scale and minimum (24 bytes / 32).
    Q5_1,
    /// 4-bit indices into a fixed table of 16 non-uniform values, one f16
    /// scale (18 bytes / 32): llama.cpp's fallback for rows that are not
    /// whole 256-value K-quant blocks.
    IQ4NL,
}

/// IQ4_NL's values (ggml's `kvalues_iq4nl`).
pub(crate) const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// One bit plane of the codes, low planes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plane {
    /// Four bits per value.
    Nibble,
    /// Two bits per value.
    Two,
    /// One bit per value.
    One,
}

impl Plane {
    /// Bits per value.
    pub(crate) const fn bits(self) -> u32 {
        match self {
            Plane::Nibble => 4,
            Plane::Two => 2,
            Plane::One => 1,
        }
    }

    /// Bytes of the plane for one 32-value sub-block of `width` rows.
    pub(crate) const fn bytes(self, width: usize) -> usize {
        self.bits() as usize * 4 * width
    }
}

/// How the integer sub-scales are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubScales {
    /// None: every code has the block's scale alone.
    None,
    /// One per 32-value sub-block.
    Per32,
    /// One per 16 values: two per sub-block.
    Per16,
}

/// How a block's minimums are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mins {
    /// No minimum.
    None,
    /// Integer minimums (per sub-block, or per 16 values with
    /// [`SubScales::Per16`]) under an f16 `dmin`, subtracted.
    Int,
    /// One f16 minimum per block, added.
    Float,
}

/// Everything the kernels need to know about a type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// 32-value sub-blocks per GGUF block.
    pub(crate) subs: usize,
    /// Bytes per GGUF block.
    pub(crate) gguf_bytes: usize,
    /// The code's planes, low bits first.
    pub(crate) planes: &'static [Plane],
    /// Subtracted from every code.
    pub(crate) bias: i32,
    /// Sub-scale layout.
    pub(crate) scales: SubScales,
    /// Minimum kind.
    pub(crate) mins: Mins,
    /// A table the stored codes index (the code is `table[n] + 128`).
    pub(crate) lookup: Option<&'static [i8; 16]>,
}

impl Spec {
    /// The unsigned code a stored value `raw` stands for (the value is
    /// `code − bias`, scaled).
    pub(crate) fn code(&self, raw: u8) -> i32 {
        match self.lookup {
            Some(table) => table[raw as usize & 15] as i32 + 128,
            None => raw as i32,
        }
    }
}

impl PlaneFormat {
    /// Every type, for tests and messages.
    pub const ALL: [PlaneFormat; 8] = [
        PlaneFormat::Q2K,
        PlaneFormat::Q3K,
        PlaneFormat::Q4K,
        PlaneFormat::Q5K,
        PlaneFormat::Q6K,
        PlaneFormat::Q5_0,
        PlaneFormat::Q5_1,
        PlaneFormat::IQ4NL,
    ];

    /// The type's facts.
    pub(crate) const fn spec(self) -> Spec {
        use Plane::{Nibble, One, Two};
        match self {
            PlaneFormat::Q2K => Spec {
                subs: 8,
                gguf_bytes: 84,
                planes: &[Two],
                bias: 0,
                scales: SubScales::Per16,
                mins: Mins::Int,
                lookup: None,
            },
            PlaneFormat::Q3K => Spec {
                subs: 8,
                gguf_bytes: 110,
                planes: &[Two, One],
                bias: 4,
                scales: SubScales::Per16,
                mins: Mins::None,
                lookup: None,
            },
            PlaneFormat::Q4K => Spec {
                subs: 8,
                gguf_bytes: 144,
                planes: &[Nibble],
                bias: 0,
                scales: SubScales::Per32,
                mins: Mins::Int,
                lookup: None,
            },
            PlaneFormat::Q5K => Spec {
                subs: 8,
                gguf_bytes: 176,
                planes: &[Nibble, One],
                bias: 0,
                scales: SubScales::Per32,
                mins: Mins::Int,
                lookup: None,
            },
            PlaneFormat::Q6K => Spec {
                subs: 8,
                gguf_bytes: 210,
                planes: &[Nibble, Two],
                bias: 32,
                scales: SubScales::Per16,
                mins: Mins::None,
                lookup: None,
            },
            PlaneFormat::Q5_0 => Spec {
                subs: 1,
                gguf_bytes: 22,
                planes: &[Nibble, One],
                bias: 16,
                scales: SubScales::None,
                mins: Mins::None,
                lookup: None,
            },
            PlaneFormat::Q5_1 => Spec {
                subs: 1,
                gguf_bytes: 24,
                planes: &[Nibble, One],
                bias: 0,
                scales: SubScales::None,
                mins: Mins::Float,
                lookup: None,
            },
            PlaneFormat::IQ4NL => Spec {
                subs: 1,
                gguf_bytes: 18,
                planes: &[Nibble],
                bias: 128,
                scales: SubScales::None,
                mins: Mins::None,
                lookup: Some(&IQ4_NL_VALUES),
            },
        }
    }

    /// Values per GGUF block (256 or 32).
    pub const fn block_values(self) -> usize {
        self.spec().subs * 32
    }

    /// Bytes per GGUF block.
    pub const fn block_bytes(self) -> usize {
        self.spec().gguf_bytes
    }

    /// The type of a candle GGUF type, if these kernels compute it.
    pub fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q2K => PlaneFormat::Q2K,
            GgmlDType::Q3K => PlaneFormat::Q3K,
            GgmlDType::Q4K => PlaneFormat::Q4K,
            GgmlDType::Q5K => PlaneFormat::Q5K,
            GgmlDType::Q6K => PlaneFormat::Q6K,
            GgmlDType::Q5_0 => PlaneFormat::Q5_0,
            GgmlDType::Q5_1 => PlaneFormat::Q5_1,
            _ => return None,
        })
    }

    /// The candle type of the same name (candle has no IQ4_NL).
    pub fn ggml(self) -> Option<GgmlDType> {
        Some(match self {
            PlaneFormat::Q2K => GgmlDType::Q2K,
            PlaneFormat::Q3K => GgmlDType::Q3K,
            PlaneFormat::Q4K => GgmlDType::Q4K,
            PlaneFormat::Q5K => GgmlDType::Q5K,
            PlaneFormat::Q6K => GgmlDType::Q6K,
            PlaneFormat::Q5_0 => GgmlDType::Q5_0,
            PlaneFormat::Q5_1 => GgmlDType::Q5_1,
            PlaneFormat::IQ4NL => return None,
        })
    }

    /// The type a kernel's const parameter names (its index in [`Self::ALL`]).
    pub(crate) const fn of(f: u8) -> Self {
        Self::ALL[f as usize]
    }
}

/// Where everything lies in one panel block (one GGUF block's values for
/// `width` rows): the f16 scales `d[width]` (and `dmin` or `m[width]`),
/// the sub-scales `sc[sub][half][width]` (i8), the integer minimums
/// `m[sub][half][width]` (u8), then each sub-block's planes in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Rows per panel.
    pub(crate) width: usize,
    /// Offset of the second f16 vector (`dmin` or `m`), if any.
    pub(crate) second_at: usize,
    /// Offset of the sub-scales.
    pub(crate) scales_at: usize,
    /// Sub-scale values per sub-block and row (0, 1 or 2).
    pub(crate) scales_per_sub: usize,
    /// Offset of the integer minimums.
    pub(crate) mins_at: usize,
    /// Integer minimum values per sub-block and row (0, 1 or 2).
    pub(crate) mins_per_sub: usize,
    /// Offset of the first sub-block's planes.
    pub(crate) planes_at: usize,
    /// Bytes of one sub-block's planes.
    pub(crate) sub_bytes: usize,
    /// Bytes of the whole panel block.
    pub(crate) block_bytes: usize,
}

impl Layout {
    /// The layout of `format` in panels of `width` rows.
    pub(crate) const fn new(format: PlaneFormat, width: usize) -> Self {
        let spec = format.spec();
        let second_at = 2 * width;
        let scales_at = match spec.mins {
            Mins::None => 2 * width,
            _ => 4 * width,
        };
        let scales_per_sub = match spec.scales {
            SubScales::None => 0,
            SubScales::Per32 => 1,
            SubScales::Per16 => 2,
        };
        let mins_at = scales_at + spec.subs * scales_per_sub * width;
        let mins_per_sub = match spec.mins {
            Mins::Int => scales_per_sub,
            _ => 0,
        };
        let planes_at = mins_at + spec.subs * mins_per_sub * width;
        let mut sub_bytes = 0;
        let mut i = 0;
        while i < spec.planes.len() {
            sub_bytes += spec.planes[i].bytes(width);
            i += 1;
        }
        Self {
            width,
            second_at,
            scales_at,
            scales_per_sub,
            mins_at,
            mins_per_sub,
            planes_at,
            sub_bytes,
            block_bytes: planes_at + spec.subs * sub_bytes,
        }
    }

    /// Offset of sub-block `s`'s plane `k` (of `planes`).
    pub(crate) const fn plane_at(&self, planes: &[Plane], s: usize, k: usize) -> usize {
        let mut at = self.planes_at + s * self.sub_bytes;
        let mut i = 0;
        while i < k {
            at += planes[i].bytes(self.width);
            i += 1;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_blocks_cost_at_most_a_few_bytes_more_than_gguf_blocks() {
        for format in PlaneFormat::ALL {
            let layout = Layout::new(format, 16);
            let gguf = 16 * format.block_bytes();
            assert!(
                layout.block_bytes <= gguf + 16 * 16,
                "{format:?}: {} vs {gguf}",
                layout.block_bytes
            );
            if let Some(dtype) = format.ggml() {
                assert_eq!(PlaneFormat::from_ggml(dtype), Some(format));
            }
            assert_eq!(PlaneFormat::of(format as u8), format);
        }
    }
}
