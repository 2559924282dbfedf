"""The short chaos run (scripts/chaos/chaos.py --short) against the debug
binary: a disconnect storm, an overload, slow clients and a bad-input sweep
leave no KV block used, no 5xx, no error outside the envelope, the same
greedy answer, every slow client cut and every probe served."""

import subprocess
import sys

from conftest import ROOT, pagoda_bin


def test_the_short_chaos_run_holds():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos" / "chaos.py"), "--short",
         "--pagoda", str(pagoda_bin())],
        capture_output=True, text=True, timeout=600,
    )
    summary = out.stdout.strip().splitlines()
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert summary and summary[-1].startswith("chaos: ok blocks_leaked=0 5xx=0 bare_errors=0"), out.stdout
    assert "answers_identical=yes" in summary[-1]
