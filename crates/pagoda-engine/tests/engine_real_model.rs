//! The engine's invariants on the real default model (SmolLM2-135M Q4_1):
//! a request's tokens do not depend on what else runs — alone, in a batch
//! of 16, after a forced preemption, after a prefix-cache hit, as one of
//! `n` choices — and every KV block is free again once requests have
//! finished or been aborted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use pagoda_engine::{
    EngineConfig, EngineCore, EngineEvent, EngineHandle, FinishReason, KvBudget, Limit,
    ReasoningLimit, Request, RequestId, SamplingParams, SchedulerConfig, StopCondition,
    SubmitError,
};
use pagoda_models::{load_model, CausalLm, KvDtype, Tokenizer};

struct Model {
    model: Arc<dyn CausalLm>,
    tokenizer: Tokenizer,
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            path.exists(),
            "{} is missing: run scripts/fetch-model.sh",
            path.display()
        );
        let loaded = load_model(&path).expect("the default model loads");
        Model {
            model: loaded.model,
            tokenizer: loaded.tokenizer,
        }
    })
}

fn config(
    num_blocks: usize,
    max_num_seqs: usize,
    budget: usize,
    prefix_caching: bool,
) -> EngineConfig {
    EngineConfig {
        block_size: 16,
        num_blocks,
        prefix_caching,
        scheduler: SchedulerConfig {
            max_num_seqs,
            max_tokens_per_step: budget,
            max_waiting: 64,
        },
        kv_dtype: KvDtype::F32,
    }
}

fn request(text: &str, max_tokens: usize, sampling: SamplingParams) -> Request {
    let m = model();
    Request {
        prompt: m.tokenizer.encode(text, true).expect("encode"),
        sampling,
        stop: StopCondition {
            max_tokens,
            min_tokens: 0,
            eos_token_ids: m.tokenizer.stop_ids().to_vec(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        },
        n: 1,
        reasoning: None,
        grammar: None,
    }
}

/// Runs `requests` together on one engine; returns each choice's tokens.
fn run(engine: &mut EngineCore, requests: Vec<Request>) -> Vec<Vec<Vec<u32>>> {
    let mut streams = Vec::new();
    for (i, r) in requests.into_iter().enumerate() {
        let (tx, rx) = flume::unbounded();
        let n = r.n;
        engine
            .add_request(RequestId(i as u64), r, Box::new(tx))
            .expect("accepted");
        streams.push((rx, vec![Vec::new(); n], 0usize));
    }
    for _ in 0..10_000 {
        if engine.is_idle() {
            break;
        }
        engine.step();
    }
    assert!(engine.is_idle(), "the engine did not finish");
    for (rx, outputs, finished) in &mut streams {
        for event in rx.try_iter() {
            match event {
                EngineEvent::Token { choice, token, .. } => outputs[choice].push(token),
                EngineEvent::Finished {
                    choice,
                    completion_tokens,
                    ..
                } => {
                    assert_eq!(outputs[choice].len(), completion_tokens);
                    *finished += 1;
                }
                EngineEvent::Failed(e) => panic!("request failed: {e}"),
            }
        }
        assert_eq!(*finished, outputs.len(), "every choice finishes");
    }
    assert_eq!(engine.stats().blocks_used, 0, "every block is free again");
    streams.into_iter().map(|(_, o, _)| o).collect()
}

fn alone(r: &Request) -> Vec<Vec<u32>> {
    // Its own choices run together (`n` may not exceed the running sequences).
    let mut engine =
        EngineCore::new(model().model.clone(), config(64, r.n, 512, false)).expect("engine");
    run(&mut engine, vec![r.clone()]).remove(0)
}

const PROMPTS: [&str; 16] = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away,",
    "1, 2, 3, 4,",
    "The quick brown fox",
    "Water boils at",
    "My favourite colour is",
    "To be or not to be,",
    "In 1492, Columbus",
    "The best way to learn Rust is",
    "Dear Sir or Madam,",
    "import numpy as np\n",
    "The mitochondria is",
    "Roses are red, violets are blue,",
    "A haiku about autumn:",
    "The largest planet in our solar system is",
];

