"""Generate the shipped radial dose point kernels (kernels/<Nuclide>_<medium>.csv + .json).

Run from the repository root::

    PYTHONPATH=src python scripts/generate_kernels.py [--electrons N] [--photons N]
        [--nuclides Lu-177,Y-90] [--media water,soft-tissue,lung,bone] [--seed S]

Each table comes from :func:`voxdose.montecarlo.dpk.simulate_dpk` (the project's own class II
electron and Klein-Nishina photon Monte Carlo, ICRP-107 emissions, the medium's
composition from :mod:`voxdose.montecarlo.media`).  The CSV has columns
``r_mm,dose_Gy_per_decay,rel_uncertainty`` (shell mid radius; shell-average dose per decay
in the medium; 1-sigma relative statistical uncertainty from batch statistics); the JSON
beside it records the code version, medium, histories, seed, time, energy balance and
settings.

Lu-177 and Y-90 (the shipped tables) use the fixed history counts of
``DEFAULT_HISTORIES`` and 20 batches; any other nuclide (``--nuclides I-131``) is planned
like a table built on first use (:func:`voxdose.montecarlo.dpk.plan_build`: a pilot run,
then the fewest electrons and photons for <= 0.5 % statistical uncertainty in the voxel
kernel's first three shells of voxels at 1, 2 and 4 mm, 40 batches) unless
``--electrons``/``--photons`` are given.  Every table prints (and records) the uncertainty
of its first three (radial) shells.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from voxdose import __version__  # noqa: E402
from voxdose.kernels.voxel import voxel_shell_scores  # noqa: E402
from voxdose.montecarlo.dpk import (  # noqa: E402
    build_dpk,
    plan_build,
    simulate_dpk,
    write_dpk_csv,
)

DEFAULT_HISTORIES = {"Lu-177": (2_000_000, 2_000_000), "Y-90": (1_000_000, 10_000)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nuclides", default="Lu-177,Y-90")
    ap.add_argument("--electrons", type=int, default=None)
    ap.add_argument("--photons", type=int, default=None)
    ap.add_argument("--media", default="water,soft-tissue,lung,bone")
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--out", type=Path, default=ROOT / "kernels")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # compile once on a tiny run so the recorded time is the transport's
    simulate_dpk("Lu-177", 2000, 2000, n_batches=2, seed=1)
    for name, medium in [(n, m) for n in args.nuclides.split(",")
                         for m in args.media.split(",")]:
        t0 = time.perf_counter()
        res = _run(name, medium, args)
        rec = res.record()
        rec.update({
            "voxdose_version": __version__,
            "generated_by": "scripts/generate_kernels.py",
            "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_seconds": time.perf_counter() - t0,
            "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "numba_threads": int(__import__("numba").get_num_threads()),
            "csv_columns": f"r_mm (shell mid radius), dose_Gy_per_decay (shell average, "
                           f"{res.medium} at {res.density_g_cm3} g/cm3), rel_uncertainty "
                           "(1 sigma, batch statistics)",
            "shell_edges_mm": [float(v) for v in res.edges_mm],
        })
        stem = args.out / f"{res.nuclide}_{res.medium}"
        write_dpk_csv(stem.with_suffix(".csv"), res.r_mm, res.dose_gy_per_decay,
                      res.rel_uncertainty)
        stem.with_suffix(".json").write_text(json.dumps(rec, indent=1) + "\n")
        d = res.dose_gy_per_decay
        print(f"{res.nuclide} in {res.medium}: {res.n_electrons} e- + {res.n_photons} photons in "
              f"{res.seconds:.1f} s; absorbed {res.absorbed_mev:.6f} of "
              f"{res.emitted_mev:.6f} MeV/decay (bremsstrahlung photons "
              f"{res.bremsstrahlung_mev:.2e}, "
              f"escaped {res.escaped_mev:.2e}); balance {res.balance():.1e}; "
              f"max rel sigma (D > 1e-3 max) "
              f"{np.max(res.rel_uncertainty[d > 1e-3 * d.max()]):.3%}; first three shells "
              + ", ".join(f"{v:.2%}" for v in res.first_shells_rel_uncertainty()))
    return 0


def _run(name: str, medium: str, args):
    """The shipped nuclides with their fixed histories; others planned (or as asked)."""
    if name in DEFAULT_HISTORIES:
        ne, nph = DEFAULT_HISTORIES[name]
        return simulate_dpk(name, args.electrons or ne, args.photons or nph, seed=args.seed,
                            medium=medium)
    asked = None
    if args.electrons or args.photons:
        asked = (args.electrons or 1_000_000, args.photons or 1_000_000)
    plan = plan_build(name, medium, asked, scores=voxel_shell_scores, seed=args.seed)
    print(f"{name} in {medium}: {plan.n_electrons} e- + {plan.n_photons} photons "
          f"(expected ~{plan.estimate_s or 0:.0f} s)")
    return build_dpk(name, medium, plan, seed=args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
