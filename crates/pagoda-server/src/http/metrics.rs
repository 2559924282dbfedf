//! Prometheus metrics: what the server records as requests pass (HTTP
//! statuses, token counts, time to first token, inter-token latency,
//! end-to-end latency) and the engine's gauges read at scrape time (queue
//! length, running sequences, KV blocks, prefix-cache hit rate). Served as
//! text on `GET /metrics` ([`crate::http::metrics_endpoint`]).

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pagoda_engine::EngineStats;

/// Latency buckets in seconds, from 5 ms to 10 minutes.
const LATENCY_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
    160.0, 600.0,
];

/// The process-wide Prometheus registry.
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the global recorder (once per process) and describes every metric.
    pub fn install() -> anyhow::Result<Self> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
            .install_recorder()?;
        describe();
        metrics::gauge!("pagoda_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Ok(Self { handle })
    }

    /// The metrics as Prometheus text, with the engine's gauges as of now.
    pub fn render(&self, engine: Option<EngineStats>) -> String {
        metrics::gauge!("pagoda_model_loaded").set(if engine.is_some() { 1.0 } else { 0.0 });
        if let Some(s) = engine {
            metrics::gauge!("pagoda_num_requests_waiting").set(s.waiting as f64);
            metrics::gauge!("pagoda_num_requests_running").set(s.running as f64);
            metrics::gauge!("pagoda_kv_blocks_used").set(s.blocks_used as f64);
            metrics::gauge!("pagoda_kv_blocks_total").set(s.blocks_total as f64);
            metrics::gauge!("pagoda_kv_cache_usage_ratio")
                .set(ratio(s.blocks_used as u64, s.blocks_total as u64));
            metrics::gauge!("pagoda_step_prompt_budget").set(s.prompt_budget as f64);
            metrics::gauge!("pagoda_kv_window_blocks_used").set(s.window_blocks_used as f64);
            metrics::gauge!("pagoda_kv_window_blocks_total").set(s.window_blocks_total as f64);
            metrics::counter!("pagoda_prefix_cache_hits_total").absolute(s.prefix_hits);
            metrics::counter!("pagoda_prefix_cache_queries_total")
                .absolute(s.prefix_hits + s.prefix_misses);
            metrics::gauge!("pagoda_prefix_cache_hit_rate")
                .set(ratio(s.prefix_hits, s.prefix_hits + s.prefix_misses));
            metrics::counter!("pagoda_generation_tokens_total").absolute(s.generated_tokens);
            metrics::counter!("pagoda_tokens_computed_total").absolute(s.computed_tokens);
            metrics::counter!("pagoda_preemptions_total").absolute(s.preemptions);
            metrics::counter!("pagoda_engine_steps_total").absolute(s.steps);
            metrics::gauge!("pagoda_engine_overhead_ratio").set(if s.step_micros > 0 {
                1.0 - s.forward_micros as f64 / s.step_micros as f64
            } else {
                0.0
            });
        }
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "pagoda_build_info",
        "pagoda's version (the value is always 1)."
    );
    describe_gauge!(
        "pagoda_model_loaded",
        "1 once the model is loaded and served."
    );
    describe_counter!(
        "pagoda_http_requests_total",
        "HTTP requests answered, by route and status."
    );
    describe_gauge!(
        "pagoda_num_requests_waiting",
        "Sequences waiting for the engine."
    );
    describe_gauge!(
        "pagoda_num_requests_running",
        "Sequences the engine is running."
    );
    describe_gauge!(
        "pagoda_kv_blocks_used",
        "KV-cache blocks held by sequences."
    );
    describe_gauge!("pagoda_kv_blocks_total", "KV-cache blocks in the pool.");
    describe_gauge!(
        "pagoda_step_prompt_budget",
        "Prompt tokens the last engine step could take (sized to the inter-token target, or the fixed step budget)."
    );
    describe_gauge!(
        "pagoda_kv_window_blocks_used",
        "Window-pool blocks held by sequences (the sliding-window layers' own pool, Gemma 3; 0 without one)."
    );
    describe_gauge!(
        "pagoda_kv_window_blocks_total",
        "Blocks in the window pool of the sliding-window layers (0: no window pool)."
    );
    describe_gauge!(
        "pagoda_kv_cache_bytes_per_token",
        Unit::Bytes,
        "Bytes one token takes in the KV cache, all layers (the compressed latent for MLA models)."
    );
    describe_gauge!(
        "pagoda_kv_cache_multi_head_bytes_per_token",
        Unit::Bytes,
        "Bytes one token would take with plain per-head K and V for the same model."
    );
    describe_gauge!(
        "pagoda_kv_cache_usage_ratio",
        "Fraction of the KV pool held by sequences."
    );
    describe_counter!(
        "pagoda_prefix_cache_hits_total",
        "Prompt blocks found in the prefix cache."
    );
    describe_counter!(
        "pagoda_prefix_cache_queries_total",
        "Prompt blocks looked up in the prefix cache."
    );
    describe_gauge!(
        "pagoda_prefix_cache_hit_rate",
        "Prefix-cache hits over lookups since start."
    );
    describe_counter!(
        "pagoda_prompt_tokens_total",
        "Prompt tokens of accepted requests."
    );
    describe_counter!(
        "pagoda_tokens_computed_total",
        "Tokens fed through the model: prompt chunks and decode steps (prefix-cache hits excluded, recomputation included)."
    );
    describe_counter!("pagoda_generation_tokens_total", "Tokens generated.");
    describe_counter!(
        "pagoda_reasoning_tokens_total",
        "Generated tokens of reasoning models' thinking blocks (tags included), of finished requests."
    );
    describe_counter!(
        "pagoda_preemptions_total",
        "Sequences preempted for KV space."
    );
    describe_counter!("pagoda_engine_steps_total", "Engine steps run.");
    describe_gauge!(
        "pagoda_engine_overhead_ratio",
        "Share of engine step time spent outside the model's forward pass (scheduling, sampling, events)."
    );
    describe_counter!(
        "pagoda_requests_finished_total",
        "Generations ended, by outcome (completed, timeout, aborted, failed)."
    );
    describe_histogram!(
        "pagoda_time_to_first_token_seconds",
        Unit::Seconds,
        "From a request's arrival to its first generated token."
    );
    describe_histogram!(
        "pagoda_inter_token_latency_seconds",
        Unit::Seconds,
        "Between consecutive tokens of one choice."
    );
    describe_histogram!(
        "pagoda_e2e_request_latency_seconds",
        Unit::Seconds,
        "From a generation's arrival to its end, whatever the outcome."
    );
}

