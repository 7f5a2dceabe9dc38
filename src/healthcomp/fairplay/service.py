"""Fair-play review (SPEC §5, §6.6): the flags a competition's records raised, and the
reviewer's decisions: dismiss a flag, exclude the day from the score or restore it,
disqualify a participant or reinstate them.

The flags themselves are made by the engine when a record arrives
(`engine/flags.py`); each decision is one engine script that changes the board, emits
its event, and appends to the audit trail, all at once (`scripts.REVIEW`,
`scripts.DISQUALIFY`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, get_args

from healthcomp.competitions.access import not_found
from healthcomp.competitions.model import Stored
from healthcomp.core.auth import Principal
from healthcomp.core.clock import from_ms, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Conflict, Forbidden, NotFound
from healthcomp.engine import reads, writes
from healthcomp.engine.codes import Reply
from healthcomp.engine.flags import KINDS
from healthcomp.engine.model import METRIC_NAMES
from healthcomp.engine.rules import METRICS
from healthcomp.fairplay.schemas import State

STATES: tuple[str, ...] = get_args(State)  # a flag's states, as the API declares them


def _decider(principal: Principal, stored: Stored, user_id: str) -> str:
    """Who decides about `user_id`'s entry (for the audit): never its organizer on
    their own entry, since they may compete; the service role may."""
    if stored.organized_by(user_id) and not principal.is_service:
        raise Forbidden(
            "An organizer cannot review their own entry; the service role can.",
            error="own_entry",
        )
    return principal.user_id or "service"


def _refused(code: Reply, stored: Stored, missing: NotFound) -> None:
    """What an engine refusal of a decision means: 409 once the results are final,
    404 for the competition, or `missing` (the flag or the participant)."""
    if code is Reply.CLOSED:
        raise Conflict(
            f"Competition '{stored.id}' is cancelled or finalized: its results no longer change.",
            error="competition_closed",
        )
    if code is Reply.NO_COMPETITION:
        raise not_found(stored.id)
    if code is not Reply.OK:
        raise missing


def _no_flag(stored: Stored, flag_id: str) -> NotFound:
    return NotFound(f"No flag '{flag_id}' in '{stored.id}'.", error="flag_not_found")


def flag_view(
    cid: str, flag: dict[str, Any], names: dict[str, str], counted: list[int] | None, metric: int
) -> dict[str, Any]:
    """A flag as the API shows it: its kinds in a fixed order, each with its details;
    the day's value when flagged and as counted now; the last review."""
    kinds = flag.get("kinds") or {}
    reviewed = flag.get("reviewed_ms")
    return {
        "id": str(flag["id"]),
        "competition_id": cid,
        "user_id": flag["user_id"],
        "user_name": names.get(flag["user_id"], flag["user_id"]),
        "date": flag["day"],
        "state": flag["state"],
        "kinds": [{"kind": k, **(kinds[k] or {})} for k in KINDS if k in kinds],
        "value": flag.get("value"),
        "counted": None if counted is None else dict(zip(METRIC_NAMES, counted, strict=True)),
        "metric": METRICS[metric],
        "created_at": from_ms(int(flag["created_ms"])),
        "updated_at": from_ms(int(flag.get("updated_ms") or flag["created_ms"])),
        "reviews": int(flag.get("reviews") or 0),
        "last_review": None
        if reviewed is None
        else {
            "by": flag.get("reviewed_by"),
            "at": from_ms(int(reviewed)),
            "reason": flag.get("reason") or "",
        },
    }


