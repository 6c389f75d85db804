"""report.html (self-contained, every section, escaping) and the report figures."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from voxdose.report.html import NOT_COMPUTED, SECTIONS, write_report
from voxdose.report.plots import checkerboard, plot_dose_slices, plot_registration_check

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, format="png")
    plt.close(fig)


def _provenance():
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    moved = [[1, 0, 0, 2.5], [0, 1, 0, -1.25], [0, 0, 1, 4.0], [0, 0, 0, 1]]
    return {
        "voxdose": {"voxdose": "0.1.0", "numpy": "2.0"},
        "created_utc": "2025-01-01T00:00:00Z",
        "device": "cpu",
        "study": {"name": "demo <patient>", "nuclide": "Lu-177",
                  "administered_activity_mbq": 7400.0, "times_h": [4.0, 24.0, 96.0],
                  "reference_timepoint": 0, "path": "/x/study.toml"},
        "assembly": {"registration": "CT-to-CT rigid", "frames": [
            {"time_index": 0, "time_h": 4.0, "relative_change": 0.0,
             "registration": {"matrix_ref_to_moving_lps_mm": eye,
                              "final_metric_mattes_mi": 0.0, "iterations": 0}},
            {"time_index": 1, "negative_voxels_clipped": 3},
            {"time_index": 1, "time_h": 24.0, "relative_change": -0.0012,
             "registration": {"matrix_ref_to_moving_lps_mm": moved,
                              "final_metric_mattes_mi": -0.734, "iterations": 41}}]},
        "timings_s": {"validate": 0.01, "total": 12.3456},
    }


@pytest.fixture
def full_results(tmp_path):
    d = tmp_path / "results"
    for name in ("dose_slice.png", "registration.png", "dvh.png", "dvh_compare.png", "dpk.png",
                 "tac/tac_kidneys.png", "tac/tac_liver.png"):
        _png(d / name)
    (d / "dvh.csv").write_text("name,volume_ml,mean_gy,min_gy,max_gy,d2_gy,d50_gy,d98_gy\n"
                               "kidneys,300.5,4.123456,0.1,9.87654,8,4,1.23e-05\n"
                               '"<b>tumour</b> & ""x""",12,30,1,60,55,29,3\n')
    (d / "organ_tia.csv").write_text(
        "name,volume_ml,model,tia_bq_s,tia_mbq_h,sigma_bq_s,t_eff_h,r2,aicc,params\n"
        "kidneys,300,bi,1.2e+12,333.3,1e+10,60,0.99,-12,A1=1;l1=2\n")
    (d / "mird_check.csv").write_text(
        "organ,mass_g,tia_bq_s,s_self_mgy_per_mbq_s,photon_absorbed_fraction,mird_self_gy,"
        "voxel_mean_gy,diff_percent,user_s_mgy_per_mbq_s,user_gy,user_diff_percent\n"
        "kidneys,300,1.2e+12,0.000123,0.08,4.1,4.0,2.5,,,\n")
    (d / "marrow.json").write_text(json.dumps({
        "method": "voi-concentration", "reference": {"sex": "male", "red_marrow_mass_g": 1170,
                                                     "sources": ["ICRP 89"]},
        "vois": [{"name": "L2", "centre_mm_lps_xyz": [1, 2, 3], "radius_mm": 8}],
        "self_dose_gy": 0.2, "cross_dose_gy": None, "total_dose_gy": 0.2}))
    (d / "plan.json").write_text(json.dumps({
        "max_activity_gbq": 7.7441, "limiting_organ": "kidneys",
        "constraints": [{"organ": "kidneys", "gy_per_gbq": 2.97, "limit_gy": 23,
                         "after_h": None, "allowed_activity_gbq": 7.7441}],
        "doses_at_plan_gy": {"kidneys": 23.0}, "assumptions": "linear"}))
    (d / "compare.json").write_text(json.dumps({
        "tia": "tia.nii.gz", "shells_mm": [1, 2, 5], "nuclides": [
            {"nuclide": n, "r90_electrons_mm": r, "r90_all_energy_mm": 2 * r,
             "structures": [{"name": "tumour", "volume_ml": 12, "mean_gy": m,
                             "cross_fire_fraction": 0.1}],
             "shells": {"tumour": [{"shell": "0-1 mm", "n_voxels": 0, "mean_gy": None}]},
             "kernel": {"source": "analytic"}}
            for n, r, m in (("Lu-177", 0.6, 30.0), ("Y-90", 5.2, 25.0))]}))
    prov = _provenance()
    (d / "provenance.json").write_text(json.dumps(prov))
    return d, prov


def _section(html_text, sid):
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html_text, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_report_has_every_section_and_is_self_contained(full_results):
    d, prov = full_results
    out = write_report(d, prov)
    assert out == d / "report.html"
    text = out.read_text(encoding="utf-8")
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in text
        assert f'href="#{sid}"' in text  # table of contents
    srcs = re.findall(r'\bsrc="([^"]*)"', text)
    assert len(srcs) == 8  # 7 figures, dvh_compare.png in dvh and in compare
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', text)
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)\s*=\s*"//|url\(', text)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert NOT_COMPUTED not in text
    assert "7.744 GBq" in _section(text, "plan") and "kidneys" in _section(text, "plan")
    assert "Lu-177" in _section(text, "compare") and "Y-90" in _section(text, "compare")
    reg = _section(text, "registration")
    assert "-0.734" in reg and "2.5" in reg and "-1.25" in reg and "-0.12" in reg
    assert "3 negative voxels" in reg
    summ = _section(text, "summary")
    assert "7400" in summ and "Lu-177" in summ and "12.35" in summ
    _assert_tac_figures_embedded(text, d, ("kidneys", "liver"))
    assert "(Gy)" in _section(text, "dvh") and "(mGy/(MBq·s))" in _section(text, "mird")
    assert "<pre>" in _section(text, "provenance")


