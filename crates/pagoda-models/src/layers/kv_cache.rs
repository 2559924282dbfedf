//! The paged KV pool: per layer, one flat buffer of fixed-size blocks that
//! hold the keys and values of `block_size` consecutive positions of one
//! sequence. A sequence finds its positions through its block table
//! (position `p` lives in `block_table[p / block_size]`, slot `p % block_size`).
//!
//! The pool is allocated once; which sequence owns which block is decided
//! outside the model (by the engine's block manager). The model only writes
//! the K/V of new tokens into the slots a batch names and reads them back in
//! attention.
//!
//! The values are stored in the pool's [`KvDtype`]: f32, f16 (half the
//! memory: twice the tokens in the same budget; every value rounded once to
//! the nearest f16) or Q8_0 (each token's row in 32-value blocks with an f16
//! scale). Attention reads f32 blocks in place; other blocks it widens into
//! its own scratch (`context_blocks`): one block at a time for a decode
//! step, a head's whole context once for a prompt (whose query tiles each
//! read every block) — never a widened copy of the whole cache.
//!
//! A model declares what a token stores per layer ([`KvKind`]):
//!
//! - **Per-head K and V** (llama, qwen2). One layer's K (and likewise V):
//!
//!   ```text
//!   block 0                      block 1
//!   ├─ kv head 0 ─────────────┤  ├─ kv head 0 ───── ...
//!   │ slot 0: [head_dim]      │  │
//!   │ slot 1: [head_dim]      │  │
//!   │ ...  (block_size slots) │  │
//!   ├─ kv head 1 ─────────────┤
//!   ```
//!
//!   so that one head's keys within a block are contiguous for the attention
//!   loop (keys are stored transposed within a head, see [`LayerView::keys_t`]).
//!
//! - **A compressed latent** (DeepSeek-V2/V3 multi-head latent attention): one
//!   row per token of `kv_lora_rank + qk_rope_head_dim` values — the latent
//!   after `kv_a_layernorm`, then the rotated shared rope key — serving as both
//!   key and value of every head; no per-head K/V is stored:
//!
//!   ```text
//!   block 0
//!   │ slot 0: [latent (kv_lora_rank) | k_rope (qk_rope_head_dim)]
//!   │ slot 1: [latent                | k_rope                  ]
//!   │ ...  (block_size slots)
//!   ```

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::error::{ModelError, Result};

/// Identifies one block of the KV pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

impl BlockId {
    /// The block's index into the pool.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The element type the pool stores K and V (or latent rows) in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// Four bytes per value, exact.
    F32,
    /// Two bytes per value (each rounded to the nearest f16; values beyond
    /// f16's range saturate to ±65504). The default.
    #[default]
    F16,
    /// ggml's Q8_0 per token: each row (one head's key or value, or a
    /// latent row) in blocks of 32 values, each block an f16 scale
    /// `max|x| / 127` and 32 signed bytes (a row's last block may be
    /// shorter): 1.0625 bytes per value, about four times the tokens of f32.
    Q8_0,
}

/// Values per block of a [`KvDtype::Q8_0`] row.
const Q8_BLOCK: usize = 32;

impl KvDtype {
    /// Bytes of one stored row of `len` values.
    pub const fn row_bytes(self, len: usize) -> usize {
        match self {
            KvDtype::F32 => 4 * len,
            KvDtype::F16 => 2 * len,
            KvDtype::Q8_0 => len + 2 * len.div_ceil(Q8_BLOCK),
        }
    }

    /// The name in flags and logs (`f32`, `f16`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Q8_0 => "q8_0",
        }
    }
}

/// What the KV pool holds for a model: declared by the model (layers and
/// what a token stores), stored in the element type the server chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    /// Number of layers, each with its own buffers.
    pub num_layers: usize,
    /// What one token stores in one layer.
    pub kind: KvKind,
    /// The element type (f32 as a model declares it; see [`Self::with_dtype`]).
    pub dtype: KvDtype,
    /// The layers that attend over a sliding window, if any.
    pub window: Option<KvWindow>,
}

/// The layers of a model that attend over a sliding window of recent
/// positions, and the window's length. Their keys and values may live in a
/// pool of their own (see [`PagedKvCache::with_window_pool`]), of which a
/// sequence holds only the blocks its window still covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvWindow {
    /// Keys a query at position `p` sees: `p − positions < k ≤ p`.
    pub positions: usize,
    /// Bit `l` set: layer `l` attends over the window.
    pub layers: u128,
}

impl KvWindow {
    /// The window of `positions` over the layers where `sliding` is true
    /// (at most 128 layers).
    pub fn over(positions: usize, sliding: impl IntoIterator<Item = bool>) -> Self {
        let layers = sliding
            .into_iter()
            .take(128)
            .enumerate()
            .filter(|&(_, s)| s)
            .fold(0u128, |m, (l, _)| m | (1u128 << l));
        Self { positions, layers }
    }

