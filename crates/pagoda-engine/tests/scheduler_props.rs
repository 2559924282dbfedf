//! Property tests of the scheduler and block manager together, with random
//! arrivals, prompt and output lengths, shared prefixes and aborts: the
//! token budget and the sequence cap are never exceeded, every scheduled
//! chunk has its blocks, the pool stays consistent (no leak, no double
//! free), no sequence starves, and when everything has finished or been
//! aborted every block is free (or only held by the prefix cache).

use std::collections::HashMap;

use pagoda_engine::block_manager::BlockManager;
use pagoda_engine::scheduler::{AdmitError, Scheduler, SchedulerConfig};
use pagoda_engine::SeqId;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Arrival {
    step: usize,
    prefix: u32,
    prompt_len: usize,
    output_len: usize,
    abort_at: Option<usize>,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0usize..30,
        0u32..3,
        1usize..40,
        1usize..20,
        prop::option::weighted(0.2, 0usize..80),
    )
        .prop_map(|(step, prefix, prompt_len, output_len, abort_at)| Arrival {
            step,
            prefix,
            prompt_len,
            output_len,
            abort_at,
        })
}

const BLOCK_SIZE: usize = 4;
const MAX_STEPS: usize = 3000;

/// A setting fixed in the gate that an exploratory run (scripts/explore.sh)
/// may change through the environment variable `name`.
fn explore_setting<T: std::str::FromStr>(name: &str, gate: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(gate)
}

proptest! {
    // A fixed seed and a fixed number of cases: every run tries the same
    // 200 cases, so the gate passes or fails alike on every run. Explore
    // with other seeds outside the gate (scripts/explore.sh); a failure
    // found there is kept in the regressions file beside this test.
    #![proptest_config(ProptestConfig {
        cases: explore_setting("PAGODA_EXPLORE_CASES", 200),
        rng_seed: proptest::test_runner::RngSeed::Fixed(explore_setting("PAGODA_EXPLORE_SEED", 0x9a60da)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn scheduling_invariants_hold(
        arrivals in prop::collection::vec(arrival(), 1..24),
        num_blocks in 15usize..40,
        budget in 1usize..48,
        max_num_seqs in 1usize..8,
        max_waiting in 1usize..16,
        prefix_caching in any::<bool>(),
    ) {
        let mut bm = BlockManager::new(num_blocks, BLOCK_SIZE, prefix_caching);
        let config = SchedulerConfig { max_num_seqs, max_tokens_per_step: budget, max_waiting };
        let mut s = Scheduler::new(config, num_blocks * BLOCK_SIZE);
        let mut generated: HashMap<SeqId, usize> = HashMap::new();
        let mut accepted = Vec::new();
        let mut done = 0usize;

        for step in 0..MAX_STEPS {
            for (i, a) in arrivals.iter().enumerate().filter(|(_, a)| a.step == step) {
                let seq = SeqId(i as u64);
                // Prompts in the same prefix group share their first tokens.
                let prompt: Vec<u32> = (0..a.prompt_len as u32).map(|t| if t < 12 { a.prefix * 100 + t } else { 1000 + t + i as u32 }).collect();
                match s.add(seq, prompt, a.prompt_len + a.output_len) {
                    Ok(()) => { accepted.push(seq); generated.insert(seq, 0); }
                    Err(AdmitError::QueueFull(n)) => prop_assert_eq!(n, max_waiting),
                    Err(e) => prop_assert!(false, "unexpected refusal {e}"),
                }
            }
            for (i, a) in arrivals.iter().enumerate() {
                let seq = SeqId(i as u64);
                if a.abort_at == Some(step) && s.contains(seq) {
                    s.remove(seq, &mut bm);
                    generated.remove(&seq);
                    done += 1;
                }
            }
            if s.is_idle() && arrivals.iter().all(|a| a.step <= step) {
                break;
            }
            let plan = s.schedule(&mut bm);
            if !s.is_idle() {
                prop_assert!(!plan.chunks.is_empty(), "step {step}: work waiting but nothing scheduled");
            }
            let total: usize = plan.chunks.iter().map(|c| c.len).sum();
            prop_assert!(total <= budget, "budget {budget} exceeded: {total}");
            prop_assert!(plan.chunks.len() <= max_num_seqs);
            for c in &plan.chunks {
                prop_assert!(c.len > 0);
                prop_assert!(bm.table(c.seq).len() * BLOCK_SIZE >= c.start + c.len, "chunk without blocks");
                prop_assert_eq!(plan.chunks.iter().filter(|o| o.seq == c.seq).count(), 1);
                prop_assert!(!plan.preempted.contains(&c.seq));
            }
            for c in &plan.chunks {
                s.complete(c, &mut bm);
                if c.wants_logits {
                    let count = generated.get_mut(&c.seq).expect("tracked");
                    *count += 1;
                    let a = &arrivals[c.seq.0 as usize];
                    if *count == a.output_len {
                        s.remove(c.seq, &mut bm);
                        generated.remove(&c.seq);
                        done += 1;
                    } else {
                        s.append(c.seq, 7);
                    }
                }
            }
            bm.pool().check_invariants().map_err(TestCaseError::fail)?;
        }
        prop_assert!(s.is_idle(), "not finished after {MAX_STEPS} steps: starvation or livelock");
        prop_assert_eq!(done, accepted.len());
        prop_assert_eq!(bm.pool().num_used(), 0, "blocks leaked");
        prop_assert_eq!(bm.num_tables(), 0);
        prop_assert_eq!(bm.pool().num_free(), num_blocks);
    }
}
