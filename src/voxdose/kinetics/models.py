"""Time-activity models, their analytic integrals to infinity, and a plain NumPy reference.

Times t in h inside the fitter (converted at the API boundary), activity (concentration)
a(t) >= 0, decay constants l in 1/h, amplitudes in the unit of a. The lower bound of every
decay constant is the physical one, lambda_p (biological washout cannot be negative), unless
the user lifts it (then lambda >= 1e-9 / h).

The model table (id, name, parameters in ``PARAM_NAMES`` order: a(t); TIA = integral from 0
to infinity). Models 1-4 are sums of at most three exponential terms
a(t) = sum_k c_k e^(-l_k t), so TIA = sum_k c_k / l_k and the integral from t0 on is
sum_k c_k e^(-l_k t0) / l_k; the terms are written once, in
:func:`voxdose.kinetics.lm_core.model_terms`, and every path (fitter on CPU and CUDA, this
module's NumPy reference, :mod:`voxdose.kinetics.after`) is derived from them.

0. ``trapz``: trapezoid over the samples, head 0 -> first sample;
   TIA = sum of trapezoids + a_last / lambda_tail.
1. ``mono`` (A, l): A e^(-l t); TIA = A / l.
2. ``biexp`` (uptake-washout; A, l1, l2): A (e^(-l1 t) - e^(-l2 t)), l2 > l1;
   TIA = A (1/l1 - 1/l2).
3. ``biexp_sum`` (A1, l1, A2, l2): A1 e^(-l1 t) + A2 e^(-l2 t); TIA = A1/l1 + A2/l2
   (component 1 the slower).
4. ``triexp`` (A1, l1, A2, l2, l3): A1 e^(-l1 t) + A2 e^(-l2 t) - (A1 + A2) e^(-l3 t),
   uptake l3 > l1, l2 and a(0) = 0; TIA = A1/l1 + A2/l2 - (A1 + A2)/l3.
5. ``stp`` (single time point): a(t1) e^(-l_eff (t - t1)) with an assumed effective
   half-life; TIA = a(t1) e^(l_eff t1) / l_eff.

Trapezoid tail (``tail``): ``physical`` (default) l_tail = lambda_p; ``fitted``: the
exponential through the last two samples, l_tail = ln(a_{n-2}/a_{n-1})/(t_{n-1}-t_{n-2}),
bounded below by lambda_p. Head rule: the curve rises linearly from 0 at t = 0 to the first
sample.

Single time point (Hänscheid et al., J Nucl Med 2018;59:75-81): with one measurement a(t1)
and an assumed effective half-life T_eff, a mono-exponential through the point gives
TIA = a(t1) exp(l_eff t1) / l_eff, l_eff = ln 2 / T_eff. Hänscheid's shortcut
TIA ~ a(t1) 2 t1 / ln 2 is this expression's value when t1 = T_eff; we use the exact
mono-exponential form for any t1.
"""

from __future__ import annotations

import numpy as np

from . import lm_core

MODEL_IDS = {"trapz": 0, "mono": 1, "biexp": 2, "biexp_sum": 3, "triexp": 4, "stp": 5}
MODEL_NAMES = {v: k for k, v in MODEL_IDS.items()}
N_PARAMS = {0: 0, **{m: lm_core.NPAR[m] for m in range(1, 5)}, 5: 1}
PARAM_NAMES = {
    1: ("A", "lambda_per_h"),
    2: ("A", "lambda1_per_h", "lambda2_per_h"),
    3: ("A1", "lambda1_per_h", "A2", "lambda2_per_h"),
    4: ("A1", "lambda1_per_h", "A2", "lambda2_per_h", "lambda3_per_h"),
}
#: Minimum number of samples to fit a model and still rank it by AICc (n - k - 1 >= 1).
MIN_POINTS = {m: lm_core.MIN_POINTS[m] for m in range(1, 5)}


