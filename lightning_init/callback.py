"""InitCallback (stub: being written)."""
