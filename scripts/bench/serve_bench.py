"""pagoda against llama.cpp's server, side by side in one run.

Starts both on the same GGUF with the same thread count, drives each with
the same streaming chat workload (prompts of ~150 tokens made unique per
request, 128 output tokens, ignore_eos) at each concurrency level,
interleaving the two servers round by round, and prints per cell the
medians over rounds of output tokens/s, requests/s, time to first token
p50/p99 and inter-token latency p50/p99 for both, and pagoda's ratio to the
peer. Run through scripts/bench-vs-llamacpp.sh.

Mixed arrivals (`--long-prompts K`): while the streams decode, K long
prompts (`--long-words`, ~10x the stream prompts; 16 output tokens each)
arrive one after another, `--long-gap` seconds apart; the table then also
gives their TTFT p50/p99, and the streams' ITL shows what a long prefill
does to them (issue [12]'s "every decode waits whenever a prefill chunk
shares its step").
"""

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

WORDS = (
    "river mountain lantern harbor orchard meadow falcon glacier canyon velvet "
    "compass ember thunder willow marble cobalt saffron quartz maple cedar "
    "horizon beacon prism tundra lagoon summit zephyr aurora basalt juniper"
).split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt(rng: random.Random, words: int) -> str:
    """A unique request: an id and random words first, so no prefix is shared."""
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Request {rng.getrandbits(64):016x}. Write a long story using these words: {body}"


