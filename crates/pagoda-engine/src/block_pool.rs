//! Every KV block of the pool: reference counts, the free queue in eviction
//! order, and the prefix cache (full blocks found again by the chained hash
//! of their tokens). Plain bookkeeping, no tensors: the model's
//! `PagedKvCache` holds the data, this decides who may use which block.
//!
//! Layout of the free queue (an intrusive doubly linked list over block
//! indices, so that taking a cached block out of the middle is O(1)):
//!
//! ```text
//! head (evicted first) ⇄ b7 ⇄ b2 ⇄ b9 ⇄ ... ⇄ tail (freed last)
//! ```
//!
//! A freed block that holds a full, hashed block of tokens stays findable
//! in the prefix cache until it reaches the head of the queue and is handed
//! out for something else (least recently used eviction). Sequences free
//! their blocks tail first, so the end of a prompt is evicted before its
//! shared beginning.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use pagoda_models::BlockId;

/// The identity of a full block of tokens: a hash of its parent block's
/// identity and its own token ids (so equal blocks at different prefixes
/// differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(u64);

impl BlockHash {
    /// The hash of a full block of `tokens` that follows `parent` (`None` for the first block).
    pub fn new(parent: Option<BlockHash>, tokens: &[u32]) -> Self {
        // SipHash with fixed keys: stable across runs and processes.
        let mut h = std::hash::DefaultHasher::new();
        parent.map(|p| p.0).hash(&mut h);
        tokens.hash(&mut h);
        BlockHash(h.finish())
    }
}

/// What the pool knows of one block.
#[derive(Debug, Clone, Default)]
struct BlockMeta {
    ref_count: u32,
    /// Set while the block is registered in the prefix cache.
    cached: Option<CachedBlock>,
    prev: Option<u32>,
    next: Option<u32>,
    in_free_queue: bool,
}

/// A block's prefix-cache entry; the tokens are kept to rule out hash collisions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CachedBlock {
    hash: BlockHash,
    parent: Option<BlockHash>,
    tokens: Vec<u32>,
}

/// Prefix-cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Full blocks found in the cache.
    pub hits: u64,
    /// Full blocks looked up and not found.
    pub misses: u64,
    /// Cached blocks evicted to make room.
    pub evictions: u64,
}

