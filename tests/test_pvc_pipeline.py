"""The partial-volume correction inside ``voxdose run`` (issue 16), on the small demo study
(4.8 mm CT, 9.6 mm SPECT, 10 mm FWHM), against the phantom's truth.

The numbers come from ``scripts/validate_pvc_demo.py`` (the same functions; the demo-size
table is in docs/validation.md). Tolerances are those the small study achieves, which is
coarser than the demo: its 9.6 mm SPECT voxels are about the FWHM.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from voxdose.core.errors import StudyError
from voxdose.study.load import load_study

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "validate_pvc_demo.py"


def _script():
    spec = importlib.util.spec_from_file_location("validate_pvc_demo", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def vpd():
    return _script()


@pytest.fixture(scope="module")
def fitted(vpd, small_study):
    """The small study registered and fitted once (CPU); the variants start from here."""
    return vpd.fitted_context(small_study)


@pytest.fixture(scope="module")
def validation(vpd, small_study, fitted):
    return vpd.validate(small_study, "rbv", (1.0, 0.9, 1.1), fitted=fitted)


def _copy(small_study, tmp_path, extra: str = "", drop=()) -> Path:
    dst = tmp_path / "study"
    shutil.copytree(small_study.parent, dst)
    toml = dst / "study.toml"
    text = toml.read_text()
    for old, new in drop:
        assert old in text
        text = text.replace(old, new)
    toml.write_text(text + extra)
    return toml


# ---- the corrected doses against the truth --------------------------------------------

def test_corrected_doses_meet_the_truth_on_the_label_grid(validation, vpd):
    """RBV on the TIA map, dose on the label (CT) grid, against the true TIA on the CT grid
    convolved with the same kernel (averaged over the true structures). Small study,
    measured: organs -3.9 % to +0.4 % (bone -8.6 %: a shell of 1-2 CT voxels at 4.8 mm),
    marrow L2-L4 -4.1 / +0.7 / +1.1 %, lesions (4-14 mL) -8.6 / -5.1 / +1.8 %; without the
    correction kidneys -21 / -23 %, marrow -26 to -32 %, lesions -39 to -64 %. (The demo
    size meets the issue's 5 % / 10 %, bone included: docs/validation.md.)"""
    err = vpd.relative_errors(validation)
    assert validation["grid"].startswith("label grid") and validation["complete"]
    for name, e in err.items():
        tol = 12.0 if name == "bone" else vpd.held_to(name, validation["volume_ml"][name])
        assert tol is not None, name
        assert abs(e["pvc1_vs_ct"]) < tol, (name, e["pvc1_vs_ct"])
    for name in ("kidney_left", "kidney_right", "spleen", "marrow_L2", "marrow_L3",
                 "marrow_L4", "lesion_liver", "lesion_node", "lesion_lung"):
        assert err[name]["nopvc_vs_ct"] < -15.0, name          # spill-out without it
        assert abs(err[name]["pvc1_vs_ct"]) < abs(err[name]["nopvc_vs_ct"]) / 2, name


def test_uncorrected_doses_are_the_spect_grid_pipeline(validation, small_results):
    """The uncorrected results kept beside the corrected ones are those of a run with the
    correction off (same SPECT-grid dose, same DVH means)."""
    off = {h.name: h.mean_gy for h in small_results.dvhs["kernel"]}
    # two separate runs, the same to the bit since registration runs ITK on one thread
    # (before, ITK's multithreaded metric moved transforms by ~1e-12 mm, which flipped some
    # voxels' fit model: bone up to 1.3e-4 apart in 2 of 3 runs, a CI failure at 1.5e-6)
    for name, d in validation["nopvc_gy"].items():
        assert d == pytest.approx(off[name], rel=1e-12), name


def test_misstated_fwhm_biases_small_structures_most(validation, vpd):
    """A FWHM declared 10 % too small under-corrects, 10 % too large over-corrects; the
    smaller the structure, the larger the bias. Small study, from -10 % to +10 %: liver
    +0.5 points, kidney_left +2.3, lesion_lung +10.2 (demo: docs/validation.md)."""
    err = vpd.relative_errors(validation)
    for name in ("kidney_left", "marrow_L3", "lesion_liver", "lesion_node", "lesion_lung"):
        lo, mid, hi = (err[name][f"pvc{k}_vs_ct"] for k in ("0.9", "1", "1.1"))
        assert lo < mid < hi, name
    span = {n: err[n]["pvc1.1_vs_ct"] - err[n]["pvc0.9_vs_ct"] for n in err}
    assert span["lesion_lung"] > span["kidney_left"] > span["liver"] > 0
    assert 1.5 < span["kidney_left"] < 5.0 and 7.0 < span["lesion_lung"] < 15.0


def test_tia_map_correction_is_no_worse_than_frame_by_frame(vpd, fitted):
    """Where to correct: every frame before the voxel fits (label grid) or the fitted TIA
    map once. Against the true TIA on the CT grid, mean over the 13 structures of |bias|
    and of the voxel spread within them: small study 3.5 % / 5.8 % (TIA map) vs 3.7 % /
    6.2 % (frames); demo size, 3 noise seeds, 2.1 % / 5.3 % vs 2.0 % / 4.9 % (pvc.md). Equal
    within half a point, at a tenth of the CPU time or less (0.05 s vs 2.2 s here, 0.2 s vs
    13-17 s at demo size: the voxel fit on the label grid). voxdose corrects the TIA map."""
    r = vpd.frames_vs_tia(fitted, "rbv")
    cpu = r.pop("cpu_s")
    bias = {k: np.mean([abs(v[f"{k}_bias"]) for v in r.values()]) for k in ("tia", "frames")}
    sd = {k: np.mean([v[f"{k}_sd"] for v in r.values()]) for k in ("tia", "frames")}
    assert bias["tia"] <= bias["frames"] + 0.5, bias
    assert sd["tia"] <= sd["frames"] + 0.5, sd
    assert cpu["tia"] < cpu["frames"] / 5, cpu


# ---- the study file: bad inputs refused up front ---------------------------------------

FWHM = "resolution_fwhm_mm = 10.0"
OFF = 'method = "none"'


@pytest.mark.parametrize("subs, extra, msg", [
    ([(FWHM, ""), (OFF, 'method = "gtm"')], "", "needs the SPECT resolution"),
    ([(FWHM, "resolution_fwhm_mm = 0.0")], "", "must be > 0"),
    ([(FWHM, "resolution_fwhm_mm = 80.0")], "", "not a SPECT resolution"),
    ([(FWHM, "resolution_fwhm_mm = 1.0")], "", "below a fifth of the SPECT voxel"),
    ([(OFF, 'method = "rc"')], "", "rc needs a recovery table"),
    ([(OFF, 'method = "rbv"')], '\n[registration]\ngrid = "ct"\n',
     'remove registration.grid = "ct"'),
], ids=["no-fwhm", "fwhm-zero", "fwhm-absurd", "fwhm-in-voxels", "rc-no-table", "ct-grid"])
def test_bad_pvc_settings_are_refused_by_the_loader(small_study, tmp_path, subs, extra, msg):
    toml = _copy(small_study, tmp_path, extra, subs)
    with pytest.raises(StudyError, match=msg) as exc:
        load_study(toml)
    assert str(toml) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("rows, msg", [("1,0.5\n10,0.4\n", "not monotone"),
                                       ("1,0.5\n10,1.2\n", r"outside \(0, 1\]")])
def test_bad_rc_table_is_refused_by_the_loader(small_study, tmp_path, rows, msg):
    toml = _copy(small_study, tmp_path, drop=[(OFF, 'method = "rc"\nrc_table = "rc.csv"')])
    (toml.parent / "rc.csv").write_text("volume_ml,recovery\n" + rows)
    with pytest.raises(StudyError, match=msg):
        load_study(toml)


def test_labels_not_covering_the_spect_field_are_refused(small_study, tmp_path):
    """A reference CT (and its labels) covering only the upper half of the SPECT field: most
    activity lies outside the label grid, refused before any work."""
    from voxdose.core.grid import Grid, Image, LabelMap
    from voxdose.io.sitk_adapter import read_image, read_labels, write_image, write_labels

    toml = _copy(small_study, tmp_path, drop=[(OFF, 'method = "rbv"')])
    d = toml.parent
    ct = read_image(d / "ct_001h.nii.gz")
    names = load_study(small_study).names
    lab = read_labels(d / "labels.nii.gz", names)
    half = ct.grid.shape[0] // 2
    affine = np.array(ct.grid.affine)
    affine[:3, 3] = ct.grid.index_to_world(np.array([half, 0, 0], float))
    g = Grid((ct.grid.shape[0] - half,) + ct.grid.shape[1:], affine)
    write_image(d / "ct_001h.nii.gz", Image(np.asarray(ct.data[half:], np.int16), g, "CT",
                                            "HU"), dtype=np.int16)
    write_labels(d / "labels.nii.gz", LabelMap(np.asarray(lab.data[half:]), g, names))
    with pytest.raises(StudyError, match="does not cover the SPECT field"):
        load_study(toml)


def test_demo_study_declares_its_fwhm_and_the_correction(small_study):
    st = load_study(small_study)
    assert st.resolution_fwhm_mm == (10.0, 10.0, 10.0) and st.pvc_method == "none"
    assert st.pvc_rc_table is None


# ---- incomplete label maps --------------------------------------------------------------

def test_structure_missing_from_the_label_map_makes_the_correction_incomplete(fitted):
    """A named structure with no voxel: the report and the warnings say incomplete."""
    from voxdose.pipeline.run import NullReporter
    from voxdose.pipeline.stages import STAGES, run_stages



    ctx = copy.copy(fitted)
    ctx.series = replace(fitted.series, info=copy.deepcopy(fitted.series.info))
    ctx.study = replace(fitted.study, pvc_method="rbv", resolution_fwhm_mm=(10.0,) * 3,
                        names={**fitted.study.names, 99: "lesion_unseen"})
    run_stages(ctx, [s for s in STAGES if s.key == "pvc"], NullReporter())
    assert ctx.pvc["complete"] is False
    assert ctx.pvc["missing_structures"] == ["lesion_unseen"]
    assert any("correction incomplete" in w and "lesion_unseen" in w
               for w in ctx.series.info["warnings"])
    # the corrected TIA lives on the label grid, the uncorrected one stays on the SPECT grid
    assert ctx.tia.grid.same_as(ctx.labels.grid) and ctx.nopvc.tia.grid.same_as(fitted.grid)
    assert ctx.fit.status.shape == ctx.tia.grid.shape


def test_report_says_an_incomplete_correction():
    from voxdose.report.html import _pvc_summary

    line = _pvc_summary({"method": "gtm", "fwhm_mm_xyz": [9.0, 9.0, 12.0], "complete": False,
                         "missing_structures": ["lesion_unseen"], "grid": "label grid"})
    assert "gtm (FWHM 9, 9, 12 mm)" in line and "INCOMPLETE" in line
    assert "lesion_unseen" in line


def test_demo_refuses_an_unknown_correction(tmp_path, capsys):
    from voxdose.cli.app import main

    assert main(["demo", str(tmp_path / "d"), "--small", "--pvc", "rc"]) == 2
    assert "--pvc 'rc'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
