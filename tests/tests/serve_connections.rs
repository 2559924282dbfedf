//! Connection hygiene: connections that send nothing, or trickle their
//! headers or body, are cut after their deadlines while other clients are
//! still served; beyond the connection cap a client gets a 503 at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pagoda_tests::Server;

/// How long until the server closes `stream` (a read gives EOF or an
/// error), reading whatever it sends; `None` if it stays open past `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn idle_and_trickling_connections_are_cut_while_others_are_served() {
    let server = Server::start(&["--header-timeout-secs", "2", "--body-timeout-secs", "2"]);
    let connect = || TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    // 200 connections that send nothing.
    let mut idle: Vec<TcpStream> = (0..200).map(|_| connect()).collect();
    // 10 that trickle their headers and 10 their body, a byte every 250 ms
    // for 8 s (what a slowloris client does), each on its own thread.
    let trickle = |body: bool| {
        let mut stream = connect();
        std::thread::spawn(move || {
            let start = Instant::now();
            let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n";
            let (first, rest) = if body {
                (
                    format!("{head}Content-Type: application/json\r\nContent-Length: 64\r\n\r\n"),
                    "x".repeat(64),
                )
            } else {
                (
                    String::new(),
                    format!("{head}X-Slow: {}\r\n", "a".repeat(40)),
                )
            };
            if stream.write_all(first.as_bytes()).is_err() {
                return start.elapsed();
            }
            for b in rest.bytes() {
                if stream.write_all(&[b]).is_err() {
                    return start.elapsed();
                }
                std::thread::sleep(Duration::from_millis(250));
                if start.elapsed() > Duration::from_secs(8) {
                    break;
                }
            }
            closed_within(&mut stream, Duration::from_secs(1))
                .map_or(Duration::MAX, |_| start.elapsed())
        })
    };
    let tricklers: Vec<_> = (0..20).map(|i| trickle(i % 2 == 1)).collect();
    // Meanwhile, others are served promptly.
    for _ in 0..5 {
        let start = Instant::now();
        let r = server.request("GET", "/health", None).expect("health");
        assert_eq!(r.status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let chat = r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}"#;
        let r = server
            .request("POST", "/v1/chat/completions", Some(chat))
            .expect("chat");
        assert_eq!(r.status, 200, "{}", r.body);
        std::thread::sleep(Duration::from_millis(300));
    }
    // The silent ones are closed after the header deadline.
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(10)).is_some(),
            "idle connection {i} is still open"
        );
    }
    // The trickling ones were cut long before they were done.
    for (i, t) in tricklers.into_iter().enumerate() {
        let cut = t.join().expect("trickler");
        assert!(cut < Duration::from_secs(6), "trickler {i} ran {cut:?}");
    }
}

#[test]
fn beyond_the_connection_cap_a_client_gets_a_503_at_once() {
    let server = Server::start(&["--max-connections", "20"]);
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).expect("connect"))
        .collect();
    // Accepted and counted before the next one arrives.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let r = server.request("GET", "/health", None).expect("refused");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "service_unavailable_error");
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(held);
    // Once they are gone, clients are served again.
    let mut served = false;
    for _ in 0..50 {
        if server
            .request("GET", "/health", None)
            .is_ok_and(|r| r.status == 200)
        {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "the server never served again");
    assert!(server.log().contains("max_connections"), "{}", server.log());
}

#[test]
fn requests_hyper_cannot_parse_get_the_envelope() {
    let server = Server::start(&[]);
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let many: String = (0..150).map(|i| format!("X-{i}: a\r\n")).collect();
    let many = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n");
    let target = format!(
        "GET /health?{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(70_000)
    );
    for (raw, status, says) in [
        (big.as_str(), 431, "headers are too large"),
        (many.as_str(), 431, "at most 100 fields"),
        (
            "GE T /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            400,
            "not valid HTTP",
        ),
        (target.as_str(), 431, "headers are too large"),
    ] {
        let r = server.raw(raw).expect("answered");
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let error = &r.json()["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert!(
            error["message"].as_str().expect("text").contains(says),
            "{error}"
        );
    }
    // Headers just under the limit are served as ever.
    let fits = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(60_000)
    );
    assert_eq!(server.raw(&fits).expect("answered").status, 200);
}