/// All the blocks of the KV pool.
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<BlockMeta>,
    head: Option<u32>,
    tail: Option<u32>,
    free_count: usize,
    cache: HashMap<BlockHash, BlockId>,
    stats: CacheStats,
    prefix_caching: bool,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks; `prefix_caching` keeps freed full blocks findable.
    pub fn new(num_blocks: usize, prefix_caching: bool) -> Self {
        let mut pool = Self {
            blocks: vec![BlockMeta::default(); num_blocks],
            head: None,
            tail: None,
            free_count: 0,
            cache: HashMap::new(),
            stats: CacheStats::default(),
            prefix_caching,
        };
        for i in 0..num_blocks as u32 {
            pool.push_back(i);
        }
        pool
    }

    /// Whether freed full blocks stay findable.
    pub fn prefix_caching(&self) -> bool {
        self.prefix_caching
    }

    /// Number of blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks that can be handed out now (free, including cached-but-unused ones).
    pub fn num_free(&self) -> usize {
        self.free_count
    }

    /// Blocks held by at least one sequence.
    pub fn num_used(&self) -> usize {
        self.blocks.len() - self.free_count
    }

    /// Blocks registered in the prefix cache (used or not).
    pub fn num_cached(&self) -> usize {
        self.cache.len()
    }

    /// Prefix-cache counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The reference count of `block`.
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.blocks[block.index()].ref_count
    }

    fn push_back(&mut self, i: u32) {
        let meta = &mut self.blocks[i as usize];
        debug_assert!(!meta.in_free_queue);
        meta.in_free_queue = true;
        meta.prev = self.tail;
        meta.next = None;
        match self.tail {
            Some(t) => self.blocks[t as usize].next = Some(i),
            None => self.head = Some(i),
        }
        self.tail = Some(i);
        self.free_count += 1;
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let m = &self.blocks[i as usize];
            debug_assert!(m.in_free_queue);
            (m.prev, m.next)
        };
        match prev {
            Some(p) => self.blocks[p as usize].next = next,
            None => self.head = next,
        }
        match next {
            Some(n) => self.blocks[n as usize].prev = prev,
            None => self.tail = prev,
        }
        let m = &mut self.blocks[i as usize];
        m.prev = None;
        m.next = None;
        m.in_free_queue = false;
        self.free_count -= 1;
    }

    /// Takes `n` blocks for new tokens, evicting the least recently used
    /// cached ones; `None` (and nothing taken) if fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.free_count {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let i = self.head?;
            self.unlink(i);
            if let Some(old) = self.blocks[i as usize].cached.take() {
                self.cache.remove(&old.hash);
                self.stats.evictions += 1;
            }
            self.blocks[i as usize].ref_count = 1;
            out.push(BlockId(i));
        }
        Some(out)
    }

    /// Looks up the full block of `tokens` after `parent`; on a hit the
    /// block gains a reference (and leaves the free queue if it was there).
    pub fn lookup(
        &mut self,
        parent: Option<BlockHash>,
        tokens: &[u32],
    ) -> Option<(BlockId, BlockHash)> {
        if !self.prefix_caching {
            return None;
        }
        let hash = BlockHash::new(parent, tokens);
        let found = self.cache.get(&hash).copied().filter(|b| {
            self.blocks[b.index()]
                .cached
                .as_ref()
                .is_some_and(|c| c.parent == parent && c.tokens == tokens)
        });
        match found {
            Some(block) => {
                self.stats.hits += 1;
                let i = block.0;
                if self.blocks[i as usize].in_free_queue {
                    self.unlink(i);
                }
                self.blocks[i as usize].ref_count += 1;
                Some((block, hash))
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Whether the full block of `tokens` after `parent` is in the prefix
    /// cache (nothing is taken and nothing counted).
    pub fn contains(&self, parent: Option<BlockHash>, tokens: &[u32]) -> bool {
        self.prefix_caching
            && self
                .cache
                .get(&BlockHash::new(parent, tokens))
                .is_some_and(|b| {
                    self.blocks[b.index()]
                        .cached
                        .as_ref()
                        .is_some_and(|c| c.parent == parent && c.tokens == tokens)
                })
    }

    /// Registers `block`, now holding the full block of `tokens` after
    /// `parent`, in the prefix cache. An equal block already cached wins (the
    /// new one stays uncached).
    pub fn register(
        &mut self,
        block: BlockId,
        parent: Option<BlockHash>,
        tokens: &[u32],
    ) -> BlockHash {
        let hash = BlockHash::new(parent, tokens);
        if self.prefix_caching
            && !self.cache.contains_key(&hash)
            && self.blocks[block.index()].cached.is_none()
        {
            self.cache.insert(hash, block);
            self.blocks[block.index()].cached = Some(CachedBlock {
                hash,
                parent,
                tokens: tokens.to_vec(),
            });
        }
        hash
    }

    /// Adds a reference to a block already held (a forked sequence shares it).
    pub fn share(&mut self, block: BlockId) {
        let meta = &mut self.blocks[block.index()];
        debug_assert!(meta.ref_count > 0, "sharing a free block");
        meta.ref_count += 1;
    }

    /// Drops one reference to each of `blocks`, in reverse order, so that a
    /// sequence's tail is evicted before its head.
    pub fn free(&mut self, blocks: &[BlockId]) {
        for &block in blocks.iter().rev() {
            let i = block.0;
            let meta = &mut self.blocks[i as usize];
            assert!(meta.ref_count > 0, "double free of block {i}");
            meta.ref_count -= 1;
            if meta.ref_count == 0 {
                if meta.cached.is_none() {
                    // Uncached blocks hold nothing worth keeping: hand them out first.
                    self.push_front(i);
                } else {
                    self.push_back(i);
                }
            }
        }
    }

    fn push_front(&mut self, i: u32) {
        let meta = &mut self.blocks[i as usize];
        debug_assert!(!meta.in_free_queue);
        meta.in_free_queue = true;
        meta.prev = None;
        meta.next = self.head;
        match self.head {
            Some(h) => self.blocks[h as usize].prev = Some(i),
            None => self.tail = Some(i),
        }
        self.head = Some(i);
        self.free_count += 1;
    }

    /// Checks the pool's internal invariants (for tests): the free queue
    /// holds exactly the blocks with no references, once each, and every
    /// cache entry points at a block that records it.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = vec![false; self.blocks.len()];
        let mut count = 0;
        let mut cursor = self.head;
        let mut prev = None;
        while let Some(i) = cursor {
            let m = &self.blocks[i as usize];
            if seen[i as usize] {
                return Err(format!("block {i} twice in the free queue"));
            }
            seen[i as usize] = true;
            if m.ref_count != 0 || !m.in_free_queue || m.prev != prev {
                return Err(format!(
                    "block {i} is queued but has {} references",
                    m.ref_count
                ));
            }
            count += 1;
            prev = cursor;
            cursor = m.next;
        }
        if count != self.free_count || self.tail != prev {
            return Err(format!("free count {} but {count} queued", self.free_count));
        }
        for (i, m) in self.blocks.iter().enumerate() {
            if m.ref_count == 0 && !seen[i] {
                return Err(format!("block {i} has no references but is not free"));
            }
        }
        for (hash, block) in &self.cache {
            match &self.blocks[block.index()].cached {
                Some(c) if c.hash == *hash => {}
                _ => return Err(format!("cache entry for block {} is stale", block.0)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_and_free_round_trip() {
        let mut pool = BlockPool::new(4, true);
        let a = pool.allocate(3).expect("three free");
        assert_eq!(pool.num_free(), 1);
        assert!(pool.allocate(2).is_none(), "not enough: nothing is taken");
        assert_eq!(pool.num_free(), 1);
        pool.free(&a);
        assert_eq!(pool.num_free(), 4);
        pool.check_invariants().expect("consistent");
    }

    #[test]
    fn cached_blocks_survive_until_evicted_lru() {
        let mut pool = BlockPool::new(3, true);
        let blocks = pool.allocate(2).expect("free");
        let h0 = pool.register(blocks[0], None, &[1, 2]);
        pool.register(blocks[1], Some(h0), &[3, 4]);
        pool.free(&blocks);
        assert_eq!(pool.num_free(), 3);
        // The prefix is found again, and is no longer free while used.
        let (hit, h) = pool.lookup(None, &[1, 2]).expect("hit");
        assert_eq!((hit, h), (blocks[0], h0));
        assert_eq!(pool.num_free(), 2);
        assert!(pool.lookup(None, &[9, 9]).is_none());
        assert_eq!(pool.stats().hits, 1);
        assert_eq!(pool.stats().misses, 1);
        // Allocation takes the uncached block first, then evicts the cached tail.
        let fresh = pool.allocate(2).expect("free");
        assert!(!fresh.contains(&blocks[0]));
        assert_eq!(pool.stats().evictions, 1);
        assert!(pool.lookup(Some(h0), &[3, 4]).is_none(), "evicted");
        pool.free(&fresh);
        pool.free(&[hit]);
        pool.check_invariants().expect("consistent");
    }

    #[test]
    fn same_tokens_after_a_different_prefix_do_not_match() {
        let mut pool = BlockPool::new(2, true);
        let b = pool.allocate(2).expect("free");
        let h0 = pool.register(b[0], None, &[1]);
        pool.register(b[1], Some(h0), &[2]);
        assert!(pool.lookup(None, &[2]).is_none());
        assert!(pool.lookup(Some(h0), &[2]).is_some());
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught() {
        let mut pool = BlockPool::new(1, false);
        let b = pool.allocate(1).expect("free");
        pool.free(&b);
        pool.free(&b);
    }
}
