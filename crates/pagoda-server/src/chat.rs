//! `POST /v1/chat/completions`.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use pagoda_api::response::{
    AssistantMessage, ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, ChatDelta,
    ChatLogprobs, TokenLogprob, TopLogprob, Usage,
};
use pagoda_api::{parse_chat, ApiError, ValidChat};
use pagoda_engine::sampler::TokenLogprobs;
use pagoda_engine::EngineEvent;
use pagoda_models::RenderOptions;

use crate::api_error::{body_rejection, internal, submit_error, HttpError};
use crate::generation::{apply_event, engine_request, ChoiceOutput};
use crate::models::check_model;
use crate::state::{unix_now, AppState, SharedState};

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

/// Handles a chat completion, streamed or not.
pub async fn chat_completions(
    State(state): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = body.map_err(body_rejection)?;
    let req = parse_chat(&body)?;
    check_model(&state, req.options.model.as_deref())?;
    let messages = template_messages(&req);
    let st = state.clone();
    let prompt = tokio::task::spawn_blocking(move || -> Result<Vec<u32>, ApiError> {
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
    .map_err(|e| internal("preparing the prompt", e))??;
    let request = engine_request(&state, prompt, &req.options)?;
    let prompt_tokens = request.prompt.len();
    let n = request.n;
    let stream = state.engine.submit(request).map_err(submit_error)?;
    let id = format!(
        "chatcmpl-{:016x}",
        stream.id.0 ^ state.created.rotate_left(20)
    );
    let choices: Vec<ChoiceOutput> = (0..n)
        .map(|_| ChoiceOutput::new(req.options.stop.clone()))
        .collect();
    if req.options.stream {
        return Ok(stream_chat(
            state,
            stream.events,
            choices,
            id,
            prompt_tokens,
            req.options.include_usage,
        ));
    }

    let mut texts = vec![String::new(); n];
    let mut logprobs: Vec<Vec<(String, TokenLogprobs)>> = vec![Vec::new(); n];
    let mut choices = choices;
    while choices.iter().any(|c| c.finish_reason.is_none()) {
        let event = stream
            .events
            .recv_async()
            .await
            .map_err(|_| internal("generating", "the engine dropped the request"))?;
        if let Some((i, delta)) = apply_event(&state, &mut choices, event)? {
            texts[i].push_str(&delta.text);
            logprobs[i].extend(delta.logprobs);
        }
    }
    let completion_tokens = choices.iter().map(|c| c.tokens).sum();
    let body = ChatCompletion {
        id,
        object: "chat.completion",
        created: unix_now(),
        model: state.model_name.clone(),
        system_fingerprint: state.fingerprint.clone(),
        choices: choices
            .iter()
            .zip(texts)
            .zip(logprobs)
            .enumerate()
            .map(|(index, ((c, content), lp))| ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content,
                },
                logprobs: req.options.logprobs.map(|_| chat_logprobs(&state, lp)),
                finish_reason: c.finish_reason.unwrap_or("stop").to_string(),
            })
            .collect(),
        usage: Usage::new(prompt_tokens, completion_tokens),
    };
    Ok(Json(body).into_response())
}

struct ChatStream {
    state: SharedState,
    events: flume::Receiver<EngineEvent>,
    choices: Vec<ChoiceOutput>,
    id: String,
    created: u64,
    prompt_tokens: usize,
    include_usage: bool,
    started: bool,
    done: bool,
}

impl ChatStream {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Event {
        let chunk = ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.state.model_name.clone(),
            system_fingerprint: self.state.fingerprint.clone(),
            choices,
            usage,
        };
        Event::default().data(serde_json::to_string(&chunk).unwrap_or_default())
    }

    async fn next_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            for index in 0..self.choices.len() {
                let delta = ChatDelta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                };
                out.push(self.chunk(
                    vec![ChatChunkChoice {
                        index,
                        delta,
                        logprobs: None,
                        finish_reason: None,
                    }],
                    None,
                ));
            }
            return out;
        }
        let event = match self.events.recv_async().await {
            Ok(e) => e,
            Err(_) => {
                let e = internal("generating", "the engine dropped the request");
                out.push(
                    Event::default().data(serde_json::to_string(&e.envelope()).unwrap_or_default()),
                );
                self.done = true;
                return out;
            }
        };
        match apply_event(&self.state, &mut self.choices, event) {
            Ok(Some((index, delta))) => {
                let logprobs = (!delta.logprobs.is_empty())
                    .then(|| chat_logprobs(&self.state, delta.logprobs));
                if !delta.text.is_empty() || logprobs.is_some() {
                    let d = ChatDelta {
                        role: None,
                        content: Some(delta.text),
                    };
                    out.push(self.chunk(
                        vec![ChatChunkChoice {
                            index,
                            delta: d,
                            logprobs,
                            finish_reason: None,
                        }],
                        None,
                    ));
                }
                if let Some(reason) = delta.finish_reason {
                    out.push(self.chunk(
                        vec![ChatChunkChoice {
                            index,
                            delta: ChatDelta::default(),
                            logprobs: None,
                            finish_reason: Some(reason.to_string()),
                        }],
                        None,
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => {
                out.push(
                    Event::default().data(serde_json::to_string(&e.envelope()).unwrap_or_default()),
                );
                self.done = true;
                return out;
            }
        }
        if self.choices.iter().all(|c| c.finish_reason.is_some()) {
            if self.include_usage {
                let completion = self.choices.iter().map(|c| c.tokens).sum();
                out.push(self.chunk(Vec::new(), Some(Usage::new(self.prompt_tokens, completion))));
            }
            out.push(Event::default().data("[DONE]"));
            self.done = true;
        }
        out
    }
}

fn stream_chat(
    state: SharedState,
    events: flume::Receiver<EngineEvent>,
    choices: Vec<ChoiceOutput>,
    id: String,
    prompt_tokens: usize,
    include_usage: bool,
) -> Response {
    let s = ChatStream {
        state,
        events,
        choices,
        id,
        created: unix_now(),
        prompt_tokens,
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
