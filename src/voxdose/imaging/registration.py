"""Register every time point to the reference and resample onto one grid.

Rigid registration (SimpleITK ``Euler3DTransform``): Mattes mutual information,
random sampling with a fixed seed (reproducible), regular-step gradient descent on a
pyramid of block-averaged, smoothed images (:func:`rigid_pyramid`). CT-to-CT when every
time point has a CT, SPECT-to-SPECT otherwise. Optional refinements (study key
``registration.transform``): affine, or a B-spline deformation after the rigid step
(:func:`register`).

The resulting transform maps a point of the reference (fixed) image to the
corresponding point of the moving image, which is what resampling needs:
``moving_resampled(p) = moving(T(p))``.

Activity is resampled as **concentration** (Bq/mL, an intensive quantity) with linear
interpolation; the total activity sum(c * V_voxel) is then conserved within
interpolation and field-of-view-edge error, which :func:`resample_concentration`
reports.

How far a result is from the scanner's own alignment (the images' coordinates, the identity
map) and whether it matches better than that alignment is measured by :func:`plausibility`;
the limits are applied by ``imaging/checks.py`` (``check_registration``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.grid import Grid, Image
from ..io.sitk_adapter import apply_grid_to_sitk, image_to_sitk, sitk_to_array_and_grid
from ..core.voxel_ops import majority_labels


TRANSFORMS = ("rigid", "affine", "bspline")
#: L-BFGS-B iterations of the B-spline refinement.
BSPLINE_ITERATIONS = 30
#: Voxel size (mm) the B-spline metric is evaluated on (the fixed image shrunk to about it).
BSPLINE_METRIC_VOXEL_MM = 10.0


@dataclass(frozen=True)
class Registration:
    """A transform from the reference frame to one time point's frame (LPS mm).

    kind : 'rigid' (Euler3D), 'affine', or 'bspline' (rigid followed by a B-spline
    free-form deformation: a documented extra, not needed for a rigid patient).
    """

    transform: sitk.Transform
    metric_value: float
    iterations: int
    kind: str = "rigid"

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix (reference point -> moving point), mm: the whole transform
        when rigid or affine, the rigid part of a B-spline registration."""
        t = self.transform
        if isinstance(t, sitk.CompositeTransform):
            t = t.GetNthTransform(0)
        if t.GetName() == "Euler3DTransform":
            t = sitk.Euler3DTransform(t)
        elif t.GetName() == "AffineTransform":
            t = sitk.AffineTransform(t)
        else:
            return np.eye(4)
        m = np.eye(4)
        r = np.array(t.GetMatrix()).reshape(3, 3)
        c = np.array(t.GetCenter())
        m[:3, :3] = r
        m[:3, 3] = np.array(t.GetTranslation()) + c - r @ c
        return m

    def to_dict(self) -> dict:
        names = {"rigid": "rigid (Euler3D)", "affine": "affine (after rigid)",
                 "bspline": "rigid + B-spline deformation"}
        return {"type": names.get(self.kind, self.kind),
                "matrix_ref_to_moving_lps_mm": self.matrix().tolist(),
                "final_metric_mattes_mi": self.metric_value, "iterations": self.iterations}


def identity_registration() -> Registration:
    return Registration(sitk.Euler3DTransform(), 0.0, 0, "rigid")


def _sample_fraction(n_voxels: int) -> float:
    """Metric samples: ~60,000 random voxels, at least 1 %, at most 15 % of the image."""
    return min(0.15, max(0.01, 6e4 / n_voxels))


