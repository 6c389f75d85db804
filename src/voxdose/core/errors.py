"""One exception hierarchy. Messages say what was wrong, where, and what to do."""


class VoxdoseError(Exception):
    """Base class for every error voxdose raises on purpose."""


class InputError(VoxdoseError):
    """A file or argument a user gave is missing, malformed, or inconsistent."""


class StudyError(InputError):
    """The study file (study.toml) or something it points to is invalid."""


class NuclideError(InputError):
    """An unknown or unsupported radionuclide name."""


class DeviceError(VoxdoseError):
    """The requested compute device is not available."""


class FitError(VoxdoseError):
    """A time-activity fit could not be made with the given data."""
