"""Every write to a board, a participation or the days that feed them.

A sync and a join's back-fill cross two cluster slots (the user's, then each
competition's), so they are short sagas of atomic, idempotent steps:

1. one script on the user's keys stores what is new and marks, in the user's `owed`
   hash, each (competition, day) to push, with a snapshot of the values and the time
   they were stored;
2. one script per competition applies the days whose version is newer than the one it
   counts, re-checking everything the user's side chose (open, member, window, stored
   before the deadline), re-ranks and emits the event;
3. the marks are cleared, each only if no newer sync re-marked it meanwhile.

A crash after 1 leaves marks that the next sync of that user, or the background sweep,
pushes again; versions make a replay harmless. A failure in one competition's step is
logged and leaves its marks for later: it never blocks the user's other competitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisClusterException, RedisError

from healthcomp.core import metrics
from healthcomp.core.clock import from_ms
from healthcomp.core.context import AppContext
from healthcomp.engine import scripts
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import Applied, Disqualified, Push, Reviewed, parse_pushes
from healthcomp.engine.rules import meta_fields

log = logging.getLogger("healthcomp.engine")

DayValues = tuple[int, int, int, int]
# Step 3 of syncs runs after their answers: gathered this long into one pipeline.
SETTLE_WAIT = 0.005


def _flat(fields: dict[str, str]) -> list[str]:
    return [x for pair in fields.items() for x in pair]


def board_keys(ctx: AppContext, cid: str, *extra: str) -> list[str]:
    """The first five keys of every script that changes a participant's entry (meta,
    lb, entry, names, ev: what `commit` in the scripts' prelude writes), then `extra`."""
    k = ctx.keys
    return [k.meta(cid), k.board(cid), k.entries(cid), k.names(cid), k.events(cid), *extra]


def join_keys(ctx: AppContext, cid: str) -> list[str]:
    """scripts.JOIN's keys."""
    k = ctx.keys
    return board_keys(ctx, cid, k.participations(cid), k.adjustments(cid), k.aggregates(cid))


def _day_keys(ctx: AppContext, cid: str, user_id: str, last: str) -> list[str]:
    """The keys of the scripts that change a participant's days (APPLY, REVIEW): the
    board's, the participant's counted days and adjustments, then what a day updates
    beside the board: the field, the day totals, the movers, the excluded days, the
    flags, and `last`."""
    k = ctx.keys
    return board_keys(
        ctx,
        cid,
        k.participant_days(cid, user_id),
        k.adjustments(cid),
        k.field(cid),
        k.aggregates(cid),
        k.movers(cid),
        k.excluded(cid),
        k.flags(cid),
        last,
    )


def apply_keys(ctx: AppContext, cid: str, user_id: str) -> list[str]:
    """scripts.APPLY's keys (the last: the flags' index)."""
    return _day_keys(ctx, cid, user_id, ctx.keys.flag_index(cid))


def apply_args(cid: str, user_id: str, now_ms: int, items: Sequence[Push]) -> list[Any]:
    """scripts.APPLY's arguments for these days."""
    args: list[Any] = [cid, user_id, now_ms, len(items)]
    for item in items:
        args.extend([item.day, item.ver, *item.values, item.synced_ms, item.flags, *item.typical])
    return args


# --- competitions --------------------------------------------------------------------


async def create(ctx: AppContext, doc: dict[str, Any]) -> bool:
    """Store a new competition. False when the id is taken."""
    res = await scripts.CREATE(ctx, [ctx.keys.meta(doc["id"])], _flat(meta_fields(doc)))
    return Reply(int(res[0])) is Reply.OK


@dataclass(frozen=True)
class Updated:
    code: Reply
    recount_total: int = 0
    participants: int = 0


async def update(
    ctx: AppContext,
    old_doc: dict[str, Any],
    doc: dict[str, Any],
    *,
    recount: bool,
    now_ms: int,
) -> Updated:
    """Replace the document if it is still `old_doc`; start a recount when asked."""
    k = ctx.keys
    cid = doc["id"]
    if recount:
        # Registered first: a crash after it leaves an entry the runner drops, never a
        # job nobody finds.
        await ctx.r.sadd(k.recounts(), cid)
    keys = [
        k.meta(cid),
        k.entries(cid),
        k.recount(cid),
        k.recount_list(cid),
        k.recount_done(cid),
        k.events(cid),
        k.field(cid),
        k.aggregates(cid),
    ]
    maxp = doc.get("max_participants") or 0
    expected = orjson.dumps(old_doc).decode()
    args: list[Any] = [cid, expected, "1" if recount else "0", maxp, now_ms]
    res = await scripts.UPDATE(ctx, keys, [*args, *_flat(meta_fields(doc))])
    code = Reply(int(res[0]))
    if code is Reply.OK:
        return Updated(code, recount_total=int(res[2]))
    if code is Reply.TOO_MANY:
        return Updated(code, participants=int(res[1]))
    return Updated(code)


