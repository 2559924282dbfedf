#!/usr/bin/env python3
"""Chaos run against a real `pagoda serve` on a loopback port.

Starts the server on the default model, then, each phase bounded in count
and time:

1. disconnect storm: streamed chats cut at seeded random points (some with
   a TCP reset);
2. overload: more clients than seats send short chats for a while; the
   process's resident memory is sampled;
3. slow clients: connections that trickle their headers or their body a
   byte at a time, while a probe keeps asking for /health and a short chat;
4. bad-input sweep: malformed requests of every kind.

It ends by waiting for the engine to go idle and prints one summary line:
KV blocks still used (leaked), 5xx answers, answers outside the error
envelope, whether a greedy answer is the same as before the chaos, the
resident memory's growth after warm-up, the probe's latency under slow
clients, and how many slow clients were cut. The exit status is 1 when a
hard check fails (a leak, a 5xx, a bare error, a changed answer, a failed
probe, a slow client left open, the server gone). Latencies are reported,
never asserted. Standard library only; nothing leaves 127.0.0.1.

    scripts/chaos/chaos.py                        full run (under 3 minutes)
    scripts/chaos/chaos.py --short                the test suite's version (~30 s)
    scripts/chaos/chaos.py --pagoda target/debug/pagoda
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
HOST = "127.0.0.1"
SEED = 20261204


@dataclass(frozen=True)
class Plan:
    """How much of each phase a run does."""

    storm_streams: int
    storm_workers: int
    overload_seconds: float
    overload_clients: int
    slow_clients: int
    slow_seconds: float


FULL = Plan(storm_streams=300, storm_workers=16, overload_seconds=60.0, overload_clients=80,
            slow_clients=200, slow_seconds=20.0)
SHORT = Plan(storm_streams=40, storm_workers=8, overload_seconds=8.0, overload_clients=24,
             slow_clients=40, slow_seconds=8.0)


@dataclass
class Tally:
    """What the phases saw, shared between threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: dict[int, int] = field(default_factory=dict)
    bare_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def status(self, code: int) -> None:
        with self.lock:
            self.statuses[code] = self.statuses.get(code, 0) + 1

    def bare(self, what: str) -> None:
        with self.lock:
            self.bare_errors.append(what)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def count_5xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 120.0):
    """One request on its own connection: `(status, headers, body)`."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Writes `data` as is and reads until the server closes."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


def chat(content: str, **extra) -> bytes:
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0}
    body.update(extra)
    return json.dumps(body).encode()


JSON = {"content-type": "application/json"}


class Server:
    """The `pagoda serve` process under test."""

    def __init__(self, pagoda: Path):
        self.port = free_port()
        args = [str(pagoda), "serve", "--host", HOST, "--port", str(self.port),
                "--model", str(MODEL), "--max-num-seqs", "16", "--max-waiting", "32",
                "--max-connections", "512", "--header-timeout-secs", "3",
                "--body-timeout-secs", "3"]
        env = dict(os.environ, PAGODA_LOG="warn")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pagoda serve exited with {self.proc.returncode}")
            try:
                if request(self.port, "GET", "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("pagoda serve did not become healthy within 120 s")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def metric(self, name: str) -> float | None:
        _, _, body = request(self.port, "GET", "/metrics", timeout=10)
        for line in body.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def greedy_answer(port: int) -> str:
    status, _, body = request(port, "POST", "/v1/chat/completions",
                              chat("Name three colours of the rainbow.", max_tokens=24), JSON)
    if status != 200:
        return f"<status {status}>"
    return json.loads(body)["choices"][0]["message"]["content"]


def storm(server: Server, plan: Plan, tally: Tally) -> int:
    """Streams cut at seeded random points; returns how many were cut."""
    rng = random.Random(SEED)
    cuts = [(rng.randint(4, 64), rng.randint(0, 3000), rng.random() < 0.5)
            for _ in range(plan.storm_streams)]

    def one(i: int) -> None:
        max_tokens, read_bytes, reset = cuts[i]
        body = chat(f"Tell me a story about the number {i}.", max_tokens=max_tokens, stream=True)
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            with socket.create_connection((HOST, server.port), timeout=60) as s:
                s.sendall(head.encode() + body)
                got = b""
                while len(got) < read_bytes:
                    chunk = s.recv(min(4096, read_bytes - len(got)))
                    if not chunk:
                        break
                    got += chunk
                if got.startswith(b"HTTP/1.1 5"):
                    tally.status(int(got[9:12]))
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as e:
            tally.fail(f"storm stream {i}: {e}")

    with ThreadPoolExecutor(plan.storm_workers) as pool:
        list(pool.map(one, range(plan.storm_streams)))
    return plan.storm_streams


def overload(server: Server, plan: Plan, tally: Tally) -> tuple[float, float]:
    """Clients beyond the seats for a while; returns (RSS after warm-up,
    largest RSS after it), in MiB."""
    stop_at = time.monotonic() + plan.overload_seconds
    warm_at = time.monotonic() + plan.overload_seconds / 3
    samples: list[tuple[float, float]] = []

    def client(k: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            try:
                status, headers, body = request(
                    server.port, "POST", "/v1/chat/completions",
                    chat(f"Client {k}, request {n}: say hello.", max_tokens=8), JSON, timeout=120)
            except OSError as e:
                tally.fail(f"overload client {k}: {e}")
                continue
            tally.status(status)
            if status >= 400:
                check_envelope(f"overload {status}", status, headers, body, tally)
            if status == 429:
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(plan.overload_clients)]
    for t in threads:
        t.start()
    while time.monotonic() < stop_at:
        samples.append((time.monotonic(), server.rss_mib()))
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=180)
    warm = next((rss for at, rss in samples if at >= warm_at), samples[-1][1])
    later = max(rss for at, rss in samples if at >= warm_at) if samples else warm
    return warm, max(later, server.rss_mib())


def slow_clients(server: Server, plan: Plan, tally: Tally) -> tuple[list[float], int, int]:
    """Trickling clients with a probe alongside; returns (probe latencies in
    ms, slow clients cut, slow clients opened)."""
    stop_at = time.monotonic() + plan.slow_seconds
    cut = [0]
    lock = threading.Lock()

    def trickle(k: int) -> None:
        body_kind = k % 2 == 1
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\n"
                f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
        try:
            with socket.create_connection((HOST, server.port), timeout=5) as s:
                if body_kind:
                    s.sendall(head)
                    payload = b"{" + b" " * 999
                else:
                    payload = head
                for byte in payload:
                    if time.monotonic() > stop_at + 10:
                        return
                    s.sendall(bytes([byte]))
                    time.sleep(0.5)
        except OSError:
            # Cut by the server (reset or closed while writing).
            with lock:
                cut[0] += 1

    threads = [threading.Thread(target=trickle, args=(k,), daemon=True)
               for k in range(plan.slow_clients)]
    for t in threads:
        t.start()
    latencies = []
    while time.monotonic() < stop_at:
        for method, path, body in (("GET", "/health", None),
                                   ("POST", "/v1/chat/completions", chat("Hi!", max_tokens=4))):
            start = time.monotonic()
            try:
                status, _, _ = request(server.port, method, path, body, JSON, timeout=60)
                tally.status(status)
                if status != 200:
                    tally.fail(f"probe {path}: {status}")
            except OSError as e:
                tally.fail(f"probe {path}: {e}")
            latencies.append((time.monotonic() - start) * 1000)
        time.sleep(0.25)
    for t in threads:
        t.join(timeout=15)
    return latencies, cut[0], plan.slow_clients


def check_envelope(what: str, status: int, headers: dict[str, str], body: bytes,
                   tally: Tally) -> None:
    try:
        error = json.loads(body)["error"]
        ok = (headers.get("content-type", "").startswith("application/json")
              and isinstance(error["message"], str) and isinstance(error["type"], str)
              and "param" in error and "code" in error)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        tally.bare(f"{what}: {status} {body[:120]!r}")


BAD_BODIES: list[tuple[str, bytes]] = [
    ("not JSON", b"{not json"),
    ("empty body", b""),
    ("a JSON array", b"[]"),
    ("a JSON string", b"\"hello\""),
    ("invalid UTF-8", b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}"),
    ("deep nesting", b"[" * 10000 + b"]" * 10000),
    ("no messages", b"{}"),
    ("messages not a list", chat("x")[:-1] + b", \"messages\": 5}"),
    ("empty messages", b"{\"messages\": []}"),
    ("unknown role", b"{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}"),
    ("content a number", b"{\"messages\": [{\"role\": \"user\", \"content\": 5}]}"),
    ("n = 0", chat("x", n=0)),
    ("n = 10000", chat("x", n=10000)),
    ("max_tokens = -1", chat("x", max_tokens=-1)),
    ("max_tokens huge", chat("x", max_tokens=10**12)),
    ("temperature 5", chat("x", temperature=5)),
    ("temperature NaN text", chat("x")[:-1] + b", \"temperature\": NaN}"),
    ("top_p 2", chat("x", top_p=2)),
    ("top_k string", chat("x", top_k="five")),
    ("top_logprobs 100", chat("x", logprobs=True, top_logprobs=100)),
    ("ten stops", chat("x", stop=[str(i) for i in range(10)])),
    ("stop a number", chat("x", stop=5)),
    ("logit_bias key", chat("x", logit_bias={"abc": 1})),
    ("logit_bias out of vocabulary", chat("x", logit_bias={"999999": 1})),
    ("logit_bias value", chat("x", logit_bias={"5": 1000})),
    ("seed a string", chat("x", seed="s")),
    ("tools not a list", chat("x", tools=5)),
    ("tool without a name", chat("x", tools=[{"type": "function", "function": {}}])),
    ("tool_choice unknown", chat("x", tool_choice="sometimes")),
    ("response_format unknown", chat("x", response_format={"type": "yaml"})),
    ("json_schema empty ref", chat("x", response_format={
        "type": "json_schema", "json_schema": {"name": "s", "schema": {"$ref": "#"}}})),
    ("guided_regex that matches nothing", chat("x", guided_regex="[^\\s\\S]")),
    ("guided_regex invalid", chat("x", guided_regex="(")),
    ("model unknown", chat("x", model="no-such-model")),
    ("stream a string", chat("x", stream="yes")),
    ("a prompt beyond the context", chat("hello " * 9000)),
]


def bad_inputs(server: Server, tally: Tally) -> int:
    """Every malformed request gets a 4xx in the envelope; returns the count."""
    chat_path, completions_path = "/v1/chat/completions", "/v1/completions"
    requests = [(f"chat {what}", "POST", chat_path, body, JSON) for what, body in BAD_BODIES]
    requests += [(f"completions {what}", "POST", completions_path, body, JSON) for what, body in [
        ("prompt a dict", b"{\"prompt\": {\"a\": 1}}"),
        ("token id 2^32", b"{\"prompt\": [4294967296]}"),
        ("token id out of vocabulary", b"{\"prompt\": [[1, 2], [99999999]]}"),
        ("too many prompts", json.dumps({"prompt": ["x"] * 500}).encode()),
        ("echo with a stream of logprobs", b"{\"prompt\": \"x\", \"logprobs\": 50}"),
    ]]
    requests += [
        ("edge text/plain", "POST", chat_path, chat("x"), {"content-type": "text/plain"}),
        ("edge form", "POST", chat_path, b"a=b", {"content-type": "application/x-www-form-urlencoded"}),
        ("edge wrong method", "GET", chat_path, None, {}),
        ("edge unknown route", "GET", "/v1/nothing", None, {}),
    ]
    cases = 0
    for what, method, path, body, headers in requests:
        cases += 1
        try:
            status, got_headers, data = request(server.port, method, path, body, headers)
        except OSError as e:
            tally.fail(f"{what}: {e}")
            continue
        tally.status(status)
        if not 400 <= status < 500:
            tally.fail(f"{what}: status {status}")
        check_envelope(what, status, got_headers, data, tally)
    raw = [
        ("headers over 64 KiB", f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {'a' * 100000}\r\n\r\n"),
        ("not HTTP", "HELLO THERE\r\n\r\n"),
        # One byte over the limit: read whole, then refused.
        ("body over 8 MiB", f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\n"
         f"Content-Type: application/json\r\nContent-Length: {(8 << 20) + 1}\r\n\r\n"
         + " " * ((8 << 20) + 1)),
    ]
    for what, data in raw:
        cases += 1
        answer = raw_exchange(server.port, data.encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        try:
            status = int(head[9:12])
        except ValueError:
            tally.fail(f"raw {what}: no answer")
            continue
        tally.status(status)
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        check_envelope(f"raw {what}", status, headers, body, tally)
    return cases


def wait_idle(server: Server, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        running = server.metric("pagoda_num_requests_running") or 0
        waiting = server.metric("pagoda_num_requests_waiting") or 0
        if running == 0 and waiting == 0:
            return
        time.sleep(0.25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pagoda", type=Path, default=ROOT / "target" / "release" / "pagoda")
    parser.add_argument("--short", action="store_true", help="the test suite's version")
    args = parser.parse_args()
    plan = SHORT if args.short else FULL
    if not MODEL.exists():
        print(f"{MODEL} is missing: run scripts/fetch-model.sh", file=sys.stderr)
        return 2
    started = time.monotonic()
    server = Server(args.pagoda)
    tally = Tally()
    try:
        before = greedy_answer(server.port)
        streams = storm(server, plan, tally)
        warm, peak = overload(server, plan, tally)
        latencies, cut, slow = slow_clients(server, plan, tally)
        cases = bad_inputs(server, tally)
        wait_idle(server)
        leaked = server.metric("pagoda_kv_blocks_used")
        after = greedy_answer(server.port)
        alive = server.alive()
    finally:
        server.stop()
    if leaked is None or leaked > 0:
        tally.fail(f"KV blocks still used when idle: {leaked}")
    if after != before:
        tally.fail(f"the greedy answer changed: {before!r} then {after!r}")
    if cut < slow:
        tally.fail(f"{slow - cut} of {slow} slow clients were never cut")
    if not alive:
        tally.fail("the server died")
    fivexx = tally.count_5xx()
    ok = not tally.failures and not tally.bare_errors and fivexx == 0
    statuses = ",".join(f"{k}:{v}" for k, v in sorted(tally.statuses.items()))
    p50 = statistics.median(latencies) if latencies else float("nan")
    print(f"chaos: {'ok' if ok else 'FAILED'} blocks_leaked={leaked:.0f} 5xx={fivexx} "
          f"bare_errors={len(tally.bare_errors)} answers_identical={'yes' if after == before else 'no'} "
          f"rss_growth_after_warmup_mib={peak - warm:.1f} (warm {warm:.0f}) "
          f"probe_p50_ms={p50:.0f} probe_max_ms={max(latencies, default=float('nan')):.0f} "
          f"slow_cut={cut}/{slow} streams_cut={streams} bad_inputs={cases} "
          f"statuses={statuses} seconds={time.monotonic() - started:.0f}")
    for line in (tally.failures + tally.bare_errors)[:20]:
        print(f"  {line}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
