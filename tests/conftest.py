"""Shared fixtures. The small synthetic study is built once per test session."""

from __future__ import annotations

import importlib.util
import os
import tempfile

import pytest

# Kernel cache in a throw-away folder: tests never read or write the user's home folder.
os.environ.setdefault("VOXDOSE_CACHE_DIR", tempfile.mkdtemp(prefix="voxdose-test-cache-"))


def _gpu_ok() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    from voxdose.core.backend import gpu_available

    return gpu_available()


def pytest_collection_modifyitems(config, items):
    if _gpu_ok():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy (pip install voxdose[gpu])")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """The --small synthetic study on disk (path of study.toml)."""
    from voxdose.phantom.study import PhantomConfig, build_study

    root = tmp_path_factory.mktemp("small_study")
    return build_study(root / "study", PhantomConfig.small())


@pytest.fixture(scope="session")
def small_results(small_study, tmp_path_factory):
    """The pipeline run on the small study (CPU)."""
    from voxdose.pipeline.run import run_pipeline

    out = tmp_path_factory.mktemp("small_results") / "results"
    return run_pipeline(small_study, out, device="cpu")