async def cancel(
    ctx: AppContext, cid: str, *, actor: str, is_service: bool, now_ms: int, reason: str
) -> Reply:
    k = ctx.keys
    keys = [
        k.meta(cid),
        k.audit(cid),
        k.events(cid),
        k.participations(cid),
        k.ledger(cid),
        k.outbox(cid),
    ]
    args = [cid, actor, "1" if is_service else "0", now_ms, reason, from_ms(now_ms)]
    res = await scripts.CANCEL(ctx, keys, args)
    code = Reply(int(res[0]))
    if code is Reply.OK:
        refunds, cents, currency = int(res[2]), int(res[3]), str(res[4])
        metrics.DISTRIBUTIONS.labels("cancelled").inc()
        if refunds:
            metrics.PAYOUTS.labels("refund", currency).inc(refunds)
            metrics.PAYOUT_CENTS.labels("refund", currency).inc(cents)
    return code


@dataclass(frozen=True)
class LedgerLine:
    """One payout of a ledger: its id, its JSON, and whether it goes to the outbox."""

    id: str
    json: str
    payable: bool


async def finalize(
    ctx: AppContext,
    cid: str,
    *,
    version: int,
    now_ms: int,
    summary: str,
    outcome: str,
    pool: int,
    lines: list[LedgerLine],
) -> Reply:
    """Write the ledger and the outbox and finalize, at once (scripts.FINALIZE): OK,
    CLOSED (finalized or cancelled already), STALE (the board moved) or
    NO_COMPETITION."""
    k = ctx.keys
    keys = [k.meta(cid), k.events(cid), k.ledger(cid), k.outbox(cid)]
    args: list[Any] = [cid, version, now_ms, summary, outcome, pool, len(lines)]
    for line in lines:
        args += [line.id, line.json, "1" if line.payable else "0"]
    res = await scripts.FINALIZE(ctx, keys, args)
    return Reply(int(res[0]))


PAYOUT_GROUP = "payouts"  # the outboxes' consumer group


@dataclass(frozen=True)
class Payout:
    entry_id: str  # in the competition's outbox
    line: dict[str, Any]


async def claim_payouts(ctx: AppContext, cid: str, consumer: str, count: int = 100) -> list[Payout]:
    """Payouts of the competition's outbox for `consumer`: first those it was given
    before and never acknowledged (a worker that died part-way), then new ones."""
    key = ctx.keys.outbox(cid)
    try:
        await ctx.r.xgroup_create(key, PAYOUT_GROUP, id="0", mkstream=True)
    except RedisError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    for start in ("0", ">"):
        reply: Any = await ctx.r.xreadgroup(PAYOUT_GROUP, consumer, {key: start}, count=count)
        entries = [e for _, items in reply or [] for e in items if e[1]]
        if entries:
            return [Payout(str(eid), orjson.loads(fields["p"])) for eid, fields in entries]
    return []


async def settle_payout(
    ctx: AppContext, cid: str, payout: Payout, status: str, reference: str, at: str
) -> str:
    """Record a payment's result on its ledger line (once), then acknowledge the outbox
    entry. The line's status before: `pending`, or what an earlier run recorded."""
    res = await scripts.SETTLE_PAYOUT(
        ctx, [ctx.keys.ledger(cid)], [payout.line["id"], status, reference, at]
    )
    before = str(res[1]) if Reply(int(res[0])) is Reply.OK else "missing"
    await ctx.r.xack(ctx.keys.outbox(cid), PAYOUT_GROUP, payout.entry_id)
    return before


# --- participations ------------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    code: Reply
    participant_count: int = 0


