//! `pagoda serve`: listen at once (`/health` says 503 while loading), load
//! the model and start the engine thread, serve the OpenAI API until
//! SIGTERM or Ctrl-C, then stop accepting connections and give in-flight
//! requests a grace period before cutting them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pagoda_engine::step_cost::AUTO_TARGET_FACTOR;
use pagoda_engine::{
    EngineCore, EngineHandle, GrammarCompiler, KvBudget, SchedulerConfig, StepLatency,
};
use pagoda_models::load_model_with;
use tokio::sync::watch;

use crate::capabilities::reasoning::{EffortBudgets, Reasoning};
use crate::capabilities::template::TemplateSupport;
use crate::commands::cli::ServeArgs;
use crate::http::auth::ApiKeys;
use crate::http::connections::{self, ConnectionLimits};
use crate::http::metrics::Metrics;
use crate::http::routes::{cors, router};
use crate::http::state::{
    unix_now, AppState, Capabilities, Identity, RequestLimits, ServerState, TextSide,
};

/// Loads the model and starts the engine: the state requests are served from.
fn load(
    args: &ServeArgs,
    model_name: String,
    cut_off: watch::Receiver<bool>,
) -> anyhow::Result<AppState> {
    if args.debug_load_delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(args.debug_load_delay_ms));
    }
    let mut loaded = load_model_with(&args.model, &args.precision.load_options())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let config = loaded.config().clone();
    tracing::info!(
        path = %loaded.path.display(),
        architecture = config.architecture.name(),
        precision = %loaded.precision,
        "model loaded"
    );
    if let Some(path) = &args.chat_template {
        loaded.chat_template = Some(read_chat_template(path, &loaded.tokenizer)?);
        tracing::info!(path = %path.display(), "chat template from file");
    }
    let reasoning = Reasoning::setup(
        args.reasoning,
        &args.reasoning_open_tag,
        &args.reasoning_close_tag,
        loaded.chat_template.as_ref(),
        &loaded.tokenizer,
        EffortBudgets {
            minimal: args.reasoning_budget_minimal,
            low: args.reasoning_budget_low,
            medium: args.reasoning_budget_medium,
            high: args.reasoning_budget_high,
        },
    )
    .context("--reasoning")?;
    match &reasoning {
        Some(r) => tracing::info!(
            open = %r.tags().open,
            close = %r.tags().close,
            answer_markers = ?r.tags().answer_markers,
            "reasoning output: thinking is returned as reasoning_content"
        ),
        None => tracing::info!("reasoning output: off"),
    }
    let tool_format = args.tool_call_parser.resolve(loaded.chat_template.as_ref());
    tracing::info!(format = tool_format.name(), "tool calls");
    let grammars = GrammarCompiler::new(
        &loaded.tokenizer,
        config.vocab_size,
        loaded.tokenizer.stop_ids(),
    );
    if let Err(e) = &grammars {
        tracing::warn!(error = %e, "structured output and forced tool calls are unavailable");
    }
    let (step_cap, latency) = args.step_latency();
    let scheduler = SchedulerConfig {
        max_num_seqs: args.max_num_seqs,
        max_tokens_per_step: step_cap,
        max_waiting: args.max_waiting,
    };
    match latency {
        StepLatency::Fixed => tracing::info!(
            max_tokens_per_step = step_cap,
            "steps: a fixed token budget"
        ),
        StepLatency::TargetMs(ms) => tracing::info!(
            itl_target_ms = ms,
            max_tokens_per_step = step_cap,
            "steps: prompt chunks sized to the inter-token target from measured step costs"
        ),
        StepLatency::Auto => tracing::info!(
            itl_target = format!("{AUTO_TARGET_FACTOR} x the measured decode-only step"),
            max_tokens_per_step = step_cap,
            "steps: prompt chunks sized to the inter-token target from measured step costs"
        ),
    }
    let budget = KvBudget::Bytes(args.kv_cache_mib * 1024 * 1024);
    let core = EngineCore::with_budget(
        loaded.model.clone(),
        budget,
        args.block_size,
        true,
        scheduler,
        args.precision.kv_cache_dtype(),
    )?
    .with_step_latency(latency);
    crate::http::metrics::kv_layout(
        loaded
            .model
            .kv_layout()
            .with_dtype(args.precision.kv_cache_dtype()),
    );
    let engine = EngineHandle::spawn(core, args.max_waiting)?;
    let template = loaded
        .chat_template
        .as_ref()
        .map(TemplateSupport::of)
        .unwrap_or_default();
    Ok(AppState {
        engine,
        identity: Identity {
            model_name,
            created: unix_now(),
            fingerprint: format!("pagoda-{}", env!("CARGO_PKG_VERSION")),
        },
        text: TextSide {
            tokenizer: loaded.tokenizer,
            chat_template: loaded.chat_template,
            defaults: loaded.generation,
        },
        capabilities: Capabilities {
            reasoning,
            grammars,
            tool_format,
            template,
        },
        limits: RequestLimits {
            request_timeout: (args.request_timeout_secs > 0)
                .then(|| Duration::from_secs(args.request_timeout_secs)),
            max_n: args.max_n,
            cut_off,
        },
    })
}

