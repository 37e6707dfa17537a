"""`python -m lightning_init` runs the command line."""

from lightning_init.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