async def join(ctx: AppContext, cid: str, user_id: str, name: str, now_ms: int) -> Joined:
    """Join, then back-fill the user's days inside the window.

    The owed back-fill is recorded on the user's side before the join, so a request
    that dies after the join leaves work the sweep finishes; a retried join (answered
    `ALREADY_JOINED`) completes it too.
    """
    res = await join_step(ctx, cid, user_id, name, now_ms)
    code = Reply(int(res[0]))
    if code not in (Reply.OK, Reply.ALREADY_JOINED):
        await _forget(ctx, user_id, cid)
        return Joined(code)
    window = (str(res[2]), str(res[3]), int(res[4]), int(res[5]))
    await backfill(ctx, user_id, cid, window, now_ms)
    return Joined(code, int(res[1]))


async def join_step(ctx: AppContext, cid: str, user_id: str, name: str, now_ms: int) -> list[Any]:
    """The join alone (the back-fill recorded as owed, then the join script): what a
    request that dies right after it leaves behind. Answers the script's reply."""
    k = ctx.keys
    await scripts.OWE_BACKFILL(ctx, [k.owed(user_id)], [cid, now_ms])
    res: list[Any] = await scripts.JOIN(ctx, join_keys(ctx, cid), [cid, user_id, now_ms, name])
    return res


async def backfill(
    ctx: AppContext, user_id: str, cid: str, window: tuple[str, str, int, int], now_ms: int
) -> None:
    """Mark and push the user's days inside the window (start, end, deadline_ms, rules
    version), unless a newer window is recorded already."""
    k = ctx.keys
    start, end, deadline_ms, rules = window
    res = await scripts.BACKFILL_USER(
        ctx,
        [k.effective(user_id), k.windows(user_id), k.owed(user_id)],
        [cid, start, end, deadline_ms, now_ms, rules],
    )
    await push(ctx, user_id, parse_pushes(res), now_ms)


async def leave(ctx: AppContext, cid: str, user_id: str, now_ms: int) -> Joined:
    k = ctx.keys
    keys = board_keys(
        ctx,
        cid,
        k.participant_days(cid, user_id),
        k.participations(cid),
        k.field(cid),
        k.aggregates(cid),
        k.movers(cid),
    )
    res = await scripts.LEAVE(ctx, keys, [cid, user_id, now_ms])
    code = Reply(int(res[0]))
    if code is Reply.OK:
        await _forget(ctx, user_id, cid)
        return Joined(code, int(res[1]))
    return Joined(code)


async def _forget(ctx: AppContext, user_id: str, cid: str) -> None:
    """Drop the competition from the user's record (and any back-fill owed to it)."""
    k = ctx.keys
    await scripts.CLEAR(ctx, [k.owed(user_id), k.windows(user_id)], [0, cid])


async def rename_everywhere(ctx: AppContext, user_id: str, name: str, now_ms: int) -> None:
    """A new display name reaches every board the user is on."""
    k = ctx.keys
    for cid in sorted(str(c) for c in await ctx.r.hkeys(k.windows(user_id))):
        await scripts.RENAME(ctx, board_keys(ctx, cid), [cid, user_id, name, now_ms])


@dataclass(frozen=True)
class Written:
    code: Reply
    score: int = 0
    rank: int = 0
    previous_rank: int | None = None
    before: list[int] | None = None
    after: list[int] | None = None
    event_id: int = 0


async def set_totals(
    ctx: AppContext,
    cid: str,
    user_id: str,
    *,
    now_ms: int,
    actor: str,
    is_service: bool,
    reason: str,
    values: Sequence[int | None],
) -> Written:
    """A trusted write: (steps, distance, calories, active_minutes, goal_days), None
    where unchanged."""
    k = ctx.keys
    keys = board_keys(ctx, cid, k.adjustments(cid), k.audit(cid), k.movers(cid))
    args: list[Any] = [cid, user_id, now_ms, actor, "1" if is_service else "0", reason]
    for value in values:
        args.extend(["0", 0] if value is None else ["1", int(value)])
    res = await scripts.SET_TOTALS(ctx, keys, args)
    code = Reply(int(res[0]))
    if code is not Reply.OK:
        return Written(code)
    return Written(
        code,
        score=int(res[1]),
        rank=int(res[2]),
        previous_rank=int(res[3]) if res[3] is not None else None,
        before=orjson.loads(res[4]),
        after=orjson.loads(res[5]),
        event_id=int(res[6]),
    )


# --- fair play -----------------------------------------------------------------------


