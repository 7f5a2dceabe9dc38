"""Competition rules: who may do what, and when. Storage goes through the engine."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from healthcomp.competitions import index, repo
from healthcomp.competitions.access import get, not_found
from healthcomp.competitions.model import Stored
from healthcomp.competitions.schemas import CompetitionCreate, CompetitionUpdate, rule_errors
from healthcomp.core.auth import Principal
from healthcomp.core.clock import from_ms, rfc3339, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import (
    AppError,
    Conflict,
    NotFound,
    ValidationFailed,
    validation_details,
)
from healthcomp.core.inputs import STORED
from healthcomp.engine import reads, recount, rules, writes
from healthcomp.engine.codes import Reply
from healthcomp.users import repo as users_repo

log = logging.getLogger("healthcomp.competitions")

# Fields that decide scores or money: editable only before the competition starts.
RULE_FIELDS = frozenset(
    {
        "metric",
        "start_date",
        "end_date",
        "format",
        "goal",
        "entry_fee_cents",
        "currency",
        "prize_pool_cents",
        "rake_percent",
        "payout",
        "min_participants",
        "max_participants",
        "grace_hours",
    }
)
# Of those, the ones that change what counts or when: every participant is recounted
# (and their record of the window brought up to date).
RECOUNT_FIELDS = frozenset({"metric", "start_date", "end_date", "format", "goal", "grace_hours"})
# A user organizer may start a competition at most this long before creating it.
MAX_BACKDATE = timedelta(days=7)


def _with_default_payout(doc: dict[str, Any]) -> dict[str, Any]:
    """The stored form: `mode="json"` dumps already hold decimals as exact strings;
    only a missing payout needs filling in (the original 60/30/10 split)."""
    if doc.get("payout") is None:
        doc["payout"] = {"scheme": "top_n", "percentages": ["60", "30", "10"]}
    return doc


def _check_rules(doc: dict[str, Any]) -> None:
    errors = rule_errors(doc)
    if errors:
        fields = ", ".join(e["field"] for e in errors)
        raise ValidationFailed(f"Invalid competition: {fields}.", details=errors)


def _bad(field: str, message: str, sentence: str) -> ValidationFailed:
    return ValidationFailed(
        sentence, details=[{"field": field, "message": message, "type": "value_error"}]
    )


def _check_not_over(end: date, now: datetime) -> None:
    if now >= rules.ends_at(end):
        raise _bad(
            "end_date",
            "in the past",
            "end_date has already passed everywhere on Earth; nobody could join.",
        )


def _check_backdate(principal: Principal, start: date, created: datetime) -> None:
    """A user organizer's window starts at most 7 days before the creation (create and
    edit); only the service role backdates further, e.g. to import a running challenge."""
    earliest = (created - MAX_BACKDATE).date()
    if not principal.is_service and start < earliest:
        raise _bad(
            "start_date",
            "too far in the past",
            f"start_date may be at most {MAX_BACKDATE.days} days before the competition "
            f"was created ({earliest} at the earliest).",
        )


def _index_record(stored_doc: dict[str, Any], state: str, closed_ms: int = 0) -> str:
    start, end = (
        date.fromisoformat(stored_doc["start_date"]),
        date.fromisoformat(stored_doc["end_date"]),
    )
    return index.record(
        stored_doc,
        starts_ms=to_ms(rules.starts_at(start)),
        ends_ms=to_ms(rules.ends_at(end)),
        state=state,
        closed_ms=closed_ms,
    )


async def create(ctx: AppContext, principal: Principal, body: CompetitionCreate) -> Stored:
    now = ctx.clock.now()
    now_ms = to_ms(now)
    _check_rules(body.model_dump(mode="json"))
    _check_not_over(body.end_date, now)
    _check_backdate(principal, body.start_date, now)
    if principal.user_id is not None:
        await users_repo.ensure_profile(ctx, principal)
    doc = _with_default_payout(body.model_dump(mode="json"))
    doc["description"] = doc.get("description") or ""
    doc["id"] = body.id or str(uuid.uuid4())
    # null for the service role: no user id can ever match it and become organizer.
    doc["created_by"] = principal.user_id
    doc["created_at"] = doc["updated_at"] = rfc3339(now)
    doc["created_ms"] = now_ms
    cid = doc["id"]
    if principal.user_id is not None:
        over = await repo.reserve_organized(
            ctx,
            principal.user_id,
            cid,
            ends_ms=to_ms(rules.ends_at(body.end_date)),
            now_ms=now_ms,
            maximum=ctx.settings.max_open_competitions,
            keep=True,
        )
        if over is not None:
            raise Conflict(
                f"You already organize {over} competitions that are not over; the limit is "
                f"{ctx.settings.max_open_competitions}. Cancel one or wait for one to end.",
                error="too_many_competitions",
            )
    if not await writes.create(ctx, doc):
        existing = await repo.load(ctx, cid)
        if principal.user_id is not None and not (
            existing and existing.organized_by(principal.user_id)
        ):
            await repo.release_organized(ctx, principal.user_id, cid)
        raise Conflict(f"A competition '{cid}' already exists.", error="competition_exists")
    await index.upsert(ctx, cid, _index_record(doc, "open"), now_ms)
    return await get(ctx, cid)


async def list_page(
    ctx: AppContext, principal: Principal, status: str | None, limit: int, offset: int
) -> dict[str, Any]:
    """A page of competitions. The service role sees all of them; a user sees the
    public ones and their own (organized or joined), in the listing's order."""
    now = ctx.clock.now()
    now_ms = to_ms(now)
    name = status or "created"
    if principal.is_service:
        total, items = await index.page(
            ctx, public_only=False, name=name, start=offset, count=limit, now_ms=now_ms
        )
        ids = [cid for cid, _ in items]
    else:
        total, ids = await _user_page(ctx, principal, name, status, limit, offset, now_ms)
    found = [s.view(now) for s in await repo.load_many(ctx, ids) if s is not None]
    return {"items": found, "total_count": total, "limit": limit, "offset": offset}


