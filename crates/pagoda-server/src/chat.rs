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
use crate::generation::engine_request;
use crate::inflight::{InFlight, RequestLabel};
use crate::models::check_model;
use crate::sse::{error_event, json_event};
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
                        let token = state.tokenizer.decode(&[id], false).unwrap_or_default();
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

/// Renders the conversation with the model's chat template and tokenizes it.
async fn prompt_tokens(state: &SharedState, req: &ValidChat) -> Result<Vec<u32>, ApiError> {
    let messages = template_messages(req);
    let st = state.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<u32>, ApiError> {
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
                    ..RenderOptions::default()
                },
            )
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        st.tokenizer
            .encode(&text, false)
            .map_err(|e| internal("tokenizing the prompt", e))
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
        (status = 400, description = "An invalid field (`param` names it) or a prompt too long for the context", body = pagoda_api::ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = pagoda_api::ErrorEnvelope),
        (status = 404, description = "Unknown model", body = pagoda_api::ErrorEnvelope),
        (status = 413, description = "Body over the size limit", body = pagoda_api::ErrorEnvelope),
        (status = 429, description = "The queue is full; retry after `Retry-After` seconds", body = pagoda_api::ErrorEnvelope),
        (status = 503, description = "The model is still loading", body = pagoda_api::ErrorEnvelope),
    ),
    security((), ("bearer" = [])),
)]
pub async fn chat_completions(
    Ready(state): Ready,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let arrived = Instant::now();
    let body = body.map_err(body_rejection)?;
    let req = parse_chat(&body)?;
    check_model(&state, req.options.model.as_deref())?;
    let prompt = prompt_tokens(&state, &req).await?;
    let request = engine_request(&state, prompt, &req.options)?;
    let label = RequestLabel {
        request_id,
        endpoint: "chat",
    };
    let mut run = InFlight::submit(&state, request, &req.options.stop, label, arrived)?;
    let id = format!("chatcmpl-{:016x}", run.id() ^ state.created.rotate_left(20));
    if req.options.stream {
        return Ok(stream_chat(state, run, id, req.options.include_usage));
    }

    let n = run.num_choices();
    let mut texts = vec![String::new(); n];
    let mut logprobs: Vec<Vec<(String, TokenLogprobs)>> = vec![Vec::new(); n];
    while let Some((i, delta)) = run.next().await? {
        texts[i].push_str(&delta.text);
        logprobs[i].extend(delta.logprobs);
    }
    let body = ChatCompletion {
        id,
        object: "chat.completion",
        created: unix_now(),
        model: state.model_name.clone(),
        system_fingerprint: state.fingerprint.clone(),
        choices: run
            .finish_reasons()
            .into_iter()
            .zip(texts)
            .zip(logprobs)
            .enumerate()
            .map(|(index, ((reason, content), lp))| ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content,
                },
                logprobs: req.options.logprobs.map(|_| chat_logprobs(&state, lp)),
                finish_reason: reason.unwrap_or("stop").to_string(),
            })
            .collect(),
        usage: Usage::new(run.prompt_tokens(), run.completion_tokens()),
    };
    Ok(Json(body).into_response())
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
            return (0..self.run.num_choices())
                .map(|index| {
                    let delta = ChatDelta {
                        role: Some("assistant"),
                        content: Some(String::new()),
                    };
                    self.choice_chunk(index, delta, None, None)
                })
                .collect();
        }
        let mut out = Vec::new();
        match self.run.next().await {
            Ok(Some((index, delta))) => {
                let logprobs = (!delta.logprobs.is_empty())
                    .then(|| chat_logprobs(&self.state, delta.logprobs));
                if !delta.text.is_empty() || logprobs.is_some() {
                    let d = ChatDelta {
                        role: None,
                        content: Some(delta.text),
                    };
                    out.push(self.choice_chunk(index, d, logprobs, None));
                }
                if let Some(reason) = delta.finish_reason {
                    out.push(self.choice_chunk(index, ChatDelta::default(), None, Some(reason)));
                }
            }
            Ok(None) => {
                if self.include_usage {
                    let usage = Usage::new(self.run.prompt_tokens(), self.run.completion_tokens());
                    out.push(self.chunk(Vec::new(), Some(usage)));
                }
                out.push(Event::default().data("[DONE]"));
                self.done = true;
            }
            Err(e) => {
                out.push(error_event(&e));
                out.push(Event::default().data("[DONE]"));
                self.done = true;
            }
        }
        out
    }
}

fn stream_chat(state: SharedState, run: InFlight, id: String, include_usage: bool) -> Response {
    let s = ChatStream {
        state,
        run,
        id,
        created: unix_now(),
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