    /// Whether layer `layer` attends over the window.
    pub fn contains(&self, layer: usize) -> bool {
        layer < 128 && self.layers & (1u128 << layer) != 0
    }

    /// Number of windowed layers.
    pub fn num_layers(&self) -> usize {
        self.layers.count_ones() as usize
    }
}

/// What one token stores in one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvKind {
    /// A key and a value per kv head (multi-head and grouped-query attention).
    PerHead {
        /// Number of key/value heads.
        kv_heads: usize,
        /// Values per head per token (of K, and again of V).
        head_dim: usize,
    },
    /// One compressed latent shared by every head (multi-head latent attention).
    Latent(LatentKv),
}

/// The per-token latent of multi-head latent attention, and the per-head
/// shapes it stands for (to report what uncompressed K/V would take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentKv {
    /// Width of the compressed latent (`kv_lora_rank`), stored after its norm.
    pub kv_lora_rank: usize,
    /// Width of the shared rotary key (`qk_rope_head_dim`), stored rotated.
    pub qk_rope_head_dim: usize,
    /// Attention heads the latent is expanded to.
    pub num_heads: usize,
    /// Per-head key width without position (`qk_nope_head_dim`).
    pub qk_nope_head_dim: usize,
    /// Per-head value width (`v_head_dim`).
    pub v_head_dim: usize,
}

impl LatentKv {
    /// Values of one token's row: the latent, then the rope key.
    pub fn width(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }
}

impl KvLayout {
    /// Per-head K and V (today's llama layout), in f32.
    pub const fn per_head(num_layers: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self {
            num_layers,
            kind: KvKind::PerHead { kv_heads, head_dim },
            dtype: KvDtype::F32,
            window: None,
        }
    }

    /// One latent row per token per layer, in f32.
    pub const fn latent(num_layers: usize, latent: LatentKv) -> Self {
        Self {
            num_layers,
            kind: KvKind::Latent(latent),
            dtype: KvDtype::F32,
            window: None,
        }
    }

    /// The same layout stored in `dtype`.
    pub const fn with_dtype(self, dtype: KvDtype) -> Self {
        Self { dtype, ..self }
    }

    /// The same layout with `window`'s layers attending over a sliding
    /// window (none when `window` names no layer).
    pub const fn with_window(self, window: KvWindow) -> Self {
        Self {
            window: if window.layers == 0 {
                None
            } else {
                Some(window)
            },
            ..self
        }
    }

    /// Whether layer `layer` attends over a sliding window.
    pub fn is_windowed(&self, layer: usize) -> bool {
        self.window.is_some_and(|w| w.contains(layer))
    }

    /// Layers attending over a sliding window, and the others.
    pub fn window_and_global_layers(&self) -> (usize, usize) {
        let windowed = self
            .window
            .map_or(0, |w| w.num_layers().min(self.num_layers));
        (windowed, self.num_layers - windowed)
    }

    /// Bytes one token occupies in one layer.
    pub fn bytes_per_token_per_layer(&self) -> usize {
        self.bytes_per_token() / self.num_layers.max(1)
    }

    /// Values one token stores in one layer's key buffer (the whole latent
    /// row for a latent layout) and in its value buffer (none for a latent
    /// layout: the latent serves as both).
    fn values_per_slot(&self) -> (usize, usize) {
        match self.kind {
            KvKind::PerHead { kv_heads, head_dim } => (kv_heads * head_dim, kv_heads * head_dim),
            KvKind::Latent(l) => (l.width(), 0),
        }
    }

    /// Values in one stored row: a head's key or value, or a latent row.
    fn row(&self) -> usize {
        match self.kind {
            KvKind::PerHead { head_dim, .. } => head_dim,
            KvKind::Latent(l) => l.width(),
        }
    }

    /// Bytes one token occupies in the whole cache (all layers, in the
    /// layout's element type), as the pool really stores it.
    pub fn bytes_per_token(&self) -> usize {
        let (k, v) = self.values_per_slot();
        let row = self.row().max(1);
        self.num_layers * (k + v) / row * self.dtype.row_bytes(row)
    }

    /// Bytes one token would occupy with plain per-head K and V (all layers,
    /// same element type): for a latent layout, `num_layers × num_heads ×
    /// (qk_nope_head_dim + qk_rope_head_dim + v_head_dim) × bytes` — what the
    /// latent saves is the ratio of this to [`Self::bytes_per_token`]. For a
    /// per-head layout the two are equal.
    pub fn multi_head_bytes_per_token(&self) -> usize {
        match self.kind {
            KvKind::PerHead { .. } => self.bytes_per_token(),
            KvKind::Latent(l) => {
                self.num_layers
                    * l.num_heads
                    * (self
                        .dtype
                        .row_bytes(l.qk_nope_head_dim + l.qk_rope_head_dim)
                        + self.dtype.row_bytes(l.v_head_dim))
            }
        }
    }
}

/// One buffer of stored values.
#[derive(Debug)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// Rows of `row` values in Q8_0 blocks: the bytes, and each block's scale.
    Q8 {
        qs: Vec<i8>,
        d: Vec<f16>,
        row: usize,
    },
}

