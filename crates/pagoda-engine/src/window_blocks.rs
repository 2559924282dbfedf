//! The window pool: KV blocks of the layers that attend over a sliding
//! window (Gemma 3's local layers), kept apart from the main pool so that a
//! sequence holds only the blocks its window still covers.
//!
//! A sequence's window table covers the same positions as its main table,
//! but its entries before the window of the oldest position still to be
//! computed are given back to the pool (they are never read again) and
//! stand as a placeholder ([`PLACEHOLDER`]) that the model does not read:
//!
//! ```text
//! positions   0      16     32     48     64     80   (block size 16, window 24)
//! main        b3     b9     b1     b7     b2     b0   all held
//! window      ·      ·      w5     w2     w8     w4   next query at 80: keys ≥ 57
//! ```
//!
//! Full window blocks are registered in the window pool's prefix cache
//! under the same hashes as the main pool's, so a cached prefix can be
//! reused when both pools still hold the blocks it needs: all of its main
//! blocks, and the window blocks the first new position's window covers
//! (after vLLM's sliding-window cache manager).

use std::collections::HashMap;

use pagoda_models::BlockId;

use crate::block_pool::{BlockHash, BlockPool};
use crate::ids::SeqId;

/// What stands in a window table for a block given back: a valid index
/// (so that a table is always in bounds), never read by the model.
pub const PLACEHOLDER: BlockId = BlockId(0);

/// One sequence's window blocks.
#[derive(Debug, Clone, Default)]
struct WindowTable {
    /// Entries below `live_from` are placeholders.
    blocks: Vec<BlockId>,
    /// The first entry still held.
    live_from: usize,
    /// Leading full blocks registered in the prefix cache (or given back
    /// before they could be).
    registered: usize,
}

/// The window pool and every sequence's window table.
#[derive(Debug)]
pub struct WindowBlocks {
    pool: BlockPool,
    block_size: usize,
    /// Keys a query at `p` sees: `p − window < k ≤ p`.
    window: usize,
    tables: HashMap<SeqId, WindowTable>,
}

impl WindowBlocks {
    /// A pool of `num_blocks` blocks of `block_size` positions for layers
    /// attending over `window` positions.
    pub fn new(num_blocks: usize, block_size: usize, window: usize, prefix_caching: bool) -> Self {
        Self {
            pool: BlockPool::new(num_blocks, prefix_caching),
            block_size,
            window: window.max(1),
            tables: HashMap::new(),
        }
    }

    /// The pool (counts and statistics).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// The window table of `seq` (empty if it holds none).
    pub fn table(&self, seq: SeqId) -> &[BlockId] {
        self.tables
            .get(&seq)
            .map(|t| t.blocks.as_slice())
            .unwrap_or(&[])
    }

    /// Blocks `seq` holds now.
    pub fn held(&self, seq: SeqId) -> usize {
        self.tables
            .get(&seq)
            .map_or(0, |t| t.blocks.len() - t.live_from)
    }

    /// The first block a query at position `pos` reads.
    fn first_read(&self, pos: usize) -> usize {
        (pos + 1).saturating_sub(self.window) / self.block_size
    }

    /// Gives back the blocks of `seq` that no query from position `start`
    /// on reads.
    pub fn release_before(&mut self, seq: SeqId, start: usize) {
        let first = self.first_read(start);
        let Some(t) = self.tables.get_mut(&seq) else {
            return;
        };
        let until = first.min(t.blocks.len());
        if until > t.live_from {
            self.pool.free(&t.blocks[t.live_from..until]);
            t.blocks[t.live_from..until].fill(PLACEHOLDER);
            t.live_from = until;
        }
    }

    /// Blocks `seq` needs taken to cover `positions` positions.
    pub fn needed(&self, seq: SeqId, positions: usize) -> usize {
        positions
            .div_ceil(self.block_size)
            .saturating_sub(self.table(seq).len())
    }

    /// Free blocks (cached but unused ones included).
    pub fn num_free(&self) -> usize {
        self.pool.num_free()
    }

