"""``report.html``: one self-contained page summarising a results folder.

Every figure is embedded as a base64 ``data:`` URI and the style sheet is inline, so the
file renders offline in any browser, without JavaScript, fonts or other files. Each section
has an ``id`` (``summary``, ``registration``, ``tac``, ``dose``, ``dvh``, ``mird``,
``marrow``, ``plan``, ``compare``, ``provenance``) and is always present; an input that is
missing gives "not computed for this study" with the reason when it is known
(``provenance["skipped"][section_id or file name]``, written by the pipeline), and a file that
cannot be read gives its error, never a failed report. Every string read from a file is
HTML-escaped. See docs/report.md.

Example::

    write_report(Path("results"), json.loads(Path("results/provenance.json").read_text()))
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from ..io.atomic import write_text

#: Section ids in page order, with their headings.
SECTIONS = (
    ("summary", "Study summary"),
    ("registration", "Registration check"),
    ("tac", "Time-activity curves"),
    ("dose", "Absorbed dose"),
    ("dvh", "Dose-volume histograms"),
    ("mird", "Organ-level MIRD check"),
    ("marrow", "Red marrow (EANM L2-L4)"),
    ("plan", "Activity planning"),
    ("compare", "Nuclide comparison"),
    ("provenance", "Provenance"),
)

NOT_COMPUTED = "not computed for this study"

# Column-name suffix -> unit, longest first (names say their unit, docs/conventions.md).
_UNITS = (
    ("_mgy_per_mbq_s", "mGy/(MBq·s)"), ("_bq_s_per_ml", "Bq·s/mL"), ("_gy_per_gbq", "Gy/GBq"),
    ("_g_cm3", "g/cm³"), ("_bq_ml", "Bq/mL"), ("_mbq_h", "MBq·h"), ("_bq_s", "Bq·s"),
    ("_percent", "%"), ("_gbq", "GBq"), ("_mbq", "MBq"), ("_bq", "Bq"), ("_gy", "Gy"),
    ("_ml", "mL"), ("_mm", "mm"), ("_h", "h"), ("_s", "s"), ("_g", "g"),
)
_LABELS = {"r2": "R²", "aicc": "AICc", "tia": "TIA", "t_eff": "T_eff", "mird_self": "MIRD self",
           "s_self": "S self", "user_s": "user S", "d2": "D2", "d50": "D50", "d98": "D98",
           "centre_mm_lps_xyz": "centre (LPS x, y, z; mm)", "r90_all_energy": "r90 all energy",
           "r90_electrons": "r90 electrons", "gy_per_gbq": "Gy/GBq",
           "after_h": "limit applies after (h)"}
# Columns whose values are names, never reformatted as numbers.
_TEXT_COLUMNS = {"name", "organ", "model", "params", "structure", "shell", "nuclide",
                 "limiting_organ", "limit", "method"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
color:#1d232a;background:#fff;line-height:1.45}
header{background:#1f3a5f;color:#fff;padding:14px 28px}
header h1{margin:0 0 6px 0;font-size:1.35em}
header nav a{color:#d9e6f7;margin-right:14px;text-decoration:none;font-size:.92em}
main{padding:4px 28px 40px 28px;max-width:1250px}
section{border-bottom:1px solid #d6dde5;padding:8px 0 18px 0}
h2{font-size:1.18em;color:#1f3a5f;margin:18px 0 8px 0}
h3{font-size:1em;margin:14px 0 6px 0}
table{border-collapse:collapse;margin:6px 0 10px 0;font-size:.86em}
th,td{border:1px solid #cfd7e0;padding:3px 8px;vertical-align:top}
th{background:#eef2f7;text-align:left;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:8px 0 14px 0}
figure img{max-width:100%;height:auto;border:1px solid #e1e6ec}
figcaption{font-size:.82em;color:#56606b}
.missing{color:#7a4b00;background:#fff6e0;border-left:4px solid #e0a100;padding:4px 10px;
margin:6px 0}
.error{color:#8a1020;background:#fdecee;border-left:4px solid #c8102e;padding:4px 10px}
.note{font-size:.85em;color:#56606b}
.key{font-size:1.05em;font-weight:600}
pre{background:#f5f7f9;border:1px solid #dde3ea;padding:10px;font-size:.78em;overflow-x:auto;
white-space:pre-wrap;word-break:break-word}
"""


