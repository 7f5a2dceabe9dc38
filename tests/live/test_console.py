"""The live console (`/console`) in a real browser.

Debian's Chromium (`/usr/bin/chromium`, installed by `.ci/run` when missing), driven by
Playwright for Python pointed at that system browser: Playwright's own browser download
is not reachable from the machines that run this. Two `healthcomp serve` processes share
the run's Redis (tests/live/conftest.py): the page is served by the second, the test's
writes go through the first, so the board the page shows moves across processes.

Only the embedded-Redis run drives the browser: the page is the same whatever Redis the
service uses, and the other runs would only add their time.

`HC_CONSOLE_SCREENSHOT=docs/console.png` writes the README's screenshot.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import BACKEND, token
from tests.live.support import Service, bearer

CHROMIUM = Path("/usr/bin/chromium")
# Root needs --no-sandbox; the rest keep Chromium from calling home (refused here anyway).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT = 8_000  # ms: what any step of the page may take at most

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        BACKEND != "embedded", reason="the browser test runs once, with the embedded Redis"
    ),
]

CID = "december-steps"
PEOPLE = {"ana": "Ana Costa", "ben": "Ben Adler", "cleo": "Cleo Park", "dan": "Dan Okafor"}
# Each one's days before today, then today (Dan has not synced today yet).
DAYS = {
    "ana": [9_800, 11_200, 10_400, 12_100, 5_200],
    "ben": [8_700, 9_900, 10_100, 9_400, 4_800],
    "cleo": [7_600, 8_200, 12_000, 9_100, 3_900],
    "dan": [6_100, 5_400, 7_200, 6_300],
}
POOL_CENTS = 5_000 + 4 * 500  # the base prize and four entry fees


def who(user: str) -> dict[str, str]:
    return bearer(user, name=PEOPLE[user])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run should have installed Debian's chromium")
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def seeded(pair: list[Service]) -> str:
    """ "December steps": Ana organizes it, four take part, four days and a bit synced."""
    today = datetime.now(UTC).date()
    start = today - timedelta(days=4)
    with httpx.Client(base_url=pair[0].base, timeout=10) as http:
        body = {
            "id": CID,
            "name": "December steps",
            "description": "Most steps this fortnight; the top three share the pot.",
            "metric": "steps",
            "start_date": start.isoformat(),
            "end_date": (today + timedelta(days=10)).isoformat(),
            "prize_pool_cents": 5_000,
            "entry_fee_cents": 500,
        }
        resp = http.post("/api/v1/competitions", json=body, headers=who("ana"))
        assert resp.status_code == 201, resp.text
        for user, steps in DAYS.items():
            resp = http.post(f"/api/v1/competitions/{CID}/join", headers=who(user))
            assert resp.status_code == 200, resp.text
            records = [
                {
                    "date": (start + timedelta(days=i)).isoformat(),
                    "steps": value,
                    # Cleo's third day: 40 km in 12,000 steps, a stride no one has.
                    "distance": 40_000 if (user, i) == ("cleo", 2) else round(value * 0.74),
                    "active_minutes": value // 110,
                    "source": "watch",
                }
                for i, value in enumerate(steps)
            ]
            resp = http.post("/api/v1/fitness/sync", json={"records": records}, headers=who(user))
            assert resp.status_code == 200, resp.text
    return CID


class Watched:
    """A page, what it requested and the errors it reported."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.urls: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("websocket", lambda ws: self.urls.append(ws.url))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def foreign(self, service: Service) -> list[str]:
        here = urlsplit(service.base).netloc
        return [url for url in self.urls if urlsplit(url).netloc != here]


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(WAIT)
    page = context.new_page()
    try:
        yield Watched(page)
    finally:
        context.close()


# Every order the board's rows take from now on, in window.orders (gone on a reload).
WATCH_ORDER = """() => {
  const rows = document.getElementById("board-rows");
  const order = () => [...rows.children].map((tr) => tr.dataset.userId).join(" ");
  window.orders = [order()];
  new MutationObserver(() => {
    if (order() !== window.orders.at(-1)) window.orders.push(order());
  }).observe(rows, { childList: true });
}"""


def board_order(page: Page) -> list[str | None]:
    rows = page.locator("#board-rows tr")
    return [rows.nth(i).get_attribute("data-user-id") for i in range(rows.count())]


