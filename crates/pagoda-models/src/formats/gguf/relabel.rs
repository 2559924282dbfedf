//! GGUF files with IQ4_NL tensors (llama.cpp's fallback for rows that are
//! not whole 256-value K-quant blocks), which candle-core's reader does not
//! know. An IQ4_NL block has Q4_0's geometry (32 values in 18 bytes: an f16
//! scale and 16 bytes of nibbles; only the nibbles' meaning differs), so
//! the header is scanned here, those tensors' type fields are rewritten as
//! Q4_0 in a copy of the header for candle to parse, and their names are
//! kept so that their bytes are read as IQ4_NL.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

/// ggml's type number of IQ4_NL.
const IQ4_NL: u32 = 20;
/// ggml's type number of Q4_0.
const Q4_0: u32 = 2;
/// Headers longer than this are not scanned (real ones are a few MB).
const MAX_HEADER: u64 = 256 << 20;

/// A header with its IQ4_NL tensors relabelled as Q4_0.
pub(crate) struct Relabelled {
    /// The header's bytes, up to the end of the tensor infos.
    pub(crate) header: Vec<u8>,
    /// The tensors stored as IQ4_NL.
    pub(crate) iq4_nl: HashSet<String>,
}

/// The header of the file `reader` reads, relabelled, if it has IQ4_NL
/// tensors; `None` if it has none or cannot be scanned (the normal reader
/// then reports what is wrong).
pub(crate) fn relabel(reader: &mut (impl Read + Seek), file_len: u64) -> Option<Relabelled> {
    reader.seek(SeekFrom::Start(0)).ok()?;
    let mut header = Vec::new();
    reader
        .take(file_len.min(MAX_HEADER))
        .read_to_end(&mut header)
        .ok()?;
    let mut scan = Scan {
        bytes: &header,
        at: 0,
        wide: true,
    };
    if scan.u32()? != u32::from_le_bytes(*b"GGUF") {
        return None;
    }
    scan.wide = match scan.u32()? {
        1 => false,
        2 | 3 => true,
        _ => return None,
    };
    let tensors = scan.len()?;
    let kvs = scan.len()?;
    for _ in 0..kvs {
        scan.string()?;
        let kind = scan.u32()?;
        scan.value(kind, 0)?;
    }
    let mut iq4_nl = HashSet::new();
    let mut patches = Vec::new();
    for _ in 0..tensors {
        let name = String::from_utf8(scan.string()?.to_vec()).ok()?;
        let dims = scan.u32()?;
        for _ in 0..dims {
            scan.len()?;
        }
        let type_at = scan.at;
        if scan.u32()? == IQ4_NL {
            patches.push(type_at);
            iq4_nl.insert(name);
        }
        scan.skip(8)?;
    }
    if iq4_nl.is_empty() {
        return None;
    }
    header.truncate(scan.at);
    for at in patches {
        header[at..at + 4].copy_from_slice(&Q4_0.to_le_bytes());
    }
    Some(Relabelled { header, iq4_nl })
}

/// A cursor over header bytes; every read is checked.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
    /// GGUF v2+ lengths are u64 (v1: u32).
    wide: bool,
}

impl Scan<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        self.take(usize::try_from(n).ok()?).map(|_| ())
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut v = [0u8; 8];
        v.copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    }

    fn len(&mut self) -> Option<u64> {
        if self.wide {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }

    fn string(&mut self) -> Option<&[u8]> {
        let n = self.len()?;
        self.take(usize::try_from(n).ok()?)
    }

    /// Skips one metadata value of type `kind` (nested arrays: `depth`).
    fn value(&mut self, kind: u32, depth: usize) -> Option<()> {
        match kind {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => self.string().map(|_| ()),
            9 if depth < 4 => {
                let inner = self.u32()?;
                let n = self.len()?;
                let size = match inner {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                match size {
                    Some(size) => self.skip(n.checked_mul(size)?),
                    None => (0..n).try_for_each(|_| self.value(inner, depth + 1)),
                }
            }
            _ => None,
        }
    }
}
