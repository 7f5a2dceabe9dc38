"""The pool of a competition and who would win what (SPEC §6.5)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, Inexact, localcontext
from typing import Any

import orjson

from healthcomp.competitions import repo
from healthcomp.competitions import service as competitions
from healthcomp.competitions.access import not_found
from healthcomp.competitions.model import Stored
from healthcomp.core import metrics
from healthcomp.core.clock import rfc3339, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Conflict, ServiceUnavailable, ValidationFailed
from healthcomp.core.money import display_amount, minor_exponent
from healthcomp.engine import reads, writes
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import PayoutInputs, payout_id
from healthcomp.prizes import allocate
from healthcomp.prizes.allocate import Award, Entrant


@dataclass(frozen=True)
class Pool:
    """A competition's pool in minor units: the base prize, plus the entry fees owed,
    minus the rake on those fees (half to even)."""

    base: int
    fees: int
    rake: int
    total: int

    @classmethod
    def of(cls, stored: Stored, fees: int) -> Pool:
        base = int(stored.doc.get("prize_pool_cents") or 0)
        cut = allocate.rake(fees, Decimal(str(stored.doc.get("rake_percent") or 0)))
        return cls(base, fees, cut, base + fees - cut)


def pool_override(value: Decimal, currency: str) -> int:
    """A previewed `prize_pool` (a decimal amount) in minor units: non-negative, at most
    the currency's decimals, else 422 naming the field."""
    exp = minor_exponent(currency)
    try:
        # Scaled exactly or refused: an amount beyond the decimal range (1e999999999)
        # overflowed (a 500), a tiny one (1e-999999999) underflowed to 0 and a long one
        # was rounded to 28 digits, each then taken as a whole number of units.
        with localcontext() as context:
            context.traps[Inexact] = True
            units = value.scaleb(exp)
        exact = value >= 0 and value.is_finite() and units == units.to_integral_value()
    except ArithmeticError:  # InvalidOperation, Overflow, Inexact
        exact = False
    if not exact:
        places = f"{exp} decimal places" if exp else "no decimal places"
        raise ValidationFailed(
            f"prize_pool must be a non-negative amount with at most {places} for {currency}.",
            details=[{"field": "prize_pool", "message": "invalid amount", "type": "value_error"}],
        )
    if units > 10**15:
        raise ValidationFailed(
            "prize_pool is too large.",
            details=[{"field": "prize_pool", "message": "too large", "type": "value_error"}],
        )
    return int(units)


def _scheme(stored: Stored) -> tuple[str, list[Any]]:
    payout = stored.doc.get("payout") or {"scheme": "top_n", "percentages": [60, 30, 10]}
    scheme = str(payout.get("scheme", "top_n"))
    if scheme == "winner_takes_all":
        return scheme, [100]
    if scheme == "qualifiers_split":
        return scheme, []
    return scheme, list(payout.get("percentages") or [60, 30, 10])


def _min_days(stored: Stored) -> int:
    goal = stored.doc.get("goal") or {}
    return max(1, int(goal.get("min_days") or 1))


async def inputs(ctx: AppContext, stored: Stored) -> PayoutInputs:
    scheme, percentages = _scheme(stored)
    if scheme == "qualifiers_split":
        found = await reads.payout_inputs(ctx, stored.id, qualifying=_min_days(stored))
    else:
        found = await reads.payout_inputs(ctx, stored.id, places=len(percentages))
    if found is None:
        raise not_found(stored.id)
    return found


def awards(stored: Stored, pool: int, found: PayoutInputs) -> list[Award]:
    scheme, percentages = _scheme(stored)
    entrants: list[Entrant] = []
    rank = 0
    for i, c in enumerate(found.top):
        if i == 0 or c.score != found.top[i - 1].score:
            rank = i + 1
        entrants.append(Entrant(c.user_id, c.score, rank, c.reached_ms))
    if scheme == "qualifiers_split":
        return allocate.equally(pool, entrants)
    return allocate.by_places(pool, entrants, allocate.weights_of(percentages))