#: The rigid registration's pyramid, coarse to fine: (voxel size in mm that both images are
#: block-averaged to, random metric samples drawn on that level with the fixed seed). The
#: demo's 2.4 mm CT is registered on 9.6 mm then 4.8 mm voxels, the small demo's 4.8 mm CT on
#: 9.6 mm then its own. Measured (issue 14, docs/benchmarks.md): organ centres within
#: 0.20 mm on the demo and 0.40 mm on the small demo (16 and 12 registrations, several motion
#: seeds; the previous pyramid down to full resolution with ~60,000 samples: 0.33 and
#: 0.49 mm) at a tenth or less of its CPU time.
RIGID_LEVELS = ((10.0, 5_000), (5.0, 10_000))
#: Gaussian smoothing of every level, sigma = this x the level's voxel size (mm): with 0.5
#: the small demo's organ centres were off by up to 0.65 mm, unsmoothed by up to 1.7 mm.
RIGID_SMOOTHING_PER_VOXEL = 0.75
#: The rigid optimiser stops when its step falls below this (mm, physical-shift scales).
RIGID_MIN_STEP_MM = 1e-2


#: A level keeps at least this many voxels per axis (where the image has them): the
#: recursive Gaussian needs four.
_MIN_LEVEL_VOXELS = 4


