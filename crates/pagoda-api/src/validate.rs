//! Parsing and checking of request bodies into validated, engine-neutral
//! requests ([`ValidChat`], [`ValidCompletion`]): the only types that go
//! further. Every refusal is a 400 whose `param` names the field and whose
//! message states the limit.

use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::past_calls::{past_calls, PastCall};
use crate::structured::{output_constraint, OutputConstraint};
use crate::tools::{tool_request, ToolRequest};
use crate::wire::{
    ChatCompletionRequest, ChatMessage, CommonFields, CompletionRequest, MessageContent,
    PromptInput, StringOrList,
};

/// Most choices per request.
pub const MAX_N: usize = 128;
/// Most stop strings.
pub const MAX_STOP: usize = 4;
/// Most alternatives per position in chat `top_logprobs`.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most alternatives per position in completions `logprobs`.
pub const MAX_COMPLETION_LOGPROBS: usize = 5;

/// Who speaks in a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions from the deployer.
    System,
    /// OpenAI's newer name for system instructions; rendered as `system`.
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }

    /// The role name chat templates expect (`developer` becomes `system`).
    pub fn template_name(self) -> &'static str {
        match self {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A checked chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidMessage {
    /// Who speaks.
    pub role: Role,
    /// The text (parts joined).
    pub content: String,
    /// Participant name.
    pub name: Option<String>,
    /// An assistant turn's tool calls (empty: none).
    pub tool_calls: Vec<PastCall>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
    /// An assistant turn's thinking (`reasoning_content` or `reasoning`).
    pub reasoning_content: Option<String>,
}

/// Generation options of either endpoint, checked; `None` means "the model's default".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationOptions {
    /// The model asked for.
    pub model: Option<String>,
    /// Most tokens to generate (`None`: up to the context window).
    pub max_tokens: Option<usize>,
    /// Temperature in [0, 2].
    pub temperature: Option<f32>,
    /// Nucleus mass in (0, 1].
    pub top_p: Option<f32>,
    /// Top-k (0: off).
    pub top_k: Option<usize>,
    /// Min-p in [0, 1].
    pub min_p: Option<f32>,
    /// Repetition penalty (> 0).
    pub repetition_penalty: Option<f32>,
    /// Presence penalty in [-2, 2].
    pub presence_penalty: f32,
    /// Frequency penalty in [-2, 2].
    pub frequency_penalty: f32,
    /// Token biases in [-100, 100].
    pub logit_bias: Vec<(u32, f32)>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Number of choices, 1 to [`MAX_N`].
    pub n: usize,
    /// Stop strings (at most [`MAX_STOP`], none empty).
    pub stop: Vec<String>,
    /// Stop tokens are not chosen before this many tokens.
    pub min_tokens: usize,
    /// Keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Scheduling priority, lower first (0 by default).
    pub priority: i32,
    /// Stream server-sent events.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Alternatives per position when log-probabilities are asked for.
    pub logprobs: Option<usize>,
    /// End-user id, for logs.
    pub user: Option<String>,
    /// The shape the output must take.
    pub output: OutputConstraint,
}

/// How long a reasoning model may think (`reasoning_effort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningEffort {
    /// No thinking: the block is closed at once.
    None,
    /// The configured minimal budget.
    Minimal,
    /// The configured low budget.
    Low,
    /// The configured medium budget.
    Medium,
    /// The configured high budget.
    High,
}

impl ReasoningEffort {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => ReasoningEffort::None,
            "minimal" => ReasoningEffort::Minimal,
            "low" => ReasoningEffort::Low,
            "medium" => ReasoningEffort::Medium,
            "high" => ReasoningEffort::High,
            _ => return None,
        })
    }
}

/// What a chat request asks of a reasoning model's thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReasoningRequest {
    /// `reasoning_effort`.
    pub effort: Option<ReasoningEffort>,
    /// `max_reasoning_tokens`.
    pub max_tokens: Option<usize>,
}

