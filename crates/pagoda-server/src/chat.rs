//! `POST /v1/chat/completions`.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use pagoda_api::response::{
    AssistantMessage, ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, ChatDelta,
    ChatLogprobs, TokenLogprob, TopLogprob, Usage,
};
use pagoda_api::{parse_chat, ApiError, ValidChat};
use pagoda_engine::sampler::TokenLogprobs;
use pagoda_models::RenderOptions;

use crate::api_error::{body_rejection, internal, HttpError};
use crate::auth::RequestId;
use crate::generation::{engine_request, token_text};
use crate::inflight::{Collected, InFlight, RequestLabel};
use crate::models::check_model;
use crate::sse::{self, json_event};
use crate::state::{unix_now, AppState, Ready, SharedState};

fn template_messages(req: &ValidChat) -> Vec<serde_json::Value> {
    req.messages
        .iter()
        .map(|m| {
            let mut v = serde_json::json!({"role": m.role.template_name(), "content": m.content});
            if let Some(name) = &m.name {
                v["name"] = name.clone().into();
            }
            if let Some(calls) = &m.tool_calls {
                v["tool_calls"] = calls.clone();
            }
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = id.clone().into();
            }
            if let Some(r) = &m.reasoning_content {
                v["reasoning_content"] = r.clone().into();
            }
            v
        })
        .collect()
}

