"""An example payment worker (`healthcomp payouts`): reads the payout outboxes, pays,
and marks each ledger line paid or failed. Safe to run again, and to kill at any point.

Every finalized or cancelled competition has an outbox (a Redis stream in its slot)
with one entry per payout to make, written with its ledger. The worker reads each with
the consumer group `payouts`: first the entries it was given before and never
acknowledged (it died part-way), then new ones. For each it calls the provider with
the payout's id as the idempotency key, records the result on the ledger line (once: a
line already `paid` or `failed` keeps it), and acknowledges the entry.

A crash between paying and recording leaves the entry unacknowledged; the next run
calls the provider again with the same key, and a provider honouring idempotency keys
(as payment APIs do) answers the first payment instead of making a second. The demo
provider here does exactly that with a Redis hash, and pays nobody.

To connect a real provider, pass `--provider module:function`: an async function
taking the ledger line (a dict: `id`, `kind` prize or refund, `user_id`, `amount_cents`,
`currency`, `reason`) and returning `("paid", reference)` or `("failed", why)`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from healthcomp.competitions import index
from healthcomp.core.clock import rfc3339
from healthcomp.core.context import AppContext
from healthcomp.core.settings import Settings
from healthcomp.core.standalone import standalone
from healthcomp.engine import writes

log = logging.getLogger("healthcomp.payouts")

Provider = Callable[[dict[str, Any]], Awaitable[tuple[str, str]]]


def demo_provider(ctx: AppContext) -> Provider:
    """Pays nobody: records each idempotency key once and answers its reference."""

    async def pay(line: dict[str, Any]) -> tuple[str, str]:
        key = ctx.keys.demo_payments()
        reference = f"demo-{uuid.uuid4().hex[:12]}"
        await ctx.r.hsetnx(key, line["id"], reference)
        return "paid", str(await ctx.r.hget(key, line["id"]))

    return pay


def load_provider(spec: str) -> Provider:
    module, _, name = spec.partition(":")
    found: Provider = getattr(importlib.import_module(module), name)
    return found


async def competitions_with_payouts(ctx: AppContext) -> list[str]:
    """Finalized and cancelled competitions: those a ledger and outbox can exist for."""
    ids: set[str] = set()
    for listing in ("finalized", "cancelled"):
        ids.update(await index.ids(ctx, f"all:{listing}"))
    return sorted(ids)


async def run_once(ctx: AppContext, provider: Provider, consumer: str) -> Counter[str]:
    """One pass over every outbox; what it did, by result."""
    done: Counter[str] = Counter()
    for cid in await competitions_with_payouts(ctx):
        while payouts := await writes.claim_payouts(ctx, cid, consumer):
            for payout in payouts:
                try:
                    status, reference = await provider(payout.line)
                except Exception as exc:  # a provider's error is a failed payout, not a crash
                    status, reference = "failed", f"{type(exc).__name__}: {exc}"
                if status not in ("paid", "failed"):
                    status, reference = "failed", f"the provider answered {status!r}"
                at = rfc3339(ctx.clock.now())
                before = await writes.settle_payout(ctx, cid, payout, status, reference, at)
                done[status if before == "pending" else "already_settled"] += 1
                log.info("%s %s: %s (%s)", payout.line["id"], status, reference, before)
    return done


async def run(
    ctx: AppContext, provider: Provider, *, consumer: str, once: bool, interval: float
) -> Counter[str]:
    total: Counter[str] = Counter()
    while True:
        total.update(await run_once(ctx, provider, consumer))
        if once:
            return total
        await asyncio.sleep(interval)


async def run_standalone(
    settings: Settings, *, provider: str | None, consumer: str, once: bool, interval: float
) -> Counter[str]:
    """The worker in a process of its own, on the service's Redis."""
    async with standalone(settings) as ctx:
        pay = load_provider(provider) if provider else demo_provider(ctx)
        return await run(ctx, pay, consumer=consumer, once=once, interval=interval)
