"""pagoda against llama.cpp's server on the same 1B-class GGUF in each
quantization type, side by side in one run: output tokens/s at 1 and 8
concurrent streams, prefill tokens/s of a ~2,000-token prompt, and
single-stream decode against the read-bandwidth bound (the bytes of the
weights one token reads, over the machine's measured read bandwidth).
Run through scripts/bench/quant-matrix.sh, which builds everything.
"""

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import httpx
from gguf import GGUFReader

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import Server, cell, free_port, prompt  # noqa: E402


def weight_bytes_per_token(path: Path) -> int:
    """Bytes of every matrix a decode step reads: all of them, except the
    token embedding when an untied output head exists (a lookup reads one
    row)."""
    reader = GGUFReader(str(path))
    names = {t.name: int(t.n_bytes) for t in reader.tensors}
    total = sum(names.values())
    if "output.weight" in names:
        total -= names.get("token_embd.weight", 0)
    return total


def prefill(url: str, text: str) -> tuple:
    """Prompt tokens and seconds to the first token of one streamed request."""
    body = {"model": "bench", "messages": [{"role": "user", "content": text}],
            "max_tokens": 2, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, tokens = None, None
    with httpx.Client(timeout=600) as client:
        with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                import json
                chunk = json.loads(line[6:])
                if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - start
                if chunk.get("usage"):
                    tokens = chunk["usage"]["prompt_tokens"]
    return tokens, first if first is not None else time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pagoda", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--models", nargs="+", required=True, help="GGUF files, one per type")
    ap.add_argument("--bandwidth", type=float, required=True, help="read bandwidth, GB/s")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prefill-words", type=int, default=1300, help="~2,000 tokens")
    args = ap.parse_args()
    Path("target/bench").mkdir(parents=True, exist_ok=True)
    rows = []
    for model in map(Path, args.models):
        kind = model.stem.split(".")[-1]
        env = {"PAGODA_LOG": "warn"}
        import os
        env = dict(os.environ, **env)
        port = free_port()
        pagoda = Server("pagoda", [args.pagoda, "serve", "--model", str(model), "--port", str(port),
                                   "--served-model-name", "bench", "--max-num-seqs", "8",
                                   "--request-timeout-secs", "0"], port, env)
        port = free_port()
        peer = Server("llama.cpp", [args.llama_server, "-m", str(model), "--host", "127.0.0.1",
                                    "--port", str(port), "-t", str(args.threads), "-tb", str(args.threads),
                                    "--parallel", "8", "-c", str(8 * 2600), "--no-webui"], port)
        servers = [pagoda, peer]
        rng = random.Random(7)
        got = {(s.name, k): [] for s in servers for k in ("c1", "c8", "itl", "prefill")}
        try:
            for rnd in range(args.rounds):
                order = servers if rnd % 2 == 0 else servers[::-1]
                long_text = prompt(rng, args.prefill_words)
                for s in order:
                    tokens, secs = prefill(s.url, long_text)
                    got[(s.name, "prefill")].append(tokens / secs)
                for c in (1, 8):
                    for s in order:
                        r = asyncio.run(cell(s.url, c, max(c, 2), rng, 100, args.max_tokens))
                        got[(s.name, f"c{c}")].append(r["tok_s"])
                        if c == 1:
                            got[(s.name, "itl")].append(r["itl_p50"])
                        print(f"{kind} round {rnd + 1} c={c} {s.name:<9} {r['tok_s']:6.1f} tok/s "
                              f"itl p50 {r['itl_p50'] * 1000:.0f} ms", flush=True)
            rss = pagoda.rss_mib()
        finally:
            for s in servers:
                s.stop()
        med = lambda name, k: statistics.median(got[(name, k)])
        per_token = weight_bytes_per_token(model)
        bound = args.bandwidth * 1e9 / per_token
        decode = 1.0 / med("pagoda", "itl")
        peer_decode = 1.0 / med("llama.cpp", "itl")
        rows.append((kind, med("pagoda", "c1") / med("llama.cpp", "c1"),
                     med("pagoda", "c8") / med("llama.cpp", "c8"),
                     med("pagoda", "prefill"), med("llama.cpp", "prefill"),
                     decode, peer_decode, bound, model.stat().st_size / 2**20, rss))
    print()
    print(f"1B-class llama (hidden 2048, 16 layers, 32/8 heads, FFN 8192), {args.threads} threads, "
          f"read bandwidth {args.bandwidth:.1f} GB/s; medians of {args.rounds} round(s); "
          f"streams: ~150-token prompts, {args.max_tokens} output tokens")
    print("| type | out tok/s, 1 stream: pagoda / llama.cpp | 8 streams | prefill ~2k tokens, tok/s: pagoda / llama.cpp | "
          "decode tok/s (1 / ITL p50): pagoda, llama.cpp | read bound | pagoda % of bound | file MiB | pagoda RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, r1, r8, pp, pp_peer, dec, dec_peer, bound, size, rss in rows:
        print(f"| {kind} | **{r1:.2f}x** | **{r8:.2f}x** | {pp:.0f} / {pp_peer:.0f} = **{pp / pp_peer:.2f}x** | "
              f"{dec:.1f}, {dec_peer:.1f} | {bound:.1f} | {100 * dec / bound:.0f}% | {size:.0f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
