"""Small exact operations on voxel blocks (used for grid coarsening and label voting)."""

from __future__ import annotations

import numpy as np


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over non-overlapping f x f x f blocks; sum(a) * V_fine = sum(result) * V_coarse."""
    nz, ny, nx = (n // f for n in a.shape)
    return a[: nz * f, : ny * f, : nx * f].reshape(nz, f, ny, f, nx, f).mean(axis=(1, 3, 5))


def majority_labels(labels: np.ndarray, f: int) -> np.ndarray:
    """Most frequent label in each f^3 block (ties go to the higher label, deterministic)."""
    nz, ny, nx = (n // f for n in labels.shape)
    blocks = labels[: nz * f, : ny * f, : nx * f].reshape(nz, f, ny, f, nx, f)
    blocks = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(nz, ny, nx, f ** 3)
    n_lab = int(labels.max()) + 1
    counts = np.stack([(blocks == k).sum(axis=-1) for k in range(n_lab)], axis=-1)
    return (n_lab - 1 - np.argmax(counts[..., ::-1], axis=-1)).astype(labels.dtype)
