//! Structured output through the engine on the tiny random-weight llama
//! fixture: whatever such a model would write, a grammar makes every
//! sampled choice match (a JSON schema, a regular expression), a choice ends
//! when its grammar is complete, forked choices and batched requests walk
//! their own grammars (batched output equals unbatched), and a grammar that
//! cannot be enforced is refused by name.

use std::path::PathBuf;
use std::sync::Arc;

use pagoda_engine::{
    EngineConfig, EngineCore, EngineEvent, FinishReason, GrammarCompiler, GrammarError,
    GrammarSpec, Request, RequestId, SamplingParams, SchedulerConfig, StopCondition,
};
use pagoda_models::{load_model, load_tokenizer, CausalLm, KvDtype, Tokenizer};

struct Fixture {
    model: Arc<dyn CausalLm>,
    tokenizer: Tokenizer,
    compiler: GrammarCompiler,
}

fn fixture() -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama");
    let model = load_model(&dir).expect("model").model;
    let tokenizer = load_tokenizer(&dir).expect("tokenizer").0;
    let vocab = model.config().vocab_size;
    let compiler =
        GrammarCompiler::new(&tokenizer, vocab, tokenizer.stop_ids()).expect("vocabulary indexed");
    Fixture {
        model,
        tokenizer,
        compiler,
    }
}

fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "pet": {"enum": ["cat", "dog", "none"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3}
        },
        "required": ["name", "age", "pet", "tags"],
        "additionalProperties": false
    })
}

fn request(f: &Fixture, spec: &GrammarSpec, seed: u64, n: usize) -> Request {
    Request {
        prompt: f
            .tokenizer
            .encode("Describe a person:", false)
            .expect("encode"),
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::greedy()
        },
        stop: StopCondition {
            max_tokens: 200,
            min_tokens: 0,
            eos_token_ids: f.tokenizer.stop_ids().to_vec(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        },
        n,
        reasoning: None,
        grammar: Some(f.compiler.compile(spec).expect("compiles")),
    }
}

/// Each choice's tokens and finish reason, for every request run together.
type Outcome = Vec<Vec<(Vec<u32>, Option<FinishReason>)>>;

fn run(f: &Fixture, requests: &[Request], max_num_seqs: usize) -> (Outcome, u64) {
    let config = EngineConfig {
        block_size: 4,
        num_blocks: 512,
        prefix_caching: true,
        scheduler: SchedulerConfig {
            max_num_seqs,
            max_tokens_per_step: 32,
            max_waiting: 64,
        },
        kv_dtype: KvDtype::F32,
    };
    let mut engine = EngineCore::new(f.model.clone(), config).expect("engine");
    let mut streams = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let (tx, rx) = flume::unbounded();
        engine
            .add_request(RequestId(i as u64), r.clone(), Box::new(tx))
            .expect("accepted");
        streams.push((rx, r.n));
    }
    for _ in 0..20_000 {
        if engine.is_idle() {
            break;
        }
        engine.step();
    }
    assert!(engine.is_idle(), "the engine did not finish");
    assert_eq!(engine.stats().blocks_used, 0, "every block is free again");
    let out = streams
        .iter()
        .map(|(rx, n)| {
            let mut choices = vec![(Vec::new(), None); *n];
            for event in rx.try_iter() {
                match event {
                    EngineEvent::Token { choice, token, .. } => choices[choice].0.push(token),
                    EngineEvent::Finished { choice, reason, .. } => {
                        choices[choice].1 = Some(reason)
                    }
                    EngineEvent::Failed(e) => panic!("request failed: {e}"),
                }
            }
            choices
        })
        .collect();
    (out, engine.stats().masks)
}

/// The choice's text without the end-of-sequence token it may end with.
fn text(f: &Fixture, tokens: &[u32]) -> String {
    let body: Vec<u32> = tokens
        .iter()
        .copied()
        .filter(|t| !f.tokenizer.stop_ids().contains(t))
        .collect();
    f.tokenizer.decode(&body, false).expect("decode")
}

fn check_person(s: &str) {
    let v: serde_json::Value =
        serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"));
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 4, "{s}");
    assert!(obj["name"].as_str().expect("name").chars().count() <= 12);
    assert!((0..=150).contains(&obj["age"].as_i64().expect("age")));
    assert!(["cat", "dog", "none"].contains(&obj["pet"].as_str().expect("pet")));
    let tags = obj["tags"].as_array().expect("tags");
    assert!(tags.len() <= 3);
    assert!(tags
        .iter()
        .all(|t| t.as_str().is_some_and(|t| t.chars().count() <= 5)));
}