async def review(
    ctx: AppContext,
    cid: str,
    flag_id: str,
    user_id: str,
    *,
    action: str,
    actor: str,
    reason: str,
    now_ms: int,
) -> Reviewed:
    """A reviewer's decision on the flag `flag_id` of `user_id` (dismiss, exclude,
    restore): see scripts.REVIEW."""
    keys = _day_keys(ctx, cid, user_id, ctx.keys.audit(cid))
    res = await scripts.REVIEW(ctx, keys, [cid, flag_id, user_id, action, actor, reason, now_ms])
    code = Reply(int(res[0]))
    if code is not Reply.OK:
        return Reviewed(code)
    return Reviewed(code, bool(int(res[1])), orjson.loads(res[2]), int(res[3]))


async def disqualify(
    ctx: AppContext,
    cid: str,
    user_id: str,
    *,
    action: str,
    actor: str,
    reason: str,
    now_ms: int,
) -> Disqualified:
    """Disqualify or reinstate a participant (`action`): see scripts.DISQUALIFY."""
    k = ctx.keys
    keys = board_keys(
        ctx,
        cid,
        k.participant_days(cid, user_id),
        k.field(cid),
        k.aggregates(cid),
        k.excluded(cid),
        k.participations(cid),
        k.audit(cid),
    )
    res = await scripts.DISQUALIFY(ctx, keys, [cid, user_id, action, actor, reason, now_ms])
    code = Reply(int(res[0]))
    if code is not Reply.OK:
        return Disqualified(code)
    rank = None if res[4] is None else int(res[4])
    return Disqualified(code, bool(int(res[1])), int(res[2]), int(res[3]), rank)


# --- syncs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Synced:
    code: Reply  # OK, or NOT_MINE with `competition_id` and nothing stored
    competition_id: str | None = None
    results: dict[str, Applied] | None = None
    # Step 3, when the caller chose to run it later (`settle`).
    clearing: Clearing | None = None


@dataclass(frozen=True)
class Clearing:
    """Step 3 of a sync for one user: the marks the competitions answered, and the
    competitions that are gone."""

    user_id: str
    done: tuple[Push, ...]
    forget: tuple[str, ...]


async def sync(
    ctx: AppContext,
    user_id: str,
    now_ms: int,
    records: Sequence[tuple[str, str, DayValues]],
    named: Sequence[str] = (),
    *,
    defer_clear: bool = False,
) -> Synced:
    """Store records (day, source, values) and push the days into every competition
    that counts them. `named` competitions must be the user's (else nothing is stored).

    Two round trips whatever the number of competitions: the user's script, then every
    competition's apply in one pipeline. With `defer_clear` the marks are cleared by
    `settle(ctx, synced.clearing)`, which the caller runs after answering (a mark left
    by a crash in between is pushed again by the next sync or the sweep, harmlessly)."""
    code, marked = await store(ctx, user_id, now_ms, records, named)
    if code is not Reply.OK:
        return Synced(code, competition_id=str(marked))
    assert isinstance(marked, list)
    results, clearing = await apply_all(ctx, user_id, marked, now_ms)
    if not defer_clear:
        await settle(ctx, clearing)
        clearing = None
    return Synced(code, results=results, clearing=clearing)


async def store(
    ctx: AppContext,
    user_id: str,
    now_ms: int,
    records: Sequence[tuple[str, str, DayValues]],
    named: Sequence[str] = (),
) -> tuple[Reply, list[Push] | str]:
    """Step 1 of a sync alone: store and mark. (OK, every push owed) or (NOT_MINE,
    the competition named that is not the user's)."""
    k = ctx.keys
    args: list[Any] = [now_ms, len(records)]
    for day, source, values in records:
        args.extend([day, source, *values])
    args.append(len(named))
    args.extend(named)
    keys = [k.records(user_id), k.effective(user_id), k.windows(user_id), k.owed(user_id)]
    res = await scripts.SYNC_USER.batched(ctx, keys, args)
    code = Reply(int(res[0]))
    if code is not Reply.OK:
        return code, str(res[1])
    return code, parse_pushes(res)


async def push(
    ctx: AppContext, user_id: str, pushes: Sequence[Push], now_ms: int
) -> dict[str, Applied]:
    """Apply owed days (step 2), then clear the marks the competitions answered (step
    3). Returns each competition's answer (OK ones only)."""
    results, clearing = await apply_all(ctx, user_id, pushes, now_ms)
    await settle(ctx, clearing)
    return results


