//! `pagoda generate`, the smallest end-to-end proof: the real binary on the
//! real default model streams a completion and reports its speed.

use pagoda_tests::{default_model, run_pagoda, run_pagoda_with, texts};

#[test]
fn chat_greedy_answers_the_capital_question() {
    let model = default_model();
    let out = run_pagoda(&[
        "generate",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--prompt",
        "What is the capital of France?",
        "--chat",
        "--max-tokens",
        "32",
        "--print-ids",
        "--activations",
        "f32",
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(
        stdout.starts_with("The capital of France is Paris."),
        "stdout: {stdout:?}"
    );
    // The same ids transformers produces for this prompt (tests/fixtures/smollm2_reference.json).
    assert!(
        stdout.contains("ids: [504, 3575, 282, 4649, 314, 7042, 30, 2]"),
        "stdout: {stdout:?}"
    );
    assert!(
        stderr.contains("tok/s decode") && stderr.contains("finish: Stop"),
        "stderr: {stderr}"
    );
}

#[test]
fn the_default_activations_complete_the_capital_sentence() {
    let model = default_model();
    let out = run_pagoda(&[
        "generate",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "3",
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stdout.starts_with(" Paris."), "stdout: {stdout:?}");
}

/// Every build of the int8 kernels this CPU runs gives the same bits, so
/// the same greedy ids on the real model (`PAGODA_KERNELS` forces a build).
#[test]
fn every_kernel_build_generates_the_same_ids() {
    let model = default_model();
    let run = |kernels: &str| {
        let out = run_pagoda_with(
            &[
                "generate",
                "--model",
                model.to_str().expect("utf-8 path"),
                "--prompt",
                "Write a story about a dragon.",
                "--chat",
                "--max-tokens",
                "12",
                "--print-ids",
            ],
            &[("PAGODA_LOG", "info"), ("PAGODA_KERNELS", kernels)],
        );
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{kernels}: {stderr}");
        let ids = stdout
            .lines()
            .find(|l| l.starts_with("ids: "))
            .unwrap_or_else(|| panic!("{kernels}: no ids in {stdout:?}"))
            .to_string();
        (ids, stderr)
    };
    let (reference, log) = run("portable");
    assert!(log.contains("portable kernels"), "{log}");
    for kernels in ["avx2", "avx512-vnni"] {
        let (ids, log) = run(kernels);
        if log.contains(&format!("{kernels} kernels")) {
            assert_eq!(ids, reference, "{kernels} against the portable build");
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_max_tokens_is_honoured() {
    let model = default_model();
    let run = |seed: &str| {
        let out = run_pagoda(&[
            "generate",
            "--model",
            model.to_str().expect("utf-8 path"),
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "12",
            "--temperature",
            "1.0",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--ignore-eos",
            "--print-ids",
        ]);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "stderr: {stderr}");
        assert!(
            stderr.contains("12 generated") && stderr.contains("finish: Length"),
            "stderr: {stderr}"
        );
        stdout
    };
    let a = run("7");
    assert_eq!(a, run("7"), "same seed, same completion");
    let others: Vec<String> = ["8", "9", "10"].iter().map(|s| run(s)).collect();
    assert!(
        others.iter().any(|o| o != &a),
        "different seeds should give different samples"
    );
}

#[test]
fn bad_input_fails_with_a_clear_message_and_no_panic() {
    for (args, expected) in [
        (
            vec!["generate", "--model", "/nonexistent.gguf", "--prompt", "hi"],
            "/nonexistent.gguf",
        ),
        (
            vec!["generate", "--prompt", "hi", "--temperature", "-1"],
            "--temperature",
        ),
        (
            vec!["generate", "--prompt", "hi", "--top-p", "0"],
            "--top-p",
        ),
        (
            vec!["generate", "--prompt", "hi", "--max-tokens", "9000"],
            "context window",
        ),
        (
            vec!["generate", "--prompt", "", "--max-tokens", "4"],
            "empty",
        ),
    ] {
        let model = default_model();
        let mut full = args.clone();
        if !args.contains(&"--model") {
            full.extend(["--model", model.to_str().expect("utf-8 path")]);
        }
        let out = run_pagoda(&full);
        let (_, stderr) = texts(&out);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains(expected),
            "{args:?}: stderr {stderr:?} should mention {expected:?}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
