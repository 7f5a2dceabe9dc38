"""The board engine: the one owner of every key and script that changes a board.

Joins, leaves, sync applies, trusted writes, renames, recounts, cancels (and later
exclusions and finalization) all go through here; other domains call these functions
and never write a competition's keys. Every change bumps the board's version and
appends an event (see `scripts.py`), which page caches, the WebSocket and prizes read.
"""