def why_no_prizes(stored: Stored, found: PayoutInputs, winners: list[Award]) -> str | None:
    """Why the entry fees would be refunded instead of prizes paid, or None."""
    if found.state == "cancelled":
        return "cancelled"
    if found.participants < int(stored.doc.get("min_participants") or 1):
        return "below_min_participants"
    if not winners:
        return "no_eligible_winner"
    return None


@dataclass(frozen=True)
class Outcome:
    """What the current standings pay: the prizes, or why the fees go back instead."""

    currency: str
    found: PayoutInputs
    pool: Pool
    total: int  # the pool split (the competition's, or a previewed one)
    winners: list[Award]
    reason: str | None  # why refunds instead of prizes, or None
    scheme: str
    percentages: list[Any]

    def name(self, user_id: str) -> str:
        return next((c.name for c in self.found.top if c.user_id == user_id), user_id)


async def work_out(ctx: AppContext, stored: Stored, prize_pool: Decimal | None = None) -> Outcome:
    currency = str(stored.doc.get("currency") or "USD")
    found = await inputs(ctx, stored)
    pool = Pool.of(stored, found.fees_owed)
    total = pool.total if prize_pool is None else pool_override(prize_pool, currency)
    winners = awards(stored, total, found)
    scheme, percentages = _scheme(stored)
    reason = why_no_prizes(stored, found, winners)
    return Outcome(currency, found, pool, total, winners, reason, scheme, percentages)


async def calculate(ctx: AppContext, stored: Stored, prize_pool: Decimal | None) -> dict[str, Any]:
    """What would be paid now, from the current standings; changes nothing."""
    out = await work_out(ctx, stored, prize_pool)
    prizes = [] if out.reason else [_prize_view(a, out) for a in out.winners]
    return {
        "competition_id": stored.id,
        "currency": out.currency,
        "pool_cents": out.total,
        "amount": display_amount(out.total, out.currency),
        "prize_pool_cents": out.pool.base,
        "entry_fees_cents": out.pool.fees,
        "rake_cents": out.pool.rake,
        "pool_overridden": prize_pool is not None,
        "scheme": out.scheme,
        "percentages": [str(p) for p in out.percentages],
        "participants": out.found.participants,
        "min_participants": int(stored.doc.get("min_participants") or 1),
        "outcome": "refunds" if out.reason else "prizes",
        "refund_reason": out.reason,
        "refunds_cents": out.pool.fees if out.reason else 0,
        "prizes": prizes,
        "event_id": out.found.version,
        "final": False,
    }


def _prize_view(award: Award, out: Outcome) -> dict[str, Any]:
    return {
        "user_id": award.user_id,
        "user_name": out.name(award.user_id),
        "rank": award.rank,
        "places": [award.place_from, award.place_to],
        "amount_cents": award.cents,
        "amount": display_amount(award.cents, out.currency),
        "currency": out.currency,
        "status": "preview",
    }


# --- distribution -------------------------------------------------------------------

FINALIZE_ATTEMPTS = 5  # a trusted write racing the freeze makes the ledger compute again


async def distribute(ctx: AppContext, stored: Stored) -> dict[str, Any]:
    """Freeze the standings, write the ledger and the outbox, finalize: exactly once.
    Repeated or concurrent calls answer the same ledger (the one that was written)."""
    cid = stored.id
    for _ in range(FINALIZE_ATTEMPTS):
        kept = await reads.ledger(ctx, cid)
        current = await repo.load(ctx, cid)
        if current is None:
            raise not_found(cid)
        if current.state == "cancelled":
            raise Conflict(
                "The competition was cancelled: its entry fees are refunded (the cancel wrote "
                "their ledger), no prizes are paid.",
                error="competition_cancelled",
            )
        if kept is not None:
            # Written, maybe by a call that failed after it: what follows is idempotent.
            await competitions.closed(ctx, cid)
            return ledger_view(*kept)
        now = ctx.clock.now()
        if now < current.deadline:
            raise Conflict(
                "Prizes are distributed once the grace period is over, at "
                f"{rfc3339(current.deadline)}.",
                error="too_early",
                details=[{"field": "opens_at", "message": rfc3339(current.deadline)}],
            )
        summary, lines = await _ledger(ctx, current, now)
        await competitions.closing(ctx, cid)
        code = await writes.finalize(
            ctx,
            cid,
            version=int(summary["event_id"]),
            now_ms=to_ms(now),
            summary=orjson.dumps(summary).decode(),
            outcome=str(summary["outcome"]),
            pool=int(summary["pool_cents"]),
            lines=[
                writes.LedgerLine(line["id"], orjson.dumps(line).decode(), line["amount_cents"] > 0)
                for line in lines
            ],
        )
        if code is Reply.NO_COMPETITION:
            raise not_found(cid)
        if code is Reply.OK:
            _count(str(summary["outcome"]), lines)
        # OK: done (read back below); CLOSED: another call finalized (or cancelled) it
        # meanwhile; STALE: the board moved since it was read. Each goes round again.
    raise ServiceUnavailable("The competition kept changing while it was being finalized; retry.")


