"""The frames the server sends, encoded as text (JSON). docs/API.md describes each."""

from __future__ import annotations

import struct
from typing import Any

import orjson

from healthcomp.core.clock import from_ms

# Board events that move a participant's score or rank: sent as `score_update`, with
# the event's own type as `cause`.
SCORE_EVENTS = frozenset({"join", "sync", "write", "recount", "review", "reinstate"})
# The frame type of every other event (an unknown type is sent under its own name).
OTHER_EVENTS = {
    "leave": "participant_left",
    "rename": "participant_renamed",
    "rules": "rules_changed",
    "recounted": "recount_finished",
    "cancelled": "competition_cancelled",
    "finalized": "competition_finalized",
    "disqualify": "participant_disqualified",
    "reviewed": "flag_reviewed",
}
_INTERNAL = ("passed", "passed_by", "passed_ranks", "passed_by_ranks", "at", "type")

PONG = '{"type":"pong"}'


def wire(text: str) -> bytes:
    """A text frame as it goes on the wire from a server (RFC 6455 §5.2: FIN and the
    text opcode, the payload length, no mask), so that one encoding serves every
    client of a board."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def _text(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


def event_frame(data: dict[str, Any]) -> str:
    """The frame every client of the board receives for one event."""
    kind = str(data.get("type"))
    at = data.get("at")
    timestamp = from_ms(int(at)) if at is not None else None
    if kind in SCORE_EVENTS:
        return _text(
            {
                "type": "score_update",
                "cause": kind,
                "competition_id": data["competition_id"],
                "user_id": data["user_id"],
                "user_name": data.get("user_name"),
                "score": data.get("score"),
                "previous_score": data.get("previous_score"),
                "rank": data.get("rank"),
                "previous_rank": data.get("previous_rank"),
                "event_id": data["event_id"],
                "timestamp": timestamp,
            }
        )
    frame: dict[str, Any] = {"type": OTHER_EVENTS.get(kind, kind)}
    frame.update((k, v) for k, v in data.items() if k not in _INTERNAL)
    frame["timestamp"] = timestamp
    return _text(frame)


def personal_frames(data: dict[str, Any]) -> dict[str, str]:
    """`rank_change` frames, by user: the mover, when it passed someone or was passed,
    and each participant it passed (`overtaken_by`) or who passed it (`overtook`)."""
    if str(data.get("type")) not in SCORE_EVENTS:
        return {}
    passed: list[str] = data.get("passed") or []
    passed_by: list[str] = data.get("passed_by") or []
    if not passed and not passed_by:
        return {}
    mover = str(data["user_id"])
    cid, event_id = data["competition_id"], data["event_id"]
    at = data.get("at")
    timestamp = from_ms(int(at)) if at is not None else None

    def frame(user: str, rank: Any, previous: Any, overtook: list[str], by: list[str]) -> str:
        return _text(
            {
                "type": "rank_change",
                "competition_id": cid,
                "user_id": user,
                "rank": rank,
                "previous_rank": previous,
                "overtook": overtook,
                "overtaken_by": by,
                "event_id": event_id,
                "timestamp": timestamp,
            }
        )

    out = {mover: frame(mover, data.get("rank"), data.get("previous_rank"), passed, passed_by)}
    for users, ranks, up in (
        (passed, data.get("passed_ranks") or [], True),
        (passed_by, data.get("passed_by_ranks") or [], False),
    ):
        for user, pair in zip(users, ranks, strict=False):
            rank, previous = pair
            out[user] = frame(user, rank, previous, [] if up else [mover], [mover] if up else [])
    return out


def connected(
    cid: str,
    user_id: str | None,
    *,
    heartbeat: float,
    interval_ms: int,
    limit: int,
    event_id: int,
    resumed: bool,
) -> str:
    return _text(
        {
            "type": "connected",
            "competition_id": cid,
            "user_id": user_id,
            "heartbeat_seconds": heartbeat,
            "update_interval_ms": interval_ms,
            "limit": limit,
            "event_id": event_id,
            "resumed": resumed,
        }
    )


def board_head(cid: str, *, snapshot: bool, resync: bool) -> bytes:
    """The opening of a `leaderboard_update` (`Pages.frame` adds the board's fields)."""
    return b'{"type":"leaderboard_update","competition_id":%s,"snapshot":%s,"resync":%s' % (
        orjson.dumps(cid),
        b"true" if snapshot else b"false",
        b"true" if resync else b"false",
    )


def heartbeat(event_id: int, now_ms: int) -> str:
    return _text({"type": "heartbeat", "event_id": event_id, "timestamp": from_ms(now_ms)})


def error(name: str, message: str, **extra: Any) -> str:
    return _text({"type": "error", "error": name, "message": message, **extra})
