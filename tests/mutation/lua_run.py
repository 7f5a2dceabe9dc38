"""Planted changes in the Lua scripts (`planted.py`), one at a time, on a snapshot.

For each change: the snippet is replaced in the snapshot's copy of the file, every
script of that module is loaded into a scratch Redis (a change that only breaks the
syntax is reported `invalid`, not counted), the change's tests run (`-x`, quiet, the
embedded Redis, a time limit), and the file is put back and checked unchanged with
`git diff --quiet` in the snapshot (the run stops if it is not). `caught`: a test
failed (or the run timed out); `survived`: every test passed with the change in.

Before any change, the union of the tests runs once on the unchanged snapshot: a test
that fails there would make every change look caught, so the run stops.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.mutation.planted import PLANTED, Planted
from tests.mutation.tree import git, nice, snapshot, snapshot_env

_CHECK = """
import importlib, sys
import redis
from healthcomp.core.lua import Lua
client = redis.Redis.from_url(sys.argv[1])
bad = []
module = importlib.import_module(sys.argv[2])
for attr, value in vars(module).items():
    if isinstance(value, Lua):
        source = value.source
    elif isinstance(value, str) and "redis.call(" in value:
        source = value
    else:
        continue
    try:
        client.script_load(source)
    except redis.ResponseError as exc:
        bad.append(f"{attr}: {exc}")
print("; ".join(bad))
sys.exit(1 if bad else 0)
"""

_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


@dataclass
class Outcome:
    planted: Planted
    result: str  # caught | survived | invalid | stale | error
    detail: str
    seconds: float

    def to_json(self) -> dict[str, object]:
        p = self.planted
        return {
            "id": p.id,
            "area": p.area,
            "file": p.file,
            "reason": p.reason,
            "original": p.original,
            "replacement": p.replacement,
            "tests": list(p.tests),
            "result": self.result,
            "detail": self.detail,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class LuaResult:
    outcomes: list[Outcome]
    seconds: float

    @property
    def caught(self) -> int:
        return sum(o.result == "caught" for o in self.outcomes)

    @property
    def counted(self) -> int:
        return sum(o.result in ("caught", "survived") for o in self.outcomes)


def selected(ids: list[str] | None) -> list[Planted]:
    if not ids:
        return list(PLANTED)
    chosen = [p for p in PLANTED if any(p.id == i or p.id.startswith(i + ".") for i in ids)]
    if not chosen:
        raise SystemExit(f"no planted change matches {ids}")
    return chosen


def _module_of(path: str) -> str:
    return path.removeprefix("src/").removesuffix(".py").replace("/", ".")


def _existing(tree: Path, tests: tuple[str, ...]) -> list[str]:
    return [t for t in tests if (tree / t.split("::", 1)[0]).exists()]


def _pytest(
    tree: Path, env: dict[str, str], tests: list[str], niceness: int, timeout: float
) -> tuple[int | None, str]:
    """Exit code (None: timed out) and output. The tests run in a session of their own,
    ended as a group on timeout or interrupt (only what this started)."""
    cmd = nice(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        niceness,
    )
    proc = subprocess.Popen(
        cmd,
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _end(proc)
        return None, ""
    except BaseException:
        _end(proc)
        raise


def _end(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _verify_restored(tree: Path, rel: str) -> None:
    try:
        git(tree, "diff", "--quiet", "--", rel)
    except subprocess.CalledProcessError:
        raise SystemExit(f"{rel} was not restored in the snapshot {tree}: stopping") from None


def run(
    workdir: Path,
    source: str,
    ids: list[str] | None,
    *,
    niceness: int,
    timeout: float,
    verbose: bool,
) -> LuaResult:
    from healthcomp.core.embedded import EmbeddedRedis

    changes = selected(ids)
    tree = snapshot(workdir / "lua", source)
    env = snapshot_env(tree)
    where = subprocess.run(
        [sys.executable, "-c", "import healthcomp; print(healthcomp.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree / "src"):
        raise SystemExit(f"the tests would import healthcomp from {where}, not the snapshot")

    started = time.monotonic()
    union = list(dict.fromkeys(t for p in changes for t in _existing(tree, p.tests)))
    print(f"lua: baseline, {len(union)} test files/ids on the unchanged snapshot", flush=True)
    code, out = _pytest(tree, env, union, niceness, timeout * 4)
    if code != 0:
        tail = "\n".join(out.splitlines()[-30:])
        raise SystemExit(f"the tests fail on the unchanged snapshot (exit {code}):\n{tail}")
    print(f"lua: baseline passed in {time.monotonic() - started:.0f} s", flush=True)

    redis_server = EmbeddedRedis(workdir / "lua-redis")
    url = redis_server.start()
    outcomes: list[Outcome] = []
    try:
        for n, planted in enumerate(changes, 1):
            outcome = _one(tree, env, url, planted, niceness, timeout)
            outcomes.append(outcome)
            if verbose:
                print(
                    f"  [{n}/{len(changes)}] {planted.id}: {outcome.result}"
                    f" ({outcome.seconds:.0f} s) {outcome.detail}",
                    flush=True,
                )
    finally:
        redis_server.stop()
    return LuaResult(outcomes, time.monotonic() - started)


def _one(
    tree: Path, env: dict[str, str], url: str, planted: Planted, niceness: int, timeout: float
) -> Outcome:
    t0 = time.monotonic()
    path = tree / planted.file
    pristine = path.read_text()
    found = pristine.count(planted.original)
    if found != 1:
        return Outcome(planted, "stale", f"the snippet occurs {found} times", 0.0)
    tests = _existing(tree, planted.tests)
    if not tests:
        return Outcome(planted, "error", "none of its tests exist", 0.0)
    try:
        path.write_text(pristine.replace(planted.original, planted.replacement, 1))
        check = subprocess.run(
            [sys.executable, "-c", _CHECK, url, _module_of(planted.file)],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            why = (check.stdout.strip() or check.stderr.strip().splitlines()[-1])[:200]
            return Outcome(planted, "invalid", why, time.monotonic() - t0)
        code, out = _pytest(tree, env, tests, niceness, timeout)
    finally:
        path.write_text(pristine)
        _verify_restored(tree, planted.file)
    seconds = time.monotonic() - t0
    if code is None:
        return Outcome(planted, "caught", f"timed out after {timeout:.0f} s", seconds)
    if code == 1:
        failed = _FAILED.findall(out)
        return Outcome(planted, "caught", failed[0] if failed else "a test failed", seconds)
    if code == 0:
        return Outcome(planted, "survived", f"{len(tests)} test file(s) passed", seconds)
    tail = " | ".join(out.strip().splitlines()[-3:])[:300]
    return Outcome(planted, "error", f"pytest exit {code}: {tail}", seconds)