fn chat_logprobs(state: &AppState, items: Vec<(String, TokenLogprobs)>) -> ChatLogprobs {
    ChatLogprobs {
        content: items
            .into_iter()
            .map(|(token, lp)| TokenLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: lp.logprob,
                top_logprobs: lp
                    .top
                    .into_iter()
                    .map(|(id, logprob)| {
                        let token = token_text(state, id);
                        TopLogprob {
                            bytes: token.as_bytes().to_vec(),
                            token,
                            logprob,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Renders the conversation with the model's chat template and tokenizes
/// it: the prompt's text and its token ids.
async fn prompt_tokens(
    state: &SharedState,
    req: &ValidChat,
) -> Result<(String, Vec<u32>), ApiError> {
    let messages = template_messages(req);
    let extra = req.template_kwargs.clone();
    let st = state.clone();
    tokio::task::spawn_blocking(move || -> Result<(String, Vec<u32>), ApiError> {
        let template = st.chat_template.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "messages",
                "this model ships no chat template; use /v1/completions",
            )
        })?;
        let text = template
            .render(
                &messages,
                &RenderOptions {
                    add_generation_prompt: true,
                    extra,
                    ..RenderOptions::default()
                },
            )
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        let ids = st
            .tokenizer
            .encode(&text, false)
            .map_err(|e| internal("tokenizing the prompt", e))?;
        Ok((text, ids))
    })
    .await
    .map_err(|e| internal("preparing the prompt", e))?
}

/// Handles a chat completion, streamed or not.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = pagoda_api::wire::ChatCompletionBody,
    responses(
        (status = 200, description = "The completion; with `stream: true`, server-sent events of `ChatChunk`s ending with `data: [DONE]`",
            content((ChatCompletion = "application/json"), (String = "text/event-stream"))),
        crate::openapi::GenerationErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn chat_completions(
    Ready(state): Ready,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let (arrived, created) = (Instant::now(), unix_now());
    let body = body.map_err(body_rejection)?;
    let req = parse_chat(&body)?;
    check_model(&state, req.options.model.as_deref())?;
    let (prompt_text, prompt) = prompt_tokens(&state, &req).await?;
    // A reasoning model's thinking is split out, and bounded when asked.
    let reasoning = state.reasoning.as_ref().map(|r| {
        let inside = r.starts_inside(&prompt_text);
        let limit = r.budget(req.reasoning).map(|b| r.limit(inside, b));
        (r.parser(inside), limit)
    });
    let (parser, limit) = reasoning.unzip();
    let request = engine_request(&state, prompt, &req.options, limit.flatten())?;
    let label = RequestLabel {
        request_id,
        endpoint: "chat",
    };
    let mut run = InFlight::submit(&state, request, &req.options.stop, parser, label, arrived)?;
    let id = run.response_id("chatcmpl");
    if req.options.stream {
        let include_usage = req.options.include_usage;
        return Ok(stream_chat(state, run, id, created, include_usage));
    }

    let Collected {
        texts,
        reasoning,
        logprobs,
    } = run.collect().await?;
    let usage = usage(&state, &run);
    let body = ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model: state.model_name.clone(),
        system_fingerprint: state.fingerprint.clone(),
        choices: run
            .finish_reasons()
            .into_iter()
            .zip(texts)
            .zip(reasoning)
            .zip(logprobs)
            .enumerate()
            .map(|(index, (((reason, content), reasoning), lp))| ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content,
                    reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                },
                logprobs: req.options.logprobs.map(|_| chat_logprobs(&state, lp)),
                finish_reason: reason.unwrap_or("stop").to_string(),
            })
            .collect(),
        usage,
    };
    Ok(Json(body).into_response())
}

/// A request's token counts; a reasoning model's show its thinking tokens.
fn usage(state: &AppState, run: &InFlight) -> Usage {
    let usage = Usage::new(run.prompt_tokens(), run.completion_tokens());
    match state.reasoning {
        Some(_) => usage.with_reasoning_tokens(run.reasoning_tokens()),
        None => usage,
    }
}

/// The chunks of one streamed chat completion.
struct ChatStream {
    state: SharedState,
    run: InFlight,
    id: String,
    created: u64,
    include_usage: bool,
    started: bool,
    done: bool,
}

impl ChatStream {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Event {
        json_event(&ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.state.model_name.clone(),
            system_fingerprint: self.state.fingerprint.clone(),
            choices,
            usage,
        })
    }

    fn choice_chunk(
        &self,
        index: usize,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<&str>,
    ) -> Event {
        let choice = ChatChunkChoice {
            index,
            delta,
            logprobs,
            finish_reason: finish_reason.map(str::to_string),
        };
        self.chunk(vec![choice], None)
    }

    async fn next_events(&mut self) -> Vec<Event> {
        if !self.started {
            self.started = true;
            // A reasoning model's first text is thinking: no empty content
            // ahead of it.
            let content = self.state.reasoning.is_none().then(String::new);
            return (0..self.run.num_choices())
                .map(|index| {
                    let delta = ChatDelta {
                        role: Some("assistant"),
                        content: content.clone(),
                        reasoning_content: None,
                    };
                    self.choice_chunk(index, delta, None, None)
                })
                .collect();
        }
        let mut out = Vec::new();
        match self.run.next().await {
            Ok(Some((index, delta))) => {
                let mut logprobs = (!delta.logprobs.is_empty())
                    .then(|| chat_logprobs(&self.state, delta.logprobs));
                // Thinking goes first, in chunks of its own, and carries the
                // log-probabilities of the block's tokens.
                let reasoning_lp = if delta.reasoning_token {
                    logprobs.take()
                } else {
                    None
                };
                if !delta.reasoning.is_empty() || reasoning_lp.is_some() {
                    let d = ChatDelta {
                        reasoning_content: Some(delta.reasoning),
                        ..ChatDelta::default()
                    };
                    out.push(self.choice_chunk(index, d, reasoning_lp, None));
                }
                if !delta.text.is_empty() || logprobs.is_some() {
                    let d = ChatDelta {
                        content: Some(delta.text),
                        ..ChatDelta::default()
                    };
                    out.push(self.choice_chunk(index, d, logprobs, None));
                }
                if let Some(reason) = delta.finish_reason {
                    out.push(self.choice_chunk(index, ChatDelta::default(), None, Some(reason)));
                }
            }
            Ok(None) => {
                let usage = self
                    .include_usage
                    .then(|| self.chunk(Vec::new(), Some(usage(&self.state, &self.run))));
                out.extend(sse::finish(usage));
                self.done = true;
            }
            Err(e) => {
                out.extend(sse::fail(&e));
                self.done = true;
            }
        }
        out
    }
}

fn stream_chat(
    state: SharedState,
    run: InFlight,
    id: String,
    created: u64,
    include_usage: bool,
) -> Response {
    let s = ChatStream {
        state,
        run,
        id,
        created,
        include_usage,
        started: false,
        done: false,
    };
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        if s.done {
            return None;
        }
        let events = s.next_events().await;
        Some((events, s))
    })
    .flat_map(futures_util::stream::iter)
    .map(Ok::<Event, Infallible>);
    Sse::new(stream).into_response()
}
