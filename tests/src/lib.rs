//! Helpers for pagoda's end-to-end tests: they run the real `pagoda` binary
//! on the real default model.
//!
//! The binary is the one `cargo build` leaves in the workspace's target
//! directory (the test command, `scripts/test.sh`, builds it first), or the
//! one `PAGODA_BIN` names.

#![warn(missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The `pagoda` binary under test.
pub fn pagoda_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PAGODA_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("pagoda");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build` (scripts/test.sh does) or set PAGODA_BIN",
        bin.display()
    );
    bin
}

/// The default model, fetched by `scripts/fetch-model.sh`.
pub fn default_model() -> PathBuf {
    let model = workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.exists(),
        "{} is missing: run scripts/fetch-model.sh",
        model.display()
    );
    model
}

/// Runs `pagoda` with `args` and returns its output (stdout, stderr, status).
pub fn run_pagoda(args: &[&str]) -> Output {
    run_pagoda_with(args, &[])
}

/// [`run_pagoda`] with extra environment variables (later ones win).
pub fn run_pagoda_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(pagoda_bin())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("PAGODA_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("pagoda runs")
}

/// stdout and stderr of `out` as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `pagoda serve` process on a free loopback port, killed on drop. Its
/// log (stderr) goes to a temporary file, readable with [`Server::log`].
pub struct Server {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
    log: tempfile::NamedTempFile,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Server {
    /// Starts the real binary with the default model and `extra` flags, and
    /// waits (at most 120 s) until `/health` answers 200.
    pub fn start(extra: &[&str]) -> Server {
        let server = Server::spawn(extra, &[]);
        server.wait_healthy();
        server
    }

    /// Starts the real binary with the default model, `extra` flags and
    /// `env` variables, without waiting for it.
    pub fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn_model(&default_model(), extra, env)
    }

    /// Starts the real binary with `model` (a path) and `extra` flags, and
    /// waits until it is healthy.
    pub fn start_model(model: &std::path::Path, extra: &[&str]) -> Server {
        let server = Server::spawn_model(model, extra, &[]);
        server.wait_healthy();
        server
    }

    /// Starts the real binary with `model`, `extra` flags and `env`
    /// variables, without waiting for it.
    pub fn spawn_model(model: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let stderr = log.reopen().expect("the log file opens");
        let child = Command::new(pagoda_bin())
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--model",
            ])
            .arg(model)
            .args(extra)
            .env("PAGODA_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("pagoda serve starts");
        Server { child, port, log }
    }

    /// Waits (at most 120 s) until `/health` answers 200.
    pub fn wait_healthy(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if let Ok(r) = self.request("GET", "/health", None) {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "pagoda serve did not become healthy within 120 s; log:\n{}",
            self.log()
        );
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits at most `limit` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// The value of the Prometheus sample `series` (name and labels, as
    /// printed) on `/metrics`; `None` when it is absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let r = self.request("GET", "/metrics", None).ok()?;
        r.body.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    /// Writes a request and returns the open connection without reading
    /// the answer (for tests of clients that go away).
    pub fn open(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<std::net::TcpStream> {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(300)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        Ok(stream)
    }

    /// Writes `raw` (a whole HTTP/1.1 request, as given) and reads the
    /// whole response: for requests the helpers below would not send.
    pub fn raw(&self, raw: &str) -> std::io::Result<HttpResponse> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(300)))?;
        stream.write_all(raw.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        HttpResponse::parse(&response)
    }

    /// Sends one HTTP/1.1 request and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<HttpResponse> {
        self.request_with(method, path, body, &[])
    }

    /// [`Server::request`] with extra headers.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<HttpResponse> {
        use std::io::{Read, Write};
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(300)))?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        HttpResponse::parse(&raw)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer decoded).
    pub body: String,
}

impl HttpResponse {
    /// Parses a raw HTTP/1.1 response.
    pub fn parse(raw: &[u8]) -> std::io::Result<Self> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let text = String::from_utf8_lossy(raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| bad("no header end"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
