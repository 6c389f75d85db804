"""``cohort.html`` and its figures (``cohort_figures/``): Gy/GBq per organ across patients
(pre and post), predicted vs delivered dose, and the activity each limit allows per patient
(the limiting organ). The page is self-contained (figures embedded, the style sheet of
``report.html``) and links each study's own report.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

from ..report.html import _CSS, esc, table
from ..report.png import save_png
from .summary import KEY_ORGANS, PRE_POST_COLUMNS

FIGURE_DIR = "cohort_figures"
GY_PER_GBQ_PNG = "gy_per_gbq.png"
PREDICTED_PNG = "predicted_vs_delivered.png"
LIMITING_PNG = "limiting_organ.png"
FIGURES = (GY_PER_GBQ_PNG, PREDICTED_PNG, LIMITING_PNG)
#: panels of the Gy/GBq figure at most
MAX_PANELS = 9
_PHASE_STYLE = {"pre": ("o", "none", "#1f77b4"), "post": ("s", "#d62728", "#d62728"),
                "other": ("x", "#555555", "#555555")}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _panel_organs(summary: list[dict], limits: dict | None) -> list[str]:
    """Organs for the Gy/GBq figure: kidneys, liver, marrow, the limited organs, then other
    structures (not the kidney / L2-L4 parts of the composites, not the remainder)."""
    names = list(dict.fromkeys(r["structure"] for r in summary if r["gy_per_gbq"] is not None))
    first = [n for n in (*KEY_ORGANS, *(limits or {})) if n in names]
    rest = [n for n in names if n not in first and n != "remainder"
            and not (n.startswith("kidney") and "kidneys" in names)
            and not (n.startswith("marrow_") and "marrow" in names)]
    rest.sort(key=lambda n: not n.startswith("lesion"))  # tumour doses before other organs
    return list(dict.fromkeys(first + rest))[:MAX_PANELS]


def _patient_ticks(ax, patients: list[str]) -> None:
    ax.set_xticks(range(len(patients)))
    if len(patients) <= 60:
        ax.set_xticklabels(patients, rotation=90 if len(patients) > 8 else 0, fontsize=8)
    else:
        ax.set_xticklabels([])
    ax.set_xlim(-0.6, len(patients) - 0.4)


def plot_gy_per_gbq(path: Path, summary: list[dict], limits: dict | None) -> bool:
    """One panel per organ: Gy/GBq of every study, patients along x, pre (open circles) and
    post (filled squares) joined per patient."""
    organs = _panel_organs(summary, limits)
    if not organs:
        return False
    plt = _plt()
    patients = list(dict.fromkeys(r["patient"] for r in summary))
    col = {p: i for i, p in enumerate(patients)}
    ncols = min(3, len(organs))
    nrows = math.ceil(len(organs) / ncols)
    width = max(4.2, min(14.0, 0.35 * len(patients) + 2.5))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols / 1.6, 3.3 * nrows),
                             squeeze=False)
    for ax, organ in zip(axes.flat, organs):
        rows = [r for r in summary if r["structure"] == organ and r["gy_per_gbq"] is not None]
        for phase, (marker, face, edge) in _PHASE_STYLE.items():
            pts = [(col[r["patient"]], r["gy_per_gbq"]) for r in rows if r["phase"] == phase]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, facecolors=face, edgecolors=edge,
                           color=edge if marker == "x" else None, s=36, label=phase, zorder=3)
        for p in patients:
            pair = [r["gy_per_gbq"] for r in rows if r["patient"] == p
                    and r["phase"] in ("pre", "post")]
            if len(pair) >= 2:
                ax.plot([col[p]] * len(pair), pair, color="#999999", lw=1, zorder=1)
        ax.set_title(organ, fontsize=10)
        ax.set_ylabel("absorbed dose per activity (Gy/GBq)", fontsize=8)
        ax.set_ylim(0, 1.12 * max((r["gy_per_gbq"] for r in rows), default=1.0) or 1.0)
        ax.grid(axis="y", alpha=0.3)
        _patient_ticks(ax, patients)
    for ax in list(axes.flat)[len(organs):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, title="phase", title_fontsize=8)
    fig.suptitle("Gy/GBq per organ across patients (pre- and post-therapy studies)",
                 fontsize=11)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    return True


def plot_predicted_vs_delivered(path: Path, pre_post: list[dict],
                                limits: dict | None) -> bool:
    """Post-therapy dose against the dose the pre study predicted for the given activity,
    one colour per organ, the identity line (ratio 1) dashed."""
    organs = [o for o in dict.fromkeys((*KEY_ORGANS, *(limits or {})))
              if any(r["structure"] == o for r in pre_post)]
    if not organs:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    values = []
    for k, organ in enumerate(organs):
        rows = [r for r in pre_post if r["structure"] == organ and r["post_gy"] is not None]
        x = [r["predicted_gy"] for r in rows]
        y = [r["post_gy"] for r in rows]
        values += x + y
        ax.scatter(x, y, s=40, color=f"C{k}", label=organ, zorder=3)
        if len(rows) <= 20:
            for r in rows:
                ax.annotate(r["patient"], (r["predicted_gy"], r["post_gy"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
    pos = [v for v in values if v and v > 0]
    lo, hi = (min(pos), max(pos)) if pos else (0.1, 1.0)
    if hi / lo > 30:
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo, hi = lo / 1.5, hi * 1.5
    else:
        lo, hi = 0.0, hi * 1.1
    ax.plot([lo, hi], [lo, hi], "--", color="#777777", lw=1, label="delivered = predicted")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted from the pre study: pre Gy/GBq × given GBq (Gy)")
    ax.set_ylabel("delivered: post-therapy study (Gy)")
    ax.set_title("Predicted vs delivered absorbed dose", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    return True


def plan_constraints(plan: dict | None) -> list[tuple[str, float, str]]:
    """(organ, allowed GBq, limit text) of each constraint in a plan.json."""
    out = []
    for c in (plan or {}).get("constraints") or []:
        try:
            a = float(c["allowed_activity_gbq"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(a):
            out.append((str(c.get("organ", "?")), a, str(c.get("limit", ""))))
    return out


def limiting_rows(cohort, plans: dict, pre_post: list[dict]) -> list[dict]:
    """Per pre study with a plan: patient, planned activity, limiting organ, given."""
    given = {r["patient"]: r["given_activity_gbq"] for r in pre_post}
    rows = []
    for s in cohort.studies:
        plan = plans.get(s.id)
        if s.phase != "pre" or not plan:
            continue
        rows.append({"patient": s.patient, "pre_id": s.id,
                     "planned_activity_gbq": plan.get("max_activity_gbq"),
                     "limiting_organ": plan.get("limiting_organ", ""),
                     "given_activity_gbq": given.get(s.patient),
                     "constraints": plan_constraints(plan)})
    return rows


def plot_limiting(path: Path, rows: list[dict]) -> bool:
    """Per patient, the activity each limit allows (bars); the shortest bar (the limiting
    organ) hatched, the activity given (post study) as a black tick."""
    rows = [r for r in rows if r["constraints"]]
    if not rows:
        return False
    plt = _plt()
    organs = list(dict.fromkeys(c[0] for r in rows for c in r["constraints"]))
    colour = {o: f"C{k}" for k, o in enumerate(organs)}
    n = len(organs)
    fig, ax = plt.subplots(figsize=(7.2, min(30.0, 1.2 + 0.32 * n * len(rows) + 0.3)))
    h = 0.8 / n
    for i, r in enumerate(rows):
        for j, (organ, allowed, _) in enumerate(r["constraints"]):
            y = i + (j - (n - 1) / 2) * h
            lim = organ == r["limiting_organ"]
            ax.barh(y, allowed, height=h * 0.9, color=colour[organ],
                    hatch="///" if lim else None, edgecolor="black" if lim else "none")
        if r["given_activity_gbq"] is not None:
            ax.plot([r["given_activity_gbq"]] * 2, [i - 0.45, i + 0.45], color="black", lw=2)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[o]) for o in organs]
    handles.append(plt.Line2D([0], [0], color="black", lw=2))
    ax.legend(handles, [*organs, "activity given"], fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['patient']} ({r['limiting_organ']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("largest activity the limit allows (GBq); hatched: the limiting organ")
    ax.set_title("Planned activity per patient and its limiting organ", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    return True


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


_CAPTIONS = {
    GY_PER_GBQ_PNG: "Absorbed dose per administered activity (kernel dose; marrow: EANM "
                    "L2-L4) per organ and patient; pre-therapy open, post-therapy filled.",
    PREDICTED_PNG: "Dose delivered (post-therapy study) against the dose predicted from "
                   "the pre-therapy study for the activity given; dashed: equality.",
    LIMITING_PNG: "The activity each planning limit allows per patient (from the "
                  "pre-therapy study); hatched: the limiting organ; black tick: the "
                  "activity given.",
}


_PRE_POST_HEADINGS = {"pre_gy_per_gbq": "pre-therapy (Gy/GBq)",
                      "planned_activity_gbq": "planned activity (GBq)",
                      "given_activity_gbq": "given activity (GBq)",
                      "predicted_gy": "predicted: pre × given (Gy)",
                      "post_gy_per_gbq": "post-therapy (Gy/GBq)",
                      "post_gy": "delivered: post study (Gy)",
                      "ratio_post_pre": "delivered / predicted"}


def _studies_table(cohort, summary, outcomes, results) -> str:
    g = {(r["id"], r["structure"]): r["gy_per_gbq"] for r in summary}
    out = {o.id: o for o in outcomes}
    rows = []
    for s in cohort.studies:
        o, res = out[s.id], results.get(s.id)
        link = (f'<a href="{esc(res.report)}">{esc(s.id)}</a>' if res and res.report
                else esc(s.id))
        cells = [link, esc(s.patient), esc(s.phase), esc(o.status),
                 esc(f"{o.seconds:.1f}" if o.status == "done" else ""),
                 esc("" if res is None else f"{res.administered_activity_mbq:g}")]
        for organ in KEY_ORGANS:
            v = g.get((s.id, organ))
            cells.append(esc("" if v is None else f"{v:.3g}"))
        cells.append(esc(o.error or o.reason))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ["study", "patient", "phase", "status", "time (s)", "activity (MBq)",
            *(f"{o} (Gy/GBq)" for o in KEY_ORGANS), "note"]
    return ("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def render_html(cohort, summary, pre_post, plan_rows, outcomes, results, failures,
                figures: dict[str, Path]) -> str:
    """The page's HTML text."""
    n = {k: sum(o.status == k for o in outcomes) for k in ("done", "skipped", "failed")}
    lim = ", ".join(f"{k} ≤ {v:g} Gy" + (f" after {cohort.after_h[k]:g} h"
                                          if cohort.after_h and k in cohort.after_h else "")
                    for k, v in (cohort.limits_gy or {}).items()) or "each study's own [plan]"
    parts = [f"<p>{len(cohort.studies)} studies of "
             f"{len({s.patient for s in cohort.studies})} patients: {n['done']} run now, "
             f"{n['skipped']} up to date (not rerun), {n['failed']} failed. Planning limits: "
             f"{esc(lim)}. Cohort file: {esc(cohort.path)}.</p>"]
    for name, path in figures.items():
        parts.append(_figure(path, _CAPTIONS[name]))
    parts.append("<h2>Pre-therapy prediction and post-therapy dose</h2>")
    key = set(KEY_ORGANS) | set(cohort.limits_gy or {})
    shown = [r for r in pre_post if r["structure"] in key]
    parts.append((table(list(PRE_POST_COLUMNS), shown, _PRE_POST_HEADINGS)
                  + '<p class="note">kidneys, liver, marrow and the limited organs; '
                  "pre_post.csv has every structure both studies have</p>") if shown else
                 '<p class="missing">no patient with both a pre and a post study</p>')
    parts.append("<h2>Planned activity and limiting organ</h2>")
    plan_cols = ["patient", "pre_id", "planned_activity_gbq", "limiting_organ",
                 "given_activity_gbq"]
    parts.append(table(plan_cols, plan_rows) if plan_rows else
                 '<p class="missing">no plan (no limits in the cohort or the studies)</p>')
    if failures:
        parts.append("<h2>Failed studies</h2>" + table(["id", "error"], failures))
    parts.append("<h2>Studies</h2>" + _studies_table(cohort, summary, outcomes, results))
    title = f"voxdose cohort: {cohort.name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1></header><main>{''.join(parts)}</main>"
            "</body></html>\n")


def write_report(stage, out_dir: Path, cohort, summary, pre_post, plans, results, outcomes,
                 failures) -> set[str]:
    """The figures and cohort.html, each written where ``stage(final path)`` says.
    Returns the names of the figures written."""
    plan_rows = limiting_rows(cohort, plans, pre_post)
    makers = {GY_PER_GBQ_PNG: lambda p: plot_gy_per_gbq(p, summary, cohort.limits_gy),
              PREDICTED_PNG: lambda p: plot_predicted_vs_delivered(p, pre_post,
                                                                   cohort.limits_gy),
              LIMITING_PNG: lambda p: plot_limiting(p, plan_rows)}
    figures = {}
    for name, make in makers.items():
        p = stage(out_dir / FIGURE_DIR / name)
        if make(p):
            figures[name] = p
    html = render_html(cohort, summary, pre_post, plan_rows, outcomes, results, failures,
                       figures)
    stage(out_dir / "cohort.html").write_text(html, encoding="utf-8")
    return set(figures)
