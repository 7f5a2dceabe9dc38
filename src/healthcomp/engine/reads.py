"""Reads of the engine's keys: competitions, pages, standings, events, audit."""

from __future__ import annotations

from typing import Any, cast

import orjson

from healthcomp.core.context import AppContext
from healthcomp.engine import scripts
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import (
    AnalyticsInputs,
    BoardState,
    CompetitionRecord,
    Contender,
    Event,
    FieldDay,
    Page,
    PayoutInputs,
    Recount,
    Standing,
    parse_event,
    payout_id,
)


def _recount(state: Any, done: Any, total: Any) -> Recount | None:
    return Recount(str(state), int(done or 0), int(total or 0)) if state else None


async def load_many(ctx: AppContext, ids: list[str]) -> list[CompetitionRecord | None]:
    """One pipelined round trip for any number of competitions."""
    if not ids:
        return []
    k = ctx.keys
    pipe = ctx.r.pipeline(transaction=False)
    for cid in ids:
        pipe.hmget(k.meta(cid), ["doc", "state", "ver", "cancelled_ms", "finalized_ms"])
        pipe.hlen(k.entries(cid))
        pipe.hmget(k.recount(cid), ["state", "done", "total"])
    raw = await pipe.execute()
    out: list[CompetitionRecord | None] = []
    for i in range(0, len(raw), 3):
        doc, state, ver, cancelled, finalized = raw[i]
        if doc is None:
            out.append(None)
            continue
        out.append(
            CompetitionRecord(
                doc=orjson.loads(doc),
                state=str(state),
                participant_count=int(raw[i + 1]),
                version=int(ver or 0),
                recount=_recount(*raw[i + 2]),
                closed_ms=int(cancelled or finalized) if cancelled or finalized else None,
            )
        )
    return out


async def load(ctx: AppContext, competition_id: str) -> CompetitionRecord | None:
    return (await load_many(ctx, [competition_id]))[0]


async def page(
    ctx: AppContext,
    cid: str,
    *,
    caller: str | None,
    is_service: bool,
    offset: int = 0,
    limit: int = 100,
    around: str | None = None,
    members_only: bool = False,
) -> Page | Reply:
    """One round trip: access check, the ranked rows, their totals and names, the
    caller's own row. A reply code instead when the caller may not see the board
    (`NOT_VISIBLE`, `NOT_PARTICIPANT`), it does not exist, or `around` is not on it."""
    k = ctx.keys
    keys = [k.meta(cid), k.board(cid), k.entries(cid), k.names(cid), k.adjustments(cid)]
    keys.append(k.recount(cid))
    args = [
        "around" if around else "offset",
        offset,
        limit,
        around or "",
        caller or "",
        "1" if is_service else "0",
        "1" if members_only else "0",
    ]
    res = await scripts.PAGE(ctx, keys, args)
    code = Reply(int(res[0]))
    if code is not Reply.OK:
        return code
    total, start, event_id, updated = int(res[1]), int(res[2]), int(res[3]), res[4]
    recount = _recount(res[5], res[6], res[7])
    n, member = int(res[8]), int(res[9]) == 1
    rows = [tuple(res[10 + i * 6 : 16 + i * 6]) for i in range(n)]
    tail = res[10 + n * 6 :]
    me = tuple(tail[1:7]) if int(tail[0]) == 1 else None
    updated_ms = int(updated) if updated else None
    return Page(total, start, event_id, updated_ms, recount, rows, me, member)


async def board_state(ctx: AppContext, cid: str) -> BoardState | None:
    """The board's version and access fields, or None when there is no such
    competition (one small script; see `scripts.BOARD_STATE`)."""
    k = ctx.keys
    res = await scripts.BOARD_STATE(ctx, [k.meta(cid), k.recount(cid)], [])
    if Reply(int(res[0])) is not Reply.OK:
        return None
    _, ver, visibility, organizer, updated, recount = res
    return BoardState(
        version=int(ver),
        public=str(visibility) == "public",
        organizer=str(organizer),
        updated_ms=int(updated) if updated else None,
        recounting=recount is not None and str(recount) == "running",
    )


async def standing(ctx: AppContext, cid: str, user_id: str) -> Standing | None:
    return (await standings(ctx, user_id, [cid]))[0]


