//! Requests that are not HTTP the server can parse (a malformed request
//! line, headers over [`MAX_HEADER_BYTES`] or over [`MAX_HEADERS`] of them,
//! a target too long) never reach the router: hyper answers them itself
//! with a status and an empty body, then closes. [`Enveloped`] wraps a
//! connection and rewrites exactly those automatic answers into the same
//! status with the OpenAI error envelope, so every client sees one error
//! shape. Everything else passes through untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pagoda_api::{ApiError, ErrorKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes a request's line and headers may take (hyper's read buffer
/// while it parses them); beyond, a 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most header fields a request may carry; beyond, a 431.
pub const MAX_HEADERS: usize = 100;

/// A connection whose automatic parse-error answers carry the envelope.
pub struct Enveloped<S> {
    inner: S,
    /// A replacement answer still being written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> Enveloped<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The envelope answer for hyper's automatic answer `head`, when `head` is
/// one (a status it sends on a parse error, no body); `None` for anything
/// else, so the application's own responses are never touched.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    // hyper's automatic answers are one short head: the status line,
    // `connection: close`, `content-length: 0` and `date`.
    if head.len() > 256 || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    if !text.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (status, kind, message) = match rest.get(..4)? {
        "400 " => (
            "400 Bad Request",
            ErrorKind::InvalidRequest,
            "the request is not valid HTTP/1.1".to_string(),
        ),
        "414 " => (
            "414 URI Too Long",
            ErrorKind::UriTooLong,
            "the request target is too long".to_string(),
        ),
        "431 " => (
            "431 Request Header Fields Too Large",
            ErrorKind::HeadersTooLarge,
            format!(
                "the request's headers are too large: at most {MAX_HEADERS} fields \
                 and {MAX_HEADER_BYTES} bytes with the request line"
            ),
        ),
        _ => return None,
    };
    let error = ApiError {
        kind,
        message,
        param: None,
        code: None,
    };
    let body = serde_json::to_string(&error.envelope()).ok()?;
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> Enveloped<S> {
    /// Writes out the pending replacement, if any.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `head` as written when it is an automatic answer, queuing its
    /// replacement instead; `None` when it is not one.
    fn substitute(&mut self, cx: &mut Context<'_>, head: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let bytes = replacement(head)?;
        self.pending = Some((bytes, 0));
        // hyper flushes after writing, which finishes a partial write.
        Some(match self.drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(head.len())),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Enveloped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Enveloped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(done) = self.substitute(cx, buf) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            // An automatic answer is a head alone, so it is the first slice.
            if let Some(done) = self.substitute(cx, first) {
                return done;
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 21:27:10 GMT\r\n\r\n";

    fn split(answer: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(answer.to_vec()).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        let body = serde_json::from_str(body).expect("a JSON body");
        (head.to_string(), body)
    }

    #[test]
    fn hypers_automatic_answers_get_the_envelope() {
        let (head, body) = split(&replacement(HYPER_431).expect("replaced"));
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("content-type: application/json"));
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"]
            .as_str()
            .expect("text")
            .contains("65536"));
        let bad = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let (head, _) = split(&replacement(bad).expect("replaced"));
        assert!(head.starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn the_applications_own_answers_pass_untouched() {
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
            b"data: {\"x\": 1}\n\n",
        ] {
            assert_eq!(replacement(head), None);
        }
    }

    #[tokio::test]
    async fn a_partial_writer_still_gets_the_whole_answer() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(16);
        let mut wrapped = Enveloped::new(client);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out)
                .await
                .map(|_| out)
        });
        wrapped.write_all(HYPER_431).await.expect("written");
        wrapped.shutdown().await.expect("closed");
        drop(wrapped);
        let out = reader.await.expect("joined").expect("read");
        let (head, body) = split(&out);
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert_eq!(body["error"]["param"], serde_json::Value::Null);
    }
}
