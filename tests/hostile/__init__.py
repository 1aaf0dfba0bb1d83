"""Hostile functions run through the real jail (issue 4)."""