async def _views(
    ctx: AppContext, stored: Stored, flags: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Flag views with the names and the days' values as counted now."""
    metric = METRICS.index(stored.doc["metric"])
    names = await reads.names_of(ctx, stored.id, sorted({f["user_id"] for f in flags}))
    counted = await reads.counted_days(ctx, stored.id, [(f["user_id"], f["day"]) for f in flags])
    return [flag_view(stored.id, f, names, c, metric) for f, c in zip(flags, counted, strict=True)]


async def listing(
    ctx: AppContext,
    principal: Principal,
    stored: Stored,
    *,
    state: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """The competition's flags, newest first: all of them for the organizer and the
    service role, a participant's own for them (so they can see why a day of theirs
    does not count)."""
    flags = await reads.flags(ctx, stored.id)
    everyone = principal.is_service or stored.organized_by(principal.user_id)
    if not everyone:
        flags = [f for f in flags if f["user_id"] == principal.user_id]
    counts = Counter(f["state"] for f in flags)
    if state is not None:
        flags = [f for f in flags if f["state"] == state]
    page = flags[offset : offset + limit]
    return {
        "competition_id": stored.id,
        "scope": "all" if everyone else "own",
        "counts": {s: counts.get(s, 0) for s in STATES},
        "total": len(flags),
        "limit": limit,
        "offset": offset,
        "flags": await _views(ctx, stored, page),
        "disqualified": await disqualified(ctx, stored) if everyone else [],
    }


async def summary(ctx: AppContext, cid: str) -> dict[str, Any]:
    """Counts by state and by kind (open flags), for the analytics' full view."""
    flags = await reads.flags(ctx, cid)
    states = Counter(f["state"] for f in flags)
    kinds = Counter(k for f in flags if f["state"] == "open" for k in f.get("kinds") or {})
    return {
        "total": len(flags),
        **{s: states.get(s, 0) for s in STATES},
        "open_by_kind": {k: kinds.get(k, 0) for k in KINDS},
    }


async def disqualified(ctx: AppContext, stored: Stored) -> list[dict[str, Any]]:
    """Disqualified participants (off the board, still in the competition), with who
    disqualified them, when and why."""
    out = []
    for user, record in sorted((await reads.participations(ctx, stored.id)).items()):
        dq = record.get("disqualified")
        if record.get("state") != "active" or not dq:
            continue
        out.append(
            {
                "user_id": str(user),
                "at": from_ms(int(dq["at"])),
                "by": dq.get("by"),
                "reason": dq.get("reason") or "",
            }
        )
    return out


async def review(
    ctx: AppContext,
    principal: Principal,
    stored: Stored,
    flag_id: str,
    *,
    action: str,
    reason: str,
) -> dict[str, Any]:
    """Dismiss, exclude or restore (SPEC §6.6): audited, the ranks recomputed and the
    board's event emitted by the engine at once. The same decision twice changes
    nothing (`changed: false`)."""
    flag = await reads.flag(ctx, stored.id, flag_id)
    if flag is None:
        raise _no_flag(stored, flag_id)
    user = str(flag["user_id"])
    done = await writes.review(
        ctx,
        stored.id,
        flag_id,
        user,
        action=action,
        actor=_decider(principal, stored, user),
        reason=reason,
        now_ms=to_ms(ctx.clock.now()),
    )
    _refused(done.code, stored, _no_flag(stored, flag_id))
    assert done.flag is not None
    (view,) = await _views(ctx, stored, [done.flag])
    standing = await reads.standing(ctx, stored.id, user)
    return {
        "flag": view,
        "changed": done.changed,
        "event_id": done.event_id,
        "participant": None
        if standing is None
        else {"user_id": user, "score": standing.score, "rank": standing.rank},
    }


async def disqualify(
    ctx: AppContext,
    principal: Principal,
    stored: Stored,
    user_id: str,
    *,
    action: str,
    reason: str,
) -> dict[str, Any]:
    """Disqualify (off the board: no rank, no prize; still visible to the organizer)
    or reinstate a participant; audited, with the board's event."""
    done = await writes.disqualify(
        ctx,
        stored.id,
        user_id,
        action=action,
        actor=_decider(principal, stored, user_id),
        reason=reason,
        now_ms=to_ms(ctx.clock.now()),
    )
    missing = NotFound(
        f"'{user_id}' is not a participant of '{stored.id}'.", error="participant_not_found"
    )
    _refused(done.code, stored, missing)
    return {
        "competition_id": stored.id,
        "user_id": user_id,
        "disqualified": action == "disqualify",
        "changed": done.changed,
        "score": done.score,
        "rank": done.rank,
        "event_id": done.event_id,
    }
