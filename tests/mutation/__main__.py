"""`python -m tests.mutation [--python] [--lua] [--all]`: mutation testing, one command.

Prints a table per part and writes `report.json` into the work directory. Exits 1 when
fewer planted Lua changes are caught than `--lua-fail-under` percent (default 90), or
fewer Python mutants than `--python-fail-under` (default 0: reported, not enforced).
Runs at low priority (`nice`), one test process at a time.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

from tests.mutation import lua_run, python_run
from tests.mutation.planted import PLANTED
from tests.mutation.tree import DEFAULT_WORKDIR, uncommitted


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    ap.add_argument("--python", action="store_true", help="mutmut over the Python rules")
    ap.add_argument("--lua", action="store_true", help="the planted Lua changes")
    ap.add_argument("--all", action="store_true", help="both (the default)")
    ap.add_argument(
        "--area",
        action="append",
        help="Python: only this area (auth, money, rules, access, payout_service); repeatable",
    )
    ap.add_argument(
        "--change",
        action="append",
        help="Lua: only this planted change id, or an id prefix such as 'sync'; repeatable",
    )
    ap.add_argument(
        "--source",
        default="worktree",
        help="what to test: 'worktree' (the files on disk, default) or a git revision (HEAD)",
    )
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="scratch directory")
    ap.add_argument("--timeout", type=float, default=300, help="Lua: seconds per change")
    ap.add_argument("--nice", type=int, default=15, help="niceness of the test processes")
    ap.add_argument("--lua-fail-under", type=float, default=90.0)
    ap.add_argument("--python-fail-under", type=float, default=0.0)
    ap.add_argument("--list", action="store_true", help="list the planted changes and exit")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="Python: report the last run in --workdir again instead of running mutmut",
    )
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    if not (args.python or args.lua) or args.all:
        args.python = args.lua = True
    return args


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _python_table(result: python_run.PythonResult) -> str:
    head = (
        f"{'area':<9} {'file':<28} {'mutants':>7} {'killed':>6} {'timeout':>7} "
        f"{'survived':>8} {'(text)':>6} {'no tests':>8} {'rate':>6} {'w/o text':>8}"
    )
    rows = [head, "-" * len(head)]
    for f in result.files:
        s = f.statuses
        rows.append(
            f"{f.area:<9} {f.path.removeprefix('src/healthcomp/'):<28} {f.total:>7} "
            f"{s['killed']:>6} {s['timeout']:>7} {s['survived']:>8} {f.text:>6} "
            f"{s['no tests']:>8} {_pct(f.caught, f.total):>5.1f}% "
            f"{_pct(f.caught, f.total - f.text):>7.1f}%"
        )
    rows.append("-" * len(head))
    rows.append(
        f"{'total':<38} {result.total:>7} "
        f"{sum(f.statuses['killed'] for f in result.files):>6} "
        f"{sum(f.statuses['timeout'] for f in result.files):>7} "
        f"{sum(f.statuses['survived'] for f in result.files):>8} {result.text:>6} "
        f"{sum(f.statuses['no tests'] for f in result.files):>8} "
        f"{_pct(result.caught, result.total):>5.1f}% "
        f"{_pct(result.caught, result.total - result.text):>7.1f}%"
    )
    rows.append(
        "(text): survivors that only reword a message (mutmut's XX...XX or a case change of "
        "prose in a string); 'w/o text' leaves them out"
    )
    survivors = [s for f in result.files for s in f.survivors]
    if survivors:
        rows.append("")
        rows.append("not killed (message rewordings left out; report.json has them all):")
        for name, status in survivors:
            diff = result.diffs.get(name, "")
            if status == "survived" and python_run.text_only(diff):
                continue  # counted in (text); listed in report.json
            rows.append(f"  {name}: {status}")
            for line in result.diffs.get(name, "").splitlines():
                rows.append(f"      {line.strip()}")
    return "\n".join(rows)


def _lua_table(result: lua_run.LuaResult) -> str:
    head = f"{'planted change':<36} {'area':<12} {'result':<9} {'s':>4}  caught by / note"
    rows = [head, "-" * 100]
    for o in result.outcomes:
        rows.append(
            f"{o.planted.id:<36} {o.planted.area:<12} {o.result:<9} {o.seconds:>4.0f}  {o.detail}"
        )
    rows.append("-" * 100)
    rows.append(
        f"caught {result.caught} of {result.counted} planted changes "
        f"({_pct(result.caught, result.counted):.1f}%)"
        + (
            f"; {len(result.outcomes) - result.counted} not counted (invalid/stale/error)"
            if len(result.outcomes) != result.counted
            else ""
        )
    )
    survivors = [o for o in result.outcomes if o.result == "survived"]
    if survivors:
        rows.append("survived:")
        rows.extend(f"  {o.planted.id}: {o.planted.reason}" for o in survivors)
    return "\n".join(rows)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    # `kill` stops a run as Ctrl-C does: the test processes it started are ended and the
    # snapshot's planted file is put back (the working tree is never written either way).
    signal.signal(signal.SIGTERM, _interrupt)
    if args.list:
        for p in PLANTED:
            print(f"{p.id:<36} {p.file.removeprefix('src/healthcomp/'):<24} {p.reason}")
        return 0
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.source == "worktree":
        mutated = sorted(
            {m for a in python_run.AREAS for m in a.modules} | {p.file for p in PLANTED}
        )
        dirty = uncommitted(mutated)
        if dirty:
            print(f"note: testing the working tree, where these differ from HEAD: {dirty}")
    report: dict[str, object] = {"source": args.source, "started": time.time()}
    status = 0
    py_result = lua_result = None
    if args.python:
        py_result = python_run.run(
            workdir,
            args.source,
            args.area,
            niceness=args.nice,
            verbose=not args.quiet,
            reuse=args.reuse,
        )
        report["python"] = py_result.to_json()
        if py_result.exit_code != 0:
            print(f"mutmut exited {py_result.exit_code}: see {workdir}/python-*.log")
            status = 1
    if args.lua:
        lua_result = lua_run.run(
            workdir,
            args.source,
            args.change,
            niceness=args.nice,
            timeout=args.timeout,
            verbose=not args.quiet,
        )
        report["lua"] = {
            "seconds": round(lua_result.seconds, 1),
            "caught": lua_result.caught,
            "counted": lua_result.counted,
            "changes": [o.to_json() for o in lua_result.outcomes],
        }
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if py_result is not None:
        print()
        print(
            f"PYTHON (mutmut): {py_result.caught}/{py_result.total} mutants killed "
            f"({_pct(py_result.caught, py_result.total):.1f}%) in {py_result.seconds / 60:.1f} min"
        )
        print(_python_table(py_result))
        if _pct(py_result.caught, py_result.total) < args.python_fail_under:
            status = 1
    if lua_result is not None:
        print()
        print(
            f"LUA (planted changes): {lua_result.caught}/{lua_result.counted} caught "
            f"({_pct(lua_result.caught, lua_result.counted):.1f}%) in "
            f"{lua_result.seconds / 60:.1f} min"
        )
        print(_lua_table(lua_result))
        if _pct(lua_result.caught, lua_result.counted) < args.lua_fail_under:
            status = 1
    print(f"\nreport: {workdir / 'report.json'}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
