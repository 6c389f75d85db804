"""Structure names: one reader and one set of rules for every command and the study file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from voxdose.analysis.dvh import dvh_csv, dvh_from_mask, empty_structure_warnings
from voxdose.cli.app import main
from voxdose.core.errors import InputError, StudyError
from voxdose.core.grid import Grid, Image, LabelMap
from voxdose.io.names import check_labels_named, read_names_json
from voxdose.io.sitk_adapter import write_image, write_labels


@pytest.mark.parametrize(("text", "pattern"), [
    ('{"1": "liver", "2": "liver"}', r"'liver' is given to labels \[1, 2\]"),
    ('{"1": "liver", "1": "spleen"}', r"label value 1 is given twice"),
    ('{"-3": "lesion"}', r"label value -3 is not allowed"),
    ('{"0": "air"}', r"label value 0 is not allowed"),
    ('{"x": "liver"}', r"not an integer label value"),
    ('{"4": ""}', r"label 4 has no name"),
    ('[1, 2]', r"must be a non-empty JSON object"),
    ('{}', r"must be a non-empty JSON object"),
])
def test_names_file_rules(tmp_path, text, pattern):
    p = tmp_path / "names.json"
    p.write_text(text)
    with pytest.raises(InputError, match=pattern):
        read_names_json(p)
    with pytest.raises(StudyError, match=pattern):  # the study loader's kind of error
        read_names_json(p, error=StudyError)


def test_labels_must_be_named_and_non_negative():
    data = np.array([[[0, 1, 2]]])
    check_labels_named(data, {1: "a", 2: "b"}, "lab.nii.gz")
    with pytest.raises(InputError, match=r"lab\.nii\.gz: label values \[2\] have no name"):
        check_labels_named(data, {1: "a"}, "lab.nii.gz")
    with pytest.raises(InputError, match="negative label values"):
        check_labels_named(-data, {1: "a", 2: "b"}, "lab.nii.gz")


def test_empty_structure_is_blank_not_zero_gy():
    d = np.ones((2, 2, 2))
    h = dvh_from_mask("gone", d, np.zeros_like(d, dtype=bool), 0.1)
    row = dvh_csv([h]).splitlines()[1]
    assert row == "gone,0,,,,,,"
    assert "no voxel" in empty_structure_warnings([h])[0]


def test_dvh_command_refuses_unnamed_labels(tmp_path, capsys):
    g = Grid.from_spacing((2, 2, 2), (4.0, 4.0, 4.0))
    dose = tmp_path / "dose.nii.gz"
    write_image(dose, Image(np.ones(g.shape), g, "absorbed dose", "Gy"), dtype=np.float32)
    lab = np.zeros(g.shape, dtype=np.int32)
    lab[0] = 1
    lab[1, 0] = 7
    labels = tmp_path / "lab.nii.gz"
    write_labels(labels, LabelMap(lab, g, {1: "a", 7: "b"}))
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "a"}))
    out = tmp_path / "out" / "dvh.csv"
    rc = main(["dvh", str(dose), str(labels), "--names", str(names), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "[7] have no name" in err
    assert not out.exists()


def test_study_with_a_name_used_twice_is_refused(small_study, tmp_path, capsys):
    dst = tmp_path / "study"
    shutil.copytree(small_study.parent, dst)
    names_file = dst / "structure_names.json"
    names = json.loads(names_file.read_text())
    first, second = list(names)[1:3]
    names[second] = names[first]
    names_file.write_text(json.dumps(names))
    rc = main(["run", str(dst / "study.toml"), "--out", str(tmp_path / "r"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"'{names[first]}' is given to labels" in err
    assert not (tmp_path / "r").exists()


def test_rtdose_refuses_a_tia_map(tmp_path, capsys):
    """A TIA map (sidecar unit Bq*s) must not be written as GY (1.4e11 Gy seen)."""
    g = Grid.from_spacing((2, 2, 2), (4.0, 4.0, 4.0))
    tia = tmp_path / "tia.nii.gz"
    write_image(tia, Image(np.full(g.shape, 1e9), g, "time-integrated activity",
                           "Bq*s per voxel (decays)"), dtype=np.float32)
    out = tmp_path / "rd.dcm"
    rc = main(["rtdose", str(tia), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not Gy" in err and "tia.nii.gz" in err
    assert not out.exists()


def test_labels_changed_after_loading_are_checked_again(small_study, tmp_path):
    """The loader checks the label values once and records the file's size and mtime; the
    pipeline's read skips a second check only while the file is unchanged."""
    import os

    from voxdose.io.sitk_adapter import read_labels
    from voxdose.study.images import read_study_labels
    from voxdose.study.load import load_study

    dst = tmp_path / "study"
    shutil.copytree(small_study.parent, dst)
    study = load_study(dst / "study.toml")
    assert study.info["labels_checked"]["file"] == str(study.labels)
    assert read_study_labels(study).data.max() > 0  # unchanged: read, not checked again
    lab = read_labels(study.labels, study.names)
    data = lab.data.copy()
    data[0, 0, 0] = 99  # a value without a name
    write_labels(study.labels, LabelMap(data, lab.grid, study.names))
    st = os.stat(study.labels)
    os.utime(study.labels, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(StudyError, match="99"):
        read_study_labels(study)
