"""docs/CONFIGURATION.md: its table of settings is the one the settings class renders,
and it names every setting the class has."""

from __future__ import annotations

import re
from pathlib import Path

from healthcomp.core.settings import Settings, env_names, reference_markdown

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "CONFIGURATION.md"


def _table() -> str:
    match = re.search(
        r"<!-- settings:begin -->\n(.*?)\n<!-- settings:end -->", DOC.read_text(), re.S
    )
    assert match is not None, "docs/CONFIGURATION.md lost its settings markers"
    return match.group(1).strip()


def test_the_docs_table_matches_the_class() -> None:
    assert _table() == reference_markdown().strip(), (
        "docs/CONFIGURATION.md is stale: paste `python -m healthcomp.core.settings` "
        "between its settings markers"
    )


def test_every_setting_is_in_the_docs_table() -> None:
    rows = {line.split(" | ")[0].removeprefix("| ") for line in _table().splitlines()[2:]}
    missing = []
    for name, field in Settings.model_fields.items():
        first, *others = env_names(name, field)
        if not any(row.startswith(f"`{first}`") for row in rows):
            missing.append(first)
        missing.extend(other for other in others if not any(f"`{other}`" in r for r in rows))
    assert missing == []
    assert len(rows) == len(Settings.model_fields)


def test_every_setting_is_described_with_a_default() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
        assert "|" not in field.description, f"Settings.{name}: a '|' breaks the table"
    lines = reference_markdown().splitlines()[2:]
    assert all(len(line.split(" | ")) == 4 for line in lines)


def test_the_reference_reads_what_the_class_reads() -> None:
    # The names come from the aliases: both of HC_HOST's, the original ones unprefixed.
    table = reference_markdown()
    assert "| `HC_HOST` (or `HOST`) | `127.0.0.1` |" in table
    assert "| `PORT` | `8082` |" in table and "| `REDIS_URL` | unset |" in table
    assert "| `HC_DATA_DIR` | `./data` |" in table
    assert "| `HC_DEMO` | `false` |" in table
    assert "| `HC_JWT_ALGORITHMS` | `HS256,ES256,RS256` |" in table
    assert "| `HC_REQUEST_TIMEOUT` | `10` s |" in table


def test_the_readme_points_at_the_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert "docs/CONFIGURATION.md" in section
    # Each variable the README's short table names is a real one, with the same default.
    table = reference_markdown()
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+?) \|", section, re.M)
    assert len(rows) >= 5, "the README's Configuration section lost its short table"
    for name, default in rows:
        assert f"`{name}`" in table, f"README names an unknown setting {name}"
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}`"))
        assert row.split(" | ")[1] == default, f"README's default for {name} differs"
