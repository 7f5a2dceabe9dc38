"""Shared infrastructure: settings, Redis, auth, errors, responses."""
