"""Dose calculation: water data, point and voxel dose kernels, dose engines."""
