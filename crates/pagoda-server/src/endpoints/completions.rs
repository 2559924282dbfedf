//! `POST /v1/completions`: one or more prompts (text or token ids), each
//! with `n` choices; choice `i` of prompt `p` is reported as index `p·n + i`.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use pagoda_api::response::{Completion, CompletionChoice, CompletionLogprobs, FinishReason, Usage};
use pagoda_api::{parse_completion, ApiError, Prompt};
use pagoda_engine::sampler::TokenLogprobs;

use crate::capabilities::output_grammar::{compile, output_spec};
use crate::endpoints::engine_request::engine_request;
use crate::endpoints::models::check_model;
use crate::http::auth::RequestId;
use crate::http::errors::{body_rejection, internal, submit_error, HttpError};
use crate::http::sse::{self, json_event};
use crate::http::state::{unix_now, AppState, Ready, SharedState};
use crate::http::tenant::Tenant;
use crate::output::choice::{token_text, ChoiceDelta};
use crate::output::inflight::InFlight;
use crate::output::label::{Endpoint, RequestLabel};

/// The legacy `logprobs` object for `items`, whose text starts at `start`
/// characters into the choice's text.
fn legacy_logprobs(
    state: &AppState,
    start: usize,
    items: &[(String, TokenLogprobs)],
) -> CompletionLogprobs {
    let mut lp = CompletionLogprobs::default();
    let mut offset = start;
    for (token, l) in items {
        lp.text_offset.push(offset);
        offset += token.len();
        lp.tokens.push(token.clone());
        lp.token_logprobs.push(l.logprob);
        lp.top_logprobs.push(
            l.top
                .iter()
                .map(|(id, p)| (token_text(state, *id), *p))
                .collect(),
        );
    }
    lp
}

/// One prompt in flight.
struct Running {
    prompt_text: String,
    run: InFlight,
}

/// Tokenizes text prompts and decodes token prompts (for `echo`).
async fn encode_prompts(
    state: &SharedState,
    prompts: Vec<Prompt>,
) -> Result<Vec<(String, Vec<u32>)>, ApiError> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        prompts
            .into_iter()
            .map(|p| match p {
                Prompt::Text(t) => {
                    let ids = st
                        .text
                        .tokenizer
                        .encode(&t, true)
                        .map_err(|e| internal("tokenizing the prompt", e))?;
                    Ok((t, ids))
                }
                Prompt::Tokens(ids) => {
                    let text = st.text.tokenizer.decode(&ids, false).unwrap_or_default();
                    Ok((text, ids))
                }
            })
            .collect()
    })
    .await
    .map_err(|e| internal("preparing the prompt", e))?
}

