"""The study-file schema: unknown keys and tables are errors with a suggestion, tables must
be tables, the docs table is the rendered schema, and the demo study loads as before."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from voxdose.core.errors import StudyError
from voxdose.study.load import Study, load_study
from voxdose.study.schema import DOCS_BEGIN, DOCS_END, KEYS, TABLES, markdown_table

DOCS = Path(__file__).resolve().parents[1] / "docs" / "io.md"
MINIMAL = ('[study]\nnuclide = "Lu-177"\nadministered_activity_mbq = 7400.0\n\n'
           '[[timepoints]]\ntime_h = 1.0\nspect = "spect.nii.gz"\n')


def _error(tmp_path, text) -> str:
    p = tmp_path / "study.toml"
    p.write_text(text)
    with pytest.raises(StudyError) as exc:
        load_study(p)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1, msg
    assert str(p) in msg  # names the file
    return msg


@pytest.mark.parametrize("text, key, suggestion", [
    (MINIMAL + "[spect]\ndecay_corected = false\n", "spect.decay_corected", "decay_corrected"),
    (MINIMAL.replace("administered_activity_mbq", "administered_activity_mq"),
     "study.administered_activity_mq", "administered_activity_mbq"),
    (MINIMAL.replace("time_h", "time_hr"), "timepoints[0].time_hr", "time_h"),
    (MINIMAL + "[plan]\nlimits_gy = { kidneys = 23.0 }\nafter = { kidneys = 1.0 }\n",
     "plan.after", "after_h"),
])
def test_unknown_key_names_key_file_and_suggestion(tmp_path, text, key, suggestion):
    msg = _error(tmp_path, text)
    assert f"unknown key '{key}'" in msg
    assert f"did you mean '{suggestion}'?" in msg
    assert "docs/io.md" in msg  # what to do: where the keys are listed


def test_unknown_table_names_table_file_and_suggestion(tmp_path):
    msg = _error(tmp_path, MINIMAL + '\n[registraton]\ngrid = "ct"\n')
    assert "unknown table [registraton]" in msg and "did you mean [registration]?" in msg
    msg = _error(tmp_path, MINIMAL.replace("[[timepoints]]", "[[timepoint]]"))
    assert "unknown table [[timepoint]]" in msg and "did you mean [[timepoints]]?" in msg


def test_unknown_key_without_a_close_match_lists_or_points_to_its_table(tmp_path):
    msg = _error(tmp_path, MINIMAL + "[spect]\nzzz = 1\n")
    assert "unknown key 'spect.zzz'" in msg and "decay_corrected" in msg  # the allowed keys
    msg = _error(tmp_path, 'sex = "male"\n' + MINIMAL)  # above every table header
    assert "unknown key 'sex' outside any table" in msg and "key of [patient]" in msg


def test_nested_unknown_table_is_an_unknown_key(tmp_path):
    msg = _error(tmp_path, MINIMAL + "[spect.extra]\nx = 1\n")
    assert "unknown key 'spect.extra'" in msg


@pytest.mark.parametrize("table", ["patient", "spect", "structures", "registration", "plan",
                                   "study"])
def test_a_table_given_as_a_value_is_an_error(tmp_path, table):
    text = MINIMAL if table != "study" else MINIMAL.split("[[timepoints]]")[1]
    msg = _error(tmp_path, f"{table} = 3\n" + ("" if table != "study" else "[[timepoints]]")
                 + text)
    assert f"[{table}] must be a table, got {table} = 3" in msg


def test_timepoints_must_be_an_array_of_tables(tmp_path):
    head = MINIMAL.split("[[timepoints]]")[0]
    assert "array of tables" in _error(tmp_path, "timepoints = 3\n" + head)
    assert "entry 0 must be a table" in _error(tmp_path, "timepoints = [1]\n" + head)


def test_values_are_checked_by_the_schema(tmp_path):
    msg = _error(tmp_path, MINIMAL + '[spect]\nunits = "Bq/ml"\n')
    assert "spect.units = 'Bq/ml' is not supported (did you mean 'Bq/mL'?)" in msg
    assert "must be true or false" in _error(tmp_path, MINIMAL + '[spect]\n'
                                                       'decay_corrected = "no"\n')
    assert "must be > 0, got 0" in _error(tmp_path, MINIMAL.replace("7400.0", "0"))
    assert "must be an integer" in _error(
        tmp_path, MINIMAL.replace("[study]", "[study]\nreference_timepoint = 1.0"))


def test_docs_table_is_the_rendered_schema():
    text = DOCS.read_text(encoding="utf-8")
    assert text.count(DOCS_BEGIN) == 1 and text.count(DOCS_END) == 1
    between = text.split(DOCS_BEGIN)[1].split(DOCS_END)[0]
    assert between == "\n" + markdown_table(), \
        "docs/io.md is out of date: paste the output of `python -m voxdose.study.schema`"


def test_every_schema_key_and_table_is_documented():
    rows = markdown_table().splitlines()
    for k in KEYS:
        table = next(t for t in TABLES if t.name == k.table)
        assert any(r.startswith(f"| `{table.header}` | `{k.name}` |") for r in rows), k
        assert k.help
    for t in TABLES:
        assert any(r.startswith(f"- `{t.header}`") for r in rows), t
    assert len(rows) == len(TABLES) + 3 + len(KEYS)  # no row without a key


def test_schema_names_are_unique_and_defaults_allowed():
    assert len({(k.table, k.name) for k in KEYS}) == len(KEYS)
    for k in KEYS:
        if k.choices and k.default is not None:
            assert k.default in k.choices, k


def test_study_takes_keyword_arguments_only():
    with pytest.raises(TypeError):
        Study(Path("s.toml"), "name")  # positional: refused


def test_demo_study_loads_as_before(small_study):
    """Values read off the loader before the schema rewrite (the --small demo study)."""
    st = load_study(small_study)
    folder = small_study.parent.resolve()
    assert st.path == small_study.resolve()
    assert st.name == "voxdose synthetic torso (CXCR4 ligand)"
    assert st.nuclide.name == "Lu-177" and st.nuclide.half_life_s == 574300.8
    assert st.administered_activity_mbq == 7400.0 and st.reference_index == 0
    assert st.times_h == [1.0, 4.0, 24.0, 48.0, 168.0] and st.has_ct
    assert st.spect_to_bq_ml == 1.0 and st.decay_corrected is False
    assert st.sex == "male"
    assert st.plan_limits_gy == {"kidneys": 23.0, "marrow": 1.0}
    assert st.plan_after_h == {"marrow": 336.0}
    assert (st.registration, st.dose_grid) == ("rigid", "spect")
    assert st.dpk is None and st.s_table is None and st.rtstruct is None
    assert st.administration is None and list(st.info) == ["labels_checked"]
    assert st.labels == folder / "labels.nii.gz"
    assert len(st.names) == 13 and st.names[3] == "liver" and st.names[13] == "lesion_lung"
    tp = st.timepoints[0]
    assert (tp.spect, tp.ct) == (folder / "spect_001h.nii.gz", folder / "ct_001h.nii.gz")
    assert tp.spect_dicom is None and tp.to_bq_ml == 1.0 and tp.decay_undo == 1.0
    assert tp.info["sidecar"] == str(folder / "spect_001h.json")  # agrees with study.toml
    assert st.single_time_point is None and st.allow_large_motion is False


def test_demo_study_with_every_optional_table(small_study, tmp_path):
    """The optional tables and their defaults: an explicit default changes nothing."""
    dst = tmp_path / "study"
    shutil.copytree(small_study.parent, dst)
    p = dst / "study.toml"
    p.write_text(p.read_text() + '\n[registration]\ntransform = "rigid"\ngrid = "spect"\n'
                 "[dose]\n[analysis]\n")
    a, b = load_study(small_study), load_study(p)
    assert (b.registration, b.dose_grid, b.dpk, b.s_table) == ("rigid", "spect", None, None)
    assert (b.times_h, b.names, b.plan_limits_gy, b.plan_after_h, b.spect_to_bq_ml) == \
        (a.times_h, a.names, a.plan_limits_gy, a.plan_after_h, a.spect_to_bq_ml)


@pytest.mark.parametrize("limits, bad", [
    ("{ kidneys = 23.0, marow = 1.0, marrow = 1.0 }", "'marow'"),   # a typo of marrow
    ("{ kidney = 23.0, marrow = 1.0 }", "'kidney'"),     # neither kidney_left nor kidneys
    ("{ liver = 30.0, heart = 5.0, marrow = 1.0 }", "'heart'"),
])
def test_plan_limit_for_a_structure_the_study_cannot_dose_is_refused_at_load(
        small_study, tmp_path, limits, bad):
    """Before any computation (the decisions found it only after the doses): one line that
    names the file, the unknown names and what may be named."""
    dst = tmp_path / "study"
    shutil.copytree(small_study.parent, dst)
    p = dst / "study.toml"
    text = p.read_text()
    start = text.index("limits_gy")
    end = text.index("\n", start)
    p.write_text(text[:start] + f"limits_gy = {limits}" + text[end:])
    with pytest.raises(StudyError) as exc:
        load_study(p)
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1 and str(p) in msg and bad in msg
    assert "cannot dose; known:" in msg and "kidneys" in msg and "marrow" in msg


def test_plan_targets_from_structure_names():
    from voxdose.study.sections import plan_targets

    assert plan_targets({1: "liver"}) == {"liver"}
    assert plan_targets({1: "kidney_left", 2: "marrow_L2", 3: "marrow_L3"}) == \
        {"kidney_left", "kidneys", "marrow_L2", "marrow_L3"}          # no L4: no marrow
    assert "marrow" in plan_targets({1: "marrow_L2", 2: "marrow_L3", 3: "marrow_L4"})