# ---------------------------------------------------------------- formatting helpers

def esc(value) -> str:
    """HTML-escape ``value`` (as text), quotes included."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_number(x) -> str:
    """Compact text of a number: integers as they are, floats with 4 significant digits."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x == 0:
        return "0"
    return f"{x:.4g}"


_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf|infinity)$",
                     re.IGNORECASE)


def _cell(value, column: str = "") -> str:
    """One <td>: numbers (also numeric strings, as in CSV files) compact and right-aligned,
    everything else escaped; None or '' as a dash."""
    if value is None or value == "":
        return "<td>–</td>"
    if column not in _TEXT_COLUMNS:
        if isinstance(value, int | float):
            return f'<td class="n">{esc(fmt_number(value))}</td>'
        if isinstance(value, str) and _NUM_RE.match(value.strip()):
            s = value.strip()
            num = int(s) if re.fullmatch(r"[+-]?\d+", s) else float(s)
            return f'<td class="n">{esc(fmt_number(num))}</td>'
    if isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value):
        return f'<td class="n">{esc(", ".join(fmt_number(v) for v in value))}</td>'
    if isinstance(value, dict | list | tuple):
        return f"<td>{esc(json.dumps(value, default=str))}</td>"
    return f"<td>{esc(value)}</td>"


def heading(column: str) -> str:
    """Readable column heading with its unit, from a name that says the unit:
    ``mean_gy`` -> ``mean (Gy)``, ``s_self_mgy_per_mbq_s`` -> ``S self (mGy/(MBq·s))``."""
    if column in _LABELS:
        return _LABELS[column]
    for suffix, unit in _UNITS:
        if column.endswith(suffix) and len(column) > len(suffix):
            base = column[: -len(suffix)]
            return f"{_LABELS.get(base, base.replace('_', ' '))} ({unit})"
    return column.replace("_", " ")


