"""``voxdose pvc``: a corrected image with its report, and one-line refusals of bad input."""

import json
import re

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.core.grid import Grid, Image, LabelMap
from voxdose.io.sitk_adapter import read_image, sidecar_path, write_image, write_labels
from voxdose.pvc.spheres import sphere_phantom


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pvc_cli")
    ph = sphere_phantom((2.0, 20.0), spect_offset_mm=(1.0, 0.5, 1.5))
    write_image(d / "spect.nii.gz", Image(ph.image_bq_ml, ph.spect_grid,
                                          "activity concentration", "Bq/mL"), dtype=np.float64)
    write_labels(d / "labels.nii.gz", LabelMap(ph.labels, ph.label_grid, ph.names))
    write_labels(d / "body.nii.gz", LabelMap(ph.body_mask.astype(np.int32), ph.label_grid,
                                             {1: "body"}))
    (d / "names.json").write_text(json.dumps({str(k): v for k, v in ph.names.items()}))
    (d / "names_more.json").write_text(json.dumps(
        {**{str(k): v for k, v in ph.names.items()}, "9": "kidney_left"}))
    (d / "rc.csv").write_text("volume_ml,recovery\n1,0.27\n5,0.52\n20,0.68\n100,0.81\n")
    (d / "rc_bad.csv").write_text("volume_ml,recovery\n1,0.4\n5,0.3\n")
    small = Grid.from_spacing((10, 10, 10), (2.0, 2.0, 2.0), (1.0, 1.0, 1.0))
    write_labels(d / "labels_small.nii.gz", LabelMap(np.ones(small.shape, np.int32), small,
                                                     {1: "x"}))
    return d, ph


def _args(d, *extra):
    return ["pvc", str(d / "spect.nii.gz"), "--labels", str(d / "labels.nii.gz"), "--names",
            str(d / "names.json"), "--body", str(d / "body.nii.gz"), *extra]


def test_rbv_json_report_and_image(files, capsys, tmp_path):
    d, ph = files
    out = tmp_path / "spect_pvc.nii.gz"
    rc = main(_args(d, "--fwhm-mm", "10", "--method", "rbv", "--out", str(out), "--json"))
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["method"] == "rbv" and rep["grid"] == "label (CT) grid"
    assert rep["complete"] is True and rep["fwhm_mm_xyz"] == [10.0, 10.0, 10.0]
    means = {r["name"]: r["output_mean_bq_ml"] for r in rep["regions"]}
    for name in ("sphere_2ml", "sphere_20ml", "background"):
        assert means[name] == pytest.approx(ph.truth_bq_ml[name], rel=0.02)
    img = read_image(out)
    assert img.grid.same_as(ph.label_grid) and img.meta["unit"] == "Bq/mL"
    assert json.loads(sidecar_path(out).read_text())["pvc"]["condition_number"] > 1


def test_gtm_table_says_incomplete(files, capsys, tmp_path):
    d, _ = files
    out = tmp_path / "gtm.nii"
    args = _args(d, "--fwhm-mm", "10,10,10", "--method", "gtm", "--out", str(out))
    args[args.index("--names") + 1] = str(d / "names_more.json")
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "kidney_left" in text and "INCOMPLETE" in text and "GTM condition number" in text
    assert out.exists()


def test_rc_method_on_the_spect_grid(files, capsys, tmp_path):
    d, ph = files
    out = tmp_path / "rc.nii.gz"
    assert main(_args(d, "--method", "rc", "--rc-table", str(d / "rc.csv"), "--out", str(out),
                      "--json")) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["grid"] == "SPECT grid" and read_image(out).grid.same_as(ph.spect_grid)
    row = next(r for r in rep["regions"] if r["name"] == "sphere_20ml")
    assert row["recovery"] == pytest.approx(0.68, abs=1e-3)


@pytest.mark.parametrize("extra, pattern", [
    (["--method", "gtm"], r"--method gtm needs the SPECT resolution"),
    (["--method", "rbv", "--fwhm-mm", "0"], r"--fwhm-mm must be > 0 mm"),
    (["--method", "iy", "--fwhm-mm", "80"], r"not a SPECT resolution"),
    (["--method", "gtm", "--fwhm-mm", "0.1"], r"below a fifth of the SPECT voxel"),
    (["--method", "rc", "--rc-table", "RC_BAD"], r"rc_bad.csv: recovery is not monotone"),
    (["--method", "rc"], r"recovery table"),
    (["--method", "gtm", "--fwhm-mm", "10", "--labels", "SMALL"],
     r"does not cover the SPECT field"),
    (["--method", "magic", "--fwhm-mm", "10"], r"choose one of none, rc, gtm, rbv, iy"),
])
def test_bad_input_refused_in_one_line(files, capsys, tmp_path, extra, pattern):
    d, _ = files
    out = tmp_path / "never.nii.gz"
    extra = [str(d / "rc_bad.csv") if e == "RC_BAD" else str(d / "labels_small.nii.gz")
             if e == "SMALL" else e for e in extra]
    args = _args(d) + ["--out", str(out)]
    if "--labels" in extra:
        i = extra.index("--labels")
        args[args.index("--labels") + 1] = extra[i + 1]
        args[args.index("--body"):args.index("--body") + 2] = []
        extra = extra[:i] + extra[i + 2:]
    rc = main(args + extra)
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert rc == 2 and cap.out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("voxdose: error:")
    assert re.search(pattern, err), err
    assert not out.exists() and not sidecar_path(out).exists()
