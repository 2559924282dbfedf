//! How large the KV pool is: a byte budget or a fraction of the memory
//! available when the server starts, turned into a number of blocks once.

use pagoda_models::KvLayout;

/// The memory given to the KV pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvBudget {
    /// This many bytes.
    Bytes(u64),
    /// This fraction (0, 1] of the memory available at start (`MemAvailable`).
    FractionOfAvailable(f64),
}

/// The pool a budget buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPoolSize {
    /// Blocks in the pool (the main pool, when there is a window pool).
    pub num_blocks: usize,
    /// Blocks of the window pool of the layers attending over a sliding
    /// window, when they have one.
    pub window_blocks: Option<usize>,
    /// Positions per block.
    pub block_size: usize,
    /// Bytes the pool takes (both pools).
    pub bytes: u64,
}

/// The most window blocks one sequence holds: those the window of the
/// oldest position of a step reads, and the step's new positions.
pub fn window_blocks_per_seq(
    window: usize,
    block_size: usize,
    max_tokens_per_step: usize,
) -> usize {
    (window + max_tokens_per_step)
        .saturating_sub(1)
        .div_ceil(block_size.max(1))
        + 1
}

/// The window blocks `max_seqs` running sequences can hold at once: each
/// its window (and a partial block on either side), and the step's new
/// positions, which all the sequences of a step share.
pub fn window_blocks_for(
    window: usize,
    block_size: usize,
    max_tokens_per_step: usize,
    max_seqs: usize,
) -> usize {
    let bs = block_size.max(1);
    let per_seq = window.saturating_sub(1).div_ceil(bs) + 2;
    (max_seqs.max(1) * per_seq + max_tokens_per_step.div_ceil(bs)).max(window_blocks_per_seq(
        window,
        block_size,
        max_tokens_per_step,
    ))
}

/// Whether `layout` gets a window pool: it has layers attending over a
/// sliding window and layers attending over the whole context (with
/// windowed layers only, one pool serves).
pub fn splits_pool(layout: KvLayout) -> bool {
    let (windowed, global) = layout.window_and_global_layers();
    windowed > 0 && global > 0
}

impl KvPoolSize {
    /// Positions (tokens) the pool holds in all.
    pub fn tokens(&self) -> usize {
        self.num_blocks * self.block_size
    }
}

