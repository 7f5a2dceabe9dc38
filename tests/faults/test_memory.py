"""What the soak found (bench/soak.py): a worker's memory grew with every board event.

With 1,000 WebSocket watchers, 20 syncs a second and 20 reads a second, the worker's
RSS grew by 8.6 MB a minute for ten minutes (94 MB to 183 MB), the same with 200
watchers, and not at all without watchers. `gc.collect()` in the worker freed it: each
event's `Delivered` kept a one-tuple of itself (`_alone`), a reference cycle, and
`app.tune_gc` has the workers run the collector's older generations rarely (young
collections every 20,000 allocations, the next generation after 50 of them), so an
event that outlived a young collection in the room's ring stayed in memory.

What the fan-out makes per event must be freed by reference counting alone.
"""

from __future__ import annotations

import gc

from healthcomp.live.hub import Delivered

EVENT = {
    "type": "sync",
    "competition_id": "nov",
    "user_id": "amy",
    "user_name": "Amy",
    "score": 52000,
    "previous_score": 47000,
    "rank": 2,
    "previous_rank": 4,
    "passed": ["zed", "mo"],
    "passed_ranks": [[3, 2], [4, 3]],
    "passed_by": [],
    "passed_by_ranks": [],
    "at": 1794312000000,
    "event_id": 57,
}


def test_a_board_event_is_freed_without_the_collector() -> None:
    gc.collect()
    gc.disable()
    try:
        event = Delivered(dict(EVENT))
        for user in (None, "amy", "zed", "kim"):  # the frame alone, and rank_changes
            assert [out.wire for out in event.outs(user)]
        del event
        assert gc.collect() == 0, "an event left objects only the collector frees"
    finally:
        gc.enable()
