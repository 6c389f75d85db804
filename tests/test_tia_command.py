"""`voxdose tia` through :class:`voxdose.kinetics.tia_job.TiaJob`: the single-time-point path
honours --after-h, --model-out and --status-out (closed form), the fitted path is unchanged,
bad options are refused before any work (exit 2, one line, nothing written), and a failure
while writing leaves no partial set."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image
from voxdose.core.nuclide import load_nuclide
from voxdose.io.sitk_adapter import read_image, write_image
from voxdose.kinetics import tia_job
from voxdose.kinetics.models import MODEL_IDS

LAM_PHYS_S = load_nuclide("Lu-177").decay_constant_per_s
GRID = Grid.from_spacing((2, 3, 4), (4.0, 4.0, 4.0))
VML = GRID.voxel_volume_ml


def _frames(folder, values) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, v in enumerate(values):
        p = folder / f"f{i}.nii.gz"
        write_image(p, Image(np.asarray(v, dtype=np.float64), GRID, "activity concentration",
                             "Bq/mL"), dtype=np.float64)
        paths.append(str(p))
    return paths


def _pattern(shape, scale):
    return scale * (1.0 + np.arange(np.prod(shape)).reshape(shape))


@pytest.mark.parametrize("after_h", [None, 24.0, 336.0])
def test_single_time_point_after_h_and_code_maps(tmp_path, capsys, after_h):
    t1_h, t_eff_h = 96.0, 40.0
    a1 = _pattern(GRID.shape, 50.0)  # Bq/mL at t1
    paths = _frames(tmp_path / "in", [a1])
    out = tmp_path / "res" / "tia.nii.gz"
    args = ["tia", *paths, "--times-h", "96", "--nuclide", "Lu-177", "--out", str(out),
            "--stp-half-life-h", "40", "--model-out", str(tmp_path / "res" / "model.nii.gz"),
            "--status-out", str(tmp_path / "res" / "status.nii.gz"),
            "--sigma-out", str(tmp_path / "res" / "sigma.nii.gz"), "--frame-noise", "0.1"]
    if after_h is not None:
        args += ["--after-h", str(after_h)]
    rc = main(args)
    assert rc == 0, capsys.readouterr().err
    lam = math.log(2) / (t_eff_h * 3600)
    t0_s = (after_h or 0.0) * 3600
    expected = a1 * math.exp(lam * t1_h * 3600) * math.exp(-lam * t0_s) / lam * VML
    tia = read_image(out)
    np.testing.assert_allclose(tia.data, expected, rtol=1e-6)  # float32 file
    assert tia.meta["model"] == "stp" and tia.meta["assumed_effective_half_life_h"] == 40.0
    assert tia.meta.get("integrated_from_h") == after_h
    np.testing.assert_allclose(read_image(tmp_path / "res" / "sigma.nii.gz").data,
                               0.1 * expected, rtol=1e-6)
    model = read_image(tmp_path / "res" / "model.nii.gz")
    status = read_image(tmp_path / "res" / "status.nii.gz")
    assert np.all(model.data == MODEL_IDS["stp"]) and model.meta["codes"]["5"] == "stp"
    assert np.all(status.data == tia_job.STP_STATUS)
    assert "single time point" in status.meta["codes"][str(tia_job.STP_STATUS)]
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == sorted(
        f"{n}{e}" for n in ("tia", "sigma", "model", "status") for e in (".nii.gz", ".json"))


def test_multi_frame_noiseless_mono_integrates_to_a0_over_lambda(tmp_path, capsys):
    t_h = [2.0, 6.0, 24.0, 72.0, 144.0]
    lam = LAM_PHYS_S + math.log(2) / (60 * 3600)  # effective: physical + 60 h biological
    a0 = _pattern(GRID.shape, 300.0)
    paths = _frames(tmp_path / "in", [a0 * math.exp(-lam * t * 3600) for t in t_h])
    out = tmp_path / "tia.nii.gz"
    rc = main(["tia", *paths, "--times-h", ",".join(f"{t:g}" for t in t_h),
               "--nuclide", "Lu-177", "--out", str(out), "--model", "mono",
               "--model-out", str(tmp_path / "m.nii.gz"),
               "--status-out", str(tmp_path / "s.nii.gz"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    np.testing.assert_allclose(read_image(out).data, a0 / lam * VML, rtol=1e-6)
    assert np.all(read_image(tmp_path / "m.nii.gz").data == MODEL_IDS["mono"])
    assert np.all(read_image(tmp_path / "s.nii.gz").data == 0)  # converged, off the bound


@pytest.mark.parametrize("extra, pattern", [
    (["--frame-noise", "-0.1"], r"--frame-noise must be a finite number >= 0"),
    (["--after-h", "-2"], r"--after-h must be a finite number >= 0 h"),
    (["--stp-half-life-h", "0"], r"needs --stp-half-life-h .*> 0"),
    (["--stp-half-life-h", "40", "--model", "mono"], r"--model mono: one frame"),
    (["--stp-half-life-h", "40", "--background-fraction", "1.5"], r"must be < 1"),
    (["--stp-half-life-h", "40", "--sigma-out", "{out}"], r"would write the same file"),
    (["--stp-half-life-h", "40", "--model-out", "{dir}/m.txt"], r"--model-out .*\.nii\.gz"),
    (["--stp-half-life-h", "40", "--device", "tpu"], r"--device tpu: choose one of"),
])
def test_bad_options_refused_before_any_work(tmp_path, capsys, extra, pattern):
    paths = _frames(tmp_path / "in", [_pattern(GRID.shape, 10.0)])
    res = tmp_path / "res"
    out = res / "tia.nii.gz"
    extra = [e.format(out=out, dir=res) for e in extra]
    rc = main(["tia", *paths, "--times-h", "96", "--nuclide", "Lu-177", "--out", str(out),
               *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert not res.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_failure_while_writing_leaves_no_partial_set(tmp_path, capsys, monkeypatch):
    import voxdose.io.sitk_adapter as sitk_adapter

    real, calls = sitk_adapter.write_image, []

    def failing(path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise InputError(f"{path}: disk full (simulated)")
        return real(path, *a, **k)

    paths = _frames(tmp_path / "in", [_pattern(GRID.shape, 10.0)])
    monkeypatch.setattr(sitk_adapter, "write_image", failing)
    res = tmp_path / "res"
    rc = main(["tia", *paths, "--times-h", "96", "--nuclide", "Lu-177", "--stp-half-life-h",
               "40", "--out", str(res / "tia.nii.gz"), "--sigma-out", str(res / "s.nii.gz"),
               "--model-out", str(tmp_path / "other" / "m.nii.gz")])
    assert rc == 2 and "disk full" in capsys.readouterr().err
    assert len(calls) == 3
    assert not res.exists() and not (tmp_path / "other").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_acquisition_span_rule_as_in_run(tmp_path, capsys):
    """Lu-178m (23.1 min) against frames out to 168 h: 436 half-lives, refused as `run` does
    (it gave 56 % failed fits), before any frame is fitted."""
    t_h = [1.0, 4.0, 24.0, 48.0, 168.0]
    paths = _frames(tmp_path / "in", [_pattern(GRID.shape, 10.0 / (1 + t)) for t in t_h])
    out = tmp_path / "res" / "tia.nii.gz"
    rc = main(["tia", *paths, "--times-h", ",".join(f"{t:g}" for t in t_h),
               "--nuclide", "Lu-178m", "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert re.search(r"--times-h: the last time point, 168 h, is 43\d Lu-178m half-lives", err)
    assert not out.parent.exists()