impl Store {
    /// `len` zero values in rows of `row`.
    fn zeros(dtype: KvDtype, len: usize, row: usize) -> Self {
        match dtype {
            KvDtype::F32 => Store::F32(vec![0.0; len]),
            KvDtype::F16 => Store::F16(vec![f16::ZERO; len]),
            KvDtype::Q8_0 => Store::Q8 {
                qs: vec![0; len],
                d: vec![f16::ZERO; len.checked_div(row).unwrap_or(0) * row.div_ceil(Q8_BLOCK)],
                row,
            },
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Store::F32(v) => v.len(),
            Store::F16(v) => v.len(),
            Store::Q8 { qs, .. } => qs.len(),
        }
    }

    /// Stores `src` from `at` on (for Q8_0, whole rows: `at` and the length
    /// multiples of the row).
    fn put(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Store::F16(v) => {
                for (d, &s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = to_f16(s);
                }
            }
            Store::Q8 { qs, d, row } => {
                let (row, blocks) = (*row, row.div_ceil(Q8_BLOCK));
                assert!(at.is_multiple_of(row) && src.len().is_multiple_of(row));
                for (r, x) in src.chunks_exact(row).enumerate() {
                    let first = at / row + r;
                    quantize_row(
                        x,
                        &mut qs[first * row..(first + 1) * row],
                        &mut d[first * blocks..(first + 1) * blocks],
                    );
                }
            }
        }
    }

    /// Stores one value (f32 and f16 stores: the transposed keys).
    fn set(&mut self, at: usize, x: f32) {
        match self {
            Store::F32(v) => v[at] = x,
            Store::F16(v) => v[at] = to_f16(x),
            Store::Q8 { .. } => unreachable!("Q8_0 rows are written whole"),
        }
    }

    fn copy_within(&mut self, src: std::ops::Range<usize>, dst: usize) {
        match self {
            Store::F32(v) => v.copy_within(src, dst),
            Store::F16(v) => v.copy_within(src, dst),
            Store::Q8 { qs, d, row } => {
                let blocks = row.div_ceil(Q8_BLOCK);
                let rows = |i: usize| i / *row * blocks;
                d.copy_within(rows(src.start)..rows(src.end), rows(dst));
                qs.copy_within(src, dst);
            }
        }
    }

    /// The values in `range` (whole rows for Q8_0), widened as stored;
    /// `transposed` (Q8_0 keys) widens `[rows, row]` into `[row, rows]`.
    fn slice(&self, range: std::ops::Range<usize>, transposed: bool) -> KvSlice<'_> {
        match self {
            Store::F32(v) => KvSlice::F32(&v[range]),
            Store::F16(v) => KvSlice::F16(&v[range]),
            Store::Q8 { qs, d, row } => {
                let blocks = row.div_ceil(Q8_BLOCK);
                KvSlice::Q8 {
                    qs: &qs[range.clone()],
                    d: &d[range.start / row * blocks..range.end / row * blocks],
                    row: *row,
                    transposed,
                }
            }
        }
    }
}

/// One row quantized into Q8_0 blocks of up to 32 values: scale
/// `max|x| / 127` (stored as f16, saturating), values rounded to the
/// nearest step; NaN becomes 0.
fn quantize_row(x: &[f32], qs: &mut [i8], d: &mut [f16]) {
    for ((xb, qb), d) in x
        .chunks(Q8_BLOCK)
        .zip(qs.chunks_mut(Q8_BLOCK))
        .zip(d.iter_mut())
    {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let scale = (amax / 127.0).min(65504.0);
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
        *d = f16::from_f32(scale);
    }
}

/// `x` rounded to the nearest f16, saturating at ±65504 (f16's largest
/// finite value) instead of becoming infinite; NaN stays NaN.
fn to_f16(x: f32) -> f16 {
    f16::from_f32(x.clamp(-65504.0, 65504.0))
}

/// Stored values as a kernel reads them: f32 as they are, f16 to be widened.
#[derive(Debug, Clone, Copy)]
pub enum KvSlice<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
    /// Q8_0 rows: bytes and block scales, and whether to widen them
    /// transposed (keys: `[rows, row]` into `[row, rows]`).
    Q8 {
        /// The rows' bytes.
        qs: &'a [i8],
        /// Each row's block scales.
        d: &'a [f16],
        /// Values per row.
        row: usize,
        /// Widen `[rows, row]` as `[row, rows]`.
        transposed: bool,
    },
}

