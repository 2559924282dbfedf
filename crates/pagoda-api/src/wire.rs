//! The request bodies of `POST /v1/chat/completions` and
//! `POST /v1/completions`, field for field as OpenAI documents them, plus
//! the extensions vLLM users expect (`top_k`, `min_p`,
//! `repetition_penalty`, `min_tokens`, `ignore_eos`). Unknown fields are
//! ignored. These types only parse; [`crate::validate`] checks them. A body
//! is read as both its endpoint's struct and [`CommonFields`] (rather than
//! one struct with a flattened part) so that a type error names its field.

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::ToSchema;

/// A string or a list of strings (`stop`).
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The schema of a `json_schema` format.
    pub json_schema: Option<JsonSchemaFormat>,
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct JsonSchemaFormat {
    /// The format's name.
    pub name: Option<String>,
    /// What the format is for.
    pub description: Option<String>,
    /// The JSON schema the output must validate against.
    #[schema(schema_with = json_schema_schema)]
    pub schema: Option<serde_json::Value>,
    /// As OpenAI's strict mode: objects take no properties beyond those
    /// they list. Strict or not, every keyword is enforced, and one that
    /// cannot be is a 400 naming it.
    pub strict: Option<bool>,
}

/// Extension (as vLLM's `structured_outputs`): constraints beyond
/// `response_format`; at most one of them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
pub struct StructuredOutputs {
    /// A JSON schema (an object, or its text).
    #[schema(schema_with = json_schema_schema)]
    pub json: Option<serde_json::Value>,
    /// A regular expression the whole output matches.
    pub regex: Option<String>,
    /// A Lark grammar (llguidance's dialect; `start` is the root rule).
    pub grammar: Option<String>,
    /// The output is exactly one of these strings.
    pub choice: Option<Vec<String>>,
    /// Any JSON object.
    pub json_object: Option<bool>,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct FunctionDefinition {
    /// Its name: letters, digits, `_` and `-`, at most 64.
    pub name: Option<String>,
    /// What it does (shown to the model).
    pub description: Option<String>,
    /// The JSON schema of its arguments (an object schema).
    #[schema(schema_with = object_or_null_schema)]
    pub parameters: Option<serde_json::Value>,
    /// Enforce every keyword of `parameters` when a call is forced.
    pub strict: Option<bool>,
}

/// One entry of `tools`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct ToolDefinition {
    /// `function` (the only kind).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: Option<FunctionDefinition>,
}

/// Fields shared by both endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
pub struct CommonFields {
    /// The model to use.
    pub model: Option<String>,
    /// Most tokens to generate.
    #[schema(minimum = 1)]
    pub max_tokens: Option<i64>,
    /// Sampling temperature, 0 to 2.
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, (0, 1].
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// Number of choices.
    #[schema(minimum = 1, maximum = 128)]
    pub n: Option<i64>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Up to four stop strings.
    pub stop: Option<StringOrList>,
    /// Presence penalty, -2 to 2.
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty, -2 to 2.
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    /// Token id (as a string) to bias, -100 to 100.
    pub logit_bias: Option<BTreeMap<String, f64>>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// An end-user identifier (logged, not used).
    pub user: Option<String>,
    /// Extension: keep the k most likely tokens (-1 or 0: off).
    #[schema(minimum = -1)]
    pub top_k: Option<i64>,
    /// Extension: drop tokens below this fraction of the top probability.
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f64>,
    /// Extension: Hugging Face repetition penalty (1e-6 to 100; 1: off).
    #[schema(minimum = 0.000001, maximum = 100)]
    pub repetition_penalty: Option<f64>,
    /// Extension: stop tokens are not chosen before this many tokens.
    #[schema(minimum = 0)]
    pub min_tokens: Option<i64>,
    /// Extension: keep generating past end-of-sequence tokens.
    #[serde(default)]
    pub ignore_eos: bool,
    /// Extension (vLLM's): scheduling priority, lower first (default 0).
    /// Between requests of equal priority, API keys (or clients) share
    /// the engine fairly.
    pub priority: Option<i64>,
    /// Output format: `text`, `json_object`, or `json_schema`, enforced
    /// by a grammar while decoding.
    pub response_format: Option<ResponseFormat>,
    /// Extension: a regex, Lark grammar, choice or JSON schema constraint.
    pub structured_outputs: Option<StructuredOutputs>,
    /// Extension (vLLM's older name): a JSON schema.
    #[schema(schema_with = json_schema_schema)]
    pub guided_json: Option<serde_json::Value>,
    /// Extension (vLLM's older name): a regular expression.
    pub guided_regex: Option<String>,
    /// Extension (vLLM's older name): a Lark grammar.
    pub guided_grammar: Option<String>,
    /// Extension (vLLM's older name): one of these strings.
    pub guided_choice: Option<Vec<String>>,
}

