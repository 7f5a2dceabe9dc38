"""Mutation testing of the Python rules with mutmut (3.x), on a snapshot of the tree.

mutmut copies the snapshot's `src` into `mutants/` with every mutant of the files named
below compiled in (a trampoline per function picks the active one), runs the selected
tests once to learn which tests execute which function, then runs each mutant against
only those tests (`-x`: the first failure kills it). A mutant whose tests all pass
survived: a change of the code that no test notices.

Scope (`AREAS`): what decides who may do what and who gets how much money, with the
test files that exercise it; `--area` picks some (the payout service only on request).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.mutation.tree import nice, snapshot, snapshot_env


@dataclass(frozen=True)
class Area:
    name: str
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    default: bool = True  # run without --area


AREAS: tuple[Area, ...] = (
    Area(
        "auth",
        ("src/healthcomp/core/auth.py",),
        (
            "tests/core/test_auth.py",
            "tests/core/test_dev_secret.py",
            "tests/core/test_jwks_kills.py",
            "tests/core/test_auth_edges.py",
            "tests/core/test_logs.py",
        ),
    ),
    Area(
        "money",
        ("src/healthcomp/core/money.py", "src/healthcomp/prizes/allocate.py"),
        (
            "tests/prizes/test_allocate.py",
            "tests/prizes/test_calculate.py",
            "tests/prizes/test_fees_property.py",
        ),
    ),
    Area(
        "rules",
        ("src/healthcomp/engine/rules.py", "src/healthcomp/core/inputs.py"),
        (
            "tests/domain/test_rules.py",
            "tests/domain/test_windows.py",
            "tests/core/test_strict_input.py",
            "tests/test_mutation_kills.py",
        ),
    ),
    Area(
        "access",
        ("src/healthcomp/competitions/access.py",),
        (
            "tests/domain/test_access.py",
            "tests/test_mutation_kills.py::test_only_the_organizer_manages",
        ),
    ),
    # The payout service (765 mutants, most of them in the ledger's and the views' field
    # names and messages, each run against the distribution tests): an hour or more on a
    # two-core machine, so only on request (`--area payout_service`).
    Area(
        "payout_service",
        ("src/healthcomp/prizes/service.py",),
        ("tests/prizes/test_distribute.py", "tests/prizes/test_calculate.py"),
        default=False,
    ),
)

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code), grouped.
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}
SKIPPED = {34}


def status_of(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    if code in SKIPPED:
        return "skipped"
    if code is None:
        return "not checked"
    return "suspicious"


@dataclass
class FileResult:
    path: str
    area: str
    statuses: Counter[str] = field(default_factory=Counter)
    survivors: list[tuple[str, str]] = field(default_factory=list)  # (name, status)
    text: int = 0  # survivors that only reword a message (`text_only`)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) - self.statuses["skipped"]

    @property
    def caught(self) -> int:
        return self.statuses["killed"] + self.statuses["timeout"]


@dataclass
class PythonResult:
    files: list[FileResult]
    diffs: dict[str, str]
    seconds: float
    tree: Path
    exit_code: int

    @property
    def total(self) -> int:
        return sum(f.total for f in self.files)

    @property
    def caught(self) -> int:
        return sum(f.caught for f in self.files)

    @property
    def text(self) -> int:
        return sum(f.text for f in self.files)

    def to_json(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 1),
            "mutants": self.total,
            "caught": self.caught,
            "files": [
                {
                    "path": f.path,
                    "area": f.area,
                    "statuses": dict(f.statuses),
                    "text_only_survivors": f.text,
                    "survivors": [
                        {
                            "name": name,
                            "status": status,
                            "text_only": text_only(self.diffs.get(name, "")),
                            "diff": self.diffs.get(name, ""),
                        }
                        for name, status in f.survivors
                    ],
                }
                for f in self.files
            ],
        }


def selected(names: list[str] | None) -> list[Area]:
    if not names:
        return [a for a in AREAS if a.default]
    known = {a.name: a for a in AREAS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown area(s) {unknown}; known: {sorted(known)}")
    return [known[n] for n in names]


def _config(areas: list[Area]) -> str:
    modules = [m for a in areas for m in a.modules]
    tests = list(dict.fromkeys(t for a in areas for t in a.tests))
    lines = ["[mutmut]", "source_paths = src", "only_mutate ="]
    lines += [f"    {m}" for m in modules]
    lines += ["pytest_add_cli_args_test_selection ="]
    lines += [f"    {t}" for t in tests]
    # No cache (it would remember the last failures across mutants), no timeout of
    # pytest's own shorter than mutmut's.
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider"]
    lines += ["process_isolation = fork", "use_setproctitle = false"]
    return "\n".join(lines) + "\n"


_PROGRESS = re.compile(r"(\d+)/(\d+)\s+🎉 (\d+)\s+🫥 (\d+)\s+⏰ (\d+)\s+🤔 (\d+)\s+🙁 (\d+)")


def _progress(log: Path) -> str | None:
    try:
        with log.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 600))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = _PROGRESS.findall(tail)
    if not found:
        return None
    done, total, killed, _no, timeout, _sus, survived = found[-1]
    return (
        f"{done}/{total} mutants tried: {killed} killed, {timeout} timed out, {survived} survived"
    )


# Run in the snapshot: every survivor's diff, through mutmut's own code (as `mutmut show`).
_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = get_diff_for_mutant(name)
    except Exception as exc:  # a diff is a nicety: the result stands without it
        out[name] = f"(no diff: {exc!r})"
print(json.dumps(out))
"""