impl<'a> KvSlice<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            KvSlice::F32(v) => v.len(),
            KvSlice::F16(v) => v.len(),
            KvSlice::Q8 { qs, .. } => qs.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32: borrowed when stored so, else widened (exactly)
    /// into `scratch`, which grows as needed.
    pub fn as_f32<'s>(self, scratch: &'s mut Vec<f32>) -> &'s [f32]
    where
        'a: 's,
    {
        if let KvSlice::F32(v) = self {
            return v;
        }
        if scratch.len() < self.len() {
            scratch.resize(self.len(), 0.0);
        }
        let out = &mut scratch[..self.len()];
        self.widen_into(out);
        out
    }

    /// The values widened (exactly, from what is stored) into `out`.
    fn widen_into(self, out: &mut [f32]) {
        match self {
            KvSlice::F32(v) => out.copy_from_slice(v),
            KvSlice::F16(v) => v.convert_to_f32_slice(out),
            KvSlice::Q8 {
                qs,
                d,
                row,
                transposed,
            } => {
                let blocks = row.div_ceil(Q8_BLOCK);
                let rows = qs.len() / row;
                for (r, q) in qs.chunks_exact(row).enumerate() {
                    for (j, qb) in q.chunks(Q8_BLOCK).enumerate() {
                        let scale = d[r * blocks + j].to_f32();
                        for (i, &v) in qb.iter().enumerate() {
                            let x = v as f32 * scale;
                            let c = j * Q8_BLOCK + i;
                            if transposed {
                                out[c * rows + r] = x;
                            } else {
                                out[r * row + c] = x;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The values as a new f32 vector.
    pub fn to_vec(self) -> Vec<f32> {
        self.as_f32(&mut Vec::new()).to_vec()
    }
}

/// Every slice as f32, in order: borrowed where the pool stores f32, else
/// widened (exactly) into `scratch`, all at once, so that a reader going
/// over the same blocks many times (a prompt's query tiles) widens each
/// once.
pub fn widen_blocks<'a: 's, 's>(
    slices: &[KvSlice<'a>],
    scratch: &'s mut Vec<f32>,
) -> Vec<&'s [f32]> {
    let total: usize = slices
        .iter()
        .filter(|s| !matches!(s, KvSlice::F32(_)))
        .map(KvSlice::len)
        .sum();
    if scratch.len() < total {
        scratch.resize(total, 0.0);
    }
    let mut rest: &'s mut [f32] = &mut scratch[..total];
    let mut out = Vec::with_capacity(slices.len());
    for s in slices {
        match *s {
            KvSlice::F32(v) => out.push(v),
            other => {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(other.len());
                other.widen_into(head);
                out.push(head);
                rest = tail;
            }
        }
    }
    out
}

/// One block of a head's context as attention reads it: f32 values, or a
/// stored block to widen when it is read.
pub(crate) enum ContextBlock<'a> {
    /// f32 values, read as they are.
    Ready(&'a [f32]),
    /// Stored values, widened when read.
    Stored(KvSlice<'a>),
}

impl ContextBlock<'_> {
    /// The block's values, widened into `scratch` if need be.
    pub(crate) fn get<'s>(&'s self, scratch: &'s mut Vec<f32>) -> &'s [f32] {
        match self {
            ContextBlock::Ready(v) => v,
            ContextBlock::Stored(s) => s.as_f32(scratch),
        }
    }
}

/// The blocks of `table` as `block` reads them: an f32 pool's as they are;
/// another pool's widened all at once into `scratch` when `whole` (a prompt,
/// whose tiles each read every block), else left to widen one at a time (a
/// decode step reads each once).
pub(crate) fn context_blocks<'a: 's, 's>(
    table: &[BlockId],
    block: impl Fn(BlockId) -> KvSlice<'a>,
    whole: bool,
    scratch: &'s mut Vec<f32>,
) -> Vec<ContextBlock<'s>> {
    let slices: Vec<KvSlice<'a>> = table.iter().map(|&b| block(b)).collect();
    if whole && !slices.iter().all(|s| matches!(s, KvSlice::F32(_))) {
        return widen_blocks(&slices, scratch)
            .into_iter()
            .map(ContextBlock::Ready)
            .collect();
    }
    slices
        .into_iter()
        .map(|s| match s {
            KvSlice::F32(v) => ContextBlock::Ready(v),
            other => ContextBlock::Stored(other),
        })
        .collect()
}

/// Scratch kept per thread beyond this many values is released after use
/// (a long prompt's widened context), so it does not outlive the step.
pub(crate) const KEEP_SCRATCH: usize = 1 << 20;

/// Empties every scratch buffer that grew beyond [`KEEP_SCRATCH`] values.
pub(crate) fn release_if_large(scratch: &mut [Vec<f32>]) {
    for s in scratch {
        if s.capacity() > KEEP_SCRATCH {
            *s = Vec::new();
        }
    }
}

/// One layer's buffers: K and V for a per-head layout; for a latent layout
/// `k` holds the latent rows and `v` is empty.
#[derive(Debug)]
pub struct LayerKv {
    k: Store,
    v: Store,
}

/// The paged KV pool of a model: every layer's blocks.
#[derive(Debug)]
pub struct PagedKvCache {
    layout: KvLayout,
    block_size: usize,
    num_blocks: usize,
    /// Blocks of the window pool (the layers of `layout.window`), when it
    /// is a pool of its own; `None`: those layers share the main pool's
    /// block ids and tables.
    window_blocks: Option<usize>,
    layers: Vec<LayerKv>,
}

impl PagedKvCache {
    /// Allocates `num_blocks` blocks of `block_size` positions for `layout`,
    /// every layer addressed by the same block tables.
    pub fn new(layout: KvLayout, block_size: usize, num_blocks: usize) -> Result<Self> {
        Self::allocate(layout, block_size, num_blocks, None)
    }

    /// Allocates a main pool of `num_blocks` blocks for the layers that
    /// attend over the whole context and a window pool of `window_blocks`
    /// for those of `layout.window`, each addressed by tables of its own
    /// ([`SeqChunk::window_table`](crate::SeqChunk::window_table)): a
    /// sequence need only hold the window blocks its window still covers.
    pub fn with_window_pool(
        layout: KvLayout,
        block_size: usize,
        num_blocks: usize,
        window_blocks: usize,
    ) -> Result<Self> {
        if layout.window.is_none() || window_blocks == 0 {
            return Err(ModelError::InvalidBatch(
                "a window pool needs windowed layers and at least one block".into(),
            ));
        }
        Self::allocate(layout, block_size, num_blocks, Some(window_blocks))
    }

    fn allocate(
        layout: KvLayout,
        block_size: usize,
        num_blocks: usize,
        window_blocks: Option<usize>,
    ) -> Result<Self> {
        if block_size == 0 || num_blocks == 0 {
            return Err(ModelError::InvalidBatch(
                "a KV cache needs at least one block of at least one slot".into(),
            ));
        }
        let (k, v) = layout.values_per_slot();
        let layers = (0..layout.num_layers)
            .map(|l| {
                let blocks = match window_blocks {
                    Some(w) if layout.is_windowed(l) => w,
                    _ => num_blocks,
                };
                let slots = blocks * block_size;
                LayerKv {
                    k: Store::zeros(layout.dtype, slots * k, layout.row()),
                    v: Store::zeros(layout.dtype, slots * v, layout.row()),
                }
            })
            .collect();
        Ok(Self {
            layout,
            block_size,
            num_blocks,
            window_blocks,
            layers,
        })
    }

    /// Blocks of the window pool, when the windowed layers have one.
    pub fn num_window_blocks(&self) -> Option<usize> {
        self.window_blocks
    }

    /// Whether layer `layer` is addressed by window tables (it attends over
    /// a sliding window and has a pool of its own).
    pub fn uses_window_table(&self, layer: usize) -> bool {
        self.window_blocks.is_some() && self.layout.is_windowed(layer)
    }

    /// How many blocks fit in `budget_bytes` for `layout` and `block_size`
    /// (one pool for all layers).
    pub fn blocks_for_budget(layout: KvLayout, block_size: usize, budget_bytes: usize) -> usize {
        budget_bytes / (layout.bytes_per_token() * block_size).max(1)
    }

    /// The layout this pool was built for.
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Number of blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Total bytes of the pool (both pools).
    pub fn size_in_bytes(&self) -> usize {
        let per_layer = self.layout.bytes_per_token_per_layer() * self.block_size;
        (0..self.layout.num_layers)
            .map(|l| match self.window_blocks {
                Some(w) if self.layout.is_windowed(l) => w * per_layer,
                _ => self.num_blocks * per_layer,
            })
            .sum()
    }

    /// Checks that `block_table` names valid blocks covering `positions` positions.
    pub fn check_table(&self, block_table: &[BlockId], positions: usize) -> Result<()> {
        self.check_table_of(block_table, positions, self.num_blocks, "")
    }

    /// Checks the table a windowed layer reads for `positions` positions:
    /// `window_table` when the cache has a window pool (blocks of that
    /// pool, those before the window may be any), else `block_table`.
    pub fn check_window_table(&self, window_table: &[BlockId], positions: usize) -> Result<()> {
        match self.window_blocks {
            Some(w) => self.check_table_of(window_table, positions, w, "window "),
            None => Ok(()),
        }
    }

    fn check_table_of(
        &self,
        block_table: &[BlockId],
        positions: usize,
        num_blocks: usize,
        pool: &str,
    ) -> Result<()> {
        let needed = positions.div_ceil(self.block_size);
        if block_table.len() < needed {
            return Err(ModelError::InvalidBatch(format!(
                "{positions} positions need {needed} blocks of {} but the {pool}block table has {}",
                self.block_size,
                block_table.len()
            )));
        }
        if let Some(bad) = block_table.iter().find(|b| b.index() >= num_blocks) {
            return Err(ModelError::InvalidBatch(format!(
                "block {} is outside the {pool}pool of {num_blocks} blocks",
                bad.0
            )));
        }
        Ok(())
    }

    /// The K/V head shape of a per-head layout (`(0, 0)` for a latent one,
    /// whose per-head views are empty).
    fn heads(&self) -> (usize, usize) {
        match self.layout.kind {
            KvKind::PerHead { kv_heads, head_dim } => (kv_heads, head_dim),
            KvKind::Latent(_) => (0, 0),
        }
    }

    /// Writes the K and V of `len` new tokens, laid out `[len, kv_heads * head_dim]`,
    /// at positions `start_pos..start_pos + len` of the sequence owning `block_table`
    /// (a per-head layout; for a latent one see [`Self::write_latent`]).
    /// The table must have been checked with [`Self::check_table`].
    pub fn write(
        &mut self,
        layer: usize,
        block_table: &[BlockId],
        start_pos: usize,
        k: &[f32],
        v: &[f32],
    ) {
        let (heads, hd) = self.heads();
        if heads * hd == 0 {
            return;
        }
        let bs = self.block_size;
        let kv = &mut self.layers[layer];
        for (i, (k_row, v_row)) in k
            .chunks_exact(heads * hd)
            .zip(v.chunks_exact(heads * hd))
            .enumerate()
        {
            let pos = start_pos + i;
            let block = block_table[pos / bs].index();
            let slot = pos % bs;
            for h in 0..heads {
                let base = (block * heads + h) * bs * hd;
                let key = &k_row[h * hd..(h + 1) * hd];
                if matches!(kv.k, Store::Q8 { .. }) {
                    // Q8_0 keeps each key whole (its blocks run along
                    // head_dim), transposed when widened.
                    kv.k.put(base + slot * hd, key);
                } else {
                    // Keys transposed within the block: `[head_dim, block_size]`.
                    for (d, &x) in key.iter().enumerate() {
                        kv.k.set(base + d * bs + slot, x);
                    }
                }
                kv.v.put(base + slot * hd, &v_row[h * hd..(h + 1) * hd]);
            }
        }
    }

    /// Writes the latent rows of `len` new tokens, laid out
    /// `[len, kv_lora_rank + qk_rope_head_dim]`, at positions
    /// `start_pos..start_pos + len` of the sequence owning `block_table`
    /// (which must have been checked with [`Self::check_table`]). Fails on a
    /// per-head pool or rows of the wrong width.
    pub fn write_latent(
        &mut self,
        layer: usize,
        block_table: &[BlockId],
        start_pos: usize,
        rows: &[f32],
    ) -> Result<()> {
        let KvKind::Latent(latent) = self.layout.kind else {
            return Err(ModelError::InvalidBatch(
                "latent rows written to a per-head KV cache".into(),
            ));
        };
        let width = latent.width();
        if !rows.len().is_multiple_of(width) {
            return Err(ModelError::InvalidBatch(format!(
                "{} values are not whole latent rows of {width}",
                rows.len()
            )));
        }
        let bs = self.block_size;
        let Some(kv) = self.layers.get_mut(layer) else {
            return Err(ModelError::InvalidBatch(format!(
                "layer {layer} of a cache of {}",
                self.layout.num_layers
            )));
        };
        for (i, row) in rows.chunks_exact(width).enumerate() {
            let pos = start_pos + i;
            let dst = (block_table[pos / bs].index() * bs + pos % bs) * width;
            kv.k.put(dst, row);
        }
        Ok(())
    }

    /// Copies the K and V (or latent rows) of block `src` into block `dst`
    /// (a forked sequence's private copy of a shared, partially filled
    /// block) in every layer of the main pool: all layers, but those with a
    /// window pool of their own (see [`Self::copy_window_block`]).
    pub fn copy_block(&mut self, src: BlockId, dst: BlockId) {
        self.copy_in(src, dst, false);
    }

    /// [`Self::copy_block`] for the layers of the window pool.
    pub fn copy_window_block(&mut self, src: BlockId, dst: BlockId) {
        if self.window_blocks.is_some() {
            self.copy_in(src, dst, true);
        }
    }

    fn copy_in(&mut self, src: BlockId, dst: BlockId, window_pool: bool) {
        let (k, v) = self.layout.values_per_slot();
        let (nk, nv) = (self.block_size * k, self.block_size * v);
        let split = self.window_blocks.is_some();
        let layout = self.layout;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            if (split && layout.is_windowed(l)) != window_pool {
                continue;
            }
            let (s, d) = (src.index() * nk, dst.index() * nk);
            layer.k.copy_within(s..s + nk, d);
            let (s, d) = (src.index() * nv, dst.index() * nv);
            layer.v.copy_within(s..s + nv, d);
        }
    }

    /// Read access to one layer of a per-head pool for attention (on a
    /// latent pool the view's slices are empty: use [`Self::latent_layer`]).
    pub fn layer(&self, layer: usize) -> LayerView<'_> {
        let (kv_heads, head_dim) = self.heads();
        LayerView {
            kv: &self.layers[layer],
            block_size: self.block_size,
            kv_heads,
            head_dim,
        }
    }

    /// Read access to one layer of a latent pool; fails on a per-head pool.
    pub fn latent_layer(&self, layer: usize) -> Result<LatentLayerView<'_>> {
        let KvKind::Latent(latent) = self.layout.kind else {
            return Err(ModelError::InvalidBatch(
                "a latent view of a per-head KV cache".into(),
            ));
        };
        let kv = self.layers.get(layer).ok_or_else(|| {
            ModelError::InvalidBatch(format!(
                "layer {layer} of a cache of {}",
                self.layout.num_layers
            ))
        })?;
        Ok(LatentLayerView {
            rows: &kv.k,
            block_size: self.block_size,
            latent,
        })
    }
}

