"""The README's demo runs and shows what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_walks_through_every_status() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    lines = out.splitlines()

    def line(prefix: str) -> str:
        return next(x for x in lines if x.strip().startswith(prefix))

    assert "statuses: ['MISS'], origin calls: 1" in out  # 100 readers, one fetch
    assert "STALE " in line("3. Past ttl")
    assert "(v1)" in line("3. Past ttl")
    assert "HIT" in line("4. After the background refresh")
    assert "(v2)" in out
    assert "MISS" in line("next read fetches")
    assert "(v3)" in line("next read fetches")
    assert "STALE-IF-ERROR" in line("expired, origin down")
    assert "raised ConnectionError" in line("origin still down")
    assert "STALE" in line("stale at once while it refreshes")
    assert "About us (v2)" in line("then fresh")
