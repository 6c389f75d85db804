"""The four TAC models are defined once (``lm_core.model_terms``); every path derived from
that definition is checked here against an independent closed-form oracle (the model table
of ``kinetics/models.py``, written out again below) and against numerical calculus:

* NumPy reference (``models.model_curve`` / ``model_tia``), njit ``model_eval`` value and
  Jacobian (central finite differences), ``tia_from_and_grad`` to infinity and from t0
  (``scipy.integrate.quad`` of the curve) and its gradient (finite differences);
* ``after.activity_at`` / ``tia_after`` on a small fitted map, organ fit outputs;
* the CUDA kernel under the simulator, including the tri-exponential model.

Tolerances are a few times the errors achieved (stated next to each), so that a wrong
derivative or a wrong term is caught; ``test_checks_catch_a_wrong_derivative`` shows it.
"""

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate

from voxdose.core.grid import Grid, LabelMap
from voxdose.core.nuclide import load_nuclide
from voxdose.kinetics import lm_core
from voxdose.kinetics.after import activity_at, tia_after
from voxdose.kinetics.fit import fit_curves, fit_tia
from voxdose.kinetics.models import MODEL_NAMES, N_PARAMS, model_curve, model_terms, model_tia
from voxdose.kinetics.organ import fit_organs

LAM_S = load_nuclide("Lu-177").decay_constant_per_s
LAM_H = LAM_S * 3600.0
T_EVAL = np.array([0.0, 0.3, 1.0, 4.0, 24.0, 48.0, 96.0, 168.0, 336.0])  # h
T9 = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 24.0, 48.0, 96.0, 168.0])  # h, enough for triexp
MODELS = (1, 2, 3, 4)


# ---- the oracle: the model table, written independently of lm_core ----------------------
def oracle_curve(m, p, t):
    t = np.asarray(t, dtype=np.float64)
    if m == 1:
        a, l1 = p
        return a * np.exp(-l1 * t)
    if m == 2:
        a, l1, l2 = p
        return a * (np.exp(-l1 * t) - np.exp(-l2 * t))
    if m == 3:
        a1, l1, a2, l2 = p
        return a1 * np.exp(-l1 * t) + a2 * np.exp(-l2 * t)
    a1, l1, a2, l2, l3 = p
    return a1 * np.exp(-l1 * t) + a2 * np.exp(-l2 * t) - (a1 + a2) * np.exp(-l3 * t)


def oracle_tia_from(m, p, t0=0.0):
    def part(a, lam):
        return a * np.exp(-lam * t0) / lam

    if m == 1:
        return part(p[0], p[1])
    if m == 2:
        return part(p[0], p[1]) - part(p[0], p[2])
    if m == 3:
        return part(p[0], p[1]) + part(p[2], p[3])
    return part(p[0], p[1]) + part(p[2], p[3]) - part(p[0] + p[2], p[4])


def random_params(m, rng):
    """Valid parameters: amplitudes > 0, decay constants >= lambda_p, uptake the fastest."""
    l1 = LAM_H + rng.uniform(0.0, 0.2)
    l2 = l1 + rng.uniform(0.02, 2.0)
    a1, a2 = rng.uniform(1.0, 1e3, 2)
    if m == 1:
        return np.array([a1, l1])
    if m == 2:
        return np.array([a1, l1, l2])
    if m == 3:
        return np.array([a1, l1, a2, l2])
    return np.array([a1, l1, a2, l2, max(l1, l2) + rng.uniform(0.1, 3.0)])


def quad_from(m, p, t0):
    """int_t0^inf of the oracle curve, split where the fast terms have died out."""
    f = lambda t: float(oracle_curve(m, p, t))  # noqa: E731
    lam_min = min(p[1::2]) if m != 2 else p[1]
    knots = [t0, t0 + 5.0, t0 + 50.0, t0 + 60.0 / lam_min]
    val = sum(integrate.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=200)[0]
              for a, b in itertools.pairwise(knots))
    return val + integrate.quad(f, knots[-1], np.inf, epsabs=0.0, epsrel=1e-13)[0]


