"""OpenAPI that tells the truth about errors, and says how the operations connect.

FastAPI documents 422 as its own `HTTPValidationError` shape; this service answers every
error, 422 included, with the SPEC §4 envelope. The schema is rewritten once so that a
schema-driven client or fuzzer sees the envelope on 422 and on every other error.

It also gains OpenAPI links (`responses.<code>.links`): where the id an operation answers
with (a new competition's `data.id`, a membership's `user_id`, a flag's `id`) is the input
of another operation. Clients read them as documentation; a stateful fuzzer
(tests/test_fuzz.py) follows them to chain calls (create, join, sync, leaderboard, ...)
instead of guessing ids that do not exist.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    success: Literal[False] = False
    error: str = Field(examples=["validation_error"], description="A stable code")
    message: str = Field(examples=["Invalid request: records.0.steps."])
    code: int = Field(examples=[422], description="The HTTP status")
    details: list[dict[str, Any]] | None = Field(
        None, description="For 422: `{field, message, type, input?}` per invalid field"
    )


_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_ERROR_CONTENT = {"application/json": {"schema": _ERROR_REF}}


def install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Error"] = ErrorBody.model_json_schema()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "Invalid input", "content": _ERROR_CONTENT}
                for status, response in responses.items():
                    # An error a route documents by its description alone (a 503, a 401)
                    # is answered in the envelope too.
                    if status[0] in "45" and "content" not in response:
                        response["content"] = _ERROR_CONTENT
                responses["default"] = {
                    "description": "Any error, in the SPEC §4 envelope",
                    "content": _ERROR_CONTENT,
                }
        add_links(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]


# Links ---------------------------------------------------------------------------------

API = "/api/v1"
_C = API + "/competitions/{competition_id}"


class Target(NamedTuple):
    method: str
    path: str


GET_COMPETITION = Target("get", _C)
EDIT = Target("patch", _C)
JOIN = Target("post", _C + "/join")
LEAVE = Target("post", _C + "/leave")
CANCEL = Target("post", _C + "/cancel")
PARTICIPANTS = Target("get", _C + "/participants")
AUDIT = Target("get", _C + "/audit")
FLAGS = Target("get", _C + "/flags")
REVIEW = Target("post", _C + "/flags/{flag_id}")
DISQUALIFY = Target("post", _C + "/participants/{user_id}/disqualify")
REINSTATE = Target("post", _C + "/participants/{user_id}/reinstate")
LEADERBOARD = Target("get", API + "/leaderboard/{competition_id}")
UPDATE_SCORE = Target("post", API + "/leaderboard/update")
ANALYTICS = Target("get", API + "/fitness/analytics/{competition_id}")
SYNC = Target("post", API + "/fitness/sync")
STATS = Target("get", API + "/fitness/stats/{user_id}")
HISTORY = Target("get", API + "/fitness/history/{user_id}")
CALCULATE = Target("post", API + "/prizes/calculate/{competition_id}")
DISTRIBUTE = Target("post", API + "/prizes/distribute/{competition_id}")
PRIZE_HISTORY = Target("get", API + "/prizes/history/{user_id}")
USER_COMPETITIONS = Target("get", API + "/users/{user_id}/competitions")
CREATE = Target("post", API + "/competitions")
LIST = Target("get", API + "/competitions")
ME = Target("get", API + "/users/me")
PROFILE = Target("put", API + "/users/me/profile")


class Link(NamedTuple):
    name: str
    target: Target
    parameters: dict[str, str]
    body: dict[str, str] | None = None


def _competition_links(cid: str) -> list[Link]:
    """What a competition's id opens: every operation on that competition."""
    path = {"path.competition_id": cid}
    return [
        Link("GetCompetition", GET_COMPETITION, path),
        Link("EditCompetition", EDIT, path),
        Link("Join", JOIN, path),
        Link("Leave", LEAVE, path),
        Link("Cancel", CANCEL, path),
        Link("Participants", PARTICIPANTS, path),
        Link("Audit", AUDIT, path),
        Link("Flags", FLAGS, path),
        Link("Leaderboard", LEADERBOARD, path),
        Link("Analytics", ANALYTICS, path),
        Link("CalculatePrizes", CALCULATE, path),
        Link("DistributePrizes", DISTRIBUTE, path),
        # Body links are merged into the body the client would send anyway.
        Link("SyncForCompetition", SYNC, {}, {"competition_id": cid}),
        Link("UpdateScoreInCompetition", UPDATE_SCORE, {}, {"competition_id": cid}),
    ]


