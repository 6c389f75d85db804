"""Time-activity models, their analytic integrals to infinity, and a plain NumPy reference.

Times t in hours inside the fitter (converted at the API boundary), activity (concentration)
a(t) >= 0. The lower bound of every decay constant is the physical one, lambda_p (biological
washout cannot be negative), unless the user lifts it (then lambda >= 1e-9 / h).

Models (id, name: a(t); TIA = integral from 0 to infinity):

0. ``trapz``: trapezoid over the samples, head 0 -> first sample;
   TIA = sum of trapezoids + a_last / lambda_tail.
1. ``mono``: A e^(-l t); TIA = A / l.
2. ``biexp`` (uptake-washout): A (e^(-l1 t) - e^(-l2 t)), l2 > l1; TIA = A (1/l1 - 1/l2).
3. ``biexp_sum``: A1 e^(-l1 t) + A2 e^(-l2 t); TIA = A1/l1 + A2/l2 (component 1 the slower).
4. ``triexp``: A1 e^(-l1 t) + A2 e^(-l2 t) - (A1 + A2) e^(-l3 t), uptake l3 > l1, l2 and
   a(0) = 0; TIA = A1/l1 + A2/l2 - (A1 + A2)/l3.
5. ``stp`` (single time point): a(t1) e^(l_eff (t - t1)) with an assumed effective
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

Model parameters are ordered as listed in ``PARAM_NAMES``; amplitudes share the unit of a,
decay constants are 1/h.
"""

from __future__ import annotations

import numpy as np

MODEL_IDS = {"trapz": 0, "mono": 1, "biexp": 2, "biexp_sum": 3, "triexp": 4, "stp": 5}
MODEL_NAMES = {v: k for k, v in MODEL_IDS.items()}
N_PARAMS = {0: 0, 1: 2, 2: 3, 3: 4, 4: 5, 5: 1}
PARAM_NAMES = {
    1: ("A", "lambda_per_h"),
    2: ("A", "lambda1_per_h", "lambda2_per_h"),
    3: ("A1", "lambda1_per_h", "A2", "lambda2_per_h"),
    4: ("A1", "lambda1_per_h", "A2", "lambda2_per_h", "lambda3_per_h"),
}
#: Minimum number of samples to fit a model and still rank it by AICc (n - k - 1 >= 1).
MIN_POINTS = {1: 4, 2: 5, 3: 6, 4: 7}

STATUS = {
    0: "converged",
    1: "converged with a parameter at its bound",
    2: "fit failed or not physical: trapezoid + tail fallback",
    3: "background: trapezoid + physical tail (not fitted)",
    4: "too few time points for the model: trapezoid + tail fallback",
}


def model_curve(model: int, p, t_h):
    """a(t) of a model (NumPy reference)."""
    t = np.asarray(t_h, dtype=np.float64)
    if model == 1:
        return p[0] * np.exp(-p[1] * t)
    if model == 2:
        return p[0] * (np.exp(-p[1] * t) - np.exp(-p[2] * t))
    if model == 3:
        return p[0] * np.exp(-p[1] * t) + p[2] * np.exp(-p[3] * t)
    if model == 4:
        return (p[0] * np.exp(-p[1] * t) + p[2] * np.exp(-p[3] * t)
                - (p[0] + p[2]) * np.exp(-p[4] * t))
    raise ValueError(f"model {model} has no closed-form curve")


def model_tia(model: int, p) -> float:
    """Analytic integral of a(t) from 0 to infinity (unit of a times h)."""
    if model == 1:
        return p[0] / p[1]
    if model == 2:
        return p[0] * (1.0 / p[1] - 1.0 / p[2])
    if model == 3:
        return p[0] / p[1] + p[2] / p[3]
    if model == 4:
        return p[0] / p[1] + p[2] / p[3] - (p[0] + p[2]) / p[4]
    raise ValueError(f"model {model} has no closed-form integral")


def trapz_tia(t_h, a, lam_tail_per_h: float) -> float:
    """Trapezoid with the head rule (0 at t = 0) plus the exponential tail a_last/lambda_tail."""
    t = np.r_[0.0, np.asarray(t_h, dtype=np.float64)]
    y = np.r_[0.0, np.clip(np.asarray(a, dtype=np.float64), 0.0, None)]
    return float(np.trapezoid(y, t) + y[-1] / lam_tail_per_h)


def aicc(rss: float, n: int, k: int) -> float:
    """Corrected Akaike information criterion, n ln(RSS/n) + 2k + 2k(k+1)/(n-k-1)."""
    return n * np.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)
