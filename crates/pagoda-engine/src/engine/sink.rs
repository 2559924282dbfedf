//! Where the engine sends a request's events: the listener side of a
//! request, which may go away (the client disconnected) or drop single
//! choices (a stop string ended one).

use crate::request::EngineEvent;

/// Where a request's events go.
pub trait EventSink: Send {
    /// Delivers `event`; false when nobody listens any more.
    fn send(&self, event: EngineEvent) -> bool;
    /// Whether the listener is gone (the request should be aborted).
    fn is_closed(&self) -> bool;
    /// Whether the listener no longer wants choice `choice` (say, a stop
    /// string ended it); that choice alone is dropped.
    fn is_choice_cancelled(&self, _choice: usize) -> bool {
        false
    }
}

impl EventSink for flume::Sender<EngineEvent> {
    fn send(&self, event: EngineEvent) -> bool {
        flume::Sender::send(self, event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.is_disconnected()
    }
}
