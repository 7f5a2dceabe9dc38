"""Which tests each Redis backend's pass runs (`make test` runs the suite once per backend).

A test that never reaches the run's Redis (no `redis_url` among its fixtures, directly
or through another fixture) answers the same on every pass: docs, settings, pure
rules, the CLI, and the tests that start servers of their own. It runs on the embedded
pass only, and the external and cluster passes keep the tests whose answer depends on
the backend. `HC_TEST_EVERY_PASS=1` runs everything on every pass.

Loaded by `addopts` in pyproject.toml (`-p tests.backends`).
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = os.environ.get("HC_TEST_BACKEND", "embedded")
    if backend == "embedded" or os.environ.get("HC_TEST_EVERY_PASS"):
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if "redis_url" in getattr(item, "fixturenames", ()) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
