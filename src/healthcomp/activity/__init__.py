"""Activity: daily records per source, sync into competitions, history and stats."""
