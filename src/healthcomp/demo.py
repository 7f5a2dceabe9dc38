"""The demo competition (filled in by the competitions issue)."""

from __future__ import annotations

from healthcomp.core.settings import Settings


def seed_demo_sync(settings: Settings, *, print_token: bool = False, force: bool = False) -> None:
    raise NotImplementedError("the demo needs the competitions domain")
