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
