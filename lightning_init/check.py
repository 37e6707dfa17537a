"""Init check (stub: being written)."""