class Server:
    def __init__(self, name: str, args: list, port: int, env=None):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(Path(os.environ.get("BENCH_DIR", "target/bench")) / f"{name}.log", "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        sys.exit(f"{name} did not become healthy")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def one_request(client: httpx.AsyncClient, url: str, text: str, max_tokens: int) -> dict:
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    start = time.perf_counter()
    stamps = []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {await r.aread()}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for c in chunk.get("choices", []):
                if c.get("delta", {}).get("content"):
                    stamps.append(time.perf_counter())
    end = time.perf_counter()
    return {
        "ttft": stamps[0] - start if stamps else end - start,
        "itl": [b - a for a, b in zip(stamps, stamps[1:])],
        "tokens": len(stamps),
        "total": end - start,
    }


async def cell(url: str, concurrency: int, requests: int, rng: random.Random, words: int, max_tokens: int,
               long_prompts: int = 0, long_words: int = 1000, long_gap: float = 2.0) -> dict:
    texts = [prompt(rng, words) for _ in range(requests)]
    long_texts = [prompt(rng, long_words) for _ in range(long_prompts)]
    queue = list(texts)
    results = []
    long_results = []
    # A fresh connection per request: llama-server closes idle keep-alive
    # connections, and a reused closed one fails the request.
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker():
            while queue:
                text = queue.pop()
                results.append(await one_request(client, url, text, max_tokens))

        async def arrivals():
            for text in long_texts:
                await asyncio.sleep(long_gap)
                long_results.append(await one_request(client, url, text, 16))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)), arrivals())
        wall = time.perf_counter() - start
    ttfts = sorted(r["ttft"] for r in results)
    itls = sorted(x for r in results for x in r["itl"])
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
    long_ttfts = sorted(r["ttft"] for r in long_results)
    return {
        "long_ttft_p50": pct(long_ttfts, 0.5),
        "long_ttft_p99": pct(long_ttfts, 0.99),
        "tok_s": sum(r["tokens"] for r in results) / wall,
        "req_s": len(results) / wall,
        "ttft_p50": pct(ttfts, 0.5),
        "ttft_p99": pct(ttfts, 0.99),
        "itl_p50": pct(itls, 0.5),
        "itl_p99": pct(itls, 0.99),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pagoda", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-words", type=int, default=100, help="~150 tokens with the framing")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--pagoda-args", default="", help="extra flags for pagoda serve")
    ap.add_argument("--long-prompts", type=int, default=0,
                    help="mixed arrivals: long prompts arriving while the streams decode")
    ap.add_argument("--long-words", type=int, default=1000, help="~1,500 tokens with the framing")
    ap.add_argument("--long-gap", type=float, default=2.0, help="seconds between long arrivals")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    slots = max(levels) + (1 if args.long_prompts else 0)
    Path(os.environ.get("BENCH_DIR", "target/bench")).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PAGODA_LOG="warn", RAYON_NUM_THREADS=str(args.threads))
    port = free_port()
    pagoda = Server(
        "pagoda",
        [args.pagoda, "serve", "--model", args.model, "--port", str(port),
         "--served-model-name", "bench", "--max-num-seqs", str(slots),
         "--request-timeout-secs", "0", *args.pagoda_args.split()],
        port, env,
    )
    port = free_port()
    ctx = slots * (max(args.prompt_words, args.long_words if args.long_prompts else 0) * 2
                   + args.max_tokens + 64)
    peer = Server(
        "llama.cpp",
        [args.llama_server, "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
         "-t", str(args.threads), "-tb", str(args.threads), "--parallel", str(slots),
         "-c", str(ctx), "--no-webui"],
        port,
    )
    servers = [pagoda, peer]
    rng = random.Random(1)
    data = {(s.name, c): [] for s in servers for c in levels}
    try:
        for rnd in range(args.rounds):
            for c in levels:
                for s in (servers if rnd % 2 == 0 else servers[::-1]):
                    r = asyncio.run(cell(s.url, c, max(c, 2), rng, args.prompt_words, args.max_tokens,
                                         args.long_prompts, args.long_words, args.long_gap))
                    data[(s.name, c)].append(r)
                    print(f"round {rnd + 1} c={c:>2} {s.name:<9} {r['tok_s']:6.1f} tok/s "
                          f"ttft p50 {r['ttft_p50']:.2f}s itl p50 {r['itl_p50'] * 1000:.0f}ms", flush=True)
        rss = {s.name: s.rss_mib() for s in servers}
    finally:
        for s in servers:
            s.stop()
    med = lambda name, c, k: statistics.median(r[k] for r in data[(name, c)])
    print()
    print(f"medians of {args.rounds} rounds; {args.threads} threads; prompts ~150 tokens, "
          f"{args.max_tokens} output tokens, ignore_eos")
    print("| concurrency | server | output tok/s | req/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in levels:
        for name in ("pagoda", "llama.cpp"):
            print(f"| {c} | {name} | {med(name, c, 'tok_s'):.1f} | {med(name, c, 'req_s'):.2f} | "
                  f"{med(name, c, 'ttft_p50'):.2f} s | {med(name, c, 'ttft_p99'):.2f} s | "
                  f"{med(name, c, 'itl_p50') * 1000:.0f} ms | {med(name, c, 'itl_p99') * 1000:.0f} ms |")
        ratio = lambda k: med("pagoda", c, k) / med("llama.cpp", c, k)
        print(f"| {c} | **pagoda / llama.cpp** | **{ratio('tok_s'):.2f}x** | {ratio('req_s'):.2f}x | "
              f"{ratio('ttft_p50'):.2f}x | {ratio('ttft_p99'):.2f}x | {ratio('itl_p50'):.2f}x | {ratio('itl_p99'):.2f}x |")
    if args.long_prompts:
        print(f"\nmixed arrivals: {args.long_prompts} prompts of ~{args.long_words} words, "
              f"{args.long_gap:g} s apart, while the streams decode")
        print("| concurrency | server | long-prompt TTFT p50 | long-prompt TTFT p99 | streams' ITL p99 |")
        print("| --- | --- | --- | --- | --- |")
        for c in levels:
            for name in ("pagoda", "llama.cpp"):
                print(f"| {c} | {name} | {med(name, c, 'long_ttft_p50'):.2f} s | "
                      f"{med(name, c, 'long_ttft_p99'):.2f} s | {med(name, c, 'itl_p99') * 1000:.0f} ms |")
    print(f"\nresident memory at the end: pagoda {rss['pagoda']:.0f} MiB, llama.cpp {rss['llama.cpp']:.0f} MiB")


if __name__ == "__main__":
    main()
