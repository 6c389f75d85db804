"""Analysis commands: ``voxdose dvh``, ``voxdose plan``, ``voxdose compare``.

Registered on the main app by :mod:`voxdose.cli.app` (each command module is imported there).
Errors are :class:`~voxdose.core.errors.InputError` (one line on stderr, exit 2); outputs are
written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .app import app, console
from ..core.errors import InputError


def _check_dvh_paths(dose, labels, names, density, out, json_out, plot) -> list[Path]:
    """The inputs of ``voxdose dvh`` exist and its outputs can be written (before any
    work); returns the output paths."""
    from ..io.sitk_adapter import sidecar_path
    from .checks import distinct_outputs, input_file, output_file

    input_file(dose, "DOSE", "dose image")
    input_file(labels, "LABELS", "label image")
    for opt, p, what in (("--names", names, "names file"),
                         ("--density", density, "density image")):
        if p is not None:
            input_file(p, opt, what)
    outs = {"--out": out, "--json": json_out, "--plot": plot}
    for opt, p in outs.items():
        if p is not None:
            output_file(p, opt)
    distinct_outputs(outs, [dose, sidecar_path(dose), labels, names, density])
    return [p for p in outs.values() if p is not None]


@app.command()
def dvh(
    dose: Path = typer.Argument(..., help="absorbed-dose image (Gy), NIfTI/MHD/NRRD"),
    labels: Path = typer.Argument(..., help="integer label image, on the dose grid or on "
                                  "another (e.g. the CT) grid: then each dose voxel counts "
                                  "with the fraction of it each structure fills"),
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
    """Dose-volume histograms per structure (float64, voxel-exact D_x and V_x, weighted by
    the fraction of each voxel a structure fills when the labels are on another grid)."""
    from ..analysis.dvh import (compute_dvhs, coverage_warnings, dvh_csv, dvh_json,
                                empty_structure_warnings, names_from_labels)
    from ..io.names import check_labels_named, read_names_json
    from ..io.atomic import write_json, write_text
    from ..io.sitk_adapter import DOSE_UNITS, check_sidecar_unit, read_image, read_labels

    outs = _check_dvh_paths(dose, labels, names, density, out, json_out, plot)
    name_map = read_names_json(names) if names is not None else None
    dose_img = read_image(dose, "absorbed dose", "Gy")
    check_sidecar_unit(dose_img, dose, DOSE_UNITS, "a DVH needs an absorbed-dose image in "
                       "Gy (e.g. from voxdose dose)")
    lab = read_labels(labels, name_map or {})
    if name_map is None:
        lab = type(lab)(lab.data, lab.grid, names_from_labels(lab.data))
        if not lab.names:
            raise InputError(f"label image {labels} holds no non-zero label")
    check_labels_named(lab.data, lab.names, labels)
    rho = read_image(density, "density", "g/cm^3") if density is not None else None
    hs = compute_dvhs(dose_img, lab, rho)
    warns = empty_structure_warnings(hs) + coverage_warnings(hs)
    for w in warns:
        console.print(f"voxdose: warning: {w}", style="yellow", markup=False, highlight=False)
    from ..io.atomic import staged_files

    with staged_files(outs) as stage:  # CSV, JSON and PNG: all of them or none
        if plot is not None:
            from ..report.plots import plot_dvhs

            plot_dvhs(stage(plot), hs, f"cumulative DVH: {dose.name}")
        if json_out is not None:
            write_json(stage(json_out), dvh_json(hs, n_bins=bins, meta={
                "dose": str(dose), "labels": str(labels), "warnings": warns}))
        write_text(stage(out), dvh_csv(hs))
    t = Table(title=f"DVH of {dose.name}", caption="doses in Gy, volumes in mL")
    t.add_column("structure", no_wrap=True)
    for col in ("mL", "mass g", "mean", "min", "max", "D2", "D50", "D98"):
        t.add_column(col, justify="right")
    for h in hs:
        if not h.n_voxels:
            t.add_row(h.name, "0", "0", *(["empty"] + [""] * 5))
            continue
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
    from ..analysis.plan import limits_from_options, parse_pairs, plan_activity
    from ..io.atomic import staged_files, write_json
    from .checks import output_file

    if out is not None:
        output_file(out, "--out")
    a = parse_pairs(gy_per_gbq, "--gy-per-gbq")
    if not a:
        raise InputError("no --gy-per-gbq ORGAN=X given; give each organ's Gy/GBq")
    lims = limits_from_options(parse_pairs(limit, "--limit"), parse_pairs(after_h, "--after-h"),
                               parse_pairs(half_life_h, "--half-life-h"))
    result = plan_activity(a, lims)
    doc = result.to_dict()
    if out is not None:
        with staged_files([out]) as stage:
            write_json(stage(out), doc)
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


def _check_compare_options(tia, labels, names, out, nuclides: str, shells_mm: str,
                           kernel_radius_mm) -> tuple[list[str], list[float]]:
    """The inputs, output folder and options of ``voxdose compare``, before any work;
    returns the nuclides and the shell distances (mm)."""
    from ..core.nuclide import canonical_name
    from .checks import input_file, number_list, output_folder, positive

    input_file(tia, "TIA", "TIA image")
    for opt, p, what in (("--labels", labels, "label image"), ("--names", names, "names file")):
        if p is not None:
            input_file(p, opt, what)
    output_folder(out, "--out")
    nucs = [canonical_name(n) for n in nuclides.split(",") if n.strip()]
    if not nucs:
        raise InputError("--nuclides: give at least one nuclide, e.g. Lu-177,Y-90")
    twice = sorted({n for n in nucs if nucs.count(n) > 1})
    if twice:  # its files would be written twice, its rows doubled in the summary
        raise InputError(f"--nuclides {nuclides}: {', '.join(twice)} given twice (names are "
                         "read as one: 177Lu = Lu-177); give each nuclide once")
    shells = number_list(shells_mm, "--shells-mm", "mm", above=0.0)
    if kernel_radius_mm is not None:
        positive(kernel_radius_mm, "--kernel-radius-mm", "mm")
    return nucs, shells


def _check_compare_kernels(nucs, tia_img, radius_mm, tia_path) -> None:
    """Each nuclide's kernel on the TIA's voxels, checked before any is built (voxel size,
    near-field work, memory: voxdose.kernels.extent)."""
    from ..kernels.extent import check_kernel_build, check_voxel_size, kernel_extent
    from ..kernels.point import load_point_kernel

    where = f"the voxels of {tia_path}"
    check_voxel_size(tia_img.grid.spacing_mm, where)
    for n in nucs:
        pk = load_point_kernel(n)
        ext = kernel_extent(pk, tia_img.grid.spacing_mm, tia_img.grid.shape, radius_mm)
        check_kernel_build(pk, tia_img.grid.spacing_mm, ext.radius_mm, where=where)


@app.command()
def compare(
    tia: Path = typer.Argument(..., help="TIA map, decays per voxel (Bq*s), NIfTI/MHD/NRRD"),
    nuclides: str = typer.Option("Lu-177,Y-90", "--nuclides", help="comma-separated "
                                 "nuclides; every one gets the SAME decays (TIA)"),
    labels: Path = typer.Option(None, "--labels", help="integer label image on the TIA grid"),
    names: Path = typer.Option(None, "--names", help='JSON {"1": "liver", ...} for --labels'),
    out: Path = typer.Option(..., "--out", help="results folder (written atomically)"),
    shells_mm: str = typer.Option("1,2,5", "--shells-mm", help="shell outer distances "
                                  "outside lesions/marrow, mm"),
    kernel_radius_mm: float = typer.Option(None, "--kernel-radius-mm", min=1.0,
                                           help="voxel kernel radius, mm; default: all but "
                                           "0.1 % of the energy per decay, at most the "
                                           "grid's extent (docs/defaults.md)"),
):
    """Dose for several nuclides from the same TIA: DVHs, cross-fire, shells, DPK figure."""
    from ..analysis.compare import compare_nuclides
    from ..report.compare_plots import plot_dpks, plot_dvh_overlay
    from ..analysis.dvh import dvh_csv, names_from_labels, read_names_json
    from ..io.atomic import staged_directory, write_json
    from ..io.sitk_adapter import (TIA_UNITS, check_sidecar_unit, read_image, read_labels,
                                   write_image)

    nucs, shells = _check_compare_options(tia, labels, names, out, nuclides, shells_mm,
                                          kernel_radius_mm)
    tia_img = read_image(tia, "time-integrated activity", "Bq*s per voxel")
    check_sidecar_unit(tia_img, tia, TIA_UNITS, "voxdose compare needs a TIA map in decays "
                       "per voxel (Bq*s), e.g. from voxdose tia")
    _check_compare_kernels(nucs, tia_img, kernel_radius_mm, tia)
    lab = None
    if labels is not None:
        lab = read_labels(labels, read_names_json(names) if names is not None else {})
        if names is None:
            lab = type(lab)(lab.data, lab.grid, names_from_labels(lab.data))
        from ..io.names import check_labels_named

        check_labels_named(lab.data, lab.names, labels)  # as dvh: none unnamed or negative
        if not lab.grid.same_as(tia_img.grid, tol_mm=1e-2):  # as compare_nuclides
            raise InputError(f"--labels {labels}: its grid ({lab.grid.describe()}) is not "
                             f"the grid of the TIA {tia} ({tia_img.grid.describe()}); "
                             "resample the labels onto the TIA grid")
    elif names is not None:
        raise InputError("--names given without --labels")
    results = compare_nuclides(tia_img, nucs, lab, shells_mm=shells,
                               kernel_radius_mm=kernel_radius_mm)
    with staged_directory(out) as stage:
        files = []
        for r in results:
            tag = r.nuclide.replace("-", "").lower()
            write_image(stage / f"dose_{tag}_gy.nii.gz", r.dose,
                        sidecar={"nuclide": r.nuclide, "tia": str(tia),
                                 "tia_basis": r.tia_basis,
                                 "note": "same decays (TIA) for every compared nuclide"})
            files.append(f"dose_{tag}_gy.nii.gz")
            if lab is not None:
                (stage / f"dvh_{tag}.csv").write_text(dvh_csv(r.dvhs))
                files.append(f"dvh_{tag}.csv")
        if lab is not None:
            plot_dvh_overlay(stage / "dvh_compare.png", results)
            files.append("dvh_compare.png")
        plot_dpks(stage / "dpk.png", nucs)
        files.append("dpk.png")
        write_json(stage / "compare.json", {
            "tia": str(tia), "tia_basis": results[0].tia_basis,
            "assumption": "the same TIA (number of decays) for every nuclide; "
            "a nuclide's own physical half-life would change the TIA",
            "shells_mm": shells, "nuclides": [r.to_dict() for r in results]})
        files.append("compare.json")
    t = Table(title="nuclide comparison (same decays)", caption="mean dose Gy; cross-fire = "
              "share of the mean dose from activity outside the structure")
    t.add_column("structure", no_wrap=True)
    for r in results:
        t.add_column(f"{r.nuclide} Gy", justify="right")
        t.add_column(f"{r.nuclide} x-fire", justify="right")
    for i, h in enumerate(results[0].dvhs):
        cells = []
        for r in results:
            cf = r.cross_fire_fraction.get(h.name)
            cells += [f"{r.dvhs[i].mean_gy:.3g}", "-" if cf is None else f"{100 * cf:.1f} %"]
        t.add_row(h.name, *cells)
    if lab is not None:
        console.print(t)
    for r in results:
        console.print(f"{r.nuclide}: electron r90 = {r.r90_electrons_mm:.2f} mm")
    console.print(f"results in [bold]{out}[/]: {', '.join(files)}")
