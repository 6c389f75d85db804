"""On a real CUDA GPU (``gpu`` marker: skipped without one; run by scripts/gpu_check.sh): the
device paths give the CPU's results, and the pipeline keeps its data on the device.

What CI checks without a GPU is in test_gpu_recording.py (where the work runs) and the
CUDA-simulator tests of test_kinetics_fit.py / test_mc_cuda.py (the kernels' arithmetic).
"""

from __future__ import annotations

import numpy as np
import pytest

from voxdose.cli.bench import tia_bench_curves
from voxdose.core.backend import get_backend, is_device_array, to_numpy
from voxdose.kinetics.fit import fit_curves, fit_tia

pytestmark = pytest.mark.gpu


def _frames(n: int = 12):
    t_s, curves, lam = tia_bench_curves(n)
    return t_s, curves.T.reshape(len(t_s), n, n, n).copy(), lam


#: TIA and sigma, GPU against CPU: the issue's 1e-6 relative. Under the CUDA simulator the two
#: agree to the bit (the same maths library); on a GPU, NVVM contracts multiply-adds and the
#: device's exp/log may differ in the last digit: 1e-16 relative noise on these 12^3 curves
#: moved 15 of 1,728 TIAs past 1e-10 (at most 6.7e-10), sigma under 2.2e-9, model and
#: status never (measured on the CPU).
FIT_RTOL = 1e-6


def test_cuda_fit_of_device_arrays_equals_the_cpu():
    """The pipeline's path: frames on the device, the CUDA fitter in place, maps there."""
    be = get_backend("gpu")
    t_s, frames, lam = _frames()
    cpu = fit_tia(t_s, frames, lam, device="cpu")
    gpu = fit_tia(t_s, be.asarray(frames), lam, backend=be)
    assert is_device_array(gpu.tia) and is_device_array(gpu.status)
    np.testing.assert_allclose(to_numpy(gpu.tia), cpu.tia, rtol=FIT_RTOL, atol=0)
    np.testing.assert_allclose(to_numpy(gpu.sigma), cpu.sigma, rtol=FIT_RTOL, atol=0)
    assert np.array_equal(to_numpy(gpu.model), cpu.model)
    assert np.array_equal(to_numpy(gpu.status), cpu.status)


def test_cuda_fit_of_host_arrays_equals_the_cpu():
    """``device='gpu'`` without a backend: host curves copied to the device and back."""
    t_s, curves, lam = tia_bench_curves(8)
    cpu = fit_curves(t_s, curves, lam, model="auto", device="cpu")
    gpu = fit_curves(t_s, curves, lam, model="auto", device="gpu")
    assert isinstance(gpu.tia, np.ndarray)
    np.testing.assert_allclose(gpu.tia, cpu.tia, rtol=FIT_RTOL, atol=0)
    assert np.array_equal(gpu.model, cpu.model)


@pytest.fixture(scope="module")
def both_devices(tmp_path_factory):
    """The computing stages on the small study, on the CPU and on the GPU."""
    pytest.importorskip("SimpleITK")
    pytest.importorskip("pydicom")
    from voxdose.phantom.study import PhantomConfig, build_study
    from voxdose.pipeline.context import PipelineContext, PipelineOptions
    from voxdose.pipeline.run import NullReporter
    from voxdose.pipeline.stages import STAGES, run_stages

    root = tmp_path_factory.mktemp("gpu_pipeline")
    study = build_study(root / "study", PhantomConfig.small())
    out = {}
    for device in ("cpu", "gpu"):
        ctx = PipelineContext(study, root / device, PipelineOptions(device=device))
        run_stages(ctx, STAGES, NullReporter())
        out[device] = ctx
    return out["cpu"], out["gpu"]


def test_pipeline_on_the_gpu_keeps_its_maps_on_the_device(both_devices):
    _, gpu = both_devices
    assert gpu.backend.name == "gpu"
    for name in ("tia", "tia_sigma", "dose_kernel", "dose_ldm"):
        assert is_device_array(getattr(gpu, name).data), name
    assert all(is_device_array(r.dose.data) for r in gpu.comparison)


def test_pipeline_on_the_gpu_equals_the_cpu(both_devices):
    cpu, gpu = both_devices
    for name in ("tia", "dose_kernel", "dose_ldm"):
        a, b = to_numpy(getattr(gpu, name).data), np.asarray(getattr(cpu, name).data)
        assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max(), name
    for a, b in zip(gpu.dvhs["kernel"], cpu.dvhs["kernel"]):
        assert a.name == b.name and a.mean_gy == pytest.approx(b.mean_gy, rel=1e-6, abs=1e-12)
    for a, b in zip(gpu.comparison, cpu.comparison):
        for k, v in b.cross_fire_fraction.items():
            assert (a.cross_fire_fraction[k] is None) == (v is None)
            if v is not None:
                assert a.cross_fire_fraction[k] == pytest.approx(v, abs=1e-6)
    if cpu.decisions.marrow is not None:
        assert gpu.decisions.marrow.total_dose_gy == pytest.approx(
            cpu.decisions.marrow.total_dose_gy, rel=1e-6)


def test_monte_carlo_on_the_gpu_agrees_with_the_cpu():
    """numba.cuda transport: energy conserved, absorbed energy and electron r90 as on the CPU
    (another random stream: statistical agreement)."""
    pytest.importorskip("xraydb")
    from voxdose.montecarlo.dpk import simulate_dpk

    gpu = simulate_dpk("Lu-177", 40_000, 40_000, n_batches=512, backend="gpu", seed=7)
    cpu = simulate_dpk("Lu-177", 40_000, 40_000, n_batches=20, backend="cpu", seed=11)
    assert abs(gpu.balance()) < 1e-9
    assert gpu.absorbed_mev == pytest.approx(cpu.absorbed_mev, rel=0.02)
    assert gpu.electron_r90_mm() == pytest.approx(cpu.electron_r90_mm(), rel=0.03)
