"""Competitions: create, edit, join, leave, cancel; status from dates and actions."""
