"""Write the synthetic patient study to disk as a real study folder.

What it simulates, per time point t_i (default 1, 4, 24, 48, 168 h p.i.):

1. the patient, moved by a small known rigid transform T_i (identity at the reference,
   the first time point; a few mm and degrees otherwise, drawn from the seed);
2. a CT of the moved patient on the CT grid (HU from the labels, 10 HU Gaussian noise);
3. the true activity concentration c_s(t_i) = A_s(t_i) / V_s on the CT grid, averaged
   exactly onto the SPECT grid (2x2x2 CT voxels per SPECT voxel: activity conserved),
   blurred by a Gaussian of the system resolution (10 mm FWHM by default), converted to
   expected counts with a sensitivity and a frame duration, Poisson-sampled and
   converted back to Bq/mL (the study is already quantitative: calibration factor 1).

Physical decay during a frame is neglected (a 20-min frame at 6.6 d half-life: <0.2 %).

Files written (the study file is the user's interface; ``truth/`` is for tests):
``study.toml``, ``ct_XXXh.nii.gz``, ``spect_XXXh.nii.gz`` (+ JSON sidecars),
``labels.nii.gz`` + ``structure_names.json`` (reference CT grid), ``truth/truth.json``,
``truth/tia_true_bq_s.nii.gz`` and ``truth/tia_true_blurred_bq_s.nii.gz`` (SPECT grid,
decays per voxel), ``truth/labels_spect.nii.gz``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.grid import Grid, Image, LabelMap
from ..io.atomic import staged_directory, write_json, write_text
from ..io.sitk_adapter import write_image, write_labels
from ..core.nuclide import load_nuclide
from ..core.units import SECONDS_PER_HOUR
from ..core.voxel_ops import block_mean, majority_labels
from .anatomy import STRUCTURES, ct_from_labels, rasterize_labels, rigid_matrix, structure_names
from .kinetics import CXCR4_KINETICS

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters of the synthetic study. Lengths mm, times h, activity MBq."""

    ct_spacing_mm: float = 2.4
    spect_factor: int = 2
    fov_mm_xyz: tuple[float, float, float] = (380.0, 270.0, 300.0)
    fov_centre_mm_xyz: tuple[float, float, float] = (0.0, 0.0, 10.0)
    times_h: tuple[float, ...] = (1.0, 4.0, 24.0, 48.0, 168.0)
    nuclide: str = "Lu-177"
    administered_activity_mbq: float = 7400.0
    psf_fwhm_mm: float = 10.0
    sensitivity_cps_per_mbq: float = 10.0
    frame_duration_s: float = 1200.0
    max_translation_mm: float = 5.0
    max_rotation_deg: float = 3.0
    seed: int = 20161
    noise: bool = True
    kinetics: dict = field(default_factory=lambda: dict(CXCR4_KINETICS))
    #: size of the whole anatomy (1.1: every organ 10 % larger in x, y and z; voxdose
    #: demo-cohort draws one per patient)
    anatomy_scale: float = 1.0

    @classmethod
    def small(cls, **kw) -> PhantomConfig:
        """Coarse variant (4.8 mm CT, 9.6 mm SPECT) for quick demos and tests."""
        return cls(ct_spacing_mm=4.8, **kw)


