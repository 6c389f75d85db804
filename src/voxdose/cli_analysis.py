"""Analysis commands: ``voxdose dvh``, ``voxdose plan``, ``voxdose compare``.

Registered on the main app by :mod:`voxdose.cli` (every ``cli_*.py`` module is imported).
Errors are :class:`~voxdose.errors.InputError` (one line on stderr, exit 2); outputs are
written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .cli import app, console
from .errors import InputError


@app.command()
def dvh(
    dose: Path = typer.Argument(..., help="absorbed-dose image (Gy), NIfTI/MHD/NRRD"),
    labels: Path = typer.Argument(..., help="integer label image on the dose grid"),
    names: Path = typer.Option(None, "--names", help='JSON {"1": "liver", ...} (default: '
                               "label_<value> for every non-zero label)"),
    out: Path = typer.Option(..., "--out", help="DVH CSV: name,volume_ml,mean_gy,min_gy,"
                             "max_gy,d2_gy,d50_gy,d98_gy (doses Gy, volumes mL)"),
    json_out: Path = typer.Option(None, "--json", help="also write statistics, mass (g) and "
                                  "cumulative/differential DVH curves as JSON"),
    plot: Path = typer.Option(None, "--plot", help="also write a cumulative-DVH PNG"),
    density: Path = typer.Option(None, "--density", help="density map (g/cm^3) on the dose "
                                 "grid for masses (default: water, 1 g/cm^3)"),
    bins: int = typer.Option(200, "--bins", min=1, help="dose bins of the JSON DVH curves"),
):
    """Dose-volume histograms per structure (float64, voxel-exact D_x and V_x)."""
    from .analysis.dvh import compute_dvhs, dvh_csv, dvh_json, names_from_labels, read_names_json
    from .io.atomic import write_json, write_text
    from .io.sitk_adapter import read_image, read_labels

    name_map = read_names_json(names) if names is not None else None
    dose_img = read_image(dose, "absorbed dose", "Gy")
    lab = read_labels(labels, name_map or {})
    if name_map is None:
        lab = type(lab)(lab.data, lab.grid, names_from_labels(lab.data))
        if not lab.names:
            raise InputError(f"label image {labels} holds no non-zero label")
    rho = read_image(density, "density", "g/cm^3") if density is not None else None
    hs = compute_dvhs(dose_img, lab, rho)
    if plot is not None:
        from .report_plots import plot_dvhs

        plot_dvhs(plot, hs, f"cumulative DVH: {dose.name}")
    if json_out is not None:
        write_json(json_out, dvh_json(hs, n_bins=bins, meta={"dose": str(dose),
                                                             "labels": str(labels)}))
    write_text(out, dvh_csv(hs))
    t = Table(title=f"DVH of {dose.name}", caption="doses in Gy, volumes in mL")
    t.add_column("structure", no_wrap=True)
    for col in ("mL", "mass g", "mean", "min", "max", "D2", "D50", "D98"):
        t.add_column(col, justify="right")
    for h in hs:
        t.add_row(h.name, f"{h.volume_ml:.1f}", f"{h.mass_g:.1f}", f"{h.mean_gy:.3g}",
                  f"{h.min_gy:.3g}", f"{h.max_gy:.3g}", f"{h.d(2):.3g}", f"{h.d(50):.3g}",
                  f"{h.d(98):.3g}")
    console.print(t)
    console.print(f"wrote [bold]{out}[/]" + (f", {json_out}" if json_out else "")
                  + (f", {plot}" if plot else ""))


@app.command()
def plan(
    gy_per_gbq: list[str] = typer.Option(None, "--gy-per-gbq", help="ORGAN=X: absorbed dose "
                                         "per administered activity, Gy/GBq (repeat)"),
    limit: list[str] = typer.Option(None, "--limit", help="ORGAN=GY: dose limit, Gy (repeat)"),
    after_h: list[str] = typer.Option(None, "--after-h", help="ORGAN=H: the limit applies to "
                                      "the dose delivered after H hours (e.g. the stem-cell "
                                      "transplant)"),
    half_life_h: list[str] = typer.Option(None, "--half-life-h", help="ORGAN=H: effective "
                                          "half-life, h (mono-exponential), for --after-h"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    out: Path = typer.Option(None, "--out", help="also write the JSON result to this file"),
):
    """Largest administered activity (GBq) keeping every organ within its dose limit."""
    from .analysis.plan import limits_from_options, parse_pairs, plan_activity
    from .io.atomic import write_json

    a = parse_pairs(gy_per_gbq, "--gy-per-gbq")
    if not a:
        raise InputError("no --gy-per-gbq ORGAN=X given; give each organ's Gy/GBq")
    lims = limits_from_options(parse_pairs(limit, "--limit"), parse_pairs(after_h, "--after-h"),
                               parse_pairs(half_life_h, "--half-life-h"))
    result = plan_activity(a, lims)
    doc = result.to_dict()
    if out is not None:
        write_json(out, doc)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    t = Table(title="activity planning", caption="A_allowed = limit / (Gy/GBq x fraction)")
    for col in ("organ", "Gy/GBq", "limit", "fraction", "allowed GBq", "total Gy at plan",
                "limited Gy at plan"):
        t.add_column(col, justify="left" if col in ("organ", "limit") else "right")
    for c in result.constraints:
        d = c.as_dict(result.max_activity_gbq)
        t.add_row(c.organ, f"{c.gy_per_gbq:.4g}", c.limit.describe(), f"{c.fraction_after:.4g}",
                  f"{c.allowed_activity_gbq:.4g}", f"{d['total_dose_at_plan_gy']:.4g}",
                  f"{d['limited_dose_at_plan_gy']:.4g}")
    console.print(t)
    console.print(f"maximum activity [bold]{result.max_activity_gbq:.3f} GBq[/], limited by "
                  f"[bold]{result.limiting_organ}[/]")
