//! Who asked for a generation and how it ended: the labels of the
//! request's log line and of its metrics.

/// The generation endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
}

impl Endpoint {
    /// Its name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
        }
    }

    /// The request field that holds its prompt (errors about the prompt name it).
    pub fn prompt_param(self) -> &'static str {
        match self {
            Endpoint::Chat => "messages",
            Endpoint::Completions => "prompt",
        }
    }
}

/// Who asked, for the log line.
#[derive(Debug, Clone)]
pub struct RequestLabel {
    /// The `x-request-id`.
    pub request_id: String,
    /// The endpoint.
    pub endpoint: Endpoint,
}

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every choice finished.
    Completed,
    /// The request timeout cut it short.
    Timeout,
    /// The client went away before the end.
    Aborted,
    /// The engine failed it.
    Failed,
}

impl Outcome {
    /// Its name in logs and in the `outcome` label of metrics.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Timeout => "timeout",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
        }
    }
}