def check_points_for_model(model: str, n_times: int, where: str) -> str | None:
    """A fitted model asked for (``mono`` ... ``triexp``) with fewer than its
    :data:`MIN_POINTS` time points: :class:`InputError` (no voxel could be fitted: every
    one would silently get the trapezoid). ``auto`` with 2 .. MIN_POINTS[mono] - 1 time
    points: the warning text (every voxel and organ integrated by the trapezoid and the
    physical-decay tail), else None. ``where``: the study file or the option, for the
    message."""
    from ..core.errors import InputError

    mono = MIN_POINTS[MODEL_IDS["mono"]]
    if model == "auto":
        if 2 <= n_times < mono:
            return (f"{where}: {n_times} time points: no model can be fitted (a "
                    f"mono-exponential needs {mono}), so every voxel and organ is integrated "
                    "by the trapezoid with a physical-decay tail after the last time point "
                    "(biological clearance after it is not seen)")
        return None
    mid = MODEL_IDS.get(model)
    if mid in MIN_POINTS and n_times < MIN_POINTS[mid]:
        raise InputError(f"{where}: --model {model} needs at least {MIN_POINTS[mid]} time "
                         f"points ({N_PARAMS[mid]} parameters, and n - k - 1 >= 1), got "
                         f"{n_times}; choose trapz, auto or a model with fewer parameters")
    return None

STATUS = {
    0: "converged",
    1: "converged with a parameter at its bound",
    2: "fit failed or not physical: trapezoid + tail fallback",
    3: "background: trapezoid + physical tail (not fitted)",
    4: "too few time points for the model: trapezoid + tail fallback",
    5: "single time point: mono-exponential with the assumed effective half-life (not fitted)",
}


def model_terms(model: int, p):
    """The exponential terms of model ``model`` (1-4) at parameters ``p`` (``PARAM_NAMES``
    order), from the fitter's one definition (:func:`lm_core.model_terms`, run as Python):
    c (K,), lambda (K,) in 1/h, and dc/dp, dlambda/dp (K, number of parameters)."""
    if model not in (1, 2, 3, 4):
        raise ValueError(f"model {model} is not a sum of exponentials (ids 1-4)")
    k = N_PARAMS[model]
    pp = np.zeros(lm_core.MAX_P)
    pp[:k] = np.asarray(p, dtype=np.float64)[:k]
    table = np.zeros((lm_core.MAX_K, lm_core.N_TCOL))
    terms = getattr(lm_core.model_terms, "py_func", lm_core.model_terms)  # no-JIT mode too
    nt, _ = terms(model, pp, table, True)
    table = table[:nt]
    return (table[:, lm_core.TC], table[:, lm_core.TL],
            table[:, lm_core.TDC:lm_core.TDC + k], table[:, lm_core.TDL:lm_core.TDL + k])


def model_curve(model: int, p, t_h):
    """a(t) = sum_k c_k exp(-lambda_k t) of a model (NumPy reference), t in h."""
    c, lam, _, _ = model_terms(model, p)
    t = np.asarray(t_h, dtype=np.float64)
    return sum(ck * np.exp(-lk * t) for ck, lk in zip(c, lam, strict=True))


def model_tia(model: int, p, t0_h: float = 0.0) -> float:
    """Analytic integral of a(t) from ``t0_h`` (default 0) to infinity,
    sum_k c_k exp(-lambda_k t0) / lambda_k (unit of a times h)."""
    c, lam, _, _ = model_terms(model, p)
    return float(np.sum(c * np.exp(-lam * t0_h) / lam))


def trapz_tia(t_h, a, lam_tail_per_h: float) -> float:
    """Trapezoid with the head rule (0 at t = 0) plus the exponential tail a_last/lambda_tail."""
    t = np.r_[0.0, np.asarray(t_h, dtype=np.float64)]
    y = np.r_[0.0, np.clip(np.asarray(a, dtype=np.float64), 0.0, None)]
    return float(np.trapezoid(y, t) + y[-1] / lam_tail_per_h)
