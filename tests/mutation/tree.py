"""The snapshot a mutation run works on: a copy of the tree in a scratch directory.

Nothing here writes to the working tree. The snapshot is a git repository of its own,
so a planted change that was undone can be checked with `git diff --quiet`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "healthcomp-mutation"


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout
    return out


def snapshot(dest: Path, source: str) -> Path:
    """Copy the tree into `dest` (emptied first): `source` is `worktree` (every tracked
    and untracked file that git does not ignore, as it is on disk now) or a revision
    (`HEAD`: the last commit, whatever is being edited meanwhile)."""
    dest = dest.resolve()
    if dest == ROOT or ROOT in dest.parents:
        raise SystemExit(f"the work directory must be outside the tree: {dest}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if source == "worktree":
        listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
        for rel in filter(None, listed.split("\0")):
            src = ROOT / rel
            if src.is_file() and not src.is_symlink():
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    else:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", source],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
    ident = ["-c", "user.name=mutation", "-c", "user.email=mutation@localhost"]
    git(dest, "init", "-q")
    git(dest, "add", "--all")
    git(dest, *ident, "commit", "-q", "--no-verify", "-m", f"snapshot of {source}")
    return dest


def uncommitted(paths: list[str]) -> list[str]:
    """Those of `paths` (relative to the tree) that differ from HEAD in the working tree."""
    changed = git(ROOT, "status", "--porcelain", "--untracked-files=no", "--", *paths)
    return sorted(line[3:] for line in changed.splitlines() if line.strip())


def snapshot_env(tree: Path | None) -> dict[str, str]:
    """The environment a test run in the snapshot gets: the embedded Redis, the quick
    property-test profile and, given `tree`, the snapshot's own `src` first on the path
    (ahead of the editable install of the working tree) and no bytecode written (a
    planted change and its undoing can fall in one second of mtime)."""
    env = dict(os.environ)
    env["HC_TEST_BACKEND"] = "embedded"
    env["HYPOTHESIS_PROFILE"] = env.get("HC_MUTATION_HYPOTHESIS_PROFILE", "dev")
    env.pop("TEST_REDIS_URL", None)
    env.pop("PYTHONPATH", None)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), str(tree)])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def nice(cmd: list[str], level: int) -> list[str]:
    """`cmd` run at a lower priority (the machine is shared)."""
    if level and shutil.which("nice"):
        return ["nice", "-n", str(level), *cmd]
    return cmd


def python() -> str:
    return sys.executable
