"""Leaderboards: one sorted set per competition, ranks, pages, trusted writes."""