def _assert_tac_figures_embedded(text, results_dir, organs):
    """Each tac/tac_<organ>.png is in the tac section, byte for byte, with its caption, and
    the section does not say "not computed"."""
    import base64

    tac = _section(text, "tac")
    assert NOT_COMPUTED not in tac
    figs = re.findall(r'<figure><img alt="([^"]*)" src="data:image/png;base64,([^"]*)">', tac)
    assert [alt for alt, _ in figs] == [f"time-activity curve: {o}" for o in organs]
    for (_, data), organ in zip(figs, organs, strict=True):
        assert base64.b64decode(data) == (results_dir / "tac" / f"tac_{organ}.png").read_bytes()


def test_missing_tac_figures_are_reported(full_results):
    """Without the tac/ folder the TAC table is still shown, and the section says that the
    plots were not computed (a report that silently drops them must fail this)."""
    import shutil

    d, prov = full_results
    shutil.rmtree(d / "tac")
    tac = _section(write_report(d, prov).read_text(encoding="utf-8"), "tac")
    assert "<figure>" not in tac and "kidneys" in tac          # the organ_tia.csv table
    assert NOT_COMPUTED in tac and "tac/tac_*.png" in tac


def test_report_escapes_strings_from_files(full_results):
    d, prov = full_results
    text = write_report(d, prov).read_text(encoding="utf-8")
    dvh = _section(text, "dvh")
    assert "<b>tumour</b>" not in text
    assert "&lt;b&gt;tumour&lt;/b&gt; &amp; &quot;x&quot;" in dvh
    assert "demo &lt;patient&gt;" in text  # study name from the provenance
    assert "<patient>" not in text
    assert "1.23e-05" in dvh and "4.123" in dvh and "4.123456" not in dvh  # compact numbers


def test_missing_inputs_say_not_computed(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    prov = {"study": {"name": "s"}, "skipped": {"marrow": "no L2-L4 vertebra labels"}}
    text = write_report(d, prov).read_text(encoding="utf-8")
    for sid in ("registration", "tac", "dose", "dvh", "mird", "marrow", "plan", "compare"):
        assert NOT_COMPUTED in _section(text, sid), sid
    assert "no L2-L4 vertebra labels" in _section(text, "marrow")
    assert "<pre>" in _section(text, "provenance")  # the record passed in, when no file


def test_unreadable_file_is_reported_not_fatal(full_results):
    d, prov = full_results
    (d / "plan.json").write_text("{not json")
    text = write_report(d, prov).read_text(encoding="utf-8")
    assert "could not render" in _section(text, "plan")
    assert "Lu-177" in _section(text, "compare")


def test_checkerboard_tiles():
    a, b = np.zeros((16, 16)), np.ones((16, 16))
    cb = checkerboard(a, b, tiles=8)
    assert cb[0, 0] == 0 and cb[0, 2] == 1 and cb[2, 0] == 1 and cb[2, 2] == 0
    assert cb.mean() == 0.5


def _ct_and_dose(shape=(12, 24, 20)):
    z, y, x = np.indices(shape)
    ct = np.where((y - 12) ** 2 + (x - 10) ** 2 < 64, 40.0, -1000.0)
    ct[(y - 15) ** 2 + (x - 10) ** 2 < 6] = 800.0
    dose = 5 * np.exp(-((z - 6) ** 2 + (y - 10) ** 2 + (x - 10) ** 2) / 8.0)
    return ct, dose


def test_plot_dose_slices_over_ct_and_without(tmp_path):
    ct, dose = _ct_and_dose()
    labels = (dose > 2).astype(np.int16)
    plot_dose_slices(tmp_path / "a.png", dose, (2.0, 1.0, 1.0), labels, (6, 10, 10), "t",
                     ct_hu=ct)
    plot_dose_slices(tmp_path / "b.png", dose, (2.0, 1.0, 1.0), None, (6, 10, 10), "t")
    for n in ("a.png", "b.png"):
        assert (tmp_path / n).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(Exception, match="shape"):
        plot_dose_slices(tmp_path / "c.png", dose, (2.0, 1.0, 1.0), None, (6, 10, 10), "t",
                         ct_hu=ct[:-1])
    assert not (tmp_path / "c.png").exists()


def test_plot_registration_check(tmp_path):
    from scipy import ndimage

    ct, _ = _ct_and_dose()
    moved = ndimage.shift(ct, (0, 2, 1), order=1, cval=-1000.0)
    moved[0] = np.nan  # outside the moving field of view
    plot_registration_check(tmp_path / "reg.png", ct, moved, (2.0, 1.0, 1.0), (6, 12, 10),
                            "frame 1 vs reference")
    assert (tmp_path / "reg.png").read_bytes()[:8] == PNG_MAGIC


def test_orientation_letters_follow_the_affine():
    from voxdose.report.plots import axis_letters

    ident = np.diag([4.0, 3.0, 2.0, 1.0])[:, [2, 1, 0, 3]]  # columns: z, y, x index axes
    assert axis_letters(ident, 0) == ("I", "S")   # +z index -> superior
    assert axis_letters(ident, 1) == ("A", "P")   # +y index -> posterior
    assert axis_letters(ident, 2) == ("R", "L")   # +x index -> patient left
    flipped = ident.copy()
    flipped[:3, 1] *= -1                            # y index running anterior
    assert axis_letters(flipped, 1) == ("P", "A")