/// Handles a text completion, streamed or not.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "openai",
    request_body = pagoda_api::wire::CompletionBody,
    responses(
        (status = 200, description = "The completion; with `stream: true`, server-sent events of `Completion` chunks ending with `data: [DONE]`",
            content((Completion = "application/json"), (crate::http::openapi::SseEvent = "text/event-stream"))),
        crate::http::openapi::GenerationErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn completions(
    Ready(state): Ready,
    Extension(RequestId(request_id)): Extension<RequestId>,
    tenant: Option<Extension<Tenant>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let (arrived, created) = (Instant::now(), unix_now());
    let tenant = tenant.map_or(Tenant(0), |Extension(t)| t);
    let body = body.map_err(body_rejection)?;
    let req = parse_completion(&body)?;
    check_model(&state, req.options.model.as_deref())?;
    let encoded = encode_prompts(&state, req.prompts.clone()).await?;
    let grammar = match output_spec(&req.options.output) {
        Some(spec) => {
            let st = state.clone();
            let compiled = tokio::task::spawn_blocking(move || compile(&st, &spec))
                .await
                .map_err(|e| internal("compiling the output grammar", e))??;
            Some(compiled)
        }
        None => None,
    };
    // The request is admitted or refused as a whole: its sequences must be
    // able to wait together, and every prompt is checked before any is
    // submitted.
    let sequences = encoded.len() * req.options.n;
    state
        .engine
        .limits()
        .check_sequences(req.options.n, sequences)
        .map_err(|e| submit_error(e, "prompt"))?;
    let requests = encoded
        .into_iter()
        .map(|(text, ids)| {
            let request = engine_request(
                &state,
                Endpoint::Completions,
                ids,
                &req.options,
                None,
                grammar.clone(),
                tenant,
            )?;
            Ok((text, request))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut running = Vec::new();
    for (prompt_text, request) in requests {
        let label = RequestLabel {
            request_id: request_id.clone(),
            endpoint: Endpoint::Completions,
        };
        let run = InFlight::submit(
            &state,
            request,
            &req.options.stop,
            None,
            None,
            label,
            arrived,
        )?;
        running.push(Running { prompt_text, run });
    }
    let id = running
        .first()
        .map(|r| r.run.response_id("cmpl"))
        .unwrap_or_default();
    let n = req.options.n;
    let want_logprobs = req.options.logprobs.is_some();
    if req.options.stream {
        let opts = StreamOptions {
            id,
            created,
            n,
            include_usage: req.options.include_usage,
            echo: req.echo,
            logprobs: want_logprobs,
        };
        return Ok(stream_completions(state, running, opts));
    }

    // Every prompt's events are read at once, as they come.
    let collected =
        futures_util::future::try_join_all(running.iter_mut().map(|r| r.run.collect())).await?;
    let mut choices_out = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (p, (r, out)) in running.iter().zip(collected).enumerate() {
        prompt_tokens += r.run.prompt_tokens();
        completion_tokens += r.run.completion_tokens();
        let reasons = r.run.finish_reasons();
        for (i, (reason, (text, lps))) in reasons
            .into_iter()
            .zip(out.texts.into_iter().zip(out.logprobs))
            .enumerate()
        {
            let prefix = if req.echo {
                r.prompt_text.clone()
            } else {
                String::new()
            };
            choices_out.push(CompletionChoice {
                index: p * n + i,
                logprobs: want_logprobs.then(|| legacy_logprobs(&state, prefix.len(), &lps)),
                text: prefix + &text,
                finish_reason: Some(reason.unwrap_or(FinishReason::Stop)),
            });
        }
    }
    Ok(Json(Completion {
        id: &id,
        object: "text_completion",
        created,
        model: &state.identity.model_name,
        system_fingerprint: &state.identity.fingerprint,
        choices: choices_out,
        usage: Some(Usage::new(prompt_tokens, completion_tokens)),
    })
    .into_response())
}

/// What shapes a completion stream.
struct StreamOptions {
    id: String,
    created: u64,
    n: usize,
    include_usage: bool,
    echo: bool,
    logprobs: bool,
}

/// The chunks of one streamed completion (all prompts merged).
struct CompletionStream {
    state: SharedState,
    opts: StreamOptions,
    created: u64,
    /// Each choice's text length so far (the `text_offset` of its next token).
    offsets: Vec<usize>,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl CompletionStream {
    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Event {
        json_event(&Completion {
            id: &self.opts.id,
            object: "text_completion",
            created: self.created,
            model: &self.state.identity.model_name,
            system_fingerprint: &self.state.identity.fingerprint,
            choices,
            usage,
        })
    }

    /// The chunk for one choice's delta, if it carries anything.
    fn delta_chunk(&mut self, index: usize, delta: ChoiceDelta) -> Option<Event> {
        if delta.text.is_empty() && delta.finish_reason.is_none() && delta.logprobs.is_empty() {
            return None;
        }
        let start = self.offsets[index];
        self.offsets[index] += delta.text.len();
        let logprobs = (self.opts.logprobs && !delta.logprobs.is_empty())
            .then(|| legacy_logprobs(&self.state, start, &delta.logprobs));
        let choice = CompletionChoice {
            index,
            text: delta.text,
            logprobs,
            finish_reason: delta.finish_reason,
        };
        Some(self.chunk(vec![choice], None))
    }
}

/// What one prompt's run yields to the merged stream.
enum Item {
    Delta(usize, ChoiceDelta),
    Finished { prompt: usize, completion: usize },
    Failed(ApiError),
}

fn stream_completions(state: SharedState, running: Vec<Running>, opts: StreamOptions) -> Response {
    let n = opts.n;
    let mut s = CompletionStream {
        state,
        created: opts.created,
        offsets: vec![0; running.len() * n],
        prompt_tokens: 0,
        completion_tokens: 0,
        opts,
    };
    let mut opening = Vec::new();
    if s.opts.echo {
        for (p, r) in running.iter().enumerate() {
            for i in 0..n {
                let c = CompletionChoice {
                    index: p * n + i,
                    text: r.prompt_text.clone(),
                    logprobs: None,
                    finish_reason: None,
                };
                s.offsets[p * n + i] = r.prompt_text.len();
                opening.push(s.chunk(vec![c], None));
            }
        }
    }
    // Each prompt's run as a stream of items, merged as they come.
    let runs = running.into_iter().enumerate().map(|(p, r)| {
        futures_util::stream::unfold(Some(r.run), move |run| async move {
            let mut run = run?;
            match run.next().await {
                Ok(Some((i, delta))) => Some((Item::Delta(p * n + i, delta), Some(run))),
                Ok(None) => {
                    let item = Item::Finished {
                        prompt: run.prompt_tokens(),
                        completion: run.completion_tokens(),
                    };
                    Some((item, None))
                }
                Err(e) => Some((Item::Failed(e), None)),
            }
        })
        .boxed()
    });
    let total = runs.len();
    let merged = futures_util::stream::select_all(runs);
    // Ends right after `[DONE]`: dropping the merged runs aborts what is left.
    let body = futures_util::stream::unfold(Some((merged, s, 0usize)), move |driver| async move {
        let (mut merged, mut s, mut finished) = driver?;
        let mut out = Vec::new();
        let mut ended = false;
        match merged.next().await? {
            Item::Delta(index, delta) => out.extend(s.delta_chunk(index, delta)),
            Item::Finished { prompt, completion } => {
                s.prompt_tokens += prompt;
                s.completion_tokens += completion;
                finished += 1;
                if finished == total {
                    let usage = s.opts.include_usage.then(|| {
                        let usage = Usage::new(s.prompt_tokens, s.completion_tokens);
                        s.chunk(Vec::new(), Some(usage))
                    });
                    out.extend(sse::finish(usage));
                    ended = true;
                }
            }
            Item::Failed(e) => {
                out.extend(sse::fail(&e));
                ended = true;
            }
        }
        let next = (!ended).then_some((merged, s, finished));
        Some((out, next))
    })
    .flat_map(futures_util::stream::iter);
    let stream = futures_util::stream::iter(opening)
        .chain(body)
        .map(Ok::<Event, Infallible>);
    Sse::new(stream).into_response()
}
