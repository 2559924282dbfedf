//! GGUF blocks decoded into the bit-plane kernels' terms ([`Decoded`]):
//! per 32-value sub-block the unsigned codes, the sub-scales and the integer
//! minimums, under the block's f16 scales. Follows ggml's `ggml-quants.c`
//! dequantization of each type; the decoded block dequantizes to the same
//! values ([`Decoded::value`]).

use half::f16;

use crate::kernels::plane::format::{Mins, PlaneFormat, SubScales};

/// One 32-value sub-block.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sub {
    /// Unsigned codes (the value is `code − bias`, scaled), or for a type
    /// with a table, the indices into it (see `Spec::code`).
    pub(crate) codes: [u8; 32],
    /// Sub-scales of values `0..16` and `16..32` (equal for one per sub-block).
    pub(crate) sc: [i8; 2],
    /// Integer minimums of values `0..16` and `16..32`.
    pub(crate) m: [u8; 2],
}

/// One GGUF block, decoded.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Decoded {
    /// The f16 scale's bits.
    pub(crate) d: u16,
    /// The f16 `dmin` (K-types) or `m` (Q5_1) bits; 0 otherwise.
    pub(crate) second: u16,
    /// The sub-blocks (only the first `spec().subs` are used).
    pub(crate) subs: [Sub; 8],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// An f16's value from its bits.
pub(crate) fn f32_of(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// Q4_K's and Q5_K's 6-bit scale and minimum of sub-block `j` from their
/// 12 packed bytes (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q3_K's sixteen 6-bit scales from their 12 packed bytes, minus 32.
fn q3k_scales(q: &[u8]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let byte = aux[i / 4].to_le_bytes()[i % 4];
        *o = (byte as i32 - 32) as i8;
    }
    out
}

impl Decoded {
    /// Decodes one GGUF block of `format` (`format.block_bytes()` bytes).
    pub(crate) fn new(format: PlaneFormat, b: &[u8]) -> Self {
        assert_eq!(b.len(), format.block_bytes());
        let mut out = Decoded::default();
        match format {
            PlaneFormat::Q4K | PlaneFormat::Q5K => {
                out.d = u16_at(b, 0);
                out.second = u16_at(b, 2);
                let scales = &b[4..16];
                let (qh, qs) = if format == PlaneFormat::Q5K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                for (s, sub) in out.subs.iter_mut().enumerate() {
                    let (sc, m) = scale_min_k4(s, scales);
                    sub.sc = [sc as i8; 2];
                    sub.m = [m; 2];
                    let q = &qs[32 * (s / 2)..][..32];
                    for (l, code) in sub.codes.iter_mut().enumerate() {
                        let nib = if s % 2 == 0 { q[l] & 0x0F } else { q[l] >> 4 };
                        let high = qh.map_or(0, |h| (h[l] >> s) & 1);
                        *code = nib | (high << 4);
                    }
                }
            }
            PlaneFormat::Q6K => {
                let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
                out.d = u16_at(b, 208);
                for (s, sub) in out.subs.iter_mut().enumerate() {
                    let (h, quarter) = (s / 4, s % 4);
                    let sc = &scales[8 * h + 2 * quarter..];
                    sub.sc = [sc[0] as i8, sc[1] as i8];
                    let low = &ql[64 * h + 32 * (quarter % 2)..][..32];
                    let high = &qh[32 * h..][..32];
                    for (l, code) in sub.codes.iter_mut().enumerate() {
                        let nib = if quarter < 2 {
                            low[l] & 0x0F
                        } else {
                            low[l] >> 4
                        };
                        *code = nib | (((high[l] >> (2 * quarter)) & 3) << 4);
                    }
                }
            }
            PlaneFormat::Q3K => {
                let (hmask, qs) = (&b[..32], &b[32..96]);
                let scales = q3k_scales(&b[96..108]);
                out.d = u16_at(b, 108);
                for (s, sub) in out.subs.iter_mut().enumerate() {
                    let (n, j) = (s / 4, s % 4);
                    sub.sc = [scales[2 * s], scales[2 * s + 1]];
                    let q = &qs[32 * n..][..32];
                    for (l, code) in sub.codes.iter_mut().enumerate() {
                        *code = ((q[l] >> (2 * j)) & 3) | (((hmask[l] >> s) & 1) << 2);
                    }
                }
            }
            PlaneFormat::Q2K => {
                let (scales, qs) = (&b[..16], &b[16..80]);
                out.d = u16_at(b, 80);
                out.second = u16_at(b, 82);
                for (s, sub) in out.subs.iter_mut().enumerate() {
                    let (n, j) = (s / 4, s % 4);
                    let (lo, hi) = (scales[2 * s], scales[2 * s + 1]);
                    sub.sc = [(lo & 0x0F) as i8, (hi & 0x0F) as i8];
                    sub.m = [lo >> 4, hi >> 4];
                    let q = &qs[32 * n..][..32];
                    for (l, code) in sub.codes.iter_mut().enumerate() {
                        *code = (q[l] >> (2 * j)) & 3;
                    }
                }
            }
            PlaneFormat::IQ4NL => {
                out.d = u16_at(b, 0);
                let sub = &mut out.subs[0];
                sub.sc = [1, 1];
                for (l, code) in sub.codes.iter_mut().enumerate() {
                    // The table index; `Spec::code` maps it.
                    *code = if l < 16 {
                        b[2 + l] & 0x0F
                    } else {
                        b[2 + l - 16] >> 4
                    };
                }
            }
            PlaneFormat::Q5_0 | PlaneFormat::Q5_1 => {
                out.d = u16_at(b, 0);
                let at = if format == PlaneFormat::Q5_1 {
                    out.second = u16_at(b, 2);
                    4
                } else {
                    2
                };
                let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                let qs = &b[at + 4..at + 20];
                let sub = &mut out.subs[0];
                sub.sc = [1, 1];
                for (l, code) in sub.codes.iter_mut().enumerate() {
                    let nib = if l < 16 {
                        qs[l] & 0x0F
                    } else {
                        qs[l - 16] >> 4
                    };
                    *code = nib | ((((qh >> l) & 1) as u8) << 4);
                }
            }
        }
        out
    }