/// A checked chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidChat {
    /// The conversation, never empty.
    pub messages: Vec<ValidMessage>,
    /// Generation options.
    pub options: GenerationOptions,
    /// Limits on the thinking of a reasoning model.
    pub reasoning: ReasoningRequest,
    /// Further chat-template variables.
    pub template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// The functions the model may call, and whether it must.
    pub tools: ToolRequest,
}

/// One completion prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text to tokenize.
    Text(String),
    /// Token ids as given.
    Tokens(Vec<u32>),
}

/// A checked completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCompletion {
    /// One or more prompts, none empty.
    pub prompts: Vec<Prompt>,
    /// Return the prompt in front of the completion.
    pub echo: bool,
    /// Generation options.
    pub options: GenerationOptions,
}

/// The body as a JSON object.
fn parse_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    }
    Ok(value)
}

/// Reads `T` from the body; a type error names the field's path.
fn parse<T: DeserializeOwned>(body: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = plain_message(&e.into_inner().to_string());
        ApiError::invalid(path.clone(), format!("invalid value for `{path}`: {inner}"))
    })
}

/// serde's message in the API's words: what the field should be, never the
/// Rust types behind it (`untagged enum PromptInput`, `struct ChatMessage`).
fn plain_message(serde: &str) -> String {
    if let Some(name) = serde.strip_prefix("data did not match any variant of untagged enum ") {
        let expected = match name.trim() {
            "StringOrList" => "a string or a list of strings",
            "MessageContent" => "a string, a list of content parts, or null",
            "PromptInput" => {
                "a string, a list of strings, a list of token ids, or a list of such lists"
            }
            _ => "a value of another shape",
        };
        return format!("expected {expected}");
    }
    match serde.find("expected struct ") {
        Some(at) => format!("{}expected an object", &serde[..at]),
        None => serde.to_string(),
    }
}

/// The smallest `repetition_penalty` accepted.
const MIN_REPETITION_PENALTY: f64 = 1e-6;

fn range(param: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match v {
        Some(x) if !(x.is_finite() && x >= lo && x <= hi) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be between {lo} and {hi}, got {x}"),
        )),
        other => Ok(other.map(|x| x as f32)),
    }
}

fn int_in(param: &str, v: Option<i64>, lo: i64, max: usize) -> Result<Option<usize>, ApiError> {
    match v {
        Some(x) if x < lo || x as u64 > max as u64 => Err(ApiError::invalid(
            param,
            format!("`{param}` must be between {lo} and {max}, got {x}"),
        )),
        other => Ok(other.map(|x| x as usize)),
    }
}

