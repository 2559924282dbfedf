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
    ChatLogprobs, FinishReason, FunctionCallDelta, TokenLogprob, ToolCallDelta, TopLogprob, Usage,
};
use pagoda_api::{parse_chat, ApiError, ValidChat};
use pagoda_engine::sampler::TokenLogprobs;
use pagoda_engine::Grammar;
use pagoda_models::RenderOptions;

use crate::capabilities::output_grammar::{chat_spec, compile};
use crate::endpoints::chat_prompt::chat_prompt;
use crate::endpoints::engine_request::engine_request;
use crate::endpoints::models::check_model;
use crate::http::auth::RequestId;
use crate::http::errors::{body_rejection, internal, HttpError};
use crate::http::sse::{self, json_event};
use crate::http::state::{unix_now, AppState, Ready, SharedState};
use crate::http::tenant::Tenant;
use crate::output::choice::{token_text, CallPiece};
use crate::output::inflight::{Collected, InFlight};
use crate::output::label::{Endpoint, RequestLabel};
use crate::output::tool_calls::ToolCallParser;

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

/// A chat request made ready for the engine: its prompt (text and ids)
/// and the grammar of its output, if any.
struct Prepared {
    text: String,
    ids: Vec<u32>,
    grammar: Option<Grammar>,
}

