"""`make bench` in miniature (`python -m bench --quick`), so the benchmark never rots."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = 9  # the hello twice, /health, three leaderboard reads, two syncs, stats

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("HC_TEST_BACKEND", "embedded") != "embedded",
        reason="the benchmark starts its own service: run once, with the embedded backend",
    ),
    pytest.mark.skipif(
        shutil.which("wrk") is None and os.geteuid() != 0,
        reason="wrk is not installed (apt-get install wrk)",
    ),
]


def _table(out: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header starts with `header`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


@pytest.mark.timeout(240)
def test_quick_bench_measures_every_row_without_errors(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--no-write"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the bench stops its servers on the way out
        try:
            out, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"the quick bench took over 120 s:\n{err[-4000:]}")
    finally:
        # Stopped, whatever happened: no server of its own left, no scratch directory.
        assert not _processes_mentioning(str(tmp_path)), "a server of the bench outlived it"
        assert not list(tmp_path.iterdir()), "the bench left its temporary directory"
    assert proc.returncode == 0, err[-4000:]

    rows = _table(out, "| row ")
    assert len(rows) == ROWS, out
    for label, rps, _p50, _p99, errors, *_ in rows:
        assert float(rps.replace(",", "")) > 0, label
        assert errors == "0", f"{label}: {errors} errors"
    million = _table(out, "| request ")
    assert len(million) == 4, out  # around and rank, one and eight requests in flight
    for label, _in_flight, _p50, _p99, rps, errors in million:
        assert float(rps.replace(",", "")) > 0, label
        assert errors == "0", f"{label}: {errors} errors"
    analytics = _table(out, "| analytics request ")
    # Cold right after a board change, then the cached view: full and summary.
    assert [row[0] for row in analytics] == [
        "cold: full view, right after a board change",
        "warm: full view (service token)",
        "warm: summary view (participants' tokens)",
    ], out
    cold, *warm = analytics
    assert cold[2] == "10" and float(cold[3]) <= float(cold[5]), cold  # 10 requests, p50 <= max
    for label, _in_flight, _requests, p50, p99, _max, rps, errors in warm:
        assert float(rps.replace(",", "")) > 0, label
        assert float(p50) <= float(p99), label
        assert errors == "0", f"{label}: {errors} errors"
    assert "### Analytics (1,000 participants x 30 days)" in out, out
    websocket = _table(out, "| scenario ")
    # One competition and many: 200 connections each, every score_update delivered.
    assert [row[0] for row in websocket] == ["one competition", "many competitions"], out
    for name, opened, _comps, syncs, deliveries, lost, p50, p99, _max, kib, _rss in websocket:
        assert opened == "200", f"{name}: {opened} connections opened"
        assert int(syncs) > 0 and int(deliveries.replace(",", "")) > 0, name
        assert lost == "0", f"{name}: {lost} score_update frames lost"
        assert float(p50) <= float(p99), name
        assert kib != "n/a", name
