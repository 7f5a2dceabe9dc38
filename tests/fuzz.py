"""Schema-driven fuzzing (issue 12): schemathesis against the service's own /openapi.json.

What tests/test_fuzz.py runs, and `python -m tests.fuzz` runs longer:

* a real `healthcomp serve` process (uvicorn, one worker) on the test Redis, with the
  rate limits and the organizer's cap on open competitions lifted, so that what the
  fuzz meets is the service's answer to its input, not a 429;
* every operation of the schema, generated from it (examples, boundary "coverage" cases,
  then random fuzzing, valid and invalid input alike);
* the stateful links the schema declares (core/openapi.py): a created competition's id
  feeds its edit, join, leave, leaderboard, analytics, prizes, flags, audit and cancel;
  a join or a sync feeds the user's stats and history, and so on;
* each request made by one of the callers below, drawn with the rest of the case (so a
  failure shrinks and replays with its caller);
* checks: no 5xx, and every response as the schema declares it (status documented,
  content type, body valid against its schema).

Knobs (environment, or the options of `python -m tests.fuzz`): HC_FUZZ_PROFILE
(`bounded` | `long`), HC_FUZZ_EXAMPLES (random cases per operation), HC_FUZZ_SCENARIOS
(stateful scenarios), HC_FUZZ_SEED, and HC_FUZZ_DEBUG=1 to print every call and answer.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import random
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import redis
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, HookContext, Response
from schemathesis.core import NOT_SET
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput, normalize_name
from schemathesis.schemas import BaseSchema

from healthcomp.app import create_app
from healthcomp.core.auth import SERVICE, USER, mint_token
from tests.conftest import TEST_SECRET, make_settings
from tests.live.support import Service

ROOT = Path(__file__).resolve().parents[1]

# The callers: a participant, the organizer of what they create, the service role; and,
# less often, a signed-in user who is in nothing and a request without a token.
PARTICIPANT, ORGANIZER, STRANGER = "fz-user", "fz-org", "fz-stranger"
TOKENS: dict[str, str | None] = {
    "participant": mint_token(TEST_SECRET, user_id=PARTICIPANT, role=USER, name="Fuzz User"),
    "organizer": mint_token(TEST_SECRET, user_id=ORGANIZER, role=USER, name="Fuzz Org"),
    "service": mint_token(TEST_SECRET, user_id=None, role=SERVICE),
    "stranger": mint_token(TEST_SECRET, user_id=STRANGER, role=USER),
    "anonymous": None,
}
SUBJECT = {"participant": PARTICIPANT, "organizer": ORGANIZER, "stranger": STRANGER}

# Who calls what, as weights: mostly the caller the operation is for, sometimes another.
_FOR_PARTICIPANT = {"participant": 10, "organizer": 3, "service": 4, "stranger": 2, "anonymous": 1}
_FOR_ORGANIZER = {"participant": 3, "organizer": 9, "service": 6, "stranger": 1, "anonymous": 1}
_FOR_CREATE = {"participant": 3, "organizer": 10, "service": 5, "stranger": 1, "anonymous": 1}
_ORGANIZER_OPERATIONS = (
    ("PATCH", "/api/v1/competitions/{competition_id}"),
    ("POST", "/api/v1/competitions/{competition_id}/cancel"),
    ("GET", "/api/v1/competitions/{competition_id}/audit"),
    ("GET", "/api/v1/competitions/{competition_id}/flags"),
    ("POST", "/api/v1/competitions/{competition_id}/flags/{flag_id}"),
    ("POST", "/api/v1/competitions/{competition_id}/participants/{user_id}/disqualify"),
    ("POST", "/api/v1/competitions/{competition_id}/participants/{user_id}/reinstate"),
    ("POST", "/api/v1/leaderboard/update"),
    ("POST", "/api/v1/prizes/distribute/{competition_id}"),
)


def _weighted(weights: dict[str, int]) -> list[str]:
    return [caller for caller, weight in weights.items() for _ in range(weight)]


def callers_for(method: str, path: str) -> list[str]:
    if (method, path) == ("POST", "/api/v1/competitions"):
        return _weighted(_FOR_CREATE)
    if (method, path) in _ORGANIZER_OPERATIONS:
        return _weighted(_FOR_ORGANIZER)
    return _weighted(_FOR_PARTICIPANT)


def _today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class Profile:
    """How much to run: `bounded` in `make test`, `long` by `python -m tests.fuzz`."""

    name: str
    examples: int  # random cases per operation, besides its examples and boundary cases
    scenarios: int  # stateful scenarios
    steps: int  # at most this many calls in one scenario
    seed: int | None  # None: a new one each run


PROFILES = {
    "bounded": Profile("bounded", examples=20, scenarios=100, steps=10, seed=20261204),
    "long": Profile("long", examples=400, scenarios=2000, steps=16, seed=None),
}


def profile() -> Profile:
    chosen = PROFILES[os.environ.get("HC_FUZZ_PROFILE", "bounded")]
    examples = int(os.environ.get("HC_FUZZ_EXAMPLES", chosen.examples))
    scenarios = int(os.environ.get("HC_FUZZ_SCENARIOS", chosen.scenarios))
    seed_env = os.environ.get("HC_FUZZ_SEED")
    seed = int(seed_env) if seed_env else chosen.seed
    if seed is None:
        seed = random.getrandbits(32)  # printed with the run, for --seed
    return Profile(chosen.name, examples, scenarios, chosen.steps, seed)


def config(run: Profile) -> schemathesis.Config:
    checks = (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
    data: dict[str, Any] = {
        "suppress-health-check": ["all"],  # a slow, shared 2-core machine is not a finding
        "generation": {"max-examples": run.examples, "mode": "all", "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in checks}},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            # Only the links the schema declares, not links guessed from names.
            "stateful": {"max-steps": run.steps, "inference": {"algorithms": []}},
        },
        "request-timeout": 30,
        # The tokens are the tests' own: a failure's curl command keeps its caller.
        "output": {"sanitization": {"enabled": False}},
    }
    if run.seed is not None:
        data["seed"] = run.seed  # the cases of every operation follow from it
    return schemathesis.Config.from_dict(data)


def stateful_settings(run: Profile, scenarios: int, runs_before: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=scenarios,
        stateful_step_count=run.steps,
        deadline=None,
        database=None,
        # The bounded run's first scenarios are the same each time; the rest, and all
        # of the long run's, are new each time.
        derandomize=run.name == "bounded" and runs_before == 0,
        suppress_health_check=list(hypothesis.HealthCheck),
        # No shrinking: replays against a service whose state moved on are mostly flaky,
        # and each failure is recorded with its request the first time.
        phases=[hypothesis.Phase.generate],
    )


# Realistic input, some of the time ------------------------------------------------------
#
# Generated from the schema alone, a competition's window is almost never one the service
# takes (its days between 2000 and 2999, at most 366 of them, starting at most 7 days
# back for a user), and a sync's day almost never one a competition counts. Half of the
# cases get days near today instead, so that chains reach joins, scores, flags and
# payouts; the other half keep what the schema generated.


def _tidy(value: Any) -> Any:
    """Numbers as a client writes them: JSON Schema counts 5.0 as an integer, and so
    Schemathesis sends it for one; the service takes only 5 (SPEC §4, strict input).
    Other numbers get at most 2 decimals (a percentage's limit)."""
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tidy(v) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if value.is_integer() else round(value, 2)
    return value


def _window(draw: st.DrawFn) -> dict[str, str]:
    start = _today() + timedelta(days=draw(st.integers(-9, 3)))
    end = start + timedelta(days=draw(st.integers(0, 20)))
    return {"start_date": start.isoformat(), "end_date": end.isoformat()}


def _realistic_competition(draw: st.DrawFn, body: dict[str, Any]) -> None:
    """A window near today, and rules that agree with each other."""
    body.update(_window(draw))
    body.pop("min_participants", None)
    body.pop("max_participants", None)
    if draw(st.booleans()):
        body["format"] = "goal"
        body["goal"] = {"daily_target": draw(st.sampled_from([1, 5000, 10000])), "min_days": 1}
        body["payout"] = {"scheme": "qualifiers_split"}
    else:
        body["format"] = "ranked"
        body.pop("goal", None)
        body["payout"] = draw(
            st.sampled_from(
                [
                    {"scheme": "top_n", "percentages": [60, 30, 10]},
                    {"scheme": "top_n", "percentages": [50, 50]},
                    {"scheme": "winner_takes_all"},
                ]
            )
        )


def _day(draw: st.DrawFn) -> str:
    return (_today() - timedelta(days=draw(st.integers(0, 10)))).isoformat()


def _realistic_sync(draw: st.DrawFn, body: dict[str, Any], subject: str | None) -> None:
    records = body.get("records")
    if isinstance(records, list):
        for record in records:
            if isinstance(record, dict):
                record["date"] = _day(draw)
    elif "date" in body:
        body["date"] = _day(draw)
    if subject is not None and draw(st.booleans()):
        body["user_id"] = subject


@st.composite
def _prepared(draw: st.DrawFn, case: Case) -> Case:
    method, path = case.operation.method.upper(), case.operation.path
    caller = draw(st.sampled_from(callers_for(method, path)))
    token = TOKENS[caller]
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    case.headers = headers
    # The user a path or a body names: the caller themself, or for the service the
    # participant, some of the time.
    subject = SUBJECT.get(caller, PARTICIPANT if caller == "service" else None)
    if subject is not None and "user_id" in (case.path_parameters or {}) and draw(st.booleans()):
        case.path_parameters = {**case.path_parameters, "user_id": subject}
    if not isinstance(case.body, dict) or not draw(st.booleans()):
        return case
    body = _tidy(case.body)
    if (method, path) == ("POST", "/api/v1/competitions"):
        _realistic_competition(draw, body)
    elif (method, path) == ("POST", "/api/v1/fitness/sync"):
        _realistic_sync(draw, body, subject)
    elif method == "PATCH" and {"start_date", "end_date"} <= body.keys():
        body.update(_window(draw))
    case.body = body
    return case


def flatmap_case(context: HookContext, case: Case) -> st.SearchStrategy[Case]:
    """Every generated case (fuzzing and stateful steps): a caller, and realistic days
    some of the time."""
    return _prepared(case)


# What the run met: (phase, operation, status) -> count.
SEEN: Counter[tuple[str, str, int]] = Counter()


def after_call(context: HookContext, case: Case, response: Response) -> None:
    if case.meta is None:
        return  # a case a test made by hand, not the fuzz's
    phase = case.meta.phase.name.value
    SEEN[(phase, case.operation.label, response.status_code)] += 1
    if os.environ.get("HC_FUZZ_DEBUG"):
        # Every call as it goes: the caller, the request, the answer.
        header = str((case.headers or {}).get("Authorization", ""))
        who = next((k for k, v in TOKENS.items() if v and v in header), "anonymous")
        body = "" if case.body is NOT_SET else repr(case.body)[:300]
        print(f"{phase} {who} {case.formatted_path} {case.query or ''} {body}")
        print(f"  -> {response.status_code} {response.text[:300]}")


def summary() -> str:
    """One line on what the run met (for the log, and docs/RELIABILITY.md)."""
    phases: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    operations = set()
    for (phase, label, status), n in SEEN.items():
        phases[phase] += n
        statuses[status] += n
        operations.add(label)
    by_phase = ", ".join(f"{phase} {n:,}" for phase, n in sorted(phases.items()))
    by_status = ", ".join(f"{status}: {n:,}" for status, n in sorted(statuses.items()))
    errors = sum(n for status, n in statuses.items() if status >= 500)
    line = (
        f"schema fuzz: {phases.total():,} calls ({by_phase}) on {len(operations)} operations; "
        f"statuses {by_status}; 5xx: {errors}"
    )
    for report in REPORTS:
        line += (
            f"\nstateful: {report.scenarios:,} scenarios, {report.steps:,} calls, "
            f"{len(report.links)} of the schema's links followed "
            f"{report.links.total():,} times; {report.runs} Hypothesis runs, "
            f"{report.restarts} ended flaky"
        )
    return line


class Callers:
    """The boundary and example cases are not drawn by Hypothesis: they go round the
    callers of their operation instead."""

    def __init__(self) -> None:
        self.turn: dict[str, int] = {}

    def get(self, case: Case, context: Any) -> str | None:
        label = case.operation.label
        # The most likely caller first (an operation with one example gets that one).
        weighted = callers_for(case.operation.method.upper(), case.operation.path)
        callers = sorted(dict.fromkeys(weighted), key=weighted.count, reverse=True)
        turn = self.turn.get(label, 0)
        self.turn[label] = turn + 1
        return TOKENS[callers[turn % len(callers)]] or ""

    def set(self, case: Case, data: str, context: Any) -> None:
        headers = dict(case.headers or {})
        if data:
            headers["Authorization"] = f"Bearer {data}"
        else:
            headers.pop("Authorization", None)
        case.headers = headers


def app_schema(run: Profile) -> BaseSchema:
    """The schema the app serves at /openapi.json, built from its routes (no Redis, no
    server needed, so pytest can make one test per operation when it collects them);
    the calls go to the base URL each test passes."""
    unused = Path(tempfile.gettempdir()) / "healthcomp-fuzz-schema"
    document = create_app(make_settings(unused, None)).openapi()
    schema = schemathesis.openapi.from_dict(copy.deepcopy(document), config=config(run))
    schema.hook(flatmap_case)
    schema.hook(after_call)
    schema.auth(refresh_interval=None)(Callers)
    return schema


@dataclass
class StatefulReport:
    scenarios: int = 0
    steps: int = 0
    runs: int = 0  # Hypothesis runs
    restarts: int = 0  # of which ended flaky (see run_links)
    links: Counter[str] = field(default_factory=Counter)  # link followed -> times
    failures: list[str] = field(default_factory=list)


REPORTS: list[StatefulReport] = []


def state_machine(schema: BaseSchema, base_url: str, report: StatefulReport) -> Any:
    """The schema's state machine, calling `base_url`, whose scenarios start only where
    no id is needed (a create, a list, a sync, the caller's profile): an operation on a
    competition or a user gets its ids from an earlier step's response. Each failed
    check is recorded as it happens, with the request that made it."""
    base: Any = schema.as_state_machine()
    needs_ids = {label for label in base._root_labels if "{" in label}
    hidden = {normalize_name(f"RANDOM -> {label}"): None for label in needs_ids}
    assert set(hidden) <= base.root_rules, "schemathesis names its root rules differently"

    class Links(base):  # type: ignore[misc, valid-type]
        root_rules = base.root_rules - set(hidden)
        _root_labels = base._root_labels - needs_ids

        def setup(self) -> None:
            report.scenarios += 1

        def step(self, input: StepInput) -> StepOutput:
            report.steps += 1
            if input.transition is not None and input.is_applied:
                report.links[input.transition.id] += 1
            return super().step(input)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": base_url}

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            try:
                super().validate_response(response, case, additional_checks, **kwargs)
            except FailureGroup as exc:
                report.failures.append(_describe(case, response, exc))
                raise

    for name in hidden:
        setattr(Links, name, None)
    return Links


def _describe(case: Case, response: Response, exc: FailureGroup) -> str:
    checks = "; ".join(f"{f.title}: {f.message}" for f in exc.exceptions)
    return (
        f"{case.operation.label} -> {response.status_code}: {checks}\n"
        f"  {case.as_curl_command(headers=dict(response.request.headers))}\n"
        f"  {response.text[:500]}"
    )


def run_links(schema: BaseSchema, base_url: str, run: Profile) -> StatefulReport:
    """Runs scenarios, in Hypothesis runs of at most 100, until the profile's number.

    The service's state outlives a scenario (Redis keeps every competition made), so
    Hypothesis, when it replays a prefix of an earlier scenario, can meet other answers
    and other rules open, and ends its run as flaky (`FlakyStrategyDefinition`,
    `FlakyFailure`): that is no finding. Failed checks are recorded as they happen
    (`validate_response` above), so a flaky end cannot hide one; the next run starts
    afresh. Only runs that end flaky without a single scenario stop the test."""
    report = StatefulReport()
    REPORTS.append(report)
    machine = state_machine(schema, base_url, report)
    stalled = 0
    while report.scenarios < run.scenarios and not report.failures:
        before = report.scenarios
        chunk = min(100, run.scenarios - report.scenarios)
        try:
            machine.run(settings=stateful_settings(run, chunk, report.runs))
        except hypothesis.errors.Flaky:
            if report.failures:
                break
            report.restarts += 1
            stalled = 0 if report.scenarios > before else stalled + 1
            if stalled >= 3:
                raise
        except FailureGroup:
            break
        report.runs += 1
    return report


# The service under test ------------------------------------------------------------------


@contextlib.contextmanager
def service(redis_url: str, workdir: Path) -> Iterator[Service]:
    """`healthcomp serve` on the given Redis under a fresh key prefix; its keys are
    deleted afterwards."""
    prefix = "fz" + uuid.uuid4().hex[:10]
    served = Service(
        redis_url,
        prefix,
        workdir,
        # Service lifts the rate limits already; the fuzz creates competitions without end.
        HC_MAX_OPEN_COMPETITIONS="0",
        HC_METRICS="public",
    )
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(key)
        finally:
            client.close()


def server_errors(served: Service) -> str:
    """The tracebacks in the service's log (what a 5xx left there), for a failure's
    report: the log itself goes with the test's temporary directory."""
    lines = served.log.read_text(errors="replace").splitlines()
    kept: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = i + 1
            while end < len(lines) and (lines[end][:1] in (" ", "") or ":" not in lines[end]):
                end += 1
            kept.extend(lines[max(0, i - 2) : end + 1])
    return "\n".join(kept[-200:]) or "(no traceback in the service's log)"


# python -m tests.fuzz ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description="Run the schema fuzz (tests/test_fuzz.py) with a bigger budget.",
    )
    parser.add_argument("--long", action="store_true", help="the long run (default: bounded)")
    parser.add_argument("--examples", type=int, help="random cases per operation")
    parser.add_argument("--scenarios", type=int, help="stateful scenarios")
    parser.add_argument(
        "--seed", type=int, help="a seed (default: fixed when bounded, new when long)"
    )
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest")
    args = parser.parse_args(argv)
    env = dict(os.environ, HC_FUZZ_PROFILE="long" if args.long else "bounded")
    env.setdefault("HC_TEST_BACKEND", "embedded")
    for name, value in (
        ("HC_FUZZ_EXAMPLES", args.examples),
        ("HC_FUZZ_SCENARIOS", args.scenarios),
        ("HC_FUZZ_SEED", args.seed),
    ):
        if value is not None:
            env[name] = str(value)
    cmd = [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", *args.pytest_args]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
