"""Early-training diagnostics (stub: being written)."""
