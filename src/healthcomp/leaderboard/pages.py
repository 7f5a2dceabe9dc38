"""Leaderboard pages from ready-encoded bytes, validated against the board version.

A page leaves this worker's memory only when the board's version, read by a check that
started after the request arrived, equals the version its bytes were made at. The
version moves with every change to an entry, a name or the membership (the engine
emits an event for each), so a read reflects every write acknowledged before it
began, whichever process took the write (SPEC §6.2). The check is one small script
shared by the concurrent requests for a board (`core.flight.SharedFetch`); the access
fields an edit can change without a new version (visibility, organizer) come with it.

Whatever is not cached at that version (a page, a window around a user, a caller's own
row and membership) is read with the page script in one round trip, answered, and kept
for the next request. A new version drops everything of the old one.
"""

from __future__ import annotations

from typing import Any

import orjson

from healthcomp.competitions.access import not_found
from healthcomp.core.auth import Principal
from healthcomp.core.clock import from_ms
from healthcomp.core.context import AppContext
from healthcomp.core.errors import Forbidden, NotFound, ValidationFailed
from healthcomp.core.flight import SharedFetch
from healthcomp.engine import reads
from healthcomp.engine.codes import Reply
from healthcomp.engine.model import BoardState, Page, RawRow, Row, parse_row

MAX_BOARDS = 512  # boards kept per worker (the oldest go first)
MAX_ITEMS = 2048  # pages, rows and windows kept per board version
MAX_RENDERED = 4096  # participants' rendered rows kept per worker, across versions

_NULL = b"null"
_MISSING = object()


def _ms(value: Any) -> str | None:
    return from_ms(int(value)) if value else None


def entry_view(cid: str, row: Row) -> dict[str, Any]:
    e = row.entry
    return {
        "user_id": row.user_id,
        "user_name": row.name,
        "competition_id": cid,
        "score": row.score,
        "rank": row.rank,
        **row.totals(),
        "last_synced_at": _ms(e.get("ls")),
        "updated_at": _ms(e.get("u")),
        "joined_at": _ms(e.get("j")),
    }


class _Version:
    """What is known of one board at one version."""

    __slots__ = (
        "cid",
        "head",
        "members",
        "pages",
        "rows",
        "tails",
        "updated_ms",
        "version",
        "windows",
    )

    def __init__(self, cid: str, version: int, updated_ms: int | None) -> None:
        self.cid = cid
        self.version = version
        self.updated_ms = updated_ms
        self.head = b'{"success":true,"data":{"competition_id":' + orjson.dumps(cid)
        # (start, limit) -> b',"entries":[...],"total_count":T,"offset":S,"limit":L'
        self.pages: dict[tuple[int, int], bytes] = {}
        self.rows: dict[str, bytes] = {}  # caller -> their own row, or null
        self.members: dict[str, bool] = {}  # caller -> has an entry (may see it)
        self.windows: dict[tuple[str, int], int] = {}  # (user, limit) -> start
        self.tails: dict[bool, bytes] = {}  # recounting -> the closing fields

    def body(self, part: bytes, me: bytes, recounting: bool) -> bytes:
        """The whole response: the envelope, a page's part, the caller's row, the end."""
        return self.head + part + b',"me":' + me + self.tail(recounting)

    def tail(self, recounting: bool) -> bytes:
        tail = self.tails.get(recounting)
        if tail is None:
            fields = {
                "updated_at": _ms(self.updated_ms),
                "event_id": self.version,
                "recounting": recounting,
            }
            tail = self.tails[recounting] = b"," + orjson.dumps(fields)[1:] + b"}"
        return tail

    def keep(
        self, page: Page, limit: int, caller: str | None, around: str | None, rows: Rendered
    ) -> bytes:
        """Encode and keep what `page` shows; the page's part of the body."""
        entries = b",".join(rows.row(self.cid, raw) for raw in page.rows)
        part = b',"entries":[%s],"total_count":%d,"offset":%d,"limit":%d' % (
            entries,
            page.total,
            page.start,
            limit,
        )
        _put(self.pages, (page.start, limit), part)
        if around is not None:
            _put(self.windows, (around, limit), page.start)
        if caller is not None:
            me = rows.row(self.cid, page.caller) if page.caller else _NULL
            _put(self.rows, caller, me)
            _put(self.members, caller, page.caller_is_participant)
        return part


class Rendered:
    """Participants' rows encoded once: a page of a new version is a join of these and
    the ranks. A row is reused only while the entry, name and adjustments the page
    script returned for it are the very ones it was made from."""

    def __init__(self) -> None:
        # (competition, user) -> (score, entry, name, adjustments, bytes after the rank)
        self._rows: dict[tuple[str, str], tuple[Any, Any, Any, Any, bytes]] = {}

    def row(self, cid: str, raw: RawRow) -> bytes:
        user, score, rank, entry, name, adj = raw
        key = (cid, str(user))
        kept = self._rows.get(key)
        if kept is not None and kept[:4] == (score, entry, name, adj):
            rest = kept[4]
        else:
            view = entry_view(cid, parse_row(raw))
            del view["rank"]
            rest = orjson.dumps(view)[1:]
            if len(self._rows) >= MAX_RENDERED:
                del self._rows[next(iter(self._rows))]
            self._rows[key] = (score, entry, name, adj, rest)
        return b'{"rank":%d,%s' % (int(rank), rest)


