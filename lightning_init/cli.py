"""Command line (stub: being written)."""


def main(argv=None) -> int:
    raise SystemExit("not yet")
