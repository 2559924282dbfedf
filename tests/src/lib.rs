//! Helpers for pagoda's end-to-end tests: they run the real `pagoda` binary
//! on the real default model.
//!
//! The binary is the one `cargo build` leaves in the workspace's target
//! directory (the test command, `scripts/test.sh`, builds it first), or the
//! one `PAGODA_BIN` names.

#![warn(missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The `pagoda` binary under test.
pub fn pagoda_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PAGODA_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("pagoda");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build` (scripts/test.sh does) or set PAGODA_BIN",
        bin.display()
    );
    bin
}

/// The default model, fetched by `scripts/fetch-model.sh`.
pub fn default_model() -> PathBuf {
    let model = workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.exists(),
        "{} is missing: run scripts/fetch-model.sh",
        model.display()
    );
    model
}

/// Runs `pagoda` with `args` and returns its output (stdout, stderr, status).
pub fn run_pagoda(args: &[&str]) -> Output {
    Command::new(pagoda_bin())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("PAGODA_LOG", "warn")
        .output()
        .expect("pagoda runs")
}

/// stdout and stderr of `out` as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
