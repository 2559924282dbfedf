//! `pagoda serve`: load the model, start the engine thread, serve the
//! OpenAI API until SIGTERM or Ctrl-C.

use std::sync::Arc;

use anyhow::Context;
use pagoda_engine::{EngineCore, EngineHandle, KvBudget, SchedulerConfig};
use pagoda_models::load_model;

use crate::auth::ApiKeys;
use crate::cli::ServeArgs;
use crate::routes::{cors, router};
use crate::state::{unix_now, AppState};

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Flags are checked before the model is loaded.
    let cors = cors(&args.cors_origins)?;
    let loaded =
        load_model(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let config = loaded.config().clone();
    tracing::info!(
        path = %loaded.path.display(),
        architecture = config.architecture.name(),
        precision = %loaded.precision,
        "model loaded"
    );
    let scheduler = SchedulerConfig {
        max_num_seqs: args.max_num_seqs,
        max_tokens_per_step: args.max_tokens_per_step,
        max_waiting: args.max_waiting,
    };
    let budget = KvBudget::Bytes(args.kv_cache_mib * 1024 * 1024);
    let core = EngineCore::with_budget(
        loaded.model.clone(),
        budget,
        args.block_size,
        true,
        scheduler,
    )?;
    let engine = EngineHandle::spawn(core, args.max_waiting)?;
    let model_name = args.served_model_name.clone().unwrap_or_else(|| {
        args.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pagoda".into())
    });
    let state = Arc::new(AppState {
        engine,
        tokenizer: loaded.tokenizer,
        chat_template: loaded.chat_template,
        defaults: loaded.generation,
        model_name,
        context_length: config.max_position_embeddings,
        created: unix_now(),
        fingerprint: format!("pagoda-{}", env!("CARGO_PKG_VERSION")),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, model = %state.model_name, "listening");
        let keys = ApiKeys(
            args.api_keys
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
        );
        if !keys.0.is_empty() {
            tracing::info!(keys = keys.0.len(), "API keys required on /v1");
        }
        axum::serve(listener, router(state, keys, cors))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
}
