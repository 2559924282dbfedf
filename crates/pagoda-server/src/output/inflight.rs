//! One engine request on the server side, from submission to its last
//! choice: reads the engine's events, turns them into text deltas, stops a
//! choice in the engine when a stop string ends it, enforces the request
//! timeout, records the latency metrics and writes the request's log line.
//! Dropping it before the end (the client went away) aborts the request in
//! the engine at its next step.

use std::time::{Duration, Instant};

use pagoda_api::response::{FinishReason, FunctionCall, ToolCall};
use pagoda_api::ApiError;
use pagoda_engine::sampler::TokenLogprobs;
use pagoda_engine::{Admitted, EngineEvent, RequestStream};

use crate::http::errors::{internal, submit_error};
use crate::http::metrics;
use crate::http::state::SharedState;
use crate::output::choice::{apply_event, CallPiece, ChoiceDelta, ChoiceOutput};
use crate::output::label::{Outcome, RequestLabel};
use crate::output::reasoning_parser::ReasoningParser;
use crate::output::tool_calls::ToolCallParser;

/// Every choice's output, read to the end.
#[derive(Debug, Default)]
pub struct Collected {
    /// Each choice's text (its answer, for a reasoning model).
    pub texts: Vec<String>,
    /// Each choice's thinking (empty unless the model reasons).
    pub reasoning: Vec<String>,
    /// Each choice's tokens with their log-probabilities (when asked for).
    pub logprobs: Vec<Vec<(String, TokenLogprobs)>>,
    /// Each choice's tool calls, in order.
    pub calls: Vec<Vec<ToolCall>>,
}

/// Appends call pieces to a choice's calls: a head starts a call, a
/// fragment extends the arguments of the call it names.
fn assemble(calls: &mut Vec<ToolCall>, pieces: Vec<CallPiece>) {
    for piece in pieces {
        if let Some((id, name)) = piece.head {
            calls.push(ToolCall {
                id,
                kind: "function",
                function: FunctionCall {
                    name,
                    arguments: String::new(),
                },
            });
        }
        if let Some(call) = calls.get_mut(piece.index) {
            call.function.arguments.push_str(&piece.arguments);
        }
    }
}

/// A submitted request whose events are being read.
pub struct InFlight {
    state: SharedState,
    stream: RequestStream,
    choices: Vec<ChoiceOutput>,
    prompt_tokens: usize,
    label: RequestLabel,
    arrived: Instant,
    first_token: Option<Instant>,
    last_token: Vec<Option<Instant>>,
    deadline: Option<Instant>,
    /// The server's cut-off at shutdown (see `RequestLimits::cut_off`).
    cut_off: tokio::sync::watch::Receiver<bool>,
    timed_out: bool,
    done: bool,
}

impl InFlight {
    /// Submits `request` (arrived at `arrived`) to the engine; each of its
    /// choices stops at one of `stops`, has its thinking split out by a
    /// copy of `reasoning` and its tool calls read by a copy of `tools`.
    pub fn submit(
        state: &SharedState,
        request: Admitted,
        stops: &[String],
        reasoning: Option<ReasoningParser>,
        tools: Option<ToolCallParser>,
        label: RequestLabel,
        arrived: Instant,
    ) -> Result<Self, ApiError> {
        let n = request.request().n;
        let prompt_tokens = request.request().prompt.len();
        let stream = state
            .engine
            .submit(request)
            .map_err(|e| submit_error(e, label.endpoint.prompt_param()))?;
        metrics::prompt_tokens(prompt_tokens);
        Ok(Self {
            state: state.clone(),
            stream,
            choices: (0..n)
                .map(|_| ChoiceOutput::new(stops.to_vec(), reasoning.clone(), tools.clone()))
                .collect(),
            prompt_tokens,
            label,
            arrived,
            first_token: None,
            last_token: vec![None; n],
            // A timeout too large to represent means no deadline.
            deadline: state
                .limits
                .request_timeout
                .and_then(|t| arrived.checked_add(t)),
            cut_off: state.limits.cut_off.clone(),
            timed_out: false,
            done: false,
        })
    }