async def _user_page(
    ctx: AppContext,
    principal: Principal,
    name: str,
    status: str | None,
    limit: int,
    offset: int,
    now_ms: int,
) -> tuple[int, list[str]]:
    """Merges the public listing with the caller's own private competitions: the own
    ones are few, so they are placed among the public ones by counting."""
    assert principal.user_id is not None
    now = ctx.clock.now()
    own_ids = sorted(
        set(await reads.competitions_of(ctx, principal.user_id))
        | set(await repo.organized_ids(ctx, principal.user_id))
    )
    own = [
        s
        for s in await repo.load_many(ctx, own_ids)
        if s is not None and not s.is_public and (status is None or s.status(now) == status)
    ]
    known = await index.scores(ctx, [s.id for s in own], name)
    keys = sorted(
        ((known[s.id], s.id) for s in own if s.id in known), reverse=name in index.DESCENDING
    )
    k = len(keys)
    first = max(0, offset - k)
    pub_total, pub = await index.page(
        ctx, public_only=True, name=name, start=first, count=limit + k, now_ms=now_ms
    )
    before = await index.count_before(ctx, public_only=True, name=name, keys=keys)
    # An own item's place: the public ones before it plus the own ones before it.
    placed = [(before[i] + i, cid) for i, (_s, cid) in enumerate(keys)]
    for j, (cid, score) in enumerate(pub):
        key = (score, cid)
        ahead = sum(
            1 for own_key in keys if (own_key > key if name in index.DESCENDING else own_key < key)
        )
        placed.append((first + j + ahead, cid))
    window = sorted(p for p in placed if offset <= p[0] < offset + limit)
    return pub_total + k, [cid for _, cid in window]


