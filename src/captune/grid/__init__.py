"""Evaluation grid: systems × images → predictions/*.json → scores.json (resumable, encode once)."""
