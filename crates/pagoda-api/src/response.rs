//! Response bodies and stream chunks, in OpenAI's exact shape.

use serde::Serialize;
use utoipa::ToSchema;

/// A breakdown of the generated tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct CompletionTokensDetails {
    /// Tokens of the thinking block, its tags included (all choices).
    pub reasoning_tokens: usize,
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (all choices).
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
    /// The breakdown of `completion_tokens`, for reasoning models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

impl Usage {
    /// Usage from the two counts.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            completion_tokens_details: None,
        }
    }

    /// The same, with this many of the completion tokens spent thinking.
    pub fn with_reasoning_tokens(self, reasoning_tokens: usize) -> Self {
        Self {
            completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens }),
            ..self
        }
    }
}

/// One alternative token and its log-probability (chat).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// Log-probability of one generated token (chat).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely alternatives.
    pub top_logprobs: Vec<TopLogprob>,
}

/// `choices[].logprobs` of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<TokenLogprob>,
}

/// The assistant's message.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The generated text (the answer, for a reasoning model); null when
    /// the turn is only tool calls.
    pub content: Option<String>,
    /// The model's refusal, which OpenAI's schema requires in every message:
    /// always null here (open models refuse in their text).
    pub refusal: Option<String>,
    /// A reasoning model's thinking, apart from the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The functions the model called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// One call in `message.tool_calls`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ToolCall {
    /// The call's id (`call_…`), which the tool's answer quotes.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The function and its arguments.
    pub function: FunctionCall,
}

/// The function of a call.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FunctionCall {
    /// Its name.
    pub name: String,
    /// Its arguments, as a JSON string.
    pub arguments: String,
}

/// A piece of a call in a stream chunk's `delta.tool_calls`: the first
/// carries the id, type and name; the rest, fragments of the arguments.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ToolCallDelta {
    /// Which call of the choice (0-based).
    pub index: usize,
    /// The call's id (first piece only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function` (first piece only).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The name (first piece) or an arguments fragment.
    pub function: FunctionCallDelta,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FunctionCallDelta {
    /// The name (first piece only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the arguments' JSON string.
    pub arguments: String,
}

/// Why a choice ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token, a stop string, or a complete grammar.
    Stop,
    /// `max_tokens` (or the request timeout) was reached.
    Length,
    /// The answer is tool calls.
    ToolCalls,
}

impl FinishReason {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChatChoice {
    /// Its index.
    pub index: usize,
    /// The message.
    pub message: AssistantMessage,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// The body answering `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// Identifies the backend configuration.
    pub system_fingerprint: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// The changed part of a streamed chat message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ChatDelta {
    /// `assistant`, in the first chunk of a choice only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// New thinking text of a reasoning model (before any `content`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// New pieces of tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// One choice in a chat stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChatChunkChoice {
    /// The choice's index.
    pub index: usize,
    /// What changed.
    pub delta: ChatDelta,
    /// Log-probabilities of the tokens in this delta, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Set in the choice's last chunk.
    pub finish_reason: Option<FinishReason>,
}

/// A `chat.completion.chunk` of a stream (its strings borrowed: a chunk is
/// written per token).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChatChunk<'a> {
    /// The same id in every chunk of a stream.
    pub id: &'a str,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: &'a str,
    /// Identifies the backend configuration.
    pub system_fingerprint: &'a str,
    /// Choices that changed (empty in the usage chunk).
    pub choices: Vec<ChatChunkChoice>,
    /// Only in the final usage chunk, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `choices[].logprobs` of a text completion (the legacy format).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct CompletionLogprobs {
    /// Token texts.
    pub tokens: Vec<String>,
    /// Their log-probabilities.
    pub token_logprobs: Vec<f32>,
    /// Per position, the alternatives and their log-probabilities.
    pub top_logprobs: Vec<std::collections::BTreeMap<String, f32>>,
    /// Character offset of each token in the text.
    pub text_offset: Vec<usize>,
}

/// One choice of a text completion (and of its stream chunks).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CompletionChoice {
    /// Its index.
    pub index: usize,
    /// The text (or the new text, in a stream).
    pub text: String,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// Set once finished.
    pub finish_reason: Option<FinishReason>,
}

/// The body answering `POST /v1/completions`, and each chunk of its stream
/// (its strings borrowed: a chunk is written per token).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Completion<'a> {
    /// `cmpl-...`.
    pub id: &'a str,
    /// Always `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: &'a str,
    /// Identifies the backend configuration.
    pub system_fingerprint: &'a str,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Token counts (absent from stream chunks but the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ModelCard {
    /// The served name.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds when the server started.
    pub created: u64,
    /// Who owns it.
    pub owned_by: String,
}

/// The body of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The served models.
    pub data: Vec<ModelCard>,
}
