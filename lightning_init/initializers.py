"""Initializer catalogue (stub: being written)."""
