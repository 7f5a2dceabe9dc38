"""The layout the architecture doc promises: a downward import graph, one owner for the
board's keys, and a key table in the docs that matches the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from healthcomp.core.keys import SCHEMA, Keys, schema_markdown

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "healthcomp"
# Top to bottom: a domain may import only the ones after it.
ORDER = (
    "live",
    "prizes",
    "activity",
    "analytics",
    "fairplay",
    "leaderboard",
    "competitions",
    "users",
    "engine",
    "core",
)
LEAVES = {"health": {"core"}, "console": {"core"}}


def _imports(path: Path) -> set[str]:
    """The `healthcomp.<domain>` packages a module imports."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "healthcomp" and len(parts) > 1:
                found.add(parts[1])
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for domain_dir in sorted(
        p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
    ):
        deps: set[str] = set()
        for module in domain_dir.rglob("*.py"):
            deps |= _imports(module)
        graph[domain_dir.name] = deps - {domain_dir.name}
    return graph


def test_every_domain_is_placed() -> None:
    assert set(_graph()) == set(ORDER) | set(LEAVES)


def test_domains_import_only_downwards() -> None:
    graph = _graph()
    wrong = []
    for i, domain in enumerate(ORDER):
        allowed = set(ORDER[i + 1 :])
        for dep in graph[domain] - allowed:
            wrong.append(f"{domain} imports {dep}")
    for leaf, allowed in LEAVES.items():
        wrong.extend(f"{leaf} imports {dep}" for dep in graph[leaf] - allowed)
    assert wrong == []


def test_the_graph_check_can_fail() -> None:
    # The walker does see a domain's imports (engine uses core, competitions the engine).
    graph = _graph()
    assert "core" in graph["engine"] and "engine" in graph["competitions"]


_ENGINE_KEYS = (
    "meta",
    "board",
    "entries",
    "names",
    "participant_days",
    "adjustments",
    "participations",
    "audit",
    "events",
    "recount",
    "recount_list",
    "recount_done",
    "records",
    "effective",
    "windows",
    "owed",
)


def test_only_the_engine_builds_the_keys_it_owns() -> None:
    pattern = re.compile(r"keys\.(" + "|".join(_ENGINE_KEYS) + r")\(")
    offenders = []
    for module in PACKAGE.rglob("*.py"):
        if module.parent.name == "engine" or module.name == "keys.py":
            continue
        for lineno, line in enumerate(module.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{module.relative_to(PACKAGE)}:{lineno}")
    assert offenders == []
    # Every key the engine owns is in the schema table as the engine's.
    owned = {spec.pattern for spec in SCHEMA if spec.owner == "engine"}
    assert {"P:{c:C}:meta", "P:{c:C}:lb", "P:{u:U}:owed", "P:{c:C}:ev"} <= owned


def test_the_docs_key_table_matches_the_code() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    match = re.search(r"<!-- key-schema:begin -->\n(.*?)\n<!-- key-schema:end -->", doc, re.S)
    assert match is not None, "docs/ARCHITECTURE.md lost its key-schema markers"
    assert match.group(1).strip() == schema_markdown().strip()


def test_every_key_builder_is_in_the_table() -> None:
    keys = Keys("P")
    built = {
        keys.profile("U"),
        keys.records("U"),
        keys.effective("U"),
        keys.windows("U"),
        keys.owed("U"),
        keys.organized("U"),
        keys.meta("C"),
        keys.board("C"),
        keys.entries("C"),
        keys.names("C"),
        keys.participant_days("C", "U"),
        keys.adjustments("C"),
        keys.participations("C"),
        keys.audit("C"),
        keys.events("C"),
        keys.recount("C"),
        keys.recount_list("C"),
        keys.recount_done("C"),
        keys.index("times"),
        keys.index("asof"),
        keys.recounts(),
        keys.health_probe(),
    }
    patterns = {spec.pattern for spec in SCHEMA}
    assert built - patterns == set()
    assert keys.index("pub:active") == "P:{ix}:pub:active"
    assert keys.lease("sweep") == "P:lease:sweep"
    assert keys.rate("user", "U") == "P:rl:user:U"


def test_one_alias_per_module() -> None:
    """`from healthcomp.x import y as z`: each module has one alias everywhere, and no
    alias names two modules."""
    aliases: dict[str, set[str]] = {}
    modules: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module):
                continue
            if not node.module.startswith("healthcomp"):
                continue
            for alias in node.names:
                if alias.asname:
                    target = f"{node.module}.{alias.name}"
                    aliases.setdefault(target, set()).add(alias.asname)
                    modules.setdefault(alias.asname, set()).add(target)
    assert {m: a for m, a in aliases.items() if len(a) > 1} == {}
    assert {a: m for a, m in modules.items() if len(m) > 1} == {}
    assert aliases, "no alias found: the walker is broken"
