"""`voxdose dvh` on files: contract CSV, JSON, plot; labels on another grid counted by their
fractions; bad names are errors."""

import csv
import json

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.io.sitk_adapter import read_image, write_image


@pytest.fixture()
def dose_file(small_study, tmp_path):
    st = small_study.parent
    tia = read_image(st / "truth" / "tia_true_bq_s.nii.gz")
    img = tia.with_data(tia.data * 1e-12, quantity="absorbed dose", unit="Gy", meta={})
    return write_image(tmp_path / "dose.nii.gz", img, dtype=np.float64)


def test_dvh_cli_writes_contract_csv_json_plot(small_study, dose_file, tmp_path, capsys):
    st = small_study.parent
    out, js, png = tmp_path / "o" / "dvh.csv", tmp_path / "o" / "dvh.json", tmp_path / "d.png"
    rc = main(["dvh", str(dose_file), str(st / "truth" / "labels_spect.nii.gz"), "--names",
               str(st / "structure_names.json"), "--out", str(out), "--json", str(js),
               "--plot", str(png)])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["name", "volume_ml", "mean_gy", "min_gy", "max_gy", "d2_gy",
                             "d50_gy", "d98_gy"]
    names = json.loads((st / "structure_names.json").read_text())
    assert [r["name"] for r in rows] == [names[k] for k in sorted(names, key=int)]
    kid = next(r for r in rows if r["name"] == "kidney_left")
    assert float(kid["min_gy"]) <= float(kid["d98_gy"]) <= float(kid["d50_gy"]) \
        <= float(kid["d2_gy"]) <= float(kid["max_gy"])
    doc = json.loads(js.read_text())
    assert {s["name"] for s in doc["structures"]} == set(names.values())
    assert png.stat().st_size > 1000
    assert "kidney_left" in capsys.readouterr().out
    # without --names: label_<value>
    rc = main(["dvh", str(dose_file), str(st / "truth" / "labels_spect.nii.gz"),
               "--out", str(out)])
    assert rc == 0
    assert next(csv.DictReader(out.open()))["name"] == "label_1"


def test_dvh_cli_labels_on_the_ct_grid_keep_their_volumes(small_study, dose_file, tmp_path,
                                                          capsys):
    """labels.nii.gz is on the CT grid, the dose on the SPECT grid: each SPECT voxel counts
    with its fraction, so every volume is the CT-grid volume (the vote's is not)."""
    from voxdose.io.sitk_adapter import read_labels

    st = small_study.parent
    out, js = tmp_path / "dvh.csv", tmp_path / "dvh.json"
    names = json.loads((st / "structure_names.json").read_text())
    rc = main(["dvh", str(dose_file), str(st / "labels.nii.gz"), "--names",
               str(st / "structure_names.json"), "--out", str(out), "--json", str(js)])
    assert rc == 0, capsys.readouterr().err
    ct = read_labels(st / "labels.nii.gz", {int(k): v for k, v in names.items()})
    vote = read_labels(st / "truth" / "labels_spect.nii.gz", {})
    doc = json.loads(js.read_text())
    assert doc["voxel_weights"] == ["fractional occupancy from the label grid: separable box "
                                    "overlap (exact)"]
    worst_vote = 0.0
    for s in doc["structures"]:
        value = next(int(k) for k, v in names.items() if v == s["name"])
        v_ct = float(np.count_nonzero(ct.data == value)) * ct.grid.voxel_volume_ml
        assert s["volume_ml"] == pytest.approx(v_ct, rel=1e-4), s["name"]
        assert s["label_grid_volume_ml"] == pytest.approx(v_ct, rel=1e-12)
        v_vote = float(np.count_nonzero(vote.data == value)) * vote.grid.voxel_volume_ml
        worst_vote = max(worst_vote, abs(v_vote / v_ct - 1))
    assert worst_vote > 0.02  # the majority vote is off: the test can tell them apart


def test_dvh_cli_bad_names(small_study, dose_file, tmp_path, capsys):
    st = small_study.parent
    out = tmp_path / "dvh.csv"
    bad = tmp_path / "names.json"
    bad.write_text("not json")
    rc = main(["dvh", str(dose_file), str(st / "truth" / "labels_spect.nii.gz"), "--names",
               str(bad), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 2 and "JSON object" in cap.err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dvh")]
