//! Per-sequence block tables on top of the [`BlockPool`]: prefix-cache hits
//! on admission, slots for each step's new tokens, registration of blocks
//! once they are full and computed, and freeing.

use std::collections::HashMap;

use pagoda_models::BlockId;

use crate::block_pool::{BlockHash, BlockPool, CacheStats};
use crate::ids::SeqId;

/// The blocks of one sequence.
#[derive(Debug, Default, Clone)]
struct SeqBlocks {
    blocks: Vec<BlockId>,
    /// Hashes of the leading full blocks already in (or found in) the prefix cache.
    hashes: Vec<BlockHash>,
}

/// The outcome of [`BlockManager::fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// The child holds the parent's blocks; copy `copy.0` into `copy.1` if set.
    Shared {
        /// A partially filled block to copy: (source, destination).
        copy: Option<(BlockId, BlockId)>,
    },
    /// No block was free for the copy (or the parent holds none); nothing was taken.
    NoFreeBlock,
}

/// Block tables of every sequence that holds KV blocks.
#[derive(Debug)]
pub struct BlockManager {
    pool: BlockPool,
    block_size: usize,
    tables: HashMap<SeqId, SeqBlocks>,
}

impl BlockManager {
    /// Manages `num_blocks` blocks of `block_size` positions.
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            pool: BlockPool::new(num_blocks, prefix_caching),
            block_size,
            tables: HashMap::new(),
        }
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The underlying pool (counts and statistics).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Prefix-cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.pool.stats()
    }

    /// The block table of `seq` (empty if it holds none).
    pub fn table(&self, seq: SeqId) -> &[BlockId] {
        self.tables
            .get(&seq)
            .map(|t| t.blocks.as_slice())
            .unwrap_or(&[])
    }

    /// Attaches the longest cached prefix of `tokens` to `seq`, which must
    /// hold no blocks, and returns how many tokens it covers. It stops at
    /// least one token short of the end, so there is always a token to
    /// compute (and a logit to sample).
    pub fn attach_cached_prefix(&mut self, seq: SeqId, tokens: &[u32]) -> usize {
        debug_assert!(self.table(seq).is_empty());
        let bs = self.block_size;
        let max_blocks = tokens.len().saturating_sub(1) / bs;
        let mut table = SeqBlocks::default();
        for chunk in tokens.chunks_exact(bs).take(max_blocks) {
            match self.pool.lookup(table.hashes.last().copied(), chunk) {
                Some((block, hash)) => {
                    table.blocks.push(block);
                    table.hashes.push(hash);
                }
                None => break,
            }
        }
        let covered = table.blocks.len() * bs;
        if !table.blocks.is_empty() {
            self.tables.insert(seq, table);
        }
        covered
    }

    /// Makes `seq`'s table cover `positions` positions; false (and nothing
    /// taken) when the pool has too few free blocks.
    pub fn allocate(&mut self, seq: SeqId, positions: usize) -> bool {
        let have = self.table(seq).len();
        let need = positions.div_ceil(self.block_size);
        if need <= have {
            return true;
        }
        match self.pool.allocate(need - have) {
            Some(new) => {
                self.tables.entry(seq).or_default().blocks.extend(new);
                true
            }
            None => false,
        }
    }

    /// Free blocks, counting cached blocks no sequence uses.
    pub fn num_free(&self) -> usize {
        self.pool.num_free()
    }

    /// Registers the full blocks of `tokens` that are now computed
    /// (`computed` positions) in the prefix cache.
    pub fn commit(&mut self, seq: SeqId, tokens: &[u32], computed: usize) {
        let bs = self.block_size;
        let Some(table) = self.tables.get_mut(&seq) else {
            return;
        };
        let full = (computed / bs).min(table.blocks.len());
        while table.hashes.len() < full {
            let i = table.hashes.len();
            let parent = table.hashes.last().copied();
            let hash = self
                .pool
                .register(table.blocks[i], parent, &tokens[i * bs..(i + 1) * bs]);
            table.hashes.push(hash);
        }
    }

    /// Gives `child` the KV of `parent`'s first `positions` positions: the
    /// full blocks are shared, a partially filled last block gets a fresh
    /// block of its own, whose contents the caller must copy.
    pub fn fork(&mut self, parent: SeqId, child: SeqId, positions: usize) -> Fork {
        let bs = self.block_size;
        let Some(table) = self.tables.get(&parent) else {
            return Fork::NoFreeBlock;
        };
        let full = positions / bs;
        let partial = !positions.is_multiple_of(bs);
        let mut copy = None;
        let mut blocks: Vec<BlockId> = table.blocks[..full].to_vec();
        if partial {
            let src = table.blocks[full];
            let Some(new) = self.pool.allocate(1) else {
                return Fork::NoFreeBlock;
            };
            let dst = new[0];
            blocks.push(dst);
            copy = Some((src, dst));
        }
        let hashes = table.hashes.iter().take(full).copied().collect();
        for &b in &blocks[..full] {
            self.pool.share(b);
        }
        self.tables.insert(child, SeqBlocks { blocks, hashes });
        Fork::Shared { copy }
    }

    /// Returns every block of `seq` to the pool.
    pub fn free(&mut self, seq: SeqId) {
        if let Some(table) = self.tables.remove(&seq) {
            self.pool.free(&table.blocks);
        }
    }

    /// Number of sequences holding blocks.
    pub fn num_tables(&self) -> usize {
        self.tables.len()
    }
}
