"""The soak benchmark in its short mode (~150 sessions through crons with watchdogs and random failures, under
2 minutes): its audit of the store must find nothing, and the runtime's memory must not run away."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.faults.helpers import ENV, PY

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


@pytest.mark.timeout(150)
def test_short_soak_every_session_ends_once_and_the_rates_add_up(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    p = subprocess.run(
        [PY, str(SOAK), "--short", "--quiet", "--data-dir", str(tmp_path / "soak"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=140,
        env=ENV,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    figures = json.loads(out.read_text())
    assert figures["problems"] == []
    assert figures["sessions"] >= 150 and figures["with_cron_run"] == figures["sessions"]
    assert sum(figures["states"].values()) == figures["sessions"]
    assert figures["wall_seconds"] < 120
    assert figures["rss_kb"]["growth_after_warmup"] < 32 * 1024, figures["rss_kb"]
