//! The engine on its own OS thread: the async side submits requests through
//! a bounded channel (full: refused at once) and reads each request's events
//! from its own channel. Dropping a [`RequestStream`] aborts the request on
//! the engine's next step.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::admission::{Admit, Admitted, EngineLimits, SubmitError};
use crate::engine::{EngineCore, EngineStats, EventSink};
use crate::ids::RequestId;
use crate::request::{EngineEvent, EngineFailure};

enum Command {
    Submit {
        id: RequestId,
        request: Admitted,
        sink: ChannelSink,
    },
}

/// Where the engine thread sends a request's events, and the choices its
/// listener has cancelled.
struct ChannelSink {
    events: flume::Sender<EngineEvent>,
    cancelled: Arc<[AtomicBool]>,
}

impl EventSink for ChannelSink {
    fn send(&self, event: EngineEvent) -> bool {
        self.events.send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.events.is_disconnected()
    }

    fn is_choice_cancelled(&self, choice: usize) -> bool {
        self.cancelled
            .get(choice)
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The events of one submitted request.
#[derive(Debug)]
pub struct RequestStream {
    /// The request's id.
    pub id: RequestId,
    /// Its events, in order per choice; closed after the last choice finishes.
    pub events: flume::Receiver<EngineEvent>,
    cancelled: Arc<[AtomicBool]>,
}

impl RequestStream {
    /// Stops generating choice `choice` (the others go on); takes effect at
    /// the engine's next step. Dropping the stream cancels every choice.
    pub fn cancel_choice(&self, choice: usize) {
        if let Some(c) = self.cancelled.get(choice) {
            c.store(true, Ordering::Relaxed);
        }
    }
}

/// A running engine thread.
pub struct EngineHandle {
    commands: Option<flume::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<EngineStats>>,
    limits: EngineLimits,
    next_id: AtomicU64,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Starts `core` on a new thread; at most `queue` submissions wait in the channel.
    pub fn spawn(core: EngineCore, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = flume::bounded::<Command>(queue.max(1));
        let stats = Arc::new(Mutex::new(core.stats()));
        let limits = core.limits();
        let shared = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("pagoda-engine".into())
            .spawn(move || run(core, rx, shared))?;
        Ok(Self {
            commands: Some(tx),
            thread: Some(thread),
            stats,
            limits,
            next_id: AtomicU64::new(0),
        })
    }

    /// What a request must fit in (vocabulary, context window, KV pool).
    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// Checks `request` against the engine's limits (unless it was
    /// admitted under them already) and submits it; fails at once when it
    /// can never run or the queue is full.
    pub fn submit(&self, request: impl Admit) -> Result<RequestStream, SubmitError> {
        let request = request.admit(&self.limits)?;
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let (events_tx, events) = flume::unbounded();
        let n = request.request().n;
        let cancelled: Arc<[AtomicBool]> = (0..n).map(|_| AtomicBool::new(false)).collect();
        let sink = ChannelSink {
            events: events_tx,
            cancelled: Arc::clone(&cancelled),
        };
        let commands = self.commands.as_ref().ok_or(SubmitError::Closed)?;
        commands
            .try_send(Command::Submit { id, request, sink })
            .map_err(|e| match e {
                flume::TrySendError::Full(_) => SubmitError::QueueFull,
                flume::TrySendError::Disconnected(_) => SubmitError::Closed,
            })?;
        Ok(RequestStream {
            id,
            events,
            cancelled,
        })
    }

    /// The engine's counters after its last step.
    pub fn stats(&self) -> EngineStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        // Closing the channel ends the loop once in-flight work is done.
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept(core: &mut EngineCore, command: Command) {
    match command {
        Command::Submit { id, request, sink } => {
            let events = sink.events.clone();
            // Admitted in `submit` under these limits (not checked again),
            // so only a full waiting queue (a race with the channel's
            // bound) can refuse it here.
            if let Err(e) = core.add_request(id, request, Box::new(sink)) {
                let _ = events.send(EngineEvent::Failed(EngineFailure::Refused(e)));
            }
        }
    }
}

fn run(mut core: EngineCore, commands: flume::Receiver<Command>, stats: Arc<Mutex<EngineStats>>) {
    loop {
        if core.is_idle() {
            match commands.recv() {
                Ok(c) => accept(&mut core, c),
                Err(_) => return,
            }
        }
        while core.can_accept() {
            match commands.try_recv() {
                Ok(c) => accept(&mut core, c),
                Err(_) => break,
            }
        }
        core.step();
        if let Ok(mut s) = stats.lock() {
            *s = core.stats();
        }
    }
}
