"""``voxdose pvc``: partial-volume correction of one SPECT frame (Bq/mL in, Bq/mL out).

Every option is checked and every input read before any work; the corrected image and its
JSON sidecar (the region table, the GTM condition number, totals, the grid used, warnings)
are written atomically at the end. ``--json`` prints the report as JSON instead of a table.
Methods and equations: docs/pvc.md (:mod:`voxdose.pvc`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table

from .app import app, console
from ..core.errors import InputError

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".nrrd")
_BQ_ML = ("bq/ml", "bq ml-1", "bq/cc")


def _check_paths(frame: Path, labels: Path, names: Path | None, body: Path | None,
                 rc_table: Path | None, out: Path) -> None:
    """The input files exist and the output can be written, before any work (the shared
    checks of every command, voxdose.cli.checks; docs/io.md "Command-line checks")."""
    from ..io.sitk_adapter import sidecar_path
    from .checks import distinct_outputs, input_file, output_file

    input_file(frame, "FRAME", "SPECT image")
    input_file(labels, "--labels", "label image")
    for opt, p, what in (("--names", names, "names file"), ("--body", body, "body mask"),
                         ("--rc-table", rc_table, "RC table")):
        if p is not None:
            input_file(p, opt, what)
    output_file(out, "--out", _IMAGE_SUFFIXES)
    distinct_outputs({"--out": out}, [frame, sidecar_path(frame), labels, names, body,
                                      rc_table], sidecars=True)


def _check_options(out: Path, method: str, fwhm_mm: str | None, rc_table: Path | None,
                   iterations: int, device: str):
    from ..core.backend import DEVICES
    from ..pvc.correct import check_method
    from ..pvc.psf import parse_fwhm

    m = check_method(method, fwhm_mm, rc_table)
    fwhm = parse_fwhm(fwhm_mm) if fwhm_mm is not None else None
    if iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {iterations}")
    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    return m, fwhm


def _read_inputs(frame: Path, labels: Path, names: Path | None, body: Path | None):
    import numpy as np

    from ..io.names import check_labels_named, read_names_json
    from ..io.sitk_adapter import read_image, read_labels

    img = read_image(frame, "activity concentration", "Bq/mL")
    unit = str(img.meta.get("unit", "")).strip().lower()
    if unit and unit not in _BQ_ML:
        raise InputError(f"{frame}: its sidecar gives the unit '{img.meta['unit']}'; voxdose "
                         "pvc corrects activity concentration in Bq/mL")
    name_map = read_names_json(names) if names is not None else {}
    lab = read_labels(labels, name_map)
    if lab.data.size and int(lab.data.min()) < 0:  # a CT or an activity image as labels
        raise InputError(f"{labels}: negative label values (min {int(lab.data.min())}); "
                         "labels are 0 (background) or positive integers: give the label "
                         "image (--labels), not a CT")
    if names is not None:
        check_labels_named(lab.data, name_map, labels)
    else:
        values = [int(v) for v in np.unique(lab.data) if v > 0]
        if not values:
            raise InputError(f"{labels}: no structure (every voxel is 0); give a label map "
                             "with the structures as positive integers")
        lab = type(lab)(lab.data, lab.grid, {v: f"label_{v}" for v in values})
    body_mask = None
    if body is not None:
        b = read_labels(body, {})
        if not b.grid.same_as(lab.grid):
            raise InputError(f"--body {body} is not on the label grid of {labels} "
                             f"({b.grid.describe()} vs {lab.grid.describe()}); give the body "
                             "mask on the label (CT) grid")
        body_mask = b.data != 0
    return img, lab, body_mask


def _print_table(res) -> None:
    t = Table(title=f"partial-volume correction: {res.method} (output on the {res.grid_name})",
              title_style="bold", caption="concentrations in Bq/mL; recovery: GTM diagonal "
              "(gtm, rbv, iy) or RC table (rc)")
    for col in ("region", "mL", "in FOV", "observed", "corrected", "output mean", "recovery"):
        t.add_column(col, justify="left" if col == "region" else "right", no_wrap=True)

    def f(x, fmt=".4g"):
        return format(x, fmt) if x is not None and math.isfinite(x) else "-"

    for r in res.rows:
        t.add_row(r.name, f(r.volume_ml, ".1f"), f(r.fraction_in_fov, ".2f"),
                  f(r.observed_mean_bq_ml), f(r.corrected_mean_bq_ml),
                  f(r.output_mean_bq_ml), f(r.recovery, ".3f"))
    console.print(t)


@app.command()
def pvc(
    frame: Path = typer.Argument(..., help="SPECT activity-concentration image, Bq/mL "
                                 "(NIfTI/MHD/NRRD)"),
    labels: Path = typer.Option(..., "--labels", help="integer label image of the structures "
                                "on its own (e.g. CT) grid, in the SPECT's patient frame"),
    names: Path = typer.Option(None, "--names", help='structure names JSON {"1": "liver", '
                               '...} (default: label_<value> for every value present)'),
    fwhm_mm: str = typer.Option(None, "--fwhm-mm", help="SPECT resolution, Gaussian FWHM in "
                                "mm: one number or x,y,z (needed by gtm, rbv, iy)"),
    method: str = typer.Option(..., "--method", help="gtm (region means), rbv (voxel-wise, "
                               "GTM-driven), iy (iterative Yang), rc (recovery table), none"),
    out: Path = typer.Option(..., "--out", help="corrected image, Bq/mL (float32): on the "
                             "label grid for gtm/rbv/iy, on the SPECT grid for rc/none"),
    rc_table: Path = typer.Option(None, "--rc-table", help="method rc: CSV volume_ml,recovery "
                                  "from your sphere-phantom measurement"),
    body: Path = typer.Option(None, "--body", help="body mask on the label grid (non-zero = "
                              "body): adds a background region (body minus the structures)"),
    iterations: int = typer.Option(20, "--iterations", help="method iy: number of iterations"),
    device: str = typer.Option("cpu", "--device", help="where the label-grid arrays are "
                               "computed: cpu, gpu or auto"),
    as_json: bool = typer.Option(False, "--json", help="print the region table as JSON"),
):
    """Partial-volume correction of a SPECT frame with a Gaussian PSF and the structures of
    a label map (GTM, RBV, iterative Yang) or a recovery table (RC)."""
    from .. import __version__
    from ..core.backend import get_backend
    from ..core.grid import Image
    from ..io.atomic import staged_files
    from ..io.sitk_adapter import check_finite_output, write_image
    from ..pvc.correct import correct, prepare
    from ..pvc.rc import read_rc_table

    _check_paths(frame, labels, names, body, rc_table, out)
    m, fwhm = _check_options(out, method, fwhm_mm, rc_table, iterations, device)
    table = read_rc_table(rc_table) if m == "rc" else None
    img, lab, body_mask = _read_inputs(frame, labels, names, body)
    be = get_backend(device)
    setup = prepare(lab.data, lab.grid, lab.names, img.grid, m, fwhm_mm=fwhm,
                    rc_table=table, body_mask=body_mask, n_iter=iterations, backend=be)
    res = correct(img.data, setup, frame=str(frame), labels=str(labels))
    report = res.to_dict()
    report.update({"inputs": {"frame": str(frame), "labels": str(labels),
                              "names": None if names is None else str(names),
                              "body": None if body is None else str(body),
                              "rc_table": None if rc_table is None else str(rc_table)},
                   "voxdose_version": __version__, "device": be.name})
    out_img = Image(res.image, res.grid, "activity concentration (partial-volume corrected)",
                    "Bq/mL")
    check_finite_output(out, out_img, "float32")
    with staged_files([out]) as stage:  # the image and its sidecar, both or neither
        write_image(stage(out), out_img, sidecar={"pvc": report})
    if as_json:
        print(json.dumps(report, indent=2, allow_nan=False))
        return
    for w in res.warnings:
        console.print(f"voxdose: warning: {w}", style="yellow", markup=False, highlight=False)
    _print_table(res)
    tot = res.totals_bq
    cond = "" if res.condition_number is None else \
        f"; GTM condition number {res.condition_number:.3g}"
    console.print(f"activity: image {tot['image_total_bq']:.4g} Bq, corrected "
                  f"{tot['corrected_total_bq']:.4g} Bq{cond}", highlight=False)
    console.print(f"written {out} ({res.grid_name}, {res.grid.describe()})"
                  + ("" if res.complete else "; correction INCOMPLETE (see warnings)"),
                  highlight=False)
