"""Fixtures of pagoda's Python suite: the real `pagoda` binary serving the
real default model on a free loopback port, and OpenAI SDK clients for it.

The binary is `target/debug/pagoda` (what `cargo build` leaves; the test
command builds it first) or the one `PAGODA_BIN` names.
"""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2"


def pagoda_bin() -> Path:
    bin_path = Path(os.environ.get("PAGODA_BIN", ROOT / "target" / "debug" / "pagoda"))
    if not bin_path.exists():
        pytest.exit(f"{bin_path} is missing: run `cargo build` (scripts/test.sh does)", 2)
    if not MODEL.exists():
        pytest.exit(f"{MODEL} is missing: run scripts/fetch-model.sh", 2)
    return bin_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `pagoda serve` process; `url` is its base URL."""

    def __init__(self, *extra: str, model: Path = MODEL, activations: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            str(pagoda_bin()), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--model", str(model), "--served-model-name", MODEL_NAME,
            *extra,
        ]
        # The default activations (int8x2 on this model) stay within f32
        # noise of transformers' arithmetic, so tests can expect "Paris";
        # `activations="int8"` (llama.cpp's arithmetic) for throughput.
        if activations is not None:
            args += ["--activations", activations]
        env = dict(os.environ, PAGODA_LOG="warn")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pagoda serve exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("pagoda serve did not become healthy within 120 s")

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.load(r)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
