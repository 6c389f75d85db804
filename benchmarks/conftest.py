"""Benchmarks (pytest-benchmark): run with ``python -m pytest benchmarks/ --benchmark-only``.

Each benchmark is paired with the obvious alternative measured in the same run; they are
never pass/fail timing tests.
"""