/// Records what the served model's KV cache stores per token, and what
/// plain multi-head K/V would take for the same model (they differ for
/// multi-head latent attention).
pub fn kv_layout(layout: pagoda_models::KvLayout) {
    metrics::gauge!("pagoda_kv_cache_bytes_per_token").set(layout.bytes_per_token() as f64);
    metrics::gauge!("pagoda_kv_cache_multi_head_bytes_per_token")
        .set(layout.multi_head_bytes_per_token() as f64);
}

/// Counts a request's prompt tokens when it is accepted.
pub fn prompt_tokens(n: usize) {
    metrics::counter!("pagoda_prompt_tokens_total").increment(n as u64);
}

/// Records the time to a request's first token.
pub fn time_to_first_token(d: Duration) {
    metrics::histogram!("pagoda_time_to_first_token_seconds").record(d.as_secs_f64());
}

/// Records the gap between two tokens of one choice.
pub fn inter_token_latency(d: Duration) {
    metrics::histogram!("pagoda_inter_token_latency_seconds").record(d.as_secs_f64());
}

/// Records a finished request: its outcome, end-to-end latency and the
/// tokens its choices spent thinking.
pub fn request_finished(
    outcome: crate::output::label::Outcome,
    total: Duration,
    reasoning_tokens: usize,
) {
    metrics::counter!("pagoda_requests_finished_total", "outcome" => outcome.name()).increment(1);
    metrics::counter!("pagoda_reasoning_tokens_total").increment(reasoning_tokens as u64);
    metrics::histogram!("pagoda_e2e_request_latency_seconds").record(total.as_secs_f64());
}

/// The label of a request: the pattern of the route the router matched
/// (`/v1/models/{*id}`), or `unmatched` when none did (a 404 from the
/// fallback), so that unknown paths cannot grow the label set. The router
/// is the one list of routes: there is no second one to drift from it.
fn route_label(matched: Option<&MatchedPath>) -> String {
    matched.map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string())
}

/// Counts every answered HTTP request by route and status (401s and 413s
/// included). It runs inside the router (added with `Router::layer`, which
/// wraps each route and the fallback), so the matched route's pattern is in
/// the request's extensions.
pub async fn count_responses(request: Request, next: Next) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    metrics::counter!(
        "pagoda_http_requests_total",
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}