#[test]
fn sixteen_concurrent_greedy_requests_equal_each_alone() {
    let requests: Vec<Request> = PROMPTS
        .iter()
        .map(|p| request(p, 12, SamplingParams::greedy()))
        .collect();
    let expected: Vec<_> = requests.iter().map(alone).collect();
    let mut engine =
        EngineCore::new(model().model.clone(), config(64, 16, 256, true)).expect("engine");
    let together = run(&mut engine, requests);
    assert_eq!(together, expected);
}

#[test]
fn a_preempted_request_resumes_with_exactly_the_same_tokens() {
    let requests: Vec<Request> = PROMPTS[..6]
        .iter()
        .map(|p| request(p, 24, SamplingParams::greedy()))
        .collect();
    let expected: Vec<_> = requests.iter().map(alone).collect();
    // 6 blocks of 16 positions: six sequences of ~10 + 24 tokens cannot all fit.
    let mut engine =
        EngineCore::new(model().model.clone(), config(6, 6, 64, false)).expect("engine");
    let together = run(&mut engine, requests);
    assert!(
        engine.stats().preemptions > 0,
        "the pool was meant to force preemption"
    );
    assert_eq!(together, expected);
}

#[test]
fn a_prefix_cache_hit_gives_the_same_tokens() {
    let system =
        "You are a careful assistant. Answer briefly and precisely, and never make things up. ";
    let a = request(
        &format!("{system}Question: what is two plus two? Answer:"),
        10,
        SamplingParams::greedy(),
    );
    let b = request(
        &format!("{system}Question: what colour is the sky? Answer:"),
        10,
        SamplingParams::greedy(),
    );
    let expected_b = alone(&b);
    let mut engine =
        EngineCore::new(model().model.clone(), config(32, 4, 256, true)).expect("engine");
    run(&mut engine, vec![a]);
    let hits_before = engine.stats().prefix_hits;
    let got_b = run(&mut engine, vec![b]).remove(0);
    assert!(
        engine.stats().prefix_hits > hits_before,
        "the shared system prompt was found in the cache"
    );
    assert_eq!(got_b, expected_b);
}

#[test]
fn a_seeded_sampled_request_is_the_same_alone_and_in_a_batch() {
    let sampling = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 50,
        seed: Some(1234),
        ..SamplingParams::greedy()
    };
    let seeded = request("Tell me a story about a robot.", 16, sampling);
    let expected = alone(&seeded);
    let mut batch: Vec<Request> = PROMPTS[..5]
        .iter()
        .map(|p| request(p, 8, SamplingParams::greedy()))
        .collect();
    batch.insert(2, seeded);
    let mut engine =
        EngineCore::new(model().model.clone(), config(64, 8, 64, true)).expect("engine");
    let together = run(&mut engine, batch);
    assert_eq!(together[2], expected);
}

#[test]
fn n_choices_share_the_prompt_and_match_their_own_seeds() {
    let sampling = |seed| SamplingParams {
        temperature: 1.0,
        seed: Some(seed),
        ..SamplingParams::greedy()
    };
    let mut three = request("Write a short poem about the sea:", 10, sampling(77));
    three.n = 3;
    let mut engine =
        EngineCore::new(model().model.clone(), config(64, 8, 256, false)).expect("engine");
    let got = run(&mut engine, vec![three]).remove(0);
    assert_eq!(
        engine.stats().computed_tokens as usize,
        request("Write a short poem about the sea:", 1, sampling(0))
            .prompt
            .len()
            + got.iter().map(|c| c.len() - 1).sum::<usize>(),
        "the prompt was computed once for the three choices"
    );
    for (i, choice) in got.iter().enumerate() {
        let single = request(
            "Write a short poem about the sea:",
            10,
            sampling(77 + i as u64),
        );
        assert_eq!(
            choice,
            &alone(&single)[0],
            "choice {i} equals a single request seeded {}",
            77 + i
        );
    }
}

/// A listener that cancels choice 1 (like a stop string ending it).
struct CancellingSink {
    events: flume::Sender<EngineEvent>,
    cancel_one: Arc<std::sync::atomic::AtomicBool>,
}

impl pagoda_engine::EventSink for CancellingSink {
    fn send(&self, event: EngineEvent) -> bool {
        self.events.send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.events.is_disconnected()
    }

