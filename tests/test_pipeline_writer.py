"""Issue 11: the results writer records every file it writes (provenance ``outputs``), the
stale results of an earlier run are removed, and the stage runner times every stage."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager

import numpy as np
import pytest

from voxdose.core.grid import Grid, Image
from voxdose.imaging.registration import identity_registration
from voxdose.pipeline.context import PipelineContext
from voxdose.pipeline.run import _previous_outputs, _remove_stale
from voxdose.pipeline.stages import Stage, run_stages
from voxdose.pipeline.writer import ResultsWriter

TIMING_KEYS = ["validate", "register_resample", "tia_fit", "kernel", "dose", "analysis",
               "write", "total"]


def _files_under(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _image(value=1.0) -> Image:
    grid = Grid.from_spacing((2, 3, 4), (2.0, 2.0, 2.0))
    return Image(np.full(grid.shape, value), grid, "dose", "Gy")


# -- (a) the small demo: outputs == the folder --------------------------------------------

def test_demo_outputs_list_every_file_and_only_those(small_results):
    out = small_results.out_dir
    listed = small_results.provenance["outputs"]
    on_disk = _files_under(out)
    assert len(listed) == len(set(listed))
    assert on_disk - set(listed) == set(), "written but not listed"
    assert set(listed) - on_disk == set(), "listed but not written"
    assert json.loads((out / "provenance.json").read_text())["outputs"] == listed
    assert small_results.files == listed
    assert listed[-2:] == ["provenance.json", "report.html"]
    for name in listed:  # every image's sidecar, the TAC figures and the transforms
        if name.endswith(".nii.gz"):
            assert name[: -len(".nii.gz")] + ".json" in listed, name
    assert any(n.startswith("tac/tac_") for n in listed)
    assert any(n.startswith("registration/") and n.endswith(".tfm") for n in listed)
    assert list(small_results.timings_s) == TIMING_KEYS
    assert small_results.provenance["timings_s"] is small_results.timings_s


# -- (b) the writer on its own -------------------------------------------------------------

def _two_pngs(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"png")
    return list(names)


def test_writer_records_each_file_it_writes(tmp_path):
    w = ResultsWriter(tmp_path)
    w.image("dose.nii.gz", _image(), sidecar={"nuclide": "Lu-177"})
    w.text("table.csv", "a,b\n1,2\n")
    w.json("sub/data.json", {"x": 1})
    w.figure("one.png", lambda p, text: p.write_text(text), "not a real png")
    w.figure("set", _two_pngs, ["a.png", "b.png"])
    w.transform("registration/tp0.tfm", identity_registration())
    w.rtdose("dose_rtdose.dcm", _image(2.0))
    expected = ["dose.nii.gz", "dose.json", "table.csv", "sub/data.json", "one.png",
                "set/a.png", "set/b.png", "registration/tp0.tfm", "dose_rtdose.dcm"]
    assert w.files == expected
    assert _files_under(tmp_path) == set(expected)
    assert json.loads((tmp_path / "dose.json").read_text())["nuclide"] == "Lu-177"
    w.text("table.csv", "rewritten\n")  # a name is listed once
    assert w.files == expected


def test_writer_refuses_paths_outside_and_files_not_written(tmp_path):
    w = ResultsWriter(tmp_path / "results")
    for bad in ("../escape.txt", str(tmp_path / "abs.txt"), ""):
        with pytest.raises(ValueError):
            w.text(bad, "x")
    with pytest.raises(FileNotFoundError):
        w.figure("missing.png", lambda p: None)  # a plot function that wrote nothing
    with pytest.raises(FileNotFoundError):
        w.figure("tac", lambda p: ["tac_liver.png"])  # names a file it did not write
    assert w.files == []


def test_writer_finish_lists_provenance_and_report(tmp_path):
    w = ResultsWriter(tmp_path)
    w.text("dvh.csv", "name\n")
    prov = w.finish({"device": "cpu", "timings_s": {"total": 1.0}})
    assert prov["outputs"] == ["dvh.csv", "provenance.json", "report.html"] == w.files
    assert json.loads((tmp_path / "provenance.json").read_text()) == prov
    assert _files_under(tmp_path) == set(w.files)


# -- (c) a rerun removes what it no longer writes -------------------------------------------

def test_rerun_removes_results_no_longer_written(small_results, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(small_results.out_dir, out)
    (out / "my_notes.txt").write_text("keep me")
    previous = _previous_outputs(out)
    assert previous == set(small_results.files)
    gone = {"plan.json", "dose_y90_kernel_gy.nii.gz", "dose_y90_kernel_gy.json",
            "dvh_y90.csv", "tac/tac_liver.png"}
    current = [f for f in small_results.files if f not in gone]
    removed = _remove_stale(out, previous, current)
    assert set(removed) == gone
    assert _files_under(out) == set(current) | {"my_notes.txt"}


def test_old_provenance_listing_only_images_still_removes_their_sidecars(tmp_path):
    """Provenance files written before issue 11 list the .nii.gz but not its sidecar; a
    sidecar name this run writes itself (here dvh.json) is never removed."""
    w = ResultsWriter(tmp_path)
    w.image("dose_y90_kernel_gy.nii.gz", _image())
    w.image("dvh.nii.gz", _image())
    w.text("plan.json", "{}")
    w.json("provenance.json", {"outputs": ["dose_y90_kernel_gy.nii.gz", "dvh.nii.gz",
                                           "plan.json", "../outside.txt", "/etc/hostname",
                                           "provenance.json"]})
    (tmp_path / "dvh.json").write_text("{}")  # written by the new run
    previous = _previous_outputs(tmp_path)
    assert "../outside.txt" not in previous and "/etc/hostname" not in previous
    _remove_stale(tmp_path, previous, ["dvh.json", "provenance.json"])
    assert _files_under(tmp_path) == {"dvh.json", "provenance.json"}


def test_unreadable_previous_provenance_means_nothing_to_remove(tmp_path):
    assert _previous_outputs(tmp_path) == set()
    (tmp_path / "provenance.json").write_text("not json")
    assert _previous_outputs(tmp_path) == set()
    (tmp_path / "provenance.json").write_text('["a list"]')
    assert _previous_outputs(tmp_path) == set()


# -- the stage runner --------------------------------------------------------------------

class _RecordingReporter:
    def __init__(self):
        self.stages = []

    @contextmanager
    def stage(self, name, total=1):
        calls = []
        self.stages.append((name, total, calls))
        yield lambda done=None, tot=None: calls.append((done, tot))


def test_runner_times_every_stage_and_opens_its_reporter_stage(tmp_path):
    ctx = PipelineContext("study.toml", tmp_path)
    seen = {}

    def first(c):
        c.series = "series"
        c.advance(1, 1)

    def second(c):
        c.advance(1, 2)
        c.advance(2, 2)

    stages = [Stage("first", "first stage", first),
              Stage("skipped", "never shown", first, when=lambda c: False),
              Stage("second", lambda c: f"second after {c.series}", second, steps=lambda c: 2,
                    finish=lambda c: seen.update(c.timings))]
    rep = _RecordingReporter()
    run_stages(ctx, stages, rep)
    assert [(n, t) for n, t, _ in rep.stages] == [("first stage", 1),
                                                    ("second after series", 2)]
    assert rep.stages[1][2] == [(1, 2), (2, 2)]
    assert list(ctx.timings) == ["first", "second", "total"]
    assert seen == ctx.timings  # finish sees its own stage's time
    assert ctx.timings["total"] >= ctx.timings["first"] + ctx.timings["second"]


def test_writer_never_writes_a_non_finite_result(tmp_path):
    import numpy as np
    import pytest

    from voxdose.core.errors import VoxdoseError
    from voxdose.core.grid import Grid, Image
    from voxdose.pipeline.writer import ResultsWriter

    g = Grid.from_spacing((2, 2, 2), (1.0, 1.0, 1.0))
    w = ResultsWriter(tmp_path)
    bad = np.ones(g.shape)
    bad[0, 0, 0] = np.nan
    with pytest.raises(VoxdoseError, match="non-finite"):
        w.image("dose.nii.gz", Image(bad, g, "absorbed dose", "Gy"))
    with pytest.raises(VoxdoseError, match="float32"):
        w.image("dose.nii.gz", Image(np.full(g.shape, 1e39), g, "absorbed dose", "Gy"),
                dtype=np.float32)
    assert not list(tmp_path.iterdir())