def run(
    workdir: Path,
    source: str,
    area_names: list[str] | None,
    *,
    niceness: int,
    verbose: bool,
    reuse: bool = False,
) -> PythonResult:
    """One mutmut run per area, each in its own snapshot with its own test selection, so
    a mutant of (say) auth.py runs auth's tests, not every API test that signs in."""
    areas = selected(area_names)
    # mutmut puts its own `mutants/src` first on the path and takes the snapshot's off.
    env = snapshot_env(None)
    files: list[FileResult] = []
    diffs: dict[str, str] = {}
    seconds, code = 0.0, 0
    for area in areas:
        tree = workdir / "python" / area.name
        if not reuse:  # else: the results of the last run in `workdir`, read again
            took, exit_code = _mutmut(workdir, tree, source, area, env, niceness, verbose)
            seconds += took
            code = code or exit_code
        found = _results(tree, [area])
        survivors = [name for f in found for name, _ in f.survivors]
        diffs.update(_diffs(tree, survivors, env) if survivors else {})
        files.extend(found)
    for f in files:
        f.text = sum(
            1
            for name, status in f.survivors
            if status == "survived" and text_only(diffs.get(name, ""))
        )
    return PythonResult(files, diffs, seconds, workdir / "python", code)


def _mutmut(
    workdir: Path,
    tree: Path,
    source: str,
    area: Area,
    env: dict[str, str],
    niceness: int,
    verbose: bool,
) -> tuple[float, int]:
    snapshot(tree, source)
    (tree / "setup.cfg").write_text(_config([area]))
    log = workdir / f"python-{area.name}.log"
    cmd = nice([sys.executable, "-m", "mutmut", "run", "--max-children", "1"], niceness)
    started = time.monotonic()
    print(f"python: {area.name}: mutmut on {', '.join(area.modules)}; log: {log}", flush=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            last = time.monotonic()
            while proc.poll() is None:
                time.sleep(1)
                if time.monotonic() - last >= 60:
                    last = time.monotonic()
                    state = _progress(log)
                    if state and verbose:
                        print(f"  python: {area.name}: {state}", flush=True)
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    took = time.monotonic() - started
    if verbose:
        print(f"  python: {area.name}: done in {took / 60:.1f} min", flush=True)
    return took, proc.returncode or 0


def _results(tree: Path, areas: list[Area]) -> list[FileResult]:
    files: list[FileResult] = []
    for area in areas:
        for module in area.modules:
            result = FileResult(module, area.name)
            meta = tree / "mutants" / (module + ".meta")
            if meta.exists():
                data = json.loads(meta.read_text())
                for name, code in sorted(data.get("exit_code_by_key", {}).items(), key=_order):
                    status = status_of(code)
                    result.statuses[status] += 1
                    if status != "killed" and status != "timeout" and status != "skipped":
                        result.survivors.append((name, status))
            files.append(result)
    return files


def _order(item: tuple[str, object]) -> tuple[str, int]:
    name = item[0]
    base, _, number = name.rpartition("__mutmut_")
    return base, int(number) if number.isdigit() else 0


def _diffs(tree: Path, names: list[str], env: dict[str, str]) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _DIFFS, *names],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        found: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {}
    return {name: _short(diff) for name, diff in found.items()}


def _short(diff: str) -> str:
    """The changed lines of a function's diff (the whole function is context)."""
    lines = [
        ln
        for ln in diff.splitlines()
        if ln[:1] in "+-" and not ln.startswith("+++") and not ln.startswith("---")
    ]
    return "\n".join(lines) or diff


_LITERAL = re.compile(r"""(?P<q>["'])(?P<s>(?:\\.|(?!(?P=q)).)*)(?P=q)""")


def text_only(diff: str) -> bool:
    """Whether a mutant only changes the wording of prose in a string literal (mutmut's
    `"XX…XX"` and upper/lower-case mutants of a message with a space in it): a change of
    what a person reads, not of what the code does. Reported apart, not hidden."""
    minus = [ln[1:] for ln in diff.splitlines() if ln.startswith("-")]
    plus = [ln[1:] for ln in diff.splitlines() if ln.startswith("+")]
    if len(minus) != 1 or len(plus) != 1:
        return False
    old, new = minus[0], plus[0]
    old_lits = [m.group("s") for m in _LITERAL.finditer(old)]
    new_lits = [m.group("s") for m in _LITERAL.finditer(new)]
    if len(old_lits) != len(new_lits) or _LITERAL.sub("''", old) != _LITERAL.sub("''", new):
        return False
    changed = [(a, b) for a, b in zip(old_lits, new_lits, strict=True) if a != b]
    if len(changed) != 1:
        return False
    a, b = changed[0]
    prose = " " in a.strip()
    return prose and (b == f"XX{a}XX" or b in (a.lower(), a.upper()))