def test_a_link_signs_in_and_the_board_moves_live(
    pair: list[Service], seeded: str, watched: Watched, tmp_path: Path
) -> None:
    page, web = watched.page, pair[1]
    page.goto(f"{web.base}/console#token={token('ana', name=PEOPLE['ana'])}&competition={seeded}")
    # Signed in, the token out of the address bar, kept in this tab only.
    expect(page.locator("#who-name")).to_have_text("Ana Costa (ana)")
    expect(page.locator("#who-role")).to_have_text("user")
    assert "token=" not in page.url and page.url.endswith(f"#competition={seeded}")
    assert page.evaluate("sessionStorage.length") == 1
    assert page.evaluate("localStorage.length") == 0
    # Her competitions, with her rank; the competition open with its name.
    item = page.locator(f'#my-list [data-competition-id="{seeded}"]')
    expect(item).to_contain_text("December steps")
    expect(item).to_contain_text("#1 of 4")
    expect(page.locator("#comp-name")).to_have_text("December steps")
    expect(page.locator("#live-state")).to_have_text("live")

    rows = page.locator("#board-rows tr")
    expect(rows).to_have_count(4)
    assert board_order(page) == ["ana", "ben", "cleo", "dan"]
    expect(page.locator("#board-rows .rank")).to_have_text(["1", "2", "3", "4"])
    expect(page.locator('#board-rows tr[data-user-id="ana"] .name')).to_contain_text("Ana Costa")

    # Dan's watch syncs today; the page, loaded once, moves him from last to first.
    page.evaluate(WATCH_ORDER)
    record = {
        "date": datetime.now(UTC).date().isoformat(),
        "steps": 26_500,
        "distance": 19_600,
        "active_minutes": 190,
        "source": "watch",
    }
    resp = httpx.post(f"{pair[0].base}/api/v1/fitness/sync", json=record, headers=who("dan"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["competitions"][0]["rank"] == 1
    expect(rows.first).to_have_attribute("data-user-id", "dan", timeout=5_000)
    dan = page.locator('#board-rows tr[data-user-id="dan"]')
    expect(dan.locator(".rank")).to_have_text("1")
    expect(dan).to_have_class(re.compile(r"\bchanged\b"))  # highlighted for a moment
    expect(dan.locator(".move")).to_have_text("▲3")
    expect(dan.locator(".move")).to_have_class("move up")
    expect(page.locator('#board-rows tr[data-user-id="ana"] .move')).to_have_text("▼1")
    expect(page.locator("#board-rows .rank")).to_have_text(["1", "2", "3", "4"])
    assert board_order(page) == ["dan", "ana", "ben", "cleo"]
    # The same page (no reload), and the rows moved in one step: no order in between.
    seen = page.evaluate("window.orders")
    assert seen[-1] == "dan ana ben cleo"
    assert set(seen) <= {"ana ben cleo dan", "dan ana ben cleo"}, seen
    expect(item).to_contain_text("#2 of 4")

    # The analytics as charts.
    expect(page.locator("#chart-days rect.bar")).to_have_count(5)
    expect(page.locator("#chart-dist rect.bar")).to_have_count(10)
    assert page.locator("#chart-win rect.bar.win").count() >= 1
    # The payout preview follows the board: Dan now takes the first prize.
    payout = page.locator("#payout-rows tr")
    expect(payout.first).to_have_attribute("data-user-id", "dan", timeout=8_000)
    expect(payout).to_have_count(3)
    cents = [
        int(c or 0)
        for c in payout.locator(".amount").evaluate_all(
            "cells => cells.map((c) => c.dataset.cents)"
        )
    ]
    assert sum(cents) == POOL_CENTS and cents == [4_200, 2_100, 700]
    expect(page.locator("#payout-pool")).to_have_text("pool 70.00 USD")
    # The organizer sees the flags: Cleo's impossible stride.
    expect(page.locator("#flags-card")).to_be_visible()
    flag = page.locator('#flags-rows tr[data-user-id="cleo"]')
    expect(flag).to_contain_text("stride of 3.3 m")
    expect(flag).to_contain_text("open")

    shot = os.environ.get("HC_CONSOLE_SCREENSHOT")
    path = Path(shot) if shot else tmp_path / "console.png"
    page.mouse.move(0, 0)
    page.screenshot(path=str(path), animations="disabled")
    assert path.stat().st_size > 10_000

    # Ana excludes the day, with a reason typed in place; the board follows.
    flag.locator('button[data-action="exclude"]').click()
    flag.locator("input").fill("40 km in 12,000 steps")
    flag.locator("input").press("Enter")
    expect(flag.locator(".state-excluded")).to_have_text("excluded")
    expect(flag).to_contain_text("ana: 40 km in 12,000 steps")
    expect(page.locator('#board-rows tr[data-user-id="cleo"] .scoreval')).to_have_text("28,800")

    assert watched.foreign(web) == []
    assert any(url.startswith(f"ws://{urlsplit(web.base).netloc}/ws/") for url in watched.urls)
    assert watched.errors == []


def test_a_pasted_token_signs_in(pair: list[Service], seeded: str, watched: Watched) -> None:
    page, web = watched.page, pair[1]
    page.goto(f"{web.base}/console")
    expect(page.locator("#signin")).to_be_visible()
    page.locator("#token-input").fill(bearer("ben", name=PEOPLE["ben"])["Authorization"])
    page.locator("#signin-button").click()
    expect(page.locator("#who-name")).to_have_text("Ben Adler (ben)")
    page.locator(f'#my-list [data-competition-id="{seeded}"]').click()
    expect(page.locator("#comp-name")).to_have_text("December steps")
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.locator("#board-rows tr")).to_have_count(4)
    expect(page.locator('#board-rows tr[data-user-id="ben"]')).to_have_class(re.compile(r"\bme\b"))
    # A participant sees no flags to review.
    expect(page.locator("#payout-rows tr")).to_have_count(3)
    expect(page.locator("#flags-card")).to_be_hidden()
    # Signed out: back to the form, nothing kept.
    page.locator("#sign-out").click()
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert watched.foreign(web) == [] and watched.errors == []


def test_a_bad_token_shows_why(pair: list[Service], watched: Watched) -> None:
    page, web = watched.page, pair[1]
    page.goto(f"{web.base}/console")
    page.locator("#token-input").fill("not-a-jwt")
    page.locator("#signin-button").click()
    error = page.locator("#signin-error")
    expect(error).to_have_text("The service refused the token: The token is malformed.")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    # The browser reports the 401 itself; nothing else went wrong.
    assert [e for e in watched.errors if "401" not in e] == []
    assert watched.foreign(web) == []