/// One part of an array `content`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct ContentPart {
    /// `text` (others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// A message's `content`: a string, an array of parts, or null.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ContentPart>),
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    #[schema(schema_with = role_schema)]
    pub role: String,
    /// The content (may be null for an assistant turn with tool calls).
    pub content: Option<MessageContent>,
    /// An optional participant name.
    pub name: Option<String>,
    /// Tool calls of an assistant turn (OpenAI's shape: `id`, `type`,
    /// `function.name`, `function.arguments`), passed to the chat template.
    pub tool_calls: Option<serde_json::Value>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
    /// An assistant turn's thinking, as DeepSeek's API returns it; passed
    /// to the chat template, which decides whether it enters the prompt.
    pub reasoning_content: Option<String>,
    /// The same under the name some clients use.
    pub reasoning: Option<String>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// The conversation.
    #[schema(required = true, nullable = false, min_items = 1)]
    pub messages: Option<Vec<ChatMessage>>,
    /// Newer name of `max_tokens`.
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<i64>,
    /// Return log-probabilities of the chosen tokens.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per position, 0 to 20 (needs `logprobs`).
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<i64>,
    /// How long a reasoning model may think: each level is a token budget
    /// set in the server's configuration (`none`: no thinking). Ignored by
    /// models that do not reason.
    #[schema(schema_with = effort_schema)]
    pub reasoning_effort: Option<String>,
    /// Extension: most tokens of thinking, after which the server closes
    /// the thinking block and the model answers.
    #[schema(minimum = 0)]
    pub max_reasoning_tokens: Option<i64>,
    /// Extension (as vLLM's): further variables for the chat template, such
    /// as `{"enable_thinking": false}`.
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Functions the model may call.
    pub tools: Option<Vec<ToolDefinition>>,
    /// `none`, `auto`, `required`, or `{"type": "function", "function": {"name": …}}`.
    #[schema(schema_with = tool_choice_schema)]
    pub tool_choice: Option<serde_json::Value>,
    /// Whether one turn may hold several calls (default true).
    pub parallel_tool_calls: Option<bool>,
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// The prompt(s).
    #[schema(required = true, nullable = false)]
    pub prompt: Option<PromptInput>,
    /// Log-probabilities of this many alternatives per token, 0 to 5.
    #[schema(minimum = 0, maximum = 5)]
    pub logprobs: Option<i64>,
    /// Return the prompt in front of the completion.
    #[serde(default)]
    pub echo: bool,
}

/// The roles a message may have, as a schema.
fn role_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["system", "developer", "user", "assistant", "tool"]))
        .build()
}

/// The values of `reasoning_effort`, as a schema.
fn effort_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["none", "minimal", "low", "medium", "high"]))
        .build()
}

/// A JSON schema as the API takes it: an object (or `true`/`false`), or
/// its JSON text; null is the same as absent.
fn json_schema_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::Object,
            Type::Boolean,
            Type::String,
            Type::Null,
        ]))
        .build()
}

/// An object; null is the same as absent.
fn object_or_null_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .build()
}

/// `tool_choice`: `none`, `auto`, `required` or a named function (an
/// object); null is the same as absent.
fn tool_choice_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::String,
            Type::Object,
            Type::Null,
        ]))
        .build()
}

// Parsing reads the two parts separately (see the module comment); these
// joined types exist for the OpenAPI document.

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionBody {
    /// Fields of this endpoint.
    #[serde(flatten)]
    pub chat: ChatCompletionRequest,
    /// Fields shared with `/v1/completions`.
    #[serde(flatten)]
    pub common: CommonFields,
}

/// The body of `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionBody {
    /// Fields of this endpoint.
    #[serde(flatten)]
    pub completion: CompletionRequest,
    /// Fields shared with `/v1/chat/completions`.
    #[serde(flatten)]
    pub common: CommonFields,
}
