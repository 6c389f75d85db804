"""Silent wrong doses refused (issue 12): study file against the images' JSON sidecars, the
single-time-point method, the acquisition span against the half-life, and implausible
registrations. Tiny hand-made studies: every test loads in well under a second."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from voxdose.cli.app import main
from voxdose.core.errors import InputError, StudyError
from voxdose.core.grid import Grid, Image, LabelMap
from voxdose.imaging import checks
from voxdose.imaging.registration import (Registration, motion, plausibility, resample,
                                          resample_planes)
from voxdose.io.sitk_adapter import sidecar_path, write_image
from voxdose.kinetics.fit import STP_STATUS, single_time_point_fit
from voxdose.kinetics.models import MODEL_IDS
from voxdose.kinetics.organ import single_time_point_organs
from voxdose.study.load import load_study

T_LU177_H = 574300.8 / 3600.0  # ICRP-107, as the nuclide table has it
LAM_LU177 = math.log(2) / 574300.8
GRID = Grid.from_spacing((4, 4, 4), (4.0, 4.0, 4.0))


def _frame(folder, name, sidecar, value=100.0):
    """A 4^3 SPECT file; its sidecar exactly ``sidecar`` (None: no sidecar)."""
    path = folder / name
    write_image(path, Image(np.full(GRID.shape, value), GRID, "activity concentration",
                            "Bq/mL"))
    car = sidecar_path(path)
    if sidecar is None:
        car.unlink()
    else:
        car.write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    return path


def _study(tmp_path, sidecars, times=(24.0,), study="nuclide = \"Lu-177\"\n"
           "administered_activity_mbq = 7400.0\n", spect="", extra=None):
    """study.toml with one frame per entry of ``sidecars``; ``times`` (None entries: no
    time_h key). One time point gets [kinetics] single_time_point = "physical" unless
    ``extra`` says otherwise."""
    if extra is None:
        extra = '[kinetics]\nsingle_time_point = "physical"\n' if len(times) == 1 else ""
    text = f"[study]\n{study}\n" + (f"[spect]\n{spect}\n" if spect else "") + extra
    for i, (t, car) in enumerate(zip(times, sidecars, strict=True)):
        _frame(tmp_path, f"spect_{i}.nii.gz", car)
        text += "\n[[timepoints]]\n" + (f"time_h = {t}\n" if t is not None else "")
        text += f'spect = "spect_{i}.nii.gz"\n'
    p = tmp_path / "study.toml"
    p.write_text(text)
    return p


def _error(p, *parts) -> str:
    with pytest.raises(StudyError) as exc:
        load_study(p)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1, msg
    for part in parts:
        assert str(part) in msg, msg
    return msg


# ---- 1. study file against the sidecars ------------------------------------------------------

def test_units_contradicting_the_sidecar_name_both_sources_and_values(tmp_path):
    """The issue's 4,860 Gy kidney: kBq/mL in study.toml on frames whose sidecar says Bq/mL."""
    p = _study(tmp_path, [{"unit": "Bq/mL"}], spect='units = "kBq/mL"\n')
    _error(p, p, sidecar_path(tmp_path / "spect_0.nii.gz"), "spect.units", '"kBq/mL"',
           '"Bq/mL"')


def test_units_given_once_are_taken_from_there_and_recorded(tmp_path):
    s = load_study(_study(tmp_path, [{"Units": "kBq/mL"}]))      # only the sidecar
    tp = s.timepoints[0]
    assert tp.to_bq_ml == 1000.0 and s.spect_to_bq_ml == 1000.0
    assert tp.info["units"] == "kBq/mL" and tp.info["units_from"] == "JSON sidecar"
    s = load_study(_study(tmp_path, [None], spect='units = "MBq/mL"\n'))  # only the key
    assert s.timepoints[0].to_bq_ml == 1e6
    assert s.timepoints[0].info["units_from"] == "study file"
    s = load_study(_study(tmp_path, [{"Units": "BQML"}], spect='units = "Bq/mL"\n'))
    assert s.timepoints[0].info["units_from"] == "study file and JSON sidecar (agree)"