async def apply_all(
    ctx: AppContext, user_id: str, pushes: Sequence[Push], now_ms: int
) -> tuple[dict[str, Applied], Clearing | None]:
    """Step 2: one apply per competition, all in one pipeline. Returns the answers (OK
    ones only) and what step 3 must clear."""
    by_comp: dict[str, list[Push]] = defaultdict(list)
    for item in pushes:
        by_comp[item.competition_id].append(item)
    if not by_comp:
        return {}, None
    cids = sorted(by_comp)
    # Every apply is queued before the first is awaited, so they share one pipeline.
    sent = [_send_apply(ctx, cid, user_id, by_comp[cid], now_ms) for cid in cids]
    answers = [
        await _applied(cid, user_id, len(by_comp[cid]), future)
        for cid, future in zip(cids, sent, strict=True)
    ]
    done: list[Push] = []
    forget: list[str] = []
    results: dict[str, Applied] = {}
    for cid, applied in zip(cids, answers, strict=True):
        if applied is None:  # failed: the marks stay for the next sync or the sweep
            continue
        done.extend(by_comp[cid])
        if applied.code is Reply.OK:
            results[cid] = applied
        elif applied.code is Reply.NO_COMPETITION:
            # Gone. A closed (cancelled, finalized) one stays on the user's record like
            # an ended one: it is still theirs, in their listings; its deadline stops
            # new marks for it.
            forget.append(cid)
    if not done and not forget:
        return results, None
    return results, Clearing(user_id, tuple(done), tuple(forget))


async def settle(ctx: AppContext, clearing: Clearing | None) -> None:
    """Step 3: clear the marks, each only if no newer sync re-marked it meanwhile."""
    if clearing is None:
        return
    args: list[Any] = [len(clearing.done)]
    for item in clearing.done:
        args.extend([item.field, item.seq])
    args.extend(clearing.forget)
    k = ctx.keys
    keys = [k.owed(clearing.user_id), k.windows(clearing.user_id)]
    await scripts.CLEAR.batched(ctx, keys, args, wait=SETTLE_WAIT)


def _send_apply(
    ctx: AppContext, cid: str, user_id: str, items: Sequence[Push], now_ms: int
) -> asyncio.Future[Any]:
    return scripts.APPLY.send(
        ctx, apply_keys(ctx, cid, user_id), apply_args(cid, user_id, now_ms, items)
    )


async def _applied(cid: str, user_id: str, days: int, sent: asyncio.Future[Any]) -> Applied | None:
    try:
        res = await sent
    except (RedisError, RedisClusterException):
        log.exception("applying %d day(s) of %s to %s failed", days, user_id, cid)
        return None
    code = Reply(int(res[0]))
    if code is not Reply.OK:
        return Applied(code)
    return Applied(
        code,
        score=int(res[1]),
        rank=None if res[2] is None else int(res[2]),
        previous_rank=None if res[3] is None else int(res[3]),
        event_id=int(res[4]),
        changed=bool(int(res[5])),
    )


async def repair(ctx: AppContext, user_id: str, now_ms: int, *, older_than_ms: int = 0) -> int:
    """Push whatever an interrupted sync or join left owed. Returns how many days.

    Back-fills owed by joins are finished only when older than `older_than_ms`, so the
    sweep does not race a join still in flight.
    """
    k = ctx.keys
    raw = await ctx.r.hgetall(k.owed(user_id))
    flat: list[Any] = [Reply.OK]
    markers: list[tuple[str, int]] = []
    for field, value in raw.items():
        if str(field).endswith("|*"):
            markers.append((str(field)[:-2], int(value)))
        else:
            flat.extend([field, value])
    pushes = parse_pushes(flat)
    await push(ctx, user_id, pushes, now_ms)
    for cid, owed_ms in markers:
        if now_ms - owed_ms >= older_than_ms:
            await _finish_join(ctx, user_id, cid, now_ms)
    return len(pushes)


async def _finish_join(ctx: AppContext, user_id: str, cid: str, now_ms: int) -> None:
    k = ctx.keys
    pipe = ctx.r.pipeline(transaction=False)
    pipe.hexists(k.entries(cid), user_id)
    pipe.hmget(k.meta(cid), ["start_date", "end_date", "deadline_ms", "rules"])
    member, (start, end, deadline_ms, rules) = await pipe.execute()
    if not member or start is None:
        await _forget(ctx, user_id, cid)
        return
    window = (str(start), str(end), int(deadline_ms), int(rules or 0))
    await backfill(ctx, user_id, cid, window, now_ms)
