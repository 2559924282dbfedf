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
//! Layout of one layer's K (and likewise V), in `f32`:
//!
//! ```text
//! block 0                      block 1
//! ├─ kv head 0 ─────────────┤  ├─ kv head 0 ───── ...
//! │ slot 0: [head_dim]      │  │
//! │ slot 1: [head_dim]      │  │
//! │ ...  (block_size slots) │  │
//! ├─ kv head 1 ─────────────┤
//! ```
//!
//! so that one head's keys within a block are contiguous for the attention loop.

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

/// What one layer stores per token, as declared by a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    /// Number of layers, each with its own K and V buffers.
    pub num_layers: usize,
    /// Number of key/value heads.
    pub kv_heads: usize,
    /// Values per head per token.
    pub head_dim: usize,
}

impl KvLayout {
    /// Bytes one token occupies in the whole cache (K and V, all layers, f32).
    pub fn bytes_per_token(&self) -> usize {
        2 * self.num_layers * self.kv_heads * self.head_dim * std::mem::size_of::<f32>()
    }
}

/// One layer's K and V buffers.
#[derive(Debug)]
pub struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// The paged KV pool of a model: every layer's blocks.
#[derive(Debug)]
pub struct PagedKvCache {
    layout: KvLayout,
    block_size: usize,
    num_blocks: usize,
    layers: Vec<LayerKv>,
}

impl PagedKvCache {
    /// Allocates `num_blocks` blocks of `block_size` positions for `layout`.
    pub fn new(layout: KvLayout, block_size: usize, num_blocks: usize) -> Result<Self> {
        if block_size == 0 || num_blocks == 0 {
            return Err(ModelError::InvalidBatch(
                "a KV cache needs at least one block of at least one slot".into(),
            ));
        }
        let per_layer = num_blocks * block_size * layout.kv_heads * layout.head_dim;
        let layers = (0..layout.num_layers)
            .map(|_| LayerKv {
                k: vec![0.0; per_layer],
                v: vec![0.0; per_layer],
            })
            .collect();
        Ok(Self {
            layout,
            block_size,
            num_blocks,
            layers,
        })
    }

    /// How many blocks fit in `budget_bytes` for `layout` and `block_size`.
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

    /// Total bytes of the pool.
    pub fn size_in_bytes(&self) -> usize {
        self.num_blocks * self.block_size * self.layout.bytes_per_token()
    }

    /// Checks that `block_table` names valid blocks covering `positions` positions.
    pub fn check_table(&self, block_table: &[BlockId], positions: usize) -> Result<()> {
        let needed = positions.div_ceil(self.block_size);
        if block_table.len() < needed {
            return Err(ModelError::InvalidBatch(format!(
                "{positions} positions need {needed} blocks of {} but the block table has {}",
                self.block_size,
                block_table.len()
            )));
        }
        if let Some(bad) = block_table.iter().find(|b| b.index() >= self.num_blocks) {
            return Err(ModelError::InvalidBatch(format!(
                "block {} is outside the pool of {} blocks",
                bad.0, self.num_blocks
            )));
        }
        Ok(())
    }

    /// Writes the K and V of `len` new tokens, laid out `[len, kv_heads * head_dim]`,
    /// at positions `start_pos..start_pos + len` of the sequence owning `block_table`.
    /// The table must have been checked with [`Self::check_table`].
    pub fn write(
        &mut self,
        layer: usize,
        block_table: &[BlockId],
        start_pos: usize,
        k: &[f32],
        v: &[f32],
    ) {
        let hd = self.layout.head_dim;
        let heads = self.layout.kv_heads;
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
                // Keys transposed within the block: `[head_dim, block_size]`.
                for (d, &x) in k_row[h * hd..(h + 1) * hd].iter().enumerate() {
                    kv.k[base + d * bs + slot] = x;
                }
                let dst = base + slot * hd;
                kv.v[dst..dst + hd].copy_from_slice(&v_row[h * hd..(h + 1) * hd]);
            }
        }
    }

    /// Copies every layer's K and V of block `src` into block `dst` (a
    /// forked sequence's private copy of a shared, partially filled block).
    pub fn copy_block(&mut self, src: BlockId, dst: BlockId) {
        let n = self.block_size * self.layout.kv_heads * self.layout.head_dim;
        let (s, d) = (src.index() * n, dst.index() * n);
        for layer in &mut self.layers {
            layer.k.copy_within(s..s + n, d);
            layer.v.copy_within(s..s + n, d);
        }
    }

    /// Read access to one layer for attention.
    pub fn layer(&self, layer: usize) -> LayerView<'_> {
        LayerView {
            kv: &self.layers[layer],
            block_size: self.block_size,
            kv_heads: self.layout.kv_heads,
            head_dim: self.layout.head_dim,
        }
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
    pub fn keys_t(&self, block: BlockId, head: usize) -> &'a [f32] {
        let n = self.block_size * self.head_dim;
        let start = (block.index() * self.kv_heads + head) * n;
        &self.kv.k[start..start + n]
    }

    /// The values of kv head `head` in `block` for the first `slots`
    /// positions: `[slots, head_dim]`.
    pub fn values(&self, block: BlockId, head: usize, slots: usize) -> &'a [f32] {
        let start = (block.index() * self.kv_heads + head) * self.block_size * self.head_dim;
        &self.kv.v[start..start + slots * self.head_dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_the_named_blocks() {
        let layout = KvLayout {
            num_layers: 1,
            kv_heads: 2,
            head_dim: 3,
        };
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
            view.keys_t(BlockId(3), 1),
            &[3.0, 9.0, 4.0, 10.0, 5.0, 11.0]
        );
        assert_eq!(
            view.values(BlockId(3), 1, 2),
            &[-3.0, -4.0, -5.0, -9.0, -10.0, -11.0]
        );
        // Block 1 holds position 2 in its first slot.
        let k1h0 = view.keys_t(BlockId(1), 0);
        assert_eq!([k1h0[0], k1h0[2], k1h0[4]], [12.0, 13.0, 14.0]);
    }

    #[test]
    fn copied_blocks_hold_the_same_values() {
        let layout = KvLayout {
            num_layers: 2,
            kv_heads: 1,
            head_dim: 2,
        };
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
            assert_eq!(view.keys_t(BlockId(2), 0), view.keys_t(BlockId(0), 0));
            assert_eq!(view.values(BlockId(2), 0, 2), view.values(BlockId(0), 0, 2));
        }
    }

    #[test]
    fn short_or_out_of_range_tables_are_rejected() {
        let layout = KvLayout {
            num_layers: 1,
            kv_heads: 1,
            head_dim: 1,
        };
        let cache = PagedKvCache::new(layout, 4, 2).expect("cache");
        assert!(cache.check_table(&[BlockId(0)], 5).is_err());
        assert!(cache.check_table(&[BlockId(0), BlockId(2)], 5).is_err());
        assert!(cache.check_table(&[BlockId(0), BlockId(1)], 8).is_ok());
    }
}
