"""Flood-plus-one: does one client's request wait behind another's flood?

Starts `pagoda serve` (release build) on the default model on a free
loopback port, measures the time to first token of a few requests of key
`single` on the idle server, then starts `--flood` streaming clients of key
`flood` (each sends a request after the other, 128 tokens each, unique
prompts) and measures `single`'s TTFT again while the flood runs. Prints
both and their ratio (issue [12]'s target: at most 2x). Bounded: a fixed
number of requests, each with a timeout; no result is asserted. Not part of
CI.

    .venv-bench/bin/python scripts/bench/flood_plus_one.py [--pagoda-args "--max-tokens-per-step 128"]
"""

import argparse
import json
import random
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import free_port, prompt  # noqa: E402


def ttft(url: str, key: str, rng: random.Random, max_tokens: int) -> float:
    """Seconds to the first content token of one streamed chat request."""
    body = {
        "messages": [{"role": "user", "content": prompt(rng, 40)}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    started = time.monotonic()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600,
                      headers={"authorization": f"Bearer {key}"}) as r:
        first = None
        for line in r.iter_lines():
            if first is None and line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                    first = time.monotonic() - started
    return first if first is not None else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pagoda", default="target/release/pagoda")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--flood", type=int, default=32, help="concurrent flooding clients")
    ap.add_argument("--probes", type=int, default=5, help="single requests, idle and under the flood")
    ap.add_argument("--pagoda-args", default="")
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([args.pagoda, "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--model", args.model, *shlex.split(args.pagoda_args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("pagoda did not become healthy")
            time.sleep(0.2)
        rng = random.Random(7)
        ttft(url, "warm-up", rng, 4)
        idle = [ttft(url, "single", rng, 16) for _ in range(args.probes)]
        stop = threading.Event()

        def flooder(seed: int):
            frng = random.Random(seed)
            while not stop.is_set():
                ttft(url, "flood", frng, 128)

        threads = [threading.Thread(target=flooder, args=(i,)) for i in range(args.flood)]
        for t in threads:
            t.start()
        time.sleep(5)
        loaded = []
        for _ in range(args.probes):
            loaded.append(ttft(url, "single", rng, 16))
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait()
    ratio = statistics.median(loaded) / statistics.median(idle)
    print(f"idle TTFT p50 {statistics.median(idle) * 1000:.0f} ms; "
          f"under a flood of {args.flood} clients of another key p50 {statistics.median(loaded) * 1000:.0f} ms, "
          f"max {max(loaded) * 1000:.0f} ms; ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