    /// A response id, `{prefix}-` and 16 hex digits, unique per server run.
    pub fn response_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:016x}",
            self.stream.id.0 ^ self.state.identity.created.rotate_left(20)
        )
    }

    /// Reads every event to the end: each choice's text and log-probabilities.
    pub async fn collect(&mut self) -> Result<Collected, ApiError> {
        let n = self.choices.len();
        let mut out = Collected {
            texts: vec![String::new(); n],
            reasoning: vec![String::new(); n],
            logprobs: vec![Vec::new(); n],
            calls: vec![Vec::new(); n],
        };
        while let Some((i, delta)) = self.next().await? {
            out.texts[i].push_str(&delta.text);
            out.reasoning[i].push_str(&delta.reasoning);
            out.logprobs[i].extend(delta.logprobs);
            assemble(&mut out.calls[i], delta.calls);
        }
        Ok(out)
    }

    /// Tokens in the prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Tokens generated so far, all choices together.
    pub fn completion_tokens(&self) -> usize {
        self.choices.iter().map(|c| c.tokens).sum()
    }

    /// Tokens spent thinking so far, all choices together.
    pub fn reasoning_tokens(&self) -> usize {
        self.choices.iter().map(|c| c.reasoning_tokens).sum()
    }

    /// Each choice's finish reason (`None` while running).
    pub fn finish_reasons(&self) -> Vec<Option<FinishReason>> {
        self.choices.iter().map(|c| c.finish_reason).collect()
    }

    /// Number of choices.
    pub fn num_choices(&self) -> usize {
        self.choices.len()
    }

    /// The next choice's delta; `Ok(None)` once every choice has finished.
    pub async fn next(&mut self) -> Result<Option<(usize, ChoiceDelta)>, ApiError> {
        loop {
            if self.choices.iter().all(|c| c.finish_reason.is_some()) {
                self.finish(if self.timed_out {
                    Outcome::Timeout
                } else {
                    Outcome::Completed
                });
                return Ok(None);
            }
            if self.timed_out {
                if let Some(i) = self.choices.iter().position(|c| c.finish_reason.is_none()) {
                    let delta =
                        self.choices[i].finish(&self.state.text.tokenizer, FinishReason::Length);
                    return Ok(Some((i, delta)));
                }
            }
            // Checked before reading: a slow reader with events queued is
            // cut too.
            if !self.timed_out && *self.cut_off.borrow() {
                self.time_out(EndedBy::Shutdown);
                continue;
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.time_out(EndedBy::Timeout);
                continue;
            }
            let waited = wait_event(&self.stream.events, self.deadline, &mut self.cut_off).await;
            let event = match waited {
                Waited::Event(event) => event,
                Waited::Deadline => {
                    self.time_out(EndedBy::Timeout);
                    continue;
                }
                Waited::CutOff => {
                    self.time_out(EndedBy::Shutdown);
                    continue;
                }
            };
            let event = event.map_err(|_| {
                self.finish(Outcome::Failed);
                internal("generating", "the engine dropped the request")
            })?;
            let now = Instant::now();
            let is_token = matches!(event, EngineEvent::Token { .. });
            let applied = apply_event(
                &self.state.text.tokenizer,
                &mut self.choices,
                event,
                self.label.endpoint,
            );
            let Some((i, delta)) = applied.inspect_err(|_| self.finish(Outcome::Failed))? else {
                continue;
            };
            if is_token {
                self.note_token(i, now);
            }
            if delta.finish_reason.is_some() {
                // A stop string ended it: the engine need not go on.
                self.stream.cancel_choice(i);
            }
            return Ok(Some((i, delta)));
        }
    }

    fn note_token(&mut self, choice: usize, now: Instant) {
        if self.first_token.is_none() {
            self.first_token = Some(now);
            metrics::time_to_first_token(now - self.arrived);
        }
        if let Some(prev) = self.last_token[choice] {
            metrics::inter_token_latency(now - prev);
        }
        self.last_token[choice] = Some(now);
    }

    /// Ends every unfinished choice with `length` (the timeout, or the
    /// shutdown's cut), cancelling them in the engine.
    fn time_out(&mut self, by: EndedBy) {
        self.timed_out = true;
        for i in 0..self.choices.len() {
            self.stream.cancel_choice(i);
        }
        match by {
            EndedBy::Timeout => tracing::warn!(
                request_id = %self.label.request_id,
                timeout_s = self.state.limits.request_timeout.map(|t| t.as_secs_f64()),
                "request timed out; ending its choices with finish_reason `length`"
            ),
            EndedBy::Shutdown => tracing::warn!(
                request_id = %self.label.request_id,
                "server shutting down; ending the request's choices with finish_reason `length`"
            ),
        }
    }

    /// Records the outcome once: metrics and the request's log line.
    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let total = self.arrived.elapsed();
        metrics::request_finished(outcome, total, self.reasoning_tokens());
        let ttft = self.first_token.map(|t| t - self.arrived);
        tracing::info!(
            request_id = %self.label.request_id,
            endpoint = self.label.endpoint.name(),
            model = %self.state.identity.model_name,
            outcome = outcome.name(),
            prompt_tokens = self.prompt_tokens,
            completion_tokens = self.completion_tokens(),
            reasoning_tokens = self.reasoning_tokens(),
            ttft_ms = ttft.map(millis),
            total_ms = millis(total),
            "generation finished"
        );
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Dropping `stream` aborts the request in the engine.
        self.finish(Outcome::Aborted);
    }
}

/// What ended a request before its choices finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndedBy {
    /// `--request-timeout-secs`.
    Timeout,
    /// The shutdown grace period ran out.
    Shutdown,
}

/// What waiting for a request's next event gave.
enum Waited {
    /// The event (or the engine dropping the request).
    Event(Result<EngineEvent, flume::RecvError>),
    /// The request's deadline passed first.
    Deadline,
    /// The server's cut-off came first.
    CutOff,
}

/// Waits for the next event of `events`, until `deadline` or the cut-off.
async fn wait_event(
    events: &flume::Receiver<EngineEvent>,
    deadline: Option<Instant>,
    cut_off: &mut tokio::sync::watch::Receiver<bool>,
) -> Waited {
    let event = async {
        match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), events.recv_async())
                .await
                .map_or(Waited::Deadline, Waited::Event),
            None => Waited::Event(events.recv_async().await),
        }
    };
    let cut = async {
        // A closed channel (the server's state dropped) never cuts.
        if cut_off.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        () = cut => Waited::CutOff,
        waited = event => waited,
    }
}
