"""``python -m voxdose`` = the ``voxdose`` command."""

import sys

from voxdose.cli.app import main

sys.exit(main())