    /// Extends `seq`'s table to cover `positions` positions; false (and
    /// nothing taken) when the pool has too few free blocks.
    pub fn allocate(&mut self, seq: SeqId, positions: usize) -> bool {
        let need = self.needed(seq, positions);
        if need == 0 {
            return true;
        }
        match self.pool.allocate(need) {
            Some(new) => {
                self.tables.entry(seq).or_default().blocks.extend(new);
                true
            }
            None => false,
        }
    }

    /// Registers the full blocks of `seq` among its first `computed`
    /// positions in the prefix cache, under `hashes` (the main table's
    /// chain of hashes of those blocks).
    pub fn commit(&mut self, seq: SeqId, hashes: &[BlockHash], tokens: &[u32], computed: usize) {
        let bs = self.block_size;
        let Some(t) = self.tables.get_mut(&seq) else {
            return;
        };
        let full = (computed / bs).min(t.blocks.len()).min(hashes.len());
        for i in t.registered..full {
            if i >= t.live_from {
                let parent = i.checked_sub(1).map(|j| hashes[j]);
                self.pool
                    .register(t.blocks[i], parent, &tokens[i * bs..(i + 1) * bs]);
            }
        }
        t.registered = t.registered.max(full);
    }

    /// How many of the `blocks` leading full blocks of `tokens` (cached in
    /// the main pool under `hashes`) can be reused: the most `k` whose
    /// window blocks (those the position `k · block_size` reads) are all
    /// cached here too. Takes those window blocks for `seq`, which must
    /// hold none.
    pub fn attach(
        &mut self,
        seq: SeqId,
        hashes: &[BlockHash],
        tokens: &[u32],
        blocks: usize,
    ) -> usize {
        let bs = self.block_size;
        let parent = |i: usize| i.checked_sub(1).map(|j| hashes[j]);
        let chunk = |i: usize| &tokens[i * bs..(i + 1) * bs];
        let usable = (0..=blocks.min(hashes.len()))
            .rev()
            .find(|&k| {
                (self.first_read(k * bs).min(k)..k).all(|i| self.pool.contains(parent(i), chunk(i)))
            })
            .unwrap_or(0);
        if usable == 0 {
            return 0;
        }
        let lo = self.first_read(usable * bs).min(usable);
        let mut table = WindowTable {
            blocks: vec![PLACEHOLDER; lo],
            live_from: lo,
            registered: usable,
        };
        for i in lo..usable {
            match self.pool.lookup(parent(i), chunk(i)) {
                Some((block, _)) => table.blocks.push(block),
                // Checked just above: cannot happen; give back what was taken.
                None => {
                    self.pool.free(&table.blocks[lo..]);
                    return 0;
                }
            }
        }
        self.tables.insert(seq, table);
        usable
    }

    /// Whether [`Self::fork`] of a sequence at `positions` positions finds
    /// the block it needs.
    pub fn can_fork(&self, positions: usize) -> bool {
        positions.is_multiple_of(self.block_size) || self.pool.num_free() > 0
    }

    /// Gives `child` the window blocks of `parent`'s first `positions`
    /// positions: the full ones shared, a partially filled last one
    /// copied into a fresh block (returned as (source, destination), for
    /// the caller to copy). Call only when [`Self::can_fork`].
    pub fn fork(
        &mut self,
        parent: SeqId,
        child: SeqId,
        positions: usize,
    ) -> Option<(BlockId, BlockId)> {
        let bs = self.block_size;
        let t = self.tables.get(&parent)?;
        let full = (positions / bs).min(t.blocks.len());
        let live_from = t.live_from.min(full);
        let mut blocks = t.blocks[..full].to_vec();
        let registered = t.registered.min(full);
        let src = (!positions.is_multiple_of(bs))
            .then(|| t.blocks.get(full).copied())
            .flatten();
        let copy = match src {
            Some(src) => {
                // Taken before anything is shared: without it the child
                // gets no table (and nothing leaks).
                let dst = self.pool.allocate(1).map(|v| v[0])?;
                Some((src, dst))
            }
            None => None,
        };
        for &b in &blocks[live_from..] {
            self.pool.share(b);
        }
        blocks.extend(copy.map(|(_, dst)| dst));
        self.tables.insert(
            child,
            WindowTable {
                blocks,
                live_from,
                registered,
            },
        );
        copy
    }

