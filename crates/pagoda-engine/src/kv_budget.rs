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
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Positions per block.
    pub block_size: usize,
    /// Bytes the pool takes.
    pub bytes: u64,
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
        let budget = match self {
            KvBudget::Bytes(b) => b,
            KvBudget::FractionOfAvailable(f) => {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(KvBudgetError::BadFraction(f));
                }
                (available_memory()? as f64 * f) as u64
            }
        };
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
            block_size,
            bytes: num_blocks as u64 * block_bytes,
        })
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
