//! `POST /v1/completions`: one or more prompts (text or token ids), each
//! with `n` choices; choice `i` of prompt `p` is reported as index `p·n + i`.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use pagoda_api::response::{Completion, CompletionChoice, CompletionLogprobs, Usage};
use pagoda_api::{parse_completion, ApiError, Prompt};
use pagoda_engine::sampler::TokenLogprobs;
use pagoda_engine::EngineEvent;

use crate::api_error::{body_rejection, internal, submit_error, HttpError};
use crate::generation::{apply_event, engine_request, ChoiceDelta, ChoiceOutput};
use crate::models::check_model;
use crate::state::{unix_now, AppState, SharedState};

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
                .map(|(id, p)| {
                    (
                        state.tokenizer.decode(&[*id], false).unwrap_or_default(),
                        *p,
                    )
                })
                .collect(),
        );
    }
    lp
}

/// One prompt in flight.
struct Running {
    prompt_text: String,
    prompt_tokens: usize,
    events: flume::Receiver<EngineEvent>,
    choices: Vec<ChoiceOutput>,
}

/// Handles a text completion, streamed or not.
pub async fn completions(
    State(state): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = body.map_err(body_rejection)?;
    let req = parse_completion(&body)?;
    check_model(&state, req.options.model.as_deref())?;
    let st = state.clone();
    let prompts = req.prompts.clone();
    let encoded =
        tokio::task::spawn_blocking(move || -> Result<Vec<(String, Vec<u32>)>, ApiError> {
            prompts
                .into_iter()
                .map(|p| match p {
                    Prompt::Text(t) => {
                        let ids = st
                            .tokenizer
                            .encode(&t, true)
                            .map_err(|e| internal("tokenizing the prompt", e))?;
                        Ok((t, ids))
                    }
                    Prompt::Tokens(ids) => {
                        let text = st.tokenizer.decode(&ids, false).unwrap_or_default();
                        Ok((text, ids))
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| internal("preparing the prompt", e))??;
    let mut running = Vec::new();
    for (prompt_text, ids) in encoded {
        let request = engine_request(&state, ids, &req.options)?;
        let prompt_tokens = request.prompt.len();
        let stream = state.engine.submit(request).map_err(submit_error)?;
        running.push(Running {
            prompt_text,
            prompt_tokens,
            events: stream.events,
            choices: (0..req.options.n)
                .map(|_| ChoiceOutput::new(req.options.stop.clone()))
                .collect(),
        });
    }
    let id = format!(
        "cmpl-{:016x}",
        unix_now() ^ (running.len() as u64).rotate_left(40) ^ body.len() as u64
    );
    let n = req.options.n;
    let prompt_tokens: usize = running.iter().map(|r| r.prompt_tokens).sum();
    let want_logprobs = req.options.logprobs.is_some();
    if req.options.stream {
        return Ok(stream_completions(
            state,
            running,
            id,
            n,
            prompt_tokens,
            req.options.include_usage,
            req.echo,
        ));
    }

    let mut choices_out = Vec::new();
    let mut completion_tokens = 0;
    for (p, mut r) in running.into_iter().enumerate() {
        let mut texts = vec![String::new(); n];
        let mut lps: Vec<Vec<(String, TokenLogprobs)>> = vec![Vec::new(); n];
        while r.choices.iter().any(|c| c.finish_reason.is_none()) {
            let event = r
                .events
                .recv_async()
                .await
                .map_err(|_| internal("generating", "the engine dropped the request"))?;
            if let Some((i, delta)) = apply_event(&state, &mut r.choices, event)? {
                texts[i].push_str(&delta.text);
                lps[i].extend(delta.logprobs);
            }
        }
        for (i, (c, text)) in r.choices.iter().zip(texts).enumerate() {
            completion_tokens += c.tokens;
            let prefix = if req.echo {
                r.prompt_text.clone()
            } else {
                String::new()
            };
            choices_out.push(CompletionChoice {
                index: p * n + i,
                logprobs: want_logprobs.then(|| legacy_logprobs(&state, prefix.len(), &lps[i])),
                text: prefix + &text,
                finish_reason: Some(c.finish_reason.unwrap_or("stop").to_string()),
            });
        }
    }
    Ok(Json(Completion {
        id,
        object: "text_completion",
        created: unix_now(),
        model: state.model_name.clone(),
        system_fingerprint: state.fingerprint.clone(),
        choices: choices_out,
        usage: Some(Usage::new(prompt_tokens, completion_tokens)),
    })
    .into_response())
}

fn chunk(
    state: &AppState,
    id: &str,
    choices: Vec<CompletionChoice>,
    usage: Option<Usage>,
) -> Event {
    let c = Completion {
        id: id.to_string(),
        object: "text_completion",
        created: unix_now(),
        model: state.model_name.clone(),
        system_fingerprint: state.fingerprint.clone(),
        choices,
        usage,
    };
    Event::default().data(serde_json::to_string(&c).unwrap_or_default())
}

fn stream_completions(
    state: SharedState,
    running: Vec<Running>,
    id: String,
    n: usize,
    prompt_tokens: usize,
    include_usage: bool,
    echo: bool,
) -> Response {
    let mut opening = Vec::new();
    if echo {
        for (p, r) in running.iter().enumerate() {
            for i in 0..n {
                let c = CompletionChoice {
                    index: p * n + i,
                    text: r.prompt_text.clone(),
                    logprobs: None,
                    finish_reason: None,
                };
                opening.push(chunk(&state, &id, vec![c], None));
            }
        }
    }
    let (mut choice_sets, receivers): (Vec<Vec<ChoiceOutput>>, Vec<_>) =
        running.into_iter().map(|r| (r.choices, r.events)).unzip();
    let merged = futures_util::stream::select_all(
        receivers
            .into_iter()
            .enumerate()
            .map(|(p, rx)| rx.into_stream().map(move |e| (p, e)).boxed()),
    );
    let total = choice_sets.len() * n;
    let st = state.clone();
    let body = merged
        .scan(0usize, move |finished, (p, event)| {
            let mut out = Vec::new();
            match apply_event(&st, &mut choice_sets[p], event) {
                Ok(Some((
                    i,
                    ChoiceDelta {
                        text,
                        finish_reason,
                        ..
                    },
                ))) => {
                    if !text.is_empty() || finish_reason.is_some() {
                        let c = CompletionChoice {
                            index: p * n + i,
                            text,
                            logprobs: None,
                            finish_reason: finish_reason.map(str::to_string),
                        };
                        out.push(chunk(&st, &id, vec![c], None));
                    }
                    if finish_reason.is_some() {
                        *finished += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    out.push(
                        Event::default()
                            .data(serde_json::to_string(&e.envelope()).unwrap_or_default()),
                    );
                    out.push(Event::default().data("[DONE]"));
                    return std::future::ready(Some((out, true)));
                }
            }
            if *finished == total {
                if include_usage {
                    let completion = choice_sets.iter().flatten().map(|c| c.tokens).sum();
                    out.push(chunk(
                        &st,
                        &id,
                        Vec::new(),
                        Some(Usage::new(prompt_tokens, completion)),
                    ));
                }
                out.push(Event::default().data("[DONE]"));
                return std::future::ready(Some((out, true)));
            }
            std::future::ready(Some((out, false)))
        })
        .scan(false, |ended, (events, last)| {
            if *ended {
                return std::future::ready(None);
            }
            *ended = last;
            std::future::ready(Some(events))
        })
        .flat_map(futures_util::stream::iter);
    let stream = futures_util::stream::iter(opening)
        .chain(body)
        .map(Ok::<Event, Infallible>);
    Sse::new(stream).into_response()
}