async def update(
    ctx: AppContext, principal: Principal, stored: Stored, body: CompetitionUpdate
) -> Stored:
    cid = stored.id
    changes = body.model_dump(mode="json", exclude_unset=True)
    for attempt in range(5):  # optimistic: retried when another edit landed in between
        if attempt:
            stored = await get(ctx, cid)
        now = ctx.clock.now()
        status = stored.status(now)
        if status in ("cancelled", "finalized"):
            raise Conflict(f"The competition is {status}.", error="competition_closed")
        touched_rules = sorted(RULE_FIELDS & changes.keys())
        if touched_rules and status != "upcoming":
            raise Conflict(
                "Rules that affect scores or money can change only before the start: "
                + ", ".join(touched_rules),
                error="competition_started",
            )
        if not changes:
            return stored
        for name in ("name", "description", "visibility"):
            if name in changes and changes[name] is None:
                raise ValidationFailed(f"{name} cannot be null.")
        merged = _with_default_payout({**stored.doc, **changes})
        try:
            fields = CompetitionCreate.model_fields
            CompetitionCreate.model_validate(
                {k: v for k, v in merged.items() if k in fields}, context=STORED
            )
        except ValidationError as exc:
            raise ValidationFailed(
                "The edited competition is not valid.", details=validation_details(exc.errors())
            ) from None
        _check_rules(merged)
        _check_not_over(date.fromisoformat(merged["end_date"]), now)
        if merged["start_date"] != stored.doc["start_date"]:  # a start the service set stays
            created = datetime.fromisoformat(stored.doc["created_at"].replace("Z", "+00:00"))
            _check_backdate(principal, date.fromisoformat(merged["start_date"]), created)
        merged["updated_at"] = rfc3339(now)
        recount_needed = any(merged.get(f) != stored.doc.get(f) for f in RECOUNT_FIELDS)
        res = await writes.update(
            ctx, stored.doc, merged, recount=recount_needed, now_ms=to_ms(now)
        )
        if res.code is Reply.OK:
            await index.upsert(ctx, cid, _index_record(merged, "open"), to_ms(now))
            if stored.organizer is not None:
                await repo.reserve_organized(
                    ctx,
                    stored.organizer,
                    cid,
                    ends_ms=to_ms(rules.ends_at(date.fromisoformat(merged["end_date"]))),
                    now_ms=to_ms(now),
                    maximum=0,
                )
            if recount_needed:
                await _recount_soon(ctx, cid)
            return await get(ctx, cid)
        if res.code is Reply.TOO_MANY:
            raise Conflict(
                f"max_participants is below the {res.participants} who joined.",
                error="too_many_participants",
            )
        if res.code is Reply.CLOSED:
            raise Conflict("The competition is closed.", error="competition_closed")
        if res.code is Reply.NO_COMPETITION:
            raise not_found(cid)
    raise Conflict("The competition changed meanwhile; try again.", error="edit_conflict")


async def _recount_soon(ctx: AppContext, cid: str) -> None:
    """Run the recount now in the background; wait a little for it, so a small
    competition's edit answers with its board already exact."""
    task = asyncio.create_task(recount.run(ctx, cid, to_ms(ctx.clock.now())))
    ctx.background.add(task)
    task.add_done_callback(_finished)
    task.add_done_callback(ctx.background.discard)
    # Past the wait it goes on here; the sweep resumes it if this process dies. The
    # edit is made whatever the job does: its failure is logged, never the edit's answer.
    await asyncio.wait([task], timeout=ctx.settings.recount_inline_seconds)