def _user_links(uid: str) -> list[Link]:
    """What a user's id opens: their own records."""
    path = {"path.user_id": uid}
    return [
        Link("UserStats", STATS, path),
        Link("UserHistory", HISTORY, path),
        Link("UserCompetitions", USER_COMPETITIONS, path),
        Link("UserPrizeHistory", PRIZE_HISTORY, path),
    ]


def _participant_links(cid: str, uid: str) -> list[Link]:
    """What a participant (a competition's id and a user's id) opens."""
    both = {"path.competition_id": cid, "path.user_id": uid}
    scoped = {"path.user_id": uid, "query.competition_id": cid}
    return [
        Link("ParticipantStats", STATS, scoped),
        Link("ParticipantHistory", HISTORY, scoped),
        Link(
            "LeaderboardAroundParticipant",
            LEADERBOARD,
            {"path.competition_id": cid, "query.around": uid},
        ),
        Link("Disqualify", DISQUALIFY, both),
        Link("Reinstate", REINSTATE, both),
        Link("UpdateParticipantScore", UPDATE_SCORE, {}, {"competition_id": cid, "user_id": uid}),
        Link("SyncAsParticipant", SYNC, {}, {"competition_id": cid, "user_id": uid}),
        *_user_links(uid),
    ]


def _pick(links: list[Link], *names: str) -> list[Link]:
    chosen = [link for link in links if link.name in names]
    if len(chosen) != len(names):
        raise ValueError(f"no link named {set(names) - {link.name for link in chosen}}")
    return chosen


_BODY = "$response.body#/data"


def _of_competition(cid: str, *names: str) -> list[Link]:
    return _pick(_competition_links(cid), *names)


def _of_participant(cid: str, uid: str, *names: str) -> list[Link]:
    return _pick(_participant_links(cid, uid), *names)