/// Reads a chat template file, with the tokenizer's bos/eos for its variables.
fn read_chat_template(
    path: &std::path::Path,
    tokenizer: &pagoda_models::Tokenizer,
) -> anyhow::Result<pagoda_models::ChatTemplate> {
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("reading the chat template {}", path.display()))?;
    let text =
        |t: Option<&pagoda_models::SpecialToken>| t.map(|t| t.text.clone()).unwrap_or_default();
    pagoda_models::ChatTemplate::new(&source, &text(tokenizer.bos()), &text(tokenizer.eos()))
        .with_context(|| format!("the chat template {}", path.display()))
}

/// How long cut requests get to write their last chunk before the process
/// ends.
const CUT_FLUSH: Duration = Duration::from_secs(5);

/// Runs the server until a shutdown signal (or a failed load).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Flags are checked before anything is loaded.
    let cors = cors(&args.cors_origins)?;
    let keys = ApiKeys {
        keys: args
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect(),
        metrics_public: args.metrics_public,
    };
    let model_name = args.served_model_name.clone().unwrap_or_else(|| {
        args.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pagoda".into())
    });
    let server = Arc::new(ServerState::new(Metrics::install()?));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let result = runtime.block_on(async {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, model = %model_name, "listening; loading the model");
        if !keys.keys.is_empty() {
            let routes = if keys.metrics_public {
                "/v1"
            } else {
                "/v1 and /metrics"
            };
            tracing::info!(keys = keys.keys.len(), routes, "API keys required");
        }
        // `signals` counts SIGTERM / Ctrl-C; `stop` closes the listener.
        let (signal_tx, signal_rx) = watch::channel(0u32);
        let signals = tokio::spawn(watch_signals(signal_tx));
        let (stop_tx, stop_rx) = watch::channel(false);
        // `cut_off` ends the requests still running after the grace period.
        let (cut_tx, cut_rx) = watch::channel(false);
        let app = router(server.clone(), keys, cors);
        let file_limit = connections::raise_file_limit();
        let limits = ConnectionLimits {
            max_connections: connections::connection_cap(args.max_connections, file_limit),
            header_timeout: Duration::from_secs(args.header_timeout_secs),
            body_timeout: Duration::from_secs(args.body_timeout_secs),
        };
        tracing::info!(
            open_file_limit = file_limit,
            max_connections = limits.max_connections,
            header_timeout_s = args.header_timeout_secs,
            body_timeout_s = args.body_timeout_secs,
            "connection limits"
        );
        let mut serving = tokio::spawn(connections::serve(listener, app, limits, stop_rx));
        let loading = tokio::task::spawn_blocking(move || load(&args, model_name, cut_rx));
        let mut signalled = signal_rx.clone();
        // A signal while loading stops at once (the load is abandoned).
        let failure = tokio::select! {
            loaded = loading => match loaded.context("loading the model")? {
                Ok(app) => {
                    server.set_ready(app);
                    tracing::info!("ready");
                    None
                }
                Err(e) => Some(e),
            },
            _ = signalled.wait_for(|n| *n >= 1) => {
                tracing::info!("stopping before the model finished loading");
                None
            }
        };
        if failure.is_none() {
            let _ = signalled.wait_for(|n| *n >= 1).await;
        }
        let _ = stop_tx.send(true);
        // In-flight requests get `grace` to finish; a second signal cuts them now.
        let finished = tokio::select! {
            r = &mut serving => {
                r.context("the server task")?;
                true
            }
            _ = tokio::time::sleep(grace) => {
                tracing::warn!(
                    grace_s = grace.as_secs(),
                    "in-flight requests still running after the grace period: cutting them"
                );
                false
            }
            _ = signalled.wait_for(|n| *n >= 2) => {
                tracing::warn!("second signal: cutting in-flight requests now");
                false
            }
        };
        if !finished {
            // Every running request ends its choices (`length`): each stream
            // gets its final chunk and `[DONE]`, each connection then closes.
            let _ = cut_tx.send(true);
            if tokio::time::timeout(CUT_FLUSH, &mut serving).await.is_err() {
                tracing::warn!("connections still open after the cut: closing them");
            }
        }
        signals.abort();
        match failure {
            Some(e) => Err(e),
            None => anyhow::Ok(()),
        }
    });
    // Dropping the tasks closes every request's channel, so the engine
    // aborts what is left and its thread ends.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(server);
    result
}

/// Counts SIGTERM and Ctrl-C signals into `count`.
async fn watch_signals(count: watch::Sender<u32>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        let term_recv = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term_recv => {},
        }
        let n = *count.borrow() + 1;
        if n == 1 {
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
        }
        let _ = count.send(n);
    }
}
