"""voxdose: voxel dosimetry for radiopharmaceutical therapy.

The package reads like the pipeline::

    io/         read and write images, the study file, atomic output
    phantom/    the embedded synthetic patient study
    registration.py   time points onto one grid (SimpleITK)
    kinetics/   per-voxel time-activity fits -> time-integrated activity (TIA)
    dose/       dose kernels and dose engines (FFT convolution, local deposition)
    analysis/   DVHs and structure statistics
    pipeline.py       the whole chain, used by ``voxdose demo`` and ``voxdose run``

Conventions (see docs/conventions.md): LPS millimetres, array axis order (z, y, x),
time in seconds internally, TIA in decays per voxel (Bq*s), dose in Gy.
"""

__version__ = "0.1.0"