fn options(
    mut c: CommonFields,
    max_tokens: Option<i64>,
    max_tokens_param: &str,
) -> Result<GenerationOptions, ApiError> {
    let output = output_constraint(&mut c)?;
    let n = int_in("n", c.n, 1, MAX_N)?.unwrap_or(1);
    let max_tokens = int_in(max_tokens_param, max_tokens, 1, u32::MAX as usize)?;
    let top_p = match c.top_p {
        Some(p) if !(p.is_finite() && p > 0.0 && p <= 1.0) => {
            return Err(ApiError::invalid(
                "top_p",
                format!("`top_p` must be in (0, 1], got {p}"),
            ))
        }
        p => p.map(|p| p as f32),
    };
    let top_k = match c.top_k {
        Some(k) if k < -1 => {
            return Err(ApiError::invalid(
                "top_k",
                format!("`top_k` must be -1, 0 or positive, got {k}"),
            ))
        }
        Some(k) if k <= 0 => Some(0),
        k => k.map(|k| k as usize),
    };
    // Logits are divided by it: below the floor they would overflow.
    let repetition_penalty = match c.repetition_penalty {
        Some(r) if !(MIN_REPETITION_PENALTY..=100.0).contains(&r) => {
            return Err(ApiError::invalid(
                "repetition_penalty",
                format!("`repetition_penalty` must be in [{MIN_REPETITION_PENALTY}, 100], got {r}"),
            ))
        }
        r => r.map(|r| r as f32),
    };
    let min_tokens = match c.min_tokens {
        Some(m) if m < 0 => {
            return Err(ApiError::invalid(
                "min_tokens",
                format!("`min_tokens` must be >= 0, got {m}"),
            ))
        }
        m => m.unwrap_or(0) as usize,
    };
    if let Some(max) = max_tokens {
        if min_tokens > max {
            return Err(ApiError::invalid(
                "min_tokens",
                format!("`min_tokens` ({min_tokens}) must not exceed `{max_tokens_param}` ({max})"),
            ));
        }
    }
    let mut logit_bias = Vec::new();
    for (token, bias) in c.logit_bias.unwrap_or_default() {
        let param = format!("logit_bias.{token}");
        let id: u32 = token.parse().map_err(|_| {
            ApiError::invalid(
                param.clone(),
                format!("`logit_bias` keys must be token ids, got {token:?}"),
            )
        })?;
        let bias = range(&param, Some(bias), -100.0, 100.0)?.unwrap_or(0.0);
        logit_bias.push((id, bias));
    }
    let stop = match c.stop {
        None => Vec::new(),
        Some(StringOrList::One(s)) => vec![s],
        Some(StringOrList::Many(v)) => v,
    };
    if stop.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOP} stop sequences, got {}", stop.len()),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "stop sequences must not be empty",
        ));
    }
    if c.stream_options.is_some() && !c.stream {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed with `stream: true`",
        ));
    }
    Ok(GenerationOptions {
        model: c.model,
        max_tokens,
        temperature: range("temperature", c.temperature, 0.0, 2.0)?,
        top_p,
        top_k,
        min_p: range("min_p", c.min_p, 0.0, 1.0)?,
        repetition_penalty,
        presence_penalty: range("presence_penalty", c.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: range("frequency_penalty", c.frequency_penalty, -2.0, 2.0)?
            .unwrap_or(0.0),
        logit_bias,
        seed: c.seed.map(|s| s as u64),
        n,
        stop,
        min_tokens,
        ignore_eos: c.ignore_eos,
        priority: match c.priority {
            Some(p) => i32::try_from(p).map_err(|_| {
                ApiError::invalid(
                    "priority",
                    format!("`priority` must be a 32-bit integer, got {p}"),
                )
            })?,
            None => 0,
        },
        stream: c.stream,
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
        logprobs: None,
        user: c.user,
        output,
    })
}

fn message(i: usize, m: ChatMessage) -> Result<ValidMessage, ApiError> {
    let role = Role::parse(&m.role).ok_or_else(|| {
        ApiError::invalid(
            format!("messages[{i}].role"),
            format!(
                "unknown role `{}` (system, developer, user, assistant or tool)",
                m.role
            ),
        )
    })?;
    let content = match m.content {
        None if role == Role::Assistant && m.tool_calls.is_some() => String::new(),
        None => {
            return Err(ApiError::invalid(
                format!("messages[{i}].content"),
                format!("messages[{i}] has no content"),
            ))
        }
        Some(MessageContent::Text(t)) => t,
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.into_iter().enumerate() {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(t)) => text.push_str(&t),
                    ("text", None) => {
                        return Err(ApiError::invalid(
                            format!("messages[{i}].content[{j}].text"),
                            "a text part needs `text`",
                        ))
                    }
                    (other, _) => {
                        return Err(ApiError::invalid(
                            format!("messages[{i}].content[{j}].type"),
                            format!(
                                "content parts of type `{other}` are not supported (text only)"
                            ),
                        ))
                    }
                }
            }
            text
        }
    };
    let tool_calls = match m.tool_calls {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(_) if role != Role::Assistant => {
            return Err(ApiError::invalid(
                format!("messages[{i}].tool_calls"),
                "only assistant messages carry tool calls",
            ))
        }
        Some(v) => past_calls(i, v)?,
    };
    if role == Role::Tool && m.tool_call_id.is_none() {
        return Err(ApiError::invalid(
            format!("messages[{i}].tool_call_id"),
            "a tool message needs `tool_call_id`",
        ));
    }
    let reasoning_content = match (m.reasoning_content, m.reasoning) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                format!("messages[{i}].reasoning"),
                "`reasoning_content` and `reasoning` are two names of one field; give one",
            ))
        }
        (a, b) => a.or(b),
    };
    if reasoning_content.is_some() && role != Role::Assistant {
        return Err(ApiError::invalid(
            format!("messages[{i}].reasoning_content"),
            "only assistant messages carry reasoning",
        ));
    }
    Ok(ValidMessage {
        role,
        content,
        name: m.name,
        tool_calls,
        tool_call_id: m.tool_call_id,
        reasoning_content,
    })
}