#[test]
fn sampled_choices_always_match_their_schema_and_batching_changes_nothing() {
    let f = fixture();
    let spec = GrammarSpec::JsonSchema {
        schema: schema(),
        strict: true,
    };
    // Six seeded requests, the last with three forked choices.
    let requests: Vec<Request> = (0..6)
        .map(|i| request(&f, &spec, 100 + i, if i == 5 { 3 } else { 1 }))
        .collect();
    let (together, masks) = run(&f, &requests, 8);
    assert!(masks > 0, "masks were computed");
    for choices in &together {
        for (tokens, reason) in choices {
            assert_eq!(*reason, Some(FinishReason::Stop), "ended by its grammar");
            check_person(&text(&f, tokens));
        }
    }
    // One request at a time (its choices together), the same tokens.
    for (i, r) in requests.iter().enumerate() {
        let (alone, _) = run(&f, std::slice::from_ref(r), r.n);
        assert_eq!(alone[0], together[i], "request {i} alone and batched");
    }
}

#[test]
fn regex_and_lark_grammars_shape_the_output() {
    let f = fixture();
    let regex = GrammarSpec::Regex(r"[0-9]{3}-[a-z]{2,4}".into());
    let lark = GrammarSpec::Lark(
        "start: \"answer: \" ANSWER\nANSWER: \"yes\" | \"no\" | \"maybe\"".into(),
    );
    let requests: Vec<Request> = (0..4)
        .map(|i| request(&f, if i % 2 == 0 { &regex } else { &lark }, i, 1))
        .collect();
    let (out, _) = run(&f, &requests, 4);
    for (i, choices) in out.iter().enumerate() {
        let (tokens, reason) = &choices[0];
        let s = text(&f, tokens);
        if i % 2 == 0 {
            let (digits, letters) = s.split_once('-').unwrap_or_else(|| panic!("{s:?}"));
            assert!(
                digits.len() == 3 && digits.chars().all(|c| c.is_ascii_digit()),
                "{s:?}"
            );
            assert!((2..=4).contains(&letters.len()), "{s:?}");
            assert!(letters.chars().all(|c| c.is_ascii_lowercase()), "{s:?}");
        } else {
            assert!(
                ["answer: yes", "answer: no", "answer: maybe"].contains(&s.as_str()),
                "{s:?}"
            );
        }
        assert_eq!(*reason, Some(FinishReason::Stop));
    }
}

#[test]
fn grammars_that_cannot_be_enforced_are_refused_by_name() {
    let f = fixture();
    let unique =
        serde_json::json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true});
    let err = f
        .compiler
        .compile(&GrammarSpec::JsonSchema {
            schema: unique.clone(),
            strict: true,
        })
        .expect_err("uniqueItems cannot be enforced");
    assert!(
        matches!(&err, GrammarError::Invalid(m) if m.contains("uniqueItems")),
        "{err}"
    );
    // Strict or not, a keyword that cannot be enforced is not ignored.
    let err = f
        .compiler
        .compile(&GrammarSpec::JsonSchema {
            schema: unique,
            strict: false,
        })
        .expect_err("not strict: still refused");
    assert!(err.to_string().contains("uniqueItems"), "{err}");
    for bad in [
        GrammarSpec::Regex("([a-z]".into()),
        GrammarSpec::Lark("start: missing_rule".into()),
        GrammarSpec::JsonSchema {
            schema: serde_json::json!({"type": "no-such-type"}),
            strict: true,
        },
    ] {
        assert!(f.compiler.compile(&bad).is_err(), "{bad:?}");
    }
    f.compiler
        .compile(&GrammarSpec::JsonObject)
        .expect("any object");
}

#[test]
fn strict_schemas_allow_only_the_named_properties() {
    let f = fixture();
    let open = serde_json::json!({
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["a"]
    });
    let spec = GrammarSpec::JsonSchema {
        schema: open,
        strict: true,
    };
    let requests: Vec<Request> = (0..4).map(|i| request(&f, &spec, 7 + i, 1)).collect();
    let (out, _) = run(&f, &requests, 4);
    for choices in &out {
        let s = text(&f, &choices[0].0);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["a"], "{s}");
    }
}
