"""Organ kinetics of the synthetic Lu-177 CXCR4-ligand study ([177Lu]Pentixather-like).

Each structure s holds, at time t after administration of A0,

    A_s(t) = A0 * f_s * (exp(-(lambda_p + lambda_b) t) - exp(-(lambda_p + lambda_u) t))

(uptake with rate lambda_u, biological washout lambda_b, physical decay lambda_p), whose
time integral from 0 to infinity is

    TIA_s = A0 * f_s * (1/(lambda_p + lambda_b) - 1/(lambda_p + lambda_u))     [Bq*s].

The parameters are illustrative and chosen to mimic the qualitative picture of CXCR4-directed
therapy (Herrmann et al., J Nucl Med 2016;57:248-251; Lapa et al., 2017): long retention
in red marrow and lesions, renal and hepatic clearance, fast-clearing remainder. They are
not patient data. The remainder of the administered activity (1 - sum f_s) is excreted
immediately and never seen by the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StructureKinetics:
    """Bi-exponential uptake/washout of one structure.

    fraction : f_s, the plateau fraction of administered activity (dimensionless)
    washout_half_life_h : biological washout half-life (h)
    uptake_half_life_h : uptake half-time (h)
    """

    fraction: float
    washout_half_life_h: float
    uptake_half_life_h: float

    def rates_per_s(self, lambda_phys_per_s: float) -> tuple[float, float]:
        lb = math.log(2) / (self.washout_half_life_h * 3600.0)
        lu = math.log(2) / (self.uptake_half_life_h * 3600.0)
        return lambda_phys_per_s + lb, lambda_phys_per_s + lu

    def activity_bq(self, times_s, a0_bq: float, lambda_phys_per_s: float):
        """A_s(t) in Bq at ``times_s`` (s after administration)."""
        l1, l2 = self.rates_per_s(lambda_phys_per_s)
        t = np.asarray(times_s, dtype=np.float64)
        return a0_bq * self.fraction * (np.exp(-l1 * t) - np.exp(-l2 * t))

    def tia_bq_s(self, a0_bq: float, lambda_phys_per_s: float) -> float:
        """Analytic integral of A_s(t) from 0 to infinity, Bq*s (number of decays)."""
        l1, l2 = self.rates_per_s(lambda_phys_per_s)
        return a0_bq * self.fraction * (1.0 / l1 - 1.0 / l2)


#: Kinetics per structure name for the CXCR4-ligand demo.
CXCR4_KINETICS: dict[str, StructureKinetics] = {
    "remainder": StructureKinetics(0.45, 8.0, 0.05),
    "lungs": StructureKinetics(0.02, 10.0, 0.1),
    "liver": StructureKinetics(0.08, 40.0, 0.5),
    "spleen": StructureKinetics(0.03, 70.0, 1.0),
    "kidney_left": StructureKinetics(0.025, 50.0, 1.5),
    "kidney_right": StructureKinetics(0.025, 50.0, 1.5),
    "bone": StructureKinetics(0.02, 120.0, 2.0),
    "marrow_L2": StructureKinetics(0.0025, 250.0, 2.0),
    "marrow_L3": StructureKinetics(0.0025, 250.0, 2.0),
    "marrow_L4": StructureKinetics(0.0025, 250.0, 2.0),
    "lesion_liver": StructureKinetics(0.004, 200.0, 3.0),
    "lesion_node": StructureKinetics(0.003, 300.0, 3.0),
    "lesion_lung": StructureKinetics(0.002, 150.0, 2.0),
}