# ---- njit helpers called from Python ---------------------------------------------------
def njit_eval(m, p, t):
    k = N_PARAMS[m]
    pp = np.zeros(lm_core.MAX_P)
    pp[:k] = p
    f = np.zeros(len(t))
    jac = np.zeros((len(t), lm_core.MAX_P))
    table = np.zeros((lm_core.MAX_K, lm_core.N_TCOL))
    lm_core.model_eval(m, pp, np.asarray(t, float), len(t), f, jac, True, table)
    f2 = np.zeros(len(t))
    lm_core.model_eval(m, pp, np.asarray(t, float), len(t), f2, jac[:0], False, table)
    assert np.array_equal(f, f2)  # the value does not depend on whether J is wanted
    return f, jac[:, :k]


def njit_tia(m, p, t0):
    k = N_PARAMS[m]
    pp = np.zeros(lm_core.MAX_P)
    pp[:k] = p
    g = np.zeros(lm_core.MAX_P)
    table = np.zeros((lm_core.MAX_K, lm_core.N_TCOL))
    v = lm_core.tia_from_and_grad(m, pp, float(t0), table, g, True)
    assert v == lm_core.tia_from_and_grad(m, pp, float(t0), table, g * 0, False)
    return v, g[:k]


def central_diff(fun, p):
    """d fun / dp_j by central differences, step 1e-6 relative."""
    cols = []
    for j in range(len(p)):
        h = 1e-6 * abs(p[j])
        up, dn = p.copy(), p.copy()
        up[j] += h
        dn[j] -= h
        cols.append((np.asarray(fun(up)) - np.asarray(fun(dn))) / (2 * h))
    return np.stack(cols, axis=-1)


def complex_step(fun, p):
    """d fun / dp_j = Im fun(p + i h e_j) / h, h = 1e-30: exact to round-off (no
    cancellation), so it checks every derivative to ~1e-15 relative."""
    cols = []
    for j in range(len(p)):
        q = p.astype(complex)
        q[j] += 1e-30j
        cols.append(np.imag(np.asarray(fun(q))) / 1e-30)
    return np.stack(cols, axis=-1)


def fd_err(got, want, fun_max, p):
    """Error of a derivative in units of its natural scale max(|want_j|, max|F| / |p_j|):
    central differences are accurate to ~eps / 1e-6 in these units (round-off), so a
    derivative wrong by 1e-5 relative shows up as >= ~1e-6."""
    got, want = np.atleast_2d(got), np.atleast_2d(want)
    scale = np.maximum(np.max(np.abs(want), axis=0), fun_max / np.abs(p))
    return float(np.max(np.abs(got - want) / scale))


def rel_err(got, want):
    """Error relative to the largest entry of each column (a derivative can cross zero)."""
    got, want = np.atleast_2d(got), np.atleast_2d(want)
    scale = np.max(np.abs(want), axis=0, keepdims=True)
    return float(np.max(np.abs(got - want) / scale))


# Tolerances, each a few times the worst error achieved over 50 random draws per model:
VALUE_TOL = 1e-14  # curve and TIA vs the oracle, relative: achieved <= 5e-16
FD_TOL = 1e-8      # derivatives vs central differences, ``fd_err`` units: achieved <= 7e-10
CS_TOL = 1e-14     # derivatives vs the complex step, relative: achieved <= 6e-16
QUAD_TOL = 1e-12   # oracle TIA vs quadrature of the curve, relative: achieved <= 2e-15
DRAWS = 6


