"""End to end: the demo's outputs, and the kidney dose against the phantom's true TIA."""

import base64
import csv
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.core.units import MEV_PER_G_TO_GY
from voxdose.kernels.point import load_point_kernel
from voxdose.io.sitk_adapter import read_image, read_labels
from voxdose.core.nuclide import load_nuclide
from voxdose.imaging.occupancy import fractional_occupancy
from voxdose.phantom.study import PhantomConfig, build_study
from voxdose.pipeline.run import run_pipeline

EXPECTED_FILES = {"tia_bq_s.nii.gz", "tia_sigma_bq_s.nii.gz", "fit_status.nii.gz",
                  "fit_model.nii.gz", "dose_lu177_kernel_gy.nii.gz", "dose_lu177_ldm_gy.nii.gz",
                  "dose_lu177_kernel_sigma_gy.nii.gz", "dose_lu177_ldm_sigma_gy.nii.gz",
                  "dvh.csv", "dvh.json", "dvh_ldm.csv", "dvh.png", "dose_slice.png",
                  "registration.png", "organ_tia.csv", "mird_check.csv", "marrow.json",
                  "plan.json", "dose_y90_kernel_gy.nii.gz", "dvh_y90.csv", "dvh_compare.png",
                  "dpk.png", "compare.json", "report.html", "provenance.json"}
PVC_FILES = {"pvc.json", "dvh_nopvc.csv", "dose_lu177_kernel_nopvc_gy.nii.gz",
             "tia_nopvc_bq_s.nii.gz"}
REPORT_SECTIONS = ("summary", "registration", "tac", "dose", "dvh", "mird", "marrow", "plan",
                   "compare", "provenance")


@functools.lru_cache(maxsize=4)
def _reference_mean_doses(study_dir: str, n: int = 3_000_000, seed: int = 177):
    """Mean Lu-177 dose (Gy) per structure from the phantom's true TIA, unblurred and blurred
    by the camera's PSF: {structure: (d_true, d_blurred)}.

    Independent of the pipeline's dose engine: no voxel kernel and no convolution.  n decays
    are followed from source points drawn from the TIA map (voxel by the TIA, position
    uniform in it), an isotropic direction and a distance drawn from the shipped point
    kernel's cumulative absorbed energy E_abs(r) (the physics input the pipeline also
    uses); each carries E_abs(r_max) x total decays / n of energy into the voxel where it
    lands (none when it leaves the grid, as in the zero-padded convolution).  Measured
    agreement with the FFT dose of the same TIA: within 0.3 % (statistics, ~0.25 %)."""
    study = Path(study_dir)
    truth = study / "truth"
    raw = json.loads((study / "structure_names.json").read_text())
    names = {int(k): v for k, v in raw.items()}
    ct_labels = read_labels(study / "labels.nii.gz", names)
    pk = load_point_kernel(load_nuclide("Lu-177"))
    out = {}
    for which in ("tia_true_bq_s.nii.gz", "tia_true_blurred_bq_s.nii.gz"):
        tia = read_image(truth / which)
        shape = np.asarray(tia.grid.shape)
        s = np.asarray(tia.grid.spacing_mm, dtype=float)
        rng = np.random.default_rng(seed)
        a = np.clip(np.asarray(tia.data, dtype=float).ravel(), 0.0, None)
        src = rng.choice(a.size, size=n, p=a / a.sum())
        r_max = float(np.linalg.norm(shape * s))
        radii = np.concatenate([[0.0], np.geomspace(1e-4, r_max, 4000)])
        cum = pk.cumulative_energy_mev(radii)
        r = np.interp(rng.random(n) * cum[-1], cum, radii)
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1)[:, None]
        x = np.stack(np.unravel_index(src, tuple(shape)), axis=1) + rng.random((n, 3)) - 0.5
        tgt = np.floor(x + r[:, None] * v / s + 0.5).astype(np.int64)
        ok = np.all((tgt >= 0) & (tgt < shape), axis=1)
        hits = np.bincount(np.ravel_multi_index(tuple(tgt[ok].T), tuple(shape)),
                           minlength=a.size)
        mev_per_packet = a.sum() * cum[-1] / n
        m_voxel_g = pk.density_g_cm3 / 1000.0 * float(np.prod(s))
        dose_gy = hits * mev_per_packet / m_voxel_g * MEV_PER_G_TO_GY
        # structure means weighted by each SPECT voxel's fraction of the CT-grid structure,
        # as the pipeline's DVHs are: sum f d / sum f
        occ = fractional_occupancy(ct_labels.data, ct_labels.grid, tia.grid, names)
        for value, name in names.items():
            f = occ.fractions[value].ravel().astype(float)
            out.setdefault(name, []).append(float(f @ dose_gy / f.sum()))
    return {k: tuple(v) for k, v in out.items()}


