"""Activity planning: the largest administered activity that keeps every organ within its limit.

What
    For each organ k, the absorbed dose is linear in the administered activity A (GBq):
    D_k(A) = a_k A, with a_k the organ's absorbed dose per unit activity (Gy/GBq), e.g. from a
    pre-therapy (dosimetric) study. A limit L_k may apply

    * to the whole absorbed dose (kidneys <= 23 Gy):            a_k A <= L_k, or
    * to the dose delivered after a time t0 (red marrow <= 1 Gy from the stem-cell
      transplant on):                                          a_k f_k(t0) A <= L_k,

    with f_k(t0) the fraction of organ k's dose delivered after t0. Then

        A_max = min_k  L_k / (a_k f_k),   f_k = 1 for a whole-dose limit,

    and the limiting organ is the arg-min. Several limits on one organ are allowed (e.g. a
    total and an after-t0 limit); each is one constraint.

Fraction of the dose delivered after t0
    The dose rate is proportional to the organ's activity A_k(t) (same S-value at all times),
    so f(t0) = int_t0^inf A(t) dt / int_0^inf A(t) dt.

    * Mono-exponential assumption (``half_life_h``): A(t) = A(0) exp(-lambda_eff t) with
      lambda_eff = ln 2 / T_eff (T_eff the *effective* half-life, physical and biological):
      f(t0) = exp(-ln 2 t0 / T_eff). It ignores any uptake phase (which makes it slightly
      low when uptake is slow compared with t0) and assumes the washout stays
      mono-exponential after the last measurement.
    * Fitted kinetics (:class:`ExponentialKinetics`): a sum of exponentials
      A(t) = sum_i c_i exp(-l_i t) (uptake appears as a negative term): f(t0) =
      sum_i (c_i/l_i) exp(-l_i t0) / sum_i c_i/l_i. Any object with a method
      ``fraction_after(t_s) -> float`` can be given instead.

Example (the seed's scenario; numbers illustrative): kidneys 2.97 Gy/GBq, limit 23 Gy ->
23 / 2.97 = 7.744 GBq; red marrow 1.5 Gy/GBq with T_eff = 100 h and a limit of 1 Gy from the
transplant at 14 d (336 h): f = exp(-ln 2 x 336/100) = 0.0974, 1 / (1.5 x 0.0974) = 6.84 GBq,
so the marrow limits the activity to 6.84 GBq (kidneys then get 20.3 Gy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError
from ..core.units import SECONDS_PER_HOUR


@dataclass(frozen=True)
class ExponentialKinetics:
    """A(t) = sum_i c_i exp(-l_i t) for t >= 0 (t in s; c_i any unit, may be negative).

    ``rates_per_s`` must be > 0 and the total integral sum c_i/l_i > 0.
    """

    coefficients: tuple[float, ...]
    rates_per_s: tuple[float, ...]

    def __post_init__(self):
        c = np.asarray(self.coefficients, dtype=float)
        lam = np.asarray(self.rates_per_s, dtype=float)
        if c.shape != lam.shape or c.ndim != 1 or c.size == 0:
            raise InputError("kinetics need as many coefficients as rates (at least one)")
        if not (np.all(np.isfinite(c)) and np.all(np.isfinite(lam)) and np.all(lam > 0)):
            raise InputError("kinetics rates must be finite and > 0 (1/s)")
        if not float(np.sum(c / lam)) > 0:
            raise InputError("kinetics integrate to <= 0; check the fitted coefficients")

    @classmethod
    def mono(cls, effective_half_life_h: float) -> ExponentialKinetics:
        """Mono-exponential with effective half-life T_eff (h)."""
        t = _positive(effective_half_life_h, "effective half-life (h)")
        return cls((1.0,), (math.log(2.0) / (t * SECONDS_PER_HOUR),))

    def fraction_after(self, t_s: float) -> float:
        """f(t0) = int_t0^inf A / int_0^inf A (dimensionless, 0..1)."""
        if t_s < 0:
            raise InputError(f"time after administration must be >= 0 s, got {t_s}")
        c = np.asarray(self.coefficients, dtype=float)
        lam = np.asarray(self.rates_per_s, dtype=float)
        total = float(np.sum(c / lam))
        return float(min(1.0, max(0.0, np.sum(c / lam * np.exp(-lam * t_s)) / total)))


@dataclass(frozen=True)
class DoseLimit:
    """A limit on one organ's absorbed dose, Gy; optionally only the dose after ``after_h``.

    For an after-t0 limit give ``half_life_h`` (effective, mono-exponential) or ``kinetics``
    (anything with ``fraction_after(t_s)``).
    """

    organ: str
    limit_gy: float
    after_h: float | None = None
    half_life_h: float | None = None
    kinetics: object | None = None

    def fraction(self) -> float:
        """Fraction of the organ's dose the limit applies to (1 for a whole-dose limit)."""
        if self.after_h is None or self.after_h == 0:
            return 1.0
        kin = self.kinetics
        if kin is None:
            if self.half_life_h is None:
                raise InputError(
                    f"limit for '{self.organ}' applies after {self.after_h:g} h but no "
                    f"effective half-life or kinetics was given; add --half-life-h "
                    f"{self.organ}=H")
            kin = ExponentialKinetics.mono(self.half_life_h)
        return float(kin.fraction_after(self.after_h * SECONDS_PER_HOUR))

    def describe(self) -> str:
        if self.after_h is None or self.after_h == 0:
            return f"<= {self.limit_gy:g} Gy"
        src = (f"T_eff {self.half_life_h:g} h" if self.kinetics is None
               else "fitted kinetics")
        return f"<= {self.limit_gy:g} Gy after {self.after_h:g} h ({src})"


