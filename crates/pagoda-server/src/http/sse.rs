//! Server-sent event framing shared by the streaming endpoints: a JSON
//! chunk, and an error in the OpenAI envelope as the stream's last event.

use axum::response::sse::Event;
use pagoda_api::ApiError;

/// `data: {json}` for one chunk.
pub fn json_event(value: &impl serde::Serialize) -> Event {
    Event::default().data(serde_json::to_string(value).unwrap_or_default())
}

/// `data: {"error": ...}`: a failure after the stream has started.
pub fn error_event(e: &ApiError) -> Event {
    json_event(&e.envelope())
}

/// `data: [DONE]`, the last event of every stream.
pub fn done() -> Event {
    Event::default().data("[DONE]")
}

/// The events that end a stream: the usage chunk when there is one, then
/// `[DONE]`.
pub fn finish(usage_chunk: Option<Event>) -> Vec<Event> {
    usage_chunk.into_iter().chain([done()]).collect()
}

/// The events that end a failed stream: the error, then `[DONE]`.
pub fn fail(e: &ApiError) -> Vec<Event> {
    vec![error_event(e), done()]
}