async def standings(ctx: AppContext, user_id: str, ids: list[str]) -> list[Standing | None]:
    """The user's score, rank and gap in each competition (None where not on the
    board), one pipeline for all of them."""
    k = ctx.keys
    sent = [scripts.STANDING.send(ctx, [k.board(cid), k.entries(cid)], [user_id]) for cid in ids]
    out: list[Standing | None] = []
    for future in sent:
        res = await future
        if Reply(int(res[0])) is not Reply.OK:
            out.append(None)
            continue
        _, score, rank, entry, gap = res
        out.append(
            Standing(
                int(score),
                None if rank is None else int(rank),
                orjson.loads(entry),
                int(gap) if gap else None,
            )
        )
    return out


async def is_participant(ctx: AppContext, cid: str, user_id: str) -> bool:
    return bool(await ctx.r.hexists(ctx.keys.entries(cid), user_id))


async def competitions_of(ctx: AppContext, user_id: str) -> list[str]:
    """The competitions the user takes part in (their record of windows; a superset
    while a leave is half done: the competition is the truth)."""
    ids = await ctx.r.hkeys(ctx.keys.windows(user_id))
    return sorted(str(i) for i in ids)


async def participation(ctx: AppContext, cid: str, user_id: str) -> dict[str, Any] | None:
    raw = await ctx.r.hget(ctx.keys.participations(cid), user_id)
    return cast(dict[str, Any], orjson.loads(raw)) if raw else None


async def audit_log(ctx: AppContext, cid: str, *, user_id: str | None = None) -> list[Any]:
    """The audit trail, oldest first; only the records about `user_id` when given."""
    raw = await ctx.r.lrange(ctx.keys.audit(cid), 0, -1)
    records = [orjson.loads(item) for item in raw]
    if user_id is not None:
        records = [r for r in records if r.get("user_id") == user_id]
    return records


async def payout_inputs(
    ctx: AppContext, cid: str, *, places: int | None = None, qualifying: int | None = None
) -> PayoutInputs | None:
    """The fees owed and the top of the board, read at once: the first `places` and
    all tied with the last of them, or everyone scoring at least `qualifying`. None
    when there is no such competition."""
    k = ctx.keys
    mode = ["places", places] if places is not None else ["qualifiers", qualifying or 0]
    keys = [k.meta(cid), k.board(cid), k.participations(cid), k.names(cid)]
    res = await scripts.PAYOUT_INPUTS(ctx, keys, mode)
    if Reply(int(res[0])) is not Reply.OK:
        return None
    _, state, version, fees, participants, n = res[:6]
    rows = res[6:]
    top = [
        Contender(str(rows[i]), int(rows[i + 1]), int(rows[i + 2]), str(rows[i + 3]))
        for i in range(0, 4 * int(n), 4)
    ]
    return PayoutInputs(str(state), int(version), int(fees), int(participants), top)


async def ledger(ctx: AppContext, cid: str) -> tuple[Any, list[Any]] | None:
    """A finalized competition's ledger: its summary and its lines; None before."""
    raw = cast(dict[str, str], await ctx.r.hgetall(ctx.keys.ledger(cid)))
    summary = raw.pop("summary", None)
    if summary is None:
        return None
    return orjson.loads(summary), [orjson.loads(line) for line in raw.values()]