def test_sidecar_unit_that_is_no_activity_unit_is_refused(tmp_path):
    _error(_study(tmp_path, [{"unit": "Gy"}]), "'unit' = 'Gy'", "activity-concentration")
    _error(_study(tmp_path, [{"unit": "Bq/mL", "Units": "kBq/mL"}]),
           "two different pixel units")


def test_decay_correction_contradicting_the_sidecar(tmp_path):
    """The issue's +33 %: a sidecar saying decay-corrected, the study file saying not."""
    p = _study(tmp_path, [{"decay_corrected": True}], spect="decay_corrected = false\n")
    _error(p, "spect.decay_corrected = false", "decay-corrected to the administration",
           sidecar_path(tmp_path / "spect_0.nii.gz"))
    p = _study(tmp_path, [{"DecayCorrection": "START"}], spect="decay_corrected = true\n")
    _error(p, "spect.decay_corrected = true", "decay-corrected to the acquisition start")
    _error(_study(tmp_path, [{"decay_corrected": False, "DecayCorrection": "ADMIN"}]),
           "two different decay corrections")
    load_study(_study(tmp_path, [{"decay_corrected": False, "DecayCorrection": "START"}]))


def test_decay_correction_from_the_sidecar_is_undone_with_its_reference(tmp_path):
    t = 48.0
    s = load_study(_study(tmp_path, [{"decay_corrected": True}], times=(t,)))
    assert s.timepoints[0].decay_undo == pytest.approx(math.exp(-LAM_LU177 * t * 3600))
    assert s.timepoints[0].info["decay_from"] == "JSON sidecar"
    # corrected to 24 h after the administration: undo exp(-lambda (48 h - 24 h))
    s = load_study(_study(tmp_path, [{"decay_corrected": True, "decay_correction_time_h": 24}],
                          times=(t,)))
    assert s.timepoints[0].decay_undo == pytest.approx(math.exp(-LAM_LU177 * 24 * 3600))
    # BIDS: ImageDecayCorrectionTime relative to InjectionStart (s)
    car = {"ImageDecayCorrected": True, "ImageDecayCorrectionTime": 3600.0 * 30,
           "InjectionStart": 3600.0 * 6}
    s = load_study(_study(tmp_path, [car], times=(t,)))
    assert s.timepoints[0].decay_undo == pytest.approx(math.exp(-LAM_LU177 * 24 * 3600))
    s = load_study(_study(tmp_path, [{"DecayCorrection": "START"}], times=(t,),
                          spect="decay_corrected = false\n"))
    assert s.timepoints[0].decay_undo == 1.0
    # the study file's true = to the administration, and a sidecar at 24 h contradicts it
    _error(_study(tmp_path, [{"decay_corrected": True, "decay_correction_time_h": 24}],
                  times=(t,), spect="decay_corrected = true\n"), "24 h after the administration")
    _error(_study(tmp_path, [{"ImageDecayCorrected": True}]), "ImageDecayCorrectionTime")


def test_acquisition_time_from_the_sidecar_or_a_contradiction(tmp_path):
    _error(_study(tmp_path, [{"time_h": 48.0}], times=(24.0,)),
           "timepoints[0].time_h = 24 h", "the acquisition time 48 h")
    s = load_study(_study(tmp_path, [{"time_h": 48.0}], times=(None,)))
    assert s.times_h == [48.0] and s.timepoints[0].info["time_from"] == "JSON sidecar"
    s = load_study(_study(tmp_path, [{"ScanStart": 7200.0 + 30.0, "InjectionStart": 30.0}],
                          times=(2.0,)))  # BIDS seconds, within the 60 s tolerance
    assert s.times_h == [2.0]
    _error(_study(tmp_path, [{"unit": "Bq/mL"}], times=(None,)),
           "missing key 'timepoints[0].time_h'")


