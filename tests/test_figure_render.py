"""Figures drawn in the helper process (report/render.py) are the figures drawn in the
pipeline's own process, byte for byte; a figure the helper cannot draw is drawn here, so
that its real error is raised here; the helper never runs the caller's script again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from voxdose.analysis.dvh import DVH
from voxdose.report.plots import plot_dvhs
from voxdose.report import render
from voxdose.report.render import SERIAL_ENV, FigureRenderer


def _dvhs():
    rng = np.random.default_rng(3)
    out = []
    for name in ("kidney_left", "liver", "marrow"):
        out.append(DVH(name, 0.11, np.sort(rng.gamma(4.0, 1.5, 500))[::-1].copy()))
    return out


def _set_of_figures(path, n: int):
    """A figure function that writes a set of files into the folder ``path`` (and which
    process drew them, in pid.txt)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from voxdose.report.png import save_png

    path.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
        ax.plot(np.arange(10) ** (1 + i / 3))
        save_png(fig, path / f"f{i}.png")
        names.append(f"f{i}.png")
    (path / "pid.txt").write_text(str(os.getpid()))
    return [*names, "pid.txt"]


needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2,
                                     reason="the helper process is used from two cores on")


def _fresh_helper() -> None:
    """The next start makes a new helper (with this test's environment)."""
    render._stop_shared()
    render._SHARED[0] = None


@pytest.fixture()
def renderer(monkeypatch):
    """A started helper that can import this test module (tests/ on its PYTHONPATH)."""
    monkeypatch.delenv(SERIAL_ENV, raising=False)
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [here, *filter(None, [os.environ.get("PYTHONPATH")])]))
    _fresh_helper()
    r = FigureRenderer()
    r.start(parallel=True)
    yield r
    r.close()
    _fresh_helper()