/// Why a budget buys no pool.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KvBudgetError {
    /// The fraction is not in (0, 1].
    #[error("the KV memory fraction must be in (0, 1], got {0}")]
    BadFraction(f64),
    /// The available memory could not be read.
    #[error("cannot read the available memory from /proc/meminfo: {0}")]
    NoMemInfo(String),
    /// Not even one block fits.
    #[error("a KV budget of {budget} bytes holds no block of {block_bytes} bytes")]
    TooSmall {
        /// The budget in bytes.
        budget: u64,
        /// Bytes of one block.
        block_bytes: u64,
    },
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn available_memory() -> Result<u64, KvBudgetError> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| KvBudgetError::NoMemInfo(e.to_string()))?;
    parse_mem_available(&text)
        .ok_or_else(|| KvBudgetError::NoMemInfo("no MemAvailable line".into()))
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl KvBudget {
    /// The pool this budget buys for `layout` with `block_size` positions per block.
    pub fn pool_size(
        self,
        layout: KvLayout,
        block_size: usize,
    ) -> Result<KvPoolSize, KvBudgetError> {
        let budget = self.bytes()?;
        let block_bytes = (layout.bytes_per_token() * block_size) as u64;
        let num_blocks = (budget / block_bytes.max(1)) as usize;
        if num_blocks == 0 {
            return Err(KvBudgetError::TooSmall {
                budget,
                block_bytes,
            });
        }
        Ok(KvPoolSize {
            num_blocks,
            window_blocks: None,
            block_size,
            bytes: num_blocks as u64 * block_bytes,
        })
    }

    /// The main and window pools this budget buys for a layout that
    /// [`splits_pool`]: the window pool holds `wanted` blocks (what the
    /// running sequences can hold, [`window_blocks_for`]) within half the
    /// budget, and at least `per_seq` (one sequence's,
    /// [`window_blocks_per_seq`]); the main pool the rest.
    pub fn split_pool_size(
        self,
        layout: KvLayout,
        block_size: usize,
        per_seq: usize,
        wanted: usize,
    ) -> Result<KvPoolSize, KvBudgetError> {
        let budget = self.bytes()?;
        let (windowed, global) = layout.window_and_global_layers();
        let layer_block = (layout.bytes_per_token_per_layer() * block_size) as u64;
        let (window_block, main_block) = (
            (windowed as u64 * layer_block).max(1),
            (global as u64 * layer_block).max(1),
        );
        let window_blocks = (wanted as u64)
            .min(budget / 2 / window_block)
            .max(per_seq as u64);
        let rest = budget.saturating_sub(window_blocks * window_block);
        let num_blocks = (rest / main_block) as usize;
        if num_blocks == 0 {
            return Err(KvBudgetError::TooSmall {
                budget,
                block_bytes: main_block + per_seq as u64 * window_block,
            });
        }
        Ok(KvPoolSize {
            num_blocks,
            window_blocks: Some(window_blocks as usize),
            block_size,
            bytes: num_blocks as u64 * main_block + window_blocks * window_block,
        })
    }

    /// The budget in bytes.
    fn bytes(self) -> Result<u64, KvBudgetError> {
        match self {
            KvBudget::Bytes(b) => Ok(b),
            KvBudget::FractionOfAvailable(f) => {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(KvBudgetError::BadFraction(f));
                }
                Ok((available_memory()? as f64 * f) as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: KvLayout = KvLayout::per_head(30, 3, 64);

    #[test]
    fn a_byte_budget_buys_whole_blocks() {
        // 30 layers · 2 (K, V) · 3 heads · 64 · 4 bytes = 46,080 bytes per token.
        let size = KvBudget::Bytes(100 * 1024 * 1024)
            .pool_size(LAYOUT, 16)
            .expect("fits");
        assert_eq!(size.num_blocks, 100 * 1024 * 1024 / (46_080 * 16));
        assert_eq!(size.tokens(), size.num_blocks * 16);
        assert!(size.bytes <= 100 * 1024 * 1024);
        assert!(matches!(
            KvBudget::Bytes(1000).pool_size(LAYOUT, 16),
            Err(KvBudgetError::TooSmall { .. })
        ));
    }

    #[test]
    fn a_split_budget_gives_the_window_pool_its_sequences_within_half() {
        // Five windowed layers of six: 1 KiB per token per layer.
        let layout = KvLayout::per_head(6, 1, 128).with_window(pagoda_models::KvWindow::over(
            64,
            [true, true, true, true, true, false],
        ));
        assert!(splits_pool(layout));
        assert!(!splits_pool(KvLayout::per_head(6, 1, 128)));
        let per_seq = window_blocks_per_seq(64, 16, 32);
        assert_eq!(per_seq, 7);
        // 4 sequences: 4 windows of 4 + 2 blocks and the step's 2 blocks.
        let wanted = window_blocks_for(64, 16, 32, 4);
        assert_eq!(wanted, 26);
        assert_eq!(window_blocks_for(64, 16, 32, 1), 8);
        // Plenty: all of them.
        let size = KvBudget::Bytes(64 << 20)
            .split_pool_size(layout, 16, per_seq, wanted)
            .expect("fits");
        assert_eq!(size.window_blocks, Some(26));
        let (window, main) = (26 * 5 * 1024 * 16, size.num_blocks as u64 * 1024 * 16);
        assert_eq!(size.bytes, window + main);
        assert!(size.bytes <= 64 << 20 && (64 << 20) - size.bytes < 1024 * 16);
        // Tight: the window pool keeps to half the budget (one sequence at least).
        let size = KvBudget::Bytes(2 << 20)
            .split_pool_size(layout, 16, per_seq, 7000)
            .expect("fits");
        assert_eq!(size.window_blocks, Some((1 << 20) / (5 * 1024 * 16)));
        let size = KvBudget::Bytes(1 << 20)
            .split_pool_size(layout, 16, per_seq, 7000)
            .expect("fits");
        assert_eq!(size.window_blocks, Some(per_seq));
        assert!(KvBudget::Bytes(7 * 5 * 1024 * 16)
            .split_pool_size(layout, 16, per_seq, per_seq)
            .is_err());
    }

    #[test]
    fn fractions_are_checked_and_meminfo_is_parsed() {
        assert!(matches!(
            KvBudget::FractionOfAvailable(1.5).pool_size(LAYOUT, 16),
            Err(KvBudgetError::BadFraction(_))
        ));
        assert!(matches!(
            KvBudget::FractionOfAvailable(0.0).pool_size(LAYOUT, 16),
            Err(KvBudgetError::BadFraction(_))
        ));
        assert_eq!(
            parse_mem_available("MemTotal: 10 kB\nMemAvailable:    2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
        assert!(KvBudget::FractionOfAvailable(0.01)
            .pool_size(LAYOUT, 16)
            .is_ok());
    }
}