@pytest.mark.parametrize("m", MODELS)
def test_curve_and_jacobian_every_path(m):
    rng = np.random.default_rng(100 + m)
    for _ in range(DRAWS):
        p = random_params(m, rng)
        want = oracle_curve(m, p, T_EVAL)
        scale = np.max(np.abs(want))
        assert np.max(np.abs(model_curve(m, p, T_EVAL) - want)) <= VALUE_TOL * scale
        f, jac = njit_eval(m, p, T_EVAL)
        assert np.max(np.abs(f - want)) <= VALUE_TOL * scale
        curve = lambda q: oracle_curve(m, q, T_EVAL)  # noqa: E731
        assert fd_err(jac, central_diff(curve, p), scale, p) < FD_TOL
        assert rel_err(jac, complex_step(curve, p)) < CS_TOL
        # the NumPy reference's term derivatives give the same Jacobian
        c, lam, dc, dl = model_terms(m, p)
        e = np.exp(-np.outer(T_EVAL, lam))
        jac_np = e @ dc - (T_EVAL[:, None] * e * c) @ dl
        assert rel_err(jac_np, jac) < CS_TOL
        # one time: the per-time value used by the overshoot check and by after.py
        table = np.zeros((lm_core.MAX_K, lm_core.N_TCOL))
        pp = np.zeros(lm_core.MAX_P)
        pp[:len(p)] = p
        nt, s = lm_core.model_terms(m, pp, table, False)
        assert abs(lm_core.terms_value(nt, s, table, 24.0) - want[4]) <= VALUE_TOL * scale


@pytest.mark.parametrize("m", MODELS)
@pytest.mark.parametrize("t0", [0.0, 3.0, 100.0])
def test_tia_to_infinity_and_from_t0_and_gradient(m, t0):
    rng = np.random.default_rng(200 + m)
    for _ in range(DRAWS):
        p = random_params(m, rng)
        exact = oracle_tia_from(m, p, t0)
        assert quad_from(m, p, t0) == pytest.approx(exact, rel=QUAD_TOL)  # the oracle itself
        v, g = njit_tia(m, p, t0)
        assert v == pytest.approx(exact, rel=VALUE_TOL)
        assert model_tia(m, p, t0) == pytest.approx(exact, rel=VALUE_TOL)
        tia = lambda q: oracle_tia_from(m, q, t0)  # noqa: E731
        assert fd_err(g, central_diff(tia, p), abs(exact), p) < FD_TOL
        assert np.max(np.abs(g / complex_step(tia, p) - 1)) < CS_TOL


def test_checks_catch_a_wrong_derivative():
    """The checks above fail for a Jacobian column wrong by 1e-5 relative (central
    differences) or by 1e-12 (complex step), and for a dropped term in the gradient or in
    the curve."""
    p = random_params(4, np.random.default_rng(5))
    f, jac = njit_eval(4, p, T_EVAL)
    curve = lambda q: oracle_curve(4, q, T_EVAL)  # noqa: E731
    fd, cs = central_diff(curve, p), complex_step(curve, p)
    scale = np.max(np.abs(f))
    assert fd_err(jac, fd, scale, p) < FD_TOL and rel_err(jac, cs) < CS_TOL
    for j in range(5):
        bad = jac.copy()
        bad[:, j] *= 1 + 1e-5
        assert fd_err(bad, fd, scale, p) > 10 * FD_TOL, j
        bad = jac.copy()
        bad[:, j] *= 1 + 1e-12
        assert rel_err(bad, cs) > CS_TOL, j
    _, g = njit_tia(4, p, 0.0)
    tia = lambda q: oracle_tia_from(4, q, 0.0)  # noqa: E731
    dropped = g.copy()
    dropped[0] = 1.0 / p[1]  # forgot the -1/l3 of the -(A1 + A2) e^(-l3 t) term
    assert fd_err(dropped, central_diff(tia, p), tia(p), p) > 10 * FD_TOL
    # a wrong term in the value: -(A1 + A2) e^(-l3 t) replaced by -A1 e^(-l3 t)
    wrong = oracle_curve(3, p[:4], T_EVAL) - p[0] * np.exp(-p[4] * T_EVAL)
    assert np.max(np.abs(wrong - f)) > 1e3 * VALUE_TOL * scale