def _finished(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("recount failed; the sweep resumes it", exc_info=task.exception())


_MEMBERSHIP_ERRORS: dict[Reply, AppError] = {
    Reply.NO_COMPETITION: NotFound("No such competition.", error="competition_not_found"),
    Reply.CLOSED: Conflict("The competition is closed.", error="competition_closed"),
    Reply.ENDED: Conflict("The competition has ended.", error="competition_ended"),
    Reply.ALREADY_JOINED: Conflict(
        "You have already joined this competition.", error="already_joined"
    ),
    Reply.FULL: Conflict("The competition is full.", error="competition_full"),
    Reply.NOT_PARTICIPANT: Conflict("Not a participant of this competition.", error="not_joined"),
}


def _raise_for(code: Reply) -> None:
    if code is not Reply.OK:
        err = _MEMBERSHIP_ERRORS[code]
        raise type(err)(err.message, error=err.error)


async def join(ctx: AppContext, principal: Principal, stored: Stored, user_id: str) -> int:
    principal.require_self_or_service(user_id)
    if principal.user_id == user_id:
        name = (await users_repo.ensure_profile(ctx, principal)).display_name
    else:
        existing = await users_repo.get_profile(ctx, user_id)
        name = existing.display_name if existing else user_id
    joined = await writes.join(ctx, stored.id, user_id, name, to_ms(ctx.clock.now()))
    _raise_for(joined.code)
    return joined.participant_count


async def leave(ctx: AppContext, principal: Principal, stored: Stored, user_id: str) -> int:
    principal.require_self_or_service(user_id)
    left = await writes.leave(ctx, stored.id, user_id, to_ms(ctx.clock.now()))
    _raise_for(left.code)
    return left.participant_count


async def cancel(ctx: AppContext, principal: Principal, stored: Stored, reason: str) -> Stored:
    now = ctx.clock.now()
    actor = principal.user_id or "service"
    marked = await closing(ctx, stored.id)
    code = await writes.cancel(
        ctx,
        stored.id,
        actor=actor,
        is_service=principal.is_service,
        now_ms=to_ms(now),
        reason=reason,
    )
    # Closed now or before (maybe by a call that died after its script): the listings
    # follow. Still open: this call's marker goes.
    if not await closed(ctx, stored.id):
        await index.unmark_closing(ctx, stored.id, marked_before_ms=marked)
    if code is Reply.CLOSED:
        raise Conflict(
            f"The competition is already {stored.status(now)}.", error="competition_closed"
        )
    if code is Reply.ENDED:
        raise Conflict(
            "The competition has ended; only the service role can cancel it now (until it is "
            "finalized).",
            error="competition_ended",
        )
    _raise_for(code)
    return await get(ctx, stored.id)


async def closing(ctx: AppContext, cid: str) -> int:
    """Before a cancel or a finalization: the marker that lets the sweep finish the
    listing step (`closed`) if this process dies between the two. Returns its time."""
    now_ms = to_ms(ctx.clock.now())
    await index.mark_closing(ctx, cid, now_ms)
    return now_ms


async def closed(ctx: AppContext, cid: str) -> bool:
    """After a cancel or a finalization: the listings and the organizer's cap follow, and
    the marker goes. False, changing nothing, while the competition is still open.
    Idempotent: a retried call, or the sweep, repeats it with the same result."""
    stored = await repo.load(ctx, cid)
    if stored is None or stored.state not in ("cancelled", "finalized"):
        return False
    now_ms = to_ms(ctx.clock.now())
    at = stored.closed_ms if stored.closed_ms is not None else now_ms
    await index.upsert(ctx, cid, _index_record(stored.doc, stored.state, at), now_ms)
    if stored.organizer is not None:
        await repo.close_organized(ctx, stored.organizer, cid)
    await index.unmark_closing(ctx, cid)
    return True


# A marker this old on a competition still open belongs to a call that died before its
# script ran (a live call has long been answered or cut off by its deadline).
ABANDONED_AFTER_MS = 60_000


async def finish_closings(ctx: AppContext, now_ms: int) -> int:
    """A sweep step: the listing step of every cancel or finalization whose process died
    after its script. Returns how many it finished."""
    finished = 0
    cutoff = now_ms - max(ABANDONED_AFTER_MS, int(3000 * ctx.settings.request_timeout_seconds))
    for cid, since in await index.closing(ctx):
        if await closed(ctx, cid):
            finished += 1
        elif since <= cutoff:
            await index.unmark_closing(ctx, cid, marked_before_ms=cutoff)
    return finished


async def audit(ctx: AppContext, principal: Principal, stored: Stored) -> list[Any]:
    """All of it for the organizer and the service role; a participant sees the records
    about themself."""
    if principal.is_service or stored.organized_by(principal.user_id):
        records = await reads.audit_log(ctx, stored.id)
    else:
        records = await reads.audit_log(ctx, stored.id, user_id=principal.user_id)
    # Stored in epoch ms by the scripts; shown like every other time in the API.
    return [{**r, "at": from_ms(int(r["at"]))} for r in records]
