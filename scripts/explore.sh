#!/usr/bin/env bash
# Exploration outside the test gate: longer, randomized runs that look for
# new failures. The gate (scripts/test.sh) replays fixed seeds and fixed
# example counts so it passes or fails alike on every run; this script
# explores further and may find something new on any run. Whatever it finds
# becomes a fixed test (a case in the unit tests, a proptest regression, an
# explicit request in tests/python).
#
#   scripts/explore.sh [SECONDS]   (default 600: how long schemathesis explores)
#
# 1. schemathesis against the real server, time-boxed, random seed;
# 2. the scheduler's property test with a few random seeds, 2,000 cases each.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-600}
python=$(scripts/python-env.sh | tail -n 1)
scripts/fetch-model.sh
cargo build --release --locked

port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/pagoda serve --host 127.0.0.1 --port "$port" \
    --request-timeout-secs 2 --max-waiting 256 >/tmp/pagoda-explore.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    curl -sf "127.0.0.1:$port/health" >/dev/null && break
    sleep 1
done

echo "==> schemathesis for ${seconds}s (server log: /tmp/pagoda-explore.log)"
.venv/bin/schemathesis run "http://127.0.0.1:$port/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method,missing_required_header \
    --max-time "$seconds" --workers 1 --request-timeout 30 --max-failures 20 || status=$?

for seed in $RANDOM $RANDOM $RANDOM; do
    echo "==> scheduler properties, seed $seed"
    PAGODA_EXPLORE_SEED=$seed PAGODA_EXPLORE_CASES=2000 \
        cargo test -p pagoda-engine --test scheduler_props --locked -q || status=$?
done
exit "${status:-0}"