def test_term_table_shapes():
    for m in MODELS:
        c, lam, dc, dl = model_terms(m, random_params(m, np.random.default_rng(m)))
        assert len(c) == len(lam) == {1: 1, 2: 2, 3: 2, 4: 3}[m]
        assert dc.shape == dl.shape == (len(c), N_PARAMS[m])
    with pytest.raises(ValueError):
        model_curve(0, [1.0], T_EVAL)


# ---- fitted maps, organs, CUDA ----------------------------------------------------------
TRUTH = {  # model id -> parameters (Bq/mL, 1/h), each best fitted by its own model on T9
    1: np.array([100.0, LAM_H + 0.01]),
    2: np.array([100.0, LAM_H + 0.01, 0.5]),
    3: np.array([60.0, LAM_H + 0.005, 40.0, LAM_H + 0.2]),
    4: np.array([60.0, LAM_H + 0.005, 40.0, LAM_H + 0.1, 1.5]),
}


def _series():
    """Frames (9, 1, 1, 4): voxel v follows model v + 1, noiseless."""
    frames = np.zeros((len(T9), 1, 1, 4))
    for m in MODELS:
        frames[:, 0, 0, m - 1] = oracle_curve(m, TRUTH[m], T9)
    return frames


def test_after_activity_and_tia_from_t0_on_a_fitted_map():
    frames = _series()
    fit = fit_tia(T9 * 3600, frames, LAM_S, keep_params=True)
    assert fit.model[0, 0].tolist() == [1, 2, 3, 4]
    for t_h in (0.0, 2.0, 30.0, 500.0):
        act = activity_at(fit, T9 * 3600, frames, t_h * 3600)[0, 0]
        after = tia_after(fit, T9 * 3600, frames, t_h * 3600)[0, 0]
        for v, m in enumerate(MODELS):
            p = fit.params[0, 0, v, :N_PARAMS[m]]
            want_a = float(oracle_curve(m, p, t_h))
            # achieved: 0 against the fitted parameters, 1e-14 against the truth (noiseless)
            assert abs(act[v] - want_a) <= VALUE_TOL * p[0]
            assert abs(act[v] - float(oracle_curve(m, TRUTH[m], t_h))) <= 1e-9 * p[0]
            # achieved 2e-16 (closed form) and 3e-15 (quadrature)
            assert after[v] / 3600 == pytest.approx(oracle_tia_from(m, p, t_h), rel=VALUE_TOL)
            assert after[v] / 3600 == pytest.approx(quad_from(m, p, t_h), rel=QUAD_TOL)
    # from t0 = 0 the fitted TIA itself
    assert tia_after(fit, T9 * 3600, frames, 0.0) == pytest.approx(fit.tia, rel=VALUE_TOL)


def test_organ_fit_outputs_follow_the_definition():
    g = Grid.from_spacing((4, 2, 2), (5.0, 5.0, 5.0))
    lab = np.repeat(np.arange(1, 5), 4).reshape(g.shape).astype(np.int32)
    names = {m: f"organ_{MODEL_NAMES[m]}" for m in MODELS}
    frames = np.zeros((len(T9), *g.shape))
    for m in MODELS:
        frames[:, lab == m] = oracle_curve(m, TRUTH[m], T9)[:, None]
    v_ml = 4 * g.voxel_volume_ml
    fits = {f.name: f for f in fit_organs(T9 * 3600, frames, LabelMap(lab, g, names), LAM_S)}
    for m in MODELS:
        of = fits[names[m]]
        assert of.best == MODEL_NAMES[m]
        truth = oracle_tia_from(m, TRUTH[m] * _amp(m, v_ml))
        assert of.tia_bq_s / 3600 == pytest.approx(truth, rel=1e-9)  # achieved 7e-15
        for name, r in of.fits.items():
            if name == "trapz" or not r["valid"]:
                continue
            mid = {v: k for k, v in MODEL_NAMES.items()}[name]
            p = np.array(list(r["params"].values()))
            # every valid fit's TIA and T_eff follow from its parameters: achieved <= 4e-16
            assert r["tia_bq_s"] / 3600 == pytest.approx(oracle_tia_from(mid, p), rel=VALUE_TOL)
            lam_terminal = p[1] if mid <= 2 else min(p[1], p[3])
            assert r["t_eff_h"] == pytest.approx(math.log(2) / lam_terminal, rel=VALUE_TOL)