async def payouts_of(
    ctx: AppContext, user_id: str, ids: list[str]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The user's lines in the ledgers of these competitions (a prize, a refund), each
    with its ledger's summary; one pipelined read."""
    pipe = ctx.r.pipeline(transaction=False)
    for cid in ids:
        line_ids = [payout_id(cid, kind, user_id) for kind in ("prize", "refund")]
        pipe.hmget(ctx.keys.ledger(cid), ["summary", *line_ids])
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for summary, *lines in await pipe.execute():
        if summary is None:
            continue
        parsed = orjson.loads(summary)
        out.extend((parsed, orjson.loads(line)) for line in lines if line is not None)
    return out


async def names_of(ctx: AppContext, cid: str, users: list[str]) -> dict[str, str]:
    """The display names the board shows for these participants (those it has)."""
    if not users:
        return {}
    found = await ctx.r.hmget(ctx.keys.names(cid), users)
    return {u: str(n) for u, n in zip(users, found, strict=True) if n is not None}


async def participations(ctx: AppContext, cid: str) -> dict[str, dict[str, Any]]:
    """Every participation record of the competition (active or left), by user."""
    raw = cast(dict[str, str], await ctx.r.hgetall(ctx.keys.participations(cid)))
    return {user: orjson.loads(value) for user, value in raw.items()}


async def fees_by_participant(ctx: AppContext, cid: str) -> dict[str, int]:
    """The entry fee each active participation owes (for refunds)."""
    raw = cast(dict[str, str], await ctx.r.hgetall(ctx.keys.participations(cid)))
    out: dict[str, int] = {}
    for user, value in raw.items():
        record = orjson.loads(value)
        if record.get("state") == "active":
            out[user] = int(record.get("fee_cents") or 0)
    return out


def events_channel(ctx: AppContext, cid: str) -> str:
    """The pub/sub channel each event of the board is published on: its stream's name
    (a shard channel, SPUBLISH, on Redis 7 and newer)."""
    return ctx.keys.events(cid)


async def events_since(ctx: AppContext, cid: str, since: int, count: int = 1000) -> list[Event]:
    """Events after `since`, oldest first (at most `count`)."""
    raw: Any = await ctx.r.xrange(ctx.keys.events(cid), min=f"({since}-0", count=count)
    return [Event(int(str(eid).split("-", 1)[0]), parse_event(fields["e"])) for eid, fields in raw]


async def effective_days(ctx: AppContext, user_id: str) -> dict[str, dict[str, Any]]:
    raw = cast(dict[str, str], await ctx.r.hgetall(ctx.keys.effective(user_id)))
    return {day: orjson.loads(value) for day, value in raw.items()}


async def source_records(ctx: AppContext, user_id: str) -> dict[str, str]:
    return cast(dict[str, str], await ctx.r.hgetall(ctx.keys.records(user_id)))


async def user_exists(ctx: AppContext, user_id: str) -> bool:
    k = ctx.keys
    pipe = ctx.r.pipeline(transaction=False)
    pipe.exists(k.profile(user_id))
    pipe.exists(k.effective(user_id))
    pipe.exists(k.windows(user_id))
    return any(await pipe.execute())


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


async def analytics_inputs(
    ctx: AppContext, cid: str, first_day: str, last_day: str
) -> AnalyticsInputs | None:
    """The field of each day from `first_day` to `last_day`, the board, the entries,
    names, movers' checkpoints and joins per day, read at once; None when there is no
    such competition."""
    k = ctx.keys
    keys = [
        k.meta(cid),
        k.board(cid),
        k.entries(cid),
        k.names(cid),
        k.field(cid),
        k.aggregates(cid),
        k.movers(cid),
    ]
    res = await scripts.ANALYTICS(ctx, keys, [first_day, last_day])
    if Reply(int(res[0])) is not Reply.OK:
        return None
    _, version, quiet, state, days, board, entries, names, movers, counters = res
    joins: dict[str, int] = {}
    leaves: dict[str, int] = {}
    for field, value in _pairs(counters).items():
        (joins if field[0] == "+" else leaves)[field[1:]] = int(value)
    return AnalyticsInputs(
        version=int(version),
        quiet=int(quiet),
        state=str(state),
        days=[FieldDay(str(d), int(t), int(n), float(m)) for d, t, n, m in days],
        board=[(str(board[i])[16:], -int(float(board[i + 1]))) for i in range(0, len(board), 2)],
        entries={user: orjson.loads(raw) for user, raw in _pairs(entries).items()},
        names=_pairs(names),
        movers=_pairs(movers),
        joins=joins,
        leaves=leaves,
    )


async def changes(ctx: AppContext, cid: str) -> tuple[int, int] | None:
    """The board version and the count of changes without an event (what a computed
    analytics view is checked against); None when there is no such competition."""
    ver, quiet, state = await ctx.r.hmget(ctx.keys.meta(cid), ["ver", "quiet", "state"])
    if state is None:
        return None
    return int(ver or 0), int(quiet or 0)


async def flags(ctx: AppContext, cid: str) -> list[dict[str, Any]]:
    """Every flag of the competition, newest first."""
    raw = cast(dict[str, str], await ctx.r.hgetall(ctx.keys.flags(cid)))
    out = [orjson.loads(value) for value in raw.values()]
    out.sort(key=lambda f: -int(f["id"]))
    return out


async def flag(ctx: AppContext, cid: str, flag_id: str) -> dict[str, Any] | None:
    raw = await ctx.r.hget(ctx.keys.flags(cid), flag_id)
    return cast(dict[str, Any], orjson.loads(raw)) if raw else None


async def counted_days(
    ctx: AppContext, cid: str, days: list[tuple[str, str]]
) -> list[list[int] | None]:
    """The values (steps, distance, calories, active_minutes) the competition holds for
    these (user, day) pairs; None where it holds none. One round trip."""
    if not days:
        return []
    pipe = ctx.r.pipeline(transaction=False)
    for user, day in days:
        pipe.hget(ctx.keys.participant_days(cid, user), day)
    raw = await pipe.execute()
    return [None if value is None else [int(x) for x in str(value).split(",")[1:]] for value in raw]
