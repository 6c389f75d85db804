"""voxdose: voxel dosimetry for radiopharmaceutical therapy.

The package reads like the pipeline (docs/architecture.md draws it, one line per module)::

    core/        grid and image types, units, errors, backend, nuclide data
    io/          image files, DICOM in and out, RTSTRUCT, atomic output
    study/       the study file (one schema), its images, export as DICOM
    imaging/     registration and resampling of the time points into one 4D series
    kinetics/    per-voxel and organ time-activity fits -> time-integrated activity (TIA)
    montecarlo/  the project's Monte Carlo -> radial dose point kernels (offline)
    kernels/     point and voxel kernels, their cache, the kernel-extent rule
    dose/        dose engines (FFT convolution, local deposition, density modes)
    analysis/    DVHs, MIRD check, marrow, activity planning, nuclide comparison
    report/      every figure and report.html
    pipeline/    the whole chain for one study (stages over a context, a results writer)
    cli/         the ``voxdose`` command
    phantom/     the embedded synthetic patient study

Conventions (see docs/conventions.md): LPS millimetres, array axis order (z, y, x),
time in seconds internally, TIA in decays per voxel (Bq*s), dose in Gy.
"""

__version__ = "0.1.0"
