"""Live leaderboards over WebSocket (SPEC §7): `/ws/leaderboard/{competition_id}`.

Every change to a board is one event (engine/scripts.py): appended to the competition's
stream and published on the channel named like it, in the same script. Each process
holds one `Hub`: one pub/sub connection (one per node of a cluster) subscribed to the
channels of the competitions that have clients in this process, and nothing else. A
`Room` per such competition puts the events in order (a gap is filled from the stream),
keeps the last of them encoded once, and wakes its clients; each client's pump sends
what it has not sent yet, so a slow socket holds up only itself. `socket.serve` is the
ASGI endpoint; `frames` is the protocol's wire format (docs/API.md, "Live leaderboards").
"""
