"""The schema fuzz in `make test` (issue 12; tests/fuzz.py says what it runs).

Bounded here (a fixed seed, about a minute); `python -m tests.fuzz --long` runs the same
with a bigger budget and a new seed. Embedded backend only: the fuzz is about the
service's answers, which do not depend on the kind of Redis behind it.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from pydantic import BaseModel, ValidationError
from schemathesis import Case
from schemathesis.core.failures import FailureGroup

from healthcomp.activity.schemas import Record
from healthcomp.competitions.schemas import CompetitionCreate, CompetitionUpdate
from healthcomp.users.schemas import ProfileUpdate
from tests import fuzz
from tests.live.support import Service

RUN = fuzz.profile()

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("HC_TEST_BACKEND", "embedded") != "embedded",
        reason="the fuzz runs on the embedded backend only",
    ),
    pytest.mark.timeout(300 if RUN.name == "bounded" else 24 * 3600),
]

schema = fuzz.app_schema(RUN)


@pytest.fixture(scope="module")
def served(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Service]:
    with fuzz.service(redis_url, tmp_path_factory.mktemp("fuzz")) as service:
        yield service
    # What the run met, in the log whatever pytest captures.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{RUN}\n{fuzz.summary()}")


@pytest.fixture(scope="module")
def base_url(served: Service) -> str:
    return served.base


def _bearer(caller: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {fuzz.TOKENS[caller]}"}


def test_the_checks_can_fail(base_url: str) -> None:
    """The checks the fuzz runs catch what they are for: a 5xx, a body the schema does
    not describe, a content type it does not declare."""
    me = schema["/api/v1/users/me"]["GET"]
    case = me.Case(headers=_bearer("participant"))
    case.call_and_validate(base_url=base_url)  # the real answer passes

    tampered = copy.deepcopy(schema.raw_schema)
    tampered["components"]["schemas"]["Profile"]["required"].append("nickname")
    strict = schemathesis.openapi.from_dict(tampered, config=fuzz.config(RUN))
    with pytest.raises(FailureGroup, match="Response violates schema"):
        strict["/api/v1/users/me"]["GET"].Case(headers=_bearer("participant")).call_and_validate(
            base_url=base_url
        )

    def answer(status: int, **kw: Any) -> httpx.Response:
        resp = httpx.Response(status, request=httpx.Request("GET", f"{base_url}/x"), **kw)
        resp.elapsed = timedelta(0)
        return resp

    envelope = {"success": False, "error": "internal", "message": "Boom.", "code": 500}
    with pytest.raises(FailureGroup, match="Server error"):
        case.validate_response(answer(500, json=envelope))
    with pytest.raises(FailureGroup, match="Undocumented Content-Type"):
        case.validate_response(answer(200, text="ok", headers={"content-type": "text/plain"}))


def _schema_takes(name: str, body: dict[str, Any]) -> bool:
    document = {"$ref": f"#/components/schemas/{name}", **schema.raw_schema}
    validator = jsonschema.Draft202012Validator
    return validator(document, format_checker=validator.FORMAT_CHECKER).is_valid(body)


def _model_takes(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


WINDOW = {"start_date": "2026-11-01", "end_date": "2026-11-30"}


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (CompetitionCreate, {"name": "Walk more", **WINDOW}),
        (CompetitionCreate, {"name": "nul\x00", **WINDOW}),
        (CompetitionCreate, {"name": "\u202eevil", **WINDOW}),
        (CompetitionCreate, {"name": "   ", **WINDOW}),
        (CompetitionCreate, {"name": "x", "description": "two\nlines", **WINDOW}),
        (CompetitionCreate, {"name": "x", "description": "bell\x07", **WINDOW}),
        (CompetitionCreate, {"name": "x", "rake_percent": 2.5, **WINDOW}),
        (CompetitionCreate, {"name": "x", "rake_percent": "2.5", **WINDOW}),
        (CompetitionCreate, {"name": "x", "rake_percent": 100.5, **WINDOW}),
        (CompetitionCreate, {"name": "x", "payout": {}, **WINDOW}),
        (CompetitionCreate, {"name": "x", "payout": {"scheme": "top_n"}, **WINDOW}),
        (CompetitionCreate, {"name": "x", "payout": {"percentages": ["50", 50]}, **WINDOW}),
        (CompetitionUpdate, {"rake_percent": 7}),
        (CompetitionUpdate, {"rake_percent": -1}),
        (CompetitionUpdate, {"rake_percent": "7"}),
        (ProfileUpdate, {"display_name": "Ann"}),
        (ProfileUpdate, {"display_name": "\u2066Ann"}),
        (Record, {"date": "2026-11-10"}),
        (Record, {"date": "2026-11-10T21:30:00-08:00"}),
    ],
)
def test_the_request_schemas_say_what_is_refused(
    model: type[BaseModel], body: dict[str, Any]
) -> None:
    """What the schema documents as valid input, the service takes, and the other way
    round (the fuzz found names, percentages and payouts where they differed)."""
    assert _schema_takes(model.__name__, body) == _model_takes(model, body)


def test_the_served_schema_is_the_one_fuzzed(base_url: str) -> None:
    served = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    assert served == schema.raw_schema


@schema.parametrize()
def test_every_operation(case: Case, served: Service) -> None:
    """Examples, boundary cases and random cases of every operation, one at a time."""
    try:
        case.call_and_validate(base_url=served.base)
    except FailureGroup as exc:
        exc.add_note(f"The service's log:\n{fuzz.server_errors(served)}")
        raise


def test_the_links(served: Service) -> None:
    """Chains of calls along the schema's links (create, join, sync, read, review, pay)."""
    report = fuzz.run_links(schema, served.base, RUN)
    print(
        f"\nfuzz: {report.scenarios} scenarios, {report.steps} calls, {report.runs} runs "
        f"({report.restarts} ended flaky), "
        f"{len(report.links)} links followed {sum(report.links.values())} times"
    )
    for link, n in sorted(report.links.items()):
        print(f"  {n:4} {link}")
    assert not report.failures, "\n".join([*report.failures, fuzz.server_errors(served)])
    assert report.scenarios >= RUN.scenarios
    # The links work: ids from responses reached the operations that need them.
    assert len(report.links) >= 10, report.links
    reached = {
        label
        for (phase, label, status), _ in fuzz.SEEN.items()
        if phase == "stateful" and 200 <= status < 300 and "{competition_id}" in label
    }
    assert len(reached) >= 3, reached