def make_grids(cfg: PhantomConfig) -> tuple[Grid, Grid]:
    """CT grid and the SPECT grid whose voxels are exact ``spect_factor``^3 blocks of CT voxels."""
    f = cfg.spect_factor
    sp = cfg.ct_spacing_mm
    n_xyz = [int(np.ceil(L / (sp * f))) * f for L in cfg.fov_mm_xyz]
    origin = [c - (n - 1) / 2.0 * sp for c, n in zip(cfg.fov_centre_mm_xyz, n_xyz)]
    ct = Grid.from_spacing(n_xyz[::-1], (sp, sp, sp), origin)
    spect_origin = [o + (f - 1) / 2.0 * sp for o in origin]
    spect = Grid.from_spacing([n // f for n in n_xyz[::-1]], (sp * f,) * 3, spect_origin)
    return ct, spect


def transforms_for(cfg: PhantomConfig) -> list[np.ndarray]:
    """Patient->scanner rigid transforms per time point (identity at the first)."""
    rng = np.random.default_rng(cfg.seed + 1)
    out = [np.eye(4)]
    for _ in cfg.times_h[1:]:
        rot = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg, 3)
        tr = rng.uniform(-cfg.max_translation_mm, cfg.max_translation_mm, 3)
        out.append(rigid_matrix(rot, tr))
    return out


def concentration_lut(volumes_ml: dict[str, float], t_s: float, cfg: PhantomConfig,
                      lambda_p: float) -> np.ndarray:
    """Activity concentration (Bq/mL) per label value at time ``t_s``."""
    a0 = cfg.administered_activity_mbq * 1e6
    lut = np.zeros(256, dtype=np.float64)
    for s in STRUCTURES:
        k = cfg.kinetics[s.name]
        lut[s.label] = float(k.activity_bq(t_s, a0, lambda_p)) / volumes_ml[s.name]
    return lut


def tia_lut(volumes_ml: dict[str, float], cfg: PhantomConfig, lambda_p: float) -> np.ndarray:
    """Time-integrated activity concentration (Bq*s/mL) per label value."""
    a0 = cfg.administered_activity_mbq * 1e6
    lut = np.zeros(256, dtype=np.float64)
    for s in STRUCTURES:
        lut[s.label] = cfg.kinetics[s.name].tia_bq_s(a0, lambda_p) / volumes_ml[s.name]
    return lut


def blur(a: np.ndarray, grid: Grid, fwhm_mm: float) -> np.ndarray:
    sigma_vox = fwhm_mm * FWHM_TO_SIGMA / grid.spacing_mm
    return ndimage.gaussian_filter(a, sigma=sigma_vox, mode="constant", cval=0.0)


def _threads() -> int:
    from ..dose.convolution import default_workers  # the cores this process may use

    return min(2, default_workers())


def _fmt_time(t_h: float) -> str:
    return f"{t_h:05.1f}h".replace(".", "p").replace("p0h", "h")


def build_study(out_dir, cfg: PhantomConfig | None = None, progress=None,
                pvc_method: str = "none") -> Path:
    """Generate the study in ``out_dir`` (atomically) and return the path of study.toml.

    The study file declares the phantom's known resolution (``[spect]
    resolution_fwhm_mm`` = ``cfg.psf_fwhm_mm``) and ``[pvc] method = pvc_method``
    (``voxdose demo``: rbv; default none, the uncorrected pipeline)."""
    cfg = cfg or PhantomConfig()
    out_dir = Path(out_dir)
    nuc = load_nuclide(cfg.nuclide)
    lam = nuc.decay_constant_per_s
    ct_grid, spect_grid = make_grids(cfg)
    f = cfg.spect_factor
    rng = np.random.default_rng(cfg.seed)
    transforms = transforms_for(cfg)

    ref_labels = rasterize_labels(ct_grid, scale=cfg.anatomy_scale)
    counts_per_label = np.bincount(ref_labels.ravel(), minlength=256)
    volumes_ml = {s.name: counts_per_label[s.label] * ct_grid.voxel_volume_ml for s in STRUCTURES}
    for name, v in volumes_ml.items():
        if v <= 0:
            raise RuntimeError(f"phantom structure {name} has no voxels at this resolution")
    names = structure_names()
    a0_bq = cfg.administered_activity_mbq * 1e6
    bq_per_count = 1.0 / (1e-6 * cfg.sensitivity_cps_per_mbq * cfg.frame_duration_s)

    def noise_free(i: int):
        """Time point i's moved labels and blurred concentration (no random numbers)."""
        t_h, T = cfg.times_h[i], transforms[i]
        labels_i = ref_labels if i == 0 else rasterize_labels(ct_grid, T, cfg.anatomy_scale)
        conc_ct = concentration_lut(volumes_ml, t_h * SECONDS_PER_HOUR, cfg, lam)[labels_i]
        return labels_i, blur(block_mean(conc_ct, f), spect_grid, cfg.psf_fwhm_mm)

    timepoints = []
    # the noise-free images in threads, the random numbers drawn here in time order: the
    # same files as one time point after the other
    with staged_directory(out_dir) as stage, ThreadPoolExecutor(_threads()) as pool:
        for i, (labels_i, conc) in enumerate(pool.map(noise_free, range(len(cfg.times_h)))):
            t_h = cfg.times_h[i]
            ct = ct_from_labels(labels_i, rng)
            if cfg.noise:
                expected = np.clip(conc, 0, None) * spect_grid.voxel_volume_ml / bq_per_count
                conc = rng.poisson(expected) * bq_per_count / spect_grid.voxel_volume_ml
            tag = _fmt_time(t_h)
            common = {"time_h": t_h, "seed": cfg.seed}
            write_image(stage / f"ct_{tag}.nii.gz",
                        Image(ct.astype(np.int16), ct_grid, "CT number", "HU"), dtype=np.int16,
                        sidecar=common)
            write_image(stage / f"spect_{tag}.nii.gz",
                        Image(conc, spect_grid, "activity concentration", "Bq/mL"),
                        sidecar={**common, "decay_corrected": False,
                                 "frame_duration_s": cfg.frame_duration_s})
            timepoints.append({"time_h": t_h, "spect": f"spect_{tag}.nii.gz",
                               "ct": f"ct_{tag}.nii.gz"})
            if progress:
                progress(i + 1, len(cfg.times_h))

        write_labels(stage / "labels.nii.gz", LabelMap(ref_labels, ct_grid, names))
        write_json(stage / "structure_names.json", {str(k): v for k, v in names.items()})
        write_text(stage / "study.toml", _study_toml(cfg, timepoints, pvc_method))

        # Ground truth for tests, on the SPECT grid (reference pose).
        tia_ct = tia_lut(volumes_ml, cfg, lam)[ref_labels]  # Bq*s/mL
        tia_spect = block_mean(tia_ct, f) * spect_grid.voxel_volume_ml  # decays per voxel
        tia_blurred = blur(tia_spect, spect_grid, cfg.psf_fwhm_mm)
        tia_img = Image(tia_spect, spect_grid, "time-integrated activity", "Bq*s per voxel")
        write_image(stage / "truth" / "tia_true_bq_s.nii.gz", tia_img)
        write_image(stage / "truth" / "tia_true_blurred_bq_s.nii.gz",
                    tia_img.with_data(tia_blurred),
                    sidecar={"note": f"true TIA blurred by the {cfg.psf_fwhm_mm} mm FWHM PSF"})
        # ... and at the structures' own resolution (the CT / label grid): the patient's TIA,
        # against which a partial-volume correction is judged (docs/validation.md).
        write_image(stage / "truth" / "tia_true_ct_bq_s.nii.gz",
                    Image((tia_ct * ct_grid.voxel_volume_ml).astype(np.float32), ct_grid,
                          "time-integrated activity", "Bq*s per voxel"), dtype=np.float32,
                    sidecar={"note": "true TIA on the CT / label grid (unblurred, reference "
                                     "pose); labels.nii.gz are its structures"})
        write_labels(stage / "truth" / "labels_spect.nii.gz",
                     LabelMap(majority_labels(ref_labels, f), spect_grid, names))
        truth = {
            "config": {k: v for k, v in asdict(cfg).items() if k != "kinetics"},
            "kinetics": {k: asdict(v) for k, v in cfg.kinetics.items()},
            "nuclide": nuc.name,
            "half_life_s": nuc.half_life_s,
            "administered_activity_bq": a0_bq,
            "volumes_ml": volumes_ml,
            "tia_bq_s": {s.name: cfg.kinetics[s.name].tia_bq_s(a0_bq, lam) for s in STRUCTURES},
            "activity_bq": {s.name: cfg.kinetics[s.name].activity_bq(
                np.array(cfg.times_h) * SECONDS_PER_HOUR, a0_bq, lam).tolist()
                for s in STRUCTURES},
            "patient_to_scanner": [T.tolist() for T in transforms],
            "ct_grid": ct_grid.to_dict(),
            "spect_grid": spect_grid.to_dict(),
        }
        write_json(stage / "truth" / "truth.json", truth)
    return out_dir / "study.toml"


def _study_toml(cfg: PhantomConfig, timepoints: list[dict], pvc_method: str = "none") -> str:
    lines = [
        "# voxdose study file: synthetic torso, generated by `voxdose demo`",
        "# times in hours after administration; paths relative to this file",
        "[study]",
        'name = "voxdose synthetic torso (CXCR4 ligand)"',
        f'nuclide = "{cfg.nuclide}"',
        f"administered_activity_mbq = {cfg.administered_activity_mbq}",
        "reference_timepoint = 0",
        "",
        "[spect]",
        'units = "Bq/mL"            # pixel unit of the SPECT files',
        "calibration_factor = 1.0   # pixel value x factor = Bq/mL",
        "decay_corrected = false    # true if frames were decay-corrected to administration",
        f"resolution_fwhm_mm = {float(cfg.psf_fwhm_mm)}  # system resolution (Gaussian FWHM), "
        "known here",
        "",
        "# partial-volume correction of the TIA (docs/pvc.md): none | rc | gtm | rbv | iy",
        "[pvc]",
        f'method = "{pvc_method}"',
        "",
        "[structures]",
        'labels = "labels.nii.gz"    # integer labels on the reference CT grid',
        'names = "structure_names.json"       # {"label value": "structure name"}',
        "",
        "[patient]",
        'sex = "male"               # ICRP 89 reference red-marrow mass for the EANM method',
        "",
        "# Activity planning as in the seed study (illustrative): kidneys <= 23 Gy in total,",
        "# red marrow <= 1 Gy from the stem-cell transplant (here day 14) on.",
        "[plan]",
        "limits_gy = { kidneys = 23.0, marrow = 1.0 }",
        "after_h = { marrow = 336.0 }",
        "",
    ]
    for tp in timepoints:
        lines += ["[[timepoints]]", f"time_h = {tp['time_h']}", f'spect = "{tp["spect"]}"',
                  f'ct = "{tp["ct"]}"', ""]
    return "\n".join(lines)
