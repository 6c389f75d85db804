"""Per-voxel kinetics: every model recovers noiseless truth, physical decay is exact, the
reported uncertainty is honest (pull distribution), CPU, CUDA (simulator) and a SciPy
reference agree."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize, stats

from voxdose.core.errors import InputError
from voxdose.kinetics.fit import fit_curves, fit_single_time_point, fit_tia
from voxdose.kinetics.models import MODEL_IDS, model_curve, model_tia, trapz_tia
from voxdose.core.nuclide import load_nuclide

LAM_H = load_nuclide("Lu-177").decay_constant_per_s * 3600.0  # 1/h
LAM_S = LAM_H / 3600.0
T5_H = np.array([1.0, 4.0, 24.0, 48.0, 168.0])
T7_H = np.array([0.5, 1.0, 4.0, 24.0, 48.0, 96.0, 168.0])

TRUE = {  # model id -> parameters (amplitude Bq/mL, decay constants 1/h)
    1: [100.0, LAM_H + 0.01],
    2: [100.0, LAM_H + 0.01, 0.5],
    3: [60.0, LAM_H + 0.005, 40.0, LAM_H + 0.2],
    4: [60.0, LAM_H + 0.005, 40.0, LAM_H + 0.1, 1.5],
}


@pytest.mark.parametrize("model", [1, 2, 3, 4])
def test_noiseless_parameters_and_tia_recovered(model):
    name = {v: k for k, v in MODEL_IDS.items()}[model]
    y = model_curve(model, TRUE[model], T7_H)
    r = fit_curves(T7_H * 3600, y[None, :], LAM_S, model=name)
    k = len(TRUE[model])
    assert r.status[0] in (0, 1) and r.model[0] == model
    assert r.params[0, :k] == pytest.approx(TRUE[model], rel=1e-6)
    assert r.tia[0] / 3600 == pytest.approx(model_tia(model, TRUE[model]), rel=1e-6)


@pytest.mark.parametrize("model", [1, 2, 3, 4])
def test_auto_picks_the_generating_model_on_noiseless_data(model):
    y = model_curve(model, TRUE[model], T7_H)
    r = fit_curves(T7_H * 3600, y[None, :], LAM_S, model="auto")
    assert r.model[0] == model
    assert r.tia[0] / 3600 == pytest.approx(model_tia(model, TRUE[model]), rel=1e-6)


def test_pure_physical_decay_is_exact():
    a0 = 1234.5
    y = a0 * np.exp(-LAM_H * T5_H)
    for model in ("mono", "auto"):
        r = fit_curves(T5_H * 3600, y[None, :], LAM_S, model=model)
        assert r.tia[0] == pytest.approx(a0 / LAM_S, rel=1e-9)
        assert r.lambda_eff_per_s[0] == pytest.approx(LAM_S, rel=1e-9)


def test_washout_slower_than_physical_is_bounded_unless_lifted():
    y = 100 * np.exp(-0.5 * LAM_H * T5_H)  # impossible biologically: a(t) decays slower
    r = fit_curves(T5_H * 3600, y[None, :], LAM_S, model="mono")
    assert r.lambda_eff_per_s[0] == pytest.approx(LAM_S) and r.status[0] == 1
    r = fit_curves(T5_H * 3600, y[None, :], LAM_S, model="mono", lift_bound=True)
    assert r.lambda_eff_per_s[0] == pytest.approx(0.5 * LAM_S, rel=1e-6)


def test_trapezoid_with_physical_and_fitted_tail():
    y = np.array([5.0, 8.0, 6.0, 4.0, 1.0])
    r = fit_curves(T5_H * 3600, y[None, :], LAM_S, model="trapz")
    assert r.tia[0] / 3600 == pytest.approx(trapz_tia(T5_H, y, LAM_H), rel=1e-12)
    lam_fit = math.log(4.0 / 1.0) / (168 - 48)
    r = fit_curves(T5_H * 3600, y[None, :], LAM_S, model="trapz", tail="fitted")
    assert r.tia[0] / 3600 == pytest.approx(trapz_tia(T5_H, y, lam_fit), rel=1e-12)
    # frame noise model: sigma^2 = sum (c_i * rel * y_i)^2 with trapezoid weights c_i
    t = np.r_[0.0, T5_H]
    c = np.array([(t[i + 1] - t[i - 1]) / 2 if i < 5 else (t[5] - t[4]) / 2 + 1 / lam_fit
                  for i in range(1, 6)])
    assert r.sigma[0] / 3600 == pytest.approx(np.sqrt(np.sum((c * 0.05 * y) ** 2)), rel=1e-9)


def test_uncertainty_is_honest_pull_distribution():
    """Noisy bi-exponential curves (seeded): TIA unbiased and sigma honest.

    With s^2 estimated from n - k = 2 residual degrees of freedom, pulls
    (TIA_fit - TIA_true)/sigma follow Student's t with 2 dof: median |pull| = t_0.75,2 = 0.816.
    """
    rng = np.random.default_rng(42)
    n = 20000
    l1 = LAM_H + rng.uniform(0.2, 2.0, n) * LAM_H
    l2 = l1 + math.log(2) / rng.uniform(0.5, 3.0, n)
    amp = rng.uniform(1e3, 1e4, n)
    clean = amp[:, None] * (np.exp(-l1[:, None] * T5_H) - np.exp(-l2[:, None] * T5_H))
    noisy = clean + rng.normal(size=clean.shape) * np.sqrt(clean * 2.0)  # var ∝ activity
    r = fit_curves(T5_H * 3600, noisy, LAM_S, model="biexp")
    true = amp * (1 / l1 - 1 / l2) * 3600
    pull = (r.tia - true) / r.sigma
    ok = r.status <= 1
    assert ok.mean() > 0.99
    assert abs(np.median(pull[ok])) < 0.03
    assert np.median(np.abs(pull[ok])) == pytest.approx(stats.t.ppf(0.75, 2), abs=0.04)
    assert abs(np.median(r.tia[ok] / true[ok] - 1)) < 2e-3  # unbiased (median)


def _scipy_reference(t_h, y, model):
    """Plain NumPy/SciPy reference: bounded least squares with the same Poisson weights."""
    w = 1.0 / np.maximum(y / y.max(), 1e-3)
    k = len(TRUE[model])
    lo = [0.0 if j in (0, 2) and not (model == 2 and j == 2) else LAM_H for j in range(k)]

    def res(p):
        return np.sqrt(w) * (y - model_curve(model, p, t_h)) / y.max()

    p0 = np.array(TRUE[model]) * 1.3
    sol = optimize.least_squares(res, p0, bounds=(lo, np.inf), xtol=1e-14, ftol=1e-14,
                                 gtol=1e-14, max_nfev=20000)
    return model_tia(model, sol.x)


@pytest.mark.parametrize("model", [1, 2])
def test_agrees_with_scipy_reference_on_noisy_curves(model):
    rng = np.random.default_rng(model)
    clean = model_curve(model, TRUE[model], T5_H)
    name = {1: "mono", 2: "biexp"}[model]
    for _ in range(5):
        y = rng.poisson(clean * 50) / 50.0
        r = fit_curves(T5_H * 3600, y[None, :], LAM_S, model=name)
        assert r.tia[0] / 3600 == pytest.approx(_scipy_reference(T5_H, y, model), rel=1e-5)


CUDASIM_SCRIPT = r"""
import json, sys
import numpy as np
from voxdose.kinetics.fit import fit_curves
data = json.loads(sys.stdin.read())
r = fit_curves(np.array(data["t"]), np.array(data["y"]), data["lam"], model="auto",
               device="gpu")