    /// Gives back every block `seq` holds.
    pub fn free(&mut self, seq: SeqId) {
        if let Some(t) = self.tables.remove(&seq) {
            self.pool.free(&t.blocks[t.live_from..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: SeqId = SeqId(1);

    fn hashes(tokens: &[u32], bs: usize) -> Vec<BlockHash> {
        let mut out: Vec<BlockHash> = Vec::new();
        for chunk in tokens.chunks_exact(bs) {
            out.push(BlockHash::new(out.last().copied(), chunk));
        }
        out
    }

    #[test]
    fn blocks_that_leave_the_window_are_given_back() {
        // Window 6, blocks of 4: a query at 13 reads keys 8..=13, blocks 2 and 3.
        let mut w = WindowBlocks::new(8, 4, 6, true);
        assert!(w.allocate(SEQ, 20));
        assert_eq!((w.held(SEQ), w.num_free()), (5, 3));
        w.release_before(SEQ, 13);
        assert_eq!((w.held(SEQ), w.num_free()), (3, 5));
        let table = w.table(SEQ);
        assert_eq!(table.len(), 5);
        assert_eq!(&table[..2], &[PLACEHOLDER, PLACEHOLDER]);
        // Releasing again, or for an earlier position, gives back nothing more.
        w.release_before(SEQ, 13);
        w.release_before(SEQ, 3);
        assert_eq!(w.held(SEQ), 3);
        // Too many blocks asked: nothing taken.
        assert_eq!(w.needed(SEQ, 48), 7);
        assert!(!w.allocate(SEQ, 48));
        assert_eq!(w.held(SEQ), 3);
        w.free(SEQ);
        assert_eq!(w.num_free(), 8);
        assert!(w.pool().check_invariants().is_ok());
    }

    #[test]
    fn a_prefix_is_reused_only_as_far_as_its_window_blocks_are_cached() {
        let tokens: Vec<u32> = (0..24).collect();
        let h = hashes(&tokens, 4);
        let mut w = WindowBlocks::new(8, 4, 6, true);
        assert!(w.allocate(SEQ, 24));
        w.commit(SEQ, &h, &tokens, 24);
        w.free(SEQ);
        // All six blocks cached: a prefix of 5 blocks (position 20 reads
        // keys 15..=20: blocks 3 and 4) is served, blocks 0..3 are not held.
        let other = SeqId(2);
        assert_eq!(w.attach(other, &h, &tokens, 5), 5);
        assert_eq!(w.held(other), 2);
        assert_eq!(w.table(other).len(), 5);
        w.free(other);
        // Blocks 4 and 5 never registered (given back uncached):
        // the longest prefix whose window is cached ends before it.
        let mut w = WindowBlocks::new(6, 4, 6, true);
        assert!(w.allocate(SEQ, 24));
        w.commit(SEQ, &h[..4], &tokens, 16);
        w.free(SEQ);
        assert_eq!(w.attach(other, &h, &tokens, 5), 4);
        assert_eq!(w.held(other), 2);
        w.free(other);
        assert!(w.pool().check_invariants().is_ok());
    }

    #[test]
    fn a_fork_shares_the_held_blocks_and_copies_a_partial_one() {
        let mut w = WindowBlocks::new(8, 4, 6, true);
        assert!(w.allocate(SEQ, 18));
        w.release_before(SEQ, 17);
        assert_eq!(w.held(SEQ), 2);
        let child = SeqId(2);
        assert!(w.can_fork(18));
        let copy = w.fork(SEQ, child, 18).expect("a partial block to copy");
        assert_eq!(copy.0, w.table(SEQ)[4]);
        assert_eq!(w.table(child)[3], w.table(SEQ)[3]);
        assert_eq!(w.held(child), 2);
        w.free(SEQ);
        w.free(child);
        assert_eq!(w.num_free(), 8);
        assert!(w.pool().check_invariants().is_ok());
    }
}