def _count(outcome: str, lines: list[dict[str, Any]]) -> None:
    """A ledger this call wrote, in the metrics."""
    metrics.DISTRIBUTIONS.labels(outcome).inc()
    for line in lines:
        if line["amount_cents"] > 0:
            metrics.PAYOUTS.labels(line["kind"], line["currency"]).inc()
            metrics.PAYOUT_CENTS.labels(line["kind"], line["currency"]).inc(line["amount_cents"])


async def _ledger(
    ctx: AppContext, stored: Stored, now: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = await work_out(ctx, stored)
    lines: list[dict[str, Any]] = []
    if out.reason is None:
        for award in out.winners:
            first, last = award.place_from, award.place_to
            lines.append(
                _line(stored.id, "prize", award.user_id, award.cents, out.currency)
                | {
                    "user_name": out.name(award.user_id),
                    "rank": award.rank,
                    "places": [first, last],
                    "reason": f"place {first}" if first == last else f"places {first}-{last}",
                }
            )
    else:
        fees = await reads.fees_by_participant(ctx, stored.id)
        for user, cents in sorted(fees.items()):
            if cents > 0:
                lines.append(
                    _line(stored.id, "refund", user, cents, out.currency)
                    | {"user_name": None, "rank": None, "places": None, "reason": out.reason}
                )
    summary = {
        "competition_id": stored.id,
        "currency": out.currency,
        "pool_cents": 0 if out.reason else out.total,
        "prize_pool_cents": out.pool.base,
        "entry_fees_cents": out.pool.fees,
        "rake_cents": 0 if out.reason else out.pool.rake,
        "scheme": out.scheme,
        "percentages": [str(p) for p in out.percentages],
        "participants": out.found.participants,
        "outcome": "refunds" if out.reason else "prizes",
        "refund_reason": out.reason,
        "event_id": out.found.version,
        "finalized_at": rfc3339(now),
    }
    return summary, lines


def _line(cid: str, kind: str, user: str, cents: int, currency: str) -> dict[str, Any]:
    return {
        "id": payout_id(cid, kind, user),
        "kind": kind,
        "user_id": user,
        "amount_cents": cents,
        "currency": currency,
        "status": "pending" if cents > 0 else "nothing_to_pay",
    }


def ledger_view(summary: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    currency = str(summary["currency"])
    ordered = sorted(
        lines, key=lambda x: (x["kind"] != "prize", x.get("rank") or 0, str(x["user_id"]))
    )
    return {
        **summary,
        "percentages": [str(x) for x in summary.get("percentages") or []],
        "amount": display_amount(int(summary["pool_cents"]), currency),
        "lines": [
            line | {"amount": display_amount(int(line["amount_cents"]), currency)}
            for line in ordered
        ],
        "final": True,
    }


async def history(ctx: AppContext, user_id: str) -> dict[str, Any]:
    """The user's prizes and refunds across their competitions, newest first."""
    ids = await reads.competitions_of(ctx, user_id)
    items = []
    for summary, line in await reads.payouts_of(ctx, user_id, ids):
        currency = str(line["currency"])
        items.append(
            {
                "competition_id": summary["competition_id"],
                "finalized_at": summary["finalized_at"],
                "outcome": summary["outcome"],
                **line,
                "amount": display_amount(int(line["amount_cents"]), currency),
            }
        )
    items.sort(key=lambda x: (str(x["finalized_at"]), str(x["id"])), reverse=True)
    return {"user_id": user_id, "items": items, "count": len(items)}