def test_nuclide_and_activity_against_the_sidecars(tmp_path):
    _error(_study(tmp_path, [{"nuclide": "Y-90"}]), "study.nuclide = Lu-177", "Y-90")
    s = load_study(_study(tmp_path, [{"TracerRadionuclide": "Lu177"}],
                          study="administered_activity_mbq = 7400.0\n"))
    assert s.nuclide.name == "Lu-177"
    assert s.info["study_keys"]["nuclide"].startswith("JSON sidecar")
    ok = {"InjectedRadioactivity": 7.4, "InjectedRadioactivityUnits": "GBq"}
    assert load_study(_study(tmp_path, [ok])).administered_activity_mbq == 7400.0
    _error(_study(tmp_path, [{"RadionuclideTotalDose": 3.7e9}]),
           "study.administered_activity_mbq = 7400", "3700 MBq")
    s = load_study(_study(tmp_path, [{"administered_activity_mbq": 5000.0}],
                          study='nuclide = "Lu-177"\n'))
    assert s.administered_activity_mbq == 5000.0


def test_sidecars_disagreeing_with_each_other_and_bad_json(tmp_path):
    p = _study(tmp_path, [{"nuclide": "Lu-177"}, {"nuclide": "Y-90"}], times=(1.0, 24.0),
               study="administered_activity_mbq = 7400.0\n")
    _error(p, "sidecars disagree on the nuclide")
    _error(_study(tmp_path, ['{"unit": '], extra='[kinetics]\nsingle_time_point = '
                  '"physical"\n'), "not valid JSON")