print(json.dumps({"tia": r.tia.tolist(), "sigma": r.sigma.tolist(),
                  "model": r.model.tolist(), "status": r.status.tolist()}))
"""


@pytest.mark.parametrize("samples", [[5e4, 0, 3e4, 0, 0], [5e4, 0, 0, 3e4, 0],
                                     [0, 4e4, 0, 0, 2e4], [5e4, 0, 3e4, 1e3, 0]])
def test_samples_that_do_not_identify_a_model_fall_back_to_the_trapezoid(samples):
    """Edge-of-field curves like [a, 0, b, 0, 0]: before, a 'converged' mono-exponential
    with sigma 37x (and up to 1e14x) its TIA. A fit with sigma_TIA > TIA is no
    determination: the trapezoid (status 2) integrates what was measured."""
    t_s = T5_H * 3600
    r = fit_curves(t_s, np.array([samples, [5e4, 4e4, 3e4, 2e4, 1e4]]), LAM_S)
    assert r.status[0] == 2 and r.model[0] == 0
    # the trapezoid (head rule, physical tail) of what was measured, Bq/mL h -> Bq/mL s
    assert r.tia[0] == pytest.approx(trapz_tia(T5_H, samples, LAM_H) * 3600, rel=1e-12)
    assert r.sigma[0] == pytest.approx(r.tia[0], rel=1e-12)  # undetermined: sigma = TIA
    assert r.status[1] == 0 and r.sigma[1] <= r.tia[1]  # a determined curve stays fitted


def test_singular_covariance_keeps_the_fit_with_sigma_equal_to_tia():
    """Both rates of a bi-exponential sum on the physical bound: identical amplitude columns,
    no Cholesky factor; the TIA (sum of amplitudes) is still determined: the fit stays
    (status 1, sigma = TIA), not the trapezoid (found in review, 21 % higher here)."""
    t_h = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0])
    y = 500 * np.array([0.4593, 1.0, 0.8961, 0.7784, 0.6934, 0.4574])
    r = fit_curves(t_h * 3600, y[None, :], LAM_S, model="biexp_sum")
    assert r.model[0] == MODEL_IDS["biexp_sum"] and r.status[0] == 1
    assert r.sigma[0] == pytest.approx(r.tia[0], rel=1e-12)


def test_fitted_voxels_never_carry_a_sigma_above_their_tia():
    rng = np.random.default_rng(4)
    y = rng.poisson(rng.uniform(0.5, 30.0, (4000, 1)) * np.exp(-0.01 * T5_H)).astype(float)
    r = fit_curves(T5_H * 3600, y, LAM_S)
    fitted = r.status <= 1
    assert fitted.sum() > 1000
    assert np.all(r.sigma[fitted] <= r.tia[fitted] * (1 + 1e-12))


def test_cuda_kernel_under_simulator_matches_cpu():
    rng = np.random.default_rng(7)
    n = 24
    l1 = LAM_H + rng.uniform(0.2, 2.0, n) * LAM_H
    l2 = l1 + math.log(2) / rng.uniform(0.5, 3.0, n)
    y = rng.poisson(1e3 * (np.exp(-l1[:, None] * T5_H) - np.exp(-l2[:, None] * T5_H))) * 1.0
    y[0] = 0.0  # an empty curve too
    y[1], y[2] = [5e3, 0, 3e3, 0, 0], [0, 4e3, 0, 0, 2e3]  # not identified: trapezoid
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    payload = json.dumps({"t": (T5_H * 3600).tolist(), "y": y.tolist(), "lam": LAM_S})
    proc = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT], input=payload, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    gpu = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = fit_curves(T5_H * 3600, y, LAM_S, model="auto")
    assert np.allclose(gpu["tia"], cpu.tia, rtol=1e-10, atol=0)
    assert np.allclose(gpu["sigma"], cpu.sigma, rtol=1e-8, atol=0)
    assert gpu["model"] == cpu.model.tolist() and gpu["status"] == cpu.status.tolist()


def test_fit_tia_maps_no_nan_and_background():
    rng = np.random.default_rng(3)
    frames = np.zeros((5, 4, 5, 6))
    frames[:, 1:3, 1:4, 1:5] = (1e4 * np.exp(-LAM_H * T5_H))[:, None, None, None]
    frames += rng.random(frames.shape) * 1e-3  # faint background
    r = fit_tia(T5_H * 3600, frames, LAM_S)
    for a in (r.tia, r.sigma, r.lambda_eff_per_s):
        assert a.shape == (4, 5, 6) and np.all(np.isfinite(a))
    assert np.all(r.status[0] == 3)  # background slice: not fitted
    assert r.tia[1, 1, 1] == pytest.approx(1e4 / LAM_S, rel=1e-3)


@pytest.mark.parametrize("bad, msg", [
    ("nan", "NaN"), ("negative", "negative"), ("times", "strictly increasing"),
    ("count", "5 frames but 4 times")])
def test_fit_tia_bad_input(bad, msg):
    frames = np.ones((5, 2, 2, 2))
    times = T5_H * 3600
    if bad == "nan":
        frames[2, 0, 0, 0] = np.nan
    elif bad == "negative":
        frames[2, 0, 0, 0] = -1
    elif bad == "times":
        times = times[[0, 2, 1, 3, 4]]
    else:
        times = times[:4]
    with pytest.raises(InputError, match=msg):
        fit_tia(times, frames, LAM_S)


def test_single_time_point_exact_for_mono_exponential():
    t_eff_h = 40.0
    lam = math.log(2) / (t_eff_h * 3600)
    a0 = 500.0
    t1 = 96 * 3600
    got = fit_single_time_point(t1, np.array([a0 * math.exp(-lam * t1)]), t_eff_h)
    assert got[0] == pytest.approx(a0 / lam, rel=1e-12)


def test_cpu_driver_calls_from_two_threads_are_serialised_and_exact():
    """``voxdose demo`` warms the CPU driver on a background thread (cli/app.py) while the
    pipeline may already fit: two threads fitting at once must give, curve for curve, the
    bits of one thread alone. Under the OpenMP threading layer (this machine's) two callers
    are safe even without the driver's lock; the lock is for the workqueue layer, which
    aborts the process on a second parallel loop at once."""
    from concurrent.futures import ThreadPoolExecutor

    from voxdose.kinetics.fit import warm_up_cpu_driver

    warm_up_cpu_driver()
    t_s = np.array([1.0, 4.0, 24.0, 48.0, 168.0]) * 3600.0
    lam = np.log(2.0) / (6.647 * 86400.0)
    rng = np.random.default_rng(5)
    curves = [1e3 * np.exp(-rng.uniform(1.2, 3.0, (400, 1)) * lam * t_s)
              * rng.normal(1.0, 0.05, (400, 5)) for _ in range(4)]
    alone = [fit_curves(t_s, c, lam).tia for c in curves]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda c: fit_curves(t_s, c, lam).tia, curves))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
