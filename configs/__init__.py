"""The shipped presets, installed as the package ``lightning_init.configs``."""