    /// Every value of the block (`32 · subs`) into `out`, as ggml
    /// dequantizes them (the same bits as [`Self::value`], with the scales
    /// converted once per block).
    pub(crate) fn values(&self, format: PlaneFormat, out: &mut [f32]) {
        let spec = format.spec();
        let (d, second) = (f32_of(self.d), f32_of(self.second));
        for (sub, out) in self.subs[..spec.subs].iter().zip(out.chunks_exact_mut(32)) {
            for (h, out) in out.chunks_exact_mut(16).enumerate() {
                let dsc = d * sub.sc[h] as f32;
                let dm = second * sub.m[h] as f32;
                for (o, &raw) in out.iter_mut().zip(&sub.codes[16 * h..16 * h + 16]) {
                    let u = (spec.code(raw) - spec.bias) as f32;
                    *o = match (spec.scales, spec.mins) {
                        (SubScales::None, Mins::Float) => u * d + second,
                        (SubScales::None, _) => u * d,
                        (_, Mins::Int) => dsc * u - dm,
                        _ => dsc * u,
                    };
                }
            }
        }
    }

    /// Value `v` (of the block's `32 · subs`) as ggml dequantizes it.
    #[cfg(test)]
    pub(crate) fn value(&self, format: PlaneFormat, v: usize) -> f32 {
        let spec = format.spec();
        let sub = &self.subs[v / 32];
        let half = (v % 32) / 16;
        let u = spec.code(sub.codes[v % 32]) - spec.bias;
        let d = f32_of(self.d);
        match (spec.scales, spec.mins) {
            (SubScales::None, Mins::Float) => u as f32 * d + f32_of(self.second),
            (SubScales::None, _) => u as f32 * d,
            (_, Mins::Int) => {
                d * sub.sc[half] as f32 * u as f32 - f32_of(self.second) * sub.m[half] as f32
            }
            _ => d * sub.sc[half] as f32 * u as f32,
        }
    }
}
