//! Per-sequence block tables on top of the [`BlockPool`]: prefix-cache hits
//! on admission, slots for each step's new tokens, registration of blocks
//! once they are full and computed, and freeing. A model with sliding-window
//! layers beside global ones also gets [`WindowBlocks`], a second pool whose
//! blocks are given back once they leave every window.

use std::collections::HashMap;

use pagoda_models::BlockId;

use crate::block_pool::{BlockHash, BlockPool, CacheStats};
use crate::ids::SeqId;
use crate::window_blocks::WindowBlocks;

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
        /// The same in the window pool.
        window_copy: Option<(BlockId, BlockId)>,
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
    /// The window pool, for a model whose windowed layers have one.
    window: Option<WindowBlocks>,
}

impl BlockManager {
    /// Manages `num_blocks` blocks of `block_size` positions.
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            pool: BlockPool::new(num_blocks, prefix_caching),
            block_size,
            tables: HashMap::new(),
            window: None,
        }
    }

    /// Also manages a window pool of `window_blocks` blocks for layers
    /// attending over `window` positions.
    pub fn with_window_pool(mut self, window_blocks: usize, window: usize) -> Self {
        let caching = self.pool.prefix_caching();
        self.window = Some(WindowBlocks::new(
            window_blocks,
            self.block_size,
            window,
            caching,
        ));
        self
    }

    /// The window pool, if there is one.
    pub fn window_pool(&self) -> Option<&BlockPool> {
        self.window.as_ref().map(WindowBlocks::pool)
    }

    /// The window table of `seq` (empty without a window pool).
    pub fn window_table(&self, seq: SeqId) -> &[BlockId] {
        self.window.as_ref().map_or(&[], |w| w.table(seq))
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
        if let Some(window) = &mut self.window {
            // Only as much of the prefix as the window pool can serve too.
            let usable = window.attach(seq, &table.hashes, tokens, table.blocks.len());
            self.pool.free(&table.blocks[usable..]);
            table.blocks.truncate(usable);
            table.hashes.truncate(usable);
        }
        let covered = table.blocks.len() * bs;
        if !table.blocks.is_empty() {
            self.tables.insert(seq, table);
        }
        covered
    }

    /// Makes `seq`'s tables cover `end` positions for a step computing
    /// from position `start`; false (and nothing taken) when a pool has
    /// too few free blocks. The window blocks no query from `start` on
    /// reads are given back first.
    pub fn allocate(&mut self, seq: SeqId, start: usize, end: usize) -> bool {
        let have = self.table(seq).len();
        let need = end.div_ceil(self.block_size).saturating_sub(have);
        if let Some(window) = &mut self.window {
            window.release_before(seq, start);
            if window.needed(seq, end) > window.num_free() {
                return false;
            }
        }
        if need > 0 {
            match self.pool.allocate(need) {
                Some(new) => self.tables.entry(seq).or_default().blocks.extend(new),
                None => return false,
            }
        }
        // Checked above: the window pool has the blocks.
        self.window
            .as_mut()
            .is_none_or(|window| window.allocate(seq, end))
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
        if let Some(window) = &mut self.window {
            window.commit(seq, &table.hashes, tokens, computed);
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
        if self.window.as_ref().is_some_and(|w| !w.can_fork(positions)) {
            return Fork::NoFreeBlock;
        }
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
        let window_copy = self
            .window
            .as_mut()
            .and_then(|w| w.fork(parent, child, positions));
        Fork::Shared { copy, window_copy }
    }

    /// Returns every block of `seq` to the pools.
    pub fn free(&mut self, seq: SeqId) {
        if let Some(table) = self.tables.remove(&seq) {
            self.pool.free(&table.blocks);
        }
        if let Some(window) = &mut self.window {
            window.free(seq);
        }
    }

    /// Number of sequences holding blocks.
    pub fn num_tables(&self) -> usize {
        self.tables.len()
    }
}