@needs_two_cores
def test_helper_figures_are_the_figures_drawn_here(renderer, tmp_path):
    assert renderer.parallel
    dvhs = _dvhs()
    renderer.submit("dvh.png", plot_dvhs, dvhs, "title")
    renderer.submit("set", _set_of_figures, 3)
    there = tmp_path / "helper"
    here = tmp_path / "here"
    assert renderer.draw(there / "dvh.png", "dvh.png", plot_dvhs, dvhs, "title") is None
    assert renderer.draw(there / "set", "set", _set_of_figures, 3) == [
        "f0.png", "f1.png", "f2.png", "pid.txt"]
    assert int((there / "set" / "pid.txt").read_text()) == renderer._proc.pid  # drawn there
    plot_dvhs(here / "dvh.png", dvhs, "title")
    _set_of_figures(here / "set", 3)
    for rel in ("dvh.png", "set/f0.png", "set/f1.png", "set/f2.png"):
        assert (there / rel).read_bytes() == (here / rel).read_bytes(), rel
    # a figure never submitted is drawn by the helper when asked for
    assert renderer.draw(there / "late.png", "late.png", plot_dvhs, dvhs[:1], "t") is None
    assert (there / "late.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_two_cores
def test_a_figure_the_helper_cannot_draw_raises_its_own_error_here(renderer, tmp_path):
    # fails in the helper (no DVHs to draw), then here with its own error
    renderer.submit("bad.png", plot_dvhs, None, "t")
    with pytest.raises(TypeError):
        renderer.draw(tmp_path / "bad.png", "bad.png", plot_dvhs, None, "t")
    # arguments that do not pickle: drawn here
    calls = []

    def local(path):
        calls.append(path)
        path.write_bytes(b"x")

    renderer.submit("local.png", local)
    renderer.draw(tmp_path / "local.png", "local.png", local)
    assert calls == [tmp_path / "local.png"]
    # the helper is alive and draws the next figure
    assert renderer._proc.poll() is None and renderer.parallel
    assert renderer.draw(tmp_path / "set", "set", _set_of_figures, 1)[-1] == "pid.txt"
    assert int((tmp_path / "set" / "pid.txt").read_text()) == renderer._proc.pid


def _drawn_where(path, tag: str):
    path.mkdir(parents=True, exist_ok=True)
    (path / "pid.txt").write_text(f"{tag} {os.getpid()}")
    return ["pid.txt"]


@needs_two_cores
def test_a_function_the_helper_cannot_import_is_drawn_here_and_the_helper_lives_on(
        tmp_path, monkeypatch):
    monkeypatch.delenv(SERIAL_ENV, raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)   # this test module: not importable there
    _fresh_helper()
    r = FigureRenderer()
    r.start(parallel=True)
    r.submit("x", _drawn_where, "here")
    assert r.draw(tmp_path / "x", "x", _drawn_where, "here") == ["pid.txt"]
    assert (tmp_path / "x" / "pid.txt").read_text() == f"here {os.getpid()}"
    assert r._proc.poll() is None and r.parallel
    r.draw(tmp_path / "d.png", "d.png", plot_dvhs, _dvhs(), "t")
    assert (tmp_path / "d.png").is_file() and r._proc.poll() is None
    r.close()


@needs_two_cores
def test_a_dead_helper_leaves_every_later_figure_to_this_process(tmp_path, monkeypatch):
    """The helper killed (or gone after a job it could not import): the figure waiting
    for it and every later one are drawn here, none hangs."""
    monkeypatch.delenv(SERIAL_ENV, raising=False)
    _fresh_helper()
    r = FigureRenderer()
    r.start(parallel=True)
    r.submit("a.png", plot_dvhs, _dvhs(), "t")
    r._proc.kill()
    r.draw(tmp_path / "a.png", "a.png", plot_dvhs, _dvhs(), "t")
    assert (tmp_path / "a.png").is_file()
    for i in range(3):   # submitted after the death, or drawn without a submit
        if i == 1:
            r.submit(f"b{i}", _drawn_where, "late")
        assert r.draw(tmp_path / f"b{i}", f"b{i}", _drawn_where, "late") == ["pid.txt"]
        assert (tmp_path / f"b{i}" / "pid.txt").read_text() == f"late {os.getpid()}"
    assert not r.parallel
    r.close()


def test_serial_without_start_or_when_asked(monkeypatch, tmp_path):
    assert not FigureRenderer().parallel
    monkeypatch.setenv("VOXDOSE_SERIAL_FIGURES", "1")
    r = FigureRenderer()
    r.start(parallel=True)
    assert not r.parallel
    r.draw(tmp_path / "a.png", "a.png", plot_dvhs, _dvhs(), "t")
    assert (tmp_path / "a.png").is_file()
    r.close()


@needs_two_cores
def test_the_helper_does_not_run_the_callers_script_again(tmp_path, monkeypatch):
    """multiprocessing's spawn would import an unguarded script again in its child."""
    script = tmp_path / "unguarded.py"
    marker = tmp_path / "runs.txt"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from voxdose.report.plots import plot_dvhs
        from voxdose.report.render import FigureRenderer
        import numpy as np
        from voxdose.analysis.dvh import DVH
        with open({str(marker)!r}, "a") as f:
            f.write("run\\n")
        r = FigureRenderer()
        r.start(parallel=True)
        assert r.parallel
        d = [DVH("a", 0.1, np.linspace(1, 0, 50))]
        r.submit("x.png", plot_dvhs, d, "t")
        r.draw(Path({str(tmp_path)!r}) / "x.png", "x.png", plot_dvhs, d, "t")
        r.close()
    """))
    monkeypatch.delenv(SERIAL_ENV, raising=False)
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert marker.read_text() == "run\n"
    assert (tmp_path / "x.png").is_file()


@needs_two_cores
def test_one_helper_serves_every_run_of_a_process(tmp_path, monkeypatch):
    monkeypatch.delenv(SERIAL_ENV, raising=False)
    _fresh_helper()
    first, second = FigureRenderer(), FigureRenderer()
    first.start(parallel=True)
    pid = first._proc.pid
    first.draw(tmp_path / "a.png", "a.png", plot_dvhs, _dvhs(), "t")
    first.close()
    second.start(parallel=True)
    assert second._proc.pid == pid and second._proc.poll() is None
    second.draw(tmp_path / "b.png", "b.png", plot_dvhs, _dvhs(), "t")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    second.close()