/// Parses and checks the body of `POST /v1/chat/completions`.
pub fn parse_chat(body: &[u8]) -> Result<ValidChat, ApiError> {
    let body = parse_body(body)?;
    let req: ChatCompletionRequest = parse(&body)?;
    let common: CommonFields = parse(&body)?;
    let messages = req
        .messages
        .ok_or_else(|| ApiError::invalid("messages", "`messages` is required"))?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let (max_tokens, param) = match (req.max_completion_tokens, common.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let mut options = options(common, max_tokens, param)?;
    let top = int_in("top_logprobs", req.top_logprobs, 0, MAX_TOP_LOGPROBS)?;
    options.logprobs = match (req.logprobs, top) {
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ))
        }
        (true, top) => Some(top.unwrap_or(0)),
        (false, None) => None,
    };
    let effort = req
        .reasoning_effort
        .map(|e| {
            ReasoningEffort::parse(&e).ok_or_else(|| {
                ApiError::invalid(
                    "reasoning_effort",
                    format!("unknown reasoning_effort `{e}` (none, minimal, low, medium or high)"),
                )
            })
        })
        .transpose()?;
    let reasoning = ReasoningRequest {
        effort,
        max_tokens: int_in(
            "max_reasoning_tokens",
            req.max_reasoning_tokens,
            0,
            u32::MAX as usize,
        )?,
    };
    let tools = tool_request(req.tools, req.tool_choice, req.parallel_tool_calls)?;
    if tools.calls_forced() && options.output.is_constrained() {
        return Err(ApiError::invalid(
            options.output.param.clone(),
            "a forced tool_choice and an output constraint cannot both apply",
        ));
    }
    Ok(ValidChat {
        messages,
        options,
        reasoning,
        template_kwargs: req.chat_template_kwargs.unwrap_or_default(),
        tools,
    })
}

fn token_ids(param: &str, ids: Vec<i64>) -> Result<Vec<u32>, ApiError> {
    ids.into_iter()
        .map(|t| {
            u32::try_from(t).map_err(|_| {
                let why = if t < 0 {
                    "must be non-negative"
                } else {
                    "are out of range (at most 4294967295)"
                };
                ApiError::invalid(param, format!("token ids {why}, got {t}"))
            })
        })
        .collect()
}