/// A read-only view of one layer's blocks.
#[derive(Debug, Clone, Copy)]
pub struct LayerView<'a> {
    kv: &'a LayerKv,
    block_size: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl<'a> LayerView<'a> {
    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Values per head per token.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The keys of kv head `head` in `block`, transposed: `[head_dim,
    /// block_size]` (value `d` of the key in slot `s` at `d * block_size + s`;
    /// slots not yet written hold stale values).
    pub fn keys_t(&self, block: BlockId, head: usize) -> KvSlice<'a> {
        let n = self.block_size * self.head_dim;
        let start = (block.index() * self.kv_heads + head) * n;
        self.kv.k.slice(start..start + n, true)
    }

    /// The values of kv head `head` in `block` for the first `slots`
    /// positions: `[slots, head_dim]`.
    pub fn values(&self, block: BlockId, head: usize, slots: usize) -> KvSlice<'a> {
        let start = (block.index() * self.kv_heads + head) * self.block_size * self.head_dim;
        self.kv.v.slice(start..start + slots * self.head_dim, false)
    }
}

/// A read-only view of one layer of a latent pool.
#[derive(Debug, Clone, Copy)]
pub struct LatentLayerView<'a> {
    rows: &'a Store,
    block_size: usize,
    latent: LatentKv,
}

