"""Which tests each Redis backend's pass runs (`make test` runs the suite once per backend).

The embedded pass runs everything. The external and cluster passes run the tests whose
answer can depend on the Redis behind the service: storage, scripts, pub/sub, the
engine, the routes over them, the live fan-out, faults. They leave out:

* tests that never reach the run's Redis (no `redis_url` among their fixtures, directly
  or through another fixture): docs, settings, pure rules, the CLI, and the tests that
  start servers of their own;
* the modules in `NEUTRAL`: they do use Redis, but what they prove is decided before
  or regardless of storage (token checks, access tables, input validation, the error
  envelope, request logs and metrics, the schema), and they are the slowest tables of
  the suite. Running them three times would prove nothing the embedded pass does not,
  and CI has 15 minutes for all three passes.

`HC_TEST_EVERY_PASS=1` runs everything on every pass.

Loaded by `addopts` in pyproject.toml (`-p tests.backends`).
"""

from __future__ import annotations

import os

import pytest

NEUTRAL = frozenset(
    {
        "tests/test_auth_matrix.py",
        "tests/test_hostile.py",
        "tests/test_hostile_tokens.py",
        "tests/test_idor.py",
        "tests/test_openapi.py",
        "tests/test_mutation_kills.py",
        "tests/core/test_auth.py",
        "tests/core/test_auth_edges.py",
        "tests/core/test_dev_secret.py",
        "tests/core/test_errors.py",
        "tests/core/test_jwks_kills.py",
        "tests/core/test_logs.py",
        "tests/core/test_metrics.py",
        "tests/core/test_proxies_cors.py",
        "tests/core/test_strict_input.py",
    }
)


def on_every_pass(item: pytest.Item) -> bool:
    if "redis_url" not in getattr(item, "fixturenames", ()):
        return False
    return item.nodeid.split("::", 1)[0] not in NEUTRAL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = os.environ.get("HC_TEST_BACKEND", "embedded")
    if backend == "embedded" or os.environ.get("HC_TEST_EVERY_PASS"):
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if on_every_pass(item) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    """A name in `NEUTRAL` that no longer exists would silently widen nothing and narrow
    nothing: fail the run instead."""
    root = session.config.rootpath
    missing = sorted(path for path in NEUTRAL if not (root / path).exists())
    if missing:
        raise pytest.UsageError(f"tests/backends.py NEUTRAL names missing files: {missing}")
