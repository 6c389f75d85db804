"""``python -m voxdose`` = the ``voxdose`` command."""

from voxdose.cli.app import entry_point

entry_point()