def table(columns: list[str], rows: list[dict], headings: dict | None = None) -> str:
    """An HTML table of ``rows`` (dicts) with ``columns``; headings from :func:`heading`."""
    hd = headings or {}
    head = "".join(f"<th>{esc(hd.get(c, heading(c)))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c), c) for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(d: dict, skip: tuple = ()) -> str:
    """Key/value rows of a (nested) dict: nested dicts flattened as ``a / b``; lists of dicts
    as their own tables below."""
    rows, subtables = [], []

    def walk(obj, prefix):
        for k, v in obj.items():
            if k in skip and not prefix:
                continue
            label = f"{prefix}{heading(str(k))}"
            if isinstance(v, dict) and v:
                walk(v, f"{label} / ")
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                subtables.append((label, v))
            else:
                if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
                    v = "; ".join(v)
                rows.append(f"<tr><th>{esc(label)}</th>{_cell(v, str(k))}</tr>")

    walk(d, "")
    out = f"<table><tbody>{''.join(rows)}</tbody></table>" if rows else ""
    for label, items in subtables:
        out += f"<h3>{esc(label)}</h3>" + table(_columns(items), items)
    return out


def _columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def missing(what: str, reason: str | None = None) -> str:
    why = f": {esc(reason)}" if reason else ""
    return f'<p class="missing">{esc(what)}: {NOT_COMPUTED}{why}</p>'


# ---------------------------------------------------------------- reading the folder

class _Folder:
    """Read access to the results folder, with the pipeline's reasons for skipped outputs."""

    def __init__(self, root: Path, provenance: dict):
        self.root = Path(root)
        skipped = provenance.get("skipped") if isinstance(provenance, dict) else None
        self.skipped = skipped if isinstance(skipped, dict) else {}

    def reason(self, *keys: str) -> str | None:
        for k in keys:
            if self.skipped.get(k):
                return str(self.skipped[k])
        return None

    def path(self, name: str) -> Path | None:
        p = self.root / name
        return p if p.is_file() else None

    def figure(self, name: str, caption: str, section: str, required: bool = True) -> str:
        """<figure> with the PNG embedded; a "not computed" note if absent and required."""
        p = self.path(name)
        if p is None:
            if not required:
                return ""
            return missing(f"{caption} ({name})",
                           self.reason(name, section) or f"{name} is not in the results folder")
        return _figure(p, caption)

    def csv_rows(self, name: str) -> tuple[list[str], list[dict]] | None:
        p = self.path(name)
        if p is None:
            return None
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows

    def json(self, name: str):
        p = self.path(name)
        if p is None:
            return None
        return json.loads(p.read_text(encoding="utf-8"))


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    mime = "image/png" if path.suffix.lower() == ".png" else "image/" + path.suffix[1:].lower()
    return (f'<figure><img alt="{esc(caption)}" src="data:{mime};base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


# ---------------------------------------------------------------- sections

def _summary(folder: _Folder, prov: dict) -> str:
    st = prov.get("study") or {}
    if not st and not prov:
        return missing("study summary", folder.reason("summary") or "no provenance given")
    times = st.get("times_h")
    rows = [("study", st.get("name")), ("nuclide", st.get("nuclide")),
            ("administered activity (MBq)", st.get("administered_activity_mbq")),
            ("time points (h)", times),
            ("reference time point (index)", st.get("reference_timepoint")),
            ("study file", st.get("path")), ("created (UTC)", prov.get("created_utc")),
            ("device", prov.get("device"))]
    pvc = prov.get("pvc") or {}
    if pvc.get("method") not in (None, "none"):
        rows.append(("partial-volume correction", _pvc_summary(pvc)))
    timings = prov.get("timings_s") or {}
    if "total" in timings:
        rows.append(("total run time (s)", timings.get("total")))
    out = "<table><tbody>" + "".join(
        f"<tr><th>{esc(k)}</th>{_cell(v)}</tr>" for k, v in rows) + "</tbody></table>"
    key = _key_results(folder)
    if key:
        out += "<h3>Key results</h3>" + key
    versions = prov.get("voxdose")
    if isinstance(versions, dict) and versions:
        out += "<h3>Software versions</h3>" + table(["package", "version"], [
            {"package": k, "version": str(v)} for k, v in versions.items()],
            {"package": "package", "version": "version"})
    if timings:
        out += "<h3>Time per stage</h3>" + table(["stage", "seconds"], [
            {"stage": k, "seconds": v} for k, v in timings.items()],
            {"stage": "stage", "seconds": "time (s)"})
    return out


def _pvc_summary(pvc: dict) -> str:
    """One line on the partial-volume correction: method, FWHM, grid, completeness."""
    fwhm = pvc.get("fwhm_mm_xyz") or []
    fw = (f"{fwhm[0]:g}" if len(set(fwhm)) == 1 else ", ".join(f"{v:g}" for v in fwhm)) \
        if fwhm else "?"
    done = "complete" if pvc.get("complete", True) else \
        "INCOMPLETE: structures missing from the label map: " + \
        ", ".join(pvc.get("missing_structures") or [])
    return (f"{pvc.get('method')} (FWHM {fw} mm) on the TIA map; dose and statistics on the "
            f"{pvc.get('grid', 'label grid')}; {done}; uncorrected results in dvh_nopvc.csv "
            "and *_nopvc_* (pvc.json)")


def _key_results(folder: _Folder) -> str:
    items = []
    try:
        plan = folder.json("plan.json")
        if isinstance(plan, dict) and plan.get("max_activity_gbq") is not None:
            items.append(f"maximum activity {esc(fmt_number(plan['max_activity_gbq']))} GBq, "
                         f"limited by {esc(plan.get('limiting_organ', '?'))}")
        marrow = folder.json("marrow.json")
        if isinstance(marrow, dict) and marrow.get("total_dose_gy") is not None:
            items.append(f"red-marrow dose {esc(fmt_number(marrow['total_dose_gy']))} Gy "
                         "(EANM L2-L4)")
    except (OSError, ValueError, TypeError):
        return ""  # the sections themselves say what is wrong
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else ""


def _registration(folder: _Folder, prov: dict) -> str:
    asm = prov.get("assembly") or {}
    out = ""
    if asm.get("registration"):
        out += f'<p>Method: {esc(asm["registration"])} to the reference time point.</p>'
    out += folder.figure("registration.png", "fixed (reference) vs registered moving CT: "
                         "checkerboard, edges and difference", "registration")
    frames = [f for f in asm.get("frames") or [] if isinstance(f, dict)]
    reg_rows, notes = [], []
    for f in frames:
        if "registration" not in f and "time_h" not in f:
            if "negative_voxels_clipped" in f:
                notes.append(f"time point {f.get('time_index')}: "
                             f"{f['negative_voxels_clipped']} negative voxels set to 0")
            continue
        reg = f.get("registration") or {}
        t = _translation(reg.get("matrix_ref_to_moving_lps_mm"))
        rel = f.get("relative_change")
        reg_rows.append({"time_index": f.get("time_index"), "time_h": f.get("time_h"),
                         "relative_change_percent": None if rel is None else 100 * rel,
                         "final_metric_mattes_mi": reg.get("final_metric_mattes_mi"),
                         "iterations": reg.get("iterations"),
                         "tx_mm": t[0], "ty_mm": t[1], "tz_mm": t[2]})
    if reg_rows:
        out += table(list(reg_rows[0]), reg_rows, {
            "time_index": "time point", "time_h": "time (h)",
            "relative_change_percent": "activity change by resampling (%)",
            "final_metric_mattes_mi": "final Mattes MI (lower is better)",
            "tx_mm": "translation x (mm, LPS)", "ty_mm": "translation y (mm, LPS)",
            "tz_mm": "translation z (mm, LPS)"})
        out += ('<p class="note">Translation: last column of the rigid matrix from reference '
                "to moving (LPS mm); the reference time point is the identity.</p>")
    else:
        out += missing("per-frame registration results",
                       folder.reason("registration") or "no assembly record in the provenance")
    if notes:
        out += "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"
    return out


def _translation(matrix) -> tuple:
    try:
        return tuple(float(matrix[i][3]) for i in range(3))
    except (TypeError, ValueError, IndexError, KeyError):
        return (None, None, None)


def _csv_section(folder: _Folder, name: str, section: str, what: str) -> str:
    got = folder.csv_rows(name)
    if got is None:
        return missing(f"{what} ({name})",
                       folder.reason(name, section) or f"{name} is not in the results folder")
    cols, rows = got
    return table(cols, rows)


def _tac(folder: _Folder, prov: dict) -> str:
    out = _csv_section(folder, "organ_tia.csv", "tac", "organ time-integrated activities")
    pngs = sorted((folder.root / "tac").glob("tac_*.png")) if (folder.root / "tac").is_dir() \
        else []
    for p in pngs:
        out += _figure(p, f"time-activity curve: {p.stem[4:]}")
    if not pngs:
        out += missing("time-activity curve plots (tac/tac_*.png)",
                       folder.reason("tac/", "tac") or "no plot in the results folder")
    return out


def _dose(folder: _Folder, prov: dict) -> str:
    return folder.figure("dose_slice.png", "absorbed dose (Gy), axial and coronal slices "
                         "(over CT where available)", "dose")


def _dvh(folder: _Folder, prov: dict) -> str:
    out = folder.figure("dvh.png", "cumulative DVHs (kernel convolution)", "dvh")
    out += _csv_section(folder, "dvh.csv", "dvh", "DVH statistics")
    out += _dvh_sigma_table(folder)
    out += folder.figure("dvh_compare.png", "DVHs per structure for each compared nuclide",
                         "dvh", required=False)
    return out


def _dvh_sigma_table(folder: _Folder) -> str:
    """Standard uncertainty of each structure's mean dose from dvh.json (both bounds), when
    the results have one (docs/analysis.md, "Uncertainty")."""
    doc = folder.json("dvh.json")
    if not isinstance(doc, dict) or "uncertainty" not in doc:
        return ""
    rows = [{"name": st.get("name"), "mean_gy": st.get("mean_gy"),
             "sigma_mean_independent_gy": st.get("sigma_mean_independent_gy"),
             "sigma_mean_fully_correlated_gy": st.get("sigma_mean_fully_correlated_gy")}
            for st in doc.get("structures", []) if st.get("n_voxels")]
    note = doc["uncertainty"].get("correlation", "")
    return (f'<p class="note">Standard uncertainty of the mean dose from the TIA fit '
            f"(independent voxel errors, and the fully correlated bound). {esc(note)}</p>"
            + table(["name", "mean_gy", "sigma_mean_independent_gy",
                     "sigma_mean_fully_correlated_gy"], rows,
                    {"sigma_mean_independent_gy": "σ mean, independent (Gy)",
                     "sigma_mean_fully_correlated_gy": "σ mean, fully correlated (Gy)"}))


def _mird(folder: _Folder, prov: dict) -> str:
    out = ('<p class="note">Organ TIA x mass-scaled self S-value (electrons absorbed locally, '
           "photon absorbed fraction of a sphere of the organ's mass) beside the mean of the "
           "voxel dose map; difference = (voxel - MIRD) / MIRD.</p>")
    return out + _csv_section(folder, "mird_check.csv", "mird", "organ-level MIRD check")


def _json_or_missing(folder: _Folder, name: str, section: str, what: str):
    doc = folder.json(name)
    if doc is None:
        return None, missing(f"{what} ({name})", folder.reason(name, section)
                             or f"{name} is not in the results folder")
    if not isinstance(doc, dict):
        raise ValueError(f"{name}: expected a JSON object, got {type(doc).__name__}")
    return doc, ""


def _marrow(folder: _Folder, prov: dict) -> str:
    doc, msg = _json_or_missing(folder, "marrow.json", "marrow", "red-marrow dose")
    if doc is None:
        return msg
    out = ""
    if doc.get("total_dose_gy") is not None:
        out += (f'<p class="key">red-marrow absorbed dose: '
                f"{esc(fmt_number(doc['total_dose_gy']))} Gy</p>")
    return out + kv_table(doc)


def _plan(folder: _Folder, prov: dict) -> str:
    doc, msg = _json_or_missing(folder, "plan.json", "plan", "activity plan")
    if doc is None:
        return msg
    out = ""
    if doc.get("max_activity_gbq") is not None:
        out += (f'<p class="key">maximum activity: {esc(fmt_number(doc["max_activity_gbq"]))}'
                f" GBq, limited by {esc(doc.get('limiting_organ', '?'))}</p>")
    rows = [c for c in doc.get("constraints") or [] if isinstance(c, dict)]
    if rows:
        out += "<h3>Limits</h3>" + table(_columns(rows), rows, {
            "fraction_of_dose_limited": "fraction of the dose limited",
            "effective_half_life_h": "effective half-life (h)"})
    doses = doc.get("doses_at_plan_gy")
    doses = doses if isinstance(doses, dict) else {}
    per_gbq = doc.get("gy_per_gbq")
    per_gbq = per_gbq if isinstance(per_gbq, dict) else {}
    organs = list(dict.fromkeys([*per_gbq, *doses]))
    if organs:
        out += "<h3>Absorbed dose per organ at the planned activity</h3>" + table(
            ["organ", "gy_per_gbq", "dose_gy"],
            [{"organ": k, "gy_per_gbq": per_gbq.get(k), "dose_gy": doses.get(k)}
             for k in organs], {"dose_gy": "total dose at the planned activity (Gy)"})
    rest = {k: v for k, v in doc.items() if k not in
            ("max_activity_gbq", "limiting_organ", "constraints", "doses_at_plan_gy",
             "gy_per_gbq")}
    if rest:
        out += kv_table(rest)
    return out


def _compare(folder: _Folder, prov: dict) -> str:
    doc, msg = _json_or_missing(folder, "compare.json", "compare", "nuclide comparison")
    out = msg
    if doc is not None:
        top = {k: v for k, v in doc.items() if k != "nuclides"}
        out += kv_table(top)
        nucs = [n for n in doc.get("nuclides") or [] if isinstance(n, dict)]
        if nucs:
            out += "<h3>Mean dose and cross-fire per structure</h3>"
            out += _compare_overview(nucs)
        for n in nucs:
            name = n.get("nuclide", "?")
            out += f"<h3>{esc(name)}</h3>"
            r90 = {k: v for k, v in n.items() if k.startswith("r90")}
            if r90:
                out += kv_table(r90)
            st = [s for s in n.get("structures") or [] if isinstance(s, dict)]
            if st:
                out += table(_columns(st), st)
            shells = n.get("shells")
            if isinstance(shells, dict):
                for struct, rows in shells.items():
                    rows = [r for r in rows or [] if isinstance(r, dict)]
                    if rows:
                        out += f"<p>dose in shells outside {esc(struct)}</p>"
                        out += table(_columns(rows), rows)
            kernel = n.get("kernel")
            if isinstance(kernel, dict) and kernel:
                out += "<details><summary>kernel</summary>" + kv_table(kernel) + "</details>"
    out += folder.figure("dpk.png", "radial dose point kernels r² D(r) with the electron r90",
                         "compare", required=doc is not None)
    out += folder.figure("dvh_compare.png", "DVHs per structure for each nuclide",
                         "compare", required=doc is not None)
    return out


def _compare_overview(nucs: list[dict]) -> str:
    names: list[str] = []
    for n in nucs:
        names += [s.get("name") for s in n.get("structures") or []
                  if isinstance(s, dict) and s.get("name") not in names]
    cols = ["structure"]
    heads = {"structure": "structure"}
    for i, n in enumerate(nucs):
        nm = str(n.get("nuclide", f"nuclide {i}"))
        cols += [f"m{i}", f"c{i}"]
        heads[f"m{i}"] = f"{nm} mean (Gy)"
        heads[f"c{i}"] = f"{nm} cross-fire (%)"
    rows = []
    for s in names:
        row = {"structure": s}
        for i, n in enumerate(nucs):
            hit = next((x for x in n.get("structures") or [] if isinstance(x, dict)
                        and x.get("name") == s), {})
            cf = hit.get("cross_fire_fraction")
            row[f"m{i}"] = hit.get("mean_gy")
            row[f"c{i}"] = None if cf is None else 100 * float(cf)
        rows.append(row)
    return table(cols, rows, heads)


def _provenance(folder: _Folder, prov: dict) -> str:
    p = folder.path("provenance.json")
    if p is not None:
        text = p.read_text(encoding="utf-8")
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass  # shown as written
        return f"<p class=\"note\">provenance.json</p><pre>{esc(text)}</pre>"
    if prov:
        return ('<p class="note">provenance.json is not in the results folder; the record '
                "passed to the report:</p><pre>"
                + esc(json.dumps(prov, indent=2, ensure_ascii=False, default=str)) + "</pre>")
    return missing("provenance", folder.reason("provenance") or "no provenance record")


_RENDER: dict[str, Callable[[_Folder, dict], str]] = {
    "summary": _summary, "registration": _registration, "tac": _tac, "dose": _dose,
    "dvh": _dvh, "mird": _mird, "marrow": _marrow, "plan": _plan, "compare": _compare,
    "provenance": _provenance,
}


def render_report(results_dir: Path, provenance: dict | None) -> str:
    """The report's HTML text (see the module docstring)."""
    prov = provenance if isinstance(provenance, dict) else {}
    folder = _Folder(Path(results_dir), prov)
    st = prov.get("study") or {}
    title = "voxdose report" + (f": {st['name']}" if st.get("name") else "")
    parts = []
    for sid, head in SECTIONS:
        try:
            body = _RENDER[sid](folder, prov)
        except Exception as exc:  # one unreadable file must not lose the whole report
            body = (f'<p class="error">could not render this section: '
                    f"{esc(type(exc).__name__)}: {esc(exc)}</p>")
        parts.append(f'<section id="{sid}"><h2>{esc(head)}</h2>{body}</section>')
    nav = " ".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h in SECTIONS)
    sub = " · ".join(esc(x) for x in (st.get("nuclide"), prov.get("created_utc")) if x)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>"
            + (f'<div class="note" style="color:#d9e6f7">{sub}</div>' if sub else "")
            + f"<nav>{nav}</nav></header><main>{''.join(parts)}</main></body></html>\n")


def write_report(results_dir: Path, provenance: dict) -> Path:
    """Write ``results_dir / "report.html"`` atomically and return its path."""
    results_dir = Path(results_dir)
    out = results_dir / "report.html"
    write_text(out, render_report(results_dir, provenance))
    return out