# (source operation, its success status) -> the links from its response. A new
# competition opens everything; elsewhere the links follow what a client does next
# (join, then sync, then read the board), so that a fuzzer following them goes deep
# rather than wide.
LINKS: dict[tuple[Target, str], list[Link]] = {
    (CREATE, "201"): _competition_links(f"{_BODY}/id"),
    (EDIT, "200"): _of_competition(
        f"{_BODY}/id", "GetCompetition", "Join", "Leaderboard", "CalculatePrizes"
    ),
    (GET_COMPETITION, "200"): _of_competition(
        f"{_BODY}/id", "Join", "EditCompetition", "Leaderboard", "Participants"
    ),
    (LIST, "200"): _of_competition(f"{_BODY}/items/0/id", "GetCompetition", "Join", "Leaderboard"),
    (CANCEL, "200"): _of_competition(
        f"{_BODY}/id", "GetCompetition", "CalculatePrizes", "DistributePrizes", "Leaderboard"
    ),
    (JOIN, "200"): [
        *_of_competition(
            f"{_BODY}/competition_id",
            "Leave",
            "Leaderboard",
            "Participants",
            "Analytics",
            "CalculatePrizes",
        ),
        *_of_participant(
            f"{_BODY}/competition_id",
            f"{_BODY}/user_id",
            "SyncAsParticipant",
            "ParticipantStats",
            "ParticipantHistory",
            "LeaderboardAroundParticipant",
            "UpdateParticipantScore",
            "Disqualify",
        ),
    ],
    (LEAVE, "200"): [
        *_of_competition(f"{_BODY}/competition_id", "Join", "Leaderboard"),
        *_of_participant(f"{_BODY}/competition_id", f"{_BODY}/user_id", "ParticipantStats"),
    ],
    (SYNC, "200"): [
        *_of_competition(
            f"{_BODY}/competitions/0/competition_id", "Leaderboard", "Flags", "Analytics"
        ),
        # The response names the competitions; the user is the one the request named.
        *_pick(_user_links("$request.body#/user_id"), "UserStats", "UserHistory"),
    ],
    (LEADERBOARD, "200"): _of_participant(
        f"{_BODY}/competition_id",
        f"{_BODY}/entries/0/user_id",
        "ParticipantStats",
        "ParticipantHistory",
        "LeaderboardAroundParticipant",
        "UpdateParticipantScore",
        "Disqualify",
    ),
    (PARTICIPANTS, "200"): _of_participant(
        f"{_BODY}/competition_id",
        f"{_BODY}/entries/0/user_id",
        "ParticipantStats",
        "Disqualify",
        "UpdateParticipantScore",
    ),
    (UPDATE_SCORE, "200"): [
        *_of_competition(f"{_BODY}/entry/competition_id", "Leaderboard", "Audit"),
        *_of_participant(
            f"{_BODY}/entry/competition_id", f"{_BODY}/entry/user_id", "ParticipantStats"
        ),
    ],
    (FLAGS, "200"): [
        Link(
            "ReviewFlag",
            REVIEW,
            {
                "path.competition_id": f"{_BODY}/competition_id",
                "path.flag_id": f"{_BODY}/flags/0/id",
            },
        ),
        *_of_participant(
            f"{_BODY}/competition_id",
            f"{_BODY}/flags/0/user_id",
            "Disqualify",
            "ParticipantHistory",
        ),
    ],
    (REVIEW, "200"): [
        *_of_competition(f"{_BODY}/flag/competition_id", "Flags", "Leaderboard", "Audit"),
        Link(
            "ReviewAgain",
            REVIEW,
            {
                "path.competition_id": f"{_BODY}/flag/competition_id",
                "path.flag_id": f"{_BODY}/flag/id",
            },
        ),
    ],
    (DISQUALIFY, "200"): [
        *_of_competition(f"{_BODY}/competition_id", "Leaderboard", "Flags", "Audit"),
        *_of_participant(f"{_BODY}/competition_id", f"{_BODY}/user_id", "Reinstate"),
    ],
    (REINSTATE, "200"): [
        *_of_competition(f"{_BODY}/competition_id", "Leaderboard"),
        *_of_participant(f"{_BODY}/competition_id", f"{_BODY}/user_id", "Disqualify"),
    ],
    (CALCULATE, "200"): _of_competition(
        f"{_BODY}/competition_id", "DistributePrizes", "Leaderboard"
    ),
    (DISTRIBUTE, "200"): [
        *_of_competition(f"{_BODY}/competition_id", "CalculatePrizes", "GetCompetition"),
        *_pick(_user_links(f"{_BODY}/lines/0/user_id"), "UserPrizeHistory"),
    ],
    (ME, "200"): _pick(_user_links(f"{_BODY}/user_id"), "UserCompetitions", "UserStats"),
    (PROFILE, "200"): _pick(_user_links(f"{_BODY}/user_id"), "UserCompetitions"),
    (USER_COMPETITIONS, "200"): [
        *_of_competition(f"{_BODY}/competitions/0/competition_id", "Leaderboard", "Leave"),
        *_of_participant(
            f"{_BODY}/competitions/0/competition_id", f"{_BODY}/user_id", "ParticipantStats"
        ),
    ],
}


def add_links(schema: dict[str, Any]) -> None:
    """Writes `LINKS` into the schema's responses. A link whose source or target is not
    in the schema (a route renamed or gone) fails here, at the first build, not
    silently."""
    paths = schema["paths"]

    def operation(target: Target) -> dict[str, Any]:
        found: dict[str, Any] = paths[target.path][target.method]
        return found

    for (source, status), links in LINKS.items():
        response = operation(source)["responses"][status]
        written = response.setdefault("links", {})
        for link in links:
            if link.name in written:
                raise ValueError(f"two links named {link.name} from {source} {status}")
            target = operation(link.target)
            names = {f"{p['in']}.{p['name']}" for p in target.get("parameters", []) if "in" in p}
            unknown = set(link.parameters) - names
            if unknown:
                raise ValueError(f"link {link.name}: {link.target} has no {sorted(unknown)}")
            if link.body is not None and "requestBody" not in target:
                raise ValueError(f"link {link.name}: {link.target} takes no body")
            definition: dict[str, Any] = {"operationId": target["operationId"]}
            if link.parameters:
                definition["parameters"] = dict(link.parameters)
            if link.body is not None:
                definition["requestBody"] = dict(link.body)
            written[link.name] = definition
