//! Who runs, end to end on the real binary and default model: one API key
//! floods the seats (`--max-num-seqs 2`, four long requests), and another
//! key's short request still takes a seat at once — the flood's newest
//! running sequence gives it up and waits — so it ends while the flood's
//! requests are all still running. Bounded in count and time; no timing
//! assertion: the order follows from token counts (8 against 160).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagoda_tests::Server;

fn completion(max_tokens: usize) -> String {
    serde_json::json!({
        "prompt": "Write a long story about a lighthouse keeper.",
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0,
    })
    .to_string()
}

#[test]
fn another_keys_request_is_not_queued_behind_a_flood() {
    let server = Arc::new(Server::start(&[
        "--max-num-seqs",
        "2",
        "--max-tokens-per-step",
        "64",
    ]));
    let finished = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..4)
        .map(|_| {
            let (server, finished) = (Arc::clone(&server), Arc::clone(&finished));
            std::thread::spawn(move || {
                let r = server
                    .request_with(
                        "POST",
                        "/v1/completions",
                        Some(&completion(160)),
                        &[("Authorization", "Bearer flood")],
                    )
                    .expect("flood request");
                finished.fetch_add(1, Ordering::SeqCst);
                r.status
            })
        })
        .collect();
    // Wait (bounded) until the flood holds both seats and two wait.
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.metric("pagoda_num_requests_running") != Some(2.0)
        || server.metric("pagoda_num_requests_waiting") != Some(2.0)
    {
        assert!(
            Instant::now() < deadline,
            "the flood never filled the seats"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let single = server
        .request_with(
            "POST",
            "/v1/completions",
            Some(&completion(8)),
            &[("Authorization", "Bearer single")],
        )
        .expect("single request");
    assert_eq!(single.status, 200, "{}", single.body);
    assert_eq!(single.json()["usage"]["completion_tokens"], 8);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the single request ended after a flood request"
    );
    assert!(server.metric("pagoda_preemptions_total").unwrap_or(0.0) >= 1.0);
    for t in flood {
        assert_eq!(t.join().expect("flood thread"), 200);
    }
}

#[test]
fn priority_is_an_integer_field() {
    let server = Server::start(&[]);
    let body = serde_json::json!({"prompt": "Hi", "max_tokens": 2, "priority": -5}).to_string();
    let r = server
        .request("POST", "/v1/completions", Some(&body))
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    for bad in ["1e40", "\"high\"", "4294967296"] {
        let body = format!(r#"{{"prompt": "Hi", "max_tokens": 2, "priority": {bad}}}"#);
        let r = server
            .request("POST", "/v1/completions", Some(&body))
            .expect("request");
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        let e = r.json();
        assert!(e["error"]["message"].is_string(), "{}", r.body);
    }
}