/// Renders the conversation (and its tools) with the model's chat template,
/// tokenizes it and compiles the output grammar, off the async threads.
async fn prepare(state: &SharedState, req: &ValidChat) -> Result<Prepared, ApiError> {
    if state.text.chat_template.is_none() {
        return Err(ApiError::invalid(
            "messages",
            "this model ships no chat template; use /v1/completions",
        ));
    }
    let caps = &state.capabilities;
    let prompt = chat_prompt(req, caps.tool_format, caps.template);
    let grammar = chat_spec(
        &req.options.output,
        &req.tools,
        state.capabilities.tool_format,
    );
    let extra = req.template_kwargs.clone();
    let st = state.clone();
    tokio::task::spawn_blocking(move || -> Result<Prepared, ApiError> {
        let template = st
            .text
            .chat_template
            .as_ref()
            .ok_or_else(|| internal("rendering", "the chat template is gone"))?;
        let text = template
            .render(
                &prompt.messages,
                &RenderOptions {
                    add_generation_prompt: true,
                    tools: prompt.tools,
                    extra,
                },
            )
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        let ids = st
            .text
            .tokenizer
            .encode(&text, false)
            .map_err(|e| internal("tokenizing the prompt", e))?;
        let grammar = grammar.map(|g| compile(&st, &g)).transpose()?;
        Ok(Prepared { text, ids, grammar })
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
            content((ChatCompletion = "application/json"), (crate::http::openapi::SseEvent = "text/event-stream"))),
        crate::http::openapi::GenerationErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn chat_completions(
    Ready(state): Ready,
    Extension(RequestId(request_id)): Extension<RequestId>,
    tenant: Option<Extension<Tenant>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let (arrived, created) = (Instant::now(), unix_now());
    let tenant = tenant.map_or(Tenant(0), |Extension(t)| t);
    let body = body.map_err(body_rejection)?;
    let req = parse_chat(&body)?;
    check_model(&state, req.options.model.as_deref())?;
    let Prepared {
        text: prompt_text,
        ids: prompt,
        grammar,
    } = prepare(&state, &req).await?;
    // A reasoning model's thinking is split out, and bounded when asked;
    // with a grammar it is tracked, so that the grammar shapes the answer.
    let reasoning = state.capabilities.reasoning.as_ref().map(|r| {
        let inside = r.starts_inside(&prompt_text);
        let budget = r
            .budget(req.reasoning)
            .or(grammar.is_some().then_some(usize::MAX));
        (r.parser(inside), budget.map(|b| r.limit(inside, b)))
    });
    let (parser, limit) = reasoning.unzip();
    let request = engine_request(
        &state,
        Endpoint::Chat,
        prompt,
        &req.options,
        limit.flatten(),
        grammar,
        tenant,
    )?;
    let label = RequestLabel {
        request_id,
        endpoint: Endpoint::Chat,
    };
    // Tool calls are read from the answer; a forced call is well formed
    // (its grammar saw to it) and streams as it is written.
    let tools = req.tools.calls_possible().then(|| {
        let names = req.tools.functions.iter().map(|f| f.name.clone()).collect();
        let most = if req.tools.parallel { usize::MAX } else { 1 };
        ToolCallParser::new(
            state.capabilities.tool_format,
            names,
            req.tools.calls_forced(),
        )
        .at_most(most)
    });
    let mut run = InFlight::submit(
        &state,
        request,
        &req.options.stop,
        parser,
        tools,
        label,
        arrived,
    )?;
    let id = run.response_id("chatcmpl");
    if req.options.stream {
        let include_usage = req.options.include_usage;
        return Ok(stream_chat(state, run, id, created, include_usage));
    }

    let Collected {
        texts,
        reasoning,
        logprobs,
        calls,
    } = run.collect().await?;
    let usage = usage(&state, &run);
    let body = ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model: state.identity.model_name.clone(),
        system_fingerprint: state.identity.fingerprint.clone(),
        choices: run
            .finish_reasons()
            .into_iter()
            .zip(texts)
            .zip(reasoning)
            .zip(logprobs)
            .zip(calls)
            .enumerate()
            .map(
                |(index, ((((reason, content), reasoning), lp), calls))| ChatChoice {
                    index,
                    message: AssistantMessage {
                        role: "assistant",
                        // A turn of calls alone has null content, as OpenAI's.
                        content: (calls.is_empty() || !content.trim().is_empty())
                            .then_some(content),
                        refusal: None,
                        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                        tool_calls: (!calls.is_empty()).then_some(calls),
                    },
                    logprobs: req.options.logprobs.map(|_| chat_logprobs(&state, lp)),
                    finish_reason: reason.unwrap_or(FinishReason::Stop),
                },
            )
            .collect(),
        usage,
    };
    Ok(Json(body).into_response())
}

/// A request's token counts; a reasoning model's show its thinking tokens.
fn usage(state: &AppState, run: &InFlight) -> Usage {
    let usage = Usage::new(run.prompt_tokens(), run.completion_tokens());
    match state.capabilities.reasoning {
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
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.state.identity.model_name,
            system_fingerprint: &self.state.identity.fingerprint,
            choices,
            usage,
        })
    }

    fn choice_chunk(
        &self,
        index: usize,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> Event {
        let choice = ChatChunkChoice {
            index,
            delta,
            logprobs,
            finish_reason,
        };
        self.chunk(vec![choice], None)
    }

    async fn next_events(&mut self) -> Vec<Event> {
        if !self.started {
            self.started = true;
            // A reasoning model's first text is thinking: no empty content
            // ahead of it.
            let content = self
                .state
                .capabilities
                .reasoning
                .is_none()
                .then(String::new);
            return (0..self.run.num_choices())
                .map(|index| {
                    let delta = ChatDelta {
                        role: Some("assistant"),
                        content: content.clone(),
                        ..ChatDelta::default()
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
                // One chunk per piece: a call's head, then its arguments.
                for piece in delta.calls {
                    let d = ChatDelta {
                        tool_calls: Some(vec![call_delta(piece)]),
                        ..ChatDelta::default()
                    };
                    out.push(self.choice_chunk(index, d, None, None));
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

/// A call piece as a stream chunk carries it.
fn call_delta(piece: CallPiece) -> ToolCallDelta {
    let (id, name) = piece.head.unzip();
    ToolCallDelta {
        index: piece.index,
        kind: id.as_ref().map(|_| "function"),
        id,
        function: FunctionCallDelta {
            name,
            arguments: piece.arguments,
        },
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
