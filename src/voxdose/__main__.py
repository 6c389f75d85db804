"""``python -m voxdose`` = the ``voxdose`` command."""

import sys

from voxdose.cli import main

sys.exit(main())