/// Parses and checks the body of `POST /v1/completions`.
pub fn parse_completion(body: &[u8]) -> Result<ValidCompletion, ApiError> {
    let body = parse_body(body)?;
    let req: CompletionRequest = parse(&body)?;
    let common: CommonFields = parse(&body)?;
    let prompts = match req
        .prompt
        .ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?
    {
        PromptInput::Text(t) => vec![Prompt::Text(t)],
        PromptInput::Texts(v) => v.into_iter().map(Prompt::Text).collect(),
        PromptInput::Tokens(ids) => vec![Prompt::Tokens(token_ids("prompt", ids)?)],
        PromptInput::TokenLists(lists) => lists
            .into_iter()
            .map(|ids| token_ids("prompt", ids).map(Prompt::Tokens))
            .collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
    }
    if prompts.iter().any(|p| {
        matches!(p, Prompt::Tokens(t) if t.is_empty())
            || matches!(p, Prompt::Text(t) if t.is_empty())
    }) {
        return Err(ApiError::invalid("prompt", "a prompt must not be empty"));
    }
    let max_tokens = common.max_tokens;
    let mut options = options(common, max_tokens, "max_tokens")?;
    options.logprobs = int_in("logprobs", req.logprobs, 0, MAX_COMPLETION_LOGPROBS)?;
    Ok(ValidCompletion {
        prompts,
        echo: req.echo,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: &str) -> Result<ValidChat, ApiError> {
        parse_chat(json.as_bytes())
    }

    fn param_of(e: ApiError) -> String {
        e.param.unwrap_or_default()
    }

    #[test]
    fn parse_errors_never_name_rust_types() {
        for body in [r#"{"prompt":{"a":1}}"#, r#"{"prompt":"x","stop":5}"#] {
            let e = parse_completion(body.as_bytes()).expect_err(body);
            assert!(
                !e.message.contains("untagged") && !e.message.contains("enum"),
                "{body}: {}",
                e.message
            );
            assert!(e.message.contains("expected"), "{body}: {}", e.message);
        }
        for body in [
            r#"{"messages":["hi"]}"#,
            r#"{"messages":[{"role":"user","content":5}]}"#,
        ] {
            let e = parse_chat(body.as_bytes()).expect_err(body);
            assert!(
                !e.message.contains("struct") && !e.message.contains("untagged"),
                "{body}: {}",
                e.message
            );
        }
    }

    #[test]
    fn reasoning_fields_are_read_and_checked() {
        let c = chat(
            r#"{"messages":[{"role":"user","content":"Hi"},
            {"role":"assistant","content":"Hello","reasoning_content":"greet back"},
            {"role":"assistant","content":"Again","reasoning":"same"},
            {"role":"user","content":"Bye"}],
            "reasoning_effort":"low","max_reasoning_tokens":0,
            "chat_template_kwargs":{"enable_thinking":false}}"#,
        )
        .expect("valid");
        assert_eq!(
            c.messages[1].reasoning_content.as_deref(),
            Some("greet back")
        );
        assert_eq!(c.messages[2].reasoning_content.as_deref(), Some("same"));
        assert_eq!(c.messages[0].reasoning_content, None);
        assert_eq!(
            c.reasoning,
            ReasoningRequest {
                effort: Some(ReasoningEffort::Low),
                max_tokens: Some(0)
            }
        );
        assert_eq!(c.template_kwargs["enable_thinking"], false);
        let bad = [
            (r#""reasoning_effort":"extreme""#, "reasoning_effort"),
            (r#""max_reasoning_tokens":-1"#, "max_reasoning_tokens"),
            (r#""chat_template_kwargs":[1]"#, "chat_template_kwargs"),
        ];
        for (field, param) in bad {
            let e = chat(&format!(
                r#"{{"messages":[{{"role":"user","content":"Hi"}}],{field}}}"#
            ))
            .expect_err(field);
            assert_eq!(param_of(e), param, "{field}");
        }
        let e = chat(
            r#"{"messages":[{"role":"assistant","content":"a","reasoning_content":"x","reasoning":"y"}]}"#,
        )
        .expect_err("two different values");
        assert_eq!(param_of(e), "messages[0].reasoning");
        let e = chat(r#"{"messages":[{"role":"user","content":"a","reasoning":"x"}]}"#)
            .expect_err("a user turn has no reasoning");
        assert_eq!(param_of(e), "messages[0].reasoning_content");
    }

    #[test]
    fn a_full_chat_request_is_understood() {
        let c = chat(
            r#"{"model":"m","messages":[{"role":"developer","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}],
            "max_completion_tokens":7,"temperature":0.5,"top_p":0.9,"n":2,"stream":true,
            "stream_options":{"include_usage":true},"stop":"END","presence_penalty":0.1,
            "frequency_penalty":-0.2,"logit_bias":{"13":-100},"logprobs":true,"top_logprobs":3,
            "seed":9,"user":"u","top_k":40,"min_p":0.05,"repetition_penalty":1.1,"min_tokens":2,
            "ignore_eos":true,"response_format":{"type":"text"},"some_future_field":{"x":1}}"#,
        )
        .expect("valid");
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.messages[0].role.template_name(), "system");
        assert_eq!(c.messages[1].content, "Hi there");
        let o = c.options;
        assert_eq!(o.max_tokens, Some(7));
        assert_eq!(
            (o.n, o.stream, o.include_usage, o.logprobs),
            (2, true, true, Some(3))
        );
        assert_eq!(o.stop, vec!["END".to_string()]);
        assert_eq!(o.logit_bias, vec![(13, -100.0)]);
        assert_eq!(
            (o.top_k, o.min_tokens, o.ignore_eos, o.seed),
            (Some(40), 2, true, Some(9))
        );
    }

    #[test]
    fn every_invalid_field_names_its_param() {
        let cases = [
            (r#"{}"#, "messages"),
            (r#"{"messages":[]}"#, "messages"),
            (
                r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (r#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"messages":[{"role":"tool","content":"x"}]}"#,
                "messages[0].tool_call_id",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"top_p":0}"#,
                "top_p",
            ),
            (r#"{"messages":[{"role":"user","content":"x"}],"n":0}"#, "n"),
            // Just past a bound: parsed exactly (serde_json's float_roundtrip),
            // not rounded onto the bound (found by schemathesis).
            (
                r#"{"messages":[{"role":"user","content":"x"}],"repetition_penalty":100.00000000000001}"#,
                "repetition_penalty",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":2.0000000000000004}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":129}"#,
                "n",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":-5}"#,
                "max_completion_tokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                "stop",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stop":""}"#,
                "stop",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"presence_penalty":2.5}"#,
                "presence_penalty",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"frequency_penalty":-3}"#,
                "frequency_penalty",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"logit_bias":{"abc":1}}"#,
                "logit_bias.abc",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"logit_bias":{"5":101}}"#,
                "logit_bias.5",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#,
                "top_logprobs",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}"#,
                "top_logprobs",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}}"#,
                "response_format.type",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}"#,
                "response_format.json_schema",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":"{oops"}}}"#,
                "response_format.json_schema.schema",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},"guided_regex":"a+"}"#,
                "guided_regex",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"structured_outputs":{"choice":[]}}"#,
                "structured_outputs.choice",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"retrieval"}]}"#,
                "tools[0].type",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a b"}}]}"#,
                "tools[0].function.name",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]}"#,
                "tools[0].function.parameters",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]}"#,
                "tools[1].function.name",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}"#,
                "tool_choice",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"required"}"#,
                "tool_choice",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"sometimes"}"#,
                "tool_choice",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required","response_format":{"type":"json_object"}}"#,
                "response_format",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
                "stream_options",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"top_k":-2}"#,
                "top_k",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"min_p":1.5}"#,
                "min_p",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"repetition_penalty":0}"#,
                "repetition_penalty",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"repetition_penalty":5e-324}"#,
                "repetition_penalty",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":3,"min_tokens":4}"#,
                "min_tokens",
            ),
            (r#"{"messages":"hello"}"#, "messages"),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            (r#"not json"#, "body"),
            (r#"[1,2]"#, "body"),
        ];
        for (body, param) in cases {
            let err = chat(body).expect_err(body);
            assert_eq!(err.kind.status(), 400, "{body}");
            assert_eq!(param_of(err.clone()), param, "{body}: {}", err.message);
        }
    }

    #[test]
    fn completion_prompts_in_every_shape() {
        let c = parse_completion(br#"{"prompt":"Hello","echo":true,"logprobs":2,"max_tokens":5}"#)
            .expect("valid");
        assert_eq!(
            (c.prompts, c.echo, c.options.logprobs),
            (vec![Prompt::Text("Hello".into())], true, Some(2))
        );
        let c = parse_completion(br#"{"prompt":["a","b"]}"#).expect("valid");
        assert_eq!(c.prompts.len(), 2);
        let c = parse_completion(br#"{"prompt":[1,2,3]}"#).expect("valid");
        assert_eq!(c.prompts, vec![Prompt::Tokens(vec![1, 2, 3])]);
        let c = parse_completion(br#"{"prompt":[[1],[2,3]]}"#).expect("valid");
        assert_eq!(c.prompts.len(), 2);
        for (body, param) in [
            (&br#"{}"#[..], "prompt"),
            (br#"{"prompt":""}"#, "prompt"),
            (br#"{"prompt":[]}"#, "prompt"),
            (br#"{"prompt":[-1]}"#, "prompt"),
            (br#"{"prompt":"x","logprobs":6}"#, "logprobs"),
            (br#"{"prompt":{"a":1}}"#, "prompt"),
        ] {
            let err = parse_completion(body).expect_err("invalid");
            assert_eq!(param_of(err), param, "{}", String::from_utf8_lossy(body));
        }
    }
}
