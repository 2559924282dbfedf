//! `pagoda serve`'s configuration: the TOML file, `PAGODA_*` variables and
//! flags, in that order of precedence; bad files stop the start naming the key.

use pagoda_tests::{default_model, pagoda_bin, workspace_root, Server};

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), text).expect("written");
    file
}

fn served_name(server: &Server) -> String {
    let models = server
        .request("GET", "/v1/models", None)
        .expect("models")
        .json();
    models["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn file_then_environment_then_flags() {
    let config = write_config(
        "served_model_name = \"from-file\"\nkv_cache_mib = 64\nmax_waiting = 3\napi_keys = [\"k1\", \"k2\"]\n",
    );
    let path = config.path().to_string_lossy().into_owned();

    // The file alone.
    let server = Server::spawn(&["--config", &path], &[]);
    server.wait_healthy();
    let auth = [("authorization", "Bearer k2")];
    let models = server
        .request_with("GET", "/v1/models", None, &auth)
        .expect("models");
    assert_eq!(models.json()["data"][0]["id"], "from-file");
    assert_eq!(
        server
            .request("GET", "/v1/models", None)
            .expect("models")
            .status,
        401
    );
    // `/metrics` asks for a key too when keys are configured.
    let metrics = server
        .request_with("GET", "/metrics", None, &auth)
        .expect("metrics");
    let blocks: f64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("pagoda_kv_blocks_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        blocks > 0.0 && blocks < 200.0,
        "64 MiB of KV: {blocks} blocks"
    );
    drop(server);

    // A variable beats the file; a flag beats the variable.
    let env = [
        ("PAGODA_SERVED_MODEL_NAME", "from-env"),
        ("PAGODA_API_KEYS", ""),
    ];
    let server = Server::spawn(&["--config", &path], &env);
    server.wait_healthy();
    assert_eq!(served_name(&server), "from-env");
    drop(server);
    let server = Server::spawn(
        &["--config", &path, "--served-model-name", "from-flag"],
        &env,
    );
    server.wait_healthy();
    assert_eq!(served_name(&server), "from-flag");
}

#[test]
fn the_shipped_config_file_is_valid_and_changes_nothing() {
    let shipped = workspace_root().join("config/pagoda.toml");
    let text = std::fs::read_to_string(&shipped).expect("config/pagoda.toml");
    // Every key is documented, commented out at its default.
    for key in [
        "model",
        "served_model_name",
        "host",
        "port",
        "api_keys",
        "metrics_public",
        "max_connections",
        "max_n",
        "header_timeout_secs",
        "body_timeout_secs",
        "cors_origins",
        "kv_cache_mib",
        "block_size",
        "max_num_seqs",
        "max_tokens_per_step",
        "max_waiting",
        "request_timeout_secs",
        "shutdown_grace_secs",
        "log_format",
        "activations",
        "chat_template",
        "reasoning",
        "reasoning_open_tag",
        "reasoning_close_tag",
        "reasoning_budget_minimal",
        "reasoning_budget_low",
        "reasoning_budget_medium",
        "reasoning_budget_high",
        "tool_call_parser",
    ] {
        assert!(
            text.contains(&format!("# {key} = ")),
            "{key} is not documented"
        );
    }
    // Uncommented, the documented defaults parse and serve.
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.contains(" = ")
                && !l.starts_with("api_keys")
                && !l.starts_with("cors_origins")
                && !l.starts_with("model ")
                && !l.starts_with("chat_template")
                && !l.starts_with("host")
                && !l.starts_with("port")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let config = write_config(&uncommented);
    let server = Server::spawn(&["--config", &config.path().to_string_lossy()], &[]);
    server.wait_healthy();
    assert_eq!(served_name(&server), "SmolLM2-135M-Instruct.Q4_1");
}

#[test]
fn bad_config_files_stop_the_start_naming_the_key() {
    let cases = [
        ("prot = 8000\n", "`prot`"),
        ("port = \"eighty\"\n", "`port`"),
        ("block_size = 0\n", "`block_size`"),
        ("log_format = \"xml\"\n", "`log_format`"),
        ("api_keys = 5\n", "`api_keys`"),
        ("port = [1, 2]\n", "`port`"),
        ("port = \n", "TOML"),
    ];
    for (text, expected) in cases {
        let config = write_config(text);
        let out = std::process::Command::new(pagoda_bin())
            .args(["serve", "--port", "0", "--model"])
            .arg(default_model())
            .arg("--config")
            .arg(config.path())
            .env("PAGODA_LOG", "warn")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(
            stderr.contains(expected) || (expected == "TOML" && stderr.contains("line 1")),
            "{text:?}: {stderr}"
        );
        assert!(
            stderr.contains(&config.path().to_string_lossy().to_string()),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let missing = std::process::Command::new(pagoda_bin())
        .args(["serve", "--config", "/nonexistent/pagoda.toml"])
        .output()
        .expect("runs");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/pagoda.toml"));
}
