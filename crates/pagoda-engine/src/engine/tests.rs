//! The engine's paths driven by the scripted model ([`super::scripted`]):
//! one request, forked choices, preemption and recomputation, a client that
//! goes away, a spent thinking budget, a failed forward pass. Every output
//! is checked against what the script says, and every block is back in the
//! pool at the end.

use std::sync::Arc;

use super::scripted::{reference, Scripted, CLOSE, FAIL, OPEN};
use super::*;
use crate::reasoning::ReasoningLimit;
use crate::request::{Request, StopCondition};
use crate::sampler::SamplingParams;

/// At most this many steps per test: every loop here is bounded.
const MAX_STEPS: usize = 10_000;

fn engine(num_blocks: usize, block_size: usize, max_num_seqs: usize) -> EngineCore {
    EngineCore::new(
        Arc::new(Scripted::new()),
        EngineConfig {
            block_size,
            num_blocks,
            prefix_caching: true,
            scheduler: SchedulerConfig {
                max_num_seqs,
                max_tokens_per_step: 64,
                max_waiting: 16,
            },
            kv_dtype: KvDtype::F32,
        },
    )
    .expect("engine")
}

fn request(prompt: &[u32], max_tokens: usize, n: usize) -> Request {
    Request {
        prompt: prompt.to_vec(),
        sampling: SamplingParams::greedy(),
        stop: StopCondition {
            max_tokens,
            min_tokens: 0,
            eos_token_ids: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        },
        n,
        reasoning: None,
        grammar: None,
    }
}

/// What one request received: each choice's tokens and finish reason, or
/// the failure.
#[derive(Debug, Default)]
struct Received {
    tokens: Vec<Vec<u32>>,
    finished: Vec<Option<FinishReason>>,
    failed: Option<EngineFailure>,
}

/// Submits `requests` and steps until the engine is idle.
fn run(engine: &mut EngineCore, requests: Vec<Request>) -> Vec<Received> {
    let receivers: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (tx, rx) = flume::unbounded();
            let n = r.n;
            engine
                .add_request(RequestId(i as u64 + 1), r, Box::new(tx))
                .expect("admitted");
            (rx, n)
        })
        .collect();
    for _ in 0..MAX_STEPS {
        if engine.is_idle() {
            break;
        }
        engine.step();
    }
    assert!(engine.is_idle(), "the engine did not finish");
    receivers
        .into_iter()
        .map(|(rx, n)| {
            let mut got = Received {
                tokens: vec![Vec::new(); n],
                finished: vec![None; n],
                failed: None,
            };
            for event in rx.try_iter() {
                match event {
                    EngineEvent::Token { choice, token, .. } => got.tokens[choice].push(token),
                    EngineEvent::Finished { choice, reason, .. } => {
                        got.finished[choice] = Some(reason)
                    }
                    EngineEvent::Failed(f) => got.failed = Some(f),
                }
            }
            got
        })
        .collect()
}

fn assert_no_blocks_held(engine: &EngineCore) {
    let blocks = engine.block_manager();
    assert_eq!(blocks.pool().num_used(), 0, "blocks leaked");
    assert_eq!(blocks.num_tables(), 0, "tables leaked");
}

#[test]
fn a_request_alone_follows_the_script() {
    let mut e = engine(16, 4, 4);
    let got = run(&mut e, vec![request(&[3, 4, 5], 10, 1)]);
    assert_eq!(got[0].tokens[0], reference(&[3, 4, 5], 10));
    assert_eq!(got[0].finished[0], Some(FinishReason::Length));
    assert_no_blocks_held(&e);
}

#[test]
fn choices_fork_from_the_first_and_compute_the_prompt_once() {
    // A 5-token prompt in blocks of 4: the forks share one full block and
    // copy the partial one.
    let prompt = [7, 1, 2, 9, 4];
    let mut e = engine(32, 4, 4);
    let got = run(&mut e, vec![request(&prompt, 6, 3)]);
    for choice in 0..3 {
        assert_eq!(
            got[0].tokens[choice],
            reference(&prompt, 6),
            "choice {choice}"
        );
        assert_eq!(got[0].finished[choice], Some(FinishReason::Length));
    }
    // The prompt once, then 5 decode tokens per choice.
    assert_eq!(e.stats().computed_tokens, 5 + 3 * 5);
    assert_no_blocks_held(&e);
}

#[test]
fn preempted_sequences_are_recomputed_and_follow_the_script() {
    // 6 blocks of 4 positions; two requests that each grow to 16
    // positions cannot both run to the end: one is preempted.
    let (a, b) = ([1, 2, 3, 4, 5, 6], [9, 8, 7, 6, 5, 4]);
    let mut e = engine(6, 4, 4);
    let got = run(&mut e, vec![request(&a, 10, 1), request(&b, 10, 1)]);
    assert!(e.stats().preemptions > 0, "{:?}", e.stats());
    assert_eq!(got[0].tokens[0], reference(&a, 10));
    assert_eq!(got[1].tokens[0], reference(&b, 10));
    assert_no_blocks_held(&e);
}

#[test]
fn a_listener_that_goes_away_aborts_its_request_and_frees_its_blocks() {
    let mut e = engine(16, 4, 4);
    let (tx, rx) = flume::unbounded();
    e.add_request(RequestId(1), request(&[1, 2, 3], 40, 2), Box::new(tx))
        .expect("admitted");
    e.step();
    e.step();
    assert!(rx.try_iter().count() > 0);
    drop(rx);
    e.step();
    assert!(e.is_idle());
    assert_no_blocks_held(&e);
}

#[test]
fn a_spent_thinking_budget_is_closed_by_the_engine() {
    let prompt = [2, 3, OPEN];
    let mut r = request(&prompt, 8, 1);
    r.reasoning = Some(ReasoningLimit {
        starts_inside: true,
        open: vec![OPEN],
        close: vec![CLOSE],
        markers: Vec::new(),
        max_tokens: 3,
        close_with: vec![CLOSE],
    });
    let mut e = engine(16, 4, 4);
    let got = run(&mut e, vec![r]);
    let out = &got[0].tokens[0];
    assert_eq!(
        out[..3],
        reference(&prompt, 3)[..],
        "three tokens of thinking"
    );
    assert_eq!(out[3], CLOSE, "then the engine's close");
    let so_far: Vec<u32> = prompt.iter().chain(&out[..4]).copied().collect();
    assert_eq!(out[4..], reference(&so_far, 4)[..], "then the answer");
    assert_no_blocks_held(&e);
}

#[test]
fn a_failed_forward_pass_fails_the_requests_of_its_step() {
    let mut e = engine(16, 4, 4);
    let got = run(
        &mut e,
        vec![request(&[1, FAIL, 2], 4, 1), request(&[5, 6], 4, 1)],
    );
    for r in &got {
        assert!(matches!(r.failed, Some(EngineFailure::Forward(_))), "{r:?}");
    }
    assert_no_blocks_held(&e);
}