impl<'a> LatentLayerView<'a> {
    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The shape of a row.
    pub fn latent(&self) -> LatentKv {
        self.latent
    }

    /// The rows of the first `slots` positions of `block`: `[slots,
    /// kv_lora_rank + qk_rope_head_dim]`, each the normed latent then the
    /// rotated rope key.
    pub fn rows(&self, block: BlockId, slots: usize) -> KvSlice<'a> {
        let width = self.latent.width();
        let start = block.index() * self.block_size * width;
        self.rows.slice(start..start + slots * width, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_the_named_blocks() {
        let layout = KvLayout::per_head(1, 2, 3);
        let mut cache = PagedKvCache::new(layout, 2, 4).expect("cache");
        let table = [BlockId(3), BlockId(1)];
        cache
            .check_table(&table, 3)
            .expect("table covers 3 positions");
        // Three tokens, two heads of three values each.
        let k: Vec<f32> = (0..18).map(|i| i as f32).collect();
        let v: Vec<f32> = (0..18).map(|i| -(i as f32)).collect();
        cache.write(0, &table, 0, &k, &v);
        let view = cache.layer(0);
        // Block 3 holds positions 0 and 1; head 1's keys are 3,4,5 and 9,10,11,
        // stored transposed.
        assert_eq!(
            view.keys_t(BlockId(3), 1).to_vec(),
            &[3.0, 9.0, 4.0, 10.0, 5.0, 11.0]
        );
        assert_eq!(
            view.values(BlockId(3), 1, 2).to_vec(),
            &[-3.0, -4.0, -5.0, -9.0, -10.0, -11.0]
        );
        // Block 1 holds position 2 in its first slot.
        let k1h0 = view.keys_t(BlockId(1), 0).to_vec();
        assert_eq!([k1h0[0], k1h0[2], k1h0[4]], [12.0, 13.0, 14.0]);
    }

    #[test]
    fn copied_blocks_hold_the_same_values() {
        let layout = KvLayout::per_head(2, 1, 2);
        let mut cache = PagedKvCache::new(layout, 2, 3).expect("cache");
        for layer in 0..2 {
            cache.write(
                layer,
                &[BlockId(0)],
                0,
                &[1.0, 2.0, 3.0, 4.0],
                &[5.0, 6.0, 7.0, 8.0],
            );
        }
        cache.copy_block(BlockId(0), BlockId(2));
        for layer in 0..2 {
            let view = cache.layer(layer);
            assert_eq!(
                view.keys_t(BlockId(2), 0).to_vec(),
                view.keys_t(BlockId(0), 0).to_vec()
            );
            assert_eq!(
                view.values(BlockId(2), 0, 2).to_vec(),
                view.values(BlockId(0), 0, 2).to_vec()
            );
        }
    }

    #[test]
    fn short_or_out_of_range_tables_are_rejected() {
        let layout = KvLayout::per_head(1, 1, 1);
        let cache = PagedKvCache::new(layout, 4, 2).expect("cache");
        assert!(cache.check_table(&[BlockId(0)], 5).is_err());
        assert!(cache.check_table(&[BlockId(0), BlockId(2)], 5).is_err());
        assert!(cache.check_table(&[BlockId(0), BlockId(1)], 8).is_ok());
    }

    #[test]
    fn q8_0_rows_round_trip_within_half_a_step_and_copy_whole() {
        // Rows of 40 values: a full block of 32 and a short one of 8.
        let layout = KvLayout::per_head(1, 2, 40).with_dtype(KvDtype::Q8_0);
        assert_eq!(layout.bytes_per_token(), 2 * 2 * (40 + 2 * 2));
        let mut cache = PagedKvCache::new(layout, 4, 3).expect("cache");
        let table = [BlockId(2), BlockId(0)];
        let k: Vec<f32> = (0..5 * 80)
            .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let v: Vec<f32> = k.iter().map(|x| -x * 0.5).collect();
        cache.write(0, &table, 0, &k, &v);
        let view = cache.layer(0);
        for pos in 0..5 {
            let (block, slot) = (table[pos / 4], pos % 4);
            for h in 0..2 {
                let keys = view.keys_t(block, h).to_vec();
                let values = view.values(block, h, 4).to_vec();
                for d in 0..40 {
                    let (want_k, want_v) = (k[pos * 80 + h * 40 + d], v[pos * 80 + h * 40 + d]);
                    let block_max = |x: &[f32]| {
                        let b = d / 32 * 32;
                        x[pos * 80 + h * 40 + b..pos * 80 + h * 40 + (b + 32).min(40)]
                            .iter()
                            .fold(0.0f32, |a, v| a.max(v.abs()))
                    };
                    // Half a step of max|x| / 127, plus the scale's f16
                    // rounding (2^-11 relative) over up to 127 steps.
                    let (sk, sv) = (block_max(&k) / 127.0, block_max(&v) / 127.0);
                    assert!(
                        (keys[d * 4 + slot] - want_k).abs() <= sk * 0.57 + 1e-6,
                        "key {pos} {h} {d}: {} vs {want_k} (step {sk})",
                        keys[d * 4 + slot]
                    );
                    assert!(
                        (values[slot * 40 + d] - want_v).abs() <= sv * 0.57 + 1e-6,
                        "value {pos} {h} {d}"
                    );
                }
            }
        }
        cache.copy_block(BlockId(2), BlockId(1));
        let view = cache.layer(0);
        assert_eq!(
            view.keys_t(BlockId(1), 1).to_vec(),
            view.keys_t(BlockId(2), 1).to_vec()
        );
        assert_eq!(
            view.values(BlockId(1), 0, 4).to_vec(),
            view.values(BlockId(2), 0, 4).to_vec()
        );
    }

    /// DeepSeek-V2-Lite's attention shape.
    const LITE: LatentKv = LatentKv {
        kv_lora_rank: 512,
        qk_rope_head_dim: 64,
        num_heads: 16,
        qk_nope_head_dim: 128,
        v_head_dim: 128,
    };

    #[test]
    fn a_latent_pool_holds_one_row_of_latent_and_rope_key_per_token() {
        let layout = KvLayout::latent(27, LITE);
        // 27 layers · (512 + 64) values · 4 bytes, once (no separate V).
        assert_eq!(layout.bytes_per_token(), 27 * 576 * 4);
        // Per-head K (128 + 64) and V (128) of 16 heads would take 320/36 ≈ 8.9 times more.
        assert_eq!(layout.multi_head_bytes_per_token(), 27 * 16 * 320 * 4);
        let per_head = KvLayout::per_head(30, 3, 64);
        assert_eq!(
            per_head.multi_head_bytes_per_token(),
            per_head.bytes_per_token()
        );

        let small = LatentKv {
            kv_lora_rank: 3,
            qk_rope_head_dim: 2,
            num_heads: 4,
            qk_nope_head_dim: 2,
            v_head_dim: 2,
        };
        let mut cache = PagedKvCache::new(KvLayout::latent(2, small), 2, 3).expect("cache");
        // Exactly kv_lora_rank + qk_rope_head_dim values per slot, per layer, nothing else.
        assert_eq!(cache.size_in_bytes(), 3 * 2 * 2 * 5 * 4);
        for layer in &cache.layers {
            assert_eq!((layer.k.len(), layer.v.len()), (3 * 2 * 5, 0));
        }
        let table = [BlockId(2), BlockId(0)];
        cache.check_table(&table, 3).expect("table");
        let rows: Vec<f32> = (0..15).map(|i| i as f32).collect();
        cache.write_latent(1, &table, 0, &rows).expect("write");
        let view = cache.latent_layer(1).expect("latent view");
        assert_eq!(view.rows(BlockId(2), 2).to_vec(), &rows[..10]);
        assert_eq!(view.rows(BlockId(0), 1).to_vec(), &rows[10..]);
        cache.copy_block(BlockId(2), BlockId(1));
        let view = cache.latent_layer(1).expect("latent view");
        assert_eq!(view.rows(BlockId(1), 2).to_vec(), &rows[..10]);
        assert!(cache.write_latent(0, &table, 0, &rows[..4]).is_err());
        let mut heads = PagedKvCache::new(per_head, 2, 1).expect("cache");
        assert!(heads.write_latent(0, &[BlockId(0)], 0, &rows[..5]).is_err());
        assert!(heads.latent_layer(0).is_err());
    }
}