    fn is_choice_cancelled(&self, choice: usize) -> bool {
        choice == 1 && self.cancel_one.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[test]
fn a_cancelled_choice_stops_at_the_next_step_and_the_others_go_on() {
    let sampling = SamplingParams {
        temperature: 1.0,
        seed: Some(5),
        ..SamplingParams::greedy()
    };
    let mut three = request("Write a short poem about the sea:", 12, sampling);
    three.stop.ignore_eos = true;
    three.n = 3;
    let whole = alone(&three);
    let mut engine =
        EngineCore::new(model().model.clone(), config(64, 8, 256, false)).expect("engine");
    let (tx, rx) = flume::unbounded();
    let cancel_one = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink = CancellingSink {
        events: tx,
        cancel_one: Arc::clone(&cancel_one),
    };
    engine
        .add_request(RequestId(9), three, Box::new(sink))
        .expect("accepted");
    let mut outputs = vec![Vec::new(); 3];
    let mut finished = [false; 3];
    for step in 0..200 {
        if engine.is_idle() {
            break;
        }
        engine.step();
        for event in rx.try_iter() {
            match event {
                EngineEvent::Token { choice, token, .. } => outputs[choice].push(token),
                EngineEvent::Finished { choice, .. } => finished[choice] = true,
                EngineEvent::Failed(e) => panic!("{e}"),
            }
        }
        if step == 2 {
            cancel_one.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    assert!(engine.is_idle());
    assert_eq!(outputs[1], whole[1][..outputs[1].len()].to_vec());
    assert!(
        outputs[1].len() < 5,
        "choice 1 stopped one step after the cancel ({} tokens)",
        outputs[1].len()
    );
    assert!(!finished[1], "a cancelled choice sends no Finished event");
    assert_eq!(outputs[0], whole[0], "choice 0 is untouched");
    assert_eq!(outputs[2], whole[2], "choice 2 is untouched");
    assert_eq!(engine.stats().blocks_used, 0, "every block is free again");
    engine
        .block_manager()
        .pool()
        .check_invariants()
        .expect("consistent pool");
}

#[test]
fn stop_ids_min_tokens_and_logprobs() {
    let m = model();
    let mut r = request(
        "What is the capital of France? The capital of France is",
        8,
        SamplingParams::greedy(),
    );
    let greedy = alone(&r)[0].clone();
    // Stopping on the second generated token.
    r.stop.stop_token_ids = vec![greedy[1]];
    let stopped = alone(&r)[0].clone();
    assert_eq!(stopped, greedy[..2].to_vec());
    // min_tokens keeps stop tokens away.
    let mut r = request("Say nothing.", 6, SamplingParams::greedy());
    r.stop.min_tokens = 6;
    let out = alone(&r)[0].clone();
    assert_eq!(out.len(), 6);
    assert!(out.iter().all(|t| !m.tokenizer.stop_ids().contains(t)));
    // Logprobs come with every token, the chosen one first under greedy.
    let mut r = request(
        "The capital of France is",
        3,
        SamplingParams {
            logprobs: Some(3),
            ..SamplingParams::greedy()
        },
    );
    r.n = 1;
    let mut engine =
        EngineCore::new(model().model.clone(), config(16, 1, 64, false)).expect("engine");
    let (tx, rx) = flume::unbounded();
    engine
        .add_request(RequestId(9), r, Box::new(tx))
        .expect("accepted");
    while !engine.is_idle() {
        engine.step();
    }
    let mut seen = 0;
    for e in rx.try_iter() {
        if let EngineEvent::Token {
            token,
            logprobs: Some(lp),
            ..
        } = e
        {
            assert_eq!(lp.top.len(), 3);
            assert_eq!(lp.top[0].0, token);
            assert!(lp.logprob <= 0.0 && (lp.logprob - lp.top[0].1).abs() < 1e-6);
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn aborted_and_abandoned_requests_free_their_blocks() {
    let mut engine =
        EngineCore::new(model().model.clone(), config(32, 8, 64, true)).expect("engine");
    let mut receivers = HashMap::new();
    for (i, p) in PROMPTS[..6].iter().enumerate() {
        let (tx, rx) = flume::unbounded();
        engine
            .add_request(
                RequestId(i as u64),
                request(p, 30, SamplingParams::greedy()),
                Box::new(tx),
            )
            .expect("accepted");
        receivers.insert(i, rx);
    }
    for _ in 0..3 {
        engine.step();
    }
    assert!(engine.stats().blocks_used > 0);
    engine.abort(RequestId(0));
    receivers.remove(&1); // the client went away
    engine.step();
    assert!(
        engine
            .block_manager()
            .table(pagoda_engine::SeqId(1))
            .is_empty(),
        "aborted at once"
    );
    assert!(
        engine
            .block_manager()
            .table(pagoda_engine::SeqId(2))
            .is_empty(),
        "abandoned: aborted on the next step"
    );
    receivers.clear();
    engine.step();
    assert!(engine.is_idle());
    assert_eq!(engine.stats().blocks_used, 0);
    let pool = engine.block_manager().pool();
    pool.check_invariants().expect("consistent pool");
    assert_eq!(
        pool.num_free(),
        32,
        "only the prefix cache may hold (unused) blocks"
    );
}

#[test]
fn the_pool_is_sized_once_from_a_budget() {
    let scheduler = SchedulerConfig {
        max_num_seqs: 4,
        max_tokens_per_step: 64,
        max_waiting: 4,
    };
    let per_token = model().model.kv_layout().bytes_per_token();
    let engine = EngineCore::with_budget(
        model().model.clone(),
        KvBudget::Bytes(64 << 20),
        16,
        true,
        scheduler,
        KvDtype::F32,
    )
    .expect("64 MiB holds blocks");
    assert_eq!(engine.stats().blocks_total, (64 << 20) / (per_token * 16));
    // An f16 pool holds twice the tokens in the same memory.
    let half = EngineCore::with_budget(
        model().model.clone(),
        KvBudget::Bytes(64 << 20),
        16,
        true,
        scheduler,
        KvDtype::F16,
    )
    .expect("64 MiB holds blocks");
    assert_eq!(half.stats().blocks_total, (64 << 20) / (per_token / 2 * 16));
    let tiny = EngineCore::with_budget(
        model().model.clone(),
        KvBudget::Bytes(1000),
        16,
        true,
        scheduler,
        KvDtype::F16,
    );
    assert!(tiny
        .expect_err("1000 bytes hold no block")
        .to_string()
        .contains("holds no block"));
    let fraction = EngineCore::with_budget(
        model().model.clone(),
        KvBudget::FractionOfAvailable(0.01),
        16,
        true,
        scheduler,
        KvDtype::F16,
    )
    .expect("1% of free memory holds blocks");
    assert!(fraction.stats().blocks_total > 0);
}

#[test]
fn refusals_are_immediate_and_clear() {
    let mut engine = EngineCore::new(
        model().model.clone(),
        EngineConfig {
            scheduler: SchedulerConfig {
                max_num_seqs: 1,
                max_tokens_per_step: 64,
                max_waiting: 1,
            },
            ..config(4, 1, 64, false)
        },
    )
    .expect("engine");
    let (tx, _rx) = flume::unbounded();
    let mut too_long = request("Hi", 100, SamplingParams::greedy());
    assert!(matches!(
        engine.add_request(RequestId(1), too_long.clone(), Box::new(tx.clone())),
        Err(SubmitError::TooLong {
            limit: Limit::KvPool,
            ..
        })
    ));
    too_long.stop.max_tokens = 9000;
    assert!(matches!(
        engine.add_request(RequestId(1), too_long, Box::new(tx.clone())),
        Err(SubmitError::TooLong {
            limit: Limit::ContextWindow,
            ..
        })
    ));
    let mut empty = request("Hi", 4, SamplingParams::greedy());
    empty.prompt.clear();
    assert!(matches!(
        engine.add_request(RequestId(1), empty, Box::new(tx.clone())),
        Err(SubmitError::EmptyPrompt)
    ));
    let mut bad = request("Hi", 4, SamplingParams::greedy());
    bad.prompt.push(1_000_000);
    assert!(matches!(
        engine.add_request(RequestId(1), bad, Box::new(tx.clone())),
        Err(SubmitError::UnknownToken { .. })
    ));
    engine
        .add_request(
            RequestId(1),
            request("Hi", 4, SamplingParams::greedy()),
            Box::new(tx.clone()),
        )
        .expect("first fits");
    assert_eq!(
        engine.add_request(
            RequestId(2),
            request("Hi", 4, SamplingParams::greedy()),
            Box::new(tx)
        ),
        Err(SubmitError::QueueFull)
    );
}

#[test]
fn the_engine_thread_serves_requests_through_channels() {
    let core = EngineCore::new(model().model.clone(), config(64, 8, 128, true)).expect("engine");
    let handle = EngineHandle::spawn(core, 16).expect("thread");
    let r = request("The capital of France is", 6, SamplingParams::greedy());
    let expected = alone(&r)[0].clone();
    let streams: Vec<_> = (0..4)
        .map(|_| handle.submit(r.clone()).expect("submitted"))
        .collect();
    // A fifth client gives up at once: its request must not linger.
    drop(handle.submit(r.clone()).expect("submitted"));
    for s in streams {
        let mut tokens = Vec::new();
        let mut reason = None;
        while let Ok(e) = s.events.recv_timeout(std::time::Duration::from_secs(60)) {
            match e {
                EngineEvent::Token { token, .. } => tokens.push(token),
                EngineEvent::Finished { reason: r, .. } => {
                    reason = Some(r);
                    break;
                }
                EngineEvent::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(tokens, expected);
        assert!(matches!(
            reason,
            Some(FinishReason::Length | FinishReason::Stop)
        ));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while handle.stats().blocks_used > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(handle.stats().blocks_used, 0);
}

/// A thinking budget on `r`: the output starts inside the block, which
/// `close` ends; the engine closes it after `max_tokens`.
fn with_budget(r: &Request, close: &[u32], max_tokens: usize) -> Request {
    let mut r = r.clone();
    r.reasoning = Some(ReasoningLimit {
        starts_inside: true,
        open: Vec::new(),
        close: close.to_vec(),
        markers: Vec::new(),
        max_tokens,
        close_with: close.to_vec(),
    });
    r
}

#[test]
fn a_spent_thinking_budget_appends_the_close_and_generation_goes_on() {
    let free = request("The capital of France is", 12, SamplingParams::greedy());
    let expected = alone(&free).remove(0);
    let close = model()
        .tokenizer
        .encode("\n</answer>\n", false)
        .expect("encode");
    let got = alone(&with_budget(&free, &close, 3)).remove(0);
    assert_eq!(got.len(), 12, "appended tokens count against max_tokens");
    assert_eq!(
        got[..3],
        expected[..3],
        "thinking up to the budget is untouched"
    );
    assert_eq!(
        got[3..3 + close.len()],
        close[..],
        "then the close is appended"
    );
    // What follows is the model's own continuation of prompt + forced text.
    let mut continued = free.clone();
    continued.prompt.extend(&got[..3 + close.len()]);
    continued.stop.max_tokens = 12 - 3 - close.len();
    assert_eq!(alone(&continued).remove(0), got[3 + close.len()..]);

    // A block the model closes itself within the budget changes nothing.
    let own_close = [expected[1]];
    assert_eq!(
        alone(&with_budget(&free, &own_close, 5)).remove(0),
        expected
    );

    // A zero budget closes before the first token; each of n choices alone.
    let mut three = with_budget(&free, &close, 0);
    three.n = 3;
    three.sampling = SamplingParams {
        temperature: 0.8,
        seed: Some(7),
        ..SamplingParams::greedy()
    };
    let choices = alone(&three);
    assert_eq!(choices.len(), 3);
    for c in &choices {
        assert_eq!(c[..close.len()], close[..]);
    }

    // Budgeted requests in a batch equal each alone.
    let requests: Vec<Request> = PROMPTS[..4]
        .iter()
        .enumerate()
        .map(|(i, p)| with_budget(&request(p, 10, SamplingParams::greedy()), &close, i + 1))
        .collect();
    let expected: Vec<_> = requests.iter().map(alone).collect();
    let mut engine =
        EngineCore::new(model().model.clone(), config(64, 4, 256, true)).expect("engine");
    assert_eq!(run(&mut engine, requests), expected);
}