def _reported(result, structure="kidney_left"):
    return next(h for h in result.dvhs["kernel"] if h.name == structure).mean_gy


def test_demo_small_cli_writes_every_file_and_prints_table(tmp_path, capsys):
    rc = main(["demo", str(tmp_path / "demo"), "--small", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert EXPECTED_FILES <= {p.name for p in (tmp_path / "demo" / "results").iterdir()}
    assert "kidney_left" in out and "marrow_L3" in out
    rows = list(csv.DictReader((tmp_path / "demo" / "results" / "dvh.csv").open()))
    assert [c for c in rows[0]] == ["name", "volume_ml", "mean_gy", "min_gy", "max_gy", "d2_gy",
                                    "d50_gy", "d98_gy"]
    prov = json.loads((tmp_path / "demo" / "results" / "provenance.json").read_text())
    assert prov["device"] == "cpu" and prov["study"]["nuclide"] == "Lu-177"
    # study.toml; 5 x (SPECT, its JSON sidecar, CT); labels and the structure-names JSON
    names = sorted(Path(p).name for p in prov["inputs_sha256"])
    assert len(names) == 1 + 3 * 5 + 2, names
    assert "structure_names.json" in names and "study.toml" in names
    # no staging folders left behind
    assert not [p for p in (tmp_path / "demo").iterdir() if p.name.startswith(".")]
    # the demo corrects partial volume (rbv, its known FWHM): the corrected results on the
    # label (CT) grid are the primary ones, the uncorrected ones beside them (issue 16)
    res = tmp_path / "demo" / "results"
    assert PVC_FILES <= {p.name for p in res.iterdir()}
    pvc = json.loads((res / "pvc.json").read_text())
    assert (pvc["method"], pvc["complete"], pvc["fwhm_mm_xyz"]) == ("rbv", True, [10.0] * 3)
    assert prov["pvc"]["method"] == "rbv" and pvc["grid"].startswith("label grid")
    ct = read_image(tmp_path / "demo" / "study" / "ct_001h.nii.gz").grid
    assert read_image(res / "dose_lu177_kernel_gy.nii.gz").grid.same_as(ct, tol_mm=1e-3)
    spect = read_image(tmp_path / "demo" / "study" / "spect_001h.nii.gz").grid
    assert read_image(res / "dose_lu177_kernel_nopvc_gy.nii.gz").grid.same_as(spect, 1e-3)
    before = {r["name"]: float(r["mean_gy"]) for r in csv.DictReader(
        (res / "dvh_nopvc.csv").open())}
    after = {r["name"]: float(r["mean_gy"]) for r in rows}
    assert after["kidney_left"] > 1.1 * before["kidney_left"]  # spill-out recovered
    assert "without PVC" in out and "red marrow (EANM, L2-L4)" in out
    assert "rbv (FWHM 10 mm) on the TIA map" in (res / "report.html").read_text()


def test_kidney_dose_agrees_with_true_tia_small_demo(small_study, small_results):
    """The reported Lu-177 mean kidney dose vs the dose from the phantom's true TIA.

    Reference: the true TIA blurred by the camera's 10 mm FWHM PSF (what any SPECT-based
    method can at best recover), its dose by the kernel-free Monte Carlo of
    ``_reference_mean_doses`` (no voxel kernel, no convolution; measured: reported /
    reference = 0.93). Tolerance 10 %: at 9.6 mm SPECT voxels the linear interpolation of
    misaligned frames adds blur (up to half a voxel, ~3-6 % more spill-out of a 5 cm
    kidney), Poisson noise adds ~1 % and the trapezoid + mono-exponential model differs
    from the bi-exponential truth by ~1-2 %. Against the unblurred truth the result must be
    lower (spill-out) but within 20 % (recovery of a 150 mL organ).
    """
    d = _reported(small_results)
    d_true, d_blur = _reference_mean_doses(str(small_study.parent))["kidney_left"]
    assert d == pytest.approx(d_blur, rel=0.10)
    assert 0.80 * d_true < d < d_true


def test_noiseless_aligned_study_reproduces_blurred_truth(tmp_path):
    """Without noise and motion, only the TIA model separates pipeline and truth.  Against
    the kernel-free Monte Carlo reference (``_reference_mean_doses``; a kernel or
    convolution error does not cancel): measured +0.04 % (kidney_left), -0.21 % (liver),
    +0.01 % (spleen), reference standard error 0.1-0.2 %; tolerance 1 %."""
    cfg = PhantomConfig.small(noise=False, max_translation_mm=0.0, max_rotation_deg=0.0)
    study = build_study(tmp_path / "study", cfg)
    res = run_pipeline(study, tmp_path / "results", device="cpu")
    ref = _reference_mean_doses(str(study.parent))
    for s in ("kidney_left", "liver", "spleen"):
        assert _reported(res, s) == pytest.approx(ref[s][1], rel=0.01), s


def test_registration_recovers_known_motion(small_results, small_study):
    truth = json.loads((small_study.parent / "truth" / "truth.json").read_text())
    frames = small_results.provenance["assembly"]["frames"]
    pts = np.array([[x, y, z, 1.0] for x in (-120, 0, 120) for y in (-80, 0, 80)
                    for z in (-100, 10, 120)])
    for i, T in enumerate(truth["patient_to_scanner"]):
        M = np.array(frames[i]["registration"]["matrix_ref_to_moving_lps_mm"])
        err = np.linalg.norm((pts @ M.T - pts @ np.array(T).T)[:, :3], axis=1).max()
        assert err < 2.0, f"time point {i}: {err:.2f} mm"  # CT voxels are 4.8 mm here


def test_activity_conserved_by_resampling(small_results):
    for f in small_results.provenance["assembly"]["frames"]:
        if "relative_change" in f:
            assert abs(f["relative_change"]) < 0.02


def test_demo_decisions(small_results):
    """MIRD check, marrow, plan and comparison on the small demo.

    MIRD: organ TIA x mass-scaled self S-value (electrons absorbed, sphere photon absorbed
    fraction) vs the voxel mean dose, which also holds cross-dose from neighbours and the
    organ's non-spherical shape: within 6 % for liver, spleen and kidneys (measured +1 to +3 %).
    Plan: the study's limits (kidneys <= 23 Gy, marrow <= 1 Gy after 336 h) give an activity
    whose doses meet every limit, one of them exactly (the limiting organ).
    Comparison: Y-90 with the same biological kinetics deposits more energy per decay (0.933
    vs 0.148 MeV in electrons) but decays faster: the kidney dose ratio Y-90/Lu-177 must lie
    between the TIA ratio x energy ratio bounds 2 and 7.
    """
    out = small_results.out_dir
    rows = {r["organ"]: r for r in csv.DictReader((out / "mird_check.csv").open())}
    for organ in ("liver", "spleen", "kidney_left", "kidney_right"):
        assert abs(float(rows[organ]["diff_percent"])) < 6.0, organ
    marrow = json.loads((out / "marrow.json").read_text())
    assert marrow["total_dose_gy"] > 0
    plan = json.loads((out / "plan.json").read_text())
    a = plan["max_activity_gbq"]
    assert a > 0
    limited = [c for c in plan["constraints"] if c["organ"] == plan["limiting_organ"]]
    assert limited[0]["limited_dose_at_plan_gy"] == pytest.approx(limited[0]["limit_gy"])
    for c in plan["constraints"]:
        assert c["limited_dose_at_plan_gy"] <= c["limit_gy"] * (1 + 1e-9)
    comp = json.loads((out / "compare.json").read_text())
    means = {n["nuclide"]: {s["name"]: s["mean_gy"] for s in n["structures"]}
             for n in comp["nuclides"]}
    ratio = means["Y-90"]["kidney_left"] / means["Lu-177"]["kidney_left"]
    assert 2.0 < ratio < 7.0


def test_dvh_volumes_on_the_spect_grid_are_the_ct_grid_volumes(small_study, small_results):
    """Issue 13: dvh.json volumes on the SPECT grid equal the label (CT) grid volumes within
    1 % (fractional occupancy); the majority vote inflates some by more (test can fail)."""
    st = small_study.parent
    names = json.loads((st / "structure_names.json").read_text())
    ct = read_labels(st / "labels.nii.gz", {int(k): v for k, v in names.items()})
    vote = read_labels(st / "truth" / "labels_spect.nii.gz", {})
    doc = json.loads((small_results.out_dir / "dvh.json").read_text())
    assert doc["voxel_weights"][0].startswith("fractional occupancy from the label grid")
    worst_vote = 0.0
    for s in doc["structures"]:
        value = next(int(k) for k, v in names.items() if v == s["name"])
        v_ct = float(np.count_nonzero(ct.data == value)) * ct.grid.voxel_volume_ml
        assert s["volume_ml"] == pytest.approx(v_ct, rel=0.01), s["name"]
        v_vote = float(np.count_nonzero(vote.data == value)) * vote.grid.voxel_volume_ml
        worst_vote = max(worst_vote, abs(v_vote / v_ct - 1))
    assert worst_vote > 0.05


def test_demo_report_has_every_section(small_results):
    from voxdose.report.html import NOT_COMPUTED, SECTIONS

    assert tuple(sid for sid, _ in SECTIONS) == REPORT_SECTIONS
    html = (small_results.out_dir / "report.html").read_text()
    for sec in REPORT_SECTIONS:
        assert f'id="{sec}"' in html, sec
    assert NOT_COMPUTED not in html  # the demo fills every section
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html
    # one time-activity figure per structure, written and embedded in the tac section
    pngs = sorted((small_results.out_dir / "tac").glob("tac_*.png"))
    assert {p.stem[4:] for p in pngs} >= {"kidney_left", "kidney_right", "liver", "spleen",
                                          "marrow_L3"}
    tac = re.search(r'<section id="tac">(.*?)</section>', html, re.S).group(1)
    embedded = re.findall(r'src="data:image/png;base64,([^"]*)"', tac)
    assert [base64.b64decode(e) for e in embedded] == [p.read_bytes() for p in pngs]


def test_dicom_study_gives_the_same_dose(small_study, small_results, tmp_path):
    """The demo study exported as DICOM (NM in BQML, CT series) and run through the same
    pipeline: same kidney dose within 1 % (uint16 pixel storage), and an RT Dose whose
    stored integers x DoseGridScaling reproduce the NIfTI dose within 0.1 % of its maximum."""
    import pydicom

    from voxdose.study.export import export_study_dicom

    dicom_toml = export_study_dicom(small_study, tmp_path / "dicom")
    res = run_pipeline(dicom_toml, tmp_path / "results", device="cpu")
    assert _reported(res) == pytest.approx(_reported(small_results), rel=0.01)
    ds = pydicom.dcmread(tmp_path / "results" / "dose_lu177_kernel_rtdose.dcm")
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY"
    dose = read_image(tmp_path / "results" / "dose_lu177_kernel_gy.nii.gz").data
    stored = ds.pixel_array.astype(float) * float(ds.DoseGridScaling)
    assert np.abs(stored - dose).max() <= 1e-3 * dose.max()


def test_user_s_value_table_is_compared(small_study, small_results, tmp_path):
    """[analysis] s_table: a user's (e.g. OLINDA) self S-value per organ appears beside the
    MIRD check.  The table's S values are not the run's own (kidney_left 0.6x, liver 2x),
    so the columns can only come from the table: user_s echoes it, user_gy = organ TIA x S
    (1 mGy/(MBq s) = 1e-9 Gy per decay), user_diff_percent = (voxel - user) / user, organs
    not in the table stay blank, and the MIRD columns are those of the run without the
    table.  The organ TIA those use is checked against the organ-level fit of the organ's
    time-activity curve (organ_tia.csv, a different method): measured 1.8 % (kidney_left)
    and 0.7 % (liver) apart; tolerance 5 %."""
    import shutil

    own = {r["organ"]: r for r in csv.DictReader((small_results.out_dir / "mird_check.csv")
                                                 .open())}
    user_s = {"kidney_left": 0.6 * float(own["kidney_left"]["s_self_mgy_per_mbq_s"]),
              "liver": 2.0 * float(own["liver"]["s_self_mgy_per_mbq_s"])}
    study_dir = tmp_path / "study"
    shutil.copytree(small_study.parent, study_dir)
    (study_dir / "olinda.csv").write_text(
        "organ,S\n" + "".join(f"{k},{v!r}\n" for k, v in user_s.items()))
    toml = study_dir / "study.toml"
    toml.write_text(toml.read_text() + '\n[analysis]\ns_table = "olinda.csv"\n')
    res = run_pipeline(toml, tmp_path / "r1", device="cpu")
    assert res.decisions.mird
    rows = {r["organ"]: r for r in csv.DictReader((tmp_path / "r1" / "mird_check.csv").open())}
    fitted = {r["name"]: float(r["tia_bq_s"])
              for r in csv.DictReader((tmp_path / "r1" / "organ_tia.csv").open())}
    for organ, s in user_s.items():
        row = rows[organ]
        tia = float(row["tia_bq_s"])
        assert tia == pytest.approx(fitted[organ], rel=0.05), organ
        assert float(row["user_s_mgy_per_mbq_s"]) == pytest.approx(s, rel=1e-5)
        user_gy = float(row["user_gy"])
        assert user_gy == pytest.approx(tia * s * 1e-9, rel=1e-5)
        assert float(row["user_diff_percent"]) == pytest.approx(
            100.0 * (float(row["voxel_mean_gy"]) - user_gy) / user_gy, abs=1e-3)
        for col in ("s_self_mgy_per_mbq_s", "mird_self_gy", "voxel_mean_gy"):
            assert float(row[col]) == pytest.approx(float(own[organ][col]), rel=1e-5), col
    assert float(rows["kidney_left"]["user_gy"]) == pytest.approx(
        0.6 * float(rows["kidney_left"]["mird_self_gy"]), rel=1e-4)
    for organ in ("kidney_right", "spleen"):
        assert rows[organ]["user_s_mgy_per_mbq_s"] == rows[organ]["user_gy"] == ""
        assert rows[organ]["user_diff_percent"] == ""


def test_registration_within_1mm_at_the_organs(small_results, small_study):
    """Issue 6: the known rigid misalignment is recovered within 1 mm at organ centres
    (kidneys, liver, spleen, L3) on the small demo (4.8 mm CT voxels)."""
    import SimpleITK as sitk

    from voxdose.phantom.anatomy import STRUCTURES

    truth = json.loads((small_study.parent / "truth" / "truth.json").read_text())
    centres = [s.shapes[0].centre_mm for s in STRUCTURES
               if s.name in ("kidney_left", "kidney_right", "liver", "spleen", "marrow_L3")]
    tfms = sorted((small_results.out_dir / "registration").glob("tp*_rigid.tfm"))
    assert len(tfms) == len(truth["patient_to_scanner"])
    for path in tfms:
        i = int(path.name[2:].split("_")[0])
        tx = sitk.ReadTransform(str(path))
        T = np.array(truth["patient_to_scanner"][i])
        for c in centres:
            got = np.array(tx.TransformPoint(tuple(float(v) for v in c)))
            assert np.linalg.norm(got - (T[:3, :3] @ c + T[:3, 3])) < 1.0, (i, c)


@pytest.mark.parametrize(("kind", "tol_mm"), [("affine", 1.5), ("bspline", 2.5)])
def test_optional_affine_and_bspline_registration(small_study, kind, tol_mm):
    """The optional refinements run and stay close to the (rigid) truth. A B-spline has
    little image structure to hold it inside uniform organs, so points there may drift by a
    few mm (documented: a rigid patient needs the rigid transform)."""
    from voxdose.io.sitk_adapter import read_image as read
    from voxdose.imaging.registration import register

    truth = json.loads((small_study.parent / "truth" / "truth.json").read_text())
    fixed = read(small_study.parent / "ct_001h.nii.gz")
    moving = read(small_study.parent / "ct_048h.nii.gz")
    reg = register(fixed, moving, kind)
    assert reg.kind == kind
    T = np.array(truth["patient_to_scanner"][3])
    for c in ([65.0, 45.0, -25.0], [-80.0, -15.0, 60.0]):
        got = np.array(reg.transform.TransformPoint(tuple(c)))
        assert np.linalg.norm(got - (T[:3, :3] @ c + T[:3, 3])) < tol_mm


def test_dose_on_the_ct_grid(small_study, small_results, tmp_path):
    """[registration] grid = "ct": the series and the dose live on the reference CT grid
    (4.8 mm here, SPECT 9.6 mm). Resampling conserves each frame's activity within 2 %, and
    the kidney dose agrees with the SPECT-grid run within 5 % (the finer labels follow the
    organ outline more closely; the activity is the same)."""
    import shutil

    from voxdose.io.sitk_adapter import read_image as read

    study_dir = tmp_path / "study"
    shutil.copytree(small_study.parent, study_dir)
    toml = study_dir / "study.toml"
    toml.write_text(toml.read_text() + '\n[registration]\ngrid = "ct"\n')
    res = run_pipeline(toml, tmp_path / "results", device="cpu")
    ct = read(study_dir / "ct_001h.nii.gz")
    assert read(tmp_path / "results" / "tia_bq_s.nii.gz").grid.same_as(ct.grid, tol_mm=1e-3)
    for f in res.provenance["assembly"]["frames"]:
        if "relative_change" in f:
            assert abs(f["relative_change"]) < 0.02
    assert _reported(res) == pytest.approx(_reported(small_results), rel=0.05)


def test_rerun_leaves_no_stale_results(small_study, small_results, tmp_path):
    """A second run into the same folder without [plan] removes the first run's plan.json
    (results never mix two runs); files voxdose did not write are left alone."""
    import shutil

    out = tmp_path / "results"
    shutil.copytree(small_results.out_dir, out)
    (out / "my_notes.txt").write_text("keep me")
    study_dir = tmp_path / "study"
    shutil.copytree(small_study.parent, study_dir)
    toml = study_dir / "study.toml"
    toml.write_text("\n".join(ln for ln in toml.read_text().splitlines()
                               if not ln.startswith(("[plan]", "limits_gy", "after_h"))))
    assert (out / "plan.json").exists()
    run_pipeline(toml, out, device="cpu")
    assert not (out / "plan.json").exists()
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert (out / "dvh.csv").exists()