@dataclass(frozen=True)
class ConstraintResult:
    organ: str
    gy_per_gbq: float
    limit: DoseLimit
    fraction_after: float
    allowed_activity_gbq: float

    def as_dict(self, activity_gbq: float) -> dict:
        return {"organ": self.organ, "gy_per_gbq": self.gy_per_gbq,
                "limit_gy": self.limit.limit_gy, "after_h": self.limit.after_h,
                "effective_half_life_h": self.limit.half_life_h,
                "fraction_of_dose_limited": self.fraction_after,
                "allowed_activity_gbq": self.allowed_activity_gbq,
                "total_dose_at_plan_gy": self.gy_per_gbq * activity_gbq,
                "limited_dose_at_plan_gy": self.gy_per_gbq * self.fraction_after * activity_gbq,
                "limit": self.limit.describe()}


@dataclass(frozen=True)
class PlanResult:
    """Maximum activity (GBq), the limiting organ and every constraint's numbers."""

    max_activity_gbq: float
    limiting_organ: str
    constraints: tuple[ConstraintResult, ...]
    gy_per_gbq: dict = field(default_factory=dict)

    def doses_at_plan_gy(self) -> dict[str, float]:
        """Total absorbed dose of every organ with a Gy/GBq at the planned activity."""
        return {k: v * self.max_activity_gbq for k, v in self.gy_per_gbq.items()}

    def to_dict(self) -> dict:
        return {"max_activity_gbq": self.max_activity_gbq,
                "limiting_organ": self.limiting_organ,
                "constraints": [c.as_dict(self.max_activity_gbq) for c in self.constraints],
                "doses_at_plan_gy": self.doses_at_plan_gy(),
                "assumptions": "dose linear in activity (same kinetics per GBq); after-time "
                               "limits use f = exp(-ln2 t0/T_eff) (mono-exponential) unless "
                               "fitted kinetics are given"}


def _positive(v, what: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {v!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise InputError(f"{what} must be a positive number, got {v!r}")
    return x


def plan_activity(gy_per_gbq: dict[str, float], limits: Iterable[DoseLimit]) -> PlanResult:
    """A_max = min_k L_k / (a_k f_k) over the limits; see the module docstring."""
    a = {str(k): _positive(v, f"Gy/GBq of '{k}'") for k, v in gy_per_gbq.items()}
    limits = list(limits)
    if not limits:
        raise InputError("no dose limit given; add at least one --limit ORGAN=GY")
    rows = []
    for lim in limits:
        if lim.organ not in a:
            known = ", ".join(sorted(a)) or "none"
            raise InputError(f"limit for '{lim.organ}' but no Gy/GBq for it; add "
                             f"--gy-per-gbq {lim.organ}=X (known: {known})")
        _positive(lim.limit_gy, f"dose limit of '{lim.organ}' (Gy)")
        if lim.after_h is not None and (not math.isfinite(lim.after_h) or lim.after_h < 0):
            raise InputError(f"time of '{lim.organ}' limit must be >= 0 h, got {lim.after_h}")
        if lim.half_life_h is not None:
            _positive(lim.half_life_h, f"effective half-life of '{lim.organ}' (h)")
        f = lim.fraction()
        per_gbq = a[lim.organ] * f
        allowed = lim.limit_gy / per_gbq if per_gbq > 0 else math.inf
        rows.append(ConstraintResult(lim.organ, a[lim.organ], lim, f, allowed))
    best = min(rows, key=lambda r: r.allowed_activity_gbq)
    if not math.isfinite(best.allowed_activity_gbq):
        raise InputError("no limit constrains the activity (all limited dose fractions are 0)")
    return PlanResult(best.allowed_activity_gbq, best.organ, tuple(rows), a)


_PAIR = re.compile(r"^\s*([^=\s][^=]*?)\s*=\s*([^=]+?)\s*$")


def parse_pairs(items: Iterable[str] | None, option: str) -> dict[str, float]:
    """['kidneys=2.97', ...] -> {'kidneys': 2.97}; InputError names the option if malformed."""
    out: dict[str, float] = {}
    for item in items or []:
        m = _PAIR.match(str(item))
        if not m:
            raise InputError(f"{option} expects ORGAN=NUMBER, got '{item}'")
        organ, raw = m.group(1), m.group(2)
        try:
            value = float(raw)
        except ValueError:
            raise InputError(f"{option} {organ}: '{raw}' is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{option} {organ}: '{raw}' is not a finite number")
        if organ in out:
            raise InputError(f"{option} given twice for '{organ}'")
        out[organ] = value
    return out


def limits_from_options(limit: dict[str, float], after_h: dict[str, float],
                        half_life_h: dict[str, float]) -> list[DoseLimit]:
    """Combine the CLI's --limit, --after-h and --half-life-h maps into :class:`DoseLimit`s."""
    for organ in after_h:
        if organ not in limit:
            raise InputError(f"--after-h given for '{organ}' without --limit {organ}=GY")
    for organ in half_life_h:
        if organ not in after_h:
            raise InputError(f"--half-life-h given for '{organ}' without --after-h {organ}=H "
                             "(the effective half-life only matters for an after-time limit)")
    return [DoseLimit(o, gy, after_h.get(o), half_life_h.get(o)) for o, gy in limit.items()]
