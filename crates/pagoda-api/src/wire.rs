//! The request bodies of `POST /v1/chat/completions` and
//! `POST /v1/completions`, field for field as OpenAI documents them, plus
//! the extensions vLLM users expect (`top_k`, `min_p`,
//! `repetition_penalty`, `min_tokens`, `ignore_eos`). Unknown fields are
//! ignored. These types only parse; [`crate::validate`] checks them. A body
//! is read as both its endpoint's struct and [`CommonFields`] (rather than
//! one struct with a flattened part) so that a type error names its field.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A string or a list of strings (`stop`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Fields shared by both endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CommonFields {
    /// The model to use.
    pub model: Option<String>,
    /// Most tokens to generate.
    pub max_tokens: Option<i64>,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, (0, 1].
    pub top_p: Option<f64>,
    /// Number of choices.
    pub n: Option<i64>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Up to four stop strings.
    pub stop: Option<StringOrList>,
    /// Presence penalty, -2 to 2.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty, -2 to 2.
    pub frequency_penalty: Option<f64>,
    /// Token id (as a string) to bias, -100 to 100.
    pub logit_bias: Option<BTreeMap<String, f64>>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// An end-user identifier (logged, not used).
    pub user: Option<String>,
    /// Extension: keep the k most likely tokens (-1 or 0: off).
    pub top_k: Option<i64>,
    /// Extension: drop tokens below this fraction of the top probability.
    pub min_p: Option<f64>,
    /// Extension: Hugging Face repetition penalty (> 0; 1: off).
    pub repetition_penalty: Option<f64>,
    /// Extension: stop tokens are not chosen before this many tokens.
    pub min_tokens: Option<i64>,
    /// Extension: keep generating past end-of-sequence tokens.
    #[serde(default)]
    pub ignore_eos: bool,
    /// Output format; only `text` until structured output exists.
    pub response_format: Option<ResponseFormat>,
}

/// One part of an array `content`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContentPart {
    /// `text` (others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// A message's `content`: a string, an array of parts, or null.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ContentPart>),
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The content (may be null for an assistant turn with tool calls).
    pub content: Option<MessageContent>,
    /// An optional participant name.
    pub name: Option<String>,
    /// Tool calls of an assistant turn, passed to the chat template as they are.
    pub tool_calls: Option<serde_json::Value>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatCompletionRequest {
    /// The conversation.
    pub messages: Option<Vec<ChatMessage>>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Return log-probabilities of the chosen tokens.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per position, 0 to 20 (needs `logprobs`).
    pub top_logprobs: Option<i64>,
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One text prompt.
    Text(String),
    /// Several text prompts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<i64>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<i64>>),
}

/// The body of `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompletionRequest {
    /// The prompt(s).
    pub prompt: Option<PromptInput>,
    /// Log-probabilities of this many alternatives per token, 0 to 5.
    pub logprobs: Option<i64>,
    /// Return the prompt in front of the completion.
    #[serde(default)]
    pub echo: bool,
}
