"""Partial-volume correction (PVC) of SPECT activity: GTM, RBV, iterative Yang, RC.

Functions take arrays and :class:`~voxdose.core.grid.Grid` objects (no file I/O); the
``voxdose pvc`` command (:mod:`voxdose.cli.pvc`) and the pipeline read and write. Start at
:func:`voxdose.pvc.correct.prepare` / :func:`~voxdose.pvc.correct.correct`; the methods
and their equations are in docs/pvc.md.
"""
