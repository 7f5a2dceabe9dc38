"""Sync (SPEC §6.1): validate, then hand the records to the engine, which stores them
and pushes the days into every competition that counts them (see `engine.writes`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from healthcomp.activity.schemas import Batch, Record
from healthcomp.competitions import repo as competitions_repo
from healthcomp.core.auth import Principal
from healthcomp.core.clock import to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Forbidden, NotFound, ValidationFailed
from healthcomp.engine import reads, writes
from healthcomp.engine.codes import Reply
from healthcomp.engine.rules import EARLIEST_OFFSET
from healthcomp.engine.writes import Clearing

EARLIEST_DAY = date(2000, 1, 1)


def _target_user(principal: Principal, batch: Batch) -> str:
    ids = {r.user_id for r in batch.records if r.user_id is not None}
    if batch.user_id is not None:
        ids.add(batch.user_id)
    if len(ids) > 1:
        raise ValidationFailed(
            "All records of one sync must be for the same user.",
            details=[{"field": "records.user_id", "message": "differs", "type": "value_error"}],
        )
    user_id = ids.pop() if ids else principal.user_id
    if user_id is None:
        raise ValidationFailed(
            "A service sync must name the user_id.",
            details=[{"field": "user_id", "message": "required", "type": "missing"}],
        )
    principal.require_self_or_service(user_id)
    return user_id


def latest_day(now: datetime) -> date:
    """The newest calendar day that has begun somewhere on Earth (at UTC+14)."""
    return (now + EARLIEST_OFFSET).date()


def _check_dates(records: list[Record], now: datetime) -> None:
    latest = latest_day(now)
    bad = []
    for i, r in enumerate(records):
        if r.date > latest:
            message = f"{r.date} has not begun anywhere on Earth yet (latest {latest})"
        elif r.date < EARLIEST_DAY:
            message = f"{r.date} is before {EARLIEST_DAY}"
        else:
            continue
        bad.append({"field": f"records.{i}.date", "message": message, "type": "value_error"})
    if bad:
        raise ValidationFailed("A record's date is out of range.", details=bad)


def _named(batch: Batch) -> list[str]:
    """Every competition the body names, in order, once."""
    names = [batch.competition_id, *(r.competition_id for r in batch.records)]
    return list(dict.fromkeys(n for n in names if n is not None))


async def sync(ctx: AppContext, principal: Principal, batch: Batch) -> dict[str, Any]:
    """Validate, store and apply; the marks are cleared before returning."""
    result, clearing = await sync_deferred(ctx, principal, batch)
    await writes.settle(ctx, clearing)
    return result


async def sync_deferred(
    ctx: AppContext, principal: Principal, batch: Batch
) -> tuple[dict[str, Any], Clearing | None]:
    """The sync's answer (a `SyncResult` as a dict), and the clearing of its marks for
    the caller to run once it has answered (`writes.settle`)."""
    now = ctx.clock.now()
    user_id = _target_user(principal, batch)
    _check_dates(batch.records, now)
    # Within a batch the last record for a (day, source) wins, as it would in order.
    latest: dict[tuple[str, str], tuple[int, int, int, int]] = {}
    for record in batch.records:
        latest[(record.date.isoformat(), record.source)] = record.values()
    records = [(day, source, values) for (day, source), values in latest.items()]
    named = _named(batch)
    now_ms = to_ms(now)
    synced = await writes.sync(ctx, user_id, now_ms, records, named, defer_clear=True)
    if synced.code is Reply.NOT_MINE:
        cid = synced.competition_id
        assert cid is not None
        stored = await competitions_repo.load(ctx, cid)
        member = stored is not None and await reads.is_participant(ctx, cid, user_id)
        if stored is None or (not member and not stored.is_public):
            raise NotFound(f"No competition '{cid}'.", error="competition_not_found")
        if not member:
            raise Forbidden(
                f"'{user_id}' does not take part in competition '{cid}'.",
                error="not_participant",
            )
        # A participant whose record of windows lags (a join still completing): the
        # competition itself says yes, so store without the check.
        synced = await writes.sync(ctx, user_id, now_ms, records, defer_clear=True)
    results = [
        {
            "competition_id": cid,
            "score": applied.score,
            "rank": applied.rank,
            "previous_rank": applied.rank
            if applied.previous_rank is None
            else applied.previous_rank,
        }
        for cid, applied in sorted((synced.results or {}).items())
    ]
    return {"records_accepted": len(batch.records), "competitions": results}, synced.clearing


async def repair(ctx: AppContext, user_id: str) -> int:
    """Push whatever an interrupted sync left owed (before reading the user's stats)."""
    return await writes.repair(ctx, user_id, to_ms(ctx.clock.now()), older_than_ms=60_000)
