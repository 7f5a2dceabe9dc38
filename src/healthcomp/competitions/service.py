"""Competition rules: who may do what, and when."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from healthcomp.activity import service as activity
from healthcomp.competitions import repo
from healthcomp.competitions.model import LATEST_OFFSET, Stored, day_start_utc
from healthcomp.competitions.schemas import (
    CompetitionCreate,
    CompetitionUpdate,
    rule_errors,
)
from healthcomp.core.auth import Principal
from healthcomp.core.clock import rfc3339, to_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
    validation_details,
)
from healthcomp.users import repo as users

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
# Of those, the ones that change what counts: every participant is recounted.
SCORING_FIELDS = frozenset({"metric", "start_date", "end_date", "format", "goal"})
MAX_DAYS_AHEAD = 365


async def get(ctx: AppContext, cid: str) -> Stored:
    stored = await repo.load(ctx, cid)
    if stored is None:
        raise NotFound(f"No competition '{cid}'.", error="competition_not_found")
    return stored


def require_organizer(stored: Stored, principal: Principal) -> None:
    if principal.is_service or stored.organized_by(principal.user_id):
        return
    raise Forbidden("Only the competition's organizer may do this.", error="not_organizer")


async def require_participant_or_organizer(
    ctx: AppContext, stored: Stored, principal: Principal
) -> None:
    if principal.is_service or stored.organized_by(principal.user_id):
        return
    assert principal.user_id is not None
    if not await repo.is_participant(ctx, stored.id, principal.user_id):
        raise Forbidden(
            "Only participants and the organizer may see this.", error="not_participant"
        )


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


def _check_not_over(end: date, now: datetime) -> None:
    if now >= day_start_utc(end + timedelta(days=1), LATEST_OFFSET):
        raise ValidationFailed(
            "end_date has already passed everywhere on Earth; nobody could join.",
            details=[{"field": "end_date", "message": "in the past", "type": "value_error"}],
        )


def _check_start_horizon(start: date, created: datetime) -> None:
    # The ranking key counts seconds from creation in 26 bits (776 days): a start at
    # most a year after creation keeps the whole window and grace inside it.
    if start > (created + timedelta(days=MAX_DAYS_AHEAD)).date():
        raise ValidationFailed(
            f"start_date may be at most {MAX_DAYS_AHEAD} days after the competition's creation.",
            details=[{"field": "start_date", "message": "too far ahead", "type": "value_error"}],
        )


async def create(ctx: AppContext, principal: Principal, body: CompetitionCreate) -> Stored:
    now = ctx.clock.now()
    _check_rules(body.model_dump(mode="json"))
    _check_start_horizon(body.start_date, now)
    _check_not_over(body.end_date, now)
    if principal.user_id is not None:
        await users.ensure_profile(ctx, principal)
    doc = _with_default_payout(body.model_dump(mode="json"))
    doc["description"] = doc.get("description") or ""
    doc["id"] = body.id or str(uuid.uuid4())
    # null for the service role: no user id can ever match it and become organizer.
    doc["created_by"] = principal.user_id
    doc["created_at"] = doc["updated_at"] = rfc3339(now)
    doc["epoch_ms"] = to_ms(now)
    if not await repo.create(ctx, doc, to_ms(now)):
        raise Conflict(f"A competition '{doc['id']}' already exists.", error="competition_exists")
    return await get(ctx, doc["id"])


async def list_page(ctx: AppContext, status: str | None, limit: int, offset: int) -> dict[str, Any]:
    """A page of competitions, newest first, optionally of one status.

    Status depends on the time, so a filtered page walks the index in chunks and
    counts the matches. The index may hold an id whose creation was interrupted; such
    an id is skipped.
    """
    now = ctx.clock.now()
    items: list[dict[str, Any]] = []
    if status is None:
        total = await repo.count_all(ctx)
        ids = await repo.list_ids(ctx, offset, limit)
        items = [s.view(now) for s in await repo.load_many(ctx, ids) if s is not None]
    else:
        total, cursor, chunk = 0, 0, 200
        while ids := await repo.list_ids(ctx, cursor, chunk):
            for stored in await repo.load_many(ctx, ids):
                if stored is None or stored.status(now) != status:
                    continue
                if offset <= total < offset + limit:
                    items.append(stored.view(now))
                total += 1
            cursor += chunk
    return {"items": items, "total_count": total, "limit": limit, "offset": offset}


async def update(
    ctx: AppContext, principal: Principal, cid: str, body: CompetitionUpdate
) -> Stored:
    for _ in range(5):  # optimistic: retried when another edit landed in between
        stored = await get(ctx, cid)
        require_organizer(stored, principal)
        changes = body.model_dump(mode="json", exclude_unset=True)
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
        for name in ("name", "description"):
            if name in changes and changes[name] is None:
                raise ValidationFailed(f"{name} cannot be null.")
        merged = _with_default_payout({**stored.doc, **changes})
        try:
            fields = CompetitionCreate.model_fields
            CompetitionCreate.model_validate({k: v for k, v in merged.items() if k in fields})
        except ValidationError as exc:
            raise ValidationFailed(
                "The edited competition is not valid.", details=validation_details(exc.errors())
            ) from None
        _check_rules(merged)
        _check_not_over(date.fromisoformat(merged["end_date"]), now)
        _check_start_horizon(
            date.fromisoformat(merged["start_date"]),
            datetime.fromtimestamp(int(stored.doc["epoch_ms"]) / 1000, UTC),
        )
        maxp = merged.get("max_participants")
        if maxp is not None and maxp < stored.participant_count:
            raise Conflict(
                f"max_participants is below the {stored.participant_count} who joined.",
                error="too_many_participants",
            )
        merged["updated_at"] = rfc3339(now)
        result = await repo.replace_doc(ctx, stored.doc, merged)
        if result == 1:
            updated = await get(ctx, cid)
            if SCORING_FIELDS & changes.keys():
                await activity.rescore(ctx, updated)
            return updated
        if result == -3:
            raise Conflict("The competition is closed.", error="competition_closed")
        if result == -2:
            break
    raise Conflict("The competition changed meanwhile; try again.", error="edit_conflict")


_JOIN_ERRORS: dict[int, AppError] = {
    -2: NotFound("No such competition.", error="competition_not_found"),
    -3: Conflict("The competition is closed.", error="competition_closed"),
    -4: Conflict("The competition has ended.", error="competition_ended"),
    -5: Conflict("You have already joined this competition.", error="already_joined"),
    -6: Conflict("The competition is full.", error="competition_full"),
    -1: Conflict("Not a participant of this competition.", error="not_joined"),
}


def _raise_code(code: int) -> None:
    if code < 0:
        err = _JOIN_ERRORS[code]
        raise type(err)(err.message, error=err.error)


async def join(ctx: AppContext, principal: Principal, cid: str, user_id: str) -> int:
    stored = await get(ctx, cid)
    principal.require_self_or_service(user_id)
    if principal.user_id == user_id:
        profile = await users.ensure_profile(ctx, principal)
        name = profile.display_name
    else:
        existing = await users.get_profile(ctx, user_id)
        name = existing.display_name if existing else user_id
    count = await repo.join(ctx, cid, user_id, to_ms(ctx.clock.now()), name)
    _raise_code(count)
    # Days the user already synced inside the window count from the moment they join.
    await activity.backfill(ctx, user_id, stored)
    return count


async def leave(ctx: AppContext, principal: Principal, cid: str, user_id: str) -> int:
    await get(ctx, cid)
    principal.require_self_or_service(user_id)
    count = await repo.leave(ctx, cid, user_id, to_ms(ctx.clock.now()))
    _raise_code(count)
    return count


async def cancel(ctx: AppContext, principal: Principal, cid: str, reason: str) -> Stored:
    stored = await get(ctx, cid)
    require_organizer(stored, principal)
    actor = principal.user_id or "service"
    result = await repo.cancel(ctx, cid, to_ms(ctx.clock.now()), actor, reason)
    if result == -3:
        raise Conflict(
            f"The competition is already {stored.status(ctx.clock.now())}.",
            error="competition_closed",
        )
    _raise_code(result)
    return await get(ctx, cid)