def test_run_refuses_a_contradiction_in_one_line_and_writes_nothing(tmp_path, capsys):
    p = _study(tmp_path, [{"unit": "Bq/mL"}], spect='units = "kBq/mL"\n')
    out = tmp_path / "results"
    rc = main(["run", str(p), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("voxdose: error:") and "contradicts" in err
    assert not out.exists()


# ---- 2. a single time point ------------------------------------------------------------------

def test_single_time_point_needs_the_method_and_sane_values(tmp_path, capsys):
    p = _study(tmp_path, [None], extra="")
    assert load_study(p).single_time_point is None  # loads (export, assembly) ...
    out = tmp_path / "results"                        # ... but `run` refuses to integrate it
    assert main(["run", str(p), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "one time point" in err and "[kinetics] single_time_point" in err, err
    assert len(err.splitlines()) == 1 and not out.exists()
    kin = "[kinetics]\nsingle_time_point = \"effective\"\n"
    _error(_study(tmp_path, [None], extra=kin), "effective_half_life_h")
    _error(_study(tmp_path, [None], extra=kin + "effective_half_life_h = 200.0\n"),
           "exceeds Lu-177's physical half-life")
    _error(_study(tmp_path, [None], times=(96.0,), extra=kin + "effective_half_life_h = 5.0\n"),
           "19.2 effective half-lives")
    _error(_study(tmp_path, [None], extra='[kinetics]\nsingle_time_point = "physical"\n'
                  "effective_half_life_h = 50.0\n"), "remove it")
    _error(_study(tmp_path, [None, None], times=(1.0, 24.0), extra=kin),
           "kinetics.single_time_point is for a study with one time point")
    _error(_study(tmp_path, [None], extra="[kinetics]\neffective_half_life_h = 50.0\n"),
           'needs kinetics.single_time_point = "effective"')
    s = load_study(_study(tmp_path, [None], extra=kin + "effective_half_life_h = 50.0\n"))
    assert (s.single_time_point, s.stp_half_life_h) == ("effective", 50.0)
    s = load_study(_study(tmp_path, [None]))
    assert s.single_time_point == "physical"
    assert s.stp_half_life_h == pytest.approx(T_LU177_H)


def test_single_time_point_maps_and_organs():
    """TIA = a(t1) e^(l t1) / l: the issue's kidney, physical decay 8.72 Gy against 4.86 Gy
    with T_eff = 50 h, is the ratio of the two integrals."""
    t1 = 24 * 3600.0
    frame = np.zeros((2, 2, 3))
    frame[0, 0, :2] = 1000.0
    for t_h in (T_LU177_H, 50.0):
        lam = math.log(2) / (t_h * 3600)
        fit = single_time_point_fit(t1, frame, t_h, method="x")
        assert fit.tia[0, 0, 0] == pytest.approx(1000.0 * math.exp(lam * t1) / lam, rel=1e-12)
        assert fit.tia[1, 1, 1] == 0.0 and np.all(fit.lambda_eff_per_s == lam)
        assert np.all(fit.model == MODEL_IDS["stp"]) and np.all(fit.status == STP_STATUS)
        assert fit.sigma[0, 0, 0] == pytest.approx(0.05 * fit.tia[0, 0, 0])
    labels = LabelMap((frame > 0).astype(np.int32), Grid.from_spacing(frame.shape, (2, 2, 2)),
                      {1: "kidney_left"})
    of, = single_time_point_organs(np.array([t1]), frame[None], labels, 50.0)
    lam = math.log(2) / (50 * 3600)
    a1 = 2 * 1000.0 * labels.grid.voxel_volume_ml
    assert of.best == "stp" and of.tia_bq_s == pytest.approx(a1 * math.exp(lam * t1) / lam)
    assert of.fits["stp"]["t_eff_h"] == 50.0


def test_pipeline_fit_stage_uses_the_study_method(tmp_path):
    """stage_fit on a one-time-point series: the study's method, not a physical tail."""
    from voxdose.imaging.assemble import ActivitySeries
    from voxdose.pipeline.context import PipelineContext, PipelineOptions
    from voxdose.pipeline.stages import stage_fit

    kin = '[kinetics]\nsingle_time_point = "effective"\neffective_half_life_h = 50.0\n'
    study = load_study(_study(tmp_path, [None], extra=kin))
    frames = np.full((1, *GRID.shape), 100.0)
    ctx = PipelineContext(study, tmp_path, PipelineOptions(device="cpu"))
    ctx.study = study
    ctx.series = ActivitySeries(frames, GRID, np.array([24 * 3600.0]), study.nuclide)
    ctx.backend = type("B", (), {"name": "cpu"})()
    stage_fit(ctx)
    lam = math.log(2) / (50 * 3600)
    vml = GRID.voxel_volume_ml
    assert ctx.tia.data[0, 0, 0] == pytest.approx(100.0 * math.exp(lam * 24 * 3600) / lam * vml)
    assert "T = 50 h" in ctx.tia.meta["model"] and ctx.fit.settings["model"] == "stp"


# ---- 3. acquisition span against the half-life -----------------------------------------------

def test_acquisition_span_warning_and_error():
    assert checks.check_acquisition_span([1.0, 168.0], T_LU177_H, "Lu-177", "s") is None
    warn = checks.check_acquisition_span([1.0, 10.5 * T_LU177_H], T_LU177_H, "Lu-177", "s")
    assert warn and "10.5 Lu-177 half-lives" in warn
    with pytest.raises(InputError, match=r"436 Lu-178m half-lives.*less than 1e-06"):
        checks.check_acquisition_span([1.0, 168.0], 23.1 / 60, "Lu-178m", "s")


def test_assembly_refuses_frames_that_would_be_noise(tmp_path):
    from voxdose.imaging.assemble import assemble_series

    study = load_study(_study(tmp_path, [None, None], times=(1.0, 20 * T_LU177_H)))
    with pytest.raises(InputError, match="20 Lu-177 half-lives"):
        assemble_series(study)


# ---- 4. registration plausibility ------------------------------------------------------------

def _euler(translation=(0.0, 0.0, 0.0), angle_z_deg=0.0, centre=(0.0, 0.0, 0.0)):
    t = sitk.Euler3DTransform()
    t.SetCenter(centre)
    t.SetRotation(0.0, 0.0, math.radians(angle_z_deg))
    t.SetTranslation(translation)
    return Registration(t, -1.0, 10)


def test_motion_is_measured_from_the_scanner_coordinates():
    g = Grid.from_spacing((11, 11, 11), (2.0, 2.0, 2.0), (-10.0, -10.0, -10.0))  # centre 0
    m = motion(_euler((30.0, 40.0, 0.0)), g)
    assert m["translation_mm"] == pytest.approx(50.0)
    assert m["rotation_deg"] == pytest.approx(0.0, abs=1e-6)
    m = motion(_euler(angle_z_deg=20.0), g)
    assert m["rotation_deg"] == pytest.approx(20.0) and m["translation_mm"] < 1e-9


@pytest.mark.parametrize("record, problem", [
    ({"translation_mm": 120.0, "rotation_deg": 1.0}, "moved the image 120 mm"),
    ({"translation_mm": 5.0, "rotation_deg": 20.0}, "rotated it 20.0 degrees"),
    ({"translation_mm": 5.0, "rotation_deg": 1.0, "metric_initial": -0.80,
      "metric_final": -0.74}, "matches worse than the scanner coordinates"),
    ({"translation_mm": 5.0, "rotation_deg": 1.0, "scale_extremes": [0.8, 1.0]}, "scaled"),
])
def test_implausible_registration_is_an_error_unless_allowed(record, problem):
    with pytest.raises(InputError, match="allow_large_motion = true") as exc:
        checks.check_registration(record, False, "time point 2 (ct.nii)")
    assert problem in str(exc.value) and "time point 2 (ct.nii)" in str(exc.value)
    warn = checks.check_registration(record, True, "tp2")
    assert problem in warn and "accepted" in warn


def test_plausible_registration_passes():
    ok = {"translation_mm": 49.0, "rotation_deg": 14.0, "scale_extremes": [0.95, 1.05],
          "metric_initial": -0.80, "metric_final": -0.795}  # within 2 % of |MI|
    assert checks.check_registration(ok, False, "s") is None


def _blobs(shift_mm=0.0) -> Image:
    g = Grid.from_spacing((20, 24, 24), (4.0, 4.0, 4.0), (-46.0, -46.0, -38.0))
    x, y, z = g.world_coordinates()
    a = np.full(g.shape, -1000.0)
    for c, hu in (((-15.0, 0.0, 0.0), 60.0), ((20.0, 10.0, 5.0), 700.0),
                  ((0.0, -20.0, -10.0), 300.0)):
        a[(x - c[0] - shift_mm) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < 14.0 ** 2] = hu
    return Image(a, g, "CT", "HU")


def test_plausibility_metric_compares_the_result_with_the_scanner_alignment():
    fixed, moving = _blobs(), _blobs(shift_mm=8.0)  # the patient moved 8 mm in x
    right = plausibility(fixed, moving, _euler((8.0, 0.0, 0.0)))
    wrong = plausibility(fixed, moving, _euler((8.0, 0.0, 60.0)))
    assert right["metric_final"] < right["metric_initial"]      # better than no transform
    assert wrong["metric_final"] > wrong["metric_initial"]      # worse: implausible
    assert right["translation_mm"] == pytest.approx(8.0)
    assert not checks.registration_problems(right) and checks.registration_problems(wrong)


def test_assembly_refuses_an_implausible_registration_unless_allowed(tmp_path, monkeypatch):
    """The check is wired into assemble_series (registration itself replaced: fast)."""
    from voxdose.imaging import assemble

    p = _study(tmp_path, [None, None], times=(1.0, 24.0))
    monkeypatch.setattr(assemble, "register", lambda f, m, kind: _euler((0.0, 0.0, 120.0)))
    with pytest.raises(InputError, match=r"time point 1 .* moved the image 120 mm"):
        assemble.assemble_series(load_study(p))
    p.write_text(p.read_text().replace("[study]", "[registration]\nallow_large_motion = true"
                                                  "\n\n[study]"))
    # the 16 mm frame moved 120 mm leaves the grid: that check is not the one tested here
    monkeypatch.setattr(assemble, "check_resampling_loss", lambda *a: None)
    series, _, _ = assemble.assemble_series(load_study(p))
    assert any("allow_large_motion" in w for w in series.info["warnings"])
    frame = series.info["frames"][1]
    assert frame["registration"]["plausibility"]["translation_mm"] == pytest.approx(120.0)
    assert frame["input"]["units_from"] == "default"


def test_resample_planes_are_the_slices_of_the_full_resampling():
    fixed, moving = _blobs(), _blobs(shift_mm=8.0)
    reg = _euler((8.0, 0.0, 0.0), angle_z_deg=3.0, centre=(0.0, 0.0, 0.0))
    full = resample(moving, fixed.grid, reg, default=-1000.0).data
    axial, coronal = resample_planes(moving, fixed.grid, reg, (7, 11))
    np.testing.assert_allclose(axial, full[7], atol=1e-9)
    np.testing.assert_allclose(coronal, full[:, 11, :], atol=1e-9)


def _png_size(path) -> tuple[int, int]:
    w, h = struct.unpack(">II", path.read_bytes()[16:24])
    return w, h


def test_registration_figure_has_one_row_per_time_point(tmp_path):
    from voxdose.report.plots import plot_registration_check

    fixed = _blobs().data
    moved = [_blobs(shift_mm=s).data for s in (2.0, 12.0, 6.0)]
    plot_registration_check(tmp_path / "one.png", fixed, moved[0], (4.0, 4.0, 4.0),
                            (10, 12, 12), "one")
    plot_registration_check(tmp_path / "two.png", fixed, moved[:2], (4.0, 4.0, 4.0),
                            (10, 12, 12), "two", row_labels=["tp 1: 4 h", "tp 2: 24 h"])
    plot_registration_check(tmp_path / "three.png", fixed, moved, (4.0, 4.0, 4.0),
                            (10, 12, 12), "three")
    (w1, h1), (w2, h2), (w3, h3) = (_png_size(tmp_path / f"{n}.png")
                                    for n in ("one", "two", "three"))
    # every row adds the same height (its planes' height at the panels' width, and a gap)
    assert w1 == w2 == w3 and h2 - h1 > 100 and h3 - h2 == pytest.approx(h2 - h1, abs=1)
    with pytest.raises(InputError, match="row labels"):
        plot_registration_check(tmp_path / "x.png", fixed, moved, (4.0, 4.0, 4.0),
                                (10, 12, 12), "x", row_labels=["a"])


def test_registration_rows_with_planes_of_two_shapes_is_an_input_error(tmp_path):
    """Checked before any figure is made: one line, no half-drawn PNG."""
    from voxdose.report.plots import plot_registration_rows

    a = np.zeros((10, 12))
    rows = [("tp 1: 4 h", (a, np.zeros((10, 11))), (a, a))]
    with pytest.raises(InputError, match="axial planes differ in shape"):
        plot_registration_rows(tmp_path / "r.png", rows, (4.0, 4.0, 4.0), "x")
    rows = [("tp 1: 4 h", (a, a), (a, np.zeros((10, 12, 1))))]
    with pytest.raises(InputError, match="coronal planes differ in shape"):
        plot_registration_rows(tmp_path / "r.png", rows, (4.0, 4.0, 4.0), "x")
    assert not (tmp_path / "r.png").exists()
