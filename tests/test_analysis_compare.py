"""Nuclide comparison: cross-fire fractions, shells, r90, and the `compare` command."""

import json

import numpy as np
import pytest

from voxdose.analysis.compare import compare_nuclides, r90_mm, shell_masks
from voxdose.cli.app import main
from voxdose.kernels.point import point_kernel_for
from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image, LabelMap
from voxdose.io.sitk_adapter import write_image, write_labels


def _phantom(background=0.0):
    """A 3-voxel-radius hot sphere ('lesion') in a 'body' on a 15^3 grid of 4 mm voxels."""
    g = Grid.from_spacing((15, 15, 15), (4.0, 4.0, 4.0))
    iz, iy, ix = np.indices(g.shape) - 7
    lesion = iz**2 + iy**2 + ix**2 <= 9
    lab = np.where(lesion, 2, 1).astype(np.int32)
    tia = np.where(lesion, 1e10, background)
    return Image(tia, g), LabelMap(lab, g, {1: "body", 2: "lesion"})


def test_cross_fire_zero_without_outside_activity_and_grows_with_range():
    tia, lab = _phantom(background=0.0)
    res = {r.nuclide: r for r in compare_nuclides(tia, ["Lu-177", "Y-90"], lab,
                                                  kernel_radius_mm=30.0)}
    assert res["Lu-177"].cross_fire_fraction["lesion"] == pytest.approx(0.0, abs=1e-9)
    assert res["Lu-177"].cross_fire_fraction["body"] == pytest.approx(1.0, abs=1e-9)
    tia_b, _ = _phantom(background=1e9)
    res_b = {r.nuclide: r for r in compare_nuclides(tia_b, ["Lu-177", "Y-90"], lab,
                                                    kernel_radius_mm=30.0)}
    lu, y = res_b["Lu-177"].cross_fire_fraction["lesion"], res_b["Y-90"].cross_fire_fraction[
        "lesion"]
    assert 0 < lu < y < 1            # longer electron range: more dose from outside
    # shells on 4 mm voxels: no voxel centre within 1 mm of the surface (face neighbours are
    # at 4 - 2 = 2 mm): reported empty; the first ring is hotter than the body on average
    shells = {s["shell"]: s for s in res_b["Y-90"].shells["lesion"]}
    assert shells["0-1 mm"]["n_voxels"] == 0 and shells["0-1 mm"]["mean_gy"] is None
    ring = shells["first voxel ring"]["mean_gy"]
    body = next(h for h in res_b["Y-90"].dvhs if h.name == "body").mean_gy
    assert ring > body


def test_shell_masks_distances():
    m = np.zeros((9, 9, 9), bool)
    m[4, 4, 4] = True
    shells = dict(shell_masks(m, (1.0, 1.0, 1.0), (1.0, 2.0, 5.0)))
    # face (1 - 0.5 = 0.5 mm) and edge (1.41 - 0.5 = 0.91 mm) neighbours; corners: 1.23 mm
    assert shells["0-1 mm"].sum() == 18 and shells["1-2 mm"].sum() >= 8
    assert shells["first voxel ring"].sum() == 6
    assert not np.any(shells["0-1 mm"] & shells["1-2 mm"])


def test_r90_ordering():
    lu, y = r90_mm(point_kernel_for("Lu-177")), r90_mm(point_kernel_for("Y-90"))
    assert 0.1 < lu < 2.0 and 3.0 < y < 8.0          # sub-mm vs several mm
    with pytest.raises(InputError):
        compare_nuclides(_phantom()[0], [], None)


def test_compare_cli(tmp_path, capsys):
    tia, lab = _phantom(background=1e8)
    write_image(tmp_path / "tia.nii.gz", tia, dtype=np.float64)
    write_labels(tmp_path / "lab.nii.gz", lab)
    (tmp_path / "names.json").write_text('{"1": "body", "2": "lesion"}')
    out = tmp_path / "cmp"
    rc = main(["compare", str(tmp_path / "tia.nii.gz"), "--nuclides", "177Lu,90Y", "--labels",
               str(tmp_path / "lab.nii.gz"), "--names", str(tmp_path / "names.json"),
               "--out", str(out), "--kernel-radius-mm", "30"])
    assert rc == 0, capsys.readouterr().err
    files = {p.name for p in out.iterdir()}
    assert {"dose_lu177_gy.nii.gz", "dose_y90_gy.nii.gz", "dvh_lu177.csv", "dvh_y90.csv",
            "dvh_compare.png", "dpk.png", "compare.json"} <= files
    doc = json.loads((out / "compare.json").read_text())
    assert [n["nuclide"] for n in doc["nuclides"]] == ["Lu-177", "Y-90"]
    assert "same TIA" in doc["assumption"]
    rc = main(["compare", str(tmp_path / "tia.nii.gz"), "--nuclides", "Xx-1", "--out",
               str(tmp_path / "bad")])
    assert rc == 2 and not (tmp_path / "bad").exists()


def test_cross_fire_by_the_structures_box_equals_the_whole_grid_convolution(monkeypatch):
    """The self-dose of each structure from FFTs of its own box (the fast path) equals the
    engine's whole-grid convolution of the masked TIA."""
    import voxdose.dose.convolution as conv
    g = Grid.from_spacing((26, 22, 24), (4.0, 4.0, 4.0))
    iz, iy, ix = np.indices(g.shape)
    lab = np.ones(g.shape, dtype=np.int32)
    lab[(iz - 8) ** 2 + (iy - 10) ** 2 + (ix - 7) ** 2 <= 9] = 2
    lab[15:19, 4:9, 14:21] = 3
    tia = np.random.default_rng(2).uniform(1e8, 3e8, g.shape) * np.where(lab > 1, 20.0, 1.0)
    labels = LabelMap(lab, g, {1: "body", 2: "lesion", 3: "node"})
    used = []
    real = conv.convolve_in_box
    monkeypatch.setattr(conv, "convolve_in_box", lambda *a, **k: used.append(1) or real(*a, **k))
    fast = compare_nuclides(Image(tia, g), ["Lu-177", "Y-90"], labels, kernel_radius_mm=40.0)
    assert len(used) == 4  # lesion and node, two nuclides; the body takes the whole grid
    monkeypatch.setattr(conv, "box_convolution_is_cheaper", lambda *a, **k: False)
    whole = compare_nuclides(Image(tia, g), ["Lu-177", "Y-90"], labels, kernel_radius_mm=40.0)
    for f, w in zip(fast, whole):
        for name in ("lesion", "node", "body"):
            assert f.cross_fire_fraction[name] == pytest.approx(w.cross_fire_fraction[name],
                                                                rel=1e-9, abs=1e-12)
    assert 0 < fast[0].cross_fire_fraction["lesion"] < fast[1].cross_fire_fraction["lesion"]