def _shrink_factors(img: sitk.Image, voxel_mm: float) -> list[int]:
    return [int(max(1, min(round(voxel_mm / s), n // _MIN_LEVEL_VOXELS)))
            for s, n in zip(img.GetSpacing(), img.GetSize())]


def rigid_pyramid(fixed: sitk.Image,
                  moving: sitk.Image) -> list[tuple[sitk.Image, sitk.Image, int]]:
    """(fixed, moving, metric samples) per level of :data:`RIGID_LEVELS`: both images
    block-averaged (``BinShrink``, whole voxels per axis, the nearest to the level's voxel
    size) then smoothed (:data:`RIGID_SMOOTHING_PER_VOXEL`); a level that would repeat the
    previous one's voxels is left out. Smoothing the shrunk images, not the full ones as
    SimpleITK's own pyramid does, is what makes the levels cheap."""
    out, seen = [], None
    for voxel_mm, samples in RIGID_LEVELS:
        factors = (_shrink_factors(fixed, voxel_mm), _shrink_factors(moving, voxel_mm))
        if factors == seen:
            continue
        seen = factors
        level = []
        for img, fac in zip((fixed, moving), factors):
            small = sitk.BinShrink(img, fac) if max(fac) > 1 else img
            sigma_mm = RIGID_SMOOTHING_PER_VOXEL * float(max(small.GetSpacing()))
            if sigma_mm > 0 and min(small.GetSize()) >= _MIN_LEVEL_VOXELS:
                small = sitk.SmoothingRecursiveGaussian(small, sigma_mm)
            level.append(small)
        out.append((level[0], level[1], samples))
    return out


# -- reproducibility: ITK's metric on one thread ------------------------------------------
# ITK's multithreaded Mattes metric sums per-thread histograms in an order that changes from
# run to run, so the same registration gave results differing by ~1e-15 mm (and doses by up
# to ~1e-6 relative, through the optimiser's path). On one thread it is the same bit for bit
# (test), and no slower here: the pipeline registers two time points at once, one per core
# (demo, four registrations, two at once: 1.5-1.6 s vs 1.8-1.9 s). ITK's thread count is
# process-wide, so it is lowered while any registration runs and restored after the last.
_ITK_LOCK = threading.Lock()
_ITK_USERS = [0, 0]   # [registrations running, the thread count to restore]


@contextmanager
def single_threaded_itk():
    """ITK filters on one thread while this (and every other such block) runs."""
    with _ITK_LOCK:
        if _ITK_USERS[0] == 0:
            _ITK_USERS[1] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _ITK_USERS[0] += 1
    try:
        yield
    finally:
        with _ITK_LOCK:
            _ITK_USERS[0] -= 1
            if _ITK_USERS[0] == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_ITK_USERS[1])


def _rigid_level(f: sitk.Image, m: sitk.Image, tx: sitk.Euler3DTransform, samples: int,
                 seed: int) -> tuple[float, int]:
    """One level of the rigid registration, updating ``tx`` in place: (metric, iterations)."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    n = int(np.prod(f.GetSize()))
    if samples < n:  # else every voxel
        # random positions: a regular grid of samples (REGULAR) was faster but less accurate
        # (20,000 samples: up to 0.28 / 0.46 mm vs 0.14 / 0.31 mm on the demo / small demo)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(samples / n, seed)
    # the moving image's gradient by central differences at the samples: the default, an
    # image of gradients at every level, cost more than the level's iterations
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=RIGID_MIN_STEP_MM, numberOfIterations=300,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    return float(reg.GetMetricValue()), int(reg.GetOptimizerIteration())


def register_rigid(fixed: Image, moving: Image, seed: int = 1234) -> Registration:
    """Rigid registration of ``moving`` onto ``fixed`` (both host images), Mattes MI (50 bins),
    regular-step gradient descent on the pyramid :func:`rigid_pyramid`, started from the
    images' centres aligned. ``iterations``: all levels together. Reproducible bit for bit
    (:func:`single_threaded_itk`)."""
    with single_threaded_itk():
        return _register_rigid(fixed, moving, seed)


def _register_rigid(fixed: Image, moving: Image, seed: int) -> Registration:
    f = image_to_sitk(np.asarray(fixed.data, dtype=np.float32), fixed.grid)
    m = image_to_sitk(np.asarray(moving.data, dtype=np.float32), moving.grid)
    tx = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY))
    metric, iterations = 0.0, 0
    for fl, ml, samples in rigid_pyramid(f, m):
        metric, its = _rigid_level(fl, ml, tx, samples, seed)
        iterations += its
    return Registration(tx, metric, iterations)


def register(fixed: Image, moving: Image, transform: str = "rigid",
             seed: int = 1234) -> Registration:
    """Rigid registration, optionally refined to an affine or a B-spline deformation.

    affine: an AffineTransform started from the rigid result, same metric, two levels.
    bspline: the rigid result composed with a B-spline free-form deformation (control
    points about every 50 mm, L-BFGS-B, ``BSPLINE_ITERATIONS`` iterations, one level with
    the metric on voxels of about ``BSPLINE_METRIC_VOXEL_MM``). Deformable resampling does not
    conserve activity exactly (no Jacobian weighting); the per-frame activity change is
    reported.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform '{transform}'; choose {', '.join(TRANSFORMS)}")
    rigid = register_rigid(fixed, moving, seed)
    if transform == "rigid":
        return rigid
    with single_threaded_itk():
        return _refine(fixed, moving, transform, seed, rigid)


def _refine(fixed: Image, moving: Image, transform: str, seed: int,
            rigid: Registration) -> Registration:
    """The affine or B-spline refinement of :func:`register`."""
    f = image_to_sitk(np.asarray(fixed.data, dtype=np.float32), fixed.grid)
    m = image_to_sitk(np.asarray(moving.data, dtype=np.float32), moving.grid)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(_sample_fraction(fixed.grid.size), seed)
    reg.SetInterpolator(sitk.sitkLinear)
    if transform == "affine":
        e = rigid.transform
        init = sitk.AffineTransform(3)
        init.SetCenter(e.GetCenter())
        init.SetMatrix(e.GetMatrix())
        init.SetTranslation(e.GetTranslation())
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([float(min(fixed.grid.spacing_mm)), 0.0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetInitialTransform(init, inPlace=False)
        tx = reg.Execute(f, m)
        if isinstance(tx, sitk.CompositeTransform):
            tx = tx.GetNthTransform(tx.GetNumberOfTransforms() - 1)
        return Registration(sitk.AffineTransform(tx), float(reg.GetMetricValue()),
                            int(reg.GetOptimizerIteration()), "affine")
    extent = np.array(f.GetSize()) * np.array(f.GetSpacing())
    mesh = [max(1, int(round(e / 50.0))) for e in extent]
    bs = sitk.BSplineTransformInitializer(f, mesh)
    reg.SetMovingInitialTransform(rigid.transform)
    reg.SetInitialTransform(bs, inPlace=True)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5,
                             numberOfIterations=BSPLINE_ITERATIONS)
    # One level at ~BSPLINE_METRIC_VOXEL_MM voxels: a 50 mm control grid cannot follow detail
    # finer than ~25 mm, and the full-resolution level cost 6x the time for no gain (small
    # phantom: 305 s vs 47 s, landmark errors 4.1/1.1 mm vs 1.4/1.4 mm).
    shrink = max(1, int(round(BSPLINE_METRIC_VOXEL_MM / float(max(fixed.grid.spacing_mm)))))
    reg.SetShrinkFactorsPerLevel([shrink])
    reg.SetSmoothingSigmasPerLevel([0.0])  # smoothing here moved the landmarks by 6 mm
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.Execute(f, m)
    composite = sitk.CompositeTransform([rigid.transform, bs])
    return Registration(composite, float(reg.GetMetricValue()),
                        int(reg.GetOptimizerIteration()), "bspline")


def motion(registration: Registration, fixed_grid: Grid) -> dict:
    """How far the (rigid part of the) transform moves the reference from the scanner
    coordinates: ``translation_mm`` = |T(c) - c| at the centre c of the fixed image;
    ``rotation_deg`` = arccos((tr R - 1) / 2) of the rotation R nearest to the 3x3 part
    (polar decomposition, so an affine's scaling is not counted as rotation);
    ``scale_extremes`` = its smallest and largest singular value (1, 1 when rigid)."""
    m = registration.matrix()
    c = fixed_grid.index_to_world([(n - 1) / 2.0 for n in fixed_grid.shape])
    shift = m[:3, :3] @ c + m[:3, 3] - c
    u, sv, vt = np.linalg.svd(m[:3, :3])
    r = u @ vt
    cos = float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    return {"translation_mm": float(np.linalg.norm(shift)),
            "rotation_deg": float(np.degrees(np.arccos(cos))),
            "scale_extremes": [float(sv.min()), float(sv.max())]}


#: the match metric of :func:`plausibility` is evaluated on images block-averaged by the
#: smallest integer factor that leaves at most this many voxels. SimpleITK evaluates it on
#: every voxel (``MetricEvaluate`` ignores a sampling strategy), so the cost grows with the
#: image: 2.2 s per evaluation on the 2.2-million-voxel demo CT, 63 ms on 4.8 mm voxels
#: (287,000), a few ms on 9.6 mm voxels (35,000), where the result still matches clearly
#: better than the scanner coordinates and than the result moved by 3 mm (issue 14).
METRIC_MAX_VOXELS = 50_000


def _metric(f: sitk.Image, m: sitk.Image, transform: sitk.Transform) -> float | None:
    """Mattes MI (50 bins) of ``m`` through ``transform`` against ``f``, every voxel of
    ``f``; None when too few of them fall inside ``m``."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricUseFixedImageGradientFilter(False)  # the value does not need gradients
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetMovingInitialTransform(transform)
    reg.SetInitialTransform(sitk.Euler3DTransform(), inPlace=False)
    try:
        return float(reg.MetricEvaluate(f, m))
    except RuntimeError:  # too few voxels inside the moving image
        return None


def _metric_image(img: Image) -> sitk.Image:
    s = int(np.ceil((img.grid.size / METRIC_MAX_VOXELS) ** (1.0 / 3.0)))
    out = image_to_sitk(np.asarray(img.data, dtype=np.float32), img.grid)
    return sitk.BinShrink(out, [s] * 3) if s > 1 else out


def plausibility(fixed: Image, moving: Image, registration: Registration) -> dict:
    """:func:`motion`, and the Mattes mutual information (50 bins, lower is better) at the
    scanner coordinates (``metric_initial``, identity transform) and at the result
    (``metric_final``), both over every voxel of the unsmoothed images block-averaged to at
    most :data:`METRIC_MAX_VOXELS` (None where the images hardly overlap)."""
    with single_threaded_itk():
        f, m = _metric_image(fixed), _metric_image(moving)
        return {**motion(registration, fixed.grid),
                "metric_initial": _metric(f, m, sitk.Euler3DTransform()),
                "metric_final": _metric(f, m, registration.transform)}


def resample_planes(moving: Image, target: Grid, registration: Registration, centre_zyx,
                    default: float = -1000.0) -> tuple[np.ndarray, np.ndarray]:
    """The axial plane ``centre_zyx[0]`` and the coronal plane ``centre_zyx[1]`` of
    ``moving`` resampled onto ``target`` through the registration: (y, x) and (z, x)
    arrays, as ``resample(...).data[cz]`` and ``[:, cy, :]`` without the whole volume."""
    nz, ny, nx = target.shape
    cz, cy = (int(min(max(round(float(c)), 0), n - 1)) for c, n in zip(centre_zyx, (nz, ny)))
    out = []
    for shape, idx in (((1, ny, nx), (cz, 0, 0)), ((nz, 1, nx), (0, cy, 0))):
        a = np.array(target.affine, dtype=np.float64)
        a[:3, 3] = target.index_to_world(idx)
        out.append(resample(moving, Grid(shape, a), registration, default=default).data)
    return out[0][0], out[1][:, 0, :]


def write_transform(path, registration: Registration) -> None:
    """Write the transform as an ITK transform file (.tfm), atomically."""
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        sitk.WriteTransform(registration.transform, str(tmp))


def resample(moving: Image, target: Grid, registration: Registration,
             interpolator=sitk.sitkLinear, default: float = 0.0) -> Image:
    """Resample ``moving`` onto ``target`` through ``registration``'s transform."""
    m = image_to_sitk(np.asarray(moving.data, dtype=np.float64), moving.grid)
    ref = apply_grid_to_sitk(sitk.Image([int(n) for n in target.shape[::-1]], sitk.sitkUInt8),
                             target)
    out = sitk.Resample(m, ref, registration.transform, interpolator, default, sitk.sitkFloat64)
    arr, _ = sitk_to_array_and_grid(out)
    return moving.with_data(arr, grid=target)


def resample_concentration(moving: Image, target: Grid,
                           registration: Registration) -> tuple[Image, dict]:
    """Resample an activity-concentration image (Bq/mL); report activity before and after."""
    out = resample(moving, target, registration)
    before = float(np.sum(moving.data)) * moving.grid.voxel_volume_ml
    after = float(np.sum(out.data)) * target.voxel_volume_ml
    rel = (after - before) / before if before > 0 else 0.0
    return out, {"activity_before_bq": before, "activity_after_bq": after,
                 "relative_change": rel}


def resample_labels(labels_data: np.ndarray, source: Grid, target: Grid,
                    supersample: int = 2) -> np.ndarray:
    """Labels onto another grid by majority vote of ``supersample``^3 nearest-neighbour samples.

    Plain nearest-neighbour resampling onto a coarser grid picks one arbitrary sub-voxel;
    voting over sub-samples picks the structure that fills most of each target voxel.
    """
    s = int(supersample)
    sub_spacing = target.spacing_mm / s
    # centre of sub-voxel 0 sits (s-1)/2 sub-steps before the target voxel centre
    offset_idx = -(s - 1) / 2.0 / s
    sub_origin = target.index_to_world([offset_idx] * 3)
    sub = Grid.from_spacing([n * s for n in target.shape], sub_spacing, sub_origin,
                            target.direction)
    src = image_to_sitk(labels_data.astype(np.int32), source)
    ref = apply_grid_to_sitk(sitk.Image([int(n) for n in sub.shape[::-1]], sitk.sitkUInt8), sub)
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkInt32)
    arr = sitk.GetArrayFromImage(out)
    if s == 1:
        return arr
    return majority_labels(arr, s)
