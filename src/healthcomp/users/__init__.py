"""Profiles: display names and avatars shown on leaderboards."""
