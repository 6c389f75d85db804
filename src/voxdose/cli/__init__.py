"""The ``voxdose`` command line: one module per command group (Typer + Rich)."""

import os

# The commands' BLAS calls are 3x3 coordinate transforms, short dot products and the GTM's
# small Gram matrix; OpenBLAS's worker threads gain nothing there and spin after every
# call (about 1 s of a core in `voxdose demo` on 2 cores: docs/benchmarks.md). One thread,
# unless the user chose otherwise; set before NumPy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .app import app, main

__all__ = ["app", "main"]
