"""Policy engine (stub: being written)."""
