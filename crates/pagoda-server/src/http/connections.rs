//! The accept loop: every connection is served by hyper with a deadline on
//! its request headers (which also bounds how long a kept-alive connection
//! may sit idle: hyper starts it when it waits for the next request) and a
//! deadline on its request body; at most `max_connections` are open at
//! once, and one beyond the cap gets a 503 in the envelope at once, without
//! its request being read. A failed `accept` (the process out of file
//! descriptors, say) is logged and retried after a pause instead of
//! spinning. Requests hyper cannot parse (headers too large, say) are
//! answered in the envelope too (`parse_errors`). On shutdown the listener closes, idle connections are closed,
//! and requests in flight go on (see `commands::serve`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http::tenant::ClientAddr;
use tokio::sync::{watch, Semaphore};

use crate::http::parse_errors::{Enveloped, MAX_HEADERS, MAX_HEADER_BYTES};

/// What a connection may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; beyond, refused with a 503.
    pub max_connections: usize,
    /// Longest wait for a request's headers, from the connection's start or
    /// the end of its previous response (so also the keep-alive idle time).
    pub header_timeout: Duration,
    /// Longest wait for a request's whole body.
    pub body_timeout: Duration,
}

/// The answer to a connection beyond the cap.
const REFUSAL: &str = "{\"error\":{\"message\":\"the server has too many open connections; retry shortly\",\"type\":\"service_unavailable_error\",\"param\":null,\"code\":null}}";

/// Serves `app` on `listener` until `stop` becomes true, then waits for
/// the connections still open to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        crate::http::body_deadline::read_within,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // HTTP/1 only (what OpenAI clients speak): detecting HTTP/2 would wait
    // for a silent connection's first bytes with no deadline.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    loop {
        let stopped = async {
            // A dropped sender stops too.
            let _ = stop.wait_for(|s| *s).await;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let inner = TowerToHyperService::new(app.clone());
        // Each request knows its client's address (for the fair share of
        // requests without an API key).
        let client = ClientAddr(peer.ip());
        let service = hyper::service::service_fn(move |mut request| {
            request.extensions_mut().insert(client);
            hyper::service::Service::call(&inner, request)
        });
        let connection = builder.serve_connection(TokioIo::new(Enveloped::new(stream)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection's end (a timeout, the client gone) is routine.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection beyond the cap with a 503 and closes it, without
/// reading its request.
async fn refuse(mut stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{REFUSAL}",
        REFUSAL.len()
    );
    // The answer, then the request read and dropped (briefly), so that the
    // client's write of it is not met by a reset before it reads the answer.
    let answer = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// Raises the process's open-file limit to its hard limit where the OS
/// allows, and returns the soft limit in force (`None` where it cannot be
/// read).
pub fn raise_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            None
        }
    }
}

/// The connection cap for a `wanted` one under a file limit: the files a
/// server needs besides its connections (the model, logs, the engine's
/// pipes) are kept back, so the cap stays below the limit.
pub fn connection_cap(wanted: usize, file_limit: Option<u64>) -> usize {
    const RESERVED: u64 = 64;
    match file_limit {
        Some(limit) => wanted.min(limit.saturating_sub(RESERVED).max(1) as usize),
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_file_limit() {
        assert_eq!(connection_cap(1024, Some(1024)), 960);
        assert_eq!(connection_cap(512, Some(1_048_576)), 512);
        assert_eq!(connection_cap(512, Some(10)), 1);
        assert_eq!(connection_cap(512, None), 512);
        let refusal: serde_json::Value = serde_json::from_str(REFUSAL).expect("JSON");
        assert_eq!(refusal["error"]["type"], "service_unavailable_error");
    }
}
