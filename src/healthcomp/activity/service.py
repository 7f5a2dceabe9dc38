"""Sync: store a user's daily records, then push the effective days into every
competition that counts them.

The two halves live in different cluster slots (the user's, each competition's), so
a sync is a short saga whose every step is atomic on its own and idempotent:

1. one script on the user's keys stores the records, recomputes each day's effective
   value (max across sources, with a version that goes up on change) and marks each
   (competition, day) to push in the user's `dirty` hash;
2. one script per competition applies the days whose version is newer than what it
   holds and re-ranks the participant;
3. the marks are cleared (only if no newer sync re-marked them meanwhile).

A crash after 1 leaves marks; the user's next sync (or `repair`) pushes them again.
Versions make a replayed or late push harmless.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

from healthcomp.activity import repo
from healthcomp.activity.schemas import Batch, CompetitionResult, Record, SyncResult
from healthcomp.competitions import repo as competitions
from healthcomp.competitions.model import Stored
from healthcomp.core.auth import Principal
from healthcomp.core.clock import to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Forbidden, NotFound, ValidationFailed
from healthcomp.leaderboard import repo as boards

MAX_DAYS_AHEAD = 1


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


def _check_dates(records: list[Record], today: date) -> None:
    latest = today + timedelta(days=MAX_DAYS_AHEAD)
    bad = [
        {
            "field": f"records.{i}.date",
            "message": f"{r.date} is more than {MAX_DAYS_AHEAD} day ahead of {today} (UTC)",
            "type": "value_error",
        }
        for i, r in enumerate(records)
        if r.date > latest
    ]
    if bad:
        raise ValidationFailed("A record's date is in the future.", details=bad)


async def sync(ctx: AppContext, principal: Principal, batch: Batch) -> SyncResult:
    now = ctx.clock.now()
    user_id = _target_user(principal, batch)
    _check_dates(batch.records, now.date())
    wanted = batch.competition_id or next(
        (r.competition_id for r in batch.records if r.competition_id), None
    )
    comp_ids = await competitions.user_competition_ids(ctx, user_id)
    stored = [s for s in await competitions.load_many(ctx, comp_ids) if s is not None]
    if wanted is not None and wanted not in {s.id for s in stored}:
        if await competitions.load(ctx, wanted) is None:
            raise NotFound(f"No competition '{wanted}'.", error="competition_not_found")
        raise Forbidden(
            f"'{user_id}' does not take part in competition '{wanted}'.",
            error="not_participant",
        )
    # Within a batch the last record for a (day, source) wins, as it would in order.
    latest: dict[tuple[str, str], tuple[int, int, int, int]] = {}
    for record in batch.records:
        latest[(record.date.isoformat(), record.source)] = record.values()
    targets = sorted(
        {
            (s.id, day, day)
            for (day, _), _v in latest.items()
            for s in stored
            if s.accepts_day(date.fromisoformat(day), now)
        }
    )
    records = [(day, source, values) for (day, source), values in latest.items()]
    pushes = await repo.write(ctx, user_id, to_ms(now), records, targets)
    results = await _push(ctx, user_id, pushes, to_ms(now))
    return SyncResult(records_accepted=len(batch.records), competitions=results)


async def _push(
    ctx: AppContext, user_id: str, pushes: list[repo.Push], now_ms: int
) -> list[CompetitionResult]:
    by_comp: dict[str, list[repo.Push]] = defaultdict(list)
    for push in pushes:
        by_comp[push.competition_id].append(push)
    results: list[CompetitionResult] = []
    done: list[repo.Push] = []
    for cid, items in sorted(by_comp.items()):
        days = [(p.day, p.ver, *p.values) for p in items]
        applied = await boards.apply_days(ctx, cid, user_id, now_ms, days)
        # Whatever the competition answered (applied, gone, closed, not a member),
        # these days need no further push.
        done.extend(items)
        if applied.code == 0:
            results.append(
                CompetitionResult(
                    competition_id=cid,
                    score=applied.score,
                    rank=applied.rank,
                    previous_rank=applied.previous_rank,
                )
            )
    await repo.clear(ctx, user_id, done)
    return results


async def backfill(ctx: AppContext, user_id: str, stored: Stored) -> None:
    """Push the user's days inside the window into a competition they just joined."""
    now = ctx.clock.now()
    if not stored.accepts_day(stored.start, now):
        return
    target = (stored.id, stored.start.isoformat(), stored.end.isoformat())
    pushes = await repo.write(ctx, user_id, to_ms(now), [], [target])
    await _push(ctx, user_id, pushes, to_ms(now))


async def repair(ctx: AppContext, user_id: str) -> int:
    """Push whatever an interrupted sync left marked. Returns how many days."""
    now_ms = to_ms(ctx.clock.now())
    pushes = await repo.write(ctx, user_id, now_ms, [], [])
    await _push(ctx, user_id, pushes, now_ms)
    return len(pushes)


async def repair_all(ctx: AppContext) -> int:
    """Finish every sync a crash interrupted (run at start-up, in the background)."""
    repaired = 0
    pattern = f"{ctx.settings.key_prefix}:{{u:*}}:dirty"
    async for key in ctx.r.scan_iter(match=pattern, count=1000):
        user_id = str(key).split("{u:", 1)[1].split("}", 1)[0]
        repaired += await repair(ctx, user_id)
    return repaired


async def rescore(ctx: AppContext, stored: Stored) -> None:
    """Recount every participant from their stored days (window/metric/goal changed)."""
    now_ms = to_ms(ctx.clock.now())
    start = 0
    while True:
        users = await boards.participants(ctx, stored.id, start, 500)
        for user_id in users:
            await boards.reset(ctx, stored.id, user_id, now_ms)
            await backfill(ctx, user_id, stored)
        if len(users) < 500:
            return
        start += 500