def _amp(m, scale):
    """Parameter scaling of a curve multiplied by ``scale`` (amplitudes only)."""
    s = np.ones(N_PARAMS[m])
    s[0] = scale
    if m >= 3:
        s[2] = scale
    return s


CUDASIM_SCRIPT = r"""
import json, sys
import numpy as np
from voxdose.kinetics.fit import fit_curves
data = json.loads(sys.stdin.read())
r = fit_curves(np.array(data["t"]), np.array(data["y"]), data["lam"], model=data["model"],
               device="gpu")
print(json.dumps({"tia": r.tia.tolist(), "sigma": r.sigma.tolist(), "model": r.model.tolist(),
                  "status": r.status.tolist(), "params": r.params.tolist()}))
"""


def _cuda_sim(t_h, y, model):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    payload = json.dumps({"t": (t_h * 3600).tolist(), "y": y.tolist(), "lam": LAM_S,
                          "model": model})
    proc = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT], input=payload, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cuda_kernel_under_simulator_fits_the_triexponential_like_the_cpu():
    """Noiseless curves best fitted by the tri-exponential (9 time points) plus one curve of
    each other model: the CUDA kernel (simulator) recovers the CPU result, triexp included."""
    rng = np.random.default_rng(11)
    truths = [(4, TRUTH[4] * np.array([rng.uniform(0.5, 2), 1.0, rng.uniform(0.5, 2), 1.0,
                                       rng.uniform(0.7, 1.5)])) for _ in range(3)]
    truths += [(m, TRUTH[m]) for m in (1, 2, 3)]
    y = np.array([oracle_curve(m, p, T9) for m, p in truths])
    cpu = fit_curves(T9 * 3600, y, LAM_S, model="auto")
    assert cpu.model.tolist() == [m for m, _ in truths]  # precondition: triexp is the best
    for v, (m, p) in enumerate(truths):
        fitted = cpu.params[v, :N_PARAMS[m]]
        # achieved 2e-16 against the fitted parameters, 7e-15 against the truth
        assert cpu.tia[v] / 3600 == pytest.approx(oracle_tia_from(m, fitted), rel=VALUE_TOL)
        assert cpu.tia[v] / 3600 == pytest.approx(oracle_tia_from(m, p), rel=1e-9)
    gpu = _cuda_sim(T9, y, "auto")
    assert gpu["model"] == cpu.model.tolist() and gpu["status"] == cpu.status.tolist()
    # same source, same arithmetic order: achieved 0 (bit-identical under the simulator);
    # 1e-12 leaves room for another libm, not for another formula
    assert np.allclose(gpu["tia"], cpu.tia, rtol=1e-12, atol=0)
    assert np.allclose(gpu["sigma"], cpu.sigma, rtol=1e-12, atol=0)
    assert np.allclose(gpu["params"], cpu.params, rtol=1e-12, atol=0)
    # the triexp fit alone, on the same curves
    gpu4 = _cuda_sim(T9, y[:3], "triexp")
    cpu4 = fit_curves(T9 * 3600, y[:3], LAM_S, model="triexp")
    assert gpu4["model"] == [4, 4, 4] == cpu4.model.tolist()
    assert np.allclose(gpu4["tia"], cpu4.tia, rtol=1e-12, atol=0)