def _put(store: dict[Any, Any], key: Any, value: Any) -> None:
    if len(store) >= MAX_ITEMS:
        store.clear()
    store[key] = value


class Pages:
    """The worker's leaderboard pages (one per app context)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.states: SharedFetch[str, BoardState | None] = SharedFetch(self._state)
        self.boards: dict[str, _Version] = {}
        self.rendered = Rendered()

    async def _state(self, cid: str) -> BoardState | None:
        return await reads.board_state(self.ctx, cid)

    async def body(
        self,
        principal: Principal,
        cid: str,
        *,
        limit: int,
        offset: int = 0,
        around: str | None = None,
        members_only: bool = False,
    ) -> bytes:
        """The whole response body (the success envelope around the board)."""
        known, part, me, recounting = await self._view(
            principal, cid, limit, offset, around, members_only
        )
        return known.body(part, me, recounting)

    async def frame(
        self, principal: Principal, cid: str, *, limit: int, head: bytes, with_me: bool
    ) -> tuple[int, bytes]:
        """The top `limit` as a WebSocket frame: `head` (an open object with the fields
        before the board's own), the page's fields, the caller's row when `with_me`, and
        the board's version, which it returns beside. The same access rules as a page."""
        known, part, me, recounting = await self._view(principal, cid, limit, 0, None, False)
        rest = known.tail(recounting)[:-1]  # the envelope's closing brace off
        if with_me:
            return known.version, head + part + b',"me":' + me + rest
        return known.version, head + part + rest

    async def _view(
        self,
        principal: Principal,
        cid: str,
        limit: int,
        offset: int,
        around: str | None,
        members_only: bool,
    ) -> tuple[_Version, bytes, bytes, bool]:
        """The version a page comes from, its part, the caller's row and whether a
        recount runs."""
        if around == "me":
            if principal.user_id is None:
                raise ValidationFailed(
                    "around=me needs a user token; name a user_id instead.",
                    details=[
                        {"field": "around", "message": "'me' has no user", "type": "value_error"}
                    ],
                )
            around = principal.user_id
        state = await self.states.get(cid)
        if state is None:
            raise not_found(cid)
        known = self.boards.get(cid)
        if known is not None and known.version == state.version:
            view = _from_memory(known, state, principal, limit, offset, around, members_only)
            if view is not None:
                return view
        return await self._read(principal, cid, state, limit, offset, around, members_only)

    async def _read(
        self,
        principal: Principal,
        cid: str,
        state: BoardState,
        limit: int,
        offset: int,
        around: str | None,
        members_only: bool,
    ) -> tuple[_Version, bytes, bytes, bool]:
        caller = principal.user_id
        page = await reads.page(
            self.ctx,
            cid,
            caller=caller,
            is_service=principal.is_service,
            offset=offset,
            limit=limit,
            around=around,
            members_only=members_only,
        )
        if page is Reply.NOT_PARTICIPANT:
            raise _not_participant()
        if page in (Reply.NO_COMPETITION, Reply.NOT_VISIBLE):
            raise not_found(cid)
        if page is Reply.NOT_RANKED:
            raise _not_ranked(around)
        assert isinstance(page, Page)
        known = self.boards.get(cid)
        if known is None or known.version < page.event_id:
            if known is None and len(self.boards) >= MAX_BOARDS:
                del self.boards[next(iter(self.boards))]
            known = self.boards[cid] = _Version(cid, page.event_id, page.updated_ms)
        elif known.version > page.event_id:
            # Older than what another request kept meanwhile: answered, not kept.
            known = _Version(cid, page.event_id, page.updated_ms)
        part = known.keep(page, limit, caller, around, self.rendered)
        me = known.rows[caller] if caller is not None else _NULL
        recounting = page.recount is not None and page.recount.state == "running"
        return known, part, me, recounting


def _from_memory(
    known: _Version,
    state: BoardState,
    principal: Principal,
    limit: int,
    offset: int,
    around: str | None,
    members_only: bool,
) -> tuple[_Version, bytes, bytes, bool] | None:
    """The view from what is kept at this version, None when something is missing; the
    same refusals as the page script."""
    caller = principal.user_id
    if not principal.is_service and caller != state.organizer:
        member = known.members.get(caller) if caller is not None else False
        if member is None:
            return None
        if not member:
            if not state.public:
                raise not_found(known.cid)
            if members_only:
                raise _not_participant()
    start = offset
    if around is not None:
        window = known.windows.get((around, limit), _MISSING)
        if window is _MISSING:
            return None
        assert isinstance(window, int)
        start = window
    part = known.pages.get((start, limit))
    if part is None:
        return None
    me = _NULL
    if caller is not None:
        row = known.rows.get(caller)
        if row is None:
            return None
        me = row
    return known, part, me, state.recounting


def _not_participant() -> Forbidden:
    return Forbidden("Only participants and the organizer may see this.", error="not_participant")


def _not_ranked(around: str | None) -> NotFound:
    return NotFound(f"'{around}' is not on this leaderboard.", error="participant_not_found")
