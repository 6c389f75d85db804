"""The ``voxdose`` command line: one module per command group (Typer + Rich)."""

from .app import app, main

__all__ = ["app", "main"]
